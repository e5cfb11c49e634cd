"""How much of the density headline comes from the benchmark's jitter.

``benchmarks/density.py`` adds Gaussian noise of standard deviation ``JITTER``
(0.01, in standardized units) to the discrete columns of the training and test
rows, so that a continuous density exists. The noise lays a comb of narrow spikes
on each discrete value, which the default's kernel marginals can resolve (an audit
on 5 December, fourth session): part of a lead on such columns is then the model
of the benchmark's own noise. This script sets the evaluation group's seed-0 rows
at the usual jitter (the stored headline) beside a run at a ten times wider jitter
(``density.py --jitter 0.1``), per set and on average, for the default
EBFlowDensity and its peers.

    .venv/bin/python benchmarks/jitter_sensitivity.py \\
        benchmarks/results/density_evaluation_final_headline.json \\
        benchmarks/results/density_evaluation_jitter0.1_a.json \\
        benchmarks/results/density_evaluation_jitter0.1_b.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

PEERS = ("kde", "gmm", "nsf")
#: The default EBFlowDensity's row in each file: the headline names it
#: ``ebflow-default``; a run of ``--methods ebflow-ml-coupling`` is the same model.
DEFAULT_NAMES = ("ebflow-default", "ebflow-ml-coupling")


def load(paths: list[Path]) -> tuple[float, dict]:
    """The jitter of the files (one per call) and their seed-0 rows by (set,
    method), the default EBFlow row under ``"ebflow"``."""
    rows, jitters = {}, set()
    for path in paths:
        stored = json.loads(path.read_text())
        jitters.add(stored["machine"].get("jitter", 0.01))
        for row in stored["rows"]:
            if row["seed"] != 0:
                continue
            method = "ebflow" if row["method"] in DEFAULT_NAMES else row["method"]
            rows[row["dataset"], method] = row
    (jitter,) = jitters
    return jitter, rows


def summary(rows: dict, datasets: list[str]) -> dict[str, float]:
    """Sets ahead of both KDE and GMM, and the mean and median gap to NSF."""
    ahead = sum(
        rows[d, "ebflow"]["test_loglik"]
        > max(rows[d, "kde"]["test_loglik"], rows[d, "gmm"]["test_loglik"])
        for d in datasets
    )
    gaps = [
        (rows[d, "ebflow"]["test_loglik"] - rows[d, "nsf"]["test_loglik"])
        / rows[d, "ebflow"]["n_features"]
        for d in datasets
    ]
    return {
        "ahead": ahead,
        "n": len(datasets),
        "mean": statistics.mean(gaps),
        "median": statistics.median(gaps),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("usual", type=Path, help="the headline at the usual jitter")
    parser.add_argument("wider", type=Path, nargs="+", help="the run(s) at another")
    args = parser.parse_args()
    usual_jitter, usual = load([args.usual])
    wider_jitter, wider = load(args.wider)
    datasets = sorted(
        {d for d, m in wider if m == "ebflow" and all((d, p) in wider for p in PEERS)}
    )
    print(
        "| set | D | jittered columns | jitter | KDE | GMM | NSF | EBFlow |"
        " ahead of KDE and GMM | EBFlow - NSF per dim |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for dataset in datasets:
        for jitter, rows in ((usual_jitter, usual), (wider_jitter, wider)):
            row = {m: rows[dataset, m]["test_loglik"] for m in (*PEERS, "ebflow")}
            d = rows[dataset, "ebflow"]["n_features"]
            ahead = row["ebflow"] > max(row["kde"], row["gmm"])
            print(
                f"| {dataset} | {d} | {rows[dataset, 'ebflow']['jittered_columns']}"
                f" | {jitter:g} | {row['kde']:.2f} | {row['gmm']:.2f} |"
                f" {row['nsf']:.2f} | {row['ebflow']:.2f} | {'yes' if ahead else 'no'}"
                f" | {(row['ebflow'] - row['nsf']) / d:+.3f} |"
            )
    print()
    for label, chosen in (
        ("all sets", datasets),
        (
            "without iris and diabetes",
            [d for d in datasets if d not in ("iris", "diabetes")],
        ),
    ):
        for jitter, rows in ((usual_jitter, usual), (wider_jitter, wider)):
            result = summary(rows, chosen)
            print(
                f"{label}, jitter {jitter:g}: ahead of KDE and GMM on"
                f" {result['ahead']} of {result['n']}; EBFlow - NSF per dimension:"
                f" mean {result['mean']:+.3f}, median {result['median']:+.3f}"
            )


if __name__ == "__main__":
    main()
