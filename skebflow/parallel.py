"""Score larger-than-memory data block by block on a dask cluster.

A fitted estimator scores a :class:`dask.array.Array` or a
:class:`dask.dataframe.DataFrame` here one block (or partition) at a time, on the
workers, and the result is a lazy one-dimensional dask array: call ``.compute()`` to
get a NumPy array, or keep chaining dask operations on it. dask-ml's
``ParallelPostFit`` wraps ``predict`` and ``transform`` but not ``score_samples`` or
``decision_function``, which is why these functions exist.

The estimator enters the task graph once, as a single ``dask.delayed`` key on which
every block's task depends: dask's distributed scheduler then copies it to each
worker once, rather than pickling it into every task as it would an estimator passed
by value or captured by a closure. It enters by reference: the blocks are scored by
the estimator as it is when the graph computes, so refitting it in between changes
the result (pass ``copy.deepcopy(estimator)`` to pin the model of the call).

Torch threads: each block runs with ``torch.set_num_threads(n_threads)`` (1 by
default) set in the thread that computes it, and the setting from before the first
of the process's concurrent blocks restored after the last of them (torch keeps one
process-wide setting), so that ``n_workers * threads_per_worker`` blocks never ask
for more cores than the machine has. dask's ``Nanny`` (a ``LocalCluster`` or
``dask-worker`` with processes) also starts every worker process with
``OMP_NUM_THREADS=1`` (``distributed.nanny.pre-spawn-environ``).
``n_threads=None`` leaves the workers' setting alone.

dask is imported only when one of these functions is called: ``import skebflow``
does not need it. Install it with ``pip install "skebflow[distributed]"``.

Examples
--------
>>> import dask.array as da
>>> import numpy as np
>>> from skebflow import EBFlowDensity
>>> from skebflow.parallel import score_samples
>>> rng = np.random.RandomState(0)
>>> est = EBFlowDensity(max_iter=30, n_iter_no_change=3, tol=1e-2,
...                     device="cpu", random_state=0).fit(rng.normal(size=(200, 2)))
>>> X = da.from_array(rng.normal(size=(1000, 2)), chunks=(250, 2))
>>> log_density = score_samples(est, X)  # lazy: nothing is computed yet
>>> log_density.shape, log_density.numblocks
((1000,), (4,))
>>> values = log_density.compute(scheduler="synchronous")
>>> bool(np.allclose(values, est.score_samples(X.compute()), rtol=1e-12))
True

On a cluster, the same call computes the blocks on the workers:

>>> from dask.distributed import Client, LocalCluster  # doctest: +SKIP
>>> client = Client(LocalCluster(n_workers=2, threads_per_worker=1))  # doctest: +SKIP
>>> values = score_samples(est, X).compute()  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import math
import threading
import warnings
from collections.abc import Iterator
from numbers import Integral
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from sklearn.utils.validation import _get_feature_names, check_is_fitted

if TYPE_CHECKING:  # pragma: no cover
    import dask.array
    import dask.dataframe

__all__ = ["decision_function", "predict", "score_samples"]

_OUTPUT_DTYPES = {
    "score_samples": np.float64,
    "decision_function": np.float64,
    "predict": np.int64,
}


def score_samples(
    estimator: Any,
    X: dask.array.Array | dask.dataframe.DataFrame,
    *,
    n_threads: int | None = 1,
) -> dask.array.Array:
    """Exact log-density of each row of a dask collection, block by block.

    Parameters
    ----------
    estimator : EBFlowDensity or EBFlowOutlierDetector
        A fitted estimator (any fitted estimator with ``score_samples`` works).
    X : dask.array.Array or dask.dataframe.DataFrame of shape (n_samples, n_features)
        Rows to score. A dask array chunked along its columns is rechunked to one
        chunk of all the columns per row block (the row chunks are kept). A dask
        DataFrame must have the training columns, in the training order if the
        estimator was fitted on a pandas DataFrame.
    n_threads : int or None, default=1
        Torch threads of each block's computation; ``None`` keeps the worker's
        setting.

    Returns
    -------
    log_density : dask.array.Array of shape (n_samples,)
        Lazy float64 log-densities, one chunk per row block of ``X`` (of unknown
        length for a dask DataFrame); ``.compute()`` gives the values of
        ``estimator.score_samples`` on the whole of ``X`` in memory, equal up to
        float64 rounding (a row's last bits can depend on how many rows are
        scored beside it). Empty blocks give empty chunks.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If ``estimator`` is not fitted (a subclass of ``ValueError``).
    ValueError
        If ``X`` is not two-dimensional, has the wrong number of columns, other
        column names than the training DataFrame's, or columns that are not numeric.
    TypeError
        If ``X`` is not a dask array or a dask DataFrame.

    See Also
    --------
    decision_function : The same for an outlier detector's decision function.
    predict : The same for an outlier detector's labels.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from skebflow import EBFlowDensity
    >>> from skebflow.parallel import score_samples
    >>> rng = np.random.RandomState(0)
    >>> est = EBFlowDensity(max_iter=30, n_iter_no_change=3, tol=1e-2,
    ...                     device="cpu", random_state=0).fit(rng.normal(size=(200, 3)))
    >>> X_new = rng.normal(size=(1000, 3))
    >>> X = da.from_array(X_new, chunks=(300, 3))
    >>> log_density = score_samples(est, X)
    >>> log_density.chunks
    ((300, 300, 300, 100),)
    >>> values = log_density.compute(scheduler="synchronous")
    >>> bool(np.allclose(values, est.score_samples(X_new), rtol=1e-12))
    True
    """
    return _map_method(estimator, X, "score_samples", n_threads)


def decision_function(
    estimator: Any,
    X: dask.array.Array | dask.dataframe.DataFrame,
    *,
    n_threads: int | None = 1,
) -> dask.array.Array:
    """An outlier detector's decision function on a dask collection, block by block.

    Parameters
    ----------
    estimator : EBFlowOutlierDetector
        A fitted detector: ``score_samples(X) - offset_``, negative for outliers.
    X : dask.array.Array or dask.dataframe.DataFrame of shape (n_samples, n_features)
        Rows to judge; as in :func:`score_samples`.
    n_threads : int or None, default=1
        Torch threads of each block's computation; ``None`` keeps the worker's
        setting.

    Returns
    -------
    decision : dask.array.Array of shape (n_samples,)
        Lazy float64 values, equal to ``estimator.decision_function`` in memory.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If ``estimator`` is not fitted.
    ValueError
        As :func:`score_samples`, or if ``estimator`` has no ``decision_function``.
    TypeError
        If ``X`` is not a dask array or a dask DataFrame.

    See Also
    --------
    score_samples : The log-densities themselves.
    predict : The labels, +1 or -1.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from skebflow import EBFlowOutlierDetector
    >>> from skebflow.parallel import decision_function
    >>> rng = np.random.RandomState(0)
    >>> detector = EBFlowOutlierDetector(max_iter=30, n_iter_no_change=3,
    ...     tol=1e-2, device="cpu", random_state=0).fit(rng.normal(size=(200, 2)))
    >>> X_new = np.vstack([rng.normal(size=(499, 2)), [[8.0, 8.0]]])
    >>> X = da.from_array(X_new, chunks=(100, 2))
    >>> decision = decision_function(detector, X).compute(scheduler="synchronous")
    >>> bool(decision[-1] < 0)  # the far row is an outlier
    True
    >>> bool(np.allclose(decision, detector.decision_function(X_new), rtol=1e-12))
    True
    """
    return _map_method(estimator, X, "decision_function", n_threads)


def predict(
    estimator: Any,
    X: dask.array.Array | dask.dataframe.DataFrame,
    *,
    n_threads: int | None = 1,
) -> dask.array.Array:
    """An outlier detector's labels (+1 inlier, -1 outlier) on a dask collection.

    Parameters
    ----------
    estimator : EBFlowOutlierDetector
        A fitted detector.
    X : dask.array.Array or dask.dataframe.DataFrame of shape (n_samples, n_features)
        Rows to judge; as in :func:`score_samples`.
    n_threads : int or None, default=1
        Torch threads of each block's computation; ``None`` keeps the worker's
        setting.

    Returns
    -------
    labels : dask.array.Array of shape (n_samples,)
        Lazy int64 labels, equal to ``estimator.predict`` in memory.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If ``estimator`` is not fitted.
    ValueError
        As :func:`score_samples`, or if ``estimator`` has no ``predict``.
    TypeError
        If ``X`` is not a dask array or a dask DataFrame.

    See Also
    --------
    decision_function : The margin that the labels threshold at 0.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from skebflow import EBFlowOutlierDetector
    >>> from skebflow.parallel import predict
    >>> rng = np.random.RandomState(0)
    >>> detector = EBFlowOutlierDetector(max_iter=30, n_iter_no_change=3,
    ...     tol=1e-2, device="cpu", random_state=0).fit(rng.normal(size=(200, 2)))
    >>> X = da.from_array(np.array([[0.0, 0.0], [8.0, 8.0]]), chunks=(1, 2))
    >>> predict(detector, X).compute(scheduler="synchronous").tolist()
    [1, -1]
    """
    return _map_method(estimator, X, "predict", n_threads)


# ------------------------------------------------------------------- internals


def _score_block(
    block: Any,
    estimator: Any,
    method: str,
    n_threads: int | None,
    feature_names: NDArray[np.object_] | None,
) -> NDArray[Any]:
    """Run ``estimator.method`` on one block with ``n_threads`` torch threads.

    dask runs each block in one of the worker's threads: the count is set there,
    and put back once no block of this process runs (:func:`_torch_threads`).
    """

    if len(block) == 0:
        # An empty block (a boolean selection, an empty partition): nothing to
        # score, where the estimator would refuse an array of 0 rows.
        return np.empty((0,), dtype=_OUTPUT_DTYPES[method])
    if feature_names is not None and isinstance(block, np.ndarray):
        # A dask array scored by an estimator fitted on a DataFrame: the client warned
        # once; name the columns so that every block does not warn again.
        import pandas as pd

        block = pd.DataFrame(block, columns=feature_names)
    if n_threads is None:
        values = getattr(estimator, method)(block)
    else:
        with _torch_threads(n_threads):
            values = getattr(estimator, method)(block)
    return np.asarray(values, dtype=_OUTPUT_DTYPES[method])


#: Blocks running with their own torch thread count in this process, and the
#: count from before the first of them: torch keeps one process-wide setting, so
#: a block that restored what it read on entry could read another block's count
#: and leave it in place after both ended.
_THREADS_LOCK = threading.Lock()
_THREADS_STATE: dict[str, int] = {"active": 0, "original": 0}


def _default_torch_threads() -> int:
    """The torch thread count a new thread of this process starts with.

    torch.get_num_threads reads the calling thread's OpenMP setting, which in a
    worker thread may still be a count an earlier block set there; a new thread
    starts from the process-wide one that torch.set_num_threads last set, which is
    the one to restore.
    """
    import torch

    counts: list[int] = []
    reader = threading.Thread(target=lambda: counts.append(torch.get_num_threads()))
    reader.start()
    reader.join()
    return counts[0]


@contextlib.contextmanager
def _torch_threads(n_threads: int) -> Iterator[None]:
    """Run the block with ``n_threads`` torch threads; the setting from before the
    first concurrent block is restored when the last one ends."""
    import torch

    with _THREADS_LOCK:
        if _THREADS_STATE["active"] == 0:
            _THREADS_STATE["original"] = _default_torch_threads()
        _THREADS_STATE["active"] += 1
        torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _THREADS_STATE["active"] -= 1
            if _THREADS_STATE["active"] == 0:
                torch.set_num_threads(_THREADS_STATE["original"])


def _check_n_threads(n_threads: Any) -> int | None:
    if n_threads is None:
        return None
    if (
        isinstance(n_threads, bool)
        or not isinstance(n_threads, Integral)
        or n_threads < 1
    ):
        raise ValueError(
            f"n_threads must be a positive integer or None, got {n_threads!r}."
        )
    return int(n_threads)


def _check_estimator(estimator: Any, method: str) -> int:
    if not callable(getattr(estimator, method, None)):
        raise ValueError(
            f"{type(estimator).__name__} has no {method} method; an outlier detector"
            f" such as EBFlowOutlierDetector is needed for {method}."
            if method != "score_samples"
            else f"{type(estimator).__name__} has no score_samples method."
        )
    check_is_fitted(estimator)
    n_features = getattr(estimator, "n_features_in_", None)
    if n_features is None:
        raise ValueError(
            f"{type(estimator).__name__} has no n_features_in_: it cannot check the"
            " columns of X."
        )
    return int(n_features)


def _is_numeric(dtype: Any) -> bool:
    """Real numbers or booleans (complex numbers are refused, as by scikit-learn)."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.complexfloating):
        return False
    return np.issubdtype(dtype, np.number) or dtype == np.bool_


