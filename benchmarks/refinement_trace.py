"""Why a likelihood refinement can be rejected: its first epochs, traced.

Fits ``EBFlowDensity`` (couplings, one flow, ``--objective``, ``--max-iter`` epochs)
on one data set of the density benchmark (``prepare``: seed 0, at most 2 000
training rows), then refines the same trained flow for 200 epochs once per
``--learning-rates`` value (``"auto"`` is the refinement's own) and per
``--warmups`` value (epochs of learning-rate warm-up) and ``--patience`` value
(``"start"``, ``"own"``: what the patience counts from), through the estimator's own
``_refine``. Prints, for each, whether the refinement was kept, its epochs, the
best held-out log-likelihood against the start's, the test log-likelihood, and the
held-out log-likelihood after each of the first eight epochs.

Run ``python benchmarks/refinement_trace.py --dataset 6_cardio --max-iter 30
--learning-rates auto,1e-3,3e-4`` (one thread). It traces tuning sets only: it
compares candidates and prints test log-likelihoods, so an evaluation set traced
here would inform a choice (musk, traced here on 2 December, informed the
refinement's patience; a review found it on 4 December). ``--diagnose-evaluation``
allows one, for a diagnosis that chooses nothing.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from density import EVALUATION_SETS, prepare  # noqa: E402

import skebflow._density as density_module  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="6_cardio")
    parser.add_argument(
        "--diagnose-evaluation",
        action="store_true",
        help="allow an evaluation set (a diagnosis only: it must choose nothing)",
    )
    parser.add_argument("--objective", default="dsm")
    parser.add_argument("--max-iter", type=int, default=30)
    parser.add_argument("--learning-rates", default="auto")
    parser.add_argument("--warmups", default="0")
    parser.add_argument("--patience", default="start", help='"start" and/or "own"')
    args = parser.parse_args()
    if args.dataset in EVALUATION_SETS and not args.diagnose_evaluation:
        raise SystemExit(
            f"{args.dataset} belongs to the evaluation group of"
            " benchmarks/density.py, which never chooses a default: trace a tuning"
            " set, or pass --diagnose-evaluation for a diagnosis that chooses"
            " nothing."
        )
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    X_train, X_test, _ = prepare(args.dataset, 0, 2000)
    results = []
    real_train = density_module._TrainingRows.train

    def train(self, *positional, **keywords):  # noqa: ANN001, ANN202
        result = real_train(self, *positional, **keywords)
        results.append(result)
        return result

    captured = []

    def capture(self, flow, preprocessing, data, n_epochs, seed, **_):  # noqa: ANN001, ANN003, ANN202
        captured.append((flow, preprocessing, data, seed))
        return flow, False, False, False  # kept, interrupted, unconverged

    model = density_module.EBFlowDensity(
        device="cpu",
        random_state=0,
        likelihood_refinement=1,
        objective=args.objective,
        architecture="coupling",
        n_flows=1,
        max_iter=args.max_iter,
    )
    with mock.patch.object(density_module.EBFlowDensity, "_refine", capture):
        model.fit(X_train)
    print(
        f"{args.dataset} {X_train.shape}, {args.objective} for {model.n_iter_} epochs:"
        f" test {np.mean(model.score_samples(X_test)):.2f}",
        flush=True,
    )
    flow, preprocessing, data, seed = captured[0]
    density_module._TrainingRows.train = train
    patiences = args.patience.split(",")
    variants = [(int(w), p) for w in args.warmups.split(",") for p in patiences]
    for rate in args.learning_rates.split(","):
        for warmup, patience in variants:
            model.learning_rate = "auto" if rate == "auto" else float(rate)
            start = time.perf_counter()
            refined, kept, _, _ = model._refine(
                flow, preprocessing, data, 200, seed, warmup, patience
            )
            result = results[-1]
            scored = copy.copy(model)
            scored.flow_ = refined
            scored.log_normalizer_ = model._checked_log_normalizer(refined)
            first = [round(value, 1) for value in result.validation_scores[:8]]
            print(
                f"learning rate {rate}, warm-up {warmup}, patience from {patience}:"
                f" kept {kept},"
                f" {result.n_iter} epochs, best held-out"
                f" {result.best_validation_score:.2f},"
                f" test {np.mean(scored.score_samples(X_test)):.2f}"
                f" ({time.perf_counter() - start:.0f} s); first epochs {first}",
                flush=True,
            )


if __name__ == "__main__":
    main()
