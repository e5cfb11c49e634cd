"""The layer contract and the :class:`Flow` container.

A flow maps data ``x`` to a latent ``z = g(x)`` with a standard normal base. Its
log-density splits into an *energy*, which collects every term that depends on ``x``,
and a *log-normalizer*, which collects the log-determinants of the layers whose
Jacobian does not depend on ``x`` (Chao et al., 2023):

.. math::

    \\log p(x) = -E(x) - \\log Z, \\qquad
    E(x) = \\tfrac12\\|g(x)\\|^2 + \\tfrac D2 \\log 2\\pi
           - \\sum_{i \\in S_n} \\log|\\det J_{g_i}(x_{i-1})|, \\qquad
    \\log Z = -\\sum_{i \\in S_l} \\log|\\det J_{g_i}|.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor, nn

__all__ = ["Bijection", "Flow", "Jet"]


class Jet(NamedTuple):
    """A layer's output along the line ``x + eps * t``, to second order in ``eps``.

    Attributes
    ----------
    y : Tensor of shape (batch, n_features)
        The output ``f(x)``.
    tangent : Tensor of shape (batch, n_features)
        ``J_f(x) t``, the first-order coefficient.
    curvature : Tensor of shape (batch, n_features) or None
        ``D^2 f(x)[t, t]``, the second-order source created by this layer (``None``
        for a linear layer, which creates none).
    log_abs_det : Tensor of shape (batch,) or None
        ``log|det J_f(x)|`` per row, ``None`` for a constant-Jacobian layer.
    log_abs_det_curvature : Tensor of shape (batch,) or None
        ``d^2/deps^2 log|det J_f(x + eps t)|`` at ``eps = 0`` with the input moving
        only linearly; ``None`` for a constant-Jacobian layer.

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import Dense, SmoothLeakyReLU
    >>> generator = torch.Generator().manual_seed(0)
    >>> x = torch.randn(4, 3, dtype=torch.float64, generator=generator)
    >>> t = torch.randn(4, 3, dtype=torch.float64, generator=generator)
    >>> jet = SmoothLeakyReLU().jet(x, t)
    >>> jet._fields
    ('y', 'tangent', 'curvature', 'log_abs_det', 'log_abs_det_curvature')
    >>> tuple(jet.curvature.shape), tuple(jet.log_abs_det.shape)
    ((4, 3), (4,))
    >>> linear = Dense(3).double().jet(x, t)  # a linear layer creates no curvature
    >>> linear.curvature is None, linear.log_abs_det is None
    (True, True)
    """

    y: Tensor
    tangent: Tensor
    curvature: Tensor | None
    log_abs_det: Tensor | None
    log_abs_det_curvature: Tensor | None


class Bijection(nn.Module):
    """Base class of every invertible layer.

    Subclasses implement :meth:`forward`, :meth:`inverse` and :meth:`jet`, and declare
    ``constant_jacobian``. A constant-Jacobian layer returns ``None`` as its per-row
    log-determinant and implements :meth:`log_abs_det`, which reads only its parameters.

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import SmoothLeakyReLU
    >>> layer = SmoothLeakyReLU(alpha=0.3)
    >>> y, log_abs_det = layer(torch.zeros(2, 3, dtype=torch.float64))
    >>> tuple(y.shape), tuple(log_abs_det.shape), layer.constant_jacobian
    ((2, 3), (2,), False)
    """

    constant_jacobian: ClassVar[bool] = False

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:  # pragma: no cover
        """Map ``x`` to ``y`` and return ``(y, log|det J|)`` per row (or ``None``).

        Parameters
        ----------
        x : Tensor of shape (batch, n_features)
            Inputs.

        Returns
        -------
        y : Tensor of shape (batch, n_features)
        log_abs_det : Tensor of shape (batch,) or None
            ``None`` for a constant-Jacobian layer (see :meth:`log_abs_det`).

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import Dense, SmoothLeakyReLU
        >>> x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
        >>> y, log_abs_det = SmoothLeakyReLU()(x)  # calling the layer runs forward
        >>> tuple(y.shape), tuple(log_abs_det.shape)
        ((4, 3), (4,))
        >>> y, log_abs_det = Dense(3)(x)
        >>> tuple(y.shape), log_abs_det  # constant Jacobian: see log_abs_det()
        ((4, 3), None)
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def inverse(self, y: Tensor) -> Tensor:  # pragma: no cover
        """Map ``y`` back to ``x``.

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
        >>> from skebflow.flows import AffineCoupling, Dense, SmoothLeakyReLU
        >>> generator = torch.Generator().manual_seed(0)
        >>> x = torch.randn(5, 4, dtype=torch.float64, generator=generator)
        >>> layers = [
        ...     Dense(4, init="orthogonal", generator=generator),
        ...     SmoothLeakyReLU(),
        ...     AffineCoupling(4, hidden_layer_sizes=(8,), generator=generator),
        ... ]
        >>> [bool(torch.allclose(layer.double().inverse(layer.double()(x)[0]), x))
        ...  for layer in layers]
        [True, True, True]
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement inverse")

    def jet(self, x: Tensor, tangent: Tensor) -> Jet:  # pragma: no cover
        """Propagate a point and a direction to second order (see :class:`Jet`).

        Parameters
        ----------
        x : Tensor of shape (batch, n_features)
            Points.
        tangent : Tensor of shape (batch, n_features)
            The direction ``t`` at each point.

        Returns
        -------
        Jet

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import SmoothLeakyReLU
        >>> layer = SmoothLeakyReLU()
        >>> generator = torch.Generator().manual_seed(0)
        >>> x = torch.randn(4, 3, dtype=torch.float64, generator=generator)
        >>> t = torch.randn(4, 3, dtype=torch.float64, generator=generator)
        >>> jet = layer.jet(x, t)
        >>> bool(torch.allclose(jet.y, layer(x)[0]))
        True
        >>> # The tangent is the Jacobian-vector product J_f(x) t.
        >>> _, jvp = torch.autograd.functional.jvp(lambda x: layer(x)[0], x, t)
        >>> bool(torch.allclose(jet.tangent, jvp))
        True
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement jet")

    def log_abs_det(self) -> Tensor:  # pragma: no cover
        """``log|det J|`` of a constant-Jacobian layer, from its parameters alone.

        Returns
        -------
        Tensor of shape ()
            A scalar; a layer whose Jacobian depends on ``x`` raises
            ``NotImplementedError`` and returns its log-determinant per row from
            :meth:`forward` instead.

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import Dense
        >>> layer = Dense(3, init="identity").double()
        >>> with torch.no_grad():
        ...     _ = layer.weight.mul_(2.0)
        >>> round(layer.log_abs_det().item(), 4)  # log|det(2 I)| = 3 log 2
        2.0794
        """
        raise NotImplementedError(
            f"{type(self).__name__} has an input-dependent Jacobian; its"
            " log-determinant comes per row from forward()"
        )


