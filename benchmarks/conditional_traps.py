"""Conditional draws near false peaks of a fitted flow: draws against the model.

A bivariate normal with correlation 0.999 (1 000 rows), the default EBFlowDensity.
Given ``x0``, the model's conditional of ``x1`` is about 0.04 wide (standardized
units about 1), and the fitted flow has small false peaks in its tails, tens of
nats below the conditional's mode. For ``x0`` in (-1.2, 1.5) the script draws 400
chains with ``sample_conditional`` at its defaults and compares them with the
model's own conditional, computed on a grid of ``score_samples``: the draws'
mean and spread, and how many lie more than 6 conditional standard deviations from
its mean (where the model holds no mass). Then ``EBFlowImputer`` at its defaults
fills ``x1`` of rows with ``x0`` from -1.3 to -1.1, and the fills' distance from
the model's conditional mean is printed in conditional standard deviations.

Run from a checkout of any commit to compare the samplers:
``OMP_NUM_THREADS=1 python benchmarks/conditional_traps.py`` (a few minutes on one
thread). Times are of the sampling calls, indicative only.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch
from _machine import machine_line

from skebflow import EBFlowDensity, EBFlowImputer


def model_conditional(est: EBFlowDensity, x0: float) -> tuple[float, float]:
    """Mean and standard deviation of the model's density of ``x1`` given ``x0``."""
    grid = np.linspace(-5, 5, 100_001)
    log_p = est.score_samples(np.c_[np.full_like(grid, x0), grid])
    p = np.exp(log_p - log_p.max())
    mean = float((grid * p).sum() / p.sum())
    return mean, float(np.sqrt(((grid - mean) ** 2 * p).sum() / p.sum()))


def main() -> None:
    torch.set_num_threads(1)
    print(machine_line())
    rng = np.random.RandomState(0)
    X = rng.multivariate_normal([0, 0], [[1, 0.999], [0.999, 1]], 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = EBFlowDensity(random_state=0, device="cpu").fit(X)
    print(
        "| x0 | model mean / sd | draws mean / sd | draws > 6 sd off (of 400) |"
        " warnings | seconds |"
    )
    print("|---|---|---|---:|---|---:|")
    for x0 in (-1.2, 1.5):
        mean, sd = model_conditional(est, x0)
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            draws = est.sample_conditional(
                np.tile([x0, np.nan], (400, 1)), random_state=0
            )[:, 1]
        seconds = time.perf_counter() - start
        off = int((np.abs(draws - mean) > 6 * sd).sum())
        names = sorted({type(w.message).__name__ for w in caught}) or ["none"]
        print(
            f"| {x0} | {mean:.3f} / {sd:.3f} | {draws.mean():.3f} / {draws.std():.3f}"
            f" | {off} | {', '.join(names)} | {seconds:.1f} |"
        )
    rows = np.c_[np.linspace(-1.3, -1.1, 5), np.full(5, np.nan)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        imputer = EBFlowImputer(
            EBFlowDensity(random_state=0, device="cpu"), random_state=0
        ).fit(X)
        start = time.perf_counter()
        fills = imputer.transform(rows)[:, 1]
        seconds = time.perf_counter() - start
    model = imputer.estimator_
    errors = []
    for x0, fill in zip(rows[:, 0], fills, strict=True):
        mean, sd = model_conditional(model, float(x0))
        errors.append((fill - mean) / sd)
    print(
        "imputer fills minus the model's conditional mean, in conditional sd:"
        f" {', '.join(f'{e:+.1f}' for e in errors)} (transform {seconds:.1f} s)"
    )


if __name__ == "__main__":
    main()
