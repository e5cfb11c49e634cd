"""Merge the evaluation group's rows of 1 Dec 2026 into ``anomaly_eval_widen_runs.csv``.

The peers' rows come from ``anomaly_eval5k_runs.csv`` (``--stem anomaly_eval``), the
detector's from ``anomaly_eval_widen01`` and ``anomaly_eval_widen2``, for the seeds
given (default 0 and 2, as on 1 Dec when seed 1 was unfinished; the docs' tables
now use ``0 1 2``). Those
two runs started while ``base_scale=3`` was the default, with an ``EBFlow-base1`` row
at 1; the default went back to 1, so the rows of every split that has an
``EBFlow-base1`` row are relabelled (``EBFlow`` -> ``EBFlow-base3``, ``EBFlow-base1``
-> ``EBFlow``; splits resumed with today's code already say ``EBFlow-base3``), and
each ``EBFlow-base3`` row gets the fit times of the fit it shares. Run from the
repository root: ``python benchmarks/merge_anomaly_eval.py [SEEDS ...]``, then
``benchmarks/anomaly.py --summarize-only --stem anomaly_eval_widen --seeds 3``.

``python benchmarks/merge_anomaly_eval.py --relabel`` rewrites the two detector CSVs in
place with the relabelled rows, so that ``anomaly.py --resume --methods EBFlow
EBFlow-base3`` can finish them with today's labels.

``--dequantize`` (2 Dec 2026) merges nothing: it prints, per evaluation set with
integer-valued columns that ``anomaly.py --methods EBFlow-dequantize`` measured
(``anomaly_eval_dequantize_runs.csv``), the default's and ``EBFlow-dequantize``'s mean
ROC-AUC and AP over the seeds given, from the same splits. On the other sets
``dequantize="auto"`` dequantizes nothing and the rows in the data's units give the
default's model (the tuning sweep's yeast splits: identical scores).

``--geometric`` (2 Dec 2026) merges the geometric mean's evaluation into
``anomaly_eval_geo_runs.csv``: the peers' rows from ``anomaly_eval5k_runs.csv``, the
detector's from ``anomaly_eval_geo0``, ``_geo1`` and ``_geo2`` (one seed each), for
the seeds given. Those runs scored the default's fit by the mixture of its flows
(``EBFlow``, the default then) and by their geometric mean (``EBFlow-geo``); the
geometric mean became the default, so the rows are relabelled to today's names
(``EBFlow`` -> ``EBFlow-mixture``, ``EBFlow-geo`` -> ``EBFlow``) and ranked so. Then
``benchmarks/anomaly.py --summarize-only --stem anomaly_eval_geo --seeds 3``.
"""
import csv
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, "benchmarks")
from anomaly import FIELDS

R = Path("benchmarks/results")


def compare_dequantized() -> None:
    """The paired markdown table of ``--dequantize`` (see the module's docstring)."""
    from anomaly import EBFLOW, EBFLOW_DEQUANTIZED, per_dataset, read_rows

    methods = [EBFLOW, EBFLOW_DEQUANTIZED]
    rows = [
        r
        for path in ("anomaly_eval_widen_runs.csv", "anomaly_eval_dequantize_runs.csv")
        for r in read_rows(R / path)
        if r["method"] in methods and str(r["seed"]) in SEEDS
    ]
    measured = sorted({r["dataset"] for r in rows if r["method"] == EBFLOW_DEQUANTIZED})
    seeds = Counter(
        (r["dataset"], r["protocol"]) for r in rows if r["method"] == EBFLOW_DEQUANTIZED
    )
    print("| data set | protocol | ROC-AUC, default → dequantized | AP, default →"
          " dequantized | seeds |")
    print("|---|---|---|---|---:|")
    means = []
    for protocol in "ab":
        auc = per_dataset(rows, protocol, "roc_auc", methods, measured)
        ap = per_dataset(rows, protocol, "ap", methods, measured)
        for name in measured:
            print(f"| {name} | ({protocol}) | {auc[EBFLOW][name]:.3f} →"
                  f" {auc[EBFLOW_DEQUANTIZED][name]:.3f} | {ap[EBFLOW][name]:.3f} →"
                  f" {ap[EBFLOW_DEQUANTIZED][name]:.3f} | {seeds[name, protocol]} |")
        means.append((protocol, auc, ap))
    for protocol, auc, ap in means:
        cells = [
            np.mean([table[method][name] for name in measured])
            for table in (auc, ap)
            for method in methods
        ]
        print(f"| mean | ({protocol}) | {cells[0]:.3f} → {cells[1]:.3f} |"
              f" {cells[2]:.3f} → {cells[3]:.3f} | |")
