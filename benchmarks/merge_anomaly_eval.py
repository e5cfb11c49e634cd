"""Merge the evaluation group's rows of 1 Dec 2026 into ``anomaly_eval_widen_runs.csv``.

The peers' rows come from ``anomaly_eval5k_runs.csv`` (``--stem anomaly_eval``), the
detector's from ``anomaly_eval_widen01`` and ``anomaly_eval_widen2``, seeds 0 and 2
only (seed 1 of the detector's run was unfinished). Those two runs started while
``base_scale=3`` was the default, with an ``EBFlow-base1`` row at 1; the default went
back to 1, so their rows are relabelled (``EBFlow`` -> ``EBFlow-base3``,
``EBFlow-base1`` -> ``EBFlow``), and each gets the fit times of the one fit they share.
Run from the repository root: ``python benchmarks/merge_anomaly_eval.py``, then
``benchmarks/anomaly.py --summarize-only --stem anomaly_eval_widen --seeds 3``.
"""
import csv
import sys
from pathlib import Path

sys.path.insert(0, "benchmarks")
from anomaly import FIELDS

R = Path("benchmarks/results")
SEEDS = {"0", "2"}  # seed 1 of the new EBFlow run is not done yet: same splits for all
peers = [
    r
    for r in csv.DictReader(open(R / "anomaly_eval5k_runs.csv"))
    if r["method"] != "EBFlow" and r["seed"] in SEEDS
]
new = []
for stem in ("anomaly_eval_widen01", "anomaly_eval_widen2"):
    rows = csv.DictReader(open(R / f"{stem}_runs.csv"))
    new += [r for r in rows if r["seed"] in SEEDS]
# The runs started with base_scale=3 as the default and "EBFlow-base1" as the
# variant; the default is back at 1: relabel, and give each row the fit's times.
fit = {
    (r["dataset"], r["protocol"], r["seed"]): r for r in new if r["method"] == "EBFlow"
}
for r in new:
    key = (r["dataset"], r["protocol"], r["seed"])
    if r["method"] == "EBFlow-base1":
        r["fit_s"], r["fit_cpu_s"] = fit[key]["fit_s"], fit[key]["fit_cpu_s"]
for r in new:
    r["method"] = {"EBFlow": "EBFlow-base3", "EBFlow-base1": "EBFlow"}[r["method"]]
with open(R / "anomaly_eval_widen_runs.csv", "w", newline="") as handle:
    writer = csv.DictWriter(handle, fieldnames=FIELDS)
    writer.writeheader()
    for r in peers + new:
        writer.writerow({k: r.get(k, "") for k in FIELDS})
print(len(peers), len(new))
