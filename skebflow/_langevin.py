"""Langevin sampling from the energy of a flow (torch only).

The energy's gradient costs :math:`O(D^2 L)` and needs no inverse and no determinant,
so Langevin dynamics can sample, and sample conditionally, at any dimension.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from ._keyed_noise import KeyedNoise, row_uniform, standard_normal
from ._progress import progress_bar
from .flows._calibration import mean_and_shrunk_cholesky

__all__ = [
    "LangevinResult",
    "ModeSearch",
    "langevin",
    "mode_search",
    "trapped_chains",
    "whitened_langevin",
    "widest_spread",
    "with_spread",
]


@dataclass
class LangevinResult:
    """Final states and diagnostics of :func:`langevin`.

    Attributes
    ----------
    x : Tensor of shape (n_chains, n_features)
        The final states.
    acceptance_rate : float
        Mean acceptance rate over the chains with an entry to update (1.0 when no
        entry is to be updated). The Metropolis-adjusted sampler accepts by the
        Metropolis-Hastings rule, and its rate counts the steps after the
        adaptation of the step sizes (the second half); the unadjusted one
        accepts every proposal whose energy is finite, so its rate is the share
        of such proposals (below 1.0 when steps leave the model's support, e.g. a
        logit box).
    n_stuck : int
        Chains with an entry to update that accepted none of the 20 or more
        steps that count: they end where they started (a density far narrower
        than their step; Metropolis-adjusted only, 0 for the unadjusted sampler).
        With 10 to 19 counted steps, such chains count only when they are more
        than 5 % of the chains; with fewer, never.
    reach : float
        The median, over the chains with an entry to update, of the standard
        deviation of the noise their steps add up to, ``sqrt(2 sum_k alpha_k)``
        over their steps ``alpha_k`` (at temperature 1): how far a chain can have
        diffused from its start (``inf`` when no entry is to be updated).
    spread : float
        :func:`whitened_langevin` only (``nan`` otherwise): the final states'
        standard deviation along their widest direction, in the coordinates the
        ``reach`` is measured in (the whitened ones when the chains were
        whitened), or ``nan`` with too few chains to tell.
    held_step : float
        The median, over the chains with an entry to update, of the step they
        held after the adaptation (``step_size`` for the unadjusted sampler;
        ``nan`` when no entry is to be updated).
    stuck : Tensor of bool, shape (n_chains,), or None
        The chains that ``n_stuck`` counts (``None`` when no entry is to be
        updated).
    """

    x: Tensor
    acceptance_rate: float
    n_stuck: int = 0
    reach: float = math.inf
    spread: float = math.nan
    held_step: float = math.nan
    stuck: Tensor | None = None


def _energy_and_gradient(
    energy: Callable[[Tensor], Tensor], x: Tensor
) -> tuple[Tensor, Tensor]:
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        value = energy(x)
        (gradient,) = torch.autograd.grad(value.sum(), x)
    return value.detach(), gradient


def langevin(
    energy: Callable[[Tensor], Tensor],
    x: Tensor,
    *,
    n_steps: int = 500,
    step_size: float = 0.01,
    metropolis: bool = True,
    initial_temperature: float = 1.0,
    mask: Tensor | None = None,
    generator: torch.Generator | KeyedNoise | None = None,
    chunk_rows: int | None = None,
    shared_step: bool = False,
    progress: bool = False,
    reporter: _StepReporter | None = None,
) -> LangevinResult:
    """Run (Metropolis-adjusted) Langevin dynamics on ``exp(-energy)``.

    ``x <- x - step_size * grad E(x) + sqrt(2 step_size T) * noise`` on the entries
    where ``mask`` is true; with ``metropolis`` each proposal is accepted or rejected
    per row (MALA), whose kernel leaves ``exp(-E)`` invariant for a fixed step.

    With ``metropolis``, each chain's step starts at ``step_size`` and is adapted
    during the first half of the steps (the annealing's, a burn-in) towards an
    acceptance probability of 0.574, MALA's optimum (Roberts & Rosenthal, 1998),
    by a Robbins-Monro update of its logarithm; it is then held, so the second
    half is a MALA chain per row whose kernel leaves the density invariant (the
    chains' states when the steps are held depend on the adaptation, so the draws
    are approximate; see the user guide). A conditional density much narrower or
    wider than ``step_size`` suits (a missing value nearly determined by the
    observed ones) is then still explored: at a fixed step such chains accepted a
    few per cent of their proposals and stayed near their start.

    Parameters
    ----------
    energy : callable
        ``Tensor (n, d) -> Tensor (n,)``, the energy per row.
    x : Tensor of shape (n_chains, n_features)
        Initial states; entries outside ``mask`` are held fixed (conditioning).
    n_steps : int, default=500
        Number of steps.
    step_size : float, default=0.01
        Step ``alpha``; with ``metropolis``, each chain's starting step (see
        above).
    metropolis : bool, default=True
        Metropolis-adjusted (MALA) if True, unadjusted (ULA) otherwise.
    initial_temperature : float, default=1.0
        Annealing: the temperature decays geometrically from this value to 1 over
        the first half of the steps (1 disables annealing).
    mask : Tensor of bool, same shape as ``x``, or None
        Entries to update; ``None`` updates all.
    generator : torch.Generator, KeyedNoise or None, default=None
        The only source of randomness. A :class:`~skebflow._keyed_noise.KeyedNoise`
        gives each chain its own stream, so that a chain's draws do not depend on
        the chains beside it.
    chunk_rows : int or None, default=None
        Run the chains this many rows at a time, one block after the other (each
        for all ``n_steps``), so that memory stays that of one block: the chains
        are independent, and only the order of the draws from a
        ``torch.Generator`` changes (a ``KeyedNoise``'s not at all). ``None``
        runs every chain at once.
    progress : bool, default=False
        Show the steps as they run: a tqdm bar (notebook-aware) over every
        block's steps when tqdm is installed, else a line on standard error as
        each block ends.
    shared_step : bool, default=False
        With ``metropolis``, adapt one step for all the chains of a block (on
        their mean acceptance probability) instead of one per chain. For chains
        that sample the same density: a chain's own step depends on where its
        path went during the adaptation, and chains started at exact draws of
        ``exp(-x^4 / 4)`` ended with ``E[x^4]`` 2-8 % low that way, and within
        the Monte-Carlo error with one shared step. Per-chain steps suit chains
        of different conditionals, some far narrower than others.
    reporter : _StepReporter or None, default=None
        The progress of a caller that runs several stages (it is not closed
        here; ``progress`` is then ignored).

    Returns
    -------
    LangevinResult

    Examples
    --------
    >>> import torch
    >>> from skebflow._langevin import langevin
    >>> generator = torch.Generator().manual_seed(0)
    >>> start = torch.zeros(2000, 1, dtype=torch.float64)
    >>> result = langevin(lambda x: 0.5 * x.square().sum(1), start, n_steps=300,
    ...                   step_size=0.2, generator=generator)
    >>> round(result.x.std().item(), 1)  # a standard normal
    1.0
    """
    if mask is None:
        mask = torch.ones_like(x, dtype=torch.bool)
    mask = mask.to(torch.bool)
    blocks, n_accepted, n_moving, n_counted = [], 0.0, 0, max(n_steps, 1)
    stuck_chains, reaches, held_steps = [], [], []
    row_blocks = _row_blocks(x.shape[0], chunk_rows)
    own_reporter = reporter is None
    if reporter is None:
        reporter = _StepReporter(progress, n_steps * len(row_blocks), x.shape[0])
    for rows in row_blocks:
        (
            block,
            block_accepted,
            block_moving,
            n_counted,
            block_stuck,
            block_reach,
            block_steps,
        ) = _langevin_block(
            energy,
            x[rows],
            mask[rows],
            n_steps=n_steps,
            step_size=step_size,
            metropolis=metropolis,
            initial_temperature=initial_temperature,
            generator=generator.rows(rows)
            if isinstance(generator, KeyedNoise)
            else generator,
            shared_step=shared_step,
            on_step=reporter.step,
        )
        reporter.block_done(rows)
        blocks.append(block)
        n_accepted += block_accepted
        n_moving += block_moving
        stuck_chains.append(block_stuck)
        reaches.append(block_reach)
        held_steps.append(block_steps)
    if own_reporter:
        reporter.close()
    states = blocks[0] if len(blocks) == 1 else torch.cat(blocks)
    if n_moving == 0:  # nothing to update: nothing was refused
        return LangevinResult(states, 1.0)
    stuck = torch.cat(stuck_chains)
    return LangevinResult(
        states,
        n_accepted / (n_moving * n_counted),
        int(stuck.sum()),
        float(torch.cat(reaches).median()),
        held_step=float(torch.cat(held_steps).median()),
        stuck=stuck,
    )


#: whitened_langevin estimates the chains' spread only with at least this many
#: chains and twice as many as features (fewer estimate it poorly).
_MIN_CHAINS_FOR_SPREAD = 20
#: whitened_langevin's pilot: this share of the steps, in the data's coordinates.
_PILOT_SHARE = 0.25
#: ... of at least this many steps (fewer: no whitening).
_MIN_PILOT_STEPS = 4
#: Chains used to estimate the spread: a few thousand estimate it well enough.
_SPREAD_ROWS = 4096


def widest_spread(states: Tensor, n_iterations: int = 50) -> float:
    """The standard deviation of ``states`` along their widest direction (the
    largest principal one), by power iteration: a slight underestimate at worst,
    at ``O(n D)`` per iteration; 0 when the states are all equal or not finite.

    Examples
    --------
    >>> import torch
    >>> from skebflow._langevin import widest_spread
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(20000, 2, generator=g, dtype=torch.float64)
    >>> round(widest_spread(x @ torch.tensor([[3.0, 0.0], [0.0, 0.5]],
    ...                                      dtype=torch.float64)), 1)
    3.0
    """
    centred = states - states.mean(dim=0)
    direction = centred.new_ones(states.shape[1]) / math.sqrt(states.shape[1])
    for _ in range(n_iterations):
        image = centred.T @ (centred @ direction)
        norm = torch.linalg.vector_norm(image)
        if not bool(norm > 0):
            return 0.0
        direction = image / norm
    return float(torch.linalg.vector_norm(centred @ direction)) / math.sqrt(
        max(states.shape[0] - 1, 1)
    )


def _enough_chains(states: Tensor) -> bool:
    n_chains, n_features = states.shape
    return n_chains >= max(_MIN_CHAINS_FOR_SPREAD, 2 * n_features)


def _spread_rows(states: Tensor) -> Tensor:
    """The chains the spread is estimated on (the chains are independent)."""
    return states[: max(_SPREAD_ROWS, 4 * states.shape[1])]


def whitened_langevin(
    energy: Callable[[Tensor], Tensor],
    x: Tensor,
    *,
    n_steps: int = 500,
    step_size: float = 0.01,
    initial_temperature: float = 1.0,
    generator: torch.Generator | None = None,
    chunk_rows: int | None = None,
    progress: bool = False,
) -> LangevinResult:
    """MALA chains that all sample ``exp(-energy)``, continued after a pilot in
    the coordinates that whiten their spread.

    The step of Langevin dynamics is set by the density's narrowest direction,
    and along its widest, of standard deviation ``s``, the chains forget their
    start only as ``exp(-r^2 / s^2)``, where ``r`` is the standard deviation of
    the noise their steps add up to: on a correlation of 0.999 the draws of 500
    steps were 13-15 % too narrow along it. So a pilot (a quarter of the steps, at
    least :data:`_MIN_PILOT_STEPS`; the annealing of ``initial_temperature`` in
    its first half) runs :func:`langevin` with one shared step, and the rest
    runs on the same density in the coordinates ``u`` with ``x = m + L u``, where
    ``m`` is the pilot's mean and ``L L^T`` its chains' covariance, shrunk towards
    a multiple of the identity (Ledoit and Wolf, 2004), after moving every pilot
    chain that accepted none of its held proposals to another chain's state
    (:func:`_restarted`): the density is then
    about as wide in every direction, its step adapted afresh from
    ``step_size`` in the first half of those steps and held in the second. An
    affine map has a constant Jacobian, so ``exp(-E(m + L u))`` is the density
    of ``u`` and the held kernel leaves it invariant. With fewer chains than
    ``max(20, 2 D)``, or fewer steps than ``4 / 0.25``, the chains run
    :func:`langevin` throughout, unwhitened; so do they when the pilot's
    covariance has no Cholesky factor or its states are not finite.

    Parameters and returns as :func:`langevin` (Metropolis-adjusted, one shared
    step); the result's ``reach`` and ``spread`` are measured in the
    coordinates of the steps after the pilot.

    Examples
    --------
    >>> import torch
    >>> from skebflow._langevin import whitened_langevin
    >>> g = torch.Generator().manual_seed(0)
    >>> precision = torch.linalg.inv(torch.tensor([[1.0, 0.999], [0.999, 1.0]],
    ...                                           dtype=torch.float64))
    >>> energy = lambda x: 0.5 * ((x @ precision) * x).sum(1)
    >>> start = torch.randn(2000, 2, generator=g, dtype=torch.float64)
    >>> result = whitened_langevin(energy, start, n_steps=500, step_size=0.05,
    ...                            generator=g)
    >>> round(result.x.sum(1).std().item() / 2 ** 0.5, 1)  # the wide axis: 1.4
    1.4
    """
    n_pilot = int(n_steps * _PILOT_SHARE)
    settings = {
        "metropolis": True,
        "generator": generator,
        "chunk_rows": chunk_rows,
        "shared_step": True,
        "progress": progress,
    }
    if n_pilot < _MIN_PILOT_STEPS or not _enough_chains(x):
        result = langevin(
            energy,
            x,
            n_steps=n_steps,
            step_size=step_size,
            initial_temperature=initial_temperature,
            **settings,
        )
        return with_spread(result)
    # one progress bar over both stages
    reporter = _StepReporter(
        progress, n_steps * len(_row_blocks(x.shape[0], chunk_rows)), x.shape[0]
    )
    try:
        return _whitened_stages(
            energy,
            x,
            n_pilot,
            n_steps,
            step_size,
            initial_temperature,
            settings,
            reporter,
        )
    finally:
        reporter.close()


def _whitened_stages(
    energy: Callable[[Tensor], Tensor],
    x: Tensor,
    n_pilot: int,
    n_steps: int,
    step_size: float,
    initial_temperature: float,
    settings: dict,
    reporter: _StepReporter,
) -> LangevinResult:
    """:func:`whitened_langevin`'s pilot and whitened stages."""
    settings = {**settings, "reporter": reporter}
    pilot = langevin(
        energy,
        x,
        n_steps=n_pilot,
        step_size=step_size,
        initial_temperature=initial_temperature,
        **settings,
    )
    states = _restarted(pilot, settings["generator"])
    whitening = mean_and_shrunk_cholesky(_spread_rows(states))
    if whitening is None:
        result = langevin(
            energy, states, n_steps=n_steps - n_pilot, step_size=step_size, **settings
        )
        return with_spread(result)
    mean, factor = whitening
    whitened_start = torch.linalg.solve_triangular(
        factor, (states - mean).T, upper=False
    ).T

    def whitened_energy(u: Tensor) -> Tensor:
        return energy(mean + u @ factor.T)

    # The pilot's step suits the narrowest direction, of variance about the
    # covariance's smallest eigenvalue; in the whitened coordinates that
    # direction's variance is about 1, so the step starts scaled by its inverse.
    smallest = float(torch.linalg.eigvalsh(factor @ factor.T)[0])
    start_step = pilot.held_step / smallest
    if not (math.isfinite(start_step) and start_step > 0):
        start_step = step_size
    result = langevin(
        whitened_energy,
        whitened_start,
        n_steps=n_steps - n_pilot,
        step_size=start_step,
        **settings,
    )
    whitened = with_spread(result)
    whitened.x = mean + result.x @ factor.T
    return whitened


def _restarted(pilot: LangevinResult, generator: torch.Generator | None) -> Tensor:
    """The pilot's final states, each chain that accepted none of its held
    proposals (``pilot.stuck``: it sits at its random start, where the shared
    step is far too large for the density) moved to the state of another chain,
    drawn at random among those that moved. All the chains sample one density,
    so this only shortens their burn-in; the held kernel after it is unchanged.
    On the moons' default model 4 to 13 of 4 000 chains ended at their starts
    that way, with or without the whitening."""
    states = pilot.x
    if pilot.stuck is None or not bool(pilot.stuck.any()):
        return states
    healthy = torch.nonzero(~pilot.stuck).squeeze(1)
    if healthy.numel() == 0:
        return states
    stuck = torch.nonzero(pilot.stuck).squeeze(1)
    picks = torch.randint(
        healthy.numel(),
        (stuck.numel(),),
        generator=generator,
        device=generator.device if generator is not None else states.device,
    ).to(states.device)
    states = states.clone()
    states[stuck] = states[healthy[picks]]
    return states


def with_spread(result: LangevinResult) -> LangevinResult:
    """``result`` with its ``spread`` (see :class:`LangevinResult`) measured on
    its states, when there are enough chains to tell."""
    if _enough_chains(result.x):
        result.spread = widest_spread(_spread_rows(result.x))
    return result


class _StepReporter:
    """:func:`langevin`'s progress: a tqdm bar over the steps of every block when
    tqdm is installed, else a line on standard error per block; nothing unless
    ``enabled``."""

    def __init__(self, enabled: bool, total: int, n_rows: int) -> None:
        self.enabled, self.n_rows = enabled, n_rows
        self.bar = (
            progress_bar(total, "Langevin", "step", leave=False) if enabled else None
        )

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def block_done(self, rows: slice) -> None:
        if self.enabled and self.bar is None:
            sys.stderr.write(
                f"Langevin: chains {rows.start + 1}-{rows.stop} of {self.n_rows} done\n"
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _row_blocks(n_rows: int, chunk_rows: int | None) -> list[slice]:
    """Consecutive slices of at most ``chunk_rows`` rows (one for ``None``)."""
    if chunk_rows is None or n_rows <= chunk_rows:
        return [slice(0, n_rows)]
    return [
        slice(start, min(start + chunk_rows, n_rows))
        for start in range(0, n_rows, chunk_rows)
    ]


#: Counted steps without one acceptance after which a MALA chain counts as stuck.
_MIN_STEPS_TO_CALL_STUCK = 20
#: With fewer counted steps, but at least this many, the chains that accepted
#: none count as stuck when they are more than _STUCK_SHARE of the chains: a
#: healthy chain refuses 10 proposals in a row with probability 2e-4 (0.426^10),
#: so a share of 5 % says the step is far too large for many of them.
_MIN_STEPS_TO_CALL_MANY_STUCK = 10
_STUCK_SHARE = 0.05

#: MALA's optimal acceptance probability in high dimension (Roberts & Rosenthal,
#: 1998), the target of the step sizes' adaptation.
_TARGET_ACCEPTANCE = 0.574


def _langevin_block(
    energy: Callable[[Tensor], Tensor],
    x: Tensor,
    mask: Tensor,
    *,
    n_steps: int,
    step_size: float,
    metropolis: bool,
    initial_temperature: float,
    generator: torch.Generator | KeyedNoise | None,
    shared_step: bool = False,
    on_step: Callable[[], None] | None = None,
) -> tuple[Tensor, float, int, int, Tensor, Tensor, Tensor]:
    """:func:`langevin` on one block of chains: the final states, the number of
    accepted proposals of the chains with an entry to update in the steps that
    count (after the adaptation, for MALA), their count, those steps', the
    which of them accepted none (MALA; see ``n_stuck`` in :class:`LangevinResult`),
    their reaches and their held steps."""
    x = x.detach().clone()
    value, gradient = _energy_and_gradient(energy, x)
    # The temperature falls to 1 over the first half; a single step runs at 1.
    n_annealing = n_steps // 2
    # MALA adapts each chain's step during the first half (a burn-in), then
    # holds it: the second half is a MALA chain per row whose kernel leaves the
    # density invariant (its start, shaped by the adaptation, is not exact).
    n_adapting = n_steps // 2 if metropolis else 0
    # A chain with nothing to update (a complete row) always "accepts": it would
    # hide the chains that matter from the rate.
    moving = mask.any(dim=1)
    n_moving = int(moving.sum())  # one synchronization, before the loop
    accepted = x.new_zeros(x.shape[0])  # per chain, in the steps that count
    # One step per chain, starting at step_size exactly; the unadjusted sampler
    # keeps the scalar.
    steps: Tensor | float = (
        torch.full((x.shape[0], 1), step_size, device=x.device, dtype=x.dtype)
        if metropolis
        else step_size
    )
    travelled = x.new_zeros(x.shape[0])  # the sum of each chain's steps
    for step in range(n_steps):
        if on_step is not None:
            on_step()
        travelled = travelled + (steps.squeeze(1) if metropolis else step_size)
        temperature = (
            initial_temperature ** max(0.0, 1.0 - step / n_annealing)
            if n_annealing
            else 1.0
        )
        noise = standard_normal(generator, x)
        drift = steps * gradient
        if metropolis:
            scale = torch.sqrt(2.0 * temperature * steps)
        else:
            scale = math.sqrt(2.0 * step_size * temperature)
        proposal = torch.where(mask, x - drift + scale * noise, x)
        proposal_value, proposal_gradient = _energy_and_gradient(energy, proposal)
        if metropolis:
            forward = (proposal - x + drift).masked_fill(~mask, 0.0)
            backward = (x - proposal + steps * proposal_gradient).masked_fill(
                ~mask, 0.0
            )
            log_ratio = (value - proposal_value) / temperature + (
                forward.square().sum(1) - backward.square().sum(1)
            ) / (4.0 * steps.squeeze(1) * temperature)
            uniform = row_uniform(generator, x)
            # A chain at infinite energy (log_ratio +inf) takes any finite
            # proposal, as before the adaptation.
            valid = torch.isfinite(proposal_value) & ~torch.isnan(log_ratio)
            accept = (uniform.log() < log_ratio) & valid
            if step < n_adapting:
                # Robbins-Monro on log(step), with the acceptance probability
                # (smoother than the accept draw itself); a rate that decays with
                # the steps settles it.
                probability = torch.where(
                    valid, torch.exp(log_ratio.clamp(max=0.0)), 0.0
                )
                rate = 0.5 / math.sqrt(step + 1.0)
                # A chain outside the support (infinite energy) keeps its step
                # until it enters: its refusals say nothing about the step.
                adapting = moving & torch.isfinite(value)
                change = rate * (probability - _TARGET_ACCEPTANCE) * adapting
                if shared_step:  # one step for all: the mean over the chains
                    change = change.sum() / adapting.sum().clamp(min=1)
                steps = steps * torch.exp(change).reshape(-1, 1)
        else:
            accept = torch.isfinite(proposal_value)
        x = torch.where(accept.unsqueeze(1), proposal, x)
        value = torch.where(accept, proposal_value, value)
        gradient = torch.where(accept.unsqueeze(1), proposal_gradient, gradient)
        if step >= n_adapting:
            accepted = accepted + (accept & moving).to(x.dtype)
    n_counted = n_steps - n_adapting
    # A healthy chain (accepting about 57 %) refuses 20 proposals in a row with
    # probability 5e-8: no acceptance in as many says the chain is stuck.
    stuck = (
        moving & (accepted == 0)
        if metropolis and n_counted >= _MIN_STEPS_TO_CALL_MANY_STUCK
        else torch.zeros_like(moving)
    )
    n_stuck = int(stuck.sum())
    if n_counted < _MIN_STEPS_TO_CALL_STUCK and n_stuck <= _STUCK_SHARE * n_moving:
        stuck = torch.zeros_like(moving)
    reach = torch.sqrt(2.0 * travelled[moving])
    held = steps.squeeze(1)[moving] if metropolis else torch.full_like(reach, step_size)
    return x, float(accepted.sum()), n_moving, max(n_counted, 1), stuck, reach, held


#: A mode search's row is still travelling when, over the last tenth of its steps,
#: an entry's net displacement is more than this share of the path it took and
#: its energy fell by more than _SETTLED_GAIN nats.
_SETTLED_SHARE = 0.9
_SETTLED_GAIN = 0.01


class ModeSearch(NamedTuple):
    """What :func:`mode_search` found: the points ``x`` and, per row,
    ``unsettled``: whether the search was still travelling when its steps ran
    out (over the last tenth of them, at least 5, some entry kept moving one way
    and the energy fell by more than 0.01 nats), so that the row stops short of
    its mode, or ended where its energy or a value is not finite."""

    x: Tensor
    unsettled: Tensor


def mode_search(
    energy: Callable[[Tensor], Tensor],
    x: Tensor,
    *,
    mask: Tensor,
    n_steps: int = 200,
    learning_rate: float = 0.05,
    chunk_rows: int | None = None,
) -> ModeSearch:
    """Minimize the energy over the entries in ``mask`` (a conditional mode), by
    Adam, and say which rows had not settled.

    Adam's steps are at most about ``learning_rate`` long, so the search reaches
    at most ``n_steps * learning_rate`` from its start, and less where the
    gradient fades near a mode, which shrinks the steps while they keep their
    direction. At a mode the steps swing about it instead. So a row is
    unsettled when, over the last tenth of the steps (at least 5), an entry's net
    displacement is more than 90 % of the path it took and the energy fell by
    more than 0.01 nats (a shortfall that small is a small fraction of the
    conditional's spread).

    Parameters
    ----------
    energy : callable
        ``Tensor (n, d) -> Tensor (n,)``.
    x : Tensor of shape (n, d)
        Starting points; entries outside ``mask`` are held fixed.
    mask : Tensor of bool, shape (n, d)
        Entries to optimize.
    n_steps : int, default=200
        Adam steps.
    learning_rate : float, default=0.05
        Adam's step size.
    chunk_rows : int or None, default=None
        Optimize this many rows at a time (memory of one block). Adam acts entry
        by entry on an energy summed over rows, so the result does not depend on
        it. ``None`` optimizes every row at once.

    Returns
    -------
    ModeSearch
        The points, shape (n, d), and which rows had not settled, shape (n,).

    Examples
    --------
    >>> import torch
    >>> from skebflow._langevin import mode_search
    >>> energy = lambda x: 0.5 * ((x[:, 0] - x[:, 1]) ** 2) + 0.05 * x[:, 1] ** 2
    >>> x = torch.tensor([[2.0, 0.0], [100.0, 0.0]])
    >>> found = mode_search(energy, x, mask=torch.tensor([[False, True]] * 2))
    >>> round(found.x[0, 1].item(), 2)  # argmin over x1 of (2 - x1)^2 / 2 + x1^2 / 20
    1.82
    >>> found.unsettled.tolist()  # the second's, 90.9, beyond 200 steps of 0.05
    [False, True]
    """
    mask = mask.to(torch.bool)
    blocks = [
        _mode_block(energy, x[rows], mask[rows], n_steps, learning_rate)
        for rows in _row_blocks(x.shape[0], chunk_rows)
    ]
    if len(blocks) == 1:
        return blocks[0]
    return ModeSearch(
        torch.cat([block.x for block in blocks]),
        torch.cat([block.unsettled for block in blocks]),
    )


#: A chain that ends more than this many nats, beyond the spread of a typical
#: draw, above its conditional mode's energy sits where the conditional holds no
#: mass: see :func:`trapped_chains`.
_TRAPPED_MARGIN = 10.0


def trapped_chains(
    energy: Callable[[Tensor], Tensor],
    states: Tensor,
    mask: Tensor,
    *,
    n_steps: int = 200,
    learning_rate: float = 0.05,
    chunk_rows: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Which chains ended trapped in a false peak far below their conditional's
    mode, and those modes.

    A fitted flow's conditional can have small local peaks far from its mass (in
    its tails). A chain that starts beyond one climbs into it and, with a step
    adapted to the narrow conditional, cannot leave: its draw lands where the
    conditional holds, say, 1e-10 of its mass, and so does an imputation averaged
    over such draws. The conditional mode found by :func:`mode_search`
    from the missing entries at 0 (the standardized mean) tells them apart: a
    draw of a ``d``-dimensional conditional lies about ``d / 2`` nats above its
    mode's energy, give or take ``sqrt(d / 2)`` (a Gaussian's chi-square), so a
    chain more than ``d / 2 + 6 sqrt(d / 2) + 10`` nats above it is trapped. A
    lower separate mode would need to be ``e**10`` times wider than the mode to
    hold comparable mass; its chains stay where they are.

    Returns
    -------
    trapped : Tensor of bool, shape (n,)
    modes : Tensor of shape (n, d)
        The conditional modes (the observed entries as in ``states``).

    Examples
    --------
    >>> import torch
    >>> from skebflow._langevin import trapped_chains
    >>> def energy(x):  # a well at x1 = 0, a false one 30 nats higher at x1 = -3
    ...     peak = -0.5 * (x[:, 1] / 0.05) ** 2
    ...     false = -30.0 - 0.5 * ((x[:, 1] + 3.0) / 0.05) ** 2
    ...     return -torch.logaddexp(peak, false)
    >>> states = torch.tensor([[0.0, 0.01], [0.0, -3.0]], dtype=torch.float64)
    >>> mask = torch.tensor([[False, True], [False, True]])
    >>> trapped, modes = trapped_chains(energy, states, mask)
    >>> trapped.tolist(), round(modes[1, 1].item(), 3)
    ([False, True], 0.0)
    """
    mask = mask.to(torch.bool)
    # One search per distinct row (the same observed values and missing
    # entries): an imputer's copies of a row share their conditional.
    starts = torch.where(mask, 0.0, states)
    distinct, index = torch.unique(
        torch.cat([starts, mask.to(starts.dtype)], dim=1), dim=0, return_inverse=True
    )
    distinct_modes, _ = mode_search(
        energy,
        distinct[:, : states.shape[1]],
        mask=distinct[:, states.shape[1] :].to(torch.bool),
        n_steps=n_steps,
        learning_rate=learning_rate,
        chunk_rows=chunk_rows,
    )
    ends = _blockwise_energy(energy, states, chunk_rows)
    tops = _blockwise_energy(energy, distinct_modes, chunk_rows)[index]
    modes = distinct_modes[index]
    half = mask.sum(dim=1).to(states.dtype) / 2.0
    margin = half + 6.0 * half.sqrt() + _TRAPPED_MARGIN
    trapped = torch.isfinite(tops) & (ends - tops > margin)
    return trapped, modes


def _blockwise_energy(
    energy: Callable[[Tensor], Tensor], x: Tensor, chunk_rows: int | None
) -> Tensor:
    """``energy(x)`` without gradients, ``chunk_rows`` rows at a time."""
    with torch.no_grad():
        return torch.cat([energy(x[rows]) for rows in _row_blocks(len(x), chunk_rows)])


def _mode_block(
    energy: Callable[[Tensor], Tensor],
    x: Tensor,
    mask: Tensor,
    n_steps: int,
    learning_rate: float,
) -> ModeSearch:
    """:func:`mode_search` on one block of rows."""
    fixed = x.detach().clone()
    free = fixed.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([free], lr=learning_rate)
    last = min(n_steps, max(5, n_steps // 10))  # the steps whose way is judged
    mark, path = fixed, torch.zeros_like(fixed)
    mark_energy = torch.full((x.shape[0],), math.inf, dtype=x.dtype, device=x.device)
    for step in range(n_steps):
        judged = step >= n_steps - last
        before = free.detach().clone() if judged else None
        optimizer.zero_grad(set_to_none=True)
        with torch.enable_grad():
            row_energy = energy(torch.where(mask, free, fixed))
            row_energy.sum().backward(inputs=[free])
        if step == n_steps - last:
            mark, mark_energy = before, row_energy.detach()
        optimizer.step()
        if judged:
            path += (free.detach() - before).abs()
    found = torch.where(mask, free.detach(), fixed)
    with torch.no_grad():
        end_energy = energy(found)
    net = (free.detach() - mark).abs()
    # still going one way (not swinging about a mode) and still gaining
    one_way = (mask & (net > _SETTLED_SHARE * path)).any(dim=1)
    unsettled = one_way & (mark_energy - end_energy > _SETTLED_GAIN)
    # a search that ended where the energy or the point is not finite found no mode
    lost = ~torch.isfinite(end_energy) | ~torch.isfinite(found).all(dim=1)
    return ModeSearch(found, unsettled | (mask.any(dim=1) & lost))
