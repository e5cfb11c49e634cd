"""Peak memory and time of ``sample_conditional`` with its chains in blocks or not.

Fits the default ``EBFlowDensity`` (two epochs: the model's size, not its quality,
sets the memory) on 2 000 rows x 20 standard-normal columns, then fills a share
``--missing`` (10 %) of the entries of ``--rows`` fresh rows by ``--n-steps``
Langevin steps, once with the chains run 2 048 at a time (the estimator as it is)
and once all at once (``_LANGEVIN_CHUNK_ROWS = None``, as before 4 December). Each
configuration runs in its own process, one after the other, so that each peak
resident set size is its own (``ru_maxrss``, which includes the fit's). Run from
another checkout (``git worktree``), the same command measures that commit's code.

    OMP_NUM_THREADS=1 python benchmarks/conditional_memory.py --rows 4000 40000
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
import warnings

import numpy as np
import torch
from _machine import machine_line


def run_one(rows: int, blocks: bool, n_steps: int, missing: float) -> None:
    """One configuration, in this process: prints rows, mode, peak MB, seconds."""
    import skebflow._density as density
    from skebflow import EBFlowDensity

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    if not blocks:
        density._LANGEVIN_CHUNK_ROWS = None
    rng = np.random.RandomState(0)
    model = EBFlowDensity(max_iter=2, random_state=0, device="cpu")
    model.fit(rng.normal(size=(2000, 20)))
    X = rng.normal(size=(rows, 20))
    X[rng.uniform(size=X.shape) < missing] = np.nan
    start = time.perf_counter()
    model.sample_conditional(X, random_state=0, n_steps=n_steps)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    mode = "blocks of 2 048" if blocks else "all at once"
    print(f"| {rows} | {mode} | {peak:.0f} | {seconds:.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[4000, 40000])
    parser.add_argument("--n-steps", type=int, default=3)
    parser.add_argument(
        "--missing", type=float, default=0.1, help="share of entries missing"
    )
    parser.add_argument("--one", choices=["blocks", "whole"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run_one(args.rows[0], args.one == "blocks", args.n_steps, args.missing)
        return
    print(
        machine_line(f"{args.n_steps} Langevin steps, {args.missing:g} missing"),
        flush=True,
    )
    print("| rows | chains | peak RSS (MB) | seconds |\n|---:|---|---:|---:|")
    for rows in args.rows:
        for one in ("blocks", "whole"):
            command = [sys.argv[0], "--rows", str(rows), "--one", one]
            command += ["--n-steps", str(args.n_steps), "--missing", str(args.missing)]
            subprocess.run([sys.executable, *command], check=True)


if __name__ == "__main__":
    main()
