"""Data-parallel training: seconds per epoch under ``torchrun``, 2 processes against 1.

Launches ``python -m torch.distributed.run --standalone --nproc_per_node=K`` on this
script for K = 1 and K = 2, alternately, ``--repeats`` times. Every rank holds the same
``--rows`` x ``--features`` table (a correlated Gaussian with a skewed column), uses
one torch thread and the gloo backend, and fits EBFlowDensity at its defaults but one
flow, no early stopping, ``objective=--objective`` and a global batch of
``--batch-size`` rows (split across the ranks). The time per epoch is
``(t(1 + E epochs) - t(1 epoch)) / E`` on rank 0 after an untimed warm-up fit, so
start-up, preprocessing and the final normalizer do not count. Prints the machine,
every launch, the medians and their ratio.

Run ``python benchmarks/torchrun_scaling.py`` on an otherwise idle machine (about
5 minutes with the defaults): the two ranks need both cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path


def table(rows: int, features: int, seed: int = 0):
    import numpy as np

    rng = np.random.RandomState(seed)
    mixing = rng.normal(size=(features, features)) / np.sqrt(features)
    X = rng.normal(size=(rows, features)) @ mixing
    X[:, 0] = np.exp(0.5 * X[:, 0])
    return X


def worker(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist

    from skebflow import EBFlowDensity

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    X = table(args.rows, args.features)
    warnings.simplefilter("ignore")
    seconds = {}
    # A first, untimed fit: lazy initializations, caches.
    for epochs in (1, 1, 1 + args.epochs):
        model = EBFlowDensity(
            n_flows=1,
            objective=args.objective,
            batch_size=args.batch_size,
            max_iter=epochs,
            early_stopping=False,
            # score matching would otherwise continue by maximum likelihood for
            # up to max_iter more epochs, counted in the per-epoch time
            likelihood_refinement=0,
            device="cpu",
            random_state=0,
        )
        dist.barrier()
        started = time.perf_counter()
        model.fit(X)
        dist.barrier()
        seconds[epochs] = time.perf_counter() - started
    if dist.get_rank() == 0:
        per_epoch = (seconds[1 + args.epochs] - seconds[1]) / args.epochs
        Path(args.worker).write_text(
            json.dumps({"world_size": dist.get_world_size(), "per_epoch": per_epoch})
        )
    dist.destroy_process_group()


def launch(n_processes: int, args: argparse.Namespace) -> float:
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory) / "result.json"
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={n_processes}",
            __file__,
            "--worker",
            str(out),
            "--rows",
            str(args.rows),
            "--features",
            str(args.features),
            "--epochs",
            str(args.epochs),
            "--objective",
            args.objective,
            "--batch-size",
            str(args.batch_size),
        ]
        environment = {**os.environ, "OMP_NUM_THREADS": "1"}
        subprocess.run(command, check=True, env=environment, capture_output=True)
        return json.loads(out.read_text())["per_epoch"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--objective", default="ml")
    parser.add_argument(
        "--batch-size", type=int, default=256, help="the global batch (all ranks)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    import torch

    print(
        f"machine: {platform.processor() or platform.machine()},"
        f" {os.cpu_count()} CPUs, torch {torch.__version__}, gloo, 1 thread per"
        f" rank; {args.rows} x {args.features}, objective {args.objective}, global"
        f" batch {args.batch_size}, {args.epochs} timed epochs",
        flush=True,
    )
    launch(1, args)  # warm-up: imports, file caches
    times: dict[int, list[float]] = {1: [], 2: []}
    for repeat in range(args.repeats):
        for n_processes in (1, 2):
            per_epoch = launch(n_processes, args)
            times[n_processes].append(per_epoch)
            print(
                f"  repeat {repeat}: {n_processes} process(es) {per_epoch:.3f} s/epoch"
            )
    one, two = statistics.median(times[1]), statistics.median(times[2])
    print(
        f"median s/epoch: 1 process {one:.2f}, 2 processes {two:.2f};"
        f" speed-up {one / two:.2f}x"
    )


if __name__ == "__main__":
    main()
