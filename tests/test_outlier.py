"""EBFlowOutlierDetector: the outlier contract and what anomaly users meet."""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import roc_auc_score

from skebflow import EBFlowDensity, EBFlowOutlierDetector

SMALL = {
    "n_flows": 1,
    "n_layers": 2,
    "hidden_layer_sizes": (16,),
    "max_iter": 20,
    "device": "cpu",
    "random_state": 0,
}


def _data(seed=0, n_inliers=600, n_outliers=30, scale=None):
    rng = np.random.RandomState(seed)
    inliers = rng.multivariate_normal(
        [0, 0, 0], [[1, 0.8, 0], [0.8, 1, 0], [0, 0, 1]], n_inliers
    )
    outliers = rng.uniform(-6, 6, size=(n_outliers, 3))
    X = np.vstack([inliers, outliers])
    y = np.r_[np.zeros(n_inliers), np.ones(n_outliers)]
    if scale is not None:
        X = X * scale
    return X, y


def fit(**params):
    X, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return EBFlowOutlierDetector(**{**SMALL, **params}).fit(X), X, y


def test_same_parameters_as_the_density_estimator():
    density = set(inspect.signature(EBFlowDensity).parameters)
    detector = set(inspect.signature(EBFlowOutlierDetector).parameters)
    assert detector == density | {"contamination", "base_scale", "flow_combination"}
    # Same defaults, but for constant features (a detector models them narrowly: a
    # departure from a constant is an anomaly; the density estimator refuses them).
    # The couplings, weight decay and mixture of flows were chosen for each
    # estimator separately (likelihood, ranking of outliers) and agree.
    defaults = EBFlowDensity().get_params()
    detector_defaults = EBFlowOutlierDetector().get_params()
    assert defaults.pop("constant_features") == "error"
    assert detector_defaults.pop("constant_features") == "narrow"
    # The detector's defaults were chosen, and measured, without dequantization.
    assert defaults.pop("dequantize") == "auto"
    assert detector_defaults.pop("dequantize") is False
    assert detector_defaults.pop("contamination") == "auto"
    # The detector ranks by the trained flow's own density unless asked to widen
    # its base (3 helps only when the training rows hold outliers).
    assert detector_defaults.pop("base_scale") == 1.0
    # How the detector's flows combine into the density that ranks rows.
    assert detector_defaults.pop("flow_combination") == "geometric_mean"
    assert detector_defaults == defaults


def test_contract_and_ranking():
    detector, X, y = fit(contamination=0.05)
    scores = detector.score_samples(X)
    decision = detector.decision_function(X)
    np.testing.assert_allclose(decision, scores - detector.offset_)
    labels = detector.predict(X)
    assert set(np.unique(labels)) <= {-1, 1} and labels.dtype.kind == "i"
    np.testing.assert_array_equal(labels, np.where(decision >= 0, 1, -1))
    assert roc_auc_score(y, -scores) > 0.95


@pytest.mark.parametrize("contamination", [0.05, 0.2])
def test_contamination_is_the_share_flagged_among_fresh_inliers(contamination):
    # On the training rows the share is the contamination by construction; on fresh
    # rows of the same law it is so only if offset_ is the right quantile of a density
    # that generalizes. It varies by the binomial error of the quantile estimated from
    # the training rows and of the share counted on the fresh ones.
    rng = np.random.RandomState(0)
    cov = [[1, 0.8, 0], [0.8, 1, 0], [0, 0, 1]]
    train = rng.multivariate_normal([0, 0, 0], cov, 1000)
    fresh = rng.multivariate_normal([0, 0, 0], cov, 4000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        detector = EBFlowOutlierDetector(contamination=contamination, **SMALL)
        detector.fit(train)
    share = np.mean(detector.predict(fresh) == -1)
    standard_error = np.sqrt(
        contamination * (1 - contamination) * (1 / len(train) + 1 / len(fresh))
    )
    assert abs(share - contamination) < 4 * standard_error, (
        f"flagged {share:.4f} of fresh inliers, contamination {contamination}"
    )


def test_fit_predict_matches_fit_then_predict():
    X, _ = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        first = EBFlowOutlierDetector(contamination=0.1, **SMALL).fit_predict(X)
        second = EBFlowOutlierDetector(contamination=0.1, **SMALL).fit(X).predict(X)
    np.testing.assert_array_equal(first, second)


def test_auto_contamination_is_ten_percent_and_flags_planted_outliers():
    auto, X, y = fit()
    explicit, _, _ = fit(contamination=0.1)
    assert auto.offset_ == explicit.offset_
    assert np.mean(auto.predict(X[y == 1]) == -1) > 0.9


def test_training_data_with_outliers_and_duplicates_and_discrete_columns():
    X, y = _data()
    rng = np.random.RandomState(1)
    X = np.vstack([X, X[:100]])  # duplicated rows
    X = np.c_[X, rng.randint(0, 4, size=len(X))]  # a discrete column
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        detector = EBFlowOutlierDetector(dequantize=True, **SMALL).fit(X)
        jittered = EBFlowOutlierDetector(jitter=0.05, **SMALL).fit(X)
    for model in (detector, jittered):
        scores = model.score_samples(X)
        assert np.all(np.isfinite(scores))
        for parameter in model.flow_.parameters():
            assert np.all(np.isfinite(parameter.detach().numpy()))


def test_features_on_very_different_scales():
    X, y = _data(scale=np.array([1e-4, 1.0, 1e5]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        detector = EBFlowOutlierDetector(**SMALL).fit(X)
    assert roc_auc_score(y, -detector.score_samples(X)) > 0.95


def test_bad_contamination_is_named():
    X, _ = _data()
    with pytest.raises(ValueError, match="contamination"):
        EBFlowOutlierDetector(contamination=0.7, **SMALL).fit(X)
