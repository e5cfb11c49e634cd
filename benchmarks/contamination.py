"""The share of fresh inliers that ``EBFlowOutlierDetector.predict`` flags.

``offset_`` is the ``contamination`` quantile of the training rows' log-densities,
so ``predict`` flags exactly that share of the training rows. On fresh rows of the
same distribution it flags about as many, more where the flow has fitted its
training rows more closely than unseen ones (small training sets). This measures
it at the detector's defaults: rows of a 5-D Student-t with 5 degrees of freedom
(heavy tails, so the quantile sits where the density is thin), ``--train-sizes``
training rows, ``--n-fresh`` fresh rows, ``--seeds`` seeds, ``--contamination``.

    OMP_NUM_THREADS=1 python benchmarks/contamination.py

The user guide's "Choosing contamination" quotes its output
(``benchmarks/results/contamination.log``).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_line  # noqa: E402

from skebflow import EBFlowOutlierDetector  # noqa: E402


def student_t_rows(n_rows: int, n_features: int, df: float, seed: int) -> np.ndarray:
    """Rows of a standard multivariate Student-t (independent scale per row)."""
    rng = np.random.RandomState(seed)
    normal = rng.standard_normal((n_rows, n_features))
    scale = np.sqrt(df / rng.chisquare(df, size=(n_rows, 1)))
    return normal * scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-sizes", type=int, nargs="+", default=[300, 1000, 5000])
    parser.add_argument("--n-fresh", type=int, default=20000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--contamination", type=float, default=0.05)
    parser.add_argument("--n-features", type=int, default=5)
    parser.add_argument("--df", type=float, default=5.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    print(machine_line(), flush=True)
    print(
        f"{args.n_features}-D Student-t, df {args.df:g}; contamination"
        f" {args.contamination}; {args.n_fresh} fresh rows; seeds {args.seeds}",
        flush=True,
    )
    print("| training rows | flows | flagged among fresh rows, per seed | mean |")
    print("|---:|---:|---|---:|")
    for n_train in args.train_sizes:
        shares, n_flows = [], None
        for seed in args.seeds:
            train = student_t_rows(n_train, args.n_features, args.df, 1000 + seed)
            fresh = student_t_rows(args.n_fresh, args.n_features, args.df, 2000 + seed)
            start = time.perf_counter()
            detector = EBFlowOutlierDetector(
                contamination=args.contamination, device="cpu", random_state=seed
            ).fit(train)
            shares.append(float(np.mean(detector.predict(fresh) == -1)))
            n_flows = detector.n_flows_
            print(
                f"  {n_train} rows, seed {seed}: {shares[-1]:.4f}"
                f" ({time.perf_counter() - start:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
        cells = ", ".join(f"{100 * share:.1f} %" for share in shares)
        print(
            f"| {n_train} | {n_flows} | {cells} | {100 * np.mean(shares):.1f} % |",
            flush=True,
        )


if __name__ == "__main__":
    main()
