"""skebflow.parallel on dask collections, and GridSearchCV on dask and ray (issue 17).

The input checks and the synchronous scheduler run without a cluster. The tests marked
``distributed`` start a ``LocalCluster`` of 2 worker processes with 1 thread each
(shared by the module), or a local ray instance of 2 CPUs; they run in ``make test``
(``.[dev]`` installs dask, dask-ml and ray) and are skipped when those are missing.
"""

from __future__ import annotations

import copy
import os
import sys
import threading
import time
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import GridSearchCV

from skebflow import EBFlowDensity, EBFlowOutlierDetector

da = pytest.importorskip("dask.array")
dd = pytest.importorskip("dask.dataframe")
pd = pytest.importorskip("pandas")

from skebflow import parallel  # noqa: E402

N_FEATURES = 3
FAST = {
    "n_flows": 1,
    "max_iter": 8,
    "early_stopping": False,
    "device": "cpu",
    "random_state": 0,
}
# Log-densities from another process, thread count or block size: equal up to float64
# rounding (in practice bit for bit).
EXACT = {"rtol": 1e-12, "atol": 1e-12}


def _fit(estimator, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(X)


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    return rng.normal(size=(300, N_FEATURES)), rng.normal(size=(1000, N_FEATURES))


@pytest.fixture(scope="module")
def density(data):
    return _fit(EBFlowDensity(**FAST), data[0])


@pytest.fixture(scope="module")
def detector(data):
    return _fit(EBFlowOutlierDetector(contamination=0.1, **FAST), data[0])


@pytest.fixture(scope="module")
def named_density(density):
    """``density`` as if fitted on a DataFrame of columns a, b, c (saves a fit)."""
    named = copy.deepcopy(density)
    named.feature_names_in_ = np.array(["a", "b", "c"], dtype=object)
    return named


# ---------------------------------------------------------- without a cluster


def test_lazy_result_equals_in_memory_on_the_synchronous_scheduler(density, data):
    X_new = data[1]
    X = da.from_array(X_new, chunks=(170, N_FEATURES))
    log_density = parallel.score_samples(density, X)
    assert isinstance(log_density, da.Array)
    assert log_density.chunks == ((170,) * 5 + (150,),)
    assert log_density.dtype == np.float64
    got = log_density.compute(scheduler="synchronous")
    np.testing.assert_allclose(got, density.score_samples(X_new), **EXACT)


def test_the_estimator_is_one_key_of_the_graph(density, data):
    """Sent once: every block's task depends on a single key holding the estimator,
    instead of carrying its own pickled copy."""
    X = da.from_array(data[1], chunks=(100, N_FEATURES))
    result = parallel.score_samples(density, X)
    graph = dict(result.__dask_graph__())
    holders = [k for k, v in graph.items() if getattr(v, "value", None) is density]
    assert len(holders) == 1
    block_tasks = [k for k in graph if k[0] == result.name]
    assert len(block_tasks) == 10
    assert all(holders[0] in graph[k].dependencies for k in block_tasks)
    # The same call gives the same keys (dask reuses results it holds).
    assert parallel.score_samples(density, X).name == result.name


def test_column_chunks_are_merged(density, data):
    X = da.from_array(data[1], chunks=(400, 1))
    result = parallel.score_samples(density, X)
    assert result.chunks == ((400, 400, 200),)
    np.testing.assert_allclose(
        result.compute(scheduler="synchronous"), density.score_samples(data[1]), **EXACT
    )


def test_empty_blocks_and_partitions(density, detector, data):
    # A boolean selection leaves blocks of 0 rows; an empty partition of a
    # DataFrame too. Each gives an empty chunk instead of failing the compute.
    X_new = data[1][:101]
    X = da.from_array(X_new, chunks=(25, N_FEATURES))
    keep = np.arange(101) >= 60
    selected = X[da.from_array(keep, chunks=25)]
    got = parallel.score_samples(density, selected).compute(scheduler="synchronous")
    np.testing.assert_allclose(got, density.score_samples(X_new[keep]), **EXACT)
    frame = dd.from_pandas(pd.DataFrame(X_new), npartitions=4)
    empty = frame[frame[0] > 100.0]
    for name in ("score_samples", "predict"):
        estimator = density if name == "score_samples" else detector
        got = getattr(parallel, name)(estimator, empty).compute(
            scheduler="synchronous"
        )
        assert got.shape == (0,)


def test_detector_functions_on_the_synchronous_scheduler(detector, data):
    X = da.from_array(data[1], chunks=(250, N_FEATURES))
    for name in ("score_samples", "decision_function", "predict"):
        got = getattr(parallel, name)(detector, X).compute(scheduler="synchronous")
        expected = getattr(detector, name)(data[1])
        assert got.dtype == expected.dtype
        np.testing.assert_allclose(got, expected, **EXACT)


def test_input_errors(density, data):
    X = da.from_array(data[1], chunks=(250, N_FEATURES))
    with pytest.raises(NotFittedError):
        parallel.score_samples(EBFlowDensity(), X)
    with pytest.raises(ValueError, match="has 2 columns, but EBFlowDensity was fitted"):
        parallel.score_samples(density, X[:, :2])
    with pytest.raises(ValueError, match="two-dimensional"):
        parallel.score_samples(density, X[:, 0])
    with pytest.raises(ValueError, match="must hold real numbers"):
        parallel.score_samples(density, X.astype(str))
    with pytest.raises(ValueError, match="must hold real numbers"):
        parallel.score_samples(density, X.astype(np.complex128))
    with pytest.raises(TypeError, match="dask.array.Array or a dask.dataframe"):
        parallel.score_samples(density, data[1])
    with pytest.raises(ValueError, match="outlier detector"):
        parallel.decision_function(density, X)
    with pytest.raises(ValueError, match="outlier detector"):
        parallel.predict(density, X)
    for n_threads in (0, 1.5, True):
        with pytest.raises(ValueError, match="n_threads"):
            parallel.score_samples(density, X, n_threads=n_threads)


def test_dataframe_input_errors(named_density, data):
    frame = pd.DataFrame(data[1], columns=["a", "b", "c"])
    X = dd.from_pandas(frame, npartitions=2)
    with pytest.raises(ValueError, match="in that order"):
        parallel.score_samples(named_density, X[["b", "a", "c"]])
    with pytest.raises(ValueError, match="has 2 columns"):
        parallel.score_samples(named_density, X[["a", "b"]])
    with pytest.raises(ValueError, match=r"\['c'\] of X are not numeric"):
        parallel.score_samples(named_density, X.assign(c="text"))
    # A dask array for an estimator fitted with names: one warning, as scikit-learn's,
    # at the call (not one per block).
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        result = parallel.score_samples(named_density, X.to_dask_array(lengths=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = result.compute(scheduler="synchronous")
    np.testing.assert_allclose(got, named_density.score_samples(frame), **EXACT)


def test_integer_column_names_warn_once_not_per_partition(density, data):
    """An estimator fitted with names "0", "1", "2" scoring a DataFrame of pandas'
    integer names 0, 1, 2: no valid feature names, so one warning, as the
    in-memory call gives, at the call; the partitions do not warn again."""
    named = copy.deepcopy(density)
    named.feature_names_in_ = np.array(["0", "1", "2"], dtype=object)
    frame = pd.DataFrame(data[1])
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        expected = named.score_samples(frame)
    with pytest.warns(UserWarning, match="does not have valid feature names") as said:
        result = parallel.score_samples(named, dd.from_pandas(frame, npartitions=4))
    assert len(said) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = result.compute(scheduler="synchronous")
    np.testing.assert_allclose(got, expected, **EXACT)


def test_importing_skebflow_does_not_import_dask():
    import subprocess

    code = (
        "import sys, skebflow, skebflow.parallel; skebflow.EBFlowDensity;"
        " print(any(m == 'dask' or m.startswith('dask.') for m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_without_dask_the_error_says_how_to_install_it(density, data, monkeypatch):
    """A bare import raised ModuleNotFoundError, without the extra to install
    (found by a review)."""
    from skebflow.parallel import score_samples

    monkeypatch.setitem(sys.modules, "dask", None)
    with pytest.raises(ImportError, match=r"pip install \"skebflow\[distributed\]\""):
        score_samples(density, data[1][:3])


# ------------------------------------------------------- on a dask LocalCluster


# dask's Nanny starts its workers with MALLOC_TRIM_THRESHOLD_=65536, which makes
# torch's scoring 2 to 3 times slower; scaling_out.rst recommends unsetting it.
MALLOC_TRIM = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"


class _ThreadReporter(BaseEstimator):
    """A fitted estimator whose 'log-density' is torch's thread count."""

    n_features_in_ = N_FEATURES

    def fit(self, X, y=None):
        return self

    def __sklearn_is_fitted__(self):
        return True

    def score_samples(self, X):
        return np.full(len(X), float(torch.get_num_threads()))


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    import cloudpickle
    import dask

    # The Nanny writes its workers' variables (OMP_NUM_THREADS=1, ...) into this
    # process's environment before it spawns them: put it back afterwards, so that
    # later tests' subprocesses do not inherit them.
    environ = dict(os.environ)
    # The workers cannot import this test module: send its classes by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        with (
            dask.config.set({MALLOC_TRIM: None}),
            distributed.LocalCluster(
                n_workers=2,
                processes=True,
                threads_per_worker=1,
                dashboard_address=":0",
                silence_logs=40,
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            yield client
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        os.environ.clear()
        os.environ.update(environ)


@pytest.mark.distributed
def test_cluster_scores_equal_in_memory(client, density, named_density, data):
    X_new = data[1]
    X = da.from_array(X_new, chunks=(150, N_FEATURES))
    future = client.compute(parallel.score_samples(density, X))
    np.testing.assert_allclose(future.result(), density.score_samples(X_new), **EXACT)
    frame = pd.DataFrame(X_new, columns=["a", "b", "c"])
    X_frame = dd.from_pandas(frame, npartitions=4)
    got = parallel.score_samples(named_density, X_frame).compute()
    np.testing.assert_allclose(got, named_density.score_samples(frame), **EXACT)


@pytest.mark.distributed
def test_cluster_detector_functions(client, detector, data):
    X_new = data[1]
    X = da.from_array(X_new, chunks=(200, N_FEATURES))
    lazy = [
        getattr(parallel, name)(detector, X)
        for name in ("score_samples", "decision_function", "predict")
    ]
    scores, decision, labels = client.compute(lazy, sync=True)
    np.testing.assert_allclose(scores, detector.score_samples(X_new), **EXACT)
    np.testing.assert_allclose(decision, detector.decision_function(X_new), **EXACT)
    np.testing.assert_array_equal(labels, detector.predict(X_new))
    assert labels.dtype == np.int64
    # The same functions on a dask DataFrame of an estimator fitted on an array:
    # string column names are feature names it was not fitted with, and it warns,
    # as scikit-learn does; integer names (pandas' default) are not, and as the
    # in-memory call it does not warn.
    names = [f"x{i}" for i in range(N_FEATURES)]
    X_named = dd.from_pandas(pd.DataFrame(X_new, columns=names), npartitions=3)
    with pytest.warns(UserWarning, match="fitted without feature names"):
        lazy_labels = parallel.predict(detector, X_named)
    np.testing.assert_array_equal(lazy_labels.compute(), detector.predict(X_new))
    X_frame = dd.from_pandas(pd.DataFrame(X_new), npartitions=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        detector.predict(pd.DataFrame(X_new))  # the in-memory call: no warning
        lazy_labels = parallel.predict(detector, X_frame)
    np.testing.assert_array_equal(lazy_labels.compute(), detector.predict(X_new))
    # Names that mix strings and integers: a TypeError, as in memory.
    mixed = pd.DataFrame(X_new, columns=["a", *range(1, N_FEATURES)])
    with pytest.raises(TypeError, match="all input features have string names"):
        detector.predict(mixed)
    with pytest.raises(TypeError, match="all input features have string names"):
        parallel.predict(detector, dd.from_pandas(mixed, npartitions=3))


class _SlowThreadReporter(_ThreadReporter):
    """The same, slow enough for the blocks of a threaded compute to overlap."""

    def score_samples(self, X):
        time.sleep(0.01)
        return super().score_samples(X)


def test_concurrent_blocks_leave_the_process_thread_count_as_it_was():
    """Blocks that overlap in one process each restored the count they read on
    entry, which could be another block's: threads started afterwards ran with
    one torch thread."""

    def count_in_a_new_thread():
        counts = []
        reader = threading.Thread(target=lambda: counts.append(torch.get_num_threads()))
        reader.start()
        reader.join()
        return counts[0]

    previous = torch.get_num_threads()
    try:
        for _ in range(3):
            torch.set_num_threads(2)
            X = da.from_array(np.zeros((400, N_FEATURES)), chunks=(10, N_FEATURES))
            counts = parallel.score_samples(_SlowThreadReporter(), X, n_threads=1)
            assert set(counts.compute(scheduler="threads", num_workers=4)) == {1.0}
            assert count_in_a_new_thread() == 2
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


@pytest.mark.distributed
def test_one_torch_thread_per_worker(client, data):
    """No oversubscription: the Nanny starts the workers with OMP_NUM_THREADS=1, and
    each block runs with n_threads torch threads, then restores the worker's."""
    assert set(client.run(torch.get_num_threads).values()) == {1}
    workers = list(client.scheduler_info()["workers"])
    in_tasks = [
        client.submit(torch.get_num_threads, workers=[w], pure=False).result()
        for w in workers
    ]
    assert in_tasks == [1, 1]
    X = da.from_array(data[1], chunks=(250, N_FEATURES))
    reporter = _ThreadReporter()
    assert set(parallel.score_samples(reporter, X).compute()) == {1.0}
    assert set(parallel.score_samples(reporter, X, n_threads=2).compute()) == {2.0}
    in_tasks = [
        client.submit(torch.get_num_threads, workers=[w], pure=False).result()
        for w in workers
    ]
    assert in_tasks == [1, 1]


# ----------------------------------------------------- GridSearchCV on a cluster

GRID = {"n_layers": [1, 2], "learning_rate": [3e-3, 1e-2]}


@pytest.fixture(scope="module")
def search_data():
    return np.random.RandomState(1).normal(size=(120, 2))


def _search(n_jobs):
    estimator = EBFlowDensity(
        max_iter=4, early_stopping=False, device="cpu", random_state=0
    )
    return GridSearchCV(estimator, GRID, cv=2, n_jobs=n_jobs)


@pytest.fixture(scope="module")
def sequential_search(search_data):
    """The reference: n_jobs=1 in this process, on one torch thread like a worker."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            first = _search(1).fit(search_data)
            second = _search(1).fit(search_data)
    finally:
        torch.set_num_threads(previous)
    # Seeded fits are deterministic on CPU: the same search twice gives the same scores.
    np.testing.assert_array_equal(
        first.cv_results_["mean_test_score"], second.cv_results_["mean_test_score"]
    )
    return first


def _assert_same_search(search, reference):
    assert search.best_params_ == reference.best_params_
    for key in ("split0_test_score", "split1_test_score", "mean_test_score"):
        np.testing.assert_allclose(
            search.cv_results_[key], reference.cv_results_[key], **EXACT
        )
    # The refit on all the rows, in this process, is the same model too.
    rows = np.linspace(-2.0, 2.0, 8).reshape(-1, 2)
    np.testing.assert_allclose(
        search.best_estimator_.score_samples(rows),
        reference.best_estimator_.score_samples(rows),
        **EXACT,
    )


@pytest.mark.distributed
def test_grid_search_on_the_dask_joblib_backend(client, search_data, sequential_search):
    import joblib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with joblib.parallel_config(backend="dask"):
            search = _search(-1).fit(search_data)
    _assert_same_search(search, sequential_search)


@pytest.mark.distributed
def test_grid_search_on_the_ray_joblib_backend(search_data, sequential_search):
    ray = pytest.importorskip("ray")
    import joblib
    from ray.util.joblib import register_ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        register_ray()

        @ray.remote
        def torch_threads():
            import torch

            return torch.get_num_threads()

        # Ray starts each worker with OMP_NUM_THREADS set to its task's CPUs (1).
        assert ray.get([torch_threads.remote() for _ in range(2)]) == [1, 1]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            with joblib.parallel_config(backend="ray"):
                search = _search(-1).fit(search_data)
    finally:
        ray.shutdown()
    _assert_same_search(search, sequential_search)
