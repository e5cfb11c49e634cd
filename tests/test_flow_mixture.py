"""FlowMixture: an equal-weight mixture of flows is a normalized density."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from skebflow.flows import FlowMixture, coupling, fc


def shifted_fc(n_features: int, shift: float, seed: int) -> torch.nn.Module:
    """An fc flow moved away from its initialization: density centred near ``shift``."""
    generator = torch.Generator().manual_seed(seed)
    flow = fc(n_features, n_layers=2, generator=generator).double()
    with torch.no_grad():
        for parameter in flow.parameters():
            parameter.add_(0.2 * torch.randn(parameter.shape, generator=generator,
                                             dtype=torch.float64))
        flow.layers[0].bias.add_(shift)
    return flow


def test_the_mixture_density_integrates_to_one():
    mixture = FlowMixture([shifted_fc(2, -2.0, 0), shifted_fc(2, 2.5, 1),
                           shifted_fc(2, 0.0, 2)])
    grid = torch.linspace(-14, 14, 561, dtype=torch.float64)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    points = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)
    with torch.no_grad():
        density = mixture.log_prob(points).exp().reshape(561, 561)
    step = float(grid[1] - grid[0])
    assert float(density.sum()) * step**2 == pytest.approx(1.0, abs=2e-3)


def test_the_energy_is_minus_the_log_density_and_its_gradient_the_mixture_score():
    members = [shifted_fc(3, -1.0, 3), shifted_fc(3, 1.5, 4)]
    mixture = FlowMixture(members)
    x = torch.randn(6, 3, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(5)).requires_grad_(True)
    (score,) = torch.autograd.grad(-mixture.energy(x).sum(), x)
    # The score of a mixture is the posterior-weighted mean of the member scores.
    log_probs = torch.stack([m.log_prob(x) for m in members])
    posterior = torch.softmax(log_probs, dim=0).detach()
    member_scores = torch.stack(
        [torch.autograd.grad(m.log_prob(x).sum(), x)[0] for m in members]
    )
    expected = (posterior.unsqueeze(-1) * member_scores).sum(dim=0)
    assert torch.allclose(score, expected, atol=1e-10)
    # The energy's value, not only its gradient (which a constant shift, such as a
    # missing log K, would not change): -log of the members' mean density.
    expected_energy = -(torch.logsumexp(log_probs, dim=0) - math.log(2))
    assert torch.allclose(mixture.energy(x), expected_energy, atol=1e-12)
    assert float(mixture.log_normalizer()) == 0.0


def test_samples_follow_the_mixture():
    # Two 1-D members far apart: samples split about evenly between them, and their
    # distribution matches the mixture's CDF (computed by quadrature).
    mixture = FlowMixture([shifted_fc(1, -6.0, 6), shifted_fc(1, 6.0, 7)])
    samples = mixture.sample(4000, generator=torch.Generator().manual_seed(8))
    values = samples[:, 0].numpy()
    grid = torch.linspace(-40, 40, 40001, dtype=torch.float64).reshape(-1, 1)
    with torch.no_grad():
        density = mixture.log_prob(grid).exp().numpy()
    cdf = np.cumsum(density) * float(grid[1, 0] - grid[0, 0])
    result = stats.kstest(values, lambda v: np.interp(v, grid[:, 0].numpy(), cdf))
    assert result.pvalue > 1e-3
    again = mixture.sample(4000, generator=torch.Generator().manual_seed(8))
    assert torch.equal(samples, again)


def test_a_mixture_of_one_is_the_flow():
    flow = coupling(3, n_layers=2, hidden_layer_sizes=(8,),
                    generator=torch.Generator().manual_seed(9)).double()
    x = torch.randn(10, 3, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(FlowMixture([flow]).log_prob(x), flow.log_prob(x))


def test_bad_members_are_refused():
    with pytest.raises(ValueError, match="at least one"):
        FlowMixture([])
    with pytest.raises(ValueError, match="different dimensions"):
        FlowMixture([fc(2), fc(3)])


# ------------------------------------------------------------- in the estimator

def _fit(X, **params):
    from skebflow import EBFlowDensity

    settings = {"n_layers": 2, "hidden_layer_sizes": (16,), "max_iter": 20,
                "device": "cpu", "random_state": 0, **params}
    return EBFlowDensity(**settings).fit(X)


@pytest.fixture(scope="module")
def moons():
    from sklearn.datasets import make_moons

    return make_moons(500, noise=0.1, random_state=0)[0]


@pytest.fixture(scope="module")
def mixture_of_three(moons):
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return _fit(moons, n_flows=3), _fit(moons, n_flows=1)


def test_auto_mixes_four_flows_on_small_data_and_one_on_large():
    from skebflow._auto_settings import AUTO_N_FLOWS_MAX_ROWS, resolve_n_flows

    assert resolve_n_flows("auto", AUTO_N_FLOWS_MAX_ROWS - 1) == 4
    assert resolve_n_flows("auto", AUTO_N_FLOWS_MAX_ROWS) == 1
    assert resolve_n_flows(3, 10**6) == 3


def test_the_first_flow_of_a_mixture_is_the_single_flow_fit(mixture_of_three):
    mixture, single = mixture_of_three
    assert mixture.n_flows_ == 3 and single.n_flows_ == 1
    assert isinstance(mixture.flow_, FlowMixture)
    first = mixture.flow_.members[0].state_dict()
    for name, value in single.flow_.state_dict().items():
        assert torch.equal(first[name], value), name
    # and the other flows differ from it
    second = mixture.flow_.members[1].state_dict()
    assert any(not torch.equal(first[n], second[n]) for n in first)


def test_the_mixture_scores_the_mean_density_of_its_flows(mixture_of_three, moons):
    from skebflow._training import evaluate_log_likelihood

    mixture, _ = mixture_of_three
    x = torch.from_numpy(moons[:50])
    members = torch.stack([
        evaluate_log_likelihood(member, mixture.preprocessing_, x)
        for member in mixture.flow_.members
    ])
    expected = torch.logsumexp(members, dim=0) - np.log(3)
    assert np.allclose(mixture.score_samples(moons[:50]), expected.numpy(),
                       rtol=0, atol=1e-10)


def test_the_mixture_density_integrates_to_one_in_the_data_units(mixture_of_three):
    mixture, _ = mixture_of_three
    grid = np.linspace(-4.0, 5.0, 301)
    xx, yy = np.meshgrid(grid, np.linspace(-3.5, 4.0, 251), indexing="ij")
    points = np.column_stack([xx.ravel(), yy.ravel()])
    density = np.exp(mixture.score_samples(points))
    area = (grid[1] - grid[0]) * (7.5 / 250)
    assert density.sum() * area == pytest.approx(1.0, abs=0.02)


def test_a_mixture_samples_pickles_saves_and_continues_by_partial_fit(
    mixture_of_three, moons, tmp_path
):
    import pickle

    import skebflow

    mixture, _ = mixture_of_three
    drawn = mixture.sample(7, random_state=0)
    assert drawn.shape == (7, 2)
    np.testing.assert_array_equal(drawn, mixture.sample(7, random_state=0))
    for loaded in (
        pickle.loads(pickle.dumps(mixture)),
        skebflow.load(skebflow.save(mixture, tmp_path / "mixture.safetensors")
                      or tmp_path / "mixture.safetensors"),
    ):
        np.testing.assert_array_equal(loaded.score_samples(moons[:20]),
                                      mixture.score_samples(moons[:20]))
        assert loaded.n_flows_ == 3
    # partial_fit after fit continues every flow of the mixture
    continued = pickle.loads(pickle.dumps(mixture)).partial_fit(moons[:50])
    assert continued.n_flows_ == 3
    for before, after in zip(mixture.flow_.members, continued.flow_.members,
                             strict=True):
        assert any(not torch.equal(before.state_dict()[k], v)
                   for k, v in after.state_dict().items())
    # a fresh estimator's partial_fit trains one flow, whatever n_flows says
    from skebflow import EBFlowDensity

    incremental = EBFlowDensity(n_flows=3, device="cpu", random_state=0)
    assert incremental.partial_fit(moons[:100]).n_flows_ == 1


def test_warm_start_continues_every_flow_of_a_mixture(moons):
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = _fit(moons, n_flows=2, max_iter=2, warm_start=True)
        before = [m.state_dict() for m in est.flow_.members]
        before = [{k: v.clone() for k, v in state.items()} for state in before]
        est.fit(moons)
    assert est.n_flows_ == 2
    for member, state in zip(est.flow_.members, before, strict=True):
        assert any(not torch.equal(member.state_dict()[k], v) for k, v in state.items())


def test_a_flow_built_from_float64_layers_is_float64_and_mixes():
    from skebflow.flows import Dense, Flow, SmoothLeakyReLU

    flow = Flow([Dense(2).double(), SmoothLeakyReLU(), Dense(2).double()])
    assert flow.dtype == torch.float64
    rows = FlowMixture([flow, flow]).sample(4, generator=torch.Generator().manual_seed(0))
    assert rows.shape == (4, 2) and rows.dtype == torch.float64


def test_members_of_two_dtypes_are_refused():
    with pytest.raises(ValueError, match="different dtypes or devices"):
        FlowMixture([fc(2), fc(2).double()])
