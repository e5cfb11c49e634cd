"""Data-parallel training under ``torchrun`` (2 CPU processes, gloo).

Slow-marked (a multi-process launch, about 20 s); ``make test`` runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from skebflow import EBFlowDensity

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (
            torch.distributed.is_available() and torch.distributed.is_gloo_available()
        ),
        reason="needs torch.distributed with the gloo backend",
    ),
]

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from torchrun_fit import SETTINGS, training_rows  # noqa: E402


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("torchrun")
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(HERE / "torchrun_fit.py"),
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
        cwd=HERE.parent,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_every_rank_ends_with_the_same_weights(ranks, name):
    first, second = ranks[0][name], ranks[1][name]
    assert ranks[0]["world_size"] == 2
    assert first["state"].keys() == second["state"].keys()
    for key, value in first["state"].items():
        assert torch.equal(value, second["state"][key]), key
    # Validation is all-reduced: both ranks saw the same curve and stopped together.
    assert first["validation_scores"] == second["validation_scores"]
    assert first["n_iter"] == second["n_iter"]
    # and so is the training loss, each batch weighed by all its rows
    assert first["loss_curve"] == second["loss_curve"]


def test_the_training_loss_matches_one_process(ranks):
    """Each batch's loss weighed by its whole rows, as one process weighs it,
    not by a rank's share of them."""
    X, _ = training_rows()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        single = EBFlowDensity(**SETTINGS["ml_training_loss"]).fit(X)
    distributed = ranks[0]["ml_training_loss"]
    assert distributed["n_iter"] == single.n_iter_
    np.testing.assert_allclose(distributed["loss_curve"], single.loss_curve_, atol=1e-4)


def test_ml_matches_one_process_with_the_same_global_batch(ranks):
    # Rank 0 draws the batch order a single process draws, and each step averages
    # the two halves' gradients: the same steps, up to the rounding of the sums.
    X, X_test = training_rows()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        single = EBFlowDensity(**SETTINGS["ml"]).fit(X)
    distributed = ranks[0]["ml"]
    assert distributed["n_iter"] == single.n_iter_
    assert distributed["test_loglik"] == pytest.approx(
        float(np.mean(single.score_samples(X_test))), abs=1e-4
    )
    np.testing.assert_allclose(
        distributed["validation_scores"], single.validation_scores_, atol=1e-4
    )


def test_dsm_is_close_to_one_process(ranks):
    # Each rank draws its own noise, so the steps differ from one process's by the
    # noise only: the held-out likelihoods stay close.
    X, X_test = training_rows()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        single = EBFlowDensity(**SETTINGS["dsm"]).fit(X)
    assert ranks[0]["dsm"]["test_loglik"] == pytest.approx(
        float(np.mean(single.score_samples(X_test))), abs=0.1
    )


def test_ranks_given_different_rows_all_refuse(ranks):
    for record in ranks:
        for key in (
            "mismatch_error",
            "reordered_rows_error",
            "moved_weights_error",
            "partial_fit_mismatch_error",
            "partial_fit_length_error",
        ):
            assert "different rows" in record[key], key
            assert "same integer random_state" in record[key], key


def test_ranks_with_other_settings_refuse(ranks):
    for record in ranks:
        assert "settings" in record["settings_mismatch_error"]


def test_a_rank_whose_rows_fail_its_checks_stops_the_others(ranks):
    assert "NaN" in ranks[1]["invalid_rows_error"]
    assert "another rank's checks" in ranks[0]["invalid_rows_error"]


def test_ranks_continuing_other_fitted_states_all_refuse(ranks):
    """A rank resumed from another fitted state trained on silently into another
    model (found by a review)."""
    for record in ranks:
        for key in ("stale_partial_fit_error", "stale_warm_start_error"):
            assert "fitted state" in record[key], key


def test_a_rank_without_the_device_stops_the_others(ranks):
    """It raised alone, and the others waited for the collective's timeout."""
    assert "CUDA" in ranks[1]["bad_device_error"]
    assert "another rank's checks" in ranks[0]["bad_device_error"]


def test_local_training_fits_one_rank_alone_as_one_process(ranks):
    # Rank 0 fitted inside local_training while rank 1 waited at a barrier: no
    # collective ran, and the fit is a single process's, epoch for epoch.
    X, _ = training_rows()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        single = EBFlowDensity(**SETTINGS["ml"]).fit(X)
    alone = ranks[0]["alone"]
    assert "alone" not in ranks[1]
    assert alone["n_iter"] == single.n_iter_
    np.testing.assert_allclose(
        alone["validation_scores"], single.validation_scores_, rtol=1e-12
    )
