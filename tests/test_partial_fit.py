"""``partial_fit``: one epoch per chunk, continuing one optimisation.

The optimizer's moments, the EMA of the weights and the generator carry over from
call to call (and through pickling, safe files and dask's workers); a failed call
changes nothing.
"""

from __future__ import annotations

import pickle
import sys
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

import skebflow
import skebflow._density as density_module
from skebflow import EBFlowDensity, EBFlowOutlierDetector

SMALL = dict(
    n_flows=1,
    n_layers=1,
    hidden_layer_sizes=(16,),
    coupling_transform="affine",
    batch_size=64,
    learning_rate=1e-2,
    device="cpu",
)


def _data(rng: np.random.RandomState, n: int) -> np.ndarray:
    x = rng.normal(size=(n, 2))
    x[:, 1] = 0.8 * x[:, 0] + 0.6 * x[:, 1] + 0.3 * x[:, 0] ** 2
    return x


@pytest.fixture(scope="module")
def data():
    return _data(np.random.RandomState(10), 600), _data(np.random.RandomState(0), 3000)


def _steps(est: EBFlowDensity) -> int:
    return int(est._partial_fit_state["optimizer"]["state"]["0"]["step"])


def _same_model(a: EBFlowDensity, b: EBFlowDensity, X: np.ndarray) -> bool:
    return np.array_equal(a.score_samples(X), b.score_samples(X)) and all(
        np.array_equal(a._partial_fit_state[key][name], b._partial_fit_state[key][name])
        for key in ("flow", "ema")
        for name in a._partial_fit_state[key]
    )


def test_later_calls_continue_the_model(data):
    X, test = data
    chunks = np.array_split(X, 5)
    est = EBFlowDensity(random_state=0, **SMALL).partial_fit(chunks[0])
    after_one = est.score(test)
    steps = [_steps(est)]
    for chunk in chunks[1:]:
        est.partial_fit(chunk)
        steps.append(_steps(est))
    # 120 rows in batches of 64: 2 optimizer steps per call, never reset.
    assert steps == [2, 4, 6, 8, 10]
    assert est._partial_fit_state["ema_updates"] == 10
    assert est.n_iter_ == len(est.loss_curve_) == 5
    assert est.validation_scores_ is None and not est.converged_
    assert est.flow_.dtype == torch.float64
    with torch.no_grad():
        assert est.log_normalizer_ == float(est.flow_.log_normalizer())
    # Measured: -2.79 after one call, -2.50 after five.
    assert est.score(test) > after_one + 0.1


def test_the_standardization_comes_from_the_first_chunk(data):
    X, _ = data
    est = EBFlowDensity(random_state=0, **SMALL).partial_fit(X[:100])
    est.partial_fit(X[100:] + 5.0)
    first = EBFlowDensity(random_state=0, **SMALL).partial_fit(X[:100])
    for name, value in first.preprocessing_.state_dict().items():
        assert torch.equal(est.preprocessing_.state_dict()[name], value), name
    plain = EBFlowDensity(random_state=0, marginal_transform=None, **SMALL)
    plain.partial_fit(X[:100]).partial_fit(X[100:] + 5.0)
    mean = plain.preprocessing_.steps[0].mean.numpy()
    np.testing.assert_allclose(mean, X[:100].mean(axis=0), rtol=1e-12)


def test_chunks_end_close_to_a_fit_with_as_many_passes(data):
    """8 passes over 5 chunks against ``fit`` with ``max_iter=8`` (no early stopping,
    constant learning rate) on the same 600 rows: the held-out log-likelihoods agree
    to within 0.05 nats per row. Measured over seeds 0, 1, 2: differences of 0.001,
    -0.0004 and 0.015 nats (the chunked fit standardizes by the first chunk and
    draws different batches)."""
    X, test = data
    for seed in (0, 1):
        chunked = EBFlowDensity(random_state=seed, **SMALL)
        for _ in range(8):
            for chunk in np.array_split(X, 5):
                chunked.partial_fit(chunk)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            whole = EBFlowDensity(
                random_state=seed,
                early_stopping=False,
                max_iter=8,
                learning_rate_schedule="constant",
                **SMALL,
            ).fit(X)
        assert chunked.n_iter_ == 40
        assert abs(chunked.score(test) - whole.score(test)) < 0.05


