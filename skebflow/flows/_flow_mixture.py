"""An equal-weight mixture of flows: a normalized density built from trained flows.

Each member is trained on its own (by any objective, score matching included); the
mixture only combines the exact, normalized densities afterwards, so its density is
normalized too. On small data the members over-fit in different directions and their
mean density generalizes better than any one of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from ._base import Flow

__all__ = ["FlowMixture"]


class FlowMixture(nn.Module):
    """The density ``p(x) = (1/K) sum_k p_k(x)`` of ``K`` flows.

    It offers the part of :class:`Flow`'s interface that scoring and sampling use:
    :meth:`energy` and :meth:`log_normalizer` with ``log p = -energy - log Z``,
    :meth:`log_prob`, :meth:`sample`, ``n_features``, ``dtype`` and ``device``. A
    mixture has no energy / normalizer split: each member's log-normalizer enters
    its term of the sum, so :meth:`energy` is the whole ``-log p(x)`` and
    :meth:`log_normalizer` is zero. Its members are trained separately, each with
    its own split; the mixture is never trained as a whole.

    Parameters
    ----------
    members : iterable of Flow
        At least one flow, all of the same dimension.

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import FlowMixture, fc
    >>> members = [fc(2, init="orthogonal",
    ...               generator=torch.Generator().manual_seed(k)).double()
    ...            for k in range(3)]  # three different flows
    >>> mixture = FlowMixture(members)
    >>> x = torch.zeros(1, 2, dtype=torch.float64)
    >>> mean = torch.stack([m.log_prob(x).exp() for m in members]).mean(dim=0)
    >>> bool(torch.allclose(mixture.log_prob(x), mean.log()))
    True
    >>> tuple(mixture.sample(5, generator=torch.Generator().manual_seed(0)).shape)
    (5, 2)
    """

    def __init__(self, members: Iterable[Flow]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        if len(self.members) == 0:
            raise ValueError("A FlowMixture needs at least one member flow.")
        dimensions = {member.n_features for member in self.members}
        if len(dimensions) > 1:
            raise ValueError(
                f"The member flows model different dimensions {sorted(dimensions)};"
                " a mixture needs flows of one dimension."
            )
        kinds = {(member.dtype, member.device) for member in self.members}
        if len(kinds) > 1:
            raise ValueError(
                "The member flows have different dtypes or devices"
                f" {sorted(map(str, kinds))}; move them to one, for example with"
                " .to(torch.float64)."
            )

    @property
    def n_features(self) -> int:
        """Dimension of the data the mixture models, that of every member.

        Examples
        --------
        >>> from skebflow.flows import FlowGeometricMean, FlowMixture, fc
        >>> FlowMixture([fc(3), fc(3)]).n_features
        3
        >>> FlowGeometricMean([fc(3), fc(3)]).n_features
        3
        """
        return self.members[0].n_features

    @property
    def dtype(self) -> torch.dtype:
        """Floating-point type of the members (it follows ``.double()``, ``.to``).

        Examples
        --------
        >>> from skebflow.flows import FlowGeometricMean, FlowMixture, fc
        >>> FlowMixture([fc(2), fc(2)]).dtype
        torch.float32
        >>> FlowGeometricMean([fc(2), fc(2)]).double().dtype
        torch.float64
        """
        return self.members[0].dtype

    @property
    def device(self) -> torch.device:
        """Device of the members (it follows ``.to``).

        Examples
        --------
        >>> from skebflow.flows import FlowGeometricMean, FlowMixture, fc
        >>> FlowMixture([fc(2), fc(2)]).device
        device(type='cpu')
        >>> FlowGeometricMean([fc(2), fc(2)]).device
        device(type='cpu')
        """
        return self.members[0].device

    def member_log_probs(self, x: Tensor) -> Tensor:
        """Each member's normalized log-density, shape ``(n_members, batch)``.

        Parameters
        ----------
        x : Tensor of shape (batch, n_features)
            Points, in the members' dtype and on their device.

        Returns
        -------
        Tensor of shape (n_members, batch)
            Row ``k`` is ``members[k].log_prob(x)``.

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import FlowGeometricMean, FlowMixture, fc
        >>> members = [fc(2, init="orthogonal",
        ...               generator=torch.Generator().manual_seed(k)).double()
        ...            for k in range(3)]
        >>> x = torch.zeros(4, 2, dtype=torch.float64)
        >>> log_probs = FlowMixture(members).member_log_probs(x)
        >>> tuple(log_probs.shape)
        (3, 4)
        >>> bool(torch.equal(log_probs[1], members[1].log_prob(x)))
        True
        >>> bool(torch.equal(FlowGeometricMean(members).member_log_probs(x), log_probs))
        True
        """
        return torch.stack([member.log_prob(x) for member in self.members])

    def log_prob(self, x: Tensor) -> Tensor:
        """Normalized log-density per row: ``logsumexp_k log p_k(x) - log K``.

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
        A mixture of one flow with itself has that flow's density; a mixture of
        different flows lies between its members' densities:

        >>> import torch
        >>> from skebflow.flows import FlowMixture, fc
        >>> members = [fc(2, init="orthogonal",
        ...               generator=torch.Generator().manual_seed(k)).double()
        ...            for k in range(2)]
        >>> x = torch.randn(4, 2, dtype=torch.float64,
        ...                 generator=torch.Generator().manual_seed(0))
        >>> twice = FlowMixture([members[0], members[0]])
        >>> bool(torch.allclose(twice.log_prob(x), members[0].log_prob(x)))
        True
        >>> mixture = FlowMixture(members)
        >>> log_probs = mixture.member_log_probs(x)
        >>> log_p = mixture.log_prob(x)
        >>> tuple(log_p.shape)
        (4,)
        >>> bool((log_probs.min(dim=0).values <= log_p).all()
        ...      and (log_p <= log_probs.max(dim=0).values).all())
        True
        """
        return torch.logsumexp(self.member_log_probs(x), dim=0) - math.log(
            len(self.members)
        )

    def energy(self, x: Tensor) -> Tensor:
        """``-log p(x)``: the members' normalizers are part of each term.

        Parameters
        ----------
        x : Tensor of shape (batch, n_features)
            Points, in the members' dtype and on their device.

        Returns
        -------
        Tensor of shape (batch,)
            ``-log_prob(x)``; :meth:`log_normalizer` is zero.

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import FlowMixture, fc
        >>> members = [fc(2, init="orthogonal",
        ...               generator=torch.Generator().manual_seed(k)).double()
        ...            for k in range(2)]
        >>> mixture = FlowMixture(members)
        >>> x = torch.randn(4, 2, dtype=torch.float64,
        ...                 generator=torch.Generator().manual_seed(0))
        >>> log_p = -mixture.energy(x) - mixture.log_normalizer()
        >>> bool(torch.allclose(log_p, mixture.log_prob(x)))
        True
        """
        return -self.log_prob(x)

    def log_normalizer(self) -> Tensor:
        """Zero: :meth:`energy` is already normalized.

        Returns
        -------
        Tensor
            A zero scalar, in the members' dtype and on their device.

        Examples
        --------
        >>> from skebflow.flows import FlowMixture, fc
        >>> log_z = FlowMixture([fc(2), fc(2)]).double().log_normalizer()
        >>> float(log_z), log_z.dtype, tuple(log_z.shape)
        (0.0, torch.float64, ())
        """
        return self.members[0]._reference.new_zeros(())

    def sample(
        self, n_samples: int, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """Exact samples: a uniformly chosen member per row, then its sample.

        Parameters
        ----------
        n_samples : int
            Number of samples.
        generator : torch.Generator or None, default=None
            The only randomness (member choice, base draws, order).

        Returns
        -------
        Tensor of shape (n_samples, n_features)
            In the members' dtype and on their device.

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import FlowMixture, fc
        >>> members = [fc(2, init="orthogonal",
        ...               generator=torch.Generator().manual_seed(k)).double()
        ...            for k in range(2)]
        >>> mixture = FlowMixture(members)
        >>> rows = mixture.sample(5, generator=torch.Generator().manual_seed(0))
        >>> tuple(rows.shape), rows.dtype
        ((5, 2), torch.float64)
        >>> again = mixture.sample(5, generator=torch.Generator().manual_seed(0))
        >>> bool(torch.equal(rows, again))  # the generator is the only randomness
        True
        """
        device = generator.device if generator is not None else self.device
        choice = torch.randint(
            len(self.members), (n_samples,), generator=generator, device=device
        )
        rows = torch.empty(
            n_samples, self.n_features, dtype=self.dtype, device=self.device
        )
        for index, member in enumerate(self.members):
            chosen = (choice == index).nonzero().squeeze(1).to(self.device)
            if chosen.numel():
                rows[chosen] = member.sample(int(chosen.numel()), generator=generator)
        return rows
