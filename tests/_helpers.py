"""Small helpers shared by the test modules (seeded generators, perturbed weights)."""

from __future__ import annotations

import torch
from torch import nn

DTYPE = torch.float64


def gen(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, generator: torch.Generator, dtype=DTYPE) -> torch.Tensor:
    """Standard normal draws from ``generator``."""
    return torch.randn(*shape, generator=generator, dtype=dtype)


def perturb(module: nn.Module, generator: torch.Generator, scale: float) -> nn.Module:
    """Add ``scale`` times standard normal noise to every parameter, in place."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(
                scale
                * torch.randn(
                    parameter.shape, generator=generator, dtype=parameter.dtype
                )
            )
    return module
