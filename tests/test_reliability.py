"""Regression tests for the reliability review (data handling, convergence, contract).

Each test fails on the code before its fix; the item numbers are the review's.
"""

from __future__ import annotations

import copy
import math
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import interrupt_epoch
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

import skebflow._density as density_module
import skebflow._training as training
from skebflow import EBFlowDensity, EBFlowOutlierDetector
from skebflow._preparation import split_for_early_stopping
from skebflow.flows import Dense, Flow, Preprocessing, SmoothLeakyReLU, fc
from skebflow.objectives import OBJECTIVES, bind_objective, objective_settings

FAST = dict(n_flows=1, max_iter=5, n_layers=1, hidden_layer_sizes=(8,), device="cpu")


def _capture_train(monkeypatch):
    """Record what the estimator hands to the training loop of the main fit (not to
    the likelihood refinement's, which continues with ``keep_initial=True``)."""
    seen = {}
    real = density_module.train

    def recording(flow, preprocessing, x_train, x_validation, **kwargs):
        if not kwargs.get("keep_initial", False):
            seen.update(
                flow_dtype=flow.dtype,
                preprocessing=preprocessing,
                x_train=x_train.clone(),
                x_validation=None if x_validation is None else x_validation.clone(),
                config=kwargs["config"],
            )
        return real(flow, preprocessing, x_train, x_validation, **kwargs)

    monkeypatch.setattr(density_module, "train", recording)
    return seen


# ------------------------------------------------------ data handling, numerics


def test_item1_large_offset_keeps_its_precision(monkeypatch):
    rng = np.random.RandomState(0)
    X = np.c_[1.7e9 + rng.normal(0, 100, 500), rng.normal(size=500)]
    seen = _capture_train(monkeypatch)
    est = EBFlowDensity(random_state=0, marginal_transform=None, **FAST).fit(X)
    # What the flow trains on: the standardized rows, cast to float32 only after
    # standardizing in float64. Float32 raw data kept 5 distinct values of 500.
    batch, _ = seen["preprocessing"](seen["x_train"])
    assert seen["x_train"].dtype == torch.float64
    assert len(np.unique(batch.to(torch.float32).numpy()[:, 0])) == len(batch)
    mean = est.preprocessing_.steps[0].mean
    assert mean.dtype == torch.float64
    assert mean[0].item() == pytest.approx(X[:, 0].mean(), rel=1e-15)


def test_item1_logit_scores_rows_inside_the_training_range():
    rng = np.random.RandomState(0)
    X = np.c_[1.7e9 + rng.normal(0, 100, 500), rng.normal(size=500)]
    est = EBFlowDensity(preprocessing="logit", random_state=0, **FAST).fit(X)
    inside = np.c_[
        rng.uniform(X[:, 0].min(), X[:, 0].max(), 200),
        rng.uniform(X[:, 1].min(), X[:, 1].max(), 200),
    ]
    assert np.isfinite(est.score_samples(inside)).all()
    assert np.isfinite(est.score_samples(X)).all()


def test_item2_tiny_spread_is_handled():
    rng = np.random.RandomState(0)
    X = np.c_[1e-50 * rng.normal(size=200), rng.normal(size=200)]
    est = EBFlowDensity(random_state=0, **FAST).fit(X)
    scores = est.score_samples(X)
    assert np.isfinite(scores).all()
    # The tiny column's density is about 1e50 times larger: +115 nats per row.
    assert scores.mean() > 100


def test_item2_spread_below_float64_resolution_is_rejected():
    rng = np.random.RandomState(0)
    X = np.c_[1e9 + 1e-4 * rng.normal(size=50), rng.normal(size=50)]
    with pytest.raises(ValueError, match=r"Feature\(s\) \[0\].*constant"):
        EBFlowDensity(**FAST).fit(X)


def test_item3_a_run_whose_every_loss_is_nan_is_not_converged(monkeypatch):
    def always_nan(name, **settings):
        loss = bind_objective(name, **settings)
        return lambda flow, x, generator: loss(flow, x, generator=generator) * np.nan

    monkeypatch.setattr(training, "bind_objective", always_nan)
    X = np.random.RandomState(0).normal(size=(200, 2))
    # Patience runs out before the count of bad batches would stop the run. No
    # epoch gave usable weights, so there is no model to keep: fit raises (it kept
    # the random initialization, warning that "the last good weights" were kept).
    est = EBFlowDensity(max_iter=50, n_iter_no_change=5, device="cpu", random_state=0)
    with pytest.raises(ValueError, match="finite.*before any epoch gave usable"):
        est.fit(X)
    assert not hasattr(est, "flow_")


def _fitted_state(estimator):
    """Every fitted attribute, the flow's weights as arrays."""
    state = {}
    for name, value in vars(estimator).items():
        if name.endswith("_") and not name.startswith("__"):
            if isinstance(value, torch.nn.Module):
                value = {k: v.numpy().copy() for k, v in value.state_dict().items()}
            state[name] = copy.deepcopy(value)
    return state


def _assert_same_state(before, after):
    assert before.keys() == after.keys()
    for name in before:
        if isinstance(before[name], dict) and "flow_" in name:
            for key in before[name]:
                np.testing.assert_array_equal(before[name][key], after[name][key])
        elif isinstance(before[name], np.ndarray):
            np.testing.assert_array_equal(before[name], after[name])
        elif not isinstance(before[name], (dict, torch.nn.Module)):
            assert before[name] == after[name] or (
                before[name] != before[name] and after[name] != after[name]
            ), name


@pytest.mark.parametrize("objective", ["ml", "dsm"])
def test_a_warm_start_that_diverges_at_once_keeps_the_fitted_model(
    monkeypatch, objective
):
    """A warm_start refit whose every batch diverged returned normally: it wiped
    n_iter_, loss_curve_ and the validation record, and (with dsm's whitened
    last layer) rounded the weights through float32 (found by a review). It
    raises, as a fresh refit does, and every fitted attribute stays."""
    X = np.random.RandomState(0).normal(size=(200, 2))
    est = EBFlowDensity(
        objective=objective, likelihood_refinement=0, random_state=0, **FAST
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X)
    before, scores = _fitted_state(est), est.score_samples(X)
    monkeypatch.setattr(training, "_batch_loss", lambda *args, **kwargs: None)
    with pytest.raises(ValueError, match="before any epoch.*previous model is kept"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.set_params(warm_start=True).fit(X)
    _assert_same_state(before, _fitted_state(est))
    np.testing.assert_array_equal(est.score_samples(X), scores)


def test_an_imputer_refit_that_diverges_at_once_stops_the_refits(monkeypatch):
    """The imputer's refits are warm-started fits: one that diverges before any
    epoch stops them with a ConvergenceWarning, and the density before it stays."""
    from skebflow import EBFlowImputer

    rng = np.random.RandomState(0)
    X = rng.normal(size=(200, 2))
    X[::5, 1] = np.nan
    real_fit = EBFlowDensity.fit
    fits = []

    def diverge_from_the_second_fit(self, *args, **kwargs):
        fits.append(len(fits))
        if len(fits) > 1:
            monkeypatch.setattr(training, "_batch_loss", lambda *a, **k: None)
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(EBFlowDensity, "fit", diverge_from_the_second_fit)
    imputer = EBFlowImputer(
        EBFlowDensity(random_state=0, **FAST), n_refits=2, n_steps=5, random_state=0
    )
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        imputer.fit(X)
    assert len(fits) == 2  # the third fit never ran
    assert any(
        issubclass(w.category, ConvergenceWarning) and "stopped the imputer" in
        str(w.message) for w in said
    )
    assert imputer.estimator_.n_iter_ == FAST["max_iter"]
    assert np.isfinite(imputer.transform(X)).all()


@pytest.mark.parametrize("max_iter", [50, 2])  # the patience or max_iter first
def test_item3_validation_never_finite_is_not_converged(monkeypatch, max_iter):
    """Also when max_iter runs out before the patience: it said "Maximum
    iterations reached" and advised more epochs, keeping the initial weights."""
    monkeypatch.setattr(
        training,
        "evaluate_log_likelihood",
        lambda flow, preprocessing, x, **kw: torch.full((x.shape[0],), torch.nan),
    )
    X = np.random.RandomState(0).normal(size=(200, 2))
    est = EBFlowDensity(max_iter=max_iter, n_iter_no_change=3, device="cpu",
                        random_state=0)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="never finite.*no trained model"):
            est.fit(X)
    assert not any("Maximum iterations" in str(w.message) for w in said)


def test_item4_fdssm_with_a_small_radius_trains_in_float64(monkeypatch):
    seen = _capture_train(monkeypatch)
    X = np.random.RandomState(0).normal(size=(100, 2))
    EBFlowDensity(objective="fdssm", fd_epsilon=1e-3, random_state=0, **FAST).fit(X)
    assert seen["flow_dtype"] == torch.float64
    EBFlowDensity(objective="fdssm", fd_epsilon=0.1, random_state=0, **FAST).fit(X)
    assert seen["flow_dtype"] == torch.float32


def test_item4_fdssm_small_radius_is_rounding_error_in_float32():
    """Why item 4's guard exists: at 1e-3 the float32 loss is mostly rounding."""
    from skebflow.flows import coupling
    from skebflow.objectives import fdssm

    flow = coupling(20, n_layers=2, generator=torch.Generator().manual_seed(0))
    x = 3.0 * torch.randn(256, 20, generator=torch.Generator().manual_seed(1)) + 5.0

    def per_row(dtype: torch.dtype, epsilon: float) -> torch.Tensor:
        model = copy.deepcopy(flow).to(dtype)
        generator = torch.Generator().manual_seed(2)  # the same directions per dtype
        with torch.no_grad():
            value = fdssm(model, x.to(dtype), generator=generator, fd_epsilon=epsilon)
        return value.double()

    def change(dtype: torch.dtype, small: float, large: float) -> float:
        """Median relative change of a row's loss between two radii."""
        at_small, at_large = per_row(dtype, small), per_row(dtype, large)
        return float(((at_small - at_large).abs() / at_large.abs()).median())

    # In float64 the radius barely matters at this flow (the energy is close to
    # quadratic at this scale); in float32 it decides each row's value at 1e-3,
    # where the finite differences are mostly rounding, and not at 0.1 or 0.2.
    # (Per row and per dtype with the same directions: a mean over rows averages
    # the rounding away, and the two dtypes draw different directions.)
    assert change(torch.float64, 1e-3, 0.1) < 1e-6
    assert change(torch.float32, 1e-3, 0.1) > 0.5
    assert change(torch.float32, 0.1, 0.2) < 0.01