def test_pickling_or_saving_between_calls_continues_identically(data, tmp_path):
    X, test = data
    first, second = X[:300], X[300:]
    reference = EBFlowDensity(random_state=0, **SMALL).partial_fit(first)
    pickled = pickle.loads(pickle.dumps(reference))
    path = tmp_path / "model.safetensors"
    skebflow.save(reference, path)
    loaded = skebflow.load(path)
    for est in (reference, pickled, loaded):
        est.partial_fit(second)
    assert _same_model(pickled, reference, test)
    assert _same_model(loaded, reference, test)
    assert _steps(loaded) == _steps(reference) == 10


def test_equal_weights_in_a_chunk_are_the_unweighted_call(data):
    X, test = data
    plain = EBFlowDensity(random_state=0, **SMALL).partial_fit(X[:200])
    plain.partial_fit(X[200:400])
    weighted = EBFlowDensity(random_state=0, **SMALL).partial_fit(
        X[:200], sample_weight=np.full(200, 4.0)
    )
    weighted.partial_fit(X[200:400], sample_weight=np.ones(200))
    assert _same_model(weighted, plain, test)
    other = EBFlowDensity(random_state=0, **SMALL).partial_fit(
        X[:200], sample_weight=np.arange(200) % 3
    )
    assert not np.array_equal(other.score_samples(test), plain.score_samples(test))


def test_a_feature_count_change_is_refused_and_changes_nothing(data):
    X, _ = data
    est = EBFlowDensity(random_state=0, **SMALL).partial_fit(X[:200])
    state, flow = est._partial_fit_state, est.flow_
    with pytest.raises(ValueError, match="X has 1 features, but EBFlowDensity is"):
        est.partial_fit(X[200:400, :1])
    assert est._partial_fit_state is state and est.flow_ is flow
    assert est.n_iter_ == 1
    with pytest.raises(ValueError, match="minimum of 2 is required"):
        EBFlowDensity(**SMALL).partial_fit(X[:1])
    est.partial_fit(X[200:201])  # later chunks may have a single row
    assert est.n_iter_ == 2


def test_an_interrupted_call_leaves_the_previous_state(data, monkeypatch):
    X, test = data
    est = EBFlowDensity(random_state=0, **SMALL).partial_fit(X[:200])
    before = est.score_samples(test)
    state, flow = est._partial_fit_state, est.flow_
    real = density_module.train_epoch

    def interrupted(trainer, *args, **kwargs):
        real(trainer, *args, **kwargs)  # trains the copy, then the user hits ^C
        raise KeyboardInterrupt

    monkeypatch.setattr(density_module, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        est.partial_fit(X[200:400])
    assert est._partial_fit_state is state and est.flow_ is flow
    assert np.array_equal(est.score_samples(test), before) and est.n_iter_ == 1


def test_a_diverging_chunk_is_discarded(data, monkeypatch):
    import skebflow._training as training

    X, test = data
    est = EBFlowDensity(random_state=0, **SMALL).partial_fit(X[:200])
    before = est.score_samples(test)
    real = training.bind_objective

    def nan_loss(name, **settings):
        loss = real(name, **settings)
        return lambda flow, x, *, generator: loss(flow, x, generator=generator) * np.nan

    monkeypatch.setattr(training, "bind_objective", nan_loss)
    with pytest.warns(ConvergenceWarning, match="discarded this chunk") as caught:
        est.partial_fit(X[200:400])
    assert np.array_equal(est.score_samples(test), before)
    assert all(torch.isfinite(p).all() for p in est.flow_.parameters())
    assert est.n_iter_ == 1
    # Four bad batches, fewer than max_bad_batches in a row: the weights never
    # moved, so the warning says the batches were skipped, not that training
    # diverged.
    (message,) = [str(w.message) for w in caught if "discarded" in str(w.message)]
    assert "Every batch of epoch 2 was skipped" in message
    assert "diverged" not in message
    # Past max_bad_batches (20) in a row it is a divergence, and says so.
    with pytest.warns(ConvergenceWarning, match="Training diverged.*discarded"):
        est.partial_fit(np.vstack([X, X, X])[: 64 * 22])
    assert np.array_equal(est.score_samples(test), before)


def test_fit_after_partial_fit_starts_afresh(data):
    X, test = data
    est = EBFlowDensity(random_state=0, max_iter=3, **SMALL).partial_fit(X[:200])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X)
        fresh = EBFlowDensity(random_state=0, max_iter=3, **SMALL).fit(X)
    assert not hasattr(est, "_partial_fit_state")
    assert est.n_iter_ == fresh.n_iter_
    assert np.array_equal(est.score_samples(test), fresh.score_samples(test))


