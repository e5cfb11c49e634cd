"""GPU check: correctness and speed of every objective on a CUDA device.

1. Fits ``EBFlowDensity`` briefly with each objective on the GPU and on the CPU (same
   data, same seed) and prints both held-out log-likelihoods.
2. Checks that the GPU-fitted model scores the same on the GPU and, after a pickle
   round-trip, on the CPU (agreement to float32 precision or better).
3. Measures training steps per second of each objective on the ``fc`` flow at
   D = 784 and D = 3072 (batch 100, the paper's MNIST and CIFAR-10 sizes), with the
   CPU-style plain forward+backward as a floor.
4. The same on the paper's CNN (``skebflow.flows.cnn``, 7 x 7 kernels) at the
   image shapes (1, 28, 28) and (3, 32, 32), and each objective's speed-up over
   ``ml`` (the paper's Table 2 reports 34-185x on MNIST and 368-1992x on CIFAR-10).

Run ``python benchmarks/gpu_check.py`` on a machine with CUDA (about 2 minutes on one
H200). Without CUDA it says so and exits with status 0 unless ``--require-cuda``;
``--device cpu`` runs the same script on the CPU for a dry run.
"""

from __future__ import annotations

import argparse
import json
import pickle
import platform
import statistics
import sys
import time
import warnings

import numpy as np
import torch
from sklearn.datasets import make_moons
from sklearn.exceptions import ConvergenceWarning

from skebflow import EBFlowDensity
from skebflow.flows import cnn, fc
from skebflow.objectives import OBJECTIVES, bind_objective, objective_settings

SETTINGS = {"n_slices": 1, "noise_std": 0.1, "fd_epsilon": 0.1}


def settings_of(name: str) -> dict[str, float]:
    """The entries of SETTINGS that objective ``name`` takes."""
    return {key: SETTINGS[key] for key in objective_settings(name) if key in SETTINGS}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_agreement(device: str, seed: int = 0) -> list[dict]:
    X, _ = make_moons(4000, noise=0.1, random_state=seed)
    X_train, X_test = X[:3000] * 10.0, X[3000:] * 10.0
    rows = []
    for objective in OBJECTIVES:
        params = {
            "objective": objective,
            "n_flows": 1,
            "max_iter": 20,
            "random_state": seed,
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            accelerated = EBFlowDensity(device=device, **params).fit(X_train)
            on_cpu = EBFlowDensity(device="cpu", **params).fit(X_train)
        scores = accelerated.score_samples(X_test)
        moved = pickle.loads(pickle.dumps(accelerated))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            moved_scores = _score_on_cpu(moved, X_test)
        difference = float(np.max(np.abs(scores - moved_scores) / (1 + np.abs(scores))))
        rows.append(
            {
                "objective": objective,
                "device_loglik": float(scores.mean()),
                "cpu_fit_loglik": float(on_cpu.score(X_test)),
                "same_model_rel_diff": difference,
                "agree_float32": difference < 1e-6,
            }
        )
        print(
            f"{objective:6s} fit on {device}: {rows[-1]['device_loglik']:8.4f}"
            f"  fit on cpu: {rows[-1]['cpu_fit_loglik']:8.4f}"
            f"  same model {device} vs cpu, max rel diff {difference:.2e}"
            f" ({'ok' if difference < 1e-6 else 'MISMATCH'})",
            flush=True,
        )
    return rows


def _score_on_cpu(estimator: EBFlowDensity, X: np.ndarray) -> np.ndarray:
    estimator.flow_ = estimator.flow_.to("cpu")
    estimator.preprocessing_ = estimator.preprocessing_.to("cpu")
    estimator.device_ = "cpu"
    return estimator.score_samples(X)


def steps_per_second(
    device: torch.device,
    n_features: int,
    batch_size: int,
    repeats: int,
    image_shape: tuple[int, int, int] | None = None,
) -> dict[str, float]:
    """Steps per second of each objective: the ``fc`` flow, or the CNN on images."""
    generator = torch.Generator(device=device).manual_seed(0)
    init = torch.Generator().manual_seed(0)
    if image_shape is None:
        flow = fc(n_features, init="orthogonal", generator=init).to(device)
    else:
        flow = cnn(image_shape, generator=init).to(device)
    parameters = list(flow.parameters())
    optimizer = torch.optim.Adam(parameters, lr=1e-5)
    x = torch.randn(batch_size, n_features, generator=generator, device=device)
    losses = {name: bind_objective(name, **settings_of(name)) for name in OBJECTIVES}
    losses["plain"] = lambda flow, x, *, generator: flow.energy(x)
    times: dict[str, list[float]] = {name: [] for name in losses}
    for repeat in range(repeats + 2):
        for name, loss_function in losses.items():
            _synchronize(device)
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss = loss_function(flow, x, generator=generator).mean()
            loss.backward(inputs=parameters)
            optimizer.step()
            _synchronize(device)
            if repeat >= 2:
                times[name].append(time.perf_counter() - start)
    return {name: 1.0 / statistics.median(values) for name, values in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dims", type=int, nargs="+", default=[784, 3072])
    parser.add_argument(
        "--images",
        nargs="*",
        default=["1,28,28", "3,32,32"],
        help="image shapes C,H,W for the CNN's steps per second",
    )
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--require-cuda", action="store_true")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available here; nothing to check.")
        return 1 if args.require_cuda else 0
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"device: {name}; torch {torch.__version__}; python {platform.python_version()}"
    )

    agreement = check_agreement(args.device)
    speed = {}
    header = "  ".join(f"{k:>8s}" for k in [*OBJECTIVES, "plain"])
    print(f"\nsteps per second, fc flow, batch {args.batch_size}\n{'D':>6s}  {header}")
    for n_features in args.dims:
        speed[n_features] = steps_per_second(
            device, n_features, args.batch_size, args.repeats
        )
        row = "  ".join(f"{speed[n_features][k]:8.1f}" for k in [*OBJECTIVES, "plain"])
        print(f"{n_features:6d}  {row}", flush=True)
    cnn_speed = {}
    print(
        f"\nsteps per second, CNN (7 x 7 kernels), batch {args.batch_size}; speed-up"
        f" over ml in brackets\n{'C,H,W':>9s}  {header}"
    )
    for text in args.images:
        shape = tuple(int(part) for part in text.split(","))
        rates = steps_per_second(
            device,
            int(np.prod(shape)),
            args.batch_size,
            args.repeats,
            image_shape=shape,
        )
        cnn_speed[text] = rates
        row = "  ".join(
            f"{rates[k]:7.1f} ({rates[k] / rates['ml']:.0f}x)"
            for k in [*OBJECTIVES, "plain"]
        )
        print(f"{text:>9s}  {row}", flush=True)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(
                {
                    "device": name,
                    "agreement": agreement,
                    "speed": speed,
                    "cnn_speed": cnn_speed,
                },
                handle,
            )
    return 0 if all(row["agree_float32"] for row in agreement) else 2


if __name__ == "__main__":
    sys.exit(main())
