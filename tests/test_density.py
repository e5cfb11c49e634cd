"""EBFlowDensity: the scikit-learn contract, persistence, reproducibility, bad input."""

from __future__ import annotations

import io
import pickle
import warnings

import joblib
import numpy as np
import pytest
import torch
from sklearn.datasets import make_moons
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skebflow import EBFlowDensity
from skebflow._auto_settings import resolve_objective

SMALL = {
    "n_flows": 1,
    "n_layers": 2,
    "hidden_layer_sizes": (16,),
    "max_iter": 15,
    "batch_size": 64,
    "device": "cpu",
}


def small(**params):
    return EBFlowDensity(**{**SMALL, "random_state": 0, **params})


@pytest.fixture(scope="module")
def moons():
    X, _ = make_moons(400, noise=0.1, random_state=0)
    return X


@pytest.fixture(scope="module")
def fitted(moons):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return small().fit(moons)


# ------------------------------------------------------------------- the API


def test_fitted_attributes(fitted, moons):
    assert fitted.n_features_in_ == 2
    assert fitted.objective_ == "ml"  # "auto" at 2 features
    assert 1 <= fitted.n_iter_ <= SMALL["max_iter"]
    assert len(fitted.loss_curve_) == fitted.n_iter_
    assert len(fitted.validation_scores_) == fitted.n_iter_
    assert fitted.best_validation_score_ == max(fitted.validation_scores_)
    assert isinstance(fitted.converged_, bool)
    assert fitted.device_ == "cpu"
    assert np.isfinite(fitted.log_normalizer_)
    scores = fitted.score_samples(moons)
    assert scores.dtype == np.float64 and scores.shape == (400,)
    assert isinstance(fitted.score(moons), float)
    assert fitted.score(moons) == pytest.approx(scores.mean())


def test_energy_and_log_normalizer_split(fitted, moons):
    scores = fitted.score_samples(moons)
    energy = fitted.energy(moons)
    # Two code paths (energy alone; the full log-likelihood) agree: log p = -E - log Z.
    np.testing.assert_allclose(
        scores, -energy - fitted.log_normalizer_, rtol=1e-10, atol=1e-10
    )
    # Only the right normalizer makes both integrals come out: exp(log p) has mass
    # one, and log of the mass of exp(-E) over the data space is log_normalizer_.
    low, high = moons.min(axis=0), moons.max(axis=0)
    pad = 0.6 * (high - low)
    mass = _grid_integral(fitted.score_samples, low - pad, high + pad)
    assert mass == pytest.approx(1.0, abs=0.02)
    energy_mass = _grid_integral(
        lambda grid: -fitted.energy(grid), low - pad, high + pad
    )
    assert np.log(energy_mass) == pytest.approx(fitted.log_normalizer_, abs=0.02)
    # And log_normalizer_ is the flow's constant part, -sum log|det W|, not any
    # constant moved between E and log Z: the whole flow's autograd Jacobian at a row
    # has log|det| = (input-dependent layers' log|det|) - log Z.
    row = fitted.preprocessing_(torch.from_numpy(moons[:1]))[0]
    with torch.no_grad():
        _, nonlinear_log_det = fitted.flow_(row)
    jacobian = torch.autograd.functional.jacobian(
        lambda r: fitted.flow_(r.unsqueeze(0))[0].squeeze(0), row[0]
    )
    full_log_det = torch.linalg.slogdet(jacobian)[1]
    assert fitted.log_normalizer_ == pytest.approx(
        float(nonlinear_log_det[0] - full_log_det), abs=1e-9
    )


def test_log_density_gradient_matches_finite_differences(fitted, moons):
    X = moons[:5]
    gradient = fitted.log_density_gradient(X)
    step = 1e-5
    numeric = np.empty_like(X)
    for j in range(X.shape[1]):
        shift = np.zeros_like(X)
        shift[:, j] = step
        numeric[:, j] = (
            fitted.score_samples(X + shift) - fitted.score_samples(X - shift)
        ) / (2 * step)
    np.testing.assert_allclose(gradient, numeric, rtol=1e-5, atol=1e-6)


def test_sample_signature_and_reproducibility(fitted):
    first = fitted.sample(50, random_state=3)
    assert first.shape == (50, 2) and first.dtype == np.float64
    np.testing.assert_array_equal(first, fitted.sample(50, random_state=3))
    assert not np.array_equal(first, fitted.sample(50, random_state=4))
    assert fitted.sample().shape == (1, 2)
    with pytest.raises(ValueError, match="n_samples"):
        fitted.sample(0)


