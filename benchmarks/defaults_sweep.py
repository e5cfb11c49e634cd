"""Sweep of EBFlowDensity's training settings, to choose its defaults.

Each named configuration (:data:`CONFIGS`) is a set of parameter overrides applied to
``EBFlowDensity(device="cpu", random_state=seed)``; every one is fitted on the same
data sets, seeds and splits as ``benchmarks/density.py`` (its ``prepare``: constant
columns dropped, 70/30 split, training rows capped, standardized with training
statistics, the same 0.01 jitter of discrete columns, ``digits`` dequantized) and
scored by the test mean log-likelihood in nats per row. The summary reports, per
configuration, the mean over data sets of the difference to ``base`` in nats per
dimension, how many data sets it improves, and its median fit time.

Run ``python benchmarks/defaults_sweep.py --configs round1`` (one factor at a time
from the current defaults, 1 seed, about 15 minutes on one busy core) and
``--configs round2 --seeds 2 --stem defaults_sweep_round2`` (combinations of the
round-1 winners), then ``--configs round3 --seeds 3 --stem defaults_sweep_round3
--datasets all`` (tanh or SiLU conditioners, four or eight blocks, on every data set of
``benchmarks/density.py``); ``--configs a,b`` runs a subset. Rounds 1 and 2 ran
before the conditioners' activation became a parameter, with SiLU: their ``base`` is
the defaults of the time. Round 4 (``--configs round4 --datasets all --stem
defaults_sweep_round4``) tries the logistic-mixture coupling. Every round runs on
the tuning group of ``benchmarks/density.py`` only. Round 5 (``--configs round5
--seeds 3 --datasets all --stem defaults_sweep_round5``) confirms round 4's leaders on
three seeds; ``--datasets`` may split a round over several processes, whose
``--stem`` results ``--merge`` joins. Every round runs on
the tuning group of ``benchmarks/density.py`` only (``TUNING_SETS``); the script
refuses the evaluation group, whose results are the honest headline. Results go to
``benchmarks/results/<stem>.{json,csv}``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from density import TUNING_SETS, WIDE_TUNING_SETS, prepare  # noqa: E402

from skebflow import EBFlowDensity  # noqa: E402

DATASETS = (
    "wine",
    "breast_cancer",
    "digits",
    "47_yeast",
    "6_cardio",
    "44_Wilt",
    "2_annthyroid",
    "18_Ionosphere",
)

#: Named overrides of EBFlowDensity's parameters ("base" is the defaults as released).
CONFIGS: dict[str, dict] = {
    "base": {},
    "lr3e-3": {"learning_rate": 3e-3},
    "lr3e-4": {"learning_rate": 3e-4},
    "layers2": {"n_layers": 2},
    "layers8": {"n_layers": 8},
    "hidden32": {"hidden_layer_sizes": (32, 32)},
    "hidden128": {"hidden_layer_sizes": (128, 128)},
    "batch64": {"batch_size": 64},
    "patience50": {"n_iter_no_change": 50},
    "ema0": {"ema_decay": 0.0},
    "ema0.999": {"ema_decay": 0.999},
    "wd1e-4": {"weight_decay": 1e-4},
    "jitter0.02": {"jitter": 0.02},
    "jitter0.05": {"jitter": 0.05},
    "jitter0.1": {"jitter": 0.1},
    "jitter0.2": {"jitter": 0.2},
    "dsm": {"objective": "dsm"},
    "dsm0.2": {"objective": "dsm", "noise_std": 0.2},
    "val0.2": {"validation_fraction": 0.2},
    # round 2: combinations of the round-1 winners
    "lr3e-3_h32": {"learning_rate": 3e-3, "hidden_layer_sizes": (32, 32)},
    "lr3e-3_j0.1": {"learning_rate": 3e-3, "jitter": 0.1},
    "lr3e-3_j0.2": {"learning_rate": 3e-3, "jitter": 0.2},
    "lr3e-3_h32_j0.1": {
        "learning_rate": 3e-3,
        "hidden_layer_sizes": (32, 32),
        "jitter": 0.1,
    },
    "lr3e-3_h32_l8": {
        "learning_rate": 3e-3,
        "hidden_layer_sizes": (32, 32),
        "n_layers": 8,
    },
    "h32_j0.1": {"hidden_layer_sizes": (32, 32), "jitter": 0.1},
    "dsm_lr3e-3": {"objective": "dsm", "learning_rate": 3e-3},
    "dsm_lr3e-3_h32": {
        "objective": "dsm",
        "learning_rate": 3e-3,
        "hidden_layer_sizes": (32, 32),
    },
}
ROUNDS = {
    "round1": [name for name in CONFIGS if "_" not in name],
    "round2": ["base", "lr3e-3", "hidden32", "dsm"]
    + [name for name in CONFIGS if "_" in name],
    # round 3, from the round-2 winner (now the defaults, with tanh conditioners):
    # the conditioners' activation, at four and eight blocks
    "round3": ["base", "silu", "layers8", "silu_l8"],
}
CONFIGS["silu"] = {"activation": "silu"}
CONFIGS["silu_l8"] = {"activation": "silu", "n_layers": 8}
# round 4: the logistic-mixture coupling and what might go with it, on the tuning
# group only (``--datasets all``)
LMIX = {"coupling_transform": "logistic_mixture"}
CONFIGS.update(
    {
        "lmix": LMIX,
        "lmix_k4": {**LMIX, "n_components": 4},
        "lmix_k16": {**LMIX, "n_components": 16},
        "lmix_l8": {**LMIX, "n_layers": 8},
        "lmix_h64": {**LMIX, "hidden_layer_sizes": (64, 64)},
        "lmix_iter400": {**LMIX, "max_iter": 400},
        "lmix_wd1e-4": {**LMIX, "weight_decay": 1e-4},
        "lmix_val0.2": {**LMIX, "validation_fraction": 0.2},
        "iter400": {"max_iter": 400},
    }
)
ROUNDS["round4"] = ["base", "lmix", *[name for name in CONFIGS if "lmix_" in name]]
ROUNDS["round4"].append("iter400")
# round 5: the round-4 leaders and their combination with weight decay, 3 seeds
CONFIGS.update(
    {
        "lmix_h64_wd1e-4": {
            **LMIX,
            "hidden_layer_sizes": (64, 64),
            "weight_decay": 1e-4,
        },
        "lmix_l8_wd1e-4": {**LMIX, "n_layers": 8, "weight_decay": 1e-4},
    }
)
# objective settings (issue 13): each score-matching objective at the defaults
# (shared with ml) and with the settings the paper trains score matching with
# (a smaller learning rate, EMA 0.999, a longer patience, smaller batches)
for _objective in ("ssm", "dsm"):
    _base = {"objective": _objective}
    CONFIGS.update(
        {
            _objective: _base,
            f"{_objective}_lr1e-3": {**_base, "learning_rate": 1e-3},
            f"{_objective}_ema0.999": {**_base, "ema_decay": 0.999},
            f"{_objective}_pat60": {**_base, "n_iter_no_change": 60},
            f"{_objective}_lr1e-3_ema0.999_pat60": {
                **_base,
                "learning_rate": 1e-3,
                "ema_decay": 0.999,
                "n_iter_no_change": 60,
            },
            f"{_objective}_b64": {**_base, "batch_size": 64},
        }
    )
    ROUNDS[f"{_objective}_settings"] = [
        _objective,
        *(f"{_objective}_{suffix}" for suffix in ("lr1e-3", "ema0.999", "pat60")),
        f"{_objective}_lr1e-3_ema0.999_pat60",
        f"{_objective}_b64",
    ]
# objective-aware "auto" settings (issue 13, items 1 and 2): each score-matching
# objective at the former shared settings (learning rate 3e-3, patience on the
# held-out log-likelihood), with the smaller learning rate, with the patience on the
# held-out loss, and with both (what "auto" resolves to)
ROUNDS["sm_auto"] = []
for _objective in ("ssm", "dsm", "fdssm"):
    _base = {"objective": _objective}
    CONFIGS.update(
        {
            f"{_objective}_shared": {
                **_base,
                "learning_rate": 3e-3,
                "early_stopping_metric": "log_likelihood",
            },
            f"{_objective}_lr1e-3_ll": {
                **_base,
                "learning_rate": 1e-3,
                "early_stopping_metric": "log_likelihood",
            },
            f"{_objective}_lr3e-3_loss": {
                **_base,
                "learning_rate": 3e-3,
                "early_stopping_metric": "loss",
            },
            f"{_objective}_lr1e-3_loss": {
                **_base,
                "learning_rate": 1e-3,
                "early_stopping_metric": "loss",
            },
        }
    )
    ROUNDS["sm_auto"] += [
        f"{_objective}_{suffix}"
        for suffix in ("shared", "lr1e-3_ll", "lr3e-3_loss", "lr1e-3_loss")
    ]
# the former shared settings against what "auto" resolves to, for the sets the full
# round could not reach in one session
ROUNDS["sm_auto_short"] = [
    f"{objective}_{suffix}"
    for objective in ("ssm", "dsm", "fdssm")
    for suffix in ("shared", "lr1e-3_loss")
]


def _score_matching_round(round_name: str, variants: list[tuple[str, dict]]) -> None:
    """Register ``{objective}_{suffix}`` for each score-matching objective and each
    ``(suffix, overrides)`` of ``variants`` as the round ``round_name``."""
    ROUNDS[round_name] = []
    for objective in ("ssm", "dsm", "fdssm"):
        for suffix, overrides in variants:
            name = f"{objective}_{suffix}"
            CONFIGS[name] = {"objective": objective, **overrides}
            ROUNDS[round_name].append(name)


# Noise annealing (issue 13, item 6): score matching starting from data smoothed by
# N(0, s^2) (standardized units), s falling to noise_std over 35 % of max_iter; 0 is
# no annealing. Coupling at three starts, fc at two.
_score_matching_round(
    "annealing",
    [
        (
            f"{architecture}_anneal{start:g}",
            {"architecture": architecture, "noise_annealing": start},
        )
        for architecture, starts in (("coupling", (0.0, 1.0, 2.0)), ("fc", (0.0, 1.0)))
        for start in starts
    ],
)
# The same at one start (the first sets of the full round put 2.0 behind 1.0 for
# every objective), for one run within a session.
ROUNDS["annealing_short"] = [n for n in ROUNDS["annealing"] if "anneal2" not in n]
# Output whitening (whiten_output): score matching at its "auto" settings with the
# last dense layer refitted by whitening, against the same without.
_score_matching_round(
    "whiten",
    [
        (
            f"{architecture}_{'whiten' if whiten else 'raw'}",
            {"architecture": architecture, "whiten_output": whiten},
        )
        for architecture in ("coupling", "fc")
        for whiten in (False, True)
    ],
)
# Where the annealing ends (noise_std, 0.1 by default): the benchmark's discrete
# columns carry a jitter of 0.01, which a final noise of 0.1 smooths away.
_score_matching_round(
    "annealing_end",
    [
        (
            f"coupling_anneal1_end{end:g}",
            {"architecture": "coupling", "noise_annealing": 1.0, "noise_std": end},
        )
        for end in (0.03, 0.01)
    ],
)
# Likelihood refinement (likelihood_refinement): score matching at its "auto"
# settings (whitening included) followed by 20 epochs of maximum likelihood, beside
# maximum likelihood with the same architecture; the unrefined score-matching fits
# are the round "whiten"'s "*_whiten" rows.
_score_matching_round(
    "refinement",
    [
        (
            f"{architecture}_refine{epochs}",
            {"architecture": architecture, "likelihood_refinement": epochs},
        )
        for architecture in ("coupling", "fc")
        for epochs in (20,)
    ],
)
CONFIGS["ml_fc"] = {"objective": "ml", "architecture": "fc"}
ROUNDS["refinement"].append("ml_fc")
ROUNDS["round5"] = [
    "base",
    "lmix",
    "lmix_wd1e-4",
    "lmix_h64_wd1e-4",
    "lmix_l8_wd1e-4",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--configs", type=str, default=None, help="round1, round2 or comma-separated"
    )
    parser.add_argument("--extra", type=str, default=None, help="JSON of more configs")
    parser.add_argument("--datasets", type=str, default=",".join(DATASETS))
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--max-train", type=int, default=2000)  # as density.py
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--stem", type=str, default="defaults_sweep")
    parser.add_argument(
        "--merge",
        type=str,
        default=None,
        help="comma-separated stems of earlier runs: join their rows, print the"
        " summary, write it under --stem, and run nothing",
    )
    args = parser.parse_args()
    if args.merge:
        rows, configs = [], {}
        for stem in args.merge.split(","):
            with open(args.out / f"{stem}.json") as handle:
                stored = json.load(handle)
            rows.extend(stored["rows"])
            configs.update(stored["configs"])
        with open(args.out / f"{args.stem}.json", "w") as handle:
            json.dump({"configs": configs, "rows": rows}, handle, indent=1)
        summarize(rows, args.out / f"{args.stem}.csv")
        return
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")

    configs = dict(CONFIGS)
    if args.extra:
        configs.update(json.loads(args.extra))
    spec = args.configs or "round1"
    names = ROUNDS[spec] if spec in ROUNDS else spec.split(",")
    if "base" not in names:
        names = ["base", *names]
    datasets = list(TUNING_SETS) if args.datasets == "all" else args.datasets.split(",")
    # Only tuning data chooses a default: the evaluation and fresh groups, and
    # the sets in no group, are refused alike.
    peeking = sorted(set(datasets) - set(TUNING_SETS) - set(WIDE_TUNING_SETS))
    if peeking:
        raise SystemExit(
            f"{peeking} are not tuning data of benchmarks/density.py (its tuning"
            " and wide-tuning groups), and a sweep chooses defaults; sweep those"
            " groups only."
        )
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    start_all = time.perf_counter()
    for seed in range(args.seeds):
        for dataset in datasets:
            X_train, X_test, info = prepare(dataset, seed, args.max_train)
            for name in names:
                params = dict(configs[name])
                if "hidden_layer_sizes" in params:
                    params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
                start = time.perf_counter()
                try:
                    model = EBFlowDensity(
                        device="cpu", random_state=seed, **params
                    ).fit(X_train)
                    seconds = time.perf_counter() - start
                    loglik = float(np.mean(model.score_samples(X_test)))
                    n_iter = model.n_iter_
                except Exception as error:  # noqa: BLE001 - record and go on
                    seconds, loglik, n_iter = math.nan, math.nan, 0
                    print(f"  {name} failed: {type(error).__name__}: {error}")
                if not np.isfinite(loglik):
                    loglik = math.nan
                rows.append(
                    {
                        "config": name,
                        "dataset": dataset,
                        "seed": seed,
                        "n_features": info["n_features"],
                        "test_loglik": loglik,
                        "fit_seconds": seconds,
                        "n_iter": n_iter,
                    }
                )
                print(
                    f"seed {seed} {dataset:14s} {name:14s} loglik {loglik:9.3f}"
                    f" ({seconds:5.1f}s, {n_iter} epochs)",
                    flush=True,
                )
            with open(args.out / f"{args.stem}.json", "w") as handle:
                json.dump({"configs": configs, "rows": rows}, handle, indent=1)

    summarize(rows, args.out / f"{args.stem}.csv")
    print(f"\nwall time {(time.perf_counter() - start_all) / 60:.1f} min")


def summarize(rows: list[dict], csv_path: Path) -> None:
    """Print each configuration's gain over ``base`` per data set, and a summary."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    frame.to_csv(csv_path, index=False)
    frame["per_dim"] = frame["test_loglik"] / frame["n_features"]
    # A failed seed (NaN) fails the configuration's mean on that set, and a
    # failure counts as the worst clipped gain, -1: averaging over the seeds or
    # sets that survived would hide it.
    table = (
        frame.groupby(["config", "dataset"])["per_dim"]
        .agg(lambda values: values.mean(skipna=False))
        .unstack("dataset")
    )
    delta = table.sub(table.loc["base"], axis=1)
    seconds = frame.pivot_table(index="config", values="fit_seconds", aggfunc="median")
    # one catastrophic test row can move a mean log-likelihood by thousands of nats;
    # the clipped mean and the median keep one data set from deciding alone
    summary = pd.DataFrame(
        {
            "mean_delta_per_dim": delta.mean(axis=1, skipna=False),
            "clipped_mean_delta": delta.fillna(-1.0).clip(-1, 1).mean(axis=1),
            "median_delta": delta.median(axis=1),
            "n_better": (delta > 0).sum(axis=1),
            "median_seconds": seconds["fit_seconds"],
        }
    ).sort_values("clipped_mean_delta", ascending=False)
    print("\nTest log-likelihood per dimension minus base's (mean over seeds):")
    print(delta.round(3).to_string())
    print("\nSummary:")
    print(summary.round(3).to_string())


if __name__ == "__main__":
    main()
