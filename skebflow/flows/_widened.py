"""A trained flow with its base density widened: a smoother density of the same flow.

Widening the base by a factor ``s`` keeps the flow's map and replaces ``N(0, I)`` by
``N(0, s^2 I)`` (any base: ``p_base(z / s) / s^D``). The result is still an exact,
normalized density, ``p_s(x) = p_base(f(x) / s) |det J_f(x)| / s^D``: the same
stretching of space, with less weight on how far ``f(x)`` lies from the base's
centre. ``EBFlowOutlierDetector`` ranks outliers by it.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from ._base import BaseDistribution, Flow
from ._flow_geometric_mean import FlowGeometricMean
from ._flow_mixture import FlowMixture

__all__ = ["ScaledBase", "widen_base"]


class ScaledBase(BaseDistribution):
    """The base ``inner`` stretched by ``scale``: ``z = scale * u`` with ``u ~ inner``.

    ``-log p(z) = inner_energy(z / scale) + inner_log_normalizer + D log(scale)``: the
    energy is the inner one at ``z / scale`` and the constant gains ``D log(scale)``.

    Parameters
    ----------
    inner : BaseDistribution
        The base to stretch (shared, not copied).
    scale : float
        The factor, positive.

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import ScaledBase, StandardNormal
    >>> base = ScaledBase(StandardNormal(), 2.0)
    >>> z = torch.tensor([[1.0, -3.0]], dtype=torch.float64)
    >>> log_p = -base.energy(z) - base.log_normalizer(2)
    >>> reference = torch.distributions.Normal(0.0, 2.0).log_prob(z).sum(dim=1)
    >>> bool(torch.allclose(log_p, reference))
    True
    """

    name: ClassVar[str] = "scaled"

    def __init__(self, inner: BaseDistribution, scale: float) -> None:
        super().__init__()
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale={scale!r} must be a positive, finite number.")
        self.inner = inner
        self.scale = float(scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}"

    def energy(self, z: Tensor) -> Tensor:
        """The inner base's energy at ``z / scale``, per row.

        Parameters
        ----------
        z : Tensor of shape (batch, n_features)
            Base-space points.

        Returns
        -------
        Tensor of shape (batch,)

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import ScaledBase, StandardNormal
        >>> z = torch.ones(1, 2)
        >>> wide, plain = ScaledBase(StandardNormal(), 2.0), StandardNormal()
        >>> bool(torch.allclose(wide.energy(z), plain.energy(z / 2)))
        True
        """
        return self.inner.energy(z / self.scale)

    def log_normalizer(self, n_features: int) -> Tensor:
        """The inner constant plus ``D log(scale)``.

        Parameters
        ----------
        n_features : int
            The dimension ``D``.

        Returns
        -------
        Tensor of shape ()

        Examples
        --------
        >>> import math
        >>> from skebflow.flows import ScaledBase, StandardNormal
        >>> value = ScaledBase(StandardNormal(), math.e).log_normalizer(3).item()
        >>> round(value, 6)  # 3 log(e)
        3.0
        """
        constant = torch.as_tensor(
            self.inner.log_normalizer(n_features), dtype=torch.float64
        )
        return constant + n_features * math.log(self.scale)

    def curvature(self, z: Tensor, tangent: Tensor) -> Tensor:
        """``t^T H t`` of the stretched energy: the inner one at ``(z, t) / scale``.

        Parameters
        ----------
        z : Tensor of shape (batch, n_features)
            Base-space points.
        tangent : Tensor of shape (batch, n_features)
            The direction ``t``.

        Returns
        -------
        Tensor of shape (batch,)

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import ScaledBase, StandardNormal
        >>> base = ScaledBase(StandardNormal(), 2.0)
        >>> base.curvature(torch.zeros(1, 2), torch.ones(1, 2)).tolist()  # |t|^2 / 4
        [0.5]
        """
        return self.inner.curvature(z / self.scale, tangent / self.scale)

    def sample(
        self,
        n_samples: int,
        n_features: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """``scale`` times the inner base's draws.

        Parameters
        ----------
        n_samples : int
            Number of draws.
        n_features : int
            The dimension ``D``.
        generator : torch.Generator or None, default=None
            The only source of randomness.
        device : torch.device, str or None, default=None
            Device of the draws.
        dtype : torch.dtype or None, default=None
            Floating-point type of the draws.

        Returns
        -------
        Tensor of shape (n_samples, n_features)

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import ScaledBase, StandardNormal
        >>> z = ScaledBase(StandardNormal(), 3.0).sample(
        ...     2, 2, generator=torch.Generator().manual_seed(0))
        >>> plain = torch.randn(2, 2, generator=torch.Generator().manual_seed(0))
        >>> bool(torch.allclose(z, 3 * plain))
        True
        """
        draws = self.inner.sample(
            n_samples, n_features, generator=generator, device=device, dtype=dtype
        )
        return self.scale * draws


def widen_base(flow: Flow | FlowMixture, scale: float) -> Flow | FlowMixture:
    """``flow`` with its base (each member's, for a mixture) widened by ``scale``.

    The layers are shared, not copied: the result is a view of the trained flow with
    another base, to score or sample from, never to train. ``scale=1`` returns
    ``flow`` itself.

    Parameters
    ----------
    flow : Flow or FlowMixture
        A trained flow or mixture of flows.
    scale : float
        The factor, positive.

    Returns
    -------
    Flow or FlowMixture
        The density ``p_base(f(x) / scale) |det J_f(x)| / scale^D``, normalized.

    Raises
    ------
    ValueError
        For a :class:`FlowGeometricMean`, whose log-normalizer the widening would
        change: widen its members, then combine them again.

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import fc, widen_base
    >>> flow = fc(1, generator=torch.Generator().manual_seed(0)).double()
    >>> wide = widen_base(flow, 2.0)
    >>> wide.layers[0] is flow.layers[0]
    True
    >>> grid = torch.linspace(-60, 60, 12001, dtype=torch.float64).reshape(-1, 1)
    >>> with torch.no_grad():
    ...     mass = torch.trapezoid(wide.log_prob(grid).exp(), grid[:, 0])
    >>> round(mass.item(), 4)  # still a density
    1.0
    """
    if scale == 1.0:
        return flow
    if isinstance(flow, FlowGeometricMean):
        raise ValueError(
            "A FlowGeometricMean's log-normalizer changes with its members' bases:"
            " widen each member, then build the geometric mean of the widened members"
            " and estimate its log-normalizer again."
        )
    if isinstance(flow, FlowMixture):
        return FlowMixture(widen_base(member, scale) for member in flow.members)
    widened = Flow(
        flow.layers,
        base=ScaledBase(flow.base, scale),
        passed_columns=flow.passed_columns,
    )
    # The trained flow's reference buffer gives the view its dtype and device; no
    # .to(), which would touch the shared modules.
    widened._reference = flow._reference
    return widened
