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
    mean_and_scale,
)

__all__ = ["MIN_VALIDATION_ROWS", "fit_preprocessing_spec", "split_for_early_stopping"]

# Fewer held-out rows than this cannot tell over-fitting from noise.
MIN_VALIDATION_ROWS = 10


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
    # Dequantized, a constant integer column is uniform on one unit bin (a pixel
    # that is always blank): a density, not an error. With constant_features=
    # "narrow" it keeps its narrow normal instead.
    one_bin = (
        constant & np.all(X == np.round(X), axis=0)
        if dequantize and one_bin_constants and constant_features == "error"
        else np.zeros(X.shape[1], dtype=bool)
    )
    constant = constant & ~one_bin
    if constant_features == "error" or not constant.any():
        # The one-bin columns vary once dequantized; stand-in values keep the
        # indices of the check's message right.
        check_spread(
            np.where(one_bin, np.arange(X.shape[0])[:, None], X) if one_bin.any() else X
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
    data = X
    integer_columns = np.zeros(X.shape[1], dtype=bool)
    if dequantize:
        # A constant column keeps its narrow normal: no dequantization noise.
        integer_columns = np.all(X == np.round(X), axis=0) & ~constant
        # Without an integer column there is nothing to dequantize, and no noise
        # to draw: the fit is then bit for bit the one without dequantization.
        if integer_columns.any():
            spec["dequantize_columns"] = integer_columns
        data = X + 0.5 * integer_columns
    if kind == "standardize":
        varying = ~constant & ~one_bin
        mean, scale = mean_and_scale(data[:, varying], sample_weight)
        spec["mean"] = data.mean(axis=0)
        spec["mean"][varying] = mean
        spec["scale"] = constant_width(spec["mean"])
        spec["scale"][varying] = scale
        # A unit bin's uniform noise has standard deviation sqrt(1/12).
        spec["scale"][one_bin] = math.sqrt(1.0 / 12.0)
    elif kind == "logit":
        spec["alpha"] = float(logit_alpha)
        # Dequantized integer columns fill [x, x + 1): their box ends one higher.
        low, high = X.min(axis=0), X.max(axis=0) + integer_columns
        if bounds is None:
            margin = 0.05 * (high - low)
            # Whole bins for integer columns: a sample floored back to an integer
            # then lies in a bin inside the box, whose centre has a finite density.
            margin = np.where(integer_columns, np.ceil(margin), margin)
            spec["lower"], spec["upper"] = low - margin, high + margin
        else:
            lower, upper = check_bounds(bounds, X.shape[1])
            if np.any(low < lower) or np.any(high > upper):
                hint = (
                    " (dequantized integer columns need upper >= max + 1)"
                    if integer_columns.any()
                    else ""
                )
                raise ValueError(
                    f"X has values outside bounds={bounds!r}{hint}; widen the bounds"
                    " or use preprocessing='standardize'."
                )
            spec["lower"], spec["upper"] = lower, upper
    return spec


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
    anything else per row) the same way. Rows that occur several times are kept on
    one side, so that no validation row is a copy of a training row; with fewer than
    :data:`MIN_VALIDATION_ROWS` validation rows, it warns and returns every row for
    training and no validation rows (the caller then monitors the training loss).
    Without duplicated rows it draws exactly one permutation of the rows from
    ``random_state``. Many duplicated rows get a warning, unless ``smoothed`` says
    that training adds continuous noise to them (dequantization or jitter), so that
    they are not point masses.

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow._preparation import split_for_early_stopping
    >>> X = np.repeat(np.arange(100.0).reshape(-1, 1), 2, axis=0)  # each row twice
    >>> train, validation = split_for_early_stopping(X, 0.1, np.random.RandomState(0))
    >>> len(train), len(validation), set(X[train, 0]) & set(X[validation, 0])
    (180, 20, set())
    """
    n_samples = X.shape[0]
    n_validation = math.ceil(validation_fraction * n_samples)
    if n_validation < MIN_VALIDATION_ROWS or n_samples - n_validation < 1:
        warnings.warn(
            f"early_stopping=True would validate on {n_validation} of {n_samples}"
            f" rows, fewer than {MIN_VALIDATION_ROWS}: too few to tell over-fitting"
            " from noise. Early stopping watches the training loss instead. Give"
            " more rows, raise validation_fraction, or set early_stopping=False to"
            " silence this warning.",
            UserWarning,
            stacklevel=stacklevel,
        )
        return np.arange(n_samples), None
    _, group, counts = np.unique(X, axis=0, return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    if counts.size == n_samples:
        order = random_state.permutation(n_samples)
        return order[n_validation:], order[:n_validation]
    if counts.size <= n_samples // 2 and not smoothed:
        warnings.warn(
            f"X has only {counts.size} distinct rows among {n_samples}. A flow is a"
            " continuous density: duplicated rows pull it towards point masses. Set"
            " jitter > 0, or dequantize=True for integer columns. Validation rows"
            " are drawn by distinct row, so that none repeats a training row.",
            UserWarning,
            stacklevel=stacklevel,
        )
    group_order = random_state.permutation(counts.size)
    covered = np.cumsum(counts[group_order])
    n_groups = int(np.searchsorted(covered, n_validation)) + 1
    n_groups = min(n_groups, counts.size - 1)
    in_validation = np.isin(group, group_order[:n_groups])
    return np.flatnonzero(~in_validation), np.flatnonzero(in_validation)
