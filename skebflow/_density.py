"""EBFlowDensity: an energy-based normalizing flow behind scikit-learn's contract."""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import warnings
from collections.abc import Callable
from numbers import Integral, Real
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from sklearn import get_config
from sklearn.base import BaseEstimator, DensityMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ._auto_settings import (
    ANNEALING_FRACTION,
    REFINEMENT_PATIENCE,
    REFINEMENT_WARMUP_EPOCHS,
    ResolvedSettings,
    resolve_dequantize,
    resolve_likelihood_refinement,
    resolve_marginal_transform,
    resolve_n_flows,
    resolve_objective,
    resolve_training_settings,
    resolve_whiten_output,
)
from ._building import (
    build_flow,
    build_preprocessing,
    check_image_shape,
    check_state_dtypes,
    passed_columns,
    resolve_device,
    state_from_numpy,
    state_to_numpy,
)
from ._distributed import (
    check_same_everywhere,
    current_group,
    failures_shared,
    flag_device,
    start_digest,
)
from ._keyed_noise import KeyedNoise, row_keys, standard_normal
from ._langevin import (
    langevin,
    mode_search,
    trapped_chains,
    whitened_langevin,
    with_spread,
)
from ._preparation import (
    check_observed_within_box,
    check_within_fitted_box,
    fit_preprocessing_spec,
    integer_resolution_limits,
    nearest_integer,
    split_for_early_stopping,
)
from ._training import (
    TrainingConfig,
    TrainingResult,
    _Trainer,
    evaluate_log_likelihood,
    held_input_noise_std,
    held_out_generator,
    mapped_rows,
    non_invertible_rows,
    train,
    train_epoch,
)
from ._validation import (
    as_layer_sizes,
    check_has_columns,
    check_hidden_layer_sizes,
    check_magnitude,
    check_positive_integer,
    check_positive_real,
    check_sample_weight,
    constant_columns,
    fitted_state,
    linear_relations,
    restore_fitted_state,
    same_value,
)
from .flows import BinProbit, Flow, FlowMixture, Preprocessing
from .flows._calibration import can_whiten_output, whiten_output
from .flows._conv_architecture import image_shape_of

__all__ = ["EBFlowDensity"]

_SCORE_CHUNK_ROWS = 4096
#: Training rows whose round trip through a trained flow is checked after a fit,
#: and after a partial_fit epoch (a collapse breaks every row; the inverse solves
#: for the mixture couplings, which on 256 rows would double the cost of a small
#: chunk).
_ROUND_TRIP_ROWS = 256
_CHUNK_ROUND_TRIP_ROWS = 32
#: A fit that ends with a mean log-likelihood more than this many nats per feature
#: below its starting flow's, on the rows early stopping holds out (else the first
#: _CHECKED_ROWS training rows), has run away: it says so.
_WORSE_THAN_START_NATS_PER_FEATURE = 1.0
#: Training rows (at most) on which trained weights are checked.
_CHECKED_ROWS = 1024
# Draws, per sample asked for, that sample() may spend on the samples a logit's
# bounded image refuses (a fitted flow's mass beyond the image is mostly a fraction
# of a per cent: one round keeps nearly all). A budget of draws rather than of
# rounds: at 82 % beyond (a score-matching fit of images) ten rounds left one
# sample in seven on the box's edges, and every round redraws only those left.
_MAX_DRAWS_PER_SAMPLE = 50
# Above this share of a first round's draws beyond the image (of at least
# _MIN_DRAWS_TO_JUDGE draws), sample says how far score_samples is from normalized.
_MAX_SHARE_BEYOND_IMAGE = 0.01
_MIN_DRAWS_TO_JUDGE = 500
# Langevin chains (and mode searches) run this many rows at a time: each step keeps
# an energy gradient's graph for every chain of a block (about 0.2 MB per row on a
# 20-feature default model, so 7.5 GB for 40 000 rows at once).
_LANGEVIN_CHUNK_ROWS = 2048
# Below this radius fdssm's float32 finite differences are mostly rounding error.
_FDSSM_FLOAT32_MIN_EPSILON = 0.05
# Parameters that fix the flow's shape or the preprocessing: warm_start cannot change
# them.
_STRUCTURE_PARAMS = (
    "architecture",
    "image_shape",
    "n_layers",
    "hidden_layer_sizes",
    "activation",
    "coupling_transform",
    "n_components",
    "base_distribution",
    "n_flows",
    "preprocessing",
    "bounds",
    "logit_alpha",
    "dequantize",
    "constant_features",
    "marginal_transform",
    "linear_relations",
)


class _DivergedAtStart(ValueError):
    """Training diverged before any epoch gave usable weights (the imputer's
    refits stop on it and keep the density before)."""


def _dependent_features(spec: dict[str, Any]) -> NDArray[np.bool_] | None:
    """The features a preprocessing spec models as affine functions of others
    (``linear_relations="narrow"``: the nonzero rows of its ``relation_weight``),
    or ``None`` when it models none."""
    weight = spec.get("relation_weight")
    return None if weight is None else np.any(np.asarray(weight) != 0, axis=1)


def _warn_if_structure_broken(
    X: NDArray[np.float64], spec: dict[str, Any], stacklevel: int
) -> None:
    """Warn when more than 1 % of the rows ``X`` of a continuing fit
    (``warm_start``, or a later ``partial_fit`` chunk) break what the first fit's
    preprocessing fixed, which a continuing fit keeps: an exact linear relation
    (``linear_relations="narrow"``) or a constant (``constant_features="narrow"``,
    or a constant integer column under ``dequantize=True``) they lie more than 10
    widths off, or a fraction in a column dequantized as integer, which is then
    rounded to the nearest integer."""
    if X.shape[0] == 0:
        return

    def warn_if_many(off: NDArray[np.bool_], what: str, alternative: str = "") -> None:
        """Warn that the rows ``off`` ``what``, when more than 1 % of them are."""
        if off.mean() <= 0.01:
            return
        warnings.warn(
            f"{int(off.sum())} of the {X.shape[0]} rows {what} Fit afresh"
            f" (warm_start=False) on rows that break it{alternative}.",
            UserWarning,
            stacklevel=stacklevel + 1,
        )

    dependent = _dependent_features(spec)
    if dependent is not None:
        weight = np.asarray(spec["relation_weight"])[dependent]
        residuals = X[:, dependent] - X @ weight.T
        widths = np.abs(residuals - spec["mean"][dependent]) / spec["scale"][dependent]
        warn_if_many(
            np.any(widths > 10.0, axis=1),
            "lie more than 10 widths off the exact linear relation(s) of"
            f" feature(s) {np.flatnonzero(dependent).tolist()} that the model was"
            " fitted with (linear_relations='narrow'): a continuing fit keeps"
            " modelling them as exact, so those rows keep very low densities.",
            ", or use linear_relations='warn'",
        )
    constant = spec.get("constant_columns")
    if constant is not None:
        constant = np.asarray(constant) & (True if dependent is None else ~dependent)
        offsets = np.abs(X[:, constant] - spec["mean"][constant])
        warn_if_many(
            np.any(offsets > 10.0 * spec["scale"][constant], axis=1),
            "lie more than 10 widths off the value of feature(s)"
            f" {np.flatnonzero(constant).tolist()}, constant in the rows the"
            " model was first fitted on (constant_features='narrow' models each"
            " as a narrow normal around it): a continuing fit keeps that, so"
            " those rows keep very low densities.",
        )
    one_bin = spec.get("one_bin_columns")
    if one_bin is not None:
        one_bin = np.asarray(one_bin)
        values = nearest_integer(X[:, one_bin])  # as UniformDequantize scores them
        warn_if_many(
            np.any(values != np.asarray(spec["one_bin_lower"])[one_bin], axis=1),
            "leave the single integer value of feature(s)"
            f" {np.flatnonzero(one_bin).tolist()}, constant in the rows the model"
            " was first fitted on (dequantize=True models each as uniform on"
            " its unit bin): a continuing fit keeps that, so those rows keep"
            " very low densities.",
        )
    integer = spec.get("dequantize_columns")
    if integer is not None:
        values = X[:, np.asarray(integer)]
        warn_if_many(
            np.any(values != np.round(values), axis=1),
            "have fractions in feature(s)"
            f" {np.flatnonzero(integer).tolist()}, integer-valued in the rows"
            " the model was first fitted on (dequantize=True): a continuing fit"
            " keeps dequantizing them, so it trains on those values rounded to"
            " the nearest integer.",
        )


