"""The paper's convolutional flow for images, sized from an image shape."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

from ._base import BaseDistribution, Bijection, Flow
from ._conv import Conv2d, Squeeze
from ._nonlinear import SmoothLeakyReLU

__all__ = ["check_squeezable", "cnn", "image_shape_of"]


def image_shape_of(
    image_shape: Sequence[int], n_features: int | None = None
) -> tuple[int, int, int]:
    """Check an image shape and return it as ``(channels, height, width)``.

    Parameters
    ----------
    image_shape : sequence of int
        ``(C, H, W)``, or ``(H, W)`` for one channel; positive integers.
    n_features : int or None, default=None
        When given, the number of columns of the data, which must equal ``C H W``.

    Returns
    -------
    tuple of int
        ``(C, H, W)``.

    Examples
    --------
    >>> from skebflow.flows._conv_architecture import image_shape_of
    >>> image_shape_of((28, 28), n_features=784)
    (1, 28, 28)
    >>> image_shape_of((3, 32, 32), n_features=784)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: image_shape=(3, 32, 32) holds 3072 pixel values, but the data ...
    """
    try:
        shape = tuple(image_shape)
    except TypeError:
        shape = ()
    if len(shape) == 2:
        shape = (1, *shape)
    valid = len(shape) == 3 and all(
        isinstance(size, numbers.Integral) and not isinstance(size, bool) and size >= 1
        for size in shape
    )
    if not valid:
        raise ValueError(
            f"image_shape={image_shape!r} must be (channels, height, width) or"
            " (height, width), with positive integers."
        )
    channels, height, width = (int(size) for size in shape)
    if n_features is not None and channels * height * width != n_features:
        raise ValueError(
            f"image_shape={(channels, height, width)!r} holds"
            f" {channels * height * width} pixel values, but the data have"
            f" {n_features} features."
        )
    return channels, height, width


def check_squeezable(height: int, width: int, n_blocks: int) -> None:
    """Raise unless ``n_blocks - 1`` 2 x 2 squeezes fit an image of this size.

    Examples
    --------
    >>> from skebflow.flows._conv_architecture import check_squeezable
    >>> check_squeezable(28, 28, 3)
    >>> check_squeezable(30, 30, 3)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: cnn with n_blocks=3 ... must be divisible by 4; got 30 x 30.
    """
    factor = 2 ** (n_blocks - 1)
    if height % factor or width % factor:
        raise ValueError(
            f"cnn with n_blocks={n_blocks} squeezes the image {n_blocks - 1} times, so"
            f" its height and width must be divisible by {factor}; got {height} x"
            f" {width}."
        )


def cnn(
    image_shape: Sequence[int],
    *,
    n_blocks: int = 3,
    convs_per_block: int = 2,
    kernel_size: int = 7,
    alpha: float = 0.3,
    residual: bool = True,
    init_noise: float = 0.0,
    base: str | BaseDistribution = "normal",
    n_features: int | None = None,
    generator: torch.Generator | None = None,
) -> Flow:
    """The paper's convolutional flow: blocks of convolutions with squeezes between.

    Each of ``n_blocks`` blocks holds ``convs_per_block`` :class:`~skebflow.flows.
    Conv2d` layers (``C -> C``, stride 1, "same" padding, with bias), each followed by
    a :class:`~skebflow.flows.SmoothLeakyReLU` except the very last convolution of the
    flow; a :class:`~skebflow.flows.Squeeze` (2 x 2 space-to-depth) sits between
    blocks. With the defaults this is the CNN of Chao et al. (2023): six 7 x 7
    convolutions, residual smooth leaky ReLUs with ``alpha = 0.3``, and the shapes
    ``1 x 28 x 28 -> 4 x 14 x 14 -> 16 x 7 x 7`` on MNIST or ``3 x 32 x 32 -> 12 x 16 x
    16 -> 48 x 8 x 8`` on CIFAR-10.

    Parameters
    ----------
    image_shape : sequence of int
        ``(C, H, W)``, or ``(H, W)`` for one channel. Rows of the data are images
        flattened in C order. ``H`` and ``W`` must be divisible by
        ``2 ** (n_blocks - 1)``.
    n_blocks : int, default=3
        Number of blocks (``n_blocks - 1`` squeezes).
    convs_per_block : int, default=2
        Convolutions per block.
    kernel_size : int, default=7
        Odd kernel side of every convolution.
    alpha : float, default=0.3
        Slope of the smooth leaky ReLUs.
    residual : bool, default=True
        Use the residual smooth leaky ReLU (slopes in ``(1 + alpha, 2)``), as the
        paper's CNN does.
    init_noise : float, default=0.0
        Gaussian noise added to each kernel's initial ``-I`` (Dirac) value; see
        :class:`~skebflow.flows.Conv2d`. The paper uses none.
    base : {"normal", "student_t"} or BaseDistribution, default="normal"
        The base density (see :class:`~skebflow.flows.Flow`).
    n_features : int or None, default=None
        When given, the number of columns of the data: a check that it equals
        ``C H W``.
    generator : torch.Generator or None, default=None
        Randomness of the biases and of ``init_noise``.

    Returns
    -------
    Flow
        The convolutions and squeezes form the log-normalizer (its ``log|det|``
        costs :math:`O(D^3)` per convolution, once per parameter state); the smooth
        leaky ReLUs form the energy.

    Raises
    ------
    ValueError
        If the shape is not three (or two) positive integers, does not hold
        ``n_features`` values, or cannot be squeezed ``n_blocks - 1`` times.

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import cnn
    >>> flow = cnn((1, 28, 28))  # the paper's MNIST model
    >>> sum(p.numel() for p in flow.parameters()), flow.n_features
    (26796, 784)
    >>> [type(layer).__name__ for layer in flow.layers][:5]
    ['Conv2d', 'SmoothLeakyReLU', 'Conv2d', 'SmoothLeakyReLU', 'Squeeze']
    >>> generator = torch.Generator().manual_seed(0)
    >>> small = cnn((2, 4, 4), kernel_size=3, generator=generator)
    >>> x = torch.randn(3, 32, generator=torch.Generator().manual_seed(1))
    >>> tuple(small.log_prob(x).shape)
    (3,)
    >>> cnn((3, 30, 30))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: cnn with n_blocks=3 ... must be divisible by 4; got 30 x 30.
    """
    channels, height, width = image_shape_of(image_shape, n_features)
    for name, value in (("n_blocks", n_blocks), ("convs_per_block", convs_per_block)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer.")
    check_squeezable(height, width, n_blocks)
    layers: list[Bijection] = []
    for block in range(n_blocks):
        if block > 0:
            layers.append(Squeeze(channels, height, width))
            channels, height, width = 4 * channels, height // 2, width // 2
        for index in range(convs_per_block):
            layers.append(
                Conv2d(
                    channels,
                    height,
                    width,
                    kernel_size,
                    init_noise=init_noise,
                    generator=generator,
                )
            )
            last = block == n_blocks - 1 and index == convs_per_block - 1
            if not last:
                layers.append(SmoothLeakyReLU(alpha, residual=residual))
    assert math.prod((channels, height, width)) == layers[0].n_features
    return Flow(layers, base=base)
