"""Why a data set's default fit stops where it does: training settings side by side.

A diagnosis, not a selection: it fits the default EBFlowDensity (one flow, or the
settings given) on one data set of ``benchmarks/density.py`` under that
benchmark's ``prepare`` (seed 0, at most 2 000 training rows) and prints, per
setting, the fit time, the epochs, the training and test log-likelihoods (nats per
row), the best held-out one, and the held-out curve at ten points. Run on musk
(evaluation group) on 5 December to see why it trails NSF; nothing was chosen on
it (docs/benchmarks.md, "Musk").

``--spectrum`` prints instead, for every set of the tuning and evaluation groups,
the eigenvalues of the training rows' correlation matrix: the smallest, how many
lie below 1e-2 and 1e-3 (thin directions), and the full-covariance Gaussian's gain
over independent columns, -1/2 sum(log eigenvalues) / D, in nats per dimension.

Run (one thread)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/schedule_diagnosis.py 25_musk \\
        "{'n_flows': 1}" "{'n_flows': 1, 'max_iter': 400, 'n_iter_no_change': 40}"
    .venv/bin/python benchmarks/schedule_diagnosis.py --spectrum
"""

from __future__ import annotations

import argparse
import ast
import time
import warnings

import density
import numpy as np
import torch

from skebflow import EBFlowDensity


def spectrum() -> None:
    for name in (
        density.TUNING_SETS + density.EVALUATION_SETS + density.WIDE_TUNING_SETS
    ):
        X_train = density.prepare(name, 0, 2000)[0]
        eigenvalues = np.linalg.eigvalsh(np.corrcoef(X_train.T))
        n_features = len(eigenvalues)
        gain = -0.5 * np.log(eigenvalues).sum() / n_features
        print(
            f"{name:16s} D={n_features:3d} n={len(X_train):5d}"
            f" smallest={eigenvalues.min():.1e}"
            f" below 1e-2: {np.sum(eigenvalues < 1e-2)}"
            f" below 1e-3: {np.sum(eigenvalues < 1e-3)}"
            f" Gaussian gain per dim {gain:.3f}"
        )


def diagnose(name: str, settings: list[str]) -> None:
    X_train, X_test, _ = density.prepare(name, 0, 2000)
    for text in settings:
        params = ast.literal_eval(text)
        start = time.perf_counter()
        est = EBFlowDensity(device="cpu", random_state=0, **params).fit(X_train)
        seconds = time.perf_counter() - start
        curve = est.validation_scores_
        points = [
            round(curve[i], 1) for i in range(0, len(curve), max(1, len(curve) // 10))
        ]
        print(
            f"{text} {seconds:.0f}s n_iter={est.n_iter_} train={est.score(X_train):.2f}"
            f" test={est.score(X_test):.2f} best_val={est.best_validation_score_:.2f}"
            f" val@ {points}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", nargs="?", default="25_musk")
    parser.add_argument("settings", nargs="*", default=["{'n_flows': 1}"])
    parser.add_argument("--spectrum", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    if args.spectrum:
        spectrum()
    else:
        diagnose(args.dataset, args.settings)


if __name__ == "__main__":
    main()
