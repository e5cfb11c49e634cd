"""Parameter-free bijections applied before matching (Match after Preprocessing, MaP).

Score matching is run on the preprocessed variable; the log-determinant of the
preprocessing is added back when the density is evaluated, so densities are always
reported in the units of the original data (Chao et al., 2023, Sec. 4).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "BinProbit",
    "ColumnNoise",
    "LinearResidual",
    "Logit",
    "Preprocessing",
    "Standardize",
    "UniformDequantize",
]

_SQRT_HALF = math.sqrt(0.5)


class LinearResidual(nn.Module):
    """``y = x - x W^T``: the columns that are affine functions of the others
    replaced by their residuals, the others left as they are.

    Parameters
    ----------
    weight : Tensor of shape (n_features, n_features)
        Row ``j`` holds the coefficients of column ``j`` in the other columns
        (zero for a column left as it is); every column with a nonzero row has a
        zero column of coefficients, so that no residual enters another's.

    Notes
    -----
    A unit triangular map in a suitable order of the columns: ``log|det J| = 0``,
    and the inverse is ``x = y + y W^T``. With the rows on the hyperplanes the
    coefficients describe, each residual is constant (the relation's intercept),
    and the next steps model it as a narrow normal (see
    ``EBFlowDensity(linear_relations="narrow")``).

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import LinearResidual
    >>> weight = torch.tensor([[0.0, 0.0], [2.0, 0.0]])  # x1 depends on x0
    >>> step = LinearResidual(weight)
    >>> y, log_abs_det = step(torch.tensor([[1.0, 5.0], [2.0, 7.0]]))
    >>> y.tolist(), log_abs_det.tolist()
    ([[1.0, 3.0], [2.0, 3.0]], [0.0, 0.0])
    >>> step.inverse(y).tolist()
    [[1.0, 5.0], [2.0, 7.0]]
    """

    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        dependent = weight.ne(0).any(dim=1)
        if bool(weight[:, dependent].ne(0).any()):
            raise ValueError(
                "LinearResidual needs the columns it replaces to enter no"
                " column's coefficients."
            )
        self.register_buffer("weight", weight.clone())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Replace each dependent column by its residual; ``(y, log|det J|)``.

        Parameters
        ----------
        x : Tensor of shape (batch, n_features)
            Data.

        Returns
        -------
        y : Tensor of shape (batch, n_features)
            ``x - x W^T``.
        log_abs_det : Tensor of shape (batch,)
            Zero.

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import LinearResidual
        >>> step = LinearResidual(torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
        >>> step(torch.tensor([[1.0, 1.5]]))[0].tolist()
        [[1.0, 0.5]]
        """
        return x - x @ self.weight.T, x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        """Add each dependent column's affine part back.

        Parameters
        ----------
        y : Tensor of shape (batch, n_features)
            Outputs of :meth:`forward`.

        Returns
        -------
        x : Tensor of shape (batch, n_features)
            ``y + y W^T`` (the columns ``W`` reads are those left as they are).

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import LinearResidual
        >>> step = LinearResidual(torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
        >>> step.inverse(torch.tensor([[1.0, 0.5]])).tolist()
        [[1.0, 1.5]]
        """
        return y + y @ self.weight.T

    def log_abs_det_at_output(self, y: Tensor) -> Tensor:
        """``log|det J|`` of :meth:`forward` at the input that maps to ``y``.

        Parameters
        ----------
        y : Tensor of shape (batch, n_features)
            Outputs of :meth:`forward`.

        Returns
        -------
        Tensor of shape (batch,)
            Zero.

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import LinearResidual
        >>> LinearResidual(torch.zeros(2, 2)).log_abs_det_at_output(torch.ones(3, 2))
        tensor([0., 0., 0.])
        """
        return y.new_zeros(y.shape[0])


class Standardize(nn.Module):
    """``y = (x - mean) / scale`` with fixed statistics.

    Parameters
    ----------
    mean, scale : Tensor of shape (n_features,)
        Location and (positive) scale, usually the training mean and standard deviation.

    Notes
    -----
    Constant Jacobian, ``log|det J| = -sum(log scale)``.

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import Standardize
    >>> layer = Standardize(torch.tensor([1.0]), torch.tensor([2.0]))
    >>> y, log_abs_det = layer(torch.tensor([[3.0]]))
    >>> y.item(), round(log_abs_det.item(), 4)
    (1.0, -0.6931)
    """

    def __init__(self, mean: Tensor, scale: Tensor) -> None:
        super().__init__()
        if bool((scale <= 0).any()):
            raise ValueError("Standardize needs a strictly positive scale.")
        self.register_buffer("mean", mean.clone())
        self.register_buffer("scale", scale.clone())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Standardize ``x`` and return ``(y, log|det J|)`` per row.

        Parameters
        ----------
        x : Tensor of shape (batch, n_features)
            Data.

        Returns
        -------
        y : Tensor of shape (batch, n_features)
            ``(x - mean) / scale``.
        log_abs_det : Tensor of shape (batch,)
            ``-sum(log scale)`` on every row.

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import Standardize
        >>> layer = Standardize(torch.tensor([0.0, 10.0]), torch.tensor([1.0, 2.0]))
        >>> y, log_abs_det = layer(torch.tensor([[1.0, 10.0], [-1.0, 14.0]]))
        >>> y.tolist(), [round(v, 4) for v in log_abs_det.tolist()]
        ([[1.0, 0.0], [-1.0, 2.0]], [-0.6931, -0.6931])
        """
        log_abs_det = -self.scale.log().sum()
        return (x - self.mean) / self.scale, log_abs_det.expand(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        """Map standardized values back to the units of the data.

        Parameters
        ----------
        y : Tensor of shape (batch, n_features)
            Outputs of :meth:`forward`.

        Returns
        -------
        x : Tensor of shape (batch, n_features)
            ``y * scale + mean``.

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import Standardize
        >>> layer = Standardize(torch.tensor([0.0, 10.0]), torch.tensor([1.0, 2.0]))
        >>> x = torch.tensor([[1.0, 10.0], [-1.0, 14.0]])
        >>> bool(torch.equal(layer.inverse(layer(x)[0]), x))
        True
        """
        return y * self.scale + self.mean

    def log_abs_det_at_output(self, y: Tensor) -> Tensor:
        """``log|det J|`` of :meth:`forward` at the input that maps to ``y``.

        Parameters
        ----------
        y : Tensor of shape (batch, n_features)
            Outputs of :meth:`forward`.

        Returns
        -------
        Tensor of shape (batch,)
            ``-sum(log scale)`` on every row.

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import Standardize
        >>> step = Standardize(torch.zeros(2), torch.full((2,), 2.0))
        >>> step.log_abs_det_at_output(torch.zeros(1, 2)).tolist()
        [-1.3862943649291992]
        """
        return (-self.scale.log().sum()).expand(y.shape[0])


class Logit(nn.Module):
    """Map a bounded box to the real line: rescale, shrink by ``delta``, scaled logit.

    ``u = (x - lower) / (upper - lower)``, ``u' = delta + (1 - 2 delta) u``,
    ``y = (log u' - log(1 - u')) / alpha``.

    Parameters
    ----------
    lower, upper : Tensor of shape (n_features,)
        The box that holds the data.
    alpha : float, default=1.0
        Smoothness ``alpha_l`` (0.5 for the paper's FC models on images).
    delta : float, default=1e-6
        Keeps ``u'`` away from 0 and 1.
    passthrough : Tensor of bool, shape (n_features,), or None, default=None
        Columns left as they are (log-det 0, no box): those that an earlier step
        (:class:`BinProbit`) already maps to the real line.

    Notes
    -----
    ``log|det J| = sum(-log alpha - log u' - log(1 - u') + log(1 - 2 delta)
    - log(upper - lower))``; outside the box the density is zero and the log-det is
    ``-inf``.

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import Logit
    >>> layer = Logit(torch.zeros(1), torch.ones(1))
    >>> y, _ = layer(torch.tensor([[0.5]]))
    >>> abs(y.item()) < 1e-6
    True
    """

    def __init__(
        self,
        lower: Tensor,
        upper: Tensor,
        *,
        alpha: float = 1.0,
        delta: float = 1e-6,
        passthrough: Tensor | None = None,
    ) -> None:
        super().__init__()
        if bool((upper <= lower).any()):
            raise ValueError("Logit needs upper > lower in every feature.")
        self.register_buffer("lower", lower.clone())
        self.register_buffer("upper", upper.clone())
        # Rebuilt from the preprocessing spec, not stored with the weights: model
        # files of a Logit without it load unchanged.
        self.register_buffer(
            "passthrough",
            None if passthrough is None else passthrough.clone().to(torch.bool),
            persistent=False,
        )
        self.alpha = float(alpha)
        self.delta = float(delta)

    def _keep_passthrough(
        self, x: Tensor, y: Tensor, per_column_log_det: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The passthrough columns of ``x`` in ``y``, with log-det 0."""
        if self.passthrough is None:
            return y, per_column_log_det
        return (
            torch.where(self.passthrough, x, y),
            torch.where(self.passthrough, 0.0, per_column_log_det),
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Map ``x`` from the box to the real line and return ``(y, log|det J|)``.

        Parameters
        ----------
        x : Tensor of shape (batch, n_features)
            Data, inside ``[lower, upper]``.

        Returns
        -------
        y : Tensor of shape (batch, n_features)
            The scaled logits.
        log_abs_det : Tensor of shape (batch,)
            Per row; ``-inf`` for a row outside the box (zero density).

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import Logit
        >>> layer = Logit(torch.zeros(1), torch.ones(1))
        >>> y, log_abs_det = layer(torch.tensor([[0.5], [0.9], [2.0]]))
        >>> abs(y[0].item()) < 1e-6, y[1].item() > 0  # the centre maps to 0
        (True, True)
        >>> bool(torch.isfinite(log_abs_det[:2]).all()), log_abs_det[2].item()
        (True, -inf)
        """
        width = self.upper - self.lower
        u = (x - self.lower) / width
        within = (u >= 0) & (u <= 1)
        if self.passthrough is not None:
            within = within | self.passthrough
        inside = within.all(dim=1)
        shrunk = self.delta + (1.0 - 2.0 * self.delta) * u.clamp(0.0, 1.0)
        log_u, log_one_minus_u = shrunk.log(), torch.log1p(-shrunk)
        y = (log_u - log_one_minus_u) / self.alpha
        constant = math.log1p(-2.0 * self.delta) - math.log(self.alpha) - width.log()
        y, per_column = self._keep_passthrough(
            x, y, constant - log_u - log_one_minus_u
        )
        log_abs_det = per_column.sum(dim=1)
        log_abs_det = torch.where(
            inside, log_abs_det, torch.full_like(log_abs_det, -math.inf)
        )
        return y, log_abs_det

    def inverse(self, y: Tensor) -> Tensor:
        """Map real values back into the box.

        Parameters
        ----------
        y : Tensor of shape (batch, n_features)
            Outputs of :meth:`forward`, or any real values.

        Returns
        -------
        x : Tensor of shape (batch, n_features)
            Values in ``[lower, upper)``.

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import Logit
        >>> layer = Logit(torch.tensor([-2.0]), torch.tensor([2.0]), alpha=0.5)
        >>> x = torch.tensor([[-1.5], [0.0], [1.0]], dtype=torch.float64)
        >>> bool(torch.allclose(layer.inverse(layer(x)[0]), x))
        True
        >>> edge = layer.inverse(torch.tensor([[1e6]])).item()  # never leaves the box
        >>> edge < 2.0, round(edge, 5)
        (True, 2.0)
        """
        shrunk = torch.sigmoid(self.alpha * y)
        u = (shrunk - self.delta) / (1.0 - 2.0 * self.delta)
        x = self.lower + u.clamp(0.0, 1.0) * (self.upper - self.lower)
        # Half-open box [lower, upper): a saturated sigmoid must not land on the upper
        # edge, which a dequantized column would floor into a bin outside the box.
        x = torch.minimum(x, torch.nextafter(self.upper, self.lower))
        return x if self.passthrough is None else torch.where(self.passthrough, y, x)

    def in_image(self, y: Tensor) -> Tensor:
        """Whether each row of ``y`` is an output of :meth:`forward`.

        The shrink by ``delta`` bounds the image: ``|alpha y| <= logit(1 - delta)``
        in the mapped columns. A flow's mass beyond it maps to no point of the box
        (:meth:`inverse` puts it on the edges), so it is no part of the density.

        Parameters
        ----------
        y : Tensor of shape (batch, n_features)

        Returns
        -------
        Tensor of bool, shape (batch,)

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import Logit
        >>> layer = Logit(torch.zeros(1), torch.ones(1))
        >>> layer.in_image(torch.tensor([[0.0], [13.0], [14.0]])).tolist()
        [True, True, False]
        """
        edge = math.log1p(-self.delta) - math.log(self.delta)  # logit(1 - delta)
        inside = (self.alpha * y).abs() <= edge
        if self.passthrough is not None:
            inside = inside | self.passthrough
        return inside.all(dim=1)

    def log_abs_det_at_output(self, y: Tensor) -> Tensor:
        """``log|det J|`` of :meth:`forward` at the input that maps to ``y``.

        A smooth function of ``y`` (``log u' = log sigmoid(alpha y)``), so a search
        over ``y`` can maximize a density in the units of the data.

        Parameters
        ----------
        y : Tensor of shape (batch, n_features)
            Outputs of :meth:`forward`, or any real values.

        Returns
        -------
        Tensor of shape (batch,)

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import Logit
        >>> step = Logit(torch.zeros(1), torch.ones(1)).double()
        >>> x = torch.tensor([[0.3]], dtype=torch.float64)
        >>> y, log_abs_det = step(x)
        >>> bool(torch.allclose(step.log_abs_det_at_output(y), log_abs_det))
        True
        """
        width = self.upper - self.lower
        log_u = F.logsigmoid(self.alpha * y)
        log_one_minus_u = F.logsigmoid(-self.alpha * y)
        constant = math.log1p(-2.0 * self.delta) - math.log(self.alpha) - width.log()
        _, per_column = self._keep_passthrough(
            y, y, constant - log_u - log_one_minus_u
        )
        return per_column.sum(dim=1)


def log_ndtr(x: Tensor) -> Tensor:
    """``log Phi(x)``, with a gradient that stays right in the far lower tail.

    The value is :func:`torch.special.log_ndtr`'s. Its backward, ``exp(-x^2 / 2 -
    log Phi(x)) / sqrt(2 pi)``, subtracts two huge numbers: below about ``-1e8``
    in float64 it is wrong (0.4 at ``-1e9`` instead of ``1e9``), then infinite,
    then NaN. Below zero this computes ``log(erfcx(-x / sqrt 2) / 2) - x^2 / 2``
    instead, the same value, whose derivative autograd takes term by term.

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows._preprocessing import log_ndtr
    >>> x = torch.tensor([-1e9, -30.0, -1.0, 2.0], dtype=torch.float64,
    ...                  requires_grad=True)
    >>> bool(torch.allclose(log_ndtr(x), torch.special.log_ndtr(x)))
    True
    >>> (gradient,) = torch.autograd.grad(log_ndtr(x).sum(), x)
    >>> round(gradient[0].item() / 1e9, 6), round(gradient[1].item(), 3)
    (1.0, 30.033)
    """
    lower, upper = x.clamp(max=0.0), x.clamp(min=0.0)
    left = (
        torch.log(0.5 * torch.special.erfcx(-_SQRT_HALF * lower))
        - 0.5 * lower.square()
    )
    return torch.where(x < 0, left, torch.special.log_ndtr(upper))


def _normal_quantile_of_log(log_probability: Tensor) -> Tensor:
    """``Phi^-1(exp(log_probability))`` for probabilities up to 1/2, also where
    ``exp`` underflows: there from the tail's asymptote ``-sqrt(t - log t - log
    2 pi)``, ``t = -2 log p``, refined by Newton steps on ``log Phi``.

    Examples
    --------
    >>> import math, torch
    >>> from skebflow.flows._preprocessing import _normal_quantile_of_log
    >>> z = torch.tensor([-1.0, -30.0, -1e4], dtype=torch.float64)
    >>> bool(torch.allclose(_normal_quantile_of_log(torch.special.log_ndtr(z)), z))
    True
    >>> _normal_quantile_of_log(torch.tensor([-math.inf], dtype=torch.float64))
    tensor([-inf], dtype=torch.float64)
    """
    # where exp underflows in this dtype (about -708 in float64, -87 in float32)
    limit = math.log(torch.finfo(log_probability.dtype).tiny) + 1.0
    tiny = log_probability < limit
    quantile = torch.special.ndtri(torch.exp(log_probability.clamp(min=limit)))
    if not bool(tiny.any()):
        return quantile
    t = -2.0 * log_probability.clamp(max=limit)
    tail = -torch.sqrt(t - torch.log(t) - math.log(2.0 * math.pi))
    for _ in range(2):
        log_cdf = log_ndtr(tail)
        log_pdf = -0.5 * tail.square() - 0.5 * math.log(2.0 * math.pi)
        newton = (log_cdf - log_probability) / torch.exp(log_pdf - log_cdf)
        # Far out, log Phi and log p are too large for the dtype to resolve their
        # difference (in float32 from about 1e10 standard deviations): the step
        # is then rounding, not a correction, which from the asymptote is always
        # below one. Keep the asymptote there, and where log Phi is not finite.
        useful = torch.isfinite(newton) & (newton.abs() < 1.0)
        tail = torch.where(useful, tail - newton, tail)
    # a probability of zero (a value beyond every kernel's and the tails' reach)
    # is the quantile -inf, not the NaN of inf - inf in the asymptote
    tail = tail.masked_fill(log_probability == -math.inf, -math.inf)
    return torch.where(tiny, tail, quantile)


class BinProbit(nn.Module):
    """Map some columns onto the real line so that their unit bin ``[v, v + 1)``
    holds all but a millionth of the flow's base: ``z = Phi^-1(G(x - v))``.

    For a dequantized integer column that is constant, ``v``, in the training rows
    (a pixel that is always blank). ``G`` is the distribution function of a model
    of the column: uniform on the bin with mass ``1 - TAIL_MASS``, and
    ``TAIL_MASS / 2`` on either side in exponential tails of rate ``TAIL_RATE``
    per unit. The bin's dequantization noise becomes almost exactly standard
    normal, the flow's own base, which models it without error: the constant
    then has probability ``1 - TAIL_MASS`` (at the bin's centre ``z = 0``, where
    ``log|dz/dx| = log(1 - TAIL_MASS) + log sqrt(2 pi)`` cancels the base's
    density), and a value ``k`` bins away about ``TAIL_MASS / 2 * exp(-(k - 1/2))``:
    about 15 nats less at the next integer, finite, so held-out rows and
    cross-validation folds with new values still score.

    Parameters
    ----------
    columns : Tensor of bool, shape (n_features,)
        Which columns to map.
    lower : Tensor of shape (n_features,)
        Each column's bin starts here (ignored for the other columns).

    Notes
    -----
    With ``p = x - v`` and ``(eps, r) = (TAIL_MASS, TAIL_RATE)``: ``G(p) = eps/2
    e^(r p)`` below the bin, ``eps/2 + (1 - eps) p`` in it, ``1 - eps/2 e^(-r (p -
    1))`` above, and ``log|dz/dx| = log G'(p) - log phi(z)``, computed from ``z``
    through ``log Phi(z)`` and ``log Phi(-z)`` in the tails, so that it stays
    exact where ``G`` itself would underflow.

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import BinProbit
    >>> step = BinProbit(torch.tensor([True, False]), torch.tensor([3.0, 0.0]))
    >>> x = torch.tensor([[3.5, 0.25], [3.975, 0.25], [4.5, 0.25]], dtype=torch.float64)
    >>> z, log_abs_det = step(x)
    >>> [round(v, 3) for v in z[:, 0].tolist()], z[:, 1].tolist()
    ([0.0, 1.96, 4.989], [0.25, 0.25, 0.25])
    >>> round(log_abs_det[0].item(), 4)  # log sqrt(2 pi), the base's density cancelled
    0.9189
    >>> bool(torch.allclose(step.inverse(z), x))
    True
    """

    #: The base's mass outside the bin, half on either side.
    TAIL_MASS = 1e-6
    #: How fast the tails fall, per unit of the column.
    TAIL_RATE = 1.0

    def __init__(self, columns: Tensor, lower: Tensor) -> None:
        super().__init__()
        self.register_buffer("columns", columns.clone().to(torch.bool))
        self.register_buffer("lower", lower.clone())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Map the columns to the real line; return ``(z, log|det J|)``.

        Parameters
        ----------
        x : Tensor of shape (batch, n_features)

        Returns
        -------
        z : Tensor of shape (batch, n_features)
        log_abs_det : Tensor of shape (batch,)

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import BinProbit
        >>> step = BinProbit(torch.tensor([True]), torch.tensor([0.0]))
        >>> step(torch.tensor([[0.5]], dtype=torch.float64))[0].tolist()
        [[0.0]]
        """
        eps, rate = self.TAIL_MASS, self.TAIL_RATE
        position = torch.where(self.columns, x - self.lower, 0.5)
        half_tail = math.log(eps / 2.0)
        # Each tail's quantile from its own log-probability, which stays exact
        # where the probability itself underflows (a value far off the bin).
        below = _normal_quantile_of_log(half_tail + rate * position.clamp(max=0))
        above = -_normal_quantile_of_log(
            half_tail - rate * (position - 1.0).clamp(min=0)
        )
        inside = torch.special.ndtri(
            (eps / 2.0 + (1.0 - eps) * position).clamp(eps / 2.0, 1.0 - eps / 2.0)
        )
        normal = torch.where(
            position < 0, below, torch.where(position >= 1, above, inside)
        )
        z = torch.where(self.columns, normal, x)
        # The branch taken decides (log_abs_det_at_output tells it by z, which
        # rounding can tip into a tail at the bin's lower edge, p = 0).
        per_column = torch.where(
            (position < 0) | (position >= 1),
            self._tail_log_abs_det(z),
            self._bin_log_abs_det(z),
        )
        return z, torch.where(self.columns, per_column, 0.0).sum(dim=1)

    def _bin_log_abs_det(self, z: Tensor) -> Tensor:
        """``log G'(p) - log phi(z)`` in the bin, where ``G' = 1 - eps``."""
        return (
            math.log1p(-self.TAIL_MASS)
            + 0.5 * z.square()
            + 0.5 * math.log(2.0 * math.pi)
        )

    def _tail_log_abs_det(self, z: Tensor) -> Tensor:
        """``log G'(p) - log phi(z)`` in a tail, where ``G' = r G`` and ``G`` is
        ``Phi(z)`` below the bin, ``Phi(-z)`` above it: ``log r`` plus the log of
        Mills' ratio ``Phi(-|z|) / phi(z) = sqrt(pi / 2) erfcx(|z| / sqrt 2)``,
        which does not cancel two terms of order ``z^2`` far off the bin."""
        return (
            math.log(self.TAIL_RATE)
            + 0.5 * math.log(math.pi / 2.0)
            + torch.special.erfcx(z.abs() / math.sqrt(2.0)).log()
        )

    def inverse(self, z: Tensor) -> Tensor:
        """``v + G^-1(Phi(z))`` in the mapped columns.

        Parameters
        ----------
        z : Tensor of shape (batch, n_features)

        Returns
        -------
        Tensor of shape (batch, n_features)

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import BinProbit
        >>> step = BinProbit(torch.tensor([True]), torch.tensor([3.0]))
        >>> z = torch.tensor([[0.0], [4.0], [6.0]], dtype=torch.float64)
        >>> step.inverse(z).floor().tolist()  # beyond 4.9 the tail: new values
        [[3.0], [3.0], [10.0]]
        """
        eps, rate = self.TAIL_MASS, self.TAIL_RATE
        half_tail = math.log(eps / 2.0)
        below = (torch.special.log_ndtr(z) - half_tail) / rate
        above = 1.0 - (torch.special.log_ndtr(-z) - half_tail) / rate
        inside = (torch.special.ndtr(z) - eps / 2.0) / (1.0 - eps)
        # the bin from its lower edge as forward maps p = 0 (log Phi there
        # rounds just below eps/2, which put p = 0 a hair below the bin)
        below = torch.where(z < self._lower_edge(z), below, torch.zeros_like(below))
        position = torch.where(
            below < 0, below, torch.where(above > 1, above, inside.clamp(0.0, 1.0))
        )
        return torch.where(self.columns, self.lower + position, z)

    def _lower_edge(self, like: Tensor) -> Tensor:
        """The bin's lower edge in ``z``, ``Phi^-1(eps / 2)``, as :meth:`forward`
        computes it at ``p = 0``, in ``like``'s dtype and device."""
        half = torch.tensor(self.TAIL_MASS / 2.0, dtype=like.dtype, device=like.device)
        return torch.special.ndtri(half)

    def within_bins(self, z: Tensor) -> Tensor:
        """``z`` with the mapped columns moved into the image of their bin.

        The column's density is flat in its bin and about 14 nats lower just
        outside, so a maximum of the density lies in the bin: a mode search that
        ends a step past its edge (where the flow's learned density is not quite
        flat) is moved back, and the value floors to the bin's integer.

        Parameters
        ----------
        z : Tensor of shape (batch, n_features)

        Returns
        -------
        Tensor of shape (batch, n_features)

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import BinProbit
        >>> step = BinProbit(torch.tensor([True, False]), torch.tensor([3.0, 0.0]))
        >>> z = torch.tensor([[5.2, 9.0], [-6.0, 1.0]], dtype=torch.float64)
        >>> step.inverse(step.within_bins(z)).floor().tolist()
        [[3.0, 9.0], [3.0, 1.0]]
        """
        eps = self.TAIL_MASS
        # a millionth of the bin inside each edge: the inverse floors to the bin
        edge = float(torch.special.ndtri(torch.tensor(eps / 2.0 + (1.0 - eps) * 1e-6)))
        return torch.where(self.columns, z.clamp(edge, -edge), z)

    def log_abs_det_at_output(self, z: Tensor) -> Tensor:
        """``log|det J|`` of :meth:`forward` at the input that maps to ``z``.

        Parameters
        ----------
        z : Tensor of shape (batch, n_features)

        Returns
        -------
        Tensor of shape (batch,)

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import BinProbit
        >>> step = BinProbit(torch.tensor([True, False]), torch.zeros(2))
        >>> round(step.log_abs_det_at_output(torch.zeros(1, 2)).item(), 4)
        0.9189
        """
        half_tail = math.log(self.TAIL_MASS / 2.0)
        # A tail where G = eps/2 e^(r p) < eps/2, the bin between: its edges in z
        # are where Phi(z) = eps/2 and 1 - eps/2. The lower edge (p = 0, in the
        # bin) as forward computes it: log Phi there rounds just below eps/2.
        lower_edge = self._lower_edge(z)
        in_tail = torch.where(
            z < 0, z < lower_edge, torch.special.log_ndtr(-z) < half_tail
        )
        per_column = torch.where(
            in_tail, self._tail_log_abs_det(z), self._bin_log_abs_det(z)
        )
        return torch.where(self.columns, per_column, 0.0).sum(dim=1)


