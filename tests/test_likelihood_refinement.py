"""The likelihood refinement after a score-matching fit: ``train(keep_initial=True)``
and the estimator's ``likelihood_refinement``."""

from __future__ import annotations

import warnings
from unittest import mock

import numpy as np
import pytest
import torch
from _helpers import fit_small, gen, perturb
from sklearn.exceptions import ConvergenceWarning

from skebflow import EBFlowDensity, EBFlowOutlierDetector
from skebflow._auto_settings import resolve_likelihood_refinement
from skebflow._training import TrainingConfig, evaluate_log_likelihood, train
from skebflow.flows import Preprocessing, coupling

pytestmark = pytest.mark.usefixtures("single_thread")


def _unequal_modes(n: int, seed: int) -> np.ndarray:
    """Two well separated 2-D modes holding 15 % and 85 % of the mass."""
    rng = np.random.RandomState(seed)
    small = rng.rand(n) < 0.15
    centres = np.where(small[:, None], [[-4.0, 0.0]], [[4.0, 1.0]])
    return centres + rng.randn(n, 2) * np.where(small[:, None], 0.5, 0.8)


def _held_out(flow, x) -> float:
    return float(evaluate_log_likelihood(flow, Preprocessing(), x).mean())


def _start(seed: int):
    flow = perturb(coupling(2, generator=gen(seed)).float(), gen(seed + 1), 0.05)
    x = torch.from_numpy(_unequal_modes(600, seed)).float()
    return flow, x[:480], x[480:]


def test_keep_initial_never_ends_below_the_start_on_the_held_out_rows():
    flow, x_train, x_validation = _start(0)
    before = _held_out(flow, x_validation)
    result = train(
        flow,
        Preprocessing(),
        x_train,
        x_validation,
        config=TrainingConfig(objective="ml", max_iter=5, batch_size=64),
        generator=gen(2),
        keep_initial=True,
    )
    after = _held_out(flow, x_validation)
    assert not result.kept_initial and after > before + 0.1
    assert after == pytest.approx(result.best_validation_score, abs=1e-5)


@pytest.mark.parametrize("keep_initial", [True, False])
def test_keep_initial_keeps_the_start_when_no_epoch_beats_it(keep_initial):
    """A learning rate far too large ruins every epoch: with ``keep_initial`` the
    start is kept, exactly; without it the best of the ruined epochs is."""
    flow, x_train, x_validation = _start(3)
    start = {k: v.clone() for k, v in flow.state_dict().items()}
    result = train(
        flow,
        Preprocessing(),
        x_train,
        x_validation,
        config=TrainingConfig(
            objective="ml", max_iter=3, batch_size=64, learning_rate=5.0, ema_decay=0
        ),
        generator=gen(4),
        keep_initial=keep_initial,
    )
    assert result.kept_initial is keep_initial
    unchanged = all(
        torch.equal(value, start[name]) for name, value in flow.state_dict().items()
    )
    assert unchanged is keep_initial


@pytest.mark.parametrize(
    ("value", "objective", "n_features", "max_iter", "expected"),
    [
        ("auto", "ssm", 8, 200, 200),
        ("auto", "ssm", 8, 15, 15),
        ("auto", "ssm", 8, 1, 1),
        ("auto", "dsm", 512, 200, 200),
        ("auto", "fdssm", 513, 200, 0),
        ("auto", "ml", 8, 200, 0),
        ("auto", "sml", 8, 200, 0),
        (0, "ssm", 8, 200, 0),
        (7, "ml", 8, 200, 7),
    ],
)
def test_auto_resolution(value, objective, n_features, max_iter, expected):
    resolved = resolve_likelihood_refinement(value, objective, n_features, max_iter)
    assert resolved == expected


@pytest.mark.parametrize("architecture", ["coupling", "fc"])
def test_auto_refinement_reaches_the_fit_and_stops_early(architecture):
    """``"auto"`` allows ``max_iter`` epochs of likelihood after a score-matching
    fit, with either architecture, and the refinement early-stops: with a patience
    of 3 it stops well before its 300 epochs."""
    X = _unequal_modes(400, 7)
    params = {"objective": "dsm", "architecture": architecture, "n_iter_no_change": 3}
    refinements = []

    def recording(*args, **kwargs):
        result = train(*args, **kwargs)
        if kwargs.get("keep_initial"):
            refinements.append((kwargs["config"].max_iter, result.n_iter))
        return result

    with mock.patch("skebflow._density.train", recording):
        model = fit_small(X, max_iter=300, **params)
    assert model.likelihood_refinement_ == 300
    ((allowed, ran),) = refinements
    assert allowed == 300 and ran < 100