def test_samples_follow_the_data(fitted, moons):
    samples = fitted.sample(2000, random_state=0)
    np.testing.assert_allclose(samples.mean(axis=0), moons.mean(axis=0), atol=0.15)
    np.testing.assert_allclose(samples.std(axis=0), moons.std(axis=0), rtol=0.2)
    # The moments above follow from the standardization alone. Samples of the
    # model p have E[log p(x)] = integral of p log p: compare the samples' mean
    # log-density with that integral on a grid (base draws that skip the inverse
    # of the flow miss it by about 15 standard errors).
    a, b = np.linspace(-4, 5, 451), np.linspace(-3.5, 4, 376)
    grid = np.stack(np.meshgrid(a, b, indexing="ij"), -1).reshape(-1, 2)
    log_density = fitted.score_samples(grid)
    cell = (a[1] - a[0]) * (b[1] - b[0])
    assert np.exp(log_density).sum() * cell == pytest.approx(1.0, abs=0.02)
    expected = (np.exp(log_density) * log_density).sum() * cell
    at_samples = fitted.score_samples(samples)
    error = at_samples.std() / np.sqrt(len(at_samples))
    assert abs(at_samples.mean() - expected) < 4 * error


def test_unfitted_methods_raise():
    est = small()
    for method in (est.score_samples, est.score, est.energy, est.log_density_gradient):
        with pytest.raises(NotFittedError):
            method(np.zeros((2, 2)))
    with pytest.raises(NotFittedError):
        est.sample(2)


# ------------------------------------------------------- model selection


def test_grid_search_picks_the_trained_setting_and_refits_it(moons):
    # learning_rate=1e-6 leaves the flow at its initialization: clearly worse (in
    # 5 epochs without noise annealing, which would smooth the first two, and
    # without output whitening, which would fit a Gaussian to the initial flow).
    search = GridSearchCV(
        small(max_iter=5, noise_annealing=0, whiten_output=False),
        {"objective": ["ssm", "fdssm"], "learning_rate": [1e-6, 1e-2]},
        cv=2,
        error_score="raise",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(moons)
    results = search.cv_results_
    means = results["mean_test_score"]
    assert np.all(np.isfinite(means))
    for objective in ("ssm", "fdssm"):
        by_rate = {
            params["learning_rate"]: mean
            for params, mean in zip(results["params"], means, strict=True)
            if params["objective"] == objective
        }
        assert by_rate[1e-2] > by_rate[1e-6] + 0.03, f"{objective}: {by_rate}"
    assert search.best_params_["learning_rate"] == 1e-2
    assert search.best_score_ == means.max() == means[search.best_index_]
    # The refit model is the best setting fitted on all rows.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        manual = small(
            max_iter=5, noise_annealing=0, whiten_output=False, **search.best_params_
        ).fit(moons)
    np.testing.assert_array_equal(
        search.best_estimator_.score_samples(moons), manual.score_samples(moons)
    )
    assert search.score(moons) == manual.score(moons)


def test_grid_search_with_two_processes_and_memmapped_input():
    X, _ = make_moons(20000, noise=0.1, random_state=0)  # > 1 MB: joblib memmaps it
    search = GridSearchCV(
        small(max_iter=1, batch_size=1024),
        {"objective": ["dsm", "fdssm"]},
        cv=2,
        n_jobs=2,
        error_score="raise",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(X)
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))


@pytest.fixture(scope="module")
def correlated_gaussian():
    """Training and held-out rows of N(0, [[1, .9], [.9, 1]]), and the true mean
    log-density of the held-out rows."""
    cov = np.array([[1.0, 0.9], [0.9, 1.0]])
    rng = np.random.RandomState(0)
    train = rng.multivariate_normal([0.0, 0.0], cov, size=1000)
    held_out = rng.multivariate_normal([0.0, 0.0], cov, size=2000)
    _, log_det = np.linalg.slogdet(cov)
    quadratic = np.einsum("ij,jk,ik->i", held_out, np.linalg.inv(cov), held_out)
    truth = np.mean(-0.5 * quadratic - 0.5 * log_det - np.log(2 * np.pi))
    return train, held_out, truth


@pytest.mark.parametrize("objective", ["ssm", "dsm", "fdssm"])
def test_score_matching_improves_held_out_likelihood(objective, correlated_gaussian):
    train, held_out, truth = correlated_gaussian
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # The same random_state starts from the same flow; a learning rate of 1e-12
        # leaves it there.
        initial = small(max_iter=1, learning_rate=1e-12).fit(train).score(held_out)
        # Score matching alone: no maximum-likelihood refinement after it.
        fitted = (
            small(objective=objective, max_iter=12, likelihood_refinement=0)
            .fit(train)
            .score(held_out)
        )
    # The initial flow is about a standardized independent Gaussian, -0.83 nats
    # from the truth at this correlation.
    assert truth - initial > 0.5
    recovered = (fitted - initial) / (truth - initial)
    assert recovered > 0.7, (
        f"{objective}: held-out log-likelihood {fitted:.3f}, initial {initial:.3f},"
        f" truth {truth:.3f}"
    )
    # A normalized density cannot beat the truth beyond the sampling error.
    assert fitted < truth + 0.05