class _ColumnNoiseStep(nn.Module):
    """A step that adds noise to some columns while training: log-det zero.

    Parameters
    ----------
    columns : Tensor of bool, shape (n_features,)
        Which columns receive noise.
    """

    def __init__(self, columns: Tensor) -> None:
        super().__init__()
        self.register_buffer("columns", columns.clone().to(torch.bool))

    def log_abs_det_at_output(self, y: Tensor) -> Tensor:
        """Zeros: the noise shifts values and does not stretch them.

        Parameters
        ----------
        y : Tensor of shape (batch, n_features)

        Returns
        -------
        Tensor of shape (batch,)

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import ColumnNoise, UniformDequantize
        >>> y = torch.ones(2, 1)
        >>> UniformDequantize(torch.tensor([True])).log_abs_det_at_output(y).tolist()
        [0.0, 0.0]
        >>> ColumnNoise(torch.tensor([True])).log_abs_det_at_output(y).tolist()
        [0.0, 0.0]
        """
        return y.new_zeros(y.shape[0])


def _nearest_integer(x: Tensor) -> Tensor:
    """The integer nearest to ``x``, halves rounded up: ``floor(x + 0.5)`` without
    its rounding (0.49999999999999994 + 0.5 is 1.0 in float64; its nearest
    integer is 0).

    Examples
    --------
    >>> import torch
    >>> x = torch.tensor([0.49999999999999994, 0.5, -0.5, 2.4, -2.6],
    ...                  dtype=torch.float64)
    >>> _nearest_integer(x).tolist()
    [0.0, 1.0, 0.0, 2.0, -3.0]
    """
    lower = torch.floor(x)
    return lower + (x - lower >= 0.5).to(x.dtype)


