"""Noise drawn per row from the row itself, so that a row's draws do not depend on
the rows beside it.

A :class:`torch.Generator` hands out its numbers in order: a chain's noise then
depends on how many chains came before it in the batch. :class:`KeyedNoise` gives
each row its own stream instead, a counter-based hash (SplitMix64, Steele et al.,
2014) of the row's key, the draw's number and the column, so the same row with
the same seed gets the same noise in any batch, in any order, in any block.
:func:`row_keys` makes those keys from a row's values (NaN included), the seed
and how many identical rows came before it.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

__all__ = [
    "KeyedNoise",
    "identical_rows",
    "row_keys",
    "row_uniform",
    "splitmix64",
    "standard_normal",
]

_MASK64 = (1 << 64) - 1


def _signed(value: int) -> int:
    """The int64 whose bits are the unsigned 64-bit ``value``'s."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_MIX_1 = _signed(0xBF58476D1CE4E5B9)
_MIX_2 = _signed(0x94D049BB133111EB)


def _shift_right(x: Tensor, bits: int) -> Tensor:
    """Logical right shift of int64 bits (torch's ``>>`` keeps the sign)."""
    return torch.bitwise_and(torch.bitwise_right_shift(x, bits), (1 << (64 - bits)) - 1)


def splitmix64(x: Tensor) -> Tensor:
    """SplitMix64's output function of the int64 ``x``, elementwise (wrapping
    arithmetic, bits as unsigned).

    Parameters
    ----------
    x : Tensor of dtype int64

    Returns
    -------
    Tensor of dtype int64, the same shape

    Examples
    --------
    >>> import torch
    >>> from skebflow._keyed_noise import splitmix64
    >>> hex(splitmix64(torch.tensor([0])).item() & (2**64 - 1))  # SplitMix64(0)
    '0xe220a8397b1dcdaf'
    """
    z = x + _GOLDEN
    z = torch.bitwise_xor(z, _shift_right(z, 30)) * _MIX_1
    z = torch.bitwise_xor(z, _shift_right(z, 27)) * _MIX_2
    return torch.bitwise_xor(z, _shift_right(z, 31))


class KeyedNoise:
    """Standard normal and uniform draws, one stream per row.

    The ``k``-th draw of row ``i`` (column ``j``) is a hash of ``keys[i]``, ``k``
    and ``j``: it depends on nothing else, so a row keyed the same way gets the
    same draws in any batch. Each call of :meth:`normal` or :meth:`uniform` is one
    draw number for every row.

    Parameters
    ----------
    keys : Tensor of dtype int64, shape (n_rows,)
        One key per row (see :func:`row_keys`).

    Examples
    --------
    >>> import torch
    >>> from skebflow._keyed_noise import KeyedNoise
    >>> both = KeyedNoise(torch.tensor([7, 11])).normal(3, torch.float64)
    >>> alone = KeyedNoise(torch.tensor([11])).normal(3, torch.float64)
    >>> bool(torch.equal(both[1], alone[0]))
    True
    """

    def __init__(self, keys: Tensor) -> None:
        self.keys = keys.to(torch.int64)
        self.n_draws = 0

    def rows(self, index: slice) -> KeyedNoise:
        """The streams of the rows ``index``, at the same draw number."""
        part = KeyedNoise(self.keys[index])
        part.n_draws = self.n_draws
        return part

    def _bits(self, n_columns: int) -> Tensor:
        """64 random bits per row and column for this draw number."""
        draw = splitmix64(self.keys * _MIX_1 + self.n_draws)
        self.n_draws += 1
        columns = torch.arange(n_columns, device=self.keys.device)
        return splitmix64(draw.unsqueeze(1) + splitmix64(columns).unsqueeze(0))

    def uniform(self, dtype: torch.dtype, n_columns: int | None = None) -> Tensor:
        """Uniform draws in the open interval (0, 1): shape (n_rows,), or
        (n_rows, n_columns)."""
        bits = self._bits(1 if n_columns is None else n_columns)
        # the top 53 bits, centred in their cell: never 0 or 1
        top = _shift_right(bits, 11).to(torch.float64)
        values = ((top + 0.5) * 2.0**-53).to(dtype)
        return values.squeeze(1) if n_columns is None else values

    def normal(self, n_columns: int, dtype: torch.dtype) -> Tensor:
        """Standard normal draws of shape (n_rows, n_columns), by the normal
        quantile of :meth:`uniform`'s."""
        uniform = self.uniform(torch.float64, n_columns)
        return torch.special.ndtri(uniform).to(dtype)


