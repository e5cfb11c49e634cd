"""Whole fits: an earlier commit's code against the working tree's, side by side.

The package at ``--base`` is imported beside ``skebflow`` (as in ``step_ab.py``), and
both fit the same estimator on the same rows, alternating round by round so that the
machine's changes of load hit both alike: ``--rounds`` rounds of one fit each of
``--epochs`` epochs (the defaults otherwise, so 10 % of the rows are held out
for early stopping, which does not stop so few epochs) on
``make_classification(--rows, --features)``, one thread. Prints the median
seconds per epoch of each, their ratio, and each fit's mean log-density of 2 000
training rows (the two should train alike).

Run::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fit_ab.py --base HEAD
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fit_ab.py --base HEAD \\
        --estimator detector --rows 5000 --features 30
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from _machine import machine_line  # noqa: E402
from sklearn.datasets import make_classification
from step_ab import import_base  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True)
    parser.add_argument(
        "--estimator", choices=("density", "detector"), default="density"
    )
    parser.add_argument("--rows", type=int, default=10000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    import skebflow

    X, _ = make_classification(
        args.rows,
        args.features,
        n_informative=min(10, args.features),
        n_redundant=min(2, args.features - min(10, args.features)),
        random_state=0,
    )
    class_name = (
        "EBFlowDensity" if args.estimator == "density" else "EBFlowOutlierDetector"
    )
    with tempfile.TemporaryDirectory() as folder:
        packages = {
            args.base: import_base(args.base, Path(folder)),
            "working tree": skebflow,
        }
        print(machine_line(f"base {args.base}"))
        seconds: dict[str, list[float]] = {name: [] for name in packages}
        last: dict[str, float] = {}
        for round_index in range(args.rounds + 1):
            for name, package in packages.items():
                estimator = getattr(package, class_name)(
                    device="cpu",
                    random_state=0,
                    max_iter=args.epochs if round_index else 2,
                )
                start = time.perf_counter()
                estimator.fit(X)
                if round_index:  # round 0 warms up
                    seconds[name].append(
                        (time.perf_counter() - start) / estimator.n_iter_
                    )
                    last[name] = float(estimator.score_samples(X[:2000]).mean())
        per_epoch = {
            name: statistics.median(values) for name, values in seconds.items()
        }
        for name in packages:
            print(
                f"{name}: {per_epoch[name]:.3f} s/epoch (median of {args.rounds}),"
                f" mean log-density of 2 000 training rows {last[name]:.4f}"
            )
        print(f"speed-up {per_epoch[args.base] / per_epoch['working tree']:.2f}x")


if __name__ == "__main__":
    main()
