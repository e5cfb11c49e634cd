r"""Training objectives for energy-based flows.

Every objective is a pure function ``(flow, x, *, generator, <settings>) -> Tensor``
returning one loss per row, divided by the dimension ``D`` so that learning rates
transfer across dimensions. Randomness comes only from the ``generator`` argument.
:data:`OBJECTIVES` maps each name to its function. EBFlow [1]_ trains with sliced [2]_,
denoising [3]_ and finite-difference [4]_ score matching.

=========  ==========================================================  ============
name       per-row loss (times ``D``)                                  cost / step
=========  ==========================================================  ============
``ml``     :math:`E(x) + \log Z`                                       O(D^3 L)
``sml``    :math:`E(x) - E(\hat x)`, :math:`\hat x` exact samples      O(D^3 L)
``ssm``    :math:`\tfrac12\|\nabla E\|^2 - v^T \nabla^2 E\, v`         O(D^2 L)
``dsm``    :math:`\tfrac12\|\nabla E(\tilde x) - n/\sigma\|^2`         O(D^2 L)
``fdssm``  finite differences of :math:`E` on a sphere of radius xi    O(D^2 L)
=========  ==========================================================  ============

References
----------
.. [1] Chao, C.-H., Sun, W.-F., Hsu, Y.-C., Kira, Z. and Lee, C.-Y. (2023). Training
   Energy-Based Normalizing Flow with Score-Matching Objectives. NeurIPS.
   arXiv:2305.15267.
.. [2] Song, Y., Garg, S., Shi, J. and Ermon, S. (2019). Sliced Score Matching: A
   Scalable Approach to Density and Score Estimation. UAI.
.. [3] Vincent, P. (2011). A Connection Between Score Matching and Denoising
   Autoencoders. Neural Computation.
.. [4] Pang, T., Xu, K., Li, C., Song, Y., Ermon, S. and Zhu, J. (2020). Efficient
   Learning of Generative Models via Finite-Difference Score Matching. NeurIPS.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from numbers import Integral, Real
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

from .flows import Flow

__all__ = [
    "OBJECTIVES",
    "Objective",
    "dsm",
    "energy_gradient_and_curvature",
    "exact_sm",
    "fdssm",
    "ml",
    "bind_objective",
    "objective_settings",
    "sml",
    "ssm",
]


class Objective(Protocol):
    """Signature shared by every objective.

    ``objective(flow, x, *, generator=None, **settings) -> Tensor of shape (batch,)``:
    the loss of each row of ``x`` (already preprocessed) under ``flow``, divided by
    ``D``; ``generator`` is the only source of randomness. Every value of
    :data:`OBJECTIVES` follows it, and :func:`bind_objective` fixes the settings.

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import fc
    >>> from skebflow.objectives import OBJECTIVES
    >>> flow = fc(2, generator=torch.Generator().manual_seed(0))
    >>> x = torch.randn(8, 2, generator=torch.Generator().manual_seed(1))
    >>> losses = {
    ...     name: objective(flow, x, generator=torch.Generator().manual_seed(2))
    ...     for name, objective in sorted(OBJECTIVES.items())
    ... }
    >>> {name: tuple(loss.shape) for name, loss in losses.items()}
    {'dsm': (8,), 'fdssm': (8,), 'ml': (8,), 'sml': (8,), 'ssm': (8,)}
    >>> all(bool(torch.isfinite(loss).all()) for loss in losses.values())
    True
    """

    def __call__(
        self, flow: Flow, x: Tensor, *, generator: torch.Generator | None = ...
    ) -> Tensor: ...


def ml(flow: Flow, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """Maximum likelihood: ``-log p(x) / D`` per row.

    Differentiates ``log|det W|`` of every linear layer: :math:`O(D^3)` per layer.

    Parameters
    ----------
    flow : Flow
        The model.
    x : Tensor of shape (batch, n_features)
        Data (already preprocessed).
    generator : torch.Generator or None, default=None
        Unused; accepted so that every objective has the same signature.

    Returns
    -------
    Tensor of shape (batch,)

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import fc
    >>> from skebflow.objectives import ml
    >>> flow = fc(2)
    >>> tuple(ml(flow, torch.zeros(5, 2)).shape)
    (5,)
    """
    return -flow.log_prob(x) / x.shape[1]


def sml(flow: Flow, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """Sampling-based maximum likelihood: ``(E(x) - E(x_hat)) / D`` per row.

    ``x_hat`` are exact samples of the flow drawn without gradient, so the gradient
    equals the maximum-likelihood gradient in expectation, with no determinant in the
    graph (sampling still inverts every linear layer).

    Parameters
    ----------
    flow : Flow
        The model.
    x : Tensor of shape (batch, n_features)
        Data.
    generator : torch.Generator or None, default=None
        Randomness of the samples.

    Returns
    -------
    Tensor of shape (batch,)

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import fc
    >>> from skebflow.objectives import sml
    >>> loss = sml(fc(2), torch.zeros(5, 2), generator=torch.Generator().manual_seed(0))
    >>> tuple(loss.shape)
    (5,)
    """
    samples = flow.sample(x.shape[0], generator=generator).detach()
    energy = flow.energy(torch.cat([x, samples]))
    data_energy, sample_energy = energy.chunk(2)
    return (data_energy - sample_energy) / x.shape[1]


def _check_settings(**settings: Any) -> None:
    """Refuse a setting value no objective can use, with what to pass instead.

    ``noise_std`` and ``fd_epsilon`` divide the loss, so they must be finite and
    positive; ``n_slices`` counts directions per row; ``ssm``'s projections
    need ``E[v v^T] = I``.
    """
    for name in ("noise_std", "fd_epsilon"):
        if name not in settings:
            continue
        value = settings[name]
        if (
            isinstance(value, bool)
            or not isinstance(value, Real)
            or not math.isfinite(value)
            or value <= 0
        ):
            raise ValueError(
                f"{name}={value!r} must be a finite number > 0 (a standard"
                " deviation or radius in the units of the preprocessed data)."
            )
    n_slices = settings.get("n_slices", 1)
    if isinstance(n_slices, bool) or not isinstance(n_slices, Integral) or n_slices < 1:
        raise ValueError(f"n_slices={n_slices!r} must be an integer >= 1.")
    projection = settings.get("projection", "rademacher")
    if projection not in ("rademacher", "gaussian"):
        # A unit-sphere projection has E[v v^T] = I / D: it would scale ssm's
        # trace term wrongly.
        raise ValueError(
            f"projection={projection!r} is not supported; use 'rademacher' or"
            " 'gaussian' (E[v v^T] = I)."
        )


def _projections(
    like: Tensor,
    kind: Literal["rademacher", "gaussian", "sphere"],
    generator: torch.Generator | None,
) -> Tensor:
    gaussian = torch.randn(
        like.shape, generator=generator, device=like.device, dtype=like.dtype
    )
    if kind == "gaussian":
        return gaussian
    if kind == "rademacher":
        return torch.where(gaussian >= 0, 1.0, -1.0).to(like.dtype)
    if kind == "sphere":
        return gaussian / gaussian.norm(dim=1, keepdim=True)
    raise ValueError(
        f"projection={kind!r} is not supported; use 'rademacher', 'gaussian' or"
        " 'sphere'."
    )


def energy_gradient_and_curvature(
    flow: Flow, x: Tensor, direction: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Energy, its gradient in ``x`` and ``v^T (d^2 E / dx^2) v`` in one pass.

    Each layer propagates a second-order jet of ``x + eps v``; the second-order terms
    each layer creates are contracted with the adjoint of the energy's backward pass, so
    no second-order tangent ever crosses a linear layer. The base density's own
    second derivative along the final tangent comes from ``flow.base.curvature``. The
    result keeps the graph for a parameter gradient.

    Parameters
    ----------
    flow : Flow
        The model.
    x : Tensor of shape (batch, n_features)
        Points.
    direction : Tensor of shape (batch, n_features)
        The direction ``v`` per row.

    Returns
    -------
    energy : Tensor of shape (batch,)
    gradient : Tensor of shape (batch, n_features)
    curvature : Tensor of shape (batch,)

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import fc
    >>> from skebflow.objectives import energy_gradient_and_curvature
    >>> flow = fc(2, n_layers=1).double()
    >>> energy, gradient, curvature = energy_gradient_and_curvature(
    ...     flow, torch.zeros(1, 2).double(), torch.ones(1, 2).double())
    >>> round(curvature.item(), 6)  # v^T W^T W v with W = -I
    2.0
    """
    x = x.detach().requires_grad_(True)
    # columns the flow passes to its base (Flow's passed_columns) skip the layers
    h, passed = flow.split_passed(x)
    tangent, passed_tangent = flow.split_passed(direction)
    log_abs_det = x.new_zeros(x.shape[0])
    curvature = x.new_zeros(x.shape[0])
    sources: list[tuple[Tensor, Tensor]] = []
    for layer in flow.layers:
        jet = layer.jet(h, tangent)
        if jet.curvature is not None:
            sources.append((jet.y, jet.curvature))
        if jet.log_abs_det is not None:
            log_abs_det = log_abs_det + jet.log_abs_det
            curvature = curvature - jet.log_abs_det_curvature
        h, tangent = jet.y, jet.tangent
    h = flow.join_passed(h, passed)
    tangent = flow.join_passed(tangent, passed_tangent)
    energy = flow.base.energy(h) - log_abs_det
    curvature = curvature + flow.base.curvature(h, tangent)
    gradients = torch.autograd.grad(
        energy.sum(), [x, *(y for y, _ in sources)], create_graph=True
    )
    for adjoint, (_, source) in zip(gradients[1:], sources, strict=True):
        curvature = curvature + (adjoint * source).sum(dim=1)
    return energy, gradients[0], curvature


