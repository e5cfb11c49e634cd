"""What the checks for a run-away fit cost: ``partial_fit`` chunks and whole fits.

Since 6 December 2026 every trained flow is checked twice more before it is kept:

- its round trip: the first 32 training rows mapped to the base space and back
  (``non_invertible_rows``), which catches a flow that has collapsed with finite
  weights;
- its mean log-likelihood against the flow it started from, on the held-out rows
  (``fit``) or on the chunk (``partial_fit``; ``_StartCheck``), which catches a fit
  that ended more than 1 nat per feature worse than it started.

This script times the default estimator's ``partial_fit`` per chunk and a short
``fit``, with the checks and with both stubbed out (the round trip counting no row,
the comparison saying nothing), alternating the two in one process, after a
warm-up, and prints the medians and their ratio.

Run ``OMP_NUM_THREADS=1 python benchmarks/divergence_checks_cost.py``
(``--features``, ``--chunk`` and ``--repeats`` change the setting).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
import warnings
from collections.abc import Iterator

import numpy as np
import torch
from _machine import machine_line  # noqa: E402
from sklearn.exceptions import ConvergenceWarning

import skebflow._density as density_module
from skebflow import EBFlowDensity


@contextlib.contextmanager
def checks_stubbed(stubbed: bool) -> Iterator[None]:
    """The two checks as they are, or stubbed out (``stubbed``)."""
    if not stubbed:
        yield
        return
    round_trip = density_module.non_invertible_rows
    drop = density_module._StartCheck.drop
    density_module.non_invertible_rows = lambda *args: 0
    density_module._StartCheck.drop = lambda self, flow: None
    try:
        yield
    finally:
        density_module.non_invertible_rows = round_trip
        density_module._StartCheck.drop = drop


def seconds_per_chunk(X: np.ndarray, chunk: int, stubbed: bool) -> float:
    """Median seconds of ``partial_fit`` over the chunks of ``X`` (the first, which
    fits the preprocessing, left out)."""
    est = EBFlowDensity(n_flows=1, device="cpu", random_state=0)
    times = []
    with checks_stubbed(stubbed):
        for start in range(0, len(X) - chunk + 1, chunk):
            began = time.perf_counter()
            est.partial_fit(X[start : start + chunk])
            times.append(time.perf_counter() - began)
    return statistics.median(times[1:])


def seconds_per_fit(X: np.ndarray, stubbed: bool) -> float:
    with checks_stubbed(stubbed), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        began = time.perf_counter()
        EBFlowDensity(n_flows=1, max_iter=5, device="cpu", random_state=0).fit(X)
        return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(machine_line(f"chunks of {args.chunk} rows"), flush=True)
    rng = np.random.default_rng(0)
    for n_features in args.features:
        X = rng.normal(size=(10 * args.chunk, n_features))
        X[:, 1:] += 0.5 * X[:, :1]
        seconds_per_chunk(X[: 3 * args.chunk], args.chunk, stubbed=False)  # warm-up
        runs: dict[bool, list[float]] = {False: [], True: []}
        fits: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.repeats):
            for stubbed in (False, True):
                runs[stubbed].append(seconds_per_chunk(X, args.chunk, stubbed))
                fits[stubbed].append(seconds_per_fit(X, stubbed))
        with_checks, without = (statistics.median(runs[s]) for s in (False, True))
        fit_with, fit_without = (statistics.median(fits[s]) for s in (False, True))
        print(
            f"{n_features:3d} features: partial_fit per chunk {with_checks:.4f} s with"
            f" the checks, {without:.4f} s without ({with_checks / without:.2f}x);"
            f" fit of {len(X)} rows, 5 epochs, {fit_with:.2f} s against"
            f" {fit_without:.2f} s ({fit_with / fit_without:.2f}x)",
            flush=True,
        )
    print(machine_line("after"), flush=True)


if __name__ == "__main__":
    main()
