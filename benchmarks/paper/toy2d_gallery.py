"""The gallery example's 2-D fits over several seeds, with a setting varied.

``examples/plot_2d_densities.py`` draws each objective's density at one seed (its
``random_state=0``), at a budget of a few minutes. Whether a change of setting
helps there cannot be read from that one seed. This script runs the example's data
and estimators (its ``make_model``, executed from the example's own source, so the
settings cannot drift apart) for one objective over ``--seeds`` and prints the KL
divergence to the true density per data set and seed, with each ``--set
name=value`` applied on top of the example's settings.

Run (about 2 minutes per seed for ``fdssm``, one thread)::

    OMP_NUM_THREADS=1 python benchmarks/paper/toy2d_gallery.py --objective fdssm \\
        --seeds 0 1 2
    OMP_NUM_THREADS=1 python benchmarks/paper/toy2d_gallery.py --objective fdssm \\
        --seeds 0 1 2 --set n_slices=2

Each run writes its rows into ``results/toy2d_gallery.csv``, replacing those of an
earlier run of the same objective, settings, data set and seed. ``--validation``
scores on the pilots' validation draws instead of the example's test draws (for a
probe that may change the example: choose on those, never on the test draws), and
``--datasets`` fits only the sets named.

The example's budget pilot (``--pilot``, 3 December)
---------------------------------------------------
Which training budget the example should spend its few minutes on is chosen here,
never on the example's own seed or test draws: the fits use seeds 1 and 2 (the
example uses 0), and they are scored on 2 000 *validation* draws of each true
density, drawn from their own random state (``VALIDATION_SEED``), not the
example's test draws. The candidates (``PILOT_CANDIDATES``) change the learning
rate and how the steps are spent: the example's 1 200 steps of 256 rows from a
pool of 4 000 clean points, or about as many steps of 1 024 rows from a pool of
20 000 (a candidate's pool size re-executes the example's data cells with it).
**The rule, fixed before the full run:** per objective, the candidate with the
lowest mean validation KL over the three data sets and the two seeds; if the
chosen candidates together take more than 1.3 times the example's fit time today
(the sum of the pilot's fit times, candidate 0 for every objective), the objective
whose choice costs most over its candidate 0 falls back to its next best, until
they fit. ``--choose`` prints the table and the choice from
``results/toy2d_gallery_pilot.csv``. The pilot ran against the example as it
was before it took the chosen budgets (commit 9515dbf); ``--example`` runs it
against that version::

    git show 9515dbf:examples/plot_2d_densities.py > /tmp/example_3dec.py
    OMP_NUM_THREADS=1 python benchmarks/paper/toy2d_gallery.py --pilot \\
        --objective ml --example /tmp/example_3dec.py  # each objective alike
    python benchmarks/paper/toy2d_gallery.py --choose

The score-matching step pilot (``--step-pilot``, 4 December)
------------------------------------------------------------
The budget pilot tried only a *larger* learning rate (1e-2) beside the example's
3e-3, which it applies to every score-matching objective, although the package's
own ``learning_rate="auto"`` gives ``dsm`` and ``fdssm`` 1e-3, and the paper trains
score matching with small steps and tight clipping (1.0 on its sine toy). In the
example at 3e-3, ``fdssm``'s loss on the checkerboard falls for 20 epochs, then
jumps (0.16, 0.45, 1.74 at epochs 23-27, as the annealed noise reaches its end)
and never recovers. This pilot puts smaller steps to the same test as the budget
pilot (seeds 1 and 2, the validation draws; never the example's seed or test
draws), against the example as it is now (``STEP_CANDIDATES``; same steps, same
cost): the example's settings, ``learning_rate`` 1e-3 and 3e-4, and
``grad_clip=1.0``. **The rule, committed before the run:** per score-matching
objective, the candidate with the lowest mean validation KL over the three data
sets and the two seeds replaces the example's settings for that objective; there
is no time cap, since every candidate takes the same steps. ``--choose-steps``
prints the table and the choice from ``results/toy2d_gallery_step_pilot.csv``::

    OMP_NUM_THREADS=1 python benchmarks/paper/toy2d_gallery.py --step-pilot \\
        --objective ssm     # dsm, fdssm alike
    python benchmarks/paper/toy2d_gallery.py --choose-steps

The annealing pilot (``--annealing-pilot``, 4 December, after the step pilot)
----------------------------------------------------------------------------
With the step pilot's clipping adopted, the swirl is the panel where every
score-matching objective stays furthest from the truth: its mass drifts along the
arm only while the annealed noise is wide enough to join the windings. This pilot
starts the annealing wider (``ANNEALING_CANDIDATES``: the example's start, 1.5 for
``ssm`` and ``fdssm`` and 3.0 for ``dsm``; 3.0; 6.0), on the same seeds and
validation draws as the other pilots, against the example as it is now. **The rule,
committed before the run:** per score-matching objective, the candidate with the
lowest mean validation KL over the three data sets and the two seeds replaces the
example's start; no time cap (the same steps). ``--choose-annealing`` prints the
table and the choice from ``results/toy2d_gallery_annealing_pilot.csv``::

    OMP_NUM_THREADS=1 python benchmarks/paper/toy2d_gallery.py --annealing-pilot \\
        --objective ssm     # dsm, fdssm alike (dsm skips 3.0, its own start)
    python benchmarks/paper/toy2d_gallery.py --choose-annealing
"""