def ssm(
    flow: Flow,
    x: Tensor,
    *,
    generator: torch.Generator | None = None,
    n_slices: int = 1,
    projection: Literal["rademacher", "gaussian"] = "rademacher",
) -> Tensor:
    """Sliced score matching, variance-reduced form, per row and dimension.

    ``(1/2 |grad E(x)|^2 - v^T Hess E(x) v) / D``, averaged over ``n_slices`` random
    projections ``v`` with ``E[v v^T] = I``.

    Parameters
    ----------
    flow : Flow
        The model.
    x : Tensor of shape (batch, n_features)
        Data.
    generator : torch.Generator or None, default=None
        Randomness of the projections.
    n_slices : int, default=1
        Projections per row.
    projection : {"rademacher", "gaussian"}, default="rademacher"
        Distribution of the projections.

    Returns
    -------
    Tensor of shape (batch,)

    Notes
    -----
    Computed by :func:`energy_gradient_and_curvature`: about three dense products per
    linear layer for the loss and two more for each in the parameter gradient — no
    double backward pass, no determinant.

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import fc
    >>> from skebflow.objectives import ssm
    >>> loss = ssm(fc(3), torch.zeros(4, 3), generator=torch.Generator().manual_seed(0))
    >>> tuple(loss.shape)
    (4,)
    """
    _check_settings(n_slices=n_slices, projection=projection)
    repeated = x.repeat(n_slices, 1) if n_slices > 1 else x
    direction = _projections(repeated, projection, generator)
    _, gradient, curvature = energy_gradient_and_curvature(flow, repeated, direction)
    loss = 0.5 * gradient.square().sum(dim=1) - curvature
    if n_slices > 1:
        loss = loss.reshape(n_slices, x.shape[0]).mean(dim=0)
    return loss / x.shape[1]


