"""Layers whose Jacobian depends on the input (the set :math:`S_n`).

Their log-determinants are part of the energy. Each layer also propagates a
second-order jet (:class:`~skebflow.flows.Jet`), which the sliced score-matching
objective uses to get :math:`v^T \\nabla_x^2 E\\, v` without a double backward pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._base import INIT_DTYPE, Bijection, Jet, in_default_dtype
from ._solve import solve_increasing

__all__ = ["AffineCoupling", "SmoothLeakyReLU"]


class SmoothLeakyReLU(Bijection):
    """Smooth leaky ReLU, ``f(x) = a x + (1 - alpha) softplus(x)``, elementwise.

    ``a = alpha`` in the plain form and ``a = 1 + alpha`` in the residual form, so
    ``f'`` lies in ``(alpha, 1)`` or ``(1 + alpha, 2)``.

    Parameters
    ----------
    alpha : float, default=0.3
        Slope for large negative inputs, in (0, 1).
    residual : bool, default=False
        Use the residual form ``x + alpha x + (1 - alpha) softplus(x)``.
    tol : float, default=1e-10
        Relative tolerance of the numerical inverse (floored at ``8 eps`` of the
        dtype): it stops when every ``|f(x) - y| <= tol (1 + |y|)``.
    max_newton_steps : int, default=100
        Step budget of the inverse; entries that miss the tolerance within it raise
        an :class:`~skebflow.flows.InverseNotConvergedWarning`.

    Notes
    -----
    ``log|det J| = sum_i log f'(x_i)``, O(D). The inverse is
    :func:`~skebflow.flows.solve_increasing`: Newton steps kept inside a bracket of
    the root (``f'`` lies between ``a`` and ``a + 1 - alpha``, which brackets it from
    ``f(0)``), with bisection as the safeguard and a convergence check every few
    steps rather than a host synchronization per step. ``f`` is convex and the first
    iterate has ``f(x_0) >= y``, so Newton descends monotonically to the root in a
    few steps.

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import SmoothLeakyReLU
    >>> layer = SmoothLeakyReLU(alpha=0.3)
    >>> x = torch.linspace(-5, 5, 7, dtype=torch.float64).reshape(1, -1)
    >>> y, _ = layer(x)
    >>> bool(torch.allclose(layer.inverse(y), x))
    True
    """

    def __init__(
        self,
        alpha: float = 0.3,
        *,
        residual: bool = False,
        tol: float = 1e-10,
        max_newton_steps: int = 100,
    ) -> None:
        super().__init__()
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha={alpha!r} must lie in (0, 1).")
        self.alpha = float(alpha)
        self.residual = bool(residual)
        self.tol = float(tol)
        self.max_newton_steps = int(max_newton_steps)

    @property
    def _linear_slope(self) -> float:
        return 1.0 + self.alpha if self.residual else self.alpha

    def _value(self, x: Tensor) -> Tensor:
        # softplus returns x itself above its threshold; at torch's 20 that skips
        # e^-20 ~ 2e-9, below float32's resolution but not float64's, where f would
        # step down at 20 and disagree with its slope sigmoid(x) up to about 35.
        threshold = 40.0 if x.dtype == torch.float64 else 20.0
        return self._linear_slope * x + (1.0 - self.alpha) * F.softplus(
            x, threshold=threshold
        )

    def _slope(self, sigmoid: Tensor) -> Tensor:
        return self._linear_slope + (1.0 - self.alpha) * sigmoid

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        slope = self._slope(torch.sigmoid(x))
        return self._value(x), slope.log().sum(dim=1)

    def jet(self, x: Tensor, tangent: Tensor) -> Jet:
        sigmoid = torch.sigmoid(x)
        first = self._slope(sigmoid)
        second = (1.0 - self.alpha) * sigmoid * (1.0 - sigmoid)
        third = second * (1.0 - 2.0 * sigmoid)
        tangent_sq = tangent.square()
        ratio = second / first
        log_abs_det_curvature = (tangent_sq * (third / first - ratio.square())).sum(
            dim=1
        )
        return Jet(
            self._value(x),
            first * tangent,
            second * tangent_sq,
            first.log().sum(dim=1),
            log_abs_det_curvature,
        )

    def _value_and_slope(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._value(x), self._slope(torch.sigmoid(x))

    def inverse(self, y: Tensor) -> Tensor:
        # f'(x) lies in (a, a + 1 - alpha), so the root of f(x) = y lies between
        # (y - f(0)) / a and (y - f(0)) / (a + 1 - alpha).
        offset = y - (1.0 - self.alpha) * math.log(2.0)
        steep = offset / (self._linear_slope + 1.0 - self.alpha)
        shallow = offset / self._linear_slope
        lower, upper = torch.minimum(steep, shallow), torch.maximum(steep, shallow)
        # f is convex with f(x0) >= y here, so Newton descends monotonically from x0.
        if self.residual:
            initial = torch.maximum(y / (1.0 + self.alpha), 0.5 * y)
        else:
            initial = y
        return solve_increasing(
            self._value_and_slope,
            y,
            lower,
            upper,
            initial=initial,
            tol=max(self.tol, 8.0 * torch.finfo(y.dtype).eps),
            max_steps=self.max_newton_steps,
            name=f"{type(self).__name__}.inverse",
        )

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, residual={self.residual}"


_Activation = tuple[
    Callable[[Tensor], Tensor], Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
]


def _tanh_derivatives(h: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    first = 1.0 - y.square()
    return first, -2.0 * y * first


def _silu_derivatives(h: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    sigmoid = torch.sigmoid(h)
    first = sigmoid * (1.0 + h * (1.0 - sigmoid))
    second = sigmoid * (1.0 - sigmoid) * (2.0 + h * (1.0 - 2.0 * sigmoid))
    return first, second


_ACTIVATIONS: dict[str, _Activation] = {
    "tanh": (torch.tanh, _tanh_derivatives),
    "silu": (F.silu, _silu_derivatives),
}


class _JetMLP(nn.Module):
    """A small MLP that also propagates a second-order jet ``(x, t, a)``."""

    def __init__(
        self,
        n_inputs: int,
        n_outputs: int,
        hidden_layer_sizes: Sequence[int],
        activation: str,
        generator: torch.Generator | None,
    ) -> None:
        super().__init__()
        sizes = [n_inputs, *hidden_layer_sizes, n_outputs]
        # nn.Linear initialises from the global RNG; every weight is overwritten below
        # from ``generator``, and fork_rng leaves the global state as it was.
        with torch.random.fork_rng(devices=[]):
            self.linears = nn.ModuleList(
                nn.Linear(n_in, n_out, dtype=INIT_DTYPE)
                for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True)
            )
        for linear in self.linears[:-1]:
            bound = (6.0 / (linear.in_features + linear.out_features)) ** 0.5
            with torch.no_grad():
                linear.weight.uniform_(-bound, bound, generator=generator)
                linear.bias.zero_()
        with torch.no_grad():
            self.linears[-1].weight.zero_()
            self.linears[-1].bias.zero_()
        in_default_dtype(self.linears)
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        return self.linears[-1](self.hidden(x))

    def hidden(self, x: Tensor) -> Tensor:
        """The last hidden layer's activations: the input of the last linear layer."""
        function, _ = _ACTIVATIONS[self.activation]
        for linear in self.linears[:-1]:
            x = function(linear(x))
        return x

    def jet(self, x: Tensor, tangent: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        function, derivatives = _ACTIVATIONS[self.activation]
        curvature: Tensor | None = None
        for linear in self.linears[:-1]:
            h = linear(x)
            h_tangent = tangent @ linear.weight.T
            h_curvature = None if curvature is None else curvature @ linear.weight.T
            x = function(h)
            first, second = derivatives(h, x)
            tangent = first * h_tangent
            curvature = second * h_tangent.square()
            if h_curvature is not None:
                curvature = curvature + first * h_curvature
        last = self.linears[-1]
        out_curvature = None if curvature is None else curvature @ last.weight.T
        return last(x), tangent @ last.weight.T, out_curvature


class _Coupling(Bijection):
    """Shared plumbing of the couplings: the split into a conditioning half and a
    transformed half, and its inverse."""

    n_features: int
    parity: int

    def _set_halves(
        self, n_features: int, parity: int, activation: str
    ) -> tuple[int, int]:
        """Check the arguments, record the split; return the two halves' sizes."""
        if n_features < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 features, got"
                f" n_features={n_features}."
            )
        if parity not in (0, 1):
            raise ValueError(f"parity={parity!r} must be 0 or 1.")
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation={activation!r} is not supported; use one of"
                f" {sorted(_ACTIVATIONS)}."
            )
        self.n_features = n_features
        self.parity = int(parity)
        half = n_features // 2
        n_first, n_second = half, n_features - half
        self._split = (n_first, n_second)
        return (n_first, n_second) if parity == 0 else (n_second, n_first)

    def _halves(self, x: Tensor) -> tuple[Tensor, Tensor]:
        first, second = torch.split(x, self._split, dim=1)
        return (first, second) if self.parity == 0 else (second, first)

    def _join(self, conditioning: Tensor, transformed: Tensor) -> Tensor:
        parts = (
            (conditioning, transformed)
            if self.parity == 0
            else (transformed, conditioning)
        )
        return torch.cat(parts, dim=1)

    def extra_repr(self) -> str:
        return f"n_features={self.n_features}, parity={self.parity}"


