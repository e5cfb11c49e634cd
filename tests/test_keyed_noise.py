"""Per-row noise streams (skebflow._keyed_noise)."""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats

from skebflow._keyed_noise import KeyedNoise, row_keys, splitmix64

_MASK = (1 << 64) - 1


def _reference_splitmix64(value: int) -> int:
    """SplitMix64's output function on Python's unbounded ints, mod 2**64."""
    z = (value + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def test_splitmix64_wraps_as_unsigned_arithmetic_does():
    # torch's int64 products must wrap, and its right shifts be made logical
    values = torch.randint(-(2**62), 2**62, (2000,), generator=torch.Generator())
    values = torch.cat([values, torch.tensor([0, -1, -(2**63), 2**63 - 1])])
    got = splitmix64(values).tolist()
    expected = [_reference_splitmix64(v & _MASK) for v in values.tolist()]
    assert [g & _MASK for g in got] == expected


def test_keyed_draws_are_standard_normal_and_uniform():
    noise = KeyedNoise(torch.arange(4000))
    normal = noise.normal(50, torch.float64).flatten().numpy()
    assert stats.kstest(normal, "norm").pvalue > 1e-3
    uniform = noise.uniform(torch.float64).numpy()
    assert 0.0 < uniform.min() and uniform.max() < 1.0
    assert stats.kstest(uniform, "uniform").pvalue > 1e-3
    # successive draws of a row, and neighbouring columns, are uncorrelated
    first, second = noise.normal(2, torch.float64), noise.normal(2, torch.float64)
    assert abs(np.corrcoef(first[:, 0], second[:, 0])[0, 1]) < 0.06
    assert abs(np.corrcoef(first[:, 0], first[:, 1])[0, 1]) < 0.06


def test_a_rows_stream_is_its_own():
    keys = torch.tensor([5, 9, 13])
    together = KeyedNoise(keys)
    together.normal(4, torch.float64)
    second_draw = together.normal(4, torch.float64)
    alone = KeyedNoise(keys[1:2])
    alone.normal(4, torch.float64)
    assert torch.equal(alone.normal(4, torch.float64)[0], second_draw[1])
    # a block of rows continues at the same draw number
    part = KeyedNoise(keys)
    part.normal(4, torch.float64)
    assert torch.equal(
        part.rows(slice(2, 3)).normal(4, torch.float64)[0], second_draw[2]
    )


def test_row_keys_follow_values_seed_and_copies_not_order():
    X = np.array([[1.0, np.nan], [2.0, 3.0], [1.0, np.nan], [-0.0, 1.0], [0.0, 1.0]])
    keys = row_keys(X, seed=0)
    assert len(set(keys.tolist())) == 5  # copies of a row get keys of their own
    order = np.array([4, 2, 0, 1, 3])
    assert sorted(row_keys(X[order], seed=0).tolist()) == sorted(keys.tolist())
    assert row_keys(X[1:2], seed=0)[0] == keys[1]
    assert row_keys(X[1:2], seed=1)[0] != keys[1]
    assert row_keys(np.array([[2.0, 3.5]]), seed=0)[0] != keys[1]