class UniformDequantize(_ColumnNoiseStep):
    """Dequantize integer-valued columns: add ``U[0, 1)`` noise while training.

    Parameters
    ----------
    columns : Tensor of bool, shape (n_features,)
        Which columns hold integers.

    Notes
    -----
    With a generator, ``x + u`` with fresh uniform noise (training, Theis et al. 2016);
    without one, the bin centre ``x + 1/2``, so the reported log-density of an integer
    row is that of its bin's centre (deterministic scores). A value that is not an
    integer is first rounded to the nearest one, so it is scored as that integer.
    Log-det 0. The inverse floors the dequantized columns.

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import UniformDequantize
    >>> layer = UniformDequantize(torch.tensor([True, False]))
    >>> layer(torch.tensor([[3.0, 0.25]]))[0].tolist()
    [[3.5, 0.25]]
    >>> layer(torch.tensor([[2.6, 0.25]]))[0].tolist()  # scored as the integer 3
    [[3.5, 0.25]]
    """

    def forward(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Dequantize the integer columns and return ``(y, log|det J|)`` per row.

        Parameters
        ----------
        x : Tensor of shape (batch, n_features)
            Data; the columns marked in ``columns`` hold integers.
        generator : torch.Generator or None, default=None
            With a generator, add fresh ``U[0, 1)`` noise (training); without one, add
            ``1/2`` (the bin centre, for deterministic scores).

        Returns
        -------
        y : Tensor of shape (batch, n_features)
        log_abs_det : Tensor of shape (batch,)
            Zeros.

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import UniformDequantize
        >>> layer = UniformDequantize(torch.tensor([True, False]))
        >>> x = torch.tensor([[3.0, 0.25], [7.0, -1.0]])
        >>> y, _ = layer(x, generator=torch.Generator().manual_seed(0))
        >>> bool(((y[:, 0] >= x[:, 0]) & (y[:, 0] < x[:, 0] + 1)).all())
        True
        >>> bool(torch.equal(y[:, 1], x[:, 1]))  # the other column is untouched
        True
        """
        if generator is None:
            noise = torch.full_like(x, 0.5)
        else:
            noise = torch.rand(
                x.shape, generator=generator, device=x.device, dtype=x.dtype
            )
        # A value that is not an integer (a later chunk, a new row) belongs to the
        # bin of its nearest integer; integers are unchanged, bit for bit.
        y = torch.where(self.columns, _nearest_integer(x) + noise, x)
        return y, x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        """Floor the dequantized columns back to integers.

        Parameters
        ----------
        y : Tensor of shape (batch, n_features)
            Outputs of :meth:`forward`, or samples in the dequantized space.

        Returns
        -------
        x : Tensor of shape (batch, n_features)

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import UniformDequantize
        >>> layer = UniformDequantize(torch.tensor([True, False]))
        >>> layer.inverse(torch.tensor([[3.7, 0.25]])).tolist()
        [[3.0, 0.25]]
        """
        return torch.where(self.columns, torch.floor(y), y)


class ColumnNoise(_ColumnNoiseStep):
    """Add standard normal noise to some columns while training; identity otherwise.

    The estimators standardize a column that is constant in the training data by a
    narrow width ``w`` around its value ``v``, and add this noise after
    standardizing: the column is then ``N(0, 1)``, independent of the others. The
    estimators pass it to the flow's base unchanged where they can (``Flow``'s
    ``passed_columns``), so the model of the column is exactly ``N(v, w^2)`` and a
    row that departs from ``v`` by ``k w`` loses ``k^2 / 2`` nats; a flow over every
    column learns about ``N(0, 1)`` there from the noise.

    Parameters
    ----------
    columns : Tensor of bool, shape (n_features,)
        Which columns receive noise.

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import ColumnNoise
    >>> step = ColumnNoise(torch.tensor([False, True]))
    >>> x = torch.zeros(3, 2)
    >>> step(x)[0].tolist()  # no generator: identity (evaluation)
    [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]
    >>> noisy, _ = step(x, torch.Generator().manual_seed(0))
    >>> bool((noisy[:, 0] == 0).all()), bool((noisy[:, 1] != 0).all())
    (True, True)
    """

    def __init__(self, columns: Tensor) -> None:
        super().__init__(columns)
        # the noisy columns' indices, fixed with them (no search per batch, and no
        # device synchronization on a GPU)
        self._index_noisy_columns()

    def _index_noisy_columns(self) -> None:
        self.register_buffer(
            "noisy_index", self.columns.nonzero().squeeze(1), persistent=False
        )

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if "noisy_index" not in self._buffers:  # pickled before it existed
            self._index_noisy_columns()

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        # load_state_dict copies new columns in place: index them again (the
        # index is not part of the state dict)
        super()._load_from_state_dict(*args, **kwargs)
        self._index_noisy_columns()

    def forward(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Add the noise when a generator is given; return ``(y, zeros)``.

        Parameters
        ----------
        x : Tensor of shape (batch, n_features)
            Data.
        generator : torch.Generator or None, default=None
            Noise while training; ``None`` for evaluation.

        Returns
        -------
        y : Tensor of shape (batch, n_features)
        log_abs_det : Tensor of shape (batch,)
            Zeros.

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import ColumnNoise
        >>> step = ColumnNoise(torch.tensor([True]))
        >>> step(torch.ones(2, 1))[1].tolist()
        [0.0, 0.0]
        """
        if generator is not None:
            # draws for the noisy columns only (often a few of many)
            index = self.noisy_index
            noise = torch.randn(
                (x.shape[0], index.numel()),
                generator=generator,
                device=x.device,
                dtype=x.dtype,
            )
            x = x.index_add(1, index, noise)
        return x, x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        """The identity.

        Parameters
        ----------
        y : Tensor of shape (batch, n_features)

        Returns
        -------
        Tensor of shape (batch, n_features)

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import ColumnNoise
        >>> ColumnNoise(torch.tensor([True])).inverse(torch.ones(1, 1)).tolist()
        [[1.0]]
        """
        return y


