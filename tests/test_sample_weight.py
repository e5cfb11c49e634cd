"""``sample_weight`` in ``fit``: integer weights act like repeated rows.

Exactly where the computation is deterministic (the preprocessing statistics, a
full-batch loss and its gradient step, the held-out scores, the detector's
threshold) and in expectation where it is stochastic (a whole fit), tested by the
held-out log-likelihood over several seeds.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from _helpers import assert_threshold_at_quantile
from sklearn.exceptions import ConvergenceWarning

from skebflow import EBFlowDensity, EBFlowImputer, EBFlowOutlierDetector
from skebflow._preparation import fit_preprocessing_spec, split_for_early_stopping
from skebflow._training import TrainingConfig, _Trainer, evaluate_objective
from skebflow.flows import Preprocessing, fc
from skebflow.objectives import bind_objective

FAST = dict(n_flows=1, max_iter=5, n_layers=1, hidden_layer_sizes=(8,), device="cpu")


def _data(rng: np.random.RandomState, n: int) -> np.ndarray:
    x = rng.normal(size=(n, 2))
    x[:, 1] = 0.8 * x[:, 0] + 0.6 * x[:, 1]
    return x


def _weights(rng: np.random.RandomState, X: np.ndarray) -> np.ndarray:
    # 0 to 4, heavier on the right half: the weighted density differs from X's.
    return rng.randint(0, 3, size=len(X)) + 2 * (X[:, 0] > 0)


@pytest.fixture(scope="module")
def rows():
    rng = np.random.RandomState(0)
    X = _data(rng, 200)
    return X, _weights(rng, X)


# ------------------------------------------------- exact where it is deterministic


@pytest.mark.parametrize("kind", ["standardize", "logit"])
@pytest.mark.parametrize("dequantize", [False, True])
def test_weighted_statistics_equal_those_of_repeated_rows(rows, kind, dequantize):
    X, w = rows
    X = np.c_[X, np.round(3 * X[:, 0])]  # an integer column, for dequantize
    settings = dict(
        kind=kind,
        dequantize=dequantize,
        constant_features="error",
        bounds=None,
        logit_alpha=1.0,
    )
    weighted = fit_preprocessing_spec(X, sample_weight=w.astype(float), **settings)
    repeated = fit_preprocessing_spec(X.repeat(w, axis=0), **settings)
    assert weighted.keys() == repeated.keys()
    for key, value in repeated.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_allclose(weighted[key], value, rtol=1e-12, err_msg=key)
        else:
            assert weighted[key] == value


def test_zero_weight_rows_do_not_count_for_the_statistics():
    X = np.array([[0.0, 0.0], [1.0, 2.0], [2.0, 5.0], [100.0, -50.0]])
    settings = dict(
        dequantize=False, constant_features="error", bounds=None, logit_alpha=1.0
    )
    for kind in ("standardize", "logit"):
        weighted = fit_preprocessing_spec(
            X, kind=kind, sample_weight=np.array([1.0, 1.0, 1.0, 0.0]), **settings
        )
        removed = fit_preprocessing_spec(X[:3], kind=kind, **settings)
        for key in ("mean", "scale", "lower", "upper"):
            if key in removed:
                np.testing.assert_allclose(weighted[key], removed[key], rtol=1e-14)


def test_a_constant_column_among_the_weighted_rows_is_detected():
    # Column 0 varies only on a row of weight zero: constant for the fit.
    X = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 2.0], [7.0, 3.0]])
    with pytest.raises(ValueError, match=r"Feature\(s\) \[0\] of X are constant"):
        EBFlowDensity(**FAST).fit(X, sample_weight=[1, 1, 1, 0])


def test_the_weighted_loss_and_its_step_equal_those_of_repeated_rows(rows):
    X, w = rows
    x = torch.from_numpy(X)
    repeated = torch.from_numpy(X.repeat(w, axis=0))
    initial = fc(2, n_layers=2, generator=torch.Generator().manual_seed(0))
    results = []
    for x_train, weights in ((x, torch.from_numpy(w.astype(float))), (repeated, None)):
        flow = fc(2, n_layers=2)
        flow.load_state_dict(initial.state_dict())
        config = TrainingConfig(objective="ml", batch_size=x_train.shape[0])
        trainer = _Trainer(flow, Preprocessing(), config, torch.Generator())
        loss = trainer.epoch(x_train, weights, epoch=1)  # one full batch, one step
        results.append((loss, [p.detach().clone() for p in flow.parameters()]))
    (weighted_loss, weighted_step), (repeated_loss, repeated_step) = results
    assert weighted_loss == pytest.approx(repeated_loss, rel=1e-5)
    for a, b in zip(weighted_step, repeated_step, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_the_weighted_batch_loss_is_unbiased_over_random_batches(rows, monkeypatch):
    # Through the trainer itself, with the optimizer's step disabled so that the
    # flow stays put: every batch's loss is the mean of its rows' losses times their
    # weights divided by the mean weight of ALL rows (a batch normalized by its own
    # weights would be biased), and over many random batches the mean batch loss is
    # the exact weighted objective, up to the sampling error of the batches.
    import skebflow._training as training

    X, w = rows
    x = torch.from_numpy(X).float()
    flow = fc(2, n_layers=2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        per_row = bind_objective("ml")(flow, x)
    weight = torch.from_numpy(w.astype(np.float32))
    exact = float((per_row * weight).sum() / weight.sum())
    index_of = {tuple(row): i for i, row in enumerate(x.tolist())}
    real, recorded = training._batch_loss, []

    def checked(flow_, objective, batch, config, generator, weights):
        loss = real(flow_, objective, batch, config, generator, weights)
        index = torch.tensor([index_of[tuple(row)] for row in batch.tolist()])
        expected = (per_row[index] * weight[index]).mean() / weight.mean()
        assert float(loss) == pytest.approx(float(expected), rel=1e-5)
        recorded.append(float(loss))
        return loss

    monkeypatch.setattr(training, "_batch_loss", checked)
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, *a, **k: None)
    config = TrainingConfig(objective="ml", batch_size=16)
    trainer = _Trainer(flow, Preprocessing(), config, torch.Generator().manual_seed(1))
    for epoch in range(1, 41):
        trainer.epoch(x, torch.from_numpy(w.astype(float)), epoch=epoch)
    assert len(recorded) > 400
    error = np.std(recorded) / np.sqrt(len(recorded))
    assert abs(np.mean(recorded) - exact) < 4 * error


def test_weighted_held_out_loss_equals_that_of_repeated_rows(rows):
    X, w = rows
    flow = fc(2, generator=torch.Generator().manual_seed(0))
    objective = bind_objective("ml")  # deterministic per row
    x = torch.from_numpy(X).float()
    weighted = evaluate_objective(
        flow,
        objective,
        Preprocessing(),
        x,
        seed=0,
        weights=torch.from_numpy(w.astype(float)),
        chunk_size=64,
    )
    repeated = evaluate_objective(
        flow,
        objective,
        Preprocessing(),
        torch.from_numpy(X.repeat(w, axis=0)).float(),
        seed=0,
    )
    assert weighted == pytest.approx(repeated, rel=1e-5)


def test_early_stopping_watches_the_weighted_held_out_likelihood(rows):
    X, w = rows
    est = EBFlowDensity(
        random_state=0,
        max_iter=8,
        n_iter_no_change=3,
        tol=1e-2,
        early_stopping_metric="log_likelihood",
        **{k: v for k, v in FAST.items() if k != "max_iter"},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, sample_weight=w)
    # The same split as the fit: the rows of positive weight, then the estimator's
    # random state after drawing the seed.
    kept, weights = X[w > 0], w[w > 0].astype(float)
    rng = np.random.RandomState(0)
    rng.randint(np.iinfo(np.int32).max)
    _, validation = split_for_early_stopping(kept, 0.1, rng)
    scores = est.score_samples(kept[validation])
    weighted = np.average(scores, weights=weights[validation])
    assert est.best_validation_score_ == pytest.approx(weighted, abs=1e-4)
    assert weighted != pytest.approx(scores.mean(), abs=1e-4)


# ----------------------------------------------- bit for bit where they are equal


def test_equal_weights_are_the_unweighted_fit_bit_for_bit(rows):
    X, _ = rows
    reference = EBFlowDensity(random_state=0, **FAST).fit(X).score_samples(X)
    for weights in (np.full(len(X), 2.5), 3, [1] * len(X)):
        est = EBFlowDensity(random_state=0, **FAST).fit(X, sample_weight=weights)
        assert np.array_equal(est.score_samples(X), reference)


def test_zero_weight_is_a_removed_row_bit_for_bit(rows):
    X, _ = rows
    keep = np.arange(len(X)) % 3 != 0
    removed = EBFlowDensity(random_state=0, **FAST).fit(X[keep])
    weighted = EBFlowDensity(random_state=0, **FAST).fit(
        X, sample_weight=keep.astype(float)
    )
    assert np.array_equal(weighted.score_samples(X), removed.score_samples(X))
    detector = EBFlowOutlierDetector(random_state=0, **FAST)
    assert detector.fit(X, sample_weight=2.0 * keep).offset_ == (
        EBFlowOutlierDetector(random_state=0, **FAST).fit(X[keep]).offset_
    )


def test_weights_are_not_modified(rows):
    X, w = rows
    weights = w.astype(float)
    weights.setflags(write=False)  # read-only input is fine too
    copy = weights.copy()
    EBFlowDensity(random_state=0, **FAST).fit(X, sample_weight=weights)
    EBFlowOutlierDetector(random_state=0, **FAST).fit(X, sample_weight=weights)
    assert np.array_equal(weights, copy)


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        (-np.ones(200), "sample_weight has 200 negative value"),
        (np.ones(199), "sample_weight has 199 entries, but X has 200 rows"),
        (np.ones((200, 2)), r"1-D array or a number, got an array of shape \(200, 2\)"),
        (np.zeros(200), "sample_weight sums to zero"),
        (np.r_[np.nan, np.ones(199)], "sample_weight contains NaN"),
        (np.r_[np.inf, np.ones(199)], "sample_weight contains infinity"),
        (np.r_[1.0, np.zeros(199)], "positive weight to 1 row"),
        (np.r_[1e308, np.full(199, 1e-308)], "199 positive weight.s. .* vanish"),
    ],
)
def test_bad_weights_are_refused_clearly(rows, weights, match):
    X, _ = rows
    for est in (EBFlowDensity(**FAST), EBFlowOutlierDetector(**FAST)):
        with pytest.raises(ValueError, match=match):
            est.fit(X, sample_weight=weights)
        assert not hasattr(est, "flow_")


# -------------------------------------------- the detector's weighted threshold


def test_the_detector_threshold_is_the_weighted_quantile(rows):
    X, w = rows
    detector = EBFlowOutlierDetector(contamination=0.1, random_state=0, **FAST)
    detector.fit(X, sample_weight=w)
    scores = detector.score_samples(X)
    # The integer weights' quantile is the repeated rows' (averaged inverted CDF).
    repeated = np.repeat(scores, w)
    assert_threshold_at_quantile(
        detector.offset_,
        repeated,
        np.percentile(repeated, 10.0, method="averaged_inverted_cdf"),
    )
    # As for repeated rows: about 10 % of the weight lies below it.
    below = w[scores < detector.offset_].sum() / w.sum()
    assert abs(below - 0.1) <= w.max() / w.sum()
    unweighted = np.percentile(scores, 10.0)
    assert detector.offset_ != pytest.approx(unweighted, abs=1e-6)


def test_the_threshold_of_integer_weights_is_that_of_the_rows_repeated(rows):
    """The same scores gave two thresholds: without weights numpy's linear
    interpolation, with weights the averaged inverted CDF, so a fit on repeated
    rows and one with the same whole-number weights flagged different rows (3.7 %
    against 11 % of the repeated rows in a reviewer's case)."""
    X, w = rows
    detector = EBFlowOutlierDetector(contamination=0.1, random_state=0, **FAST)
    detector.fit(X, sample_weight=w)
    repeated = np.repeat(X, w, axis=0)
    for contamination in (0.05, 0.1, 0.13, 0.3):
        detector.set_params(contamination=contamination)
        assert detector._offset(repeated, None) == detector._offset(X, w)
    # Without ties it flags floor(contamination * n) of the n training rows.
    scores = detector.score_samples(X)
    for contamination in (0.05, 0.1, 0.13, 0.3):
        detector.set_params(contamination=contamination)
        flagged = int(np.sum(scores < detector._offset(X, None)))
        assert flagged == int(np.floor(contamination * len(X)))


# -------------------------------------------------- in expectation: a whole fit


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_integer_weights_fit_like_repeated_rows_in_expectation():
    """Over 4 seeds, the held-out log-likelihood (on data drawn from the weighted
    distribution) of weighted fits differs from that of fits on the repeated rows by
    no more than a few standard errors of the paired differences, while fits that
    ignore the weights are clearly worse. Measured: weighted - repeated = 0.002 +-
    0.002 nats, unweighted - repeated = -0.083 +- 0.008 (5 seeds)."""
    settings = dict(
        n_layers=1,
        hidden_layer_sizes=(16,),
        coupling_transform="affine",
        device="cpu",
        early_stopping=False,
        max_iter=25,
        batch_size=64,
        learning_rate=1e-2,
        learning_rate_schedule="constant",
    )
    rng = np.random.RandomState(0)
    population = _data(rng, 20000)
    population_weights = _weights(rng, population)
    repeated_population = population.repeat(population_weights, axis=0)
    test = repeated_population[rng.permutation(len(repeated_population))[:8000]]
    weighted_minus_repeated, ignored_minus_repeated = [], []
    for seed in range(4):
        sample_rng = np.random.RandomState(100 + seed)
        X = _data(sample_rng, 300)
        w = _weights(sample_rng, X)
        repeated = EBFlowDensity(random_state=seed, **settings).fit(X.repeat(w, axis=0))
        weighted = EBFlowDensity(random_state=seed, **settings).fit(X, sample_weight=w)
        ignored = EBFlowDensity(random_state=seed, **settings).fit(X)
        weighted_minus_repeated.append(weighted.score(test) - repeated.score(test))
        ignored_minus_repeated.append(ignored.score(test) - repeated.score(test))
    difference = np.array(weighted_minus_repeated)
    error = difference.std(ddof=1) / np.sqrt(len(difference))
    assert abs(difference.mean()) < 4 * error + 0.005, weighted_minus_repeated
    assert np.mean(ignored_minus_repeated) < -0.03, ignored_minus_repeated


# --------------------------------------------------------------------- the imputer


def test_the_imputer_passes_the_weights_to_its_density(rows):
    X, w = rows
    imputer = EBFlowImputer(EBFlowDensity(**FAST), n_refits=0, random_state=0)
    imputer.fit(X, sample_weight=w)  # no NaN: the density fits X itself
    # the kernel marginals' wide normals sit at the weighted means
    spec = imputer.estimator_._preprocessing_spec
    mapped = spec["kde_columns"]
    np.testing.assert_allclose(
        spec["kde_wide_loc"],
        np.average(X, axis=0, weights=w)[mapped],
        rtol=1e-12,
    )
    holes = X.copy()
    holes[::7, 1] = np.nan
    settings = dict(n_refits=1, n_steps=5, n_imputations=2, random_state=0)
    plain = EBFlowImputer(EBFlowDensity(**FAST), **settings).fit(holes)
    equal = EBFlowImputer(EBFlowDensity(**FAST), **settings).fit(
        holes, sample_weight=np.full(len(X), 2.0)
    )
    assert np.array_equal(
        plain.estimator_.score_samples(X), equal.estimator_.score_samples(X)
    )


# ------------------------------- the package's own weight checks and quantile


@pytest.mark.parametrize("seed", range(20))
def test_the_weighted_percentile_is_that_of_repeated_rows(seed):
    from skebflow._outlier import _weighted_percentile

    rng = np.random.RandomState(seed)
    n = rng.randint(1, 40)
    # ties (integer values) and exact hits of the rank (quarters of a total of 8)
    values = rng.randint(0, 5, n).astype(float) if seed % 2 else rng.normal(size=n)
    weights = rng.randint(1, 7, n)
    for percentile in (1.0, 5.0, 12.5, 20.0, 25.0, 50.0, 99.0):
        expected = np.percentile(
            np.repeat(values, weights), percentile, method="averaged_inverted_cdf"
        )
        # whole numbers, and the same weights divided by their largest (as the
        # fit passes them: the rank's exact hits must survive the rounding)
        for scaled in (weights.astype(float), weights / weights.max(), weights / 3.0):
            assert _weighted_percentile(values, scaled, percentile) == pytest.approx(
                expected, abs=1e-12
            )
    # equal weights of any size are the unweighted quantile
    assert _weighted_percentile(values, np.full(n, 0.3), 10.0) == pytest.approx(
        np.percentile(values, 10.0, method="averaged_inverted_cdf"), abs=1e-12
    )


def test_a_number_is_every_rows_weight(rows):
    from skebflow._validation import validated_sample_weight

    X, _ = rows
    assert np.array_equal(validated_sample_weight(2.5, len(X)), np.full(len(X), 2.5))
    est = EBFlowDensity(random_state=0, **FAST).fit(X, sample_weight=3.0)
    reference = EBFlowDensity(random_state=0, **FAST).fit(X)
    assert np.array_equal(est.score_samples(X), reference.score_samples(X))
