"""The kernel marginals' headline on the density benchmark's evaluation group.

Merges the peers' rows (tuned KDE and GMM, zuko's NSF) of
``results/density_evaluation_trainrows.json`` (the evaluation group's stored run,
decisions on the training rows) with the two EBFlowDensity rows of
``results/density_evaluation_kde.json`` (``ebflow-ml-coupling``, the default with
kernel marginals, and ``ebflow-nokde``, ``marginal_transform=None``), and prints
the table and the issue-14 target figures: on how many sets each is ahead of both
tuned peers, and the mean gap to NSF in nats per dimension. The same for the
tuning group from ``results/density_tuning_kde.json`` (no peers' rows there: the
gain of the kernel marginals only).

It also writes the merged rows to ``results/density_evaluation_kde_headline.json``,
whose tables and figure ``python benchmarks/density.py --group evaluation --stem
density_evaluation_kde_headline --report-only`` prints and draws.

Run ``python benchmarks/kde_headline.py`` (a second, no fitting).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from density import EVALUATION_SETS  # noqa: E402

RESULTS = Path(__file__).parent / "results"
PEERS = ("kde", "gmm", "nsf")
OURS = {"ebflow-ml-coupling": "default (kernel marginals)", "ebflow-nokde": "None"}


def _rows(name: str) -> list[dict]:
    return json.loads((RESULTS / name).read_text())["rows"]


def _table(rows: list[dict]) -> tuple[dict, dict, list[str]]:
    scores: dict = {}
    dims: dict = {}
    for row in rows:
        scores.setdefault(row["method"], {})[row["dataset"]] = row["test_loglik"]
        dims[row["dataset"]] = row["n_features"]
    order = [s for s in EVALUATION_SETS if s in dims] or list(dims)
    sets = order + [s for s in dims if s not in order]
    return scores, dims, sets


def main() -> None:
    peers = [
        r
        for r in _rows("density_evaluation_trainrows.json")
        if r["method"] in PEERS and r["dataset"] in EVALUATION_SETS
    ]
    ours = [r for r in _rows("density_evaluation_kde.json") if r["method"] in OURS]
    scores, dims, sets = _table(peers + ours)
    # the merged rows, for density.py --report-only's tables and figure
    merged = json.loads((RESULTS / "density_evaluation_kde.json").read_text())
    merged["rows"] = peers + ours
    (RESULTS / "density_evaluation_kde_headline.json").write_text(
        json.dumps(merged, indent=1)
    )
    print("Evaluation group, test mean log-likelihood (nats per row):")
    print("| method | " + " | ".join(f"{s} (D={dims[s]})" for s in sets) + " |")
    print("|---|" + "---|" * len(sets))
    for method in (*PEERS, *OURS):
        label = OURS.get(method, method)
        cells = [
            f"{scores[method][s]:.2f}" if s in scores[method] else "" for s in sets
        ]
        print(f"| {label} | " + " | ".join(cells) + " |")
    for method, label in OURS.items():
        done = [s for s in sets if s in scores[method]]
        ahead = [
            s
            for s in done
            if scores[method][s] > max(scores["kde"][s], scores["gmm"][s])
        ]
        gaps = [(scores[method][s] - scores["nsf"][s]) / dims[s] for s in done]
        print(
            f"{label}: ahead of both tuned KDE and GMM on {len(ahead)} of"
            f" {len(done)} ({', '.join(sorted(set(done) - set(ahead))) or 'none'}"
            f" not); mean gap to NSF {sum(gaps) / len(gaps):+.3f} nats per"
            f" dimension, ahead of NSF on"
            f" {sum(g > 0 for g in gaps)} of {len(done)}"
        )
    tuning, dims, sets = _table(_rows("density_tuning_kde.json"))
    gains = [
        (tuning["ebflow-ml-coupling"][s] - tuning["ebflow-nokde"][s]) / dims[s]
        for s in sets
    ]
    print(
        "Tuning group: kernel marginals minus None, nats per dimension: "
        + ", ".join(f"{s} {g:+.3f}" for s, g in zip(sets, gains, strict=True))
        + f"; mean {sum(gains) / len(gains):+.4f}"
    )


if __name__ == "__main__":
    main()
