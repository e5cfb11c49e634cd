"""Run by tests/test_torchrun.py under ``torchrun --nproc_per_node=2`` (CPU, gloo).

Every rank fits the same estimators on the same rows and writes what it ended with
to ``OUT/rank{r}.pt``: the weights, the epochs, the held-out log-likelihood, and the
error a rank given different rows raised. Not collected as a test.
"""

from __future__ import annotations

import sys
import time
import warnings


def main(out_dir: str) -> None:
    import numpy as np
    import torch
    import torch.distributed as dist

    from skebflow import EBFlowDensity, local_training

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    X, X_test = training_rows()
    record: dict = {"world_size": dist.get_world_size()}
    warnings.simplefilter("ignore")
    for name, settings in SETTINGS.items():
        started = time.perf_counter()
        model = EBFlowDensity(**settings).fit(X)
        record[name] = {
            "state": {k: v.clone() for k, v in model.flow_.state_dict().items()},
            "n_iter": model.n_iter_,
            "seconds_per_epoch": (time.perf_counter() - started) / model.n_iter_,
            "test_loglik": float(np.mean(model.score_samples(X_test))),
            "validation_scores": model.validation_scores_,
            "loss_curve": model.loss_curve_,
        }
    # A rank given other rows: every rank refuses, none hangs.
    try:
        EBFlowDensity(**SETTINGS["ml"]).fit(X + rank)
    except ValueError as error:
        record["mismatch_error"] = str(error)
    # Rows in another order, or weights moved to other rows, are other data too;
    # their sums are equal (multiples of 1/4 and integers add exactly in any order).
    quarters = np.round(X * 4.0) / 4.0
    try:
        EBFlowDensity(**SETTINGS["ml"]).fit(quarters if rank == 0 else quarters[::-1])
    except ValueError as error:
        record["reordered_rows_error"] = str(error)
    weights = np.arange(1.0, X.shape[0] + 1.0)
    try:
        EBFlowDensity(**SETTINGS["ml"]).fit(
            X, sample_weight=weights if rank == 0 else weights[::-1]
        )
    except ValueError as error:
        record["moved_weights_error"] = str(error)
    # The same for partial_fit: a first chunk, then a chunk of another length.
    try:
        EBFlowDensity(**SETTINGS["ml"]).partial_fit(X + rank)
    except ValueError as error:
        record["partial_fit_mismatch_error"] = str(error)
    model = EBFlowDensity(**SETTINGS["ml"]).partial_fit(X)
    try:
        model.partial_fit(X[: 100 + rank])
    except ValueError as error:
        record["partial_fit_length_error"] = str(error)
    # Another learning rate on one rank: other steps between the all-reduces.
    try:
        EBFlowDensity(**{**SETTINGS["ml"], "learning_rate": 1e-3 * (1 + rank)}).fit(X)
    except ValueError as error:
        record["settings_mismatch_error"] = str(error)
    # Rows that fail one rank's checks: that rank says why, the others that it
    # failed, and none waits for the collective's timeout.
    bad = X.copy()
    if rank == 1:
        bad[0, 0] = np.nan
    try:
        EBFlowDensity(**SETTINGS["ml"]).fit(bad)
    except ValueError as error:
        record["invalid_rows_error"] = str(error)
    # A rank continuing another fitted state (resumed from an older checkpoint):
    # every rank refuses, as for other rows (they trained on silently).
    stale = EBFlowDensity(**SETTINGS["ml"])
    if rank == 1:
        with local_training():
            stale.partial_fit(X[:200])
    try:
        stale.partial_fit(X)
    except ValueError as error:
        record["stale_partial_fit_error"] = str(error)
    warm = EBFlowDensity(**{**SETTINGS["ml"], "warm_start": True})
    with local_training():
        warm.fit(X * (1 + 4 * rank))  # each rank's own first fit
    try:
        warm.fit(X)
    except ValueError as error:
        record["stale_warm_start_error"] = str(error)
    # A device one rank lacks: that rank says so, the others that it failed,
    # and none waits for the collective's timeout.
    try:
        EBFlowDensity(**{**SETTINGS["ml"], "device": "cuda:7" if rank else "cpu"}).fit(X)
    except ValueError as error:
        record["bad_device_error"] = str(error)
    # A model fitted on rank 0 alone, inside local_training: no collective.
    if rank == 0:
        with local_training():
            alone = EBFlowDensity(**SETTINGS["ml"]).fit(X)
        record["alone"] = {
            "n_iter": alone.n_iter_,
            "validation_scores": alone.validation_scores_,
        }
    dist.barrier()
    torch.save(record, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


def training_rows():
    import numpy as np

    rng = np.random.RandomState(0)
    X = np.c_[rng.normal(size=(1200, 1)), rng.gamma(2.0, size=(1200, 1))]
    X = np.c_[X, X[:, :1] * X[:, 1:] + 0.3 * rng.normal(size=(1200, 1))]
    return X[:1000], X[1000:]


SMALL = dict(n_layers=2, batch_size=128, device="cpu", random_state=0)
SETTINGS = {
    "ml": dict(objective="ml", n_flows=1, max_iter=6, n_iter_no_change=3, **SMALL),
    "dsm": dict(
        objective="dsm", n_flows=2, max_iter=4, early_stopping_metric="loss", **SMALL
    ),
    # Stopped by the training loss (no held-out rows), in batches whose last one
    # falls to one rank alone (333, 333, 333 and 1 rows): each rank weighed the
    # batches' loss by its own share, the ranks' patience disagreed and their
    # collectives no longer matched (a crash).
    "ml_training_loss": {
        **SMALL,
        "objective": "ml",
        "n_flows": 1,
        "max_iter": 8,
        "early_stopping": False,
        "tol": 0.0,
        "n_iter_no_change": 2,
        "batch_size": 333,
    },
}

if __name__ == "__main__":
    main(sys.argv[1])