class AffineCoupling(_Coupling):
    """Affine coupling: one half of the features scales and shifts the other.

    With ``x = (x_a, x_b)``, ``(r, m) = MLP(x_a)`` and ``s = 2 tanh(r / 2)``:
    ``y_a = x_a``, ``y_b = x_b * exp(s) + m``.

    Parameters
    ----------
    n_features : int
        Dimension of the input, at least 2.
    hidden_layer_sizes : sequence of int, default=(64, 64)
        Widths of the conditioner MLP.
    parity : {0, 1}, default=0
        0 conditions the second half on the first; 1 the first half on the second.
    activation : {"tanh", "silu"}, default="tanh"
        Activation of the conditioner. With ``"tanh"`` the conditioner's outputs, hence
        ``s`` and ``m``, are bounded: far from the data the layer is affine with
        bounded coefficients. ``"silu"`` lets the shift ``m`` keep growing with
        ``x_a`` at whatever slope it learned near the data; stacked, those slopes
        multiply, and a point outside the training range can be mapped so far that
        its log-density is minus thousands.
    generator : torch.Generator or None, default=None
        Randomness for the conditioner's initial weights.

    Notes
    -----
    ``log|det J| = sum(s)`` per row, O(D); the inverse is closed form. The last layer of
    the conditioner starts at zero, so the coupling starts as the identity.

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import AffineCoupling
    >>> layer = AffineCoupling(4, hidden_layer_sizes=(8,)).double()
    >>> generator = torch.Generator().manual_seed(0)
    >>> x = torch.randn(3, 4, dtype=torch.float64, generator=generator)
    >>> y, log_abs_det = layer(x)
    >>> bool(torch.allclose(layer.inverse(y), x)), tuple(log_abs_det.shape)
    (True, (3,))
    """

    def __init__(
        self,
        n_features: int,
        *,
        hidden_layer_sizes: Sequence[int] = (64, 64),
        parity: Literal[0, 1] = 0,
        activation: Literal["tanh", "silu"] = "tanh",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        n_condition, n_transformed = self._set_halves(n_features, parity, activation)
        self.conditioner = _JetMLP(
            n_condition,
            2 * n_transformed,
            tuple(hidden_layer_sizes),
            activation,
            generator,
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        conditioning, transformed = self._halves(x)
        raw_log_scale, shift = self.conditioner(conditioning).chunk(2, dim=1)
        log_scale = 2.0 * torch.tanh(0.5 * raw_log_scale)
        y = transformed * log_scale.exp() + shift
        return self._join(conditioning, y), log_scale.sum(dim=1)

    def jet(self, x: Tensor, tangent: Tensor) -> Jet:
        conditioning, transformed = self._halves(x)
        tangent_conditioning, tangent_transformed = self._halves(tangent)
        out, out_tangent, out_curvature = self.conditioner.jet(
            conditioning, tangent_conditioning
        )
        raw, shift = out.chunk(2, dim=1)
        raw_tangent, shift_tangent = out_tangent.chunk(2, dim=1)
        squashed = torch.tanh(0.5 * raw)
        log_scale = 2.0 * squashed
        first = 1.0 - squashed.square()
        log_scale_tangent = first * raw_tangent
        log_scale_curvature = -squashed * first * raw_tangent.square()
        if out_curvature is not None:
            raw_curvature, shift_curvature = out_curvature.chunk(2, dim=1)
            log_scale_curvature = log_scale_curvature + first * raw_curvature
        scale = log_scale.exp()
        y = transformed * scale + shift
        scaled_x = transformed * scale
        y_tangent = (
            tangent_transformed * scale + scaled_x * log_scale_tangent + shift_tangent
        )
        y_curvature = (
            2.0 * tangent_transformed * scale * log_scale_tangent
            + scaled_x * (log_scale_curvature + log_scale_tangent.square())
        )
        if out_curvature is not None:
            y_curvature = y_curvature + shift_curvature
        return Jet(
            self._join(conditioning, y),
            self._join(tangent_conditioning, y_tangent),
            self._join(torch.zeros_like(conditioning), y_curvature),
            log_scale.sum(dim=1),
            log_scale_curvature.sum(dim=1),
        )

    def inverse(self, y: Tensor) -> Tensor:
        conditioning, transformed = self._halves(y)
        raw_log_scale, shift = self.conditioner(conditioning).chunk(2, dim=1)
        log_scale = 2.0 * torch.tanh(0.5 * raw_log_scale)
        return self._join(conditioning, (transformed - shift) * torch.exp(-log_scale))
