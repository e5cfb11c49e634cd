"""Noise annealing: the smoothing schedule, what each objective receives, and how it
interacts with early stopping (issue 13, item 6)."""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import pytest
import torch
from _helpers import SMALL_ESTIMATOR, fit_small, quiet_fit
from sklearn.datasets import make_moons

import skebflow._density as density_module
import skebflow.objectives as objectives_module
from skebflow import EBFlowDensity
from skebflow._auto_settings import ANNEALING_FRACTION, AUTO_TRAINING_SETTINGS
from skebflow._training import TrainingConfig, _Trainer, annealed_smoothing
from skebflow.flows import Preprocessing, coupling

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def moons():
    X, _ = make_moons(400, noise=0.1, random_state=0)
    return X


@pytest.mark.parametrize(
    ("start", "end", "epochs"), [(1.0, 0.1, 10), (2.0, 0.05, 7), (0.3, 0.29, 3)]
)
def test_the_smoothing_falls_geometrically_then_holds(start, end, epochs):
    config = TrainingConfig(
        noise_annealing=start, annealing_end=end, annealing_epochs=epochs
    )
    during = np.array([annealed_smoothing(config, e) for e in range(1, epochs + 1)])
    after = [annealed_smoothing(config, e) for e in range(epochs + 1, epochs + 20)]
    assert during[0] == start
    # One constant ratio per epoch, which takes the start to the end in `epochs`.
    ratios = during[1:] / during[:-1]
    np.testing.assert_allclose(ratios, (end / start) ** (1 / epochs), rtol=1e-12)
    assert during[-1] * ratios[0] == pytest.approx(end)
    assert after == [end] * len(after)


def test_no_annealing_leaves_the_objective_alone():
    assert annealed_smoothing(TrainingConfig(), 1) is None
    off = TrainingConfig(noise_annealing=0.0, annealing_epochs=10)
    assert annealed_smoothing(off, 1) is None
    assert annealed_smoothing(TrainingConfig(noise_annealing=1.0), 1) is None
    # A start below the end smooths at the end's level throughout.
    low = TrainingConfig(noise_annealing=0.05, annealing_end=0.1, annealing_epochs=5)
    assert {annealed_smoothing(low, e) for e in range(1, 9)} == {0.1}


def test_the_last_epoch_trains_at_the_end():
    """However few the epochs, the fit's last one trains at ``annealing_end``: with
    ``max_iter=1`` the 35 % rounds up to the one epoch, which trained at the start."""
    for max_iter in (1, 2, 3):
        config = TrainingConfig(
            noise_annealing=1.0,
            annealing_end=0.1,
            max_iter=max_iter,
            annealing_epochs=math.ceil(ANNEALING_FRACTION * max_iter),
        )
        assert annealed_smoothing(config, max_iter) == 0.1
    assert annealed_smoothing(config, 1) == 1.0


def test_a_one_epoch_fit_trains_at_noise_std(moons, monkeypatch):
    seen = []
    _recording("dsm", seen, monkeypatch)
    est = fit_small(moons, objective="dsm", max_iter=1, noise_std=0.2)
    assert est.noise_annealing_ == 1.0
    assert {settings["noise_std"] for _, settings in seen} == {0.2}


def _recording(name, seen, monkeypatch):
    """Replace ``OBJECTIVES[name]`` by a wrapper that records what it is called with."""
    original = objectives_module.OBJECTIVES[name]

    @functools.wraps(original)
    def recorded(flow, x, **settings):
        seen.append((x.detach().clone(), settings))
        return original(flow, x, **settings)

    monkeypatch.setitem(objectives_module.OBJECTIVES, name, recorded)


@pytest.mark.parametrize("objective", ["ssm", "fdssm", "ml"])
def test_the_smoothing_is_added_to_the_batches(objective, monkeypatch):
    """On rows that are all zero the batches the objective sees are the noise alone:
    their standard deviation is hypot(jitter, smoothing)."""
    seen = []
    _recording(objective, seen, monkeypatch)
    config = TrainingConfig(
        objective=objective, batch_size=1000, input_noise_std=0.3, max_iter=1
    )
    generator = torch.Generator().manual_seed(0)
    trainer = _Trainer(
        coupling(2, generator=generator), Preprocessing(), config, generator
    )
    zeros = torch.zeros(4000, 2, dtype=torch.float64)
    for smoothing, expected in [(None, 0.3), (0.4, 0.5), (1.2, math.hypot(0.3, 1.2))]:
        seen.clear()
        trainer.epoch(zeros, None, epoch=1, smoothing=smoothing)
        batches = torch.cat([x for x, _ in seen])
        assert batches.shape == (4000, 2)
        # The standard error of a standard deviation from 8000 draws is about 0.8 %.
        assert float(batches.std()) == pytest.approx(expected, rel=0.03)


