"""Convolution and squeeze layers for images stored as flattened rows.

Both are linear, so both belong to the constant-Jacobian set :math:`S_l`: the energy
never sees their log-determinants, and the score-matching objectives only run the
convolution forward (on points and on tangents). A :class:`Conv2d` layer builds its
dense ``D x D`` Jacobian, ``D = C H W``, only when the log-normalizer or the inverse
is asked for; that costs :math:`O(D^3)` once per parameter state, and its LU
factorization is cached like the dense layer's.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._base import INIT_DTYPE, Bijection, Jet, in_default_dtype
from ._linear import _ParameterCache

__all__ = ["Conv2d", "Squeeze"]


def _check_positive(**values: Any) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer.")


# One entry per kernel offset (a, b) that touches the image: the offset ``delta``
# of the diagonal of each (HW x HW) block of the Jacobian that the tap fills, and
# which positions of that diagonal lie inside the image (the zero padding).
_Plan = list[tuple[int, int, int, Tensor]]


def _toeplitz_plan(
    height: int, width: int, kernel_size: int, device: torch.device
) -> _Plan:
    padding = kernel_size // 2
    n_pixels = height * width
    rows = torch.arange(height, device=device).repeat_interleave(width)
    cols = torch.arange(width, device=device).repeat(height)
    plan: _Plan = []
    for a in range(kernel_size):
        shifted_rows = rows + (a - padding)
        inside_rows = (shifted_rows >= 0) & (shifted_rows < height)
        for b in range(kernel_size):
            shifted_cols = cols + (b - padding)
            inside = inside_rows & (shifted_cols >= 0) & (shifted_cols < width)
            delta = (a - padding) * width + (b - padding)
            if abs(delta) >= n_pixels or not bool(inside.any()):
                continue
            # Entry i of the diagonal at offset delta is (row, row + delta) with
            # row = i for delta >= 0 and row = i - delta below the main diagonal.
            mask = inside[max(0, -delta) : n_pixels - max(0, delta)]
            plan.append((a, b, delta, mask))
    return plan


def _check_row_width(layer: nn.Module, x: Tensor) -> None:
    """Refuse rows that are not flattened ``(C, H, W)`` images of ``layer``'s."""
    if x.shape[-1] != layer.n_features:
        raise ValueError(
            f"{type(layer).__name__} expects rows of {layer.n_features} ="
            f" {layer.channels} x {layer.height} x {layer.width} features, got"
            f" {x.shape[-1]}."
        )


class _KernelToJacobian(torch.autograd.Function):
    """The dense Jacobian of a zero-padded, stride-1 convolution, from its kernel.

    Viewed as ``J[c_out, s, c_in, s']`` (``s`` and ``s'`` flattened pixel indices),
    tap ``(a, b)`` of the kernel fills one diagonal of every ``(HW x HW)`` block; the
    backward pass sums the incoming gradient along the same diagonals, so both passes
    cost O(C^2 k^2 HW) beyond zeroing the ``D x D`` output.
    """

    @staticmethod
    def forward(weight: Tensor, plan: _Plan, n_pixels: int) -> Tensor:  # type: ignore[override]
        channels = weight.shape[0]
        jacobian = weight.new_zeros(channels, n_pixels, channels, n_pixels)
        for a, b, delta, mask in plan:
            diagonal = jacobian.diagonal(offset=delta, dim1=1, dim2=3)
            diagonal.add_(weight[:, :, a, b, None] * mask)
        return jacobian.reshape(channels * n_pixels, channels * n_pixels)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        weight, plan, _ = inputs
        ctx.plan = plan
        ctx.kernel_shape = weight.shape

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad_output: Tensor
    ) -> tuple[Tensor, None, None]:
        channels = ctx.kernel_shape[0]
        n_pixels = grad_output.shape[0] // channels
        blocks = grad_output.reshape(channels, n_pixels, channels, n_pixels)
        grad_weight = grad_output.new_zeros(ctx.kernel_shape)
        for a, b, delta, mask in ctx.plan:
            diagonal = blocks.diagonal(offset=delta, dim1=1, dim2=3)
            grad_weight[:, :, a, b] = diagonal @ mask.to(diagonal.dtype)
        return grad_weight, None, None


# On CPU, oneDNN's input-gradient kernel for convolutions with this many channels or
# fewer ran 5-8x slower than its forward kernel (7 x 7 kernels, batch 100, one
# thread); such layers take the input gradient as a forward convolution instead.
_FLIPPED_BACKWARD_MAX_CHANNELS = 4


