"""Checks of the estimators' data and arguments, with messages that say what to do.

NumPy only: these run before anything reaches torch.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "check_bounds",
    "check_hidden_layer_sizes",
    "check_magnitude",
    "check_positive_integer",
    "check_positive_real",
    "check_sample_weight",
    "check_spread",
    "constant_columns",
    "constant_width",
    "dependent_columns",
    "fitted_state",
    "linear_relations",
    "mean_and_scale",
    "restore_fitted_state",
    "same_value",
]

# Without preprocessing the flow sees the raw values in float32.
MAX_ABS_VALUE_RAW = 1e15
# Standardization works in float64; beyond this the squares of its statistics overflow.
MAX_ABS_VALUE = 1e150
# A column whose spread is below this fraction of its magnitude holds fewer distinct
# float64 values than a density can resolve (e.g. 1e9 + 1e-4 noise): it is treated as
# constant.
MIN_RELATIVE_SPREAD = 1e-12
# Below this absolute spread the score function (1 / spread) nears float64's range.
MIN_SPREAD = 1e-100
# Width of the narrow normal of a constant column: absolute floor and relative part.
CONSTANT_WIDTH = 1e-3
CONSTANT_RELATIVE_WIDTH = 1e-9
# A combination of standardized columns (a unit vector of coefficients) whose
# standard deviation over the rows is below this is constant: the rows lie on a
# hyperplane, as when a column is the sum or a multiple of others.
MIN_DIRECTION_SPREAD = 1e-6


def check_magnitude(X: NDArray[np.float64], preprocessing: str | None) -> None:
    """Refuse values too large for the computation that will see them.

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow._validation import check_magnitude
    >>> check_magnitude(np.array([[1e12, 1.0]]), "standardize")  # fine
    >>> check_magnitude(np.array([[1e20, 1.0]]), None)
    Traceback (most recent call last):
    ...
    ValueError: X holds values as large as 1e+20 in absolute value...
    """
    limit = MAX_ABS_VALUE_RAW if preprocessing is None else MAX_ABS_VALUE
    largest = float(np.abs(X).max()) if X.size else 0.0
    if largest > limit:
        reason = (
            "with preprocessing=None the flow computes on the raw values in float32"
            if preprocessing is None
            else "the float64 statistics of the preprocessing overflow"
        )
        raise ValueError(
            f"X holds values as large as {largest:.3g} in absolute value; beyond"
            f" {limit:.0e} {reason}. Rescale the features (e.g. divide by a power of"
            " ten or take logarithms)"
            + (", or use preprocessing='standardize'" if preprocessing is None else "")
            + " first."
        )


def check_spread(data: NDArray[np.float64], *, droppable: bool = True) -> None:
    """Refuse columns that are constant, or constant to float64 precision.

    ``droppable=False`` where the model needs every column (a convolutional
    flow's pixels): the message then advises keeping them, not dropping them.

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow._validation import check_spread
    >>> check_spread(np.array([[0.0, 1e-50], [1.0, 2e-50]]))  # tiny but resolvable
    >>> check_spread(np.array([[1e9, 0.0], [1e9 + 1e-4, 1.0]]))
    Traceback (most recent call last):
    ...
    ValueError: Feature(s) [0] of X are constant...
    """
    constant = np.flatnonzero(constant_columns(data))
    if not constant.size:
        return
    what = (
        f"Feature(s) {constant.tolist()} of X are constant, or vary by less than"
        f" {MIN_RELATIVE_SPREAD:g} of their magnitude or less than {MIN_SPREAD:g}"
        " (too little for float64 to resolve); a density needs variation in"
        " every feature."
    )
    keep = (
        " constant_features='narrow' models each as a narrow normal (with"
        " preprocessing='standardize'; the default of EBFlowOutlierDetector), and"
        " dequantize=True (with the normal base_distribution) models a constant"
        " integer feature as uniform on its unit bin."
    )
    if droppable:
        raise ValueError(
            f"{what} Drop them first, for example with"
            " sklearn.feature_selection.VarianceThreshold, or subtract their offset"
            f" and rescale them. Or keep them:{keep}"
        )
    raise ValueError(
        f"{what} architecture='conv' models every pixel of image_shape, so keep"
        f" them (dropping them no longer fits image_shape):{keep} A blank pixel"
        " of integer counts, such as an image's border, takes dequantize=True."
    )


def constant_columns(data: NDArray[np.float64]) -> NDArray[np.bool_]:
    """Which columns are constant, or vary by less than float64 can resolve.

    A column is constant when its range is at most ``1e-12`` of its largest
    magnitude, or at most ``1e-100``.

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow._validation import constant_columns
    >>> constant_columns(np.array([[1.0, 5.0, 1e9], [2.0, 5.0, 1e9 + 1e-4]])).tolist()
    [False, True, True]
    """
    spread = np.ptp(data, axis=0)
    magnitude = np.abs(data).max(axis=0)
    return ~(spread > np.maximum(MIN_RELATIVE_SPREAD * magnitude, MIN_SPREAD))


def constant_width(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """Standard deviation of the narrow normal that models a constant column.

    ``max(1e-3, 1e-9 |v|)`` in the units of the data: GaussianMixture's default
    variance floor (``reg_covar=1e-6``), widened for large values so that float64
    resolves a departure of one width.

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow._validation import constant_width
    >>> constant_width(np.array([0.0, 1.0, 1e9])).tolist()
    [0.001, 0.001, 1.0]
    """
    return np.maximum(CONSTANT_WIDTH, CONSTANT_RELATIVE_WIDTH * np.abs(values))


def linear_relations(
    data: NDArray[np.float64], *, max_rows: int | None = None
) -> tuple[int, NDArray[np.intp]]:
    """Exact linear relations between the columns of ``data``.

    A relation is a combination of the columns, each in units of its robust
    spread (interquartile range: one gross outlier does not shrink the other rows
    to nothing), with unit-norm coefficients, whose standard deviation over the
    rows is below ``1e-6``: the
    rows lie on a hyperplane (a column is the sum, a difference or a multiple of
    others, up to a constant). Only relations that more rows than columns show
    are counted: ``n <= d`` rows always lie on a hyperplane of dimension ``n - 1``.

    The candidates come from the eigenvectors of the Gram matrix of at
    most ``max_rows`` rows spread evenly through ``data`` (default ``max(2 d + 2,
    2000)`` for ``d`` columns), and the relations are the directions of the
    candidates' span that stay flat on every row (a column that varies only on
    rows the sample skipped adds candidates that mix with the real relations:
    the span, not each candidate, is tested).

    Parameters
    ----------
    data : ndarray of shape (n_samples, n_features)
        Rows; no column may be constant.
    max_rows : int or None, default=None
        Rows the candidates are drawn from.

    Returns
    -------
    n_relations : int
        How many independent relations hold.
    columns : ndarray of int
        The columns that take part in them (a coefficient above 1e-3 of the
        largest), ascending.

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow._validation import linear_relations
    >>> rng = np.random.RandomState(0)
    >>> X = rng.normal(size=(500, 4))
    >>> linear_relations(X)
    (0, array([], dtype=int64))
    >>> X[:, 3] = 2.0 * X[:, 0] - X[:, 1] + 5.0  # the last column is redundant
    >>> linear_relations(X)
    (1, array([0, 1, 3]))
    """
    n_rows, n_columns = data.shape
    none = np.zeros(0, dtype=np.intp)
    if n_columns < 2 or n_rows <= n_columns:
        return 0, none
    if max_rows is None:
        max_rows = max(2 * n_columns + 2, 2000)
    # Each column in units of its robust spread: with the standard deviation, one
    # gross outlier (a sentinel such as 1e9 in several columns) shrank the other
    # rows to nothing, and every direction away from it looked flat.
    standardized = (data - np.median(data, axis=0)) / _robust_scale(data)
    sample = standardized
    if n_rows > max_rows:
        sample = standardized[np.linspace(0, n_rows - 1, max_rows).astype(np.intp)]
    sample = sample - sample.mean(axis=0)
    # Candidates by a loose bound. The Gram matrix's eigenvalues are exact to
    # about 1e-16 times the largest times n_features, far below the bound for
    # rows of a few spreads; where a far outlier or many correlated columns make
    # the largest one large, the singular values of the rows (3 times slower,
    # exact to 1e-16 times the largest singular value) take over.
    bound = 100.0 * MIN_DIRECTION_SPREAD
    variances, vectors = np.linalg.eigh(sample.T @ sample / sample.shape[0])
    if variances[-1] * n_columns * np.finfo(np.float64).eps < 0.01 * bound**2:
        candidates = vectors[:, variances < bound**2]
    else:
        _, singular_values, directions = np.linalg.svd(sample, full_matrices=False)
        spread = singular_values / math.sqrt(sample.shape[0])
        candidates = directions[spread < bound].T
    if candidates.shape[1] == 0:
        return 0, none
    # Confirmed on every row: a relation of the sample that the other rows break
    # (a rare value missing from the sample) is not one. The flat directions of
    # the candidates' span on every row, not the candidates one by one: where the
    # sample has spurious candidates, eigh returns a mix of them and the real
    # relations, and no single mix is flat.
    projected = standardized @ candidates
    projected = projected - projected.mean(axis=0)
    variances, rotation = np.linalg.eigh(projected.T @ projected / n_rows)
    relations = candidates @ rotation[:, variances < MIN_DIRECTION_SPREAD**2]
    if relations.shape[1] == 0:
        return 0, none
    weight = np.abs(relations)
    involved = np.any(weight > 1e-3 * weight.max(axis=0), axis=1)
    return relations.shape[1], np.flatnonzero(involved)


def dependent_columns(
    data: NDArray[np.float64],
) -> tuple[NDArray[np.intp], NDArray[np.float64], NDArray[np.float64]]:
    """The columns of ``data`` that are exact affine functions of the others.

    One column per relation of :func:`linear_relations` is chosen among the
    columns taking part, the last first (a total after its parts), each one a
    column that all the columns not yet chosen give exactly (to
    ``MIN_DIRECTION_SPREAD``, as in :func:`linear_relations`); each chosen
    column is then written in terms of the columns left, by least squares on
    every row.

    Parameters
    ----------
    data : ndarray of shape (n_samples, n_features)
        Rows; no column may be constant.

    Returns
    -------
    dependent : ndarray of int of shape (n_dependent,)
        The chosen columns, ascending.
    coefficients : ndarray of shape (n_dependent, n_features)
        ``data[:, dependent[i]]`` is ``data @ coefficients[i] + intercepts[i]``;
        zero on every chosen column.
    intercepts : ndarray of shape (n_dependent,)

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow._validation import dependent_columns
    >>> X = np.random.RandomState(0).normal(size=(500, 4))
    >>> X[:, 3] = 2.0 * X[:, 0] - X[:, 1] + 5.0
    >>> dependent, coefficients, intercepts = dependent_columns(X)
    >>> dependent.tolist(), coefficients.round(6).tolist(), intercepts.round(6).tolist()
    ([3], [[2.0, -1.0, 0.0, 0.0]], [5.0])
    """
    n_rows, n_columns = data.shape
    n_relations, involved = linear_relations(data)
    if n_relations == 0:
        return np.zeros(0, np.intp), np.zeros((0, n_columns)), np.zeros(0)
    centre = np.median(data, axis=0)
    scale = _robust_scale(data)
    standardized = (data - centre) / scale
    ones = np.ones((n_rows, 1))

    def fit(column: int, free: list[int]) -> tuple[NDArray[np.float64], float]:
        design = np.hstack([standardized[:, free], ones])
        solution = np.linalg.lstsq(design, standardized[:, column], rcond=None)[0]
        residual = standardized[:, column] - design @ solution
        # the relation's combination, (1, -solution) made unit-norm, is flat
        flatness = residual.std() / math.sqrt(1.0 + solution[:-1] @ solution[:-1])
        return solution, flatness

    # Every column may enter the fits: a part whose coefficient is below 1e-3
    # of the largest (a spread a thousand times smaller) is not "involved", but
    # the relation is not flat without it.
    free = list(range(n_columns))
    chosen: list[int] = []
    for column in reversed(involved.tolist()):
        others = [other for other in free if other != column]
        if others and fit(column, others)[1] < MIN_DIRECTION_SPREAD:
            chosen.append(column)
            free = others
        if len(chosen) == n_relations:
            break
    dependent = np.array(sorted(chosen), dtype=np.intp)
    coefficients = np.zeros((dependent.size, n_columns))
    intercepts = np.zeros(dependent.size)
    for row, column in enumerate(dependent.tolist()):
        solution = fit(column, free)[0]
        # the columns outside the relation get rounding error (1e-15): exactly 0,
        # so that they are not read as parts of it
        parts = solution[:-1]
        parts[np.abs(parts) < 1e-9 * np.abs(parts).max()] = 0.0
        # back to the data's units: x_c = centre_c + scale_c (s . z_free + s_0)
        weights = scale[column] * solution[:-1] / scale[free]
        coefficients[row, free] = weights
        intercepts[row] = (
            centre[column] + scale[column] * solution[-1] - weights @ centre[free]
        )
    return dependent, coefficients, intercepts


def _robust_scale(data: NDArray[np.float64]) -> NDArray[np.float64]:
    """Per-column spread robust to a few gross outliers: the interquartile range,
    else the median absolute deviation (a column mostly at one value), else the
    standard deviation (a column at one value but for a few rows); each scaled to
    a normal's standard deviation."""
    low, median, high = np.percentile(data, [25.0, 50.0, 75.0], axis=0)
    scale = (high - low) / 1.349
    flat = ~(scale > 0)
    if flat.any():
        deviation = np.median(np.abs(data[:, flat] - median[flat]), axis=0) * 1.4826
        scale[flat] = deviation
        flat = ~(scale > 0)
        if flat.any():
            scale[flat] = mean_and_scale(data[:, flat])[1]
    return scale


