"""Mixtures of K independently trained flows against one flow, on the tuning group.

For each data set of ``benchmarks/density.py``'s tuning group (its ``prepare``: the
same split, cap on training rows, jitter of discrete columns), fits ``--members``
``EBFlowDensity`` models of one flow each (``n_flows=1``, every other parameter
at its default) that differ only by ``random_state`` (so by their initialization,
batch order and early-stopping split), and scores the equal-weight mixture of the
first K of them on the test rows: ``logsumexp_k log p_k - log K``, itself a
normalized density. K = 1 is the default estimator as it was before
``n_flows="auto"`` (which this sweep chose). Each fit is written as it finishes
(``--resume`` skips the fits of the same split seed and training cap).

Run::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ensemble_sweep.py --resume

Writes ``benchmarks/results/ensemble_sweep.json``; the evaluation group is refused.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy.special import logsumexp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from density import EVALUATION_SETS, TUNING_SETS, prepare, recorded_split  # noqa: E402

from skebflow import EBFlowDensity  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="all")
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0, help="the data split's seed")
    parser.add_argument("--max-train", type=int, default=2000)
    parser.add_argument("--stem", default="ensemble_sweep")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    datasets = list(TUNING_SETS) if args.datasets == "all" else args.datasets.split(",")
    if set(datasets) & set(EVALUATION_SETS):
        raise SystemExit("the evaluation group chooses nothing; sweep tuning sets")
    path = ROOT / "benchmarks" / "results" / f"{args.stem}.json"
    fits = json.loads(path.read_text()) if args.resume and path.exists() else []
    done = {
        (fit["dataset"], fit["member"])
        for fit in fits
        if recorded_split(fit) == (args.seed, args.max_train)
    }
    for dataset in datasets:
        X_train, X_test, info = prepare(dataset, args.seed, args.max_train)
        for member in range(args.members):
            if (dataset, member) in done:
                continue
            start = time.perf_counter()
            model = EBFlowDensity(
                device="cpu", n_flows=1, random_state=1000 * args.seed + member
            )
            model.fit(X_train)
            fits.append(
                {
                    "dataset": dataset,
                    "member": member,
                    "seed": args.seed,
                    "max_train": args.max_train,
                    "n_features": info["n_features"],
                    "n_train": int(X_train.shape[0]),
                    "test_scores": model.score_samples(X_test).tolist(),
                    "seconds": time.perf_counter() - start,
                }
            )
            print(
                f"{dataset:14s} member {member}:"
                f" {np.mean(fits[-1]['test_scores']):9.3f}"
                f" ({fits[-1]['seconds']:.0f}s)",
                flush=True,
            )
            path.write_text(json.dumps(fits))
    summarize(
        [fit for fit in fits if recorded_split(fit) == (args.seed, args.max_train)],
        args.members,
    )


def summarize(fits: list[dict], n_members: int) -> None:
    """Per data set: one flow and mixtures of the first K, test mean log-likelihood
    in nats per row; the gains over one flow in nats per dimension."""
    datasets = list(dict.fromkeys(fit["dataset"] for fit in fits))
    sizes = [k for k in (1, 2, 3, 4, 6, 8) if k <= n_members]
    print(f"\n| data set | D | n | {' | '.join(f'K={k}' for k in sizes)} |")
    print("|---|---:|---:|" + "---:|" * len(sizes))
    gains = {k: [] for k in sizes}
    for dataset in datasets:
        members = sorted(
            (f for f in fits if f["dataset"] == dataset), key=lambda f: f["member"]
        )
        if len(members) < n_members:
            continue
        scores = np.array([m["test_scores"] for m in members])
        dimension = members[0]["n_features"]
        means = []
        for k in sizes:
            mixture = logsumexp(scores[:k], axis=0) - np.log(k)
            means.append(float(mixture.mean()))
            gains[k].append((means[-1] - means[0]) / dimension)
        cells = " | ".join(f"{value:.3f}" for value in means)
        print(f"| {dataset} | {dimension} | {members[0]['n_train']} | {cells} |")
    for k in sizes[1:]:
        values = np.array(gains[k])
        print(
            f"K={k}: mean gain over one flow {values.mean():+.4f} nats/dim,"
            f" better on {int((values > 0).sum())} of {len(values)} sets"
        )


if __name__ == "__main__":
    main()
