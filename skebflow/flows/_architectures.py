"""Builders that size a :class:`~skebflow.flows.Flow` from integers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from ._base import BaseDistribution, Bijection, Flow
from ._linear import Dense, ElementwiseAffine
from ._mixture_coupling import LogisticMixtureCoupling
from ._nonlinear import AffineCoupling, SmoothLeakyReLU

__all__ = ["coupling", "fc"]


def fc(
    n_features: int,
    *,
    n_layers: int = 2,
    alpha: float = 0.3,
    residual: bool = False,
    init: Literal["negative_identity", "identity", "orthogonal"] = "negative_identity",
    base: str | BaseDistribution = "normal",
    generator: torch.Generator | None = None,
) -> Flow:
    """The paper's fully connected flow: dense layers with smooth leaky ReLUs between.

    The layers are ``dense -> SLR -> dense -> ... -> dense``.

    Parameters
    ----------
    n_features : int
        Data dimension ``D``.
    n_layers : int, default=2
        Number of dense ``D x D`` layers (the paper's MNIST model has 2); a smooth leaky
        ReLU sits between consecutive ones.
    alpha : float, default=0.3
        Slope of the smooth leaky ReLU.
    residual : bool, default=False
        Use the residual smooth leaky ReLU (the paper's CIFAR-10 model).
    init : {"negative_identity", "identity", "orthogonal"}, default="negative_identity"
        Initial dense weights; the bias starts at ones (zeros for "orthogonal").
    base : {"normal", "student_t", "student_t_learned"} or BaseDistribution, \
default="normal"
        The base density (see :class:`~skebflow.flows.Flow`).
    generator : torch.Generator or None, default=None
        Randomness for a random initialisation.

    Returns
    -------
    Flow
        ``2 n_layers - 1`` layers with ``n_layers (D^2 + D)`` parameters.

    Examples
    --------
    >>> from skebflow.flows import fc
    >>> flow = fc(784)
    >>> sum(p.numel() for p in flow.parameters())
    1230880
    """
    if n_layers < 1:
        raise ValueError(f"n_layers={n_layers} must be at least 1.")
    bias_init = 0.0 if init == "orthogonal" else 1.0
    layers: list[Bijection] = []
    for index in range(n_layers):
        if index > 0:
            layers.append(SmoothLeakyReLU(alpha, residual=residual))
        layers.append(
            Dense(n_features, init=init, bias_init=bias_init, generator=generator)
        )
    return Flow(layers, base=base)


def coupling(
    n_features: int,
    *,
    n_layers: int = 4,
    hidden_layer_sizes: Sequence[int] = (64, 64),
    activation: Literal["tanh", "silu"] = "tanh",
    transform: Literal["affine", "logistic_mixture"] = "affine",
    n_components: int = 8,
    base: str | BaseDistribution = "normal",
    generator: torch.Generator | None = None,
) -> Flow:
    """A Glow-style flow for tabular data.

    Each of ``n_layers`` blocks is ``elementwise affine -> dense -> coupling``, the
    couplings alternating which half they transform; a final dense layer follows.

    Parameters
    ----------
    n_features : int
        Data dimension ``D``, at least 2.
    n_layers : int, default=4
        Number of blocks.
    hidden_layer_sizes : sequence of int, default=(64, 64)
        Widths of each coupling's conditioner MLP.
    activation : {"tanh", "silu"}, default="tanh"
        Activation of the conditioners. ``"tanh"`` bounds every coupling's scale and
        shift, so the flow grows at most linearly far from the data and its
        log-density decays like a Gaussian's there; with ``"silu"`` a test point
        outside the training range can get a log-density of minus thousands.
    transform : {"affine", "logistic_mixture"}, default="affine"
        The couplings' elementwise map: :class:`~skebflow.flows.AffineCoupling`
        (scale and shift) or :class:`~skebflow.flows.LogisticMixtureCoupling` (the
        logit of a mixture of ``n_components`` logistic CDFs, which can give a
        column several narrow modes or a box shape in one layer; its conditioners
        have ``3 n_components + 2`` outputs per coordinate instead of 2, and its
        inverse is numerical).
    n_components : int, default=8
        Mixture components per coordinate with ``transform="logistic_mixture"``;
        ignored otherwise.
    base : {"normal", "student_t", "student_t_learned"} or BaseDistribution, \
default="normal"
        The base density (see :class:`~skebflow.flows.Flow`). A Student-t base gives
        the flow polynomial tails, which the bounded ``"tanh"`` couplings cannot.
    generator : torch.Generator or None, default=None
        Randomness for the orthogonal dense weights and the conditioners.

    Returns
    -------
    Flow
        ``3 n_layers + 1`` layers; the dense and elementwise-affine ones form the
        log-normalizer.

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import coupling
    >>> flow = coupling(4, n_layers=2, generator=torch.Generator().manual_seed(0))
    >>> len(flow.layers)
    7
    >>> mixture = coupling(4, n_layers=2, transform="logistic_mixture", n_components=4)
    >>> type(mixture.layers[2]).__name__
    'LogisticMixtureCoupling'
    """
    if n_layers < 1:
        raise ValueError(f"n_layers={n_layers} must be at least 1.")
    if n_features < 2:
        raise ValueError(
            f"The coupling architecture needs at least 2 features, got {n_features};"
            " use the fc architecture for 1-D data."
        )
    if transform not in ("affine", "logistic_mixture"):
        raise ValueError(
            f"transform={transform!r} is not supported; use 'affine' or"
            " 'logistic_mixture'."
        )
    layers: list[Bijection] = []
    for index in range(n_layers):
        layers.append(ElementwiseAffine(n_features))
        layers.append(
            Dense(n_features, init="orthogonal", bias_init=0.0, generator=generator)
        )
        if transform == "affine":
            layers.append(
                AffineCoupling(
                    n_features,
                    hidden_layer_sizes=hidden_layer_sizes,
                    parity=index % 2,
                    activation=activation,
                    generator=generator,
                )
            )
        else:
            layers.append(
                LogisticMixtureCoupling(
                    n_features,
                    n_components=n_components,
                    hidden_layer_sizes=hidden_layer_sizes,
                    parity=index % 2,
                    activation=activation,
                    generator=generator,
                )
            )
    layers.append(
        Dense(n_features, init="orthogonal", bias_init=0.0, generator=generator)
    )
    return Flow(layers, base=base)
