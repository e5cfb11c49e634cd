"""Rows on a hyperplane: features that are exact affine functions of others
(``linear_relations="narrow"``), modelled as that function plus a narrow normal."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

import skebflow
from skebflow import EBFlowDensity, EBFlowOutlierDetector
from skebflow._preparation import RELATION_WIDTH
from skebflow._validation import dependent_columns
from skebflow.flows import LinearResidual

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

FAST = {"n_flows": 1, "max_iter": 40, "device": "cpu", "random_state": 0}


def _on_a_line(n_rows=2000, seed=0):
    """x1 = 2 x0 + 1 exactly, x0 standard normal."""
    x0 = np.random.RandomState(seed).normal(size=n_rows)
    return np.c_[x0, 2.0 * x0 + 1.0]


def _with_a_total(n_rows=2000, seed=0):
    """Three features and their total."""
    X = np.random.RandomState(seed).normal(size=(n_rows, 3)) * [1.0, 2.0, 0.5]
    return np.c_[X, X.sum(axis=1)]


def test_dependent_columns_writes_each_chosen_column_in_the_columns_left():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(400, 5))
    X[:, 2] = 3.0 * X[:, 0] - 2.0
    X[:, 4] = X[:, 0] + X[:, 1] - X[:, 3]
    dependent, coefficients, intercepts = dependent_columns(X)
    assert dependent.tolist() == [2, 4]
    # only columns left as they are enter the coefficients
    assert np.all(coefficients[:, dependent] == 0)
    np.testing.assert_allclose(
        X @ coefficients.T + intercepts, X[:, dependent], atol=1e-10
    )
    independent = dependent_columns(rng.normal(size=(400, 5)))
    assert independent[0].size == 0 and independent[1].shape == (0, 5)


def test_linear_residual_is_a_volume_preserving_bijection():
    weight = torch.zeros(4, 4, dtype=torch.float64)
    weight[3, :3] = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    step = LinearResidual(weight)
    x = torch.randn(
        50, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    y, log_abs_det = step(x)
    torch.testing.assert_close(step.inverse(y), x)
    torch.testing.assert_close(y[:, :3], x[:, :3])
    jacobian = torch.autograd.functional.jacobian(
        lambda row: step(row[None])[0][0], x[0]
    )
    assert float(torch.linalg.det(jacobian)) == pytest.approx(1.0)
    assert torch.all(log_abs_det == 0) and torch.all(step.log_abs_det_at_output(y) == 0)
    weight[0, 3] = 1.0  # a residual would enter another's coefficients
    with pytest.raises(ValueError, match="enter no"):
        LinearResidual(weight)


def test_rows_on_a_line_get_a_normalized_density_narrow_across_it():
    X = _on_a_line()
    X_before = X.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no hyperplane warning
        warnings.simplefilter("ignore", ConvergenceWarning)  # (a UserWarning)
        est = EBFlowDensity(**FAST).fit(X)
    np.testing.assert_array_equal(X, X_before)
    assert est.dependent_features_.tolist() == [False, True]
    width = RELATION_WIDTH * X[:, 1].std()
    # x1 = 2 x0 + 1 + r has unit Jacobian in (x0, r): integrate there
    x0 = np.linspace(-9.0, 9.0, 721)
    r = np.linspace(-12.0, 12.0, 241) * width
    grid_x0, grid_r = np.meshgrid(x0, r, indexing="ij")
    rows = np.c_[grid_x0.ravel(), (2.0 * grid_x0 + 1.0 + grid_r).ravel()]
    density = np.exp(est.score_samples(rows)).reshape(grid_x0.shape)
    total = np.trapezoid(np.trapezoid(density, r, axis=1), x0)
    assert total == pytest.approx(1.0, abs=0.02)
    # ten widths off the line cost tens of nats (about 10**2 / 2)
    on_line = X[:5]
    off_line = on_line + [0.0, 10.0 * width]
    assert np.all(est.score_samples(on_line) - est.score_samples(off_line) > 30.0)
    samples = est.sample(2000, random_state=0)
    assert np.abs(samples[:, 1] - 2.0 * samples[:, 0] - 1.0).max() < 6.0 * width


def test_the_fit_ends_on_its_own_and_warn_keeps_the_old_behaviour():
    """Narrowed, the held-out likelihood is bounded and early stopping ends the
    fit; with ``"warn"`` the rows are fitted as they lie, with the warning."""
    X = _with_a_total()
    params = {**FAST, "max_iter": 200}
    narrow = EBFlowDensity(**params).fit(X)
    assert narrow.converged_ and narrow.n_iter_ < 200
    assert narrow.dependent_features_.tolist() == [False, False, False, True]
    with pytest.warns(UserWarning, match="lie on a hyperplane"):
        warned = EBFlowDensity(linear_relations="warn", **FAST).fit(X)
    assert not warned.dependent_features_.any()
    # smoothed by jitter, the rows have a density: nothing to narrow
    jittered = EBFlowDensity(jitter=1e-2, **{**FAST, "max_iter": 2}).fit(X)
    assert not jittered.dependent_features_.any()


def test_a_model_with_relations_survives_pickle_and_save(tmp_path):
    X = _with_a_total()
    est = EBFlowDensity(**{**FAST, "max_iter": 5}).fit(X)
    scores = est.score_samples(X[:50])
    copied = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(copied.score_samples(X[:50]), scores)
    path = tmp_path / "model.safetensors"
    skebflow.save(est, path)
    loaded = skebflow.load(path)
    np.testing.assert_array_equal(loaded.score_samples(X[:50]), scores)
    np.testing.assert_array_equal(loaded.dependent_features_, est.dependent_features_)
    np.testing.assert_array_equal(
        loaded.sample(10, random_state=0), est.sample(10, random_state=0)
    )


def test_a_missing_dependent_feature_is_drawn_on_its_hyperplane():
    X = _with_a_total()
    est = EBFlowDensity(**FAST).fit(X)
    width = RELATION_WIDTH * X[:, 3].std()
    rows = np.c_[X[:20, :3], np.full(20, np.nan)]
    for method in ("langevin", "mode"):
        filled = est.sample_conditional(
            rows, random_state=0, method=method, n_steps=100
        )
        np.testing.assert_array_equal(filled[:, :3], X[:20, :3])
        assert np.abs(filled[:, 3] - filled[:, :3].sum(axis=1)).max() < 6.0 * width
    # a part missing beside an observed total: drawn, the total kept
    rows = X[:20].copy()
    rows[:, 0] = np.nan
    filled = est.sample_conditional(rows, random_state=0, n_steps=50)
    assert np.all(np.isfinite(filled)) and np.all(filled[:, 3] == X[:20, 3])


def test_a_part_a_thousand_times_narrower_still_enters_the_relation():
    """A part whose standardized coefficient is below 1e-3 of the largest took
    no part in the fits, so no feature was chosen and the rows were fitted as
    they lie (a review found it at spreads 2000 times apart)."""
    rng = np.random.RandomState(0)
    parts = rng.normal(size=(300, 3))
    X = np.c_[parts, 2000.0 * parts[:, 0] + parts[:, 1]]
    dependent, coefficients, intercepts = dependent_columns(X)
    assert dependent.tolist() == [3]
    np.testing.assert_allclose(X @ coefficients[0] + intercepts[0], X[:, 3], atol=1e-8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = EBFlowDensity(**{**FAST, "max_iter": 2}).fit(X)
    assert est.dependent_features_.tolist() == [False, False, False, True]


def test_an_observed_total_gives_its_one_missing_part():
    """The total observed and one part missing: the part is the total minus the
    others (it was drawn as if the total were unknown, 1 000 widths off the
    relation); two parts missing, the draws cannot use it, and a warning says so."""
    X = _with_a_total()
    est = EBFlowDensity(**FAST).fit(X)
    rows = X[:20].copy()
    rows[:, 0] = np.nan
    for method in ("langevin", "mode"):
        filled = est.sample_conditional(rows, random_state=0, method=method, n_steps=20)
        np.testing.assert_allclose(filled[:, 0], X[:20, 0], atol=1e-9)
        np.testing.assert_array_equal(filled[:, 1:], X[:20, 1:])
    # a feature outside the relation, missing too, is drawn; the part still given
    wider = np.c_[X, np.random.RandomState(3).normal(size=len(X))]
    wide_est = EBFlowDensity(**{**FAST, "max_iter": 5}).fit(wider)
    assert wide_est.dependent_features_.tolist() == [False] * 3 + [True, False]
    wide_rows = wider[:20].copy()
    wide_rows[:, [0, 4]] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        filled = wide_est.sample_conditional(wide_rows, random_state=0, n_steps=5)
    np.testing.assert_allclose(filled[:, 0], X[:20, 0], atol=1e-9)
    assert np.all(np.isfinite(filled[:, 4]))
    rows[:, 1] = np.nan
    for method in ("langevin", "mode"):
        with pytest.warns(UserWarning, match="does not inform their draws") as caught:
            filled = est.sample_conditional(
                rows, random_state=0, method=method, n_steps=5
            )
        assert any(w.filename == __file__ for w in caught)
        # One of the two parts is solved from the total: the filled rows keep the
        # relation (the draws alone broke it by hundreds of its widths).
        np.testing.assert_allclose(filled[:, :3].sum(axis=1), X[:20, 3], atol=1e-9)
        np.testing.assert_array_equal(filled[:, 2:], X[:20, 2:])


@pytest.mark.parametrize("continuing", ["partial_fit", "warm_start"])
def test_a_continuing_fit_on_rows_that_break_the_relation_warns(continuing):
    X = _with_a_total()
    broken = _with_a_total(seed=1)
    broken[:, 3] += np.random.RandomState(2).normal(size=len(broken)) * 0.1
    est = EBFlowDensity(
        **{**FAST, "max_iter": 2}, warm_start=continuing == "warm_start"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        getattr(est, "fit" if continuing == "warm_start" else "partial_fit")(X)
    with pytest.warns(UserWarning, match="widths off the exact linear") as caught:
        getattr(est, "fit" if continuing == "warm_start" else "partial_fit")(broken)
    assert any(w.filename == __file__ for w in caught)
    # rows that keep the relation say nothing
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        getattr(est, "fit" if continuing == "warm_start" else "partial_fit")(X)


def test_the_detector_flags_a_row_that_breaks_the_relation():
    """With ``linear_relations="narrow"``; its default fits the rows as they lie
    (chosen on the tuning group's one set with a relation), with the warning."""
    X = _with_a_total()
    with pytest.warns(UserWarning, match="lie on a hyperplane") as said:
        default = EBFlowOutlierDetector(**{**FAST, "max_iter": 2}).fit(X)
    assert not default.dependent_features_.any()
    # the warning says what the detector's default is for, rather than urging the
    # density's remedy, which ranked outliers worse (found by a review)
    (message,) = [str(w.message) for w in said if "hyperplane" in str(w.message)]
    assert "For ranking outliers this matters less" in message
    assert "Use linear_relations='narrow'" not in message
    detector = EBFlowOutlierDetector(
        contamination=0.05, linear_relations="narrow", **FAST
    ).fit(X)
    assert detector.dependent_features_.tolist() == [False, False, False, True]
    fresh = _with_a_total(200, seed=1)
    broken = fresh.copy()
    broken[:, 3] += 0.05  # a total off by 0.05: 0.02 of its spread
    assert np.mean(detector.predict(fresh) == -1) < 0.15
    assert np.all(detector.predict(broken) == -1)


def test_partial_fit_models_the_relation_from_its_first_chunk():
    X = _with_a_total()
    est = EBFlowDensity(**FAST)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.partial_fit(X[:1000]).partial_fit(X[1000:])
    assert est.dependent_features_.tolist() == [False, False, False, True]
    assert np.all(np.isfinite(est.score_samples(X[:100])))


def test_no_more_rows_than_features_warns_that_they_lie_on_a_hyperplane():
    """n <= d rows always lie on a hyperplane, the most extreme case of data
    without a density, and the one case the hyperplane warning skipped (15 rows
    of 20 features: training rows at +40 nats, fresh ones at -18 000)."""
    X = np.random.RandomState(0).normal(size=(15, 20))
    est = EBFlowDensity(**{**FAST, "max_iter": 2}, early_stopping=False)
    with pytest.warns(UserWarning, match="15 training rows are no more than the 20"):
        est.fit(X)
    # one more row than varying features: no warning (no relation holds)
    wider = np.random.RandomState(1).normal(size=(21, 20))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(wider)
    # smoothed by jitter: silent
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.set_params(jitter=0.1).fit(X)
