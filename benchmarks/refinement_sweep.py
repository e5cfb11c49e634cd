"""How long ``likelihood_refinement`` should be: several lengths from one fit.

``EBFlowDensity(likelihood_refinement=N)`` continues a score-matching fit (after its
whitening) by N epochs of maximum likelihood. The main fit does not depend on N, so
this sweep fits each score-matching configuration once and refines the fitted flows
for every length of ``--epochs`` from the same starting weights, through the
estimator's own refinement (``EBFlowDensity._refine``, with the fit's data split,
seed and settings): each row is exactly what ``fit`` with that ``likelihood_refinement``
returns, at a fraction of the cost of refitting. ``maximum likelihood`` with the same
architecture is fitted beside it in the same run (or taken from earlier runs of
``benchmarks/defaults_sweep.py`` with ``--reference-from``).

The protocol is ``benchmarks/defaults_sweep.py``'s: the density benchmark's
``prepare`` (seed 0, at most ``--max-train`` training rows), the test mean
log-likelihood in nats per row, on the tuning group of ``benchmarks/density.py``
only. Results go to ``benchmarks/results/<stem>.json`` after every configuration
(``ml`` or one objective, with one architecture, on one data set); ``--resume``
skips the configurations already there.

``--warmups`` (2 Dec 2026): comma-separated warm-up lengths in epochs
(``REFINEMENT_WARMUP_EPOCHS``, the learning rate's linear rise at the start of the
refinement); every length of ``--epochs`` is refined once per warm-up, from the same
fit, and each row records its ``warmup_epochs``. Rows of earlier runs had no warm-up
(0). ``--report-only --warmups W`` reports the rows with warm-up ``W``.
``--patience start,own`` likewise refines once per value of the refinement's
``continuation_patience`` (``REFINEMENT_PATIENCE``: what its patience counts epochs
without beating); rows record ``patience`` (earlier rows: ``"start"``).

``--epochs auto`` measures the released default instead of candidates: each
score-matching fit unrefined and refined for the epochs ``likelihood_refinement="auto"``
resolves to. Only this mode may run on the evaluation group (``--datasets
evaluation``), which never chooses a default.

Run::

    OMP_NUM_THREADS=1 python benchmarks/refinement_sweep.py --datasets all \\
        --epochs 0,20,40,80,200 --reference-from defaults_sweep_refinement,\\
    defaults_sweep_refinement_b --stem refinement_sweep
    OMP_NUM_THREADS=1 python benchmarks/refinement_sweep.py --datasets evaluation \\
        --epochs auto --stem refinement_evaluation
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine_line  # noqa: E402
from density import EVALUATION_SETS, TUNING_SETS, prepare, recorded_split  # noqa: E402

from skebflow import EBFlowDensity  # noqa: E402
from skebflow._auto_settings import (  # noqa: E402
    REFINEMENT_PATIENCE,
    REFINEMENT_WARMUP_EPOCHS,
    resolve_likelihood_refinement,
)
from skebflow.flows import FlowMixture  # noqa: E402

OBJECTIVES = ("ssm", "dsm", "fdssm")
ARCHITECTURES = ("coupling", "fc")
#: the rows of benchmarks/defaults_sweep.py that hold maximum likelihood's fits
REFERENCE_CONFIGS = {"coupling": "base", "fc": "ml_fc"}


def fit_and_refine(
    params: dict,
    X_train: np.ndarray,
    lengths: list[int],
    seed: int,
    warmups: tuple[int, ...] = (REFINEMENT_WARMUP_EPOCHS,),
    patiences: tuple[str, ...] = (REFINEMENT_PATIENCE,),
) -> tuple[EBFlowDensity, dict[tuple, tuple[EBFlowDensity, list[bool], float]]]:
    """Fit once, then the model refined for each of ``lengths`` epochs with each
    of ``warmups`` epochs of warm-up.

    Returns the main fit (unrefined) and, per (length, warm-up), the refined model,
    which of its flows kept the refinement, and the refinement's seconds (length 0
    is the main fit, once, with warm-up 0).
    """
    captured: list[tuple] = []

    def capture(self, flow, preprocessing, data, n_epochs, member_seed, **_):  # noqa: ANN001, ANN003, ANN202
        captured.append((flow, preprocessing, data, member_seed))
        # (flow, refinement kept, interrupted, unconverged)
        return flow, False, False, False

    model = EBFlowDensity(
        device="cpu", random_state=seed, likelihood_refinement=1, **params
    )
    with mock.patch.object(EBFlowDensity, "_refine", capture):
        model.fit(X_train)
    refined_models = {}
    variants = [(n, w, p) for n in lengths for w in warmups for p in patiences]
    for n_epochs, warmup, patience in variants:
        if n_epochs == 0:
            refined_models[0, 0, REFINEMENT_PATIENCE] = (
                model,
                [False] * len(captured),
                0.0,
            )
            continue
        start = time.perf_counter()
        members, kept = [], []
        for flow, preprocessing, data, member_seed in captured:
            refined, was_kept, _, _ = model._refine(
                flow, preprocessing, data, n_epochs, member_seed, warmup, patience
            )
            members.append(refined)
            kept.append(was_kept)
        seconds = time.perf_counter() - start
        refined_model = copy.copy(model)
        refined_model.flow_ = members[0] if len(members) == 1 else FlowMixture(members)
        refined_model.log_normalizer_ = model._checked_log_normalizer(
            refined_model.flow_
        )
        refined_models[n_epochs, warmup, patience] = (refined_model, kept, seconds)
    return model, refined_models


def load_references(stems: list[str], out: Path) -> dict[tuple, dict]:
    """``ml`` rows of earlier defaults_sweep runs, by (architecture, set, seed)."""
    references = {}
    by_config = {config: arch for arch, config in REFERENCE_CONFIGS.items()}
    for stem in stems:
        with open(out / f"{stem}.json") as handle:
            for row in json.load(handle)["rows"]:
                if row["config"] in by_config:
                    key = (by_config[row["config"]], row["dataset"], row["seed"])
                    references[key] = row
    return references


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", type=str, default="all")
    parser.add_argument(
        "--epochs",
        type=str,
        default="0,20,40,80,200",
        help='comma-separated lengths, or "auto" for 0 and the default\'s',
    )
    parser.add_argument("--objectives", type=str, default=",".join(OBJECTIVES))
    parser.add_argument("--architectures", type=str, default=",".join(ARCHITECTURES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-train", type=int, default=2000)
    parser.add_argument("--reference-from", type=str, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--stem", type=str, default="refinement_sweep")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument(
        "--warmups",
        type=str,
        default=str(REFINEMENT_WARMUP_EPOCHS),
        help="comma-separated warm-up lengths of the refinement, in epochs",
    )
    parser.add_argument(
        "--patience",
        type=str,
        default=REFINEMENT_PATIENCE,
        help='comma-separated: "start", "own" (what the patience counts from)',
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="print the summary and the markdown table of --stem's rows (a"
        " comma-separated list of stems, merged) and fit nothing",
    )
    args = parser.parse_args()
    if args.report_only:
        rows = []
        for stem in args.stem.split(","):
            with open(args.out / f"{stem}.json") as handle:
                rows.extend(json.load(handle)["rows"])
        warmup = int(args.warmups.split(",")[0])
        # rows measured with any of the given patiences (the evaluation group's
        # cells span the change of default: --patience start,own)
        patiences = args.patience.split(",")
        rows = [
            row
            for row in _of_split(rows, args.seed, args.max_train)
            if row["refinement_epochs"] == 0
            or (
                row.get("warmup_epochs", 0) == warmup
                and row.get("patience", "start") in patiences
            )
        ]
        if not rows:
            raise SystemExit(
                f"No row of {args.stem} was measured with --seed {args.seed},"
                f" --max-train {args.max_train}, --warmups {warmup} and --patience"
                f" {args.patience}: pass the run's settings."
            )
        summarize(rows)
        print()
        print(markdown_table(rows))
        return
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    print(machine_line(), flush=True)

    groups = {"all": list(TUNING_SETS), "evaluation": list(EVALUATION_SETS)}
    datasets = groups.get(args.datasets) or args.datasets.split(",")
    peeking = sorted(set(datasets) & set(EVALUATION_SETS))
    # The default alone may be measured there: several warm-ups or patiences are
    # candidates to choose between (a review found musk, an evaluation set, had
    # informed the choice of the patience this way).
    choosing = len(args.warmups.split(",")) > 1 or len(args.patience.split(",")) > 1
    if peeking and (args.epochs != "auto" or choosing):
        raise SystemExit(
            f"{peeking} belong to the evaluation group of benchmarks/density.py,"
            " which never chooses a default: sweep the tuning group, or measure"
            " the default there with --epochs auto and one warm-up and patience."
        )
    references = (
        load_references(args.reference_from.split(","), args.out)
        if args.reference_from
        else {}
    )
    path = args.out / f"{args.stem}.json"
    rows = []
    if args.resume and path.exists():
        with open(path) as handle:
            rows = json.load(handle)["rows"]

    def save(new_rows: list[dict]) -> None:
        rows.extend(new_rows)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as handle:
            json.dump({"epochs": args.epochs, "rows": rows}, handle, indent=1)

    for dataset in datasets:
        done: dict[tuple[str, str], set[tuple]] = {}
        for row in rows:
            if row["dataset"] == dataset and recorded_split(row) == (
                args.seed,
                args.max_train,
            ):
                done.setdefault((row["architecture"], row["objective"]), set()).add(
                    _variant(row)
                )
        sweep_data_set(dataset, args, references, done, save)
    summarize(_of_split(rows, args.seed, args.max_train))


def _of_split(rows: list[dict], seed: int, max_train: int) -> list[dict]:
    """The rows of one split: the summaries pivot one row per setting and set."""
    return [row for row in rows if recorded_split(row) == (seed, max_train)]


def _variant(row: dict) -> tuple[int, int, str]:
    """A row's (refinement length, warm-up, patience); rows of length 0 (the main
    fit, and ``ml``) are one variant, with no warm-up or patience ("-")."""
    if row["refinement_epochs"] == 0:
        return (0, 0, "-")
    return (
        row["refinement_epochs"],
        row.get("warmup_epochs", 0),
        row.get("patience", "start"),
    )


def _lengths(args: argparse.Namespace, objective: str, n_features: int) -> list[int]:
    if args.epochs == "auto":
        default = resolve_likelihood_refinement(
            "auto", objective, n_features, EBFlowDensity().max_iter
        )
        return sorted({0, default})
    return [int(value) for value in args.epochs.split(",")]


def sweep_data_set(
    dataset: str,
    args: argparse.Namespace,
    references: dict[tuple, dict],
    done: dict[tuple[str, str], set[tuple]],
    save: Callable[[list[dict]], None],
) -> None:
    """Every row of one data set: ``ml`` and each refined score-matching fit, each
    configuration handed to ``save`` as soon as it is measured; an (architecture,
    objective) pair whose rows in ``done`` already hold every requested length,
    warm-up and patience is skipped (``--resume``)."""
    configurations = [
        (architecture, objective)
        for architecture in args.architectures.split(",")
        for objective in ("ml", *args.objectives.split(","))
    ]
    warmups = tuple(int(value) for value in args.warmups.split(","))
    patiences = tuple(args.patience.split(","))
    n_features: int | None = None

    def measured(configuration: tuple[str, str]) -> bool:
        if configuration[1] == "ml":
            return configuration in done
        if args.epochs == "auto" and n_features is None:
            return False  # the default length depends on the data's features
        lengths = _lengths(args, configuration[1], n_features or 0)
        wanted = {
            _variant({"refinement_epochs": n, "warmup_epochs": w, "patience": p})
            for n in lengths
            for w in warmups
            for p in patiences
        }
        return wanted <= done.get(configuration, set())

    if all(measured(configuration) for configuration in configurations):
        print(f"{dataset}: already measured, skipped", flush=True)
        return
    X_train, X_test, info = prepare(dataset, args.seed, args.max_train)

    def record(row: dict) -> dict:
        row.update(
            dataset=dataset,
            seed=args.seed,
            max_train=args.max_train,
            n_features=info["n_features"],
        )
        print(
            f"{dataset:14s} {row['objective']:6s} {row['architecture']:9s}"
            f" refine {row['refinement_epochs']:4d}"
            f" warm-up {row.get('warmup_epochs', 0):2d}"
            f" patience {row.get('patience', 'start'):5s}: loglik"
            f" {row['test_loglik']:10.3f} ({row['fit_seconds']:6.1f}s)",
            flush=True,
        )
        return row

    n_features = info["n_features"]
    for architecture, objective in configurations:
        if measured((architecture, objective)):
            continue
        if objective == "ml":
            reference = references.get((architecture, dataset, args.seed))
            if reference is None:
                start = time.perf_counter()
                model = EBFlowDensity(
                    device="cpu",
                    random_state=args.seed,
                    objective="ml",
                    architecture=architecture,
                ).fit(X_train)
                seconds = time.perf_counter() - start
                loglik = float(np.mean(model.score_samples(X_test)))
                source = "fitted"
            else:
                loglik, seconds = reference["test_loglik"], reference["fit_seconds"]
                source = "reference"
            row = {
                "objective": "ml",
                "architecture": architecture,
                "refinement_epochs": 0,
                "test_loglik": loglik,
                "fit_seconds": seconds,
                "source": source,
            }
            save([record(row)])
            continue
        lengths = _lengths(args, objective, info["n_features"])
        start = time.perf_counter()
        model, refined_models = fit_and_refine(
            {"objective": objective, "architecture": architecture},
            X_train,
            lengths,
            args.seed,
            warmups,
            patiences,
        )
        refinement_seconds = sum(s for _, _, s in refined_models.values())
        main_seconds = time.perf_counter() - start - refinement_seconds
        save(
            [
                record(
                    {
                        "objective": objective,
                        "architecture": architecture,
                        "refinement_epochs": n_epochs,
                        "warmup_epochs": warmup,
                        "patience": patience,
                        "test_loglik": float(np.mean(refined.score_samples(X_test))),
                        "fit_seconds": main_seconds + seconds,
                        "refinement_seconds": seconds,
                        "main_epochs": model.n_iter_,
                        "kept": kept,
                        "source": "fitted",
                    }
                )
                for (n_epochs, warmup, patience), (refined, kept, seconds) in (
                    refined_models.items()
                )
            ]
        )


def summarize(rows: list[dict]) -> None:
    """Gaps in nats per dimension to ``ml`` with the same architecture."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    frame["per_dim"] = frame["test_loglik"] / frame["n_features"]
    # one cell per setting: rows of other warm-ups or patiences are not averaged
    variants = [_variant(row) for row in rows]
    frame["warmup_epochs"] = [variant[1] for variant in variants]
    frame["patience"] = [variant[2] for variant in variants]
    # merged stems may repeat an ml row: the first counts, as in markdown_table
    ml = (
        frame[frame["objective"] == "ml"]
        .drop_duplicates(["architecture", "dataset"])
        .set_index(["architecture", "dataset"])
    )
    frame = frame[frame["objective"] != "ml"].copy()
    frame["gap"] = [
        ml.loc[(arch, dataset), "per_dim"] - value
        for arch, dataset, value in zip(
            frame["architecture"], frame["dataset"], frame["per_dim"], strict=True
        )
    ]
    table = frame.pivot_table(
        index=[
            "architecture",
            "objective",
            "refinement_epochs",
            "warmup_epochs",
            "patience",
        ],
        columns="dataset",
        values="gap",
    )
    print("\nGap to ml with the same architecture, nats per dimension:")
    print(table.round(3).to_string())
    within = (table <= 0.1).sum(axis=1).rename("within 0.1")
    print(pd.concat([within, table.notna().sum(axis=1).rename("of")], axis=1))


