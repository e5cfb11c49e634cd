"""EBFlowOutlierDetector: the outlier contract and what anomaly users meet."""

from __future__ import annotations

import inspect
import json
import warnings

import numpy as np
import pytest
import torch
from _helpers import assert_threshold_at_quantile, interrupt_epoch
from safetensors import safe_open
from safetensors.numpy import save_file
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import roc_auc_score

import skebflow
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
    assert detector == density | {
        "contamination",
        "novelty",
        "base_scale",
        "flow_combination",
        "trim_fraction",
    }
    # Same defaults, but for constant features (a detector models them narrowly: a
    # departure from a constant is an anomaly; the density estimator refuses them).
    # The couplings, weight decay and mixture of flows were chosen for each
    # estimator separately (likelihood, ranking of outliers) and agree.
    defaults = EBFlowDensity().get_params()
    detector_defaults = EBFlowOutlierDetector().get_params()
    assert defaults.pop("constant_features") == "error"
    assert detector_defaults.pop("constant_features") == "narrow"
    # Exact linear relations: the density models them; the detector fits the rows
    # as they lie (modelling them ranked worse on the tuning group, 5 Dec 2026).
    assert defaults.pop("linear_relations") == "narrow"
    assert detector_defaults.pop("linear_relations") == "warn"
    # The detector's defaults were chosen, and measured, without dequantization.
    assert defaults.pop("dequantize") == "auto"
    assert detector_defaults.pop("dequantize") is False
    assert detector_defaults.pop("contamination") == "auto"
    # The detector ranks by the trained flow's own density unless asked to widen
    # its base (3 helps only when the training rows hold outliers).
    assert detector_defaults.pop("base_scale") == 1.0
    # How the detector's flows combine into the density that ranks rows.
    assert detector_defaults.pop("flow_combination") == "geometric_mean"
    # One fit unless asked to refit without the least normal training rows.
    assert detector_defaults.pop("trim_fraction") == 0.0
    # Training rows that may hold outliers unless told they are clean.
    assert detector_defaults.pop("novelty") is False
    # Epochs and conditioners follow novelty ("auto": 50 epochs of (32, 32) by
    # default, a quarter of the density's epochs), and ten times the density's
    # weight decay: chosen for ranking on the tuning group (3 Dec 2026).
    assert defaults.pop("max_iter") == 200
    assert detector_defaults.pop("max_iter") == "auto"
    assert defaults.pop("hidden_layer_sizes") == (32, 32)
    assert detector_defaults.pop("hidden_layer_sizes") == "auto"
    assert defaults.pop("weight_decay") == 1e-4
    # "auto": 1e-3, or 3e-3 with novelty (5 Dec 2026, ninth session)
    assert detector_defaults.pop("weight_decay") == "auto"
    # Kernel marginals: the density's "auto" takes them; the detector's follows
    # novelty (chosen for ranking on the tuning group, 5 Dec 2026).
    assert defaults.pop("marginal_transform") == "auto"
    assert detector_defaults.pop("marginal_transform") == "auto"
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


