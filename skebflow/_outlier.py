"""EBFlowOutlierDetector: scikit-learn's outlier contract on an energy-based flow."""

from __future__ import annotations

from numbers import Real
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import OutlierMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._density import EBFlowDensity

__all__ = ["EBFlowOutlierDetector"]

_AUTO_CONTAMINATION = 0.1


class EBFlowOutlierDetector(OutlierMixin, EBFlowDensity):
    """Unsupervised outlier detection by the exact log-density of an energy-based flow.

    Rows in regions of low density under the fitted flow are outliers. Same
    parameters and fitted attributes as :class:`EBFlowDensity`, plus
    ``contamination``.

    Parameters
    ----------
    contamination : "auto" or float, default="auto"
        Expected proportion of outliers in the training data, in (0, 0.5]: ``offset_``
        is that percentile of the training log-densities. ``"auto"`` means 0.1, the
        default contamination of PyOD's detectors. Only ``predict`` and
        ``decision_function`` depend on it; ``score_samples`` (for ROC-AUC, average
        precision or a threshold of your own) does not.
    architecture, n_layers, hidden_layer_sizes, activation, objective, n_slices, \
noise_std, fd_epsilon, preprocessing, bounds, logit_alpha, dequantize, jitter, \
max_iter, batch_size, learning_rate, solver, learning_rate_schedule, weight_decay, \
ema_decay, grad_clip, energy_regularization, early_stopping, validation_fraction, \
n_iter_no_change, tol, device, random_state, verbose, warm_start
        As in :class:`EBFlowDensity`, with the same defaults.

    Attributes
    ----------
    offset_ : float
        Log-density threshold: ``decision_function = score_samples - offset_``.
    objective_, flow_, preprocessing_, n_features_in_, feature_names_in_, n_iter_, \
loss_curve_, validation_scores_, best_validation_score_, converged_, \
log_normalizer_, device_
        As in :class:`EBFlowDensity`.

    See Also
    --------
    EBFlowDensity : The density estimator underneath.
    sklearn.ensemble.IsolationForest : Isolation-based outlier detection.
    sklearn.neighbors.LocalOutlierFactor : Local density-based outlier detection.

    Notes
    -----
    The training data may contain outliers (the unsupervised setting); duplicated
    rows and discrete columns are best handled with ``dequantize=True`` (integer
    columns) or a small ``jitter``.

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow import EBFlowOutlierDetector
    >>> rng = np.random.RandomState(0)
    >>> X = rng.normal(size=(300, 2))
    >>> detector = EBFlowOutlierDetector(
    ...     contamination=0.05, max_iter=30, n_iter_no_change=3, tol=1e-2, device="cpu",
    ...     random_state=0,
    ... ).fit(X)
    >>> detector.predict([[0.0, 0.0], [8.0, 8.0]]).tolist()
    [1, -1]
    """

    _parameter_constraints: dict = {
        **EBFlowDensity._parameter_constraints,
        "contamination": [
            StrOptions({"auto"}),
            Interval(Real, 0, 0.5, closed="right"),
        ],
    }

    def __init__(
        self,
        *,
        contamination: str | float = "auto",
        architecture: str = "coupling",
        n_layers: int = 4,
        hidden_layer_sizes: tuple[int, ...] = (32, 32),
        activation: str = "tanh",
        objective: str = "auto",
        n_slices: int = 1,
        noise_std: float = 0.1,
        fd_epsilon: float = 0.1,
        preprocessing: str | None = "standardize",
        bounds: tuple[Any, Any] | None = None,
        logit_alpha: float = 1.0,
        dequantize: bool = False,
        jitter: float = 0.0,
        max_iter: int = 200,
        batch_size: int = 256,
        learning_rate: float = 3e-3,
        solver: str = "adam",
        learning_rate_schedule: str = "cosine",
        weight_decay: float = 0.0,
        ema_decay: float = 0.995,
        grad_clip: float | None = 10.0,
        energy_regularization: float = 0.0,
        early_stopping: bool = True,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 20,
        tol: float = 1e-4,
        device: str = "auto",
        random_state: int | np.random.RandomState | None = None,
        verbose: int = 0,
        warm_start: bool = False,
    ) -> None:
        super().__init__(
            architecture=architecture,
            n_layers=n_layers,
            hidden_layer_sizes=hidden_layer_sizes,
            activation=activation,
            objective=objective,
            n_slices=n_slices,
            noise_std=noise_std,
            fd_epsilon=fd_epsilon,
            preprocessing=preprocessing,
            bounds=bounds,
            logit_alpha=logit_alpha,
            dequantize=dequantize,
            jitter=jitter,
            max_iter=max_iter,
            batch_size=batch_size,
            learning_rate=learning_rate,
            solver=solver,
            learning_rate_schedule=learning_rate_schedule,
            weight_decay=weight_decay,
            ema_decay=ema_decay,
            grad_clip=grad_clip,
            energy_regularization=energy_regularization,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change,
            tol=tol,
            device=device,
            random_state=random_state,
            verbose=verbose,
            warm_start=warm_start,
        )
        self.contamination = contamination

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: ArrayLike, y: None = None) -> EBFlowOutlierDetector:
        """Fit the flow to ``X`` and set ``offset_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data, which may contain outliers. Never modified.
        y : None
            Ignored; present for API consistency.

        Returns
        -------
        self : EBFlowOutlierDetector
            The fitted detector.

        Examples
        --------
        >>> import numpy as np
        >>> from skebflow import EBFlowOutlierDetector
        >>> rng = np.random.RandomState(0)
        >>> X = rng.normal(size=(300, 2))
        >>> detector = EBFlowOutlierDetector(
        ...     contamination=0.05, max_iter=30, n_iter_no_change=3, tol=1e-2,
        ...     device="cpu", random_state=0,
        ... ).fit(X)
        >>> isinstance(detector.offset_, float)
        True
        >>> # offset_ flags the contamination share of the training rows.
        >>> float(np.mean(detector.score_samples(X) < detector.offset_))
        0.05
        """
        super().fit(X)
        contamination = (
            _AUTO_CONTAMINATION if self.contamination == "auto" else self.contamination
        )
        training_scores = self.score_samples(X)
        self.offset_ = float(np.percentile(training_scores, 100.0 * contamination))
        return self

    def decision_function(self, X: ArrayLike) -> NDArray[np.float64]:
        """Log-density minus ``offset_``: negative for outliers.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows to judge.

        Returns
        -------
        decision : ndarray of shape (n_samples,)

        Examples
        --------
        >>> import numpy as np
        >>> from skebflow import EBFlowOutlierDetector
        >>> rng = np.random.RandomState(0)
        >>> X = rng.normal(size=(300, 2))
        >>> detector = EBFlowOutlierDetector(
        ...     contamination=0.05, max_iter=30, n_iter_no_change=3, tol=1e-2,
        ...     device="cpu", random_state=0,
        ... ).fit(X)
        >>> decision = detector.decision_function([[0.0, 0.0], [8.0, 8.0]])
        >>> (decision >= 0).tolist()  # the far row falls below the threshold
        [True, False]
        >>> bool(np.allclose(decision, detector.score_samples([[0.0, 0.0], [8.0, 8.0]])
        ...                  - detector.offset_))
        True
        """
        check_is_fitted(self)
        return self.score_samples(X) - self.offset_

    def predict(self, X: ArrayLike) -> NDArray[np.int64]:
        """+1 for inliers, -1 for outliers.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows to judge.

        Returns
        -------
        labels : ndarray of shape (n_samples,)

        Examples
        --------
        >>> import numpy as np
        >>> from skebflow import EBFlowOutlierDetector
        >>> rng = np.random.RandomState(0)
        >>> X = rng.normal(size=(300, 2))
        >>> detector = EBFlowOutlierDetector(
        ...     contamination=0.05, max_iter=30, n_iter_no_change=3, tol=1e-2,
        ...     device="cpu", random_state=0,
        ... ).fit(X)
        >>> labels = detector.predict(X)
        >>> labels.shape, sorted(set(labels.tolist()))
        ((300,), [-1, 1])
        >>> float(np.mean(labels == -1))  # the contamination
        0.05
        """
        decision = self.decision_function(X)
        return np.where(decision >= 0, 1, -1).astype(np.int64)
