"""The layer contract, the base distributions and the :class:`Flow` container.

A flow maps data ``x`` to a latent ``z = g(x)`` with a standard normal base (or a
Student-t one, whose constant joins the log-normalizer, see :class:`StudentT`). Its
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
import numbers
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, NamedTuple, TypeVar

import torch
from torch import Tensor, nn

__all__ = [
    "BASE_DISTRIBUTIONS",
    "BaseDistribution",
    "Bijection",
    "Flow",
    "Jet",
    "StandardNormal",
    "StudentT",
    "make_base",
]


#: The dtype starting weights are drawn and computed in, whatever torch's default
#: dtype; :func:`in_default_dtype` then holds them in the default.
INIT_DTYPE = torch.float32

_Castable = TypeVar("_Castable", Tensor, nn.Module)


def in_default_dtype(value: _Castable) -> _Castable:
    """``value`` (starting weights computed in :data:`INIT_DTYPE`) held in torch's
    default dtype, as a layer's other tensors are: the same generator then gives
    the same model under a float64 default as under float32 (drawn in the
    default, the draws themselves differed).

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows._base import INIT_DTYPE, in_default_dtype
    >>> draw = torch.randn(2, generator=torch.Generator().manual_seed(0),
    ...                    dtype=INIT_DTYPE)
    >>> in_default_dtype(draw).dtype == torch.get_default_dtype()
    True
    """
    return value.to(torch.get_default_dtype())


def positive_integer(value: Any, what: str) -> int:
    """``value`` as an int of at least 1 (bools refused), or a ValueError that
    says what it counts (``what``).

    Examples
    --------
    >>> from skebflow.flows._base import positive_integer
    >>> positive_integer(3, "n_features")
    3
    >>> positive_integer(2.5, "n_components")
    Traceback (most recent call last):
    ...
    ValueError: n_components must be a positive integer; got 2.5.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{what} must be a positive integer; got {value!r}.")
    return int(value)


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
    base : {"normal", "student_t", "student_t_learned"} or BaseDistribution, \
