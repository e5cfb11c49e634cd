"""Data-parallel training over a ``torch.distributed`` process group (torch only).

When the caller has initialized a process group of more than one process (every
process of a ``torchrun`` launch calls ``torch.distributed.init_process_group``:
``"gloo"`` on CPU, ``"nccl"`` on CUDA), the training loop uses a :class:`RankGroup`:

- every rank holds the same rows and the same settings (:func:`check_same_everywhere`
  says so with a ``ValueError`` when they differ, and when another rank's checks of
  its rows failed: :func:`failures_shared`);
- the order of the rows is drawn by rank 0 and broadcast, and each global batch is
  split across the ranks, so a step sees as many rows as one process would;
- each rank's gradient is weighted by its share of the batch and all-reduced before
  clipping, so every rank takes the same step from the same weights;
- the held-out log-likelihood is computed on a shard of the validation rows per rank
  and all-reduced, so every rank sees the same value and stops at the same epoch;
- at the end rank 0's weights are broadcast, so every rank ends bit-identical.

Without a process group (or with one process), or inside :func:`local_training`,
nothing here runs.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import numbers
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

__all__ = [
    "RankGroup",
    "check_same_everywhere",
    "current_group",
    "failures_shared",
    "flag_device",
    "local_training",
    "start_digest",
]

#: Set inside :func:`local_training`: fits then train alone, whatever the group.
_LOCAL_TRAINING: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "skebflow_local_training", default=False
)
#: Parameters that may differ between ranks: the seed drawn from random_state is
#: compared on its own, each rank has its own device (cuda:0, cuda:1, ...), and
#: verbose only prints.
_PER_RANK_PARAMS = frozenset({"random_state", "device", "verbose"})
#: Fingerprint pieces: a failure flag, the rows' shape, then two SHA-256 digests
#: (the data's and the settings') as 32-bit pieces.
_FINGERPRINT_SIZE = 1 + 2 + 8 + 8


class RankGroup:
    """The ranks of the default process group, and the collectives training needs.

    Parameters
    ----------
    rank : int
        This process's rank.
    world_size : int
        Number of processes.

    Examples
    --------
    >>> from skebflow._distributed import current_group
    >>> current_group() is None  # no process group in a plain Python process
    True
    """

    def __init__(self, rank: int, world_size: int) -> None:
        self.rank = rank
        self.world_size = world_size

    def shard(self, index: Tensor) -> Tensor:
        """This rank's share of a global batch's row indices (every n-th row)."""
        return index[self.rank :: self.world_size]

    def broadcast_(self, tensor: Tensor) -> Tensor:
        """Overwrite ``tensor`` with rank 0's values (in place) and return it."""
        torch.distributed.broadcast(tensor, src=0)
        return tensor

    def broadcast_parameters_(self, module: torch.nn.Module) -> None:
        """Make every rank's parameters and buffers rank 0's, in place."""
        with torch.no_grad():
            for tensor in list(module.parameters()) + list(module.buffers()):
                self.broadcast_(tensor.data)

    def sum_(self, tensor: Tensor) -> Tensor:
        """All-reduce ``tensor`` by summation (in place) and return it."""
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor

    def average_gradients(
        self,
        parameters: list[torch.nn.Parameter],
        loss: Tensor | None,
        n_rows: int,
    ) -> float | None:
        """Replace each gradient by the batch-size-weighted mean over the ranks.

        ``loss`` is this rank's mean loss over its ``n_rows`` rows (``None`` when it
        was not finite, or when the rank had no rows). Returns the global batch's
        mean loss, or ``None`` on every rank when any rank's loss was not finite:
        then every rank skips the step together.
        """
        reference = parameters[0]
        finite = loss is not None or n_rows == 0
        pieces = [
            (
                p.grad.reshape(-1) * n_rows
                if finite and p.grad is not None
                else torch.zeros_like(p).reshape(-1)
            )
            for p in parameters
        ]
        loss_sum = float(loss) * n_rows if loss is not None else 0.0
        bookkeeping = torch.tensor(
            [loss_sum, float(n_rows), 0.0 if finite else 1.0],
            dtype=reference.dtype,
            device=reference.device,
        )
        buffer = self.sum_(torch.cat(pieces + [bookkeeping]))
        total_loss, total_rows, n_failed = buffer[-3:].tolist()
        if n_failed > 0 or total_rows == 0:
            return None
        offset = 0
        for parameter in parameters:
            size = parameter.numel()
            # A gradient laid out as its parameter (which may be a transposed
            # view), as autograd lays it out: the fused optimizers walk the memory
            # of both together.
            gradient = torch.empty_like(parameter)
            gradient.copy_(buffer[offset : offset + size].view_as(parameter))
            parameter.grad = gradient.div_(total_rows)
            offset += size
        return total_loss / total_rows

    def weighted_mean(self, values: Tensor, weights: Tensor | None) -> float:
        """The mean of ``values`` over every rank's rows (weighted unless ``None``)."""
        values = values.to(torch.float64)
        if weights is None:
            local = torch.stack([values.sum(), values.new_tensor(values.numel())])
        else:
            weights = weights.to(torch.float64)
            local = torch.stack([(values * weights).sum(), weights.sum()])
        total = self.sum_(local)
        return float(total[0] / total[1])


