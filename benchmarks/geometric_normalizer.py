"""The cost and the precision of the geometric mean's Monte Carlo normalizer.

``EBFlowOutlierDetector(flow_combination="geometric_mean")`` (the default) estimates
``log Z`` of its flows' normalized geometric mean once per fit, from 4 096 draws of
their mixture. This script measures, on ADBench sets of the evaluation group, what
that estimate costs (process CPU seconds, one thread) beside scoring the training
rows, and how precise it is: ``Z``, and the standard error of ``log Z`` from the
ratios' spread (``std(ratio) / (mean(ratio) sqrt(draws))``, the delta method).

Detectors are fitted with ``max_iter`` epochs (default 200, the detector's default
when this script was written, 50 since 3 Dec 2026;
``--max-iter 5`` for a quick look: undertrained flows disagree more, so ``Z`` is
smaller and the estimate less precise). Run from the repository root::

    OMP_NUM_THREADS=1 python benchmarks/geometric_normalizer.py --sets 14_glass 25_musk
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_line  # noqa: E402
from anomaly import load_adbench, split  # noqa: E402

from skebflow import EBFlowOutlierDetector  # noqa: E402
from skebflow.flows import FlowGeometricMean, widen_base  # noqa: E402

DRAWS = 4096


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", nargs="+", default=["14_glass", "7_Cardiotocography"])
    parser.add_argument("--max-iter", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(machine_line(f"max_iter {args.max_iter}, seed {args.seed}, {DRAWS} draws"))
    print("| data set | rows × columns | flows | fit CPU s | log Z | se of log Z |"
          " estimate CPU s | scoring the training rows, CPU s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name in args.sets:
        X, y = load_adbench(name)
        X_train = split(X, y, "a", args.seed, 5000, 0.0)[0]
        detector = EBFlowOutlierDetector(
            max_iter=args.max_iter, device="cpu", random_state=args.seed
        )
        start = time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            detector.fit(X_train)
        fit_s = time.process_time() - start
        start = time.process_time()
        detector._set_scoring_density()
        estimate_s = time.process_time() - start
        start = time.process_time()
        detector.score_samples(X_train)
        score_s = time.process_time() - start
        flows = widen_base(detector.flow_, detector.base_scale_)
        if detector.n_flows_ > 1:
            geometric = FlowGeometricMean(flows.members)
            generator = torch.Generator().manual_seed(args.seed + 1)
            _, log_ratio = geometric._envelope_draws(DRAWS, generator)
            ratio = log_ratio.exp()
            se = float(ratio.std() / ratio.mean()) / math.sqrt(DRAWS)
        else:
            se = 0.0
        print(f"| {name} | {X_train.shape[0]} × {X_train.shape[1]} |"
              f" {detector.n_flows_} | {fit_s:.1f} | {detector.log_normalizer_:.3f} |"
              f" {se:.4f} | {estimate_s:.2f} | {score_s:.2f} |", flush=True)


if __name__ == "__main__":
    main()
