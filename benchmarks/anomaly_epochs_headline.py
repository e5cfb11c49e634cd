"""The evaluation group's headline at each default of the detector on 3 Dec 2026.

Reads the stored runs: the nine peers' rows and the detector's at ``max_iter=200``
(its default until 3 Dec 2026) from ``results/anomaly_eval_geo_runs.csv``, at
``max_iter=100`` (``EBFlow-100epochs``, the default for part of that day) from
``results/anomaly_eval_epochs_runs.csv``, at ``max_iter=50`` (``EBFlow-50epochs``,
the default for another part) from ``results/anomaly_eval_50ep_runs.csv``, and at
``max_iter=50`` with ``weight_decay=1e-3`` (``EBFlow-50epochs-wd1e-3``, the default
since) from ``results/anomaly_eval_wd_runs.csv``, and, in protocol (a) only, the
detector told that its training rows are clean (``EBFlow-novelty``,
``novelty=True``) from ``results/anomaly_eval_novelty_runs.csv``, and the same with
its kernel marginals (4 Dec 2026) from ``results/anomaly_eval_novelty_kde_runs.csv``
and after their leave-one-out fix (5 Dec 2026) from
``results/anomaly_eval_novelty_kdefix_runs.csv``, and with their wide normal one
standard deviation wide (``novelty=True``'s default from then) from
``results/anomaly_eval_novelty_wide1_runs.csv``, and with weight decay 3e-3
(``novelty=True``'s default since 5 Dec 2026, ninth session) from
``results/anomaly_eval_novelty_wd3e-3_runs.csv``;
the evaluation
sets, seeds 0, 1 and 2. Prints, per protocol and for each version of
the detector, the mean ROC-AUC and AP over the sets (each the mean of its seeds) and
the average rank among the ten methods, with ``anomaly.py``'s own summaries.

ECOD's and COPOD's rows are those of ``results/anomaly_eval_pyod_rowwise_runs.csv``,
scored one test row at a time (4 Dec 2026: their ``decision_function`` folds the
rows it scores into the training rows, so the stored rows that scored every test row
together are biased low); ``--pyod-stored`` uses those biased rows instead, as the
script did by default until 5 Dec 2026 (``--pyod-rowwise``, then needed for the
row-at-a-time rows, is still accepted and changes nothing).

Run ``python benchmarks/anomaly_epochs_headline.py``; ``--plot PATH`` also draws the
rank figure of ``anomaly.py`` for the current default (``CURRENT``, as
``EBFlow``) with this morning's ``EBFlow-100epochs`` ranked in its place (the
documentation's is ``docs/_static/anomaly_ranks_default.png``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from anomaly import (  # noqa: E402
    EBFLOW,
    EBFLOW_DECAYED,
    EBFLOW_NOVELTY,
    EBFLOW_SHORT,
    EBFLOW_SHORTER,
    EVALUATION_SETS,
    PEERS,
    average_ranks,
    per_dataset,
    plot_ranks,
    read_rows,
    summarize,
)

RESULTS = Path(__file__).resolve().parent / "results"
#: Each version of the detector: its label, and the stored runs and method name
#: of its rows.
VERSIONS = {
    "EBFlow (200 epochs)": ("anomaly_eval_geo_runs.csv", EBFLOW),
    "EBFlow (100 epochs)": ("anomaly_eval_epochs_runs.csv", EBFLOW_SHORT),
    "EBFlow (50 epochs)": ("anomaly_eval_50ep_runs.csv", EBFLOW_SHORTER),
    "EBFlow (50 epochs, wd 1e-3)": ("anomaly_eval_wd_runs.csv", EBFLOW_DECAYED),
    # protocol (a) only: the detector told its training rows are clean
    "EBFlow (novelty=True)": ("anomaly_eval_novelty_runs.csv", EBFLOW_NOVELTY),
    # ... with kernel marginals, their bandwidths scaled to every row (4 Dec 2026)
    "EBFlow (novelty=True, kernel marginals)": (
        "anomaly_eval_novelty_kde_runs.csv",
        EBFLOW_NOVELTY,
    ),
    # ... with kernel marginals after their leave-one-out fix (5 Dec 2026)
    "EBFlow (novelty=True, kernel marginals, 5 Dec)": (
        "anomaly_eval_novelty_kdefix_runs.csv",
        EBFLOW_NOVELTY,
    ),
    # ... and their wide normal one standard deviation wide, novelty=True's
    # default since later that day
    "EBFlow (novelty=True, kernel marginals, 1-sd tails)": (
        "anomaly_eval_novelty_wide1_runs.csv",
        EBFLOW_NOVELTY,
    ),
    # ... and weight decay 3e-3, novelty=True's default since 5 Dec 2026 (ninth
    # session)
    "EBFlow (novelty=True, 1-sd tails, wd 3e-3)": (
        "anomaly_eval_novelty_wd3e-3_runs.csv",
        EBFLOW_NOVELTY,
    ),
}
#: The detector's default (novelty=False), drawn as ``EBFlow`` by ``--plot``.
CURRENT = "EBFlow (50 epochs, wd 1e-3)"


#: ECOD and COPOD scored one test row at a time (``--pyod-rowwise``).
PYOD_ROWWISE = "anomaly_eval_pyod_rowwise_runs.csv"


def load(pyod_rowwise: bool = False) -> list[dict]:
    """The stored rows of the peers and of every version (relabelled by VERSIONS) on
    the evaluation sets, seeds 0-2; with ``pyod_rowwise``, ECOD's and COPOD's from
    :data:`PYOD_ROWWISE`."""
    replaced = ("ECOD", "COPOD") if pyod_rowwise else ()
    rows = [
        row
        for row in read_rows(RESULTS / "anomaly_eval_geo_runs.csv")
        if row["method"] in PEERS and row["method"] not in replaced
    ]
    if pyod_rowwise:
        rows += [
            row
            for row in read_rows(RESULTS / PYOD_ROWWISE)
            if row["method"] in replaced
        ]
    for label, (file_name, method) in VERSIONS.items():
        rows += [
            {**row, "method": label}
            for row in read_rows(RESULTS / file_name)
            if row["method"] == method
        ]
    return [
        row
        for row in rows
        if row["seed"] in (0, 1, 2) and row["dataset"] in EVALUATION_SETS
    ]


def plot_current(rows: list[dict], path: Path) -> None:
    """The rank figure: the current default as ``EBFlow``, and the 100-epoch
    default ranked in its place."""
    current, morning = CURRENT, "EBFlow (100 epochs)"
    names = {current: EBFLOW, morning: EBFLOW_SHORT}
    picked = [
        {**row, "method": names.get(row["method"], row["method"])}
        for row in rows
        if row["method"] in (*PEERS, current, morning)
    ]
    plot_ranks(summarize(picked, list(EVALUATION_SETS)), path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument(
        "--pyod-rowwise",
        action="store_true",
        help="ECOD and COPOD scored one test row at a time: the default since"
        " 5 Dec 2026, accepted for the commands written before",
    )
    parser.add_argument(
        "--pyod-stored",
        action="store_true",
        help="ECOD's and COPOD's stored rows, every test row scored together"
        " (biased low; see the docstring)",
    )
    args = parser.parse_args()
    rows = load(pyod_rowwise=not args.pyod_stored)
    if args.plot is not None:
        plot_current(rows, args.plot)
    datasets = list(EVALUATION_SETS)
    for protocol in "ab":
        for version in VERSIONS:
            if not any(
                r["protocol"] == protocol and r["method"] == version for r in rows
            ):
                continue  # a version run in the other protocol only
            methods = [*PEERS, version]
            roc = per_dataset(rows, protocol, "roc_auc", methods, datasets)
            ap = per_dataset(rows, protocol, "ap", methods, datasets)
            rank_roc = average_ranks(roc, methods, datasets)
            rank_ap = average_ranks(ap, methods, datasets)
            print(f"protocol ({protocol}), ranks among the nine peers and {version}")
            print(
                "| method | mean ROC-AUC | mean AP | rank ROC-AUC | rank AP | splits |"
            )
            print("|---|---:|---:|---:|---:|---:|")
            for method in methods:
                n_splits = sum(
                    r["protocol"] == protocol and r["method"] == method for r in rows
                )
                mean_roc = np.mean(list(roc[method].values()))
                mean_ap = np.mean(list(ap[method].values()))
                print(
                    f"| {method} | {mean_roc:.4f} | {mean_ap:.4f}"
                    f" | {rank_roc[method]:.2f} | {rank_ap[method]:.2f} | {n_splits} |"
                )
            fit = [
                r["fit_cpu_s"]
                for r in rows
                if r["protocol"] == protocol and r["method"] == version
            ]
            print(f"{version}: median fit CPU s per split {np.median(fit):.1f}\n")


if __name__ == "__main__":
    main()