@contextlib.contextmanager
def local_training() -> Iterator[None]:
    """Fit in this process alone, even where a ``torch.distributed`` group exists.

    Under an initialized process group of several processes (``torchrun``, Ray
    Train), ``fit`` and ``partial_fit`` train one model together with the other
    ranks, which must make the same call. Inside this context they train here
    alone, as without a group: for a model only some ranks fit (a side model on
    rank 0) or a model per rank on its own rows. The setting is per thread (a
    context variable) and ends with the block.

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow import EBFlowDensity, local_training
    >>> X = np.random.RandomState(0).normal(size=(200, 2))
    >>> with local_training():  # under torchrun: this rank alone
    ...     model = EBFlowDensity(n_flows=1, max_iter=2, device="cpu").fit(X)
    >>> model.n_iter_
    2
    """
    token = _LOCAL_TRAINING.set(True)
    try:
        yield
    finally:
        _LOCAL_TRAINING.reset(token)


def current_group() -> RankGroup | None:
    """The default process group's :class:`RankGroup`, or ``None`` when training is
    single-process (no ``torch.distributed``, no initialized group, one rank, or
    inside :func:`local_training`)."""
    if _LOCAL_TRAINING.get():
        return None
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return None
    world_size = torch.distributed.get_world_size()
    if world_size < 2:
        return None
    return RankGroup(torch.distributed.get_rank(), world_size)