def mean_and_scale(
    data: NDArray[np.float64],
    weights: NDArray[np.float64] | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-column mean and standard deviation, computed without over- or underflow.

    The columns are first mapped to ``[0, 1]`` by their range, so squares of tiny
    (1e-200) or huge (1e150) values never leave float64's range.

    Parameters
    ----------
    data : ndarray of shape (n_samples, n_features)
        Rows; no column may be constant.
    weights : ndarray of shape (n_samples,) or None, default=None
        Non-negative row weights (not all zero): the weighted mean and the weighted
        (population) standard deviation, which equal those of the rows repeated as
        many times as their integer weights. ``None`` weighs rows equally.

    Returns
    -------
    mean, scale : ndarray of shape (n_features,)

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow._validation import mean_and_scale
    >>> mean, scale = mean_and_scale(np.array([[1e-200], [3e-200]]))
    >>> float(mean[0]), float(scale[0])
    (2e-200, 1e-200)
    >>> mean, scale = mean_and_scale(np.array([[0.0], [1.0]]), np.array([1.0, 3.0]))
    >>> float(mean[0]), bool(np.isclose(scale[0], np.std([0.0, 1.0, 1.0, 1.0])))
    (0.75, True)
    """
    low = data.min(axis=0)
    spread = np.ptp(data, axis=0)
    unit = (data - low) / spread
    if weights is None:
        return low + spread * unit.mean(axis=0), spread * unit.std(axis=0)
    share = weights / weights.sum()
    unit_mean = share @ unit
    unit_std = np.sqrt(share @ np.square(unit - unit_mean))
    return low + spread * unit_mean, spread * unit_std


def validated_sample_weight(sample_weight: Any, n_samples: int) -> NDArray[np.float64]:
    """``sample_weight`` as one finite float64 weight per row.

    A number is every row's weight. Built on scikit-learn's public
    :func:`~sklearn.utils.check_array`, so that it behaves alike on every
    scikit-learn release the package supports (the private
    ``_check_sample_weight`` changed its keywords between them).

    Parameters
    ----------
    sample_weight : array-like of shape (n_samples,) or float
        The weights given to ``fit``; never modified.
    n_samples : int
        The number of rows they weigh.

    Returns
    -------
    ndarray of shape (n_samples,), float64

    Examples
    --------
    >>> from skebflow._validation import validated_sample_weight
    >>> validated_sample_weight([1, 2, 0], 3).tolist(), validated_sample_weight(2, 2)
    ([1.0, 2.0, 0.0], array([2., 2.]))
    >>> validated_sample_weight([1.0, 2.0], 3)
    Traceback (most recent call last):
    ...
    ValueError: sample_weight has 2 entries, but X has 3 rows: give one weight per row.
    """
    from sklearn.utils import check_array

    if isinstance(sample_weight, Real):
        sample_weight = np.full(n_samples, sample_weight, dtype=np.float64)
    weights = check_array(
        sample_weight,
        ensure_2d=False,
        dtype=np.float64,
        input_name="sample_weight",
        ensure_min_samples=0,
    )
    if weights.ndim != 1:
        raise ValueError(
            f"sample_weight must be a 1-D array or a number, got an array of shape"
            f" {weights.shape}."
        )
    if weights.shape[0] != n_samples:
        raise ValueError(
            f"sample_weight has {weights.shape[0]} entries, but X has {n_samples}"
            " rows: give one weight per row."
        )
    return weights


def check_sample_weight(
    sample_weight: Any, X: NDArray[np.float64], *, min_rows: int = 2
) -> tuple[NDArray[np.intp] | None, NDArray[np.float64] | None]:
    """The rows a weighted fit keeps and their weights, or ``None`` for each.

    Validated by :func:`validated_sample_weight` (one finite weight per row), and
    non-negative. Rows of weight zero are dropped, exactly as if they were not in
    ``X``; weights that are then all equal are returned as ``None``, so that the fit
    is the unweighted one, bit for bit. The weights returned are divided by their
    largest, so that their sum cannot overflow.

    Parameters
    ----------
    sample_weight : array-like of shape (n_samples,), float or None
        The weights given to ``fit``.
    X : ndarray of shape (n_samples, n_features)
        The validated rows.
    min_rows : int, default=2
        Fewest rows of positive weight accepted.

    Returns
    -------
    rows : ndarray of int or None
        Indices of the rows of positive weight; ``None`` when every row has one.
    weights : ndarray of float64 or None
        The weights of those rows; ``None`` when they are all equal.

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow._validation import check_sample_weight
    >>> X = np.zeros((4, 1))
    >>> rows, weights = check_sample_weight([0.0, 2.0, 4.0, 4.0], X)
    >>> rows.tolist(), weights.tolist()
    ([1, 2, 3], [0.5, 1.0, 1.0])
    >>> check_sample_weight([0, 3, 3, 3], X)[1] is None  # equal: the unweighted fit
    True
    >>> check_sample_weight([0, 0, 0, 0], X)
    Traceback (most recent call last):
    ...
    ValueError: sample_weight sums to zero...
    """
    if sample_weight is None:
        return None, None
    weights = validated_sample_weight(sample_weight, X.shape[0])
    if np.any(weights < 0):
        raise ValueError(
            f"sample_weight has {int(np.sum(weights < 0))} negative value(s):"
            " weights must be non-negative (0 leaves a row out)."
        )
    positive = weights > 0
    n_positive = int(positive.sum())
    if n_positive == 0:
        raise ValueError(
            "sample_weight sums to zero: every weight is zero, so there is nothing to"
            " fit. Give a positive weight to the rows to fit."
        )
    if n_positive < min_rows:
        raise ValueError(
            f"sample_weight gives a positive weight to {n_positive} row(s), but at"
            f" least {min_rows} are needed: a row of zero weight counts as removed."
        )
    rows = None if n_positive == weights.size else np.flatnonzero(positive)
    if rows is not None:
        weights = weights[rows]
    if np.all(weights == weights[0]):
        return rows, None
    scaled = weights / weights.max()
    if not np.all(scaled > 0):
        n_vanished = int(np.sum(scaled == 0))
        raise ValueError(
            f"sample_weight spans more than float64 can hold: {n_vanished}"
            f" positive weight(s) (the smallest {weights.min():.3g}) vanish beside"
            f" the largest ({weights.max():.3g}). Give those rows weight 0 to leave"
            " them out, or weights within a ratio of about 1e300."
        )
    return rows, scaled


def check_bounds(
    bounds: Any, n_features: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``(lower, upper)`` as finite float64 arrays of shape (n_features,).

    Examples
    --------
    >>> from skebflow._validation import check_bounds
    >>> lower, upper = check_bounds((0, [1.0, 2.0]), 2)
    >>> lower.tolist(), upper.tolist()
    ([0.0, 0.0], [1.0, 2.0])
    >>> check_bounds((0, 1, 2), 2)
    Traceback (most recent call last):
    ...
    ValueError: bounds must be a pair (lower, upper)...
    """
    if not isinstance(bounds, tuple | list) or len(bounds) != 2:
        raise ValueError(
            f"bounds must be a pair (lower, upper) of floats or arrays of shape"
            f" ({n_features},), got {bounds!r}."
        )
    pair = []
    for name, bound in zip(("lower", "upper"), bounds, strict=True):
        try:
            values = np.asarray(bound, dtype=np.float64)
            values = np.broadcast_to(values, (n_features,)).copy()
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"The {name} bound {bound!r} must be a float or an array of shape"
                f" ({n_features},)."
            ) from error
        if not np.all(np.isfinite(values)):
            raise ValueError(
                f"The {name} bound {bound!r} holds NaN or infinite values; bounds"
                " must be finite."
            )
        pair.append(values)
    lower, upper = pair
    if np.any(upper <= lower):
        raise ValueError(f"bounds={bounds!r} must have upper > lower in every feature.")
    return lower, upper