from __future__ import annotations

import argparse
import ast
import csv
import math
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _machine import machine_line  # noqa: E402

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parents[1] / "examples" / "plot_2d_densities.py"
RESULTS = HERE.parent / "results" / "toy2d_gallery.csv"
PILOT_RESULTS = HERE.parent / "results" / "toy2d_gallery_pilot.csv"
# The example's cells up to its fitting loop: data, true density, make_model.
STOP = "models, seconds = {}, {}\n"
POOL_LINE = "N_TRAIN = 500 if QUICK else 4000\n"
VALIDATION_SEED = 12345
N_VALIDATION = 2000
PILOT_SEEDS = (1, 2)
# name: (pool of clean training points or None for the example's, settings)
PILOT_CANDIDATES: dict[str, tuple[int | None, dict]] = {
    "0 (the example)": (None, {}),
    "1 lr 1e-2": (None, {"learning_rate": 1e-2}),
    "2 20k points, batch 1024": (20000, {"batch_size": 1024, "max_iter": 62}),
    "3 20k points, batch 1024, lr 1e-2": (
        20000,
        {"batch_size": 1024, "max_iter": 62, "learning_rate": 1e-2},
    ),
}
TIME_CAP = 1.3
STEP_PILOT_RESULTS = HERE.parent / "results" / "toy2d_gallery_step_pilot.csv"
# The step pilot's candidates: settings on top of the example's own.
STEP_CANDIDATES: dict[str, dict] = {
    "0 (the example)": {},
    "1 lr 1e-3": {"learning_rate": 1e-3},
    "2 lr 3e-4": {"learning_rate": 3e-4},
    "3 grad_clip 1": {"grad_clip": 1.0},
}
ANNEALING_PILOT_RESULTS = HERE.parent / "results" / "toy2d_gallery_annealing_pilot.csv"
# The annealing pilot's candidates: the noise the annealing starts from.
ANNEALING_CANDIDATES: dict[str, dict] = {
    "0 (the example)": {},
    "1 annealing from 3.0": {"noise_annealing": 3.0},
    "2 annealing from 6.0": {"noise_annealing": 6.0},
}


def example_namespace(n_train: int | None = None, example: Path = EXAMPLE) -> dict:
    """The example's data, ``true_log_density``, ``make_model`` and
    ``training_rows``; ``n_train`` replaces the example's pool of clean training
    points."""
    source = example.read_text()
    source = source[: source.index(STOP)]
    if n_train is not None:
        if POOL_LINE not in source:
            raise RuntimeError(f"the example no longer sets {POOL_LINE.strip()!r}")
        source = source.replace(POOL_LINE, f"N_TRAIN = {int(n_train)}\n")
    namespace: dict = {"__name__": "gallery"}
    exec(compile(source, str(example), "exec"), namespace)
    namespace.setdefault(  # examples before their per-objective budgets
        "training_rows", lambda objective, name: namespace["data"][name][0]
    )
    return namespace


