"""EBFlowDensity(architecture="conv"): image rows through the scikit-learn contract."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV

import skebflow
from skebflow import EBFlowDensity
from skebflow.flows import Conv2d, Squeeze

CONV = {
    "architecture": "conv",
    "image_shape": (1, 8, 8),
    "n_flows": 1,
    "max_iter": 3,
    "batch_size": 64,
    "device": "cpu",
    "random_state": 0,
    # pixels: integers in [0, 16], several always blank
    "preprocessing": "logit",
    "dequantize": True,
    "bounds": (0, 17),
}


@pytest.fixture(scope="module")
def digits():
    X = load_digits().data[:300]
    return X


def fit(X, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return EBFlowDensity(**{**CONV, **params}).fit(X)


@pytest.mark.parametrize("objective", ["dsm", "ssm", "ml"])
def test_conv_fits_image_rows(objective, digits):
    est = fit(digits, objective=objective)
    layers = est.flow_.layers
    assert sum(isinstance(layer, Conv2d) for layer in layers) == 6
    assert sum(isinstance(layer, Squeeze) for layer in layers) == 2
    scores = est.score_samples(digits[:20])
    assert scores.shape == (20,) and np.all(np.isfinite(scores))
    assert est.sample(3, random_state=0).shape == (3, 64)


def test_conv_training_improves_the_held_out_likelihood(digits):
    # Score matching through the convolutions moves the model towards the data
    # (alone: no maximum-likelihood refinement after it).
    start = fit(digits, objective="dsm", learning_rate=1e-12, max_iter=1)
    trained = fit(digits, objective="dsm", max_iter=15, likelihood_refinement=0)
    held_out = load_digits().data[1000:1200]
    assert trained.score(held_out) > start.score(held_out) + 20


def test_conv_in_grid_search_pickle_and_safe_files(digits, tmp_path):
    search = GridSearchCV(
        EBFlowDensity(**CONV), {"objective": ["dsm", "ml"]}, cv=2, error_score="raise"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(digits)
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    est = search.best_estimator_
    loaded = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(loaded.score_samples(digits[:10]),
                                  est.score_samples(digits[:10]))
    path = tmp_path / "conv.safetensors"
    skebflow.save(est, path)
    again = skebflow.load(path)
    assert again.image_shape == (1, 8, 8)
    np.testing.assert_array_equal(again.score_samples(digits[:10]),
                                  est.score_samples(digits[:10]))


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"image_shape": None}, "needs image_shape"),
        ({"image_shape": (1, 4, 4)}, "holds 16 pixel values"),
        ({"image_shape": (3, 8, 8)}, "holds 192"),
    ],
)
def test_conv_shape_errors_are_clear(params, match, digits):
    with pytest.raises(ValueError, match=match):
        EBFlowDensity(**{**CONV, **params}).fit(digits)


def test_conv_needs_sides_divisible_by_the_squeezes():
    X = np.random.default_rng(0).integers(0, 17, size=(50, 36)).astype(float)
    # in the estimator's words: its own parameter, and what to do
    with pytest.raises(
        ValueError, match=r"architecture='conv' .*divisible by 4; got 6 x 6\. Pad or"
    ) as raised:
        EBFlowDensity(**{**CONV, "image_shape": (6, 6)}).fit(X)
    assert "n_blocks" not in str(raised.value) and "8 x 8" in str(raised.value)


def test_always_blank_pixels_are_one_unit_bin_when_dequantized(digits):
    # Without dequantization a constant pixel is refused; dequantized, it is a
    # uniform bin, in the standardized preprocessing too, and the density of a row
    # whose blank pixel is lit drops.
    blank = int(np.flatnonzero(np.ptp(digits, axis=0) == 0)[0])
    with pytest.raises(ValueError, match="constant"):
        fit(digits, architecture="coupling", image_shape=None,
            preprocessing="standardize", dequantize=False, bounds=None)
    est = fit(digits, architecture="coupling", image_shape=None,
              preprocessing="standardize", bounds=None, max_iter=5)
    lit = digits[:20].copy()
    lit[:, blank] = 8.0
    assert np.all(est.score_samples(lit) < est.score_samples(digits[:20]))


def test_warm_start_accepts_an_equivalent_image_shape():
    """(4, 4) and (1, 4, 4) build the same flow: a warm start with the other
    spelling continues it (it was refused as a changed image_shape)."""
    X = np.random.default_rng(0).normal(size=(40, 16))
    est = fit(X, image_shape=(4, 4), max_iter=1, warm_start=True,
              likelihood_refinement=0, preprocessing="standardize", dequantize=False,
              bounds=None)
    before = est.score_samples(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.set_params(image_shape=(1, 4, 4)).fit(X)  # raised: image_shape changed
    assert not np.array_equal(est.score_samples(X), before)  # trained further
    # The coupling parameters do not apply to the paper's CNN: changing them is no
    # change of the flow (it was refused as one).
    before = est.score_samples(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.set_params(n_layers=2, hidden_layer_sizes=(8,), activation="silu",
                       coupling_transform="affine", n_components=3).fit(X)
    assert not np.array_equal(est.score_samples(X), before)


def test_conditioner_widths_are_not_checked_for_a_flow_without_conditioners():
    """A grid over hidden_layer_sizes and architecture gives the CNN (and fc) a
    width it does not use: no error for it; the couplings still refuse it."""
    X = np.random.default_rng(0).normal(size=(40, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for architecture, extra in (("conv", {"image_shape": (4, 4)}), ("fc", {})):
            EBFlowDensity(architecture=architecture, hidden_layer_sizes=(0,),
                          n_flows=1, max_iter=1, device="cpu", **extra).fit(X)
    with pytest.raises(ValueError, match="positive integers"):
        EBFlowDensity(architecture="coupling", hidden_layer_sizes=(0,), n_flows=1,
                      max_iter=1, device="cpu").fit(X)
    with pytest.raises(ValueError, match="positive integers"):  # "auto": couplings
        EBFlowDensity(hidden_layer_sizes=(0,), n_flows=1, max_iter=1,
                      device="cpu").fit(X)


def test_image_shape_chooses_conv_under_auto_and_is_ignored_by_the_others():
    """A grid over architecture with image_shape fixed failed on every candidate
    but "conv" (image_shape was refused by the others, which do not use it, unlike
    hidden_layer_sizes, which the flows without conditioners ignore); "auto" with
    an image_shape was refused too, where the user's rows are images."""
    X = np.random.default_rng(0).integers(0, 5, size=(60, 16)).astype(float)
    params = {**CONV, "image_shape": (4, 4), "bounds": (0, 5), "max_iter": 1,
              "early_stopping": False}
    auto = fit(X, **{**params, "architecture": "auto"})
    assert auto.architecture_ == "conv"
    assert any(isinstance(layer, Conv2d) for layer in auto.flow_.layers)
    search = GridSearchCV(
        EBFlowDensity(**params),
        {"architecture": ["coupling", "fc", "conv"]},
        cv=2,
        error_score="raise",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(X)
    scores = search.cv_results_["mean_test_score"]
    assert np.isfinite(scores).all()
    for architecture in ("coupling", "fc"):
        est = fit(X, **{**params, "architecture": architecture})
        assert est.architecture_ == architecture
        assert not any(isinstance(layer, Conv2d) for layer in est.flow_.layers)


def test_warm_starts_follow_what_image_shape_and_auto_mean():
    """A coupling flow ignores image_shape, so a warm start that changes it
    continues the flow; "auto" that resolves to the architecture fitted is the same
    flow (both were refused as changes); "auto" that now resolves to "conv" is not."""
    X = np.random.default_rng(0).normal(size=(40, 16))
    params = {"n_flows": 1, "max_iter": 1, "warm_start": True, "device": "cpu",
              "random_state": 0, "likelihood_refinement": 0,
              "early_stopping": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        coupling = EBFlowDensity(architecture="coupling", **params).fit(X)
        before = coupling.score_samples(X)
        coupling.set_params(image_shape=(4, 4)).fit(X)
        assert not np.array_equal(coupling.score_samples(X), before)
        coupling.set_params(architecture="auto", image_shape=None).fit(X)
        with pytest.raises(ValueError, match=r"image_shape=None -> \(1, 4, 4\)"):
            coupling.set_params(image_shape=(4, 4)).fit(X)  # "auto" is now "conv"
        # "auto" fitted as a coupling flow: image_shape is ignored by it as well
        auto = EBFlowDensity(**params).fit(X)
        auto.set_params(architecture="coupling", image_shape=(4, 4)).fit(X)
        conv = EBFlowDensity(architecture="conv", image_shape=(4, 4), **params).fit(X)
        before = conv.score_samples(X)
        conv.set_params(architecture="auto").fit(X)
    assert conv.architecture_ == "conv"
    assert not np.array_equal(conv.score_samples(X), before)


def test_images_not_flattened_are_refused_with_what_to_do(digits):
    """(n, 1, 8, 8) or (n, 8, 8) arrays got scikit-learn's generic 'dim <= 2 is
    required', the likeliest mistake with architecture='conv' left unexplained."""
    estimator = EBFlowDensity(**CONV)
    for shape in ((len(digits), 1, 8, 8), (len(digits), 8, 8)):
        with pytest.raises(ValueError, match=r"X\.reshape\(len\(X\), -1\)"):
            estimator.fit(digits.reshape(shape))
    fitted = EBFlowDensity(**{**CONV, "max_iter": 1}).fit(digits)
    with pytest.raises(ValueError, match="image_shape=\\(C, H, W\\) folds"):
        fitted.score_samples(digits[:3].reshape(3, 1, 8, 8))


def test_a_constant_pixel_is_refused_without_advice_to_drop_it(digits):
    """Dropping a pixel no longer fits image_shape: the refusal says how to keep
    the blank border instead."""
    params = {**CONV, "preprocessing": "standardize", "dequantize": False}
    with pytest.raises(ValueError, match="architecture='conv' models every pixel") as e:
        fit(digits, **params)
    assert "VarianceThreshold" not in str(e.value)
    assert "dequantize=True" in str(e.value)


def test_the_imputer_passes_every_pixel_to_a_conv_density():
    """A blank pixel is the conv density's to model (here one unit bin, dequantized),
    not dropped, which left image_shape more pixels than the data had; a pixel
    never observed cannot be modelled, and is refused upfront."""
    rng = np.random.default_rng(0)
    X = rng.integers(0, 5, size=(120, 16)).astype(float)
    X[:, [0, 5]] = 0.0
    X_missing = np.where(rng.random(X.shape) < 0.1, np.nan, X)
    density = EBFlowDensity(
        **{**CONV, "image_shape": (4, 4), "bounds": (0, 5), "max_iter": 1}
    )
    imputer = skebflow.EBFlowImputer(
        density, n_steps=2, n_refits=0, random_state=0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        filled = imputer.fit_transform(X_missing)
    assert filled.shape == X.shape and np.isfinite(filled).all()
    assert imputer.constant_features_.size == 0
    assert imputer.estimator_.n_features_in_ == 16
    X_missing[:, 3] = np.nan
    with pytest.raises(ValueError, match=r"Feature\(s\) \[3\] of X have no observed"):
        imputer.fit(X_missing)
