"""Seconds per epoch of the default estimator on a GPU and on the CPU, side by side.

The user guide's "When the GPU pays off" in figures: ``EBFlowDensity()`` at its
defaults (``objective="auto"``: ``ml`` up to 512 features, ``ssm`` above) on
``make_classification`` rows without redundant features (so that they have a
density; 10 000 rows, 64 informative features at most, the rest noise), at a few
widths. Each width is fitted for ``--epochs`` epochs without early stopping on
every device asked for, in one process, after a one-epoch warm-up fit on each
device (CUDA's context, cuBLAS's handles, the CPU's thread pool), and the time per
epoch is printed with the objective and architecture that ``"auto"`` chose.

Run ``python benchmarks/gpu_fit_time.py`` on a machine with CUDA; ``--devices
cpu`` alone runs it anywhere. ``--threads`` sets the CPU's torch threads.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings

import numpy as np
import torch
from numpy.typing import NDArray
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning

from skebflow import EBFlowDensity


def rows(n_features: int, n_rows: int) -> NDArray[np.float64]:
    X, _ = make_classification(
        n_rows,
        n_features,
        n_informative=min(64, n_features),
        n_redundant=0,
        random_state=0,
    )
    return X


def seconds_per_epoch(
    X: NDArray[np.float64], device: str, epochs: int
) -> tuple[float, EBFlowDensity]:
    params = {"device": device, "random_state": 0, "early_stopping": False}
    EBFlowDensity(max_iter=1, **params).fit(X[:2000])  # warm-up on this device
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    est = EBFlowDensity(max_iter=epochs, **params).fit(X)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / est.n_iter_, est


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", nargs="+", default=["cuda", "cpu"])
    parser.add_argument("--widths", type=int, nargs="+", default=[20, 256, 784])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", ConvergenceWarning)
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    print(
        f"machine: {platform.processor() or platform.machine()}, GPU {gpu}, torch"
        f" {torch.__version__}, {torch.get_num_threads()} CPU threads"
    )
    results = []
    for width in args.widths:
        X = rows(width, args.rows)
        for device in args.devices:
            seconds, est = seconds_per_epoch(X, device, args.epochs)
            results.append(
                {
                    "features": width,
                    "device": device,
                    "objective": est.objective_,
                    "architecture": est.architecture_,
                    "seconds_per_epoch": seconds,
                }
            )
            print(
                f"{args.rows} x {width}: {device:5s} {est.objective_:4s}"
                f" {est.architecture_:9s} {seconds:7.3f} s per epoch",
                flush=True,
            )
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
