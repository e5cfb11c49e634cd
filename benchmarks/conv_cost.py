"""Cost of one training step of each objective on the paper's convolutional flow.

For each image shape ``(C, n, n)`` the script builds ``cnn((C, n, n))`` (six 7 x 7
convolutions, squeezes between the blocks; float32, CPU) and gives every objective its
own copy of it and its own Adam optimizer. A *step* is what training does per
mini-batch::

    optimizer.zero_grad()
    loss = objective(flow, x, generator=g).mean()
    loss.backward(inputs=parameters)
    optimizer.step()

For ``ml`` the loss holds the log-normalizer, ``-sum log|det J_conv|`` over the six
convolutions, each the ``slogdet`` of the dense ``D x D`` Jacobian built from the
kernel, and the backward pass differentiates it (``O(D^3)`` per convolution). The
score-matching objectives (``ssm`` with one Rademacher slice, ``dsm`` with sigma 0.1,
``fdssm`` with radius 0.1) never build it. ``plain`` is ``flow.energy(x).mean() / D``
with the same backward and optimizer step: the cheapest gradient step of the network.

Protocol: standard normal rows from a seeded generator, batch 100, one torch thread;
the objectives run interleaved round-robin (the first one rotates each repeat) so that
load from other processes hits all alike; ``--warmup`` untimed rounds, then the median
of ``--repeats`` timed steps (at least 3; fewer than ``--repeats`` when a round would
push the shape past ``--budget`` seconds). Subnormal floats are flushed to zero for
every objective (``--keep-subnormals`` to keep them): from the paper's exact ``-I``
kernels, the LU factorizations behind ml's log-determinants otherwise fill in with
subnormal entries, which made ml's step 3-5x slower on the machine of the first runs.
Results are written after every shape, so an interrupted sweep keeps the shapes that
finished.

Run::

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/conv_cost.py --plot

(``--sizes 16`` for a quick check; ``--plot-only`` redraws the figure from the JSON.)
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from skebflow.flows import Flow, cnn
from skebflow.objectives import bind_objective, objective_settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from objective_cost import cpu_model, load_average  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks/results"
PLOT_PATH = ROOT / "docs/_static/conv_cost.png"
SETTINGS = {"n_slices": 1, "noise_std": 0.1, "fd_epsilon": 0.1}
BASELINE = "plain"
REFERENCE = "ml"
OBJECTIVE_NAMES = ["ml", "ssm", "dsm", "fdssm"]
# The targets for the speed-up over ml at (3, 32, 32).
TARGETS = {"ssm": 15.0, "dsm": 25.0, "fdssm": 25.0}


class Tee:
    """Print to the terminal and keep a copy for the log file."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)


def machine(threads: int) -> dict[str, str | int]:
    return {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count() or 0,
        "torch": torch.__version__,
        "threads": threads,
        "python": platform.python_version(),
        "load_average_start": load_average(),
    }


def plain(flow: Flow, x: torch.Tensor, *, generator=None) -> torch.Tensor:
    """Baseline: the energy of the batch, one forward and one backward."""
    return flow.energy(x) / x.shape[1]


class Runner:
    """One objective with its own flow, optimizer and random stream."""

    def __init__(self, name: str, flow: Flow, x: torch.Tensor, seed: int) -> None:
        self.name = name
        self.flow = flow
        self.x = x
        if name == BASELINE:
            self.objective = plain
        else:
            accepted = objective_settings(name)
            settings = {k: v for k, v in SETTINGS.items() if k in accepted}
            self.objective = bind_objective(name, **settings)
        self.parameters = list(flow.parameters())
        self.optimizer = torch.optim.Adam(self.parameters, lr=1e-5)
        self.generator = torch.Generator().manual_seed(seed)

    def step(self) -> float:
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.objective(self.flow, self.x, generator=self.generator).mean()
        loss.backward(inputs=self.parameters)
        self.optimizer.step()
        elapsed = time.perf_counter() - start
        value = float(loss.detach())
        if not math.isfinite(value):
            raise RuntimeError(f"{self.name}: non-finite loss {value}")
        return elapsed


