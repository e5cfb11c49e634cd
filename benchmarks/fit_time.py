"""Fit time of the default estimators on one thread.

``--estimator density`` (the default): the default EBFlowDensity on
``make_classification(10000, 20, n_informative=10, random_state=0)``, and the same
without the kernel marginals (``marginal_transform=None``) and with the affine
couplings of the previous defaults, one after the other in one process, each fitted
once (a fit takes minutes, so there is no warm-up beyond the first epochs).
``make_classification`` makes 2 of the 20 features exact linear combinations of the
informative ones by default (``n_redundant=2``): such rows lie on a hyperplane and
have no density, so the held-out likelihood rises for as long as the fit runs and
early stopping never ends it. ``--redundant 2 0`` times the original data, then the
same generator with ``n_redundant=0`` (20 independent features), in one process;
each line says whether the fit stopped on its own. ``--jitter 1e-3 1e-2`` times
the default with those jitters instead (the troubleshooting page's advice for rows
on a hyperplane). ``--drop-dependent`` times the default, then the default on
the same rows without the features it modelled as affine functions of others.
Since 5 Dec 2026 (seventh session) a warm-up fit (2 epochs on 500 rows, printed
with its time) comes first, as in the detector's timing: the first optimizer a
process builds imports ``torch._dynamo`` (``Optimizer.__init__`` is wrapped by
``torch._disable_dynamo``), a one-time cost of seconds per process that the
timings before it charged to the first configuration's fit.

``--estimator detector``: the default EBFlowOutlierDetector on ``--rows`` x
``--features`` rows of the same generator (issue 15's target: 5 000 x 30 in under
30 s), three fits with seeds 0, 1, 2 after a short warm-up fit; the median is
printed. ``--novelty`` times the detector with ``novelty=True`` instead.

Prints the machine and its load average before and after.

Run ``python benchmarks/fit_time.py`` or
``python benchmarks/fit_time.py --estimator detector --rows 5000 --features 30``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import torch
from _machine import machine_line  # noqa: E402
from sklearn.datasets import make_classification

from skebflow import EBFlowDensity, EBFlowOutlierDetector

CONFIGS = {
    "default (logistic_mixture, wd 1e-4, kernel marginals)": {},
    "default without kernel marginals": {"marginal_transform": None},
    "affine (previous default)": {
        "coupling_transform": "affine",
        "weight_decay": 0.0,
        "marginal_transform": None,
    },
}


def time_density(
    rows: int,
    features: int,
    redundant: list[int],
    jitters: list[float],
    drop_dependent: bool = False,
) -> None:
    start = time.perf_counter()
    warm_up, _ = make_classification(
        500, features, n_informative=min(10, features), n_redundant=0, random_state=1
    )
    EBFlowDensity(device="cpu", max_iter=2, random_state=0).fit(warm_up)
    print(f"warm-up fit (lazy imports): {time.perf_counter() - start:.1f} s")
    for n_redundant in redundant:
        X, _ = make_classification(
            rows,
            features,
            n_informative=min(10, features - n_redundant),
            n_redundant=n_redundant,
            random_state=0,
        )
        print(f"make_classification(n_redundant={n_redundant}):")
        configs = (
            {f"default, jitter={jitter:g}": {"jitter": jitter} for jitter in jitters}
            if jitters
            else CONFIGS
        )
        if drop_dependent:
            configs = {"default": {}}
        for name, params in configs.items():
            start = time.perf_counter()
            est = EBFlowDensity(device="cpu", random_state=0, **params).fit(X)
            seconds = time.perf_counter() - start
            print(
                f"  {name}: {seconds:.1f} s, {est.n_iter_} epochs,"
                f" {seconds / est.n_iter_:.2f} s/epoch, converged {est.converged_},"
                f" best held-out log-likelihood {est.best_validation_score_:.3f}"
            )
        if drop_dependent:
            kept = ~est.dependent_features_
            start = time.perf_counter()
            est = EBFlowDensity(device="cpu", random_state=0).fit(X[:, kept])
            seconds = time.perf_counter() - start
            print(
                f"  default, the {int((~kept).sum())} dependent features dropped:"
                f" {seconds:.1f} s, {est.n_iter_} epochs,"
                f" {seconds / est.n_iter_:.2f} s/epoch, converged {est.converged_},"
                f" best held-out log-likelihood {est.best_validation_score_:.3f}"
            )


def time_detector(rows: int, features: int, novelty: bool = False) -> None:
    X, _ = make_classification(
        rows,
        features,
        n_informative=min(10, features),
        n_redundant=min(2, features - min(10, features)),
        random_state=0,
    )
    EBFlowOutlierDetector(device="cpu", max_iter=2, random_state=0).fit(X[:500])
    seconds = []
    for seed in range(3):
        start = time.perf_counter()
        est = EBFlowOutlierDetector(
            device="cpu", random_state=seed, novelty=novelty
        ).fit(X)
        seconds.append(time.perf_counter() - start)
        print(
            f"detector (novelty={novelty}), seed {seed}: {seconds[-1]:.1f} s,"
            f" {est.n_iter_} epochs,"
            f" {seconds[-1] / est.n_iter_:.2f} s/epoch"
        )
    print(f"detector on {rows} x {features}: median {statistics.median(seconds):.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--estimator", choices=("density", "detector"), default="density"
    )
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--features", type=int, default=None)
    parser.add_argument(
        "--redundant",
        type=int,
        nargs="+",
        default=[2],
        help="make_classification's n_redundant, one run per value (density only)",
    )
    parser.add_argument(
        "--jitter",
        type=float,
        nargs="+",
        default=[],
        help="time the default with each of these jitters instead of CONFIGS"
        " (density only)",
    )
    parser.add_argument(
        "--drop-dependent",
        action="store_true",
        help="time the default, then the default without the features it models"
        " as affine functions of others (dependent_features_; density only)",
    )
    parser.add_argument(
        "--novelty",
        action="store_true",
        help="the detector with novelty=True (settings for clean training rows)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    print(machine_line())
    if args.estimator == "density":
        time_density(
            args.rows or 10_000,
            args.features or 20,
            args.redundant,
            args.jitter,
            args.drop_dependent,
        )
    else:
        time_detector(args.rows or 5_000, args.features or 30, args.novelty)
    print(f"load {os.getloadavg()}")


if __name__ == "__main__":
    main()