def dsm(
    flow: Flow,
    x: Tensor,
    *,
    generator: torch.Generator | None = None,
    noise_std: float = 0.1,
) -> Tensor:
    """Denoising score matching: ``|grad E(x + sigma n) - n / sigma|^2 / (2 D)``.

    Fits the density of the data smoothed by ``N(0, sigma^2 I)``.

    Parameters
    ----------
    flow : Flow
        The model.
    x : Tensor of shape (batch, n_features)
        Data.
    generator : torch.Generator or None, default=None
        Randomness of the noise.
    noise_std : float, default=0.1
        ``sigma``, in the units of the preprocessed data.

    Returns
    -------
    Tensor of shape (batch,)

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import fc
    >>> from skebflow.objectives import dsm
    >>> loss = dsm(fc(3), torch.zeros(4, 3), generator=torch.Generator().manual_seed(0))
    >>> tuple(loss.shape)
    (4,)
    """
    _check_settings(noise_std=noise_std)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    noisy = (x + noise_std * noise).detach().requires_grad_(True)
    energy = flow.energy(noisy)
    (gradient,) = torch.autograd.grad(energy.sum(), noisy, create_graph=True)
    return 0.5 * (gradient - noise / noise_std).square().sum(dim=1) / x.shape[1]


def _orthonormal_directions(
    like: Tensor, n_slices: int, generator: torch.Generator | None
) -> Tensor:
    """``n_slices`` unit directions per row of ``like``, shaped (n_slices, batch, D).

    Each row's directions are columns of a random orthogonal matrix (a Haar-random
    frame, drawn by the QR decomposition of a Gaussian matrix with the signs of
    ``R``'s diagonal taken into ``Q``), so each direction is uniform on the sphere and
    the row's first ``D`` directions are orthonormal; beyond ``D`` the frames repeat
    with fresh draws. One slice is a normalized Gaussian, as in
    :func:`_projections`.
    """
    if n_slices == 1:
        return _projections(like, "sphere", generator).unsqueeze(0)
    n_rows, n_features = like.shape
    frames = []
    remaining = n_slices
    while remaining > 0:
        width = min(remaining, n_features)
        gaussian = torch.randn(
            (n_rows, n_features, width),
            generator=generator,
            device=like.device,
            dtype=like.dtype,
        )
        q, r = torch.linalg.qr(gaussian)
        signs = torch.where(r.diagonal(dim1=1, dim2=2) < 0, -1.0, 1.0).to(like.dtype)
        frames.append((q * signs.unsqueeze(1)).permute(2, 0, 1))
        remaining -= width
    return torch.cat(frames)