def test_item6_gradient_is_nan_where_the_density_is_zero():
    rng = np.random.RandomState(0)
    X = rng.uniform(0, 1, size=(200, 2))
    est = EBFlowDensity(
        preprocessing="logit", bounds=(0.0, 1.0), random_state=0, **FAST
    ).fit(X)
    rows = np.array([[0.5, 0.5], [1.5, 0.5]])
    assert np.isneginf(est.score_samples(rows)[1])
    gradient = est.log_density_gradient(rows)
    assert np.isfinite(gradient[0]).all()
    assert np.isnan(gradient[1]).all()


def test_item7_dense_cache_keeps_one_copy_of_the_weight():
    layer = Dense(64, init="orthogonal", generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        layer.log_abs_det()
        layer.inverse_weight()
    held = [layer._cache._snapshot, *layer._cache._values.values()]
    square = [t for t in held if t.shape == (64, 64)]
    assert len(square) == 2  # one snapshot of W and W^{-1}
    with torch.no_grad():
        layer.weight.mul_(2.0)
        assert layer.log_abs_det().item() == pytest.approx(64 * np.log(2.0), abs=1e-4)


def test_item8_a_flow_without_parameters():
    flow = Flow([SmoothLeakyReLU()]).double()
    assert flow.log_normalizer().item() == 0.0
    assert flow.dtype == torch.float64
    with pytest.raises(ValueError, match="number of features"):
        flow.sample(3)
    config = training.TrainingConfig(objective="dsm", max_iter=1)
    with pytest.raises(ValueError, match="no trainable parameters"):
        training.train(
            flow,
            Preprocessing(),
            torch.zeros(4, 2, dtype=torch.float64),
            None,
            config=config,
            generator=torch.Generator(),
        )


# ------------------------------------------------ training loop and the contract


@pytest.mark.parametrize("n_samples", [2, 30])
def test_item9_tiny_validation_falls_back_to_the_training_loss(n_samples):
    X = np.random.RandomState(0).normal(size=(n_samples, 2))
    est = EBFlowDensity(random_state=0, **FAST)
    with pytest.warns(UserWarning, match="training loss instead"):
        est.fit(X)
    assert est.validation_scores_ is None and est.best_validation_score_ is None


def test_item9_enough_rows_validate_without_a_warning():
    X = np.random.RandomState(0).normal(size=(200, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = EBFlowDensity(random_state=0, n_iter_no_change=2, **FAST).fit(X)
    assert len(est.validation_scores_) == est.n_iter_


def test_item10_duplicated_rows_never_validate_on_training_rows(monkeypatch):
    rng = np.random.RandomState(0)
    X = np.repeat(rng.normal(size=(5, 2)), 40, axis=0)
    seen = _capture_train(monkeypatch)
    with pytest.warns(UserWarning, match="5 distinct rows among 200"):
        EBFlowDensity(random_state=0, **FAST).fit(X)
    train_rows = {tuple(row) for row in seen["x_train"].numpy()}
    validation_rows = {tuple(row) for row in seen["x_validation"].numpy()}
    assert validation_rows and train_rows
    assert not train_rows & validation_rows


def test_item10_a_few_duplicates_are_split_without_a_warning(monkeypatch):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(300, 2))
    X[1::50] = X[::50]  # 6 rows appear twice
    seen = _capture_train(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        EBFlowDensity(random_state=0, **FAST).fit(X)
    assert len(seen["x_train"]) + len(seen["x_validation"]) == 300
    train_rows = {tuple(row) for row in seen["x_train"].numpy()}
    assert not train_rows & {tuple(row) for row in seen["x_validation"].numpy()}


def test_item10_smoothed_duplicates_validate_on_every_value():
    # Dequantized or jittered, a repeated value is not a point mass: the validation
    # rows are a plain random share, and no value (a binary pattern here) is held
    # out whole, which would leave it out of training.
    X = np.random.RandomState(0).randint(0, 2, size=(1000, 3)).astype(float)
    for seed in range(5):
        train, validation = split_for_early_stopping(
            X, 0.1, np.random.RandomState(seed), smoothed=True
        )
        assert len(validation) == 100 and len(train) == 900
        assert {tuple(row) for row in X[train]} == {tuple(row) for row in X}
    # Unsmoothed, whole patterns are held out, but about a tenth of the rows.
    with pytest.warns(UserWarning, match="8 distinct rows among 1000"):
        train, validation = split_for_early_stopping(X, 0.1, np.random.RandomState(0))
    assert not {tuple(r) for r in X[train]} & {tuple(r) for r in X[validation]}
    assert 100 <= len(validation) <= 200


def test_item10_the_estimator_splits_by_value_only_when_every_column_is_smoothed(
    monkeypatch,
):
    rng = np.random.RandomState(0)
    counts = rng.randint(0, 4, size=(300, 2)).astype(float)  # 16 integer patterns
    seen = _capture_train(monkeypatch)

    def rows(key):
        return {tuple(row) for row in seen[key].numpy()}

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        EBFlowDensity(dequantize=True, random_state=0, **FAST).fit(counts)
    assert len(seen["x_validation"]) == 30
    assert rows("x_train") == {tuple(row) for row in counts}  # every pattern trains
    # A continuous column repeated with the integer ones stays a point mass:
    # duplicated rows are then held out whole, none beside its copies.
    mixed = np.hstack([counts, rng.normal(size=(30, 1)).repeat(10, axis=0)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", message=".*distinct rows among")
        EBFlowDensity(dequantize=True, random_state=0, **FAST).fit(mixed)
    assert rows("x_validation") and not rows("x_train") & rows("x_validation")


def test_item10_one_dominant_row_is_never_held_out_whole():
    # 195 copies of one row and 5 of another: holding out either group would
    # leave too few rows on one side, so every seed warns and validates on none.
    X = np.vstack([np.zeros((195, 2)), np.ones((5, 2))])
    for seed in range(10):
        with warnings.catch_warnings(), pytest.warns(UserWarning, match="whole grou"):
            warnings.filterwarnings("ignore", message=".*distinct rows among")
            train, validation = split_for_early_stopping(
                X, 0.1, np.random.RandomState(seed)
            )
        assert validation is None and len(train) == 200
    # 120 equal rows beside 80 distinct ones: the big group stays in training.
    rng = np.random.RandomState(0)
    X = np.vstack([np.zeros((120, 2)), rng.normal(size=(80, 2))])
    for seed in range(20):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            train, validation = split_for_early_stopping(
                X, 0.1, np.random.RandomState(seed)
            )
        assert 20 <= len(validation) <= 40
        assert np.any(np.all(X[train] == 0.0, axis=1))


def test_item10_all_rows_equal_watch_the_training_loss():
    from skebflow import EBFlowOutlierDetector

    X = np.tile([[1.0, 2.0]], (200, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("error", message=".*[Dd]iverged")
        warnings.filterwarnings("ignore", message=".*distinct rows among")
        with pytest.warns(UserWarning, match="whole groups of equal rows"):
            detector = EBFlowOutlierDetector(
                n_iter_no_change=3, **{**FAST, "max_iter": 6}
            ).fit(X)
    # Before, an empty validation set scored NaN and stopped the fit as diverged.
    assert detector.early_stopping_metric_ is None
    assert detector.validation_scores_ is None
    assert np.isfinite(detector.loss_curve_).all()
    assert np.isfinite(detector.score_samples(X)).all()


@pytest.mark.parametrize(
    "params, message",
    [
        ({"hidden_layer_sizes": (0,)}, "positive integers"),
        ({"hidden_layer_sizes": (2.7,)}, "positive integers"),
        ({"hidden_layer_sizes": (True,)}, "positive integers"),
        # True passes scikit-learn's Integral constraint; it failed iterating
        ({"hidden_layer_sizes": True}, "hidden_layer_sizes=True must hold"),
        # 1e200 squared overflowed a Python float: OverflowError
        ({"objective": "fdssm", "fd_epsilon": 1e200}, "Training diverged"),
        ({"preprocessing": "logit", "bounds": (0, 1, 2)}, "pair"),
        ({"preprocessing": "logit", "bounds": (np.nan, 5.0)}, "NaN or infinite"),
        ({"preprocessing": "logit", "bounds": (-5.0, [1.0, 2.0, 3.0])}, "shape"),
        ({"preprocessing": "logit", "bounds": (5.0, -5.0)}, "upper > lower"),
    ],
)
def test_item11_parameters_are_validated(params, message):
    X = np.random.RandomState(0).uniform(-1, 1, size=(50, 2))
    with pytest.raises(ValueError, match=message):
        EBFlowDensity(**{**FAST, **params}).fit(X)



@pytest.mark.parametrize(
    "sizes, same_as",
    [(16, (16,)), (np.array([8, 8]), (8, 8)), ([8, 8], (8, 8))],
)
def test_hidden_layer_sizes_read_as_scikit_learn_mlp_reads_them(sizes, same_as):
    """One int is one hidden layer and an array holds the widths, as in
    MLPRegressor (both were refused, so a grid of ints failed); a warm start
    sees the same conditioners written either way."""
    X = np.random.RandomState(0).normal(size=(120, 3))
    params = {**FAST, "max_iter": 3, "random_state": 0}
    del params["hidden_layer_sizes"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = EBFlowDensity(hidden_layer_sizes=sizes, **params).fit(X)
        reference = EBFlowDensity(hidden_layer_sizes=same_as, **params).fit(X)
        np.testing.assert_array_equal(est.score_samples(X), reference.score_samples(X))
        reference.set_params(hidden_layer_sizes=sizes, warm_start=True).fit(X)
        detector = EBFlowOutlierDetector(hidden_layer_sizes=sizes, **params).fit(X)
    assert detector.hidden_layer_sizes_ == same_as

@pytest.fixture(scope="module")
def fitted():
    X = np.random.RandomState(0).normal(size=(200, 2))
    return EBFlowDensity(random_state=0, **FAST).fit(X)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda est: est.sample(True), "n_samples=True"),
        (lambda est: est.sample(0), "n_samples=0"),
        (lambda est: est.sample_langevin(2, n_steps=0), "n_steps=0"),
        (lambda est: est.sample_langevin(2, step_size=-0.1), "step_size=-0.1"),
        (lambda est: est.sample_langevin(2, step_size=np.nan), "step_size=nan"),
        (lambda est: est.sample_langevin(True), "n_samples=True"),
        (
            lambda est: est.sample_conditional([[0.0, np.nan]], n_steps=0),
            "n_steps=0",
        ),
        (
            lambda est: est.sample_langevin(2, initial_temperature=0.5),
            "initial_temperature",
        ),
    ],
)
def test_item11_sampling_arguments_are_validated(fitted, call, message):
    with pytest.raises(ValueError, match=message):
        call(fitted)


def test_item11_logit_dequantize_widens_only_integer_columns():
    rng = np.random.RandomState(0)
    X = np.c_[rng.randint(0, 5, 200), rng.uniform(0, 1, 200)]
    est = EBFlowDensity(
        preprocessing="logit", dequantize=True, random_state=0, **FAST
    ).fit(X)
    logit = est.preprocessing_.steps[-1]
    upper = logit.upper.numpy()
    lower = logit.lower.numpy()
    # Integer column: dequantized values fill [0, 5), and its 5 % margin is rounded
    # up to whole bins; the float column ends at its maximum, plus 5 %.
    assert upper[0] == pytest.approx(5.0 + 1.0)
    assert lower[0] == pytest.approx(0.0 - 1.0)
    width = X[:, 1].max() - X[:, 1].min()
    assert upper[1] == pytest.approx(X[:, 1].max() + 0.05 * width)
    # Every dequantized training value lies inside the box.
    assert np.isfinite(est.score_samples(X)).all()


@pytest.mark.parametrize(
    "change",
    [
        {"architecture": "fc"},
        {"n_layers": 2},
        {"hidden_layer_sizes": (16,)},
        {"preprocessing": "logit"},
        {"activation": "silu"},
    ],
)
def test_item12_warm_start_refuses_a_changed_structure(change):
    X = np.random.RandomState(0).normal(size=(100, 2))
    est = EBFlowDensity(warm_start=True, random_state=0, **FAST).fit(X)
    weights = copy.deepcopy(est.flow_.state_dict())
    est.set_params(**change)
    with pytest.raises(ValueError, match=f"{next(iter(change))}=.*changed"):
        est.fit(X)
    for name, value in est.flow_.state_dict().items():
        assert torch.equal(value, weights[name])


def test_item12_warm_start_continues_an_unchanged_structure():
    X = np.random.RandomState(0).normal(size=(100, 2))
    est = EBFlowDensity(warm_start=True, random_state=0, **FAST).fit(X)
    before = copy.deepcopy(est.flow_.state_dict())
    est.set_params(learning_rate=1e-3, hidden_layer_sizes=[8]).fit(X)
    changed = any(
        not torch.equal(value, before[name])
        for name, value in est.flow_.state_dict().items()
    )
    assert changed


@pytest.mark.parametrize(
    ("fitted", "change"),
    [
        ({"architecture": "fc"}, {"hidden_layer_sizes": (16,), "activation": "silu",
                                  "coupling_transform": "logistic_mixture",
                                  "n_components": 3}),
        ({"coupling_transform": "affine"}, {"n_components": 3}),
        ({"preprocessing": "standardize"}, {"bounds": (-9.0, 9.0),
                                            "logit_alpha": 0.5}),
    ],
)
def test_warm_start_ignores_parameters_the_fitted_flow_does_not_use(fitted, change):
    """An fc flow has no conditioners, an affine coupling no mixture components, a
    standardized one no logit box: changing those is no change of the flow, and the
    warm start continues it (it was refused as a changed structure)."""
    X = np.random.RandomState(0).normal(size=(100, 2))
    est = EBFlowDensity(warm_start=True, random_state=0, **{**FAST, **fitted})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X)
        before = est.score_samples(X)
        est.set_params(**change).fit(X)
    assert not np.array_equal(est.score_samples(X), before)  # trained further
    est.set_params(n_layers=2)  # one it does use is still refused
    with pytest.raises(ValueError, match="n_layers=.*changed"):
        est.fit(X)


def test_warm_start_accepts_the_value_auto_resolved_to():
    # Fitted with "auto", continued with the value it resolved to: the same flow,
    # so the continuation trains it; another value is still refused.
    X = np.random.RandomState(0).normal(size=(100, 2))
    params = {**FAST, "n_flows": "auto", "architecture": "auto"}
    est = EBFlowDensity(warm_start=True, random_state=0, **params).fit(X)
    assert (est.n_flows_, est.architecture_) == (4, "coupling")
    before = copy.deepcopy(est.flow_.state_dict())
    est.set_params(n_flows=4, architecture="coupling").fit(X)
    assert any(
        not torch.equal(value, before[name])
        for name, value in est.flow_.state_dict().items()
    )
    est = EBFlowDensity(warm_start=True, random_state=0, **params).fit(X)
    with pytest.raises(ValueError, match="n_flows='auto' -> 2 changed"):
        est.set_params(n_flows=2).fit(X)
    # the same for marginal_transform, which was refused (noticed 4 December)
    est = EBFlowDensity(warm_start=True, random_state=0, **FAST).fit(X)
    assert est.marginal_transform_ == "kde"
    est.set_params(marginal_transform="kde").fit(X)
    with pytest.raises(ValueError, match="marginal_transform='kde' -> None"):
        est.set_params(marginal_transform=None).fit(X)


def test_item13_a_failed_warm_start_leaves_the_fitted_model(monkeypatch):
    X = np.random.RandomState(0).normal(size=(100, 2))
    est = EBFlowDensity(warm_start=True, random_state=0, **FAST).fit(X)
    before = pickle.dumps(est)
    scores = est.score_samples(X)

    def failing(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(density_module, "train", failing)
    with pytest.raises(RuntimeError, match="out of memory"):
        est.fit(X)
    assert est.flow_.dtype == torch.float64
    assert pickle.dumps(est) == before
    np.testing.assert_array_equal(est.score_samples(X), scores)


def test_item13_a_failed_first_fit_leaves_no_fitted_state(monkeypatch):
    def failing(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(density_module, "train", failing)
    est = EBFlowDensity(**FAST)
    with pytest.raises(RuntimeError):
        est.fit(np.random.RandomState(0).normal(size=(50, 2)))
    assert not [name for name in vars(est) if name.endswith("_")]
    with pytest.raises(Exception, match="not fitted"):
        check_is_fitted(est)


def test_item13_a_singular_fit_leaves_the_previous_model(monkeypatch):
    X = np.random.RandomState(0).normal(size=(100, 2))
    est = EBFlowDensity(random_state=0, **FAST).fit(X)
    before = pickle.dumps(est)
    real = density_module.train

    def singular(flow, *args, **kwargs):
        result = real(flow, *args, **kwargs)
        with torch.no_grad():
            flow.layers[1].weight.zero_()
        return result

    monkeypatch.setattr(density_module, "train", singular)
    with pytest.raises(ValueError, match="singular"):
        est.fit(X)
    assert pickle.dumps(est) == before


def test_item14_mode_is_the_mode_in_the_units_of_the_data():
    rng = np.random.RandomState(0)
    # The second column is skewed towards 0 inside [0, 1], and depends on the first.
    first = rng.uniform(0, 1, 2000)
    second = rng.beta(1.5, 6.0, 2000) * (0.5 + 0.5 * first)
    X = np.c_[first, second]
    est = EBFlowDensity(
        preprocessing="logit",
        bounds=(0.0, 1.0),
        max_iter=40,
        n_layers=2,
        learning_rate=1e-2,
        device="cpu",
        random_state=0,
    ).fit(X)
    mode = est.sample_conditional(
        [[0.8, np.nan]], method="mode", n_steps=400, step_size=0.05, random_state=0
    )[0, 1]
    grid = np.linspace(1e-4, 1 - 1e-4, 4001)
    scores = est.score_samples(np.c_[np.full_like(grid, 0.8), grid])
    best = grid[np.argmax(scores)]
    assert mode == pytest.approx(best, abs=5e-3)


# ---------------------------------------------------- objectives get their settings


def test_bind_objective_refuses_a_setting_the_objective_does_not_take():
    with pytest.raises(ValueError, match="does not take n_slices; it takes noise_std"):
        bind_objective("dsm", n_slices=3)
    with pytest.raises(ValueError, match="takes no settings"):
        bind_objective("ml", noise_std=0.1)
    assert objective_settings("fdssm") == ("fd_epsilon", "n_slices")


@pytest.mark.parametrize(
    "objective, settings, message",
    [
        ("dsm", {"noise_std": 0.0}, "noise_std=0.0 must be a finite number > 0"),
        ("dsm", {"noise_std": -0.1}, "noise_std=-0.1 must be"),
        ("dsm", {"noise_std": float("nan")}, "noise_std=nan must be"),
        ("dsm", {"noise_std": True}, "noise_std=True must be"),
        ("fdssm", {"fd_epsilon": float("inf")}, "fd_epsilon=inf must be"),
        ("fdssm", {"n_slices": 0}, "n_slices=0 must be an integer >= 1"),
        ("ssm", {"n_slices": 1.5}, "n_slices=1.5 must be an integer"),
        ("ssm", {"projection": "sphere"}, "projection='sphere' is not supported"),
        ("ssm", {"projection": None}, "projection=None is not supported"),
        ("fdssm", {"n_slices": None}, "n_slices=None must be an integer"),
        ("dsm", {"noise_std": None}, "noise_std=None must be"),
    ],
)
def test_bind_objective_refuses_a_bad_setting_value_when_bound(
    objective, settings, message
):
    # Refused when bound, before any data; and by the objective itself when it is
    # called directly, rather than a loss of inf or NaN.
    with pytest.raises(ValueError, match=message):
        bind_objective(objective, **settings)
    flow = fc(2, n_layers=1)
    with pytest.raises(ValueError, match=message):
        OBJECTIVES[objective](flow, torch.zeros(3, 2), **settings)


@pytest.mark.parametrize(
    "objective, setting, values",
    [
        ("dsm", "noise_std", (0.05, 0.5)),
        ("ssm", "n_slices", (1, 4)),
        ("fdssm", "fd_epsilon", (0.1, 0.5)),
        ("fdssm", "n_slices", (1, 2)),
    ],
)
def test_objective_settings_reach_the_objective(objective, setting, values):
    # Same seed, same data: if the setting were dropped on its way to the objective,
    # both fits would be identical bit for bit.
    X = np.random.RandomState(0).normal(size=(200, 2))
    fits = []
    for value in values:
        est = EBFlowDensity(
            objective=objective,
            early_stopping=False,
            random_state=0,
            **{**FAST, "max_iter": 2, setting: value},
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(X)
        fits.append(est)
    assert fits[0].loss_curve_ != fits[1].loss_curve_
    difference = max(
        float((a - b).abs().max())
        for a, b in zip(
            fits[0].flow_.parameters(), fits[1].flow_.parameters(), strict=True
        )
    )
    assert difference > 1e-6


# ------------------------------------------------------------- fuzzing's findings


def test_a_singular_layer_while_sampling_counts_as_a_bad_batch():
    # (standardized columns: the trajectory that diverges was found on them)
    X = np.random.RandomState(0).normal(size=(40, 1))
    est = EBFlowDensity(
        marginal_transform=None,
        objective="sml",
        architecture="fc",
        n_layers=1,
        max_iter=1,
        learning_rate=1.0,
        batch_size=1,
        early_stopping=False,
        device="cpu",
        random_state=1,
    )
    # No epoch gave usable weights: a clear error, not a crash of the sampler.
    with pytest.raises(ValueError, match="diverged.*no trained model"):
        est.fit(X)


def test_a_frame_without_columns_is_refused_clearly():
    pandas = pytest.importorskip("pandas")
    with pytest.raises(ValueError, match="0 feature.*X has no columns"):
        EBFlowDensity(**FAST).fit(pandas.DataFrame(np.zeros((4, 0))))


def test_a_spread_below_1e_100_is_refused():
    X = np.c_[1e-120 * np.arange(20.0), np.arange(20.0)]
    with pytest.raises(ValueError, match=r"Feature\(s\) \[0\].*1e-100"):
        EBFlowDensity(**FAST).fit(X)


def test_logit_dequantize_samples_have_a_finite_density():
    X = np.array([[0.0], [1.0], [2.0], [3.0], [1.0], [2.0]] * 20)
    est = EBFlowDensity(
        architecture="fc",
        preprocessing="logit",
        dequantize=True,
        max_iter=3,
        device="cpu",
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X)
    samples = est.sample(2000, random_state=0)
    assert np.isfinite(est.score_samples(samples)).all()


def test_given_bounds_of_a_dequantized_column_hold_whole_unit_bins():
    # A box edge inside a unit bin would let a sample, floored back to an integer,
    # leave the box (-0.5 floors to -1, a draw in [5, 5.5) to 5): edges are rounded
    # inward for dequantized columns, and the model continues on its own samples.
    rng = np.random.RandomState(0)
    X = np.c_[rng.uniform(0, 1, 200), rng.randint(0, 5, 200).astype(float)]
    bounds = (np.array([-0.5, -0.5]), np.array([1.5, 5.5]))
    est = EBFlowDensity(preprocessing="logit", dequantize=True, bounds=bounds,
                        warm_start=True, max_iter=2, n_flows=1, device="cpu",
                        random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X)
        logit = est.preprocessing_.steps[-1]
        np.testing.assert_array_equal(logit.lower.numpy(), [-0.5, 0.0])
        np.testing.assert_array_equal(logit.upper.numpy(), [1.5, 5.0])
        samples = est.sample(2000, random_state=0)
        assert set(np.unique(samples[:, 1])) <= {0.0, 1.0, 2.0, 3.0, 4.0}
        est.fit(samples)  # inside the fitted box


def test_the_troubleshooting_page_names_every_parameter_a_warm_start_refuses():
    """The user guide's list of what ``warm_start=True`` refuses to change is the
    code's (it once left out ``marginal_transform``)."""
    page = Path(__file__).parents[1] / "docs" / "user_guide" / "troubleshooting.rst"
    section = page.read_text().split("``ValueError: warm_start=True continues")[1]
    section = section.split("\nDivergence\n")[0]
    named = [name for name in density_module._STRUCTURE_PARAMS
             if f"``{name}``" in section]
    assert named == list(density_module._STRUCTURE_PARAMS)


def test_the_warm_start_docstring_names_every_parameter_a_warm_start_refuses():
    """EBFlowDensity's ``warm_start`` entry lists the same parameters (it once
    left out ``marginal_transform`` and ``linear_relations``)."""
    entry = EBFlowDensity.__doc__.split("    warm_start : bool")[1]
    entry = entry.split("\n\n")[0]
    named = [name for name in density_module._STRUCTURE_PARAMS
             if f"``{name}``" in entry]
    assert named == list(density_module._STRUCTURE_PARAMS)


def test_warm_start_compares_nan_parameters_as_equal():
    X = np.random.RandomState(0).normal(size=(100, 2))
    est = EBFlowDensity(bounds=(np.nan, 1.0), warm_start=True, random_state=0, **FAST)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X)
        est.fit(X)  # bounds are unused by standardization, and unchanged


TINY_FLOWS = {"n_layers": 1, "hidden_layer_sizes": (4,), "device": "cpu",
              "random_state": 0}


@pytest.mark.parametrize(("on_call", "kept"), [(5, 2), (4, 1)])
def test_an_interrupt_ends_the_whole_first_fit_and_keeps_what_was_trained(
    monkeypatch, on_call, kept
):
    """Interrupted in the 2nd of 3 flows: in its second epoch, it is kept with the
    first; in its first, it is untrained (its initial weights) and only the first
    flow is kept."""
    X = np.random.RandomState(0).normal(size=(100, 2))
    calls = interrupt_epoch(monkeypatch, on_call=on_call)  # flow 1 ran calls 1-3
    est = EBFlowDensity(n_flows=3, max_iter=3, early_stopping=False, **TINY_FLOWS)
    with pytest.warns(
        UserWarning, match=rf"\(flow 2 of 3\).*{kept} of 3 flows trained"
    ):
        est.fit(X)
    assert calls["n"] == on_call  # no epoch of the third flow ran
    assert est.n_flows_ == kept
    assert np.all(np.isfinite(est.score_samples(X)))
    # The two flows kept survive a pickle (it rebuilds the flows the spec names).
    copied = pickle.loads(pickle.dumps(est))
    assert copied.n_flows_ == kept
    np.testing.assert_array_equal(copied.score_samples(X), est.score_samples(X))


@pytest.mark.parametrize("on_call", [1, 3])  # in training; in the refinement
def test_an_interrupted_refit_keeps_the_previous_model_and_says_so(
    monkeypatch, on_call
):
    X = np.random.RandomState(0).normal(size=(100, 2))
    est = EBFlowDensity(n_flows=1, max_iter=2, objective="ssm",
                        likelihood_refinement=2, early_stopping=False, **TINY_FLOWS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X)
    flow, scores = est.flow_, est.score_samples(X)
    interrupt_epoch(monkeypatch, on_call=on_call)
    with pytest.raises(KeyboardInterrupt):
        est.fit(X[::-1])
    assert est.flow_ is flow
    np.testing.assert_array_equal(est.score_samples(X), scores)


@pytest.mark.parametrize("early_stopping", [False, True])
def test_a_first_fit_interrupted_in_its_first_epoch_keeps_nothing(
    monkeypatch, early_stopping
):
    """Ctrl-C in the first epoch of a first fit: its flow is untrained (its
    initial weights), so nothing is kept (the estimator stays unfitted) and the
    interruption reaches the caller (an untrained flow used to be kept as the
    fitted model, with a warning)."""
    X = np.random.RandomState(0).normal(size=(100, 2))
    interrupt_epoch(monkeypatch, on_call=1)
    est = EBFlowDensity(n_flows=1, max_iter=3, early_stopping=early_stopping,
                        **TINY_FLOWS)
    with pytest.raises(KeyboardInterrupt):
        est.fit(X)
    assert not hasattr(est, "flow_")


def test_an_interrupted_first_fit_with_an_unusable_flow_keeps_nothing(monkeypatch):
    """The user interrupts a first fit where its flow, with finite weights, scores
    training rows as -inf: nothing is kept (the estimator stays unfitted) and the
    interruption reaches the caller, as a refit's does."""
    X = np.random.RandomState(0).normal(size=(100, 2))
    real = density_module.train

    def interrupted_far_off(flow, *args, **kwargs):
        result = real(flow, *args, **kwargs)
        with torch.no_grad():  # a finite scale whose energy overflows
            dict(flow.named_parameters())["layers.0.log_scale"].fill_(1e30)
        result.interrupted = True
        result.stop_reason = "Training interrupted by user."
        return result

    monkeypatch.setattr(density_module, "train", interrupted_far_off)
    est = EBFlowDensity(n_flows=1, max_iter=2, objective="ml",
                        likelihood_refinement=0, **TINY_FLOWS)
    with pytest.raises(KeyboardInterrupt):
        est.fit(X)
    assert not hasattr(est, "flow_")
    # In a mixture, the flows trained before the unusable one are kept.
    calls = {"n": 0}

    def second_interrupted_far_off(flow, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            return real(flow, *args, **kwargs)
        return interrupted_far_off(flow, *args, **kwargs)

    monkeypatch.setattr(density_module, "train", second_interrupted_far_off)
    est = EBFlowDensity(n_flows=3, max_iter=2, objective="ml",
                        likelihood_refinement=0, early_stopping=False, **TINY_FLOWS)
    with pytest.warns(UserWarning, match="holds the 1 of 3 flows"):
        est.fit(X)
    assert est.n_flows_ == 1 and est.converged_ is False
    assert np.isfinite(est.score_samples(X)).all()
    monkeypatch.setattr(density_module, "train", real)
    interrupt_epoch(monkeypatch, on_call=2)
    est = EBFlowDensity(n_flows=1, max_iter=2, objective="ml",
                        likelihood_refinement=0, **TINY_FLOWS)
    with pytest.warns(UserWarning, match="interrupted"):  # the check itself passes
        est.fit(X)
    assert np.isfinite(est.score_samples(X)).all()


def test_an_interrupted_refinement_of_a_first_fit_says_so(monkeypatch):
    X = np.random.RandomState(0).normal(size=(100, 2))
    calls = interrupt_epoch(monkeypatch, on_call=3)  # the refinement's first epoch
    est = EBFlowDensity(n_flows=2, max_iter=2, objective="ssm",
                        likelihood_refinement=2, early_stopping=False, **TINY_FLOWS)
    with pytest.warns(UserWarning, match="during the likelihood refinement"):
        est.fit(X)
    assert calls["n"] == 3 and est.n_flows_ == 1
    assert est.refined_flows_.tolist() == [False]


@pytest.mark.parametrize("stage", ["whitening", "refinement"])
def test_a_first_fit_interrupted_after_training_has_not_converged(monkeypatch, stage):
    """Training stopped on its own (converged), then the user interrupted the
    whitening or the refinement: the fit did not run as asked, so converged_ is
    False, as after an interrupt in training."""
    X = np.random.RandomState(0).normal(size=(300, 2))
    params = {**FAST, "objective": "dsm", "max_iter": 200, "n_iter_no_change": 2,
              "tol": 10.0, "noise_annealing": 0.0, "random_state": 0,
              "whiten_output": stage == "whitening",
              "likelihood_refinement": 2 if stage == "refinement" else 0}
    reference = EBFlowDensity(**{**params, "whiten_output": False,
                                 "likelihood_refinement": 0})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference.fit(X)
    assert reference.converged_ and reference.n_iter_ < 200
    if stage == "whitening":
        def interrupted(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(density_module, "whiten_output", interrupted)
    else:  # the refinement's first epoch
        interrupt_epoch(monkeypatch, on_call=reference.n_iter_ + 1)
    est = EBFlowDensity(**params)
    with pytest.warns(UserWarning, match=f"during the (output|likelihood) {stage}"):
        est.fit(X)
    assert est.n_iter_ == reference.n_iter_
    assert est.converged_ is False


@pytest.mark.parametrize("early_stopping", [True, False])
def test_a_refinement_that_diverges_says_so_and_keeps_its_judged_best(
    monkeypatch, early_stopping
):
    # Two epochs of ssm, then the refinement diverges in its third epoch. With
    # held-out rows its best epoch before that beat the start and is kept, as a
    # refinement that stops early is; without them nothing judged it, and the
    # flow before it is kept. Either way a warning says so (before: dropped
    # silently, even an improvement).
    X = np.random.RandomState(0).normal(size=(300, 2)) * [1.0, 0.2]
    # (standardized columns: with kernel marginals this ssm fit is one the
    # refinement does not improve on)
    params = dict(n_flows=1, max_iter=2, objective="ssm", likelihood_refinement=5,
                  early_stopping=early_stopping, n_iter_no_change=5,
                  marginal_transform=None, **TINY_FLOWS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clean = EBFlowDensity(**params).fit(X)
    assert clean.refined_flows_.tolist() == [True]
    interrupt_epoch(monkeypatch, 2 + 3, training._Diverged("a test's divergence"))
    with pytest.warns(ConvergenceWarning, match="refinement diverged after 2 epochs"):
        est = EBFlowDensity(**params).fit(X)
    assert est.refined_flows_.tolist() == [early_stopping]
    assert est.converged_ is False  # it warned: the fit did not run as asked
    assert np.isfinite(est.score_samples(X)).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        before = EBFlowDensity(**{**params, "likelihood_refinement": 0}).fit(X)
    if early_stopping:  # judged better on the held-out rows, and so on X
        assert est.score(X) > before.score(X)
    else:  # unjudged: exactly the fit before the refinement
        np.testing.assert_array_equal(est.score_samples(X), before.score_samples(X))


def _diverging(**params):
    return EBFlowDensity(objective="ml", learning_rate=1e3, n_flows=1, batch_size=16,
                         **TINY_FLOWS, **params)


def test_weights_with_no_finite_log_density_are_refused_and_the_model_kept(
    monkeypatch,
):
    X = np.random.RandomState(0).normal(size=(100, 2))
    est = _diverging(max_iter=3, early_stopping=False)
    est.set_params(learning_rate=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X)
    scores = est.score_samples(X)
    # A diverged fit restores the last weights with a finite log-density on the
    # training rows it checks; here the restored weights have none (the last
    # weights chosen, unchecked), and the estimator refuses them.
    def unchecked(model, prep, x, states):  # weights of no finite log-density
        # (the biases pushed out: the energy overflows, the determinants do not)
        return {name: value + 1e300 if name.endswith("bias") else value
                for name, value in states[-1].items()}

    monkeypatch.setattr(training, "_last_finite_state", unchecked)
    est.set_params(learning_rate=1e3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with pytest.raises(ValueError, match="log-density is not finite.*previous"):
            est.fit(X)
    np.testing.assert_array_equal(est.score_samples(X), scores)


def test_partial_fit_never_keeps_a_model_with_no_finite_log_density():
    X = np.random.RandomState(0).normal(size=(90, 2))
    first = _diverging()
    with pytest.raises(ValueError, match="first chunk given to partial_fit"):
        first.partial_fit(X[:30])
    assert not hasattr(first, "flow_")
    est = _diverging().set_params(learning_rate=1e-3).partial_fit(X[:30])
    scores = est.score_samples(X)
    est.set_params(learning_rate=1e3)
    with pytest.warns(ConvergenceWarning, match="discarded this chunk"):
        est.partial_fit(X[30:60])
    np.testing.assert_array_equal(est.score_samples(X), scores)


def test_an_epoch_without_a_finite_batch_is_not_counted(monkeypatch):
    X = np.random.RandomState(0).normal(size=(100, 2))
    real_batch_loss, calls = training._batch_loss, []

    def finite_in_the_first_epoch_only(*args, **kwargs):
        calls.append(None)  # 90 training rows: 6 batches of 16 per epoch
        return real_batch_loss(*args, **kwargs) if len(calls) <= 6 else None

    monkeypatch.setattr(training, "_batch_loss", finite_in_the_first_epoch_only)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = EBFlowDensity(objective="ml", n_flows=1, batch_size=16, max_iter=6,
                            **TINY_FLOWS).fit(X)
    assert est.n_iter_ == len(est.loss_curve_) == 1


def test_an_interrupted_first_fit_records_the_whitening_of_every_flow_kept(
    monkeypatch,
):
    X = np.random.RandomState(0).normal(size=(120, 2))
    interrupt_epoch(monkeypatch, on_call=5)  # the 2nd flow's second epoch
    est = EBFlowDensity(objective="ssm", n_flows=2, max_iter=3,
                        likelihood_refinement=0, early_stopping=False,
                        device="cpu", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X)
    assert est.n_flows_ == 2 and est.whiten_output_
    # one entry per flow kept; the interrupted flow was not whitened
    assert est.whitened_flows_.shape == est.refined_flows_.shape == (2,)
    assert not est.whitened_flows_[1]


def test_a_chunk_on_which_some_flows_of_a_mixture_diverge_is_discarded_for_all(
    monkeypatch,
):
    X = np.random.RandomState(0).normal(size=(300, 3))
    est = EBFlowDensity(max_iter=3, n_flows=4, batch_size=32, device="cpu",
                        random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X)
    scores, n_iter, losses = est.score_samples(X), est.n_iter_, list(est.loss_curve_)
    flow, whitened = est.flow_, est.whitened_flows_
    # the second flow's epoch collapses it; the others train as usual
    real, calls = density_module.train_epoch, []

    def second_collapses(trainer, *args, **kwargs):
        result = real(trainer, *args, **kwargs)
        calls.append(None)
        if len(calls) == 2:
            with torch.no_grad():
                trainer.ema.model.layers[0].log_scale.fill_(-4000.0)
        return result

    monkeypatch.setattr(density_module, "train_epoch", second_collapses)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est.partial_fit(X)
    messages = [str(w.message) for w in caught if w.category is ConvergenceWarning]
    # One warning, naming the flows that diverged: here one of them.
    assert len(messages) == 1
    assert "(flow 2 of 4)" in messages[0]
    assert "discarded this chunk for every flow" in messages[0]
    # Nothing assigned: the same float64 flows and fitted attributes.
    assert est.flow_ is flow and est.whitened_flows_ is whitened
    np.testing.assert_array_equal(est.score_samples(X), scores)
    assert est.n_iter_ == n_iter and est.loss_curve_ == losses


def test_a_detectors_discarded_chunk_leaves_its_threshold_and_normalizer():
    X = np.random.RandomState(0).normal(size=(300, 3))
    detector = EBFlowOutlierDetector(max_iter=3, n_flows=4, batch_size=32,
                                     device="cpu", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        detector.fit(X)
    offset, normalizer = detector.offset_, detector.log_normalizer_
    scores = detector.score_samples(X)
    detector.set_params(learning_rate=100.0, grad_clip=None)
    with pytest.warns(ConvergenceWarning, match="discarded this chunk"):
        detector.partial_fit(X[:50])
    assert detector.offset_ == offset and detector.log_normalizer_ == normalizer
    np.testing.assert_array_equal(detector.score_samples(X), scores)


def test_the_training_loss_is_watched_from_the_end_of_the_annealing(monkeypatch):
    # dsm's loss grows as its annealed noise shrinks: compared with the annealing
    # epochs' losses, no later epoch improved, and the fit always stopped at the
    # annealing's end plus the patience. Now the patience runs from the best
    # epoch after the annealing (tol=0: the stop is patience epochs after it).
    rng = np.random.RandomState(0)
    X = rng.normal(size=(400, 2)) @ np.array([[1.0, 0.5], [0.0, 1.0]])
    est = EBFlowDensity(objective="dsm", max_iter=20, n_iter_no_change=3, tol=0.0,
                        early_stopping=False, likelihood_refinement=0,
                        whiten_output=False, batch_size=50, n_flows=1,
                        n_layers=1, hidden_layer_sizes=(8,), device="cpu",
                        random_state=0)
    # The score watched: the objective on the training rows with the same noise
    # every epoch (the epoch's mean batch loss drew fresh noise).
    watched = []
    real = training.evaluate_objective

    def recorded(*args, **kwargs):
        watched.append(real(*args, **kwargs))
        return watched[-1]

    monkeypatch.setattr(training, "evaluate_objective", recorded)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X)
    assert len(watched) == est.n_iter_
    annealing_epochs = math.ceil(0.35 * 20)
    after = np.asarray(watched[annealing_epochs:])
    best_epoch = annealing_epochs + 1 + int(np.argmin(after[:-3]))
    assert est.converged_ and est.n_iter_ > annealing_epochs + 3
    assert est.n_iter_ == best_epoch + 3


def test_a_diverged_fit_without_held_out_rows_restores_finite_weights():
    # Without held-out rows, the weights at the end of an epoch with a finite loss
    # were restored unchecked, and could have no finite log-density: fit raised.
    X = np.random.RandomState(0).normal(size=(200, 2))
    est = EBFlowDensity(objective="ml", max_iter=2, early_stopping=False,
                        n_flows=1, n_layers=1, hidden_layer_sizes=(8,),
                        device="cpu", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X)
    scores = est.score_samples(X)
    # Continued: the first epoch's weights have a finite loss and no finite
    # log-density, so none of this fit's epochs is usable, and it raises with the
    # fitted model kept (a warm start that diverged at once used to return, its
    # record wiped; found by a review).
    est.set_params(learning_rate=1e4, max_iter=6, warm_start=True)
    with pytest.raises(ValueError, match="diverged.*previous model is kept"):
        est.fit(X)
    np.testing.assert_array_equal(est.score_samples(X), scores)
    # with a usable first epoch, those weights are kept
    est.set_params(learning_rate=30.0, max_iter=10)
    with pytest.warns(ConvergenceWarning, match="diverged"):
        est.fit(X)
    assert est.n_iter_ == 1
    assert np.isfinite(est.score_samples(X)).all()


def test_an_epoch_without_an_optimizer_step_keeps_torchs_scheduler_warning_inside(
    monkeypatch,
):
    # The refinement's first epoch here has no finite batch: the scheduler used to
    # step anyway, and torch warned "lr_scheduler.step() before optimizer.step()".
    # The dsm fit before it has collapsed (its samples were +-inf, its rows scored
    # -1e13), which fit refuses since 6 December; that check is off here, so that
    # the refinement runs.
    X = np.random.RandomState(0).normal(size=(200, 2))
    est = EBFlowDensity(objective="dsm", learning_rate=1e4, max_iter=3, n_flows=1,
                        n_layers=1, hidden_layer_sizes=(8,), device="cpu",
                        random_state=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="collapsed"):
            est.fit(X)
    monkeypatch.setattr(density_module, "non_invertible_rows", lambda *args: 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est.fit(X)
    assert not any("lr_scheduler" in str(w.message) for w in caught)


@pytest.mark.parametrize("architecture", ["coupling", "fc"])
def test_a_finite_row_whose_standardized_value_overflows_scores_minus_inf(
    architecture,
):
    """A row far enough out that its standardized value, or the flow's arithmetic
    on it, overflows has a density that underflows: -inf, as a row outside a logit
    box gets, never the NaN that inf - inf gives in the flow."""
    rng = np.random.RandomState(0)
    X = np.c_[1e-6 * rng.normal(size=200), rng.normal(size=200)]
    est = EBFlowDensity(architecture=architecture, random_state=0, **FAST).fit(X)
    far = np.array(
        [
            [0.0, -1.7e308],
            [1e305, 0.0],  # 1e311 standardized: inf in float64
            [-1e305, 0.0],
            [0.0, 1e39],  # far, but within the scoring flow's range: finite
            [0.0, 0.5],
        ]
    )
    scores = est.score_samples(far)
    assert not np.isnan(scores).any()
    np.testing.assert_array_equal(scores[:3], -np.inf)
    assert np.isfinite(scores[3:]).all() and scores[3] < scores[4]
    detector = EBFlowOutlierDetector(
        architecture=architecture, random_state=0, **FAST
    ).fit(X)
    np.testing.assert_array_equal(detector.decision_function(far[:3]), -np.inf)
    np.testing.assert_array_equal(detector.predict(far[:3]), -1)


def _interrupt_on_call(monkeypatch, n):
    """Make the ``n``-th held-out scoring in the training loop raise Ctrl-C."""
    real = training.evaluate_log_likelihood
    calls = {"n": 0}

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "evaluate_log_likelihood", interrupting)


def test_an_interrupt_while_the_refinement_scores_its_start_keeps_the_first_fit(
    monkeypatch,
):
    """The refinement first scores the weights it starts from; a Ctrl-C there
    keeps the score-matching fit (as an interrupt one epoch later does), instead
    of escaping and discarding the whole first fit."""
    X = np.random.RandomState(0).normal(size=(300, 2))
    params = {
        **FAST,
        "max_iter": 4,
        "objective": "ssm",
        "likelihood_refinement": 3,
        "whiten_output": False,
        "noise_annealing": 0.0,
    }
    reference = EBFlowDensity(random_state=0, **{**params, "likelihood_refinement": 0})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference.fit(X)
    calls = reference.n_iter_ + 1  # the main fit's epochs, then the start
    _interrupt_on_call(monkeypatch, calls)
    est = EBFlowDensity(random_state=0, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X)
    assert est.n_iter_ == reference.n_iter_
    np.testing.assert_array_equal(est.score_samples(X), reference.score_samples(X))


def test_one_bad_batch_in_a_one_batch_epoch_is_not_a_divergence(monkeypatch):
    """max_bad_batches tolerates that many bad batches in a row, whatever the
    number of batches per epoch: an epoch whose only batch was bad is not counted,
    and training goes on."""
    real = training._batch_loss
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        return None if calls["n"] == 3 else real(*args, **kwargs)

    monkeypatch.setattr(training, "_batch_loss", flaky)
    x = torch.randn(100, 2, generator=torch.Generator().manual_seed(0))
    x = x.double()
    result = training.train(
        fc(2, generator=torch.Generator().manual_seed(0)).double(),
        Preprocessing(),
        x,
        None,
        config=training.TrainingConfig(objective="ml", batch_size=100, max_iter=10),
        generator=torch.Generator().manual_seed(1),
    )
    assert not result.diverged
    assert result.n_iter == len(result.loss_curve) == 10
    assert result.n_skipped_batches == 1


# ------------------------------------------------ preparation: review fixes


def test_the_box_checks_accept_what_scoring_accepts_in_dequantized_columns():
    """A dequantized column scores 5.4 as the integer 5 (bin [5, 6)) and -0.4 as
    0: the box checks of a continuing fit and of conditional sampling round the
    same way instead of refusing them."""
    from skebflow._preparation import check_observed_within_box, check_within_fitted_box

    spec = {"kind": "logit", "lower": np.array([0.0, 0.0]),
            "upper": np.array([1.0, 6.0]), "dequantize_columns": np.array([False, True])}
    inside = np.array([[0.1, 5.4], [0.1, -0.4]])
    check_within_fitted_box(inside, spec)
    missing = np.array([[True, False], [True, False]])
    check_observed_within_box(np.c_[[np.nan, np.nan], inside[:, 1]], missing, spec)
    for value in (5.6, -0.6):  # the bins [6, 7) and [-1, 0) leave the box
        with pytest.raises(ValueError, match="outside the box"):
            check_within_fitted_box(np.array([[0.1, value]]), spec)
        with pytest.raises(ValueError, match="outside the box"):
            check_observed_within_box(
                np.array([[np.nan, value]]), np.array([[True, False]]), spec
            )


@pytest.mark.parametrize("n_rows, left", [(50, 0), (102, 1)])
def test_a_validation_fraction_that_leaves_no_training_row_says_to_lower_it(
    n_rows, left
):
    """Also one training row, which was trained on without a word."""
    X = np.random.RandomState(0).normal(size=(n_rows, 2))
    with pytest.warns(
        UserWarning, match=f"leave {left} to train on.*Lower validation_fraction"
    ):
        train_rows, validation_rows = split_for_early_stopping(
            X, 0.99, np.random.RandomState(0)
        )
    assert validation_rows is None and len(train_rows) == n_rows


def test_values_outside_the_bounds_are_named_with_their_feature():
    X = np.random.RandomState(0).uniform(0.0, 0.3, size=(50, 2)).astype(np.float32)
    X[0, 1] = 0.3  # float32(0.3) is 0.30000001192...
    with pytest.raises(ValueError, match=r"feature 1: values in \[.*0\.3000000119"):
        EBFlowDensity(preprocessing="logit", bounds=(0.0, 0.3), **FAST).fit(X)


def test_a_dequantized_column_outside_the_bounds_shows_its_own_range():
    """The message gave the bins' range (max + 1) as the values' range."""
    X = np.random.RandomState(0).randint(0, 6, size=(100, 2)).astype(float)
    with pytest.raises(
        ValueError, match=r"feature 0: values in \[0\.0, 5\.0\] \(bins up to 6\.0\)"
    ):
        EBFlowDensity(
            preprocessing="logit", dequantize=True, bounds=(0, 5), **FAST
        ).fit(X)


def test_weights_too_small_to_count_give_a_clear_error():
    rng = np.random.RandomState(0)
    X = np.c_[rng.normal(size=50), np.r_[np.zeros(49), 1.0]]
    weights = np.r_[np.ones(49), 5e-324]
    with pytest.raises(ValueError, match=r"Feature\(s\) \[1\].*weighted standard"):
        EBFlowDensity(**FAST).fit(X, sample_weight=weights)


# ---------------------------------------------- a review of the training loop


def test_a_fit_that_diverges_before_any_usable_epoch_raises_and_keeps_the_model():
    # Its flow would be the random initialization, reported as "the last good
    # weights were restored"; a refit installed it over the previous model.
    X = np.random.RandomState(0).normal(size=(300, 2))
    params = {**TINY_FLOWS, "n_flows": 1, "marginal_transform": None,
              "likelihood_refinement": 0, "whiten_output": False}
    est = EBFlowDensity(max_iter=5, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X)
    scores = est.score_samples(X)
    est.set_params(learning_rate=50.0, grad_clip=None)
    with pytest.raises(ValueError, match="before any epoch.*previous model is kept"):
        est.fit(X)
    np.testing.assert_array_equal(est.score_samples(X), scores)
    fresh = EBFlowDensity(learning_rate=50.0, grad_clip=None, max_iter=5, **params)
    with pytest.raises(ValueError, match="no trained model to keep"):
        fresh.fit(X)
    assert not hasattr(fresh, "flow_")


@pytest.mark.parametrize("objective", ["dsm", "sml", "ssm"])
def test_without_held_out_rows_the_patience_watches_a_score_free_of_noise(objective):
    # Weights that do not move must read as no improvement. The epoch's mean batch
    # loss drew fresh noise every epoch (dsm's |n|^2 / sigma^2 term varies more
    # than a whole fit improves it; sml's value measures nothing), so chance
    # "improvements" reset the patience.
    X = np.random.RandomState(0).normal(size=(200, 2))
    est = EBFlowDensity(objective=objective, learning_rate=1e-12, max_iter=60,
                        n_iter_no_change=10, early_stopping=False, n_flows=1,
                        noise_annealing=0, likelihood_refinement=0,
                        marginal_transform=None, **TINY_FLOWS)
    est.fit(X)
    assert est.converged_
    assert est.n_iter_ == 11


def test_sml_refuses_to_stop_on_its_loss():
    X = np.random.RandomState(0).normal(size=(200, 2))
    est = EBFlowDensity(objective="sml", early_stopping_metric="loss", max_iter=2,
                        **TINY_FLOWS)
    with pytest.raises(ValueError, match="no measure of fit"):
        est.fit(X)


# ------------------------------------------- a review of the preprocessing


def test_a_change_of_units_beyond_float_integers_only_shifts_the_density():
    # Beyond 2**53 every float64 is a whole number: a continuous column there was
    # taken for an integer one, dequantized and left without its kernel marginal,
    # and the density moved by 10.8 nats more than the change of units.
    rng = np.random.RandomState(0)
    X = np.exp(rng.normal(size=(300, 2)))
    params = {"max_iter": 3, "n_flows": 1, "device": "cpu", "random_state": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        base = EBFlowDensity(**params).fit(X)
        scaled = EBFlowDensity(**params).fit(X * 1e17)
    assert not scaled.dequantized_features_.any()
    np.testing.assert_allclose(
        scaled.score_samples(X * 1e17) + 2 * np.log(1e17), base.score_samples(X),
        atol=1e-6,
    )


def test_float32_input_of_large_continuous_values_is_not_an_integer_column():
    # float32 holds whole numbers only from 2**24 on: a column of areas about 5e7
    # was taken for counts, rounded before scoring.
    rng = np.random.RandomState(0)
    X = np.c_[5e7 + 1e6 * rng.normal(size=300), rng.normal(size=300)]
    params = {"max_iter": 3, "n_flows": 1, "device": "cpu", "random_state": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = EBFlowDensity(**params).fit(X.astype(np.float32))
    assert not est.dequantized_features_.any()
    near = est.score_samples([[5e7, 0.0], [5e7 + 0.4, 0.0]])
    assert near[0] != near[1]
    # counts stay counts, in float32 too
    counts = np.c_[rng.poisson(5, 300), rng.normal(size=300)].astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        assert EBFlowDensity(**params).fit(counts).dequantized_features_[0]



def test_a_float32_tensor_is_resolved_as_float32_not_float64():
    # A torch dtype is no NumPy dtype: the limit fell back to float64's 2**50, so
    # a float32 tensor's large continuous column was dequantized where the same
    # values as a float32 array are not, and the two fits scored differently.
    torch = pytest.importorskip("torch")
    rng = np.random.RandomState(0)
    X = np.c_[rng.normal(size=300), 3e7 + 1e5 * rng.normal(size=300)]
    X = X.astype(np.float32)
    params = {"max_iter": 3, "n_flows": 1, "device": "cpu", "random_state": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        array_fit = EBFlowDensity(**params).fit(X)
        tensor_fit = EBFlowDensity(**params).fit(torch.from_numpy(X))
    assert not tensor_fit.dequantized_features_.any()
    np.testing.assert_allclose(
        tensor_fit.score_samples(X), array_fit.score_samples(X), rtol=1e-6
    )
    # counts in an integer tensor are still counts
    counts = torch.from_numpy(np.c_[rng.poisson(5, 300), rng.poisson(9, 300)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        assert EBFlowDensity(**params).fit(counts).dequantized_features_.all()


# ------------------------------------- a review of sampling and scoring


def test_rows_near_the_float64_limit_score_minus_inf_not_nan():
    # The preprocessed rows were finite and the flow's arithmetic overflowed to
    # inf - inf: NaN, which made score() NaN for GridSearchCV.
    X = np.random.RandomState(0).normal(size=(300, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = EBFlowDensity(marginal_transform=None, max_iter=3, n_flows=1,
                            device="cpu", random_state=0).fit(X)
    far = np.array([[-1.7e308, 1.7e308], [1.7e308, 1.7e308]])
    assert (est.score_samples(far) == -np.inf).all()
    assert (est.energy(far) == np.inf).all()
    assert est.score(np.vstack([X, far])) == -np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        kernels = EBFlowDensity(max_iter=3, n_flows=1, device="cpu",
                                random_state=0).fit(X)
    rows = np.array([[1e150, 0.0], [1e200, 0.0], [0.5, 0.0]])
    log_density = kernels.score_samples(rows)
    gradient = kernels.log_density_gradient(rows)
    # a gradient is a number or NaN, never partly overflowed
    assert np.isfinite(gradient[2]).all()
    for row_gradient in gradient[:2]:
        assert np.isfinite(row_gradient).all() or np.isnan(row_gradient).all()
    assert not np.isnan(log_density).any()


def test_a_relation_between_continuous_and_dequantized_features_is_said():
    # total = price + fee with a whole-number fee: dequantizing fee leaves total -
    # price a whole number, so the rows lie on parallel planes; it was neither
    # modelled nor warned about (the docs said such relations could not exist).
    rng = np.random.RandomState(0)
    price = rng.gamma(3.0, 10.0, size=300)
    fee = rng.poisson(4, size=300).astype(float)
    X = np.c_[price, fee, price + fee]
    params = {"max_iter": 2, "n_flows": 1, "device": "cpu", "random_state": 0}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        EBFlowDensity(**params).fit(X)
    said = [w for w in caught if "parallel hyperplanes" in str(w.message)]
    assert len(said) == 1 and said[0].filename == __file__
    assert "[0, 2]" in str(said[0].message) and "[1]" in str(said[0].message)
    # a one-hot code sums to one among dequantized features alone: noise breaks it
    codes = np.eye(3)[rng.randint(0, 3, size=300)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        EBFlowDensity(**params).fit(np.c_[codes, price])
    assert not any("hyperplane" in str(w.message) for w in caught)


def test_an_int64_column_beyond_float64s_resolution_is_continuous():
    """Integer dtypes had no limit: int64 values of 2**55 were dequantized, but
    the fit casts them to float64, whose spacing there is 8, so the bins' noise
    rounded away."""
    rng = np.random.RandomState(0)
    X = np.c_[rng.poisson(5, 300), 2**55 + 1000 * rng.randint(0, 50, 300)]
    params = {"max_iter": 3, "n_flows": 1, "device": "cpu", "random_state": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = EBFlowDensity(**params).fit(X.astype(np.int64))
    assert est.dequantized_features_.tolist() == [True, False]


def test_a_dequantized_integer_column_far_from_zero_is_not_constant():
    """1e15 + k (five integers, below 2**50) varies by less than 1e-12 of its
    magnitude: dequantize=True took it for a constant column, one bin anchored
    at the first row's value, so four of the five training values scored 15 to
    18 nats low and samples held a value never seen; "auto" refused it as
    unresolvable."""
    rng = np.random.RandomState(0)
    k = rng.randint(0, 5, 300)
    X = np.c_[rng.normal(size=(300, 2)), 1e15 + k]
    params = {"max_iter": 10, "n_flows": 1, "device": "cpu", "random_state": 0}
    for dequantize in (True, "auto"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est = EBFlowDensity(dequantize=dequantize, **params).fit(X)
        assert est.dequantized_features_.tolist() == [False, False, True]
        assert "one_bin_columns" not in est._preprocessing_spec
        scores = est.score_samples(X)
        by_value = [scores[k == value].mean() for value in range(5)]
        assert max(by_value) - min(by_value) < 3.0


@pytest.mark.parametrize("dequantize", [True, "auto", False])
def test_whole_numbers_beyond_float64s_resolution_are_refused_saying_why(dequantize):
    """2**51 + k (k = 0..4) varies by whole units but by less than 1e-12 of its
    magnitude, and beyond 2**50 unit noise rounds away: it was refused as
    varying "too little for float64 to resolve", with dequantize=True as the
    remedy, which failed the same way (found by a review)."""
    rng = np.random.RandomState(0)
    estimator = EBFlowDensity(dequantize=dequantize, **FAST)
    with pytest.raises(ValueError, match=r"\[1\] of X hold whole numbers beyond 2\*\*50"):
        estimator.fit(np.c_[rng.normal(size=50), 2.0**51 + rng.randint(0, 5, 50)])
    # a continuous column far out (every float there is whole) keeps the
    # constant-column message
    with pytest.raises(ValueError, match=r"\[1\] of X are constant"):
        estimator.fit(np.c_[rng.normal(size=50), 1e20 + 1e7 * rng.uniform(size=50)])


# ------------------------------------------- flows that collapse with finite weights


def _collapsing_train(monkeypatch, module, name):
    """Replace ``module.name`` (a training call) by one that trains, then runs the
    trained flow's first log-scale away to -4 000: finite weights and a finite
    log-density (every row maps to one point), but an inverse that overflows."""
    real = getattr(module, name)

    def collapsing(trained, *args, **kwargs):
        result = real(trained, *args, **kwargs)
        flow = trained.flow if hasattr(trained, "flow") else trained
        for model in (flow, getattr(getattr(trained, "ema", None), "model", None)):
            if model is not None:
                with torch.no_grad():
                    model.layers[0].log_scale.fill_(-4000.0)
        return result

    monkeypatch.setattr(module, name, collapsing)


def test_a_fit_whose_flow_cannot_invert_its_rows_is_refused_and_the_model_kept(
    monkeypatch,
):
    # Found by a review: such a model scored every row at about -2.8e23 and
    # sample() returned NaN, with no word from fit or partial_fit.
    X = np.random.RandomState(0).normal(size=(200, 3))
    params = {**TINY_FLOWS, "n_flows": 1, "max_iter": 3, "likelihood_refinement": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = EBFlowDensity(**params).fit(X)
    scores = est.score_samples(X)
    _collapsing_train(monkeypatch, density_module, "train")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # 180 training rows, 20 held out
        with pytest.raises(ValueError, match="collapsed and cannot map 180 of 180"):
            est.fit(X)
    np.testing.assert_array_equal(est.score_samples(X), scores)
    assert np.isfinite(est.sample(20, random_state=0)).all()


def test_partial_fit_discards_a_chunk_after_which_its_flow_cannot_invert_it(
    monkeypatch,
):
    X = np.random.RandomState(0).normal(size=(300, 3))
    est = EBFlowDensity(**TINY_FLOWS).partial_fit(X[:150])
    scores = est.score_samples(X)
    _collapsing_train(monkeypatch, density_module, "train_epoch")
    # the collapse makes the chunk's log-likelihood fall: that says it first
    with pytest.warns(ConvergenceWarning, match="worse than it started.*discarded"):
        est.partial_fit(X[150:])
    # and without that check, the round trip does
    monkeypatch.setattr(density_module, "_WORSE_THAN_START_NATS_PER_FEATURE", np.inf)
    with pytest.warns(ConvergenceWarning, match="collapsed.*discarded this chunk"):
        est.partial_fit(X[150:])
    np.testing.assert_array_equal(est.score_samples(X), scores)
    assert np.isfinite(est.sample(20, random_state=0)).all()


def test_partial_fit_at_a_runaway_step_keeps_the_model_it_had():
    # The review's case itself: a chunk far from the first at a learning rate of
    # 1e4 without clipping. However the run away shows (a collapse, or a
    # log-density that is not finite), the chunk is discarded.
    X = np.random.RandomState(0).normal(size=(500, 3))
    est = EBFlowDensity(device="cpu", random_state=0).partial_fit(X)
    scores = est.score_samples(X)
    est.set_params(learning_rate=1e4, grad_clip=None)
    with pytest.warns(ConvergenceWarning, match="discarded this chunk"):
        est.partial_fit(100 * X + 300)
    np.testing.assert_array_equal(est.score_samples(X), scores)
    assert np.isfinite(est.sample(50, random_state=0)).all()


def test_sample_says_when_draws_are_not_finite():
    X = np.random.RandomState(0).normal(size=(200, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = EBFlowDensity(**TINY_FLOWS, n_flows=1, max_iter=2).fit(X)
    with torch.no_grad():  # past every check of fit
        est.flow_.layers[0].log_scale.fill_(-4000.0)
    with pytest.warns(UserWarning, match="20 of 20 samples are not finite"):
        samples = est.sample(20, random_state=0)
    assert not np.isfinite(samples).any()


def test_sample_warnings_name_the_users_call_through_the_detector_too():
    X = np.random.RandomState(0).normal(size=(200, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        density = EBFlowDensity(**TINY_FLOWS, n_flows=1, max_iter=2).fit(X)
        detector = EBFlowOutlierDetector(**TINY_FLOWS, n_flows=1, max_iter=2).fit(X)
    for est in (density, detector):
        with torch.no_grad():
            est.flow_.layers[0].log_scale.fill_(-4000.0)
        with pytest.warns(UserWarning, match="not finite") as caught:
            est.sample(5, random_state=0)
        assert {Path(w.filename).name for w in caught} == {Path(__file__).name}


# ------------------------------------------- fits that end worse than they started


def test_a_fit_that_ends_worse_than_it_started_says_so():
    # Found by a review: at learning_rate=0.3 the fit scored held-out standard
    # normal rows at -24 (the starting flow: -4.26) and warned only that max_iter
    # was reached, with the advice to raise it.
    X = np.random.default_rng(0).normal(size=(400, 3))
    est = EBFlowDensity(objective="ml", learning_rate=0.3, max_iter=10, n_flows=1,
                        device="cpu", random_state=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est.fit(X)
    messages = [str(w.message) for w in caught]
    assert any(
        "Training ended worse than it started: its mean log-likelihood of the"
        " held-out rows" in m for m in messages
    ), messages
    assert not any("raise max_iter" in m for m in messages)
    assert not est.converged_
    assert est.score(X) < -10


def test_score_matching_fits_that_improve_on_their_start_do_not_say_it():
    X = np.random.default_rng(0).normal(size=(300, 2)) * [1.0, 0.3]
    for objective in ("ssm", "dsm", "fdssm"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            EBFlowDensity(objective=objective, likelihood_refinement=0, n_flows=1,
                          max_iter=30, device="cpu", random_state=0).fit(X)
        assert not any("worse than it started" in str(w.message) for w in caught)


def test_partial_fit_refuses_an_epoch_that_leaves_its_chunk_worse():
    # The review's case: eight chunks at learning_rate=0.3 took standard normal
    # rows to -122.6 nats (truth -4.26) without a word.
    X = np.random.default_rng(0).normal(size=(400, 3))
    first = EBFlowDensity(learning_rate=0.3, n_flows=1, device="cpu", random_state=0)
    with pytest.raises(ValueError, match="worse than it started on this chunk.*first"):
        first.partial_fit(X[:100])
    assert not hasattr(first, "flow_")
    est = EBFlowDensity(n_flows=1, device="cpu", random_state=0).partial_fit(X[:100])
    scores = est.score_samples(X)
    est.set_params(learning_rate=0.3)
    with pytest.warns(ConvergenceWarning, match="worse than it started.*discarded"):
        est.partial_fit(X[100:200])
    np.testing.assert_array_equal(est.score_samples(X), scores)


def test_a_warm_start_that_ends_worse_says_what_it_replaced():
    X = np.random.default_rng(0).normal(size=(400, 3))
    est = EBFlowDensity(max_iter=5, n_flows=1, device="cpu", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X)
    est.set_params(warm_start=True, learning_rate=0.3, max_iter=10)
    with pytest.warns(ConvergenceWarning, match="worse than it started.*It replaces"
                      " the model the warm start continued"):
        est.fit(X)


def test_a_discarded_chunk_says_no_weights_were_kept_and_names_the_users_call():
    # A review: the batch divergence's message said the best epoch's weights were
    # kept, beside "the model is the one before the call"; and the warning named a
    # line inside skebflow's decorator.
    X = np.random.default_rng(0).normal(size=(2000, 3))
    est = EBFlowDensity(batch_size=16, n_flows=1, device="cpu", random_state=0)
    est.partial_fit(X[:64])
    est.set_params(learning_rate=1e5, grad_clip=None)
    with pytest.warns(ConvergenceWarning, match="discarded this chunk") as caught:
        est.partial_fit(X)
    messages = [str(w.message) for w in caught]
    assert not any("were kept" in m for m in messages), messages
    assert {Path(w.filename).name for w in caught} == {Path(__file__).name}