def test_partial_fit_after_fit_continues_the_fitted_flow(data):
    X, test = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = EBFlowDensity(random_state=0, max_iter=3, **SMALL).fit(X)
    state = {k: v.clone() for k, v in est.preprocessing_.state_dict().items()}
    n_iter = est.n_iter_
    est.partial_fit(X[:200] + 1.0)
    assert est.n_iter_ == n_iter + 1 == len(est.loss_curve_)
    for name, value in est.preprocessing_.state_dict().items():
        assert torch.equal(value, state[name]), name
    est.set_params(n_layers=2)
    with pytest.raises(ValueError, match="partial_fit continues the fitted flow"):
        est.partial_fit(X[:200])
    # with warm_start=True, fit refuses the change too: the advice says so
    est.set_params(warm_start=True)
    with pytest.raises(ValueError, match="Call fit with warm_start=False to start"):
        est.partial_fit(X[:200])


def test_the_detector_threshold_follows_the_latest_chunk(data):
    X, _ = data
    detector = EBFlowOutlierDetector(contamination=0.1, random_state=0, **SMALL)
    for chunk in np.array_split(X, 3):
        detector.partial_fit(chunk)
    assert detector.n_iter_ == 3
    assert detector.offset_ == pytest.approx(
        np.percentile(
            detector.score_samples(chunk), 10.0, method="averaged_inverted_cdf"
        )
    )


# ---------------------------------------------------------------------- dask-ml


def test_dask_ml_incremental_calls_partial_fit_per_block(data):
    da = pytest.importorskip("dask.array")
    wrappers = pytest.importorskip("dask_ml.wrappers")
    X, test = data
    blocks = da.from_array(X, chunks=(150, 2))
    incremental = wrappers.Incremental(
        EBFlowDensity(random_state=0, **SMALL), shuffle_blocks=False
    )
    incremental.fit(blocks)
    reference = EBFlowDensity(random_state=0, **SMALL)
    for chunk in np.array_split(X, 4):
        reference.partial_fit(chunk)
    assert incremental.estimator_.n_iter_ == 4
    assert _same_model(incremental.estimator_, reference, test)
    incremental.partial_fit(blocks)  # a second pass continues
    assert incremental.estimator_.n_iter_ == 8
    assert _steps(incremental.estimator_) == 2 * _steps(reference)


@pytest.mark.distributed
def test_dask_ml_incremental_on_a_local_cluster(data):
    da = pytest.importorskip("dask.array")
    wrappers = pytest.importorskip("dask_ml.wrappers")
    distributed = pytest.importorskip("distributed")
    import cloudpickle

    X, test = data
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        with (
            distributed.LocalCluster(
                n_workers=2,
                processes=True,
                threads_per_worker=1,
                dashboard_address=None,
                silence_logs=40,
            ) as cluster,
            distributed.Client(cluster),
        ):
            blocks = da.from_array(X, chunks=(150, 2))
            incremental = wrappers.Incremental(
                EBFlowDensity(random_state=0, **SMALL), shuffle_blocks=False
            ).fit(blocks)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    reference = EBFlowDensity(random_state=0, **SMALL)
    for chunk in np.array_split(X, 4):
        reference.partial_fit(chunk)
    # The estimator travels between the worker processes by pickle, and each
    # block's call continues the previous one exactly.
    assert incremental.estimator_.n_iter_ == 4
    assert _same_model(incremental.estimator_, reference, test)


