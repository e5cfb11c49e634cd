"""The fitting loop: batches, optimizer, EMA, clipping, schedule, early stopping.

Torch and the objectives only; nothing here knows scikit-learn. The estimator turns a
:class:`TrainingResult` into fitted attributes and warnings.
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from .flows import Flow, Preprocessing
from .objectives import bind_objective

__all__ = ["TrainingConfig", "TrainingResult", "evaluate_log_likelihood", "train"]


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
    n_iter_no_change: int = 10
    tol: float = 1e-4
    max_bad_batches: int = 20
    verbose: int = 0


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
        weights were restored.
    interrupted : bool
        ``True`` when a ``KeyboardInterrupt`` ended training.
    n_skipped_batches : int
        Batches skipped because their loss or gradient was not finite.
    """

    loss_curve: list[float] = field(default_factory=list)
    validation_scores: list[float] = field(default_factory=list)
    n_iter: int = 0
    best_validation_score: float | None = None
    converged: bool = False
    stop_reason: str = ""
    diverged: bool = False
    interrupted: bool = False
    n_skipped_batches: int = 0


def evaluate_log_likelihood(
    flow: Flow,
    preprocessing: Preprocessing,
    x: Tensor,
    *,
    chunk_size: int = 4096,
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
            y, log_abs_det = preprocessing(chunk)
            energy = flow.energy(y.to(flow_dtype)).to(x.dtype)
            pieces.append(-energy - log_normalizer + log_abs_det)
    if not pieces:
        return x.new_zeros(0)
    return torch.cat(pieces)


class _ExponentialMovingAverage:
    """Shadow weights ``m * shadow + (1 - m) * weights`` with the usual warm-up."""

    def __init__(self, flow: Flow, decay: float) -> None:
        self.model = copy.deepcopy(flow)
        self.model.requires_grad_(False)
        self.decay = decay
        self.n_updates = 0

    def update(self, flow: Flow) -> None:
        self.n_updates += 1
        decay = min(self.decay, (1.0 + self.n_updates) / (10.0 + self.n_updates))
        with torch.no_grad():
            for shadow, weight in zip(
                self.model.parameters(), flow.parameters(), strict=True
            ):
                shadow.lerp_(weight, 1.0 - decay)


def _state_copy(flow: Flow) -> dict[str, Tensor]:
    return {name: value.detach().clone() for name, value in flow.state_dict().items()}


def _all_finite(flow: Flow) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in flow.parameters())


def _batches(
    n_rows: int, batch_size: int, generator: torch.Generator, device: torch.device
) -> Iterator[Tensor]:
    order = torch.randperm(n_rows, generator=generator, device=generator.device).to(
        device
    )
    for start in range(0, n_rows, batch_size):
        yield order[start : start + batch_size]


def _backward(
    flow: Flow,
    objective: Callable[..., Tensor],
    batch: Tensor,
    parameters: list[torch.nn.Parameter],
    config: TrainingConfig,
    generator: torch.Generator,
) -> float | None:
    """Gradient of the batch loss into ``parameters``; ``None`` if it is not finite.

    A singular linear layer (``sml`` inverts the flow to sample) counts as a batch
    whose loss is not finite.
    """
    try:
        loss = objective(flow, batch, generator=generator).mean()
    except torch.linalg.LinAlgError:
        return None
    if config.energy_regularization > 0:
        energy = flow.energy(batch).mean() / batch.shape[1]
        loss = loss + config.energy_regularization * energy
    for parameter in parameters:
        parameter.grad = None
    if not bool(torch.isfinite(loss)):
        return None
    loss.backward(inputs=parameters)
    if config.grad_clip is not None:
        norm = torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip)
    else:
        norm = torch.linalg.vector_norm(
            torch.stack([p.grad.norm() for p in parameters if p.grad is not None])
        )
    return float(loss.detach()) if bool(torch.isfinite(norm)) else None


class _Reporter:
    """Progress: a tqdm bar (notebook-aware) when available, else one line per epoch."""

    def __init__(self, verbose: int, total: int, description: str) -> None:
        self.verbose = verbose
        self.bar = None
        if verbose >= 1:
            try:
                from tqdm.auto import tqdm
            except ImportError:  # pragma: no cover - depends on the environment
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, desc=description, unit="epoch", leave=True)

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


