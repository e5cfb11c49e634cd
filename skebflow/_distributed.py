"""Data-parallel training over a ``torch.distributed`` process group (torch only).

When the caller has initialized a process group of more than one process (every
process of a ``torchrun`` launch calls ``torch.distributed.init_process_group``:
``"gloo"`` on CPU, ``"nccl"`` on CUDA), the training loop uses a :class:`RankGroup`:

- every rank holds the same rows and the same settings (:func:`check_same_everywhere`
  says so with a ``ValueError`` when they differ);
- the order of the rows is drawn by rank 0 and broadcast, and each global batch is
  split across the ranks, so a step sees as many rows as one process would;
- each rank's gradient is weighted by its share of the batch and all-reduced before
  clipping, so every rank takes the same step from the same weights;
- the held-out log-likelihood is computed on a shard of the validation rows per rank
  and all-reduced, so every rank sees the same value and stops at the same epoch;
- at the end rank 0's weights are broadcast, so every rank ends bit-identical.

Without a process group (or with one process) nothing here runs.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

__all__ = ["RankGroup", "check_same_everywhere", "current_group"]


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


def current_group() -> RankGroup | None:
    """The default process group's :class:`RankGroup`, or ``None`` when training is
    single-process (no ``torch.distributed``, no initialized group, or one rank)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return None
    world_size = torch.distributed.get_world_size()
    if world_size < 2:
        return None
    return RankGroup(torch.distributed.get_rank(), world_size)


def check_same_everywhere(
    X: NDArray[np.float64],
    seed: int,
    weights: NDArray[np.float64] | None,
    device: torch.device | str = "cpu",
) -> None:
    """Raise ``ValueError`` unless every rank fits the same rows with the same seed.

    Does nothing without a process group of several ranks. The comparison is of a
    fingerprint: the shape and a SHA-256 digest of the rows' float64 bytes, in
    their order, of the weights' and of the seed drawn from ``random_state``, so
    that re-ordered rows, swapped columns or moved weights differ too (sums,
    compared before, miss them: a rank with the same pixel values in another
    order trained on a mix). The digest travels as eight 32-bit pieces, which
    float64 holds exactly. It is all-reduced on ``device``, the device training
    uses (``"cuda"`` under nccl), like the gradients.

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
    pieces = np.frombuffer(digest.digest(), dtype=np.uint32).astype(np.float64)
    fingerprint = [*X.shape, *pieces.tolist()]
    local = torch.tensor(fingerprint, dtype=torch.float64, device=device)
    high, low = local.clone(), local.clone()
    torch.distributed.all_reduce(high, op=torch.distributed.ReduceOp.MAX)
    torch.distributed.all_reduce(low, op=torch.distributed.ReduceOp.MIN)
    if not torch.equal(high, low):
        raise ValueError(
            f"Rank {group.rank} of {group.world_size} was given different rows,"
            " weights or random_state than another rank. Under torch.distributed"
            " every rank must call fit (or partial_fit) with the same rows and the"
            " same integer random_state: each trains on its share of every batch."
        )