def test_refinement_sets_the_mode_weights_score_matching_misses():
    """Score matching alone misjudges the weights of separated modes; the refinement
    recovers held-out likelihood on rows the fit never saw, and the fitted attributes
    say what ran."""
    X, X_test = _unequal_modes(1500, 5), _unequal_modes(2000, 6)
    # standardized columns: kernel marginals give the modes their weights already
    params = {
        "objective": "ssm",
        "max_iter": 20,
        "noise_annealing": 0,
        "marginal_transform": None,
    }
    alone = fit_small(X, likelihood_refinement=0, **params)
    refined = fit_small(X, likelihood_refinement=15, **params)
    assert alone.likelihood_refinement_ == 0 and not alone.refined_flows_.any()
    assert refined.likelihood_refinement_ == 15
    assert refined.refined_flows_.tolist() == [True]
    assert refined.score(X_test) > alone.score(X_test) + 0.05

    # The mass the model gives the small mode's side, by its own samples.
    def small_mode_share(est: EBFlowDensity) -> float:
        return float((est.sample(4000, random_state=0)[:, 0] < 0).mean())

    assert abs(small_mode_share(refined) - 0.15) < 0.03
    assert abs(small_mode_share(refined) - 0.15) < abs(small_mode_share(alone) - 0.15)


def test_the_main_fit_is_the_same_with_or_without_refinement():
    """The refinement continues from the score-matching weights: its epochs do not
    change the main fit's trajectory or its reported curves."""
    X = _unequal_modes(400, 7)
    params = {"objective": "dsm", "max_iter": 6, "whiten_output": False}
    alone = fit_small(X, likelihood_refinement=0, **params)
    refined = fit_small(X, likelihood_refinement=3, **params)
    assert refined.loss_curve_ == alone.loss_curve_
    assert refined.validation_scores_ == alone.validation_scores_
    assert refined.n_iter_ == alone.n_iter_


def test_no_refinement_after_maximum_likelihood_by_default():
    est = fit_small(_unequal_modes(300, 8), objective="ml", max_iter=3)
    assert est.likelihood_refinement_ == 0 and not est.refined_flows_.any()


def test_partial_fit_does_not_refine():
    est = EBFlowDensity(
        objective="ssm", n_layers=2, hidden_layer_sizes=(8,), random_state=0
    )
    est.partial_fit(_unequal_modes(200, 9))
    assert est.likelihood_refinement_ == 0 and not est.refined_flows_.any()


def test_refinement_without_held_out_rows_runs_its_epochs():
    X = _unequal_modes(300, 10)
    est = fit_small(
        X, objective="ssm", max_iter=3, early_stopping=False, likelihood_refinement=2
    )
    assert est.refined_flows_.tolist() == [True]
    assert np.isfinite(est.score_samples(X)).all()


def test_a_refinement_cut_off_by_its_epochs_says_so():
    """A refinement kept after all its epochs without stopping on its own has not
    converged, as a fit that reaches max_iter has not: it warns and converged_ is
    False, even when the score-matching fit before it stopped on its own."""
    X = np.random.RandomState(0).normal(size=(300, 2))
    params = {"objective": "dsm", "max_iter": 200, "n_iter_no_change": 2,
              "tol": 10.0, "noise_annealing": 0.0, "whiten_output": False,
              "n_layers": 1, "hidden_layer_sizes": (8,), "n_flows": 1,
              "device": "cpu", "random_state": 0}
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        est = EBFlowDensity(likelihood_refinement=1, **params).fit(X)
    assert est.n_iter_ < 200 and est.refined_flows_.tolist() == [True]
    assert [str(w.message) for w in said if w.category is ConvergenceWarning] == [
        "The likelihood refinement ran all its 1 epochs without stopping on its"
        " own: it has not converged. Raise max_iter (or an integer"
        " likelihood_refinement) to let it run longer."
    ]
    assert est.converged_ is False
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        alone = EBFlowDensity(likelihood_refinement=0, **params).fit(X)
    assert alone.converged_ is True



