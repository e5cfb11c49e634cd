"""A coupling whose elementwise map is the logit of a mixture of logistic CDFs.

One column's marginal can then take several narrow modes, or a box shape, in a single
layer, which an affine coupling needs many layers for (Flow++, Ho et al., 2019).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ._base import INIT_DTYPE, Jet, positive_integer
from ._nonlinear import _Coupling, _JetMLP
from ._solve import solve_increasing

__all__ = ["LogisticMixtureCoupling"]


@dataclass(frozen=True)
class _Squash:
    """``r -> m + h tanh((r + r0) / h)``: onto ``(lower, upper)``, with 0 -> 0."""

    lower: float
    upper: float

    @property
    def center_half_offset(self) -> tuple[float, float, float]:
        center, half = 0.5 * (self.lower + self.upper), 0.5 * (self.upper - self.lower)
        return center, half, half * math.atanh(-center / half)

    def raw(self, value: Tensor) -> Tensor:
        """The input that the squash maps to ``value``."""
        center, half, offset = self.center_half_offset
        return half * torch.atanh((value - center) / half) - offset


# The squash's jet, for tensors of one value per column (all squashes of a layer in
# one pass).
def _squash_series(raw: _Series, center: Any, half: Any, offset: Any) -> _Series:
    squashed = torch.tanh((raw.v + offset) / half)
    first = 1.0 - squashed.square()
    return raw.chain(center + half * squashed, first, -2.0 * squashed * first / half)


_LOGITS = _Squash(-5.0, 5.0)
_OUTER_LOG_SCALE = _Squash(-2.0, 2.0)


@dataclass(frozen=True, slots=True)
class _Series:
    """A quantity along the line ``x + eps t`` to second order: ``v + eps d + eps^2
    c / 2``. ``c`` is the second derivative; ``None`` stands for zeros."""

    v: Tensor
    d: Tensor
    c: Tensor | None

    def __add__(self, other: _Series) -> _Series:
        return _Series(self.v + other.v, self.d + other.d, _add(self.c, other.c))

    def __sub__(self, other: _Series) -> _Series:
        return _Series(self.v - other.v, self.d - other.d, _add(self.c, _neg(other.c)))

    def __neg__(self) -> _Series:
        return _Series(-self.v, -self.d, _neg(self.c))

    def __mul__(self, other: _Series) -> _Series:
        second = 2.0 * self.d * other.d
        second = _add(second, None if self.c is None else self.c * other.v)
        second = _add(second, None if other.c is None else self.v * other.c)
        return _Series(self.v * other.v, self.d * other.v + self.v * other.d, second)

    def unsqueeze(self, dim: int) -> _Series:
        return _Series(
            self.v.unsqueeze(dim),
            self.d.unsqueeze(dim),
            None if self.c is None else self.c.unsqueeze(dim),
        )

    def apply(self, function: Callable[[Tensor], Tensor]) -> _Series:
        """The same linear map (a slice, a reshape) applied to every coefficient."""
        return _Series(
            function(self.v),
            function(self.d),
            None if self.c is None else function(self.c),
        )

    def split(self, sizes: list[int], dim: int) -> list[_Series]:
        return [
            self.apply(lambda t, start=start, size=size: t.narrow(dim, start, size))
            for start, size in zip(
                [sum(sizes[:i]) for i in range(len(sizes))], sizes, strict=True
            )
        ]

    def squeeze(self, dim: int) -> _Series:
        return _Series(
            self.v.squeeze(dim),
            self.d.squeeze(dim),
            None if self.c is None else self.c.squeeze(dim),
        )

    def chain(self, value: Tensor, first: Tensor, second: Tensor) -> _Series:
        """``f(self)`` given ``f``, ``f'`` and ``f''`` at ``self.v``."""
        curvature = second * self.d.square()
        if self.c is not None:
            curvature = curvature + first * self.c
        return _Series(value, first * self.d, curvature)

    def exp(self) -> _Series:
        value = self.v.exp()
        return self.chain(value, value, value)

    def log_sigmoid(self) -> _Series:
        below, above = torch.sigmoid(self.v), torch.sigmoid(-self.v)
        return self.chain(F.logsigmoid(self.v), above, -below * above)

    def logsumexp(self, dim: int) -> _Series:
        value = torch.logsumexp(self.v, dim=dim)
        weight = torch.exp(self.v - value.unsqueeze(dim))
        mean = (weight * self.d).sum(dim=dim)
        spread = self.d - mean.unsqueeze(dim)
        second = (weight * spread.square()).sum(dim=dim)
        if self.c is not None:
            second = second + (weight * self.c).sum(dim=dim)
        return _Series(value, mean, second)