class _SameConvolution(torch.autograd.Function):
    """``F.conv2d(x, weight, padding=padding)`` (stride 1, odd "same" kernel, no bias)
    whose input gradient is the forward convolution with the flipped, transposed
    kernel, itself a ``_SameConvolution``, so that double backward (score matching)
    stays on the fast forward kernel too."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, weight: Tensor, padding: int) -> Tensor:  # type: ignore[override]
        return F.conv2d(x, weight, padding=padding)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        x, weight, padding = inputs
        ctx.save_for_backward(x, weight)
        ctx.save_for_forward(x, weight)
        ctx.padding = padding

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad: Tensor
    ) -> tuple[Tensor | None, Tensor | None, None]:
        x, weight = ctx.saved_tensors
        padding = ctx.padding
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            adjoint = weight.flip(2, 3).transpose(0, 1)
            grad_x = _SameConvolution.apply(grad, adjoint, padding)
        if ctx.needs_input_grad[1]:
            grad_weight = torch.ops.aten.convolution_backward(
                grad,
                x,
                weight,
                None,
                [1, 1],
                [padding, padding],
                [1, 1],
                False,
                [0, 0],
                1,
                [False, True, False],
            )[1]
        return grad_x, grad_weight, None

    @staticmethod
    def jvp(  # type: ignore[override]
        ctx: Any, x_tangent: Tensor | None, weight_tangent: Tensor | None, _: None
    ) -> Tensor:
        x, weight = ctx.saved_tensors
        out = None
        if x_tangent is not None:
            out = _SameConvolution.apply(x_tangent, weight, ctx.padding)
        if weight_tangent is not None:
            term = _SameConvolution.apply(x, weight_tangent, ctx.padding)
            out = term if out is None else out + term
        if out is None:  # no tangent on either input
            out = torch.zeros_like(F.conv2d(x, weight, padding=ctx.padding))
        return out


class Conv2d(Bijection):
    """A ``C -> C`` convolution with a bias, stride 1 and zero "same" padding.

    Rows are flattened images: ``x`` of shape ``(batch, C * H * W)`` is read as
    ``(batch, C, H, W)`` in C order (channel, then row, then column).

    Parameters
    ----------
    channels : int
        Number of channels ``C`` (in and out).
    height, width : int
        Image size ``H x W``.
    kernel_size : int, default=7
        Odd side ``k`` of the square kernel; the padding is ``k // 2``. The paper's
        CNN uses 7.
    init_noise : float, default=0.0
        Standard deviation of Gaussian noise, drawn from ``generator``, added to the
        initial kernel. The paper starts every convolution at exactly ``-I`` (a Dirac
        kernel times -1), whose Jacobian is symmetric and trivially invertible; a
        small ``init_noise`` (e.g. 0.01) breaks that symmetry, which tests use.
    generator : torch.Generator or None, default=None
        Randomness of the bias and of ``init_noise``.

    Attributes
    ----------
    weight : Parameter of shape (C, C, k, k)
        The kernel (cross-correlation, as :func:`torch.nn.functional.conv2d`).
    bias : Parameter of shape (C,)
        One shift per output channel; drawn from ``N(0, s^2)`` with ``s`` the
        standard deviation of a Xavier-normal kernel of gain 0.01,
        ``0.01 sqrt(1 / (C k^2))``, as in the paper.
    n_features : int
        ``D = C H W``.

    Notes
    -----
    The Jacobian is the same ``D x D`` matrix everywhere (``constant_jacobian =
    True``): :meth:`forward` returns ``None`` as its log-determinant and :meth:`jet`
    convolves the tangent and creates no curvature. :meth:`log_abs_det` builds the
    dense matrix with :meth:`dense_jacobian` and returns ``slogdet`` of it. Without
    gradients it comes from an LU factorization cached per parameter state (keyed on
    the kernel's version *and* its values, as :class:`~skebflow.flows.Dense` does),
    which :meth:`inverse` reuses to solve for ``x``; with gradients enabled it is
    recomputed so that maximum likelihood can differentiate it with respect to the
    kernel (:math:`O(D^3)`; about 1 s per layer at ``D = 3072`` on one CPU core).

    On CPU, a layer with at most 4 channels computes its input gradient as a forward
    convolution with the flipped, transposed kernel (oneDNN's own input-gradient
    kernel is several times slower there); the values are the same.

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import Conv2d
    >>> layer = Conv2d(2, 4, 4, kernel_size=3).double()  # a Dirac kernel times -1
    >>> generator = torch.Generator().manual_seed(0)
    >>> x = torch.randn(5, 32, dtype=torch.float64, generator=generator)
    >>> y, log_abs_det = layer(x)
    >>> bool(torch.allclose(y, -x + layer.bias.repeat_interleave(16))), log_abs_det
    (True, None)
    >>> float(layer.log_abs_det().detach())  # log|det(-I)|
    0.0
    """

    constant_jacobian = True

    def __init__(
        self,
        channels: int,
        height: int,
        width: int,
        kernel_size: int = 7,
        *,
        init_noise: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        _check_positive(
            channels=channels, height=height, width=width, kernel_size=kernel_size
        )
        if kernel_size % 2 == 0:
            raise ValueError(
                f"kernel_size={kernel_size} must be odd: a 'same'-padded convolution"
                " needs a centre tap."
            )
        if not init_noise >= 0.0:
            raise ValueError(f"init_noise={init_noise!r} must be non-negative.")
        self.channels = channels
        self.height = height
        self.width = width
        self.kernel_size = kernel_size
        self.padding = kernel_size // 2
        self.n_features = channels * height * width
        weight = torch.zeros(
            channels, channels, kernel_size, kernel_size, dtype=INIT_DTYPE
        )
        centre = self.padding
        weight[range(channels), range(channels), centre, centre] = -1.0
        if init_noise > 0.0:
            weight += init_noise * torch.randn(
                weight.shape, generator=generator, dtype=INIT_DTYPE
            )
        bias_std = 0.01 * (1.0 / (channels * kernel_size**2)) ** 0.5
        bias = bias_std * torch.randn(channels, generator=generator, dtype=INIT_DTYPE)
        self.weight = nn.Parameter(in_default_dtype(weight))
        self.bias = nn.Parameter(in_default_dtype(bias))
        self._cache = _ParameterCache()
        self._plans: dict[torch.device, _Plan] = {}

    def _convolve(self, x: Tensor, bias: Tensor | None) -> Tensor:
        _check_row_width(self, x)
        batch = x.shape[0]
        images = x.reshape(batch, self.channels, self.height, self.width)
        if (
            self.channels <= _FLIPPED_BACKWARD_MAX_CHANNELS
            and images.device.type == "cpu"
        ):
            out = _SameConvolution.apply(images, self.weight, self.padding)
            if bias is not None:
                out = out + bias.view(1, -1, 1, 1)
        else:
            out = F.conv2d(images, self.weight, bias, padding=self.padding)
        return out.reshape(batch, self.n_features)

    def forward(self, x: Tensor) -> tuple[Tensor, None]:
        """Convolve each row (see :meth:`Bijection.forward`).

        Parameters
        ----------
        x : Tensor of shape (batch, C * H * W)
            Flattened images.

        Returns
        -------
        y : Tensor of shape (batch, C * H * W)
        log_abs_det : None
            Constant Jacobian: see :meth:`log_abs_det`.

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import Conv2d
        >>> layer = Conv2d(1, 3, 3, kernel_size=3)
        >>> y, _ = layer(torch.zeros(2, 9))
        >>> bool(torch.allclose(y, layer.bias.detach().expand(2, 9)))  # the bias
        True
        """
        return self._convolve(x, self.bias), None

    def jet(self, x: Tensor, tangent: Tensor) -> Jet:
        """The point and the tangent through the convolution; no curvature.

        Parameters
        ----------
        x : Tensor of shape (batch, C * H * W)
            Points.
        tangent : Tensor of shape (batch, C * H * W)
            Directions.

        Returns
        -------
        Jet
            ``(conv(x) + bias, conv(tangent), None, None, None)``.

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import Conv2d
        >>> layer = Conv2d(1, 2, 2, kernel_size=3)
        >>> jet = layer.jet(torch.zeros(1, 4), torch.ones(1, 4))
        >>> jet.tangent.tolist(), jet.curvature
        ([[-1.0, -1.0, -1.0, -1.0]], None)
        """
        return Jet(
            self._convolve(x, self.bias),
            self._convolve(tangent, None),
            None,
            None,
            None,
        )

    def _plan(self, device: torch.device) -> _Plan:
        plan = self._plans.get(device)
        if plan is None:
            plan = _toeplitz_plan(self.height, self.width, self.kernel_size, device)
            self._plans[device] = plan
        return plan

    def dense_jacobian(self) -> Tensor:
        """The ``D x D`` Jacobian of the convolution, built from the kernel.

        Returns
        -------
        Tensor of shape (D, D)
            Differentiable with respect to the kernel ``weight``; ``D = C H W`` in the
            layout of the flattened rows. :math:`O(D^2)` memory.

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import Conv2d
        >>> layer = Conv2d(1, 3, 3, kernel_size=3)
        >>> jacobian = layer.dense_jacobian()
        >>> bool(torch.equal(jacobian, -torch.eye(9)))  # the Dirac kernel times -1
        True
        >>> x = torch.randn(4, 9, generator=torch.Generator().manual_seed(0))
        >>> with torch.no_grad():
        ...     _ = layer.weight.add_(0.1)
        >>> jacobian = layer.dense_jacobian()
        >>> y = layer.jet(x, x).tangent  # the convolution without its bias
        >>> bool(torch.allclose(y, x @ jacobian.T, atol=1e-6))
        True
        """
        plan = self._plan(self.weight.device)
        return _KernelToJacobian.apply(self.weight, plan, self.height * self.width)

    def _lu_factor(self) -> tuple[Tensor, Tensor]:
        lu = self._cache.get("lu", self.weight)
        pivots = self._cache.get("pivots", self.weight)
        if lu is None or pivots is None:
            with torch.no_grad():
                lu, pivots = torch.linalg.lu_factor(self.dense_jacobian())
            self._cache.put("lu", self.weight, lu)
            self._cache.put("pivots", self.weight, pivots)
        return lu, pivots

    def log_abs_det(self) -> Tensor:
        """``log|det J|`` of the convolution's dense Jacobian.

        Returns
        -------
        Tensor of shape ()
            With gradients enabled, differentiable with respect to the kernel;
            otherwise read from the cached LU factorization.

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import Conv2d
        >>> layer = Conv2d(2, 3, 3, kernel_size=3).double()
        >>> with torch.no_grad():
        ...     _ = layer.weight.mul_(2.0)  # the kernel of -2 I
        ...     cached = layer.log_abs_det()
        >>> round(cached.item(), 4)  # 18 log 2
        12.4766
        >>> layer.log_abs_det().backward()  # maximum likelihood's gradient
        >>> layer.weight.grad[0, 0, 1, 1].item()  # d/dw log|w|^18 at w = -2, per tap
        -4.5
        """
        if torch.is_grad_enabled() and self.weight.requires_grad:
            return torch.linalg.slogdet(self.dense_jacobian())[1]
        cached = self._cache.get("log_abs_det", self.weight)
        if cached is None:
            lu, _ = self._lu_factor()
            value = lu.diagonal().abs().log().sum()
            cached = self._cache.put("log_abs_det", self.weight, value)
        return cached

    def inverse(self, y: Tensor) -> Tensor:
        """Solve ``conv(x) + bias = y`` with the cached LU factorization.

        Parameters
        ----------
        y : Tensor of shape (batch, C * H * W)
            Outputs of :meth:`forward`.

        Returns
        -------
        x : Tensor of shape (batch, C * H * W)
            Without gradient to the parameters.

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import Conv2d
        >>> generator = torch.Generator().manual_seed(0)
        >>> layer = Conv2d(2, 4, 4, kernel_size=3, init_noise=0.1,
        ...                generator=generator).double()
        >>> x = torch.randn(3, 32, dtype=torch.float64, generator=generator)
        >>> bool(torch.allclose(layer.inverse(layer(x)[0]), x))
        True
        """
        lu, pivots = self._lu_factor()
        shift = self.bias.detach().repeat_interleave(self.height * self.width)
        centred = (y - shift).T
        return torch.linalg.lu_solve(lu, pivots, centred).T

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, height={self.height}, width={self.width},"
            f" kernel_size={self.kernel_size}"
        )


class Squeeze(Bijection):
    """2 x 2 space-to-depth: ``(C, H, W)`` images to ``(4 C, H / 2, W / 2)``.

    Pixel ``(c, 2 i + u, 2 j + v)`` goes to channel ``4 c + 2 u + v`` at ``(i, j)``,
    on flattened rows. A permutation of the coordinates: ``log|det| = 0`` and the
    inverse is exact.

    Parameters
    ----------
    channels : int
        Number of input channels ``C``.
    height, width : int
        Input image size; both must be even.

    Attributes
    ----------
    n_features : int
        ``D = C H W``, unchanged.
    output_shape : tuple of int
        ``(4 C, H // 2, W // 2)``.

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import Squeeze
    >>> layer = Squeeze(1, 2, 4)
    >>> x = torch.arange(8.0).reshape(1, 8)  # rows [0 1 2 3] and [4 5 6 7]
    >>> y, _ = layer(x)
    >>> y.reshape(4, 2).tolist()  # channel 2u + v holds pixel (u, 2j + v)
    [[0.0, 2.0], [1.0, 3.0], [4.0, 6.0], [5.0, 7.0]]
    >>> bool(torch.equal(layer.inverse(y), x)), float(layer.log_abs_det())
    (True, 0.0)
    """

    constant_jacobian = True

    def __init__(self, channels: int, height: int, width: int) -> None:
        super().__init__()
        _check_positive(channels=channels, height=height, width=width)
        if height % 2 or width % 2:
            raise ValueError(
                f"Squeeze needs an even height and width, got {height} x {width}."
            )
        self.channels = channels
        self.height = height
        self.width = width
        self.n_features = channels * height * width
        self.output_shape = (4 * channels, height // 2, width // 2)
        # Gives log_abs_det() the flow's dtype and device; not in the state dict.
        self.register_buffer("_reference", torch.zeros(()), persistent=False)

    def _squeeze(self, x: Tensor) -> Tensor:
        _check_row_width(self, x)
        batch = x.shape[0]
        c, h, w = self.channels, self.height // 2, self.width // 2
        blocks = x.reshape(batch, c, h, 2, w, 2).permute(0, 1, 3, 5, 2, 4)
        return blocks.reshape(batch, self.n_features)

    def _unsqueeze(self, y: Tensor) -> Tensor:
        _check_row_width(self, y)
        batch = y.shape[0]
        c, h, w = self.channels, self.height // 2, self.width // 2
        pixels = y.reshape(batch, c, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
        return pixels.reshape(batch, self.n_features)

    def forward(self, x: Tensor) -> tuple[Tensor, None]:
        """Rearrange each row (see :meth:`Bijection.forward`).

        Parameters
        ----------
        x : Tensor of shape (batch, C * H * W)
            Flattened images.

        Returns
        -------
        y : Tensor of shape (batch, C * H * W)
            Flattened ``(4 C, H / 2, W / 2)`` images.
        log_abs_det : None
            A permutation; :meth:`log_abs_det` is zero.

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import Squeeze
        >>> Squeeze(1, 2, 2)(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))[0].tolist()
        [[1.0, 2.0, 3.0, 4.0]]
        """
        return self._squeeze(x), None

    def jet(self, x: Tensor, tangent: Tensor) -> Jet:
        """Rearrange the point and the tangent alike; no curvature.

        Parameters
        ----------
        x : Tensor of shape (batch, C * H * W)
            Points.
        tangent : Tensor of shape (batch, C * H * W)
            Directions.

        Returns
        -------
        Jet

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import Squeeze
        >>> jet = Squeeze(1, 2, 2).jet(torch.zeros(1, 4), torch.ones(1, 4))
        >>> jet.tangent.tolist(), jet.curvature, jet.log_abs_det
        ([[1.0, 1.0, 1.0, 1.0]], None, None)
        """
        return Jet(self._squeeze(x), self._squeeze(tangent), None, None, None)

    def inverse(self, y: Tensor) -> Tensor:
        """Depth-to-space, the exact inverse.

        Parameters
        ----------
        y : Tensor of shape (batch, C * H * W)
            Outputs of :meth:`forward`.

        Returns
        -------
        x : Tensor of shape (batch, C * H * W)

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import Squeeze
        >>> layer = Squeeze(3, 4, 6)
        >>> x = torch.randn(2, 72, generator=torch.Generator().manual_seed(0))
        >>> bool(torch.equal(layer.inverse(layer(x)[0]), x))
        True
        """
        return self._unsqueeze(y)

    def log_abs_det(self) -> Tensor:
        """Zero: a permutation preserves volume.

        Returns
        -------
        Tensor of shape ()
            In the layer's dtype and on its device.

        Examples
        --------
        >>> from skebflow.flows import Squeeze
        >>> Squeeze(1, 2, 2).double().log_abs_det()
        tensor(0., dtype=torch.float64)
        """
        return self._reference.new_zeros(())

    def extra_repr(self) -> str:
        return f"channels={self.channels}, height={self.height}, width={self.width}"