def measure(
    shape: tuple[int, int, int], names: list[str], args: argparse.Namespace
) -> tuple[dict[str, list[float]], int]:
    n_features = math.prod(shape)
    x = torch.randn(
        args.batch_size, n_features, generator=torch.Generator().manual_seed(1)
    )
    template = cnn(shape, generator=torch.Generator().manual_seed(0))
    runners = [
        Runner(name, copy.deepcopy(template), x, seed=2 + index)
        for index, name in enumerate(names)
    ]
    round_seconds = 0.0
    for _ in range(args.warmup):
        start = time.perf_counter()
        for runner in runners:
            runner.step()
        round_seconds = time.perf_counter() - start
    repeats = args.repeats
    if round_seconds * repeats > args.budget:
        repeats = max(3, int(args.budget // max(round_seconds, 1e-9)))
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        shift = repeat % len(runners)
        for runner in runners[shift:] + runners[:shift]:
            times[runner.name].append(runner.step())
    return times, repeats


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---:" for _ in header) + "|")
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines)


def key_of(shape: tuple[int, int, int]) -> str:
    return "x".join(str(size) for size in shape)


def tables(results: dict, names: list[str]) -> tuple[str, str]:
    """Markdown tables of the median step times and of the speed-ups over ml."""
    shapes = [tuple(entry["shape"]) for entry in results["shapes"].values()]
    shapes.sort(key=lambda s: (s[0], s[1]))
    time_rows, ratio_rows = [], []
    for shape in shapes:
        entry = results["shapes"][key_of(shape)]
        medians = entry["median_s"]
        label = f"({shape[0]}, {shape[1]}, {shape[2]})"
        time_rows.append(
            [
                label,
                str(math.prod(shape)),
                *(f"{medians[name]:.3f}" for name in names),
                f"{medians[REFERENCE] - medians[BASELINE]:.3f}",
            ]
        )
        ratio_rows.append(
            [
                label,
                str(math.prod(shape)),
                *(
                    f"{medians[REFERENCE] / medians[name]:.1f}"
                    for name in names
                    if name != REFERENCE
                ),
            ]
        )
    time_table = markdown_table(
        ["shape", "D", *(f"{name} s" for name in names), "ml - plain s"], time_rows
    )
    ratio_table = markdown_table(
        ["shape", "D", *(name for name in names if name != REFERENCE)], ratio_rows
    )
    return time_table, ratio_table


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {
        "plain": ("k", "--", "o"),
        "ssm": ("tab:blue", "-", "o"),
        "dsm": ("tab:green", "-", "^"),
        "fdssm": ("tab:purple", "-", "v"),
    }
    entries = list(results["shapes"].values())
    channels = sorted({entry["shape"][0] for entry in entries})
    fig, axes = plt.subplots(
        1, len(channels), figsize=(5.2 * len(channels), 4.4), dpi=150, squeeze=False
    )
    all_ratios = [
        entry["median_s"][REFERENCE] / entry["median_s"][name]
        for entry in entries
        for name in styles
        if name in entry["median_s"]
    ]
    for ax, channel in zip(axes[0], channels, strict=True):
        rows = sorted(
            (entry for entry in entries if entry["shape"][0] == channel),
            key=lambda entry: entry["shape"][1],
        )
        sizes = [entry["shape"][1] for entry in rows]
        for name, (color, line, marker) in styles.items():
            if not all(name in entry["median_s"] for entry in rows):
                continue
            ratios = [
                entry["median_s"][REFERENCE] / entry["median_s"][name] for entry in rows
            ]
            ax.plot(
                sizes,
                ratios,
                color=color,
                linestyle=line,
                marker=marker,
                label=name + (" (energy + backward only)" if name == BASELINE else ""),
            )
        if channel == 3:
            # The targets at (3, 32, 32): one bar per value, in the legend.
            by_value: dict[float, list[str]] = {}
            for name, target in TARGETS.items():
                by_value.setdefault(target, []).append(name)
            for (target, target_names), shade in zip(
                sorted(by_value.items(), reverse=True), ("0.1", "0.55"), strict=False
            ):
                ax.plot(
                    [32],
                    [target],
                    linestyle="none",
                    marker="_",
                    markersize=22,
                    markeredgewidth=2.5,
                    color=shade,
                    label=f"target at n = 32: {', '.join(target_names)}"
                    f" \u2265 {target:g}x",
                )
        ax.axhline(1.0, color="0.6", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_ylim(
            0.6 * min(all_ratios + [1.0]),
            2.0 * max(all_ratios + list(TARGETS.values())),
        )
        ax.set_xlim(min(sizes) - 2, max(sizes) + 6)
        ax.set_xticks(sizes)
        ax.set_xticklabels([str(n) for n in sizes])
        ax.set_xlabel(f"image side n  (D = {channel} n\u00b2)")
        ax.set_ylabel("speed-up over ml per training step (t_ml / t)")
        ax.set_title(f"cnn on ({channel}, n, n) images", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7.5, loc="best")
    info = results["machine"]
    fig.suptitle(
        f"Per-step cost, batch {results['settings']['batch_size']}, float32,"
        f" {info['threads']} thread; {info['cpu']}",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 24, 28, 32, 40])
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--budget",
        type=float,
        default=150.0,
        help="seconds of timed rounds allowed per shape (default 150); fewer"
        " repeats, at least 3, above it",
    )
    parser.add_argument(
        "--keep-subnormals",
        action="store_true",
        help="do not flush subnormal floats to zero (see the note in the log)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "conv_cost.json")
    parser.add_argument("--log", type=Path, default=RESULTS / "conv_cost.log")
    parser.add_argument("--plot", action="store_true", help=f"write {PLOT_PATH}")
    parser.add_argument("--plot-path", type=Path, default=PLOT_PATH)
    parser.add_argument(
        "--plot-only", action="store_true", help="redraw the plot from --out and exit"
    )
    args = parser.parse_args()
    if args.plot_only:
        plot(json.loads(args.out.read_text()), args.plot_path)
        return
    if args.warmup < 1 or args.repeats < 3:
        parser.error("--warmup must be at least 1 and --repeats at least 3")

    torch.set_num_threads(args.threads)
    # The paper's kernels start at exactly -I; after a few small steps the LU
    # factorizations and inverses behind ml's log-determinants fill in with entries
    # below float32's normal range, and subnormal arithmetic made ml's step 3-5x
    # slower on this CPU. Flushing them (for every objective alike) keeps that
    # pathology out of the baseline.
    flush = (not args.keep_subnormals) and torch.set_flush_denormal(True)
    say = Tee()
    info = machine(args.threads)
    names = [BASELINE, *OBJECTIVE_NAMES]
    say(
        f"machine: {info['platform']}; CPU {info['cpu']} ({info['logical_cpus']}"
        f" logical CPUs); torch {info['torch']}; {args.threads} thread(s);"
        f" Python {info['python']}; load average {info['load_average_start']}"
    )
    say(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    say(
        f"setup: cnn((C, n, n)) float32 CPU (6 convolutions 7x7, 2 squeezes), batch"
        f" {args.batch_size}, Adam; settings {SETTINGS}; warmup {args.warmup},"
        f" repeats {args.repeats}, interleaved round-robin, medians; subnormals"
        f" flushed to zero: {bool(flush)}"
    )
    results: dict = {
        "machine": info,
        "settings": {
            "batch_size": args.batch_size,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "budget_s": args.budget,
            "objective_settings": SETTINGS,
            "dtype": "float32",
            "flush_subnormals": bool(flush),
        },
        "shapes": {},
    }
    started = time.perf_counter()
    shapes = [(c, n, n) for c in sorted(args.channels) for n in sorted(args.sizes)]
    for shape in shapes:
        t0 = time.perf_counter()
        times, repeats = measure(shape, names, args)
        medians = {name: statistics.median(times[name]) for name in names}
        results["shapes"][key_of(shape)] = {
            "shape": list(shape),
            "n_features": math.prod(shape),
            "repeats": repeats,
            "times_s": times,
            "median_s": medians,
            "speedup_over_ml": {
                name: medians[REFERENCE] / medians[name] for name in names
            },
        }
        results["machine"]["load_average_end"] = load_average()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        say(
            f"  {shape} D={math.prod(shape)}: {time.perf_counter() - t0:.0f} s,"
            f" {repeats} repeats; "
            + ", ".join(f"{name} {medians[name]:.3f}" for name in names)
            + " s; speed-up over ml: "
            + ", ".join(
                f"{name} {medians[REFERENCE] / medians[name]:.1f}x"
                for name in names
                if name != REFERENCE
            )
        )
    say(f"total {time.perf_counter() - started:.0f} s; load average {load_average()}")
    time_table, ratio_table = tables(results, names)
    say("\nMedian seconds per training step:\n")
    say(time_table)
    say(f"\nSpeed-up over {REFERENCE} (t_{REFERENCE} / t; above 1 is faster):\n")
    say(ratio_table)
    args.log.parent.mkdir(parents=True, exist_ok=True)
    args.log.write_text("\n".join(say.lines) + "\n")
    if args.plot:
        plot(results, args.plot_path)
        say(f"\nplot: {args.plot_path}")


if __name__ == "__main__":
    main()
