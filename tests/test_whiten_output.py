"""Output whitening: the closed-form maximum likelihood of a flow's last dense layer
(``skebflow.flows._calibration``) and the estimator's ``whiten_output``."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from _helpers import SMALL_ESTIMATOR, fit_small, gen, perturb, randn

from skebflow import EBFlowDensity
from skebflow.flows import cnn, coupling, fc
from skebflow.flows._calibration import can_whiten_output, whiten_output

pytestmark = pytest.mark.usefixtures("single_thread")


def _skewed_rows(n: int, generator: torch.Generator) -> torch.Tensor:
    """Correlated, shifted, scaled rows: far from what a fresh flow maps to N(0, I)."""
    x = randn(n, 3, generator=generator)
    mixing = torch.tensor(
        [[2.0, 0.0, 0.0], [1.5, 0.3, 0.0], [-0.5, 0.2, 4.0]], dtype=x.dtype
    )
    return x @ mixing.T + torch.tensor([5.0, -3.0, 1.0], dtype=x.dtype)


@pytest.mark.parametrize("build", [fc, coupling], ids=["fc", "coupling"])
def test_whitening_gives_the_outputs_zero_mean_and_unit_covariance(build):
    flow = perturb(build(3, generator=gen(0)).double(), gen(1), 0.1)
    x = _skewed_rows(2000, gen(2))
    whiten_output(flow, x, shrink=False)
    with torch.no_grad():
        z, _ = flow(x)
    torch.testing.assert_close(
        z.mean(dim=0), torch.zeros(3, dtype=z.dtype), atol=1e-8, rtol=0
    )
    torch.testing.assert_close(
        torch.cov(z.T, correction=0), torch.eye(3, dtype=z.dtype), atol=1e-6, rtol=0
    )


@pytest.mark.parametrize("build", [fc, coupling], ids=["fc", "coupling"])
def test_the_reported_gain_is_the_change_of_the_exact_mean_log_likelihood(build):
    flow = perturb(build(3, generator=gen(3)).double(), gen(4), 0.1)
    x = _skewed_rows(1500, gen(5))
    with torch.no_grad():
        before = flow.log_prob(x).mean()
        gain = whiten_output(flow, x)
        after = flow.log_prob(x).mean()
    assert float(gain) > 1.0  # the rows sit far from the base's frame
    torch.testing.assert_close(after - before, gain, atol=1e-6, rtol=1e-8)


def test_no_other_last_affine_layer_does_better():
    """Whitening maximizes the mean log-likelihood over the last affine layer: random
    perturbations of the whitened layer all lose."""
    flow = perturb(fc(3, generator=gen(6)).double(), gen(7), 0.2)
    x = _skewed_rows(1000, gen(8))
    whiten_output(flow, x, shrink=False)
    with torch.no_grad():
        best = float(flow.log_prob(x).mean())
        last = flow.layers[-1]
        weight, bias = last.weight.clone(), last.bias.clone()
        generator = gen(9)
        for _ in range(20):
            last.weight.copy_(weight + 0.02 * randn(3, 3, generator=generator))
            last.bias.copy_(bias + 0.02 * randn(3, generator=generator))
            assert float(flow.log_prob(x).mean()) < best
        last.weight.copy_(weight)
        last.bias.copy_(bias)


def test_integer_weights_equal_repeated_rows_without_shrinkage():
    x = _skewed_rows(300, gen(10))
    counts = torch.randint(1, 4, (300,), generator=gen(11))
    weighted = perturb(fc(3, generator=gen(12)).double(), gen(13), 0.1)
    repeated = perturb(fc(3, generator=gen(12)).double(), gen(13), 0.1)
    whiten_output(weighted, x, counts.to(x.dtype), shrink=False)
    whiten_output(repeated, x.repeat_interleave(counts, dim=0), shrink=False)
    for a, b in zip(weighted.parameters(), repeated.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)


def test_scaling_the_weights_changes_nothing():
    x = _skewed_rows(300, gen(14))
    weights = torch.rand(300, generator=gen(15), dtype=x.dtype) + 0.1
    flows = [perturb(fc(3, generator=gen(16)).double(), gen(17), 0.1) for _ in "ab"]
    whiten_output(flows[0], x, weights)
    whiten_output(flows[1], x, 1000.0 * weights)
    for a, b in zip(flows[0].parameters(), flows[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-9)


def test_flows_without_a_last_dense_layer_or_normal_base_are_refused():
    assert can_whiten_output(fc(3))
    assert not can_whiten_output(cnn((1, 4, 4)))
    assert not can_whiten_output(fc(3, base="student_t"))
    with pytest.raises(ValueError, match="last Dense layer"):
        whiten_output(cnn((1, 4, 4)).double(), torch.zeros(4, 16, dtype=torch.float64))


@pytest.fixture(scope="module")
def skewed_table():
    rng = np.random.RandomState(0)
    latent = rng.standard_normal((600, 3))
    return np.c_[latent[:, 0], latent[:, 0] ** 2 + 0.3 * latent[:, 1], latent[:, 2] * 2]


@pytest.mark.parametrize(
    ("objective", "expected"),
    [("ssm", True), ("dsm", True), ("fdssm", True), ("ml", False)],
)
def test_auto_whitens_score_matching_only(skewed_table, objective, expected):
    est = fit_small(skewed_table, objective=objective, max_iter=3)
    assert est.whiten_output_ is expected


def test_whitening_never_lowers_the_training_likelihood(skewed_table):
    """Same seed, same training; the whitened fit's mean log-likelihood of its
    training rows (all of them: no held-out split, no dequantization) is the
    maximum over the last affine layer, so at least the raw fit's."""
    params = dict(
        objective="ssm",
        max_iter=15,
        early_stopping=False,
        dequantize=False,
        likelihood_refinement=0,  # whitening alone
    )
    raw = fit_small(skewed_table, whiten_output=False, **params)
    whitened = fit_small(skewed_table, whiten_output=True, **params)
    assert whitened.whiten_output_ and not raw.whiten_output_
    assert whitened.score(skewed_table) >= raw.score(skewed_table) - 1e-9
    # Only the last layer changed.
    raw_state, whitened_state = raw.flow_.state_dict(), whitened.flow_.state_dict()
    changed = [k for k in raw_state if not torch.equal(raw_state[k], whitened_state[k])]
    last = len(raw.flow_.layers) - 1
    assert changed and all(k.startswith(f"layers.{last}.") for k in changed)