def _three_decimals(value: float) -> str:
    text = f"{value:.3f}"
    return "0.000" if text == "-0.000" else text


def markdown_table(rows: list[dict]) -> str:
    """One line per data set: ``ml``'s test log-likelihood per dimension with each
    architecture, and each objective's gap to it unrefined -> refined (bold:
    refined within 0.1 nats per dimension). Data sets in the order of their first
    row; a data set measured twice (two processes) keeps its first rows."""
    by_key: dict[tuple, dict] = {}
    datasets: dict[str, int] = {}
    for row in rows:
        key = (row["dataset"], row["architecture"], row["objective"])
        datasets.setdefault(row["dataset"], row["n_features"])
        by_key.setdefault(key, {}).setdefault(row["refinement_epochs"], row)
    objectives = sorted(
        {key[2] for key in by_key} - {"ml"}, key=lambda name: OBJECTIVES.index(name)
    )
    architectures = [
        name for name in ARCHITECTURES if any(key[1] == name for key in by_key)
    ]
    header = ["data set (D)"]
    for architecture in architectures:
        header.append(f"`ml` {architecture}, nats/dim")
        header.extend(f"`{objective}` {architecture}" for objective in objectives)
    lines = [
        "| " + " | ".join(header) + " |",
        "|"
        + "|".join(["---"] + ["---:", *["---"] * len(objectives)] * len(architectures))
        + "|",
    ]
    for dataset, n_features in datasets.items():
        cells = [f"{dataset} ({n_features})"]
        for architecture in architectures:
            ml = by_key.get((dataset, architecture, "ml"), {}).get(0)
            if ml is None:
                cells.extend(["–"] * (1 + len(objectives)))
                continue
            reference = ml["test_loglik"] / n_features
            cells.append(f"{reference:.3f}")
            for objective in objectives:
                fits = by_key.get((dataset, architecture, objective), {})
                if 0 not in fits or len(fits) < 2:
                    cells.append("–")
                    continue
                unrefined = reference - fits[0]["test_loglik"] / n_features
                refined = reference - fits[max(fits)]["test_loglik"] / n_features
                text = _three_decimals(refined)
                cells.append(
                    f"{_three_decimals(unrefined)} → "
                    + (f"**{text}**" if refined <= 0.1 else text)
                )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
