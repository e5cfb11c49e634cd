"""EBFlowOutlierDetector: scikit-learn's outlier contract on an energy-based flow."""

from __future__ import annotations

import math
import warnings
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from sklearn.base import OutlierMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import _safe_indexing, check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _num_samples, check_is_fitted

from ._auto_settings import DETECTOR_KERNEL_WIDE_SCALE, resolve_detector_setting
from ._density import EBFlowDensity, _validates_later_calls
from ._validation import (
    check_sample_weight,
    constant_columns,
    fitted_state,
    restore_fitted_state,
    validated_sample_weight,
)
from .flows import (
    Flow,
    FlowGeometricMean,
    FlowMixture,
    RejectionSamplingError,
    widen_base,
)

__all__ = ["EBFlowOutlierDetector"]


#: Scores within this relative distance of the threshold count as tied with it:
#: far above the rounding by which a row's float64 score changes with the rows
#: scored beside it (about 3e-14 of a log-determinant), far below any difference
#: between rows that are not copies of one another.
_TIE_RTOL = 1e-9


def _below_tied_scores(offset: float, scores: NDArray[np.float64]) -> float:
    """``offset`` moved halfway down from the scores tied with it (within
    ``_TIE_RTOL``) to the next lower score (or by a millionth of its size when
    there is none), so that the rows tied with it stay above it whatever the
    batch they are scored in; ``offset`` itself when no score is tied with it.

    The quantile falls on a training row's score whenever ``contamination``
    times the rows is not a whole number. That row's decision was then exactly
    0, and its score changes in the last bits with the rows scored beside it (the
    flows' matrix products), so ``predict`` on it alone could flag it where
    ``fit_predict`` did not. Copies of one row can likewise score a float or two
    apart in one batch, and a threshold on one of them flagged some copies and
    not others. The rows flagged are the same: those below every tied score.
    When the next lower score is the float just below the lowest tied one, no
    value lies between them, and the offset goes to that tied score (the rows
    flagged are still those below).

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow._outlier import _below_tied_scores
    >>> _below_tied_scores(2.0, np.array([1.0, 2.0, 3.0]))
    1.5
    >>> _below_tied_scores(1.0, np.array([1.0, 2.0]))
    0.999999
    >>> copies = np.array([-10.0, np.nextafter(-10.0, -11.0), -12.0])
    >>> _below_tied_scores(-10.0, copies)  # below both copies
    -11.0
    >>> _below_tied_scores(1.5, np.array([1.0, 2.0]))  # no tie: unchanged
    1.5
    """
    tolerance = _TIE_RTOL * max(abs(offset), 1.0)
    tied = np.abs(scores - offset) <= tolerance
    if not tied.any():
        return offset
    lowest_tied = float(scores[tied].min())
    below = scores[scores < lowest_tied]
    lower = float(below.max()) if below.size else -math.inf
    if not math.isfinite(lower):
        return lowest_tied - 1e-6 * max(abs(lowest_tied), 1.0)
    halfway = lower + 0.5 * (lowest_tied - lower)
    # rounded onto either end when the two scores are adjacent floats
    return halfway if lower < halfway < lowest_tied else lowest_tied


def _weighted_percentile(
    values: NDArray[np.float64],
    weights: NDArray[np.float64],
    percentile: float,
    *,
    average: bool = True,
) -> float:
    """The weighted ``percentile`` of ``values`` by the averaged inverted CDF.

    With equal weights it is ``np.percentile(values, percentile,
    method="averaged_inverted_cdf")``: where the weight below a value is exactly
    ``percentile`` % of the total, the mean of that value and the next one, else
    the first value whose cumulative weight reaches it. Computed as the mean of
    the inverted CDF of ``values`` at ``percentile`` and of minus the inverted
    CDF of ``-values`` at ``100 - percentile`` (as scikit-learn's private helper
    computes it where it has ``average=True``; it has not on every release the
    package supports). With ``average=False``, the second of the two: the next
    value up where the weight below a value is exactly ``percentile`` %.

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow._outlier import _weighted_percentile
    >>> _weighted_percentile(np.array([1.0, 2.0, 3.0, 4.0]), np.ones(4), 50.0)
    2.5
    >>> _weighted_percentile(np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 2.0]), 50.0)
    2.5
    """

    # A cumulative weight within rounding of the rank counts as reaching it, so
    # that weights that are not whole numbers (the fit divides them by their
    # largest) hit the rank exactly where their whole-number multiples do.
    tolerance = 4.0 * len(values) * np.finfo(np.float64).eps

    def inverted_cdf(points: NDArray[np.float64], rank: float) -> float:
        order = np.argsort(points, kind="stable")
        cumulative = np.cumsum(weights[order])
        target = (rank / 100.0 - tolerance) * cumulative[-1]
        index = np.searchsorted(cumulative, target, "left")
        return float(points[order][min(int(index), len(points) - 1)])

    upper = -inverted_cdf(-values, 100.0 - percentile)
    if not average:
        return upper
    return 0.5 * (inverted_cdf(values, percentile) + upper)


_AUTO_CONTAMINATION = 0.1
# Outside this range the scores say nothing useful: below it the distance term
# ``|f(x)|^2 / (2 s^2)`` overflows float64 for any row away from the base's centre
# (every score -inf at 1e-300), above it the distance is ignored altogether.
_BASE_SCALE_RANGE = (1e-3, 1e3)
# Draws of the members' mixture behind the Monte Carlo estimate of the geometric
# mean's log-normalizer (standard error 0.01 to 0.06 nats on ADBench sets of 7 to
# 36 columns; benchmarks/geometric_normalizer.py). It shifts every log-density
# alike and never changes a ranking.
_LOG_NORMALIZER_DRAWS = 4096
# partial_fit re-estimates it after every chunk: fewer draws keep an update cheap
# (each draw inverts every flow), for a standard error about 2.8 times larger.
_PARTIAL_FIT_LOG_NORMALIZER_DRAWS = 512
# Below this log-normalizer exact sampling by rejection would need over 1 000
# mixture draws per sample: ``sample`` refuses at once.
_MIN_LOG_NORMALIZER_TO_SAMPLE = math.log(1e-3)