def train(
    flow: Flow,
    preprocessing: Preprocessing,
    x_train: Tensor,
    x_validation: Tensor | None,
    *,
    config: TrainingConfig,
    generator: torch.Generator,
    on_epoch_end: Callable[[int, TrainingResult], None] | None = None,
) -> TrainingResult:
    """Fit ``flow`` to ``preprocessing(x_train)`` in place and report how it went.

    Parameters
    ----------
    flow : Flow
        Trained in place; ends holding the EMA weights of the best epoch (by held-out
        log-likelihood with validation data, else the last epoch's EMA weights).
    preprocessing : Preprocessing
        MaP bijection applied to every batch (with fresh dequantization noise).
    x_train : Tensor of shape (n_samples, n_features)
        Training rows in original units, on the flow's device, in the
        preprocessing's dtype (float64 in the estimator, so that standardizing
        loses no precision); each preprocessed batch is cast to the flow's dtype.
    x_validation : Tensor or None
        Held-out rows for early stopping; ``None`` monitors the training loss.
    config : TrainingConfig
        Optimisation settings.
    generator : torch.Generator
        The only source of randomness (batch order, objective noise, dequantization);
        must live on the data's device.
    on_epoch_end : callable or None, default=None
        Called with ``(epoch, result)`` after each epoch.

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
    objective = bind_objective(config.objective, **config.objective_settings)
    flow_dtype = flow.dtype
    parameters = [p for p in flow.parameters() if p.requires_grad]
    if not parameters:
        raise ValueError(
            "The flow has no trainable parameters; there is nothing to fit."
        )
    if config.solver == "adam":
        optimizer: torch.optim.Optimizer = torch.optim.Adam(
            parameters, lr=config.learning_rate, weight_decay=config.weight_decay
        )
    else:
        optimizer = torch.optim.RMSprop(
            parameters, lr=config.learning_rate, weight_decay=config.weight_decay
        )
    if config.learning_rate_schedule == "cosine":
        scheduler: torch.optim.lr_scheduler.LRScheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer,
                T_max=max(config.max_iter, 1),
                eta_min=0.01 * config.learning_rate,
            )
        )
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)

    ema = _ExponentialMovingAverage(flow, config.ema_decay)
    result = TrainingResult()
    best_state = _state_copy(ema.model)
    best_monitor = -math.inf
    epochs_without_improvement = 0
    reporter = _Reporter(config.verbose, config.max_iter, f"{config.objective} fit")

    consecutive_bad = 0
    try:
        for epoch in range(1, config.max_iter + 1):
            losses = []
            for index in _batches(
                x_train.shape[0], config.batch_size, generator, x_train.device
            ):
                with torch.no_grad():
                    batch, _ = preprocessing(x_train[index], generator)
                    batch = batch.to(flow_dtype)
                    if config.input_noise_std > 0:
                        noise = torch.randn(
                            batch.shape,
                            generator=generator,
                            device=batch.device,
                            dtype=batch.dtype,
                        )
                        batch = batch + config.input_noise_std * noise
                loss = _backward(flow, objective, batch, parameters, config, generator)
                if loss is None:
                    result.n_skipped_batches += 1
                    consecutive_bad += 1
                    if consecutive_bad > config.max_bad_batches:
                        raise _Diverged(
                            f"the {config.objective} loss or its gradient was not"
                            f" finite in {consecutive_bad} consecutive batches at"
                            f" epoch {epoch}"
                        )
                    continue
                consecutive_bad = 0
                optimizer.step()
                ema.update(flow)
                losses.append(loss)
            scheduler.step()
            if not _all_finite(flow) or not _all_finite(ema.model):
                raise _Diverged(f"the weights became non-finite at epoch {epoch}")

            result.n_iter = epoch
            if not losses:
                raise _Diverged(
                    f"no batch of epoch {epoch} had a finite {config.objective} loss"
                    " and gradient"
                )
            epoch_loss = float(sum(losses) / len(losses))
            result.loss_curve.append(epoch_loss)
            if x_validation is not None:
                validation = float(
                    evaluate_log_likelihood(
                        ema.model, preprocessing, x_validation
                    ).mean()
                )
                result.validation_scores.append(validation)
                monitor = validation if math.isfinite(validation) else -math.inf
            else:
                validation = None
                monitor = -epoch_loss if math.isfinite(epoch_loss) else -math.inf
            reporter.epoch(epoch, epoch_loss, validation)

            if monitor > best_monitor + config.tol:
                epochs_without_improvement = 0
            else:
                epochs_without_improvement += 1
            if monitor > best_monitor:
                best_monitor = monitor
                best_state = _state_copy(ema.model)
                if x_validation is not None:
                    result.best_validation_score = validation
            if on_epoch_end is not None:
                on_epoch_end(epoch, result)
            if epochs_without_improvement >= config.n_iter_no_change:
                if best_monitor == -math.inf:
                    raise _Diverged(
                        "the validation log-likelihood was never finite in"
                        f" {epoch} epochs"
                    )
                watched = (
                    "Validation log-likelihood"
                    if x_validation is not None
                    else "Training loss"
                )
                result.converged = True
                result.stop_reason = (
                    f"{watched} did not improve more than tol={config.tol} for"
                    f" {config.n_iter_no_change} consecutive epochs."
                )
                break
        else:
            result.stop_reason = f"Maximum iterations ({config.max_iter}) reached."
    except _Diverged as error:
        result.diverged = True
        result.stop_reason = (
            f"Training diverged: {error}. The last good weights were restored. Lower"
            " learning_rate, clip harder (a lower grad_clip), or use objective='dsm'"
            " with a larger noise_std."
        )
    except KeyboardInterrupt:
        result.interrupted = True
        result.stop_reason = "Training interrupted by user."
    finally:
        reporter.close(result.stop_reason)

    if x_validation is None and not result.diverged and _all_finite(ema.model):
        best_state = _state_copy(ema.model)
    flow.load_state_dict(best_state)
    return result


class _Diverged(Exception):
    """Raised inside :func:`train` when training cannot continue."""