def test_cross_val_score_and_pipeline(moons):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = cross_val_score(small(max_iter=5), moons, cv=3)
        pipe = make_pipeline(StandardScaler(), small(max_iter=5)).fit(moons)
    assert scores.shape == (3,) and np.all(np.isfinite(scores))
    assert pipe.score_samples(moons).shape == (400,)
    assert isinstance(pipe.score(moons), float)


def test_pandas_input_sets_feature_names(moons):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(moons, columns=["a", "b"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = small(max_iter=2).fit(frame)
    assert list(est.feature_names_in_) == ["a", "b"]
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        from_array = est.score_samples(moons)
    np.testing.assert_array_equal(est.score_samples(frame), from_array)


# ------------------------------------------------------------ persistence


def test_pickle_and_joblib_round_trips(fitted, moons, tmp_path):
    expected = fitted.score_samples(moons)
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(restored.score_samples(moons), expected)
    np.testing.assert_array_equal(
        restored.sample(5, random_state=1), fitted.sample(5, random_state=1)
    )
    path = tmp_path / "model.joblib"
    joblib.dump(fitted, path)
    for mmap_mode in (None, "r"):
        loaded = joblib.load(path, mmap_mode=mmap_mode)
        np.testing.assert_array_equal(loaded.score_samples(moons), expected)


@pytest.mark.parametrize("activation", ["tanh", "silu"])
def test_pickle_rebuilds_the_fitted_activation(activation, moons):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = small(max_iter=2, activation=activation).fit(moons)
    expected = est.score_samples(moons)
    np.testing.assert_array_equal(
        pickle.loads(pickle.dumps(est)).score_samples(moons), expected
    )
    if activation == "silu":
        # A model pickled before the activation was recorded had SiLU conditioners.
        state = est.__getstate__()
        state["_flow_spec"] = {
            k: v for k, v in state["_flow_spec"].items() if k != "activation"
        }
        old = EBFlowDensity.__new__(EBFlowDensity)
        old.__setstate__(state)
        np.testing.assert_array_equal(old.score_samples(moons), expected)


def test_pickle_holds_no_torch_objects(fitted):
    class NoTorch(pickle.Unpickler):
        def find_class(self, module, name):
            assert not module.startswith("torch"), f"pickle refers to {module}.{name}"
            return super().find_class(module, name)

    NoTorch(io.BytesIO(pickle.dumps(fitted))).load()


# -------------------------------------------------------- reproducibility


def test_same_random_state_refits_bit_for_bit(moons):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        first = small(max_iter=3).fit(moons).score_samples(moons)
        second = small(max_iter=3).fit(moons).score_samples(moons)
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize(
    "params",
    [
        {},  # the logistic-mixture couplings
        {"coupling_transform": "affine"},
        {"architecture": "fc"},
        {"architecture": "conv", "image_shape": (1, 4, 4)},
        {"base_distribution": "student_t_learned", "objective": "fdssm", "fd_epsilon": 1e-3},
    ],
    ids=["mixture", "affine", "fc", "conv", "learned-df-float64"],
)
def test_torch_default_dtype_does_not_change_the_model(params):
    """The starting weights were drawn in torch's default dtype: under
    torch.set_default_dtype(torch.float64) the same random_state gave another
    model (scores 0.1 nats apart after two epochs)."""
    X = np.random.default_rng(0).normal(size=(120, 16 if "image_shape" in params else 3))

    def scores():
        kwargs = {"max_iter": 2, "hidden_layer_sizes": (8,), "device": "cpu"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fitted = EBFlowDensity(**kwargs, **params, random_state=0).fit(X)
            partial = EBFlowDensity(**kwargs, **params, random_state=0).partial_fit(X)
        return fitted.score_samples(X[:5]), partial.score_samples(X[:5])

    before = scores()
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        after = scores()
    finally:
        torch.set_default_dtype(default)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])


def test_fit_leaves_torch_global_rng_untouched(moons):
    before = torch.get_rng_state()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = small(max_iter=2, objective="sml").fit(moons)
    est.sample(10)
    assert torch.equal(before, torch.get_rng_state())


# -------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("X", "match"),
    [
        (np.array([[0.0, 1.0], [np.nan, 2.0], [1.0, 0.0]]), "NaN"),
        (np.array([[0.0, 1.0], [np.inf, 2.0], [1.0, 0.0]]), "infinity"),
        (np.empty((0, 2)), "0 sample"),
        (np.arange(10.0), "Expected 2D array"),
        (np.array([["a", "b"], ["c", "d"]], dtype=object), "could not convert"),
        (
            np.c_[np.arange(10.0), np.ones(10)],
            r"Feature\(s\) \[1\].*constant.*VarianceThreshold",
        ),
        (np.c_[np.arange(10.0), np.arange(10.0) * 1e200], "9e\\+200.*Rescale"),
        (np.ones((1, 2)), "1 sample"),
    ],
    ids=["nan", "inf", "empty", "1d", "object", "constant", "huge", "one-row"],
)
def test_bad_input_at_fit(X, match):
    original = X.copy()
    with pytest.raises(ValueError, match=match):
        small().fit(X)
    np.testing.assert_array_equal(X, original)


