"""Closed-form maximum likelihood for a flow's last linear layer: output whitening.

Score matching fits the energy's gradient where the data lie. How the flow's outputs
sit in the base distribution's frame — their mean and covariance — is weakly tied
to that gradient, and a score-matching fit can leave them far from zero mean and
unit covariance: its exact likelihood then suffers although its score is right
(``docs/benchmarks.md``, "Output whitening"). With every other layer fixed, the
likelihood of a standard normal base is maximized over a last affine layer in
closed form: whiten the outputs. The new weights fold into the last
:class:`~skebflow.flows.Dense` layer, so the flow keeps its layers, its energy /
log-normalizer split and its cost.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._base import Flow, StandardNormal
from ._linear import Dense

__all__ = [
    "can_whiten_output",
    "ledoit_wolf_shrinkage",
    "mean_and_shrunk_cholesky",
    "whiten_output",
]


def can_whiten_output(flow: Flow) -> bool:
    """Whether :func:`whiten_output` applies: a standard normal base and a last
    :class:`~skebflow.flows.Dense` layer (which maps the columns the flow does not
    pass to its base: those are left as they are).

    Examples
    --------
    >>> from skebflow.flows import cnn, fc
    >>> from skebflow.flows._calibration import can_whiten_output
    >>> can_whiten_output(fc(3)), can_whiten_output(cnn((1, 4, 4)))
    (True, False)
    """
    return isinstance(flow.base, StandardNormal) and isinstance(flow.layers[-1], Dense)


def ledoit_wolf_shrinkage(centred: Tensor, weights: Tensor) -> Tensor:
    """Ledoit and Wolf's (2004) optimal shrinkage of a covariance towards a multiple
    of the identity, for weighted, centred rows (weights summing to one).

    ``C = (1 - s) S + s (tr S / p) I`` with ``s = min(1, b^2 / d^2)``, ``d^2 = |S -
    (tr S / p) I|_F^2`` and ``b^2 = min(d^2, n_eff^{-1} sum_k w_k |x_k x_k^T -
    S|_F^2)``, ``n_eff = 1 / sum_k w_k^2`` (``n`` for equal weights). The rows' mean
    is not corrected for.

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows._calibration import ledoit_wolf_shrinkage
    >>> g = torch.Generator().manual_seed(0)
    >>> def shrinkage(n):
    ...     x = torch.randn(n, 10, generator=g, dtype=torch.float64)
    ...     w = torch.full((n,), 1.0 / n, dtype=torch.float64)
    ...     return float(ledoit_wolf_shrinkage(x - x.mean(0), w))
    >>> shrinkage(20) > shrinkage(2000)  # fewer rows, more shrinkage
    True
    """
    covariance = (weights.unsqueeze(1) * centred).T @ centred
    n_features = covariance.shape[0]
    scale = covariance.diagonal().mean()
    identity = torch.eye(n_features, dtype=centred.dtype, device=centred.device)
    target_distance = (covariance - scale * identity).square().sum()
    # sum_k w_k |x_k x_k^T - S|_F^2 = sum_k w_k |x_k|^4 - |S|_F^2.
    spread = (
        weights * centred.square().sum(dim=1).square()
    ).sum() - covariance.square().sum()
    effective_rows = 1.0 / weights.square().sum()
    sampling = torch.minimum(spread / effective_rows, target_distance)
    # On the tensors' device, with no transfer: a covariance already equal to its
    # scaled identity is shrunk all the way (the ratio is then 0 / 0).
    return torch.where(
        target_distance > 0.0,
        (sampling / target_distance).clamp(0.0, 1.0),
        torch.ones((), dtype=centred.dtype, device=centred.device),
    )


def _normalized(weights: Tensor | None, z: Tensor) -> Tensor:
    """Row weights of ``z`` summing to one (equal ones for ``None``)."""
    if weights is None:
        weights = torch.ones(z.shape[0], dtype=z.dtype, device=z.device)
    return (weights / weights.sum()).to(z.dtype)


@torch.no_grad()
def mean_and_shrunk_cholesky(
    z: Tensor, weights: Tensor | None = None, *, shrink: bool = True
) -> tuple[Tensor, Tensor] | None:
    """The (weighted) mean ``m`` of the rows ``z`` and the Cholesky factor ``L``
    of their covariance, shrunk towards a multiple of the identity by
    :func:`ledoit_wolf_shrinkage` (with ``shrink=False``, a ``1e-9`` relative
    ridge): ``z = m + L u`` whitens them. ``None`` when ``z`` is not all finite or
    the shrunk covariance has no Cholesky factor.

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows._calibration import mean_and_shrunk_cholesky
    >>> g = torch.Generator().manual_seed(0)
    >>> z = 2.0 + 3.0 * torch.randn(5000, 2, generator=g, dtype=torch.float64)
    >>> mean, factor = mean_and_shrunk_cholesky(z)
    >>> bool((mean - 2.0).abs().max() < 0.2), round(factor[0, 0].item(), 1)
    (True, 3.0)
    """
    if not bool(torch.isfinite(z).all()):
        return None
    weights = _normalized(weights, z).unsqueeze(1)
    mean = (weights * z).sum(dim=0)
    centred = z - mean
    covariance = (weights * centred).T @ centred
    identity = torch.eye(z.shape[1], dtype=z.dtype, device=z.device)
    scale = covariance.diagonal().mean()
    shrinkage = ledoit_wolf_shrinkage(centred, weights.squeeze(1)) if shrink else 1e-9
    covariance = (1.0 - shrinkage) * covariance + shrinkage * scale * identity
    cholesky, info = torch.linalg.cholesky_ex(covariance)
    if int(info) != 0 or not bool(torch.isfinite(cholesky).all()):
        return None
    return mean, cholesky


@torch.no_grad()
def whiten_output(
    flow: Flow, x: Tensor, weights: Tensor | None = None, *, shrink: bool = True
) -> Tensor | None:
    """Refit the last dense layer by maximum likelihood, the others fixed, in place.

    With ``z`` the flow's outputs on ``x``, of (weighted) mean ``m`` and covariance
    ``C = L L^T``, the last layer ``y = W h + b`` becomes ``A (W h + b - m)`` with
    ``A = L^{-1}``: the outputs on ``x`` then have zero mean and unit covariance,
    which maximizes the mean log-likelihood of ``x`` over every last affine layer
    (for a standard normal base). With ``shrink`` (the default) ``C`` is the
    Ledoit-Wolf shrinkage of the sample covariance towards a multiple of the
    identity (:func:`ledoit_wolf_shrinkage`): on few rows the full covariance of
    ``D`` outputs is estimated poorly, most of all along directions that barely
    vary in the training rows, and whitening by it over-fits (it cost 0.4 nats per
    dimension on Ionosphere's 220 rows of 32 columns). With ``shrink=False`` the
    likelihood of ``x`` is the exact maximum (a ``1e-9`` relative ridge keeps the
    factorization defined).

    Parameters
    ----------
    flow : Flow
        A flow for which :func:`can_whiten_output` holds; changed in place.
    x : Tensor of shape (n_samples, n_features)
        The rows to fit on (training rows, in the flow's input units and dtype).
    weights : Tensor of shape (n_samples,) or None, default=None
        Row weights.
    shrink : bool, default=True
        Whether to shrink the covariance (Ledoit-Wolf).

    Returns
    -------
    Tensor of shape () or None
        The gain in mean log-likelihood of ``x`` (nats per row); ``None``, with the
        flow unchanged, when the outputs cannot be whitened (not all finite, or a
        covariance that is not positive definite even after shrinkage).

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import fc
    >>> from skebflow.flows._calibration import whiten_output
    >>> g = torch.Generator().manual_seed(0)
    >>> flow = fc(2, n_layers=1, generator=g).double()
    >>> x = 3.0 + 0.5 * torch.randn(500, 2, generator=g, dtype=torch.float64)
    >>> before = flow.log_prob(x).mean()
    >>> gain = whiten_output(flow, x)
    >>> bool(torch.isclose(flow.log_prob(x).mean() - before, gain)), bool(gain > 0)
    (True, True)
    """
    if not can_whiten_output(flow):
        raise ValueError(
            "whiten_output needs a standard normal base and a last Dense layer."
        )
    last = flow.layers[-1]
    assert isinstance(last, Dense)
    z, _ = flow(x)
    # the columns the flow passes to its base (after the mapped ones) stay
    z = z[:, : last.n_features]
    moments = mean_and_shrunk_cholesky(z, weights, shrink=shrink)
    if moments is None:
        return None
    mean, cholesky = moments
    centred = z - mean
    identity = torch.eye(z.shape[1], dtype=z.dtype, device=z.device)
    whitening = torch.linalg.solve_triangular(cholesky, identity, upper=False)
    # Mean log-likelihood change: (|z|^2 - |A (z - m)|^2) / 2 + log|det A|.
    row_weights = _normalized(weights, z)
    before = 0.5 * (row_weights * z.square().sum(dim=1)).sum()
    after = 0.5 * (row_weights * (centred @ whitening.T).square().sum(dim=1)).sum()
    gain = before - after - torch.log(cholesky.diagonal()).sum()
    last.weight.copy_(whitening @ last.weight)
    last.bias.copy_(whitening @ (last.bias - mean))
    return gain
