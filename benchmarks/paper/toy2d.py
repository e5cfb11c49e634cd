"""2-D densities: every objective on sine, swirl and checkerboard (the paper's Fig. 1).

Protocol (after the EBFlow paper's toy experiments, METHOD.md sections 5.5 and 6):
training points are drawn from each generator of ``skebflow.datasets`` and smoothed
by N(0, 0.375^2) noise; the oracle is the Parzen density with sigma = 0.375 centred on
``--n-test`` clean test points, i.e. the smoothed data density itself. For each
objective, ``EBFlowDensity`` (coupling flow, six blocks, its other defaults) is fitted
for the same ``--max-iter`` epochs, without early stopping, so every objective gets the
same number of steps; ``dsm``'s noise is the data's smoothing (0.375, in the model's
standardized units), which makes its target the oracle itself, as in the paper. The
fitted model is compared with the oracle on points ``x ~ p_oracle``:

* KL(p_oracle || p_model) = E[log p_oracle(x) - log p_model(x)] (a correct Monte Carlo
  estimate; the paper's code adds p log p instead of log p, see METHOD.md section 6);
* Fisher divergence = E[|grad log p_oracle(x) - grad log p_model(x)|^2] / 2.

Writes ``docs/_static/toy2d_densities.png`` (log-densities on a grid, one row per data
set, one column per objective) and prints a markdown table. Run
``python benchmarks/paper/toy2d.py`` (about 20 minutes on one core).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy.special import logsumexp
from sklearn.exceptions import ConvergenceWarning

from skebflow import EBFlowDensity
from skebflow.datasets import make_checkerboard, make_sine, make_swirl
from skebflow.objectives import OBJECTIVES

SIGMA = 0.375
GENERATORS = {"sine": make_sine, "swirl": make_swirl, "checkerboard": make_checkerboard}


def oracle(points: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log-density and score of the Parzen mixture at ``points``."""
    log_density = np.empty(len(points))
    score = np.empty_like(points)
    for start in range(0, len(points), 500):
        chunk = points[start : start + 500]
        difference = chunk[:, None, :] - centres[None, :, :]
        log_kernel = -0.5 * (difference**2).sum(-1) / SIGMA**2
        log_norm = logsumexp(log_kernel, axis=1)
        weights = np.exp(log_kernel - log_norm[:, None])
        log_density[start : start + 500] = (
            log_norm - np.log(len(centres)) - np.log(2 * np.pi * SIGMA**2)
        )
        score[start : start + 500] = (
            -(weights[:, :, None] * difference).sum(1) / SIGMA**2
        )
    return log_density, score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-train", type=int, default=20000)
    parser.add_argument("--n-test", type=int, default=5000)
    parser.add_argument("--max-iter", type=int, default=60)
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/toy2d.json")
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", ConvergenceWarning)

    rows = []
    images = {}
    for name, make in GENERATORS.items():
        rng = np.random.RandomState(0)
        train = make(args.n_train, noise=SIGMA, random_state=rng)
        centres = make(args.n_test, random_state=rng)
        evaluation = centres + SIGMA * rng.normal(size=centres.shape)
        oracle_log, oracle_score = oracle(evaluation, centres)
        # DSM's noise is the data's smoothing, as in the paper: its target is then the
        # oracle itself (in the standardized units the model is trained in).
        noise_std = SIGMA / float(train.std(axis=0).mean())
        grid_axis = np.linspace(-9, 9, 150)
        grid = np.stack(np.meshgrid(grid_axis, grid_axis), -1).reshape(-1, 2)
        images[(name, "data")] = oracle(grid, centres)[0].reshape(150, 150)
        for objective in args.objectives:
            start = time.perf_counter()
            model = EBFlowDensity(
                objective=objective,
                n_layers=6,
                max_iter=args.max_iter,
                early_stopping=False,
                n_iter_no_change=args.max_iter,  # never stop on the training loss
                noise_std=noise_std,
                fd_epsilon=0.05,
                device="cpu",
                random_state=0,
            ).fit(train)
            seconds = time.perf_counter() - start
            model_log = model.score_samples(evaluation)
            model_score = model.log_density_gradient(evaluation)
            kl = float(np.mean(oracle_log - model_log))
            fisher = float(0.5 * np.mean(((oracle_score - model_score) ** 2).sum(1)))
            images[(name, objective)] = model.score_samples(grid).reshape(150, 150)
            rows.append(
                {
                    "dataset": name,
                    "objective": objective,
                    "kl": kl,
                    "fisher": fisher,
                    "seconds": seconds,
                    "epochs": model.n_iter_,
                }
            )
            print(
                f"{name:12s} {objective:6s} KL {kl:.4f}  Fisher {fisher:.4f}"
                f"  ({seconds:.0f}s, {model.n_iter_} epochs)",
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))
    table(rows, args.objectives)
    figure(images, args.objectives, Path("docs/_static/toy2d_densities.png"))


def table(rows: list[dict], objectives: list[str]) -> None:
    print("\n| data set | metric | " + " | ".join(objectives) + " |")
    print("|---|---|" + "---|" * len(objectives))
    for name in GENERATORS:
        for metric in ("kl", "fisher"):
            values = [
                next(
                    r[metric]
                    for r in rows
                    if r["dataset"] == name and r["objective"] == o
                )
                for o in objectives
            ]
            print(
                f"| {name} | {metric} | "
                + " | ".join(f"{v:.4f}" for v in values)
                + " |"
            )


def figure(images: dict, objectives: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = ["data", *objectives]
    fig, axes = plt.subplots(
        len(GENERATORS), len(columns), figsize=(2 * len(columns), 2 * len(GENERATORS))
    )
    for row, name in enumerate(GENERATORS):
        for column, key in enumerate(columns):
            axis = axes[row, column]
            density = np.exp(images[(name, key)])
            axis.imshow(density, origin="lower", extent=(-9, 9, -9, 9), cmap="viridis")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title("oracle" if key == "data" else key)
        axes[row, 0].set_ylabel(name)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"figure written to {path}")


if __name__ == "__main__":
    main()