def test_coupling_needs_two_features():
    with pytest.raises(ValueError, match="architecture='fc'"):
        small(architecture="coupling").fit(np.arange(20.0).reshape(-1, 1))


def test_one_feature_works_with_fc():
    X = np.random.RandomState(0).normal(size=(200, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = small(architecture="fc").fit(X)
    assert np.all(np.isfinite(est.score_samples(X)))
    # A normalized 1-D density: it integrates to one on a wide grid (wide: the
    # kernel marginal's wide normal carries the fc flow's heavier tails out to
    # about 1 % of the mass beyond 12 standard deviations)
    grid = np.linspace(-50.0, 50.0, 40001).reshape(-1, 1)
    mass = np.trapezoid(np.exp(est.score_samples(grid)), grid[:, 0])
    assert mass == pytest.approx(1.0, abs=1e-3)


def test_bad_input_at_score_time(fitted):
    with pytest.raises(
        ValueError, match="X has 3 features, but EBFlowDensity is expecting 2"
    ):
        fitted.score_samples(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="NaN"):
        fitted.score_samples(np.array([[np.nan, 0.0]]))


def test_auto_objective_follows_the_dimension():
    assert resolve_objective("auto", 512) == "ml"
    assert resolve_objective("auto", 513) == "ssm"
    assert resolve_objective("dsm", 2) == "dsm"


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="objective"):
        small(objective="likelihood").fit(np.random.RandomState(0).normal(size=(20, 2)))
    with pytest.raises(ValueError, match="device='tpu'"):
        small(device="tpu").fit(np.random.RandomState(0).normal(size=(20, 2)))


def test_callers_array_is_not_modified(moons):
    X = moons.copy()
    X.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = small(max_iter=2, dequantize=True).fit(X)
    est.score_samples(X)
    est.log_density_gradient(X)
    np.testing.assert_array_equal(X, moons)


def test_cuda_unavailable_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="CUDA is not available"):
        small(device="cuda").fit(np.random.RandomState(0).normal(size=(20, 2)))


# ------------------------------------------------- densities in data units


def _grid_integral(log_density, lows, highs, n=300):
    """Trapezoid rule for the integral of ``exp(log_density)`` over a 2-D box."""
    xs = np.linspace(lows[0], highs[0], n)
    ys = np.linspace(lows[1], highs[1], n)
    grid = np.stack(np.meshgrid(xs, ys, indexing="ij"), axis=-1).reshape(-1, 2)
    density = np.exp(log_density(grid)).reshape(n, n)
    return np.trapezoid(np.trapezoid(density, ys, axis=1), xs)


@pytest.mark.parametrize("objective", ["ssm", "dsm", "fdssm", "ml", "sml"])
def test_density_in_large_units_integrates_to_one(moons, objective):
    X = moons * 100.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = small(objective=objective, max_iter=10, learning_rate=3e-3).fit(X)
    low, high = X.min(axis=0), X.max(axis=0)
    pad = 0.6 * (high - low)
    mass = _grid_integral(est.score_samples, low - pad, high + pad)
    assert mass == pytest.approx(1.0, abs=0.02), f"{objective}: mass {mass:.4f}"


@pytest.mark.parametrize("preprocessing", ["logit", None])
def test_other_preprocessing_integrates_to_one(moons, preprocessing):
    X = moons * 100.0 if preprocessing == "logit" else moons
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = small(preprocessing=preprocessing, max_iter=10).fit(X)
    low, high = X.min(axis=0), X.max(axis=0)
    pad = (0.06 if preprocessing == "logit" else 0.6) * (high - low)
    mass = _grid_integral(est.score_samples, low - pad, high + pad, n=400)
    assert mass == pytest.approx(1.0, abs=0.02), f"{preprocessing}: mass {mass:.4f}"


