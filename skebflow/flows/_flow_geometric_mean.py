"""The normalized geometric mean of trained flows' densities (a product of experts).

A mixture of flows is high wherever any member puts mass; the geometric mean
``prod_k p_k(x)^(1/K)`` is high only where every member does. By the inequality of
arithmetic and geometric means it never exceeds the mixture's density, so it
integrates to ``Z <= 1``, and the mixture is an exact rejection-sampling envelope for
it: draw from the mixture and keep a draw with probability ``geometric / mixture``.
The acceptance rate is ``Z`` itself, which gives its log-normalizer by Monte Carlo.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

from ._base import Flow
from ._flow_mixture import FlowMixture

__all__ = ["FlowGeometricMean", "RejectionSamplingError"]

# Below this acceptance rate (Z) rejection sampling would need over 1000 envelope
# draws per sample: the members then barely overlap, and sampling stops with an error.
_MIN_ACCEPTANCE = 1e-3
# Envelope draws per round at most (memory stays bounded: each draw inverts every
# member; each round draws enough rows for the rows still missing at the acceptance
# rate seen so far), and the draws after which a too-low acceptance rate gives up.
_MAX_DRAWS_PER_ROUND = 16_384
_PROBE_DRAWS = 10_000


class RejectionSamplingError(RuntimeError):
    """Rejection sampling from a :class:`FlowGeometricMean` kept too few draws.

    Raised by :meth:`FlowGeometricMean.sample` when fewer than one draw of the
    members' mixture in 1 000 is kept: the members barely overlap, so their
    geometric mean holds almost none of the mixture's mass (in high dimension,
    flows fitted to the same rows can disagree by tens of nats per row).

    Examples
    --------
    >>> from skebflow.flows import RejectionSamplingError
    >>> issubclass(RejectionSamplingError, RuntimeError)
    True
    """


class FlowGeometricMean(FlowMixture):
    """The density ``p(x) = prod_k p_k(x)^(1/K) / Z`` of ``K`` trained flows.

    ``log p(x) = mean_k log p_k(x) - log Z``. The normalizer ``Z = integral of
    prod_k p_k^(1/K)`` has no closed form; it lies in ``(0, 1]`` (1 when the
    members agree everywhere) and :meth:`estimate_log_normalizer` estimates it from
    draws of the members' mixture. The instance holds an estimate (or 0, the bound,
    before one is set) as ``log Z``. Sampling is exact whatever the estimate:
    rejection from the mixture, whose density bounds the unnormalized geometric mean.
    With one member it is that flow, and ``log Z = 0`` exactly.

    Parameters
    ----------
    members : iterable of Flow
        At least one flow, all of the same dimension.
    log_normalizer : float, default=0.0
        ``log Z``, at most 0: an estimate from :meth:`estimate_log_normalizer`.

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import FlowGeometricMean, fc
    >>> members = [fc(1).double() for _ in range(3)]
    >>> with torch.no_grad():  # three flows that disagree: shifted by 0, 0.5, 1
    ...     for k, member in enumerate(members):
    ...         _ = member.layers[0].bias.fill_(0.5 * k)
    >>> unnormalized = FlowGeometricMean(members)
    >>> log_z = unnormalized.estimate_log_normalizer(
    ...     4096, generator=torch.Generator().manual_seed(0))
    >>> bool(log_z < 0.0)  # they disagree, so Z < 1
    True
    >>> geometric = FlowGeometricMean(members, log_normalizer=float(log_z))
    >>> grid = torch.linspace(-40, 40, 16001, dtype=torch.float64).reshape(-1, 1)
    >>> with torch.no_grad():
    ...     mass = torch.trapezoid(geometric.log_prob(grid).exp(), grid[:, 0])
    >>> abs(mass.item() - 1.0) < 0.02  # normalized, up to the estimate's error
    True
    """

    def __init__(self, members: Iterable[Flow], log_normalizer: float = 0.0) -> None:
        super().__init__(members)
        if not log_normalizer <= 0.0:
            raise ValueError(
                f"log_normalizer={log_normalizer!r}: the geometric mean of normalized"
                " densities integrates to at most 1, so its log-normalizer is at"
                " most 0."
            )
        # a buffer, so that state_dict round trips keep it (and .to moves it)
        reference = self.members[0]._reference
        self.register_buffer(
            "log_z",
            reference.new_tensor(
                float(log_normalizer) if len(self.members) > 1 else 0.0
            ),
        )

    def unnormalized_log_prob(self, x: Tensor) -> Tensor:
        """``mean_k log p_k(x)``, the log of the unnormalized geometric mean.

        Parameters
        ----------
        x : Tensor of shape (batch, n_features)
            Points, in the members' dtype and on their device.

        Returns
        -------
        Tensor of shape (batch,)
            ``-energy(x)``, at most the :class:`FlowMixture` log-density of the members.

        Examples
        --------
        By the inequality of arithmetic and geometric means:

        >>> import torch
        >>> from skebflow.flows import FlowGeometricMean, FlowMixture, fc
        >>> members = [fc(2, init="orthogonal",
        ...               generator=torch.Generator().manual_seed(k)).double()
        ...            for k in range(2)]
        >>> x = torch.randn(4, 2, dtype=torch.float64,
        ...                 generator=torch.Generator().manual_seed(0))
        >>> log_geometric = FlowGeometricMean(members).unnormalized_log_prob(x)
        >>> tuple(log_geometric.shape)
        (4,)
        >>> bool((log_geometric <= FlowMixture(members).log_prob(x)).all())
        True
        """
        return self.member_log_probs(x).mean(dim=0)

    def log_prob(self, x: Tensor) -> Tensor:
        """``mean_k log p_k(x) - log Z``, with the instance's ``log Z``.

        Parameters
        ----------
        x : Tensor of shape (batch, n_features)
            Points, in the members' dtype and on their device.

        Returns
        -------
        Tensor of shape (batch,)
            ``log p(x)``, equal to ``-energy(x) - log_normalizer()``.

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import FlowGeometricMean, fc
        >>> members = [fc(2, init="orthogonal",
        ...               generator=torch.Generator().manual_seed(k)).double()
        ...            for k in range(2)]
        >>> x = torch.randn(4, 2, dtype=torch.float64,
        ...                 generator=torch.Generator().manual_seed(0))
        >>> geometric = FlowGeometricMean(members, log_normalizer=-0.5)
        >>> log_p = geometric.unnormalized_log_prob(x) + 0.5
        >>> bool(torch.allclose(geometric.log_prob(x), log_p))
        True
        >>> single = FlowGeometricMean(members[:1])  # one member: that flow
        >>> bool(torch.allclose(single.log_prob(x), members[0].log_prob(x)))
        True
        """
        return self.unnormalized_log_prob(x) - self.log_z

    def energy(self, x: Tensor) -> Tensor:
        """``-mean_k log p_k(x)``: the members' normalizers are part of each term.

        Parameters
        ----------
        x : Tensor of shape (batch, n_features)
            Points, in the members' dtype and on their device.

        Returns
        -------
        Tensor of shape (batch,)
            ``-unnormalized_log_prob(x)``, whatever the instance's ``log Z``.

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import FlowGeometricMean, fc
        >>> members = [fc(2, init="orthogonal",
        ...               generator=torch.Generator().manual_seed(k)).double()
        ...            for k in range(2)]
        >>> x = torch.randn(4, 2, dtype=torch.float64,
        ...                 generator=torch.Generator().manual_seed(0))
        >>> geometric = FlowGeometricMean(members, log_normalizer=-0.5)
        >>> log_p = -geometric.energy(x) - geometric.log_normalizer()
        >>> bool(torch.allclose(log_p, geometric.log_prob(x)))
        True
        """
        return -self.unnormalized_log_prob(x)

    def log_normalizer(self) -> Tensor:
        """``log Z``, the instance's estimate (0 for one member).

        Returns
        -------
        Tensor
            A scalar at most 0, in the members' dtype and on their device.

        Examples
        --------
        >>> from skebflow.flows import FlowGeometricMean, fc
        >>> float(FlowGeometricMean([fc(2), fc(2)], log_normalizer=-0.25)
        ...       .log_normalizer())
        -0.25
        >>> float(FlowGeometricMean([fc(2)], log_normalizer=-0.25).log_normalizer())
        0.0
        """
        return self.log_z.clone()

    def _envelope_draws(
        self, n_draws: int, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """Mixture draws and ``log(geometric / mixture)`` at each, which is <= 0."""
        with torch.no_grad():
            rows = super().sample(n_draws, generator=generator)
            log_probs = self.member_log_probs(rows)
        log_mixture = torch.logsumexp(log_probs, dim=0) - math.log(len(self.members))
        log_ratio = torch.clamp(log_probs.mean(dim=0) - log_mixture, max=0.0)
        return rows, log_ratio

    def estimate_log_normalizer(
        self, n_draws: int = 2048, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """Monte Carlo estimate of ``log Z``: the log of the mean ratio
        ``geometric / mixture`` over ``n_draws`` draws of the members' mixture.

        Unbiased for ``Z`` (not for ``log Z``); its relative standard error is the
        ratio's standard deviation over ``Z sqrt(n_draws)``. It grows as the
        members disagree: with 4 096 draws of four flows fitted to the same rows,
        0.01 to 0.06 where ``Z`` was 0.02 to 0.4; where ``log Z`` was -91 (166
        columns) the ratios are so heavy-tailed that the estimate is rough (about a
        nat by the delta method, itself unreliable there) and biased low.

        Parameters
        ----------
        n_draws : int, default=2048
            Draws of the mixture.
        generator : torch.Generator or None, default=None
            The only randomness.

        Returns
        -------
        Tensor
            ``log Z``, a scalar at most 0; exactly 0 for one member.

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import FlowGeometricMean, fc
        >>> members = [fc(2, init="orthogonal",
        ...               generator=torch.Generator().manual_seed(k)).double()
        ...            for k in range(2)]
        >>> geometric = FlowGeometricMean(members)
        >>> log_z = geometric.estimate_log_normalizer(
        ...     1024, generator=torch.Generator().manual_seed(0))
        >>> bool(log_z <= 0.0)  # every ratio geometric / mixture is at most 1
        True
        >>> again = geometric.estimate_log_normalizer(
        ...     1024, generator=torch.Generator().manual_seed(0))
        >>> bool(torch.equal(log_z, again))
        True
        >>> float(FlowGeometricMean(members[:1]).estimate_log_normalizer())
        0.0
        >>> calibrated = FlowGeometricMean(members, log_normalizer=float(log_z))
        >>> bool(calibrated.log_normalizer() == log_z)
        True
        """
        if len(self.members) == 1:
            return self.log_normalizer()
        _, log_ratio = self._envelope_draws(n_draws, generator)
        return torch.logsumexp(log_ratio, dim=0) - math.log(n_draws)

    def sample(
        self, n_samples: int, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """Exact samples by rejection from the members' mixture.

        A mixture draw ``x`` is kept with probability ``prod_k p_k(x)^(1/K) /
        mean_k p_k(x)``, at most 1; on average ``1 / Z`` draws make one sample.

        Parameters
        ----------
        n_samples : int
            Number of samples.
        generator : torch.Generator or None, default=None
            The only randomness (mixture draws and acceptance).

        Returns
        -------
        Tensor of shape (n_samples, n_features)
            In the members' dtype and on their device.

        Raises
        ------
        RejectionSamplingError
            When fewer than one draw in 1 000 is kept: the members barely overlap
            and the geometric mean has almost no mass to sample from.

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import FlowGeometricMean, fc
        >>> members = [fc(2, init="orthogonal",
        ...               generator=torch.Generator().manual_seed(k)).double()
        ...            for k in range(2)]
        >>> geometric = FlowGeometricMean(members)
        >>> rows = geometric.sample(5, generator=torch.Generator().manual_seed(0))
        >>> tuple(rows.shape), rows.dtype
        ((5, 2), torch.float64)
        >>> again = geometric.sample(5, generator=torch.Generator().manual_seed(0))
        >>> bool(torch.equal(rows, again))  # the generator is the only randomness
        True
        """
        if len(self.members) == 1:
            return self.members[0].sample(n_samples, generator=generator)
        device = generator.device if generator is not None else self.device
        kept: list[Tensor] = [
            torch.empty(0, self.n_features, dtype=self.dtype, device=self.device)
        ]
        n_drawn = n_accepted = 0
        # Until enough rows are kept, or the draws so far (at least the probe's)
        # keep fewer than _MIN_ACCEPTANCE of them (the check at the loop's end).
        while n_accepted < n_samples:
            rate = max(n_accepted / n_drawn, _MIN_ACCEPTANCE) if n_drawn else 0.5
            wanted = math.ceil(1.2 * (n_samples - n_accepted) / rate)
            n_draws = min(max(16, wanted), _MAX_DRAWS_PER_ROUND)
            rows, log_ratio = self._envelope_draws(n_draws, generator)
            uniform = torch.rand(
                n_draws, generator=generator, device=device, dtype=rows.dtype
            ).to(rows.device)
            accepted = rows[torch.log(uniform) < log_ratio]
            n_drawn, n_accepted = n_drawn + n_draws, n_accepted + len(accepted)
            kept.append(accepted)
            if n_drawn >= _PROBE_DRAWS and n_accepted < _MIN_ACCEPTANCE * n_drawn:
                break
        if n_accepted < n_samples:
            raise RejectionSamplingError(
                f"Rejection sampling kept {n_accepted} of {n_drawn} draws of the"
                " members' mixture: the member flows barely overlap, so their"
                " geometric mean has almost no mass. Sample from the mixture instead."
            )
        return torch.cat(kept)[:n_samples]