def fdssm(
    flow: Flow,
    x: Tensor,
    *,
    generator: torch.Generator | None = None,
    fd_epsilon: float = 0.1,
    n_slices: int = 1,
) -> Tensor:
    """Finite-difference sliced score matching, per row and dimension.

    With ``eps`` uniform on the sphere of radius ``xi``:
    ``[(E(x+eps) - E(x-eps))^2 / 8 + 2 E(x) - E(x+eps) - E(x-eps)] / xi^2``,
    averaged over ``n_slices`` directions per row.

    Parameters
    ----------
    flow : Flow
        The model.
    x : Tensor of shape (batch, n_features)
        Data.
    generator : torch.Generator or None, default=None
        Randomness of the directions.
    fd_epsilon : float, default=0.1
        The radius ``xi``.
    n_slices : int, default=1
        Directions per row, orthonormal up to ``n_features`` of them (a random
        frame). The first term stands for ``|grad E|^2 / (2 D)`` through one
        direction's ``(eps^T grad E)^2``, which makes this the noisiest objective's
        gradient; over an orthonormal frame the squares add up to ``xi^2 |grad E|^2``
        and the curvatures to ``xi^2`` times the Laplacian, so at ``n_slices =
        n_features`` the loss is exact score matching up to the finite differences'
        error, at ``2 n_slices + 1`` energies per row.

    Returns
    -------
    Tensor of shape (batch,)

    Notes
    -----
    ``2 n_slices + 1`` energies per row and no derivative in ``x``. The leading
    constant-Jacobian layers take ``x`` with one direction per slice, as a jet (the
    point and its Jacobian-vector product: ``n_slices`` rows per row of ``x``, each
    with its tangent), instead of the ``2 n_slices + 1`` shifted points.

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import fc
    >>> from skebflow.objectives import fdssm
    >>> generator = torch.Generator().manual_seed(0)
    >>> loss = fdssm(fc(3), torch.zeros(4, 3), generator=generator)
    >>> tuple(loss.shape)
    (4,)
    >>> # W = -I and b = 1: E = |1 - x|^2 / 2 + c, whose score matching loss is 1
    >>> quadratic = fc(2, n_layers=1)
    >>> x = -torch.ones(3, 2)
    >>> one = fdssm(quadratic, x, n_slices=1, generator=generator)
    >>> [round(value, 2) for value in one.tolist()]  # one direction: noisy
    [-0.94, 0.55, -0.84]
    >>> frame = fdssm(quadratic, x, n_slices=2, generator=generator)
    >>> [round(value, 2) for value in frame.tolist()]  # a full frame: exact
    [1.0, 1.0, 1.0]
    """
    _check_settings(fd_epsilon=fd_epsilon, n_slices=n_slices)
    n_rows = x.shape[0]
    step = fd_epsilon * _orthonormal_directions(x, n_slices, generator).flatten(0, 1)
    layers = list(flow.layers)
    # x once per slice, beside its step (x itself for one slice: no copy); the
    # columns the flow passes to its base (Flow's passed_columns) skip the layers
    repeated = x.repeat(n_slices, 1) if n_slices > 1 else x
    repeated, passed = flow.split_passed(repeated)
    step, passed_step = flow.split_passed(step)
    n_linear = 0
    while n_linear < len(layers) and layers[n_linear].constant_jacobian:
        # the tangent map is linear: the slices' steps go through it together
        jet = layers[n_linear].jet(repeated, step)
        repeated, step = jet.y, jet.tangent
        n_linear += 1
    # one slice: the same graph as before slices existed, gradients bit for bit
    center = repeated[:n_rows] if n_slices > 1 else repeated
    h = torch.cat([center, repeated + step, repeated - step])
    log_abs_det = h.new_zeros(h.shape[0])
    for layer in layers[n_linear:]:
        h, layer_log_abs_det = layer(h)
        if layer_log_abs_det is not None:
            log_abs_det = log_abs_det + layer_log_abs_det
    if passed is not None and passed_step is not None:
        passed_center = passed[:n_rows] if n_slices > 1 else passed
        h = flow.join_passed(
            h,
            torch.cat([passed_center, passed + passed_step, passed - passed_step]),
        )
    energy = flow.base.energy(h) - log_abs_det
    energy_center = energy[:n_rows]
    energy_plus, energy_minus = energy[n_rows:].reshape(2, n_slices, n_rows).unbind(0)
    loss = (energy_plus - energy_minus).square() / 8.0 + (
        2.0 * energy_center - energy_plus - energy_minus
    )
    # divided twice: fd_epsilon**2 overflows a Python float beyond about 1e154
    return loss.mean(dim=0) / fd_epsilon / fd_epsilon