def validation_draws(namespace: dict) -> dict[str, np.ndarray]:
    """``N_VALIDATION`` draws of each smoothed density, from their own seed."""
    rng = np.random.RandomState(VALIDATION_SEED)
    draws = {}
    for name, make in namespace["generators"].items():
        clean = make(N_VALIDATION, random_state=rng)
        draws[name] = clean + namespace["SIGMA"] * rng.normal(size=clean.shape)
    return draws


def fit_and_score(
    namespace: dict,
    objective: str,
    seed: int,
    settings: dict,
    X_fit: np.ndarray,
    X_eval: np.ndarray,
    log_p: np.ndarray,
) -> tuple[float, float]:
    """Fit the example's model for ``objective`` on ``X_fit``; its KL to the true
    density on ``X_eval`` (whose true log-density is ``log_p``) and fit seconds."""
    start = time.perf_counter()
    model = namespace["make_model"](objective, seed, **settings).fit(X_fit)
    seconds = time.perf_counter() - start
    return float(np.mean(log_p - model.score_samples(X_eval))), seconds


def run_pilot(objective: str, candidates: list[str], example: Path) -> None:
    """Fit ``objective`` for each candidate, seeds 1 and 2, on the validation draws.

    The candidates change the example as it was before the pilot chose its budgets
    (``--example``): one budget for every objective, on its 4 000 points."""
    if "BUDGETS" in example.read_text():
        raise SystemExit(
            f"{example} already has the per-objective budgets the pilot chose; pass"
            " --example with the example it ran on (see the module's docstring)."
        )
    chosen = {candidate: PILOT_CANDIDATES[candidate] for candidate in candidates}
    _fit_candidates(objective, chosen, example, PILOT_RESULTS)


def run_step_pilot(objective: str, candidates: list[str]) -> None:
    """The step pilot: ``objective`` with each of ``STEP_CANDIDATES``' settings on
    the example as it is now, seeds 1 and 2, on the validation draws."""
    chosen = {candidate: (None, STEP_CANDIDATES[candidate]) for candidate in candidates}
    _fit_candidates(objective, chosen, EXAMPLE, STEP_PILOT_RESULTS)


def run_annealing_pilot(objective: str) -> None:
    """The annealing pilot: ``objective`` from each start of
    ``ANNEALING_CANDIDATES`` but the example's own, which candidate 0 fits."""
    own = example_namespace()["NOISE_ANNEALING"][objective]
    chosen = {
        candidate: (None, settings)
        for candidate, settings in ANNEALING_CANDIDATES.items()
        if settings.get("noise_annealing") != own
    }
    _fit_candidates(objective, chosen, EXAMPLE, ANNEALING_PILOT_RESULTS)


def _fit_candidates(
    objective: str,
    candidates: dict[str, tuple[int | None, dict]],
    example: Path,
    path: Path,
) -> None:
    """Fit ``objective`` for each candidate (its pool of clean points or ``None``
    for the example's, and its settings), seeds ``PILOT_SEEDS``, scored on the
    validation draws; the rows go into the CSV at ``path``."""
    header = ["objective", "candidate", "dataset", "seed", "kl", "seconds"]
    for candidate, (n_train, settings) in candidates.items():
        namespace = example_namespace(n_train, example)
        draws = validation_draws(namespace)
        rows = []
        for name, (_, _, centres) in namespace["data"].items():
            X_fit = namespace["training_rows"](objective, name)
            log_p = namespace["true_log_density"](draws[name], centres)
            for seed in PILOT_SEEDS:
                kl, seconds = fit_and_score(
                    namespace, objective, seed, settings, X_fit, draws[name], log_p
                )
                rows.append(
                    [objective, candidate, name, seed, f"{kl:.4f}", f"{seconds:.1f}"]
                )
                print(
                    f"{candidate:36s} {name:13s} seed {seed}: KL {kl:.3f},"
                    f" {seconds:.1f} s",
                    flush=True,
                )
        _write_rows(path, header, rows)