def _in_functorch_transform() -> bool:
    """Whether a ``torch.func`` transform is running (its interpreter stack is
    not empty)."""
    return torch._C._functorch.peek_interpreter_stack() is not None


def _log_sum_exp_first(terms: Tensor) -> Tensor:
    """``log sum exp`` over the first dimension, shifted by its maximum.

    What :func:`torch.logsumexp` computes, in fewer kernel calls. The shift is
    detached: ``log sum exp(t - m) + m`` does not depend on ``m``, so its
    derivatives of every order are exact. An infinite maximum is not a shift (``-inf
    - (-inf)`` is NaN): where every term is ``-inf`` the result is ``-inf``, and
    ``+inf`` where one is.
    """
    peak = terms.amax(dim=0).detach()
    peak = torch.where(peak.isinf(), 0.0, peak)
    return (terms - peak).exp().sum(dim=0).log() + peak


def _add(left: Tensor | None, right: Tensor | None) -> Tensor | None:
    if left is None:
        return right
    return left if right is None else left + right


def _neg(tensor: Tensor | None) -> Tensor | None:
    return None if tensor is None else -tensor


class _Parameters(NamedTuple):
    """The elementwise map's parameters: ``log_weight``, ``mean`` and ``log_scale``
    shaped (K, batch, n_transformed), ``outer_log_scale`` and ``shift`` (batch,
    n_transformed).

    Components first: each component's (batch, n) values are one contiguous
    block, so the sums, maxima and broadcasts over the K components run over
    blocks of ``batch n`` values. With the components in the middle (batch, K, n),
    those operations run in loops of ``n`` values, too short for the CPU's vector
    kernels, and take 3-5 times longer. (With the batch innermost, (K, n, batch),
    whole fits were no faster.) A row's result changes in its last bits with the
    rows scored beside it, as the conditioner's matrix products make it, by about
    2e-5 of a float32 log-determinant and 3e-14 of a float64 one between batches of
    1 and 3 000 rows, as in the earlier layouts. The conditioner's last layer
    computes this layout with one copy (see
    :meth:`LogisticMixtureCoupling._mixture_parameters`)."""

    log_weight: Tensor
    mean: Tensor
    log_scale: Tensor
    outer_log_scale: Tensor
    shift: Tensor


