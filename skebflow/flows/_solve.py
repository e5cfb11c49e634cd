"""A bracketed, safeguarded Newton solver for elementwise increasing functions.

Layers whose inverse has no closed form (the smooth leaky ReLU, the logistic-mixture
coupling) invert an elementwise, strictly increasing map ``f`` by solving
``f(x) = y`` entry by entry. :func:`solve_increasing` keeps every entry inside a
bracket ``[lower, upper]`` that holds its root and shrinks at every step, takes the
Newton step when it stays inside the bracket and shrinks it fast enough, and bisects
otherwise (the ``rtsafe`` safeguard; a bracket many orders of magnitude wide is
bisected in ``asinh`` units): it converges for every increasing ``f``, and
quadratically once Newton takes over. Convergence is checked on the host only every
few steps, so a GPU runs several steps per synchronization; an entry that did not
reach the tolerance is reported by an :class:`InverseNotConvergedWarning`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["InverseNotConvergedWarning", "solve_increasing"]


class InverseNotConvergedWarning(UserWarning):
    """A numerical inverse stopped before every entry reached its tolerance.

    The result is still the best point of each entry's bracket, but some entries of
    ``inverse(y)`` may be inexact. Raise ``max_steps`` (or the layer's step budget) or
    loosen the tolerance; turn the warning into an error with
    ``warnings.simplefilter("error", InverseNotConvergedWarning)``.

    Examples
    --------
    >>> import warnings
    >>> import torch
    >>> from skebflow.flows import InverseNotConvergedWarning, solve_increasing
    >>> y = torch.tensor([0.5, 2.0], dtype=torch.float64)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     x = solve_increasing(
    ...         lambda x: (x.pow(3), 3 * x.square()), y,
    ...         torch.zeros_like(y), 2 * torch.ones_like(y), max_steps=1)
    >>> [issubclass(w.category, InverseNotConvergedWarning) for w in caught]
    [True]
    """


def _converged(
    x: Tensor,
    residual: Tensor,
    slope: Tensor,
    lower: Tensor,
    upper: Tensor,
    y_tolerance: Tensor,
    tol: float,
) -> Tensor:
    """Entries whose residual and Newton step, or whose bracket, are small enough."""
    x_tolerance = tol * (1.0 + x.abs())
    small_residual = residual.abs() <= y_tolerance
    small_step = residual.abs() <= x_tolerance * slope
    small_bracket = (upper - lower) <= x_tolerance
    # An infinite iterate makes every tolerance infinite: never call it converged.
    return ((small_residual & small_step) | small_bracket) & torch.isfinite(x)


def _midpoint(lower: Tensor, upper: Tensor) -> Tensor:
    """The bisection point of ``[lower, upper]``: its middle, or, where the
    bracket is wide against the magnitude of its nearer end, its middle in
    ``asinh`` units (near the geometric mean of same-signed ends). From a
    bracket such as ``[-3, 1e100]`` halving takes some 330 steps to come down to
    the root's magnitude, and the ``asinh`` middle about ten.

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows._solve import _midpoint
    >>> lower = torch.tensor([0.0, 100.0], dtype=torch.float64)
    >>> upper = torch.tensor([2.0, 1e8], dtype=torch.float64)
    >>> [round(value) for value in _midpoint(lower, upper).tolist()]
    [1, 100001]
    """
    # Halves first: the sum of two large ends can overflow.
    middle = 0.5 * lower + 0.5 * upper
    wide = (upper - lower) > 2.0 * (1.0 + torch.minimum(lower.abs(), upper.abs()))
    spread = torch.sinh(0.5 * torch.asinh(lower) + 0.5 * torch.asinh(upper))
    # torch's vectorized sinh overflows early near the dtype's maximum (a bracket
    # ending near 1e308): the middle there, never a point outside the bracket
    inside = torch.isfinite(spread) & (spread > lower) & (spread < upper)
    return torch.where(wide & inside, spread, middle)


def solve_increasing(
    function: Callable[[Tensor], tuple[Tensor, Tensor]],
    target: Tensor,
    lower: Tensor,
    upper: Tensor,
    *,
    initial: Tensor | None = None,
    tol: float = 1e-10,
    max_steps: int = 100,
    check_every: int = 8,
    name: str = "inverse",
) -> Tensor:
    """Solve ``f(x) = target`` entrywise for an increasing ``f`` inside a bracket.

    Parameters
    ----------
    function : callable
        ``x -> (f(x), f'(x))``, elementwise and strictly increasing, with ``f'(x) > 0``
        (tensors of ``target``'s shape).
    target : Tensor
        The values ``y`` to invert.
    lower, upper : Tensor
        A bracket of each root, ``f(lower) <= y <= f(upper)``, broadcastable to
        ``target``'s shape.
    initial : Tensor or None, default=None
        The first iterate (clamped into the bracket); the bracket's midpoint if None.
    tol : float, default=1e-10
        Relative tolerance, floored at ``4 eps`` of the dtype. An entry has converged
        when both its residual ``|f(x) - y| <= tol (1 + |y|)`` and its Newton step
        ``|f(x) - y| / f'(x) <= tol (1 + |x|)`` (so that both round trips hold), or
        when its bracket is at most ``tol (1 + |x|)`` wide (where ``f`` is so flat
        or so steep that rounding hides the residual).
    max_steps : int, default=100
        Budget of steps. An entry still unconverged after it triggers an
        :class:`InverseNotConvergedWarning` that gives their number and the largest
        residual.
    check_every : int, default=8
        Steps between two checks of convergence, each one host synchronization.
        Converged entries are frozen, so the result does not depend on it.
    name : str, default="inverse"
        What is being solved, for the warning's message.

    Returns
    -------
    Tensor of ``target``'s shape
        ``x`` with ``f(x) ~= y``. Entries whose target is not finite are returned
        as the target itself (``nan`` stays ``nan``, ``+-inf`` the same infinity),
        with and without autograd. When autograd is on, one extra Newton step through
        ``function`` carries the implicit-function gradient
        ``dx = (dy - df) / f'(x)`` to ``target`` and to the parameters ``function``
        closes over.

    Notes
    -----
    Each step first shrinks the bracket with the sign of the residual, then takes the
    Newton step ``x - r / f'(x)`` unless it leaves the bracket or fails to halve the
    step before last, in which case it bisects (Press et al., *Numerical Recipes*,
    ``rtsafe``). The bracket shrinks at least by half every two steps, so the solver
    always converges; the Newton steps make it quadratic near the root. It runs under
    ``torch.no_grad``: nothing of the iteration is kept for autograd.

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import solve_increasing
    >>> y = torch.tensor([-8.0, 0.0, 1e-3, 27.0], dtype=torch.float64)
    >>> x = solve_increasing(
    ...     lambda x: (x.pow(3) + x, 3 * x.square() + 1), y,
    ...     torch.full_like(y, -10.0), torch.full_like(y, 10.0))
    >>> bool(torch.allclose(x.pow(3) + x, y))
    True
    """
    if max_steps < 1:
        raise ValueError(f"max_steps={max_steps} must be at least 1.")
    if check_every < 1:
        raise ValueError(f"check_every={check_every} must be at least 1.")
    tol = max(float(tol), 4.0 * torch.finfo(target.dtype).eps)
    with torch.no_grad():
        y = target.detach()
        lower = torch.broadcast_to(lower.detach(), y.shape).clone()
        upper = torch.broadcast_to(upper.detach(), y.shape).clone()
        # The loop rebinds lower and upper to new tensors: these stay the ends
        # first given, to tell a root outside them.
        given_lower, given_upper = lower, upper
        finite = torch.isfinite(y)
        # Halves first: the sum of two large ends can overflow.
        x = 0.5 * lower + 0.5 * upper if initial is None else initial.detach()
        x = torch.minimum(torch.maximum(x, lower), upper)
        y_tolerance = tol * (1.0 + y.abs())
        value, slope = function(x)
        residual = value - y
        done = ~finite | _converged(x, residual, slope, lower, upper, y_tolerance, tol)
        step = upper - lower
        step_before = step
        for index in range(max_steps):
            upper = torch.where(residual > 0, x, upper)
            lower = torch.where(residual < 0, x, lower)
            newton = x - residual / slope
            bisect = (
                ~((newton >= lower) & (newton <= upper))  # also catches NaN
                | (2.0 * residual.abs() > step_before.abs() * slope)
            )
            candidate = torch.where(bisect, _midpoint(lower, upper), newton)
            step_before, step = step, candidate - x
            x = torch.where(done, x, candidate)
            value, slope = function(x)
            residual = value - y
            done = done | _converged(x, residual, slope, lower, upper, y_tolerance, tol)
            last = index + 1 == max_steps
            if not last and (index + 1) % check_every == 0 and bool(done.all()):
                break
        n_failed = int((~done).sum())
        # A bracket that does not hold the root collapses onto one of its ends,
        # where the residual keeps its sign and stays large.
        outside = (
            done
            & finite
            & (
                ((upper == given_upper) & (residual < -y_tolerance))
                | ((lower == given_lower) & (residual > y_tolerance))
            )
        )
        n_outside = int(outside.sum())
    if n_outside:
        worst = float(residual.abs().masked_fill(~outside, 0.0).max())
        warnings.warn(
            InverseNotConvergedWarning(
                f"{name}: the bracket [lower, upper] does not hold the root of"
                f" {n_outside} of {y.numel()} entries (f(lower) > y or f(upper) < y);"
                f" they end at the bracket's end, with a residual up to {worst:.3g}."
            ),
            stacklevel=3,
        )
    if n_failed:
        worst = float(residual.abs().masked_fill(done, 0.0).max())
        warnings.warn(
            InverseNotConvergedWarning(
                f"{name}: {n_failed} of {y.numel()} entries did not reach the"
                f" tolerance {tol:.3g} in {max_steps} steps; the largest residual"
                f" |f(x) - y| is {worst:.3g}."
            ),
            stacklevel=3,
        )
    if torch.is_grad_enabled():
        # Entries of non-finite target take the target below; a finite stand-in
        # with a unit slope keeps NaN out of the others' gradients.
        x = torch.where(finite, x, torch.zeros_like(x))
        value, slope = function(x)
        if value.requires_grad or target.requires_grad:
            # Where the slope has underflowed to 0 (a flat stretch of the map)
            # the implicit gradient is infinite: those entries keep their root
            # and take no gradient, instead of a 0 / 0 that made the root NaN.
            usable = finite & (slope.detach() != 0)
            safe_target = torch.where(usable, target, value.detach())
            safe_slope = torch.where(usable, slope.detach(), torch.ones_like(slope))
            # The implicit function's gradient, dx = -(df - dy) / f'(x), carried
            # by a Newton step whose value is taken back out: the root is the
            # same with gradients on or off (the step itself moved it by up to
            # the tolerance over the slope, where the map is nearly flat).
            step = (value - safe_target) / safe_slope
            step = torch.where(usable, step, torch.zeros_like(step))
            x = x - (step - step.detach())
    return torch.where(finite, x, target)
