"""Exact linear relations in the density benchmark's training rows.

Rows on a hyperplane have no density, and a flow's held-out likelihood on them
grows for as long as it trains (``skebflow._validation.linear_relations``; the
estimator warns). This prints, for every data set of both groups of
``benchmarks/density.py`` and seeds 0 and 1, the training rows' shape after the
benchmark's preparation (constant columns dropped, discrete columns jittered,
standardized) and the relations found there, so that the benchmark's
log-likelihoods are known to be those of proper densities.

Run ``python benchmarks/linear_relations_check.py`` (a few seconds).
"""

from __future__ import annotations

import warnings

import density

from skebflow._validation import linear_relations


def main() -> None:
    warnings.simplefilter("ignore")
    found = 0
    for name in (*density.TUNING_SETS, *density.EVALUATION_SETS):
        for seed in (0, 1):
            X_train, _, _ = density.prepare(name, seed)
            n_relations, columns = linear_relations(X_train)
            found += n_relations
            rows, columns_count = X_train.shape
            print(
                f"{name:18s} seed {seed}: {rows:5d} x {columns_count:3d},"
                f" {n_relations} relation(s)"
                + (f" among columns {columns.tolist()}" if n_relations else "")
            )
    print(f"relations found in all: {found}")


if __name__ == "__main__":
    main()
