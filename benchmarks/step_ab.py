"""Cost of a training step: an earlier commit's code against the working tree's.

The package at ``--base`` (a git revision) is exported with ``git archive`` into a
temporary folder as ``skebflow_base`` and imported beside ``skebflow``, so both run
in one process, on the same weights and batches, alternating round by round: the
machine's changes of load hit both alike. For each objective, ``--rounds`` rounds
of ``--steps`` Adam steps of ``--batch-size`` rows of the default flow (one flow,
``--features`` features, float32, one thread); medians of the per-round times.

Run::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/step_ab.py --base 5931a7f
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from _machine import machine_line  # noqa: E402
from sklearn.datasets import make_classification

ROOT = Path(__file__).resolve().parents[1]


def import_base(revision: str, folder: Path):  # noqa: ANN201 - a module
    """The package as it was at ``revision``, imported as ``skebflow_base``."""
    archive = subprocess.run(
        ["git", "archive", revision, "skebflow"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    shutil.move(folder / "skebflow", folder / "skebflow_base")
    sys.path.insert(0, str(folder))
    return importlib.import_module("skebflow_base")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True)
    parser.add_argument("--objectives", default="ml,ssm")
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    import skebflow
    import skebflow.objectives

    with tempfile.TemporaryDirectory() as folder:
        base = import_base(args.base, Path(folder))
        importlib.import_module("skebflow_base.objectives")
        print(machine_line(f"base {args.base}"))
        X, _ = make_classification(
            2000,
            args.features,
            n_informative=min(10, args.features),
            n_redundant=min(2, args.features - min(10, args.features)),
            random_state=0,
        )
        packages = {args.base: base, "working tree": skebflow}
        flows = {}
        for name, package in packages.items():
            est = package.EBFlowDensity(
                device="cpu",
                random_state=0,
                max_iter=1,
                n_flows=1,
                early_stopping=False,
            ).fit(X)
            flows[name] = est.flow_.float()
        flows["working tree"].load_state_dict(flows[args.base].state_dict())
        x = torch.randn(
            args.batch_size, args.features, generator=torch.Generator().manual_seed(0)
        )
        for objective in args.objectives.split(","):
            times: dict[str, list[float]] = {name: [] for name in flows}
            for round_index in range(args.rounds):
                for name, flow in flows.items():
                    loss_function = getattr(packages[name].objectives, objective)
                    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-4)
                    generator = torch.Generator().manual_seed(round_index)
                    start = time.perf_counter()
                    for _ in range(args.steps):
                        optimizer.zero_grad()
                        loss_function(flow, x, generator=generator).mean().backward()
                        optimizer.step()
                    times[name].append((time.perf_counter() - start) / args.steps)
            before = statistics.median(times[args.base]) * 1e3
            after = statistics.median(times["working tree"]) * 1e3
            print(
                f"{objective}: {args.base} {before:.2f} ms/step, working tree"
                f" {after:.2f} ms/step, speed-up {before / after:.2f}x"
            )


if __name__ == "__main__":
    main()