def exact_sm(
    flow: Flow, x: Tensor, *, generator: torch.Generator | None = None
) -> Tensor:
    """Exact score matching, ``(|grad E|^2 / 2 - tr Hess E) / D``, for tests, small D.

    Takes ``D`` backward passes for the Hessian trace.

    Parameters
    ----------
    flow : Flow
        The model.
    x : Tensor of shape (batch, n_features)
        Data.
    generator : torch.Generator or None, default=None
        Unused.

    Returns
    -------
    Tensor of shape (batch,)

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import fc
    >>> from skebflow.objectives import exact_sm
    >>> flow = fc(2, n_layers=1)
    >>> # W = -I and b = 1, so E = |1 - x|^2 / 2 + c
    >>> exact_sm(flow, -torch.ones(1, 2)).tolist()
    [1.0]
    """
    x = x.detach().requires_grad_(True)
    energy = flow.energy(x)
    (gradient,) = torch.autograd.grad(energy.sum(), x, create_graph=True)
    trace = x.new_zeros(x.shape[0])
    for index in range(x.shape[1]):
        (row,) = torch.autograd.grad(gradient[:, index].sum(), x, create_graph=True)
        trace = trace + row[:, index]
    return (0.5 * gradient.square().sum(dim=1) - trace) / x.shape[1]


OBJECTIVES: dict[str, Callable[..., Tensor]] = {
    "ml": ml,
    "sml": sml,
    "ssm": ssm,
    "dsm": dsm,
    "fdssm": fdssm,
}
"""The objectives by name."""


def objective_settings(name: str) -> tuple[str, ...]:
    """The keyword settings the objective ``name`` takes.

    Parameters
    ----------
    name : str
        A key of :data:`OBJECTIVES`.

    Returns
    -------
    tuple of str

    Examples
    --------
    >>> from skebflow.objectives import objective_settings
    >>> objective_settings("dsm"), objective_settings("ml")
    (('noise_std',), ())
    """
    try:
        function = OBJECTIVES[name]
    except KeyError:
        raise ValueError(
            f"objective={name!r} is not known; use one of {sorted(OBJECTIVES)}."
        ) from None
    return tuple(
        parameter.name
        for parameter in inspect.signature(function).parameters.values()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
        and parameter.name != "generator"
    )


def bind_objective(name: str, **settings: Any) -> Callable[..., Tensor]:
    """The objective ``name`` with its settings bound.

    Parameters
    ----------
    name : str
        A key of :data:`OBJECTIVES`.
    **settings
        Keyword settings the objective takes (see :func:`objective_settings`); a
        setting it does not take is an error, not silently dropped.

    Returns
    -------
    callable
        ``loss(flow, x, *, generator) -> Tensor of shape (batch,)``.

    Examples
    --------
    >>> from skebflow.objectives import bind_objective
    >>> loss = bind_objective("dsm", noise_std=0.5)
    >>> loss.keywords
    {'noise_std': 0.5}
    >>> bind_objective("dsm", n_slices=3)
    Traceback (most recent call last):
    ...
    ValueError: objective='dsm' does not take n_slices; it takes noise_std.
    >>> bind_objective("dsm", noise_std=0.0)
    Traceback (most recent call last):
    ...
    ValueError: noise_std=0.0 must be a finite number > 0 ...
    """
    accepted = objective_settings(name)
    unknown = sorted(set(settings) - set(accepted))
    if unknown:
        takes = ", ".join(accepted) if accepted else "no settings"
        raise ValueError(
            f"objective={name!r} does not take {', '.join(unknown)}; it takes {takes}."
        )
    # Their values too, now rather than at the first batch of a fit.
    _check_settings(**settings)
    return functools.partial(OBJECTIVES[name], **settings)