def check_hidden_layer_sizes(sizes: Any) -> tuple[int, ...]:
    """The conditioner widths as a tuple of positive ints; one int is one hidden
    layer, as scikit-learn's ``MLPRegressor`` reads it.

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow._validation import check_hidden_layer_sizes
    >>> check_hidden_layer_sizes([32, 32]), check_hidden_layer_sizes(np.array([8, 4]))
    ((32, 32), (8, 4))
    >>> check_hidden_layer_sizes(64)
    (64,)
    >>> check_hidden_layer_sizes((2.7,))
    Traceback (most recent call last):
    ...
    ValueError: hidden_layer_sizes=(2.7,) must hold positive integers...
    >>> check_hidden_layer_sizes(True)
    Traceback (most recent call last):
    ...
    ValueError: hidden_layer_sizes=True must hold positive integers...
    """
    entries = as_layer_sizes(sizes)
    if isinstance(entries, str) or not hasattr(entries, "__iter__"):
        entries = (entries,)  # True (an Integral to scikit-learn's checks), 2.5
    if not all(
        isinstance(size, Integral) and not isinstance(size, bool) and size >= 1
        for size in entries
    ):
        raise ValueError(
            f"hidden_layer_sizes={sizes!r} must hold positive integers, the width of"
            " each hidden layer of the conditioners, e.g. (32, 32)."
        )
    return tuple(int(size) for size in entries)


