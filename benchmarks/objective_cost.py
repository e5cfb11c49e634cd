"""Cost of one training step of every objective, against the dimension ``D``.

For each ``D`` the script builds one flow (``fc(D)`` by default, float32, CPU) and
gives every objective its own copy of it and its own Adam optimizer. A *step* is what
training does per mini-batch::

    optimizer.zero_grad()
    loss = objective(flow, x, generator=g).mean()
    loss.backward(inputs=parameters)   # no gradient into x
    optimizer.step()

Objectives: every entry of :data:`skebflow.objectives.OBJECTIVES` (``n_slices=1``,
``noise_std=0.1``, ``fd_epsilon=0.1``) and a baseline ``plain``, ``flow.energy(x)
.mean() / D`` (the per-dimension scale of the others) with the same backward and step:
the cheapest gradient step of the same network on the same batch.

Protocol: the data are standard normal rows from a seeded ``torch.Generator``; the
thread count is pinned; the objectives are interleaved round-robin within every repeat
(the starting objective rotates from repeat to repeat) so that load from other
processes hits all of them alike; ``--warmup`` untimed rounds come first; the figure
reported is the median over the timed repeats. The last warmup round sets the number
of repeats for each ``D``: ``--repeats`` normally; fewer (never fewer than 3) when the
repeats would exceed ``--budget`` seconds (maximum likelihood at large ``D`` does an
``O(D^3)`` slogdet and its backward every step); more (up to ``--max-repeats``) when
they would take less than ``--min-time`` seconds, so that at small ``D`` a few time
slices lost to other processes are less likely to move the median. The output says
which ``D`` got how many, and prints the load average at the start and the end.

The exponent of the step time in ``D`` is the least-squares slope of ``log t`` against
``log D`` over ``D >= --fit-from`` (256 by default).

Run ``python benchmarks/objective_cost.py --plot`` (about 5 minutes on 2 cores); the
plot goes to ``docs/_static/objective_cost.png``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from skebflow.flows import Flow, coupling, fc
from skebflow.objectives import OBJECTIVES, bind_objective, objective_settings

SETTINGS = {"n_slices": 1, "noise_std": 0.1, "fd_epsilon": 0.1}


def settings_of(name: str) -> dict[str, float]:
    """The entries of SETTINGS that objective ``name`` takes (the others, such as
    ``ssm``'s ``projection``, keep their defaults)."""
    return {key: SETTINGS[key] for key in objective_settings(name) if key in SETTINGS}


BASELINE = "plain"
REFERENCE = "ml"
PLOT_PATH = Path(__file__).resolve().parent.parent / "docs/_static/objective_cost.png"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def busy_cpus() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def machine(threads: int) -> dict[str, str | int]:
    return {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "logical_cpus": torch.multiprocessing.cpu_count(),
        "torch": torch.__version__,
        "threads": threads,
        "python": platform.python_version(),
    }


def plain(flow: Flow, x: torch.Tensor, *, generator=None) -> torch.Tensor:
    """Baseline: the energy of the batch, one forward and one backward."""
    return flow.energy(x) / x.shape[1]


def build(architecture: str, n_features: int) -> Flow:
    generator = torch.Generator().manual_seed(0)
    if architecture == "fc":
        return fc(n_features, generator=generator)
    return coupling(n_features, generator=generator)


class Runner:
    """One objective with its own flow, optimizer and random stream."""

    def __init__(self, name: str, flow: Flow, x: torch.Tensor, seed: int) -> None:
        self.name = name
        self.flow = flow
        self.x = x
        self.objective = (
            plain if name == BASELINE else bind_objective(name, **settings_of(name))
        )
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
        if self.x.grad is not None:
            raise RuntimeError(f"{self.name}: a gradient leaked into x")
        return 1000.0 * elapsed


def measure(
    n_features: int, names: list[str], args: argparse.Namespace
) -> tuple[dict[str, list[float]], int]:
    data_generator = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch_size, n_features, generator=data_generator)
    template = build(args.architecture, n_features)
    runners = [
        Runner(name, copy.deepcopy(template), x, seed=2 + index)
        for index, name in enumerate(names)
    ]
    del template
    round_seconds = 0.0
    for _ in range(args.warmup):
        start = time.perf_counter()
        for runner in runners:
            runner.step()
        round_seconds = time.perf_counter() - start
    round_seconds = max(round_seconds, 1e-6)
    repeats = args.repeats
    if round_seconds * repeats > args.budget:
        repeats = max(3, min(repeats, int(args.budget // round_seconds)))
    elif round_seconds * repeats < args.min_time:
        # Cheap steps: more repeats, so that the median is not at the mercy of a few
        # scheduler time slices taken by other processes.
        repeats = min(args.max_repeats, math.ceil(args.min_time / round_seconds))
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        shift = repeat % len(runners)
        for runner in runners[shift:] + runners[:shift]:
            times[runner.name].append(runner.step())
    return times, repeats


def fit_exponent(dims: list[int], values: list[float]) -> float:
    logs_d = [math.log(d) for d in dims]
    logs_t = [math.log(v) for v in values]
    mean_d, mean_t = statistics.fmean(logs_d), statistics.fmean(logs_t)
    numerator = sum(
        (a - mean_d) * (b - mean_t) for a, b in zip(logs_d, logs_t, strict=True)
    )
    return numerator / sum((a - mean_d) ** 2 for a in logs_d)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---:" for _ in header) + "|")
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines)


def plot(
    dims: list[int],
    medians: dict[int, dict[str, float]],
    names: list[str],
    title: str,
    path: Path,
    fit_from: int,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {
        "plain": ("k", "--", "o"),
        "ml": ("tab:red", "-", "s"),
        "sml": ("tab:orange", "-", "D"),
        "ssm": ("tab:blue", "-", "o"),
        "dsm": ("tab:green", "-", "^"),
        "fdssm": ("tab:purple", "-", "v"),
    }
    fig, ax = plt.subplots(figsize=(6.4, 4.6), dpi=150)
    for name in names:
        color, line, marker = styles.get(name, (None, "-", "o"))
        ax.plot(
            dims,
            [medians[d][name] for d in dims],
            color=color,
            linestyle=line,
            marker=marker,
            label=name + (" (forward + backward)" if name == BASELINE else ""),
        )
    # Guides: slope 2 through the plain step and slope 3 through ml, at the largest D.
    last = dims[-1]
    start = min((d for d in dims if d >= fit_from), default=dims[0])
    for slope, name, style in ((2, BASELINE, ":"), (3, REFERENCE, "-.")):
        if name not in medians[last]:
            continue
        anchor = medians[last][name]
        ax.plot(
            [start, last],
            [anchor * (start / last) ** slope, anchor],
            color="0.5",
            linestyle=style,
            linewidth=1,
            label=f"$\\propto D^{slope}$ (through {name})",
        )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(dims)
    ax.set_xticklabels([str(d) for d in dims])
    ax.set_ylim(
        bottom=0.5 * min(min(m.values()) for m in medians.values()),
        top=2.0 * max(max(m.values()) for m in medians.values()),
    )
    ax.set_xlabel("dimension D")
    ax.set_ylabel("ms per training step (median)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dims", type=int, nargs="+", default=[64, 256, 1024, 2048, 4096]
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--architecture", choices=("fc", "coupling"), default="fc")
    parser.add_argument(
        "--budget",
        type=float,
        default=150.0,
        help="seconds of timed repeats allowed per D (default 150);"
        " fewer repeats (at least 3) are taken above it",
    )
    parser.add_argument(
        "--min-time",
        type=float,
        default=5.0,
        help="seconds of timed repeats wanted per D (default 5);"
        " more repeats (at most --max-repeats) are taken below it",
    )
    parser.add_argument("--max-repeats", type=int, default=200)
    parser.add_argument(
        "--fit-from",
        type=int,
        default=256,
        help="smallest D used to fit the exponents (default 256)",
    )
    parser.add_argument("--out", type=Path, default=None, help="write a JSON file")
    parser.add_argument(
        "--plot", action="store_true", help=f"write a log-log plot to {PLOT_PATH}"
    )
    parser.add_argument("--plot-path", type=Path, default=PLOT_PATH)
    args = parser.parse_args()
    if args.warmup < 1:
        parser.error("--warmup must be at least 1")

    torch.set_num_threads(args.threads)
    info = machine(args.threads)
    names = [BASELINE, *OBJECTIVES]
    print(
        f"machine: {info['platform']}; CPU {info['cpu']} ({info['logical_cpus']}"
        f" logical CPUs); torch {info['torch']}; {info['threads']} threads;"
        f" Python {info['python']}; load average {load_average()}"
    )
    busy = busy_cpus()
    if busy is not None and busy + args.threads > info["logical_cpus"] + 0.5:
        print(
            f"warning: the 1-minute load average ({busy:.1f}) plus {args.threads}"
            f" threads exceeds the {info['logical_cpus']} logical CPUs: the timings"
            " include waiting for a CPU, most visibly at small D"
        )
    print(
        f"setup: {args.architecture}(D) float32 CPU, batch {args.batch_size}, Adam,"
        f" settings {SETTINGS}; warmup {args.warmup}, repeats {args.repeats},"
        " interleaved round-robin, medians"
    )

    dims = sorted(args.dims)
    all_times: dict[int, dict[str, list[float]]] = {}
    medians: dict[int, dict[str, float]] = {}
    repeats_used: dict[int, int] = {}
    started = time.perf_counter()
    for n_features in dims:
        t0 = time.perf_counter()
        times, repeats = measure(n_features, names, args)
        all_times[n_features] = times
        repeats_used[n_features] = repeats
        medians[n_features] = {name: statistics.median(times[name]) for name in names}
        note = "" if repeats == args.repeats else f" ({repeats} repeats)"
        print(
            f"  D={n_features}: {time.perf_counter() - t0:.0f} s{note}; "
            + ", ".join(f"{name} {medians[n_features][name]:.1f}" for name in names)
            + " ms",
            flush=True,
        )
    print(f"total {time.perf_counter() - started:.0f} s\n")

    changed = {d: r for d, r in repeats_used.items() if r != args.repeats}
    if changed:
        print(
            f"note: repeats per D differ from --repeats={args.repeats} (more when a"
            f" round is cheap, --min-time={args.min_time:g} s; fewer, at least 3, when"
            f" it is dear, --budget={args.budget:g} s): "
            + ", ".join(f"D={d}: {r}" for d, r in changed.items())
            + "\n"
        )
    print(f"load average at the end: {load_average()}\n")

    header = ["D", *(f"{name} ms" for name in names)]
    rows = [[str(d), *(f"{medians[d][name]:.1f}" for name in names)] for d in dims]
    print("Median milliseconds per training step:\n")
    print(markdown_table(header, rows) + "\n")

    others = [name for name in names if name != REFERENCE]
    header = ["D", *(f"{name}" for name in others)]
    rows = [
        [
            str(d),
            *(f"{medians[d][REFERENCE] / medians[d][name]:.2f}" for name in others),
        ]
        for d in dims
    ]
    print(f"Speed-up over {REFERENCE} (t_{REFERENCE} / t; above 1 is faster):\n")
    print(markdown_table(header, rows) + "\n")

    others = [name for name in names if name != BASELINE]
    header = ["D", *(f"{name}" for name in others)]
    rows = [
        [str(d), *(f"{medians[d][name] / medians[d][BASELINE]:.2f}" for name in others)]
        for d in dims
    ]
    print(f"Cost relative to {BASELINE} (t / t_{BASELINE}):\n")
    print(markdown_table(header, rows) + "\n")

    fit_dims = [d for d in dims if d >= args.fit_from]
    exponents: dict[str, float] = {}
    if len(fit_dims) >= 2:
        exponents = {
            name: fit_exponent(fit_dims, [medians[d][name] for d in fit_dims])
            for name in names
        }
        print(
            f"Exponent of step time in D (least squares of log t on log D over"
            f" D = {', '.join(map(str, fit_dims))}):\n"
        )
        print(markdown_table(list(names), [[f"{exponents[n]:.2f}" for n in names]]))
        print()
    else:
        print(f"fewer than two D >= {args.fit_from}: no exponent fitted\n")
    if len(dims) >= 2:
        pairs = list(zip(dims[:-1], dims[1:], strict=True))
        print("Local exponent between consecutive D (log ratio of the medians):\n")
        rows = [
            [
                f"{a}-{b}",
                *(
                    f"{math.log(medians[b][n] / medians[a][n]) / math.log(b / a):.2f}"
                    for n in names
                ),
            ]
            for a, b in pairs
        ]
        print(markdown_table(["D", *names], rows) + "\n")

    if args.plot:
        title = (
            f"{args.architecture}(D), batch {args.batch_size}, float32, "
            f"{info['cpu']}, {args.threads} threads, torch {info['torch']}"
        )
        plot(dims, medians, names, title, args.plot_path, args.fit_from)
        print(f"plot written to {args.plot_path}")
    if args.out is not None:
        record = {
            "machine": info,
            "arguments": {
                key: (str(value) if isinstance(value, Path) else value)
                for key, value in vars(args).items()
            },
            "settings": SETTINGS,
            "repeats_used": repeats_used,
            "times_ms": all_times,
            "median_ms": medians,
            "exponent_fit_dims": fit_dims,
            "exponents": exponents,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2))
        print(f"results written to {args.out}")


if __name__ == "__main__":
    main()
