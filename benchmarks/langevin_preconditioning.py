"""``sample_langevin`` with and without its whitened second stage (``precondition``).

Two fitted models, each sampled by 4 000 chains of the default 500 steps from three
seeds, against 20 000 exact draws of the same model (``sample``):

- a Gaussian model of a correlation of 0.999 (one dense layer, ``architecture="fc"``,
  fitted to 3 000 rows), whose narrow axis (standard deviation 0.04) sets the
  chains' step: the spread of the draws along its wide axis against the model's;
- the default model of ``make_moons(1000, noise=0.05)``: the mean over the two
  columns of the Kolmogorov-Smirnov statistic against the exact draws (about 0.02
  by sampling noise alone at these sizes), and of the log ratio of the standard
  deviations.

Each line also says whether the call warned (``ConvergenceWarning``). Run
``OMP_NUM_THREADS=1 python benchmarks/langevin_preconditioning.py`` (a few minutes on
one thread).
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch
from _machine import machine_line  # noqa: E402
from scipy.stats import ks_2samp
from sklearn.datasets import make_moons
from sklearn.exceptions import ConvergenceWarning

from skebflow import EBFlowDensity

N_CHAINS = 4000
SEEDS = (1, 2, 3)


def draws(model: EBFlowDensity, seed: int, precondition: bool) -> tuple:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chains = model.sample_langevin(
            N_CHAINS, random_state=seed, precondition=precondition
        )
    warned = any(w.category is ConvergenceWarning for w in caught)
    return chains, warned


def main() -> None:
    torch.set_num_threads(1)
    print(machine_line())
    cov = np.array([[1.0, 0.999], [0.999, 1.0]])
    X = np.random.RandomState(0).multivariate_normal([0.0, 0.0], cov, size=3000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gaussian = EBFlowDensity(
            architecture="fc",
            n_layers=1,
            n_flows=1,
            marginal_transform=None,
            objective="ml",
            max_iter=400,
            n_iter_no_change=400,
            learning_rate=3e-2,
            device="cpu",
            random_state=0,
        ).fit(X)
        moons = EBFlowDensity(random_state=0).fit(
            make_moons(1000, noise=0.05, random_state=0)[0]
        )
    exact = gaussian.sample(20000, random_state=0)
    _, directions = np.linalg.eigh(np.cov(exact.T))
    wide, narrow = (exact @ directions[:, ::-1]).std(axis=0)
    print(f"correlation 0.999, exact draws: wide sd {wide:.3f}, narrow sd {narrow:.4f}")
    for precondition in (True, False):
        start = time.perf_counter()
        for seed in SEEDS:
            chains, warned = draws(gaussian, seed, precondition)
            wide_sd, narrow_sd = (chains @ directions[:, ::-1]).std(axis=0)
            print(
                f"  precondition={precondition!s:5} seed {seed}: wide sd"
                f" {wide_sd:.3f} ({wide_sd / wide - 1:+.1%}), narrow sd"
                f" {narrow_sd:.4f} ({narrow_sd / narrow - 1:+.1%}),"
                f" warned {warned}"
            )
        print(f"    {time.perf_counter() - start:.1f} s for the three seeds")
    exact = moons.sample(20000, random_state=0)
    for precondition in (True, False):
        statistics, log_ratios, warnings_seen = [], [], []
        for seed in SEEDS:
            chains, warned = draws(moons, seed, precondition)
            statistics.append(
                np.mean([ks_2samp(exact[:, j], chains[:, j]).statistic for j in (0, 1)])
            )
            log_ratios.append(np.mean(np.log(chains.std(0) / exact.std(0))))
            warnings_seen.append(warned)
        statistic, log_ratio = np.mean(statistics), np.mean(log_ratios)
        print(
            f"moons, precondition={precondition!s:5}: mean KS {statistic:.4f},"
            f" mean log sd ratio {log_ratio:+.4f}, warned {any(warnings_seen)}"
        )


if __name__ == "__main__":
    main()