def test_rows_outside_the_first_fits_logit_box_are_refused():
    # The box is fitted on the first fit or chunk and kept; a later row outside it
    # has no density. It once surfaced as "Training diverged ... lower
    # learning_rate" (a warm refit) or a silently discarded chunk (partial_fit).
    rng = np.random.RandomState(0)
    X = rng.uniform(0.0, 1.0, size=(200, 2))
    outside = X.copy()
    outside[7, 1] = 5.0
    est = EBFlowDensity(preprocessing="logit", max_iter=2, **SMALL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.partial_fit(X)
        before = est.score_samples(X)
        with pytest.raises(ValueError, match=r"outside the box.*feature\(s\) \[1\]"):
            est.partial_fit(outside)
        np.testing.assert_array_equal(est.score_samples(X), before)
        est.partial_fit(X[:50])  # rows inside the box still train
        warm = EBFlowDensity(
            preprocessing="logit", max_iter=2, warm_start=True, **SMALL
        ).fit(X)
        with pytest.raises(ValueError, match="outside the box"):
            warm.fit(outside)


@pytest.mark.parametrize("solver", ["adam", "rmsprop"])
def test_a_restored_trainer_takes_the_steps_of_an_uninterrupted_one(solver):
    # The coupling flow's dense weights start as transposed views (an orthogonal
    # factor), while the recorded moments come back contiguous: Adam's fused
    # kernel, which walks a weight's memory and its moments' together, must get
    # them laid out as the weight, or each entry is updated with another's moments.
    from skebflow._training import TrainingConfig, _Trainer
    from skebflow.flows import Preprocessing, coupling

    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))

    def trainer():
        flow = coupling(4, n_layers=2, generator=torch.Generator().manual_seed(1))
        config = TrainingConfig(objective="ml", batch_size=16, solver=solver)
        return _Trainer(flow, Preprocessing(), config, torch.Generator().manual_seed(2))

    straight = trainer()
    assert any(not p.is_contiguous() for p in straight.parameters)
    straight.epoch(x, None, epoch=1)
    restored = trainer()
    restored.set_state(straight.get_state())
    for one in (straight, restored):
        one.epoch(x, None, epoch=2)
    for after_straight, after_restored in zip(
        straight.parameters, restored.parameters, strict=True
    ):
        torch.testing.assert_close(after_restored, after_straight, rtol=0, atol=1e-6)


@pytest.mark.parametrize("estimator", [EBFlowDensity, EBFlowOutlierDetector])
def test_a_warm_start_fit_continues_after_partial_fit(data, estimator):
    # partial_fit keeps the EMA weights, whose copy was frozen: a warm start then
    # found nothing to train.
    X, test = data
    est = estimator(random_state=0, warm_start=True, **SMALL).partial_fit(X[:200])
    assert all(p.requires_grad for p in est.flow_.parameters())
    before = est.score_samples(test)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.set_params(max_iter=2).fit(X[:200])
    assert not np.array_equal(est.score_samples(test), before)


@pytest.mark.parametrize(
    "estimator, bad",
    [
        (EBFlowOutlierDetector, {"flow_combination": "bogus"}),
        (EBFlowOutlierDetector, {"base_scale": 1e-9}),
        (EBFlowOutlierDetector, {"contamination": 0.9}),
        (EBFlowDensity, {"learning_rate": -1.0}),
    ],
)
def test_a_later_partial_fit_validates_the_parameters_it_reads(data, estimator, bad):
    # scikit-learn validates only a first partial_fit; later calls read the
    # parameters again, so a value fit refuses was used silently.
    X, test = data
    est = estimator(random_state=0, **SMALL).partial_fit(X[:200])
    before = est.score_samples(test)
    est.set_params(**bad)
    with pytest.raises(ValueError, match=f"'{next(iter(bad))}' parameter"):
        est.partial_fit(X[200:400])
    np.testing.assert_array_equal(est.score_samples(test), before)