def _canonical(value: Any) -> Any:
    """``value`` in a form whose ``repr`` is the same on every rank for the same
    setting (``0.1`` and ``numpy.float64(0.1)`` alike, lists and tuples alike)."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, list | tuple | np.ndarray):
        return [_canonical(item) for item in value]
    if isinstance(value, Mapping):
        return sorted((str(key), _canonical(item)) for key, item in value.items())
    return value


def _settings_digest(settings: Mapping[str, Any] | None) -> bytes:
    """SHA-256 of the settings every rank must share (``get_params`` without the
    per-rank ones)."""
    shared = (
        []
        if settings is None
        else sorted(
            (name, _canonical(value))
            for name, value in settings.items()
            if name not in _PER_RANK_PARAMS
        )
    )
    return hashlib.sha256(repr(shared).encode()).digest()


def _all_reduce_fingerprint(
    fingerprint: list[float], device: torch.device | str
) -> tuple[Tensor, Tensor]:
    """The element-wise maximum and minimum of ``fingerprint`` over the ranks."""
    local = torch.tensor(fingerprint, dtype=torch.float64, device=device)
    high, low = local.clone(), local.clone()
    torch.distributed.all_reduce(high, op=torch.distributed.ReduceOp.MAX)
    torch.distributed.all_reduce(low, op=torch.distributed.ReduceOp.MIN)
    return high, low


@contextlib.contextmanager
def failures_shared(device: torch.device | str = "cpu") -> Iterator[None]:
    """Run a rank's checks of its rows; if one raises under a process group, tell
    the other ranks before the error reaches the caller.

    The other ranks wait in :func:`check_same_everywhere`'s collective; this rank
    takes part in it with a failure flag, so that they raise a ``ValueError``
    saying another rank failed, instead of waiting for the collective's timeout.
    Without a group of several ranks the block runs as it is.

    Examples
    --------
    >>> from skebflow._distributed import failures_shared
    >>> with failures_shared():  # no group: nothing to tell
    ...     checked = 1 + 1
    """
    try:
        yield
    except Exception:
        if current_group() is not None:
            _all_reduce_fingerprint([1.0] + [0.0] * (_FINGERPRINT_SIZE - 1), device)
        raise


def start_digest(*state: torch.nn.Module | int) -> bytes:
    """SHA-256 of the fitted state a fit or ``partial_fit`` continues (modules'
    tensors as float64 bytes, numbers by value).

    Examples
    --------
    >>> import torch
    >>> from skebflow._distributed import start_digest
    >>> layer = torch.nn.Linear(2, 2)
    >>> start_digest(layer, 3) == start_digest(layer, 3)
    True
    >>> start_digest(layer, 3) == start_digest(layer, 4)
    False
    """
    digest = hashlib.sha256()
    for part in state:
        if isinstance(part, torch.nn.Module):
            for name, tensor in sorted(part.state_dict().items()):
                digest.update(name.encode())
                values = tensor.detach().to("cpu", torch.float64).contiguous()
                digest.update(values.numpy().tobytes())
        else:
            digest.update(repr(part).encode())
    return digest.digest()


def flag_device(resolve: Callable[[], torch.device | str]) -> torch.device | str:
    """The device a rank's failure flag travels on (:func:`failures_shared`): the
    one ``resolve`` gives, or the CPU, where gloo's collectives run, when
    ``resolve`` fails (a rank asked for a device it lacks raises inside the
    block, and the others learn of it).

    Examples
    --------
    >>> from skebflow._distributed import flag_device
    >>> flag_device(lambda: "cpu"), flag_device(lambda: 1 / 0)
    ('cpu', 'cpu')
    """
    try:
        return resolve()
    except Exception:
        return "cpu"


def check_same_everywhere(
    X: NDArray[np.float64],
    seed: int,
    weights: NDArray[np.float64] | None,
    device: torch.device | str = "cpu",
    settings: Mapping[str, Any] | None = None,
    start: Callable[[], bytes] | None = None,
) -> None:
    """Raise ``ValueError`` unless every rank fits the same rows with the same seed
    and the same settings.

    Does nothing without a process group of several ranks. The comparison is of a
    fingerprint: the shape and a SHA-256 digest of the rows' float64 bytes, in
    their order, of the weights' and of the seed drawn from ``random_state``, so
    that re-ordered rows, swapped columns or moved weights differ too (sums,
    compared before, miss them: a rank with the same pixel values in another
    order trained on a mix), and a digest of ``settings`` (the estimator's
    ``get_params``, less ``random_state``, ``device`` and ``verbose``): a rank
    with another learning rate would take other steps between the all-reduces,
    and another batch size would break the collectives. ``start``, for a fit
    that continues a fitted state, gives that state's digest
    (:func:`start_digest`; called only under a group, as hashing every weight
    costs), folded into the rows' digest: a rank continuing
    another fitted state (resumed from an older checkpoint, or a first fit
    where the others continue) would train another model. The digests travel as
    32-bit pieces, which float64 holds exactly. It is all-reduced on ``device``,
    the device training uses (``"cuda"`` under nccl), like the gradients. A rank
    whose checks failed first (:func:`failures_shared`) makes the others raise.

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow._distributed import check_same_everywhere
    >>> check_same_everywhere(np.zeros((3, 2)), seed=0, weights=None)  # no group
    """
    group = current_group()
    if group is None:
        return
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(X, dtype=np.float64).tobytes())
    digest.update(
        b"no weights"
        if weights is None
        else np.ascontiguousarray(weights, dtype=np.float64).tobytes()
    )
    digest.update(str(int(seed)).encode())
    if start is not None:
        digest.update(start())
    pieces = np.frombuffer(
        digest.digest() + _settings_digest(settings), dtype=np.uint32
    ).astype(np.float64)
    fingerprint = [0.0, *X.shape, *pieces.tolist()]
    high, low = _all_reduce_fingerprint(fingerprint, device)
    if float(high[0]) > 0:
        raise ValueError(
            f"Rank {group.rank} of {group.world_size} did not train: another rank's"
            " checks of its rows or settings failed (that rank raised the error"
            " saying why). Under torch.distributed every rank must call fit (or"
            " partial_fit) with the same valid rows."
        )
    if not torch.equal(high, low):
        raise ValueError(
            f"Rank {group.rank} of {group.world_size} was given different rows,"
            " weights, settings, random_state or fitted state than another rank."
            " Under"
            " torch.distributed every rank must call fit (or partial_fit) with the"
            " same rows, the same parameters and the same integer random_state,"
            " from the same fitted state (or none):"
            " each trains on its share of every batch. To fit on one rank alone,"
            " or a model per rank, fit inside skebflow.local_training()."
        )
