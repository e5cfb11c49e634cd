"""What the checks for a run-away fit cost: an earlier commit's code against today's.

Since 6 December 2026 a trained flow is checked more before it is kept:

- ``fit``: its mean log-likelihood against the flow it started from, on the
  held-out rows (more than 1 nat per feature lower: a warning), and its round trip,
  the first 32 training rows mapped to the base space and back (a collapse with
  finite weights: an error);
- ``partial_fit``: the chunk's mean log-likelihood before and after the epoch (the
  same drop: the chunk is discarded), and the round trip only when it fell.

The package at ``--base`` (by default the commit before these checks) is imported
beside ``skebflow``, as in ``fit_ab.py``, and both run the default
``EBFlowDensity(n_flows=1)`` alternately, round by round, after a warm-up round:
``partial_fit`` over ten chunks of ``--chunk`` rows (the median seconds per chunk,
the first chunk, which fits the preprocessing, left out) and a ``fit`` of 5
epochs on the same rows. Prints the medians over ``--rounds`` rounds and their
ratios, per number of features.

Run ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/divergence_checks_cost.py``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _machine import machine_line  # noqa: E402
from step_ab import import_base  # noqa: E402


def seconds_per_chunk(package: Any, X: np.ndarray, chunk: int) -> float:
    estimator = package.EBFlowDensity(n_flows=1, device="cpu", random_state=0)
    times = []
    for start in range(0, len(X) - chunk + 1, chunk):
        began = time.perf_counter()
        estimator.partial_fit(X[start : start + chunk])
        times.append(time.perf_counter() - began)
    return statistics.median(times[1:])


def seconds_per_fit(package: Any, X: np.ndarray) -> float:
    began = time.perf_counter()
    package.EBFlowDensity(n_flows=1, max_iter=5, device="cpu", random_state=0).fit(X)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="63dce87")
    parser.add_argument("--features", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    import skebflow

    with tempfile.TemporaryDirectory() as folder:
        packages = {
            args.base: import_base(args.base, Path(folder)),
            "working tree": skebflow,
        }
        print(machine_line(f"base {args.base}, chunks of {args.chunk} rows"))
        rng = np.random.default_rng(0)
        for n_features in args.features:
            X = rng.normal(size=(10 * args.chunk, n_features))
            X[:, 1:] += 0.5 * X[:, :1]
            chunks: dict[str, list[float]] = {name: [] for name in packages}
            fits: dict[str, list[float]] = {name: [] for name in packages}
            for round_index in range(args.rounds + 1):
                for name, package in packages.items():
                    chunk_seconds = seconds_per_chunk(package, X, args.chunk)
                    fit_seconds = seconds_per_fit(package, X)
                    if round_index:  # round 0 warms up
                        chunks[name].append(chunk_seconds)
                        fits[name].append(fit_seconds)
            chunk_base, chunk_now = (
                statistics.median(chunks[name]) for name in packages
            )
            fit_base, fit_now = (statistics.median(fits[name]) for name in packages)
            print(
                f"{n_features:3d} features: partial_fit per chunk {chunk_now:.4f} s"
                f" against {chunk_base:.4f} s at {args.base}"
                f" ({chunk_now / chunk_base:.2f}x); fit of {len(X)} rows, 5 epochs,"
                f" {fit_now:.2f} s against {fit_base:.2f} s"
                f" ({fit_now / fit_base:.2f}x)",
                flush=True,
            )
    print(machine_line("after"))


if __name__ == "__main__":
    main()
