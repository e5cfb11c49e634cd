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
from ._base import (
    BASE_DISTRIBUTIONS,
    BaseDistribution,
    Bijection,
    Flow,
    Jet,
    StandardNormal,
    StudentT,
    make_base,
)
from ._conv import Conv2d, Squeeze
from ._conv_architecture import cnn
from ._flow_geometric_mean import FlowGeometricMean, RejectionSamplingError
from ._flow_mixture import FlowMixture
from ._kernel_marginals import KernelGaussianize
from ._linear import Dense, ElementwiseAffine
from ._mixture_coupling import LogisticMixtureCoupling
from ._nonlinear import AffineCoupling, SmoothLeakyReLU
from ._preprocessing import (
    BinProbit,
    ColumnNoise,
    LinearResidual,
    Logit,
    Preprocessing,
    Standardize,
    UniformDequantize,
)
from ._solve import InverseNotConvergedWarning, solve_increasing
from ._widened import ScaledBase, widen_base

__all__ = [
    "BASE_DISTRIBUTIONS",
    "AffineCoupling",
    "BaseDistribution",
    "Bijection",
    "BinProbit",
    "ColumnNoise",
    "Conv2d",
    "Dense",
    "ElementwiseAffine",
    "Flow",
    "FlowGeometricMean",
    "FlowMixture",
    "InverseNotConvergedWarning",
    "Jet",
    "KernelGaussianize",
    "LinearResidual",
    "LogisticMixtureCoupling",
    "Logit",
    "Preprocessing",
    "RejectionSamplingError",
    "ScaledBase",
    "SmoothLeakyReLU",
    "Squeeze",
    "StandardNormal",
    "Standardize",
    "StudentT",
    "UniformDequantize",
    "cnn",
    "coupling",
    "fc",
    "make_base",
    "solve_increasing",
    "widen_base",
]
