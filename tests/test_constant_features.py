"""Tables every peer accepts: constant, binary, integer, duplicated, one feature."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.ensemble import IsolationForest
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import LocalOutlierFactor

from skebflow import EBFlowDensity, EBFlowOutlierDetector

FAST = dict(n_flows=1, max_iter=40, n_layers=2, device="cpu", random_state=0)


def _table(n_samples: int = 400, seed: int = 0) -> np.ndarray:
    rng = np.random.RandomState(seed)
    return np.c_[
        rng.normal(size=n_samples),
        rng.normal(size=n_samples),
        np.zeros(n_samples),  # a flag that never moves in training
        np.full(n_samples, 7.0),  # a constant reading
        rng.randint(0, 2, n_samples),  # binary
        rng.poisson(3.0, n_samples),  # integer counts
    ]


def _quiet_fit(estimator, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(X)


@pytest.fixture(scope="module")
def detector() -> EBFlowOutlierDetector:
    return _quiet_fit(EBFlowOutlierDetector(**FAST), _table())


def test_detector_fits_columns_constant_in_training(detector):
    X = _table()
    scores = detector.score_samples(X)
    assert np.isfinite(scores).all()
    assert detector.preprocessing_.steps[0].scale[2].item() == pytest.approx(1e-3)


@pytest.mark.parametrize("column, value", [(2, 1.0), (3, 7.5), (3, 6.0)])
def test_a_departure_from_a_constant_is_strongly_anomalous(detector, column, value):
    X = _table()
    fresh = _table(seed=1)[:50]
    departed = fresh.copy()
    departed[:, column] = value
    scores = detector.score_samples(departed)
    # Below every training row, and flagged.
    assert scores.max() < detector.score_samples(X).min()
    assert (detector.predict(departed) == -1).all()
    # GaussianMixture's variance floor does the same.
    mixture = GaussianMixture(random_state=0).fit(X)
    assert mixture.score_samples(departed).max() < mixture.score_samples(X).min()


@pytest.mark.parametrize("base_scale, widths", [(1.0, 10.0), (3.0, 30.0)])
def test_the_departure_costs_about_half_its_width_squared(base_scale, widths):
    # k widths of 1e-3 away cost about k^2 / 2 nats under the trained flow, and
    # (k / s)^2 / 2 under its base widened by s: 50 nats in both cases here.
    detector = _quiet_fit(
        EBFlowOutlierDetector(base_scale=base_scale, **FAST), _table()
    )
    fresh = _table(seed=1)[:200]
    moved = fresh.copy()
    moved[:, 3] += widths * 1e-3
    drop = detector.score_samples(fresh) - detector.score_samples(moved)
    assert np.median(drop) == pytest.approx(0.5 * (widths / base_scale) ** 2, rel=0.3)


def test_under_fc_a_departure_costs_less_but_still_ranks_below_every_row():
    """The documented limit of the rule: the "fc" flow (a single-feature table's)
    learns the constant column's narrow normal near it, but its tails beyond a few
    widths are heavier than a normal's, so a departure costs less than k**2 / 2
    nats; it still grows with k and ranks below every training row."""
    rng = np.random.RandomState(0)
    X = np.c_[np.zeros(300), rng.normal(size=(300, 2))]
    detector = _quiet_fit(EBFlowOutlierDetector(architecture="fc", **FAST), X)
    fresh = np.c_[np.zeros(100), np.random.RandomState(1).normal(size=(100, 2))]
    drops = []
    for widths in (10, 100, 1000):
        moved = fresh.copy()
        moved[:, 0] = widths * 1e-3
        scores = detector.score_samples(moved)
        drops.append(np.median(detector.score_samples(fresh) - scores))
        assert scores.max() < detector.score_samples(X).min()
        assert (detector.predict(moved) == -1).all()
    # growing faster than linearly in k
    assert drops[0] > 1.0 and drops[1] > 10 * drops[0] and drops[2] > 10 * drops[1]


def test_the_peers_accept_the_same_table():
    X = _table()
    for peer in (IsolationForest(random_state=0), GaussianMixture(random_state=0)):
        assert np.isfinite(peer.fit(X).score_samples(X)).all()
    assert np.isfinite(LocalOutlierFactor().fit(X).negative_outlier_factor_).all()


def test_density_refuses_constant_features_by_default_and_says_what_to_do():
    with pytest.raises(ValueError, match=r"\[2, 3\].*constant_features='narrow'"):
        EBFlowDensity(**FAST).fit(_table())


def test_density_models_them_when_asked():
    X = _table()
    est = _quiet_fit(EBFlowDensity(constant_features="narrow", **FAST), X)
    assert np.isfinite(est.score_samples(X)).all()
    samples = est.sample(500, random_state=0)
    # Samples of the constant columns lie within a few widths of their value.
    assert np.abs(samples[:, 2]).max() < 0.02
    assert np.abs(samples[:, 3] - 7.0).max() < 0.02


def test_narrow_needs_standardization():
    with pytest.raises(ValueError, match="preprocessing='standardize'"):
        EBFlowDensity(constant_features="narrow", preprocessing="logit").fit(_table())


def test_constant_integer_columns_are_not_dequantized():
    X = _table()
    est = _quiet_fit(
        EBFlowDensity(constant_features="narrow", dequantize=True, **FAST), X
    )
    (dequantize,) = [
        step
        for step in est.preprocessing_.steps
        if type(step).__name__ == "UniformDequantize"
    ]
    columns = dequantize.columns.tolist()
    # Integer-valued: columns 2 to 5; dequantized: only the two that vary.
    assert columns == [False, False, False, False, True, True]
    assert np.isfinite(est.score_samples(X)).all()


def test_one_feature():
    X = np.random.RandomState(0).normal(size=(300, 1))
    detector = _quiet_fit(EBFlowOutlierDetector(**FAST), X)
    assert detector.flow_.n_features == 1
    assert detector.predict([[0.0], [9.0]]).tolist() == [1, -1]
    with pytest.raises(ValueError, match="architecture='fc'"):
        EBFlowOutlierDetector(architecture="coupling", **FAST).fit(X)


def test_duplicated_rows():
    rng = np.random.RandomState(0)
    X = np.repeat(rng.normal(size=(30, 3)), 10, axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with pytest.warns(UserWarning, match="30 distinct rows among 300"):
            EBFlowOutlierDetector(**{**FAST, "max_iter": 1}).fit(X)
        # The jitter the warning recommends silences it: the rows are smoothed.
        warnings.filterwarnings("error", message=".*distinct rows among")
        detector = EBFlowOutlierDetector(jitter=0.05, **FAST).fit(X)
    assert np.isfinite(detector.score_samples(X)).all()
    assert detector.predict([[0.0, 0.0, 0.0], [9.0, 9.0, 9.0]])[1] == -1
    assert np.isfinite(IsolationForest(random_state=0).fit(X).score_samples(X)).all()


def test_warm_start_refuses_a_change_of_constant_features():
    X = np.random.RandomState(0).normal(size=(200, 2))
    est = _quiet_fit(EBFlowDensity(warm_start=True, **FAST), X)
    est.set_params(constant_features="narrow")
    with pytest.raises(ValueError, match="constant_features="):
        est.fit(X)


# ----------------------------------------------------------- linear relations


def test_linear_relations_finds_a_redundant_column_and_only_a_real_one():
    from skebflow._validation import linear_relations

    rng = np.random.RandomState(0)
    X = rng.normal(size=(5000, 5)) * [1e6, 1.0, 1e-6, 3.0, 1.0]
    assert linear_relations(X)[0] == 0
    related = X.copy()
    related[:, 4] = related[:, 0] * 1e-6 - 2.0 * related[:, 2] * 1e6 + 7.0
    n_relations, columns = linear_relations(related)
    assert n_relations == 1 and columns.tolist() == [0, 2, 4]
    # two relations; the evenly spread sample of 2 000 rows finds them
    related[:, 3] = related[:, 1] - related[:, 4]
    assert linear_relations(related)[0] == 2
    # nearly related (a spread of 1e-4 standard deviations) is not a relation
    near = X.copy()
    near[:, 4] = near[:, 1] + 1e-4 * rng.normal(size=5000)
    assert linear_relations(near)[0] == 0
    # a column zero in the sampled rows but not in one other row: no relation
    rare = X.copy()
    rare[:, 4] = 0.0
    rare[1, 4] = 1.0
    assert linear_relations(rare)[0] == 0
    # no more rows than columns: such rows always lie on a hyperplane; one more
    # row than columns shows a real relation
    assert linear_relations(related[:5])[0] == 0
    assert linear_relations(related[:6])[0] == 2
    # columns that vary only on rows the evenly spread sample skips add spurious
    # candidates that eigh mixes with the real relation: the span is tested
    for seed in range(10):
        generator = np.random.RandomState(seed)
        base = generator.normal(size=(5000, 2))
        rare = np.zeros((5000, 3))
        for j in range(3):
            rare[generator.choice(np.arange(1, 5000, 3), 2, replace=False), j] = 1.0
        table = np.c_[base, base.sum(axis=1), rare]
        assert linear_relations(table, max_rows=2000)[0] == 1, seed


def test_linear_relations_are_not_fooled_by_a_gross_outlier():
    """One row far out in every column (a sentinel such as 1e9) made each column's
    standard deviation its own, the other rows shrank to nothing in those units,
    and every direction away from it looked flat: full-rank data were called a
    hyperplane. In robust units they are not, and a real relation still shows."""
    from skebflow._validation import linear_relations

    rng = np.random.RandomState(0)
    for outlier in ([1e8, -1e8, 1e8], [1e9, 1e9, 1e9]):
        X = rng.normal(size=(500, 3))
        X[0] = outlier
        assert linear_relations(X)[0] == 0
    X = rng.normal(size=(500, 4))
    X[:, 3] = 2.0 * X[:, 0] - X[:, 1] + 5.0
    X[0] = [1e9, 1e9, 1e9, 1e9 + 5.0]  # on the relation, far out
    n_relations, columns = linear_relations(X)
    assert n_relations == 1 and columns.tolist() == [0, 1, 3]


def test_a_one_bin_column_passes_the_logit_box_checks():
    """Under preprocessing="logit" a one-bin column passes the logit by, and its
    tails score any value: a later chunk or an observed value there is not
    refused as outside the box (it was, with "no density", while scored)."""
    rng = np.random.RandomState(0)
    X = np.c_[np.zeros(200), rng.randint(0, 10, 200).astype(float),
              rng.uniform(0, 1, 200)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = EBFlowDensity(preprocessing="logit", dequantize=True, **TINY).fit(X)
        Y = X[:5].copy()
        Y[:, 0] = 3.0
        assert np.isfinite(est.score_samples(Y)).all()
        est.partial_fit(Y)
        Y[:, 1] = np.nan
        filled = est.sample_conditional(Y, random_state=0, n_steps=5)
    assert np.all(filled[:, 0] == 3.0) and np.isfinite(filled).all()


def _total_table(n_samples: int = 300):
    import pandas as pd

    rng = np.random.RandomState(0)
    X = rng.normal(size=(n_samples, 3))
    return pd.DataFrame(
        np.c_[X, X[:, 0] + X[:, 1]], columns=["a", "b", "c", "total"]
    )


TINY = dict(n_flows=1, max_iter=2, n_layers=1, hidden_layer_sizes=(8,), device="cpu",
            random_state=0)


@pytest.mark.parametrize("estimator", [EBFlowDensity, EBFlowOutlierDetector])
@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_rows_on_a_hyperplane_warn_and_name_the_features(estimator, method):
    """With ``linear_relations="warn"`` (the default models them instead; see
    tests/test_linear_relations.py)."""
    with pytest.warns(UserWarning, match=r"hyperplane.*\['a', 'b', 'total'\]") as w:
        getattr(estimator(linear_relations="warn", **TINY), method)(_total_table())
    (warning,) = [x for x in w if "hyperplane" in str(x.message)]
    assert warning.filename == __file__  # the caller's line


def test_a_likelihood_refinement_after_smoothed_training_warns():
    """dsm smooths the rows, but the likelihood refinement after it trains on
    them as they are: the warning stands with ``linear_relations="warn"``, and
    the default models the relation."""
    params = {**TINY, "objective": "dsm", "likelihood_refinement": 2}
    with pytest.warns(UserWarning, match="hyperplane"):
        EBFlowDensity(linear_relations="warn", **params).fit(_total_table())
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        narrowed = EBFlowDensity(**params).fit(_total_table())
    assert narrowed.dependent_features_.tolist() == [False, False, False, True]


@pytest.mark.parametrize(
    "params",
    [
        {"jitter": 1e-3},  # the data are smoothed
        # the objective smooths them, and no likelihood refinement follows
        {"objective": "dsm", "likelihood_refinement": 0},
        # annealed (by default) to noise_std and held there
        {"objective": "ssm", "likelihood_refinement": 0},
    ],
)
def test_smoothed_training_or_a_full_rank_table_does_not_warn(params):
    table = _total_table()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        EBFlowDensity(**{**TINY, **params}).fit(table)
        EBFlowDensity(**TINY).fit(table.drop(columns="total"))
        # one-hot columns sum to one, but dequantization's noise breaks that
        one_hot = np.eye(3)[np.random.RandomState(0).randint(0, 3, 300)]
        EBFlowDensity(**TINY).fit(np.c_[table.to_numpy()[:, :2], one_hot])
