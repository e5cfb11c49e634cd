"""Data-parallel fit under Ray Train's ``TorchTrainer`` (2 CPU workers, gloo).

Ray Train starts one process per worker and initializes ``torch.distributed`` in
each before it calls the training function, as ``torchrun`` does; ``fit`` sees the
process group and trains data-parallel, exactly as under ``torchrun``. Every worker
writes what it ended with to ``OUT/rank{r}.pt``. Run by tests/test_ray_train.py
(``python tests/ray_train_fit.py OUT``); not collected as a test.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def train_loop(config: dict) -> None:
    """What each Ray Train worker runs: the torchrun script's ``ml`` fit."""
    import numpy as np
    import ray.train
    import torch
    from torchrun_fit import SETTINGS, training_rows

    from skebflow import EBFlowDensity

    torch.set_num_threads(1)
    X, X_test = training_rows()
    model = EBFlowDensity(**SETTINGS["ml"]).fit(X)
    rank = ray.train.get_context().get_world_rank()
    torch.save(
        {
            "world_size": ray.train.get_context().get_world_size(),
            "state": {k: v.clone() for k, v in model.flow_.state_dict().items()},
            "n_iter": model.n_iter_,
            "test_loglik": float(np.mean(model.score_samples(X_test))),
        },
        f"{config['out']}/rank{rank}.pt",
    )


def main(out_dir: str) -> None:
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(HERE), "OMP_NUM_THREADS": "1"}},
    )
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"out": out_dir},
        scaling_config=ScalingConfig(
            num_workers=2, use_gpu=False, resources_per_worker={"CPU": 1}
        ),
        torch_config=TorchConfig(backend="gloo"),
        run_config=RunConfig(storage_path=out_dir, name="ray_train_fit"),
    )
    trainer.fit()
    ray.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
