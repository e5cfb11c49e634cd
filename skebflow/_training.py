"""The fitting loop: batches, optimizer, EMA, clipping, schedule, early stopping.

Torch and the objectives only; nothing here knows scikit-learn. The estimator turns a
:class:`TrainingResult` into fitted attributes and warnings. One epoch is
:meth:`_Trainer.epoch`, shared by :func:`train` (``fit``: many epochs, a schedule and
early stopping) and :func:`train_epoch` (``partial_fit``: one epoch per call, the
trainer's state kept in between).
"""

from __future__ import annotations

import copy
import math
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from ._distributed import RankGroup, current_group
from ._progress import progress_bar
from .flows import Flow, FlowMixture, InverseNotConvergedWarning, Preprocessing
from .objectives import bind_objective

__all__ = [
    "TrainingConfig",
    "TrainingResult",
    "annealed_smoothing",
    "evaluate_log_likelihood",
    "held_out_generator",
    "evaluate_objective",
    "mapped_rows",
    "non_invertible_rows",
    "train",
    "train_epoch",
]


@dataclass(frozen=True)
class TrainingConfig:
    """Everything :func:`train` needs besides the model and the data.

    Examples
    --------
    >>> from skebflow._training import TrainingConfig
    >>> TrainingConfig(objective="dsm", objective_settings={"noise_std": 0.3}).solver
    'adam'
    """

    objective: str = "ssm"
    objective_settings: dict[str, Any] = field(default_factory=dict)
    max_iter: int = 100
    batch_size: int = 128
    learning_rate: float = 1e-3
    solver: Literal["adam", "rmsprop"] = "adam"
    learning_rate_schedule: Literal["constant", "cosine"] = "cosine"
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    grad_clip: float | None = 10.0
    energy_regularization: float = 0.0
    input_noise_std: float = 0.0
    noise_annealing: float = 0.0
    annealing_end: float = 0.1
    annealing_epochs: int = 0
    n_iter_no_change: int = 10
    tol: float = 1e-4
    early_stopping_metric: Literal["log_likelihood", "loss"] = "log_likelihood"
    max_bad_batches: int = 20
    verbose: int = 0
    #: The first ``warmup_steps`` optimizer steps scale the learning rate by
    #: ``k / warmup_steps`` at step ``k`` (1, 2, ...): Adam's first updates move every
    #: weight by about the learning rate whatever its gradient, which throws a flow
    #: that is already trained far from its weights (``likelihood_refinement``).
    warmup_steps: int = 0
    #: With ``train(keep_initial=True)``: what the patience counts epochs without
    #: beating. ``"start"``: the starting weights' held-out score, so a continuation
    #: that first loses ground is stopped before it can gain it back; ``"own"``: the
    #: run's own best epoch, the start being only the fallback kept when no epoch
    #: beats it.
    continuation_patience: Literal["start", "own"] = "start"


@dataclass
class TrainingResult:
    """What :func:`train` reports; the flow itself is updated in place.

    Attributes
    ----------
    loss_curve : list of float
        Mean training objective per epoch.
    validation_scores : list of float
        Held-out mean log-likelihood per epoch (original units), empty without
        validation data.
    validation_losses : list of float
        Held-out mean training objective per epoch, with the same noise every epoch;
        empty unless ``early_stopping_metric="loss"`` and validation data are given.
    n_iter : int
        Epochs run.
    best_validation_score : float or None
        Best held-out mean log-likelihood, ``None`` without validation data.
    converged : bool
        ``True`` when training stopped because the monitored score stopped improving.
    stop_reason : str
        Why training stopped.
    diverged : bool
        ``True`` when the loss or the weights became non-finite and the last good
        weights were restored (for :func:`train_epoch`, also when every batch of
        the epoch was skipped: the weights did not move, and ``stop_reason`` says
        so).
    interrupted : bool
        ``True`` when a ``KeyboardInterrupt`` ended training.
    n_skipped_batches : int
        Batches skipped because their loss or gradient was not finite.
    kept_initial : bool
        ``True`` when :func:`train` ran with ``keep_initial`` and no epoch beat the
        starting weights' held-out log-likelihood, so the flow ends as it started.
    restored_start : bool
        ``True`` when the flow ends holding the weights :func:`train` started
        from because it diverged before any epoch gave usable ones: a fresh
        flow is then untrained.
    divergence : str
        What diverged (empty unless ``diverged``).
    """

    loss_curve: list[float] = field(default_factory=list)
    validation_scores: list[float] = field(default_factory=list)
    validation_losses: list[float] = field(default_factory=list)
    n_iter: int = 0
    best_validation_score: float | None = None
    converged: bool = False
    stop_reason: str = ""
    diverged: bool = False
    interrupted: bool = False
    n_skipped_batches: int = 0
    kept_initial: bool = False
    restored_start: bool = False
    divergence: str = ""


def annealed_smoothing(config: TrainingConfig, epoch: int) -> float | None:
    """The standard deviation of the training target's smoothing at ``epoch``.

    Noise annealing trains on the data smoothed by ``N(0, sigma^2 I)`` in the
    preprocessed units, ``sigma`` falling geometrically from
    ``config.noise_annealing`` at epoch 1 to ``config.annealing_end`` after
    ``config.annealing_epochs`` epochs, then held there; the last of
    ``config.max_iter`` epochs always trains at ``annealing_end``, however few the
    epochs (with ``max_iter=1`` the one epoch does). ``None`` when annealing is
    off (``noise_annealing`` 0 or no annealing epochs): the objective's own settings
    apply unchanged.

    Examples
    --------
    >>> from skebflow._training import TrainingConfig, annealed_smoothing
    >>> config = TrainingConfig(
    ...     noise_annealing=1.0, annealing_end=0.1, annealing_epochs=10)
    >>> [round(annealed_smoothing(config, epoch), 3) for epoch in (1, 6, 11, 50)]
    [1.0, 0.316, 0.1, 0.1]
    >>> annealed_smoothing(TrainingConfig(), 1) is None
    True
    """
    if config.noise_annealing <= 0 or config.annealing_epochs <= 0:
        return None
    start, end = config.noise_annealing, config.annealing_end
    if epoch > config.annealing_epochs or epoch >= config.max_iter or start <= end:
        return end
    return start * (end / start) ** ((epoch - 1) / config.annealing_epochs)


