"""Fit time of the default EBFlowDensity on 10 000 rows x 20 columns, one thread.

``make_classification(10000, 20, n_informative=10, random_state=0)``; the default
estimator and the same with the affine couplings of the previous defaults, one after
the other in one process, each fitted once (a fit takes minutes, so there is no
warm-up beyond the first epochs). Prints the machine's load average before and after.

Run ``python benchmarks/fit_time.py``.
"""

from __future__ import annotations

import os
import platform
import time
import warnings

import torch
from sklearn.datasets import make_classification

from skebflow import EBFlowDensity

CONFIGS = {
    "default (logistic_mixture, wd 1e-4)": {},
    "affine (previous default)": {"coupling_transform": "affine", "weight_decay": 0.0},
}


def main() -> None:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    X, _ = make_classification(10000, 20, n_informative=10, random_state=0)
    print(
        f"machine: {platform.processor() or platform.machine()}, torch "
        f"{torch.__version__}, 1 thread; load {os.getloadavg()}"
    )
    for name, params in CONFIGS.items():
        start = time.perf_counter()
        est = EBFlowDensity(device="cpu", random_state=0, **params).fit(X)
        seconds = time.perf_counter() - start
        print(
            f"{name}: {seconds:.1f} s, {est.n_iter_} epochs,"
            f" {seconds / est.n_iter_:.2f} s/epoch"
        )
    print(f"load {os.getloadavg()}")


if __name__ == "__main__":
    main()