def _write_rows(path: Path, header: list[str], rows: list[list]) -> None:
    """Add ``rows`` to the CSV at ``path``, replacing earlier rows of the same key
    (the first four columns)."""
    kept = []
    if path.exists():
        with path.open(newline="") as handle:
            new_keys = {tuple(map(str, row[:4])) for row in rows}
            kept = [
                row
                for row in list(csv.reader(handle))[1:]
                if tuple(row[:4]) not in new_keys
            ]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(kept + rows)


def choose(
    path: Path = PILOT_RESULTS,
    candidates: Iterable[str] = tuple(PILOT_CANDIDATES),
    time_cap: float | None = TIME_CAP,
) -> None:
    """A pilot's table and the rule's choice per objective: the lowest mean KL,
    with the budget pilot's ``time_cap`` (``None``: no cap)."""
    candidates = list(candidates)
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    objectives = list(dict.fromkeys(row["objective"] for row in rows))
    summary: dict[tuple[str, str], tuple[float, float, int]] = {}
    print(
        "| objective | candidate | sine | swirl | checkerboard | mean KL"
        " | fit s (6 fits) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for objective in objectives:
        for candidate in candidates:
            mine = [
                r
                for r in rows
                if r["objective"] == objective and r["candidate"] == candidate
            ]
            if not mine:
                continue
            per_set = {
                name: np.mean([float(r["kl"]) for r in mine if r["dataset"] == name])
                for name in ("sine", "swirl", "checkerboard")
            }
            mean = float(np.mean([float(r["kl"]) for r in mine]))
            seconds = float(sum(float(r["seconds"]) for r in mine))
            summary[objective, candidate] = (mean, seconds, len(mine))
            print(
                f"| {objective} | {candidate} | "
                + " | ".join(f"{per_set[n]:.3f}" for n in per_set)
                + f" | {mean:.3f} | {seconds:.0f} |"
            )
    complete = {key: value for key, value in summary.items() if value[2] == 6}
    ranked = {
        objective: sorted(
            (value[0], candidate)
            for (o, candidate), value in complete.items()
            if o == objective
        )
        for objective in objectives
    }
    base = candidates[0]
    missing = [o for o in objectives if (o, base) not in complete]
    if missing:
        raise SystemExit(f"candidate 0 is not complete for {missing}: run it first")
    budget = (
        math.inf
        if time_cap is None
        else time_cap * sum(complete[o, base][1] for o in objectives)
    )
    choice = {objective: 0 for objective in objectives}  # index into ranked

    def cost(objective: str) -> float:
        return complete[objective, ranked[objective][choice[objective]][1]][1]

    while sum(cost(o) for o in objectives) > budget:
        # The rule: the choice that costs most over its candidate 0 falls back to
        # its objective's next best (only choices that cost more can be over).
        over = [
            o
            for o in objectives
            if choice[o] + 1 < len(ranked[o]) and cost(o) > complete[o, base][1]
        ]
        if not over:
            raise SystemExit("no choice of candidates fits the time cap")
        choice[max(over, key=lambda o: cost(o) - complete[o, base][1])] += 1
    if time_cap is not None:
        print(
            f"time budget {budget:.0f} s ({time_cap} x candidate 0's);"
            f" chosen total {sum(cost(o) for o in objectives):.0f} s"
        )
    for objective in objectives:
        kl, candidate = ranked[objective][choice[objective]]
        print(f"{objective}: {candidate} (mean validation KL {kl:.3f})")


def parse_settings(pairs: list[str]) -> dict:
    """``["n_slices=2"]`` -> ``{"n_slices": 2}`` (values as Python literals)."""
    settings = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        settings[name] = ast.literal_eval(value)
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objective")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=None, help="seeds (0 1 2 by default)"
    )
    parser.add_argument("--set", nargs="*", default=[], dest="settings")
    parser.add_argument("--pilot", action="store_true", help="the budget pilot")
    parser.add_argument(
        "--candidates",
        nargs="*",
        default=list(PILOT_CANDIDATES),
        help="the pilot's candidates to run (all by default)",
    )
    parser.add_argument(
        "--step-candidates",
        nargs="*",
        default=list(STEP_CANDIDATES),
        help="the step pilot's candidates to run (all by default)",
    )
    parser.add_argument("--choose", action="store_true", help="the pilot's choice")
    parser.add_argument(
        "--step-pilot", action="store_true", help="the score-matching step pilot"
    )
    parser.add_argument(
        "--choose-steps", action="store_true", help="the step pilot's choice"
    )
    parser.add_argument(
        "--annealing-pilot", action="store_true", help="the annealing pilot"
    )
    parser.add_argument(
        "--choose-annealing", action="store_true", help="the annealing pilot's choice"
    )
    parser.add_argument(
        "--example", type=Path, default=EXAMPLE, help="the example's source to run"
    )
    parser.add_argument(
        "--validation",
        action="store_true",
        help="score on the pilots' validation draws, not the example's test draws",
    )
    parser.add_argument(
        "--datasets", nargs="*", default=None, help="data sets to fit (all by default)"
    )
    args = parser.parse_args()
    if args.choose:
        choose()
        return
    if args.choose_steps:
        choose(STEP_PILOT_RESULTS, STEP_CANDIDATES, time_cap=None)
        return
    if args.choose_annealing:
        choose(ANNEALING_PILOT_RESULTS, ANNEALING_CANDIDATES, time_cap=None)
        return
    if args.objective is None:
        parser.error("--objective is required")
    if args.pilot or args.step_pilot or args.annealing_pilot:
        # a pilot's rule averages over every data set and its own seeds
        ignored = [
            flag
            for flag, given in (
                ("--datasets", args.datasets is not None),
                ("--seeds", args.seeds is not None),
                ("--set", bool(args.settings)),
                ("--validation", args.validation),
            )
            if given
        ]
        if ignored:
            parser.error(
                f"{', '.join(ignored)} cannot be combined with a pilot, which fits"
                f" every data set at its own seeds {PILOT_SEEDS} on the validation"
                " draws, as its rule says"
            )
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.pilot:
        print(machine_line(f"budget pilot, {args.objective}"), flush=True)
        run_pilot(args.objective, args.candidates, args.example)
        return
    if args.step_pilot:
        print(machine_line(f"step pilot, {args.objective}"), flush=True)
        run_step_pilot(args.objective, args.step_candidates)
        return
    if args.annealing_pilot:
        print(machine_line(f"annealing pilot, {args.objective}"), flush=True)
        run_annealing_pilot(args.objective)
        return
    settings = parse_settings(args.settings)
    label = ",".join(args.settings) or "example"
    if args.validation:
        label += " (validation draws)"
    print(machine_line(f"{args.objective}, {label}"), flush=True)
    namespace = example_namespace(example=args.example)
    draws = validation_draws(namespace) if args.validation else None
    rows = []
    for name, (_, X_test, centres) in namespace["data"].items():
        if args.datasets is not None and name not in args.datasets:
            continue
        if draws is not None:
            X_test = draws[name]
        log_p = namespace["true_log_density"](X_test, centres)
        for seed in args.seeds or (0, 1, 2):
            X_fit = namespace["training_rows"](args.objective, name)
            kl, seconds = fit_and_score(
                namespace, args.objective, seed, settings, X_fit, X_test, log_p
            )
            rows.append(
                [args.objective, label, name, seed, f"{kl:.4f}", f"{seconds:.1f}"]
            )
            print(f"{name:13s} seed {seed}: KL {kl:.3f}, {seconds:.1f} s", flush=True)
    # A rerun replaces its earlier rows (same objective, settings, data set, seed).
    header = ["objective", "settings", "dataset", "seed", "kl", "seconds"]
    _write_rows(RESULTS, header, rows)
    kls = [float(row[4]) for row in rows]
    print(
        f"mean KL {np.mean(kls):.3f}, median {np.median(kls):.3f}, worst {max(kls):.3f}"
    )


if __name__ == "__main__":
    main()
