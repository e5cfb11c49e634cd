"""Every script of examples/ runs, quickly, and produces a figure.

The gallery of the docs executes the examples with their full settings (``make
docs``); CI builds the docs without executing them, so this test guards the examples
against rot instead. Each example runs in a fresh interpreter, in a temporary working
directory, offline, with ``SKEBFLOW_EXAMPLE_QUICK=1`` (which the examples read to
shrink their data and training to a smoke test), matplotlib's Agg backend and one
torch thread. It passes when the script exits cleanly and leaves at least one figure:
open at the end (Sphinx-Gallery's convention) or written as a PNG file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(p for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))

# Command-line arguments of the examples that are also scripts with options, and do
# not read SKEBFLOW_EXAMPLE_QUICK.
QUICK_ARGUMENTS = {"quickstart.py": ["--max-iter", "3"]}

# A guard against a hung example, not a timing test: on an idle two-core machine the
# slowest example takes well under a minute in quick mode, and 120 s failed once when
# the two cores were shared with three benchmark processes (4 December).
TIMEOUT_S = 300

RUNNER = """
import runpy, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
path = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(path, run_name="__main__")
print(f"OPEN_FIGURES={len(plt.get_fignums())}")
"""


def test_examples_are_found():
    names = {script.name for script in SCRIPTS}
    assert {"quickstart.py", "plot_2d_densities.py", "plot_grid_search.py"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_example_runs_and_draws(script: Path, tmp_path: Path) -> None:
    environment = {
        **os.environ,
        "SKEBFLOW_EXAMPLE_QUICK": "1",
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONHASHSEED": "0",
    }
    command = [
        sys.executable,
        "-c",
        RUNNER,
        str(script),
        *QUICK_ARGUMENTS.get(script.name, []),
    ]
    try:
        completed = subprocess.run(
            command,
            cwd=tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(
            f"{script.name} ran longer than {TIMEOUT_S} s in quick mode: {error}"
        )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, f"{script.name} failed:\n{output[-4000:]}"

    open_figures = 0
    for line in completed.stdout.splitlines():
        if line.startswith("OPEN_FIGURES="):
            open_figures = int(line.split("=", 1)[1])
    written = list(tmp_path.rglob("*.png"))
    assert open_figures + len(written) > 0, (
        f"{script.name} ran but drew no figure (none open at the end, no PNG"
        f" written):\n{output[-2000:]}"
    )
