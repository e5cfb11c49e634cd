"""The evaluation group's headline with the detector's new default, half the epochs.

Reads the stored runs: the nine peers' and the previous default's rows
(``max_iter=200``) from ``results/anomaly_eval_geo_runs.csv``, the new default's
(``EBFlow-100epochs``, ``max_iter=100``) from ``results/anomaly_eval_epochs_runs.csv``;
the eight evaluation sets, seeds 0, 1 and 2. Prints, per protocol and for each
version of the detector, the mean ROC-AUC and AP over the sets (each the mean of its
seeds) and the average rank among the ten methods (1 = best, ties averaged), as
``anomaly.py``'s summary does.

Run ``python benchmarks/anomaly_epochs_headline.py``.
"""

from __future__ import annotations

import collections
import csv
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

RESULTS = Path(__file__).resolve().parent / "results"
SETS = (
    "14_glass",
    "40_vowels",
    "12_fault",
    "27_PageBlocks",
    "28_pendigits",
    "22_magic.gamma",
    "23_mammography",
    "25_musk",
)
PEERS = ("IsolationForest", "LOF", "OCSVM", "GMM", "KDE", "KNN", "ECOD", "COPOD", "NSF")
OLD, NEW = "EBFlow (200 epochs)", "EBFlow (100 epochs)"


def load() -> dict[tuple[str, str, str], list[tuple[float, float, float]]]:
    """(protocol, method, data set) -> [(ROC-AUC, AP, fit CPU s) per seed]."""
    rows = []
    with open(RESULTS / "anomaly_eval_geo_runs.csv") as file:
        for row in csv.DictReader(file):
            if row["method"] in PEERS:
                rows.append(row)
            elif row["method"] == "EBFlow":
                rows.append({**row, "method": OLD})
    with open(RESULTS / "anomaly_eval_epochs_runs.csv") as file:
        for row in csv.DictReader(file):
            if row["method"] == "EBFlow-100epochs":
                rows.append({**row, "method": NEW})
    splits = collections.defaultdict(list)
    for row in rows:
        if row["dataset"] in SETS and row["seed"] in ("0", "1", "2"):
            key = (row["protocol"], row["method"], row["dataset"])
            splits[key].append(
                (float(row["roc_auc"]), float(row["ap"]), float(row["fit_cpu_s"]))
            )
    return splits


def main() -> None:
    splits = load()
    for protocol in "ab":
        for version in (OLD, NEW):
            methods = (*PEERS, version)
            roc = {
                m: [np.mean([s[0] for s in splits[protocol, m, d]]) for d in SETS]
                for m in methods
            }
            ap = {
                m: [np.mean([s[1] for s in splits[protocol, m, d]]) for d in SETS]
                for m in methods
            }
            rank_roc = np.mean(
                [rankdata([-roc[m][i] for m in methods]) for i in range(len(SETS))],
                axis=0,
            )
            rank_ap = np.mean(
                [rankdata([-ap[m][i] for m in methods]) for i in range(len(SETS))],
                axis=0,
            )
            print(f"protocol ({protocol}), ranks among the nine peers and {version}")
            print(
                "| method | mean ROC-AUC | mean AP | rank ROC-AUC | rank AP | splits |"
            )
            print("|---|---:|---:|---:|---:|---:|")
            for index, method in enumerate(methods):
                n_splits = sum(len(splits[protocol, method, d]) for d in SETS)
                mean_roc, mean_ap = np.mean(roc[method]), np.mean(ap[method])
                print(
                    f"| {method} | {mean_roc:.4f} | {mean_ap:.4f}"
                    f" | {rank_roc[index]:.2f} | {rank_ap[index]:.2f} | {n_splits} |"
                )
            fit = [s[2] for d in SETS for s in splits[protocol, version, d]]
            print(f"{version}: median fit CPU s per split {np.median(fit):.1f}\n")


if __name__ == "__main__":
    main()
