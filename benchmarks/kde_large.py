"""Kernel marginals on large data: the bandwidth's n^(-1/5) scaling beyond 2 000 rows.

The density benchmark's tuning group chose the kernel marginals
(``marginal_transform``) and then scaled each column's bandwidth, chosen by the
leave-one-out likelihood of 500 rows, to every row by ``(500 / n)^(1/5)``. Its sets
have at most 2 000 training rows, where the factor is at least 0.76; on the known
density's 12 000 rows (0.53) the scaled bandwidths lowered every objective's KL
fit. This sweep puts the scaling to the large-data tuning group of
``benchmarks/batch_sweep.py`` (annthyroid, 5 040 training rows; cover, donors and
skin from ``adbench_large/``, 10 000 each; ``density.prepare``'s protocol, seed 0),
which no density default was chosen on but the batch size.

Candidates, at the defaults otherwise: ``scaled`` (the default when the sweep ran;
``skebflow._preparation.KERNEL_SCALED_TO_ALL_ROWS = True``), ``500-row`` (the
bandwidths as chosen on 500 rows, the switch off: the default since, chosen by this
sweep) and ``none`` (``marginal_transform=None``).

**The rule, fixed before the run:** of ``scaled`` and ``500-row`` (the same cost),
the one with the higher mean test log-likelihood per dimension over the four sets
becomes the default (a tie keeps ``scaled``). ``none`` is reported only.

Run (one thread; ``--resume`` skips finished fits; each is written as it ends)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/kde_large.py --candidates scaled,none
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/kde_large.py --candidates 500-row \\
        --stem kde_large_b
    .venv/bin/python benchmarks/kde_large.py --report-only --stem kde_large,kde_large_b

Writes ``benchmarks/results/<stem>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine_line  # noqa: E402
from batch_sweep import TUNING_SETS, load  # noqa: E402

import skebflow._preparation as preparation  # noqa: E402
from skebflow import EBFlowDensity  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CANDIDATES = {
    "scaled": {},
    "500-row": {},
    "none": {"marginal_transform": None},
    "adaptive": {},
}
#: The module settings of skebflow._preparation each candidate fits under (the
#: runs of 4 December had one bandwidth per column: the sensitivity at 0).
MODULE_SETTINGS = {
    "scaled": {"KERNEL_SCALED_TO_ALL_ROWS": True, "KERNEL_ADAPTIVE_SENSITIVITY": 0.0},
    "500-row": {"KERNEL_SCALED_TO_ALL_ROWS": False, "KERNEL_ADAPTIVE_SENSITIVITY": 0.0},
    "none": {},
    "adaptive": {
        "KERNEL_SCALED_TO_ALL_ROWS": False,
        "KERNEL_ADAPTIVE_SENSITIVITY": 0.5,
    },
}


def fit_one(candidate: str, X_train: np.ndarray, X_test: np.ndarray) -> dict:
    settings = MODULE_SETTINGS[candidate]
    with (
        mock.patch.multiple(preparation, **settings)
        if settings
        else contextlib.nullcontext()
    ):
        start = time.perf_counter()
        est = EBFlowDensity(device="cpu", random_state=0, **CANDIDATES[candidate])
        est.fit(X_train)
        seconds = time.perf_counter() - start
    return {
        "loglik_per_dim": float(np.mean(est.score_samples(X_test))) / X_train.shape[1],
        "seconds": seconds,
        "n_iter": int(est.n_iter_),
    }


def report(fits: list[dict]) -> None:
    print("| candidate | " + " | ".join(TUNING_SETS) + " | mean |")
    print("|---" * (len(TUNING_SETS) + 2) + "|")
    means = {}
    for candidate in CANDIDATES:
        cells, values = [], []
        for name in TUNING_SETS:
            match = [
                f for f in fits if f["candidate"] == candidate and f["dataset"] == name
            ]
            if match:
                values.append(match[0]["loglik_per_dim"])
                cells.append(
                    f"{match[0]['loglik_per_dim']:.4f} / {match[0]['seconds']:.0f} s"
                    f" / {match[0]['n_iter']}"
                )
            else:
                cells.append("")
        if len(values) == len(TUNING_SETS):
            means[candidate] = float(np.mean(values))
        mean = f"{means[candidate]:.4f}" if candidate in means else ""
        print(f"| {candidate} | " + " | ".join(cells) + f" | {mean} |")
    if "adaptive" in means and "500-row" in means:
        print(
            f"\nadaptive minus one bandwidth (500-row): "
            f"{means['adaptive'] - means['500-row']:+.4f} nats per dimension"
        )
    if "scaled" in means and "500-row" in means:
        chosen = "scaled" if means["scaled"] >= means["500-row"] else "500-row"
        print(
            f"\nchosen by the rule: {chosen} (scaled minus 500-row:"
            f" {means['scaled'] - means['500-row']:+.4f} nats per dimension)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--stem", default="kde_large")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    stems = args.stem.split(",")
    if args.report_only:
        fits = []
        for stem in stems:
            path = RESULTS / f"{stem}.json"
            if path.exists():
                fits += json.loads(path.read_text())["fits"]
        report(fits)
        return
    path = RESULTS / f"{stems[0]}.json"
    stored = json.loads(path.read_text()) if path.exists() and args.resume else {}
    fits = stored.get("fits", [])
    done = {(f["dataset"], f["candidate"]) for f in fits}
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    machine = machine_line()
    print(machine, flush=True)
    for dataset in TUNING_SETS:
        X_train, X_test = load(dataset, 0, 10_000)
        for candidate in args.candidates.split(","):
            if (dataset, candidate) in done:
                continue
            fit = {"dataset": dataset, "candidate": candidate}
            fit.update(fit_one(candidate, X_train, X_test))
            fits.append(fit)
            path.write_text(json.dumps({"machine": machine, "fits": fits}, indent=1))
            print(
                f"{dataset} [{candidate}]: {fit['loglik_per_dim']:.4f} nats/dim,"
                f" {fit['seconds']:.0f} s, {fit['n_iter']} epochs",
                flush=True,
            )
    report(fits)


if __name__ == "__main__":
    main()