@pytest.mark.parametrize("estimator", [EBFlowDensity, EBFlowOutlierDetector])
def test_a_later_partial_fit_honours_the_global_skip_of_validation(
    data, estimator, monkeypatch
):
    """Validated like the first call: unless scikit-learn's global
    skip_parameter_validation is set (inside the fit context it always is, so the
    check must sit outside it)."""
    from sklearn import config_context

    X, _ = data
    est = estimator(random_state=0, **SMALL).partial_fit(X[:200])
    calls = []
    validate = est._validate_params
    monkeypatch.setattr(est, "_validate_params", lambda: calls.append(validate()))
    est.partial_fit(X[200:300])
    assert len(calls) == 1
    with config_context(skip_parameter_validation=True):
        est.partial_fit(X[300:400])
    assert len(calls) == 1
    assert est.partial_fit.__name__ == "partial_fit"
    assert "chunk" in est.partial_fit.__doc__


def _first_and_breaking(kind: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """Rows of a first fit, rows that break what it fixed, and the parameters."""
    rng = np.random.RandomState(0)
    first, later = rng.normal(size=(200, 3)), rng.normal(size=(200, 3))
    if kind == "constant":  # narrowed to a point mass, then varying
        first[:, 1] = 2.0
        return first, later, {"constant_features": "narrow"}
    if kind == "one_bin":  # one integer, dequantized on its unit bin, then others
        first[:, 1] = 3.0
        later[:, 1] = rng.randint(0, 6, size=200)
        later[later[:, 1] == 3.0, 1] = 4.0
        return first, later, {"dequantize": True}
    # integer-valued, dequantized, then with fractions (rounded by the model)
    first[:, 0] = rng.randint(0, 4, size=200)
    return first, later, {"dequantize": True}


@pytest.mark.parametrize("continuing", ["partial_fit", "warm_start"])
@pytest.mark.parametrize(
    "kind, message",
    [
        ("constant", r"widths off the value of feature\(s\) \[1\], constant"),
        ("one_bin", r"leave the single integer value of feature\(s\) \[1\]"),
        ("integer", r"have fractions in feature\(s\) \[0\], integer-valued"),
    ],
)
def test_a_continuing_fit_on_rows_that_break_the_first_fit_warns(
    continuing, kind, message
):
    """A later chunk (or a warm refit) is preprocessed as the first fit's rows
    were: a column constant there stays a point mass, and an integer column is
    rounded. Rows that break that were trained on without a word (a varying
    column's rows scored about -2.5e6)."""
    first, breaking, params = _first_and_breaking(kind)
    est = EBFlowDensity(
        **{**SMALL, "max_iter": 2}, **params, warm_start=continuing == "warm_start"
    )
    method = "fit" if continuing == "warm_start" else "partial_fit"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        getattr(est, method)(first)
        getattr(est, method)(first[::-1])  # rows like the first ones say nothing
    with pytest.warns(UserWarning, match=message) as caught:
        getattr(est, method)(breaking)
    said = [w for w in caught if "Fit afresh (warm_start=False)" in str(w.message)]
    assert len(said) == 1 and said[0].filename == __file__


def test_a_chunk_too_small_to_place_the_threshold_says_so():
    """offset_ follows the latest chunk: one of a single outlying row moved it to
    that row's own score, and the detector silently flagged nothing, the outlier
    included."""
    rng = np.random.RandomState(0)
    detector = EBFlowOutlierDetector(**SMALL, contamination=0.1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        detector.partial_fit(rng.normal(size=(200, 2)))
        detector.partial_fit(rng.normal(size=(10, 2)))  # 10 x 0.1 rows: one flagged
    with pytest.warns(UserWarning, match="too few for it to flag any") as caught:
        detector.partial_fit([[5.0, 5.0]])
    said = [w for w in caught if "too few for it to flag" in str(w.message)]
    assert len(said) == 1 and said[0].filename == __file__
    assert "at least 10 rows" in str(said[0].message)
    # Rows of weight zero do not count.
    with pytest.warns(UserWarning, match=r"whose 5 row\(s\) of positive weight"):
        detector.partial_fit(
            rng.normal(size=(20, 2)), sample_weight=np.r_[np.ones(5), np.zeros(15)]
        )
    # A number is every row's weight: 20 rows of weight 2 are enough.
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        detector.partial_fit(rng.normal(size=(20, 2)), sample_weight=2.0)