default="normal"
        The base density of ``z``: :class:`StandardNormal` or :class:`StudentT`
        (``df=5`` by name, fixed or learned per coordinate, see :func:`make_base`;
        pass an instance for another ``df``). Its ``z``-dependent terms go into
        :meth:`energy`, its constant into :meth:`log_normalizer`.
    passed_columns : sequence of int or None, default=None
        Columns of the data that no layer maps: the layers act on the other
        columns, in their order, and these reach the base as they are (``z`` holds
        the mapped columns first, then these). Under the standard normal base
        each of them is then exactly standard normal and independent of the
        rest. The estimators pass the columns their preprocessing makes standard
        normal noise (columns modelled as narrow normals, ``constant_features`` and
        ``linear_relations``, and constant integer columns), so that the
        flow spends no steps or capacity on them.

    Notes
    -----
    :meth:`energy` never evaluates the log-determinant of a constant-Jacobian layer,
    so the score-matching objectives that differentiate it cost :math:`O(D^2 L)`.
    :meth:`log_normalizer` collects those determinants (:math:`O(D^3 L)`); each
    :class:`Dense` layer caches its own per parameter state when no gradient is
    asked for, so a repeated call without a change of weights costs the sum only.

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import fc
    >>> flow = fc(3, generator=torch.Generator().manual_seed(0)).double()
    >>> generator = torch.Generator().manual_seed(1)
    >>> x = torch.randn(5, 3, dtype=torch.float64, generator=generator)
    >>> bool(torch.allclose(flow.log_prob(x), -flow.energy(x) - flow.log_normalizer()))
    True
    >>> heavy = fc(3, base="student_t").double()  # polynomial tails
    >>> heavy.base
    StudentT(df=5)
    >>> log_prob = -heavy.energy(x) - heavy.log_normalizer()
    >>> bool(torch.allclose(heavy.log_prob(x), log_prob))
    True
    >>> inner = fc(2, generator=torch.Generator().manual_seed(0)).double()
    >>> passing = Flow(inner.layers, passed_columns=[1])  # column 1: N(0, 1)
    >>> normal = -0.5 * x[:, 1] ** 2 - 0.5 * math.log(2 * math.pi)
    >>> gap = passing.log_prob(x) - inner.log_prob(x[:, [0, 2]]) - normal
    >>> passing.n_features, bool(gap.abs().max() < 1e-12)
    (3, True)
    """

    def __init__(
        self,
        layers: Iterable[Bijection],
        base: str | BaseDistribution = "normal",
        *,
        passed_columns: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self._set_passed_columns(passed_columns)
        size = self._layers_n_features()
        # a base with parameters per coordinate covers the passed columns too
        self.base = make_base(
            base, None if size is None else size + len(self.passed_columns)
        )
        # Follows .to(device, dtype) like the parameters, so a flow without any
        # parameter still knows its device and dtype; not part of the state dict.
        # It starts as the first floating-point tensor of the layers (then of the
        # base): float64 layers make a float64 flow; else torch's default dtype.
        like = next(
            (
                tensor
                for tensor in (*self.parameters(), *self.buffers())
                if tensor.is_floating_point()
            ),
            None,
        )
        reference = (
            torch.zeros(())
            if like is None
            else torch.zeros((), dtype=like.dtype, device=like.device)
        )
        self.register_buffer("_reference", reference, persistent=False)

    # Flows pickled before columns could be passed restore without __init__.
    passed_columns: Sequence[int] = ()
    _passes_last = True

    def _set_passed_columns(self, passed_columns: Sequence[int] | None) -> None:
        columns = (
            []
            if passed_columns is None
            else torch.as_tensor(passed_columns).flatten().tolist()
        )
        if any(int(column) != column for column in columns):
            raise ValueError(
                f"passed_columns={columns} must hold column indices (integers)."
            )
        passed = sorted({int(column) for column in columns})
        self.passed_columns = passed
        self._passes_last = True
        if not passed:
            return
        n_features = self._required_layers_n_features() + len(passed)
        if not 0 <= passed[0] <= passed[-1] < n_features:
            raise ValueError(
                f"passed_columns={passed} must lie in 0..{n_features - 1}: the"
                f" layers map {n_features - len(passed)} columns."
            )
        kept = [column for column in range(n_features) if column not in set(passed)]
        # on the layers' device (a flow built from trained layers, as widen_base's)
        device = next(
            (t.device for t in (*self.layers.parameters(), *self.layers.buffers())),
            None,
        )
        order = torch.tensor(kept + passed, dtype=torch.long, device=device)
        self._passes_last = kept == list(range(len(kept)))
        # fixed by the construction (not part of the state dict)
        self.register_buffer("_order", order, persistent=False)
        self.register_buffer("_inverse_order", torch.argsort(order), persistent=False)

    def split_passed(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """The columns the layers map and the passed ones (``None`` if none).

        Parameters
        ----------
        x : Tensor of shape (batch, n_features)
            Data.

        Returns
        -------
        mapped : Tensor of shape (batch, n_features - len(passed_columns))
        passed : Tensor of shape (batch, len(passed_columns)) or None

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import Flow, fc
        >>> flow = Flow(fc(2).layers, passed_columns=[0])
        >>> mapped, passed = flow.split_passed(torch.tensor([[1.0, 2.0, 3.0]]))
        >>> mapped.tolist(), passed.tolist()
        ([[2.0, 3.0]], [[1.0]])
        """
        if not self.passed_columns:
            return x, None
        if x.shape[-1] != self._order.numel():
            # (index_select would quietly drop the columns beyond them)
            raise ValueError(
                f"This flow models {self._order.numel()} features (its layers map"
                f" {self._order.numel() - len(self.passed_columns)} and"
                f" passed_columns={list(self.passed_columns)} pass the others),"
                f" but x has {x.shape[-1]}."
            )
        if not self._passes_last:
            x = x.index_select(1, self._order)
        n_passed = len(self.passed_columns)
        mapped, passed = x.split([x.shape[1] - n_passed, n_passed], dim=1)
        return mapped, passed

    def join_passed(self, z: Tensor, passed: Tensor | None) -> Tensor:
        """The base-space point: the mapped columns, then the passed ones.

        Parameters
        ----------
        z : Tensor of shape (batch, n_features - len(passed_columns))
            The layers' output.
        passed : Tensor of shape (batch, len(passed_columns)) or None
            The passed columns, as :meth:`split_passed` gave them.

        Returns
        -------
        Tensor of shape (batch, n_features)

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import Flow, fc
        >>> flow = Flow(fc(2).layers, passed_columns=[0])
        >>> flow.join_passed(torch.tensor([[5.0, 6.0]]), torch.tensor([[1.0]])).tolist()
        [[5.0, 6.0, 1.0]]
        """
        return z if passed is None else torch.cat([z, passed], dim=1)

    def _layers_n_features(self) -> int | None:
        """The columns the layers map: the first layer's that fixes them."""
        for layer in self.layers:
            if hasattr(layer, "n_features"):
                return int(layer.n_features)
        return None

    def _required_layers_n_features(self) -> int:
        size = self._layers_n_features()
        if size is not None:
            return size
        raise ValueError(
            "This flow has no layer that fixes its number of features (such as a"
            " Dense layer); it cannot tell the dimension of its samples."
        )

    @property
    def n_features(self) -> int:
        """Dimension of the data the flow models.

        It is that of the first layer that fixes one (a layer with an
        ``n_features`` attribute, such as :class:`Dense`).

        Raises
        ------
        ValueError
            When no layer fixes the dimension.

        Examples
        --------
        >>> from skebflow.flows import Flow, SmoothLeakyReLU, fc
        >>> fc(3).n_features
        3
        >>> Flow([SmoothLeakyReLU()]).n_features  # elementwise layers fit any size
        Traceback (most recent call last):
        ...
        ValueError: This flow has no layer that fixes its number of features (such as \
a Dense layer); it cannot tell the dimension of its samples.
        """
        return self._required_layers_n_features() + len(self.passed_columns)

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
        >>> from skebflow.flows import Dense
        >>> Flow([Dense(2).double()]).dtype  # built from float64 layers
        torch.float64
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
        x, passed = self.split_passed(x)
        for layer in self.layers:
            x, layer_log_abs_det = layer(x)
            if layer_log_abs_det is not None:
                log_abs_det = log_abs_det + layer_log_abs_det
        return self.join_passed(x, passed), log_abs_det

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
        return self.base.energy(z) - log_abs_det

    def log_normalizer(self) -> Tensor:
        """Log-normalizer: minus the linear layers' log|det W|, plus the base constant.

        Returns
        -------
        Tensor of shape ()
            ``log Z``; zero when the flow has a normal base and no constant-Jacobian
            layer.

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
        result = self._reference.new_zeros(()) if total is None else -total
        if not isinstance(self.base, StandardNormal):
            result = result + self.base.log_normalizer(self.n_features).to(result)
        return result

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
        passed = None
        if self.passed_columns:
            n_passed = len(self.passed_columns)
            z, passed = z.split([z.shape[1] - n_passed, n_passed], dim=1)
        for layer in reversed(self.layers):
            z = layer.inverse(z)
        if passed is None:
            return z
        x = torch.cat([z, passed], dim=1)
        return x if self._passes_last else x.index_select(1, self._inverse_order)

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
        z = self.base.sample(
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


class BaseDistribution(nn.Module):
    """A factorized base density ``p_base(z)`` for :class:`Flow`.

    It splits like the flow itself: ``-log p_base(z) = energy(z) + log_normalizer(D)``,
    where :meth:`energy` holds every term that depends on ``z`` and
    :meth:`log_normalizer` a constant (which may depend on the base's own parameters,
    never on ``z``). Score matching differentiates only the energy; maximum likelihood
    and :meth:`Flow.log_prob` add the constant through :meth:`Flow.log_normalizer`.
    Subclasses implement :meth:`energy`, :meth:`curvature` (the base energy's second
    derivative along a direction, which the sliced score-matching path needs) and
    :meth:`sample`.

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import StudentT
    >>> base = StudentT(df=5.0).double()
    >>> z = torch.zeros(2, 3, dtype=torch.float64)
    >>> base.energy(z).tolist()  # the Student-t energy is zero at the mode
    [0.0, 0.0]
    """

    def __init__(self) -> None:
        super().__init__()


    name: ClassVar[str] = ""

    def energy(self, z: Tensor) -> Tensor:  # pragma: no cover
        """The ``z``-dependent part of ``-log p_base(z)``, per row.

        Parameters
        ----------
        z : Tensor of shape (batch, n_features)
            Base-space points.

        Returns
        -------
        Tensor of shape (batch,)

        Examples
        --------
        >>> import math, torch
        >>> from skebflow.flows import StandardNormal
        >>> z = torch.ones(1, 2, dtype=torch.float64)
        >>> value = StandardNormal().energy(z).item()  # |z|^2 / 2 + log(2 pi)
        >>> math.isclose(value, 1.0 + math.log(2 * math.pi))
        True
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement energy")

    def log_normalizer(self, n_features: int) -> Tensor:  # pragma: no cover
        """The constant part of ``-log p_base(z)`` in ``n_features`` dimensions.

        Parameters
        ----------
        n_features : int
            The dimension ``D``.

        Returns
        -------
        Tensor of shape ()

        Examples
        --------
        >>> from skebflow.flows import StandardNormal, StudentT
        >>> StandardNormal().log_normalizer(3).item()  # folded into the energy
        0.0
        >>> round(StudentT(df=1.0).log_normalizer(1).item(), 6)  # Cauchy: log(pi)
        1.14473
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not implement log_normalizer"
        )

    def curvature(self, z: Tensor, tangent: Tensor) -> Tensor:  # pragma: no cover
        """``t^T (d^2 energy / dz^2) t`` per row, with ``t`` the tangent.

        Parameters
        ----------
        z : Tensor of shape (batch, n_features)
            Base-space points.
        tangent : Tensor of shape (batch, n_features)
            The direction ``t`` at each point.

        Returns
        -------
        Tensor of shape (batch,)

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import StandardNormal
        >>> z, t = torch.zeros(1, 2), torch.tensor([[1.0, 2.0]])
        >>> StandardNormal().curvature(z, t).tolist()  # |t|^2: the Hessian is I
        [5.0]
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement curvature")

    def sample(
        self,
        n_samples: int,
        n_features: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:  # pragma: no cover
        """Independent draws of the base density.

        Parameters
        ----------
        n_samples : int
            Number of draws.
        n_features : int
            The dimension ``D``.
        generator : torch.Generator or None, default=None
            The only source of randomness.
        device : torch.device, str or None, default=None
            Device of the draws (that of ``generator``).
        dtype : torch.dtype or None, default=None
            Floating-point type of the draws.

        Returns
        -------
        Tensor of shape (n_samples, n_features)

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import StudentT
        >>> z = StudentT().sample(4, 2, generator=torch.Generator().manual_seed(0))
        >>> tuple(z.shape)
        (4, 2)
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement sample")


class StandardNormal(BaseDistribution):
    """The standard normal base ``N(0, I)``, the default of every flow.

    Its whole negative log-density, ``|z|^2 / 2 + (D / 2) log(2 pi)``, is the energy
    (as in Chao et al., 2023), so its log-normalizer is zero.

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import StandardNormal
    >>> base = StandardNormal()
    >>> z = base.sample(3, 2, generator=torch.Generator().manual_seed(0))
    >>> reference = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(dim=1)
    >>> bool(torch.allclose(-base.energy(z) - base.log_normalizer(2), reference))
    True
    """

    def __init__(self) -> None:
        super().__init__()


    name: ClassVar[str] = "normal"

    def energy(self, z: Tensor) -> Tensor:
        """``|z|^2 / 2 + (D / 2) log(2 pi)`` per row (see :class:`BaseDistribution`).

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
        >>> from skebflow.flows import StandardNormal
        >>> round(StandardNormal().energy(torch.zeros(1, 2)).item(), 4)  # log(2 pi)
        1.8379
        """
        return base_energy(z)

    def log_normalizer(self, n_features: int) -> Tensor:
        """Zero: the normal's constant lives in its energy.

        Parameters
        ----------
        n_features : int
            The dimension ``D`` (unused).

        Returns
        -------
        Tensor of shape ()

        Examples
        --------
        >>> from skebflow.flows import StandardNormal
        >>> StandardNormal().log_normalizer(5).item()
        0.0
        """
        return torch.zeros(())

    def curvature(self, z: Tensor, tangent: Tensor) -> Tensor:
        """``|t|^2``: the energy's Hessian is the identity.

        Parameters
        ----------
        z : Tensor of shape (batch, n_features)
            Base-space points (unused).
        tangent : Tensor of shape (batch, n_features)
            The direction ``t``.

        Returns
        -------
        Tensor of shape (batch,)

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import StandardNormal
        >>> StandardNormal().curvature(torch.zeros(1, 2), torch.ones(1, 2)).tolist()
        [2.0]
        """
        return tangent.square().sum(dim=1)

    def sample(
        self,
        n_samples: int,
        n_features: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Standard normal draws (see :meth:`BaseDistribution.sample`).

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
        >>> from skebflow.flows import StandardNormal
        >>> base = StandardNormal()
        >>> z = base.sample(2, 3, generator=torch.Generator().manual_seed(0))
        >>> again = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
        >>> bool(torch.equal(z, again))
        True
        """
        return torch.randn(
            n_samples, n_features, generator=generator, device=device, dtype=dtype
        )


class StudentT(BaseDistribution):
    """A factorized Student-t base with ``df`` degrees of freedom per coordinate.

    Its tails decay polynomially, like ``|z|^-(df + 1)``, so a flow whose layers grow
    at most linearly far from the data (bounded couplings, dense layers) still gets
    heavy tails, which a normal base cannot give it. Per row, with ``a = (df + 1) / 2``,

    .. math::

        E_{base}(z) = a \\sum_{j=1}^D \\log(1 + z_j^2 / \\nu), \\qquad
        \\log Z_{base} = D \\left[\\log\\Gamma(\\nu / 2) - \\log\\Gamma((\\nu + 1) / 2)
                         + \\tfrac12 \\log(\\nu \\pi)\\right].

    By default ``df`` is fixed (a buffer, saved in the state dict, not trained).
    Score matching never needs ``log Z_base``; it is the one term of
    :meth:`Flow.log_normalizer` that is not a log-determinant.

    With ``learn_df=True`` every coordinate has its own ``df_j = exp(log_df_j)``, a
    parameter clipped to ``[0.5, 1000]`` (1000 is a normal for every practical
    purpose), so the flow can keep heavy tails in some latent directions and make
    the others Gaussian. ``log Z_base`` then depends on a parameter: maximum
    likelihood differentiates it (digamma terms, no determinant); score matching
    still never needs it, because ``df`` also shapes the energy's ``z``-terms, so
    the score ``-dE/dz`` (the only thing score matching sees) already identifies it.

    Parameters
    ----------
    df : float, default=5.0
        Degrees of freedom, positive; the variance is finite for ``df > 2`` and the
        kurtosis for ``df > 4``. ``df -> inf`` is the normal base. With
        ``learn_df=True``, the initial value of every coordinate's ``df``.
    n_features : int or None, default=None
        The dimension ``D``; needed only with ``learn_df=True``.
    learn_df : bool, default=False
        Learn one ``df`` per coordinate (the parameter ``log_df``).

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import StudentT
    >>> base = StudentT(df=4.0).double()
    >>> z = torch.linspace(-3, 3, 7, dtype=torch.float64).reshape(-1, 1)
    >>> reference = torch.distributions.StudentT(4.0).log_prob(z).sum(dim=1)
    >>> bool(torch.allclose(-base.energy(z) - base.log_normalizer(1), reference))
    True
    >>> learned = StudentT(df=5.0, n_features=3, learn_df=True)
    >>> [name for name, _ in learned.named_parameters()]
    ['log_df']
    >>> learned.degrees_of_freedom().tolist()
    [5.0, 5.0, 5.0]
    """

    name: ClassVar[str] = "student_t"
    _LOG_DF_RANGE: ClassVar[tuple[float, float]] = (math.log(0.5), math.log(1000.0))

    def __init__(
        self,
        df: float = 5.0,
        *,
        n_features: int | None = None,
        learn_df: bool = False,
    ) -> None:
        super().__init__()
        if not (math.isfinite(df) and df > 0):
            raise ValueError(f"df={df!r} must be a positive, finite number.")
        self.learn_df = bool(learn_df)
        if self.learn_df:
            if n_features is None or n_features < 1:
                raise ValueError(
                    "A Student-t base with learn_df=True needs n_features (one df per"
                    f" coordinate), got n_features={n_features!r}."
                )
            log_df = torch.full((n_features,), math.log(df), dtype=INIT_DTYPE)
            self.log_df = nn.Parameter(in_default_dtype(log_df))
        else:
            # float64 from the start: a float32 tensor would round df (0.7 to
            # 0.699999988) before a .double() could keep it exact
            self.register_buffer("df", torch.tensor(float(df), dtype=torch.float64))

    def degrees_of_freedom(self) -> Tensor:
        """The degrees of freedom: a scalar, or one per coordinate with ``learn_df``.

        Returns
        -------
        Tensor of shape () or (n_features,)

        Examples
        --------
        >>> from skebflow.flows import StudentT
        >>> StudentT(df=3.0).degrees_of_freedom().item()
        3.0
        """
        if self.learn_df:
            # Clamped in value, not in gradient (straight through): a step that
            # takes log_df past an end must not freeze it there, with a zero
            # gradient, for the rest of the fit.
            log_df = self.log_df
            clamped = log_df + (log_df.clamp(*self._LOG_DF_RANGE) - log_df).detach()
            return clamped.exp()
        return self.df

    def extra_repr(self) -> str:
        if self.learn_df:
            return f"learn_df=True, n_features={self.log_df.numel()}"
        return f"df={float(self.df):g}"

    def energy(self, z: Tensor) -> Tensor:
        """``(df + 1) / 2 * sum_j log(1 + z_j^2 / df)`` per row.

        Parameters
        ----------
        z : Tensor of shape (batch, n_features)
            Base-space points.

        Returns
        -------
        Tensor of shape (batch,)

        Examples
        --------
        >>> import math, torch
        >>> from skebflow.flows import StudentT
        >>> value = StudentT(df=1.0).energy(torch.ones(1, 1)).item()  # log 2
        >>> math.isclose(value, math.log(2.0), rel_tol=1e-6)
        True
        """
        df = self.degrees_of_freedom().to(z.dtype)
        return (0.5 * (df + 1.0) * _log1p_square(z / torch.sqrt(df))).sum(dim=1)

    def log_normalizer(self, n_features: int) -> Tensor:
        """``D [lgamma(df / 2) - lgamma((df + 1) / 2) + log(df pi) / 2]``.

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
        >>> from skebflow.flows import StudentT
        >>> value = StudentT(df=1.0).log_normalizer(2).item()  # Cauchy: 2 log(pi)
        >>> math.isclose(value, 2 * math.log(math.pi), rel_tol=1e-6)
        True
        """
        df = self.degrees_of_freedom()
        per_coordinate = (
            torch.lgamma(0.5 * df)
            - torch.lgamma(0.5 * (df + 1.0))
            + 0.5 * torch.log(df * math.pi)
        )
        if per_coordinate.ndim == 0:
            return n_features * per_coordinate
        if per_coordinate.numel() != n_features:
            raise ValueError(
                f"This base has {per_coordinate.numel()} coordinates, not {n_features}."
            )
        return per_coordinate.sum()

    def curvature(self, z: Tensor, tangent: Tensor) -> Tensor:
        """``sum_j t_j^2 (df + 1) (df - z_j^2) / (df + z_j^2)^2`` per row.

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
        >>> from skebflow.flows import StudentT
        >>> base = StudentT(df=3.0)
        >>> base.curvature(torch.zeros(1, 2), torch.ones(1, 2)).tolist()  # 2 (4 / 3)
        [2.6666667461395264]
        """
        df = self.degrees_of_freedom().to(z.dtype)
        # (df - z^2) / (df + z^2)^2 as (1 - u^2) / (df (1 + u^2)^2) with u = z /
        # sqrt(df), and beyond |u| = 1 divided through by u^4 (z^2 overflows from
        # |z| ~ 1e154, where the value is ~ -1 / z^2, not inf / inf)
        u = z / torch.sqrt(df)
        far = u.abs() > 1.0
        inverse_square = torch.where(far, u, torch.ones_like(u)).square().reciprocal()
        near_square = torch.where(far, torch.zeros_like(u), u).square()
        ratio = torch.where(
            far,
            (inverse_square - 1.0) * inverse_square / (inverse_square + 1.0).square(),
            (1.0 - near_square) / (1.0 + near_square).square(),
        )
        second = (df + 1.0) / df * ratio
        return (second * tangent.square()).sum(dim=1)

    def sample(
        self,
        n_samples: int,
        n_features: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Student-t draws by Bailey's polar method (only ``generator``'s randomness).

        Draws ``(u, v)`` uniform on the unit disc, ``w = u^2 + v^2``, and returns
        ``u sqrt(df (w^(-2/df) - 1) / w)`` (Bailey, 1994, Math. Comp. 62:779-781),
        which is exact for any ``df``; a rejection step keeps ``pi / 4`` of the pairs.

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
        >>> from skebflow.flows import StudentT
        >>> base = StudentT(df=5.0)
        >>> z = base.sample(20000, 1, generator=torch.Generator().manual_seed(0))
        >>> # P(|T| > 2.015) = 0.1 for df = 5 (a normal would give 0.044)
        >>> round((z.abs() > 2.015).double().mean().item(), 2)
        0.1
        """
        count = n_samples * n_features
        work_dtype = torch.float64
        accepted: list[Tensor] = [torch.empty(0, 2, device=device, dtype=work_dtype)]
        n_accepted = 0
        while n_accepted < count:
            # pi / 4 of the pairs land in the disc: ask for enough in one or two rounds.
            n_pairs = int(1.3 * (count - n_accepted)) + 16
            uniform = torch.rand(
                n_pairs, 2, generator=generator, device=device, dtype=work_dtype
            )
            pairs = 2.0 * uniform - 1.0
            w = pairs.square().sum(dim=1)
            keep = (w <= 1.0) & (w > 0.0)
            accepted.append(pairs[keep])
            n_accepted += int(keep.sum())
        pairs = torch.cat(accepted)[:count].reshape(n_samples, n_features, 2)
        u, w = pairs[..., 0], pairs.square().sum(dim=-1)
        df = self.degrees_of_freedom().detach().to(device=u.device, dtype=work_dtype)
        draws = u * torch.sqrt(df * torch.expm1(-(2.0 / df) * torch.log(w)) / w)
        dtype = dtype if dtype is not None else torch.get_default_dtype()
        return draws.to(dtype)


BASE_DISTRIBUTIONS: tuple[str, ...] = ("normal", "student_t", "student_t_learned")
"""The names of the base distributions (the ``base`` argument of :class:`Flow`)."""


def _log1p_square(u: Tensor) -> Tensor:
    """``log(1 + u^2)``, written ``2 log|u| + log(1 + u^-2)`` beyond ``|u| = 1``:
    ``u^2`` overflows from ``|u|`` ~ 1e154 (float64) or 1e19 (float32), where the
    value is still about ``2 log|u|`` (both branches' inputs kept finite, so
    their derivatives are too).

    Examples
    --------
    >>> import math, torch
    >>> from skebflow.flows._base import _log1p_square
    >>> u = torch.tensor([0.0, 3.0, 1e200], dtype=torch.float64)
    >>> values = _log1p_square(u).tolist()
    >>> values[:2] == [0.0, math.log(10.0)], math.isclose(values[2], 400 * math.log(10))
    (True, True)
    """
    far = u.abs() > 1.0
    magnitude = torch.where(far, u.abs(), torch.ones_like(u))
    near = torch.where(far, torch.zeros_like(u), u)
    return torch.where(
        far,
        # 1 / u, then squared: u^2 overflows (and its derivative, 0 * inf, is NaN)
        2.0 * torch.log(magnitude) + torch.log1p(magnitude.reciprocal().square()),
        torch.log1p(near.square()),
    )


def make_base(
    base: str | BaseDistribution, n_features: int | None = None
) -> BaseDistribution:
    """The base distribution ``base`` names (an instance passes through).

    Parameters
    ----------
    base : {"normal", "student_t", "student_t_learned"} or BaseDistribution
        ``"normal"``: :class:`StandardNormal`; ``"student_t"``: :class:`StudentT` with
        a fixed ``df=5``; ``"student_t_learned"``: :class:`StudentT` starting at
        ``df=5`` with one learned ``df`` per coordinate. An instance is returned as
        it is.
    n_features : int or None, default=None
        The dimension, which ``"student_t_learned"`` needs.

    Returns
    -------
    BaseDistribution

    Examples
    --------
    >>> from skebflow.flows import make_base
    >>> make_base("student_t")
    StudentT(df=5)
    >>> make_base("student_t_learned", n_features=4)
    StudentT(learn_df=True, n_features=4)
    >>> make_base("laplace")
    Traceback (most recent call last):
    ...
    ValueError: base='laplace' is not supported; use 'normal', 'student_t' or \
'student_t_learned'.
    """
    if isinstance(base, BaseDistribution):
        return base
    if base == "normal":
        return StandardNormal()
    if base == "student_t":
        return StudentT()
    if base == "student_t_learned":
        return StudentT(n_features=n_features, learn_df=True)
    names = ", ".join(repr(name) for name in BASE_DISTRIBUTIONS[:-1])
    raise ValueError(
        f"base={base!r} is not supported; use {names} or {BASE_DISTRIBUTIONS[-1]!r}."
    )
