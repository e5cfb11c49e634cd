"""From a training table to what the flow trains on (NumPy only).

The preprocessing spec (standardization or logit box, dequantized and constant
columns) and the split of the rows into training and validation rows.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._validation import (
    check_bounds,
    check_spread,
    constant_columns,
    constant_width,
    dependent_columns,
    mean_and_scale,
)

__all__ = [
    "MIN_VALIDATION_ROWS",
    "check_within_fitted_box",
    "fit_kernel_marginals",
    "fit_preprocessing_spec",
    "split_for_early_stopping",
]

# Fewer held-out rows than this cannot tell over-fitting from noise.
MIN_VALIDATION_ROWS = 10

# The kernel marginals (marginal_transform="kde"): bandwidths tried, as multiples
# of the column's standard deviation; rows the leave-one-out likelihood that picks
# one is computed on; kernel centres kept per column at most; the wide normal's
# weight and its width in standard deviations.
KERNEL_BANDWIDTHS = np.logspace(-3.0, 0.3, 17)
KERNEL_SELECTION_ROWS = 500
KERNEL_MAX_CENTRES = 128
KERNEL_WIDE_WEIGHT = 0.02
KERNEL_WIDE_SCALE = 3.0
# Scale the bandwidth chosen on the subsample to every row by n^(-1/5). Off: it
# gained on the density benchmark's tuning group (at most 2 000 rows) and lost on
# the large-data tuning group (benchmarks/kde_large.py, which switches it on).
KERNEL_SCALED_TO_ALL_ROWS = False
# The narrowest kernel, in units in the last place of the column's largest value.
KERNEL_MIN_ULPS = 64
# With linear_relations="narrow": the width of the normal across each exact
# linear relation's hyperplane, in standard deviations of its dependent column
# (GaussianMixture's default reg_covar, 1e-6, is this width's square on
# standardized data).
RELATION_WIDTH = 1e-3
# Adaptive kernels (Abramson 1982), when SENSITIVITY > 0: each row's kernel is
# the column's bandwidth times (pilot density at the row / the pilot's geometric
# mean) ** -SENSITIVITY, that factor clipped to [1 / CLIP, CLIP], times one
# multiple of MULTIPLES chosen by the same leave-one-out likelihood. Off (0: one
# bandwidth per column): with the wide normal in the leave-one-out density and
# the robust spread they lost to one bandwidth on the density benchmark's tuning
# group (-0.007 nats per dimension) and its large-data group (-0.014), though
# they had won by +0.062 and +0.034 without those (docs/benchmarks.md,
# "Adaptive kernels").
KERNEL_ADAPTIVE_SENSITIVITY = 0.0
KERNEL_ADAPTIVE_CLIP = 10.0
KERNEL_ADAPTIVE_MULTIPLES = 2.0 ** np.linspace(-3.0, 1.5, 10)


def integer_resolution_limits(X: Any) -> NDArray[np.float64] | None:
    """Per column of the caller's ``X``, the magnitude from which its values can
    no longer be told integer-valued: a float with ``m`` mantissa bits holds only
    whole numbers from ``2**m`` on, and unit bins need fractions to be resolved,
    so the limit is ``2**(m - 2)`` (spacing 0.25): ``2**50`` for float64 (and
    anything cast to it), ``2**21`` for float32. Integer columns are cast to
    float64 for the fit, so theirs is float64's: beyond it a bin's noise would
    round away (at ``2**55`` float64's spacing is 8). ``None`` for an ``X`` that
    is not a table (its validation says what is wrong).

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow._preparation import integer_resolution_limits
    >>> integer_resolution_limits(np.zeros((2, 2), dtype=np.float32)).tolist()
    [2097152.0, 2097152.0]
    >>> integer_resolution_limits(np.zeros((2, 1), dtype=np.int64)).tolist()
    [1125899906842624.0]
    """
    try:
        shape = np.shape(X)
    except (TypeError, ValueError):  # ragged lists and other non-tables
        return None
    if len(shape) != 2:
        return None
    dtypes = getattr(X, "dtypes", None)  # a DataFrame's per column
    if dtypes is None:
        dtypes = [getattr(X, "dtype", np.dtype(np.float64))] * shape[1]

    def limit(dtype: Any) -> float:
        try:
            dtype = np.dtype(dtype)
        except TypeError:
            if hasattr(dtype, "numpy_dtype"):  # pandas' nullable extension dtypes
                dtype = np.dtype(dtype.numpy_dtype)
            else:  # a tensor's, named like "torch.float32"
                name = str(dtype).rpartition(".")[2]
                if name == "bfloat16":  # no NumPy dtype; 7 mantissa bits
                    return 2.0 ** (7 - 2)
                try:
                    dtype = np.dtype(name)
                except TypeError:
                    dtype = np.dtype(np.float64)
        if dtype.kind in "iub":  # cast to float64
            return 2.0 ** (52 - 2)
        mantissa = np.finfo(dtype).nmant if dtype.kind == "f" else 52
        return 2.0 ** (min(mantissa, 52) - 2)

    return np.array([limit(dtype) for dtype in dtypes], dtype=np.float64)


def integer_valued_columns(
    X: NDArray[np.float64], limits: NDArray[np.float64] | None = None
) -> NDArray[np.bool_]:
    """Columns of whole numbers below their resolution limit
    (:func:`integer_resolution_limits`; float64's when ``limits`` is ``None``): a
    continuous column of values beyond it (nanosecond timestamps, float32
    amounts in the tens of millions) is whole numbers only because the float
    cannot hold fractions there, and is not told integer-valued.

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow._preparation import integer_valued_columns
    >>> integer_valued_columns(np.array([[1.0, 1.5, 2.0**60], [2.0, 3.0, 1.0]]))
    array([ True, False, False])
    """
    if limits is None:
        limits = np.full(X.shape[1], 2.0**50)
    largest = np.max(np.abs(X), axis=0, initial=0.0)
    return np.all(X == np.round(X), axis=0) & (largest < limits)


def _refuse_whole_numbers_beyond_resolution(
    X: NDArray[np.float64], constant: NDArray[np.bool_]
) -> None:
    """Refuse, saying why, the columns found constant that hold whole numbers
    varying by whole units beyond ``2**50`` (``2**51 + k``): they are constant
    relative to their magnitude, and unit noise there rounds away in float64, so
    they cannot be dequantized either. :func:`check_spread`'s message (too little
    variation for float64, or dequantize them) would not say what to do.

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow._preparation import _refuse_whole_numbers_beyond_resolution
    >>> X = np.c_[2.0**51 + np.arange(4.0), np.arange(4.0)]
    >>> _refuse_whole_numbers_beyond_resolution(X, np.array([True, False]))
    Traceback (most recent call last):
    ...
    ValueError: Feature(s) [0] of X hold whole numbers beyond 2**50...
    """
    candidates = np.flatnonzero(constant)
    if not candidates.size:
        return
    values = X[:, candidates]
    largest = np.abs(values).max(axis=0)
    spread = np.ptp(values, axis=0)
    # integers of an int64 column's range, varying by a few units (every float of
    # 2**52 or more is whole, so a wider spread is a continuous column)
    far = (
        (largest >= 2.0**50)
        & (largest < 2.0**63)
        & (spread >= 1.0)
        & (spread <= 2.0**20)
        & np.all(values == np.round(values), axis=0)
    )
    if far.any():
        raise ValueError(
            f"Feature(s) {candidates[far].tolist()} of X hold whole numbers beyond"
            " 2**50 (about 1.1e15) that vary by a few units: relative to their"
            " magnitude they are constant, and unit dequantization noise rounds"
            " away in float64 there. Subtract each such feature's offset first"
            " (for example its minimum), or drop it; or keep it as a constant"
            " with constant_features='narrow'."
        )


def fit_preprocessing_spec(
    X: NDArray[np.float64],
    *,
    kind: str | None,
    dequantize: bool,
    constant_features: str,
    one_bin_constants: bool = True,
    bounds: Any,
    logit_alpha: float,
    sample_weight: NDArray[np.float64] | None = None,
    integer_columns: NDArray[np.bool_] | None = None,
    marginal_transform: str | None = None,
    random_state: np.random.RandomState | None = None,
    kernel_wide_scale: float | None = None,
    linear_relations: bool = False,
    integer_limits: NDArray[np.float64] | None = None,
    every_column: bool = False,
) -> dict[str, Any]:
    """The statistics of the preprocessing, fitted in float64 on ``X``.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Training rows, validated and finite.
    kind : {"standardize", "logit"} or None
        The preprocessing.
    dequantize : bool
        Dequantize the integer-valued columns (not the constant ones).
    constant_features : {"error", "narrow"}
        Refuse constant columns, or model each as a narrow normal
        (``"standardize"`` only).
    one_bin_constants : bool, default=True
        With ``dequantize`` and ``constant_features="error"``, model a constant
        integer column as uniform on its unit bin instead of refusing it.
    bounds : pair or None
        The logit's box; ``None`` takes the data's range widened by 5 %.
    logit_alpha : float
        The logit's smoothness.
    sample_weight : ndarray of shape (n_samples,) or None, default=None
        Non-negative row weights: the standardization takes the weighted mean and
        standard deviation; the ranges (constant columns, the logit's box, integer
        columns) come from the rows of positive weight, so a row of weight zero
        counts as removed.
    integer_columns : ndarray of bool of shape (n_features,) or None, default=None
        With ``dequantize``, the columns to treat as integer-valued (those constant
        on ``X`` excepted), decided on other rows (a trimmed refit keeps its first
        fit's); ``None`` decides them on ``X``.
    marginal_transform : {"kde"} or None, default=None
        With ``"kde"`` (``kind="standardize"`` only), the continuous columns (not
        constant, not dequantized) are mapped to a standard normal by their kernel
        density's CDF (:func:`fit_kernel_marginals`) instead of standardized.
    random_state : RandomState or None, default=None
        Draws the rows the kernel bandwidths are chosen on.
    kernel_wide_scale : float or None, default=None
        The width of the kernel marginals' wide normal, in standard deviations
        of its column; ``None`` takes ``KERNEL_WIDE_SCALE`` (3).
    linear_relations : bool, default=False
        With ``kind="standardize"``, the columns that are exact affine functions
        of the others (:func:`~skebflow._validation.dependent_columns`, among the
        columns that vary and are not dequantized) are replaced by their
        residuals (``relation_weight``, a
        :class:`~skebflow.flows.LinearResidual`), each modelled as a normal
        ``RELATION_WIDTH`` standard deviations of its column wide.
    integer_limits : ndarray of shape (n_features,) or None, default=None
        Per column, the magnitude from which whole numbers are not told
        integer-valued (:func:`integer_resolution_limits` of the caller's input;
        ``None``: float64's).
    every_column : bool, default=False
        Whether the flow needs every column (a convolutional flow's pixels): the
        refusal of a constant column then does not advise dropping it.

    Returns
    -------
    dict
        What :func:`skebflow._building.build_preprocessing` needs.

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow._preparation import fit_preprocessing_spec
    >>> X = np.array([[0.0, 1.0], [2.0, 1.0]])
    >>> spec = fit_preprocessing_spec(X, kind="standardize", dequantize=False,
    ...     constant_features="narrow", bounds=None, logit_alpha=1.0)
    >>> spec["mean"].tolist(), spec["scale"].tolist()
    ([1.0, 1.0], [1.0, 0.001])
    """
    if sample_weight is not None:
        keep = sample_weight > 0
        X, sample_weight = X[keep], sample_weight[keep]
    spec: dict[str, Any] = {
        "kind": kind,
        "dequantize_columns": None,
        "constant_columns": None,
    }
    constant = constant_columns(X)
    # The columns dequantized here are integer-valued in these rows (a column with
    # fractions in the rows that decided the integer columns, a trimmed refit's
    # first fit, is not an integer column here either).
    integer = (
        integer_valued_columns(X, integer_limits)
        & (True if integer_columns is None else integer_columns)
        if dequantize
        else np.zeros(X.shape[1], dtype=bool)
    )
    # A dequantized integer column with two values or more varies by a whole bin
    # at least, which float64 resolves below 2**50, however large its values
    # (1e15 + k): not constant, whatever the relative rule says.
    varying_integer = integer & (np.ptp(X, axis=0) > 0)
    constant = constant & ~varying_integer
    # Dequantized, a constant integer column is uniform on one unit bin (a pixel
    # that is always blank): a density, not an error. With constant_features=
    # "narrow" it keeps its narrow normal instead.
    one_bin = (
        constant & integer
        if one_bin_constants and constant_features == "error"
        else np.zeros(X.shape[1], dtype=bool)
    )
    constant = constant & ~one_bin
    if constant_features == "error" or not constant.any():
        _refuse_whole_numbers_beyond_resolution(X, constant)
        # The one-bin and the varying integer columns vary once dequantized;
        # stand-in values keep the indices of the check's message right.
        exempt = one_bin | varying_integer
        check_spread(
            np.where(exempt, np.arange(X.shape[0])[:, None], X) if exempt.any() else X,
            droppable=not every_column,
        )
    elif kind != "standardize":
        raise ValueError(
            f"Feature(s) {np.flatnonzero(constant).tolist()} of X are constant;"
            " constant_features='narrow' models them with"
            f" preprocessing='standardize' only, not preprocessing={kind!r}. Use"
            " preprocessing='standardize', or drop those features."
        )
    else:
        spec["constant_columns"] = constant
    if one_bin.any():
        # Uniform on its unit bin, mapped to the real line by a probit (the flow
        # then sees exactly N(0, 1) noise there; see flows.BinProbit). The
        # standardization or the logit leave the column as it is.
        spec["one_bin_columns"] = one_bin
        spec["one_bin_lower"] = np.where(one_bin, X[0], 0.0)
    if dequantize and integer_columns is None:
        integer_columns = integer
    dependent = np.zeros(X.shape[1], dtype=bool)
    if linear_relations and kind == "standardize":
        tested = ~constant & ~one_bin
        if dequantize:  # a dequantized column's noise breaks any relation
            tested &= ~integer_columns
        columns = np.flatnonzero(tested)
        if columns.size >= 2:
            chosen, coefficients, _ = dependent_columns(X[:, columns])
            if chosen.size:
                weight = np.zeros((X.shape[1], X.shape[1]))
                weight[np.ix_(columns[chosen], columns)] = coefficients
                dependent[columns[chosen]] = True
                spec["relation_weight"] = weight
                residuals = (X - X @ weight.T)[:, dependent]
                known = spec["constant_columns"]
                spec["constant_columns"] = (
                    dependent if known is None else known | dependent
                )
    data = X
    if dequantize:
        # A constant column keeps its narrow normal: no dequantization noise.
        integer_columns = integer_columns & ~constant & ~dependent
        # Without an integer column there is nothing to dequantize, and no noise
        # to draw: the fit is then bit for bit the one without dequantization.
        if integer_columns.any():
            spec["dequantize_columns"] = integer_columns
        data = X + 0.5 * integer_columns
    else:
        integer_columns = np.zeros(X.shape[1], dtype=bool)
    if kind == "standardize":
        varying = ~constant & ~one_bin & ~dependent
        mean, scale = mean_and_scale(data[:, varying], sample_weight)
        flat = ~(np.isfinite(scale) & (scale > 0))
        if flat.any():
            raise ValueError(
                f"Feature(s) {np.flatnonzero(varying)[flat].tolist()} of X have a"
                " weighted standard deviation of zero: the rows where they vary"
                " carry weights too small, next to the others', to count in float64."
                " Give those rows larger weights, or drop the features."
            )
        spec["mean"] = data.mean(axis=0)
        spec["mean"][varying] = mean
        spec["scale"] = constant_width(spec["mean"])
        spec["scale"][varying] = scale
        # the probit's output, standard normal, stays as it is
        spec["mean"][one_bin] = 0.0
        spec["scale"][one_bin] = 1.0
        if dependent.any():  # each residual: a narrow normal at its intercept
            spec["mean"][dependent] = np.average(
                residuals, axis=0, weights=sample_weight
            )
            spec["scale"][dependent] = (
                RELATION_WIDTH * mean_and_scale(X[:, dependent], sample_weight)[1]
            )
        if marginal_transform == "kde":
            mapped = varying & ~integer_columns
            if mapped.any():
                spec.update(
                    fit_kernel_marginals(
                        X,
                        mapped,
                        sample_weight,
                        np.random.RandomState(0)
                        if random_state is None
                        else random_state,
                        wide_scale=kernel_wide_scale,
                    )
                )
                # their kernel CDF's output, standard normal, stays as it is
                spec["mean"][mapped] = 0.0
                spec["scale"][mapped] = 1.0
    elif kind == "logit":
        spec["alpha"] = float(logit_alpha)
        low, high = _range_filled(X, integer_columns)
        if bounds is None:
            margin = 0.05 * (high - low)
            # Whole bins for integer columns: a sample floored back to an integer
            # then lies in a bin inside the box, whose centre has a finite density.
            margin = np.where(integer_columns, np.ceil(margin), margin)
            spec["lower"], spec["upper"] = low - margin, high + margin
        else:
            lower, upper = check_bounds(bounds, X.shape[1])
            outside = (low < lower) | (high > upper)
            if outside.any():
                hint = (
                    " (dequantized integer columns need upper >= max + 1)"
                    if integer_columns.any()
                    else ""
                )
                columns = np.flatnonzero(outside)[:10]
                # the data's own range; a dequantized column's bins end at max + 1
                data_high = X.max(axis=0)
                ranges = ", ".join(
                    f"feature {j}: values in [{float(low[j])!r},"
                    f" {float(data_high[j])!r}]"
                    + (
                        f" (bins up to {float(high[j])!r})"
                        if integer_columns[j]
                        else ""
                    )
                    + f", bounds [{float(lower[j])!r}, {float(upper[j])!r}]"
                    for j in columns.tolist()
                )
                more = " ..." if outside.sum() > len(columns) else ""
                raise ValueError(
                    f"X has values outside bounds={bounds!r}{hint} ({ranges}{more});"
                    " widen the bounds or use preprocessing='standardize'."
                )
            # Whole bins for integer columns here too: edges rounded inward to
            # whole numbers (the data, max + 1 included, stay inside), so that a
            # sample floored back to an integer lies in a bin inside the box.
            spec["lower"] = np.where(integer_columns, np.ceil(lower), lower)
            spec["upper"] = np.where(integer_columns, np.floor(upper), upper)
    return spec


def _leave_one_out_bandwidth(
    values: NDArray[np.float64],
    weights: NDArray[np.float64],
    wide: tuple[float, float],
) -> float | None:
    """The bandwidth of ``KERNEL_BANDWIDTHS`` (times the robust spread) whose
    column density (the kernels and the ``wide`` normal's mean and standard
    deviation, :func:`_best_leave_one_out_multiple`) gives ``values`` the highest
    weighted leave-one-out log-likelihood; ``None`` when ``values`` hold a single
    value (nothing to leave out).
    """
    spread = _robust_spread(values, weights)
    if not spread > 0:
        return None
    best = _best_leave_one_out_multiple(
        values, weights, np.full(values.size, spread), KERNEL_BANDWIDTHS, wide
    )
    return None if best is None else best * spread


def _best_leave_one_out_multiple(
    values: NDArray[np.float64],
    weights: NDArray[np.float64],
    row_bandwidths: NDArray[np.float64],
    multiples: NDArray[np.float64],
    wide: tuple[float, float],
) -> float | None:
    """The multiple of ``row_bandwidths`` (each row's kernel width) whose column
    density gives ``values`` the highest weighted leave-one-out log-likelihood;
    ``None`` when no row has another value.

    The density is the fitted one: the kernels of the other rows with weight
    ``1 - KERNEL_WIDE_WEIGHT``, and the wide normal (mean and standard deviation
    ``wide``). The wide normal gives a row far from every other (a sentinel
    value) its floor of density, so such rows do not widen every kernel. Rows
    equal to the one left out are left out with it: tied values (a rounded
    measurement) would otherwise pull the bandwidth to the grid's floor, a
    spike on each value.
    """
    squared = (values[:, None] - values[None, :]) ** 2
    others = squared > 0
    # rows with no other value have no leave-one-out density: not counted
    counted = others.any(axis=1)
    if not counted.any():
        return None
    log_weights = np.where(others, np.log(weights)[None, :], -np.inf)[counted]
    squared = squared[counted]
    row_weights = weights[counted] / weights[counted].sum()
    log_totals = _logsumexp(log_weights, axis=1)
    wide_loc, wide_scale = wide
    log_wide = (
        math.log(KERNEL_WIDE_WEIGHT)
        - 0.5 * ((values[counted] - wide_loc) / wide_scale) ** 2
        - math.log(wide_scale)
    )
    best, best_score = None, -math.inf
    for multiple in multiples:
        kernel_widths = multiple * row_bandwidths  # the kernel of each centre
        log_kernel = (
            log_weights
            - squared / (2 * kernel_widths**2)[None, :]
            - np.log(kernel_widths)[None, :]
        )
        log_density = np.logaddexp(
            math.log1p(-KERNEL_WIDE_WEIGHT)
            + _logsumexp(log_kernel, axis=1)
            - log_totals,
            log_wide,
        )
        score = float(row_weights @ log_density)
        if score > best_score:
            best, best_score = float(multiple), score
    return best


def _adaptive_bandwidths(
    values: NDArray[np.float64],
    weights: NDArray[np.float64],
    bandwidth: float,
    chosen: NDArray[np.intp],
    wide: tuple[float, float],
) -> NDArray[np.float64]:
    """Each row's kernel width (Abramson's square-root law at the default
    sensitivity): ``bandwidth`` times the clipped local factor of the fixed
    kernel density at the row, times the multiple whose leave-one-out
    likelihood of the ``chosen`` rows is highest."""
    centres, centre_weights = _binned_centres(
        values, weights, np.full(values.size, bandwidth)
    )[:2]
    log_pilot = np.empty(values.size)
    log_centre_weights = np.log(centre_weights)
    for start in range(0, values.size, 4096):
        part = values[start : start + 4096]
        log_pilot[start : start + 4096] = _logsumexp(
            log_centre_weights[None, :]
            - 0.5 * ((part[:, None] - centres[None, :]) / bandwidth) ** 2,
            axis=1,
        )
    # a row far beyond the others (its pilot density e^-100 below the peak) takes
    # the widest factor anyway; the floor keeps the mean finite
    log_pilot = np.maximum(log_pilot, log_pilot.max() - 100.0)
    log_mean = np.average(log_pilot, weights=weights)
    factors = np.clip(
        np.exp(-KERNEL_ADAPTIVE_SENSITIVITY * (log_pilot - log_mean)),
        1.0 / KERNEL_ADAPTIVE_CLIP,
        KERNEL_ADAPTIVE_CLIP,
    )
    row_bandwidths = bandwidth * factors
    multiple = _best_leave_one_out_multiple(
        values[chosen],
        weights[chosen],
        row_bandwidths[chosen],
        KERNEL_ADAPTIVE_MULTIPLES,
        wide,
    )
    return row_bandwidths * (1.0 if multiple is None else multiple)


def _logsumexp(values: NDArray[np.float64], axis: int) -> NDArray[np.float64]:
    """``log(sum(exp(values)))`` along ``axis``, without overflow."""
    top = values.max(axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(values - top).sum(axis=axis)) + top.squeeze(axis)


def _robust_spread(values: NDArray[np.float64], weights: NDArray[np.float64]) -> float:
    """The smaller of the weighted standard deviation and the weighted
    interquartile range over 1.349 (a normal's ratio), as in Silverman's rule;
    the standard deviation when the quartiles coincide. One sentinel value
    (1e9 among values of order 1) inflates the standard deviation, not the
    quartiles."""
    std = _weighted_std(values, weights)
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    cumulative /= cumulative[-1]
    lower, upper = values[order][np.searchsorted(cumulative, [0.25, 0.75])]
    interquartile = (upper - lower) / 1.349
    return min(std, interquartile) if interquartile > 0 else std


def _weighted_std(values: NDArray[np.float64], weights: NDArray[np.float64]) -> float:
    """The weighted standard deviation of ``values``."""
    mean = np.average(values, weights=weights)
    return math.sqrt(np.average((values - mean) ** 2, weights=weights))


def _effective_size(weights: NDArray[np.float64]) -> float:
    """Kish's effective number of rows of ``weights``: ``(sum w)^2 / sum w^2``."""
    return float(weights.sum() ** 2 / np.square(weights).sum())


def _binned_centres(
    values: NDArray[np.float64],
    weights: NDArray[np.float64],
    row_bandwidths: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Weighted kernel centres: the rows pooled in bins of half a kernel width
    (measured in the narrower kernel of each pair of neighbours), bins doubled
    until at most ``KERNEL_MAX_CENTRES`` are left. Each centre sits at its
    bin's weighted mean, and its kernel's variance is its rows' mean kernel
    variance plus their variance about that mean, so that pooling keeps each
    bin's first two moments."""
    order = np.argsort(values, kind="stable")
    ordered, ordered_weights = values[order], weights[order]
    widths = row_bandwidths[order]
    steps = np.diff(ordered) / np.minimum(widths[1:], widths[:-1])
    position = np.concatenate([[0.0], np.cumsum(steps)])  # in kernel widths
    bin_width = 0.5
    while True:
        _, bins = np.unique(np.floor(position / bin_width), return_inverse=True)
        bins = bins.reshape(-1)
        if bins.max() + 1 <= KERNEL_MAX_CENTRES:
            break
        bin_width *= 2.0
    mass = np.bincount(bins, weights=ordered_weights)
    centres = np.bincount(bins, weights=ordered_weights * ordered) / mass
    spread = (
        np.bincount(bins, weights=ordered_weights * (ordered - centres[bins]) ** 2)
        / mass
    )
    kernel_variance = np.bincount(bins, weights=ordered_weights * widths**2) / mass
    return centres, mass / mass.sum(), np.sqrt(kernel_variance + spread)


def fit_kernel_marginals(
    X: NDArray[np.float64],
    columns: NDArray[np.bool_],
    sample_weight: NDArray[np.float64] | None,
    random_state: np.random.RandomState,
    wide_scale: float | None = None,
) -> dict[str, Any]:
    """The kernel density of each chosen column (see
    :class:`~skebflow.flows.KernelGaussianize`), fitted on ``X``.

    Each column's bandwidth maximizes the leave-one-out likelihood of up to
    ``KERNEL_SELECTION_ROWS`` of its rows (drawn from ``random_state``), under
    the column's density with its wide normal, over ``KERNEL_BANDWIDTHS`` times
    its robust spread (:func:`_robust_spread`); with
    ``KERNEL_SCALED_TO_ALL_ROWS`` (off), times ``(m / n)^(1/5)`` when those ``m``
    rows are a subsample of ``n`` (Kish's effective numbers under weights), the
    rate at which a kernel density's best bandwidth shrinks. (A subsample that
    holds one value of a column that varies gets Silverman's rule on every row
    instead.) With ``KERNEL_ADAPTIVE_SENSITIVITY`` above 0 (off) the kernels are
    adaptive (:func:`_adaptive_bandwidths`, Abramson's square-root law): each
    row's kernel is that bandwidth times a factor that grows where the column's
    rows are sparse and shrinks where they crowd, times one multiple of all of
    them chosen by the same leave-one-out likelihood. Its centres are all the
    rows, pooled into at most ``KERNEL_MAX_CENTRES`` weighted bins, each with the
    width that keeps its rows' variance; a normal
    ``wide_scale`` (default ``KERNEL_WIDE_SCALE``) standard deviations wide takes weight
    ``KERNEL_WIDE_WEIGHT``, so that values beyond the data keep a density with
    normal tails.

    Returns
    -------
    dict
        ``kde_columns`` (the mask), ``kde_centres`` and ``kde_weights`` (centres
        by mapped column, padded with weight 0), ``kde_bandwidth`` (each
        centre's kernel width, the same shape), ``kde_wide_loc``,
        ``kde_wide_scale`` and ``kde_wide_weight``.

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow._preparation import fit_kernel_marginals
    >>> rng = np.random.RandomState(0)
    >>> X = np.c_[rng.normal(size=300), rng.choice([0.0, 5.0], 300) + rng.normal(
    ...     scale=0.01, size=300)]
    >>> spec = fit_kernel_marginals(X, np.array([True, True]), None, rng)
    >>> used = spec["kde_weights"] > 0
    >>> widths = np.where(used, spec["kde_bandwidth"], np.nan)
    >>> bool(np.nanmax(widths[:, 1]) < 0.05 < np.nanmin(widths[:, 0]))  # lumps
    True
    """
    if sample_weight is None:
        sample_weight = np.ones(X.shape[0])
    else:  # a row of weight zero counts as removed
        X, sample_weight = X[sample_weight > 0], sample_weight[sample_weight > 0]
    index = np.flatnonzero(columns)
    centres, weights, bandwidths = [], [], []
    locs, scales = [], []
    for j in index.tolist():
        values = X[:, j]
        chosen = (
            random_state.choice(values.size, KERNEL_SELECTION_ROWS, replace=False)
            if values.size > KERNEL_SELECTION_ROWS
            else np.arange(values.size)
        )
        # the wide normal's mean and standard deviation
        wide = (
            float(np.average(values, weights=sample_weight)),
            (KERNEL_WIDE_SCALE if wide_scale is None else wide_scale)
            * _weighted_std(values, sample_weight),
        )
        bandwidth = _leave_one_out_bandwidth(
            values[chosen], sample_weight[chosen], wide
        )
        if bandwidth is None:
            # the subsample holds one value of a column that varies (a rare
            # departure from a constant): Silverman's rule on every row
            bandwidth = (
                0.9
                * _weighted_std(values, sample_weight)
                * _effective_size(sample_weight) ** -0.2
            )
        elif KERNEL_SCALED_TO_ALL_ROWS and chosen.size < values.size:
            # chosen for the subsample's size: a kernel density's best bandwidth
            # shrinks as n^(-1/5) (its asymptotic mean integrated squared error)
            bandwidth *= (
                _effective_size(sample_weight[chosen]) / _effective_size(sample_weight)
            ) ** 0.2
        row_bandwidths = (
            _adaptive_bandwidths(values, sample_weight, bandwidth, chosen, wide)
            if KERNEL_ADAPTIVE_SENSITIVITY > 0
            else np.full(values.size, bandwidth)
        )
        column_centres, column_weights, column_bandwidths = _binned_centres(
            values, sample_weight, row_bandwidths
        )
        # no kernel narrower than the float resolution at its centre (a lump that
        # is one value up to a few ulps has a robust spread of a few ulps); at
        # each centre's own, so that one sentinel far out (1e15 among unit
        # values) does not floor every kernel of the column at its resolution
        column_bandwidths = np.maximum(
            column_bandwidths,
            KERNEL_MIN_ULPS * np.spacing(np.abs(column_centres)),
        )
        centres.append(column_centres)
        weights.append(column_weights)
        bandwidths.append(column_bandwidths)
        locs.append(wide[0])
        scales.append(wide[1])
    n_centres = max((c.size for c in centres), default=1)
    padded_centres = np.zeros((n_centres, index.size))
    padded_weights = np.zeros((n_centres, index.size))
    # padding centres carry weight 0 and a harmless width of 1
    padded_bandwidths = np.ones((n_centres, index.size))
    for position, (column_centres, column_weights, column_bandwidths) in enumerate(
        zip(centres, weights, bandwidths, strict=True)
    ):
        padded_centres[: column_centres.size, position] = column_centres
        padded_weights[: column_weights.size, position] = column_weights
        padded_bandwidths[: column_bandwidths.size, position] = column_bandwidths
    return {
        "kde_columns": np.asarray(columns, dtype=bool).copy(),
        "kde_centres": padded_centres,
        "kde_weights": padded_weights,
        "kde_bandwidth": padded_bandwidths,
        "kde_wide_loc": np.array(locs, dtype=np.float64),
        "kde_wide_scale": np.array(scales, dtype=np.float64),
        "kde_wide_weight": KERNEL_WIDE_WEIGHT,
    }


def check_within_fitted_box(X: NDArray[np.float64], spec: dict[str, Any]) -> None:
    """Refuse training rows outside the logit's box fitted on the first fit.

    A continuing fit (``warm_start``, or a later ``partial_fit`` chunk) keeps the
    preprocessing of the first one. Under ``preprocessing="logit"`` a row outside
    that box has no density, and would otherwise surface as a training divergence.

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow._preparation import check_within_fitted_box
    >>> spec = {"kind": "logit", "lower": np.zeros(1), "upper": np.ones(1),
    ...         "dequantize_columns": None}
    >>> check_within_fitted_box(np.array([[0.5]]), spec)
    >>> check_within_fitted_box(np.array([[5.0]]), spec)
    Traceback (most recent call last):
    ...
    ValueError: X has values outside the box fitted on the first fit ...
    """
    if spec.get("kind") != "logit":
        return
    dequantized = spec.get("dequantize_columns")
    integer_columns = np.zeros(X.shape[1], bool) if dequantized is None else dequantized
    low, high = _range_filled(_as_scored(X, integer_columns), integer_columns)
    # A one-bin column passes the logit by (flows.BinProbit's tails score any value)
    outside = ((low < spec["lower"]) | (high > spec["upper"])) & ~_one_bin(spec, X)
    if outside.any():
        columns = np.flatnonzero(outside).tolist()
        raise ValueError(
            "X has values outside the box fitted on the first fit or chunk"
            f" (preprocessing='logit'), in feature(s) {columns}: lower="
            f"{np.asarray(spec['lower'])[columns].tolist()}, upper="
            f"{np.asarray(spec['upper'])[columns].tolist()}. The logit gives no"
            " density outside it. Refit from scratch (warm_start=False) with rows"
            " or bounds= that cover every value, or use"
            " preprocessing='standardize'."
        )


def check_observed_within_box(
    X: NDArray[np.float64], missing: NDArray[np.bool_], spec: dict[str, Any]
) -> None:
    """Refuse observed values outside the logit's box before conditioning on them.

    Under ``preprocessing="logit"`` a row with a value outside the fitted box has
    no density (``score_samples`` gives ``-inf``), so no conditional density of its
    missing values exists; the logit would clamp the value to the box's edge and
    condition on that instead. A row with no missing value is not checked.

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow._preparation import check_observed_within_box
    >>> spec = {"kind": "logit", "lower": np.zeros(2), "upper": np.ones(2),
    ...         "dequantize_columns": None}
    >>> X = np.array([[0.5, np.nan]])
    >>> check_observed_within_box(X, np.isnan(X), spec)
    >>> X = np.array([[5.0, np.nan]])
    >>> check_observed_within_box(X, np.isnan(X), spec)
    Traceback (most recent call last):
    ...
    ValueError: Row(s) [0] of X have observed values outside the box ...
    """
    if spec.get("kind") != "logit":
        return
    dequantized = spec.get("dequantize_columns")
    integer_columns = np.zeros(X.shape[1], bool) if dequantized is None else dequantized
    lower = np.asarray(spec["lower"], dtype=np.float64)
    upper = np.asarray(spec["upper"], dtype=np.float64)
    X = _as_scored(X, integer_columns)
    # A dequantized integer value x stands for [x, x + 1), which must lie inside.
    # Only rows with a value to fill are conditioned on: a complete row is
    # returned as it is, wherever it lies.
    outside = (
        ~missing
        & ((X < lower) | (X + integer_columns > upper))
        & ~_one_bin(spec, X)  # the logit passes it by: any value scores
        & missing.any(axis=1, keepdims=True)
    )
    if outside.any():
        rows = np.flatnonzero(outside.any(axis=1))
        columns = np.flatnonzero(outside.any(axis=0)).tolist()
        raise ValueError(
            f"Row(s) {rows[:10].tolist()}{' ...' if len(rows) > 10 else ''} of X"
            " have observed values outside the box fitted with"
            f" preprocessing='logit', in feature(s) {columns}: lower="
            f"{lower[columns].tolist()}, upper={upper[columns].tolist()}. The model"
            " gives such rows no density, so their missing values have no"
            " conditional distribution. Drop those rows, or refit with bounds= that"
            " cover every value, or with preprocessing='standardize'."
        )


def _one_bin(spec: dict[str, Any], X: NDArray[np.float64]) -> NDArray[np.bool_]:
    """The one-bin columns of ``spec`` (flows.BinProbit), as a mask of ``X``'s."""
    one_bin = spec.get("one_bin_columns")
    return np.zeros(X.shape[1], bool) if one_bin is None else np.asarray(one_bin)


def _as_scored(
    X: NDArray[np.float64], integer_columns: NDArray[np.bool_]
) -> NDArray[np.float64]:
    """``X`` as the model scores it: a dequantized column's value rounded to the
    nearest integer (as :class:`~skebflow.flows.UniformDequantize` does), so that
    the box checks accept what scoring accepts (5.4 stands for the bin [5, 6))."""
    if not integer_columns.any():
        return X
    return np.where(integer_columns, nearest_integer(X), X)


def nearest_integer(X: NDArray[np.float64]) -> NDArray[np.float64]:
    """The integer nearest to each value, halves rounded up, as
    :class:`~skebflow.flows.UniformDequantize` scores a value: ``floor(X + 0.5)``
    without its rounding (0.49999999999999994 + 0.5 is 1.0 in float64).

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow._preparation import nearest_integer
    >>> nearest_integer(np.array([0.49999999999999994, 0.5, -0.5, 2.4])).tolist()
    [0.0, 1.0, 0.0, 2.0]
    """
    lower = np.floor(X)
    return lower + (X - lower >= 0.5)


def _range_filled(
    X: NDArray[np.float64], integer_columns: NDArray[np.bool_]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per column, the range the training values fill: dequantized integer columns
    fill ``[x, x + 1)``, so their range ends one higher."""
    return X.min(axis=0), X.max(axis=0) + integer_columns


def split_for_early_stopping(
    X: NDArray[np.float64],
    validation_fraction: float,
    random_state: np.random.RandomState,
    *,
    smoothed: bool = False,
    stacklevel: int = 2,
) -> tuple[NDArray[np.intp], NDArray[np.intp] | None]:
    """Indices of the training and validation rows; ``None`` when too few are left.

    Indices rather than rows, so that the caller splits the sample weights (or
    anything else per row) the same way. With fewer than :data:`MIN_VALIDATION_ROWS`
    validation rows, it warns and returns every row for training and no validation
    rows (the caller then monitors the training loss).

    Without duplicated rows, or when ``smoothed`` says that training adds continuous
    noise to every row (dequantization or jitter), so that a repeated row is a draw
    of the same distribution rather than a point mass, it draws exactly one
    permutation of the rows from ``random_state``: the validation rows are a
    random ``validation_fraction`` of them, and every repeated value (an integer
    level, a binary pattern) stays in training in proportion.

    Otherwise rows that occur several times are kept on one side, so that no
    validation row is a copy of a training row: whole groups of equal rows are
    drawn in random order until about ``validation_fraction`` of the rows are held
    out, skipping any group that would take the validation set past twice that, so
    that one dominant value never ends up held out whole. Many duplicated rows then
    get a warning.

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow._preparation import split_for_early_stopping
    >>> X = np.repeat(np.arange(100.0).reshape(-1, 1), 2, axis=0)  # each row twice
    >>> train, validation = split_for_early_stopping(X, 0.1, np.random.RandomState(0))
    >>> len(train), len(validation), set(X[train, 0]) & set(X[validation, 0])
    (180, 20, set())
    >>> train, validation = split_for_early_stopping(
    ...     X, 0.1, np.random.RandomState(0), smoothed=True)
    >>> len(train), len(validation)
    (180, 20)
    """
    n_samples = X.shape[0]
    n_validation = math.ceil(validation_fraction * n_samples)

    def too_few(n_held_out: int, reason: str = "") -> tuple[NDArray[np.intp], None]:
        warnings.warn(
            f"early_stopping=True would validate on {n_held_out} of {n_samples}"
            f" rows{reason}, fewer than {MIN_VALIDATION_ROWS}: too few to tell"
            " over-fitting from noise. Early stopping watches the training loss"
            " instead. Give more rows, raise validation_fraction, or set"
            " early_stopping=False to silence this warning.",
            UserWarning,
            stacklevel=stacklevel + 1,
        )
        return np.arange(n_samples), None

    if n_samples - n_validation < 2:  # as fit needs: a density of one row is none
        warnings.warn(
            f"early_stopping=True would validate on {n_validation} of {n_samples}"
            f" rows (validation_fraction={validation_fraction:g}) and leave"
            f" {n_samples - n_validation} to train on, fewer than 2. Early stopping"
            " watches the training loss instead. Lower validation_fraction, or set"
            " early_stopping=False to silence this warning.",
            UserWarning,
            stacklevel=stacklevel,
        )
        return np.arange(n_samples), None
    if n_validation < MIN_VALIDATION_ROWS:
        return too_few(n_validation)
    _, group, counts = np.unique(X, axis=0, return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    if counts.size == n_samples or smoothed:
        order = random_state.permutation(n_samples)
        return order[n_validation:], order[:n_validation]
    if counts.size <= n_samples // 2:
        warnings.warn(
            f"X has only {counts.size} distinct rows among {n_samples}. A flow is a"
            " continuous density: duplicated rows pull it towards point masses. Set"
            " jitter > 0, or dequantize=True for integer columns. Validation rows"
            " are drawn by distinct row, so that none repeats a training row.",
            UserWarning,
            stacklevel=stacklevel,
        )
    # Whole groups in random order; a group that would take the held-out rows past
    # twice the target, or leave no training row, is skipped.
    group_order = random_state.permutation(counts.size)
    held_out = np.zeros(counts.size, dtype=bool)
    n_held_out = 0
    limit = min(2 * n_validation, n_samples - 1)
    for label in group_order:
        if n_held_out >= n_validation:
            break
        if n_held_out + counts[label] <= limit:
            held_out[label] = True
            n_held_out += int(counts[label])
    if n_held_out < MIN_VALIDATION_ROWS:
        return too_few(n_held_out, " (whole groups of equal rows)")
    in_validation = held_out[group]
    return np.flatnonzero(~in_validation), np.flatnonzero(in_validation)