def test_dsm_takes_the_smoothing_as_its_noise(monkeypatch):
    seen = []
    _recording("dsm", seen, monkeypatch)
    config = TrainingConfig(
        objective="dsm", objective_settings={"noise_std": 0.1}, batch_size=50
    )
    generator = torch.Generator().manual_seed(0)
    trainer = _Trainer(
        coupling(2, generator=generator), Preprocessing(), config, generator
    )
    zeros = torch.zeros(100, 2, dtype=torch.float64)
    for smoothing, expected in [(None, 0.1), (0.7, 0.7), (0.1, 0.1)]:
        seen.clear()
        trainer.epoch(zeros, None, epoch=1, smoothing=smoothing)
        assert [settings["noise_std"] for _, settings in seen] == [expected] * 2
        # dsm adds its own noise: the rows themselves arrive unperturbed.
        assert all(bool((x == 0).all()) for x, _ in seen)


# The user guide's table (objectives page), written out: a change of the code's
# table must fail here until the documented choice changes with it.
DOCUMENTED_NOISE_ANNEALING = {"ml": 0.0, "sml": 0.0, "ssm": 1.0, "dsm": 1.0, "fdssm": 1.0}


@pytest.mark.parametrize("objective", ["ml", "sml", "ssm", "dsm", "fdssm"])
def test_auto_resolves_per_objective(objective, moons):
    est = fit_small(moons, objective=objective, max_iter=2)
    assert est.noise_annealing_ == DOCUMENTED_NOISE_ANNEALING[objective]
    assert est.noise_annealing_ == AUTO_TRAINING_SETTINGS[objective].noise_annealing
    # Score matching anneals by default; maximum likelihood needs no bridge.
    assert (est.noise_annealing_ > 0) == (objective in ("ssm", "dsm", "fdssm"))
    explicit = fit_small(moons, objective=objective, max_iter=2, noise_annealing=0.5)
    assert explicit.noise_annealing_ == 0.5
    # With fc, annealing helped ssm and fdssm on the tuning data but not dsm.
    dense = fit_small(moons, objective=objective, max_iter=2, architecture="fc")
    assert (dense.noise_annealing_ > 0) == (objective in ("ssm", "fdssm"))
    explicit = fit_small(
        moons, objective=objective, max_iter=2, architecture="fc", noise_annealing=0.5
    )
    assert explicit.noise_annealing_ == 0.5


def test_the_annealing_reaches_the_fit(moons):
    fits = {
        start: fit_small(moons, objective="ssm", max_iter=6, noise_annealing=start)
        for start in (0.0, 2.0)
    }
    off, on = (fits[s].flow_.state_dict() for s in (0.0, 2.0))
    assert any(not torch.equal(off[name], on[name]) for name in off)
    # A zero start is exactly the fit without annealing.
    again = fit_small(moons, objective="ssm", max_iter=6, noise_annealing=0)
    assert all(torch.equal(off[k], v) for k, v in again.flow_.state_dict().items())


def test_the_patience_waits_for_the_end_of_the_annealing(moons):
    max_iter, patience = 40, 2
    est = fit_small(
        moons,
        objective="dsm",
        max_iter=max_iter,
        n_iter_no_change=patience,
        tol=0.0,
        learning_rate=3e-2,
    )
    annealing_epochs = math.ceil(ANNEALING_FRACTION * max_iter)
    best = int(np.argmax(est.validation_scores_)) + 1
    assert est.converged_, "the fit should stop on its own at this learning rate"
    assert est.n_iter_ == max(best, annealing_epochs) + patience


def test_partial_fit_does_not_anneal(moons):
    est = EBFlowDensity(**SMALL_ESTIMATOR, objective="dsm")
    est.partial_fit(moons)
    assert est.noise_annealing_ == 0.0


@pytest.mark.parametrize("value", [-0.1, "wide"])
def test_bad_values_are_refused(value, moons):
    with pytest.raises(ValueError, match="noise_annealing"):
        EBFlowDensity(**SMALL_ESTIMATOR, noise_annealing=value).fit(moons)


