"""Issue 15's verdicts on the evaluation group, the fresh group and both together.

The fresh group (``anomaly.py --group fresh``, six ``adbench_large`` sets each
subsampled once to 20 000 rows; its rule is in ``anomaly.py``'s docstring, fixed
before its first run) measures how optimistic the evaluation group's verdicts are
after the four decisions that read it. This script reads the stored runs, seeds
0-2:

- protocol (a): the nine peers and the detector told its training rows are clean
  (``EBFlow-novelty``, its default since 5 Dec 2026, ninth session: kernel
  marginals with 1-standard-deviation tails, weight decay 3e-3), on the
  evaluation group from ``anomaly_epochs_headline.load`` (ECOD and COPOD scored
  one test row at a time) and on the fresh group from
  ``anomaly_fresh_a_s01_runs.csv`` and ``anomaly_fresh_a_s2_runs.csv`` (the
  peers) and ``anomaly_fresh_novelty_wd3e-3_runs.csv`` (the detector; its rows
  at weight decay 1e-3 are in the first two files, and their verdicts in
  ``anomaly_fresh_headline.log``);
- protocol (b): the nine peers and the detector at its defaults, on the
  evaluation group the stored default (``EBFlow-50epochs-wd1e-3``) and on the
  fresh group ``anomaly_fresh_b_runs.csv``.

For each protocol and group it prints every method's mean ROC-AUC and AP (each
set's mean over seeds, then the mean over sets) and average rank among the ten
methods, and the detector's gap to the best peer.

Run ``python benchmarks/anomaly_fresh_headline.py`` (results in
``benchmarks/results/anomaly_fresh_headline_wd3e-3.log`` when redirected there).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from anomaly import (  # noqa: E402
    EBFLOW,
    EBFLOW_NOVELTY,
    EVALUATION_SETS,
    FRESH_SETS,
    PEERS,
    average_ranks,
    per_dataset,
    read_rows,
)
from anomaly_epochs_headline import CURRENT, load  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
#: The evaluation group's stored label of the detector in each protocol.
EVALUATION_LABELS = {
    "a": "EBFlow (novelty=True, 1-sd tails, wd 3e-3)",
    "b": CURRENT,
}
#: The fresh group's runs (the peers' rows) in each protocol.
FRESH_RUNS = {
    "a": ("anomaly_fresh_a_s01_runs.csv", "anomaly_fresh_a_s2_runs.csv"),
    "b": ("anomaly_fresh_b_runs.csv",),
}
#: The fresh group's rows of the detector at its current default, and its method
#: name there: in protocol (a) novelty=True at weight decay 3e-3 (5 Dec 2026,
#: ninth session; its rows at 1e-3 are those of FRESH_RUNS["a"], whose log is
#: anomaly_fresh_headline.log).
FRESH_DETECTOR = {
    "a": ("anomaly_fresh_novelty_wd3e-3_runs.csv", EBFLOW_NOVELTY),
    "b": ("anomaly_fresh_b_runs.csv", EBFLOW),
}
DETECTOR = "EBFlow"


def protocol_rows(protocol: str) -> list[dict]:
    """Every stored row of ``protocol`` for the peers and the detector (labelled
    ``DETECTOR``) on both groups, seeds 0-2."""
    rows = [
        {**row, "method": row["method"] if row["method"] in PEERS else DETECTOR}
        for row in load(pyod_rowwise=True)
        if row["protocol"] == protocol
        and row["method"] in (*PEERS, EVALUATION_LABELS[protocol])
    ]
    detector_file, name = FRESH_DETECTOR[protocol]
    sources = [(file_name, PEERS) for file_name in FRESH_RUNS[protocol]]
    for file_name, methods in [*sources, (detector_file, (name,))]:
        path = RESULTS / file_name
        if not path.exists():
            print(f"({file_name} not there yet)")
            continue
        rows += [
            {**row, "method": row["method"] if row["method"] in PEERS else DETECTOR}
            for row in read_rows(path)
            if row["protocol"] == protocol
            and row["method"] in methods
            and row["seed"] in (0, 1, 2)
        ]
    return rows


def table(rows: list[dict], protocol: str, datasets: list[str], title: str) -> None:
    methods = [*PEERS, DETECTOR]
    present = [d for d in datasets if any(r["dataset"] == d for r in rows)]
    roc = per_dataset(rows, protocol, "roc_auc", methods, present)
    ap = per_dataset(rows, protocol, "ap", methods, present)
    rank_roc = average_ranks(roc, methods, present)
    rank_ap = average_ranks(ap, methods, present)
    seeds = sorted({r["seed"] for r in rows if r["dataset"] in present})
    print(f"\nprotocol ({protocol}), {title}: {len(present)} sets, seeds {seeds}")
    print("| method | mean ROC-AUC | mean AP | rank ROC-AUC | rank AP |")
    print("|---|---:|---:|---:|---:|")
    means = {}
    for method in methods:
        means[method] = (
            float(np.mean(list(roc[method].values()))),
            float(np.mean(list(ap[method].values()))),
        )
        print(
            f"| {method} | {means[method][0]:.4f} | {means[method][1]:.4f}"
            f" | {rank_roc[method]:.2f} | {rank_ap[method]:.2f} |"
        )
    def known(value: float) -> float:  # a failed (NaN) value is never the best
        return -math.inf if math.isnan(value) else value

    for index, metric in enumerate(("ROC-AUC", "AP")):
        best = max(PEERS, key=lambda m: known(means[m][index]))
        gap = means[DETECTOR][index] - means[best][index]
        print(f"{DETECTOR} minus the best peer by mean {metric} ({best}): {gap:+.4f}")
    for metric, ranks in (("ROC-AUC", rank_roc), ("AP", rank_ap)):
        order = sorted(methods, key=lambda m: ranks[m])
        print(f"{DETECTOR}'s place by rank {metric}: {order.index(DETECTOR) + 1}")
    print("per set (ROC-AUC / AP of the detector, best peer's ROC-AUC / AP):")
    for d in present:
        best_roc = max(PEERS, key=lambda m: known(roc[m][d]))
        best_ap = max(PEERS, key=lambda m: known(ap[m][d]))
        print(
            f"  {d}: {roc[DETECTOR][d]:.3f} / {ap[DETECTOR][d]:.3f};"
            f" {best_roc} {roc[best_roc][d]:.3f} / {best_ap} {ap[best_ap][d]:.3f}"
        )


def main() -> None:
    groups = {
        "evaluation group": list(EVALUATION_SETS),
        "fresh group": list(FRESH_SETS),
        "both groups": [*EVALUATION_SETS, *FRESH_SETS],
    }
    for protocol in "ab":
        rows = protocol_rows(protocol)
        for title, datasets in groups.items():
            table(rows, protocol, datasets, title)


if __name__ == "__main__":
    main()
