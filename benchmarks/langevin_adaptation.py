"""Conditional Langevin draws against the model's own conditional density.

The imputer's class docstring data (``x``, ``2 x + 0.1 noise``, 400 rows, 2 % of
the second column missing), the imputer at its defaults (``n_steps=300``,
``step_size=0.05``) on a short-fitted density, then 1 000 draws of the second
column given ``x = 1`` (``sample_imputations``). The model's conditional is
computed on a grid of ``score_samples``; the draws' mean and spread should match
it. Also prints MALA's acceptance rate (after the burn-in where the steps adapt)
and any warning. Run from a checkout of any commit to compare the samplers:
``python benchmarks/langevin_adaptation.py`` (a minute on one thread).
"""

from __future__ import annotations

import warnings

import numpy as np

import skebflow._density as density_module
from skebflow import EBFlowDensity, EBFlowImputer


def main() -> None:
    rng = np.random.RandomState(0)
    x = rng.normal(size=(400, 1))
    X = np.hstack([x, 2 * x + 0.1 * rng.normal(size=(400, 1))])
    X[rng.uniform(size=400) < 0.02, 1] = np.nan
    results = []
    real = density_module.langevin

    def recording(*args, **kwargs):
        results.append(real(*args, **kwargs))
        return results[-1]

    density_module.langevin = recording
    density = EBFlowDensity(
        max_iter=30, n_iter_no_change=5, tol=1e-2, device="cpu", n_flows=1,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        imputer = EBFlowImputer(density, random_state=0).fit(X)
    grid = np.linspace(-3.0, 7.0, 20001)
    log_density = imputer.estimator_.score_samples(np.c_[np.ones_like(grid), grid])
    weights = np.exp(log_density - log_density.max())
    weights /= weights.sum()
    mean = float((weights * grid).sum())
    spread = float(np.sqrt((weights * (grid - mean) ** 2).sum()))
    print(f"model's conditional of x1 given x0 = 1: mean {mean:.3f}, sd {spread:.3f}")
    for step_size, n_steps in ((0.05, 300), (0.001, 3000)):
        imputer.set_params(step_size=step_size, n_steps=n_steps)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            draws = imputer.sample_imputations([[1.0, np.nan]], n_imputations=1000)
        draws = draws[:, 0, 1]
        said = [str(w.message)[:60] for w in caught]
        print(
            f"step_size={step_size}, n_steps={n_steps}: draws mean {draws.mean():.3f},"
            f" sd {draws.std():.3f}; acceptance {results[-1].acceptance_rate:.3f};"
            f" warnings {said}"
        )


if __name__ == "__main__":
    main()