def test_logit_bounds_are_respected(moons):
    bounds = (moons.min() - 1.0, moons.max() + 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = small(preprocessing="logit", bounds=bounds, max_iter=2).fit(moons)
    outside = np.array([[bounds[1] + 0.5, 0.0]])
    assert est.score_samples(outside)[0] == -np.inf
    with pytest.raises(ValueError, match="outside bounds"):
        small(preprocessing="logit", bounds=(0.0, 0.5)).fit(moons)


def test_dequantized_integer_data():
    rng = np.random.RandomState(0)
    X = np.c_[rng.poisson(3.0, size=500), rng.normal(size=500)].astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = small(dequantize=True).fit(X)
    samples = est.sample(200, random_state=0)
    np.testing.assert_array_equal(samples[:, 0], np.floor(samples[:, 0]))
    assert np.all(np.isfinite(est.score_samples(X)))


def test_auto_dequantizes_the_integer_columns_only():
    rng = np.random.RandomState(0)
    X = np.c_[rng.poisson(3.0, size=300), rng.normal(size=300), rng.randint(0, 2, 300)]
    X = X.astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        auto = small(max_iter=2).fit(X)
        off = small(max_iter=2, dequantize=False).fit(X)
        logit = small(max_iter=2, preprocessing="logit").fit(X)
    assert auto.dequantize == "auto"
    assert auto.dequantized_features_.tolist() == [True, False, True]
    assert not off.dequantized_features_.any()
    assert not logit.dequantized_features_.any()  # the box is in the data's units
    # Integer columns are sampled as integers, the others are not.
    samples = auto.sample(50, random_state=0)
    np.testing.assert_array_equal(samples[:, [0, 2]], np.floor(samples[:, [0, 2]]))
    assert np.any(samples[:, 1] != np.floor(samples[:, 1]))


def test_auto_leaves_non_integer_data_as_it_was(moons):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        auto = small(max_iter=3).fit(moons)
        off = small(max_iter=3, dequantize=False).fit(moons)
    assert not auto.dequantized_features_.any()
    np.testing.assert_array_equal(auto.score_samples(moons), off.score_samples(moons))


def test_auto_refuses_a_constant_integer_column_as_before():
    # Only dequantize=True makes a constant integer column one unit bin (a pixel
    # that is always blank); "auto" leaves constant columns to constant_features.
    X = np.c_[np.random.RandomState(0).normal(size=50), np.zeros(50)]
    with pytest.raises(ValueError, match=r"Feature\(s\) \[1\].*constant"):
        small().fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = small(max_iter=2, dequantize=True).fit(X)
    assert est.dequantized_features_.tolist() == [False, True]  # one unit bin
    assert np.isfinite(est.score_samples(X)).all()


def test_dequantized_counts_get_probabilities_that_sum_to_one():
    # Two dependent count columns: score_samples at an integer row is then the
    # log-probability of that pair of counts, so exp over the whole grid sums to 1
    # (up to the density's variation within a unit cell) and matches the
    # frequencies.
    rng = np.random.RandomState(0)
    first = rng.poisson(4.0, size=3000)
    X = np.c_[first, rng.binomial(first + 2, 0.5)].astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = small(
            max_iter=40, batch_size=256, hidden_layer_sizes=(32,), n_layers=3
        ).fit(X)
    grid = np.array([(a, b) for a in range(0, 25) for b in range(0, 30)], dtype=float)
    probability = np.exp(est.score_samples(grid))
    assert 0.95 < probability.sum() < 1.05
    # The empirical frequencies of the most common pairs agree with the model's.
    pairs, counts = np.unique(X, axis=0, return_counts=True)
    common = counts >= 100
    model = np.exp(est.score_samples(pairs[common]))
    np.testing.assert_allclose(model, counts[common] / X.shape[0], rtol=0.35)


# ----------------------------------------------------- training behaviour


def test_divergence_ends_with_finite_weights_and_a_warning(moons):
    est = small(objective="ssm", max_iter=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(moons)
    scores = est.score_samples(moons)
    # Continued: no epoch of this fit is usable, so it raises, as a fresh fit that
    # diverges before any usable epoch does, and the fitted model stays.
    est.set_params(learning_rate=1e6, grad_clip=None, max_iter=5, warm_start=True)
    with pytest.raises(ValueError, match="Training diverged.*previous model is kept"):
        est.fit(moons)
    for parameter in est.flow_.parameters():
        assert torch.isfinite(parameter).all()
    np.testing.assert_array_equal(est.score_samples(moons), scores)


def test_non_finite_training_is_restored_not_propagated(moons, monkeypatch):
    import skebflow._training as training

    calls = {"n": 0}
    real = training.bind_objective

    def sometimes_nan(name, **settings):
        loss = real(name, **settings)

        def wrapped(flow, x, *, generator):
            calls["n"] += 1
            value = loss(flow, x, generator=generator)
            return value * float("nan") if calls["n"] > 3 else value

        return wrapped

    monkeypatch.setattr(training, "bind_objective", sometimes_nan)
    with pytest.warns(ConvergenceWarning, match="diverged"):
        est = small(max_iter=50).fit(moons)
    assert np.all(np.isfinite(est.score_samples(moons)))


def test_early_stopping_restores_best_weights(moons):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = small(max_iter=60, n_iter_no_change=3, tol=1e-2).fit(moons)
    assert est.converged_ and est.n_iter_ < 60
    # the restored weights are the best epoch's: scoring the validation rows again
    # reproduces the best validation score
    rng = np.random.RandomState(0)
    rng.randint(np.iinfo(np.int32).max)
    order = rng.permutation(len(moons))
    validation = moons[order[: int(np.ceil(0.1 * len(moons)))]]
    assert est.score(validation) == pytest.approx(est.best_validation_score_, abs=1e-4)


def test_without_early_stopping_there_is_no_validation_history(moons):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = small(early_stopping=False, max_iter=3).fit(moons)
    assert est.validation_scores_ is None and est.best_validation_score_ is None
    assert len(est.loss_curve_) == 3


def test_warm_start_continues(moons):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = small(max_iter=3, warm_start=True).fit(moons)
        before = {k: v.clone() for k, v in est.flow_.state_dict().items()}
        log_normalizer = est.log_normalizer_
        est.fit(moons)
    assert est.log_normalizer_ != log_normalizer
    changed = any(
        not torch.equal(before[k], v) for k, v in est.flow_.state_dict().items()
    )
    assert changed
    with pytest.raises(ValueError, match="expecting 2 features"):
        est.fit(np.zeros((10, 3)))


def test_keyboard_interrupt_keeps_partial_model(moons, monkeypatch):
    import skebflow._training as training

    real = training.evaluate_log_likelihood
    calls = {"n": 0}

    def interrupt_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "evaluate_log_likelihood", interrupt_on_third)
    with pytest.warns(UserWarning, match="interrupted"):
        est = small(max_iter=10).fit(moons)
    # the third epoch's updates ran, but its validation was interrupted: the
    # weights are the best of the first two epochs, and the counts and curves
    # cover those two
    assert est.n_iter_ == 2 == len(est.validation_scores_) == len(est.loss_curve_)
    assert est.best_validation_score_ == max(est.validation_scores_)
    assert np.all(np.isfinite(est.score_samples(moons)))


def test_verbose_shows_progress(moons, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        small(max_iter=2, verbose=1).fit(moons)
    err = capsys.readouterr().err
    assert "ml fit" in err and "val_loglik" in err
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        small(max_iter=2, verbose=0).fit(moons)
    assert capsys.readouterr().err == ""


def test_convergence_warning_at_max_iter(moons):
    with pytest.warns(ConvergenceWarning, match="Maximum iterations"):
        small(max_iter=1).fit(moons)


def test_flows_stopped_at_max_iter_give_one_warning_naming_them(moons):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small(max_iter=1, n_flows=3, early_stopping=False).fit(moons)
    messages = [str(w.message) for w in caught if w.category is ConvergenceWarning]
    assert messages == [
        "Maximum iterations (1) reached (flows 1, 2, 3 of 3). The flows have not"
        " converged yet: raise max_iter, or warm_start=True to continue."
    ]


# ------------------------------------------------------------------ GPU


def _fit_on(device, X):
    # One full batch and the deterministic ml objective: the batch order comes from a
    # generator on the device, so with smaller batches a CUDA fit would see other
    # batches than a CPU fit. Here the two differ by float32 rounding only.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return small(device=device, objective="ml", max_iter=5, batch_size=512).fit(X)


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=pytest.mark.gpu)])
def test_fit_on_device_matches_a_cpu_fit_and_pickles(device, moons):
    """A fit on the GPU against the same fit on the CPU (skipped without CUDA: a
    CPU fit compared with itself would prove nothing)."""
    reference = _fit_on("cpu", moons)
    fitted = _fit_on(device, moons)
    assert fitted.device_.startswith(device)
    assert fitted.n_iter_ == reference.n_iter_
    scores = fitted.score_samples(moons)
    assert scores.dtype == np.float64
    expected = reference.score_samples(moons)
    assert np.ptp(expected) > 1.0  # a fitted density, not a flat one
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-3)
    assert fitted.log_normalizer_ == pytest.approx(reference.log_normalizer_, abs=1e-3)
    np.testing.assert_allclose(
        fitted.energy(moons), reference.energy(moons), rtol=1e-4, atol=1e-3
    )
    state = fitted.__getstate__()
    assert all(isinstance(v, np.ndarray) for v in state["flow_"].values())
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_allclose(restored.score_samples(moons), scores, rtol=1e-10)


