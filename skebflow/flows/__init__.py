"""Energy-based normalizing flows in plain PyTorch (no scikit-learn).

Examples
--------
>>> import torch
>>> from skebflow.flows import fc
>>> flow = fc(2, generator=torch.Generator().manual_seed(0))
>>> tuple(flow.sample(4, generator=torch.Generator().manual_seed(1)).shape)
(4, 2)
"""

from ._architectures import coupling, fc
from ._base import Bijection, Flow, Jet
from ._linear import Dense, ElementwiseAffine
from ._mixture_coupling import LogisticMixtureCoupling
from ._nonlinear import AffineCoupling, SmoothLeakyReLU
from ._preprocessing import (
    ColumnNoise,
    Logit,
    Preprocessing,
    Standardize,
    UniformDequantize,
)
from ._solve import InverseNotConvergedWarning, solve_increasing

__all__ = [
    "AffineCoupling",
    "Bijection",
    "ColumnNoise",
    "Dense",
    "ElementwiseAffine",
    "Flow",
    "InverseNotConvergedWarning",
    "Jet",
    "LogisticMixtureCoupling",
    "Logit",
    "Preprocessing",
    "SmoothLeakyReLU",
    "Standardize",
    "UniformDequantize",
    "coupling",
    "fc",
    "solve_increasing",
]
