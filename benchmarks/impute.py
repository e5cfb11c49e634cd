"""Missing-value imputation: EBFlowImputer against scikit-learn's imputers.

Protocol (one for every method): each data set's rows are standardized with the
statistics of the complete data (only to express errors in common units); entries are
removed completely at random at the given rates; every imputer gets the same damaged
matrix (``fit_transform``, no labels). Reported per data set, rate and method, as the
mean over seeds: the RMSE of the imputed entries in standardized units, and, where the
data have class labels, the 5-fold cross-validated accuracy of a logistic regression on
the imputed matrix (the complete matrix's accuracy is printed as the ceiling).

Data: scikit-learn's wine and breast_cancer (labelled) and the inliers of six ADBench
sets (``../shared/data/adbench``; skipped with a message when absent). Rows are capped
at ``--max-rows`` (random subset) to bound the run time; every entry gets the same
Gaussian jitter of standard deviation 0.01 (standardized units) for every method, so
duplicated rows and discrete columns have a density; the jittered matrix is the ground
truth.

Run ``python benchmarks/impute.py --seeds 3 --max-rows 1000`` (about an hour on one
core of this machine, 51 minutes of it in the imputers' ``fit_transform``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_wine
from sklearn.exceptions import ConvergenceWarning
from sklearn.experimental import enable_iterative_imputer  # noqa: F401
from sklearn.impute import IterativeImputer, KNNImputer, SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skebflow import EBFlowDensity, EBFlowImputer
from skebflow.datasets import load_adbench

ADBENCH = ("6_cardio", "29_Pima", "47_yeast", "44_Wilt", "41_Waveform", "2_annthyroid")


def datasets(max_rows: int, rng: np.random.RandomState):
    for name, loader in (("wine", load_wine), ("breast_cancer", load_breast_cancer)):
        data = loader()
        yield name, data.data, data.target
    for name in ADBENCH:
        try:
            X, y = load_adbench(name)
        except FileNotFoundError as error:
            print(f"skipping {name}: {error}")
            continue
        X = X[y == 0]
        if len(X) > max_rows:
            X = X[rng.choice(len(X), max_rows, replace=False)]
        yield name, X, None


def prepare(X: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    X = X[:, np.ptp(X, axis=0) > 0]
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    return X + 0.01 * rng.normal(size=X.shape)


def methods(seed: int) -> dict:
    density = {"device": "cpu", "random_state": seed}
    return {
        "mean": SimpleImputer(strategy="mean"),
        "knn": KNNImputer(n_neighbors=5),
        "iterative": IterativeImputer(max_iter=10, random_state=seed),
        "ebflow-langevin": EBFlowImputer(EBFlowDensity(**density), random_state=seed),
        "ebflow-mode": EBFlowImputer(
            EBFlowDensity(**density), method="mode", random_state=seed
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[0.1, 0.3])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-rows", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/impute.json")
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", ConvergenceWarning)
    print(
        f"machine: {platform.processor() or platform.machine()}, torch"
        f" {torch.__version__}, {args.threads} thread(s)"
    )
    rows = []
    for seed in range(args.seeds):
        rng = np.random.RandomState(seed)
        for name, X_raw, y in datasets(args.max_rows, rng):
            X = prepare(X_raw, rng)
            ceiling = None
            if y is not None:
                classifier = make_pipeline(
                    StandardScaler(), LogisticRegression(max_iter=2000)
                )
                ceiling = float(cross_val_score(classifier, X, y, cv=5).mean())
            for rate in args.rates:
                damaged = X.copy()
                hidden = rng.uniform(size=X.shape) < rate
                hidden[hidden.all(axis=1), 0] = False  # keep at least one value per row
                damaged[hidden] = np.nan
                for method, imputer in methods(seed).items():
                    start = time.perf_counter()
                    filled = imputer.fit_transform(damaged)
                    seconds = time.perf_counter() - start
                    rmse = float(np.sqrt(np.mean((filled[hidden] - X[hidden]) ** 2)))
                    accuracy = None
                    if y is not None:
                        accuracy = float(
                            cross_val_score(classifier, filled, y, cv=5).mean()
                        )
                    rows.append(
                        {
                            "dataset": name,
                            "shape": list(X.shape),
                            "rate": rate,
                            "seed": seed,
                            "method": method,
                            "rmse": rmse,
                            "accuracy": accuracy,
                            "complete_accuracy": ceiling,
                            "seconds": seconds,
                        }
                    )
                    print(
                        f"seed {seed} {name:14s} {rate:.0%} {method:16s}"
                        f" rmse {rmse:.3f}"
                        + (f" acc {accuracy:.3f}" if accuracy is not None else "")
                        + f" ({seconds:.1f}s)",
                        flush=True,
                    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))
    summarize(rows)


def summarize(rows: list[dict]) -> None:
    names = sorted({(r["dataset"], tuple(r["shape"])) for r in rows})
    method_names = list(dict.fromkeys(r["method"] for r in rows))
    for rate in sorted({r["rate"] for r in rows}):
        print(f"\nRMSE of imputed entries (standardized units), {rate:.0%} missing")
        print("| data set | n x d | " + " | ".join(method_names) + " |")
        print("|---|---|" + "---|" * len(method_names))
        wins = 0
        for name, shape in names:
            values = {
                m: np.mean(
                    [
                        r["rmse"]
                        for r in rows
                        if r["dataset"] == name
                        and r["rate"] == rate
                        and r["method"] == m
                    ]
                )
                for m in method_names
            }
            best = min(values.values())
            cells = [
                f"**{values[m]:.3f}**" if values[m] == best else f"{values[m]:.3f}"
                for m in method_names
            ]
            wins += (
                min(values["ebflow-langevin"], values["ebflow-mode"])
                < values["iterative"]
            )
            print(f"| {name} | {shape[0]} x {shape[1]} | " + " | ".join(cells) + " |")
        print(
            "EBFlow (better of its two methods) beats IterativeImputer on"
            f" {wins}/{len(names)}"
        )
        labelled = [
            n
            for n, _ in names
            if any(r["accuracy"] is not None for r in rows if r["dataset"] == n)
        ]
        for name in labelled:
            accuracy = {
                m: np.mean(
                    [
                        r["accuracy"]
                        for r in rows
                        if r["dataset"] == name
                        and r["rate"] == rate
                        and r["method"] == m
                    ]
                )
                for m in method_names
            }
            ceiling = np.mean(
                [r["complete_accuracy"] for r in rows if r["dataset"] == name]
            )
            text = ", ".join(f"{m} {v:.3f}" for m, v in accuracy.items())
            print(f"accuracy {name}: complete {ceiling:.3f}; {text}")


if __name__ == "__main__":
    main()
