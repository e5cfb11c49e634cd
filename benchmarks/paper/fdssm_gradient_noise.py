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
estimator's parameter gradient ``--trials`` times (new projections each time) and
prints the median of their norms and the norm of their mean. Where the median
norm is far above the norm of the mean, the projections' noise dominates the
gradient. ``xK`` averages K independent draws (K slices per row).

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


def gradient_noise(
    flow: torch.nn.Module,
    batch: torch.Tensor,
    loss: Callable[..., torch.Tensor],
    n_draws: int,
    trials: int,
    generator: torch.Generator,
) -> tuple[float, float, float]:
    """Median gradient norm over ``trials``, the norm of the trials' mean gradient,
    and the mean loss; each trial averages ``n_draws`` independent draws."""
    parameters = list(flow.parameters())
    gradients, losses = [], []
    for _ in range(trials):
        value = (
            sum(loss(flow, batch, generator=generator).mean() for _ in range(n_draws))
            / n_draws
        )
        gradient = torch.autograd.grad(value, parameters)
        gradients.append(torch.cat([g.flatten() for g in gradient]))
        losses.append(float(value.detach()))
    norms = [float(g.norm()) for g in gradients]
    mean = torch.stack(gradients).mean(dim=0)
    return statistics.median(norms), float(mean.norm()), statistics.fmean(losses)


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
        " draws of each gradient\n"
    )
    print("| estimator | median gradient norm | norm of the mean gradient | loss |")
    print("|---|---:|---:|---:|")
    for label, name, settings, n_draws in estimators:
        median, of_mean, value = gradient_noise(
            run.flow,
            batch,
            bind_objective(name, **settings),
            n_draws,
            args.trials,
            generator,
        )
        print(f"| {label} | {median:.2f} | {of_mean:.2f} | {value:.4f} |", flush=True)


if __name__ == "__main__":
    main()