@pytest.mark.parametrize(
    ("novelty", "epochs", "hidden", "decay"),
    [(False, 50, (32, 32), 1e-3), (True, 100, (64, 64), 3e-3)],
)
def test_novelty_resolves_the_auto_epochs_and_conditioners(
    novelty, epochs, hidden, decay, monkeypatch
):
    decays = []
    real_train = skebflow._density.train

    def recording(*args, config, **kwargs):
        decays.append(config.weight_decay)
        return real_train(*args, config=config, **kwargs)

    monkeypatch.setattr(skebflow._density, "train", recording)
    X, _ = _data(n_inliers=120, n_outliers=0)
    params = {**SMALL, "max_iter": "auto", "hidden_layer_sizes": "auto"}
    # no early stopping, and a patience on the training loss longer than the fit
    detector = EBFlowOutlierDetector(
        **{**params, "novelty": novelty},
        early_stopping=False,
        n_iter_no_change=1000,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        detector.fit(X)
    assert detector.max_iter_ == epochs and detector.hidden_layer_sizes_ == hidden
    assert detector.n_iter_ == epochs  # without early stopping, every epoch runs
    # the weight decay resolved for novelty reaches training
    assert detector.weight_decay_ == decay and decays == [decay]
    # the flow has the resolved conditioners: hidden layers of that width only
    widths = {
        module.out_features
        for module in detector.flow_.modules()
        if isinstance(module, torch.nn.Linear)
    }
    other = 64 if hidden[0] == 32 else 32
    assert hidden[0] in widths and other not in widths
    assert detector.get_params()["max_iter"] == "auto"  # parameters untouched


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_the_auto_budget_says_why_it_stops_before_convergence(monkeypatch):
    # The "auto" budget resolved to 2 epochs, so that the test is quick.
    monkeypatch.setitem(skebflow._auto_settings.DETECTOR_SETTINGS[False], "max_iter", 2)
    X, _ = _data()
    params = {**SMALL, "n_flows": 2, "early_stopping": False}
    with pytest.warns(ConvergenceWarning) as auto:
        EBFlowOutlierDetector(**{**params, "max_iter": "auto"}).fit(X)
    with pytest.warns(ConvergenceWarning) as explicit:
        EBFlowOutlierDetector(**{**params, "max_iter": 2}).fit(X)
    (auto_message,) = [str(w.message) for w in auto]
    (explicit_message,) = [str(w.message) for w in explicit]
    assert "(flows 1, 2 of 2)" in auto_message
    assert "max_iter='auto' (2 epochs) is a budget chosen for ranking" in auto_message
    assert "raise max_iter" not in auto_message
    assert explicit_message.endswith("raise max_iter, or warm_start=True to continue.")


def test_the_auto_budget_explains_the_refinement_too(monkeypatch):
    """A score-matching detector's likelihood refinement, whose "auto" epochs
    follow the budget, advised raising max_iter, against the budget's reason."""
    monkeypatch.setitem(skebflow._auto_settings.DETECTOR_SETTINGS[False], "max_iter", 4)
    X, _ = _data()
    params = {**SMALL, "max_iter": "auto", "objective": "ssm", "early_stopping": False}
    with pytest.warns(ConvergenceWarning) as caught:
        EBFlowOutlierDetector(**params).fit(X)
    (refinement,) = [
        str(w.message) for w in caught if "likelihood refinement" in str(w.message)
    ]
    assert "max_iter='auto' (4 epochs) is a budget chosen for ranking" in refinement
    assert "set max_iter (or likelihood_refinement) to an integer" in refinement
    assert "Raise max_iter" not in refinement


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_kernel_marginals_with_clean_training_rows_or_when_asked():
    # measured for ranking on the tuning group: a gain with clean training rows,
    # a loss with outliers among them
    X, _ = _data(n_inliers=120, n_outliers=0)
    params = {**SMALL, "max_iter": 2}
    outliers_possible = EBFlowOutlierDetector(**params).fit(X)
    assert outliers_possible.marginal_transform_ is None
    clean = EBFlowOutlierDetector(**params, novelty=True).fit(X)
    assert clean.marginal_transform_ == "kde"
    assert type(clean.preprocessing_.steps[0]).__name__ == "KernelGaussianize"
    kde = EBFlowOutlierDetector(**params, marginal_transform="kde").fit(X)
    assert kde.marginal_transform_ == "kde"
    # with clean rows each column's wide normal is one standard deviation wide,
    # not three: values beyond the data get less density (ranked better there)
    clean_wide = clean.preprocessing_.steps[0].wide_scale
    torch.testing.assert_close(clean_wide * 3.0, kde.preprocessing_.steps[0].wide_scale)
    plain = EBFlowOutlierDetector(**params, novelty=True, marginal_transform=None)
    assert plain.fit(X).marginal_transform_ is None
    # under the logit, "auto" resolves to None whatever novelty says
    logit = EBFlowOutlierDetector(**params, novelty=True, preprocessing="logit")
    assert logit.fit(X).marginal_transform_ is None


def test_values_set_explicitly_win_over_novelty():
    X, _ = _data(n_inliers=120, n_outliers=0)
    detector = EBFlowOutlierDetector(
        **{
            **SMALL,
            "novelty": True,
            "max_iter": 3,
            "hidden_layer_sizes": (8,),
            "marginal_transform": "kde",
            "weight_decay": 0.0,
        },
        early_stopping=False,
        n_iter_no_change=1000,
    ).fit(X)
    assert detector.max_iter_ == 3 and detector.n_iter_ == 3
    assert detector.hidden_layer_sizes_ == (8,) and detector.weight_decay_ == 0.0
    # the widths and marginals are set, so novelty no longer changes them: a
    # warm start goes on
    detector.set_params(warm_start=True, novelty=False).fit(X)
    assert detector.hidden_layer_sizes_ == (8,) and detector.max_iter_ == 3
    assert detector.marginal_transform_ == "kde"


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize(
    ("setting", "change", "advice", "kept"),
    [
        (
            {"hidden_layer_sizes": "auto", "marginal_transform": None},
            r"hidden_layer_sizes=\(32, 32\) -> \(64, 64\)",
            "resolves to (64, 64) with novelty=True",
            ("hidden_layer_sizes_", (32, 32)),
        ),
        (
            {"hidden_layer_sizes": (8,), "marginal_transform": "auto"},
            r"marginal_transform=None -> 'auto'",
            "resolves to 'auto' with novelty=True",
            ("marginal_transform_", None),
        ),
    ],
    ids=["widths", "marginals"],
)
def test_novelty_changed_under_warm_start_is_refused_with_what_it_resolves(
    setting, change, advice, kept
):
    X, _ = _data(n_inliers=120, n_outliers=0)
    params = {**SMALL, "max_iter": 2, **setting}
    detector = EBFlowOutlierDetector(**params, warm_start=True).fit(X)
    detector.set_params(novelty=True)
    with pytest.raises(ValueError, match=change) as refused:
        detector.fit(X)
    assert advice in str(refused.value)
    with pytest.raises(ValueError, match="set novelty back"):
        detector.partial_fit(X)
    name, value = kept
    assert getattr(detector, name) == value  # the fitted model is kept


def test_contamination_is_the_share_flagged_among_the_training_rows():
    # scikit-learn's check_outliers_train skips this for an estimator with a
    # novelty parameter (LocalOutlierFactor's cannot predict its training rows)
    X, _ = _data(n_inliers=270, n_outliers=30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        detector = EBFlowOutlierDetector(**SMALL, contamination=30 / len(X)).fit(X)
    flagged = detector.predict(X) == -1
    assert flagged.sum() == 30
    assert detector.decision_function(X)[flagged].max() < 0


def test_a_detector_pickled_before_novelty_keeps_its_settings():
    detector, X, _ = fit()
    state = detector.__getstate__()
    del state["novelty"], state["max_iter_"], state["hidden_layer_sizes_"]
    del state["weight_decay_"]
    state["weight_decay"] = 1e-3  # explicit before "auto"
    old = EBFlowOutlierDetector.__new__(EBFlowOutlierDetector)
    old.__setstate__(state)
    assert old.get_params()["novelty"] is False
    assert old.max_iter_ == 20 and old.hidden_layer_sizes_ == (16,)
    assert old.weight_decay_ == 1e-3
    np.testing.assert_array_equal(old.score_samples(X), detector.score_samples(X))


def test_a_model_file_from_before_novelty_loads_with_its_settings(tmp_path):
    detector, X, _ = fit()
    path = tmp_path / "detector.skebflow"
    skebflow.save(detector, path)
    with safe_open(str(path), framework="numpy") as archive:
        metadata = dict(archive.metadata())
        tensors = {name: archive.get_tensor(name) for name in archive.keys()}
    # as written before novelty existed: SMALL's max_iter and widths, no novelty
    params, fitted = json.loads(metadata["params"]), json.loads(metadata["fitted"])
    del params["novelty"], fitted["max_iter_"], fitted["hidden_layer_sizes_"]
    metadata.update(params=json.dumps(params), fitted=json.dumps(fitted))
    # and before the checksum: format version 1, no sha256 entry
    metadata.update(format_version="1")
    del metadata["sha256"]
    old = tmp_path / "old.skebflow"
    save_file(tensors, str(old), metadata=metadata)
    loaded = skebflow.load(old)
    assert loaded.novelty is False and loaded.max_iter_ == 20
    assert loaded.hidden_layer_sizes_ == (16,)
    np.testing.assert_array_equal(loaded.score_samples(X), detector.score_samples(X))


@pytest.mark.parametrize("novelty", ["yes", 1.0, None])
def test_bad_novelty_is_named(novelty):
    X, _ = _data(n_inliers=50, n_outliers=5)
    with pytest.raises(ValueError, match="'novelty' parameter"):
        EBFlowOutlierDetector(**SMALL, novelty=novelty).fit(X)


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


def _quiet_fit(detector, X, **fit_params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return detector.fit(X, **fit_params)


def test_trim_fraction_refits_without_the_least_normal_rows():
    # The trimmed detector is the same detector fitted on the rows its untrimmed
    # fit scores highest; the planted outliers are among those it leaves out, and
    # offset_ stays the contamination quantile of every training row.
    X, y = _data(n_inliers=300, n_outliers=15)
    untrimmed = _quiet_fit(EBFlowOutlierDetector(**SMALL), X)
    scores = untrimmed.score_samples(X)
    n_trimmed = int(0.1 * len(X))
    kept = np.ones(len(X), dtype=bool)
    kept[np.argsort(scores, kind="stable")[:n_trimmed]] = False
    assert y[~kept].sum() >= 12  # the first fit finds most outliers
    X_before = X.copy()
    trimmed = _quiet_fit(EBFlowOutlierDetector(trim_fraction=0.1, **SMALL), X)
    np.testing.assert_array_equal(X, X_before)
    assert trimmed.n_trimmed_ == n_trimmed and untrimmed.n_trimmed_ == 0
    on_kept = _quiet_fit(EBFlowOutlierDetector(**SMALL), X[kept])
    X_new = _data(seed=1, n_inliers=50, n_outliers=50)[0]
    np.testing.assert_allclose(
        trimmed.score_samples(X_new), on_kept.score_samples(X_new), rtol=0, atol=1e-9
    )
    training_scores = trimmed.score_samples(X)
    assert_threshold_at_quantile(
        trimmed.offset_,
        training_scores,
        np.percentile(training_scores, 10.0, method="averaged_inverted_cdf"),
    )

    # Fitted without most of its outliers, the refit puts them further below the
    # inliers than the fit that saw them.
    def margin(values):
        return np.median(values[y == 0]) - np.median(values[y == 1])

    assert margin(training_scores) > margin(scores) + 1.0


def test_a_trimmed_refit_keeps_the_first_fits_integer_columns():
    """A column whole-numbered except in the outliers is continuous to the first
    fit; the refit without those rows kept deciding afresh, dequantized it, and
    then scored every value rounded: 0.6, 1.0 and 1.4 alike."""
    rng = np.random.RandomState(0)
    X = np.c_[rng.normal(size=200), rng.randint(0, 3, 200).astype(float)]
    X[:10] = [8.0, 1.4]  # far in column 0, a fraction in column 1
    detector = _quiet_fit(
        EBFlowOutlierDetector(trim_fraction=0.1, dequantize=True, **SMALL), X
    )
    assert detector.n_trimmed_ == 20
    assert detector.dequantized_features_.tolist() == [False, False]
    scores = detector.score_samples([[0.0, 1.4], [0.0, 1.0], [0.0, 0.6]])
    assert len(set(scores.tolist())) == 3


def _score_row_7_nan(monkeypatch):
    """Make the detector score the 8th row of whatever it scores as NaN."""
    real_scores = EBFlowOutlierDetector.score_samples

    def nan_at_row_7(self, X):
        scores = real_scores(self, X)
        scores[7] = np.nan
        return scores

    monkeypatch.setattr(EBFlowOutlierDetector, "score_samples", nan_at_row_7)


def test_scores_a_rounding_apart_at_the_threshold_get_one_label(monkeypatch):
    """Two rows scored a float apart (copies of one row scored in one batch,
    whose scores differ in the last bits) are tied for the threshold: it moves
    below both, so neither is flagged, as neither is when scored alone. Before,
    the threshold stayed on the upper one and flagged the lower (or, earlier
    still, rounded onto the lower one and flagged none by accident)."""
    X, _ = _data(n_inliers=38, n_outliers=2)
    lowest = -10.0
    tied = float(np.nextafter(lowest, 0.0))
    scores = np.r_[lowest, tied, np.linspace(0.0, 5.0, len(X) - 2)]
    monkeypatch.setattr(
        EBFlowOutlierDetector, "score_samples", lambda self, X: scores.copy()
    )
    detector = _quiet_fit(EBFlowOutlierDetector(contamination=0.04, **SMALL), X)
    assert detector.offset_ < lowest
    assert not (detector.predict(X) == -1).any()
    # a lower row, well apart, is flagged as before
    scores[0] = -10.5
    detector = _quiet_fit(EBFlowOutlierDetector(contamination=0.04, **SMALL), X)
    assert scores[0] < detector.offset_ < tied
    assert (detector.predict(X) == -1).tolist() == [True] + [False] * (len(X) - 1)


def test_copies_of_a_row_at_the_threshold_get_one_label():
    """22 copies of one row among 200, the 0.1 quantile falling on them: in one
    batch the copies scored a float apart, and fit_predict flagged one copy and
    not the other 21, though each scored alone was an inlier (a review's
    reproduction, 6 December)."""
    rng = np.random.RandomState(2)
    for _ in range(7):  # the review's seventh draw
        X = rng.normal(size=(200, 2))
        direction = rng.normal(size=2)
        row = direction / np.linalg.norm(direction) * rng.uniform(2.5, 4)
        n_copies = rng.randint(21, 40)
        X[:n_copies] = row
        X = X[rng.permutation(200)]
    copies = np.all(X == row, axis=1)
    detector = EBFlowOutlierDetector(
        n_flows=1,
        n_layers=2,
        hidden_layer_sizes=(16,),
        max_iter=2,
        device="cpu",
        random_state=6,
        contamination=0.1,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        labels = detector.fit_predict(X)
    assert len(set(labels[copies].tolist())) == 1
    alone = {int(detector.predict(X[i : i + 1])[0]) for i in np.flatnonzero(copies)}
    assert alone == set(labels[copies].tolist())


def test_a_row_scored_nan_ranks_lowest_for_the_threshold(monkeypatch):
    """One training row scored NaN made the contamination quantile NaN and the fit
    fail; it ranks as a row scored -inf, as in the trimming and in predict."""
    X, _ = _data(n_inliers=100, n_outliers=5)
    _score_row_7_nan(monkeypatch)
    detector = _quiet_fit(EBFlowOutlierDetector(**SMALL), X)
    scores = detector.score_samples(X)
    assert np.isfinite(detector.offset_)
    ranked = np.where(np.isnan(scores), -np.inf, scores)
    assert_threshold_at_quantile(
        detector.offset_,
        ranked,
        np.percentile(ranked, 10.0, method="averaged_inverted_cdf"),
    )
    assert detector.predict(X)[7] == -1


def test_a_row_scored_minus_infinity_among_few_still_gives_a_threshold(
    monkeypatch,
):
    """Among ten rows, the contamination quantile fell between a -inf score and a
    finite one, where linear interpolation gives NaN, and the fit failed; it
    takes the next score up, so that the -inf row alone is flagged."""
    X = np.random.RandomState(0).normal(size=(10, 2))
    real_scores = EBFlowOutlierDetector.score_samples

    def minus_infinity_at_row_0(self, X):
        scores = real_scores(self, X)
        scores[0] = -np.inf
        return scores

    monkeypatch.setattr(EBFlowOutlierDetector, "score_samples", minus_infinity_at_row_0)
    detector = _quiet_fit(EBFlowOutlierDetector(contamination=0.1, **SMALL), X)
    assert np.isfinite(detector.offset_)
    assert detector.predict(X).tolist() == [-1] + [1] * 9


def test_a_trimmed_refit_does_not_make_a_fractional_column_one_bin():
    """A column fractional only in the trimmed rows is constant and whole among
    the kept ones: with dequantize=True and constant_features="error" the refit
    modelled it as one integer bin without dequantizing it (a point mass: kept
    rows scored +8.5 nats). It is the constant column the documented error names."""
    rng = np.random.RandomState(0)
    X = np.c_[np.zeros(100), rng.normal(size=100)]
    X[:5] = np.c_[np.full(5, 0.5), np.arange(8.0, 13.0)]
    detector = EBFlowOutlierDetector(
        dequantize=True, constant_features="error", trim_fraction=0.05, **SMALL
    )
    with pytest.raises(ValueError, match=r"Feature\(s\) \[0\] of X vary only among"):
        _quiet_fit(detector, X)


class _StopAtRefit(Exception):
    pass


def test_trim_fraction_trims_a_row_scored_nan_first(monkeypatch):
    # A NaN score says nothing of the row's normality: it is trimmed before any
    # row with a score (argsort alone would rank it among the most normal).
    X, _ = _data(n_inliers=100, n_outliers=5)
    kept_rows = {}

    def capture(self, X, kept, weights):
        kept_rows["kept"] = kept.copy()
        raise _StopAtRefit

    _score_row_7_nan(monkeypatch)
    monkeypatch.setattr(EBFlowOutlierDetector, "_refit_on", capture)
    with pytest.raises(_StopAtRefit):
        _quiet_fit(EBFlowOutlierDetector(trim_fraction=0.02, **SMALL), X)
    kept = kept_rows["kept"]
    assert np.count_nonzero(~kept) == int(0.02 * len(X)) == 2
    assert not kept[7]


def test_trim_fraction_keeps_the_kept_rows_weights_and_feature_names():
    pandas = pytest.importorskip("pandas")
    X, _ = _data(n_inliers=200, n_outliers=10)
    weights = np.random.RandomState(3).uniform(0.5, 2.0, size=len(X))
    frame = pandas.DataFrame(X, columns=["a", "b", "c"])
    trimmed = _quiet_fit(
        EBFlowOutlierDetector(trim_fraction=0.2, **SMALL), frame, sample_weight=weights
    )
    assert list(trimmed.feature_names_in_) == ["a", "b", "c"]
    scores = _quiet_fit(
        EBFlowOutlierDetector(**SMALL), frame, sample_weight=weights
    ).score_samples(frame)
    kept = np.ones(len(X), dtype=bool)
    kept[np.argsort(scores, kind="stable")[: int(0.2 * len(X))]] = False
    on_kept = _quiet_fit(
        EBFlowOutlierDetector(**SMALL), frame[kept], sample_weight=weights[kept]
    )
    np.testing.assert_allclose(
        trimmed.score_samples(frame), on_kept.score_samples(frame), rtol=0, atol=1e-9
    )


def test_trim_fraction_with_a_scalar_weight_is_the_unweighted_trimmed_fit():
    X, _ = _data(n_inliers=150, n_outliers=8)
    plain = _quiet_fit(EBFlowOutlierDetector(trim_fraction=0.1, **SMALL), X)
    scalar = _quiet_fit(
        EBFlowOutlierDetector(trim_fraction=0.1, **SMALL), X, sample_weight=2.5
    )
    assert scalar.n_trimmed_ == plain.n_trimmed_ == int(0.1 * len(X))
    np.testing.assert_array_equal(scalar.score_samples(X), plain.score_samples(X))


def test_trim_fraction_ranks_and_counts_only_rows_of_positive_weight():
    # Rows of weight zero are not in the fit: they are neither trimmed nor counted,
    # so the weighted fit trims exactly as a fit on the weighted rows alone does,
    # even where a zero-weight row is the least normal of all.
    X, _ = _data(n_inliers=150, n_outliers=8)
    far = np.full((5, 3), 40.0)
    weights = np.r_[np.ones(len(X)), np.zeros(len(far))]
    with_zeros = _quiet_fit(
        EBFlowOutlierDetector(trim_fraction=0.2, **SMALL),
        np.vstack([X, far]),
        sample_weight=weights,
    )
    alone = _quiet_fit(EBFlowOutlierDetector(trim_fraction=0.2, **SMALL), X)
    assert with_zeros.n_trimmed_ == alone.n_trimmed_ == int(0.2 * len(X))
    np.testing.assert_allclose(
        with_zeros.score_samples(X), alone.score_samples(X), rtol=0, atol=1e-9
    )


def test_trim_fraction_refits_with_the_first_fits_number_of_flows(monkeypatch):
    # n_flows="auto" follows the number of rows; the refit, on fewer rows, keeps
    # the first fit's model rather than resolving "auto" again.
    import skebflow._density as density_module

    resolved = []

    def resolve(n_flows, n_samples):
        resolved.append(n_samples)
        return 1 if n_samples >= 100 else 3

    monkeypatch.setattr(density_module, "resolve_n_flows", resolve)
    X, _ = _data(n_inliers=100, n_outliers=5)
    detector = _quiet_fit(
        EBFlowOutlierDetector(trim_fraction=0.1, **{**SMALL, "n_flows": "auto"}), X
    )
    assert resolved == [len(X)]  # resolved once, for the first fit
    assert detector.n_flows_ == 1 and detector.n_trimmed_ == int(0.1 * len(X))


def test_trim_fraction_continues_the_flows_under_warm_start():
    X, _ = _data(n_inliers=150, n_outliers=8)
    detector = _quiet_fit(
        EBFlowOutlierDetector(trim_fraction=0.1, warm_start=True, **SMALL), X
    )
    first = _quiet_fit(EBFlowOutlierDetector(warm_start=True, **SMALL), X)
    scores = first.score_samples(X)
    kept = np.ones(len(X), dtype=bool)
    kept[np.argsort(scores, kind="stable")[: int(0.1 * len(X))]] = False
    # warm start: the same flows, trained further on the kept rows
    continued = _quiet_fit(first, X[kept])
    np.testing.assert_allclose(
        detector.score_samples(X), continued.score_samples(X), rtol=0, atol=1e-9
    )


def _fit_without_interrupt(detector, X):
    """Fit; a KeyboardInterrupt reaching the caller fails the test (rather than
    ending the whole test session)."""
    try:
        return _quiet_fit(detector, X)
    except KeyboardInterrupt:
        pytest.fail("the interruption reached the caller")


def test_trim_fraction_keeps_the_logit_box_of_the_first_fit():
    # Under preprocessing="logit" the box is fitted on the training rows: the refit
    # keeps the first fit's, so the trimmed rows, far outside the kept rows' range,
    # still have a density and offset_ stays finite.
    rng = np.random.RandomState(0)
    X = rng.uniform(0.0, 1.0, size=(200, 2))
    X[:20] = rng.uniform(30.0, 40.0, size=(20, 2))
    detector = _quiet_fit(
        EBFlowOutlierDetector(
            trim_fraction=0.1, preprocessing="logit", contamination=0.1, **SMALL
        ),
        X,
    )
    assert detector.n_trimmed_ == 20
    scores = detector.score_samples(X)
    assert np.all(np.isfinite(scores)) and np.isfinite(detector.offset_)
    assert np.median(scores[:20]) < np.median(scores[20:])


def test_trim_fraction_that_trims_no_row_fits_once():
    # int(0.1 * 9) = 0 rows to leave out: no refit, so under warm_start the flows
    # are not trained a second time.
    X, _ = _data(n_inliers=7, n_outliers=2)
    params = {**SMALL, "max_iter": 3, "early_stopping": False, "warm_start": True}
    detector = _quiet_fit(EBFlowOutlierDetector(trim_fraction=0.1, **params), X)
    once = _quiet_fit(EBFlowOutlierDetector(**params), X)
    assert detector.n_trimmed_ == 0
    np.testing.assert_array_equal(detector.score_samples(X), once.score_samples(X))


def _convergence_warnings(detector, X):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        detector.fit(X)
    return [str(w.message) for w in caught if w.category is ConvergenceWarning]


def test_a_trimmed_fit_shows_only_the_refits_convergence_warnings():
    # Two flows stopped after 2 epochs give one warning naming both; the first fit
    # of a trimmed one describes a model that the refit replaces, so only the
    # refit's shows.
    X, _ = _data(n_inliers=100, n_outliers=5)
    params = {**SMALL, "n_flows": 2, "max_iter": 2, "early_stopping": False}
    single = _convergence_warnings(EBFlowOutlierDetector(**params), X)
    trimmed_detector = EBFlowOutlierDetector(trim_fraction=0.1, **params)
    trimmed = _convergence_warnings(trimmed_detector, X)
    assert trimmed_detector.n_trimmed_ > 0
    assert len(single) == 1 and len(trimmed) == 1
    assert "(flows 1, 2 of 2)" in single[0]
    # Without a refit (no row to leave out), the first fit's warnings stay.
    few, _ = _data(n_inliers=7, n_outliers=2)
    untrimmed_detector = EBFlowOutlierDetector(trim_fraction=0.1, **params)
    assert len(_convergence_warnings(untrimmed_detector, few)) == 1
    assert untrimmed_detector.n_trimmed_ == 0


def test_an_interrupted_first_fit_is_not_refitted(monkeypatch):
    X, _ = _data(n_inliers=100, n_outliers=5)
    calls = interrupt_epoch(monkeypatch, on_call=3)
    detector = EBFlowOutlierDetector(trim_fraction=0.1, **SMALL)
    with pytest.warns(UserWarning, match="interrupted by user"):
        _fit_without_interrupt(detector, X)
    assert calls["n"] == 3  # no epoch of a refit ran
    assert detector.n_trimmed_ == 0 and detector.n_iter_ == 2


def test_an_interrupted_refit_keeps_the_first_fit(monkeypatch):
    X, _ = _data(n_inliers=100, n_outliers=5)
    params = {**SMALL, "max_iter": 3, "early_stopping": False}
    untrimmed = _quiet_fit(EBFlowOutlierDetector(**params), X)
    interrupt_epoch(monkeypatch, on_call=5)  # the refit's second epoch
    detector = EBFlowOutlierDetector(trim_fraction=0.1, **params)
    with pytest.warns(UserWarning, match="during the trimmed refit"):
        _fit_without_interrupt(detector, X)
    assert detector.n_trimmed_ == 0
    np.testing.assert_array_equal(detector.score_samples(X), untrimmed.score_samples(X))
    assert detector.offset_ == untrimmed.offset_


def test_an_interrupted_trimmed_refit_of_a_fitted_detector_keeps_the_previous_model(
    monkeypatch,
):
    """Ctrl-C during the trimmed refit of a detector fitted before: the
    interruption reaches the caller and the model fitted before stays (it used
    to be swallowed, leaving the untrimmed first fit of the new call)."""
    X, _ = _data(n_inliers=100, n_outliers=5)
    params = {**SMALL, "max_iter": 3, "early_stopping": False}
    detector = _quiet_fit(EBFlowOutlierDetector(trim_fraction=0.1, **params), X)
    scores, offset, flow = detector.score_samples(X), detector.offset_, detector.flow_
    calls = interrupt_epoch(monkeypatch, on_call=5)  # the new refit's second epoch
    detector.set_params(random_state=1)
    with pytest.raises(KeyboardInterrupt):
        _quiet_fit(detector, X)
    assert calls["n"] == 5
    assert detector.flow_ is flow and detector.offset_ == offset
    assert detector.n_trimmed_ == int(0.1 * len(X))
    np.testing.assert_array_equal(detector.score_samples(X), scores)


@pytest.mark.parametrize(
    ("owner", "method", "on_call"),
    [
        # the ranking of the rows to trim: the first fit's first scoring
        ("detector", "score_samples", 1),
        # the refit's scoring density: its geometric mean's log Z, after the
        # first fit's (call 1)
        ("geometric_mean", "estimate_log_normalizer", 2),
    ],
)
def test_an_interrupt_around_the_refits_training_keeps_the_first_fit(
    monkeypatch, owner, method, on_call
):
    """Ctrl-C while the rows are ranked for trimming, or while the refit's
    scoring density is set up after its training, keeps the first fit, as one
    during the refit's training does (it used to lose both fits)."""
    from skebflow.flows import FlowGeometricMean

    X, _ = _data(n_inliers=100, n_outliers=5)
    params = {**SMALL, "n_flows": 2, "max_iter": 3, "early_stopping": False}
    untrimmed = _quiet_fit(EBFlowOutlierDetector(**params), X)
    cls = EBFlowOutlierDetector if owner == "detector" else FlowGeometricMean
    real, calls = getattr(cls, method), {"n": 0}

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == on_call:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cls, method, interrupted)
    detector = EBFlowOutlierDetector(trim_fraction=0.1, **params)
    with pytest.warns(UserWarning, match="during the trimmed refit"):
        _fit_without_interrupt(detector, X)
    monkeypatch.setattr(cls, method, real)
    assert calls["n"] >= on_call and detector.n_trimmed_ == 0
    np.testing.assert_array_equal(detector.score_samples(X), untrimmed.score_samples(X))
    assert detector.offset_ == untrimmed.offset_


def test_a_column_that_varies_only_on_the_trimmed_rows_is_explained_without_standardization():
    """With preprocessing=None the refit cannot model a column constant among the
    kept rows; the error says that it varies only on the trimmed rows, not that X
    has a constant column."""
    X, _ = _data(n_inliers=100, n_outliers=5)
    X = np.c_[X, np.zeros(len(X))]
    X[-5:, -1] = np.arange(1.0, 6.0)  # varies on the five outliers only
    detector = EBFlowOutlierDetector(
        trim_fraction=0.1, preprocessing=None, **{**SMALL, "max_iter": 3}
    )
    column = X.shape[1] - 1
    with pytest.raises(ValueError, match=rf"\[{column}\] of X vary only among the"):
        _quiet_fit(detector, X)


def test_a_detector_pickled_before_trim_fraction_never_trims():
    detector, X, _ = fit()
    state = detector.__getstate__()
    del state["trim_fraction"], state["n_trimmed_"]
    old = EBFlowOutlierDetector.__new__(EBFlowOutlierDetector)
    old.__setstate__(state)
    assert old.get_params()["trim_fraction"] == 0.0 and old.n_trimmed_ == 0
    np.testing.assert_array_equal(old.score_samples(X), detector.score_samples(X))
    unfitted = EBFlowOutlierDetector().__getstate__()
    del unfitted["trim_fraction"]
    fresh = EBFlowOutlierDetector.__new__(EBFlowOutlierDetector)
    fresh.__setstate__(unfitted)
    assert fresh.trim_fraction == 0.0 and not hasattr(fresh, "n_trimmed_")


@pytest.mark.parametrize("trim_fraction", [-0.1, 0.5, 0.9])
def test_bad_trim_fraction_is_named(trim_fraction):
    X, _ = _data(n_inliers=50, n_outliers=5)
    with pytest.raises(ValueError, match="trim_fraction"):
        EBFlowOutlierDetector(trim_fraction=trim_fraction, **SMALL).fit(X)


def test_a_column_varying_only_on_the_trimmed_rows_is_named_as_such():
    rng = np.random.RandomState(0)
    X = np.c_[rng.normal(size=200), np.zeros(200)]
    X[:10, 1] = rng.normal(5, 1, 10)  # column 1 varies on ten rows only
    detector = EBFlowOutlierDetector(
        constant_features="error",
        trim_fraction=0.1,
        n_flows=1,
        max_iter=2,
        device="cpu",
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        detector.set_params(trim_fraction=0.0).fit(X)  # X itself is accepted
        with pytest.raises(
            ValueError,
            match=r"\[1\] of X vary only among the 20"
            r" training rows that trim_fraction=0.1 leaves out",
        ):
            detector.set_params(trim_fraction=0.1).fit(X)
    # The failed refit left the previous fit as it was.
    assert detector.n_trimmed_ == 0 and detector.trim_fraction == 0.1


def test_a_trimmed_fits_warnings_point_at_the_callers_line():
    # The refit runs two calls deeper than a plain fit; its warnings are shown
    # where the caller called fit, as the first fit's are.
    X, _ = _data(n_inliers=100, n_outliers=5)
    detector = EBFlowOutlierDetector(
        trim_fraction=0.1, **{**SMALL, "max_iter": 2, "early_stopping": False}
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        detector.fit(X)
    assert detector.n_trimmed_ > 0 and caught
    assert {w.filename for w in caught} == {__file__}


def test_a_trimmed_fit_takes_any_array_like():
    class OnlyConverts:
        """An array-like with nothing but ``__array__`` (scikit-learn's checks
        pass such objects)."""

        def __init__(self, array):
            self.array = array

        def __array__(self, dtype=None, copy=None):
            return np.asarray(self.array, dtype=dtype)

    X, _ = _data(n_inliers=100, n_outliers=5)
    params = {**SMALL, "max_iter": 2, "trim_fraction": 0.1}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        wrapped = EBFlowOutlierDetector(**params).fit(OnlyConverts(X))
        plain = EBFlowOutlierDetector(**params).fit(X)
    assert wrapped.n_trimmed_ == plain.n_trimmed_ > 0
    np.testing.assert_array_equal(wrapped.score_samples(X), plain.score_samples(X))


def test_a_row_at_the_threshold_is_flagged_alike_in_any_batch():
    """Where contamination times the rows is not a whole number the quantile fell
    on a training row's score: its decision was exactly 0, and scored alone (its
    score moves in the last bits with the batch) predict could flag it where
    fit_predict did not. offset_ now lies between that score and the next lower."""
    X, _ = _data(n_inliers=200, n_outliers=5)
    detector = _quiet_fit(EBFlowOutlierDetector(contamination=0.004, **SMALL), X)
    scores = detector.score_samples(X)
    assert not np.any(scores == detector.offset_)
    margin = np.abs(scores - detector.offset_).min()
    assert margin > 1e-9 * max(1.0, abs(detector.offset_))
    assert (detector.predict(X) == -1).sum() == int(0.004 * X.shape[0])


def test_score_with_labels_warns_that_it_ignores_them():
    """A GridSearchCV over contamination without scoring= tied every candidate
    on the density's mean log-likelihood, silently."""
    X = np.random.RandomState(0).normal(size=(150, 2))
    detector = EBFlowOutlierDetector(
        max_iter=2, n_flows=1, hidden_layer_sizes=(8,), device="cpu", random_state=0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        detector.fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        unlabelled = detector.score(X)
    with pytest.warns(UserWarning, match="ignores y, contamination"):
        labelled = detector.score(X, np.ones(len(X)))
    assert labelled == unlabelled == pytest.approx(detector.score_samples(X).mean())
