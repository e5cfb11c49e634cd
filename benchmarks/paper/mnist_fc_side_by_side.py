"""When each score-matching objective comes within 1 % of ``ml``, timed side by side.

Issue 13's target for MNIST-FC at the paper's schedule: each score-matching
objective's validation NLL comes within 1 % of ``ml``'s best validation NLL (the
converged run's, in ``results/mnist_fc_converged.json``) in less training time
than ``ml``'s does. The converged runs were timed on different days, and this
machine's speed varies by up to 1.5x from hour to hour, so their clocks do not
compare. Here the objective and ``ml`` run at the same time, one process per core
(``benchmarks/paper/mnist_fc_converged.py``, same seed, each to ``--max-steps``
just past its crossing, patience off), so both clocks (each training thread's CPU
time) see the same machine. The steps at which the curves cross the line are
those of the converged runs (the runs are deterministic); only the clocks are new.

Run (about 15 minutes per pair on two cores; nothing else should run)::

    OMP_NUM_THREADS=1 python benchmarks/paper/mnist_fc_side_by_side.py \\
        --objective dsm --steps 24500 --ml-steps 9000 --stem ml
    OMP_NUM_THREADS=1 python benchmarks/paper/mnist_fc_side_by_side.py \\
        --objective ssm --steps 9500 --ml-steps 9000 --stem ml2
    python benchmarks/paper/mnist_fc_side_by_side.py --report dsm:ml ssm:ml2

Each run writes ``results/mnist_fc_sidebyside_<name>.json`` and ``.log`` (``<name>``
is the objective, or ``--stem`` for the ``ml`` run beside it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "results"


def result_path(name: str, suffix: str = ".json") -> Path:
    """Where the side-by-side run ``name`` is stored."""
    return RESULTS / f"mnist_fc_sidebyside_{name}{suffix}"


def run_pair(objective: str, steps: int, ml_steps: int, ml_name: str) -> None:
    """Train ``objective`` and ``ml`` at the same time, one process each."""
    processes = []
    for name, which, cap in ((objective, objective, steps), (ml_name, "ml", ml_steps)):
        command = [
            sys.executable,
            str(HERE / "mnist_fc_converged.py"),
            "--objectives",
            which,
            "--max-steps",
            str(cap),
            "--patience",
            "1000",
            "--out",
            str(result_path(name)),
            "--figure",
            str(result_path(name, ".png")),
        ]
        log = result_path(name, ".log").open("w")
        processes.append(
            subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        )
    for process in processes:
        process.wait()


def crossing(curve: list, line: float) -> tuple[int, float] | None:
    """The first validation (step, clock in s) at or below ``line``."""
    for seconds, nll, step in curve:
        if nll <= line:
            return step, seconds
    return None


def report(pairs: list[str]) -> None:
    converged = json.loads((RESULTS / "mnist_fc_converged.json").read_text())
    (ml_best,) = (
        row["best_validation_nll"]
        for row in converged["runs"]
        if row["objective"] == "ml"
    )
    line = 1.01 * ml_best
    print(
        f"ml's best validation NLL {ml_best:.2f} (converged run); 1 % line {line:.2f}"
    )
    print(
        "| objective | crossed at step | its clock, s | steps/s |"
        " `ml` beside it crossed at step | `ml`'s clock, s | `ml` steps/s |"
        " objective's time / `ml`'s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for pair in pairs:
        name, ml_name = pair.split(":")
        rows = []
        for stem in (name, ml_name):
            run = json.loads(result_path(stem).read_text())["runs"][0]
            last_seconds, _, last_step = run["curve"][-1]
            rows.append((run, crossing(run["curve"], line), last_step / last_seconds))
        (run, hit, rate), (_, ml_hit, ml_rate) = rows
        if hit is None or ml_hit is None:
            print(
                f"| `{run['objective']}` | not crossed by its last step | | | | | | |"
            )
            continue
        print(
            f"| `{run['objective']}` | {hit[0]} | {hit[1]:.0f} | {rate:.1f} |"
            f" {ml_hit[0]} | {ml_hit[1]:.0f} | {ml_rate:.1f} |"
            f" {hit[1] / ml_hit[1]:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objective", choices=("ssm", "dsm", "fdssm", "sml"))
    parser.add_argument("--steps", type=int, help="the objective's --max-steps")
    parser.add_argument("--ml-steps", type=int, default=9000)
    parser.add_argument("--stem", default="ml", help="name of the ml run beside it")
    parser.add_argument(
        "--report", nargs="+", metavar="OBJECTIVE:ML_STEM", help="print the table"
    )
    args = parser.parse_args()
    if args.report:
        report(args.report)
        return
    if args.objective is None or args.steps is None:
        parser.error("give --objective and --steps, or --report")
    run_pair(args.objective, args.steps, args.ml_steps, args.stem)


if __name__ == "__main__":
    main()