if {"-h", "--help"} & set(sys.argv):  # say what it does; merge nothing
    print(__doc__)
    sys.exit(0)
RELABEL = "--relabel" in sys.argv
DEQUANTIZE = "--dequantize" in sys.argv
SEEDS = {a for a in sys.argv[1:] if not a.startswith("--")} or {"0", "2"}
if RELABEL:
    SEEDS = {"0", "1", "2", "3", "4"}
if DEQUANTIZE:
    compare_dequantized()
    sys.exit(0)
if "--geometric" in sys.argv:
    today = {"EBFlow": "EBFlow-mixture", "EBFlow-geo": "EBFlow"}
    merged = [
        r
        for r in csv.DictReader(open(R / "anomaly_eval5k_runs.csv"))
        if r["method"] != "EBFlow" and r["seed"] in SEEDS
    ]
    for seed in sorted(SEEDS):
        for r in csv.DictReader(open(R / f"anomaly_eval_geo{seed}_runs.csv")):
            merged.append({**r, "method": today[r["method"]]})
    with open(R / "anomaly_eval_geo_runs.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        for r in merged:
            writer.writerow({k: r.get(k, "") for k in FIELDS})
    print(f"{len(merged)} rows")
    sys.exit(0)
peers = [
    r
    for r in csv.DictReader(open(R / "anomaly_eval5k_runs.csv"))
    if r["method"] != "EBFlow" and r["seed"] in SEEDS
]
STEMS = ("anomaly_eval_widen01", "anomaly_eval_widen2")
new = []
for stem in STEMS:
    rows = csv.DictReader(open(R / f"{stem}_runs.csv"))
    new += [{**r, "stem": stem} for r in rows if r["seed"] in SEEDS]
# Splits run while base_scale=3 was the default: relabel them.
old_style = {
    (r["dataset"], r["protocol"], r["seed"])
    for r in new
    if r["method"] == "EBFlow-base1"
}
for r in new:
    if (r["dataset"], r["protocol"], r["seed"]) in old_style:
        r["method"] = {"EBFlow": "EBFlow-base3", "EBFlow-base1": "EBFlow"}[r["method"]]
# Both rows of a split are scored from one fit: give both the fit's times (the
# larger, as the other row timed only its scoring).
fit: dict = {}
for r in new:
    key = (r["dataset"], r["protocol"], r["seed"])
    if key not in fit or float(r["fit_s"]) > float(fit[key]["fit_s"]):
        fit[key] = r
for r in new:
    same = fit[(r["dataset"], r["protocol"], r["seed"])]
    r["fit_s"], r["fit_cpu_s"] = same["fit_s"], same["fit_cpu_s"]
if RELABEL:
    for stem in STEMS:
        with open(R / f"{stem}_runs.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=FIELDS)
            writer.writeheader()
            for r in new:
                if r["stem"] == stem:
                    writer.writerow({k: r.get(k, "") for k in FIELDS})
    sys.exit(0)
with open(R / "anomaly_eval_widen_runs.csv", "w", newline="") as handle:
    writer = csv.DictWriter(handle, fieldnames=FIELDS)
    writer.writeheader()
    for r in peers + new:
        writer.writerow({k: r.get(k, "") for k in FIELDS})
print(len(peers), len(new))