def _record_keyword(monkeypatch, module, name: str, keyword: str) -> list:
    """Record the ``keyword`` argument of every call of ``module.name``."""
    seen = []
    real = getattr(module, name)

    def recording(*args, **kwargs):
        seen.append(kwargs[keyword])
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, recording)
    return seen


def test_a_continuing_fit_does_not_anneal_again(moons, monkeypatch):
    """warm_start=True continues from trained weights; annealing again from a wide
    noise would first undo them, so the continuation trains at the final noise:
    for objectives other than dsm, batches smoothed by noise_std (it trained on the
    unsmoothed rows before, another target than the fit it continued ended on);
    for dsm, whose own noise is that smoothing, with its denoising noise alone."""
    configs = _record_keyword(monkeypatch, density_module, "train", "config")
    model = fit_small(moons, objective="ssm", max_iter=8, warm_start=True)
    # the score-matching fits' settings (a likelihood refinement may follow each)
    score_matching = [config for config in configs if config.objective == "ssm"]
    assert model.noise_annealing_ == score_matching[0].noise_annealing == 1.0
    model.set_params(max_iter=2)
    quiet_fit(model, moons)
    score_matching = [config for config in configs if config.objective == "ssm"]
    assert len(score_matching) == 2
    assert model.noise_annealing_ == score_matching[-1].noise_annealing == 0.0
    assert score_matching[0].input_noise_std == model.jitter == 0.0
    assert score_matching[-1].input_noise_std == model.noise_std > 0
    configs.clear()
    model = fit_small(moons, objective="dsm", max_iter=2, warm_start=True)
    quiet_fit(model, moons)
    denoising = [config for config in configs if config.objective == "dsm"]
    assert denoising[0].noise_annealing > 0 and denoising[-1].noise_annealing == 0.0
    assert denoising[-1].input_noise_std == 0.0


def test_a_continuing_fit_smooths_only_after_an_annealing(moons, monkeypatch):
    """The continuation holds the smoothing where an annealing left it, and only
    then: after a fit that never annealed (by "ml", or by partial_fit) the model
    was trained on the rows as they are, and so is its continuation, whatever the
    continuation's objective would anneal from in a fresh fit; a continuation by
    an objective that does not anneal trains on the rows as they are too."""
    configs = _record_keyword(monkeypatch, density_module, "train", "config")

    def last_noise(objective):
        return [c for c in configs if c.objective == objective][-1].input_noise_std

    model = fit_small(moons, objective="ml", max_iter=2, warm_start=True)
    model.set_params(objective="ssm")
    quiet_fit(model, moons)
    assert model.noise_annealing_ == 0.0 and last_noise("ssm") == 0.0
    quiet_fit(model, moons)  # and again: nothing annealed on the way
    assert last_noise("ssm") == 0.0

    model = EBFlowDensity(**SMALL_ESTIMATOR, objective="ssm", warm_start=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.partial_fit(moons)
    quiet_fit(model, moons)
    assert last_noise("ssm") == 0.0

    model = fit_small(moons, objective="ssm", max_iter=2, warm_start=True)
    model.set_params(objective="ml")
    quiet_fit(model, moons)
    assert last_noise("ml") == 0.0
    model.set_params(objective="ssm")  # ml left the rows unsmoothed
    quiet_fit(model, moons)
    assert last_noise("ssm") == 0.0


def test_the_held_out_loss_scores_the_objective_trained(moons, monkeypatch):
    """With early_stopping_metric="loss", an annealed ssm fit's patience watches
    the held-out objective at the smoothing the annealing holds (noise_std), as
    training then runs it; it scored the unsmoothed rows, another objective, while
    a warm start of the same model scored the smoothed ones."""
    import skebflow._training as training

    seen = _record_keyword(
        monkeypatch, training, "evaluate_objective", "input_noise_std"
    )
    model = EBFlowDensity(objective="ssm", max_iter=6, n_flows=1, random_state=0,
                          early_stopping_metric="loss", likelihood_refinement=0,
                          warm_start=True, device="cpu")
    quiet_fit(model, moons)
    assert model.noise_annealing_ > 0 and set(seen) == {model.noise_std}
    seen.clear()
    quiet_fit(model, moons)  # the warm start: the same smoothing
    assert set(seen) == {model.noise_std}