def test_the_whitened_density_integrates_to_one(skewed_table):
    """The log-normalizer is recomputed after the last layer changed: the density
    still integrates to one (a 2-D fit, integrated on a grid)."""
    X = skewed_table[:, :2]
    est = fit_small(
        X,
        objective="ssm",
        max_iter=15,
        early_stopping=False,
        likelihood_refinement=0,
    )
    assert est.whiten_output_
    a, b = np.linspace(-9.0, 9.0, 451), np.linspace(-12.0, 30.0, 451)
    grid = np.stack(np.meshgrid(a, b, indexing="ij"), axis=-1).reshape(-1, 2)
    density = np.exp(est.score_samples(grid))
    integral = density.sum() * (a[1] - a[0]) * (b[1] - b[0])
    assert math.isclose(integral, 1.0, abs_tol=0.02)


@pytest.mark.parametrize("true", [True, np.True_])  # np.True_: a NumPy grid's
def test_whiten_output_true_is_refused_where_it_cannot_apply(skewed_table, true):
    with pytest.raises(ValueError, match="whiten_output=True needs"):
        fit_small(
            skewed_table,
            objective="ssm",
            base_distribution="student_t",
            whiten_output=true,
            max_iter=2,
        )
    est = fit_small(
        skewed_table, objective="ssm", base_distribution="student_t", max_iter=2
    )
    assert est.whiten_output_ is False


def test_partial_fit_does_not_whiten(skewed_table):
    from skebflow import EBFlowDensity

    est = EBFlowDensity(objective="ssm", n_flows=1, device="cpu", random_state=0)
    est.partial_fit(skewed_table)
    assert est.whiten_output_ is False


def test_auto_undoes_a_whitening_that_lowers_the_held_out_likelihood():
    """``_whiten`` keeps the refit only if the held-out rows gain, unless told to
    keep it: rows whitened on one cluster and held out on another lose."""
    from skebflow import EBFlowDensity
    from skebflow.flows import Preprocessing

    rng = np.random.RandomState(0)
    train = rng.normal(size=(400, 3)) * [0.2, 0.2, 0.2] + [4.0, 0.0, 0.0]
    held_out = rng.normal(size=(200, 3)) * [0.2, 0.2, 0.2] + [-4.0, 0.0, 0.0]
    for keep_if_worse, expected in ((False, False), (True, True)):
        flow = fc(3, n_layers=1, generator=gen(20)).double()
        before = [p.detach().clone() for p in flow.parameters()]
        kept = EBFlowDensity._whiten(
            flow,
            Preprocessing().double(),
            (train, None),
            (held_out, None),
            0,
            keep_if_worse=keep_if_worse,
        )
        assert kept is expected
        unchanged = all(
            torch.equal(a, b) for a, b in zip(before, flow.parameters(), strict=True)
        )
        assert unchanged is not expected
    # Held-out rows like the training rows: the refit is kept.
    flow = fc(3, n_layers=1, generator=gen(20)).double()
    similar = rng.normal(size=(200, 3)) * [0.2, 0.2, 0.2] + [4.0, 0.0, 0.0]
    assert EBFlowDensity._whiten(
        flow,
        Preprocessing().double(),
        (train, None),
        (similar, None),
        0,
        keep_if_worse=False,
    )


