"""Held-out curves of score-matching fits: what early stopping should watch.

For each objective and tuning data set, one fit runs its full ``max_iter`` epochs
(no early stop) while both held-out curves are recorded every epoch: the exact
log-likelihood and the training objective with the same noise every epoch. The
script then replays both stopping rules on the recorded curves (patience 20, as the
estimator's default): where each would have stopped, and the held-out
log-likelihood of the weights each would have kept (the best-likelihood epoch seen
before the stop). The test rows of ``benchmarks/density.py`` are never used.

Run::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sm_validation_curves.py

Writes ``benchmarks/results/sm_validation_curves.{json,log}`` and
``docs/_static/sm_validation_curves.png``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from density import EVALUATION_SETS, prepare  # noqa: E402

from skebflow import EBFlowDensity  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def replay(watched: np.ndarray, likelihood: np.ndarray, patience: int) -> dict:
    """Where patience on ``watched`` (higher is better) stops, and what it keeps."""
    best, since = -np.inf, 0
    stop = len(watched)
    for epoch, value in enumerate(watched, start=1):
        if value > best + 1e-4:
            best, since = value, 0
        else:
            since += 1
        best = max(best, value)
        if since >= patience:
            stop = epoch
            break
    kept = int(np.nanargmax(likelihood[:stop])) + 1
    return {
        "stop": stop,
        "kept_epoch": kept,
        "kept_loglik": float(likelihood[kept - 1]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="breast_cancer,digits,29_Pima,44_Wilt")
    parser.add_argument("--objectives", default="ssm,dsm,fdssm")
    parser.add_argument("--max-iter", type=int, default=200)
    parser.add_argument("--patience", type=int, default=20)
    parser.add_argument("--max-train", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    datasets = args.datasets.split(",")
    if set(datasets) & set(EVALUATION_SETS):
        raise SystemExit("evaluation sets choose nothing; use tuning sets")
    out = ROOT / "benchmarks" / "results"
    print(
        f"machine: {platform.processor() or platform.machine()}, torch "
        f"{torch.__version__}, 1 thread",
        flush=True,
    )
    runs = []
    for dataset in datasets:
        # The training rows of the density benchmark's split; early stopping holds
        # out its own 10 % of them, and the test rows stay unused.
        X_train, _, info = prepare(dataset, 0, args.max_train)
        for objective in args.objectives.split(","):
            start = time.perf_counter()
            est = EBFlowDensity(
                objective=objective,
                early_stopping_metric="loss",
                n_iter_no_change=args.max_iter,  # never stops early: full curves
                max_iter=args.max_iter,
                device="cpu",
                random_state=0,
            ).fit(X_train)
            likelihood = np.asarray(est.validation_scores_)
            loss = np.asarray(est.validation_loss_curve_)
            rules = {
                "log_likelihood": replay(likelihood, likelihood, args.patience),
                "loss": replay(-loss, likelihood, args.patience),
            }
            run = {
                "dataset": dataset,
                "n_features": info["n_features"],
                "objective": objective,
                "learning_rate": est.learning_rate_,
                "validation_loglik": likelihood.tolist(),
                "validation_loss": loss.tolist(),
                "rules": rules,
                "best_epoch": int(np.argmax(likelihood)) + 1,
                "best_loglik": float(likelihood.max()),
                "seconds": time.perf_counter() - start,
            }
            runs.append(run)
            print(
                f"{dataset:14s} {objective:6s} best epoch {run['best_epoch']:4d}"
                f" ({run['best_loglik']:.3f}); likelihood rule stops at"
                f" {rules['log_likelihood']['stop']:4d} keeping"
                f" {rules['log_likelihood']['kept_loglik']:.3f}; loss rule stops at"
                f" {rules['loss']['stop']:4d} keeping"
                f" {rules['loss']['kept_loglik']:.3f}"
                f" ({run['seconds']:.0f}s)",
                flush=True,
            )
            with open(out / "sm_validation_curves.json", "w") as handle:
                json.dump(runs, handle, indent=1)
    plot(runs, ROOT / "docs" / "_static" / "sm_validation_curves.png", args.max_iter)


def plot(runs: list[dict], path: Path, max_iter: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(run["dataset"] for run in runs))
    objectives = list(dict.fromkeys(run["objective"] for run in runs))
    figure, axes = plt.subplots(
        2, len(datasets), figsize=(3.6 * len(datasets), 5.6), squeeze=False
    )
    colours = dict(zip(objectives, ("C0", "C1", "C2", "C3"), strict=False))
    for column, dataset in enumerate(datasets):
        top, bottom = axes[0, column], axes[1, column]
        for run in (r for r in runs if r["dataset"] == dataset):
            colour = colours[run["objective"]]
            likelihood = np.asarray(run["validation_loglik"]) / run["n_features"]
            loss = np.asarray(run["validation_loss"])
            epochs = np.arange(1, len(likelihood) + 1)
            top.plot(epochs, likelihood, color=colour, label=run["objective"])
            bottom.plot(epochs, loss, color=colour)
            for rule, marker in (("log_likelihood", "v"), ("loss", "o")):
                stop = run["rules"][rule]["stop"]
                top.plot(
                    stop,
                    likelihood[stop - 1],
                    marker,
                    color=colour,
                    markerfacecolor="none" if rule == "loss" else colour,
                )
        finite = [
            np.asarray(r["validation_loglik"]) / r["n_features"]
            for r in runs
            if r["dataset"] == dataset
        ]
        high = max(float(np.nanmax(c)) for c in finite)
        low = min(float(np.nanpercentile(c, 10)) for c in finite)
        top.set_ylim(low - 0.05 * (high - low), high + 0.1 * (high - low))
        top.set_title(dataset)
        bottom.set_xlabel("epoch")
        if column == 0:
            top.set_ylabel("held-out log-likelihood / dim")
            bottom.set_ylabel("held-out loss (same noise)")
            top.legend(fontsize=8)
    figure.suptitle(
        f"Score-matching fits, {max_iter} epochs: ▼ where patience on the likelihood"
        " stops, ○ where patience on the loss stops",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