def _canonical_bits(X: NDArray[np.float64]) -> NDArray[np.int64]:
    """Each row's float64 bits, with -0.0 read as 0.0 and one NaN pattern."""
    values = np.ascontiguousarray(X, dtype=np.float64) + 0.0  # -0.0 is 0.0
    values[np.isnan(values)] = np.nan
    return values.view(np.int64)


def _groups(bits: NDArray[np.int64]) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """The first row of each set of identical rows of ``bits``, and each row's
    set."""
    _, first, group = np.unique(bits, axis=0, return_index=True, return_inverse=True)
    return first, group.reshape(-1)


def identical_rows(X: NDArray[np.float64]) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """The first of each set of identical rows of ``X`` (NaN equal to NaN, -0.0 to
    0.0, as :func:`row_keys` reads them), and for every row the number of its set.

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow._keyed_noise import identical_rows
    >>> first, group = identical_rows(np.array([[1.0, np.nan], [2.0, 0.0],
    ...                                         [1.0, np.nan]]))
    >>> first.tolist(), group.tolist()
    ([0, 1], [0, 1, 0])
    """
    return _groups(_canonical_bits(X))


def row_keys(X: NDArray[np.float64], seed: int) -> NDArray[np.int64]:
    """One key per row of ``X`` from its values (NaN and signed zeros read
    alike), ``seed``, and the number of identical rows before it.

    Identical rows are interchangeable, so the keys of a set of rows do not depend
    on their order: the ``k``-th copy of a row gets the same key wherever the
    copies sit.

    Parameters
    ----------
    X : ndarray of shape (n_rows, n_features)
    seed : int

    Returns
    -------
    ndarray of dtype int64, shape (n_rows,)

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow._keyed_noise import row_keys
    >>> X = np.array([[1.0, np.nan], [2.0, 3.0], [1.0, np.nan]])
    >>> keys = row_keys(X, seed=0)
    >>> bool(keys[0] != keys[2]), bool(keys[1] == row_keys(X[1:2], seed=0)[0])
    (True, True)
    """
    bits = _canonical_bits(X)
    # Each row's bytes, reduced with a hash per column.
    key = torch.full((bits.shape[0],), _signed(seed), dtype=torch.int64)
    for column in torch.from_numpy(bits).T:
        key = splitmix64(key * _MIX_2 + column)
    # the occurrence of each row among identical ones, in order: its rank within
    # its group once the rows are stably sorted by group
    _, group = _groups(bits)
    order = np.argsort(group, kind="stable")
    counts = np.bincount(group)
    group_start = np.cumsum(counts) - counts
    occurrence = np.empty(bits.shape[0], dtype=np.int64)
    occurrence[order] = np.arange(bits.shape[0]) - group_start[group[order]]
    return splitmix64(key + torch.from_numpy(occurrence) * _GOLDEN).numpy()


def standard_normal(
    source: torch.Generator | KeyedNoise | None, like: Tensor
) -> Tensor:
    """Standard normal draws shaped, typed and placed like the 2-D ``like``, from a
    generator (in its order) or from keyed streams (one per row).

    Examples
    --------
    >>> import torch
    >>> from skebflow._keyed_noise import KeyedNoise, standard_normal
    >>> like = torch.zeros(2, 3, dtype=torch.float64)
    >>> standard_normal(torch.Generator().manual_seed(0), like).shape
    torch.Size([2, 3])
    >>> standard_normal(KeyedNoise(torch.tensor([1, 2])), like).shape
    torch.Size([2, 3])
    """
    if isinstance(source, KeyedNoise):
        return source.normal(like.shape[1], like.dtype).to(like.device)
    return torch.randn(
        like.shape, generator=source, device=like.device, dtype=like.dtype
    )


def row_uniform(source: torch.Generator | KeyedNoise | None, like: Tensor) -> Tensor:
    """One uniform draw per row of the 2-D ``like``, typed and placed like it, from
    a generator (in its order) or from keyed streams (one per row).

    Examples
    --------
    >>> import torch
    >>> from skebflow._keyed_noise import KeyedNoise, row_uniform
    >>> like = torch.zeros(2, 3, dtype=torch.float64)
    >>> row_uniform(KeyedNoise(torch.tensor([1, 2])), like).shape
    torch.Size([2])
    """
    if isinstance(source, KeyedNoise):
        return source.uniform(like.dtype).to(like.device)
    return torch.rand(
        like.shape[0], generator=source, device=like.device, dtype=like.dtype
    )