def _map_method(
    estimator: Any, X: Any, method: str, n_threads: Any
) -> dask.array.Array:
    n_threads = _check_n_threads(n_threads)
    n_features = _check_estimator(estimator, method)
    feature_names = getattr(estimator, "feature_names_in_", None)
    name = type(estimator).__name__

    try:
        import dask
        import dask.array as da
    except ImportError as error:
        raise ImportError(
            "skebflow.parallel scores dask arrays and dataframes, and needs dask:"
            ' pip install "skebflow[distributed]". For a NumPy array, call'
            f" {name}.{method} itself."
        ) from error

    delayed_estimator = dask.delayed(estimator, pure=True)
    out_dtype = _OUTPUT_DTYPES[method]

    if isinstance(X, da.Array):
        if X.ndim != 2:
            raise ValueError(
                f"X must be a two-dimensional dask array, got {X.ndim} dimension(s)"
                f" (shape {X.shape}); reshape a single feature with"
                " X.reshape(-1, 1)."
            )
        if math.isnan(X.shape[1]):
            raise ValueError(
                "X has an unknown number of columns; call X.compute_chunk_sizes()"
                " first."
            )
        if X.shape[1] != n_features:
            raise ValueError(
                f"X has {X.shape[1]} columns, but {name} was fitted with"
                f" {n_features} features."
            )
        if not _is_numeric(X.dtype):
            raise ValueError(
                f"X must hold real numbers, got a dask array of {X.dtype}."
            )
        if X.numblocks[1] > 1:
            # Every row needs all its columns at once: merge the column chunks, keep
            # the row chunks.
            X = X.rechunk({1: -1})
        if feature_names is not None:
            _warn_without_names(name)
        return da.map_blocks(
            _score_block,
            X,
            delayed_estimator,
            method,
            n_threads,
            feature_names,
            drop_axis=1,
            dtype=out_dtype,
            meta=np.empty((0,), dtype=out_dtype),
            token=f"skebflow-{method.replace('_', '-')}",
        )

    dataframe_type = _dask_dataframe_type()
    if dataframe_type is not None and isinstance(X, dataframe_type):
        import pandas as pd

        columns = list(X.columns)
        # scikit-learn's own rule, first as in memory: column names are feature
        # names only when all of them are strings (integer names, pandas' default,
        # are not), and a mix of strings and other names is a TypeError.
        named = _get_feature_names(pd.DataFrame(columns=columns)) is not None
        if len(columns) != n_features:
            raise ValueError(
                f"X has {len(columns)} columns, but {name} was fitted with"
                f" {n_features} features."
            )
        if feature_names is not None and [str(c) for c in columns] != [
            str(c) for c in feature_names
        ]:
            raise ValueError(
                f"The columns of X, {columns}, are not the feature names that {name}"
                f" was fitted with, {list(feature_names)}, in that order; select them"
                " with X[list(estimator.feature_names_in_)]."
            )
        not_numeric = [c for c, t in X.dtypes.items() if not _is_numeric_pandas(t)]
        if not_numeric:
            raise ValueError(f"The columns {not_numeric} of X are not numeric.")
        if feature_names is None and named:
            warnings.warn(
                f"X has feature names, but {name} was fitted without feature names",
                UserWarning,
                stacklevel=3,
            )
        if feature_names is not None and not named:
            # Names that match only as strings (integers, pandas' default): once
            # here, as in memory, not once per partition.
            _warn_without_names(name)
        return X.map_partitions(
            _score_partition,
            delayed_estimator,
            method,
            n_threads,
            feature_names if feature_names is not None and not named else None,
            feature_names is not None and named,
            meta=np.empty((0,), dtype=out_dtype),
            enforce_metadata=False,
            align_dataframes=False,
        )

    raise TypeError(
        "X must be a dask.array.Array or a dask.dataframe.DataFrame, got"
        f" {type(X).__module__}.{type(X).__qualname__}; score an in-memory array with"
        f" {name}.{method} directly, or wrap it with dask.array.from_array."
    )