def test_whitened_flows_records_each_member(skewed_table):
    est = fit_small(skewed_table, objective="dsm", n_flows=2, max_iter=4)
    assert est.whitened_flows_.shape == (2,) and est.whitened_flows_.dtype == bool
    ml = fit_small(skewed_table, objective="ml", n_flows=2, max_iter=2)
    assert not ml.whitened_flows_.any()


def test_outputs_that_cannot_be_whitened_leave_the_flow_unchanged():
    flow = fc(3, n_layers=1, generator=gen(21)).double()
    before = [p.detach().clone() for p in flow.parameters()]
    constant = torch.ones(50, 3, dtype=torch.float64)  # zero covariance
    with_nan = _skewed_rows(50, gen(22))
    with_nan[3, 1] = float("nan")
    for x in (constant, with_nan):
        assert whiten_output(flow, x) is None
        assert all(
            torch.equal(a, b) for a, b in zip(before, flow.parameters(), strict=True)
        )


def test_shrinkage_stays_on_the_tensors_device():
    # A covariance on another device than the CPU (the "meta" device stands in
    # for a GPU here) must not meet a CPU identity matrix.
    from skebflow.flows._calibration import ledoit_wolf_shrinkage

    centred = torch.randn(10, 3, dtype=torch.float64, device="meta")
    weights = torch.full((10,), 0.1, dtype=torch.float64, device="meta")
    assert ledoit_wolf_shrinkage(centred, weights).device.type == "meta"
    # On the CPU: scikit-learn's estimate, and 1 when nothing is to be shrunk.
    from sklearn.covariance import ledoit_wolf_shrinkage as sklearn_shrinkage

    x = torch.randn(40, 3, dtype=torch.float64, generator=gen(0))
    x = x - x.mean(0)
    ours = ledoit_wolf_shrinkage(x, torch.full((40,), 1 / 40, dtype=torch.float64))
    assert float(ours) == pytest.approx(
        sklearn_shrinkage(x.numpy(), assume_centered=True), rel=1e-10
    )
    identity = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    weights = torch.full((4,), 0.25, dtype=torch.float64)
    assert float(ledoit_wolf_shrinkage(identity.double(), weights)) == 1.0


@pytest.mark.gpu
def test_score_matching_fit_whitens_on_cuda(skewed_table):
    from skebflow import EBFlowDensity

    est = EBFlowDensity(
        objective="ssm",
        whiten_output=True,
        n_flows=1,
        max_iter=3,
        device="cuda",
        random_state=0,
    ).fit(skewed_table)
    assert est.whitened_flows_.tolist() == [True]
    assert np.isfinite(est.score_samples(skewed_table)).all()


def test_an_interrupt_while_whitening_a_first_fit_keeps_the_unwhitened_flow(
    skewed_table, monkeypatch
):
    """Ctrl-C during the whitening: a first fit keeps the flow it trained, as it
    was before the whitening (even if the interrupt came halfway through the
    refit of the last layer), and skips the flows it had not started; a refit
    keeps the previous model and passes the interrupt on."""
    import warnings

    import skebflow._density as density
    from skebflow import EBFlowDensity

    def interrupted(flow, x, weights=None):
        with torch.no_grad():
            next(flow.layers[-1].parameters()).mul_(2.0)  # a refit half done
        raise KeyboardInterrupt

    params = {"objective": "dsm", "max_iter": 3, "likelihood_refinement": 0}
    reference = fit_small(skewed_table, n_flows=1, whiten_output=False, **params)
    monkeypatch.setattr(density, "whiten_output", interrupted)
    est = EBFlowDensity(**{**SMALL_ESTIMATOR, **params, "n_flows": 2})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est.fit(skewed_table)
    assert any("during the output whitening" in str(w.message) for w in caught)
    assert est.n_flows_ == 1 and not est.whitened_flows_.any()
    np.testing.assert_allclose(
        est.score_samples(skewed_table), reference.score_samples(skewed_table)
    )
    before = est.score_samples(skewed_table)
    # another seed, so that a refit kept by mistake would score differently
    with pytest.raises(KeyboardInterrupt):
        est.set_params(n_flows=1, random_state=1).fit(skewed_table)
    np.testing.assert_array_equal(est.score_samples(skewed_table), before)
    assert est.n_flows_ == 1 and est.n_iter_ == reference.n_iter_


def test_numpy_true_whitens_as_true_does():
    """``whiten_output=np.True_`` (from a NumPy grid) keeps every flow's whitening
    as ``True`` does, not only those that score no worse (the "auto" rule)."""
    X = np.random.RandomState(0).standard_t(3, size=(150, 2))
    whitened = []
    for true in (True, np.True_):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = EBFlowDensity(n_flows=2, max_iter=5, objective="ml",
                                whiten_output=true, device="cpu",
                                random_state=0).fit(X)
        whitened.append(est.whitened_flows_.tolist())
    assert whitened == [[True, True], [True, True]]