def _solve_relations(
    rows: NDArray[np.float64], missing: NDArray[np.bool_], spec: dict[str, Any]
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Fill, in each row, a missing feature that an observed dependent feature
    (of the preprocessing ``spec``'s relations, whose intercepts are their
    residuals' ``mean``) gives exactly: the only one of its inputs missing
    there. Repeated while one fill makes another possible; returns copies, the
    solved entries no longer missing."""
    rows, missing = rows.copy(), missing.copy()
    weight, mean = np.asarray(spec["relation_weight"]), spec["mean"]
    dependents = np.flatnonzero(_dependent_features(spec))
    solved_any = True
    while solved_any:
        solved_any = False
        for dependent in dependents.tolist():
            inputs = np.flatnonzero(weight[dependent])
            missing_inputs = missing[:, inputs]
            solvable = np.flatnonzero(
                ~missing[:, dependent] & (missing_inputs.sum(axis=1) == 1)
            )
            if solvable.size == 0:
                continue
            target = inputs[np.argmax(missing_inputs[solvable], axis=1)]
            part = rows[solvable][:, inputs]
            known = np.where(missing[solvable][:, inputs], 0.0, part)
            rest = known @ weight[dependent, inputs]
            rows[solvable, target] = (
                rows[solvable, dependent] - mean[dependent] - rest
            ) / weight[dependent, target]
            missing[solvable, target] = False
            solved_any = True
    return rows, missing


def _restore_relations(
    rows: NDArray[np.float64],
    drawn: NDArray[np.bool_],
    spec: dict[str, Any],
) -> NDArray[np.float64]:
    """Make each row keep the exact linear relations (of the preprocessing
    ``spec``) whose dependent feature it observes while two or more of that
    feature's inputs were ``drawn``: one of those drawn inputs is solved from
    the others, the one with the largest coefficient times spread (the smallest
    move, in spreads), and is not changed again for another relation. Returns a
    copy.

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow._density import _restore_relations
    >>> spec = {"relation_weight": np.array([[0, 0, 0], [0, 0, 0], [1.0, 2.0, 0]]),
    ...         "mean": np.array([0.0, 0.0, 1.0]), "scale": np.ones(3)}
    >>> rows = np.array([[0.5, 0.5, 9.0]])  # drawn parts, an observed 1 + x0 + 2 x1
    >>> _restore_relations(rows, np.array([[True, True, False]]), spec).tolist()
    [[0.5, 3.75, 9.0]]
    """
    rows = rows.copy()
    weight, mean = np.asarray(spec["relation_weight"]), spec["mean"]
    spread = np.asarray(spec["scale"], dtype=np.float64).copy()
    mapped = spec.get("kde_columns")
    if mapped is not None:  # a common multiple of their standard deviations
        spread[np.asarray(mapped)] = spec["kde_wide_scale"]
    free = drawn.copy()
    for dependent in np.flatnonzero(_dependent_features(spec)).tolist():
        inputs = np.flatnonzero(weight[dependent])
        coefficients = weight[dependent, inputs]
        needing = ~drawn[:, dependent] & (drawn[:, inputs].sum(axis=1) >= 2)
        for row in np.flatnonzero(needing).tolist():
            candidates = free[row, inputs]
            if not candidates.any():
                continue
            reach = np.where(candidates, np.abs(coefficients) * spread[inputs], -1.0)
            position = int(np.argmax(reach))
            given = rows[row, inputs] @ coefficients
            residual = rows[row, dependent] - mean[dependent] - given
            rows[row, inputs[position]] += residual / coefficients[position]
            free[row, inputs[position]] = False
    return rows


def _unused_structure_params(
    architecture: str | None, coupling_transform: Any, preprocessing: Any
) -> frozenset[str]:
    """The structure parameters a fitted model of ``architecture`` (``None``: not
    known), ``coupling_transform`` and ``preprocessing`` does not use: a warm start
    may change them."""
    unused: set[str] = set()
    if architecture in ("fc", "conv"):  # no couplings: no conditioners
        unused |= {
            "hidden_layer_sizes",
            "activation",
            "coupling_transform",
            "n_components",
        }
    if architecture == "conv":  # the paper's CNN: its blocks are fixed
        unused.add("n_layers")
    if architecture == "coupling" and coupling_transform == "affine":
        unused.add("n_components")
    if preprocessing != "logit":
        unused |= {"bounds", "logit_alpha"}
    if preprocessing != "standardize":  # kernel marginals replace standardization
        unused.add("marginal_transform")
    return frozenset(unused)


def _check_langevin_settings(
    n_steps: Any, step_size: Any, initial_temperature: Any, metropolis: Any
) -> None:
    check_positive_integer(n_steps, "n_steps")
    check_positive_real(step_size, "step_size")
    if not isinstance(metropolis, bool | np.bool_):
        raise ValueError(
            f"metropolis={metropolis!r} must be True (Metropolis-adjusted Langevin)"
            " or False (unadjusted)."
        )
    if check_positive_real(initial_temperature, "initial_temperature") < 1.0:
        raise ValueError(
            f"initial_temperature={initial_temperature!r} must be at least 1: the"
            " chains anneal from it down to the model's temperature, 1."
        )


#: Langevin chains whose Metropolis acceptance rate is below this barely moved.
_MIN_LANGEVIN_ACCEPTANCE = 0.01
#: Nor did chains whose rate, after the step adaptation that aims at 0.574, is
#: still above this (their steps stayed far smaller than the density's width)
#: and whose steps add up to noise of a standard deviation below
#: _MIN_LANGEVIN_REACH, in the flow's preprocessed (unit-scale) space: too few
#: steps for the adaptation to grow them.
_MAX_LANGEVIN_ACCEPTANCE = 0.95
_MIN_LANGEVIN_REACH = 0.5
#: sample_langevin's chains whose steps add up to noise of a standard deviation
#: (their reach) below this multiple of their draws' spread along its widest
#: direction have not mixed along it: along a direction of standard deviation
#: ``s``, continuous Langevin dynamics forget their start's variance as
#: ``exp(-reach^2 / s^2)``, 2 % at 2; the chains do so more slowly, as the reach
#: also counts the adaptation's early, mostly refused steps (on a correlation of
#: 0.999 the draws were still 6 % narrow at a ratio of 1.85 and right at 2.45).
#: Judged with at least 20 chains and twice as many as features (see
#: :func:`~skebflow._langevin.whitened_langevin`).
_MIN_REACH_PER_SPREAD = 2.0
#: Final states where the model's log-density is below this, in nats per feature
#: (a standard normal 10 deviations out in every feature), have diverged.
_MIN_FINAL_LOG_DENSITY_PER_FEATURE = -50.0


def _warn_if_chains_unmixed(reach: float, spread: float) -> None:
    """A ``ConvergenceWarning`` when ``sample_langevin``'s chains, whose steps add
    up to noise of a standard deviation ``reach``, spread along some direction
    far wider than that (``spread``, in the same coordinates): they cannot have
    forgotten their start along it, so their draws are too narrow there (a
    density much narrower in one direction than in another, whose step the
    narrow one sets). ``spread`` is ``nan`` with too few chains to tell."""
    if not (math.isfinite(reach) and math.isfinite(spread)):
        return
    if reach < _MIN_REACH_PER_SPREAD * spread:
        warnings.warn(
            f"The Langevin chains' steps add up to noise of a standard deviation of"
            f" {reach:.2g}, under {_MIN_REACH_PER_SPREAD:g} times their draws' spread"
            f" along its widest direction, {spread:.2g}: they have not mixed along"
            " it, and their draws are too narrow there. The step is set by a much"
            " narrower direction of the density; raise n_steps (the reach grows as"
            " its square root), keep precondition=True, or draw exact samples with"
            " sample().",
            ConvergenceWarning,
            stacklevel=3,
        )


def _chunked_log_prob(flow: Flow | FlowMixture, states: torch.Tensor) -> torch.Tensor:
    """The flow's log-density of preprocessed ``states``, as ``score_samples``
    scores (in chunks, without gradient)."""
    return evaluate_log_likelihood(
        flow, Preprocessing(), states, chunk_size=_SCORE_CHUNK_ROWS
    )


def _draws_in_image(
    flow: Flow | FlowMixture,
    preprocessing: Preprocessing,
    count: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, int, int]:
    """``count`` draws of ``flow`` that the preprocessing maps back into the data's
    space: a logit's image is bounded, and the flow's rare draws beyond it, which
    no point of the box has as its image (no part of the density ``score_samples``
    gives), are drawn again, so that the samples follow that density exactly
    (before, they piled up on the box's edges). The first draws are kept in
    order: without such draws the samples are those of one draw. A model with
    much of its mass beyond the image (a short or diverged fit) keeps, once
    ``_MAX_DRAWS_PER_SAMPLE`` draws per sample are spent, its last draws beyond
    it, on the edges.

    Returns the draws, how many of the first round fell beyond the image and
    how many are left beyond it (:func:`_warn_about_draws_beyond_image` says
    what they mean, once for all of ``sample``'s chunks)."""
    kept, n_kept, n_drawn, beyond = [], 0, 0, None
    first_beyond = 0
    while n_drawn + (count - n_kept) <= _MAX_DRAWS_PER_SAMPLE * count:
        y = flow.sample(count - n_kept, generator=generator)
        inside = preprocessing.in_image(y)
        kept.append(y[inside])
        if n_drawn == 0:
            first_beyond = count - int(inside.sum())
        n_drawn += len(y)
        n_kept += int(inside.sum())
        if n_kept == count:
            return torch.cat(kept), first_beyond, 0
        beyond = y[~inside]
    assert beyond is not None
    return torch.cat([*kept, beyond]), first_beyond, count - n_kept


def _warn_about_draws_beyond_image(
    n_samples: int, first_beyond: int, left_beyond: int, stacklevel: int
) -> None:
    """What ``sample``'s draws beyond a logit's image say about the model: over
    all of its chunks, the share of first draws beyond it (judged from
    ``_MIN_DRAWS_TO_JUDGE`` draws on) and the draws left on the box's edges."""
    share = first_beyond / n_samples
    if n_samples >= _MIN_DRAWS_TO_JUDGE and share > _MAX_SHARE_BEYOND_IMAGE:
        warnings.warn(
            f"{share:.1%} of the model's draws fell beyond the logit's bounded"
            " image and were drawn again: that mass belongs to no value of the"
            f" box, so score_samples integrates to about {1.0 - share:.3f} over"
            " it, and the samples follow its density renormalized. Train"
            " longer, or use preprocessing='standardize'.",
            UserWarning,
            stacklevel=stacklevel,
        )
    if left_beyond:
        warnings.warn(
            f"{left_beyond} of {n_samples} samples fell beyond the logit's bounded"
            f" image in {_MAX_DRAWS_PER_SAMPLE} draws per sample and lie on the"
            " box's edges:"
            " the model puts much of its mass where no value of the box maps. Refit"
            " it (more epochs, a lower learning_rate), or use"
            " preprocessing='standardize'.",
            UserWarning,
            stacklevel=stacklevel,
        )


def _warn_about_non_finite_draws(
    samples: NDArray[np.float64], stacklevel: int
) -> None:
    """Say so when some of ``sample``'s draws are not finite: the flow's inverse
    overflows where they came from, so its weights have run away there (fit and
    partial_fit refuse weights that cannot invert the training rows, not every
    base-space draw)."""
    n_bad = int((~np.isfinite(samples).all(axis=1)).sum())
    if n_bad:
        warnings.warn(
            f"{n_bad} of {len(samples)} samples are not finite: the flow's inverse"
            " overflows where they were drawn, so its weights have run away there."
            " Refit with a lower learning_rate (or a lower grad_clip).",
            UserWarning,
            stacklevel=stacklevel,
        )


def _warn_if_chains_failed(
    flow: Flow | FlowMixture,
    states: torch.Tensor,
    acceptance_rate: float | None,
    metropolis: bool,
    starts: torch.Tensor | None = None,
    n_stuck: int = 0,
    reach: float = math.inf,
) -> bool:
    """A ``ConvergenceWarning`` when Langevin chains (or the mode search) failed:
    MALA that accepted almost no proposal, overall or in ``n_stuck`` chains (which
    then end at their random start), or almost every one with steps that add up
    to a ``reach`` (see :class:`~skebflow._langevin.LangevinResult`) well below
    the data's unit scale (steps far too small, which the adaptation had too few
    steps to grow: the chains end near their random start), or states that ended
    where the model has
    almost no density (an unadjusted sampler or a search that diverged). With
    ``starts`` (conditional chains, whose observed entries may themselves be
    unlikely), a chain with a finite end fails only if it also ended more than one
    nat per feature below its start. Whether it warned."""
    warned = False
    if metropolis and acceptance_rate is not None:
        if acceptance_rate < _MIN_LANGEVIN_ACCEPTANCE:
            warnings.warn(
                f"The Langevin chains accepted {acceptance_rate:.2%} of their"
                " proposals, so they barely moved from their random start: step_size"
                " is too large for this density. Lower it (and raise n_steps).",
                ConvergenceWarning,
                stacklevel=3,
            )
            return True
        if (
            acceptance_rate > _MAX_LANGEVIN_ACCEPTANCE
            and reach < _MIN_LANGEVIN_REACH
        ):
            warnings.warn(
                f"The Langevin chains accepted {acceptance_rate:.2%} of their"
                " proposals, far more than the 57 % their step adaptation aims at,"
                f" and their steps add up to noise of a standard deviation of"
                f" {reach:.2g} (in the model's standardized units): they barely"
                " moved from their random start. Raise step_size or n_steps.",
                ConvergenceWarning,
                stacklevel=3,
            )
            return True
        if n_stuck:
            warned = True
            example = (
                "a missing value nearly fixed by the observed ones"
                if starts is not None
                else "a chain started on a narrow ridge or mode"
            )
            warnings.warn(
                f"{n_stuck} of the {len(states)} Langevin chains accepted none of"
                " their proposals after the step adaptation, so they end at their"
                " random start: their density is far narrower than step_size suits"
                f" ({example}, say). Lower step_size and raise n_steps.",
                ConvergenceWarning,
                stacklevel=3,
            )
    per_feature = _chunked_log_prob(flow, states) / states.shape[1]
    failed = ~(per_feature > _MIN_FINAL_LOG_DENSITY_PER_FEATURE)
    if starts is not None and bool(failed.any()):  # the starts only when needed
        start_per_feature = _chunked_log_prob(flow, starts) / states.shape[1]
        failed &= ~torch.isfinite(per_feature) | (
            per_feature < start_per_feature - 1.0
        )
    if bool(failed.any()):
        warnings.warn(
            "Some chains ended where the model's log-density is below"
            f" {_MIN_FINAL_LOG_DENSITY_PER_FEATURE:g} nats per feature (or not"
            " finite): they diverged. Lower step_size, or use metropolis=True.",
            ConvergenceWarning,
            stacklevel=3,
        )
        warned = True
    return warned


def _validates_later_calls(partial_fit: Callable[..., Any]) -> Callable[..., Any]:
    """Validate the parameters on every ``partial_fit`` of a fitted estimator.

    scikit-learn's fit context validates only the first call, and later calls read
    the parameters again (``set_params`` may have changed them). The outermost
    decorator of ``partial_fit``, so that it sees the global
    ``skip_parameter_validation`` (inside the fit context it is always set) and
    honours it as the first call does.
    """

    @functools.wraps(partial_fit)
    def wrapper(estimator: Any, *args: Any, **kwargs: Any) -> Any:
        skip = get_config()["skip_parameter_validation"]
        if hasattr(estimator, "flow_") and not skip:
            estimator._validate_params()
        return partial_fit(estimator, *args, **kwargs)

    return wrapper


def _flow_label(index: int, n_flows: int) -> str:
    """`` (flow 2 of 4)`` for the flow ``index`` of a mixture, in a warning;
    nothing for a single flow."""
    return _flows_label([index], n_flows)


def _flows_label(indices: list[int], n_flows: int) -> str:
    """`` (flows 1, 3 of 4)`` for the flows ``indices`` of a mixture, in a warning;
    nothing for a single flow."""
    if n_flows == 1:
        return ""
    which = ", ".join(str(index + 1) for index in indices)
    return f" (flow{'s' if len(indices) > 1 else ''} {which} of {n_flows})"


def _trainable_copy(model: Flow) -> Flow:
    """A float64 copy of ``model`` (an EMA shadow, whose weights are frozen) with
    trainable weights, as a fitted flow has: a later ``warm_start`` fit trains it."""
    return copy.deepcopy(model).to(dtype=torch.float64).requires_grad_(True)


def _normalized_image_shape(image_shape: Any) -> Any:
    """``image_shape`` as ``(C, H, W)``: ``(4, 4)`` and ``(1, 4, 4)`` build the same
    flow. ``None``, or a shape that is not valid, stays as given (the build raises
    its own error for the latter)."""
    if image_shape is None:
        return None
    try:
        return image_shape_of(image_shape)
    except (TypeError, ValueError):
        return image_shape


class _TrainingRows(NamedTuple):
    """The rows one flow trains and early-stops on, with their sample weights."""

    x_train: torch.Tensor
    x_validation: torch.Tensor | None
    train_weights: torch.Tensor | None
    validation_weights: torch.Tensor | None

    def train(
        self,
        flow: Flow,
        preprocessing: torch.nn.Module,
        config: TrainingConfig,
        seed: int,
        *,
        keep_initial: bool = False,
    ) -> TrainingResult:
        """``skebflow._training.train`` ``flow`` on these rows, its batches drawn
        by a generator seeded with ``seed`` on the rows' device."""
        return train(
            flow,
            preprocessing,
            self.x_train,
            self.x_validation,
            config=config,
            generator=torch.Generator(device=self.x_train.device).manual_seed(seed),
            train_weights=self.train_weights,
            validation_weights=self.validation_weights,
            keep_initial=keep_initial,
        )


class _RowsCheck:
    """Rows to judge trained flows on, mapped once through the preprocessing's
    steps that draw no noise (a :class:`~skebflow.flows.KernelGaussianize` step
    costs more than the flow), with their weights: the mean log-likelihood of a
    flow, and whether it fell by more than ``_WORSE_THAN_START_NATS_PER_FEATURE``
    per feature from a starting flow's."""

    def __init__(
        self,
        preprocessing: Preprocessing,
        rows: torch.Tensor,
        weights: torch.Tensor | None,
        *,
        held_out: bool,
    ) -> None:
        head, self.tail = preprocessing.split_fixed_head()
        self.mapped, self.head_log_abs_det = mapped_rows(head, rows)
        self.weights = weights
        self.held_out = held_out

    @classmethod
    def for_fit(cls, preprocessing: Preprocessing, data: _TrainingRows) -> _RowsCheck:
        """The rows early stopping holds out, else the first ``_CHECKED_ROWS``
        training rows."""
        if data.x_validation is not None:
            return cls(
                preprocessing,
                data.x_validation,
                data.validation_weights,
                held_out=True,
            )
        weights = data.train_weights
        return cls(
            preprocessing,
            data.x_train[:_CHECKED_ROWS],
            None if weights is None else weights[:_CHECKED_ROWS],
            held_out=False,
        )

    def log_likelihood(self, flow: Flow | FlowMixture) -> torch.Tensor:
        """Each row's exact log-likelihood under ``flow``."""
        log_likelihood = evaluate_log_likelihood(flow, self.tail, self.mapped)
        return log_likelihood + self.head_log_abs_det

    def mean(self, log_likelihood: torch.Tensor) -> float:
        """The (weighted) mean of the rows' ``log_likelihood``; -inf if any row's
        is -inf."""
        if self.weights is None:
            return float(log_likelihood.mean())
        return float((log_likelihood * self.weights).sum() / self.weights.sum())

    def mean_log_likelihood(self, flow: Flow | FlowMixture) -> float:
        """:meth:`mean` of ``flow``'s :meth:`log_likelihood`."""
        return self.mean(self.log_likelihood(flow))

    def unusable_reason(self, flow: Flow | FlowMixture) -> str | None:
        """Why ``flow``'s finite weights are still unusable, or ``None``: its
        log-likelihood is not finite on some rows, or it cannot map the first
        ``_ROUND_TRIP_ROWS`` of them back from its base space."""
        return self._non_finite_reason(
            self.log_likelihood(flow)
        ) or self._collapse_reason(flow, _ROUND_TRIP_ROWS)

    @staticmethod
    def _non_finite_reason(log_likelihood: torch.Tensor) -> str | None:
        n_bad = int((~torch.isfinite(log_likelihood)).sum())
        if not n_bad:
            return None
        return (
            "Training diverged: the trained flow's log-density is not finite on"
            f" {n_bad} of {len(log_likelihood)} training rows checked."
        )

    def _collapse_reason(self, flow: Flow | FlowMixture, n_rows: int) -> str | None:
        checked = self.mapped[:n_rows]
        n_bad = non_invertible_rows(flow, self.tail, checked)
        if not n_bad:
            return None
        return (
            "Training diverged: the trained flow has collapsed and cannot map"
            f" {n_bad} of {len(checked)} training rows checked back from its base"
            " space (its inverse is not finite there), so it could not sample."
        )

    def drop(self, start: float, end: float) -> str | None:
        """What to say of a flow whose mean log-likelihood went from ``start`` to
        ``end``, if it fell by more than ``_WORSE_THAN_START_NATS_PER_FEATURE``
        per feature; ``None`` if it did not (or ``start`` is not finite)."""
        n_features = self.mapped.shape[1]
        if not math.isfinite(start) or not (
            end < start - _WORSE_THAN_START_NATS_PER_FEATURE * n_features
        ):
            return None
        which = "held-out" if self.held_out else "training"
        return (
            f"its mean log-likelihood of the {which} rows is {end:.4g}, against"
            f" {start:.4g} for the flow it started from"
            f" ({(start - end) / n_features:.3g} nats per feature lower)"
        )

    def chunk_divergence(self, flow: Flow | FlowMixture, start: float) -> str | None:
        """Why ``flow``, trained on the chunk these rows are from by a model whose
        mean log-likelihood of them was ``start``, diverged, or ``None``: its
        log-likelihood is not finite on some rows, it fell as :meth:`drop` says,
        or (checked only when it fell at all: a collapse makes it fall, since a
        contraction the inverse cannot undo costs its log-determinant) the flow
        cannot map the first ``_CHUNK_ROUND_TRIP_ROWS`` rows back from its base
        space."""
        log_likelihood = self.log_likelihood(flow)
        reason = self._non_finite_reason(log_likelihood)
        if reason is not None:
            return reason
        end = self.mean(log_likelihood)
        drop = self.drop(start, end)
        if drop is not None:
            return (
                "Training diverged: the flow ended the epoch worse than it started"
                f" on this chunk: {drop}."
            )
        if end < start:
            return self._collapse_reason(flow, _CHUNK_ROUND_TRIP_ROWS)
        return None


class EBFlowDensity(DensityMixin, BaseEstimator):
    """Density estimation with an energy-based flow trained by score matching.

    The flow's log-density splits into an energy, which depends on ``x``, and a
    log-normalizer, which collects the log-determinants of its linear layers. Score
    matching (``"ssm"``, ``"dsm"``, ``"fdssm"``) needs only derivatives of the energy,
    so training by it computes no determinant; the exact log-normalizer is computed
    once, for validation and after training. Two defaults add determinants on
    purpose: ``objective="auto"`` takes maximum likelihood (``"ml"``) up to 512
    features, where the determinants are cheap, and a score-matching fit up to 512
    features ends with ``likelihood_refinement`` epochs of maximum likelihood
    (``likelihood_refinement=0`` keeps it pure). ``score_samples`` is the exact,
    normalized log-density in the units of ``X``.

    Parameters
    ----------
    architecture : {"auto", "coupling", "fc", "conv"}, default="auto"
        ``"coupling"``: blocks of elementwise affine, dense and affine-coupling layers
        (expressive on tabular data; needs at least 2 features). ``"fc"``: the paper's
        dense / smooth-leaky-ReLU stack (any number of features). ``"conv"``: the
        paper's convolutional flow for rows that are images (``image_shape``): three
        blocks of two 7 x 7 convolutions with smooth leaky ReLUs and a 2 x 2 squeeze
        between blocks (:func:`skebflow.flows.cnn`; ``n_layers`` and
        ``hidden_layer_sizes`` do not apply). Score matching runs only the
        convolutions; maximum likelihood needs the determinant of each
        convolution's dense Jacobian. ``"auto"``: ``"conv"`` when ``image_shape``
        is given, otherwise ``"coupling"`` with 2 features or more and ``"fc"``
        with one.
    image_shape : tuple of int or None, default=None
        ``(channels, height, width)`` (or ``(height, width)``) of the images whose
        C-order flattening each row of ``X`` is, required by ``architecture="conv"``
        (and choosing it under ``"auto"``). Height and width must be divisible
        by 4. The ``"coupling"`` and ``"fc"`` flows do not use it, so that a grid
        over ``architecture`` may fix it for its ``"conv"`` candidates.
    n_layers : int, default=4
        Coupling blocks, or dense layers of the ``"fc"`` flow.
    hidden_layer_sizes : array-like of int or int, default=(32, 32)
        Widths of each coupling's conditioner MLP (``"coupling"`` only: the
        other architectures neither use nor check it); one int is one hidden
        layer, as in scikit-learn's ``MLPRegressor``.
    activation : {"tanh", "silu"}, default="tanh"
        Activation of the conditioner MLPs (``"coupling"`` only). tanh bounds each
        coupling's scale and shift, so the log-density decays like a Gaussian's away
        from the training data; SiLU lets a row outside the training range fall to a
        log-density of minus thousands (see Notes).
    coupling_transform : {"logistic_mixture", "affine"}, default="logistic_mixture"
        Elementwise map of each coupling (``"coupling"`` only). ``"affine"``: a
        scale and a shift. ``"logistic_mixture"``: the logit of the CDF of a mixture
        of ``n_components`` logistics, then a scale and a shift (Flow++); smooth
        (every derivative exact for score matching) and able to give one column
        many narrow modes or a box shape; affine far from the data, so the tails
        stay Gaussian-like; sampling inverts it by a bracketed Newton solver.
    n_components : int, default=8
        Logistic components per transformed feature of a ``"logistic_mixture"``
        coupling.
    base_distribution : {"normal", "student_t", "student_t_learned"}, \
default="normal"
        Density of the flow's latent ``z``. ``"normal"``: standard normal, so the
        tails of the fitted density are Gaussian-like (the couplings are bounded far
        from the data). ``"student_t"``: a Student-t with 5 degrees of freedom per
        latent coordinate, whose polynomial tails let the model put mass on rare,
        extreme rows; ``"student_t_learned"``: the same, with one learned number of
        degrees of freedom per latent coordinate (from 0.5 to 1000, the latter a
        normal). The Student-t's normalizing constant joins ``log_normalizer_``;
        score matching never needs it. See the user guide's section on the base
        distribution for when each helps.
    n_flows : int or "auto", default="auto"
        Number of flows whose equal-weight mixture is the model,
        ``p(x) = (1/K) sum_k p_k(x)``, itself an exact, normalized density. Each
        flow is trained on its own, with its own initialization, batches and
        held-out rows, by the same objective; on small data they over-fit in
        different directions and their mixture generalizes better than any one of
        them. ``"auto"``: 4 flows below 5 000 rows, 1 from 5 000 rows (where the
        fit costs most and gains least). A mixture fits in ``K`` times the time of
        one flow. A first ``partial_fit`` starts one flow, whatever ``n_flows``;
        ``partial_fit`` after ``fit`` continues every flow of the mixture.
    objective : {"auto", "ssm", "dsm", "fdssm", "ml", "sml"}, default="auto"
        Training objective: sliced, denoising or finite-difference score matching, or
        maximum likelihood with exact (``"ml"``) or sampled (``"sml"``) normalizer
        gradient. ``"auto"`` takes ``"ml"`` up to 512 features, where it gives the
        best held-out likelihood on tabular data in the least fit time (score
        matching's steps are already cheaper from a few hundred features, but it
        then needs a likelihood refinement to match ``"ml"``), and ``"ssm"`` above,
        where the determinants' :math:`O(D^3)` cost dominates (see
        ``docs/benchmarks.md``).
    n_slices : int, default=1
        Random projections per row for ``"ssm"``, and directions per row for
        ``"fdssm"``, orthonormal up to ``n_features`` of them: at ``n_slices =
        n_features``, ``"fdssm"``'s loss is exact score matching up to its finite
        differences, at ``2 n_slices + 1`` energies per row, where one direction
        makes its gradient the noisiest of the objectives (see the user guide's
        objectives page).
    noise_std : float, default=0.1
        Noise scale for ``"dsm"``, in standardized units. With noise annealing it is
        also where the annealing ends, for every objective.
    noise_annealing : float or "auto", default="auto"
        Start of a noise annealing, in standardized units; 0 disables it. Training
        then fits the data smoothed by ``N(0, sigma^2 I)``, ``sigma`` falling
        geometrically from ``noise_annealing`` to ``noise_std`` over the first 35 %
        of ``max_iter`` epochs and held there (the last epoch always at
        ``noise_std``): ``"dsm"`` takes ``sigma`` as its
        denoising noise, the other objectives train on batches with that noise
        added. A wide start joins separated regions early in the fit (it brought
        score matching two to three times closer to a known bimodal density,
        though not to its modes' weights); the patience of early stopping starts
        when ``sigma`` reaches ``noise_std``. ``"auto"``: 1.0 for
        ``"ssm"`` and ``"fdssm"`` with couplings or ``"fc"`` and for ``"dsm"``
        with couplings; 0 otherwise (``"ml"``, ``"sml"``, ``"dsm"`` with ``"fc"``,
        and ``"conv"``, not measured). The measurements are in the user guide's
        objectives page. ``partial_fit`` and a fit that continues a fitted
        model (``warm_start=True``) do not anneal: they start from trained
        weights, which a wide noise would first undo (a continuing fit of an
        annealed one keeps training on the data smoothed by ``noise_std``, where
        the annealing ended, if its own settings anneal; after an unannealed fit,
        ``partial_fit`` or with an objective that does not anneal it trains on
        the rows as they are). The value used is ``noise_annealing_``.
    fd_epsilon : float, default=0.1
        Finite-difference radius for ``"fdssm"``, in standardized units. Below 0.05
        the fit runs in float64, where float32's rounding error would swamp the
        finite differences.
    whiten_output : bool or "auto", default="auto"
        After training, refit the flow's last dense layer by maximum likelihood with
        the other layers fixed, in closed form: the flow's outputs on the training
        rows are whitened (zero mean, unit covariance, the covariance shrunk by
        Ledoit and Wolf's rule). Score matching fits the energy's gradient where the
        data lie but ties the outputs' location and scale only weakly; this step
        recovers likelihood that loses (on the tuning group, most with
        ``architecture="fc"``). It costs one pass over the training rows and a
        ``D x D`` Cholesky factorization, and computes no Jacobian determinant of
        the other layers. ``"auto"``: for ``"ssm"``, ``"dsm"`` and ``"fdssm"``,
        kept for each flow only if the held-out rows of early stopping do not lose
        log-likelihood by it (always, without held-out rows); never for ``"ml"``
        and ``"sml"``, whose fit already maximizes the likelihood. ``True``: always,
        for any objective. It needs a ``"normal"`` base distribution and an
        architecture ending in a dense layer (``"coupling"`` or ``"fc"``):
        ``"auto"`` skips it otherwise and ``True`` raises a ``ValueError``.
        ``partial_fit`` does not whiten. The resolved value is ``whiten_output_``,
        and which flows kept it ``whitened_flows_``.
    likelihood_refinement : int or "auto", default="auto"
        Epochs of maximum-likelihood training that follow the fit (and the whitening),
        from its weights, at the learning rate an ``"ml"`` fit would use
        (``learning_rate``, or ``"ml"``'s ``"auto"`` value) on the schedule of
        ``learning_rate_schedule`` over those epochs. Score matching is blind to the
        relative weights of separated modes and of narrow point masses (its loss
        compares gradients of the log-density, which a constant per mode does not
        change); epochs of likelihood set those weights, starting from the
        score-matching fit. The refinement early-stops like the fit (its patience
        counts epochs without beating its own best epoch), and with held-out rows
        its weights are kept only if their log-likelihood beats the weights it
        started from; a refinement that diverges warns and keeps its best epoch
        before the divergence by the same test (without held-out rows, the weights
        it started from). Each refinement step computes the Jacobian
        log-determinants that score matching avoids (``O(D^3)`` per dense layer).
        ``"auto"``, after ``"ssm"``, ``"dsm"`` and ``"fdssm"`` up to 512 features:
        ``max_iter`` epochs, that is until the held-out likelihood stops improving;
        0 beyond 512 features (where a likelihood step costs several score-matching
        steps) and after ``"ml"`` and ``"sml"``. 0 turns it off, for a model trained
        by score matching alone. ``partial_fit`` does not refine. The resolved value
        is ``likelihood_refinement_``, and which flows kept the refined weights
        ``refined_flows_``.
    preprocessing : {"standardize", "logit"} or None, default="standardize"
        Bijection applied before matching (MaP); its log-determinant is added back, so
        densities stay in the units of ``X``. ``"logit"`` needs bounded features.
    bounds : tuple (lower, upper) or None, default=None
        Box of the data for ``preprocessing="logit"``: floats or arrays of shape
        (n_features,). ``None`` takes the training range widened by 5 % on each side.
        For dequantized columns the edges are whole numbers, so that the box holds
        whole unit bins: given bounds are rounded inward (``-0.5`` to ``0``,
        ``5.5`` to ``5``), and the data then need ``upper >= max + 1``.
    logit_alpha : float, default=1.0
        Smoothness of the logit (``y = logit(u) / logit_alpha``).
    dequantize : bool or "auto", default="auto"
        Add uniform noise in ``[0, 1)`` to the integer-valued columns (every training
        value an integer) while training; rows are then scored at the centre of
        their unit bin, so ``score_samples`` is about the log of the probability of
        the integer values times the density of the other columns (the density at
        a bin's centre stands for its integral over the bin), and samples of those
        columns are integers (a new value that is not an integer is rounded to the
        nearest one first). Columns with any non-integer value are left alone,
        and so are columns whose values reach where the input's floats hold whole
        numbers only (from ``2**50`` in float64, ``2**21`` in float32: timestamps
        in nanoseconds, large float32 amounts), which are continuous values
        there. ``"auto"``: ``True``, except with ``preprocessing="logit"``, whose
        ``bounds`` are in the units of the data (set ``True`` there and widen the
        box by one), and except that a constant column is left to
        ``constant_features``. Which
        columns were dequantized is ``dequantized_features_``.
    constant_features : {"error", "narrow"}, default="error"
        What to do with a feature that is constant in the training rows (or varies
        by less than float64 resolves). ``"error"`` raises a ``ValueError`` that
        names it; with ``dequantize=True`` (not ``"auto"``) and the normal
        ``base_distribution`` a constant integer column is uniform on its unit bin
        instead, a proper density. ``"narrow"``
        models it as a normal around its value, of standard
        deviation ``max(1e-3, 1e-9 |value|)`` in the units of ``X``, passed to
        the flow's standard normal base unchanged (the flow is built on the other
        features): a row that departs from the value by ``k`` widths loses
        exactly ``k**2 / 2`` nats. Where the flow cannot pass it (fewer than two
        other features vary, one with ``architecture="fc"``, or another
        ``base_distribution``), the flow learns it from noise of that width,
        added while training, and the loss is only about ``k**2 / 2`` near the
        value. Needs ``preprocessing="standardize"``.
    linear_relations : {"narrow", "warn"}, default="narrow"
        What to do when the training rows lie on a hyperplane: a feature is an
        exact affine function of others (a total beside its parts,
        ``make_classification``'s redundant features), so the rows have no
        density and a fit would narrow its mass onto the hyperplane for as long
        as it trains. ``"narrow"``: one feature per relation (the last) is
        modelled as that function of the others plus a normal of standard
        deviation 1e-3 times its own (as ``GaussianMixture(reg_covar=1e-6)``
        on standardized data): a row off the hyperplane by ``k`` such widths
        loses exactly ``k**2 / 2`` nats where the feature is passed to the
        flow's standard normal base (as ``constant_features="narrow"`` says),
        about that where the flow learns it, and the flow models the other
        features.
        The features so modelled are ``dependent_features_``. Only with
        ``preprocessing="standardize"``, among the features that vary and are
        not dequantized, and when training does not smooth the rows (no
        ``jitter``; not ``"dsm"`` or a noise annealing without a likelihood
        refinement): there the rows already have a density. ``"warn"``: fit the
        rows as they are, with a warning (the behaviour before 5 December
        2026).
    marginal_transform : {"auto", "kde"} or None, default="auto"
        How each continuous column (not constant, not dequantized) reaches the
        flow. ``"kde"``: through the CDF of its own one-dimensional kernel
        density, to a standard normal (marginal Gaussianization; the log of the
        kernel density's derivative is added back, so densities stay exact and in
        the units of ``X``). The flow then models how the columns depend on each
        other, and a column's shape (narrow modes, lumps of repeated values, skew,
        a box) is the kernel density's. Each bandwidth maximizes the
        leave-one-out likelihood of up to 500 of the column's rows; a normal three
        standard deviations wide holds 2 % of each column's mass, so that values
        beyond the training range keep a density. ``None``: the column is only
        standardized. ``"auto"``: ``"kde"`` with ``preprocessing="standardize"``
        and a tabular flow, else ``None``. ``marginal_transform_`` says whether
        any column was mapped.
    jitter : float, default=0.0
        Standard deviation of Gaussian noise, in preprocessed (standardized) units,
        added afresh to every training batch. It smooths duplicated rows and discrete
        columns that are not integers; the model then fits the jittered data.
    max_iter : int, default=200
        Maximum number of epochs.
    batch_size : int, default=256
        Rows per mini-batch (capped at the number of training rows).
    learning_rate : float or "auto", default="auto"
        Initial step size of the optimizer. ``"auto"`` follows the objective: 1e-3
        for ``"dsm"`` and ``"fdssm"``, 3e-3 for the others (measured on the tuning
        data sets; the table is in the user guide's objectives page). The value
        used is ``learning_rate_``.
    solver : {"adam", "rmsprop"}, default="adam"
        Optimizer.
    learning_rate_schedule : {"cosine", "constant"}, default="cosine"
        Cosine decay to 1 % of ``learning_rate`` over ``max_iter`` epochs, or constant.
    weight_decay : float, default=1e-4
        L2 penalty of the optimizer (Adam's coupled form).
    ema_decay : float, default=0.995
        Decay of the exponential moving average of the weights used for validation and
        for the final model; 0 disables it.
    grad_clip : float or None, default=10.0
        Maximum global gradient norm; ``None`` disables clipping.
    energy_regularization : float, default=0.0
        Weight ``lambda`` of the low-energy regularizer ``lambda * E(x) / D``.
    early_stopping : bool, default=True
        Hold out ``validation_fraction`` of the rows and stop when their exact
        log-likelihood stops improving; the best (EMA) weights are restored. If False,
        the patience watches the training objective of the (EMA) weights on up to
        1 024 training rows, with the same noise at every epoch (for ``"sml"``,
        whose value is no measure of fit, their log-likelihood), and the last
        weights are kept. When training
        smooths every row (``jitter`` > 0, or every varying column dequantized) the
        held-out rows are a random share of them; otherwise duplicated rows are
        held out by distinct row, so none repeats a training row. With fewer than
        10 held-out rows, ``fit`` warns and monitors the training rows instead.
    early_stopping_metric : {"auto", "log_likelihood", "loss"}, default="auto"
        What the patience ``n_iter_no_change`` watches on the held-out rows.
        ``"log_likelihood"``: the exact log-likelihood. ``"loss"``: the training
        objective, with the same noise every epoch; a score-matching fit's
        likelihood can dip before it rises, while its loss keeps falling as long as
        it learns. Either way the weights kept are those of the epoch with the best
        held-out log-likelihood. ``"auto"``: ``"log_likelihood"`` for every
        objective; on the tuning data sets watching the loss kept the same weights
        or worse ones (see the user guide's objectives page). ``"loss"`` is
        refused for ``objective="sml"``, whose value is no measure of fit.
    validation_fraction : float, default=0.1
        Fraction of rows held out for early stopping.
    n_iter_no_change : int, default=20
        Epochs without improvement larger than ``tol`` before stopping.
    tol : float, default=1e-4
        Minimum improvement of the monitored score.
    device : str, default="auto"
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    random_state : int, RandomState instance or None, default=None
        Seeds a local ``torch.Generator`` for initialisation, batches and noise; torch's
        global random state is never touched. The same integer refits bit for bit on
        CPU.
    verbose : int, default=0
        0 is silent; 1 or more shows a progress bar (tqdm, notebook-aware, if installed)
        with the epoch, the loss and the validation log-likelihood, and one of the
        Langevin steps of :meth:`sample_langevin` and :meth:`sample_conditional`
        (so of :class:`EBFlowImputer`, whose fills can take minutes).
    warm_start : bool, default=False
        Continue from the previous fit's weights and preprocessing. A change of the
        flow's shape or of the preprocessing (``architecture``, ``image_shape``,
        ``n_layers``, ``hidden_layer_sizes``, ``activation``,
        ``coupling_transform``, ``n_components``, ``base_distribution``,
        ``n_flows``, ``preprocessing``, ``bounds``, ``logit_alpha``,
        ``dequantize``, ``constant_features``, ``marginal_transform``,
        ``linear_relations``) since that fit raises a ``ValueError``; an
        ``"auto"`` replaced by the value it resolved to (``architecture_``,
        ``n_flows_``, ``marginal_transform_``) is no change.

    Attributes
    ----------
    flow_ : Flow or FlowMixture
        The trained flow (float64, on ``device_``), modelling the preprocessed data;
        with several flows, their :class:`~skebflow.flows.FlowMixture`.
    n_flows_ : int
        Number of flows in the model (``n_flows`` with ``"auto"`` resolved).
    preprocessing_ : Preprocessing
        The fitted MaP bijection.
    objective_ : str
        The objective used (``objective`` with ``"auto"`` resolved).
    architecture_ : str
        The architecture fitted (``architecture`` with ``"auto"`` resolved).
    learning_rate_ : float
        The learning rate used (``learning_rate`` with ``"auto"`` resolved).
    noise_annealing_ : float
        The start of the noise annealing used (``noise_annealing`` with ``"auto"``
        resolved; 0 for none, after ``partial_fit``, and after a ``warm_start``
        fit that continued a fitted model).
    whiten_output_ : bool
        ``whiten_output`` with ``"auto"`` resolved (``False`` after
        ``partial_fit``).
    whitened_flows_ : ndarray of bool, one per flow
        Which flows kept the whitened last layer.
    likelihood_refinement_ : int
        ``likelihood_refinement`` with ``"auto"`` resolved: the epochs of
        maximum-likelihood refinement run (0 after ``partial_fit``).
    refined_flows_ : ndarray of bool, one per flow
        Which flows kept the weights of the likelihood refinement.
    dequantized_features_ : ndarray of shape (n_features,), dtype=bool
        Which features were dequantized (see ``dequantize``).
    dependent_features_ : ndarray of shape (n_features,), dtype=bool
        Which features are modelled as exact affine functions of the others
        plus a narrow normal (see ``linear_relations``).
    marginal_transform_ : {"kde"} or None
        ``"kde"`` when some features reach the flow through their kernel
        densities' CDFs (see ``marginal_transform``), else ``None``.
    early_stopping_metric_ : str or None
        The held-out score the patience watched (``early_stopping_metric`` with
        ``"auto"`` resolved), ``None`` without held-out rows.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during fit, when ``X`` has string column names.
    n_iter_ : int
        Epochs run. With several flows, ``n_iter_``, ``loss_curve_``,
        ``validation_scores_``, ``validation_loss_curve_`` and
        ``best_validation_score_`` describe the first one, and ``converged_`` is
        True when every flow converged.
    loss_curve_ : list of float
        Mean training objective per epoch, over the rows trained on (not a
        likelihood for score matching).
    validation_scores_ : list of float or None
        Held-out mean log-likelihood per epoch, ``None`` without early stopping (or
        when too few rows were left to validate on). Dequantized columns are
        scored as training sees them, with uniform noise in their bins (the same
        draw at every epoch), and the narrow normal of a constant column with its
        noise: the log-likelihood of the objective trained, not the
        bins'-centre score of ``score_samples``.
    best_validation_score_ : float or None
        Best held-out mean log-likelihood of the training epochs (of the first
        flow), ``None`` without early stopping or when no epoch's was finite.
        Output whitening and likelihood refinement come after it (the
        refinement, and the whitening under ``whiten_output="auto"``, are kept
        only if they score higher on the same rows), so the returned model can
        score otherwise. The rows are held out from the flow's training, not
        from the preprocessing, which is fitted on every row: under the kernel
        marginals each held-out row sits on its own kernel, so the score is
        optimistic (by 0.05 to 0.3 nats per row on 300 rows, less on more) and
        ranks settings with and without kernels unfairly. Compare settings by
        cross-validation (``cross_val_score``, ``GridSearchCV``), whose folds
        are held out from everything.
    validation_loss_curve_ : list of float or None
        Held-out mean training objective per epoch when the patience watched it
        (``early_stopping_metric_ == "loss"``), else ``None``.
    converged_ : bool
        Whether training stopped on its own because the monitored score stopped
        improving for ``n_iter_no_change`` epochs (also when that happens at the
        last of ``max_iter`` epochs); ``False`` after a divergence (which also
        warns) and after an interrupt (Ctrl-C), also one during the whitening or
        the likelihood refinement, and when a likelihood refinement whose weights
        are kept ran all its epochs without stopping on its own (which warns).
    log_normalizer_ : float
        ``log Z`` of the flow: ``-sum log|det W|`` over its linear layers (plus the
        base's constant); 0 for a mixture, whose members' normalizers are inside
        its energy.
    device_ : str
        The device the flow lives on.

    See Also
    --------
    sklearn.neighbors.KernelDensity : Kernel density estimation.
    sklearn.mixture.GaussianMixture : Gaussian mixture models.

    Notes
    -----
    Defaults are chosen for tabular data of a few hundred to a few hundred thousand
    rows, by the sweeps of ``benchmarks/defaults_sweep.py`` and
    ``benchmarks/density.py``, on a fixed tuning group of data sets, and checked on
    an evaluation group that chose nothing (the evidence is in the documentation's
    benchmarks page): an equal-weight mixture of four flows (``n_flows="auto"``
    below 5 000 rows) raised the held-out log-likelihood over one flow on every
    tuning set measured (see ``benchmarks/ensemble_sweep.py``), for four times the
    fit time; logistic-mixture couplings with a weight decay of 1e-4 raised
    the held-out log-likelihood on 10 of the 11 tuning sets (3 seeds, by 0.036 nats
    per dimension on average) over affine couplings, for about twice the fit time;
    standardization (MaP) makes the learning rate and noise scales unit-free;
    four coupling blocks with small (32, 32) conditioners at learning rate 3e-3 gave a
    higher held-out log-likelihood than (64, 64) at 1e-3 on all eight data sets of the
    sweep, and in less time; the conditioners use tanh, whose bounded outputs keep
    the flow affine with bounded coefficients far from the training data, so a test
    row outside the training range gets a Gaussian-like tail instead of a
    log-density of minus thousands (with SiLU conditioners one such row in a test set
    of 230 dragged the mean log-likelihood on Pima from -10 to -1245); with up to 512
    features maximum likelihood (``"auto"``) gives the best held-out likelihood in
    the least fit time (per step it is the cheapest objective only below a few
    hundred features), while beyond that
    sliced score matching avoids the :math:`O(D^3)` determinants; early stopping on the
    exact held-out log-likelihood guards against over-fitting small data sets, and the
    EMA of the weights steadies score-matching training.

    ``score`` is the mean log-likelihood per row (as in
    :class:`~sklearn.mixture.GaussianMixture`), so ``GridSearchCV`` and
    ``cross_val_score`` rank models by held-out likelihood.

    Under an initialized ``torch.distributed`` process group of several processes
    (``torchrun``, Ray Train), ``fit`` and ``partial_fit`` train one model
    together with the other ranks, which must make the same call with the same
    rows and parameters (a ``ValueError`` otherwise); inside
    :func:`skebflow.local_training` they train in this process alone (see the user
    guide's page on scaling out). The outlier detector and the imputer fit the
    same way.

    References
    ----------
    .. [1] Chao, C.-H., Sun, W.-F., Hsu, Y.-C., Kira, Z. and Lee, C.-Y. (2023).
       Training Energy-Based Normalizing Flow with Score-Matching Objectives. NeurIPS.
       arXiv:2305.15267.

    Examples
    --------
    >>> from sklearn.datasets import make_moons
    >>> from skebflow import EBFlowDensity
    >>> X, _ = make_moons(200, noise=0.1, random_state=0)
    >>> # A short fit: early stopping ends it after a few epochs, without a warning.
    >>> est = EBFlowDensity(max_iter=30, n_iter_no_change=3, tol=1e-2, device="cpu",
    ...                     random_state=0).fit(X)
    >>> est.score_samples(X[:3]).shape, est.sample(4, random_state=0).shape
    ((3,), (4, 2))
    >>> isinstance(est.score(X), float)
    True
    """

    _parameter_constraints: dict = {
        "architecture": [StrOptions({"auto", "coupling", "fc", "conv"})],
        "image_shape": [tuple, list, None],
        "n_layers": [Interval(Integral, 1, None, closed="left")],
        "hidden_layer_sizes": [
            "array-like",
            Interval(Integral, 1, None, closed="left"),
        ],
        "activation": [StrOptions({"tanh", "silu"})],
        "coupling_transform": [StrOptions({"affine", "logistic_mixture"})],
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "n_flows": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "base_distribution": [StrOptions({"normal", "student_t", "student_t_learned"})],
        "objective": [StrOptions({"auto", "ssm", "dsm", "fdssm", "ml", "sml"})],
        "n_slices": [Interval(Integral, 1, None, closed="left")],
        "noise_std": [Interval(Real, 0, None, closed="neither")],
        "noise_annealing": [
            StrOptions({"auto"}),
            Interval(Real, 0, None, closed="left"),
        ],
        "fd_epsilon": [Interval(Real, 0, None, closed="neither")],
        "whiten_output": ["boolean", StrOptions({"auto"})],
        "likelihood_refinement": [
            StrOptions({"auto"}),
            Interval(Integral, 0, None, closed="left"),
        ],
        "preprocessing": [StrOptions({"standardize", "logit"}), None],
        "bounds": [tuple, list, None],
        "logit_alpha": [Interval(Real, 0, None, closed="neither")],
        "dequantize": ["boolean", StrOptions({"auto"})],
        "constant_features": [StrOptions({"error", "narrow"})],
        "linear_relations": [StrOptions({"narrow", "warn"})],
        "marginal_transform": [StrOptions({"auto", "kde"}), None],
        "jitter": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [
            StrOptions({"auto"}),
            Interval(Real, 0, None, closed="neither"),
        ],
        "solver": [StrOptions({"adam", "rmsprop"})],
        "learning_rate_schedule": [StrOptions({"cosine", "constant"})],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "ema_decay": [Interval(Real, 0, 1, closed="left")],
        "grad_clip": [Interval(Real, 0, None, closed="neither"), None],
        "energy_regularization": [Interval(Real, 0, None, closed="left")],
        "early_stopping": ["boolean"],
        "early_stopping_metric": [StrOptions({"auto", "log_likelihood", "loss"})],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "device": [str],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
    }

    def __init__(
        self,
        *,
        architecture: str = "auto",
        image_shape: tuple[int, ...] | None = None,
        n_layers: int = 4,
        hidden_layer_sizes: tuple[int, ...] = (32, 32),
        activation: str = "tanh",
        coupling_transform: str = "logistic_mixture",
        n_components: int = 8,
        base_distribution: str = "normal",
        n_flows: int | str = "auto",
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
        dequantize: bool | str = "auto",
        constant_features: str = "error",
        linear_relations: str = "narrow",
        marginal_transform: str | None = "auto",
        jitter: float = 0.0,
        max_iter: int = 200,
        batch_size: int = 256,
        learning_rate: float | str = "auto",
        solver: str = "adam",
        learning_rate_schedule: str = "cosine",
        weight_decay: float = 1e-4,
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
        self.architecture = architecture
        self.image_shape = image_shape
        self.n_layers = n_layers
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.coupling_transform = coupling_transform
        self.n_components = n_components
        self.base_distribution = base_distribution
        self.n_flows = n_flows
        self.objective = objective
        self.n_slices = n_slices
        self.noise_std = noise_std
        self.noise_annealing = noise_annealing
        self.fd_epsilon = fd_epsilon
        self.whiten_output = whiten_output
        self.likelihood_refinement = likelihood_refinement
        self.preprocessing = preprocessing
        self.bounds = bounds
        self.logit_alpha = logit_alpha
        self.dequantize = dequantize
        self.constant_features = constant_features
        self.linear_relations = linear_relations
        self.marginal_transform = marginal_transform
        self.jitter = jitter
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.solver = solver
        self.learning_rate_schedule = learning_rate_schedule
        self.weight_decay = weight_decay
        self.ema_decay = ema_decay
        self.grad_clip = grad_clip
        self.energy_regularization = energy_regularization
        self.early_stopping = early_stopping
        self.early_stopping_metric = early_stopping_metric
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start

    # ------------------------------------------------------------------ fitting

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(
        self,
        X: ArrayLike,
        y: None = None,
        sample_weight: ArrayLike | None = None,
    ) -> EBFlowDensity:
        """Fit the flow to ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data. Never modified.
        y : None
            Ignored; present for API consistency.
        sample_weight : array-like of shape (n_samples,) or None, default=None
            Non-negative weight of each row (never modified): the fit maximizes
            the weighted objective, so an integer weight acts, in expectation, like
            that many copies of the row. The standardization takes the weighted
            mean and standard deviation, each batch's loss weighs its rows (divided
            by the mean training weight), and early stopping watches the weighted
            held-out score; the held-out rows keep their weights. A row of weight
            zero is dropped, exactly as if it were not in ``X``; weights that are
            all equal give exactly the unweighted fit. ``None`` weighs rows
            equally.

        Returns
        -------
        self : EBFlowDensity
            The fitted estimator.

        Notes
        -----
        A fit that raises leaves the estimator as it was: the previous fitted model
        (or none) is kept, with all its attributes. ``fit`` starts afresh (unless
        ``warm_start=True``) and discards what :meth:`partial_fit` accumulated.

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn.datasets import make_moons
        >>> from skebflow import EBFlowDensity
        >>> X, _ = make_moons(200, noise=0.1, random_state=0)
        >>> est = EBFlowDensity(max_iter=30, n_iter_no_change=3, tol=1e-2,
        ...                     device="cpu", random_state=0).fit(X)
        >>> est.n_features_in_, est.objective_, est.converged_
        (2, 'ml', True)
        >>> est.n_iter_ == len(est.loss_curve_) == len(est.validation_scores_)
        True
        >>> # Weights: here the upper moon counts three times as much as the lower.
        >>> weights = np.where(X[:, 1] > 0.25, 3.0, 1.0)
        >>> weighted = EBFlowDensity(max_iter=30, n_iter_no_change=3, tol=1e-2,
        ...     device="cpu", random_state=0).fit(X, sample_weight=weights)
        >>> bool(weighted.score([[0.0, 1.0]]) > weighted.score([[1.0, -0.5]]))
        True
        """
        previous_state = fitted_state(self)
        try:
            # Whether the user stopped training (the fit then keeps what it
            # trained): EBFlowImputer skips its refits after an interrupted fit.
            self._interrupted = self._fit(X, sample_weight)
        except BaseException:
            restore_fitted_state(self, previous_state)
            raise
        return self

    @_validates_later_calls
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(
        self,
        X: ArrayLike,
        y: None = None,
        sample_weight: ArrayLike | None = None,
    ) -> EBFlowDensity:
        """Train one epoch over the chunk ``X``, continuing the previous calls.

        For data that arrive in chunks or do not fit in memory (dask-ml's
        ``Incremental`` calls it once per block). The first call (on an unfitted
        estimator) validates ``X``, fits the preprocessing on it, builds the flow
        and trains one pass over the chunk; every later call trains one pass over
        its chunk and keeps the optimizer's state (Adam's moments and step counts),
        the exponential moving average of the weights and the random generator,
        so the chunks continue one optimisation. After a :meth:`fit`, the first
        call continues from the fitted weights with a fresh optimizer.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            One chunk of training rows; the first needs at least 2. Never
            modified.
        y : None
            Ignored; present for API consistency.
        sample_weight : array-like of shape (n_samples,) or None, default=None
            Non-negative weight of each row of the chunk, as in :meth:`fit`. The
            weights are relative within the chunk: each chunk's loss is divided
            by its mean weight.

        Returns
        -------
        self : EBFlowDensity
            The estimator, fitted on the chunks so far.

        Notes
        -----
        The standardization (or the logit box) comes from the first chunk alone
        and never changes afterwards, so the first chunk should be representative
        of the data (shuffle the rows before chunking them). There is no early
        stopping (``early_stopping``, ``max_iter`` and ``n_iter_no_change`` are
        not used) and the learning rate is constant: the cosine schedule needs a
        known number of epochs. After each call ``flow_`` holds the EMA weights
        in float64 and ``log_normalizer_`` is recomputed; ``n_iter_`` counts the
        epochs (calls) and ``loss_curve_`` gains one entry per call. A chunk
        whose training diverges, or whose every batch was skipped for a loss or
        gradient that was not finite, is discarded with a ``ConvergenceWarning`` (for
        every flow of a mixture when any of them diverges; ``n_iter_`` and
        ``loss_curve_`` do not change), and a call that raises or is interrupted
        leaves the estimator as it was. The
        state between calls survives pickling and :func:`skebflow.save`. A
        chunk with a different number of features raises a ``ValueError``; a
        later :meth:`fit` starts afresh.

        Examples
        --------
        >>> import numpy as np
        >>> from skebflow import EBFlowDensity
        >>> rng = np.random.RandomState(0)
        >>> X = rng.normal(size=(1200, 2)) @ np.array([[1.0, 0.8], [0.0, 0.6]])
        >>> est = EBFlowDensity(device="cpu", random_state=0)
        >>> for chunk in np.array_split(X, 6):  # e.g. blocks read one at a time
        ...     est = est.partial_fit(chunk)
        >>> est.n_iter_, len(est.loss_curve_)
        (6, 6)
        >>> bool(est.score(rng.normal(size=(500, 2)) @ np.array([[1.0, 0.8],
        ...                                                    [0.0, 0.6]])) > -2.6)
        True
        """
        previous_state = fitted_state(self)
        try:
            self._partial_fit(X, sample_weight)
            return self
        except BaseException:
            restore_fitted_state(self, previous_state)
            raise

    def _validated_training_data(
        self, X: ArrayLike, *, reset: bool, min_rows: int
    ) -> NDArray[np.float64]:
        check_has_columns(X)
        X = validate_data(
            self, X, dtype=np.float64, ensure_min_samples=min_rows, reset=reset
        )
        return np.array(X, dtype=np.float64, order="C", copy=True)

    def _resolved_max_iter(self) -> int:
        """``max_iter`` as a fit uses it (the outlier detector resolves ``"auto"``)."""
        return self.max_iter

    def _unconverged_advice(self, refinement: bool = False) -> str:
        """What the ``ConvergenceWarning`` of flows stopped at ``max_iter``
        advises, or of a likelihood ``refinement`` that ran all its epochs (the
        outlier detector's ``"auto"`` budget ends early by design)."""
        if refinement:
            return (
                "Raise max_iter (or an integer likelihood_refinement) to let it run"
                " longer."
            )
        return "raise max_iter, or warm_start=True to continue."

    def _resolved_weight_decay(self) -> float:
        """``weight_decay`` as a fit uses it (the outlier detector resolves
        ``"auto"``)."""
        return self.weight_decay

    def _resolved_hidden_layer_sizes(self) -> Any:
        """``hidden_layer_sizes`` as a new flow uses it (the outlier detector
        resolves ``"auto"``), before its check."""
        return self.hidden_layer_sizes

    def _resolved_marginal_transform(self) -> str | None:
        """``marginal_transform`` as the estimator means it (the outlier
        detector's ``"auto"`` follows ``novelty``); ``"auto"`` here is then
        resolved for the preprocessing and architecture."""
        return self.marginal_transform

    def _kernel_wide_scale(self) -> float | None:
        """The kernel marginals' wide normal, in standard deviations (``None``:
        the module's default; the outlier detector narrows it to rank with clean
        training rows)."""
        return None

    def _new_flow_spec(self, n_features: int) -> dict[str, Any]:
        architecture = self._resolve_architecture(n_features)
        try:
            hidden_layer_sizes = check_hidden_layer_sizes(
                self._resolved_hidden_layer_sizes()
            )
        except ValueError:
            if architecture == "coupling":
                raise
            # the "fc" and "conv" flows have no conditioners: a value a grid
            # gives them for the couplings' sake is not theirs to refuse
            hidden_layer_sizes = ()
        if architecture == "coupling" and n_features < 2:
            raise ValueError(
                f"X has {n_features} feature(s), but architecture='coupling' needs"
                " at least 2; use architecture='fc' for 1-D data."
            )
        image_shape = None
        if architecture == "conv":
            if self.image_shape is None:
                raise ValueError(
                    "architecture='conv' needs image_shape=(channels, height, width),"
                    " the shape of the images whose C-order flattening each row of X"
                    " is."
                )
            image_shape = check_image_shape(self.image_shape, n_features)
        # The "coupling" and "fc" flows do not use image_shape: a value a grid over
        # architecture gives them for the conv candidates' sake is not theirs to
        # refuse ("auto" with an image_shape is "conv").
        return {
            "architecture": architecture,
            "image_shape": image_shape,
            "n_features": n_features,
            "n_layers": self.n_layers,
            "hidden_layer_sizes": hidden_layer_sizes,
            "activation": self.activation,
            "coupling_transform": self.coupling_transform,
            "n_components": int(self.n_components),
            "base_distribution": self.base_distribution,
        }

    def _training_config(
        self,
        objective: str,
        settings: ResolvedSettings,
        n_rows: int,
        *,
        incremental: bool = False,
    ) -> TrainingConfig:
        return TrainingConfig(
            objective=objective,
            objective_settings=self._objective_settings(objective),
            max_iter=1 if incremental else self._resolved_max_iter(),
            batch_size=min(self.batch_size, n_rows),
            learning_rate=settings.learning_rate,
            solver=self.solver,
            learning_rate_schedule=(
                "constant" if incremental else self.learning_rate_schedule
            ),
            weight_decay=self._resolved_weight_decay(),
            ema_decay=self.ema_decay,
            grad_clip=self.grad_clip,
            energy_regularization=self.energy_regularization,
            input_noise_std=self.jitter,
            noise_annealing=0.0 if incremental else settings.noise_annealing,
            annealing_end=self.noise_std,
            annealing_epochs=math.ceil(ANNEALING_FRACTION * self._resolved_max_iter()),
            n_iter_no_change=self.n_iter_no_change,
            tol=self.tol,
            early_stopping_metric=settings.early_stopping_metric,
            verbose=0 if incremental else int(self.verbose),
        )

    def _fit(
        self,
        X: ArrayLike,
        sample_weight: ArrayLike | None,
        *,
        n_flows: int | None = None,
        preprocessing_spec: dict[str, Any] | None = None,
        integer_columns: NDArray[np.bool_] | None = None,
    ) -> bool:
        """Fit the model to ``X``; in a fresh fit, ``n_flows`` (a count) stands for
        the parameter's resolution, ``preprocessing_spec`` for the preprocessing
        fitted on ``X`` and ``integer_columns`` for the integer-valued columns
        found in ``X`` (see ``fit_preprocessing_spec``). Returns whether the user
        interrupted training (a first fit then keeps what was trained so far)."""
        continuing = self.warm_start and hasattr(self, "flow_")
        # A rank whose settings or rows fail these checks tells the others, which
        # would otherwise wait in check_same_everywhere's collective.
        with failures_shared(flag_device(lambda: resolve_device(self.device))):
            if self.architecture == "coupling":  # "auto": checked once X tells
                check_hidden_layer_sizes(self._resolved_hidden_layer_sizes())
            if continuing:
                self._check_warm_start()
            device = resolve_device(self.device)
            integer_limits = integer_resolution_limits(X)
            X = self._validated_training_data(X, reset=not continuing, min_rows=2)
            rows, weights = check_sample_weight(sample_weight, X)
            if rows is not None:
                X = X[rows]
            n_samples, n_features = X.shape
            flow_spec = self._new_flow_spec(n_features)
            check_magnitude(X, self.preprocessing)
        random_state = check_random_state(self.random_state)
        seed = int(random_state.randint(np.iinfo(np.int32).max))
        check_same_everywhere(
            X,
            seed,
            weights,
            device,
            settings=self.get_params(deep=False),
            start=self._start_digest if continuing else None,
        )

        objective, settings = self._objective_and_settings(n_features)
        # A continuing fit of an annealed one trains where the annealing ended,
        # if its own settings anneal: not after an unannealed fit or partial_fit,
        # and not when it switches to an objective that does not anneal.
        holds_annealing_end = (
            continuing and self._holds_smoothing and settings.noise_annealing > 0
        )
        if continuing:
            # A continuing fit starts from trained weights: annealing again from a
            # wide noise would first undo them (as partial_fit, it does not anneal).
            # It keeps the target where the annealing held it, the data smoothed by
            # noise_std, which the fit it continues ended on.
            settings = dataclasses.replace(settings, noise_annealing=0.0)
        training_dtype = self._training_dtype(objective)
        whiten = resolve_whiten_output(self.whiten_output, objective)
        # True or numpy.True_ (a NumPy grid's), not "auto"
        whiten_explicitly = whiten and not isinstance(self.whiten_output, str)
        refinement_epochs = resolve_likelihood_refinement(
            self.likelihood_refinement,
            objective,
            n_features,
            self._resolved_max_iter(),
        )
        if continuing:
            preprocessing_spec = self._preprocessing_spec
            check_within_fitted_box(X, preprocessing_spec)
            _warn_if_structure_broken(X, preprocessing_spec, stacklevel=5)
            flow_spec = self._flow_spec
            # Train copies: the fitted flows stay as they are if training raises.
            previous = copy.deepcopy(self.flow_)
            members: list[Flow | None] = list(
                previous.members if isinstance(previous, FlowMixture) else [previous]
            )
            preprocessing = copy.deepcopy(self.preprocessing_)
        else:
            smoothed = self._smooths_rows(objective, settings, refinement_epochs)
            if preprocessing_spec is None:
                preprocessing_spec = self._fit_preprocessing(
                    X,
                    weights,
                    integer_columns,
                    smoothed=smoothed,
                    integer_limits=integer_limits,
                )
            else:
                check_within_fitted_box(X, preprocessing_spec)
            self._warn_if_on_a_hyperplane(X, preprocessing_spec, smoothed=smoothed)
            if n_flows is None:
                n_flows = resolve_n_flows(self.n_flows, n_samples)
            flow_spec = {
                **flow_spec,
                "n_flows": n_flows,
                "passed_columns": passed_columns(preprocessing_spec, flow_spec),
            }
            members = [None] * n_flows
            preprocessing = build_preprocessing(preprocessing_spec)
        # The preprocessing stays in float64: standardizing raw data in float32
        # rounds away everything below the 7th significant digit.
        preprocessing = preprocessing.to(device=device, dtype=torch.float64)

        def as_tensor(rows: NDArray[np.intp] | None) -> torch.Tensor | None:
            if rows is None or weights is None:
                return None
            return torch.from_numpy(weights[rows]).to(device=device)

        # Each flow of a mixture has its own initialization, batches and held-out
        # rows; the first one is exactly the fit of a single flow.
        trained, results, whitened, refined = [], [], [], []
        # per flow that ended far below its start: what its warning says
        worse: dict[int, str | None] = {}
        refinement_unconverged = False
        refinement_capped: list[int] = []  # flows whose refinement ran every epoch
        for index, member in enumerate(members):
            if index > 0:
                seed = int(random_state.randint(np.iinfo(np.int32).max))
            flow = (
                member
                if member is not None
                else build_flow(
                    {**flow_spec, "n_flows": 1}, torch.Generator().manual_seed(seed)
                )
            )
            flow = flow.to(device=device, dtype=training_dtype)
            if whiten and not can_whiten_output(flow):
                if whiten_explicitly:
                    raise ValueError(
                        "whiten_output=True needs base_distribution='normal' and an"
                        " architecture that ends in a dense layer ('coupling' or"
                        " 'fc'); use whiten_output='auto' or False."
                    )
                whiten = False
            with warnings.catch_warnings():
                if index > 0:  # the first flow's split has already said it
                    warnings.simplefilter("ignore", UserWarning)
                train_rows, validation_rows = (
                    split_for_early_stopping(
                        X,
                        self.validation_fraction,
                        random_state,
                        smoothed=self._smooths_every_row(preprocessing_spec),
                        stacklevel=5,
                    )
                    if self.early_stopping
                    else (None, None)
                )
            x_train = X if train_rows is None else X[train_rows]
            config = self._training_config(objective, settings, x_train.shape[0])
            if holds_annealing_end:
                config = dataclasses.replace(
                    config, input_noise_std=held_input_noise_std(config)
                )
            data = _TrainingRows(
                x_train=torch.from_numpy(x_train).to(device=device),
                x_validation=None
                if validation_rows is None
                else torch.from_numpy(X[validation_rows]).to(device=device),
                train_weights=as_tensor(
                    np.arange(n_samples) if train_rows is None else train_rows
                ),
                validation_weights=as_tensor(validation_rows),
            )
            start_check = _RowsCheck.for_fit(preprocessing, data)
            start = start_check.mean_log_likelihood(flow)
            result = data.train(flow, preprocessing, config, seed)
            if result.interrupted and hasattr(self, "flow_"):
                # A refit interrupted by the user: the previous model stays (fit
                # restores it) and the interruption reaches the caller.
                raise KeyboardInterrupt
            if result.restored_start:
                # Diverged before any epoch gave usable weights: the flow is its
                # random initialization, or the fitted flow a warm start began
                # from, so nothing new to keep (a refit's previous model stays:
                # fit restores it, every fitted attribute with it).
                kept = " The previous model is kept." if hasattr(self, "flow_") else ""
                raise _DivergedAtStart(
                    f"Training diverged ({result.divergence}) before any epoch gave"
                    " usable weights, so there is no"
                    f" {'newly ' if continuing else ''}trained model to keep.{kept}"
                    " Lower learning_rate, clip harder (a lower grad_clip), or use"
                    " objective='dsm' with a larger noise_std."
                )
            flow = flow.to(dtype=torch.float64)
            if not result.interrupted:
                self._checked_log_normalizer(flow)  # a singular flow says so first
                self._check_usable(flow, preprocessing, data.x_train)
            elif result.n_iter == 0 or self._unusable(
                flow, preprocessing, data.x_train
            ):
                # A first fit interrupted where this flow is untrained (in its
                # first epoch), singular or scores some training rows as -inf or
                # NaN: the flows trained before it are kept; with none, the
                # estimator stays unfitted and the interruption reaches the
                # caller, as a refit's does.
                if not trained:
                    raise KeyboardInterrupt
                results.append(result)
                break
            if whiten and result.interrupted:
                whitened.append(False)  # one entry per flow kept
            elif whiten:
                try:
                    whitened.append(
                        self._whiten(
                            flow,
                            preprocessing,
                            (
                                x_train,
                                weights
                                if weights is None or train_rows is None
                                else weights[train_rows],
                            ),
                            None
                            if validation_rows is None
                            else (X[validation_rows], as_tensor(validation_rows)),
                            seed,
                            keep_if_worse=whiten_explicitly,
                        )
                    )
                except KeyboardInterrupt:
                    if hasattr(self, "flow_"):  # a refit: the previous model stays
                        raise
                    # A first fit keeps the flow trained so far, unwhitened
                    # (_whiten has undone its refit).
                    whitened.append(False)
                    result.interrupted = True
                    result.stop_reason = (
                        "Training interrupted by user during the output whitening;"
                        " the flow is the one before it."
                    )
            kept = False
            if refinement_epochs > 0 and not (result.diverged or result.interrupted):
                flow, kept, interrupted, unconverged = self._refine(
                    flow,
                    preprocessing,
                    data,
                    refinement_epochs,
                    seed,
                    label=_flow_label(index, len(members)),
                )
                if interrupted and hasattr(self, "flow_"):
                    raise KeyboardInterrupt
                # the fit did not end as asked: not converged
                refinement_unconverged = refinement_unconverged or bool(unconverged)
                if unconverged == "capped":
                    refinement_capped.append(index)
                if interrupted:
                    result.interrupted = True
                    result.stop_reason = (
                        "Training interrupted by user during the likelihood"
                        " refinement; the flow is the one before it."
                    )
            refined.append(kept)
            self._checked_log_normalizer(flow)
            if not result.interrupted:
                worse[index] = start_check.drop(
                    start, start_check.mean_log_likelihood(flow)
                )
            trained.append(flow)
            results.append(result)
            if result.interrupted:  # a first fit keeps what was trained so far
                break
        planned = len(members)
        flow = trained[0] if len(trained) == 1 else FlowMixture(trained)
        # An interrupted first fit keeps fewer flows than planned: the spec says
        # what was kept, so that a pickle or a warm start rebuilds the same model.
        flow_spec = {**flow_spec, "n_flows": len(trained)}
        log_normalizer = self._checked_log_normalizer(flow)
        # Nothing is assigned before this point, so a fit that raises changes nothing.
        self.__dict__.pop("_partial_fit_state", None)
        self._set_model(
            preprocessing_spec,
            flow_spec,
            objective,
            settings.learning_rate,
            flow,
            preprocessing,
            device,
            log_normalizer,
        )
        result = results[0]
        self.early_stopping_metric_ = (
            settings.early_stopping_metric if result.validation_scores else None
        )
        self.noise_annealing_ = settings.noise_annealing
        # whether a warm_start fit continuing this one keeps the annealing's end
        self._holds_smoothing = holds_annealing_end or settings.noise_annealing > 0
        self.whiten_output_ = whiten
        self.whitened_flows_ = np.array(whitened or [False] * len(trained), dtype=bool)
        self.likelihood_refinement_ = refinement_epochs
        self.refined_flows_ = np.array(refined, dtype=bool)
        self.n_iter_ = result.n_iter
        self.loss_curve_ = list(result.loss_curve)
        self.validation_scores_ = (
            list(result.validation_scores) if result.validation_scores else None
        )
        self.validation_loss_curve_ = (
            list(result.validation_losses) if result.validation_losses else None
        )
        self.best_validation_score_ = result.best_validation_score
        # An interrupted fit did not run as asked, wherever the interrupt came
        # (training, the whitening or the refinement): it has not converged.
        worse = {index: drop for index, drop in worse.items() if drop is not None}
        self.converged_ = (
            not refinement_unconverged
            and not worse
            and all(r.converged and not (r.diverged or r.interrupted) for r in results)
        )
        # One warning for the flows that stopped unconverged for the same reason
        # (a mixture's flows usually all reach max_iter), not one per flow.
        unconverged: dict[str, list[int]] = {}
        for index, result in enumerate(results):
            where = _flow_label(index, planned)
            if result.diverged:
                warnings.warn(
                    result.stop_reason + where, ConvergenceWarning, stacklevel=4
                )
            elif result.interrupted:
                kept_flows = (
                    f" The model holds the {len(trained)} of {planned} flows trained"
                    " so far."
                    if planned > 1
                    else ""
                )
                warnings.warn(
                    result.stop_reason + where + kept_flows, UserWarning, stacklevel=4
                )
                break
            elif not result.converged and index not in worse:
                # (more epochs would not help a flow that ended below its start)
                unconverged.setdefault(result.stop_reason, []).append(index)
        replaced = (
            " It replaces the model the warm start continued; refit that one"
            " with warm_start=False to start afresh."
            if continuing
            else ""
        )
        for index, drop in worse.items():
            warnings.warn(
                f"Training ended worse than it started{_flow_label(index, planned)}:"
                f" {drop}. Its steps were too large: lower learning_rate (or"
                f" grad_clip).{replaced}",
                ConvergenceWarning,
                stacklevel=4,
            )
        for stop_reason, indices in unconverged.items():
            flows = "flows have" if len(indices) > 1 else "flow has"
            which = _flows_label(indices, planned)
            warnings.warn(
                f"{stop_reason.rstrip('.')}{which}. The {flows} not converged yet:"
                f" {self._unconverged_advice()}",
                ConvergenceWarning,
                stacklevel=4,
            )
        if refinement_capped:
            warnings.warn(
                "The likelihood refinement"
                f"{_flows_label(refinement_capped, planned)} ran all its"
                f" {refinement_epochs} epochs without stopping on its own: it has not"
                f" converged. {self._unconverged_advice(refinement=True)}",
                ConvergenceWarning,
                stacklevel=4,
            )
        return any(result.interrupted for result in results)

    def _set_model(
        self,
        preprocessing_spec: dict[str, Any],
        flow_spec: dict[str, Any],
        objective: str,
        learning_rate: float,
        flow: Flow,
        preprocessing: torch.nn.Module,
        device: torch.device,
        log_normalizer: float,
    ) -> None:
        """Assign the fitted model; the last step of ``fit`` and ``partial_fit``."""
        self._preprocessing_spec = preprocessing_spec
        self._flow_spec = flow_spec
        self._structure = self._structure_params()
        self.objective_ = objective
        self.learning_rate_ = learning_rate
        self.marginal_transform_ = (
            "kde" if preprocessing_spec.get("kde_columns") is not None else None
        )
        dequantized = preprocessing_spec["dequantize_columns"]
        self.dequantized_features_ = (
            np.zeros(self.n_features_in_, dtype=bool)
            if dequantized is None
            else np.asarray(dequantized, dtype=bool).copy()
        )
        self.flow_ = flow
        self.n_flows_ = len(flow.members) if isinstance(flow, FlowMixture) else 1
        self.preprocessing_ = preprocessing
        self.device_ = str(device)
        self.log_normalizer_ = log_normalizer

    def _refine(
        self,
        flow: Flow,
        preprocessing: torch.nn.Module,
        data: _TrainingRows,
        n_epochs: int,
        seed: int,
        warmup_epochs: int | None = None,
        patience: str | None = None,
        label: str = "",
    ) -> tuple[Flow, bool, bool, Literal["diverged", "capped"] | None]:
        """Continue ``flow`` by maximum likelihood for ``n_epochs`` (see
        ``likelihood_refinement``), the learning rate warming up over the first
        ``warmup_epochs`` (``None``: ``REFINEMENT_WARMUP_EPOCHS``), the patience
        counting from ``patience`` (``None``: ``REFINEMENT_PATIENCE``), ``label``
        naming the flow in a divergence's warning (``" (flow 2 of 4)"``); returns
        the flow to keep, whether the refinement's weights were kept (a float64
        flow either way), whether the user interrupted it and whether it ended
        unconverged and how: ``"diverged"`` (it warns), ``"capped"``, its weights
        kept after all ``n_epochs`` without stopping on its own (the caller
        warns, once for every flow of a mixture that did), or ``None``."""
        if warmup_epochs is None:
            warmup_epochs = REFINEMENT_WARMUP_EPOCHS
        if patience is None:
            patience = REFINEMENT_PATIENCE
        settings = resolve_training_settings(
            "ml",
            learning_rate=self.learning_rate,
            early_stopping_metric="log_likelihood",
            noise_annealing=0.0,
        )
        config = self._training_config("ml", settings, data.x_train.shape[0])
        steps_per_epoch = math.ceil(data.x_train.shape[0] / config.batch_size)
        config = dataclasses.replace(
            config,
            max_iter=n_epochs,
            warmup_steps=min(warmup_epochs, n_epochs) * steps_per_epoch,
            continuation_patience=patience,
        )
        refined = copy.deepcopy(flow).to(dtype=self._training_dtype("ml"))
        result = data.train(refined, preprocessing, config, seed + 2, keep_initial=True)
        # After a divergence, train() restored the best held-out weights before it:
        # an epoch's that beat the start, kept as any such epoch is. Without
        # held-out rows nothing judged them, and the flow before it is kept.
        judged = result.best_validation_score is not None
        unconverged = "diverged" if result.diverged else None
        undone = result.kept_initial or (result.diverged and not judged)
        if result.diverged:
            warnings.warn(
                f"The likelihood refinement{label} diverged after {result.n_iter}"
                f" epochs ({result.divergence}); the flow kept is "
                + ("the one before it" if undone else "its best epoch's before that")
                + ". A lower learning_rate steadies it; likelihood_refinement=0"
                " skips it.",
                ConvergenceWarning,
                stacklevel=5,  # _refine, _fit, fit, its validation wrapper, the user
            )
        if undone or result.interrupted:
            # the float64 weights it started from, unrounded
            return flow, False, result.interrupted, unconverged
        refined = refined.to(dtype=torch.float64)
        if self._unusable_reason(refined, preprocessing, data.x_train):
            # a refinement that broke the flow is undone
            return flow, False, False, unconverged
        # ran all its epochs: the caller says so once for every flow it happened to
        capped = not (result.converged or result.diverged)
        return refined, True, False, "capped" if capped else unconverged

    @staticmethod
    def _whiten(
        flow: Flow,
        preprocessing: torch.nn.Module,
        training: tuple[NDArray[np.float64], NDArray[np.float64] | None],
        validation: tuple[NDArray[np.float64], torch.Tensor | None] | None,
        seed: int,
        *,
        keep_if_worse: bool,
    ) -> bool:
        """Refit ``flow``'s last dense layer on the training rows (see
        ``whiten_output``; dequantized columns take one fixed noise sample). Unless
        ``keep_if_worse``, undo it if the held-out rows' mean log-likelihood
        drops. Returns whether the refit was kept. An interrupt leaves the flow as
        it was and passes on."""
        device = flow.device
        x_train, train_weights = training
        generator = torch.Generator(device=device).manual_seed(seed + 1)
        with torch.no_grad():
            x, _ = preprocessing(torch.from_numpy(x_train).to(device=device), generator)

        def held_out_score() -> float:
            assert validation is not None
            rows, row_weights = validation
            # dequantized columns as training saw them, the same noise each call
            log_density = evaluate_log_likelihood(
                flow,
                preprocessing,
                torch.from_numpy(rows).to(device=device),
                generator=held_out_generator(seed + 2, device),
            )
            if row_weights is None:
                return float(log_density.mean())
            return float((row_weights * log_density).sum() / row_weights.sum())

        check = validation is not None and not keep_if_worse
        before = held_out_score() if check else None
        last = flow.layers[-1]
        saved = [p.detach().clone() for p in last.parameters()]

        def undo() -> None:
            with torch.no_grad():
                for parameter, value in zip(last.parameters(), saved, strict=True):
                    parameter.copy_(value)

        try:
            gain = whiten_output(
                flow,
                x.to(flow.dtype),
                None
                if train_weights is None
                else torch.from_numpy(train_weights).to(device=device),
            )
            if gain is None:  # outputs that cannot be whitened: the flow is unchanged
                return False
            if before is not None and not held_out_score() >= before:
                undo()
                return False
        except KeyboardInterrupt:  # even halfway through: the flow as it was
            undo()
            raise
        return True

    @staticmethod
    def _unusable_reason(
        flow: Flow | FlowMixture, preprocessing: Preprocessing, x: torch.Tensor
    ) -> str | None:
        """Why trained weights that are finite are still unusable, or ``None``, so
        that training diverged without a non-finite weight: their log-density is
        not finite on some of the training rows (the first 1 024), or the flow
        cannot map some of them (the first ``_ROUND_TRIP_ROWS``) back from its
        base space, so that it could not sample."""
        check = _RowsCheck(preprocessing, x[:_CHECKED_ROWS], None, held_out=False)
        return check.unusable_reason(flow)

    @classmethod
    def _check_usable(
        cls, flow: Flow | FlowMixture, preprocessing: torch.nn.Module, x: torch.Tensor
    ) -> None:
        """Raise :meth:`_unusable_reason`'s reason as a ``ValueError``."""
        reason = cls._unusable_reason(flow, preprocessing, x)
        if reason is not None:
            raise ValueError(
                f"{reason} Refit with a lower learning_rate (or a lower grad_clip);"
                " the estimator keeps its previous state."
            )

    @classmethod
    def _unusable(
        cls, flow: Flow, preprocessing: torch.nn.Module, x: torch.Tensor
    ) -> bool:
        """Whether ``flow`` is singular, scores some of ``x`` as -inf or NaN, or
        has collapsed (see :meth:`_unusable_reason`)."""
        with torch.no_grad():
            if not math.isfinite(float(flow.log_normalizer())):
                return True
        return cls._unusable_reason(flow, preprocessing, x) is not None

    @staticmethod
    def _checked_log_normalizer(flow: Flow) -> float:
        with torch.no_grad():
            log_normalizer = float(flow.log_normalizer())
        if not math.isfinite(log_normalizer):
            raise ValueError(
                "The fitted flow is singular (its log-normalizer is not finite); refit"
                " with a lower learning_rate."
            )
        return log_normalizer

    def _partial_fit(self, X: ArrayLike, sample_weight: ArrayLike | None) -> bool:
        """Train one epoch on the chunk ``X``; whether the chunk was kept (a
        chunk on which a flow diverges is discarded, with a warning, and the
        estimator is left exactly as it was)."""
        first = not hasattr(self, "flow_")
        with failures_shared(flag_device(lambda: resolve_device(self.device))):
            # (as in _fit)
            if not first:
                self._check_warm_start(
                    "partial_fit continues the fitted flow",
                    # fit with warm_start=True refuses the change too
                    "Call fit with warm_start=False to start a new flow"
                    if self.warm_start
                    else "Call fit to start a new flow",
                )
            device = resolve_device(self.device)
            integer_limits = integer_resolution_limits(X)
            X = self._validated_training_data(
                X, reset=first, min_rows=2 if first else 1
            )
            rows, weights = check_sample_weight(
                sample_weight, X, min_rows=2 if first else 1
            )
            if rows is not None:
                X = X[rows]
            n_features = X.shape[1]
            check_magnitude(X, self.preprocessing)
        if current_group() is not None:
            # Under torch.distributed every rank must train on the same chunk: a
            # copy of the random state gives the seed to compare, leaving the
            # caller's as is.
            probe = copy.deepcopy(check_random_state(self.random_state))
            check_same_everywhere(
                X,
                int(probe.randint(np.iinfo(np.int32).max)),
                weights,
                device,
                settings=self.get_params(deep=False),
                start=None if first else self._start_digest,
            )
        objective, settings = self._objective_and_settings(n_features)
        # One flow, or every flow of a mixture fitted by fit, each with its own
        # recorded state (a list of them for a mixture).
        previous = None if first else self.flow_
        members = (
            list(previous.members) if isinstance(previous, FlowMixture) else [previous]
        )
        states = getattr(self, "_partial_fit_state", None)
        if states is None:
            states = [None] * len(members)
        elif not isinstance(states, list):
            states = [states]
        random_state = check_random_state(self.random_state)
        if first:
            flow_spec = self._new_flow_spec(n_features)
            preprocessing_spec = self._fit_preprocessing(
                X, weights, smoothed=objective == "dsm", integer_limits=integer_limits
            )
            self._warn_if_on_a_hyperplane(
                X, preprocessing_spec, smoothed=objective == "dsm", stacklevel=6
            )
            flow_spec["passed_columns"] = passed_columns(preprocessing_spec, flow_spec)
        else:
            flow_spec, preprocessing_spec = self._flow_spec, self._preprocessing_spec
            check_within_fitted_box(X, preprocessing_spec)
            _warn_if_structure_broken(X, preprocessing_spec, stacklevel=6)
        member_spec = {**flow_spec, "n_flows": 1}
        preprocessing = build_preprocessing(preprocessing_spec).to(
            device=device, dtype=torch.float64
        )
        config = self._training_config(
            objective, settings, X.shape[0], incremental=True
        )
        n_iter = getattr(self, "n_iter_", 0)
        x = torch.from_numpy(X).to(device=device)
        w = None if weights is None else torch.from_numpy(weights).to(device=device)
        fitted, trainers, results = [], [], []
        for member, state in zip(members, states, strict=True):
            # A recorded state carries its generator: draw no seed then.
            seed = (
                int(random_state.randint(np.iinfo(np.int32).max))
                if state is None
                else 0
            )
            flow = build_flow(
                member_spec, torch.Generator().manual_seed(seed if first else 0)
            )
            if member is not None and state is None:  # continue a fit by fit
                flow.load_state_dict(member.state_dict())
            flow = flow.to(device=device, dtype=self._training_dtype(objective))
            # A new trainer on new objects, loaded from the recorded state: the
            # fitted model changes only at the end, so a call that raises changes
            # nothing.
            generator = torch.Generator(device=device).manual_seed(seed)
            trainer = _Trainer(flow, preprocessing, config, generator)
            if state is not None:
                trainer.set_state(state)
            # the chunk's rows, scored by the model before and after the epoch
            check = _RowsCheck(
                preprocessing,
                x[:_CHECKED_ROWS],
                None if w is None else w[:_CHECKED_ROWS],
                held_out=False,
            )
            before = check.mean_log_likelihood(trainer.ema.model)
            result = train_epoch(trainer, x, w, epoch=n_iter + 1)
            member_flow = _trainable_copy(trainer.ema.model)
            if not result.diverged:
                reason = check.chunk_divergence(member_flow, before)
                if reason is not None:
                    result.diverged, result.stop_reason = True, reason
            if result.diverged and first:
                raise ValueError(
                    f"{result.stop_reason.rstrip('.')} on the first chunk given to"
                    " partial_fit,"
                    " so there is no model to keep: call it again with a lower"
                    " learning_rate (or a lower grad_clip)."
                )
            fitted.append(member_flow)
            trainers.append(trainer)
            results.append(result)
        diverged = [index for index, result in enumerate(results) if result.diverged]
        if diverged:
            # All or nothing: a flow that diverged discards the chunk for every
            # flow, and nothing is assigned, so the estimator is exactly the one
            # before the call (its float64 weights, its fitted attributes).
            where = _flows_label(diverged, len(results))
            warnings.warn(
                f"{results[diverged[0]].stop_reason.rstrip('.')}{where}. partial_fit"
                f" discarded this chunk{' for every flow' if where else ''}; the"
                " model is the one before the call.",
                ConvergenceWarning,
                stacklevel=5,  # this, partial_fit, its two wrappers, the user's call
            )
            return False
        for member_flow in fitted:
            self._checked_log_normalizer(member_flow)
        new_states = [trainer.get_state() for trainer in trainers]
        fitted_flow = fitted[0] if len(fitted) == 1 else FlowMixture(fitted)
        log_normalizer = self._checked_log_normalizer(fitted_flow)
        result = results[0]
        # Nothing is assigned before this point, so a call that raises changes
        # nothing.
        self._partial_fit_state = new_states[0] if len(new_states) == 1 else new_states
        self._set_model(
            preprocessing_spec,
            flow_spec,
            objective,
            settings.learning_rate,
            fitted_flow,
            preprocessing,
            device,
            log_normalizer,
        )
        self.early_stopping_metric_ = None
        self.noise_annealing_ = 0.0
        self._holds_smoothing = False
        self.whiten_output_ = False
        self.whitened_flows_ = np.zeros(self.n_flows_, dtype=bool)
        self.likelihood_refinement_ = 0
        self.refined_flows_ = np.zeros(self.n_flows_, dtype=bool)
        self.n_iter_ = n_iter + result.n_iter
        self.loss_curve_ = [*getattr(self, "loss_curve_", []), *result.loss_curve]
        self.validation_scores_ = None
        self.validation_loss_curve_ = None
        self.best_validation_score_ = None
        self.converged_ = False
        return True

    def _smooths_every_row(self, preprocessing_spec: dict[str, Any]) -> bool:
        """Whether training adds continuous noise to every varying column.

        Then a repeated row is a draw of a continuous density, not a point mass,
        and the early-stopping rows may be a plain random share of the rows.
        """
        if self.jitter > 0:
            return True
        dequantized = preprocessing_spec["dequantize_columns"]
        if dequantized is None:
            return False
        constant = preprocessing_spec["constant_columns"]
        varying = np.ones_like(dequantized) if constant is None else ~constant
        return bool(np.all(dequantized[varying]))

    def _objective_and_settings(
        self, n_features: int
    ) -> tuple[str, ResolvedSettings]:
        """The objective and the training settings of a fit on ``n_features``
        features, each ``"auto"`` resolved."""
        objective = resolve_objective(self.objective, n_features)
        return objective, resolve_training_settings(
            objective,
            learning_rate=self.learning_rate,
            early_stopping_metric=self.early_stopping_metric,
            noise_annealing=self.noise_annealing,
            architecture=self._resolve_architecture(n_features),
        )

    def _smooths_rows(
        self, objective: str, settings: ResolvedSettings, refinement_epochs: int
    ) -> bool:
        """Whether training smooths every row by noise (``dsm``, or a noise
        annealing) with no likelihood refinement after it, which trains on the
        rows unsmoothed."""
        return refinement_epochs == 0 and (
            objective == "dsm"
            or (settings.noise_annealing > 0 and self.noise_std > 0)
        )

    def _would_model_relations(self, n_features: int) -> tuple[bool, bool]:
        """Whether a fresh fit on ``n_features`` features would model exact
        linear relations (``linear_relations="narrow"``, standardized columns,
        no smoothing of the rows), and whether it dequantizes integer columns
        (those never take part). ``(False, False)`` where a setting is invalid:
        the fit says so."""
        # (fit_preprocessing_spec models them under "standardize" only)
        if not self._models_relations() or self.preprocessing != "standardize":
            return False, False
        try:
            objective, settings = self._objective_and_settings(n_features)
            refinement_epochs = resolve_likelihood_refinement(
                self.likelihood_refinement,
                objective,
                n_features,
                self._resolved_max_iter(),
            )
            dequantize = resolve_dequantize(self.dequantize, self.preprocessing)[0]
        except (TypeError, ValueError):
            return False, False
        if not self._models_relations(
            self._smooths_rows(objective, settings, refinement_epochs)
        ):
            return False, False
        return True, bool(dequantize)

    def _models_relations(self, smoothed: bool = False) -> bool:
        """Whether exact linear relations are modelled (``linear_relations=
        "narrow"``) when training ``smoothed`` the rows or not: not when noise
        (``jitter``, or the objective's) already gives them a density."""
        return self.linear_relations == "narrow" and not smoothed and self.jitter == 0

    def _resolve_architecture(self, n_features: int) -> str:
        if self.architecture != "auto":
            return self.architecture
        if self.image_shape is not None:
            return "conv"
        return "coupling" if n_features >= 2 else "fc"

    def _training_dtype(self, objective: str) -> torch.dtype:
        # fdssm divides differences of energies by epsilon^2: in float32 a small
        # radius leaves only rounding error (at 1e-3 the loss is off by more than its
        # own size), so such fits run in float64.
        if objective == "fdssm" and self.fd_epsilon < _FDSSM_FLOAT32_MIN_EPSILON:
            return torch.float64
        return torch.float32

    def _objective_settings(self, objective: str) -> dict[str, Any]:
        settings = {
            "ssm": {"n_slices": self.n_slices},
            "dsm": {"noise_std": self.noise_std},
            "fdssm": {"fd_epsilon": self.fd_epsilon, "n_slices": self.n_slices},
        }
        return settings.get(objective, {})

    def _structure_params(self) -> dict[str, Any]:
        """The parameters that fix the flow's shape and the preprocessing."""
        params = {
            name: copy.deepcopy(getattr(self, name)) for name in _STRUCTURE_PARAMS
        }
        # as a new flow uses it: the outlier detector's "auto" follows novelty
        params["hidden_layer_sizes"] = as_layer_sizes(
            copy.deepcopy(self._resolved_hidden_layer_sizes())
        )
        params["marginal_transform"] = self._resolved_marginal_transform()
        params["image_shape"] = _normalized_image_shape(params.get("image_shape"))
        return params

    def _start_digest(self) -> bytes:
        """The digest of the fitted state a continued fit starts from, which
        every rank must share: the flow's and the preprocessing's tensors and
        the epochs trained."""
        return start_digest(self.flow_, self.preprocessing_, int(self.n_iter_))

    def _check_warm_start(
        self,
        continuing: str = "warm_start=True continues the fitted flow",
        remedy: str = "Set warm_start=False to fit a new flow",
    ) -> None:
        fitted = getattr(self, "_structure", None)
        if fitted is None:  # a model pickled before this was recorded
            return
        fitted = {
            # fitted before exact linear relations were modelled: as "warn" does
            "linear_relations": "warn",
            **fitted,
            "image_shape": _normalized_image_shape(fitted.get("image_shape")),
        }
        current = self._structure_params()
        # "auto" fitted, and now the value it resolved to: the same flow.
        resolved = {
            name: getattr(self, attribute)
            for name, attribute in (
                ("architecture", "architecture_"),
                ("n_flows", "n_flows_"),
                ("marginal_transform", "marginal_transform_"),
            )
            if hasattr(self, attribute)
        }
        unused = _unused_structure_params(
            resolved["architecture"],
            fitted["coupling_transform"],
            fitted["preprocessing"],
        )
        # the current parameters build the architecture fitted
        same_architecture = resolved.get(
            "architecture"
        ) == self._resolve_architecture(self.n_features_in_)
        if same_architecture and resolved["architecture"] in ("coupling", "fc"):
            # their flows ignore image_shape, unless it turns "auto" into "conv"
            unused |= {"image_shape"}
        if same_architecture and current["architecture"] == "auto":
            # now "auto", which resolves to the architecture fitted: the same flow
            current["architecture"] = fitted["architecture"]
        changed = [
            name
            for name in _STRUCTURE_PARAMS
            if name not in unused
            and not same_value(fitted[name], current[name])
            and not (
                same_value(fitted[name], "auto")
                and name in resolved
                and same_value(resolved[name], current[name])
            )
        ]
        if changed:
            details = ", ".join(
                f"{name}={fitted[name]!r} -> {current[name]!r}" for name in changed
            )
            raise ValueError(
                f"{continuing}, but {details} changed since it was fitted, and a"
                " fitted flow cannot change its shape or preprocessing."
                f" {remedy}, or restore the previous value."
                + self._structure_change_advice(changed)
            )

    def _structure_change_advice(self, changed: list[str]) -> str:
        """More of ``_check_warm_start``'s message about the ``changed`` structure
        parameters (the outlier detector explains an ``"auto"`` that resolves
        anew); empty here."""
        return ""

    def _feature_list(self, columns: NDArray[np.intp]) -> list[Any]:
        """The features ``columns`` as a message names them: by name when ``X``
        had names, else by index."""
        names = getattr(self, "feature_names_in_", None)
        return (
            [str(name) for name in names[columns]]
            if names is not None
            else columns.tolist()
        )

    def _warn_if_on_parallel_planes(
        self,
        X: NDArray[np.float64],
        tested: NDArray[np.bool_],
        dequantized: NDArray[np.bool_],
        *,
        stacklevel: int,
    ) -> None:
        """Warn when an exact linear relation ties two or more continuous
        features to dequantized ones (``total = price + fee`` with a whole-number
        ``fee``): the dequantization noise does not break it (``total - price``
        stays a whole number), so the rows lie on parallel hyperplanes, one per
        value of the integer features, and have no density."""
        n_relations, involved = linear_relations(X[:, tested])
        if n_relations == 0:
            return
        columns = np.flatnonzero(tested)[involved]
        continuous = columns[~dequantized[columns]]
        if continuous.size < 2:
            return  # among dequantized features (a one-hot code): noise breaks it
        integers = columns[dequantized[columns]]
        warnings.warn(
            f"The training rows lie on parallel hyperplanes: an exact linear"
            f" relation ties the features {self._feature_list(continuous)} to the"
            f" dequantized integer feature(s) {self._feature_list(integers)} (as a"
            " total ties its continuous part to a count). Dequantizing the integer"
            " features does not break it: the continuous features' combination"
            " stays a whole number, so the rows lie on one hyperplane per integer"
            " value and have no density; the fitted log-likelihood grows as"
            " training goes on. Pass dequantize=False (linear_relations='narrow'"
            " then models the relation), drop the dependent feature, or smooth"
            " the data with jitter (e.g. jitter=1e-3, in standardized units).",
            UserWarning,
            stacklevel=stacklevel,
        )

    def _warn_if_on_a_hyperplane(
        self,
        X: NDArray[np.float64],
        preprocessing_spec: dict[str, Any],
        *,
        smoothed: bool,
        stacklevel: int = 5,
    ) -> None:
        """Warn when the training rows ``X`` (those of positive weight) lie on a
        hyperplane that training does not smooth (no ``jitter``; no noise from
        the objective or the annealing, or a likelihood refinement after them):
        their density is singular there. The
        columns that vary and are not dequantized are tested (a dequantized
        column's noise breaks a relation among such columns alone); a relation
        that two or more of them share with dequantized ones is said apart
        (``_warn_if_on_parallel_planes``)."""
        if smoothed or self.jitter > 0:
            return
        tested = ~constant_columns(X)
        dependent = _dependent_features(preprocessing_spec)
        if dependent is not None:  # modelled: linear_relations="narrow"
            tested &= ~dependent
        with_dequantized = tested.copy()
        dequantized = preprocessing_spec["dequantize_columns"]
        if dequantized is not None:
            tested &= ~dequantized
        if tested.sum() < 2:
            return
        if X.shape[0] <= tested.sum():
            warnings.warn(
                f"The {X.shape[0]} training rows are no more than the"
                f" {int(tested.sum())} features that vary, and so many rows always lie"
                " on a hyperplane. Such data have no density: the fitted"
                " log-likelihood of the training rows grows without bound as"
                " training goes on, while other rows score far lower. Reduce the"
                " features (e.g. PCA to fewer components than rows), smooth the"
                " data with jitter (e.g. jitter=0.1, in standardized units), or fit"
                " more rows.",
                UserWarning,
                stacklevel=stacklevel,
            )
            return
        n_relations, involved = linear_relations(X[:, tested])
        if n_relations == 0:
            if dequantized is not None and dequantized[with_dequantized].any():
                self._warn_if_on_parallel_planes(
                    X, with_dequantized, dequantized, stacklevel=stacklevel + 1
                )
            return
        listed = self._feature_list(np.flatnonzero(tested)[involved])
        relations = "relation holds" if n_relations == 1 else "relations hold"
        warnings.warn(
            f"The training rows lie on a hyperplane: {n_relations} exact linear"
            f" {relations} between feature(s) {listed} (a combination of them is"
            " constant, as when a feature is a sum, a difference or a multiple of"
            " others). Such data have no density: the fitted log-likelihood grows"
            " without bound as training goes on, early stopping does not end it"
            " (held-out rows lie on the same hyperplane), and scores are not"
            " comparable with other models'."
            + self._hyperplane_remedy(),
            UserWarning,
            stacklevel=stacklevel,
        )

    def _hyperplane_remedy(self) -> str:
        """The end of the warning about rows on a hyperplane: what to do."""
        return (
            (
                " linear_relations='narrow' found no feature that the others"
                " give exactly enough to model; drop the redundant features (or"
                if self.linear_relations == "narrow"
                and self.preprocessing == "standardize"
                else " Use linear_relations='narrow' (with"
                " preprocessing='standardize'), drop the redundant features (or"
            )
            + " reduce X with PCA), or smooth the data with jitter (e.g."
            " jitter=1e-3, in standardized units)."
        )

    def _fit_preprocessing(
        self,
        X: NDArray[np.float64],
        weights: NDArray[np.float64] | None = None,
        integer_columns: NDArray[np.bool_] | None = None,
        *,
        smoothed: bool = False,
        integer_limits: NDArray[np.float64] | None = None,
    ) -> dict[str, Any]:
        """The preprocessing spec fitted on ``X``; ``smoothed``: whether training
        adds noise to every row (then exact linear relations need no narrow
        normal: the noise gives the rows a density); ``integer_limits``: see
        ``fit_preprocessing_spec``."""
        dequantize, one_bin_constants = resolve_dequantize(
            self.dequantize, self.preprocessing
        )
        # The one-bin probit turns the bin's noise into a standard normal, which
        # only a normal base models exactly (under a Student-t one the bin's
        # density peaks at its centre, its score is no probability and the
        # samples leave the constant): the other bases refuse such a column.
        one_bin_constants = one_bin_constants and self.base_distribution == "normal"
        return fit_preprocessing_spec(
            X,
            kind=self.preprocessing,
            dequantize=dequantize,
            one_bin_constants=one_bin_constants,
            constant_features=self.constant_features,
            bounds=self.bounds,
            logit_alpha=self.logit_alpha,
            sample_weight=weights,
            integer_columns=integer_columns,
            marginal_transform=resolve_marginal_transform(
                self._resolved_marginal_transform(),
                self.preprocessing,
                self._resolve_architecture(X.shape[1]),
            ),
            kernel_wide_scale=self._kernel_wide_scale(),
            linear_relations=self._models_relations(smoothed),
            integer_limits=integer_limits,
            every_column=self._resolve_architecture(X.shape[1]) == "conv",
        )

    # ----------------------------------------------------------------- scoring

    def _to_tensor(self, X: ArrayLike) -> torch.Tensor:
        check_has_columns(X)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return torch.from_numpy(np.array(X, dtype=np.float64, copy=True)).to(
            self.device_
        )

    def _scoring_flow(self) -> Flow | FlowMixture:
        """The flow whose density the scoring and sampling methods use."""
        return self.flow_

    def score_samples(self, X: ArrayLike) -> NDArray[np.float64]:
        """Exact log-density of each row, in the units of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points to evaluate.

        Returns
        -------
        log_density : ndarray of shape (n_samples,)
            ``log p(x)`` in float64, including the preprocessing's log-determinant.

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn.datasets import make_moons
        >>> from skebflow import EBFlowDensity
        >>> X, _ = make_moons(200, noise=0.1, random_state=0)
        >>> est = EBFlowDensity(max_iter=30, n_iter_no_change=3, tol=1e-2,
        ...                     device="cpu", random_state=0).fit(X)
        >>> # Two points on the moons, one far from them.
        >>> log_density = est.score_samples([[0.0, 1.0], [1.0, -0.5], [8.0, 8.0]])
        >>> log_density.shape, bool(np.isfinite(log_density).all())
        ((3,), True)
        >>> (log_density[:2] > log_density[2]).tolist()
        [True, True]
        """
        check_is_fitted(self)
        x = self._to_tensor(X)
        log_density = evaluate_log_likelihood(
            self._scoring_flow(), self.preprocessing_, x, chunk_size=_SCORE_CHUNK_ROWS
        )
        return log_density.cpu().numpy()

    def score(self, X: ArrayLike, y: None = None) -> float:
        """Mean log-likelihood of ``X`` per row (higher is better).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points to evaluate.
        y : None
            Ignored.

        Returns
        -------
        score : float
            ``mean(score_samples(X))``.

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn.datasets import make_moons
        >>> from skebflow import EBFlowDensity
        >>> X, _ = make_moons(200, noise=0.1, random_state=0)
        >>> est = EBFlowDensity(max_iter=30, n_iter_no_change=3, tol=1e-2,
        ...                     device="cpu", random_state=0).fit(X)
        >>> score = est.score(X)  # mean log-likelihood per row, in nats
        >>> isinstance(score, float)
        True
        >>> bool(np.isclose(score, est.score_samples(X).mean()))
        True
        """
        return float(np.mean(self.score_samples(X)))

    def energy(self, X: ArrayLike) -> NDArray[np.float64]:
        """Energy of each row: ``-log p(x) - log_normalizer_``, in the units of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points to evaluate.

        Returns
        -------
        energy : ndarray of shape (n_samples,)
            Unnormalized negative log-density, computed from the flow's energy and
            the preprocessing's log-determinant without the log-normalizer, so
            ``score_samples(X) == -energy(X) - log_normalizer_``; ``+inf`` for a row
            outside the ``logit`` box, or so far out that its preprocessed value
            overflows (where ``score_samples`` is ``-inf``).

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn.datasets import make_moons
        >>> from skebflow import EBFlowDensity
        >>> X, _ = make_moons(200, noise=0.1, random_state=0)
        >>> est = EBFlowDensity(max_iter=30, n_iter_no_change=3, tol=1e-2,
        ...                     device="cpu", random_state=0).fit(X)
        >>> energy = est.energy(X[:5])
        >>> energy.shape
        (5,)
        >>> bool(np.allclose(est.score_samples(X[:5]), -energy - est.log_normalizer_))
        True
        """
        check_is_fitted(self)
        x = self._to_tensor(X)
        flow, pieces = self._scoring_flow(), []
        with torch.no_grad():
            for start in range(0, x.shape[0], _SCORE_CHUNK_ROWS):
                chunk = x[start : start + _SCORE_CHUNK_ROWS]
                y, log_abs_det = self.preprocessing_(chunk)
                # as score_samples: a row whose preprocessed value overflows
                # has no density there (+inf, not the NaN of inf - inf)
                energy = flow.energy(y) - log_abs_det
                overflowed = ~torch.isfinite(y).all(dim=1) | torch.isnan(energy)
                pieces.append(energy.masked_fill(overflowed, math.inf))
        energy = torch.cat(pieces) if pieces else x.new_zeros(0)
        return energy.cpu().numpy()

    def log_density_gradient(self, X: ArrayLike) -> NDArray[np.float64]:
        """Gradient of the log-density in ``x`` (the score function), per row.

        Needs no determinant: ``grad log p(x) = -grad E(x)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points to evaluate.

        Returns
        -------
        gradient : ndarray of shape (n_samples, n_features)
            NaN on the rows whose log-density is ``-inf`` (outside the ``logit``
            box), where the density has no gradient, and where the gradient
            overflows a float (rows near float64's limit).

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn.datasets import make_moons
        >>> from skebflow import EBFlowDensity
        >>> X, _ = make_moons(200, noise=0.1, random_state=0)
        >>> est = EBFlowDensity(max_iter=30, n_iter_no_change=3, tol=1e-2,
        ...                     device="cpu", random_state=0).fit(X)
        >>> x = X[:1]
        >>> gradient = est.log_density_gradient(x)
        >>> gradient.shape
        (1, 2)
        >>> # It agrees with central differences of score_samples.
        >>> step = 1e-5 * np.eye(2)
        >>> numeric = [(est.score_samples(x + h) - est.score_samples(x - h))[0] / 2e-5
        ...            for h in step]
        >>> bool(np.allclose(gradient[0], numeric, rtol=1e-4, atol=1e-6))
        True
        """
        check_is_fitted(self)
        x = self._to_tensor(X)
        flow, pieces = self._scoring_flow(), []
        for start in range(0, x.shape[0], _SCORE_CHUNK_ROWS):
            chunk = x[start : start + _SCORE_CHUNK_ROWS].requires_grad_(True)
            y, log_abs_det = self.preprocessing_(chunk)
            log_density = log_abs_det - flow.energy(y)
            defined = torch.isfinite(log_density)
            (gradient,) = torch.autograd.grad(
                torch.where(defined, log_density, 0.0).sum(), chunk
            )
            # a finite log-density whose gradient overflowed (rows near float64's
            # limit) has none that a float holds: NaN too
            defined = defined & torch.isfinite(gradient).all(dim=1)
            pieces.append(torch.where(defined.unsqueeze(1), gradient, torch.nan))
        gradient = torch.cat(pieces) if pieces else x.new_zeros(x.shape)
        return gradient.cpu().numpy()

    def sample(
        self,
        n_samples: int = 1,
        random_state: int | np.random.RandomState | None = None,
    ) -> NDArray[np.float64]:
        """Draw exact samples by inverting the flow.

        Parameters
        ----------
        n_samples : int, default=1
            Number of samples.
        random_state : int, RandomState instance or None, default=None
            Seed of the draws; ``None`` draws from NumPy's global generator as
            :meth:`sklearn.neighbors.KernelDensity.sample` does.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
            Samples in the units of the training data.

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn.datasets import make_moons
        >>> from skebflow import EBFlowDensity
        >>> X, _ = make_moons(200, noise=0.1, random_state=0)
        >>> est = EBFlowDensity(max_iter=30, n_iter_no_change=3, tol=1e-2,
        ...                     device="cpu", random_state=0).fit(X)
        >>> samples = est.sample(5, random_state=0)
        >>> samples.shape, bool(np.isfinite(samples).all())
        ((5, 2), True)
        >>> bool(np.array_equal(samples, est.sample(5, random_state=0)))  # seeded
        True
        """
        check_is_fitted(self)
        return self._sample_by_inversion(n_samples, random_state, stacklevel=4)

    def _sample_by_inversion(
        self, n_samples: int, random_state: Any, stacklevel: int
    ) -> NDArray[np.float64]:
        """:meth:`sample`'s draws; its warnings name the frame ``stacklevel`` up
        from the helper that gives them (the user's call of a public ``sample``
        that calls this directly: 4)."""
        n_samples = check_positive_integer(n_samples, "n_samples")
        seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
        generator = torch.Generator(device=self.device_).manual_seed(seed)
        flow, pieces = self._scoring_flow(), []
        first_beyond = left_beyond = 0
        with torch.no_grad():
            for start in range(0, n_samples, _SCORE_CHUNK_ROWS):
                count = min(_SCORE_CHUNK_ROWS, n_samples - start)
                y, first, left = _draws_in_image(
                    flow, self.preprocessing_, count, generator
                )
                first_beyond, left_beyond = first_beyond + first, left_beyond + left
                pieces.append(self.preprocessing_.inverse(y))
        _warn_about_draws_beyond_image(
            n_samples, first_beyond, left_beyond, stacklevel=stacklevel
        )
        samples = torch.cat(pieces).cpu().numpy()
        _warn_about_non_finite_draws(samples, stacklevel=stacklevel)
        return samples

    def _langevin_generator(self, random_state: Any) -> torch.Generator:
        seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
        return torch.Generator(device=self.device_).manual_seed(seed)

    def sample_langevin(
        self,
        n_samples: int = 1,
        random_state: int | np.random.RandomState | None = None,
        *,
        n_steps: int = 500,
        step_size: float = 0.05,
        metropolis: bool = True,
        initial_temperature: float = 1.0,
        precondition: bool = True,
    ) -> NDArray[np.float64]:
        """Draw samples by Langevin dynamics on the energy, without inverting the flow.

        Each step costs one energy gradient, :math:`O(D^2 L)`: no inverse and no
        determinant. Chains start from a standard normal in the preprocessed space and
        run ``n_steps`` (Metropolis-adjusted by default: once the chains' step is
        held, their kernel leaves ``exp(-E)`` invariant; the draws are approximate,
        the more so with few steps; see the user guide).
        The chains run 2 048 at a time, so memory does not grow with
        ``n_samples``.

        Parameters
        ----------
        n_samples : int, default=1
            Number of chains (samples).
        random_state : int, RandomState instance or None, default=None
            Seed of the chains.
        n_steps : int, default=500
            Langevin steps.
        step_size : float, default=0.05
            Step size in preprocessed (standardized) units; with ``metropolis``,
            the chains' starting step, adapted during the first half of the
            steps towards a mean acceptance of 0.574 and then held (with
            ``precondition``, the pilot's, and the whitened stage's starts from
            the pilot's held step). The chains (2 048 at a time) share one step,
            since they sample one density.
        metropolis : bool, default=True
            Metropolis-adjusted (MALA) if True, unadjusted (ULA) otherwise.
        initial_temperature : float, default=1.0
            Anneal from this temperature down to 1 over the first half of the steps
            (with ``precondition``, of the pilot's).
        precondition : bool, default=True
            With ``metropolis``, at least 20 chains and twice as many as features,
            and at least 16 steps: run the first quarter of the steps as a pilot,
            move its chains that accepted nothing to other chains' states, then
            continue in the coordinates that whiten the pilot chains' spread
            (their covariance, shrunk), where the density is about as wide in
            every direction, with the step adapted again. Without it, the step
            that the density's narrowest direction allows moves the chains
            slowly along its widest: on a correlation of 0.999, 500 steps drew
            samples 13-15 % too narrow along it. See the user guide.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)

        Warns
        -----
        ConvergenceWarning
            When the chains failed: the Metropolis-adjusted chains accepted fewer
            than 1 % of their proposals (lower ``step_size``), or more than 95 %
            with steps that add up to noise of less than half a standard deviation
            of the standardized data (raise ``step_size`` or ``n_steps``), so they
            barely left their random start, or chains accepted none of their
            proposals after the adaptation (lower ``step_size``), or some chains
            ended where the model's log-density is below -50 nats per feature (they
            diverged; lower ``step_size``), or, Metropolis-adjusted, with at
            least 20 chains and twice as many as features, their steps add up to
            noise of a standard
            deviation under 2 times their draws' spread along its widest
            direction: a density much narrower in one direction than in another
            (strongly correlated features) sets a step too small for the chains
            to mix along the wide one in ``n_steps``, and their draws are too
            narrow there (raise ``n_steps``).

        Examples
        --------
        >>> import numpy as np
        >>> from sklearn.datasets import make_moons
        >>> from skebflow import EBFlowDensity
        >>> X, _ = make_moons(200, noise=0.1, random_state=0)
        >>> est = EBFlowDensity(max_iter=30, n_iter_no_change=3, tol=1e-2,
        ...                     device="cpu", random_state=0).fit(X)
        >>> samples = est.sample_langevin(3, random_state=0, n_steps=20)
        >>> samples.shape, bool(np.isfinite(samples).all())
        ((3, 2), True)
        """
        check_is_fitted(self)
        n_samples = check_positive_integer(n_samples, "n_samples")
        _check_langevin_settings(n_steps, step_size, initial_temperature, metropolis)
        generator = self._langevin_generator(random_state)
        flow = self._scoring_flow()
        start = torch.randn(
            n_samples,
            self.n_features_in_,
            generator=generator,
            device=flow.device,
            dtype=flow.dtype,
        )
        settings = {
            "n_steps": n_steps,
            "step_size": step_size,
            "initial_temperature": initial_temperature,
            "generator": generator,
            "chunk_rows": _LANGEVIN_CHUNK_ROWS,
            "progress": self.verbose >= 1,
        }
        if metropolis and precondition:
            result = whitened_langevin(flow.energy, start, **settings)
        else:
            # every chain targets the same density: one step for all, which a
            # chain's own path does not shape (per-chain steps biased the draws)
            result = with_spread(
                langevin(
                    flow.energy,
                    start,
                    metropolis=metropolis,
                    shared_step=True,
                    **settings,
                )
            )
        warned = _warn_if_chains_failed(
            flow,
            result.x,
            result.acceptance_rate,
            metropolis,
            n_stuck=result.n_stuck,
            reach=result.reach,
        )
        # (the unadjusted sampler's steps are the caller's, unadapted: its
        # failure is to run off, which the divergence check tells)
        if metropolis and not warned:
            _warn_if_chains_unmixed(result.reach, result.spread)
        with torch.no_grad():
            return self.preprocessing_.inverse(result.x).cpu().numpy()

    def sample_conditional(
        self,
        X: ArrayLike,
        random_state: int | np.random.RandomState | None = None,
        *,
        method: str = "langevin",
        n_steps: int = 500,
        step_size: float = 0.05,
        metropolis: bool = True,
        initial_temperature: float = 1.0,
    ) -> NDArray[np.float64]:
        """Fill the NaN entries of each row from the model's conditional density.

        ``method="langevin"`` draws the missing entries from
        :math:`p(x_{missing} \\mid x_{observed})` by Langevin dynamics that hold the
        observed entries fixed; ``method="mode"`` maximizes that conditional density
        instead, in the units of ``X``. Preprocessing acts feature by feature, so
        conditioning in the preprocessed space is conditioning in the data space
        (a feature modelled as an affine function of others, see
        ``linear_relations``, observed where one of those others is missing,
        gives it; where two or more are, its value is kept but does not inform
        their draws, with a warning);
        draws made there map back to exact draws in the data space, and the mode
        search adds the preprocessing's log-determinant, which moves the mode
        under ``preprocessing="logit"``. Only the rows with a NaN run chains,
        2 048 at a time, so complete rows cost nothing and, beyond a float64 copy
        of ``X`` and the output, memory does not grow with the number of rows.
        A chain that ends trapped in a false peak of the model far below its
        row's conditional mode (the user guide, "Langevin samples from the
        energy") draws again, started at that mode.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows with NaN where a value is unknown; never modified.
        random_state : int, RandomState instance or None, default=None
            Seed of the chains. Each row's chain draws from a stream of its own,
            keyed by the row's values, the seed and the copies of it before it in
            ``X``: a row is filled alike whatever rows come with it.
        method : {"langevin", "mode"}, default="langevin"
            Sample or maximize.
        n_steps : int, default=500
            Langevin (or gradient) steps.
        step_size : float, default=0.05
            Step size in preprocessed units (Adam's step for ``"mode"``); with
            ``metropolis``, each chain's starting step, adapted during the first
            half of the steps towards an acceptance of 0.574 and then held.
        metropolis : bool, default=True
            Metropolis-adjusted Langevin if True.
        initial_temperature : float, default=1.0
            Annealing start temperature.

        Returns
        -------
        X_filled : ndarray of shape (n_samples, n_features)
            ``X`` with every NaN replaced.

        Warns
        -----
        ConvergenceWarning
            As :meth:`sample_langevin`: when the Metropolis-adjusted chains accepted
            fewer than 1 % of their proposals (lower ``step_size``) or more than
            95 % over too short a reach (raise ``step_size`` or ``n_steps``), or
            when chains (or the mode
            search) ended where the model's log-density is not finite, or below
            -50 nats per feature and more than one nat per feature below their
            start (a row whose observed values are themselves that unlikely does
            not count; lower ``step_size``).

        Raises
        ------
        ValueError
            When a row's observed values have no density under the model (so far
            out that its log-density is ``-inf``, or outside the ``logit`` box):
            the conditional density of its missing values is undefined.

        Examples
        --------
        >>> import numpy as np
        >>> from skebflow import EBFlowDensity
        >>> rng = np.random.RandomState(0)
        >>> x = rng.normal(size=(500, 1))
        >>> X = np.hstack([x, x + 0.1 * rng.normal(size=(500, 1))])
        >>> est = EBFlowDensity(max_iter=30, n_iter_no_change=3, tol=1e-2,
        ...                     learning_rate=1e-2, device="cpu", random_state=0).fit(X)
        >>> filled = est.sample_conditional([[1.0, np.nan]], random_state=0,
        ...                                 method="mode", n_steps=100)
        >>> float(filled[0, 0]), bool(abs(filled[0, 1] - 1.0) < 0.3)
        (1.0, True)
        """
        check_is_fitted(self)
        if method not in ("langevin", "mode"):
            raise ValueError(
                f"method={method!r} is not supported; use 'langevin' or 'mode'."
            )
        _check_langevin_settings(n_steps, step_size, initial_temperature, metropolis)
        check_has_columns(X)
        X = validate_data(
            self, X, dtype=np.float64, reset=False, ensure_all_finite="allow-nan"
        )
        X = np.array(X, dtype=np.float64, copy=True)
        missing = np.isnan(X)
        if not missing.any():
            return X
        check_observed_within_box(X, missing, self._preprocessing_spec)
        flow = self._scoring_flow()
        device = flow.device
        # Chains only for the rows with a value to fill: a complete row costs
        # nothing and, however unlikely under the model, says nothing about them.
        incomplete = np.flatnonzero(missing.any(axis=1))
        rows, row_missing = X[incomplete], missing[incomplete]
        # Each row's chain draws from its own stream, keyed by its values, the
        # seed and its copies before it: its draws do not depend on the other
        # rows of X (nor on their order), as a transformer's output must not.
        seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
        keys = torch.from_numpy(row_keys(rows, seed)).to(device)
        # A feature modelled as an affine function of others (linear_relations)
        # reaches the flow as its residual, a normal 1e-3 of its spread wide:
        # observed, with one of the features it depends on missing, it gives
        # that one (to within that width), which is then held as observed.
        # With more of them missing it is drawn with them, its observed value
        # put back below and one of them solved from it (and said).
        preprocessed_missing = row_missing
        relation_weight = self._preprocessing_spec.get("relation_weight")
        if relation_weight is not None:
            rows, row_missing = _solve_relations(
                rows, row_missing, self._preprocessing_spec
            )
            reads = (np.asarray(relation_weight) != 0).T.astype(np.int64)
            preprocessed_missing = row_missing | (row_missing @ reads > 0)
            uninformed = (preprocessed_missing & ~row_missing).any(axis=1)
            if uninformed.any():
                warnings.warn(
                    f"Row(s) {incomplete[uninformed][:10].tolist()} of X observe a"
                    " feature modelled as an affine function of others"
                    " (linear_relations) while two or more of those others are"
                    " missing: its value does not inform their draws, and one of"
                    " them is then solved from it, so that the filled row keeps"
                    " the relation while the others' draws ignore it.",
                    UserWarning,
                    stacklevel=2,
                )
        x = torch.from_numpy(np.where(row_missing, 0.0, rows)).to(device)
        mask = torch.from_numpy(preprocessed_missing).to(device)
        with torch.no_grad():
            y, _ = self.preprocessing_(x)
            observed = torch.where(mask, 0.0, y)  # the missing entries at 0
            no_density = ~torch.isfinite(observed).all(dim=1)
            no_density |= ~torch.isfinite(flow.energy(observed))
        if bool(no_density.any()):
            rows_without = incomplete[no_density.cpu().numpy()]
            raise ValueError(
                f"Row(s) {rows_without[:10].tolist()} of X have observed values"
                " where the model has no density (so far outside the training"
                " rows that their log-density is -inf): the conditional density"
                " of their missing values is undefined. Drop those rows, or"
                " bring their observed values within reach of the training data."
            )
        generator = KeyedNoise(keys)
        noise = standard_normal(generator, y)
        start = torch.where(mask, noise if method == "langevin" else 0.0 * noise, y)
        if method == "mode":
            # The mode of the density in the data's units: the energy in the
            # preprocessed space minus the preprocessing's log|det| there (a
            # constant for standardization, not for the logit).
            def data_space_energy(y: torch.Tensor) -> torch.Tensor:
                log_abs_det = self.preprocessing_.log_abs_det_at_output(y)
                return flow.energy(y) - log_abs_det

            filled, unsettled = mode_search(
                data_space_energy,
                start,
                mask=mask,
                n_steps=n_steps,
                learning_rate=step_size,
                chunk_rows=_LANGEVIN_CHUNK_ROWS,
            )
            n_unsettled = int(unsettled.sum())
            if n_unsettled:
                warnings.warn(
                    f"The mode search had not settled in {n_unsettled} of"
                    f" {len(filled)} rows: over the last tenth of its {n_steps}"
                    " steps they were still moving one way, so their values stop"
                    " short of the conditional mode (it reaches at most n_steps"
                    " times step_size, in the model's preprocessed units, from"
                    " where it starts, less as the conditional flattens near its"
                    " mode). Raise n_steps or step_size.",
                    ConvergenceWarning,
                    stacklevel=2,
                )
            for step in self.preprocessing_.steps:
                if isinstance(step, BinProbit):  # a constant integer's mode: its bin
                    filled = step.within_bins(filled)
            _warn_if_chains_failed(flow, filled, None, False, starts=start)
        else:
            # the caller's chains, and any redrawn below, run alike
            chains = functools.partial(
                langevin,
                flow.energy,
                n_steps=n_steps,
                step_size=step_size,
                metropolis=metropolis,
                initial_temperature=initial_temperature,
                chunk_rows=_LANGEVIN_CHUNK_ROWS,
                progress=self.verbose >= 1,
            )
            result = chains(start, mask=mask, generator=generator)
            filled = result.x
            # A chain trapped in a false peak of the model's conditional, far
            # below its mode, draws again from that mode (trapped_chains).
            trapped, modes = trapped_chains(
                flow.energy,
                filled,
                mask,
                learning_rate=step_size,
                chunk_rows=_LANGEVIN_CHUNK_ROWS,
            )
            if bool(trapped.any()):
                again = chains(
                    modes[trapped],
                    mask=mask[trapped],
                    generator=KeyedNoise(keys[trapped]),
                )
                filled[trapped] = again.x
            _warn_if_chains_failed(
                flow,
                filled,
                result.acceptance_rate,
                metropolis,
                starts=start,
                n_stuck=result.n_stuck,
                reach=result.reach,
            )
        with torch.no_grad():
            values = self.preprocessing_.inverse(filled).cpu().numpy()
        filled_rows = np.where(row_missing, values, rows)
        if relation_weight is not None:
            filled_rows = _restore_relations(
                filled_rows, row_missing, self._preprocessing_spec
            )
        X[incomplete] = filled_rows
        return X

    # ------------------------------------------------------------- persistence

    def __getstate__(self) -> dict[str, Any]:
        state = dict(
            super().__getstate__()
        )  # object.__getstate__ gives __dict__ itself
        for name in ("flow_", "preprocessing_"):
            if name in state:
                state[name] = state_to_numpy(state[name])
        return state

    @property
    def dependent_features_(self) -> NDArray[np.bool_]:
        """Which features are modelled as affine functions of the others (see
        ``linear_relations``).

        Read from the fitted preprocessing's specification, so models saved
        before it existed have it too (none).

        Examples
        --------
        >>> import numpy as np
        >>> from skebflow import EBFlowDensity
        >>> X = np.random.RandomState(0).normal(size=(300, 3))
        >>> X[:, 2] = X[:, 0] + X[:, 1]  # a total beside its parts
        >>> est = EBFlowDensity(n_flows=1, max_iter=3, random_state=0).fit(X)
        >>> est.dependent_features_.tolist()
        [False, False, True]
        """
        spec = self.__dict__.get("_preprocessing_spec")
        if spec is None:
            raise AttributeError(
                f"This {type(self).__name__} instance is not fitted yet: it has no"
                " dependent_features_."
            )
        dependent = _dependent_features(spec)
        if dependent is None:
            return np.zeros(self.n_features_in_, dtype=bool)
        return dependent

    @property
    def architecture_(self) -> str:
        """The architecture fitted (``architecture`` with ``"auto"`` resolved).

        Read from the fitted flow's specification, so models saved before it
        existed have it too.

        Examples
        --------
        >>> import numpy as np
        >>> from skebflow import EBFlowDensity
        >>> X = np.random.RandomState(0).normal(size=(100, 1))
        >>> EBFlowDensity(n_flows=1, max_iter=2, random_state=0).fit(X).architecture_
        'fc'
        """
        spec = self.__dict__.get("_flow_spec")
        if spec is None:
            raise AttributeError(
                f"This {type(self).__name__} instance is not fitted yet: it has no"
                " architecture_."
            )
        return str(spec["architecture"])

    def __setstate__(self, state: dict[str, Any]) -> None:
        # One pickled before the kernel marginals existed standardized every
        # column: a refit does the same.
        if "marginal_transform" not in state:
            state = {**state, "marginal_transform": None}
        # One pickled before exact linear relations were modelled fitted the rows
        # as they were: a refit does the same.
        if "linear_relations" not in state:
            state = {**state, "linear_relations": "warn"}
        # One pickled before this was recorded: its own annealing is the guess.
        if "flow_" in state and "_holds_smoothing" not in state:
            start = state.get("noise_annealing_", 0.0)
            annealed = isinstance(start, int | float) and start > 0
            state = {**state, "_holds_smoothing": annealed}
        if "flow_" in state and "marginal_transform_" not in state:
            spec = state.get("_preprocessing_spec") or {}
            mapped = spec.get("kde_columns") is not None
            state = {**state, "marginal_transform_": "kde" if mapped else None}
        if "flow_" in state:
            device_name = state.get("device_", "cpu")
            try:
                device = torch.device(device_name)
            except (RuntimeError, TypeError) as error:
                raise ValueError(
                    f"The model's device_ {device_name!r} is not a torch device;"
                    " the file or pickle is corrupted."
                ) from error
            if device.type not in ("cpu", "cuda"):
                raise ValueError(
                    f"The model's device_ {device_name!r} is not one skebflow fits"
                    " on ('cpu' or 'cuda'); the file or pickle is corrupted."
                )
            # (or fitted on cuda:N where this machine has fewer GPUs)
            if device.type == "cuda" and (
                not torch.cuda.is_available()
                or (device.index or 0) >= torch.cuda.device_count()
            ):
                warnings.warn(
                    f"This model was fitted on {device_name!r}, which is not available"
                    " here; it is loaded on the CPU.",
                    UserWarning,
                    stacklevel=2,
                )
                device = torch.device("cpu")
            # Cast to float64 before loading: loading into the float32 modules that
            # build_flow makes would round weights that are not float32 numbers
            # (float64 fits, whitened last layers).
            flow = build_flow(state["_flow_spec"], torch.Generator().manual_seed(0))
            flow = flow.to(dtype=torch.float64)
            check_state_dtypes(flow, state["flow_"], "flow_")
            flow.load_state_dict(state_from_numpy(state["flow_"]))
            preprocessing = build_preprocessing(state["_preprocessing_spec"])
            preprocessing = preprocessing.to(dtype=torch.float64)
            check_state_dtypes(preprocessing, state["preprocessing_"], "preprocessing_")
            preprocessing.load_state_dict(state_from_numpy(state["preprocessing_"]))
            state["flow_"] = flow.to(device=device)
            state["preprocessing_"] = preprocessing.to(device=device)
            state["device_"] = str(device)
        super().__setstate__(state)

    def __sklearn_tags__(self):  # noqa: ANN204 - sklearn's Tags type is private
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.device not in ("cpu", "auto") or (
            self.device == "auto" and torch.cuda.is_available()
        )
        return tags