class Preprocessing(nn.Module):
    """A chain of preprocessing bijections; ``forward`` returns ``(y, log|det J|)``.

    Parameters
    ----------
    steps : iterable of nn.Module
        Each maps ``x`` to ``(y, log_abs_det)`` and has an ``inverse``.

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import Preprocessing, Standardize
    >>> chain = Preprocessing([Standardize(torch.zeros(2), torch.full((2,), 10.0))])
    >>> y, log_abs_det = chain(torch.ones(1, 2))
    >>> y.tolist(), round(log_abs_det.item(), 3)
    ([[0.10000000149011612, 0.10000000149011612]], -4.605)
    """

    def __init__(self, steps: Iterable[nn.Module] = ()) -> None:
        super().__init__()
        self.steps = nn.ModuleList(steps)

    def forward(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Apply every step in order and sum their log-determinants per row.

        Parameters
        ----------
        x : Tensor of shape (batch, n_features)
            Data.
        generator : torch.Generator or None, default=None
            Passed to the :class:`UniformDequantize` steps (noise while training).

        Returns
        -------
        y : Tensor of shape (batch, n_features)
        log_abs_det : Tensor of shape (batch,)

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import Logit, Preprocessing, Standardize
        >>> chain = Preprocessing([
        ...     Standardize(torch.zeros(1), torch.full((1,), 2.0)),
        ...     Logit(torch.full((1,), -1.0), torch.ones(1)),
        ... ])
        >>> x = torch.tensor([[-1.0], [0.5]], dtype=torch.float64)
        >>> y, log_abs_det = chain(x)
        >>> _, first = chain.steps[0](x)
        >>> _, second = chain.steps[1](chain.steps[0](x)[0])
        >>> bool(torch.allclose(log_abs_det, first + second))
        True
        """
        log_abs_det = x.new_zeros(x.shape[0])
        for step in self.steps:
            if isinstance(step, _ColumnNoiseStep):
                x, step_log_abs_det = step(x, generator)
            else:
                x, step_log_abs_det = step(x)
            log_abs_det = log_abs_det + step_log_abs_det
        return x, log_abs_det

    def split_fixed_head(self) -> tuple[Preprocessing, Preprocessing]:
        """The leading steps that draw no noise, and the rest of the chain.

        Training maps its rows through the head once, not at every batch: the
        same values, computed once (a :class:`KernelGaussianize` step costs far
        more than a batch of the flow).

        Returns
        -------
        head, tail : Preprocessing
            ``tail(head(x))`` is ``self(x)``, log-determinants summed.

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import Preprocessing, Standardize, UniformDequantize
        >>> chain = Preprocessing([
        ...     Standardize(torch.zeros(1), torch.ones(1)),
        ...     UniformDequantize(torch.tensor([True])),
        ... ])
        >>> head, tail = chain.split_fixed_head()
        >>> [type(step).__name__ for step in head.steps]
        ['Standardize']
        >>> [type(step).__name__ for step in tail.steps]
        ['UniformDequantize']
        """
        steps = list(self.steps)
        length = 0
        while length < len(steps) and not isinstance(steps[length], _ColumnNoiseStep):
            length += 1
        return Preprocessing(steps[:length]), Preprocessing(steps[length:])

    def log_abs_det_at_output(self, y: Tensor) -> Tensor:
        """``log|det J|`` of :meth:`forward` at the input that maps to ``y``.

        Walks the steps last first, as :meth:`inverse` does, summing each step's
        log-determinant at its own output.

        Parameters
        ----------
        y : Tensor of shape (batch, n_features)
            Outputs of :meth:`forward`.

        Returns
        -------
        Tensor of shape (batch,)

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import Logit, Preprocessing, Standardize
        >>> chain = Preprocessing([
        ...     Standardize(torch.zeros(1), torch.full((1,), 2.0)),
        ...     Logit(torch.full((1,), -1.0), torch.ones(1)),
        ... ]).double()
        >>> x = torch.tensor([[0.5], [-1.2]], dtype=torch.float64)
        >>> y, log_abs_det = chain(x)
        >>> bool(torch.allclose(chain.log_abs_det_at_output(y), log_abs_det))
        True
        """
        log_abs_det = y.new_zeros(y.shape[0])
        for step in reversed(self.steps):
            log_abs_det = log_abs_det + step.log_abs_det_at_output(y)
            y = step.inverse(y)
        return log_abs_det

    def in_image(self, y: Tensor) -> Tensor:
        """Whether each row of ``y`` is an output of :meth:`forward` (only a
        logit's image is bounded; see :meth:`Logit.in_image`).

        Parameters
        ----------
        y : Tensor of shape (batch, n_features)

        Returns
        -------
        Tensor of bool, shape (batch,)

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import Logit, Preprocessing
        >>> chain = Preprocessing([Logit(torch.zeros(1), torch.ones(1))])
        >>> chain.in_image(torch.tensor([[1.0], [-20.0]])).tolist()
        [True, False]
        """
        inside = torch.ones(y.shape[0], dtype=torch.bool, device=y.device)
        logits = [i for i, step in enumerate(self.steps) if isinstance(step, Logit)]
        if not logits:
            return inside
        # undone only as far as the first logit's output (sample() inverts anyway)
        for index in range(len(self.steps) - 1, logits[0] - 1, -1):
            step = self.steps[index]
            if isinstance(step, Logit):
                inside = inside & step.in_image(y)
            if index > logits[0]:
                y = step.inverse(y)
        return inside

    def inverse(self, y: Tensor) -> Tensor:
        """Undo every step, last first.

        Parameters
        ----------
        y : Tensor of shape (batch, n_features)
            Outputs of :meth:`forward`.

        Returns
        -------
        x : Tensor of shape (batch, n_features)

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import Logit, Preprocessing, Standardize
        >>> chain = Preprocessing([
        ...     Standardize(torch.zeros(1), torch.full((1,), 2.0)),
        ...     Logit(torch.full((1,), -1.0), torch.ones(1)),
        ... ])
        >>> x = torch.tensor([[-1.0], [0.5]], dtype=torch.float64)
        >>> bool(torch.allclose(chain.inverse(chain(x)[0]), x))
        True
        """
        for step in reversed(self.steps):
            y = step.inverse(y)
        return y
