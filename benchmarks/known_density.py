"""Tails and mixing proportions on a density known exactly (issue 13, issue 14).

The target is :class:`skebflow.datasets.BimodalHeavyTailed`: 4-D, two well separated
modes of weights 0.4 and 0.6, a fourth column with Student-t tails (5 degrees of
freedom; the column's marginal excess kurtosis is 5.76). Its log-density is exact, so
every fitted model is scored against the truth, not against another estimate.

Protocol, per seed ``s`` (``--seeds``, default 0):

1. Training rows: ``BimodalHeavyTailed().sample(12000, random_state=s)``.
2. Test rows: 20 000 rows from ``random_state=987654`` (the same for every seed);
   they are used for scoring only, never to choose anything.
3. For every objective ``o`` in ``ml, ssm, dsm, fdssm`` and base ``b`` in ``normal,
   student_t, student_t_learned``: ``EBFlowDensity(objective=o, base_distribution=b,
   device="cpu", random_state=s)`` at every other default (early stopping on 10 % of
   the training rows), fitted on the training rows.

Reported per cell:

* ``kl``: ``KL(p || model) = mean(log p(x) - log model(x))`` over the test rows, in
  nats (zero for a perfect model; the standard error is ``kl_se``);
* ``kl_tail``: the same mean over the 1 % of test rows whose fourth column is most
  extreme (outside the true central 99 % interval of that column);
* ``small_mode_weight``: the mean true posterior probability of the smaller mode over
  20 000 model samples (truth 0.4);
* ``kurtosis_model`` / ``kurtosis_data``: the excess kurtosis of the fourth column in
  those samples and in the test rows (truth 5.76, but the sample kurtosis of a
  df = 5 tail is very noisy: 2 million true rows give anything from 4.5 to 7);
* ``tail_mass``: the fraction of model samples whose fourth column falls outside the
  true central 99 % interval (truth 0.01);
* ``fit_seconds`` (wall clock, on a shared machine: indicative only) and ``n_iter``;
* ``df``: the learned degrees of freedom per latent coordinate
  (``student_t_learned`` only).

Run ``OMP_NUM_THREADS=1 python benchmarks/known_density.py [--seeds 0,1,2]
[--resume]``; results go to ``benchmarks/results/<stem>.{json,log}`` (``--stem``,
default ``known_density``); ``--resume`` skips the (objective, base, seed) cells
already stored. ``--set NAME=VALUE`` passes a parameter to every cell's estimator
(``--set marginal_transform=None``). ``--quick`` is a smoke test (small data, few
epochs) writing ``known_density_quick.*``. Every fit takes the estimator's defaults of
the day: the score-matching cells of ``known_density.json`` ran before noise annealing
(``noise_annealing=0``), those of ``known_density_annealed.json`` with it.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kurtosis
from sklearn.exceptions import ConvergenceWarning

from skebflow import EBFlowDensity
from skebflow.datasets import BimodalHeavyTailed

OBJECTIVES = ("ml", "ssm", "dsm", "fdssm")
BASES = ("normal", "student_t", "student_t_learned")
TEST_SEED = 987654
QUANTILE_SEED = 24680
N_MODEL_SAMPLES = 20000


def tail_interval(density: BimodalHeavyTailed) -> tuple[float, float]:
    """The central 99 % interval of the fourth column, from 2 million true rows."""
    column = density.sample(2_000_000, random_state=QUANTILE_SEED)[:, 3]
    low, high = np.quantile(column, [0.005, 0.995])
    return float(low), float(high)


def _degrees_of_freedom(estimator: EBFlowDensity) -> list:
    """The learned degrees of freedom of the base: a list per column, or one such
    list per flow for a mixture (below 5 000 training rows, as under --quick)."""
    members = getattr(estimator.flow_, "members", None)
    if members is None:
        return [round(v, 3) for v in estimator.flow_.base.degrees_of_freedom().tolist()]
    return [
        [round(v, 3) for v in member.base.degrees_of_freedom().tolist()]
        for member in members
    ]


def run_cell(
    objective: str,
    base: str,
    seed: int,
    *,
    X_train: np.ndarray,
    X_test: np.ndarray,
    log_p_test: np.ndarray,
    interval: tuple[float, float],
    density: BimodalHeavyTailed,
    extra: dict,
) -> dict:
    """Fit one model and measure it against the truth."""
    estimator = EBFlowDensity(
        objective=objective,
        base_distribution=base,
        device="cpu",
        random_state=seed,
        **extra,
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator.fit(X_train)
    fit_seconds = time.perf_counter() - start
    log_model = estimator.score_samples(X_test)
    gap = log_p_test - log_model
    low, high = interval
    tail = (X_test[:, 3] < low) | (X_test[:, 3] > high)
    samples = estimator.sample(N_MODEL_SAMPLES, random_state=seed)
    finite = np.all(np.isfinite(samples), axis=1)
    samples = samples[finite]
    posterior = density.mode_posterior(samples)[:, 0]
    column = samples[:, 3]
    return {
        "objective": objective,
        "base": base,
        "seed": seed,
        "kl": float(np.mean(gap)),
        "kl_se": float(np.std(gap) / math.sqrt(gap.size)),
        "kl_tail": float(np.mean(gap[tail])),
        "n_tail_rows": int(tail.sum()),
        "small_mode_weight": float(np.mean(posterior)),
        "small_mode_fraction": float(np.mean(posterior > 0.5)),
        "kurtosis_model": float(kurtosis(column)),
        "kurtosis_data": float(kurtosis(X_test[:, 3])),
        "tail_mass": float(np.mean((column < low) | (column > high))),
        "non_finite_samples": int((~finite).sum()),
        "fit_seconds": fit_seconds,
        "n_iter": int(estimator.n_iter_),
        "objective_": estimator.objective_,
        # Resolved settings (their "auto" values may change between versions).
        "learning_rate_": getattr(estimator, "learning_rate_", None),
        "noise_annealing_": getattr(estimator, "noise_annealing_", None),
        "early_stopping_metric_": getattr(estimator, "early_stopping_metric_", None),
        "n_flows_": getattr(estimator, "n_flows_", 1),
        "df": _degrees_of_freedom(estimator) if base == "student_t_learned" else None,
    }


def format_table(rows: list[dict]) -> str:
    """A markdown table of the means over seeds, one line per (objective, base)."""
    lines = [
        "| objective | base | seeds | KL(p‖model) nats | KL on 1 % tail rows |"
        " small-mode weight (0.4) | kurtosis col 4 (data) | tail mass (0.01) |"
        " fit s | epochs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for objective in OBJECTIVES:
        for base in BASES:
            cell = [
                r for r in rows if r["objective"] == objective and r["base"] == base
            ]
            if not cell:
                continue

            def mean(key: str, cell: list[dict] = cell) -> float:
                return float(np.mean([r[key] for r in cell]))

            def spread(key: str, cell: list[dict] = cell) -> str:
                values = [r[key] for r in cell]
                if len(values) < 2:
                    return ""
                return f" ± {np.std(values, ddof=1):.3f}"

            lines.append(
                f"| {objective} | {base} | {len(cell)} |"
                f" {mean('kl'):.3f}{spread('kl')} |"
                f" {mean('kl_tail'):.2f} |"
                f" {mean('small_mode_weight'):.3f}{spread('small_mode_weight')} |"
                f" {mean('kurtosis_model'):.1f} ({mean('kurtosis_data'):.1f}) |"
                f" {mean('tail_mass'):.4f} |"
                f" {mean('fit_seconds'):.0f} | {mean('n_iter'):.0f} |"
            )
    return "\n".join(lines)


#: The training and test sizes of a run, and of a stored file that does not record
#: them.
DEFAULT_SIZES = {"n_train": 12000, "n_test": 20000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--objectives", default=",".join(OBJECTIVES))
    parser.add_argument("--bases", default=",".join(BASES))
    parser.add_argument("--n-train", type=int, default=DEFAULT_SIZES["n_train"])
    parser.add_argument("--n-test", type=int, default=DEFAULT_SIZES["n_test"])
    parser.add_argument("--resume", action="store_true", help="skip finished cells")
    parser.add_argument("--quick", action="store_true", help="smoke test")
    parser.add_argument(
        "--stem",
        default="known_density",
        help="results file stem (default: %(default)s)",
    )
    parser.add_argument(
        "--out-dir", type=Path, default=Path(__file__).parent / "results"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an estimator parameter for every cell (a Python literal; repeatable),"
        " e.g. --set marginal_transform=None --set likelihood_refinement=0",
    )
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    objectives = args.objectives.split(",")
    bases = args.bases.split(",")
    extra: dict = {}
    stem = args.stem
    for assignment in args.set:
        name, _, value = assignment.partition("=")
        extra[name] = ast.literal_eval(value)
    if args.quick:
        args.n_train, args.n_test = 1000, 2000
        extra = {**extra, "max_iter": 3}
        stem = "known_density_quick"
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    json_path = args.out_dir / f"{stem}.json"
    log_path = args.out_dir / f"{stem}.log"
    args.out_dir.mkdir(parents=True, exist_ok=True)

    rows: list[dict] = []
    extra_keys: dict = {}  # anything else a stored file holds (notes) is kept
    settings = {k: repr(v) for k, v in extra.items()}
    sizes = {"n_train": args.n_train, "n_test": args.n_test}
    if args.resume and json_path.exists():
        stored = json.loads(json_path.read_text())
        # Rows measured under other settings or sizes would be kept under this
        # run's (a file from before the sizes were recorded used the defaults).
        recorded = (stored.get("settings", {}), stored.get("sizes", DEFAULT_SIZES))
        if recorded != (settings, sizes):
            raise SystemExit(
                f"--resume: {json_path.name} was written with settings"
                f" {recorded[0]} and sizes {recorded[1]}, this run has {settings}"
                f" and {sizes}; use another --stem."
            )
        rows = stored.pop("rows")
        extra_keys = {
            k: v
            for k, v in stored.items()
            if k not in ("machine", "table", "settings", "sizes")
        }
    done = {(r["objective"], r["base"], r["seed"]) for r in rows}
    machine = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "command": " ".join(["python", *sys.argv]),
    }

    def log(message: str) -> None:
        print(message, flush=True)
        with open(log_path, "a") as handle:
            handle.write(message + "\n")

    density = BimodalHeavyTailed()
    X_test = density.sample(args.n_test, random_state=TEST_SEED)
    log_p_test = density.log_density(X_test)
    interval = tail_interval(density)
    log(
        f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {machine['command']}:"
        f" {args.n_train} training rows, {args.n_test} test rows, tail interval"
        f" [{interval[0]:.3f}, {interval[1]:.3f}]"
    )
    for seed in seeds:
        X_train = density.sample(args.n_train, random_state=seed)
        for objective in objectives:
            for base in bases:
                if (objective, base, seed) in done:
                    continue
                try:
                    row = run_cell(
                        objective,
                        base,
                        seed,
                        X_train=X_train,
                        X_test=X_test,
                        log_p_test=log_p_test,
                        interval=interval,
                        density=density,
                        extra=extra,
                    )
                except Exception as error:  # noqa: BLE001 - recorded, not hidden
                    log(f"{objective} {base} seed {seed}: FAILED {error!r}")
                    continue
                rows.append(row)
                log(
                    f"{objective:5s} {base:9s} seed {seed}: KL {row['kl']:.4f}"
                    f" (± {row['kl_se']:.4f}), tail KL {row['kl_tail']:.3f},"
                    f" small mode {row['small_mode_weight']:.3f}, kurtosis"
                    f" {row['kurtosis_model']:.2f} (data {row['kurtosis_data']:.2f}),"
                    f" tail mass {row['tail_mass']:.4f},"
                    f" {row['fit_seconds']:.0f} s, {row['n_iter']} epochs"
                    + (f", df {row['df']}" if row["df"] is not None else "")
                )
                json_path.write_text(
                    json.dumps(
                        {
                            **extra_keys,
                            "settings": settings,
                            "sizes": sizes,
                            "machine": machine,
                            "rows": rows,
                        },
                        indent=1,
                    )
                )
    table = format_table(rows)
    log(table)
    json_path.write_text(
        json.dumps(
            {
                **extra_keys,
                "settings": settings,
                "sizes": sizes,
                "machine": machine,
                "rows": rows,
                "table": table,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