def as_layer_sizes(sizes: Any) -> Any:
    """``sizes`` as a tuple (one int ``n`` is ``(n,)``, an array its entries), for
    checking and comparing; anything else (``"auto"``, a value the check will
    refuse) as it is.

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow._validation import as_layer_sizes
    >>> as_layer_sizes(16), as_layer_sizes(np.array([8, 8])), as_layer_sizes("auto")
    ((16,), (8, 8), 'auto')
    """
    if isinstance(sizes, Integral) and not isinstance(sizes, bool):
        return (sizes,)
    if isinstance(sizes, str) or not hasattr(sizes, "__iter__"):
        return sizes
    return tuple(
        int(size) if isinstance(size, Integral) and not isinstance(size, bool) else size
        for size in sizes
    )


def check_positive_integer(value: Any, name: str, *, minimum: int = 1) -> int:
    """``value`` as an int of at least ``minimum``; bools are refused.

    Examples
    --------
    >>> from skebflow._validation import check_positive_integer
    >>> check_positive_integer(3, "n_samples")
    3
    >>> check_positive_integer(True, "n_samples")
    Traceback (most recent call last):
    ...
    ValueError: n_samples=True must be an integer >= 1.
    """
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}.")
    return int(value)


def check_positive_real(value: Any, name: str, *, minimum: float = 0.0) -> float:
    """``value`` as a finite float above ``minimum`` (strictly); bools are refused.

    Examples
    --------
    >>> from skebflow._validation import check_positive_real
    >>> check_positive_real(0.05, "step_size")
    0.05
    >>> check_positive_real(-1.0, "step_size")
    Traceback (most recent call last):
    ...
    ValueError: step_size=-1.0 must be a finite number > 0.0.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, Real)
        or not math.isfinite(value)
        or value <= minimum
    ):
        raise ValueError(f"{name}={value!r} must be a finite number > {minimum}.")
    return float(value)


def same_value(first: Any, second: Any) -> bool:
    """Whether two parameter values are equal, arrays and nested tuples included.

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow._validation import same_value
    >>> same_value((0, np.ones(2)), (0, np.ones(2))), same_value((32,), [32])
    (True, True)
    >>> nan = float("nan")
    >>> same_value("coupling", "fc"), same_value((nan, 1.0), (nan, 1.0))
    (False, True)
    """
    if isinstance(first, tuple | list) and isinstance(second, tuple | list):
        return len(first) == len(second) and all(
            same_value(a, b) for a, b in zip(first, second, strict=True)
        )
    if isinstance(first, np.ndarray) or isinstance(second, np.ndarray):
        try:
            return bool(
                np.array_equal(np.asarray(first), np.asarray(second), equal_nan=True)
            )
        except (TypeError, ValueError):
            try:
                return bool(np.array_equal(np.asarray(first), np.asarray(second)))
            except (TypeError, ValueError):
                return False
    if isinstance(first, float) and isinstance(second, float):
        return first == second or (math.isnan(first) and math.isnan(second))
    try:
        return bool(first == second)
    except (TypeError, ValueError):
        return False


def _set_by_fit(name: str) -> bool:
    # Fitted attributes end with "_"; private fitted records start with "_".
    return not name.startswith("__") and (name.endswith("_") or name.startswith("_"))


def fitted_state(estimator: Any) -> dict[str, Any]:
    """The attributes ``fit`` sets, by reference, to restore if a fit fails.

    ``fit`` replaces fitted objects and never changes them in place, so references
    are enough.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> from skebflow._validation import fitted_state
    >>> fitted_state(SimpleNamespace(alpha=1, coef_=2, _spec=3))
    {'coef_': 2, '_spec': 3}
    """
    return {name: value for name, value in vars(estimator).items() if _set_by_fit(name)}


def restore_fitted_state(estimator: Any, state: dict[str, Any]) -> None:
    """Put back what :func:`fitted_state` saved and drop what a failed fit added.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> from skebflow._validation import fitted_state, restore_fitted_state
    >>> estimator = SimpleNamespace(alpha=1, coef_=2)
    >>> saved = fitted_state(estimator)
    >>> estimator.coef_, estimator.n_iter_ = 5, 7  # a fit that then fails
    >>> restore_fitted_state(estimator, saved)
    >>> vars(estimator)
    {'alpha': 1, 'coef_': 2}
    """
    for name in list(vars(estimator)):
        if name not in state and _set_by_fit(name):
            delattr(estimator, name)
    for name, value in state.items():
        setattr(estimator, name, value)


def check_has_columns(X: Any) -> None:
    """Refuse a 2-D input without columns in scikit-learn's words: a DataFrame
    without columns would otherwise fail inside scikit-learn's validation with
    "at least one array or dtype is required", which does not say what is wrong.
    An array of more than two dimensions (images not flattened) is refused with
    what to do about it.

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow._validation import check_has_columns
    >>> check_has_columns(np.zeros((3, 2)))
    >>> check_has_columns(np.zeros((3, 0)))
    Traceback (most recent call last):
    ...
    ValueError: Found array with 0 feature(s) (shape=(3, 0)) while a minimum of 1 ...
    """
    shape = getattr(X, "shape", None)
    if shape is not None and len(shape) > 2:
        # the likeliest case: images not flattened for architecture="conv"
        raise ValueError(
            f"Found array with dim {len(shape)} (shape={tuple(shape)}), while dim <="
            " 2 is required: one row per sample. Flatten each sample,"
            " X.reshape(len(X), -1); for images in C order, architecture='conv'"
            " with image_shape=(C, H, W) folds each row back into its image."
        )
    if shape is not None and len(shape) == 2 and shape[1] == 0:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={tuple(shape)}) while a"
            " minimum of 1 is required: X has no columns."
        )