def test_architecture_is_resolved_into_a_fitted_attribute(tmp_path):
    from sklearn.utils.validation import check_is_fitted

    from skebflow import load, save

    est = EBFlowDensity(n_flows=1, max_iter=1, early_stopping=False, random_state=0)
    assert not hasattr(est, "architecture_")
    rng = np.random.RandomState(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        assert est.fit(rng.normal(size=(60, 1))).architecture_ == "fc"
        assert est.fit(rng.normal(size=(60, 3))).architecture_ == "coupling"
    check_is_fitted(est)
    save(est, tmp_path / "model.safetensors")
    assert load(tmp_path / "model.safetensors").architecture_ == "coupling"
    assert pickle.loads(pickle.dumps(est)).architecture_ == "coupling"
    explicit = EBFlowDensity(architecture="fc", n_flows=1, max_iter=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        assert explicit.fit(rng.normal(size=(60, 3))).architecture_ == "fc"


@pytest.mark.parametrize("preprocessing", ["standardize", "logit"])
def test_a_constant_integer_column_has_probability_one_under_dequantize_true(
    preprocessing,
):
    """dequantize=True models an always-blank column as uniform on its unit bin
    (up to a millionth of the mass in tails), so its value has probability 1:
    integrated over the continuous column, the model's probability of the blank
    value is 1 (it was about 1.38 per blank column when the flow had to learn the
    bin's uniform noise itself); another value is finite but about 15 nats less
    likely, so held-out rows still score; samples keep the blank value."""
    rng = np.random.RandomState(0)
    X = np.c_[rng.normal(size=1000), np.zeros((1000, 2))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = EBFlowDensity(
            n_layers=2, hidden_layer_sizes=(16,), max_iter=25, n_flows=1,
            device="cpu", random_state=0, dequantize=True,
            preprocessing=preprocessing,
        ).fit(X)
    assert est.dequantized_features_.tolist() == [False, True, True]
    grid = np.linspace(-8.0, 8.0, 1601)
    density = np.exp(est.score_samples(np.c_[grid, np.zeros((grid.size, 2))]))
    assert abs(np.trapezoid(density, grid) - 1.0) < 0.05
    scores = est.score_samples(
        np.array([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]])
    )
    assert np.all(np.isfinite(scores)) and np.all(scores[1:] < scores[0] - 14.0)
    assert np.all(est.sample(200, random_state=0)[:, 1:] == 0.0)


def test_a_model_fitted_before_the_probit_of_constant_integers_rebuilds_as_fitted():
    """Preprocessing specs saved before the probit step have no one-bin entries:
    they rebuild without it (a standardization of the bin's uniform noise)."""
    from skebflow._building import build_preprocessing

    spec = {"kind": "standardize", "dequantize_columns": np.array([False, True]),
            "mean": np.array([0.0, 0.5]), "scale": np.array([1.0, (1 / 12) ** 0.5]),
            "constant_columns": None}
    steps = [type(step).__name__ for step in build_preprocessing(spec).steps]
    assert steps == ["UniformDequantize", "Standardize"]
    spec = {**spec, "one_bin_columns": np.array([False, True]),
            "one_bin_lower": np.array([0.0, 0.0])}
    steps = [type(step).__name__ for step in build_preprocessing(spec).steps]
    assert steps == ["UniformDequantize", "BinProbit", "Standardize"]


def test_logit_samples_follow_the_density_instead_of_piling_on_the_edges():
    """The shrunk logit's image is bounded: the flow's draws beyond it (0.5 % with
    a Student-t base) are no part of the density score_samples gives, and they
    were returned on the box's edges, as point masses. They are drawn again: no
    sample on an edge, and the samples follow the density (renormalized to its
    mass inside the image) by a Kolmogorov-Smirnov test."""
    from scipy.stats import kstest

    X = np.random.RandomState(0).beta(0.5, 0.5, size=(600, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = EBFlowDensity(preprocessing="logit", bounds=(0.0, 1.0),
                            base_distribution="student_t", n_layers=2,
                            hidden_layer_sizes=(16,), max_iter=30, device="cpu",
                            random_state=0).fit(X)
    samples = est.sample(50_000, random_state=1)[:, 0]
    assert not np.any((samples == 0.0) | (samples == np.nextafter(1.0, 0.0)))
    # the density's CDF by quadrature in the logit variable
    t = np.linspace(-40.0, 40.0, 400_001)
    x = 1.0 / (1.0 + np.exp(-t))
    inside = (x > 0.0) & (x < 1.0)
    x, t = x[inside], t[inside]
    density = np.exp(est.score_samples(x[:, None])) * x * (1.0 - x)
    cdf = np.r_[0.0, np.cumsum((density[1:] + density[:-1]) / 2.0 * np.diff(t))]
    assert 0.98 < cdf[-1] < 1.0  # the mass inside the image
    assert kstest(samples, lambda v: np.interp(v, x, cdf / cdf[-1])).pvalue > 0.01


def test_a_constant_integer_column_is_one_bin_only_under_the_normal_base():
    """The one-bin probit gives the flow exactly a standard normal, which a
    Student-t base does not model: the bin's density peaked at its centre, its
    score summed to 1.10 over the other column, and samples left the constant. A
    non-normal base refuses the column, as constant_features="error" says."""
    rng = np.random.RandomState(0)
    X = np.c_[rng.normal(1.0, 2.0, 300), np.full(300, 3.0)]
    params = dict(dequantize=True, n_flows=1, n_layers=2, hidden_layer_sizes=(16,),
                  max_iter=5, device="cpu", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        EBFlowDensity(**params).fit(X)  # the normal base: one bin
        for base in ("student_t", "student_t_learned"):
            with pytest.raises(ValueError, match=r"Feature\(s\) \[1\] of X are constant"):
                EBFlowDensity(base_distribution=base, **params).fit(X)


def test_a_model_with_its_mass_beyond_the_logit_says_so_when_sampled(monkeypatch):
    """A short or diverged fit can put much of its mass beyond the logit's image:
    after a few rounds of draws the rest lie on the box's edges, with a warning,
    rather than an endless redraw or an error."""
    from skebflow.flows import Preprocessing

    X = np.random.RandomState(0).uniform(size=(200, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = EBFlowDensity(preprocessing="logit", bounds=(0.0, 1.0), n_flows=1,
                            max_iter=2, device="cpu", random_state=0).fit(X)
    monkeypatch.setattr(Preprocessing, "in_image",
                        lambda self, y: (y[:, 0] > 0.0))  # half the draws refused
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert est.sample(4, random_state=0).shape == (4, 2)  # redrawn: no warning
    # Most draws refused, as by a score-matching fit of images (82 % there): ten
    # rounds of redraws left one sample in seven on the box's edges; a budget of
    # draws, spent on the few left, leaves none.
    monkeypatch.setattr(Preprocessing, "in_image", lambda self, y: (y[:, 0] > 1.0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est.sample(500, random_state=0)
    assert not [w for w in caught if "lie on the box's edges" in str(w.message)]
    assert any("draws fell beyond" in str(w.message) for w in caught)
    monkeypatch.setattr(Preprocessing, "in_image",
                        lambda self, y: torch.zeros(len(y), dtype=torch.bool))
    with pytest.warns(UserWarning, match="4 of 4 samples fell beyond"):
        samples = est.sample(4, random_state=0)
    assert samples.shape == (4, 2) and np.isfinite(samples).all()
    # Enough draws to measure the mass beyond the image: above 1 % of them, the
    # sample says how far score_samples is from normalized (an "fc" flow after 20
    # epochs put 3 % there and integrated to 0.97 over the box, without a word).
    monkeypatch.setattr(Preprocessing, "in_image", lambda self, y: (y[:, 0] > -2.0))
    expected = r"draws fell beyond.*integrates to about 0\.9"
    with pytest.warns(UserWarning, match=expected) as caught:
        est.sample(2000, random_state=0)
    assert len(caught) == 1
    monkeypatch.setattr(Preprocessing, "in_image", lambda self, y: (y[:, 0] > -4.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est.sample(2000, random_state=0)  # a few in 10 000: silent
    # Several chunks of 4 096 draws: one warning, with one estimate over them all
    # (each chunk warned with its own).
    monkeypatch.setattr(Preprocessing, "in_image", lambda self, y: (y[:, 0] > -2.0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est.sample(10_000, random_state=0)
    assert len([w for w in caught if "draws fell beyond" in str(w.message)]) == 1
