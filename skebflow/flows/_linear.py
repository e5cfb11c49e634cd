"""Layers whose Jacobian does not depend on the input (the set :math:`S_l`).

Their log-determinants form the log-normalizer and never enter the energy, so the
score-matching objectives never compute them. ``log|det|`` and the inverse are
cached per parameter state for evaluation and sampling.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from ._base import (
    INIT_DTYPE,
    Bijection,
    Jet,
    in_default_dtype,
    parameter_state,
    positive_integer,
)

__all__ = ["Dense", "ElementwiseAffine"]


class _ParameterCache:
    """Values derived from one parameter, recomputed only when the parameter changes.

    A hit needs the same version key *and* the same values: some in-place updates
    (fused optimizers, writes through ``.data``) do not bump the version counter, so
    the key alone could serve a stale value. Comparing costs O(D^2), the cached work
    O(D^3). Every derived value shares one snapshot of the parameter, so the cache
    holds one extra copy of it, however many values it keeps.
    """

    def __init__(self) -> None:
        self._key: tuple[int, ...] | None = None
        self._snapshot: Tensor | None = None
        self._values: dict[str, Tensor] = {}

    def _is_current(self, source: Tensor) -> bool:
        return (
            self._snapshot is not None
            and self._key == parameter_state(source)
            and self._snapshot.shape == source.shape
            and self._snapshot.dtype == source.dtype
            and self._snapshot.device == source.device
            and torch.equal(self._snapshot, source.detach())
        )

    def get(self, name: str, source: Tensor) -> Tensor | None:
        if name not in self._values or not self._is_current(source):
            return None
        return self._values[name]

    def put(self, name: str, source: Tensor, value: Tensor) -> Tensor:
        if torch.is_inference_mode_enabled():
            # An inference tensor cannot be saved for a later backward pass: a value
            # computed under torch.inference_mode() is used, never cached.
            return value
        if not self._is_current(source):
            self._values = {}
            self._snapshot = source.detach().clone()
            self._key = parameter_state(source)
        self._values[name] = value
        return value


class Dense(Bijection):
    """Affine map with an unconstrained square matrix, ``y = x W^T + b``.

    Parameters
    ----------
    n_features : int
        Dimension of the input and output.
    init : {"negative_identity", "identity", "orthogonal"}, default="negative_identity"
        Initial weight. The paper's FC model starts from ``-I`` with a bias of ones.
    bias_init : float, default=1.0
        Initial value of every bias entry.
    generator : torch.Generator or None, default=None
        Randomness for ``init="orthogonal"``.

    Notes
    -----
    The Jacobian is ``W`` everywhere: ``constant_jacobian = True``. ``log|det W|``
    (an LU factorisation, :math:`O(D^3)`) and ``W^{-1}`` are cached per parameter
    state; with gradients enabled the log-determinant is recomputed so that maximum
    likelihood can differentiate it.

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import Dense
    >>> layer = Dense(3).double()
    >>> x = torch.ones(2, 3, dtype=torch.float64)
    >>> y, log_abs_det = layer(x)
    >>> y.tolist(), log_abs_det, float(layer.log_abs_det().detach())
    ([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], None, 0.0)
    """

    constant_jacobian = True

    def __init__(
        self,
        n_features: int,
        *,
        init: Literal[
            "negative_identity", "identity", "orthogonal"
        ] = "negative_identity",
        bias_init: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.n_features = positive_integer(
            n_features, f"{type(self).__name__}'s n_features (the columns it maps)"
        )
        if init == "orthogonal":
            gaussian = torch.randn(
                n_features, n_features, generator=generator, dtype=INIT_DTYPE
            )
            q, r = torch.linalg.qr(gaussian)
            weight = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
            weight = in_default_dtype(weight)
        elif init in ("identity", "negative_identity"):
            sign = -1.0 if init == "negative_identity" else 1.0
            weight = sign * torch.eye(n_features)
        else:
            raise ValueError(
                f"init={init!r} is not supported; use 'negative_identity', 'identity'"
                " or 'orthogonal'."
            )
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.full((n_features,), float(bias_init)))
        self._cache = _ParameterCache()

    def forward(self, x: Tensor) -> tuple[Tensor, None]:
        return torch.addmm(self.bias, x, self.weight.T), None

    def jet(self, x: Tensor, tangent: Tensor) -> Jet:
        y = torch.addmm(self.bias, x, self.weight.T)
        return Jet(y, tangent @ self.weight.T, None, None, None)

    def log_abs_det(self) -> Tensor:
        if torch.is_grad_enabled() and self.weight.requires_grad:
            return torch.linalg.slogdet(self.weight)[1]
        cached = self._cache.get("log_abs_det", self.weight)
        if cached is None:
            with torch.no_grad():
                value = torch.linalg.slogdet(self.weight)[1]
            cached = self._cache.put("log_abs_det", self.weight, value)
        return cached

    def inverse_weight(self) -> Tensor:
        """``W^{-1}``, cached per parameter state.

        Returns
        -------
        Tensor of shape (n_features, n_features)
            The inverse of ``weight``, without gradient; :meth:`inverse` uses it.

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import Dense
        >>> generator = torch.Generator().manual_seed(0)
        >>> layer = Dense(3, init="orthogonal", generator=generator).double()
        >>> inverse = layer.inverse_weight()
        >>> identity = torch.eye(3, dtype=torch.float64)
        >>> bool(torch.allclose(inverse @ layer.weight, identity))
        True
        >>> layer.inverse_weight() is inverse  # cached until the weight changes
        True
        """
        cached = self._cache.get("inverse", self.weight)
        if cached is None:
            with torch.no_grad():
                value = torch.linalg.inv(self.weight)
            cached = self._cache.put("inverse", self.weight, value)
        return cached

    def inverse(self, y: Tensor) -> Tensor:
        return (y - self.bias) @ self.inverse_weight().T

    def extra_repr(self) -> str:
        return f"n_features={self.n_features}"


class ElementwiseAffine(Bijection):
    """ActNorm-style elementwise affine map, ``y = x * exp(log_scale) + shift``.

    Parameters
    ----------
    n_features : int
        Dimension of the input and output.

    Notes
    -----
    Constant Jacobian ``diag(exp(log_scale))``; ``log|det| = sum(log_scale)``, O(D).
    Starts as the identity.

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import ElementwiseAffine
    >>> layer = ElementwiseAffine(2)
    >>> layer(torch.tensor([[1.0, 2.0]]))[0].tolist()
    [[1.0, 2.0]]
    """

    constant_jacobian = True

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.n_features = n_features = positive_integer(
            n_features, f"{type(self).__name__}'s n_features (the columns it maps)"
        )
        self.log_scale = nn.Parameter(torch.zeros(n_features))
        self.shift = nn.Parameter(torch.zeros(n_features))

    def forward(self, x: Tensor) -> tuple[Tensor, None]:
        return torch.addcmul(self.shift, x, self.log_scale.exp()), None

    def jet(self, x: Tensor, tangent: Tensor) -> Jet:
        scale = self.log_scale.exp()
        return Jet(
            torch.addcmul(self.shift, x, scale), tangent * scale, None, None, None
        )

    def log_abs_det(self) -> Tensor:
        return self.log_scale.sum()

    def inverse(self, y: Tensor) -> Tensor:
        return (y - self.shift) * torch.exp(-self.log_scale)

    def extra_repr(self) -> str:
        return f"n_features={self.n_features}"