def test_a_mixture_says_once_which_refinements_were_cut_off():
    """A mixture whose flows' refinements all run their epochs gives one warning
    naming them, as the main fit's max_iter warning does (one per flow before)."""
    X = np.random.RandomState(0).normal(size=(300, 2))
    params = {"objective": "dsm", "max_iter": 200, "n_iter_no_change": 2,
              "tol": 10.0, "noise_annealing": 0.0, "whiten_output": False,
              "n_layers": 1, "hidden_layer_sizes": (8,), "n_flows": 2,
              "likelihood_refinement": 1, "device": "cpu", "random_state": 0}
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        est = EBFlowDensity(**params).fit(X)
    assert est.refined_flows_.tolist() == [True, True]
    assert [str(w.message) for w in said if w.category is ConvergenceWarning] == [
        "The likelihood refinement (flows 1, 2 of 2) ran all its 1 epochs without"
        " stopping on its own: it has not converged. Raise max_iter (or an integer"
        " likelihood_refinement) to let it run longer."
    ]
    assert est.converged_ is False

def test_a_refined_model_still_integrates_to_one():
    est = fit_small(
        _unequal_modes(400, 11), objective="ssm", max_iter=4, likelihood_refinement=3
    )
    assert est.refined_flows_.any()
    grid = np.linspace(-12.0, 12.0, 241)
    xx, yy = np.meshgrid(grid, grid)
    density = np.exp(est.score_samples(np.c_[xx.ravel(), yy.ravel()]))
    assert density.sum() * (grid[1] - grid[0]) ** 2 == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("value", [-1, 1.5, "always"])
def test_invalid_values_are_refused(value):
    with pytest.raises(ValueError, match="likelihood_refinement"):
        EBFlowDensity(likelihood_refinement=value).fit(_unequal_modes(50, 0))


def test_the_detector_passes_it_through():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        detector = EBFlowOutlierDetector(
            objective="ssm",
            likelihood_refinement=2,
            n_flows=1,
            n_layers=2,
            hidden_layer_sizes=(8,),
            max_iter=2,
            random_state=0,
        ).fit(_unequal_modes(200, 12))
    assert detector.likelihood_refinement_ == 2


def _learning_rates(warmup_steps: int, max_iter: int = 3) -> list[float]:
    """The learning rate of every optimizer step of a short ``ml`` fit."""
    flow, x_train, x_validation = _start(5)
    rates: list[float] = []
    real_step = torch.optim.Adam.step

    def spying_step(self, *args, **kwargs):
        rates.append(self.param_groups[0]["lr"])
        return real_step(self, *args, **kwargs)

    config = TrainingConfig(
        objective="ml", max_iter=max_iter, batch_size=64, warmup_steps=warmup_steps
    )
    with mock.patch.object(torch.optim.Adam, "step", spying_step):
        train(
            flow,
            Preprocessing(),
            x_train,
            x_validation,
            config=config,
            generator=gen(6),
        )
    return rates


def test_the_warmup_ramps_the_first_steps_and_leaves_the_schedule_alone():
    plain, warmed = _learning_rates(0), _learning_rates(10)
    assert len(plain) == len(warmed) == 3 * 8  # 480 rows in batches of 64
    for step, (rate, warm) in enumerate(zip(plain, warmed, strict=True)):
        factor = min(1.0, (step + 1) / 10)
        assert warm == pytest.approx(factor * rate, rel=1e-12)
    # the cosine schedule still decays from epoch to epoch, as without warm-up
    assert plain[0] > plain[8] > plain[16]


def test_a_continued_trainer_resumes_its_warmup_where_it_stopped():
    """``get_state`` keeps the step count: a trainer continued from it (as
    ``partial_fit`` continues) takes the warm-up's next fraction, not its first."""
    from skebflow._training import _Trainer

    def make_trainer(seed: int) -> _Trainer:
        flow, _, _ = _start(5)
        config = TrainingConfig(objective="ml", batch_size=64, warmup_steps=20)
        return _Trainer(flow, Preprocessing(), config, gen(seed))

    x_train = _start(5)[1]
    first = make_trainer(6)
    first.epoch(x_train, None, epoch=1)  # 480 rows: 8 steps of the 20
    rates: list[float] = []
    real_step = torch.optim.Adam.step

    def spying_step(self, *args, **kwargs):
        rates.append(self.param_groups[0]["lr"])
        return real_step(self, *args, **kwargs)

    continued = make_trainer(7)
    continued.set_state(first.get_state())
    with mock.patch.object(torch.optim.Adam, "step", spying_step):
        continued.epoch(x_train, None, epoch=2)
    rate = continued.config.learning_rate
    expected = [rate * min(1.0, step / 20) for step in range(9, 17)]
    assert rates == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("warmup_epochs", [0, 2, 5])
