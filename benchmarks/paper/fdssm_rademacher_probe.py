"""Does a Rademacher direction quiet ``fdssm``'s gradient on MNIST-FC?

``fdssm`` draws its direction uniformly on the sphere. For a quadratic form
``v^T A v`` a Rademacher ``v`` (signs, scaled to the same norm) has the variance
``2 (|A|_F^2 - sum_i A_ii^2)`` instead of about ``2 |A|_F^2``: far less when ``A``
is concentrated on few coordinates. This probe (5 December, fourth session, issue
13) measures it as ``fdssm_gradient_noise.py`` measures the sphere: the paper's
MNIST-FC model after ``--warmup`` ``ssm`` steps, one batch of 100 images, 12 draws
of the parameter gradient per estimator, the reference ``ssm``'s mean gradient; the
direction is swapped by replacing ``skebflow.objectives._orthonormal_directions``
for the Rademacher rows only.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/paper/fdssm_rademacher_probe.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine_line  # noqa: E402
from fdssm_gradient_noise import gradient_draws, rms_distance  # noqa: E402
from mnist_fc import make_run  # noqa: E402
from mnist_fc_converged import load_data  # noqa: E402

import skebflow.objectives as objectives  # noqa: E402
from skebflow.objectives import bind_objective  # noqa: E402


def rademacher(like: torch.Tensor, n_slices: int, generator: torch.Generator):
    """Unit-norm sign vectors, shaped as ``_orthonormal_directions``' output."""
    gaussian = torch.randn(
        (n_slices, *like.shape), generator=generator, dtype=like.dtype
    )
    return torch.where(gaussian >= 0, 1.0, -1.0).to(like.dtype) / like.shape[1] ** 0.5


def main() -> None:
    torch.set_num_threads(1)
    print(machine_line(), flush=True)
    train, _, _ = load_data(0)
    sphere = objectives._orthonormal_directions
    for warmup in (150, 1500):
        run = make_run("ssm", "ssm", map_=True, ema=False, seed=0)
        generator = torch.Generator().manual_seed(1)
        order = torch.randperm(len(train), generator=generator)
        batches = order.split(100)
        for step in range(warmup):
            with torch.no_grad():
                batch, _ = run.preprocessing(
                    train[batches[step % len(batches)]], generator
                )
            run.optimizer.zero_grad(set_to_none=True)
            run.loss(run.flow, batch, generator=generator).mean().backward()
            run.optimizer.step()
        with torch.no_grad():
            batch, _ = run.preprocessing(train[order[:100]], generator)
        draws = gradient_draws(run.flow, batch, bind_objective("ssm"), 1, 12, generator)
        reference = draws.mean(dim=0)
        norm = float(reference.norm())
        print(
            f"after {warmup} ssm steps: reference norm {norm:.3f}, ssm's noise"
            f" {rms_distance(draws, reference, True) / norm:.2f} of it",
            flush=True,
        )
        for label, directions in (("sphere", sphere), ("rademacher", rademacher)):
            objectives._orthonormal_directions = directions
            try:
                draws = gradient_draws(
                    run.flow,
                    batch,
                    bind_objective("fdssm", fd_epsilon=1.0),
                    1,
                    12,
                    generator,
                )
            finally:
                objectives._orthonormal_directions = sphere
            noise = rms_distance(draws, reference, False) / norm
            print(f"  fdssm, {label} direction: noise {noise:.2f} of it", flush=True)


if __name__ == "__main__":
    main()
