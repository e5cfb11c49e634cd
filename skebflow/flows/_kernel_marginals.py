"""Columns mapped to a standard normal through the CDF of a one-dimensional kernel
density (marginal Gaussianization).

A preprocessing step: fixed once fitted (nothing in it trains), elementwise, and
exact. Column ``j``'s density is the mixture

    f_j(x) = (1 - eps) sum_k w_kj N(x; c_kj, h_kj^2) + eps N(x; m_j, s_j^2)

of a weighted Gaussian kernel density (centres ``c``, weights ``w``, each
kernel's width ``h``) and a wide normal of weight ``eps`` that keeps the tails
beyond the data affine. The step maps ``x`` to ``z = Phi^-1(F_j(x))`` with
``F_j`` the mixture's CDF; its log-determinant is ``log f_j(x) - log phi(z)``.
A flow that models the ``z`` then models the data with these marginals,
whatever their shape: narrow modes, point-like lumps, skew, a box (Chen &
Gopinath 2000, "Gaussianization").
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ._preprocessing import _normal_quantile_of_log, log_ndtr
from ._solve import solve_increasing

__all__ = ["KernelGaussianize"]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_SQRT_HALF = math.sqrt(0.5)
# Entries of one (rows x centres x columns) block: small enough to stay in the
# cache (2.5 times faster than blocks of 4M entries on one thread).
_BLOCK_ENTRIES = 1 << 16


class KernelGaussianize(nn.Module):
    """Map chosen columns to a standard normal through a kernel density's CDF.

    Parameters
    ----------
    columns : Tensor of bool, shape (n_features,)
        The columns mapped; the others pass through unchanged.
    centres : Tensor of shape (n_centres, n_mapped)
        Kernel centres per mapped column (padding centres carry weight 0).
    weights : Tensor of shape (n_centres, n_mapped)
        Kernel weights, non-negative, summing to 1 per column.
    bandwidth : Tensor of shape (n_centres, n_mapped) or (n_mapped,)
        Kernel standard deviation per centre, or one per column for all its
        centres (padding centres need a positive width too).
    wide_loc, wide_scale : Tensor of shape (n_mapped,)
        Mean and standard deviation of the wide normal component.
    wide_weight : float, default=0.02
        Its weight ``eps``.

    Notes
    -----
    Far out the log-determinant is the difference of two large terms (the
    kernel density's log and ``z^2 / 2``), so float32 loses it to rounding there:
    a few nats off for unit-scale columns at ``|x| = 1e4``, where float64 is
    exact to rounding. float64 meets the same limit about 1e8 wide-normal
    scales out: a review measured errors of up to 17 nats at 1e9 (where an
    estimator's log-density of a unit-scale column is about minus 7e16, so
    rows still rank by their distance; with the
    Student-t base, whose own log-density falls only logarithmically, a ray of
    scores rose by up to 34 nats near 1.5e9). The estimators keep their
    preprocessing in float64; use float64 here too.

    Examples
    --------
    >>> import torch
    >>> from skebflow.flows import KernelGaussianize
    >>> step = KernelGaussianize(
    ...     torch.tensor([True]), torch.tensor([[-1.0], [1.0]], dtype=torch.float64),
    ...     torch.full((2, 1), 0.5, dtype=torch.float64),
    ...     torch.tensor([0.3], dtype=torch.float64),
    ...     torch.zeros(1, dtype=torch.float64),
    ...     torch.full((1,), 3.0, dtype=torch.float64))
    >>> x = torch.tensor([[-1.0], [0.0], [2.5]], dtype=torch.float64)
    >>> z, log_abs_det = step(x)
    >>> round(z[1, 0].item(), 6)  # the median of a symmetric density
    0.0
    >>> bool(torch.allclose(step.inverse(z), x))
    True
    """

    def __init__(
        self,
        columns: Tensor,
        centres: Tensor,
        weights: Tensor,
        bandwidth: Tensor,
        wide_loc: Tensor,
        wide_scale: Tensor,
        wide_weight: float = 0.02,
    ) -> None:
        super().__init__()
        # copies: the caller's tensors stay theirs
        self.register_buffer("columns", columns.clone().to(torch.bool))
        self.register_buffer("centres", centres.clone())
        self.register_buffer("weights", weights.clone())
        self.register_buffer("bandwidth", bandwidth.clone())
        self.register_buffer("wide_loc", wide_loc.clone())
        self.register_buffer("wide_scale", wide_scale.clone())
        self.wide_weight = float(wide_weight)

    # ------------------------------------------------------------------ pieces

    def _log_parts_fast(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """log CDF, log survival and log density of the mapped block ``x`` (rows
        x mapped columns), summed in linear space (exact until they underflow)."""
        keep = 1.0 - self.wide_weight
        widths = self._kernel_widths()
        u = (x.unsqueeze(1) - self.centres) / widths  # (rows, K, mapped)
        weights = self.weights * keep
        # one erfc per entry: its smaller tail, accurate however small; the
        # larger one is 1 minus it (its rounding is then far below the sum's).
        # |u| as a choice of sign, not abs: abs has no gradient at 0, where x is
        # a kernel's centre (every training value is one), and that kernel's
        # density dropped out of the CDF's derivative there.
        below = u < 0
        tail = 0.5 * torch.special.erfc(_SQRT_HALF * torch.where(below, -u, u))
        cdf = (weights * torch.where(below, tail, 1.0 - tail)).sum(dim=1)
        sf = (weights * torch.where(below, 1.0 - tail, tail)).sum(dim=1)
        pdf = ((weights / widths) * torch.exp(-0.5 * u.square())).sum(dim=1)
        v = (x - self.wide_loc) / self.wide_scale
        cdf = cdf + 0.5 * self.wide_weight * torch.special.erfc(-_SQRT_HALF * v)
        sf = sf + 0.5 * self.wide_weight * torch.special.erfc(_SQRT_HALF * v)
        pdf = pdf + self.wide_weight * torch.exp(-0.5 * v.square()) / self.wide_scale
        return cdf.log(), sf.log(), pdf.log() - _LOG_SQRT_2PI

    def _log_parts_exact(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The same in log space: finite wherever the float64 logs are."""
        widths = self._kernel_widths()
        u = (x.unsqueeze(1) - self.centres) / widths
        log_weights = torch.log(self.weights) + math.log1p(-self.wide_weight)
        v = (x - self.wide_loc) / self.wide_scale
        log_wide = math.log(self.wide_weight)

        def mix(kernel: Tensor, wide: Tensor) -> Tensor:
            return torch.logaddexp(
                torch.logsumexp(log_weights + kernel, dim=1), log_wide + wide
            )

        log_cdf = mix(log_ndtr(u), log_ndtr(v))
        log_sf = mix(log_ndtr(-u), log_ndtr(-v))
        log_pdf = torch.logaddexp(
            torch.logsumexp(log_weights - widths.log() - 0.5 * u.square(), dim=1),
            log_wide - 0.5 * v.square() - self.wide_scale.log(),
        )
        return log_cdf, log_sf, log_pdf - _LOG_SQRT_2PI

    def _log_parts(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """log CDF, log survival and log density of the mapped block, in row
        blocks that bound the memory; rows where a sum fell below the smallest
        normal float (subnormal digits, or 0) are redone in log space."""
        # (at least 8 rows: on very wide tables one row per block is all overhead)
        rows_per_block = max(8, _BLOCK_ENTRIES // max(1, self.centres.numel()))
        pieces = []
        for start in range(0, x.shape[0], rows_per_block):
            block = x[start : start + rows_per_block]
            parts = self._log_parts_fast(block)
            # a sum below the smallest normal float has lost digits (subnormal) or
            # underflowed to 0 (log -inf): its row is redone in log space. NaN rows
            # stay NaN; only finite inputs are redone
            normal = torch.stack(parts) > math.log(torch.finfo(block.dtype).tiny)
            redo = ~normal.all(dim=0).all(dim=1) & block.isfinite().all(dim=1)
            if bool(redo.any()):
                if block.requires_grad:
                    # log(0)'s infinite gradient would poison the replaced rows':
                    # the linear sums run again with those rows at a centre
                    safe = torch.where(redo.unsqueeze(1), self.wide_loc, block)
                    parts = self._log_parts_fast(safe)
                rows = torch.nonzero(redo).squeeze(1)
                exact = self._log_parts_exact(block[rows])
                parts = tuple(
                    part.index_put((rows,), fixed)
                    for part, fixed in zip(parts, exact, strict=True)
                )
            pieces.append(parts)
        if not pieces:
            empty = x.new_zeros(x.shape)
            return empty, empty, empty
        return tuple(torch.cat(column) for column in zip(*pieces, strict=True))  # type: ignore[return-value]

    def _normal_of(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``z`` and the per-entry log-determinant of the mapped block ``x``."""
        log_cdf, log_sf, log_pdf = self._log_parts(x)
        lower_half = log_cdf <= log_sf
        z = torch.where(
            lower_half,
            _normal_quantile_of_log(torch.minimum(log_cdf, log_sf)),
            -_normal_quantile_of_log(torch.minimum(log_cdf, log_sf)),
        )
        # x = +-inf: the CDF is exactly 0 or 1 and z the same infinity
        z = torch.where(torch.isinf(x), x, z)
        log_abs_det = log_pdf + 0.5 * z.square() + _LOG_SQRT_2PI
        return z, log_abs_det

    # --------------------------------------------------------------- interface

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Map the chosen columns; return ``(y, log|det J|)`` per row.

        Parameters
        ----------
        x : Tensor of shape (batch, n_features)

        Returns
        -------
        y : Tensor of shape (batch, n_features)
        log_abs_det : Tensor of shape (batch,)

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import KernelGaussianize
        >>> one = torch.ones(1, 1, dtype=torch.float64)
        >>> step = KernelGaussianize(torch.tensor([True]), 0 * one, one, one,
        ...                          0 * one[0], one[0])
        >>> y, log_abs_det = step(torch.tensor([[0.7]], dtype=torch.float64))
        >>> round(y.item(), 6), abs(round(log_abs_det.item(), 6))  # a standard normal
        (0.7, 0.0)
        """
        index = torch.nonzero(self.columns).squeeze(1)
        z, log_abs_det = self._normal_of(x[:, index])
        y = x.index_copy(1, index, z)
        return y, log_abs_det.sum(dim=1)

    def inverse(self, y: Tensor) -> Tensor:
        """Undo :meth:`forward`: solve ``Phi^-1(F_j(x)) = y_j`` per mapped entry.

        Parameters
        ----------
        y : Tensor of shape (batch, n_features)

        Returns
        -------
        x : Tensor of shape (batch, n_features)

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import KernelGaussianize
        >>> one = torch.ones(1, 1, dtype=torch.float64)
        >>> step = KernelGaussianize(torch.tensor([True]), 0 * one, one, one,
        ...                          0 * one[0], one[0])
        >>> step.inverse(torch.tensor([[1.5]], dtype=torch.float64)).item()
        1.5
        """
        index = torch.nonzero(self.columns).squeeze(1)
        z = y[:, index]
        # Solved in units of each column's bulk, s = (x - median) / spread (see
        # _solver_units): the solver's tolerance is relative to |s|, which in
        # x's own units a column far from zero (1e9 plus noise of 1e-3) would
        # make wider than the column itself.
        loc, scale = self._solver_units()
        # F(x) >= Phi(t) once every kernel and the wide normal are t of their
        # widths below x, and F(x) <= Phi(t) once all are t above: a bracket
        # (t widths of the widest kernel when t > 0, of the narrowest when t < 0).
        lowest, highest = self._centre_range()
        lowest, highest = (lowest - loc) / scale, (highest - loc) / scale
        t = torch.where(torch.isfinite(z), z, 0.0)  # (the solver keeps those as z)
        narrowest, widest = self._width_range()
        narrowest, widest = narrowest / scale, widest / scale
        wide = (self.wide_loc + self.wide_scale * t - loc) / scale  # its t widths
        upper = torch.maximum(highest + torch.where(t > 0, widest, narrowest) * t, wide)
        lower = torch.minimum(lowest + torch.where(t < 0, widest, narrowest) * t, wide)

        def normal_and_slope(s: Tensor) -> tuple[Tensor, Tensor]:
            value, log_abs_det = self._normal_of(loc + scale * s)
            return value, torch.exp(log_abs_det) * scale

        s = solve_increasing(
            normal_and_slope,
            z,
            lower,
            upper,
            initial=(self._interpolated_inverse(t) - loc) / scale,
            # relative to |s|: 1e-10 spans 100 units at 1e12 bulk spreads out, wider
            # than a far row's own kernel; a few dozen float64 ulps does not
            tol=min(1e-10, 64 * torch.finfo(z.dtype).eps),
            check_every=2,
            name="KernelGaussianize.inverse",
        )
        x = torch.where(torch.isfinite(z), loc + scale * s, z)
        return y.index_copy(1, index, x)

    def _kernel_widths(self) -> Tensor:
        """Each centre's kernel width, shape (n_centres or 1, n_mapped): one
        per column in models fitted before adaptive kernels."""
        return self.bandwidth if self.bandwidth.dim() == 2 else self.bandwidth[None]

    def _width_range(self) -> tuple[Tensor, Tensor]:
        """The narrowest and the widest kernel of each mapped column (padding
        centres left out)."""
        widths = self._kernel_widths().expand_as(self.centres)
        used = self.weights > 0
        narrowest = torch.where(used, widths, math.inf).amin(dim=0)
        widest = torch.where(used, widths, 0.0).amax(dim=0)
        return narrowest, widest

    def _solver_units(self) -> tuple[Tensor, Tensor]:
        """The median of each column's kernel centres (by weight) and their
        interquartile range over 1.349 (a standard deviation's worth for normal
        data), at least the narrowest kernel: the units :meth:`inverse` solves
        in. The wide normal's mean and scale were used before, but one row far
        out (1e12 among unit values) moves them by 1e10 and more, and the
        solver's tolerance, relative in those units, then spanned the bulk of
        the column (samples off by units)."""
        order = torch.argsort(self.centres, dim=0)
        centres = self.centres.gather(0, order)
        cumulative = torch.cumsum(self.weights.gather(0, order), dim=0)

        def quantile(level: float) -> Tensor:
            position = torch.searchsorted(
                cumulative.T.contiguous(),
                torch.full((cumulative.shape[1], 1), level, dtype=cumulative.dtype),
            ).clamp(max=centres.shape[0] - 1)
            return centres.gather(0, position.T).squeeze(0)

        narrowest = self._width_range()[0]
        spread = (quantile(0.75) - quantile(0.25)) / 1.349
        return quantile(0.5), torch.maximum(spread, narrowest)

    def _centre_range(self) -> tuple[Tensor, Tensor]:
        """The lowest and the highest centre of each mapped column (padding
        centres, of weight 0, left out)."""
        used = self.weights > 0
        big = torch.finfo(self.centres.dtype).max
        lowest = torch.where(used, self.centres, big).amin(dim=0)
        highest = torch.where(used, self.centres, -big).amax(dim=0)
        return lowest, highest

    def _interpolated_inverse(self, z: Tensor) -> Tensor:
        """A first guess of the inverse: the map tabulated on a grid per column
        and read off by linear interpolation (Newton then needs a few steps)."""
        with torch.no_grad():
            low, high = self._centre_range()
            widest = self._width_range()[1]
            low = torch.minimum(low - 6 * widest, self.wide_loc - self.wide_scale)
            high = torch.maximum(high + 6 * widest, self.wide_loc + self.wide_scale)
            fraction = torch.linspace(0, 1, 513, dtype=z.dtype, device=z.device)
            grid = low + fraction.unsqueeze(1) * (high - low)  # (513, mapped)
            grid_z, _ = self._normal_of(grid)
            # cummax: rounding never makes the table decrease
            grid_z = torch.cummax(grid_z, dim=0).values.T.contiguous()
            position = torch.searchsorted(grid_z, z.T.contiguous()).T
            position = position.clamp(1, grid.shape[0] - 1)
            left_z = grid_z.T.gather(0, position - 1)
            right_z = grid_z.T.gather(0, position)
            left_x, right_x = grid.gather(0, position - 1), grid.gather(0, position)
            width = (right_z - left_z).clamp(min=1e-300)
            share = ((z - left_z) / width).clamp(0, 1)
            return left_x + share * (right_x - left_x)

    def log_abs_det_at_output(self, y: Tensor) -> Tensor:
        """``log|det J|`` of :meth:`forward` at the input that maps to ``y``.

        Parameters
        ----------
        y : Tensor of shape (batch, n_features)
            Outputs of :meth:`forward`.

        Returns
        -------
        Tensor of shape (batch,)

        Examples
        --------
        >>> import torch
        >>> from skebflow.flows import KernelGaussianize
        >>> one = torch.ones(1, 1, dtype=torch.float64)
        >>> step = KernelGaussianize(torch.tensor([True]), 0 * one, one, one,
        ...                          0 * one[0], 2 * one[0], wide_weight=0.5)
        >>> x = torch.tensor([[0.3]], dtype=torch.float64)
        >>> y, log_abs_det = step(x)
        >>> bool(torch.allclose(step.log_abs_det_at_output(y), log_abs_det))
        True
        """
        return self.forward(self.inverse(y))[1]
