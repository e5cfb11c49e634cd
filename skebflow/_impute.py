"""EBFlowImputer: missing values filled from the learned joint density."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from numbers import Integral, Real
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._missing import is_pandas_na, is_scalar_nan
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    InvalidParameterError,
    MissingValues,
    StrOptions,
)
from sklearn.utils.validation import (
    _check_feature_names_in,
    check_is_fitted,
    validate_data,
)

from ._density import EBFlowDensity, _DivergedAtStart, _solve_relations
from ._keyed_noise import identical_rows
from ._preparation import check_observed_within_box, integer_valued_columns
from ._validation import (
    check_has_columns,
    check_sample_weight,
    constant_columns,
    dependent_columns,
    fitted_state,
    restore_fitted_state,
)

__all__ = ["EBFlowImputer"]


class EBFlowImputer(TransformerMixin, BaseEstimator):
    """Impute missing values from the joint density of an energy-based flow.

    ``fit`` learns the joint density of all features with an :class:`EBFlowDensity`;
    ``transform`` fills each missing entry from the model's conditional density given
    the row's observed entries, by Langevin dynamics on the energy (no inverse, no
    determinant) or by maximizing the conditional density.

    Parameters
    ----------
    estimator : EBFlowDensity or None, default=None
        The density model (cloned); ``None`` uses ``EBFlowDensity()``. If its
        ``random_state`` is None, it is seeded from this imputer's ``random_state``.
    missing_values : int, float, np.nan or pd.NA, default=np.nan
        The placeholder of a missing entry, as in scikit-learn's imputers. When it
        is a number, NaN is not accepted in ``X`` (a ``ValueError`` says so), nor
        is an infinite value (as scikit-learn's imputers refuse it).
    method : {"langevin", "mode"}, default="langevin"
        ``"langevin"`` samples :math:`p(x_{mis} \\mid x_{obs})`; ``"mode"``
        maximizes it.
    n_imputations : int, default=10
        With ``method="langevin"`` and ``sample_posterior=False``, the number of
        conditional draws averaged into each filled value (an estimate of the
        conditional mean, which minimizes the expected squared error).
    sample_posterior : bool, default=False
        Return one conditional draw per missing entry instead of the average, as
        :class:`~sklearn.impute.IterativeImputer` does; use it, with different
        ``random_state`` values or :meth:`sample_imputations`, for multiple
        imputation. Only with ``method="langevin"`` (a ``ValueError`` with
        ``"mode"``, which has no draw).
    n_steps : int, default=300
        Langevin or gradient steps per imputation.
    step_size : float, default=0.05
        Langevin step size (Adam's step for ``"mode"``), in standardized units:
        each chain's starting step, adapted during the first half of the steps
        towards an acceptance of 0.574 and then held.
    n_refits : int, default=1
        Rounds of stochastic EM in ``fit``: rows with missing values first get values
        drawn at random from the observed values of their column (hot deck), the model
        is fitted on all rows, then each round redraws the missing entries from the
        model's conditional density and continues training (``warm_start``). A
        Ctrl-C in a first fit ends the rounds with a warning: the density keeps
        what it trained (the last completed round, or the first fit so far), as
        an interrupted :meth:`EBFlowDensity.fit` does. In a refit of a fitted
        imputer it leaves the previous imputer as it was and lets the
        ``KeyboardInterrupt`` through, as a refit of the density does.
    add_indicator : bool, default=False
        Append to ``transform``'s output one column per feature that had a missing
        entry in ``fit``: 1.0 where the entry was missing, else 0.0, as
        :class:`~sklearn.impute.MissingIndicator` marks them (so that a model
        downstream can use the missingness itself).
    keep_empty_features : bool, default=False
        What to do with a feature that has no observed value in ``fit`` (in a row
        of positive ``sample_weight``), which no density can be learned for. As in
        scikit-learn's imputers: ``False`` drops it from ``transform``'s output,
        with a warning; ``True`` keeps it, its missing entries filled with 0. Either
        way the density models the other features only.
    random_state : int, RandomState instance or None, default=None
        Seed of the hot-deck fill, of the Langevin chains and of the model.

    Attributes
    ----------
    estimator_ : EBFlowDensity
        The fitted density model, of the features in neither ``empty_features_``
        nor ``constant_features_``.
    empty_features_ : ndarray of shape (n_empty_features,)
        The features with no observed value in ``fit``, which ``transform`` drops
        or, with ``keep_empty_features``, fills with 0.
    constant_features_ : ndarray of shape (n_constant_features,)
        The features whose observed values in ``fit`` are all the same (a flag
        that never moved): they say nothing about the others, so the density
        leaves them out, and ``transform`` fills their missing entries with that
        value, as :class:`~sklearn.impute.SimpleImputer` does. Empty with a
        convolutional density (``architecture="conv"``), which models every pixel
        of its ``image_shape``: constant pixels, such as blank borders, are passed
        to it (fit it with ``dequantize=True`` or ``constant_features="narrow"``),
        and a pixel with no observed value is refused.
    constant_values_ : ndarray of shape (n_constant_features,)
        Their values.
    indicator_features_ : ndarray of shape (n_indicator_features,)
        With ``add_indicator``, the features that had a missing entry in ``fit``
        (in a row of positive ``sample_weight``), whose indicator columns
        ``transform`` appends (in this order); empty otherwise.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when ``X`` has string column names.

    See Also
    --------
    sklearn.impute.IterativeImputer : Round-robin regression imputation.
    sklearn.impute.KNNImputer : Nearest-neighbour imputation.

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow import EBFlowDensity, EBFlowImputer
    >>> rng = np.random.RandomState(0)
    >>> x = rng.normal(size=(400, 1))
    >>> X = np.hstack([x, 2 * x + 0.1 * rng.normal(size=(400, 1))])
    >>> X[rng.uniform(size=400) < 0.2, 1] = np.nan  # 20 % of the second column lost
    >>> # A short fit: early stopping usually ends it within its 30 epochs (a
    >>> # ConvergenceWarning says so when one of its flows does not).
    >>> density = EBFlowDensity(max_iter=30, n_iter_no_change=5, tol=1e-2, device="cpu")
    >>> imputer = EBFlowImputer(density, method="mode", n_steps=200, random_state=0)
    >>> filled = imputer.fit(X).transform([[1.0, np.nan]])
    >>> bool(abs(filled[0, 1] - 2.0) < 0.4)
    True
    >>> # -1 marks a missing entry, and an indicator column is appended
    >>> marked = np.where(np.isnan(X), -1.0, X)
    >>> imputer = EBFlowImputer(density, missing_values=-1, add_indicator=True,
    ...                         method="mode", n_steps=200, random_state=0)
    >>> imputer.fit(marked).transform([[1.0, -1.0], [1.0, 2.0]])[:, 2].tolist()
    [1.0, 0.0]
    >>> imputer.get_feature_names_out().tolist()
    ['x0', 'x1', 'missingindicator_x1']
    """

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit", "sample_conditional"]), None],
        "missing_values": [MissingValues(numeric_only=True)],
        "method": [StrOptions({"langevin", "mode"})],
        "n_imputations": [Interval(Integral, 1, None, closed="left")],
        "sample_posterior": ["boolean"],
        "n_steps": [Interval(Integral, 1, None, closed="left")],
        "step_size": [Interval(Real, 0, None, closed="neither")],
        "n_refits": [Interval(Integral, 0, None, closed="left")],
        "add_indicator": ["boolean"],
        "keep_empty_features": ["boolean"],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        estimator: EBFlowDensity | None = None,
        *,
        missing_values: float = np.nan,
        method: str = "langevin",
        n_imputations: int = 10,
        sample_posterior: bool = False,
        n_steps: int = 300,
        step_size: float = 0.05,
        n_refits: int = 1,
        add_indicator: bool = False,
        keep_empty_features: bool = False,
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.estimator = estimator
        self.missing_values = missing_values
        self.method = method
        self.n_imputations = n_imputations
        self.sample_posterior = sample_posterior
        self.n_steps = n_steps
        self.step_size = step_size
        self.n_refits = n_refits
        self.add_indicator = add_indicator
        self.keep_empty_features = keep_empty_features
        self.random_state = random_state

    def _validate(
        self, X: ArrayLike, *, reset: bool
    ) -> tuple[NDArray[np.float64], type]:
        """A float64 copy of ``X`` with NaN at every missing entry, and the dtype
        of what is returned for it: float32 for float32 input, as scikit-learn's
        imputers keep it, float64 otherwise."""
        nan_marks_missing = _marks_nan(self.missing_values)
        check_has_columns(X)
        X = validate_data(
            self,
            X,
            # float32 and float16 stay as they are until the placeholder is found:
            # 0.1 in float32 input is float32(0.1), which float64's 0.1 would not
            # match (scikit-learn's imputers compare in the input's dtype too)
            dtype=(np.float64, np.float32, np.float16),
            reset=reset,
            ensure_all_finite="allow-nan",
            # the density needs two rows: say so for the imputer, not the density
            ensure_min_samples=2 if reset else 1,
        )
        placeholder = None
        if not nan_marks_missing:
            n_nan = int(np.isnan(X).sum())
            if n_nan:
                raise ValueError(
                    f"X contains {n_nan} NaN entries, but missing_values="
                    f"{self.missing_values!r} marks the missing ones, so NaN is"
                    " neither a value nor a gap. Replace NaN by"
                    f" {self.missing_values!r}, or use missing_values=np.nan."
                )
            placeholder = X == np.asarray(self.missing_values, dtype=X.dtype)
        output_dtype = np.float32 if X.dtype == np.float32 else np.float64
        X = np.array(X, dtype=np.float64, copy=True)
        if placeholder is not None:
            X[placeholder] = np.nan
        return X, output_dtype

    def _check_method_settings(self) -> None:
        """Refuse ``sample_posterior=True`` with ``method="mode"``, which has no
        draw to return (it was ignored: the mode came back), and an
        ``n_imputations`` of ``True`` (an ``Integral`` to scikit-learn's checks,
        which ``transform`` failed on without naming it)."""
        _check_n_imputations(self.n_imputations)
        if self.method == "mode" and self.sample_posterior:
            raise ValueError(
                "sample_posterior=True returns a draw from the conditional density,"
                " and method='mode' its maximum: set method='langevin' to draw, or"
                " sample_posterior=False for the mode."
            )

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(
        self,
        X: ArrayLike,
        y: None = None,
        sample_weight: ArrayLike | None = None,
    ) -> EBFlowImputer:
        """Learn the joint density of ``X``, whose missing entries are
        ``missing_values``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data with ``missing_values`` (NaN by default) for missing values; never
            modified.
        y : None
            Ignored.
        sample_weight : array-like of shape (n_samples,) or None, default=None
            Non-negative weight of each row, passed to the density's ``fit`` (see
            :meth:`EBFlowDensity.fit`) at the first fit and at every refit; the
            initial fill of a missing entry draws from the column's observed
            values in proportion to their rows' weights. ``None`` weighs rows
            equally (and passes nothing to the density's ``fit``).

        Returns
        -------
        self : EBFlowImputer

        Examples
        --------
        >>> import numpy as np
        >>> from skebflow import EBFlowDensity, EBFlowImputer
        >>> rng = np.random.RandomState(0)
        >>> x = rng.normal(size=(400, 1))
        >>> X = np.hstack([x, 2 * x + 0.1 * rng.normal(size=(400, 1))])
        >>> X[rng.uniform(size=400) < 0.2, 1] = np.nan
        >>> density = EBFlowDensity(max_iter=30, n_iter_no_change=5, tol=1e-2,
        ...                         device="cpu")
        >>> imputer = EBFlowImputer(density, n_steps=50, random_state=0).fit(X)
        >>> imputer.n_features_in_, imputer.estimator_.converged_
        (2, True)
        >>> hasattr(density, "flow_")  # the density passed in is cloned, not fitted
        False
        """
        self._check_method_settings()
        previous_state = fitted_state(self)
        try:
            return self._fit(
                X, sample_weight, fitted_before=hasattr(self, "estimator_")
            )
        except BaseException:  # a failed or interrupted fit keeps the previous one
            restore_fitted_state(self, previous_state)
            raise

    def _fit(
        self, X: ArrayLike, sample_weight: ArrayLike | None, *, fitted_before: bool
    ) -> EBFlowImputer:
        """``fit``'s work; an interruption of a refit (``fitted_before``) raises
        ``KeyboardInterrupt``, for ``fit`` to restore the previous imputer."""
        X, _ = self._validate(X, reset=True)
        missing = np.isnan(X)
        rows, weights = check_sample_weight(sample_weight, X)
        # A value observed only in rows of weight zero is not observed: those rows
        # are dropped, exactly as if they were not in X.
        counted = missing.copy()
        if rows is not None:
            counted[np.setdiff1d(np.arange(X.shape[0]), rows)] = True
        empty = np.flatnonzero(counted.all(axis=0))
        where = "" if rows is None else " in a row of positive sample_weight"
        if empty.size == X.shape[1]:
            raise ValueError(
                f"No feature of X has an observed value{where}: there is nothing to"
                " learn a density from."
            )
        # A convolutional flow models every pixel of its image_shape: none can be
        # left out, so a pixel never observed cannot be modelled, and a constant
        # one (a blank border) is passed to the density, which takes it with
        # dequantize=True or constant_features="narrow", or says what to set.
        every_column = (
            isinstance(self.estimator, EBFlowDensity)
            and self.estimator._resolve_architecture(X.shape[1]) == "conv"
        )
        if empty.size and every_column:
            raise ValueError(
                f"Feature(s) {empty.tolist()} of X have no observed value{where},"
                " and the density (architecture='conv') models every pixel of its"
                " image_shape: there is nothing to learn those pixels from. Observe"
                " each pixel in some row, or impute with a density that is not"
                " convolutional (architecture='fc' or 'coupling')."
            )
        if empty.size and not self.keep_empty_features:
            names = getattr(self, "feature_names_in_", None)
            named = (
                f" ({', '.join(map(str, names[empty]))})" if names is not None else ""
            )
            warnings.warn(
                f"Skipping feature(s) {empty.tolist()}{named} of X, which have no"
                f" observed value{where}: transform drops them."
                " keep_empty_features=True keeps them, filled with 0.",
                UserWarning,
                stacklevel=4,  # _fit, fit, its validation wrapper, the user's call
            )
        constant, constant_values = (
            (np.zeros(0, dtype=np.intp), np.zeros(0))
            if every_column
            else _constant_features(X, counted, empty)
        )
        unmodelled = np.union1d(empty, constant)
        modelled = _modelled_columns(X.shape[1], unmodelled)
        if modelled.size == 0:
            raise ValueError(
                f"Every feature of X with an observed value{where} is constant"
                f" (feature(s) {constant.tolist()}): there is no density to learn."
                " SimpleImputer(strategy='most_frequent') fills such data."
            )
        all_missing, X = missing, X[:, modelled]
        missing = missing[:, modelled]
        fit_params = {} if sample_weight is None else {"sample_weight": sample_weight}
        rng = check_random_state(self.random_state)
        estimator = clone(
            self.estimator if self.estimator is not None else EBFlowDensity()
        )
        if estimator.get_params().get("random_state") is None:
            estimator.set_params(random_state=int(rng.randint(np.iinfo(np.int32).max)))
        filled = X.copy()
        row_weights = None
        if weights is not None or rows is not None:
            row_weights = np.zeros(X.shape[0])
            row_weights[rows if rows is not None else slice(None)] = (
                1.0 if weights is None else weights
            )
        for column in np.flatnonzero(missing.any(axis=0)):
            observed = ~missing[:, column]
            probabilities = None
            if row_weights is not None:
                total = row_weights[observed].sum()
                if total > 0:
                    probabilities = row_weights[observed] / total
            filled[missing[:, column], column] = rng.choice(
                X[observed, column],
                size=int(missing[:, column].sum()),
                p=probabilities,
            )
        if isinstance(estimator, EBFlowDensity):
            modelled_relations, dequantized = estimator._would_model_relations(
                X.shape[1]
            )
            if modelled_relations:
                filled = _keep_relations(
                    X, missing, filled, rows, dequantized=dequantized
                )
        try:
            estimator.fit(filled, **fit_params)
        except ValueError as error:
            # Only a message about features needs their indices in X; a parameter's
            # error stays what it is.
            if (
                not unmodelled.size
                or isinstance(error, InvalidParameterError)
                or "feature" not in str(error).lower()
            ):
                raise
            raise ValueError(
                f"{error} (The density models only the features of X that have an"
                f" observed value{where} and vary, so its feature indices above"
                f" skip the feature(s) {unmodelled.tolist()} of X:"
                f" {_modelled_index_map(modelled)}.)"
            ) from error
        if fitted_before and getattr(estimator, "_interrupted", False):
            raise KeyboardInterrupt  # a refit: the previous imputer stays
        if missing.any() and self.n_refits > 0:
            self._refit(
                estimator, X, filled, rows, rng, fit_params, fitted_before=fitted_before
            )
        self.estimator_ = estimator
        self.empty_features_ = empty
        self.constant_features_ = constant
        self.constant_values_ = constant_values
        # Like the check above, from the rows that count: a row of weight zero is
        # as if it were not in X.
        counted_missing = all_missing if rows is None else all_missing[rows]
        self.indicator_features_ = (
            np.flatnonzero(counted_missing.any(axis=0))
            if self.add_indicator
            else np.zeros(0, dtype=np.intp)
        )
        return self

    def _refit(
        self,
        estimator: EBFlowDensity,
        X: NDArray[np.float64],
        filled: NDArray[np.float64],
        rows: NDArray[np.intp] | None,
        rng: np.random.RandomState,
        fit_params: dict[str, Any],
        *,
        fitted_before: bool,
    ) -> None:
        """The ``n_refits`` rounds: fill the missing entries of ``X`` by the
        density's conditional sampler, refit it warm-started (its own
        ``warm_start`` restored after them). Only the ``rows`` of positive weight
        (all with ``None``) are filled again; the others, as if not in ``X``,
        keep their first fill (``filled``), which their weight of zero leaves
        without effect. A Ctrl-C ends them with the last completed fit kept (as
        it ends an :class:`EBFlowDensity` fit), and an interrupted first fit has
        none; in a refit of a fitted imputer (``fitted_before``) it reaches
        ``fit``, which restores the previous imputer."""
        stop = (
            "Imputation interrupted by user: the imputer skips its remaining"
            " refits and fills from the density fitted so far."
        )
        if getattr(estimator, "_interrupted", False):
            warnings.warn(stop, UserWarning, stacklevel=5)
            return
        users_warm_start = estimator.warm_start
        estimator.set_params(warm_start=True)
        try:
            counted = slice(None) if rows is None else rows
            for _ in range(self.n_refits):
                filled[counted] = _naming_rows_of_x(
                    lambda: estimator.sample_conditional(
                        X[counted],
                        random_state=rng,
                        n_steps=self.n_steps,
                        step_size=self.step_size,
                    ),
                    np.arange(X.shape[0])[counted],
                )
                try:
                    estimator.fit(filled, **fit_params)
                except _DivergedAtStart as error:  # the density before it stays
                    warnings.warn(
                        f"A refit of the density stopped the imputer's refits: {error}",
                        ConvergenceWarning,
                        stacklevel=5,
                    )
                    break
                if getattr(estimator, "_interrupted", False):
                    if fitted_before:
                        raise KeyboardInterrupt
                    warnings.warn(stop, UserWarning, stacklevel=5)
                    break
        except KeyboardInterrupt:  # in the sampler: the density is as it was
            if fitted_before:
                raise
            warnings.warn(stop, UserWarning, stacklevel=5)
        finally:  # the user's setting, as the clone had it
            estimator.set_params(warm_start=users_warm_start)

    def transform(self, X: ArrayLike) -> NDArray[np.float64]:
        """Fill the missing entries of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data with ``missing_values`` (NaN by default) for missing values; never
            modified.

        Returns
        -------
        X_filled : ndarray of shape (n_samples, n_features_out)
            The features (less ``empty_features_``, unless
            ``keep_empty_features``), then, with ``add_indicator``, the indicator
            columns of ``indicator_features_``. float32 for float32 ``X``,
            float64 otherwise.

        Examples
        --------
        >>> import numpy as np
        >>> from skebflow import EBFlowDensity, EBFlowImputer
        >>> rng = np.random.RandomState(0)
        >>> x = rng.normal(size=(400, 1))
        >>> X = np.hstack([x, 2 * x + 0.1 * rng.normal(size=(400, 1))])
        >>> X[rng.uniform(size=400) < 0.2, 1] = np.nan
        >>> density = EBFlowDensity(max_iter=30, n_iter_no_change=5, tol=1e-2,
        ...                         device="cpu")
        >>> imputer = EBFlowImputer(density, n_steps=50, random_state=0).fit(X)
        >>> X_new = X[:20]
        >>> filled = imputer.transform(X_new)
        >>> filled.shape, bool(np.isnan(filled).any())
        ((20, 2), False)
        >>> observed = ~np.isnan(X_new)
        >>> bool(np.array_equal(filled[observed], X_new[observed]))  # kept as given
        True
        """
        check_is_fitted(self)
        self._check_method_settings()
        X, output_dtype = self._validate(X, reset=False)
        modelled = self._modelled(X)
        if self.method == "mode":
            filled = self._conditional(modelled, "mode", self.random_state)
        elif self.sample_posterior:
            filled = self._conditional(modelled, "langevin", self.random_state)
        else:
            # each distinct row once: identical rows get the same fill, and a
            # row's fill depends only on the row, the seed and n_imputations
            average = self._draws(
                modelled, int(self.n_imputations), distinct=True
            ).mean(axis=0)
            # observed entries as given
            filled = np.where(np.isnan(modelled), average, modelled)
        filled = self._with_unmodelled_features(filled, X)
        if self.indicator_features_.size:
            indicator = np.isnan(X[:, self.indicator_features_]).astype(np.float64)
            filled = np.hstack([filled, indicator])
        return filled.astype(output_dtype, copy=False)

    def _unmodelled(self) -> NDArray[np.intp]:
        """The features the density leaves out: the empty and the constant ones."""
        return np.union1d(self.empty_features_, self.constant_features_)

    def _modelled(self, X: NDArray[np.float64]) -> NDArray[np.float64]:
        """The columns of the validated ``X`` that the density models."""
        unmodelled = self._unmodelled()
        if unmodelled.size == 0:
            return X
        return X[:, _modelled_columns(self.n_features_in_, unmodelled)]

    def _with_unmodelled_features(
        self, filled: NDArray[np.float64], X: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """``filled`` (the modelled columns, rows last) with the others of ``X``
        put back: a constant feature's missing entries take its value, and the
        empty features theirs 0 under ``keep_empty_features`` (else dropped)."""
        unmodelled = self._unmodelled()
        if unmodelled.size == 0:
            return filled
        shape = (*filled.shape[:-1], self.n_features_in_)
        out = np.broadcast_to(np.nan_to_num(X, nan=0.0), shape).copy()
        out[..., _modelled_columns(self.n_features_in_, unmodelled)] = filled
        constant = self.constant_features_
        out[..., constant] = np.where(
            np.isnan(X[:, constant]), self.constant_values_, X[:, constant]
        )
        if self.keep_empty_features:
            return out
        return np.delete(out, self.empty_features_, axis=-1)

    def get_feature_names_out(
        self, input_features: ArrayLike | None = None
    ) -> NDArray[np.object_]:
        """Output feature names: the input's (less ``empty_features_``, unless
        ``keep_empty_features``), then ``missingindicator_<name>`` for each of
        ``indicator_features_``.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            The input's feature names; ``None`` takes ``feature_names_in_``, or
            ``x0``, ``x1``, ... when fit without names.

        Returns
        -------
        feature_names_out : ndarray of str objects

        Examples
        --------
        >>> import numpy as np
        >>> from skebflow import EBFlowDensity, EBFlowImputer
        >>> X = np.random.RandomState(0).normal(size=(100, 2))
        >>> X[::5, 0] = np.nan
        >>> density = EBFlowDensity(max_iter=2, device="cpu", random_state=0)
        >>> imputer = EBFlowImputer(density, add_indicator=True, n_refits=0)
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")  # two epochs do not converge
        ...     imputer = imputer.fit(X)
        >>> imputer.get_feature_names_out(["a", "b"]).tolist()
        ['a', 'b', 'missingindicator_a']
        """
        check_is_fitted(self, "n_features_in_")
        names = _check_feature_names_in(self, input_features)
        indicators = [f"missingindicator_{names[i]}" for i in self.indicator_features_]
        if not self.keep_empty_features:
            names = np.delete(names, self.empty_features_)
        return np.asarray([*names, *indicators], dtype=object)

    def sample_imputations(
        self, X: ArrayLike, n_imputations: int | None = None
    ) -> NDArray[np.float64]:
        """Draw the missing entries several times from their conditional density.

        Independent draws, for multiple imputation.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data with ``missing_values`` (NaN by default) for missing values.
        n_imputations : int or None, default=None
            Number of draws; ``None`` uses the ``n_imputations`` parameter.

        Returns
        -------
        X_filled : ndarray of shape (n_imputations, n_samples, n_features_out)
            ``n_features_out`` is ``n_features`` less ``empty_features_``, unless
            ``keep_empty_features``. float32 for float32 ``X``, float64 otherwise.

        Examples
        --------
        >>> import numpy as np
        >>> from skebflow import EBFlowDensity, EBFlowImputer
        >>> rng = np.random.RandomState(0)
        >>> x = rng.normal(size=(400, 1))
        >>> X = np.hstack([x, 2 * x + 0.1 * rng.normal(size=(400, 1))])
        >>> X[rng.uniform(size=400) < 0.2, 1] = np.nan
        >>> density = EBFlowDensity(max_iter=30, n_iter_no_change=5, tol=1e-2,
        ...                         device="cpu")
        >>> imputer = EBFlowImputer(density, n_steps=50, random_state=0).fit(X)
        >>> draws = imputer.sample_imputations([[1.0, np.nan]], n_imputations=5)
        >>> draws.shape
        (5, 1, 2)
        >>> draws[:, 0, 0].tolist()  # the observed entry, in every draw
        [1.0, 1.0, 1.0, 1.0, 1.0]
        >>> bool(np.ptp(draws[:, 0, 1]) > 0)  # the missing one varies between draws
        True
        """
        check_is_fitted(self)
        X, output_dtype = self._validate(X, reset=False)
        count = _check_n_imputations(
            self.n_imputations if n_imputations is None else n_imputations
        )
        draws = self._draws(self._modelled(X), count)
        return self._with_unmodelled_features(draws, X).astype(
            output_dtype, copy=False
        )

    def _draws(
        self, X: NDArray[np.float64], count: int, *, distinct: bool = False
    ) -> NDArray[np.float64]:
        """``count`` draws of the missing entries of the validated ``X``; with
        ``distinct``, drawn once per distinct row and shared by its copies."""
        if count > 1 and isinstance(self.estimator_, EBFlowDensity):
            # before the rows are repeated, so that an error names X's rows
            check_observed_within_box(
                X, np.isnan(X), self.estimator_._preprocessing_spec
            )
        copies = None
        if distinct:
            first, copy_of = identical_rows(X)
            # each distinct row's copies in X, in order (one sort, not a scan each)
            copies = np.split(
                np.argsort(copy_of, kind="stable"), np.cumsum(np.bincount(copy_of))[:-1]
            )
            X = X[first]
        # each row's draws side by side: the k-th copy of a row in the stack is
        # then its draw k (its noise is keyed by the occurrence among identical
        # rows), and a row's first copy in X draws as the row alone, the next ones
        # afresh; with the rows tiled, copies interleaved with the draws
        repeated = np.repeat(np.arange(X.shape[0]), count)
        stacked = _naming_rows_of_x(
            lambda: self._conditional(X[repeated], "langevin", self.random_state),
            repeated if copies is None else [copies[row] for row in repeated],
        )
        draws = stacked.reshape(X.shape[0], count, X.shape[1]).transpose(1, 0, 2)
        return draws if copies is None else draws[:, copy_of]

    def _conditional(
        self, X: NDArray[np.float64], method: str, random_state: Any
    ) -> NDArray[np.float64]:
        return self.estimator_.sample_conditional(
            X,
            random_state=random_state,
            method=method,
            n_steps=self.n_steps,
            step_size=self.step_size,
        )

    def __sklearn_tags__(self):  # noqa: ANN204 - sklearn's Tags type is private
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = _marks_nan(self.missing_values)
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    def __setstate__(self, state: dict[str, Any]) -> None:
        # An imputer pickled or saved before missing_values, add_indicator and
        # keep_empty_features existed took NaN for missing, appended no indicator
        # and refused empty features.
        state = {
            "missing_values": np.nan,
            "add_indicator": False,
            "keep_empty_features": False,
            **state,
        }
        if "estimator_" in state and "indicator_features_" not in state:
            state["indicator_features_"] = np.zeros(0, dtype=np.intp)
        if "estimator_" in state and "empty_features_" not in state:
            state["empty_features_"] = np.zeros(0, dtype=np.intp)
        # One fitted before constant features were left to their value refused
        # them: it has none.
        if "estimator_" in state and "constant_features_" not in state:
            state["constant_features_"] = np.zeros(0, dtype=np.intp)
            state["constant_values_"] = np.zeros(0)
        super().__setstate__(state)


_ROWS_NAMED = re.compile(r"Row\(s\) \[([0-9, ]*)\]")


def _check_n_imputations(count: Any) -> int:
    """``count`` as an int, refused unless a positive integer (``True`` too).

    Examples
    --------
    >>> from skebflow._impute import _check_n_imputations
    >>> _check_n_imputations(3)
    3
    >>> _check_n_imputations(True)
    Traceback (most recent call last):
    ...
    ValueError: n_imputations must be a positive integer, got True: ...
    """
    if isinstance(count, bool) or not isinstance(count, Integral) or count < 1:
        raise ValueError(
            f"n_imputations must be a positive integer, got {count!r}: the number"
            " of independent draws of the missing entries."
        )
    return int(count)


def _naming_rows_of_x(
    call: Callable[[], NDArray[np.float64]],
    row_of: NDArray[np.intp] | list[NDArray[np.intp]],
) -> NDArray[np.float64]:
    """``call()``, a :meth:`~skebflow.EBFlowDensity.sample_conditional` of rows
    taken from the user's ``X`` (row ``i`` of them is ``X``'s row ``row_of[i]``,
    or its rows ``row_of[i]`` when it stands for several identical ones: copies
    stacked for several draws, distinct rows, or the rows of positive weight),
    with the rows its warnings and errors name given as rows of ``X``.

    Examples
    --------
    >>> import warnings
    >>> import numpy as np
    >>> from skebflow._impute import _naming_rows_of_x
    >>> def call():
    ...     warnings.warn("Row(s) [1, 4] of X observe a feature", UserWarning)
    ...     return np.zeros(1)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     _ = _naming_rows_of_x(call, np.array([0, 1, 2, 0, 1]))
    >>> str(caught[0].message)
    'Row(s) [1] of X observe a feature'
    """

    def renamed(message: str) -> str:
        def rows_of_x(match: re.Match[str]) -> str:
            listed = [int(row) for row in match.group(1).split(",") if row.strip()]
            named = sorted(
                {int(row) for entry in listed for row in np.atleast_1d(row_of[entry])}
            )
            return f"Row(s) {named}"

        return _ROWS_NAMED.sub(rows_of_x, message)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = call()
        except ValueError as error:
            message = str(error)
            if _ROWS_NAMED.search(message) is None:
                raise
            raise ValueError(renamed(message)) from error
    for warning in caught:
        warnings.warn(renamed(str(warning.message)), warning.category, stacklevel=5)
    return result


def _keep_relations(
    X: NDArray[np.float64],
    missing: NDArray[np.bool_],
    filled: NDArray[np.float64],
    rows: NDArray[np.intp] | None,
    *,
    dequantized: bool = False,
) -> NDArray[np.float64]:
    """``filled`` (``X`` with its missing entries drawn column by column) made to
    keep the exact linear relations of ``X`` (of its rows of positive weight:
    ``rows``; all with ``None``).

    Drawn independently, the missing entries of a row break a relation that the
    data keep (a total beside its parts), and the density fitted on them would
    no longer find it (``linear_relations``). A relation is one that
    :func:`~skebflow._validation.dependent_columns` finds among the complete rows
    and that every row observing all of its features keeps; with
    ``dequantized``, integer-valued columns take no part (the density
    dequantizes them, which breaks any relation). Per row, missing inputs that an
    observed dependent feature gives exactly are solved from it; where several
    inputs of one relation are missing, the draws of those that move the
    dependent feature least are kept, one at a time, and the rest solved; a
    missing dependent feature is computed from its inputs. Unchanged when fewer
    than ``2 (n_features + 1)`` rows are complete (too few to tell a relation
    from chance) or no relation holds.

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow._impute import _keep_relations
    >>> X = np.random.RandomState(0).normal(size=(50, 2))
    >>> X = np.c_[X, X.sum(axis=1)]
    >>> X[0, 0], X[1, 2] = np.nan, np.nan
    >>> filled = np.where(np.isnan(X), 0.0, X)
    >>> kept = _keep_relations(X, np.isnan(X), filled, None)
    >>> bool(np.allclose(kept[:2, 2], kept[:2, 0] + kept[:2, 1]))
    True
    """
    counted = np.zeros(X.shape[0], dtype=bool)
    counted[slice(None) if rows is None else rows] = True
    complete = counted & ~missing.any(axis=1)
    n_features = X.shape[1]
    if complete.sum() < 2 * (n_features + 1) or not missing.any():
        return filled
    observed = np.where(missing, 0.0, X)
    spread = np.ptp(X[complete], axis=0)
    taking_part = spread > 0
    if dequantized:
        taking_part &= ~integer_valued_columns(observed)
    varying = np.flatnonzero(taking_part)
    if varying.size < 2:
        return filled
    chosen, coefficients, intercepts = dependent_columns(X[complete][:, varying])
    weight = np.zeros((n_features, n_features))
    weight[np.ix_(varying[chosen], varying)] = coefficients
    intercept = np.zeros(n_features)
    intercept[varying[chosen]] = intercepts
    for dependent in varying[chosen].tolist():
        # a relation of the complete rows by chance does not hold elsewhere
        columns = np.r_[dependent, np.flatnonzero(weight[dependent])]
        seen = counted & ~missing[:, columns].any(axis=1)
        residuals = (
            observed[seen, dependent]
            - observed[seen] @ weight[dependent]
            - intercept[dependent]
        )
        if np.abs(residuals).max() > 1e-6 * spread[dependent]:
            weight[dependent] = 0.0
            intercept[dependent] = 0.0
    dependents = np.flatnonzero(np.any(weight != 0, axis=1))
    if dependents.size == 0:
        return filled
    spec = {"relation_weight": weight, "mean": intercept}
    unsolved = missing & counted[:, None]
    kept, unsolved = _solve_relations(filled, unsolved, spec)  # chains included
    released = True
    while released:  # one relation at a time: a kept draw may let another solve
        released = False
        for dependent in dependents.tolist():
            inputs = np.flatnonzero(weight[dependent])
            for row in np.flatnonzero(
                ~unsolved[:, dependent] & (unsolved[:, inputs].sum(axis=1) > 1)
            ).tolist():
                open_inputs = inputs[unsolved[row, inputs]]
                moves = np.abs(weight[dependent, open_inputs]) * spread[open_inputs]
                unsolved[row, open_inputs[np.argmin(moves)]] = False  # its draw kept
                released = True
            if released:
                kept, unsolved = _solve_relations(kept, unsolved, spec)
                break
    for dependent in dependents.tolist():  # a missing total from its parts
        rows_missing = missing[:, dependent] & counted
        kept[rows_missing, dependent] = (
            kept[rows_missing] @ weight[dependent] + intercept[dependent]
        )
    return np.where(counted[:, None], kept, filled)


def _modelled_index_map(modelled: NDArray[np.intp]) -> str:
    """How the density's feature indices map to the features of ``X``: each index
    for up to 20 modelled features, else the rule.

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow._impute import _modelled_index_map
    >>> _modelled_index_map(np.array([1, 3]))
    'index 0 above is feature 1 of X, 1 is 3'
    """
    if len(modelled) > 20:
        return (
            "index i above is the i-th feature of X (from 0) that has an observed value"
        )
    first = f"index 0 above is feature {modelled[0]} of X"
    return first + "".join(
        f", {index} is {column}" for index, column in enumerate(modelled[1:], 1)
    )


def _modelled_columns(
    n_features: int, unmodelled: NDArray[np.intp]
) -> NDArray[np.intp]:
    """The features the density models: all but the ``unmodelled`` ones."""
    return np.delete(np.arange(n_features), unmodelled)


def _constant_features(
    X: NDArray[np.float64], uncounted: NDArray[np.bool_], empty: NDArray[np.intp]
) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    """The features of ``X`` (NaN where missing) whose counted entries (those not
    ``uncounted``: missing, or in a row of weight zero) all take one value, as
    :func:`~skebflow._validation.constant_columns` judges it, and their values;
    the ``empty`` features, which have none, are not among them.

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow._impute import _constant_features
    >>> X = np.array([[1.0, 4.0, np.nan], [2.0, np.nan, np.nan], [3.0, 4.0, np.nan]])
    >>> features, values = _constant_features(X, np.isnan(X), np.array([2]))
    >>> features.tolist(), values.tolist()
    ([1], [4.0])
    """
    counted = np.where(uncounted, np.nan, X)
    has_value = ~np.isin(np.arange(X.shape[1]), empty)
    low = np.nanmin(counted[:, has_value], axis=0)
    high = np.nanmax(counted[:, has_value], axis=0)
    constant = constant_columns(np.vstack([low, high]))
    features = np.flatnonzero(has_value)[constant]
    return features, low[constant]


def _marks_nan(missing_values: Any) -> bool:
    """Whether ``missing_values`` stands for NaN (``np.nan``, ``float("nan")`` or
    ``pd.NA``, which NumPy's float arrays hold as NaN), as scikit-learn's
    imputers take it."""
    return bool(is_scalar_nan(missing_values) or is_pandas_na(missing_values))