class Flow(nn.Module):
    """A normalizing flow written as an energy-based model.

    Parameters
    ----------
    layers : iterable of Bijection
        Applied in order from data space to the base space.

    Notes
    -----
    :meth:`energy` never evaluates the log-determinant of a constant-Jacobian layer,
    so the score-matching objectives that differentiate it cost :math:`O(D^2 L)`.
    :meth:`log_normalizer` collects those determinants (:math:`O(D^3 L)`), cached per
    parameter state when no gradient is asked for.

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import fc
    >>> flow = fc(3, generator=torch.Generator().manual_seed(0)).double()
    >>> generator = torch.Generator().manual_seed(1)
    >>> x = torch.randn(5, 3, dtype=torch.float64, generator=generator)
    >>> bool(torch.allclose(flow.log_prob(x), -flow.energy(x) - flow.log_normalizer()))
    True
    """

    def __init__(self, layers: Iterable[Bijection]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        # Follows .to(device, dtype) like the parameters, so a flow without any
        # parameter still knows its device and dtype; not part of the state dict.
        self.register_buffer("_reference", torch.zeros(()), persistent=False)

    @property
    def n_features(self) -> int:
        """Dimension of the data the flow models."""
        for layer in self.layers:
            if hasattr(layer, "n_features"):
                return int(layer.n_features)
        raise ValueError(
            "This flow has no layer that fixes its number of features (such as a"
            " Dense layer); it cannot tell the dimension of its samples."
        )

    @property
    def dtype(self) -> torch.dtype:
        """Floating-point type of the flow's parameters and buffers.

        Examples
        --------
        >>> from skebflow.flows import Flow, SmoothLeakyReLU, fc
        >>> fc(2).double().dtype
        torch.float64
        >>> Flow([SmoothLeakyReLU()]).dtype  # no parameters, still defined
        torch.float32
        """
        return self._reference.dtype

    @property
    def device(self) -> torch.device:
        """Device of the flow's parameters and buffers.

        Examples
        --------
        >>> from skebflow.flows import fc
        >>> fc(2).device
        device(type='cpu')
        """
        return self._reference.device

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Map ``x`` to ``z`` and sum the input-dependent log-determinants per row.

        Parameters
        ----------
        x : Tensor of shape (batch, n_features)
            Data.

        Returns
        -------
        z : Tensor of shape (batch, n_features)
        log_abs_det : Tensor of shape (batch,)
            Sum of the non-linear layers' log-determinants.

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import fc
        >>> flow = fc(3, generator=torch.Generator().manual_seed(0)).double()
        >>> generator = torch.Generator().manual_seed(1)
        >>> x = torch.randn(5, 3, dtype=torch.float64, generator=generator)
        >>> z, log_abs_det = flow(x)  # calling the flow runs forward
        >>> tuple(z.shape), tuple(log_abs_det.shape)
        ((5, 3), (5,))
        """
        log_abs_det = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, layer_log_abs_det = layer(x)
            if layer_log_abs_det is not None:
                log_abs_det = log_abs_det + layer_log_abs_det
        return x, log_abs_det

    def energy(self, x: Tensor) -> Tensor:
        """Energy per row: every term of :math:`-\\log p(x)` that depends on x.

        Parameters
        ----------
        x : Tensor of shape (batch, n_features)
            Data.

        Returns
        -------
        Tensor of shape (batch,)

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import fc
        >>> flow = fc(3, generator=torch.Generator().manual_seed(0)).double()
        >>> generator = torch.Generator().manual_seed(1)
        >>> x = torch.randn(5, 3, dtype=torch.float64, generator=generator)
        >>> import math
        >>> z, log_abs_det = flow(x)
        >>> base = 0.5 * z.square().sum(dim=1) + 1.5 * math.log(2 * math.pi)
        >>> bool(torch.allclose(flow.energy(x), base - log_abs_det))
        True
        """
        z, log_abs_det = self(x)
        return base_energy(z) - log_abs_det

    def log_normalizer(self) -> Tensor:
        """Log-normalizer, minus the sum of the linear layers' log|det W| (a scalar).

        Returns
        -------
        Tensor of shape ()
            ``log Z``; zero when the flow has no constant-Jacobian layer.

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import fc
        >>> flow = fc(3).double()  # its dense layers start at -I: log Z = 0
        >>> flow.log_normalizer().item() == 0
        True
        >>> with torch.no_grad():
        ...     _ = flow.layers[0].weight.mul_(2.0)
        >>> round(flow.log_normalizer().item(), 4)  # -log|det(-2 I)| = -3 log 2
        -2.0794
        """
        total = None
        for layer in self.layers:
            if layer.constant_jacobian:
                term = layer.log_abs_det()
                total = term if total is None else total + term
        if total is None:
            return self._reference.new_zeros(())
        return -total

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact, normalized log-density per row.

        Parameters
        ----------
        x : Tensor of shape (batch, n_features)
            Data.

        Returns
        -------
        Tensor of shape (batch,)

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import fc
        >>> flow = fc(1, generator=torch.Generator().manual_seed(0)).double()
        >>> grid = torch.linspace(-30, 30, 6001, dtype=torch.float64).reshape(-1, 1)
        >>> with torch.no_grad():
        ...     mass = torch.trapezoid(flow.log_prob(grid).exp(), grid[:, 0])
        >>> round(mass.item(), 4)  # the density integrates to one
        1.0
        """
        return -self.energy(x) - self.log_normalizer()

    def inverse(self, z: Tensor) -> Tensor:
        """Map base-space points back to data space.

        Parameters
        ----------
        z : Tensor of shape (batch, n_features)
            Points of the base space.

        Returns
        -------
        Tensor of shape (batch, n_features)

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import fc
        >>> flow = fc(3, generator=torch.Generator().manual_seed(0)).double()
        >>> generator = torch.Generator().manual_seed(1)
        >>> x = torch.randn(5, 3, dtype=torch.float64, generator=generator)
        >>> z, _ = flow(x)
        >>> bool(torch.allclose(flow.inverse(z), x))
        True
        """
        for layer in reversed(self.layers):
            z = layer.inverse(z)
        return z

    def sample(
        self,
        n_samples: int,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draw exact samples by inverting the flow (no gradient).

        Parameters
        ----------
        n_samples : int
            Number of samples.
        generator : torch.Generator or None, default=None
            Randomness of the base-space draws.

        Returns
        -------
        Tensor of shape (n_samples, n_features)

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import fc
        >>> flow = fc(3, generator=torch.Generator().manual_seed(0))
        >>> samples = flow.sample(4, generator=torch.Generator().manual_seed(1))
        >>> tuple(samples.shape), samples.requires_grad
        ((4, 3), False)
        >>> again = flow.sample(4, generator=torch.Generator().manual_seed(1))
        >>> bool(torch.equal(samples, again))  # the generator fixes the draws
        True
        """
        z = torch.randn(
            n_samples,
            self.n_features,
            generator=generator,
            device=self.device,
            dtype=self.dtype,
        )
        with torch.no_grad():
            return self.inverse(z)


def base_energy(z: Tensor) -> Tensor:
    """``-log N(z; 0, I)`` per row."""
    return 0.5 * z.pow(2).sum(dim=1) + 0.5 * z.shape[1] * math.log(2.0 * math.pi)


def parameter_state(*tensors: Tensor) -> tuple[int, ...]:
    """A key that changes whenever one of ``tensors`` is modified or replaced."""
    key: list[int] = []
    for tensor in tensors:
        key.extend((id(tensor), tensor._version, tensor.data_ptr()))
    return tuple(key)