def test_the_refinement_warms_up_over_its_epochs(warmup_epochs, monkeypatch):
    """``_refine`` turns ``REFINEMENT_WARMUP_EPOCHS`` into that many epochs' worth
    of steps, never more than the refinement has (3 epochs here); the main fit
    does not warm up."""
    monkeypatch.setattr("skebflow._density.REFINEMENT_WARMUP_EPOCHS", warmup_epochs)
    seen: list[int] = []
    real_train = train

    def spying_train(flow, preprocessing, x_train, *args, config, **kwargs):
        seen.append(config.warmup_steps)
        return real_train(flow, preprocessing, x_train, *args, config=config, **kwargs)

    X = _unequal_modes(400, 7)
    density = EBFlowDensity(
        objective="dsm",
        max_iter=2,
        likelihood_refinement=3,
        batch_size=64,
        n_flows=1,
        whiten_output=False,
        random_state=0,
    )
    with mock.patch("skebflow._density.train", spying_train), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        density.fit(X)
    n_train = 400 - 40  # validation_fraction 0.1
    steps_per_epoch = -(-n_train // 64)
    assert seen == [0, min(warmup_epochs, 3) * steps_per_epoch]


def _continuation(flow, x_train, x_validation, config):
    """A continuation of ``flow``, as the likelihood refinement trains it."""
    return train(
        flow,
        Preprocessing(),
        x_train,
        x_validation,
        config=config,
        generator=gen(9),
        keep_initial=True,
    )


@pytest.mark.parametrize(
    ("continuation_patience", "kept_initial", "n_iter"),
    [("start", True, 3), ("own", False, 7)],
)
def test_the_patience_of_a_continuation_counts_from_the_start_or_its_own_best(
    continuation_patience, kept_initial, n_iter
):
    """A continuation that first loses ground (held-out 10 at the start, then 0, 2,
    4, ...): counted from the start, a patience of 3 ends it after 3 epochs and keeps
    the start; counted from its own best, it goes on while it improves, beats the
    start at epoch 6 (12) and keeps that epoch when its 7 epochs are up."""
    flow, x_train, x_validation = _start(8)
    scores = iter([10.0, 0.0, 2.0, 4.0, 6.0, 8.0, 12.0, 11.0, 11.0, 11.0, 11.0])
    evaluated = []  # the weights each score was given to

    def scripted(*args, **kwargs):
        evaluated.append({k: v.clone() for k, v in args[0].state_dict().items()})
        return torch.full((x_validation.shape[0],), next(scores))

    config = TrainingConfig(
        objective="ml",
        max_iter=7,
        batch_size=64,
        n_iter_no_change=3,
        continuation_patience=continuation_patience,
    )
    with mock.patch("skebflow._training.evaluate_log_likelihood", scripted):
        result = _continuation(flow, x_train, x_validation, config)
    assert result.kept_initial is kept_initial
    assert result.n_iter == n_iter
    assert result.best_validation_score == (10.0 if kept_initial else 12.0)
    # The weights kept are those that scored best: the start (call 1), or epoch 6
    # (call 7); not the last epoch's.
    kept = evaluated[0 if kept_initial else 6]
    assert any(not torch.equal(kept[k], evaluated[-1][k]) for k in kept), (
        "the scripted epochs must change the weights for this check to mean anything"
    )
    for key, value in flow.state_dict().items():
        torch.testing.assert_close(value, kept[key], rtol=0.0, atol=0.0)


def test_a_continuation_watching_its_loss_counts_its_patience_in_loss_units():
    """With early_stopping_metric="loss" the patience counted from the start
    compares each epoch's held-out loss with the start's held-out loss, not with
    the start's log-likelihood (other units: a loss per dimension of 2): scripted
    losses 5, 4, 4, 4, 4, ... against a start of 5 improve by 1 only once, so a
    tol of 2 ends the continuation after its patience of 3 epochs. Compared with
    the start's log-likelihood, -10, every epoch's -4 would count as progress."""
    flow, x_train, x_validation = _start(8)
    losses = iter([5.0] + [4.0] * 20)

    def scripted_loss(*args, **kwargs):
        return next(losses)

    def scripted_log_likelihood(*args, **kwargs):
        return torch.full((x_validation.shape[0],), -10.0)

    config = TrainingConfig(
        objective="ml",
        max_iter=10,
        batch_size=64,
        n_iter_no_change=3,
        tol=2.0,
        early_stopping_metric="loss",
        continuation_patience="start",
    )
    with (
        mock.patch("skebflow._training.evaluate_objective", scripted_loss),
        mock.patch(
            "skebflow._training.evaluate_log_likelihood", scripted_log_likelihood
        ),
    ):
        result = _continuation(flow, x_train, x_validation, config)
    assert result.converged and result.n_iter == 3
    assert result.validation_losses == [4.0, 4.0, 4.0]
