"""zuko's NSF as a mixture of four flows, as the default EBFlowDensity is below
5 000 rows (``n_flows="auto"``): how much of the default's lead over one NSF is
the ensemble's.

An audit (5 December, fourth session) pointed out that the density benchmark sets
the default's mixture of four flows against a single NSF. This script fits NSF
with seeds 0 to 3 on ``density.py``'s split of seed 0 (jitter 0.01, at most 2 000
training rows) and scores the equal mixture of the four, beside the first alone,
in nats per row and per dimension.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/nsf_ensemble.py 14_glass 40_vowels
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy.special import logsumexp

sys.path.insert(0, str(Path(__file__).resolve().parent))

import density  # noqa: E402
from _machine import machine_line  # noqa: E402

N_FLOWS = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("datasets", nargs="+")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    print(machine_line(), flush=True)
    print("| set | D | one NSF | mixture of four | gain per dim |")
    print("|---|---:|---:|---:|---:|")
    for name in args.datasets:
        X_train, X_test, info = density.prepare(name, 0, 2000)
        scores = np.array(
            [
                density.ZukoDensity("nsf", random_state=seed)
                .fit(X_train)
                .score_samples(X_test)
                for seed in range(N_FLOWS)
            ]
        )
        single = float(scores[0].mean())
        mixture = float((logsumexp(scores, axis=0) - np.log(N_FLOWS)).mean())
        d = info["n_features"]
        print(
            f"| {name} | {d} | {single:.3f} | {mixture:.3f} |"
            f" {(mixture - single) / d:+.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
