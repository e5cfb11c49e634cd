"""Small helpers shared by the test modules (seeded generators, perturbed weights)."""

from __future__ import annotations

import warnings

import torch
from sklearn.exceptions import ConvergenceWarning
from torch import nn

from skebflow import EBFlowDensity

DTYPE = torch.float64


def gen(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, generator: torch.Generator, dtype=DTYPE) -> torch.Tensor:
    """Standard normal draws from ``generator``."""
    return torch.randn(*shape, generator=generator, dtype=dtype)


def perturb(module: nn.Module, generator: torch.Generator, scale: float) -> nn.Module:
    """Add ``scale`` times standard normal noise to every parameter, in place."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(
                scale
                * torch.randn(
                    parameter.shape, generator=generator, dtype=parameter.dtype
                )
            )
    return module


#: A small, fast, seeded EBFlowDensity: one flow of two blocks, on the CPU.
SMALL_ESTIMATOR = {
    "n_flows": 1,
    "n_layers": 2,
    "hidden_layer_sizes": (16,),
    "batch_size": 64,
    "device": "cpu",
    "random_state": 0,
}


def quiet_fit(estimator, X):
    """``estimator.fit(X)`` with convergence unreported."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(X)


def fit_small(X, **params) -> EBFlowDensity:
    """``EBFlowDensity(**SMALL_ESTIMATOR, **params).fit(X)``, convergence unreported."""
    return quiet_fit(EBFlowDensity(**{**SMALL_ESTIMATOR, **params}), X)


def interrupt_epoch(
    monkeypatch, on_call: int, error: BaseException | None = None
) -> dict[str, int]:
    """Make the ``on_call``-th training epoch raise ``error`` (by default
    ``KeyboardInterrupt``, as Ctrl-C would); returns the count of epochs started,
    ``{"n": ...}``."""
    import skebflow._training as training

    real, calls = training._Trainer.epoch, {"n": 0}

    def epoch(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == on_call:
            raise KeyboardInterrupt if error is None else error
        return real(self, *args, **kwargs)

    monkeypatch.setattr(training._Trainer, "epoch", epoch)
    return calls


def assert_threshold_at_quantile(offset: float, scores, quantile: float) -> None:
    """``offset`` is the contamination ``quantile`` of the training ``scores``,
    or, where that falls on a row's score, a point below it and above every lower
    score: it flags exactly the rows below the quantile and equals no score."""
    import numpy as np
    import pytest

    scores = np.asarray(scores)
    assert offset <= quantile
    assert not np.any((scores >= offset) & (scores < quantile))
    if np.any(scores == quantile):
        assert offset < quantile and not np.any(scores == offset)
    else:
        assert offset == pytest.approx(quantile)