def evaluate_log_likelihood(
    flow: Flow,
    preprocessing: Preprocessing,
    x: Tensor,
    *,
    chunk_size: int = 4096,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Exact log-density of ``x`` in its original units, in chunks, without gradient.

    Parameters
    ----------
    flow : Flow
        The model of the preprocessed data.
    preprocessing : Preprocessing
        The MaP bijection whose log-determinant is added back.
    x : Tensor of shape (n_samples, n_features)
        Points in original units, on the flow's device, in the preprocessing's dtype
        (float64 in the estimator); each preprocessed chunk is cast to the flow's
        dtype, and the result has the dtype of ``x``.
    chunk_size : int, default=4096
        Rows per chunk; bounds memory.
    generator : torch.Generator or None, default=None
        Passed to the preprocessing's noise steps: with one, dequantized columns
        take uniform noise in their bins, as in training, and the result is the
        log-density of the dequantized rows (see :func:`held_out_generator`);
        without, their bins' centres (``score_samples``' rule).

    Returns
    -------
    Tensor of shape (n_samples,)

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import Preprocessing, fc
    >>> from skebflow._training import evaluate_log_likelihood
    >>> flow = fc(1, n_layers=1).double()
    >>> x = torch.zeros(1, 1, dtype=torch.float64)
    >>> log_density = evaluate_log_likelihood(flow, Preprocessing(), x)  # N(1, 1) at 0
    >>> round(log_density.item(), 4)
    -1.4189
    """
    pieces = []
    flow_dtype = flow.dtype
    with torch.no_grad():
        log_normalizer = flow.log_normalizer().to(x.dtype)
        for start in range(0, x.shape[0], chunk_size):
            chunk = x[start : start + chunk_size]
            # Preprocess in the data's precision; only the standardized rows are cast.
            y, log_abs_det = preprocessing(chunk, generator)
            y = y.to(flow_dtype)
            energy = flow.energy(y).to(x.dtype)
            log_density = -energy - log_normalizer + log_abs_det
            # A finite row so far out that its preprocessed value overflows (the
            # flow's float32, or float64 for data in tiny units), or that the
            # flow's own arithmetic overflows (rows near float64's limit), has a
            # density that underflows: -inf, not the NaN that inf - inf gives.
            overflowed = ~torch.isfinite(y).all(dim=1) | torch.isnan(log_density)
            pieces.append(log_density.masked_fill(overflowed, -math.inf))
    if not pieces:
        return x.new_zeros(0)
    return torch.cat(pieces)


def non_invertible_rows(
    flow: Flow | FlowMixture, preprocessing: Preprocessing, x: Tensor
) -> int:
    """How many rows of ``x`` the flow cannot map back from its own image of them.

    Each row is preprocessed (without noise), mapped to the base space and inverted
    again, by every member of a mixture; a row counts when any coordinate of a
    round trip is not finite. A flow whose log-density is finite can still have
    collapsed: weights that have run away (a log-scale of -4 000) map every row to
    one point, whose inverse overflows, so that ``sample`` would return NaN. The
    inverse's solver may stop short of its tolerance here; only finiteness is
    judged, so its warning is not shown.

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import Preprocessing, coupling
    >>> from skebflow._training import non_invertible_rows
    >>> flow = coupling(2, generator=torch.Generator().manual_seed(0)).double()
    >>> x = torch.randn(8, 2, dtype=torch.float64)
    >>> non_invertible_rows(flow, Preprocessing(), x)
    0
    >>> with torch.no_grad():  # an ElementwiseAffine's log-scale run away
    ...     _ = flow.layers[0].log_scale.fill_(-4000.0)
    >>> bool(torch.isfinite(flow.log_prob(x)).all())  # finite, yet collapsed
    True
    >>> non_invertible_rows(flow, Preprocessing(), x)
    8
    """
    members = flow.members if isinstance(flow, FlowMixture) else [flow]
    failed = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", InverseNotConvergedWarning)
        y, _ = preprocessing(x, None)
        for member in members:
            z, _ = member(y.to(member.dtype))
            back = member.inverse(z)
            failed |= ~(torch.isfinite(z) & torch.isfinite(back)).all(dim=1)
    return int(failed.sum())


def held_out_generator(seed: int, device: torch.device) -> torch.Generator:
    """A generator for scoring held-out rows, the same noise at every call.

    Early stopping judges the weights by the held-out rows' log-likelihood under
    the objective trained: a dequantized integer column trains on ``x + u``, so
    its held-out rows take uniform noise too, the same draw at every epoch
    (common random numbers). Scored at its bins' centres instead, an epoch that
    piles density on the centres would score well while the training rows'
    likelihood falls: a fit kept its first epoch that way, its bin
    probabilities summing to 6.

    Examples
    --------
    >>> import torch
    >>> from skebflow._training import held_out_generator
    >>> first = torch.rand(2, generator=held_out_generator(3, torch.device("cpu")))
    >>> again = torch.rand(2, generator=held_out_generator(3, torch.device("cpu")))
    >>> bool(torch.equal(first, again))
    True
    """
    return torch.Generator(device=device).manual_seed(seed)


def evaluate_objective(
    flow: Flow,
    objective: Callable[..., Tensor],
    preprocessing: Preprocessing,
    x: Tensor,
    *,
    seed: int,
    input_noise_std: float = 0.0,
    chunk_size: int = 1024,
    weights: Tensor | None = None,
    energy_regularization: float = 0.0,
) -> float:
    """Mean training objective on held-out rows, with the same noise at every call.

    The noise of the objective (projections, denoising noise, finite-difference
    directions), the dequantization and the input jitter all come from a generator
    seeded with ``seed``, so two calls on different weights differ only by the
    weights: common random numbers, which make the epoch-to-epoch curve smooth enough
    to stop on.

    Parameters
    ----------
    flow : Flow
        The model (its parameters need no gradient).
    objective : callable
        A bound objective, as :func:`~skebflow.objectives.bind_objective` returns.
    preprocessing : Preprocessing
        The MaP bijection applied to ``x`` first.
    x : Tensor of shape (n_samples, n_features)
        Held-out rows in original units, on the flow's device.
    seed : int
        Seed of the noise.
    input_noise_std : float, default=0.0
        Standard deviation of the jitter added to the preprocessed rows, as in
        training.
    chunk_size : int, default=1024
        Rows per chunk.
    weights : Tensor of shape (n_samples,) or None, default=None
        Non-negative row weights: the weighted mean. ``None`` weighs rows equally.
    energy_regularization : float, default=0.0
        The weight of the mean energy per dimension that training adds to the
        objective (``TrainingConfig.energy_regularization``), added here too, so
        that the held-out loss is the objective trained.

    Returns
    -------
    float

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import Preprocessing, fc
    >>> from skebflow.objectives import bind_objective
    >>> from skebflow._training import evaluate_objective
    >>> flow = fc(2, generator=torch.Generator().manual_seed(0))
    >>> x = torch.randn(50, 2, generator=torch.Generator().manual_seed(1))
    >>> loss = bind_objective("ssm")
    >>> first = evaluate_objective(flow, loss, Preprocessing(), x, seed=3)
    >>> first == evaluate_objective(flow, loss, Preprocessing(), x, seed=3)
    True
    """
    generator = torch.Generator(device=x.device).manual_seed(seed)
    flow_dtype = flow.dtype
    total, count = 0.0, 0
    for start in range(0, x.shape[0], chunk_size):
        with torch.no_grad():
            batch, _ = preprocessing(x[start : start + chunk_size], generator)
            batch = batch.to(flow_dtype)
            if input_noise_std > 0:
                batch = batch + input_noise_std * torch.randn(
                    batch.shape,
                    generator=generator,
                    device=batch.device,
                    dtype=batch.dtype,
                )
        with torch.enable_grad():
            loss = objective(flow, batch, generator=generator).detach()
        with torch.no_grad():
            loss = _regularized(loss, flow, batch, energy_regularization)
        if weights is None:
            total += float(loss.sum())
            count += batch.shape[0]
        else:
            chunk_weights = weights[start : start + chunk_size]
            total += float((loss * chunk_weights.to(loss.dtype)).sum())
            count += float(chunk_weights.sum())
    return total / count


def _regularized(rows: Tensor, flow: Flow, batch: Tensor, strength: float) -> Tensor:
    """The per-row objective ``rows`` of ``batch`` plus ``strength`` times each
    row's energy per dimension (``TrainingConfig.energy_regularization``), as
    training and the held-out loss both take it."""
    if strength > 0:
        rows = rows + strength * flow.energy(batch) / batch.shape[1]
    return rows


def _mean(values: Tensor, weights: Tensor | None) -> float:
    """The mean of ``values``, weighted by ``weights`` unless ``None``."""
    if weights is None:
        return float(values.mean())
    return float((values * weights).sum() / weights.sum())


class _ExponentialMovingAverage:
    """Shadow weights ``m * shadow + (1 - m) * weights`` with the usual warm-up."""

    def __init__(self, flow: Flow, decay: float) -> None:
        self.model = copy.deepcopy(flow)
        self.model.requires_grad_(False)
        self.decay = decay
        self.n_updates = 0
        # The parameter objects of the shadow and of the flow it follows, listed once
        # (loading a state copies into them): walking the modules costs more than
        # the update on small flows.
        self._shadow = list(self.model.parameters())
        self._followed: tuple[Flow, list[torch.nn.Parameter]] | None = None

    def update(self, flow: Flow) -> None:
        if self._followed is None or self._followed[0] is not flow:
            self._followed = (flow, list(flow.parameters()))
        parameters = self._followed[1]
        self.n_updates += 1
        decay = min(self.decay, (1.0 + self.n_updates) / (10.0 + self.n_updates))
        with torch.no_grad():
            # One fused call over every tensor: per-tensor Python calls cost more
            # than the arithmetic on small flows.
            torch._foreach_lerp_(self._shadow, parameters, 1.0 - decay)


def _state_copy(flow: Flow) -> dict[str, Tensor]:
    return {name: value.detach().clone() for name, value in flow.state_dict().items()}


#: Training rows on which the weights to restore after a divergence without
#: held-out rows are checked.
_CHECK_ROWS = 1024
#: Training rows whose objective the patience watches when no rows are held out.
_MONITORED_ROWS = 1024


def _last_finite_state(
    model: Flow,
    preprocessing: Preprocessing,
    x: Tensor,
    states: list[dict[str, Tensor]],
) -> dict[str, Tensor]:
    """The latest of ``states`` (oldest first; the first is the weights training
    started from) whose log-density of ``x`` is finite, loaded into ``model`` to
    check it; the first if none is."""
    for state in reversed(states[1:]):
        model.load_state_dict(state)
        if bool(torch.isfinite(evaluate_log_likelihood(model, preprocessing, x)).all()):
            return state
    return states[0]


def _all_finite(flow: Flow) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in flow.parameters())


def _batches(
    n_rows: int,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
    group: RankGroup | None = None,
) -> Iterator[tuple[Tensor, int]]:
    """Row indices of each batch, with the batch's number of rows; with
    ``group``, rank 0's order and this rank's share of every batch (the number
    of rows is then the whole batch's, every rank's shares together)."""
    order = torch.randperm(n_rows, generator=generator, device=generator.device).to(
        device
    )
    if group is not None:
        group.broadcast_(order)
    for start in range(0, n_rows, batch_size):
        index = order[start : start + batch_size]
        yield (index if group is None else group.shard(index)), len(index)


def _backward(
    flow: Flow,
    objective: Callable[..., Tensor],
    batch: Tensor,
    parameters: list[torch.nn.Parameter],
    config: TrainingConfig,
    generator: torch.Generator,
    weights: Tensor | None = None,
    group: RankGroup | None = None,
) -> float | None:
    """Gradient of the batch loss into ``parameters``; ``None`` if it is not finite.

    With ``weights`` (the batch rows' weights divided by the mean training weight)
    the loss is the mean of weight times per-row objective, whose expectation over
    the batches is the weighted objective. A singular linear layer (``sml`` inverts
    the flow to sample) counts as a batch whose loss is not finite. With ``group``,
    ``batch`` is this rank's share of the global batch and the gradient is averaged
    over the ranks before clipping (every rank returns the same value).
    """
    for parameter in parameters:
        parameter.grad = None
    loss = _batch_loss(flow, objective, batch, config, generator, weights)
    if loss is not None:
        loss.backward(inputs=parameters)
        loss = loss.detach()
    if group is not None:
        value = group.average_gradients(parameters, loss, batch.shape[0])
    else:
        value = None if loss is None else float(loss)
    if value is None:
        return None
    gradients = [p.grad for p in parameters if p.grad is not None]
    # clip_grad_norm_'s arithmetic in two fused calls over every tensor (it takes
    # one call per tensor on the CPU, which costs more than the arithmetic on
    # small flows).
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(gradients)))
    if config.grad_clip is not None:
        scale = torch.clamp(config.grad_clip / (norm + 1e-6), max=1.0)
        torch._foreach_mul_(gradients, scale)
    return value if bool(torch.isfinite(norm)) else None


def _batch_loss(
    flow: Flow,
    objective: Callable[..., Tensor],
    batch: Tensor,
    config: TrainingConfig,
    generator: torch.Generator,
    weights: Tensor | None,
) -> Tensor | None:
    """The batch's (weighted) mean loss, or ``None`` if empty or not finite."""
    if batch.shape[0] == 0:
        return None
    try:
        rows = objective(flow, batch, generator=generator)
    except torch.linalg.LinAlgError:
        return None
    rows = _regularized(rows, flow, batch, config.energy_regularization)
    loss = rows.mean() if weights is None else (rows * weights).mean()
    return loss if bool(torch.isfinite(loss)) else None


class _Reporter:
    """Progress: a tqdm bar (notebook-aware) when available, else one line per epoch."""

    def __init__(self, verbose: int, total: int, description: str) -> None:
        self.verbose = verbose
        self.bar = (
            progress_bar(total, description, "epoch", leave=True)
            if verbose >= 1
            else None
        )

    def epoch(self, epoch: int, loss: float, validation: float | None) -> None:
        if self.verbose < 1:
            return
        fields = {"loss": f"{loss:.4g}"}
        if validation is not None:
            fields["val_loglik"] = f"{validation:.4f}"
        if self.bar is not None:
            self.bar.set_postfix(fields, refresh=False)
            self.bar.update(1)
        else:
            text = ", ".join(f"{key} = {value}" for key, value in fields.items())
            sys.stderr.write(f"Epoch {epoch}, {text}\n")

    def close(self, message: str) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.verbose >= 1 and message:
            sys.stderr.write(message + "\n")


class _Trainer:
    """One flow's optimisation state, and the epoch that advances it.

    Holds the flow being trained (its raw weights), the optimizer, the EMA of the
    weights, the generator and the counts of bad batches. :func:`train` runs epochs
    of it under a schedule and early stopping; ``partial_fit`` runs one epoch per
    call through :func:`train_epoch` and keeps the state in between, as NumPy
    (:meth:`get_state`, :meth:`set_state`).

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import Preprocessing, fc
    >>> from skebflow._training import TrainingConfig, _Trainer
    >>> generator = torch.Generator().manual_seed(0)
    >>> x = torch.randn(64, 2, generator=generator)
    >>> trainer = _Trainer(fc(2, generator=generator), Preprocessing(),
    ...                    TrainingConfig(objective="ml", batch_size=16), generator)
    >>> loss = trainer.epoch(x, None, epoch=1)
    >>> int(trainer.get_state()["optimizer"]["state"]["0"]["step"])  # 64 / 16 steps
    4
    """

    def __init__(
        self,
        flow: Flow,
        preprocessing: Preprocessing,
        config: TrainingConfig,
        generator: torch.Generator,
    ) -> None:
        self.flow = flow
        self.preprocessing = preprocessing
        self.config = config
        self.generator = generator
        self.objective = bind_objective(config.objective, **config.objective_settings)
        self.parameters = [p for p in flow.parameters() if p.requires_grad]
        if not self.parameters:
            raise ValueError(
                "The flow has no trainable parameters; there is nothing to fit."
            )
        # Data-parallel under torch.distributed: every rank starts from rank 0's
        # weights, and draws its own noise (rank 0's draws are a single process's).
        self.group = current_group()
        if self.group is not None:
            self.group.broadcast_parameters_(flow)
            if self.group.rank > 0:
                generator.manual_seed(
                    (generator.initial_seed() + 7919 * self.group.rank) % 2**63
                )
        # Adam runs its fused kernel (on the CPU too: a third of the multi-tensor
        # update's time on the default flow's 42 tensors); RMSprop, which has no
        # fused kernel, the multi-tensor update (torch picks it on CUDA only).
        if config.solver == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(
                self.parameters,
                lr=config.learning_rate,
                weight_decay=config.weight_decay,
                fused=True,
            )
        else:
            self.optimizer = torch.optim.RMSprop(
                self.parameters,
                lr=config.learning_rate,
                weight_decay=config.weight_decay,
                foreach=True,
            )
        self.ema = _ExponentialMovingAverage(flow, config.ema_decay)
        self.n_skipped_batches = 0
        self.consecutive_bad = 0
        self.n_steps = 0

    def epoch(
        self,
        x_train: Tensor,
        weights: Tensor | None,
        *,
        epoch: int,
        smoothing: float | None = None,
    ) -> float | None:
        """One pass over ``x_train`` in random batches.

        Returns the mean loss over the rows of the batches trained on (each
        batch's loss weighted by its rows), or ``None`` when no batch had a
        finite loss and gradient; raises :class:`_Diverged` when too many
        consecutive batches were bad or the weights became non-finite.
        ``weights`` (one per row, or ``None``) are divided by their mean, so that
        a batch's loss is unbiased for the weighted objective. ``smoothing`` (see
        :func:`annealed_smoothing`) is ``dsm``'s noise for the epoch, and for every
        other objective the standard deviation of Gaussian noise added to the
        batches (with the jitter).
        """
        config = self.config
        flow_dtype = self.flow.dtype
        objective = self.objective
        input_noise_std = config.input_noise_std
        if smoothing is not None and config.objective == "dsm":
            objective = bind_objective(
                "dsm", **{**config.objective_settings, "noise_std": smoothing}
            )
        elif smoothing is not None:
            input_noise_std = math.hypot(input_noise_std, smoothing)
        scale = None if weights is None else (weights / weights.mean()).to(flow_dtype)
        losses, sizes = [], []
        for index, batch_rows in _batches(
            x_train.shape[0],
            config.batch_size,
            self.generator,
            x_train.device,
            self.group,
        ):
            with torch.no_grad():
                batch, _ = self.preprocessing(x_train[index], self.generator)
                batch = batch.to(flow_dtype)
                if input_noise_std > 0:
                    noise = torch.randn(
                        batch.shape,
                        generator=self.generator,
                        device=batch.device,
                        dtype=batch.dtype,
                    )
                    batch = batch + input_noise_std * noise
            loss = _backward(
                self.flow,
                objective,
                batch,
                self.parameters,
                config,
                self.generator,
                None if scale is None else scale[index],
                self.group,
            )
            if loss is None:
                self.n_skipped_batches += 1
                self.consecutive_bad += 1
                if self.consecutive_bad > config.max_bad_batches:
                    raise _Diverged(
                        f"the {config.objective} loss or its gradient was not"
                        f" finite in {self.consecutive_bad} consecutive batches at"
                        f" epoch {epoch}"
                    )
                continue
            self.consecutive_bad = 0
            self._step()
            self.ema.update(self.flow)
            losses.append(loss)
            # the whole batch's rows: under a process group every rank weighs
            # the batch's loss (the mean over all its shares) alike
            sizes.append(batch_rows)
        if not _all_finite(self.flow) or not _all_finite(self.ema.model):
            raise _Diverged(f"the weights became non-finite at epoch {epoch}")
        # The mean over the rows of the batches trained on: a short last batch
        # counts by its rows, as scikit-learn's MLP weighs its loss curve.
        if not losses:
            return None
        total = sum(n * loss for n, loss in zip(sizes, losses, strict=True))
        return float(total / sum(sizes))

    def _step(self) -> None:
        """One optimizer step, its learning rate scaled while warming up; the
        scheduler's value is restored after it, so the schedule is unchanged."""
        self.n_steps += 1
        warmup = self.config.warmup_steps
        if self.n_steps > warmup:
            self.optimizer.step()
            return
        groups = self.optimizer.param_groups
        scheduled = [group["lr"] for group in groups]
        for group, rate in zip(groups, scheduled, strict=True):
            group["lr"] = rate * self.n_steps / warmup
        try:
            self.optimizer.step()
        finally:
            for group, rate in zip(groups, scheduled, strict=True):
                group["lr"] = rate

    def get_state(self) -> dict[str, Any]:
        """Everything needed to continue, as CPU NumPy arrays, ints and str keys.

        What a safe model file can store: the raw and the EMA weights, the
        optimizer's per-parameter state (keyed by the parameter's position), the
        generator's state and the counters.
        """
        optimizer_state = {
            str(index): {name: _to_numpy(value) for name, value in state.items()}
            for index, state in self.optimizer.state_dict()["state"].items()
        }
        return {
            "flow": {k: _to_numpy(v) for k, v in self.flow.state_dict().items()},
            "ema": {k: _to_numpy(v) for k, v in self.ema.model.state_dict().items()},
            "ema_updates": self.ema.n_updates,
            "optimizer": {"solver": self.config.solver, "state": optimizer_state},
            "generator": _to_numpy(self.generator.get_state()),
            "n_skipped_batches": self.n_skipped_batches,
            "consecutive_bad": self.consecutive_bad,
            "n_steps": self.n_steps,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`get_state`'s record (in place).

        The learning rate and the weight decay stay those of this trainer's
        configuration; the optimizer's moments and step counts are restored.
        """
        solver = state["optimizer"]["solver"]
        if solver != self.config.solver:
            raise ValueError(
                f"partial_fit continues the {solver!r} optimizer's state, but"
                f" solver={self.config.solver!r} now; restore solver={solver!r}, or"
                " call fit to start afresh."
            )
        self.flow.load_state_dict(_from_numpy(state["flow"]))
        self.ema.model.load_state_dict(_from_numpy(state["ema"]))
        self.ema.n_updates = int(state["ema_updates"])
        current = self.optimizer.state_dict()
        current["state"] = {
            int(index): _from_numpy(values)
            for index, values in state["optimizer"]["state"].items()
        }
        self.optimizer.load_state_dict(current)
        _lay_out_as_parameters(self.optimizer)
        generator_state = torch.from_numpy(np.array(state["generator"], np.uint8))
        try:
            self.generator.set_state(generator_state)
        except (RuntimeError, ValueError):
            # A state recorded on another kind of device (a CUDA model loaded on
            # the CPU): continue with a seed derived from it.
            seed = int.from_bytes(generator_state.numpy().tobytes()[-8:], "little")
            self.generator.manual_seed(seed % 2**63)
        self.n_skipped_batches = int(state["n_skipped_batches"])
        self.consecutive_bad = int(state["consecutive_bad"])
        # states recorded before the count was kept: their warm-up starts afresh
        self.n_steps = int(state.get("n_steps", 0))


def _lay_out_as_parameters(optimizer: torch.optim.Optimizer) -> None:
    """Give each per-parameter state tensor (Adam's moments) its parameter's
    memory layout, in place.

    A state restored from arrays is contiguous, while a dense layer's weight can be
    a transposed view, and the fused Adam kernel walks a parameter's memory and its
    moments' together: with other layouts it would update each entry with another
    entry's moments.
    """
    for parameter, parameter_state in optimizer.state.items():
        for name, value in parameter_state.items():
            if (
                isinstance(value, Tensor)
                and value.shape == parameter.shape
                and value.stride() != parameter.stride()
            ):
                relaid = torch.empty_like(parameter, dtype=value.dtype)
                parameter_state[name] = relaid.copy_(value)


def _to_numpy(value: Tensor) -> NDArray[Any]:
    return value.detach().to("cpu").numpy().copy()


def _from_numpy(values: dict[str, Any]) -> dict[str, Tensor]:
    return {name: torch.from_numpy(np.array(value)) for name, value in values.items()}


def _diverged_message(error: Exception, *, kept: bool = True) -> str:
    """What a divergence says; with ``kept``, which weights a fit kept (one epoch
    of ``partial_fit``, whose caller discards the chunk, keeps none)."""
    kept_clause = (
        " The weights of the best epoch before it were kept (by the held-out"
        " log-likelihood; without held-out rows, the latest whose log-density of"
        " the training rows is finite)."
        if kept
        else ""
    )
    return (
        f"Training diverged: {error}.{kept_clause} Lower learning_rate, clip harder"
        " (a lower grad_clip), or use objective='dsm' with a larger noise_std."
    )


def _no_finite_batch(config: TrainingConfig, epoch: int) -> _Diverged:
    return _Diverged(
        f"no batch of epoch {epoch} had a finite {config.objective} loss and gradient"
    )


def train_epoch(
    trainer: _Trainer,
    x_train: Tensor,
    weights: Tensor | None = None,
    *,
    epoch: int = 1,
) -> TrainingResult:
    """One more epoch of ``trainer`` over ``x_train``, as ``partial_fit`` runs it.

    No schedule and no validation. When the epoch diverges the trainer is left
    mid-epoch: the caller restores its previous state (see
    :meth:`_Trainer.get_state`). A ``KeyboardInterrupt`` propagates.

    Parameters
    ----------
    trainer : _Trainer
        The state to advance in place.
    x_train : Tensor of shape (n_samples, n_features)
        The chunk, in original units, on the trainer's device.
    weights : Tensor of shape (n_samples,) or None, default=None
        Row weights (relative within the chunk).
    epoch : int, default=1
        The epoch's number, for the messages.

    Returns
    -------
    TrainingResult
        ``n_iter`` 1 and the epoch's loss, or ``diverged`` and why.

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import Preprocessing, fc
    >>> from skebflow._training import TrainingConfig, _Trainer, train_epoch
    >>> generator = torch.Generator().manual_seed(0)
    >>> x = torch.randn(64, 2, generator=generator)
    >>> trainer = _Trainer(fc(2, generator=generator), Preprocessing(),
    ...                    TrainingConfig(objective="ml", batch_size=16), generator)
    >>> [train_epoch(trainer, x).n_iter for _ in range(2)], trainer.ema.n_updates
    ([1, 1], 8)
    """
    result = TrainingResult()
    try:
        loss = trainer.epoch(x_train, weights, epoch=epoch)
        if loss is None and trainer.consecutive_bad == 0:  # an epoch without batches
            raise _no_finite_batch(trainer.config, epoch)
        if loss is None:
            # Every batch was bad, but no more than max_bad_batches in a row: the
            # weights did not move. Not a divergence; the caller discards the
            # chunk (train() would retry the epoch).
            result.diverged = True
            result.stop_reason = (
                f"Every batch of epoch {epoch} was skipped: its"
                f" {trainer.config.objective} loss or gradient was not finite, so"
                " the weights did not move."
            )
            return result
    except _Diverged as error:
        result.diverged, result.divergence = True, str(error)
        result.stop_reason = _diverged_message(error, kept=False)
        return result
    result.n_iter = 1
    result.loss_curve.append(loss)
    result.n_skipped_batches = trainer.n_skipped_batches
    result.stop_reason = "One epoch over the chunk."
    return result


def train(
    flow: Flow,
    preprocessing: Preprocessing,
    x_train: Tensor,
    x_validation: Tensor | None,
    *,
    config: TrainingConfig,
    generator: torch.Generator,
    on_epoch_end: Callable[[int, TrainingResult], None] | None = None,
    train_weights: Tensor | None = None,
    validation_weights: Tensor | None = None,
    keep_initial: bool = False,
) -> TrainingResult:
    """Fit ``flow`` to ``preprocessing(x_train)`` in place and report how it went.

    Parameters
    ----------
    flow : Flow
        Trained in place; ends holding the EMA weights of the best epoch (by held-out
        log-likelihood with validation data, else the last epoch's EMA weights;
        after a divergence without validation data, the latest weights chosen by
        the training loss whose log-density of the first training rows is finite,
        or the initial weights).
    preprocessing : Preprocessing
        MaP bijection applied to every batch (with fresh dequantization noise).
    x_train : Tensor of shape (n_samples, n_features)
        Training rows in original units, on the flow's device, in the
        preprocessing's dtype (float64 in the estimator, so that standardizing
        loses no precision); each preprocessed batch is cast to the flow's dtype.
    x_validation : Tensor or None
        Held-out rows for early stopping; ``None`` monitors the objective of the
        EMA weights on up to 1 024 training rows, with the same noise every epoch
        (for ``"sml"``, whose value is no measure of fit, their log-likelihood). With
        ``config.early_stopping_metric="loss"`` the patience counts epochs without
        a better held-out objective (:func:`evaluate_objective`), while the weights
        kept are still those of the epoch with the best held-out log-likelihood.
    config : TrainingConfig
        Optimisation settings.
    generator : torch.Generator
        The only source of randomness (batch order, objective noise, dequantization);
        must live on the data's device.
    on_epoch_end : callable or None, default=None
        Called with ``(epoch, result)`` after each epoch.
    train_weights : Tensor of shape (n_samples,) or None, default=None
        Non-negative weights of the training rows: each batch's loss is the mean of
        weight times per-row objective, divided by the mean training weight, so
        that it is unbiased for the weighted objective. ``None`` weighs rows
        equally (and runs exactly the unweighted computation).
    validation_weights : Tensor of shape (n_validation,) or None, default=None
        Weights of the held-out rows: the held-out log-likelihood and loss are
        weighted means.
    keep_initial : bool, default=False
        Score the starting weights on the held-out rows first, and keep them unless
        an epoch beats them (``result.kept_initial`` says whether none did): for a
        continuation, such as the likelihood refinement after a score-matching fit,
        that must never end worse than it started. Without validation data the
        last epoch's weights are kept, as always.

    Returns
    -------
    TrainingResult

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import Preprocessing, fc
    >>> from skebflow._training import TrainingConfig, train
    >>> generator = torch.Generator().manual_seed(0)
    >>> x = torch.randn(256, 2, generator=generator)
    >>> flow = fc(2, generator=generator)
    >>> result = train(flow, Preprocessing(), x, x[:64], generator=generator,
    ...     config=TrainingConfig(objective="dsm", max_iter=3, batch_size=64))
    >>> result.n_iter, len(result.validation_scores)
    (3, 3)
    """
    # Derived from the generator's seed without drawing from it, so that watching
    # the loss or the likelihood follows the same training trajectory.
    validation_seed = (generator.initial_seed() + 1) % 2**63
    # The leading steps that draw no noise map the rows once, here: the held-out
    # log-likelihood adds their log-determinants back.
    head, preprocessing = preprocessing.split_fixed_head()
    validation_log_abs_det = None
    if head.steps:
        x_train, _ = mapped_rows(head, x_train)
        if x_validation is not None:
            x_validation, validation_log_abs_det = mapped_rows(head, x_validation)
    trainer = _Trainer(flow, preprocessing, config, generator)
    group = trainer.group
    if group is not None and x_validation is not None:
        # Each rank scores every n-th held-out row; the means are all-reduced.
        x_validation_shard = group.shard(x_validation)
        validation_log_abs_det_shard = (
            None
            if validation_log_abs_det is None
            else group.shard(validation_log_abs_det)
        )
        validation_weights_shard = (
            None if validation_weights is None else group.shard(validation_weights)
        )
    if config.learning_rate_schedule == "cosine":
        scheduler: torch.optim.lr_scheduler.LRScheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(
                trainer.optimizer,
                T_max=max(config.max_iter, 1),
                eta_min=0.01 * config.learning_rate,
            )
        )
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(trainer.optimizer, lambda _: 1.0)

    ema = trainer.ema
    result = TrainingResult()
    best_state = starting_state = _state_copy(ema.model)
    # Without held-out rows the weights to restore after a divergence are chosen
    # by the training loss, measured along each epoch, while the weights kept are
    # those at its end: the last few such choices are checked on training rows
    # before one is restored (see below).
    chosen_states = [best_state]
    best_monitor = -math.inf  # the score the patience watches
    best_selection = -math.inf  # the score that picks the weights to keep
    epochs_without_improvement = 0
    annealing_epochs = config.annealing_epochs if config.noise_annealing > 0 else 0
    watch_loss = x_validation is not None and config.early_stopping_metric == "loss"
    reporter = _Reporter(config.verbose, config.max_iter, f"{config.objective} fit")

    # The objective the patience watches is the one trained once the annealing
    # holds its end.
    held_out_noise_std = (
        held_input_noise_std(config) if annealing_epochs > 0 else config.input_noise_std
    )

    def mean_objective(rows: Tensor, weights: Tensor | None) -> float:
        """The EMA weights' mean training objective on ``rows``, with the same
        noise at every call."""
        return evaluate_objective(
            ema.model,
            trainer.objective,
            preprocessing,
            rows,
            seed=validation_seed,
            input_noise_std=held_out_noise_std,
            weights=weights,
            energy_regularization=config.energy_regularization,
        )

    def mean_log_likelihood(
        rows: Tensor, weights: Tensor | None, log_abs_det: Tensor | None = None
    ) -> float:
        """The EMA weights' mean log-likelihood of ``rows`` (``log_abs_det``: the
        fixed head's, which mapped them already)."""
        log_likelihood = evaluate_log_likelihood(
            ema.model,
            preprocessing,
            rows,
            generator=held_out_generator(validation_seed, rows.device),
        )
        if log_abs_det is not None:
            log_likelihood = log_likelihood + log_abs_det
        return _mean(log_likelihood, weights)

    def held_out_loss() -> float:
        """The EMA weights' mean training objective on the held-out rows."""
        return mean_objective(x_validation, validation_weights)

    # Without held-out rows the patience watches the EMA weights' objective on a
    # fixed share of the training rows, with the same noise at every epoch (common
    # random numbers, as the held-out loss): the epoch's mean batch loss carries
    # noise the weights do not (dsm's |n|^2 / sigma^2 term alone varies more
    # between epochs than a whole fit improves it), and sml's value is no measure
    # of fit (its gradient, not its value, is the likelihood's), so sml watches
    # those rows' log-likelihood. Under data parallelism each rank holds a shard,
    # and the epoch's mean loss, all-reduced, stays the score.
    monitored_rows = monitored_weights = None
    if x_validation is None and group is None and x_train.shape[0] > 0:
        picked = torch.randperm(
            x_train.shape[0],
            generator=torch.Generator().manual_seed(validation_seed),
        )[:_MONITORED_ROWS]
        picked = picked.sort().values.to(x_train.device)
        monitored_rows = x_train[picked]
        if train_weights is not None:
            monitored_weights = train_weights[picked]

    def training_rows_score() -> float:
        """Higher is better: minus the objective (the log-likelihood for sml) of
        the EMA weights on the monitored training rows."""
        assert monitored_rows is not None
        if config.objective == "sml":
            return mean_log_likelihood(monitored_rows, monitored_weights)
        return -mean_objective(monitored_rows, monitored_weights)

    def held_out_log_likelihood() -> float:
        """The EMA weights' mean log-likelihood of the held-out rows."""
        if group is not None:
            log_likelihood = evaluate_log_likelihood(
                ema.model,
                preprocessing,
                x_validation_shard,
                generator=held_out_generator(validation_seed, x_validation.device),
            )
            if validation_log_abs_det_shard is not None:
                log_likelihood = log_likelihood + validation_log_abs_det_shard
            return group.weighted_mean(log_likelihood, validation_weights_shard)
        return mean_log_likelihood(
            x_validation, validation_weights, validation_log_abs_det
        )

    try:
        # Inside the try: an interrupt while the start is scored keeps the start.
        if keep_initial and x_validation is not None:
            initial = held_out_log_likelihood()
            if math.isfinite(initial):
                best_selection = initial
                if config.continuation_patience == "start":
                    # in the units the patience watches: a loss is not a
                    # log-likelihood
                    best_monitor = initial
                    if watch_loss:
                        start_loss = held_out_loss()
                        best_monitor = (
                            -start_loss if math.isfinite(start_loss) else -math.inf
                        )
                result.best_validation_score = initial
                result.kept_initial = True

        epoch = 0  # epochs counted so far
        while epoch < config.max_iter:
            epoch_loss = trainer.epoch(
                x_train,
                train_weights,
                epoch=epoch + 1,
                smoothing=annealed_smoothing(config, epoch + 1),
            )
            if epoch_loss is None:
                if trainer.consecutive_bad == 0:  # an epoch without batches
                    raise _no_finite_batch(config, epoch + 1)
                # Every batch of the epoch was bad, but no more than
                # max_bad_batches in a row (the trainer raises past that): the
                # epoch is not counted, and the next one tries again.
                continue
            epoch += 1
            # after the check: an epoch without an optimizer step would make
            # torch warn that the scheduler stepped first
            scheduler.step()
            validation_loss = None
            if x_validation is not None:
                validation = held_out_log_likelihood()
                selection = validation if math.isfinite(validation) else -math.inf
                monitor = selection
                if watch_loss:
                    validation_loss = held_out_loss()
                    monitor = (
                        -validation_loss
                        if math.isfinite(validation_loss)
                        else -math.inf
                    )
            else:
                validation = None
                score = -epoch_loss if monitored_rows is None else training_rows_score()
                monitor = score if math.isfinite(score) else -math.inf
                selection = monitor
            # Recorded together, once the epoch's held-out values are known: an
            # interrupt while they are computed leaves n_iter, loss_curve and the
            # validation curves of the same length.
            result.n_iter = epoch
            result.loss_curve.append(epoch_loss)
            if validation is not None:
                result.validation_scores.append(validation)
            if validation_loss is not None:
                result.validation_losses.append(validation_loss)
            reporter.epoch(epoch, epoch_loss, validation)

            # The patience starts when the annealing's smoothing stops falling;
            # the training loss, measured at each epoch's smoothing, is compared
            # only from then (dsm's loss grows as its noise shrinks).
            if monitor > best_monitor + config.tol or epoch <= annealing_epochs:
                epochs_without_improvement = 0
            else:
                epochs_without_improvement += 1
            if x_validation is not None or epoch > annealing_epochs:
                best_monitor = max(best_monitor, monitor)
            # Training losses at different smoothings do not compare: without
            # held-out rows, each annealing epoch and the first after it replace
            # the weights to keep whenever their loss is finite.
            renewed = (
                x_validation is None
                and epoch <= annealing_epochs + 1
                and selection > -math.inf
            )
            if selection > best_selection or renewed:
                best_selection = selection
                best_state = _state_copy(ema.model)
                if x_validation is None:  # the first stays: the initial weights
                    chosen_states = [
                        chosen_states[0],
                        *chosen_states[1:][-3:],
                        best_state,
                    ]
                result.kept_initial = False
                if x_validation is not None:
                    result.best_validation_score = validation
            if on_epoch_end is not None:
                on_epoch_end(epoch, result)
            if epochs_without_improvement >= config.n_iter_no_change:
                if best_selection == -math.inf:
                    raise _Diverged(_never_finite(x_validation is not None, epoch))
                if watch_loss:
                    watched = f"Validation {config.objective} loss"
                elif x_validation is not None:
                    watched = "Validation log-likelihood"
                else:
                    watched = "Training loss"
                result.converged = True
                result.stop_reason = (
                    f"{watched} did not improve more than tol={config.tol} for"
                    f" {config.n_iter_no_change} consecutive epochs."
                )
                break
        else:
            if best_selection == -math.inf:  # max_iter came before the patience
                raise _Diverged(_never_finite(x_validation is not None, epoch))
            result.stop_reason = f"Maximum iterations ({config.max_iter}) reached."
    except _Diverged as error:
        result.diverged, result.divergence = True, str(error)
        result.stop_reason = _diverged_message(error)
    except KeyboardInterrupt:
        result.interrupted = True
        result.stop_reason = "Training interrupted by user."
    finally:
        result.n_skipped_batches = trainer.n_skipped_batches
        reporter.close(result.stop_reason)

    if x_validation is None and not result.diverged and _all_finite(ema.model):
        best_state = _state_copy(ema.model)
    elif x_validation is None and result.diverged:
        best_state = _last_finite_state(
            ema.model, preprocessing, x_train[:_CHECK_ROWS], chosen_states
        )
    result.restored_start = result.diverged and best_state is starting_state
    flow.load_state_dict(best_state)
    if group is not None:
        group.broadcast_parameters_(flow)  # bit-identical weights on every rank
    return result


def mapped_rows(
    preprocessing: Preprocessing, x: Tensor, chunk_size: int = 4096
) -> tuple[Tensor, Tensor]:
    """``preprocessing(x)`` in chunks, without gradient: the rows and their
    log-determinants.

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import Preprocessing, Standardize
    >>> from skebflow._training import mapped_rows
    >>> step = Standardize(torch.tensor([1.0]), torch.tensor([2.0]))
    >>> y, log_abs_det = mapped_rows(Preprocessing([step]), torch.tensor([[5.0]]))
    >>> y.item(), round(log_abs_det.item(), 4)  # (5 - 1) / 2, log(1 / 2)
    (2.0, -0.6931)
    """
    if x.shape[0] == 0:
        return x, x.new_zeros(0)
    with torch.no_grad():
        pieces = [
            preprocessing(x[start : start + chunk_size])
            for start in range(0, x.shape[0], chunk_size)
        ]
    return torch.cat([y for y, _ in pieces]), torch.cat([det for _, det in pieces])


def held_input_noise_std(config: TrainingConfig) -> float:
    """The noise on the batches once an annealing holds its end: the jitter with
    the smoothing ``annealing_end``, except under ``"dsm"``, whose own denoising
    noise is that smoothing.

    Examples
    --------
    >>> from skebflow._training import TrainingConfig, held_input_noise_std
    >>> held_input_noise_std(TrainingConfig(input_noise_std=0.3, annealing_end=0.4))
    0.5
    >>> held_input_noise_std(TrainingConfig(objective="dsm", annealing_end=0.4))
    0.0
    """
    if config.objective == "dsm":
        return config.input_noise_std
    return math.hypot(config.input_noise_std, config.annealing_end)


def _never_finite(validated: bool, n_epochs: int) -> str:
    """Why a fit whose monitored score was never finite diverged."""
    watched = "validation log-likelihood" if validated else "training loss"
    return f"the {watched} was never finite in {n_epochs} epochs"


class _Diverged(Exception):
    """Raised inside :func:`train` when training cannot continue."""