class EBFlowOutlierDetector(OutlierMixin, EBFlowDensity):
    """Unsupervised outlier detection by the exact log-density of an energy-based flow.

    Rows in regions of low density under the fitted flows (with their bases widened
    by ``base_scale``, if asked) are outliers. Same parameters and fitted attributes
    as :class:`EBFlowDensity`, plus ``contamination``, ``novelty``,
    ``base_scale``, ``flow_combination`` and ``trim_fraction``.

    Parameters
    ----------
    contamination : "auto" or float, default="auto"
        Expected proportion of outliers in the training data, in (0, 0.5]: ``offset_``
        is that percentile of the training log-densities. ``"auto"`` means 0.1, the
        default contamination of PyOD's detectors. Only ``predict`` and
        ``decision_function`` depend on it; ``score_samples`` (for ROC-AUC, average
        precision or a threshold of your own) does not. Changed by ``set_params``
        after a fit, it takes effect at the next ``fit`` or ``partial_fit``, as in
        scikit-learn's IsolationForest.
    novelty : bool, default=False
        Whether the training rows are known to be clean, as in scikit-learn's
        :class:`~sklearn.neighbors.LocalOutlierFactor`: ``True`` for novelty
        detection (fit on normal rows only, then judge new rows), ``False`` for
        outlier detection (the training rows may hold outliers). It selects the
        settings chosen for that case wherever ``max_iter``,
        ``hidden_layer_sizes``, ``marginal_transform`` and ``weight_decay`` are
        ``"auto"``: 100 epochs of (64, 64) conditioners on kernel marginals with
        weight decay 3e-3 for clean rows, 50 epochs of (32, 32) conditioners on
        standardized columns with weight decay 1e-3 otherwise. On rows
        that hold outliers a longer, wider fit learns them too and ranks them as
        normal; on clean rows it ranks outliers better, at two to three times the
        fit time (on the tuning group of ADBench sets with clean training rows:
        mean ROC-AUC 0.788 to 0.795 and average precision 0.598 to 0.618;
        :doc:`/benchmarks`, "Settings for clean training rows"). Unlike
        LocalOutlierFactor's, it changes no method: ``predict``,
        ``score_samples`` and ``decision_function`` judge any rows either way,
        and ``fit_predict`` flags the training rows either way.
        A value set for ``max_iter``, ``hidden_layer_sizes``,
        ``marginal_transform`` or ``weight_decay`` wins, as do the explicit values
        of a detector saved before ``novelty`` existed (or, for
        ``marginal_transform``, before 5 December 2026: ``None``).
    base_scale : float, default=1.0
        Rank rows by the trained flow's density with its base distribution widened
        by this factor: ``N(0, base_scale**2 I)`` in place of ``N(0, I)``, the
        flow's map unchanged. The result is still an exact, normalized density
        (but for ``preprocessing="logit"``, below),
        ``p(x) = p_base(f(x) / s) |det J_f(x)| / s^D``, with less weight on how far
        ``f(x)`` lies from the base's centre and the same weight on how much the
        flow compresses space at ``x``. ``1.0``, the default, is the trained flow's
        own density. With ``base_distribution="student_t"`` the base is the
        Student-t scaled by the factor. Training never sees it: every method that
        evaluates or samples the density (``score_samples``, ``score``,
        ``energy``, ``log_density_gradient``, the samplers, ``offset_``,
        ``log_normalizer_``) uses the widened one. ``3`` ranked outliers better
        than 1 in the unsupervised setting (outliers among the training rows) on
        both the tuning and the evaluation group of ADBench sets (measured with
        ``flow_combination="mixture"``, the default then), and worse in the
        semi-supervised setting (clean training rows) on the evaluation group, so
        the default stays 1: pass ``base_scale=3`` when the training rows hold
        outliers, or tune it by a ranking metric on labelled rows, never by
        ``score`` (the likelihood prefers 1). It must lie in ``[0.001, 1000]``.
        With ``preprocessing="logit"`` the widened base puts more of its mass
        beyond the logit's bounded image, which belongs to no value of the box,
        so ``score_samples`` integrates to less than 1 there (0.73 at
        ``base_scale=3`` against 0.99 at 1, on a 1-D Beta(2, 5) fit; see the
        user guide's preprocessing page); the ranking is not affected.
    flow_combination : {"geometric_mean", "mixture"}, default="geometric_mean"
        How the ``n_flows_`` trained flows combine into the density that ranks rows
        (with one flow both are that flow). ``"geometric_mean"``: the normalized
        product of experts ``prod_k p_k(x)^(1/K) / Z``, high only where every flow
        puts mass, so a row that one flow covers by chance still ranks as an
        outlier. Its normalizer ``Z <= 1`` has no closed form: ``log_normalizer_``
        holds a Monte Carlo estimate from 4 096 draws of the flows' mixture (seeded
        by ``random_state``), so ``score_samples`` is a normalized log-density up
        to that estimate's error, the same for every row (rankings,
        ``decision_function`` and ``predict`` do not depend on it; ``offset_``
        moves with it). Its standard error grows as the flows disagree: 0.01 to
        0.06 nats on ADBench sets of 7 to 36 columns; rough, about a nat or more,
        on one of 166 (``log Z`` about -91). ``partial_fit`` re-estimates it
        after every chunk from 512 draws. ``sample`` is exact (rejection from the
        mixture) where the flows overlap enough.
        ``"mixture"``: the mean density ``(1/K) sum_k p_k(x)``, exactly normalized,
        the density :class:`EBFlowDensity` fits; use it to read or report the
        log-densities themselves. The geometric mean was chosen for ranking
        outliers on the tuning group of ADBench sets (``benchmarks/anomaly_sweep.py
        --member-mean``) and confirmed on the evaluation group (mean ROC-AUC 0.913
        to 0.919 with clean training rows, 0.846 to 0.844 with outliers among
        them, over its 8 sets).
    trim_fraction : float in [0, 0.5), default=0.0
        Trimmed likelihood: after the fit, fit again on the training rows
        without the ``int(trim_fraction * n)`` that the first fit scores lowest
        (``n`` the rows of positive weight; ties broken by row order), so that
        outliers among the training rows shape the density less. The refit has
        the same settings, ``random_state`` and number of flows (``n_flows_``)
        as the first fit (and, under ``preprocessing="logit"``, its box, and
        under ``dequantize``, its integer-valued columns: one holding a fraction
        only in the trimmed rows stays continuous). It
        starts afresh, with the standardization fitted on the kept rows, or,
        with ``warm_start=True``, continues the first fit's flows with the first
        fit's standardization (of every row, the trimmed ones included) and, as
        every continuing fit, without a second noise annealing. The fit
        then costs about two; ``n_iter_`` and the curves are the refit's.
        ``offset_`` is still the ``contamination`` quantile of every training
        row's score. Starting afresh, a column constant among the kept rows
        only is modelled as constant (``constant_features``), so the trimmed
        rows that depart from it score very low, and with
        ``constant_features="error"`` the fit raises a ``ValueError`` naming it;
        with ``warm_start=True`` such a column stays a varying one. The first
        fit of a fresh detector, if interrupted, is not refitted (refitting a
        fitted one, an interruption restores the previous model and is raised,
        as in :class:`EBFlowDensity`); an interrupted trimmed refit of a fresh
        detector leaves the first fit in place (``n_trimmed_ = 0``), and of a
        fitted one restores the previous model and is raised. After a refit, only
        the refit's ``ConvergenceWarning`` is shown, if it gives one: the first
        fit's model is not the one kept. ``0``, the default,
        fits once: on the evaluation sets, trimming helped with outliers among
        the training rows and hurt with clean ones (see the user guide).
        ``partial_fit`` never trims.
    constant_features : {"narrow", "error"}, default="narrow"
        A feature constant among the training rows (a flag that never moves while
        the system is healthy, a pixel that is always blank) is modelled as a
        normal of standard deviation ``max(1e-3, 1e-9 |value|)`` around its value,
        so a row that departs from it scores as strongly anomalous: ``k`` widths
        away cost exactly ``(k / base_scale)**2 / 2`` nats, the feature being
        passed to the flow's standard normal base unchanged (the flow is built
        on the other features). Where fewer than two other features vary (one
        under ``architecture="fc"``) or with another ``base_distribution``, the
        flow learns the normal from noise instead: about that cost near the
        value, less far off under the ``"fc"`` flow, which still ranks the row
        below every training row (see the user guide). ``"error"`` refuses such
        features, as :class:`EBFlowDensity` does by default.
    linear_relations : {"narrow", "warn"}, default="warn"
        As in :class:`EBFlowDensity`, with another default: the detector fits
        rows on a hyperplane (a feature that is an exact affine function of
        others, a total beside its parts) as they lie, with a warning, as it
        did before the density estimator's ``"narrow"`` existed. On the one
        set of the tuning group with such a relation (cardio, seeds 0-2),
        ``"narrow"`` ranked outliers slightly worse (ROC-AUC 0.913 against
        0.917 with clean training rows, 0.760 against 0.778 with outliers
        among them), so the detector's default stays. ``"narrow"`` models each
        relation as that function plus a normal of 1e-3 of the feature's
        standard deviation: finite, comparable densities, and a row that breaks
        the relation still scores as strongly anomalous (``k`` widths off cost
        roughly ``k**2 / 2`` nats).
    coupling_transform
        As in :class:`EBFlowDensity`, with its default (logistic-mixture
        couplings). It was chosen for the detector separately, for ranking
        outliers, by a nested protocol: on the tuning group of ADBench sets only
        (``benchmarks/anomaly_sweep.py``), among seven candidates (affine couplings,
        wider conditioners, denoising score matching, one or four flows); the
        evaluation group of ``benchmarks/anomaly.py`` chose nothing.
    weight_decay : float or "auto", default="auto"
        As in :class:`EBFlowDensity`, whose default is 1e-4. ``"auto"``: 1e-3, or
        3e-3 with ``novelty=True``; the value used is ``weight_decay_``. Ten times
        the density's weight decay ranked outliers better on the tuning group, on
        all four measures (``benchmarks/anomaly_sweep.py --candidates
        density-50epochs-wd1e-3 density-50epochs-wd1e-2``: selection score 0.6190
        against 0.6126 at 1e-4 and 0.6027 at 1e-2); with clean training rows 3e-3
        ranked them better still on four tuning seeds (protocol (a)'s score 0.7201
        against 0.7182 at 1e-3, 0.7049 at 1e-4 and 0.6951 at 1e-2).
    n_flows
        As in :class:`EBFlowDensity`, with its default (a mixture of 4 flows below
        5 000 rows), chosen by the same protocol. Eight flows, tried again at 50
        epochs, gained too little for twice the fit.
    architecture, image_shape, n_layers
        As in :class:`EBFlowDensity`, with the same defaults.
    hidden_layer_sizes : array-like of int, int or "auto", default="auto"
        As in :class:`EBFlowDensity`, whose default is (32, 32). ``"auto"``:
        (32, 32), or (64, 64) with ``novelty=True``; the conditioners used are
        ``hidden_layer_sizes_``. (64, 64) ranked outliers better with clean
        training rows and worse with outliers among them, on the tuning group
        (``benchmarks/anomaly_sweep.py``).
    activation, n_components, base_distribution, objective, n_slices, noise_std, \
noise_annealing, fd_epsilon, whiten_output, likelihood_refinement, preprocessing, \
bounds, logit_alpha
        As in :class:`EBFlowDensity`, with the same defaults.
    dequantize : bool or "auto", default=False
        As in :class:`EBFlowDensity`, whose default is ``"auto"`` (integer-valued
        columns dequantized). The detector's default stays ``False``: on the
        ADBench sets with integer columns, ``"auto"`` ranked outliers no better
        (about level with clean training rows, worse with outliers among them).
        Set it when the log-densities themselves should be those of the integer
        values.
    marginal_transform : {"auto", "kde"} or None, default="auto"
        As in :class:`EBFlowDensity` (``"kde"``: continuous columns mapped by
        their kernel densities' CDFs), except that ``"auto"`` follows
        ``novelty``: the kernel marginals with clean training rows
        (``novelty=True``; where :class:`EBFlowDensity`'s ``"auto"`` would take
        them), ``None`` otherwise. On the tuning group of ADBench sets they ranked
        outliers better with clean training rows, and worse with outliers among
        them, whose values the kernel densities give mass of their own (see the
        user guide). ``marginal_transform_`` says what the fit used. With
        ``novelty=True`` each column's wide normal (the density beyond the
        training range) is one standard deviation wide, not three.
    jitter : float, default=0.0
        As in :class:`EBFlowDensity`, with the same default.
    max_iter : int or "auto", default="auto"
        As in :class:`EBFlowDensity`, whose default is 200. ``"auto"``: 50, or
        100 with ``novelty=True``; the number used is ``max_iter_``. A quarter
        of the density's epochs (the learning rate's cosine decays over
        ``max_iter``) ranked outliers best of 200, 100, 70 and 50 on the tuning
        group of ADBench sets, both settings of training rows together
        (``benchmarks/anomaly_sweep.py``: selection score 0.6126 at 50 epochs,
        0.6122 at 70, 0.6109 at 100, 0.6082 at 200), in a quarter of the fit
        time; with clean training rows alone, 100 epochs of wider conditioners
        ranked best. Raise it for the log-densities themselves: the held-out
        likelihood often still improves after 50 epochs.
    batch_size, learning_rate, solver, learning_rate_schedule, \
ema_decay, grad_clip, energy_regularization, early_stopping, \
early_stopping_metric, validation_fraction, n_iter_no_change, tol, device, \
random_state, verbose, warm_start
        As in :class:`EBFlowDensity`, with the same defaults.

    Attributes
    ----------
    offset_ : float
        Log-density threshold: ``decision_function = score_samples - offset_``.
        The ``contamination`` quantile of the training rows' log-densities, or,
        where that is a row's own score (within a billionth: copies of a row
        score a float or two apart), halfway down to the next lower one.
    base_scale_ : float
        The ``base_scale`` of the last fit, which the scoring methods use.
    flow_combination_ : str
        The ``flow_combination`` of the last fit, which the scoring methods use.
    max_iter_ : int
        The epochs ``fit`` trained at most: ``max_iter``, ``"auto"`` resolved
        for ``novelty`` (``partial_fit`` trains one epoch per call whatever it
        is).
    weight_decay_ : float
        The weight decay ``fit`` trained with: ``weight_decay``, ``"auto"``
        resolved for ``novelty``.
    hidden_layer_sizes_ : tuple of int
        The fitted flow's conditioner widths: ``hidden_layer_sizes``, ``"auto"``
        resolved for ``novelty`` (a fit continued by ``warm_start`` keeps its
        flow's, and refuses a change). Like the parameter, they shape only the
        architectures with conditioners (``"coupling"``).
    n_trimmed_ : int
        How many training rows the last fit left out of its second fit
        (``trim_fraction``); 0 after a fit without trimming and after
        ``partial_fit``.
    objective_, architecture_, learning_rate_, early_stopping_metric_, \
noise_annealing_, whiten_output_, whitened_flows_, likelihood_refinement_, \
refined_flows_, flow_, n_flows_, preprocessing_, dequantized_features_, \
dependent_features_, marginal_transform_, n_features_in_, feature_names_in_, \
n_iter_, loss_curve_, validation_scores_, validation_loss_curve_, \
best_validation_score_, converged_, log_normalizer_, device_
        As in :class:`EBFlowDensity`. ``flow_`` is the trained flow (or the
        mixture of the trained flows), with its own base; ``log_normalizer_`` is
        that of the density the detector scores by: widened, and combined by
        ``flow_combination_`` (an estimate for the geometric mean of several
        flows).

    See Also
    --------
    EBFlowDensity : The density estimator underneath.
    sklearn.ensemble.IsolationForest : Isolation-based outlier detection.
    sklearn.neighbors.LocalOutlierFactor : Local density-based outlier detection.

    Notes
    -----
    The training data may contain outliers (the unsupervised setting, the
    default); when they are known to be clean, pass ``novelty=True``. Duplicated
    rows are best handled with a small ``jitter``.

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
    >>> detector.max_iter_, detector.hidden_layer_sizes_  # "auto" hidden sizes
    (30, (32, 32))

    Training rows known to be clean (novelty detection) get wider conditioners:

    >>> clean = EBFlowOutlierDetector(
    ...     novelty=True, max_iter=30, n_iter_no_change=3, tol=1e-2, device="cpu",
    ...     random_state=0,
    ... ).fit(X)
    >>> clean.hidden_layer_sizes_, clean.predict([[0.0, 0.0], [8.0, 8.0]]).tolist()
    ((64, 64), [1, -1])
    """

    _parameter_constraints: dict = {
        **EBFlowDensity._parameter_constraints,
        "contamination": [
            StrOptions({"auto"}),
            Interval(Real, 0, 0.5, closed="right"),
        ],
        "base_scale": [
            Interval(Real, _BASE_SCALE_RANGE[0], _BASE_SCALE_RANGE[1], closed="both")
        ],
        "flow_combination": [StrOptions({"geometric_mean", "mixture"})],
        "trim_fraction": [Interval(Real, 0, 0.5, closed="left")],
        "novelty": ["boolean"],
        "max_iter": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "hidden_layer_sizes": [
            "array-like",
            Interval(Integral, 1, None, closed="left"),
            StrOptions({"auto"}),
        ],
        "weight_decay": [Interval(Real, 0, None, closed="left"), StrOptions({"auto"})],
    }

    def __init__(
        self,
        *,
        contamination: str | float = "auto",
        novelty: bool = False,
        base_scale: float = 1.0,
        flow_combination: str = "geometric_mean",
        trim_fraction: float = 0.0,
        constant_features: str = "narrow",
        linear_relations: str = "warn",
        coupling_transform: str = "logistic_mixture",
        weight_decay: float | str = "auto",
        n_flows: int | str = "auto",
        architecture: str = "auto",
        image_shape: tuple[int, ...] | None = None,
        n_layers: int = 4,
        hidden_layer_sizes: tuple[int, ...] | str = "auto",
        activation: str = "tanh",
        n_components: int = 8,
        base_distribution: str = "normal",
        objective: str = "auto",
        n_slices: int = 1,
        noise_std: float = 0.1,
        noise_annealing: float | str = "auto",
        fd_epsilon: float = 0.1,
        whiten_output: bool | str = "auto",
        likelihood_refinement: int | str = "auto",
        preprocessing: str | None = "standardize",
        bounds: tuple[Any, Any] | None = None,
        logit_alpha: float = 1.0,
        dequantize: bool | str = False,
        marginal_transform: str | None = "auto",
        jitter: float = 0.0,
        max_iter: int | str = "auto",
        batch_size: int = 256,
        learning_rate: float | str = "auto",
        solver: str = "adam",
        learning_rate_schedule: str = "cosine",
        ema_decay: float = 0.995,
        grad_clip: float | None = 10.0,
        energy_regularization: float = 0.0,
        early_stopping: bool = True,
        early_stopping_metric: str = "auto",
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
            image_shape=image_shape,
            n_layers=n_layers,
            hidden_layer_sizes=hidden_layer_sizes,
            activation=activation,
            coupling_transform=coupling_transform,
            n_components=n_components,
            base_distribution=base_distribution,
            n_flows=n_flows,
            objective=objective,
            n_slices=n_slices,
            noise_std=noise_std,
            noise_annealing=noise_annealing,
            fd_epsilon=fd_epsilon,
            whiten_output=whiten_output,
            likelihood_refinement=likelihood_refinement,
            preprocessing=preprocessing,
            bounds=bounds,
            logit_alpha=logit_alpha,
            dequantize=dequantize,
            constant_features=constant_features,
            linear_relations=linear_relations,
            marginal_transform=marginal_transform,
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
            early_stopping_metric=early_stopping_metric,
            validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change,
            tol=tol,
            device=device,
            random_state=random_state,
            verbose=verbose,
            warm_start=warm_start,
        )
        self.contamination = contamination
        self.novelty = novelty
        self.base_scale = base_scale
        self.flow_combination = flow_combination
        self.trim_fraction = trim_fraction

    def _resolved_max_iter(self) -> int:
        """``max_iter``, ``"auto"`` resolved for ``novelty``."""
        return resolve_detector_setting("max_iter", self.max_iter, self.novelty)

    def _unconverged_advice(self, refinement: bool = False) -> str:
        if self.max_iter == "auto":
            # The refinement's "auto" epochs follow max_iter's budget.
            other = (
                "max_iter (or likelihood_refinement)" if refinement else "max_iter"
            )
            return (
                f"max_iter='auto' ({self._resolved_max_iter()} epochs) is a budget"
                " chosen for ranking outliers, which ends before the likelihood"
                f" converges; set {other} to an integer for another budget."
            )
        return super()._unconverged_advice(refinement)

    def _resolved_weight_decay(self) -> float:
        """``weight_decay``, ``"auto"`` resolved for ``novelty``."""
        return resolve_detector_setting("weight_decay", self.weight_decay, self.novelty)

    def _resolved_hidden_layer_sizes(self) -> Any:
        """``hidden_layer_sizes``, ``"auto"`` resolved for ``novelty``."""
        return resolve_detector_setting(
            "hidden_layer_sizes", self.hidden_layer_sizes, self.novelty
        )

    def _resolved_marginal_transform(self) -> str | None:
        """``marginal_transform``, ``"auto"`` resolved for ``novelty``."""
        return resolve_detector_setting(
            "marginal_transform", self.marginal_transform, self.novelty
        )

    def _kernel_wide_scale(self) -> float | None:
        """The kernel marginals' wide normal for ``novelty``."""
        return DETECTOR_KERNEL_WIDE_SCALE[bool(self.novelty)]

    def _hyperplane_remedy(self) -> str:
        if self.linear_relations == "narrow":
            return super()._hyperplane_remedy()
        # The density's remedy, linear_relations="narrow", ranked outliers
        # slightly worse on the tuning group: the detector says so.
        return (
            " For ranking outliers this matters less than for the scores' values:"
            " the detector's default keeps such rows as they lie, because"
            " linear_relations='narrow' (finite, comparable log-densities) ranked"
            " outliers slightly worse on its tuning sets. To make the scores"
            " log-densities, pass linear_relations='narrow' (with"
            " preprocessing='standardize') or drop the redundant features."
        )

    def _structure_change_advice(self, changed: list[str]) -> str:
        advice = ""
        if "hidden_layer_sizes" in changed and isinstance(self.hidden_layer_sizes, str):
            advice += (
                f" Here hidden_layer_sizes='auto' resolves to"
                f" {self._resolved_hidden_layer_sizes()} with novelty="
                f"{self.novelty}: set novelty back, or hidden_layer_sizes to the"
                f" fitted flow's {self.hidden_layer_sizes_}."
            )
        if "marginal_transform" in changed and self.marginal_transform == "auto":
            advice += (
                f" Here marginal_transform='auto' resolves to"
                f" {self._resolved_marginal_transform()!r} with novelty="
                f"{self.novelty}: set novelty back, or marginal_transform to the"
                f" fitted model's {self._structure['marginal_transform']!r}."
            )
        return advice

    def _set_model(self, *args: Any, **kwargs: Any) -> None:
        super()._set_model(*args, **kwargs)
        # what the fitted model was trained with (a continued fit keeps its flow's)
        self.max_iter_ = int(self._resolved_max_iter())
        self.weight_decay_ = float(self._resolved_weight_decay())
        self.hidden_layer_sizes_ = tuple(self._flow_spec["hidden_layer_sizes"])

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(
        self,
        X: ArrayLike,
        y: None = None,
        sample_weight: ArrayLike | None = None,
    ) -> EBFlowOutlierDetector:
        """Fit the flow to ``X`` and set ``offset_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data, which may contain outliers. Never modified.
        y : None
            Ignored; present for API consistency.
        sample_weight : array-like of shape (n_samples,) or None, default=None
            Non-negative weight of each row, as in :meth:`EBFlowDensity.fit`;
            ``offset_`` is then the weighted ``contamination`` quantile of the
            training log-densities (rows of weight zero do not count). With
            weights and without, the quantile is the averaged inverted CDF
            (``numpy.percentile(..., method="averaged_inverted_cdf")``), so that
            whole-number weights give the threshold of the rows repeated. It
            flags the same training rows as the linear interpolation of
            IsolationForest and LocalOutlierFactor where ``contamination`` times
            the number of rows is a whole number, else at most one fewer.

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
        >>> # offset_ is the 5 % quantile of the training log-densities: new rows from
        >>> # the same distribution fall below it about 5 % of the time, up to the
        >>> # sampling error of 300 training and 2000 new rows (sd about 0.013).
        >>> X_new = rng.normal(size=(2000, 2))
        >>> share = float(np.mean(detector.score_samples(X_new) < detector.offset_))
        >>> abs(share - 0.05) < 0.04
        True
        """
        previous_state = fitted_state(self)
        fitted_before = hasattr(self, "flow_")
        try:
            # Only a fit that may be refitted holds back its warnings: a refit's
            # ConvergenceWarning speaks for the model kept, the first fit's would
            # describe a model that was replaced.
            first_fit_warnings: list[warnings.WarningMessage] = []
            with warnings.catch_warnings(record=self.trim_fraction > 0) as caught:
                if caught is not None:
                    warnings.simplefilter("always")
                    first_fit_warnings = caught
                interrupted = self._fit(X, sample_weight)
            self._interrupted = interrupted  # as EBFlowDensity.fit records it
            self._set_scoring_density()
            self.n_trimmed_ = 0
            refit_warnings: list[warnings.WarningMessage] = []
            if self.trim_fraction > 0 and not interrupted:
                with warnings.catch_warnings(record=True) as refit_warnings:
                    warnings.simplefilter("always")
                    self._refit_trimmed(
                        X, sample_weight, fitted_before=fitted_before
                    )
            # Only the kept fit's ConvergenceWarnings describe the model, and
            # what both fits say (a duplicated row, too few held-out rows) is
            # said once.
            refitted = self.n_trimmed_ > 0
            said: set[tuple[type[Warning], str]] = set()
            for held in first_fit_warnings:
                key = (held.category, str(held.message))
                if refitted and held.category is ConvergenceWarning:
                    continue
                said.add(key)
                warnings.warn_explicit(
                    held.message, held.category, held.filename, held.lineno
                )
            for held in refit_warnings:
                key = (held.category, str(held.message))
                if key in said or (
                    not refitted and held.category is ConvergenceWarning
                ):
                    continue
                said.add(key)
                # at the caller's line (fit, under scikit-learn's fit wrapper)
                warnings.warn(held.message, held.category, stacklevel=3)
            self.offset_ = self._offset(X, sample_weight)
        except BaseException:
            restore_fitted_state(self, previous_state)
            raise
        return self

    def _refit_trimmed(
        self,
        X: ArrayLike,
        sample_weight: ArrayLike | None,
        *,
        fitted_before: bool,
    ) -> None:
        """Fit again on ``X`` without the ``trim_fraction`` least normal of its rows
        of positive weight (by the fit just made: the lowest scores, ties broken by
        row order; a row scored NaN ranks as one scored ``-inf``). An interrupt
        anywhere in it (the ranking, the refit's training, its scoring density)
        leaves the first fit in place, with a warning, in a detector's first fit;
        in a detector ``fitted_before`` this call, it reaches the caller (``fit``
        then restores the model fitted before, as any interrupted refit does)."""
        first_fit = fitted_state(self)
        try:
            scores = self.score_samples(X)
            weights = (
                np.ones(len(scores))
                if sample_weight is None
                else validated_sample_weight(sample_weight, len(scores))
            )
            kept = weights > 0
            candidates = np.flatnonzero(kept)
            n_trimmed = int(self.trim_fraction * len(candidates))
            # argsort puts NaN last, among the most normal rows: rank it below -inf.
            ranking = np.where(np.isnan(scores), -np.inf, scores)[candidates]
            least_normal = candidates[np.argsort(ranking, kind="stable")]
            kept[least_normal[:n_trimmed]] = False
            self._refit_on(X, kept, None if sample_weight is None else weights)
        except KeyboardInterrupt:
            if fitted_before:
                raise
            restore_fitted_state(self, first_fit)
            self._interrupted = True
            warnings.warn(
                "Training interrupted by user during the trimmed refit: the"
                " detector keeps the first fit, on every training row"
                " (n_trimmed_=0).",
                UserWarning,
                stacklevel=4,
            )

    def _refit_on(
        self, X: ArrayLike, kept: NDArray[np.bool_], weights: NDArray[np.float64] | None
    ) -> None:
        """Fit again on the rows ``kept`` of ``X`` (with their ``weights``, if any),
        with the fit's number of flows (and, under ``preprocessing="logit"``, its
        box); no refit when every row of positive weight is kept. An interrupt
        propagates (:meth:`_refit_trimmed` restores the first fit)."""
        left_out = ~kept if weights is None else ~kept & (weights > 0)
        n_trimmed = int(np.count_nonzero(left_out))
        if n_trimmed == 0:
            return  # nothing to leave out: the refit would be the same fit
        if not hasattr(X, "iloc") and not hasattr(X, "shape"):
            # an array-like that only converts (a list, an object with
            # __array__): rows are taken from its array; a DataFrame stays one,
            # so that the refit keeps its feature names
            X = np.asarray(X)
        try:
            # n_flows="auto" would resolve again on fewer rows (four flows below
            # 5 000, one at 5 000): the refit keeps the model of the first fit.
            # A logit box fitted on the kept rows alone could leave the trimmed
            # rows outside it, with no density: the refit keeps the first box.
            # The integer columns stay the first fit's: one that holds a
            # fraction only in the rows left out would otherwise be dequantized,
            # and every value in it rounded when scored, the trimmed rows' too.
            # (an interrupted refit raises: the detector is fitted already)
            integer_columns = self._preprocessing_spec.get("dequantize_columns")
            self._fit(
                _safe_indexing(X, kept),
                None if weights is None else weights[kept],
                n_flows=self.n_flows_,
                preprocessing_spec=(
                    self._preprocessing_spec if self.preprocessing == "logit" else None
                ),
                integer_columns=np.zeros(self.n_features_in_, dtype=bool)
                if integer_columns is None
                else integer_columns,
            )
        except ValueError as error:
            # The refit's own message would call a column of X constant that
            # varies only on the rows left out: say what happened instead.
            # (kept rows all have positive weight; with left_out, every such row)
            rows = np.asarray(_safe_indexing(X, kept | left_out), dtype=np.float64)
            kept_rows = np.asarray(_safe_indexing(X, kept), dtype=np.float64)
            emptied = constant_columns(kept_rows) & ~constant_columns(rows)
            if not emptied.any():
                raise
            refused = (
                "which constant_features='error' refuses. Use"
                " constant_features='narrow' (the default: the refit models them as"
                " constant, and rows that depart from them score very low)"
                if self.constant_features == "error"
                else "which constant_features='narrow' models with"
                " preprocessing='standardize' only, not"
                f" preprocessing={self.preprocessing!r}. Use"
                " preprocessing='standardize'"
            )
            raise ValueError(
                f"Feature(s) {np.flatnonzero(emptied).tolist()} of X vary only"
                f" among the {n_trimmed} training rows that trim_fraction="
                f"{self.trim_fraction} leaves out of the refit, so they are"
                f" constant among the rows it keeps, {refused}, a smaller"
                " trim_fraction, or trim_fraction=0."
            ) from error
        self._set_scoring_density()
        self.n_trimmed_ = n_trimmed

    @_validates_later_calls
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(
        self,
        X: ArrayLike,
        y: None = None,
        sample_weight: ArrayLike | None = None,
    ) -> EBFlowOutlierDetector:
        """Train one epoch over the chunk ``X`` and set ``offset_`` from it.

        As :meth:`EBFlowDensity.partial_fit`; ``offset_`` is then the
        (weighted) ``contamination`` quantile of the log-densities of this chunk's
        rows under the updated flow, so it follows the latest chunk.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            One chunk of training rows; the first needs at least 2. Never
            modified.
        y : None
            Ignored; present for API consistency.
        sample_weight : array-like of shape (n_samples,) or None, default=None
            Non-negative weight of each row of the chunk.

        Returns
        -------
        self : EBFlowOutlierDetector
            The detector, fitted on the chunks so far.

        Examples
        --------
        >>> import numpy as np
        >>> from skebflow import EBFlowOutlierDetector
        >>> rng = np.random.RandomState(0)
        >>> detector = EBFlowOutlierDetector(device="cpu", random_state=0)
        >>> for _ in range(3):
        ...     detector = detector.partial_fit(rng.normal(size=(300, 2)))
        >>> detector.n_iter_, detector.predict([[0.0, 0.0], [8.0, 8.0]]).tolist()
        (3, [1, -1])
        """
        previous_state = fitted_state(self)
        try:
            if not self._partial_fit(X, sample_weight):
                return self  # a discarded chunk: the detector is as it was
            self._set_scoring_density(_PARTIAL_FIT_LOG_NORMALIZER_DRAWS)
            self.n_trimmed_ = 0  # partial_fit never trims (see trim_fraction)
            self.offset_ = self._offset(X, sample_weight)
            self._warn_if_chunk_too_small_for_offset(
                _num_samples(X)
                if sample_weight is None
                else int(
                    np.count_nonzero(
                        validated_sample_weight(sample_weight, _num_samples(X)) > 0
                    )
                )
            )
        except BaseException:
            restore_fitted_state(self, previous_state)
            raise
        return self

    def _contamination(self) -> float:
        """``contamination`` with ``"auto"`` resolved."""
        if self.contamination == "auto":
            return _AUTO_CONTAMINATION
        return float(self.contamination)

    def _warn_if_chunk_too_small_for_offset(self, n_rows: int) -> None:
        """Warn when ``partial_fit``'s chunk, of ``n_rows`` rows of positive
        weight, is too small for its ``contamination`` quantile to flag any of
        them: ``offset_`` is then its lowest score, and the detector flags almost
        nothing."""
        contamination = self._contamination()
        if n_rows * contamination >= 1.0:
            return
        needed = math.ceil(1.0 / contamination)
        warnings.warn(
            f"offset_ is the {contamination:g} quantile of the scores of this chunk"
            f" alone, whose {n_rows} row(s) of positive weight are too few for it to"
            " flag any of them: the detector now flags almost nothing. Pass chunks"
            f" of at least {needed} rows, or set offset_ yourself from the scores of"
            " held-out normal rows (the user guide's 'Choosing contamination').",
            UserWarning,
            stacklevel=5,  # this, partial_fit, its two wrappers, the user's call
        )

    def _set_scoring_density(self, n_draws: int = _LOG_NORMALIZER_DRAWS) -> None:
        """Fix the scoring density: ``base_scale_``, ``flow_combination_`` and its
        ``log_normalizer_`` (estimated from ``n_draws`` mixture draws for the
        geometric mean of several flows)."""
        self.base_scale_ = float(self.base_scale)
        self.flow_combination_ = self.flow_combination
        density = self._combined_flows()
        with torch.no_grad():
            if isinstance(density, FlowGeometricMean):
                seed = check_random_state(self.random_state).randint(
                    np.iinfo(np.int32).max
                )
                generator = torch.Generator(device=self.device_).manual_seed(int(seed))
                log_normalizer = float(
                    density.estimate_log_normalizer(n_draws, generator=generator)
                )
                if not math.isfinite(log_normalizer):
                    raise ValueError(
                        f"The geometric mean's log-normalizer came out as"
                        f" {log_normalizer}: a flow's log-density is not finite on"
                        " some of its own draws. Refit with flow_combination="
                        "'mixture', or check the training rows for extreme values;"
                        " the detector keeps its previous state."
                    )
            else:
                log_normalizer = float(density.log_normalizer())
        self.log_normalizer_ = log_normalizer

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A detector pickled or saved before ``base_scale`` or ``flow_combination``
        # existed scored by the trained flows' own mixture density: it keeps doing
        # so, and says so. A fitted one also lacks the fitted attribute.
        # One saved before ``trim_fraction`` existed never trimmed.
        defaults = {"base_scale": 1.0, "flow_combination": "mixture"}
        for name, value in defaults.items():
            if "flow_" in state and f"{name}_" not in state:
                state = {**state, name: value, f"{name}_": value}
            elif name not in state:
                state = {**state, name: value}
        if "trim_fraction" not in state:
            state = {**state, "trim_fraction": 0.0}
        if "flow_" in state and "n_trimmed_" not in state:
            state = {**state, "n_trimmed_": 0}
        # One saved before ``novelty`` existed had explicit max_iter and
        # hidden_layer_sizes, which its fitted attributes repeat.
        if "novelty" not in state:
            state = {**state, "novelty": False}
        if "flow_" in state and "max_iter_" not in state:
            state = {
                **state,
                "max_iter_": resolve_detector_setting(
                    "max_iter", state.get("max_iter", "auto"), state["novelty"]
                ),
                "hidden_layer_sizes_": tuple(state["_flow_spec"]["hidden_layer_sizes"]),
            }
        # One saved before weight_decay="auto" trained with its explicit value.
        if "flow_" in state and "weight_decay_" not in state:
            state = {**state, "weight_decay_": float(state.get("weight_decay", 1e-3))}
        super().__setstate__(state)

    def _scoring_flow(self) -> Flow | FlowMixture:
        """The scoring density, with its ``log_normalizer_``."""
        return self._combined_flows(self.log_normalizer_)

    def _combined_flows(self, log_normalizer: float = 0.0) -> Flow | FlowMixture:
        """The trained flows, bases widened by ``base_scale_``, combined by
        ``flow_combination_``; ``log_normalizer`` is the geometric mean's
        ``log Z`` (unused otherwise)."""
        widened = widen_base(self.flow_, self.base_scale_)
        if self.flow_combination_ == "geometric_mean" and isinstance(
            widened, FlowMixture
        ):
            return FlowGeometricMean(
                widened.members, log_normalizer=min(log_normalizer, 0.0)
            )
        return widened

    def sample(
        self,
        n_samples: int = 1,
        random_state: int | np.random.RandomState | None = None,
    ) -> NDArray[np.float64]:
        """Draw exact samples of the scoring density.

        As :meth:`EBFlowDensity.sample`, from the density ``score_samples``
        evaluates. For the geometric mean of several flows the draws are exact
        by rejection from the flows' mixture, about ``exp(-log_normalizer_)``
        mixture draws per sample.

        Parameters
        ----------
        n_samples : int, default=1
            Number of samples.
        random_state : int, RandomState instance or None, default=None
            Seed of the draws.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
            Samples in the units of the training data.

        Raises
        ------
        ValueError
            When the flows barely overlap (``log_normalizer_`` below
            ``log(1e-3)``, about -6.9, or fewer than one mixture draw in 1 000
            kept), as for flows that disagree by tens of nats in high dimension:
            the error says what to use instead.

        Examples
        --------
        >>> import numpy as np
        >>> from skebflow import EBFlowOutlierDetector
        >>> rng = np.random.RandomState(0)
        >>> detector = EBFlowOutlierDetector(
        ...     n_flows=2, max_iter=20, device="cpu", random_state=0
        ... ).fit(rng.normal(size=(300, 2)))
        >>> detector.sample(4, random_state=0).shape
        (4, 2)
        """
        check_is_fitted(self)
        if not isinstance(self._scoring_flow(), FlowGeometricMean):
            # One flow, or the flows' mixture: exact sampling by inversion, and
            # log_normalizer_ is the flows' own log Z (any real), not an
            # acceptance rate.
            return self._sample_by_inversion(n_samples, random_state, stacklevel=4)
        advice = (
            f"Here log_normalizer_ is {self.log_normalizer_:.1f}: the detector's"
            f" {self.n_flows_} flows disagree too much for exact sampling of their"
            " geometric mean. Use sample_langevin, which samples the same density"
            " by Langevin dynamics, or refit with flow_combination='mixture' to"
            " sample the flows' mixture."
        )
        if self.log_normalizer_ < _MIN_LOG_NORMALIZER_TO_SAMPLE:
            raise ValueError(
                "Rejection sampling would keep fewer than one mixture draw in"
                f" 1 000. {advice}"
            )
        try:
            return self._sample_by_inversion(n_samples, random_state, stacklevel=4)
        except RejectionSamplingError as error:
            raise ValueError(f"{error} {advice}") from error

    def _offset(self, X: ArrayLike, sample_weight: ArrayLike | None) -> float:
        """The (weighted) contamination quantile of the log-densities of ``X``."""
        contamination = self._contamination()
        training_scores = self.score_samples(X)
        rows, weights = check_sample_weight(sample_weight, training_scores, min_rows=1)
        if rows is not None:
            training_scores = training_scores[rows]
        # A row scored NaN ranks as one scored -inf, as in the trimming and in
        # predict: one such row does not make the quantile NaN.
        training_scores = np.where(np.isnan(training_scores), -np.inf, training_scores)
        # One rule with weights and without (the averaged inverted CDF), so that
        # whole-number weights give the threshold of the rows repeated.
        if weights is None:
            weights = np.ones_like(training_scores)
        offset = _weighted_percentile(training_scores, weights, 100.0 * contamination)
        if not math.isfinite(offset):  # averaged between -inf and a score
            offset = _weighted_percentile(
                training_scores, weights, 100.0 * contamination, average=False
            )
        if np.isfinite(offset):
            offset = _below_tied_scores(offset, training_scores)
        if not np.isfinite(offset):
            n_not_finite = int(np.sum(~np.isfinite(training_scores)))
            raise ValueError(
                f"The threshold offset_ is {offset}: the {contamination:g} quantile"
                " of the training rows' log-densities is not finite"
                f" (base_scale={self.base_scale_:g}; {n_not_finite} of"
                f" {training_scores.size} rows score -inf or NaN). Check the"
                " training rows for"
                " extreme values, and a base_scale far from 1; the detector keeps"
                " its previous state."
            )
        return offset

    def score(self, X: ArrayLike, y: ArrayLike | None = None) -> float:
        """Mean log-likelihood of ``X`` per row, as :meth:`EBFlowDensity.score`.

        It judges the density, not the flags: ``y``, ``contamination`` and
        ``offset_`` do not change it, so a search over them by this score ties
        every candidate. Given ``y`` (as :class:`~sklearn.model_selection.
        GridSearchCV` passes it when no ``scoring`` is set) it warns so; score
        the flags against labels with ``scoring="f1"`` or ``"accuracy"`` (``y``
        is +1 for inliers, -1 for outliers), the ranking with ``"roc_auc"`` or
        ``"average_precision"``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows to evaluate.
        y : array-like of shape (n_samples,) or None, default=None
            Ignored, with a warning when given.

        Returns
        -------
        score : float
            ``mean(score_samples(X))``.

        Examples
        --------
        >>> import numpy as np
        >>> from skebflow import EBFlowOutlierDetector
        >>> X = np.random.RandomState(0).normal(size=(300, 2))
        >>> detector = EBFlowOutlierDetector(
        ...     max_iter=30, n_iter_no_change=3, tol=1e-2, device="cpu",
        ...     random_state=0).fit(X)
        >>> bool(np.isclose(detector.score(X), detector.score_samples(X).mean()))
        True
        """
        if y is not None:
            warnings.warn(
                "EBFlowOutlierDetector.score is the mean log-likelihood of X: it"
                " ignores y, contamination and the threshold, so it cannot tune"
                " them. Pass scoring='f1' or 'accuracy' (y: +1 inliers, -1"
                " outliers) to judge the flags, 'roc_auc' or 'average_precision'"
                " to judge the ranking.",
                UserWarning,
                stacklevel=2,
            )
        return super().score(X)

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
        >>> # About the contamination share of new inliers is flagged, up to sampling
        >>> # error (sd about 0.013 with 300 training and 2000 new rows).
        >>> new_labels = detector.predict(rng.normal(size=(2000, 2)))
        >>> abs(float(np.mean(new_labels == -1)) - 0.05) < 0.04
        True
        """
        decision = self.decision_function(X)
        return np.where(decision >= 0, 1, -1).astype(np.int64)
