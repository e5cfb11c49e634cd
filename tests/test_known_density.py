"""The known 4-D density of skebflow.datasets, and every objective fitted to it.

``BimodalHeavyTailed`` has an exact log-density, so a fit is scored by
``KL(p || model) = E_p[log p - log model]`` on fresh rows rather than by another
estimate (issue 13, item 5)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp
from sklearn.exceptions import ConvergenceWarning

from skebflow import EBFlowDensity
from skebflow.datasets import BimodalHeavyTailed, make_bimodal_heavy_tailed

pytestmark = pytest.mark.usefixtures("single_thread")

DENSITY = BimodalHeavyTailed()


def test_log_density_integrates_to_one_by_importance_sampling():
    """E_q[p / q] = 1 with q an even mixture of two products of Student-t densities
    of 2 df around the modes: heavier tails than p in every column (|x|^-3 against
    Gaussian and |x|^-6 tails), so p / q is bounded."""
    rng = np.random.default_rng(0)
    centres = np.array([[-2.0, -2.0, 0.0, -0.3], [2.0, 2.0, 0.5, 0.45]])
    proposal = stats.t(2.0, scale=1.5)
    n_rows = 400_000
    component = rng.integers(0, 2, size=n_rows)
    x = centres[component] + proposal.rvs(size=(n_rows, 4), random_state=rng)
    log_q = logsumexp(
        [proposal.logpdf(x - centre).sum(axis=1) for centre in centres], axis=0
    ) - math.log(2.0)
    ratio = np.exp(DENSITY.log_density(x) - log_q)
    mean, standard_error = ratio.mean(), ratio.std() / math.sqrt(ratio.size)
    assert standard_error < 0.005, "the check must be able to see a 2.5 % error"
    assert abs(mean - 1.0) < 5 * standard_error, (mean, standard_error)


BOXES = [
    # (lower, upper): around each mode, between them, and out in the heavy tail.
    ((-3.0, -3.0, -1.0, -2.0), (-1.0, -1.0, 1.0, 0.0)),
    ((1.0, 1.0, 0.0, 0.0), (3.0, 3.0, 1.0, 2.0)),
    ((-1.0, -1.0, -1.0, -1.0), (1.0, 1.0, 1.0, 1.0)),
    ((1.0, 1.0, -1.0, 4.0), (3.0, 3.0, 2.0, 12.0)),
]


def test_samples_fall_in_boxes_as_often_as_the_density_says():
    """A 4-D histogram on a few boxes: the fraction of samples in each box against
    the integral of exp(log_density) over it (Monte Carlo, uniform in the box)."""
    X = DENSITY.sample(400_000, random_state=1)
    rng = np.random.default_rng(2)
    for lower, upper in BOXES:
        lower, upper = np.array(lower), np.array(upper)
        inside = np.all((X >= lower) & (X <= upper), axis=1)
        fraction = inside.mean()
        points = rng.uniform(lower, upper, size=(200_000, 4))
        values = np.exp(DENSITY.log_density(points)) * np.prod(upper - lower)
        integral = values.mean()
        # Both are Monte-Carlo estimates: compare within 5 joint standard errors.
        se = math.hypot(
            math.sqrt(fraction * (1 - fraction) / X.shape[0]),
            values.std() / math.sqrt(values.size),
        )
        assert fraction > 1e-4, "each box must hold enough samples to test"
        assert abs(fraction - integral) < 5 * se, (lower, fraction, integral, se)


def test_the_modes_and_the_heavy_column():
    X, modes = DENSITY.sample(200_000, random_state=3, return_modes=True)
    assert abs(np.mean(modes == 0) - 0.4) < 0.005
    posterior = DENSITY.mode_posterior(X)
    np.testing.assert_allclose(posterior.sum(axis=1), 1.0)
    assert np.mean((posterior[:, 0] > 0.5) == (modes == 0)) > 0.998
    # The fourth column given the mode and x_3 is a scaled Student-t with 5 df.
    for k, (shift, scale) in enumerate([(-0.3, 0.8), (0.3, 1.2)]):
        rows = X[modes == k]
        residual = (rows[:, 3] - shift - 0.3 * rows[:, 2]) / scale
        assert stats.kstest(residual, stats.t(5.0).cdf).pvalue > 1e-3
    np.testing.assert_array_equal(
        make_bimodal_heavy_tailed(50, random_state=4),
        DENSITY.sample(50, random_state=4),
    )
    with pytest.raises(ValueError, match="shape"):
        DENSITY.log_density(np.zeros((3, 2)))


# -------------------------------------------------------------------- fits
#
# Measured with these settings and data (2000 training rows, one flow, 15 epochs at
# a learning rate of 3e-3 without early stopping, 5000 test rows) for random_state
# 0, 1 and 2 (skebflow of 30 Nov 2026, 16:00 UTC): the initial flow is 1.58-1.72
# nats from the truth; after training ml is at 0.15-0.17, ssm 0.39-0.44, dsm
# 0.55-0.65 and fdssm 0.44-0.54 (an earlier training loop gave 0.62-0.72 for the
# score-matching objectives). The bounds leave 0.2-0.3 nats of margin.
KL_BOUNDS = {"ml": 0.35, "ssm": 0.75, "dsm": 0.9, "fdssm": 0.8}
# One flow at one learning rate for every objective: the settings the bounds were
# measured with, whatever the "auto" defaults become; score matching alone, without
# the maximum-likelihood epochs that follow it by default.
FIT = {
    # the flow's own work: kernel marginals would start it close to the truth
    "marginal_transform": None,
    "likelihood_refinement": 0,
    "max_iter": 15,
    "early_stopping": False,
    "learning_rate": 3e-3,
    "n_flows": 1,
    "device": "cpu",
    "random_state": 0,
}


@pytest.fixture(scope="module")
def split():
    X_train = DENSITY.sample(2000, random_state=10)
    X_test = DENSITY.sample(5000, random_state=11)
    return X_train, X_test, DENSITY.log_density(X_test)


@pytest.fixture(scope="module")
def initial_kl(split):
    """KL of the flow as initialized: one epoch at a learning rate of 1e-12."""
    X_train, X_test, log_p = split
    initial = EBFlowDensity(
        **{**FIT, "max_iter": 1, "learning_rate": 1e-12}, objective="ml"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        initial.fit(X_train)
    return float(np.mean(log_p - initial.score_samples(X_test)))


@pytest.mark.parametrize("objective", sorted(KL_BOUNDS))
def test_every_objective_ends_much_closer_to_the_truth(objective, split, initial_kl):
    X_train, X_test, log_p = split
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = EBFlowDensity(objective=objective, **FIT).fit(X_train)
    kl = float(np.mean(log_p - est.score_samples(X_test)))
    assert initial_kl > 1.4, f"the initial flow should be far off ({initial_kl:.3f})"
    assert kl < KL_BOUNDS[objective], f"{objective}: KL {kl:.3f}"
    assert kl < 0.6 * initial_kl, f"{objective}: KL {kl:.3f} vs {initial_kl:.3f}"


def test_the_shared_parameters_cannot_be_changed_in_place():
    """Every instance shares the mixture's arrays: an assignment into one would
    silently change the exact density of all."""
    for name in ("weights", "_means", "_cholesky", "_shifts", "_scales"):
        with pytest.raises(ValueError, match="read-only"):
            getattr(BimodalHeavyTailed(), name)[...] = 0.0
