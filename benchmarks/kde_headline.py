"""The kernel marginals' headline on the density benchmark (issue 14).

Evaluation group: merges the peers' rows (tuned KDE and GMM, zuko's NSF) of
``results/density_evaluation_trainrows.json`` (the group's stored run, decisions on
the training rows) with three EBFlowDensity rows, renamed:

* ``ebflow-default``: the default (kernel marginals, bandwidths chosen on 500
  rows), ``ebflow-ml-coupling`` of ``results/density_evaluation_kde.json``;
* ``ebflow-kde-scaled``: the kernel marginals with the bandwidths scaled to every
  row (the default for part of 4 Dec 2026), ``ebflow-ml-coupling`` of
  ``results/density_evaluation_kde_rate.json``;
* ``ebflow-nokde``: ``marginal_transform=None``, from
  ``results/density_evaluation_kde.json``.

It prints the table and the issue-14 target figures (on how many sets each is ahead
of both tuned peers, the mean gap to NSF in nats per dimension) and writes the
merged rows to ``results/density_evaluation_kde_headline.json``, whose tables and
figure ``python benchmarks/density.py --group evaluation --stem
density_evaluation_kde_headline --report-only`` prints and draws. Missing rows (a
run still going) are left out of the counts.

Tuning group (no peers' rows there): the gain per dimension of each rule, from
``results/density_tuning_kde.json`` (kernel marginals against ``None``) and
``results/density_tuning_kde_rate.json`` (the bandwidths scaled to every row).

``--day 5dec`` prints the headline of 5 Dec 2026 instead (the leave-one-out
density with the wide normal and the robust spread): ``ebflow-default`` is
``ebflow-ml-coupling`` of ``results/density_evaluation_final.json``,
``ebflow-kde-4dec`` the default of 4 December (``ebflow-default`` above), and
``ebflow-nokde`` as above; the merged rows go to
``results/density_evaluation_final_headline.json``.

Run ``python benchmarks/kde_headline.py [--day 5dec]`` (a second, no fitting).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from density import EVALUATION_SETS  # noqa: E402

RESULTS = Path(__file__).parent / "results"
PEERS = ("kde", "gmm", "nsf")
#: per headline: (file, method in it) -> the row's name here, and the merged file
HEADLINES = {
    "4dec": (
        {
            ("density_evaluation_kde.json", "ebflow-ml-coupling"): "ebflow-default",
            (
                "density_evaluation_kde_rate.json",
                "ebflow-ml-coupling",
            ): "ebflow-kde-scaled",
            ("density_evaluation_kde.json", "ebflow-nokde"): "ebflow-nokde",
        },
        "density_evaluation_kde_headline.json",
    ),
    "5dec": (
        {
            ("density_evaluation_final.json", "ebflow-ml-coupling"): "ebflow-default",
            ("density_evaluation_kde.json", "ebflow-ml-coupling"): "ebflow-kde-4dec",
            ("density_evaluation_kde.json", "ebflow-nokde"): "ebflow-nokde",
        },
        "density_evaluation_final_headline.json",
    ),
}


def _rows(name: str) -> list[dict]:
    path = RESULTS / name
    return json.loads(path.read_text())["rows"] if path.exists() else []


def _scores(rows: list[dict]) -> tuple[dict, dict]:
    scores: dict = {}
    dims: dict = {}
    for row in rows:
        scores.setdefault(row["method"], {})[row["dataset"]] = row["test_loglik"]
        dims[row["dataset"]] = row["n_features"]
    return scores, dims


def evaluation(day: str) -> None:
    ours, merged_name = HEADLINES[day]
    rows = [
        row
        for row in _rows("density_evaluation_trainrows.json")
        if row["method"] in PEERS and row["dataset"] in EVALUATION_SETS
    ]
    for (name, method), label in ours.items():
        rows += [
            {**row, "method": label} for row in _rows(name) if row["method"] == method
        ]
    merged = json.loads((RESULTS / "density_evaluation_kde.json").read_text())
    merged["rows"] = rows
    (RESULTS / merged_name).write_text(json.dumps(merged, indent=1))
    scores, dims = _scores(rows)
    sets = [name for name in EVALUATION_SETS if name in dims]
    print("Evaluation group, test mean log-likelihood (nats per row):")
    print("| method | " + " | ".join(f"{s} (D={dims[s]})" for s in sets) + " |")
    print("|---|" + "---|" * len(sets))
    for method in (*PEERS, *ours.values()):
        cells = [
            f"{scores[method][s]:.2f}" if s in scores.get(method, {}) else ""
            for s in sets
        ]
        print(f"| {method} | " + " | ".join(cells) + " |")
    for label in ours.values():
        done = [s for s in sets if s in scores.get(label, {})]
        if not done:
            continue
        ahead = [
            s
            for s in done
            if scores[label][s] > max(scores["kde"][s], scores["gmm"][s])
        ]
        gaps = [(scores[label][s] - scores["nsf"][s]) / dims[s] for s in done]
        behind = sorted(set(done) - set(ahead))
        print(
            f"{label}: ahead of both tuned KDE and GMM on {len(ahead)} of"
            f" {len(done)} (not on: {', '.join(behind) or 'none'}); mean gap to NSF"
            f" {sum(gaps) / len(gaps):+.3f} nats per dimension, ahead of NSF on"
            f" {sum(g > 0 for g in gaps)} of {len(done)}"
        )


def tuning() -> None:
    first, dims = _scores(_rows("density_tuning_kde.json"))
    second, _ = _scores(_rows("density_tuning_kde_rate.json"))
    comparisons = {
        "kernel marginals (500-row bandwidths) minus None": (
            first.get("ebflow-ml-coupling", {}),
            first.get("ebflow-nokde", {}),
        ),
        "bandwidths scaled to every row minus 500-row bandwidths": (
            second.get("ebflow-ml-coupling", {}),
            first.get("ebflow-ml-coupling", {}),
        ),
    }
    for title, (new, old) in comparisons.items():
        sets = [s for s in dims if s in new and s in old]
        if not sets:
            continue
        gains = [(new[s] - old[s]) / dims[s] for s in sets]
        print(
            f"Tuning group, {title}, nats per dimension: "
            + ", ".join(f"{s} {g:+.4f}" for s, g in zip(sets, gains, strict=True))
            + f"; mean {sum(gains) / len(gains):+.4f} over {len(sets)} sets"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--day", choices=sorted(HEADLINES), default="4dec")
    evaluation(parser.parse_args().day)
    tuning()
