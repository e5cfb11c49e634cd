"""Data-parallel training under Ray Train's ``TorchTrainer`` (2 CPU workers, gloo).

Ray Train starts its workers and a controller as Ray actors; on 2 shared cores one
run takes minutes, so this test runs only with ``SKEBFLOW_RAY_TRAIN=1``
(``make test-ray-train``), not in ``make test``.
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
        os.environ.get("SKEBFLOW_RAY_TRAIN") != "1",
        reason="minutes of Ray actors; run with SKEBFLOW_RAY_TRAIN=1",
    ),
]

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from torchrun_fit import SETTINGS, training_rows  # noqa: E402


def test_ray_train_workers_end_equal_and_match_one_process(tmp_path):
    pytest.importorskip("ray.train.torch")
    completed = subprocess.run(
        [sys.executable, str(HERE / "ray_train_fit.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=HERE.parent,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert ranks[0]["world_size"] == 2
    for key, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][key]), key
    X, X_test = training_rows()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        single = EBFlowDensity(**SETTINGS["ml"]).fit(X)
    assert ranks[0]["n_iter"] == single.n_iter_
    assert ranks[0]["test_loglik"] == pytest.approx(
        float(np.mean(single.score_samples(X_test))), abs=1e-4
    )
