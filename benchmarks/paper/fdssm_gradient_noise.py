"""Why ``fdssm`` trails ``ssm`` on MNIST-FC: the noise of its parameter gradient.

Both objectives estimate the same sliced Fisher divergence, ``(1/2 |grad E|^2 -
v^T Hess E v) / D`` in expectation. ``ssm`` is the variance-reduced form: it
computes ``|grad E|^2`` exactly and draws only the trace term's projection.
``fdssm`` estimates both terms from one direction ``v`` on the sphere of radius
``xi``: ``(E(x + v) - E(x - v))^2 / 8`` stands for ``xi^2 |grad E|^2 / (2 D)``
through ``(v^T grad E)^2``, whose relative variance is about 2, on a term that is
far larger than the loss it nearly cancels with.

The script takes the paper's MNIST-FC model (``benchmarks/paper/mnist_fc.py``),
trains it ``--warmup`` steps with ``ssm`` at the paper's settings (RMSprop 1e-4,
batch 100, MaP), then, on one fixed batch of 100 preprocessed images, draws each
estimator's parameter gradient ``--trials`` times (new projections each time). The
reference is ``ssm``'s mean gradient over its draws, whose own noise is small:
both estimators have that expectation (``fdssm`` up to its ``O(xi^2)`` bias). For
each estimator it prints the median norm of one draw and the root-mean-square
distance of one draw from the reference, also as a multiple of the reference's
norm: the size of the projections' noise against the gradient they estimate.
``xK`` averages K independent draws (K slices per row).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/paper/fdssm_gradient_noise.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine_line  # noqa: E402
from mnist_fc import make_run  # noqa: E402
from mnist_fc_converged import load_data  # noqa: E402

from skebflow.objectives import bind_objective  # noqa: E402


def gradient_draws(
    flow: torch.nn.Module,
    batch: torch.Tensor,
    loss: Callable[..., torch.Tensor],
    n_draws: int,
    trials: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """``trials`` draws of the parameter gradient, one per row of the result; each
    averages ``n_draws`` independent draws of the loss."""
    parameters = list(flow.parameters())
    draws = []
    for _ in range(trials):
        value = (
            sum(loss(flow, batch, generator=generator).mean() for _ in range(n_draws))
            / n_draws
        )
        gradient = torch.autograd.grad(value, parameters)
        draws.append(torch.cat([g.flatten() for g in gradient]))
    return torch.stack(draws)


def rms_distance(draws: torch.Tensor, reference: torch.Tensor, own: bool) -> float:
    """Root-mean-square distance of one draw from ``reference``; ``own`` when the
    reference is these draws' own mean (then corrected by ``T / (T - 1)``)."""
    squared = (draws - reference).square().sum(dim=1).mean()
    if own:
        squared = squared * len(draws) / (len(draws) - 1)
    return float(squared.sqrt())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--warmup", type=int, default=150, help="ssm steps first")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(machine_line(), flush=True)
    train, _, _ = load_data(args.seed)
    run = make_run("ssm", "ssm", map_=True, ema=False, seed=args.seed)
    generator = torch.Generator().manual_seed(args.seed + 1)
    order = torch.randperm(len(train), generator=generator)
    for index in order.split(100)[: args.warmup]:
        with torch.no_grad():
            batch, _ = run.preprocessing(train[index], generator)
        run.optimizer.zero_grad(set_to_none=True)
        run.loss(run.flow, batch, generator=generator).mean().backward()
        run.optimizer.step()
    with torch.no_grad():
        batch, _ = run.preprocessing(train[order[:100]], generator)
    estimators = [
        ("ssm (variance-reduced, Rademacher)", "ssm", {}, 1),
        ("fdssm, xi = 1 (the paper's)", "fdssm", {"fd_epsilon": 1.0}, 1),
        ("fdssm, xi = 0.3", "fdssm", {"fd_epsilon": 0.3}, 1),
        ("fdssm, xi = 0.1", "fdssm", {"fd_epsilon": 0.1}, 1),
        ("fdssm, xi = 1, x4", "fdssm", {"fd_epsilon": 1.0}, 4),
        ("fdssm, xi = 1, x16", "fdssm", {"fd_epsilon": 1.0}, 16),
    ]
    print(
        f"after {args.warmup} ssm steps; one batch of 100 images, {args.trials}"
        " draws of each gradient; reference: ssm's mean gradient\n"
    )
    print(
        "| estimator | median norm of one draw | rms distance of one draw from"
        " the reference | as a multiple of the reference's norm |"
    )
    print("|---|---:|---:|---:|")
    reference = None
    for label, name, settings, n_draws in estimators:
        draws = gradient_draws(
            run.flow,
            batch,
            bind_objective(name, **settings),
            n_draws,
            args.trials,
            generator,
        )
        own = reference is None
        if own:  # ssm, first: its mean is the reference
            reference = draws.mean(dim=0)
        distance = rms_distance(draws, reference, own)
        median = statistics.median(float(d.norm()) for d in draws)
        print(
            f"| {label} | {median:.2f} | {distance:.2f} |"
            f" {distance / float(reference.norm()):.2f} |",
            flush=True,
        )
    print(f"\nnorm of the reference: {float(reference.norm()):.3f}")


if __name__ == "__main__":
    main()