def _warn_without_names(name: str) -> None:
    """scikit-learn's warning for input without valid feature names, once at the
    call of :func:`_map_method` (its caller's caller), not once per block."""
    warnings.warn(
        f"X does not have valid feature names, but {name} was fitted with"
        " feature names",
        UserWarning,
        stacklevel=4,
    )


def _score_partition(
    partition: Any,
    estimator: Any,
    method: str,
    n_threads: int | None,
    feature_names: NDArray[np.object_] | None,
    keep_names: bool,
) -> NDArray[Any]:
    """One pandas partition: by name if the estimator knows them, else as numbers
    (named ``feature_names``, if given, so that it does not warn again)."""
    block = partition if keep_names else partition.to_numpy(dtype=np.float64)
    return _score_block(block, estimator, method, n_threads, feature_names)


def _is_numeric_pandas(dtype: Any) -> bool:
    import pandas as pd

    if pd.api.types.is_complex_dtype(dtype):
        return False
    return bool(pd.api.types.is_numeric_dtype(dtype)) or pd.api.types.is_bool_dtype(
        dtype
    )


def _dask_dataframe_type() -> type | None:
    """dask's DataFrame class, or None if dask's dataframe extra is not installed."""
    try:
        import dask.dataframe as dd
    except ImportError:
        return None
    return dd.DataFrame