class LogisticMixtureCoupling(_Coupling):
    """Coupling with the logit of a mixture of logistic CDFs as its elementwise map.

    With ``x = (x_a, x_b)`` and, per transformed coordinate, parameters computed from
    ``x_a`` by an MLP (mixture weights ``pi_k``, means ``mu_k``, log-scales ``s_k``,
    ``k = 1..K``, and an outer log-scale ``a`` and shift ``b``):

    ``y_a = x_a``, ``y_b = exp(a) logit(F(x_b)) + b``,
    ``F(x) = sum_k pi_k sigmoid((x - mu_k) exp(-s_k))``

    (Flow++, Ho et al., 2019). The map is smooth and strictly increasing; one layer
    can give one column several narrow modes, or a box.

    Parameters
    ----------
    n_features : int
        Dimension of the input, at least 2.
    n_components : int, default=8
        Number of logistic components ``K``.
    hidden_layer_sizes : sequence of int, default=(64, 64)
        Widths of the conditioner MLP, which has ``(3 K + 2)`` outputs per
        transformed coordinate.
    parity : {0, 1}, default=0
        0 conditions the second half on the first; 1 the first half on the second.
    activation : {"tanh", "silu"}, default="tanh"
        Activation of the conditioner.
    mean_bound : float, default=5.0
        The means lie in ``(-mean_bound, mean_bound)``.
    log_scale_range : (float, float), default=(-5.0, 1.0)
        The interval of the log-scales ``s_k``; it must hold 0. Its lower end sets
        how narrow a mode can be, its upper end how far from the means the map
        stays curved (the widest logistic, ``exp(1) = 2.7`` by default).
    tol : float, default=1e-10
        Relative tolerance of the numerical inverse (floored at ``8 eps`` of the
        dtype).
    max_steps : int, default=100
        Step budget of the inverse; entries that miss the tolerance raise an
        :class:`~skebflow.flows.InverseNotConvergedWarning`.
    generator : torch.Generator or None, default=None
        Randomness for the conditioner's initial weights.

    Notes
    -----
    *Bounded parameters, affine tails.* Each conditioner output is squashed by a
    shifted ``tanh`` onto an interval that holds 0 (and maps 0 to 0): ``a`` onto
    ``(-2, 2)``, the mixture logits onto ``(-5, 5)``, the means onto
    ``(-mean_bound, mean_bound)``, the log-scales onto ``log_scale_range``. Far from
    the means, ``logit(F(x))`` tends to ``(x - mu_j) exp(-s_j) - log pi_j`` with
    ``j`` the widest component: the map is affine there, with slope ``exp(a - s_j)``
    in ``(exp(-3), exp(7))`` for the default ranges, and its second derivative
    vanishes. The approach is exponential in ``|x| (exp(-s_(2)) - exp(-s_(1)))``,
    the gap between the two widest components' inverse scales, which nothing
    keeps away from 0: with widest scales ``e`` and ``e^0.9`` the map is 0.7 from
    its asymptote 20 units beyond the means and within 1e-3 only at about 200
    (with scales far apart, within a few units). A flow of such layers and
    linear ones has a log-density that decays like a Gaussian's far enough out.
    Everywhere, ``0 < y' <= 2 exp(a - min_k s_k)``.

    *Stable evaluation.* ``log F = logsumexp_k(log pi_k + log sigmoid(z_k))`` and
    ``log(1 - F) = logsumexp_k(log pi_k + log sigmoid(-z_k))`` with
    ``z_k = (x - mu_k) exp(-s_k)``; ``logit(F)`` is their difference. The slope,
    ``y' = exp(a) F' / (F (1 - F))``, is evaluated as ``log y' = a + log F' -
    log F - log(1 - F)`` with ``log F' = logsumexp_k(log pi_k - s_k + log
    sigmoid(z_k) + log sigmoid(-z_k))`` and ``log sigmoid(-z) = log sigmoid(z) -
    z``: every quantity stays in log space, so there is no ``log(0)`` and no
    underflow between far-apart modes, in float32 either. Far in a tail, ``log F'``
    and ``log(1 - F)`` are both about ``-|z|`` of the widest component, and their
    difference carries a rounding error of about ``eps |z|``, as each ``log
    sigmoid(-z_k)`` already does: in float32, 0.03 at ``|x| = 10^6`` for the
    initial component scales, more for narrower components (6 nats at ``10^6`` and
    0.09 at ``10^4`` measured with narrow ones); float64 is exact to 1e-10 there.
    Beyond about ``|x| = 10^7`` in float32 (``10^15`` in float64) the difference
    is lost altogether and ``log y'`` reads ``a``: an error of ``|s_j|`` nats
    beside a base energy of order ``|x|^2``.

    *Flat stretches.* The map is strictly increasing, but between narrow
    components far apart (scales near ``exp(-5)``, means several units apart) its
    slope can fall below the float's resolution of ``y``, so ``y`` is the same
    number over a stretch of ``x``. The log-determinant stays right (it is
    computed in log space), but :meth:`inverse` then returns some point of the
    stretch, with no warning: every such point maps to ``y`` exactly.

    *Jets.* The map is infinitely differentiable in ``x_b`` and in the parameters.
    :meth:`jet` propagates a second-order Taylor series along ``x + eps t`` through
    the conditioner and then through every operation above (``exp``, ``log
    sigmoid``, ``logsumexp``, products), so the curvature of ``y`` and of
    ``log|det J|`` holds the cross terms between ``x_b`` and the conditioner's
    outputs exactly; its tangent and curvature with ``t_a = 0`` are the analytic
    ``y'`` and ``y''``.

    *Inverse.* Given ``y``, ``u = (y_b - b) exp(-a)`` and ``F(x) = sigmoid(u)``,
    whose root lies between ``min_k`` and ``max_k`` of ``mu_k + exp(s_k) u`` (there
    every component's CDF is below, respectively above, ``sigmoid(u)``). The solver
    is :func:`~skebflow.flows.solve_increasing`, started at the mixture-weighted mean
    of those points.

    *Initialization.* The conditioner's last layer starts at zero except the biases
    of the means, which spread them evenly over ``[-1, 1]`` (to break the symmetry
    between components): unit scales, equal weights, ``a = b = 0``. The layer then
    starts close to the identity (exactly the identity for ``K = 1``): its slope lies
    between 0.9 and 1 and ``|y_b - x_b| < 0.21`` for ``K = 8``.

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import LogisticMixtureCoupling
    >>> layer = LogisticMixtureCoupling(4, n_components=3, hidden_layer_sizes=(8,))
    >>> layer = layer.double()
    >>> generator = torch.Generator().manual_seed(0)
    >>> x = torch.randn(5, 4, dtype=torch.float64, generator=generator)
    >>> y, log_abs_det = layer(x)
    >>> bool(torch.allclose(layer.inverse(y), x)), tuple(log_abs_det.shape)
    (True, (5,))
    """

    def __init__(
        self,
        n_features: int,
        *,
        n_components: int = 8,
        hidden_layer_sizes: Sequence[int] = (64, 64),
        parity: Literal[0, 1] = 0,
        activation: Literal["tanh", "silu"] = "tanh",
        mean_bound: float = 5.0,
        log_scale_range: tuple[float, float] = (-5.0, 1.0),
        tol: float = 1e-10,
        max_steps: int = 100,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        n_condition, n_transformed = self._set_halves(n_features, parity, activation)
        n_components = positive_integer(n_components, "n_components")
        if not mean_bound > 1.0:
            raise ValueError(f"mean_bound={mean_bound} must be greater than 1.")
        if not log_scale_range[0] < 0.0 < log_scale_range[1]:
            raise ValueError(
                f"log_scale_range={log_scale_range} must hold 0 in its interior."
            )
        self.n_components = int(n_components)
        self.mean_bound = float(mean_bound)
        self.log_scale_range = (float(log_scale_range[0]), float(log_scale_range[1]))
        self._means = _Squash(-self.mean_bound, self.mean_bound)
        self._log_scales = _Squash(*self.log_scale_range)
        self.tol = float(tol)
        self.max_steps = int(max_steps)
        self._n_transformed = n_transformed
        n_outputs = 3 * self.n_components + 2
        self.conditioner = _JetMLP(
            n_condition,
            n_transformed * n_outputs,
            tuple(hidden_layer_sizes),
            activation,
            generator,
        )
        k = self.n_components
        # in INIT_DTYPE, as the conditioner's starting weights
        spread = (
            torch.linspace(-1.0, 1.0, k, dtype=INIT_DTYPE)
            if k > 1
            else torch.zeros(1, dtype=INIT_DTYPE)
        )
        with torch.no_grad():
            bias = self.conditioner.linears[-1].bias.view(n_transformed, n_outputs)
            bias[:, k : 2 * k] = self._means.raw(spread)

    # ------------------------------------------------------------------ parameters

    # Constants derived from the layer's fixed settings (never from its weights),
    # kept per dtype and device. They are not pickled (nor deep-copied): a layer
    # saved with them would carry values an update of the code could reinterpret,
    # and torch.load's map_location would move them without changing their keys.
    _CACHES = (
        "_squash_cache",
        "_order_cache",
        "_sigmoid_row_scaling_cache",
        "_squash_bounds_cache",
    )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        for name in self._CACHES:
            state.pop(name, None)
        return state

    def _cached(self, name: str, key: Any, compute: Callable[[], Any]) -> Any:
        """``compute()``, kept in the cache ``name`` under ``key``; under
        ``torch.inference_mode()`` computed and not kept, since an inference tensor
        cannot be saved for a later backward pass, and likewise inside a
        ``torch.func`` transform (``hessian``, ``vmap``, ...), whose tensors belong
        to that call and break any later transform that meets them."""
        cache = self.__dict__.setdefault(name, {})
        if key in cache:
            return cache[key]
        value = compute()
        if not torch.is_inference_mode_enabled() and not _in_functorch_transform():
            cache[key] = value
        return value

    def _squash_constants(self, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Centre, half-width and offset of the squash of each output of one
        transformed coordinate but the last (the shift, which is not squashed),
        shaped (3 K + 1, 1) to broadcast over the (batch, 3 K + 1, n) outputs."""

        def compute() -> tuple[Tensor, ...]:
            k = self.n_components
            squashes = (
                [_LOGITS] * k
                + [self._means] * k
                + [self._log_scales] * k
                + [_OUTER_LOG_SCALE]
            )
            columns = zip(
                *(squash.center_half_offset for squash in squashes), strict=True
            )
            return tuple(
                torch.tensor(column, dtype=like.dtype, device=like.device).view(-1, 1)
                for column in columns
            )

        return self._cached("_squash_cache", (like.dtype, like.device), compute)

    def _output_order(self, device: torch.device) -> Tensor:
        """The last layer's rows by output then coordinate: row ``c n + j`` of the
        reordered layer is row ``j (3 K + 2) + c`` of the stored one."""

        def compute() -> Tensor:
            n_outputs = 3 * self.n_components + 2
            return (
                torch.arange(self._n_transformed * n_outputs, device=device)
                .view(self._n_transformed, n_outputs)
                .T.reshape(-1)
            )

        return self._cached("_order_cache", device, compute)

    def _by_output(self, out: Tensor) -> Tensor:
        """The conditioner's outputs (batch, n_transformed * (3 K + 2)) by output
        within each row: (batch, 3 K + 2, n), contiguous."""
        return (
            out.unflatten(1, (self._n_transformed, 3 * self.n_components + 2))
            .transpose(1, 2)
            .contiguous()
        )

    def _row_scaling(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """Per row of the reordered last layer, ``2 / half`` and ``offset`` of its
        output's squash (1 and 0 for the shift's rows): the row then holds the
        argument of the squash's sigmoid form (see :meth:`_mixture_parameters`)."""

        def compute() -> tuple[Tensor, Tensor]:
            _, half, offset = self._squash_constants(like)
            one, zero = like.new_ones(1), like.new_zeros(1)
            return (
                torch.cat([2.0 / half.flatten(), one]).repeat_interleave(
                    self._n_transformed
                ),
                torch.cat([offset.flatten(), zero]).repeat_interleave(
                    self._n_transformed
                ),
            )

        key = (like.dtype, like.device)
        return self._cached("_sigmoid_row_scaling_cache", key, compute)

    def _squash_bounds(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """``lower`` and ``upper - lower`` of each squash, shaped (3 K + 1, 1, 1)
        to broadcast over the (3 K + 1, batch, n) outputs."""

        def compute() -> tuple[Tensor, Tensor]:
            center, half, _ = self._squash_constants(like)
            return (center - half).unsqueeze(2), (2.0 * half).unsqueeze(2)

        key = (like.dtype, like.device)
        return self._cached("_squash_bounds_cache", key, compute)

    def _mixture_parameters(self, conditioning: Tensor) -> _Parameters:
        k = self.n_components
        n_outputs = 3 * k + 2
        # The last layer with its rows reordered by output, each row scaled into
        # its squash's sigmoid argument, 2 (raw + offset) / half (on the small
        # weight matrix rather than on the outputs): one matrix product gives
        # (batch, 3 K + 2, n), and one copy the components-first layout
        # (3 K + 2, batch, n) of _Parameters.
        last = self.conditioner.linears[-1]
        order = self._output_order(last.weight.device)
        row_scale, offset = self._row_scaling(last.weight)
        out = (
            torch.addmm(
                (last.bias.index_select(0, order) + offset) * row_scale,
                self.conditioner.hidden(conditioning),
                (last.weight.index_select(0, order) * row_scale.unsqueeze(1)).T,
            )
            .view(conditioning.shape[0], n_outputs, self._n_transformed)
            .transpose(0, 1)
            .contiguous()
        )
        return self._parameters_from_outputs(out)

    def _parameters_from_outputs(self, out: Tensor) -> _Parameters:
        """The map's parameters from the reordered last layer's outputs ``out``
        (3 K + 2, batch, n_transformed), each row its squash's sigmoid argument."""
        k = self.n_components
        # center + half tanh(r) = lower + (upper - lower) sigmoid(2 r): the same
        # squash, and torch's sigmoid is several times cheaper than its tanh on
        # the CPU. split (not two slices), whose backward is one concatenation
        # rather than two zero-filled gradients of the whole output.
        squash_arguments, shift = out.split([3 * k + 1, 1], dim=0)
        lower, width = self._squash_bounds(out)
        squashed = torch.addcmul(lower, width, torch.sigmoid(squash_arguments))
        logit, mean, log_scale, outer = squashed.split([k, k, k, 1], dim=0)
        return _Parameters(
            # logit - log sum exp: what log_softmax computes, faster on the CPU for
            # so few components; the squashed logits lie in (-5, 5), so the sum
            # needs no shift by its maximum.
            logit - logit.exp().sum(dim=0, keepdim=True).log(),
            mean,
            log_scale,
            outer.squeeze(0),
            shift.squeeze(0),
        )

    # ------------------------------------------------------------------ the map

    @staticmethod
    def _map(x: Tensor, p: _Parameters) -> tuple[Tensor, Tensor]:
        """``y`` and ``log y'`` elementwise, for ``x`` of shape (batch, n)."""
        z = (x - p.mean) * torch.exp(-p.log_scale)
        # log sigmoid(-z) = log sigmoid(z) - z, exactly.
        below = F.logsigmoid(z)
        above = below - z
        joint_below = p.log_weight + below
        # log F, log(1 - F) and log F' (the mixture's density, logsumexp_k(log pi_k -
        # s_k + log sigmoid(z_k) + log sigmoid(-z_k))) in one log-sum over the
        # components, of shape (K, 3, batch, n).
        terms = torch.stack(
            [joint_below, p.log_weight + above, joint_below + above - p.log_scale],
            dim=1,
        )
        log_cdf, log_survival, log_density = _log_sum_exp_first(terms).unbind(0)
        y = torch.exp(p.outer_log_scale) * (log_cdf - log_survival) + p.shift
        # log y' - a = log F' - log F - log(1 - F): since F + (1 - F) = 1, the last
        # two terms are log(1 / F + 1 / (1 - F)), each computed in log space.
        log_slope = p.outer_log_scale + log_density - log_cdf - log_survival
        return y, log_slope

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        conditioning, transformed = self._halves(x)
        y, log_slope = self._map(transformed, self._mixture_parameters(conditioning))
        return self._join(conditioning, y), log_slope.sum(dim=1)

    def jet(self, x: Tensor, tangent: Tensor) -> Jet:
        conditioning, transformed = self._halves(x)
        tangent_conditioning, tangent_transformed = self._halves(tangent)
        out, out_tangent, out_curvature = self.conditioner.jet(
            conditioning, tangent_conditioning
        )
        k = self.n_components
        out = _Series(out, out_tangent, out_curvature).apply(self._by_output)
        squashed = _squash_series(
            out.apply(lambda t: t[:, :-1]), *self._squash_constants(out.v)
        )
        logit, mean, log_scale, outer = squashed.split([k, k, k, 1], dim=1)
        log_weight = logit - logit.logsumexp(dim=1).unsqueeze(1)
        outer = outer.squeeze(1)
        shift = out.apply(lambda t: t[:, -1])

        point = _Series(transformed, tangent_transformed, None).unsqueeze(1)
        z = (point - mean) * (-log_scale).exp()
        below = z.log_sigmoid()
        above = below - z
        joint_below = log_weight + below
        log_cdf = joint_below.logsumexp(dim=1)
        log_survival = (log_weight + above).logsumexp(dim=1)
        y = outer.exp() * (log_cdf - log_survival) + shift
        log_density = (joint_below + above - log_scale).logsumexp(dim=1)
        log_slope = outer + log_density - log_cdf - log_survival
        assert y.c is not None and log_slope.c is not None  # z has a curvature
        return Jet(
            self._join(conditioning, y.v),
            self._join(tangent_conditioning, y.d),
            self._join(torch.zeros_like(conditioning), y.c),
            log_slope.v.sum(dim=1),
            log_slope.c.sum(dim=1),
        )

    def inverse(self, y: Tensor) -> Tensor:
        conditioning, transformed = self._halves(y)
        p = self._mixture_parameters(conditioning)
        target = transformed
        u = (target - p.shift) * torch.exp(-p.outer_log_scale)
        # Every component's CDF is <= sigmoid(u) at the smallest of these points and
        # >= sigmoid(u) at the largest, so the mixture's root lies between them.
        points = p.mean + torch.exp(p.log_scale) * u
        lower, upper = points.amin(dim=0), points.amax(dim=0)
        margin = 1e-3 * (1.0 + torch.maximum(lower.abs(), upper.abs()))
        initial = (torch.exp(p.log_weight) * points).sum(dim=0)

        def value_and_slope(x: Tensor) -> tuple[Tensor, Tensor]:
            value, log_slope = self._map(x, p)
            return value, log_slope.exp()

        x = solve_increasing(
            value_and_slope,
            target,
            lower - margin,
            upper + margin,
            initial=initial,
            tol=max(self.tol, 8.0 * torch.finfo(y.dtype).eps),
            max_steps=self.max_steps,
            name=f"{type(self).__name__}.inverse",
        )
        return self._join(conditioning, x)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, n_components={self.n_components}"
