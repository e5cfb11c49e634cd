"""FlowGeometricMean and the detector's ``flow_combination``: the normalized
geometric mean of trained flows, its Monte Carlo normalizer against quadrature,
exact rejection samples, and the detector scoring by it."""

from __future__ import annotations

import copy
import math
import pickle

import numpy as np
import pytest
import torch
from _helpers import SMALL_ESTIMATOR, gen, perturb, quiet_fit, randn
from scipy import stats

from skebflow import EBFlowOutlierDetector, load, save
from skebflow.flows import FlowGeometricMean, FlowMixture, fc, widen_base

GRID = torch.linspace(-40, 40, 40001, dtype=torch.float64).reshape(-1, 1)
STEP = float(GRID[1, 0] - GRID[0, 0])


def shifted_fc(n_features: int, shift: float, seed: int) -> torch.nn.Module:
    """An fc flow moved away from its initialization, centred near ``shift``."""
    flow = perturb(fc(n_features, n_layers=2, generator=gen(seed)).double(),
                   gen(seed + 100), 0.2)
    with torch.no_grad():
        flow.layers[0].bias.add_(shift)
    return flow


def overlapping_members() -> list[torch.nn.Module]:
    return [shifted_fc(1, -0.8, 0), shifted_fc(1, 0.6, 1), shifted_fc(1, 0.0, 2)]


def quadrature_mass(log_density: torch.Tensor) -> float:
    return float(torch.trapezoid(log_density.exp(), GRID[:, 0]))


def test_the_geometric_mean_never_exceeds_the_mixture():
    members = [shifted_fc(3, -1.0, 3), shifted_fc(3, 1.5, 4), shifted_fc(3, 0.3, 5)]
    x = randn(200, 3, generator=gen(6)) * 3.0
    with torch.no_grad():
        geometric = FlowGeometricMean(members).unnormalized_log_prob(x)
        mixture = FlowMixture(members).log_prob(x)
        each = torch.stack([member.log_prob(x) for member in members])
    assert torch.all(geometric <= mixture + 1e-12)
    # Not trivially: where the members disagree the gap is large.
    assert float((mixture - geometric).max()) > 1.0
    assert float((each.max(dim=0).values - each.min(dim=0).values).max()) > 1.0


def test_the_estimated_normalizer_matches_quadrature():
    members = overlapping_members()
    unnormalized = FlowGeometricMean(members)
    with torch.no_grad():
        z_quadrature = quadrature_mass(unnormalized.unnormalized_log_prob(GRID))
    assert 0.3 < z_quadrature < 0.99  # the members disagree: the test can fail
    draws = 2048
    estimates = torch.stack([
        unnormalized.estimate_log_normalizer(draws, generator=gen(seed))
        for seed in range(8)
    ]).exp()
    # Each estimate of Z is the mean of draws ratios in [0, 1]: standard error at
    # most 0.5 / sqrt(draws) = 0.011.
    assert float(estimates.mean()) == pytest.approx(z_quadrature, abs=0.01)
    assert torch.all((estimates - z_quadrature).abs() < 0.045)
    normalized = FlowGeometricMean(members, log_normalizer=float(estimates[0].log()))
    with torch.no_grad():
        assert quadrature_mass(normalized.log_prob(GRID)) == pytest.approx(1.0, abs=0.05)
        # The energy / log-normalizer split, by integration: the mass of exp(-E)
        # is Z.
        assert math.log(quadrature_mass(-normalized.energy(GRID))) == pytest.approx(
            float(normalized.log_normalizer()), abs=0.05
        )


def test_samples_follow_the_normalized_geometric_mean():
    geometric = FlowGeometricMean(overlapping_members())
    samples = geometric.sample(3000, generator=gen(7))
    assert samples.shape == (3000, 1)
    with torch.no_grad():
        density = geometric.unnormalized_log_prob(GRID).exp().numpy()
    cdf = np.cumsum(density) / density.sum()
    values = samples[:, 0].numpy()
    result = stats.kstest(values, lambda v: np.interp(v, GRID[:, 0].numpy(), cdf))
    assert result.pvalue > 1e-3
    # Against the mixture's CDF (the envelope the draws come from) they differ.
    with torch.no_grad():
        mixture = FlowMixture(geometric.members).log_prob(GRID).exp().numpy()
    mixture_cdf = np.cumsum(mixture) / mixture.sum()
    envelope = stats.kstest(values, lambda v: np.interp(v, GRID[:, 0].numpy(),
                                                        mixture_cdf))
    assert envelope.pvalue < 1e-3
    assert torch.equal(samples, geometric.sample(3000, generator=gen(7)))


def gaussian_members(n_features: int, seeds: list[int]) -> list[torch.nn.Module]:
    """One-dense-layer flows, z = W x + b: Gaussians with closed forms."""
    return [
        perturb(fc(n_features, n_layers=1, generator=gen(seed)).double(),
                gen(seed + 100), 0.4)
        for seed in seeds
    ]


def test_the_geometric_mean_of_gaussians_has_their_closed_form_score_and_normalizer():
    members = gaussian_members(3, [8, 9, 10])
    weights = [m.layers[0].weight.detach() for m in members]
    biases = [m.layers[0].bias.detach() for m in members]
    x = randn(5, 3, generator=gen(10)).requires_grad_(True)
    geometric = FlowGeometricMean(members)
    # Score: log p_k = log N(W_k x + b_k) + log|det W_k|, so the geometric mean's
    # score is -mean_k W_k^T (W_k x + b_k).
    (score,) = torch.autograd.grad(-geometric.energy(x).sum(), x)
    expected = -torch.stack(
        [(x.detach() @ w.T + b) @ w for w, b in zip(weights, biases, strict=True)]
    ).mean(dim=0)
    assert torch.allclose(score, expected, atol=1e-10)
    # Normalizer: prod_k p_k^(1/K) is exp(-x^T A x / 2 + h^T x - c / 2) times
    # exp(mean_k log|det W_k|) / (2 pi)^(D/2), with A = mean_k W_k^T W_k,
    # h = -mean_k W_k^T b_k and c = mean_k |b_k|^2: a Gaussian integral.
    precision = torch.stack([w.T @ w for w in weights]).mean(dim=0)
    linear = -torch.stack([w.T @ b for w, b in zip(weights, biases, strict=True)]).mean(0)
    constant = torch.stack([b @ b for b in biases]).mean()
    log_det = torch.stack([torch.linalg.slogdet(w)[1] for w in weights]).mean()
    log_z = (
        log_det
        - 0.5 * torch.linalg.slogdet(precision)[1]
        + 0.5 * linear @ torch.linalg.solve(precision, linear)
        - 0.5 * constant
    )
    assert -3.0 < float(log_z) < -0.05  # the members disagree: the test can fail
    estimates = torch.stack([
        geometric.estimate_log_normalizer(4096, generator=gen(seed)).exp()
        for seed in range(4)
    ])
    # Ratios in [0, 1]: each estimate's standard error is at most 0.5 / 64.
    assert float(estimates.mean()) == pytest.approx(float(log_z.exp()), abs=0.01)


def test_one_member_is_the_flow_itself():
    flow = shifted_fc(2, 0.5, 11)
    geometric = FlowGeometricMean([flow], log_normalizer=-0.3)  # ignored: exact 0
    x = randn(10, 2, generator=gen(12))
    with torch.no_grad():
        assert torch.allclose(geometric.log_prob(x), flow.log_prob(x))
    assert float(geometric.estimate_log_normalizer(16, generator=gen(0))) == 0.0
    assert torch.equal(geometric.sample(7, generator=gen(13)),
                       flow.sample(7, generator=gen(13)))


def test_the_normalizer_survives_a_state_dict_round_trip():
    """log Z was a plain float, left out of state_dict: a fresh geometric mean
    loaded from it scored 0.1 nats off."""
    members = [fc(1, generator=gen(k)).double() for k in range(2)]
    geometric = FlowGeometricMean(members, log_normalizer=-0.1)
    fresh = FlowGeometricMean([fc(1, generator=gen(9)).double() for _ in range(2)])
    fresh.load_state_dict(geometric.state_dict())
    x = randn(5, 1, generator=gen(3)).double()
    torch.testing.assert_close(fresh.log_prob(x), geometric.log_prob(x))
    assert float(fresh.log_normalizer()) == -0.1

def test_bad_uses_are_refused_with_what_to_do():
    members = overlapping_members()
    with pytest.raises(ValueError, match="at most 0"):
        FlowGeometricMean(members, log_normalizer=0.2)
    with pytest.raises(ValueError, match="widen each member"):
        widen_base(FlowGeometricMean(members), 2.0)
    # Members with almost no common mass: sampling by rejection gives up, saying so.
    apart = FlowGeometricMean([shifted_fc(1, -30.0, 14), shifted_fc(1, 30.0, 15)])
    with pytest.raises(RuntimeError, match="barely overlap"):
        apart.sample(10, generator=gen(16))


# ------------------------------------------------------------- the detector


SMALL = {**SMALL_ESTIMATOR, "max_iter": 20, "n_flows": 2}


def _blobs(n=400, seed=0):
    rng = np.random.RandomState(seed)
    return np.vstack(
        [rng.normal(-2, 0.5, size=(n // 2, 2)), rng.normal(2, 0.8, size=(n // 2, 2))]
    )


def assert_scores_are_the_mean_member_log_density(detector, rows):
    """``score_samples`` is ``mean_k log p_k(x) - log_normalizer_``, each member's
    log-density in the units of ``rows`` (the preprocessing's log-det added)."""
    y, log_abs_det = detector.preprocessing_(torch.from_numpy(rows))
    with torch.no_grad():
        each = detector.flow_.member_log_probs(y) + log_abs_det
    np.testing.assert_allclose(
        detector.score_samples(rows),
        each.mean(dim=0).numpy() - detector.log_normalizer_,
        rtol=1e-10,
    )


@pytest.fixture(scope="module")
def fitted_pair():
    X = _blobs()
    geometric = quiet_fit(EBFlowOutlierDetector(**SMALL), X)
    mixture = quiet_fit(EBFlowOutlierDetector(flow_combination="mixture", **SMALL), X)
    return X, geometric, mixture


def test_the_detector_scores_by_the_geometric_mean_by_default(fitted_pair):
    X, geometric, mixture = fitted_pair
    assert EBFlowOutlierDetector().get_params()["flow_combination"] == "geometric_mean"
    assert geometric.flow_combination_ == "geometric_mean"
    assert mixture.flow_combination_ == "mixture"
    # The same trained flows; only the scoring density differs.
    pairs = zip(geometric.flow_.parameters(), mixture.flow_.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    assert mixture.log_normalizer_ == 0.0
    # The two flows disagree, so Z is clearly below 1; the mass check below then
    # tests the estimate itself.
    assert geometric.log_normalizer_ < -0.01
    rows = np.vstack([X[::20], [[0.0, 0.0], [6.0, -6.0]]])
    assert_scores_are_the_mean_member_log_density(geometric, rows)
    # Arithmetic and geometric means: log Z + geometric <= mixture on every row.
    assert np.all(
        geometric.score_samples(rows) + geometric.log_normalizer_
        <= mixture.score_samples(rows) + 1e-9
    )
    # Its density integrates to one, up to the normalizer's Monte Carlo error.
    axis = np.linspace(-15, 15, 301)
    grid = np.array(np.meshgrid(axis, axis, indexing="ij")).reshape(2, -1).T
    density = np.exp(geometric.score_samples(grid)).reshape(301, 301)
    mass = np.trapezoid(np.trapezoid(density, axis, axis=1), axis)
    assert mass == pytest.approx(1.0, abs=0.03)


def test_the_detector_samples_and_thresholds_by_the_geometric_mean(fitted_pair):
    X, geometric, mixture = fitted_pair
    samples = geometric.sample(200, random_state=0)
    assert samples.shape == (200, 2) and np.all(np.isfinite(samples))
    np.testing.assert_array_equal(samples, geometric.sample(200, random_state=0))
    # The threshold is the 10 % quantile of the training rows under the geometric
    # mean, computed here from each trained flow's own log-density; the mixture's
    # threshold, from the same flows, is another.
    y, log_abs_det = geometric.preprocessing_(torch.from_numpy(X))
    with torch.no_grad():
        each = torch.stack([member.log_prob(y) for member in geometric.flow_.members])
    scores = (each.mean(dim=0) + log_abs_det).numpy() - geometric.log_normalizer_
    expected = np.percentile(scores, 10.0, method="averaged_inverted_cdf")
    assert geometric.offset_ == pytest.approx(expected, rel=1e-9)
    assert abs(geometric.offset_ - mixture.offset_) > 1e-3
    assert geometric.predict([[0.0, 0.0], [2.0, 2.0], [9.0, -9.0]]).tolist()[1:] == [
        1, -1
    ]


def test_flow_combination_survives_a_safe_file_and_a_pickle(fitted_pair, tmp_path):
    X, geometric, _ = fitted_pair
    save(geometric, tmp_path / "detector.safetensors")
    for loaded in (
        load(tmp_path / "detector.safetensors"),
        pickle.loads(pickle.dumps(geometric)),
    ):
        assert loaded.flow_combination == loaded.flow_combination_ == "geometric_mean"
        np.testing.assert_array_equal(
            loaded.score_samples(X), geometric.score_samples(X)
        )


def test_a_detector_saved_before_flow_combination_keeps_scoring_as_it_did(
    fitted_pair,
):
    X, _, mixture = fitted_pair
    state = mixture.__getstate__()
    del state["flow_combination"], state["flow_combination_"]  # an older version
    old = EBFlowOutlierDetector.__new__(EBFlowOutlierDetector)
    old.__setstate__(state)
    assert old.get_params()["flow_combination"] == old.flow_combination_ == "mixture"
    np.testing.assert_array_equal(old.score_samples(X), mixture.score_samples(X))


def test_a_bad_flow_combination_is_named():
    with pytest.raises(ValueError, match="flow_combination"):
        EBFlowOutlierDetector(flow_combination="product", **SMALL).fit(_blobs())


def test_a_detector_whose_flows_barely_overlap_says_how_to_sample(fitted_pair):
    _, geometric, _ = fitted_pair
    apart = FlowGeometricMean([shifted_fc(2, -30.0, 17), shifted_fc(2, 30.0, 18)])
    detector = copy.copy(geometric)
    detector.flow_ = FlowMixture(apart.members)
    detector._set_scoring_density()
    assert detector.log_normalizer_ < -100
    with pytest.raises(ValueError, match="sample_langevin"):
        detector.sample(5, random_state=0)


def test_a_model_file_from_before_flow_combination_keeps_the_mixture(fitted_pair):
    # The loader builds the estimator with today's parameters (the geometric mean)
    # and then sets the fitted attributes of the file, which lack
    # ``flow_combination_``: the detector scores as it did, by the mixture.
    X, _, mixture = fitted_pair
    state = mixture.__getstate__()
    del state["flow_combination_"]
    state["flow_combination"] = "geometric_mean"
    old = EBFlowOutlierDetector.__new__(EBFlowOutlierDetector)
    old.__setstate__(state)
    assert old.flow_combination == old.flow_combination_ == "mixture"
    np.testing.assert_array_equal(old.score_samples(X), mixture.score_samples(X))


def test_partial_fit_combines_several_flows_by_their_geometric_mean():
    # partial_fit after fit continues every flow of the fit (a first partial_fit
    # trains one).
    rng = np.random.RandomState(3)
    detector = quiet_fit(EBFlowOutlierDetector(**SMALL), rng.normal(size=(200, 2)))
    fitted_estimate = detector.log_normalizer_
    for _ in range(2):
        detector.partial_fit(rng.normal(size=(200, 2)))
    assert detector.log_normalizer_ != fitted_estimate  # re-estimated
    assert detector.n_flows_ == 2
    assert detector.flow_combination_ == "geometric_mean"
    assert math.isfinite(detector.log_normalizer_) and detector.log_normalizer_ < 0.0
    assert_scores_are_the_mean_member_log_density(detector, rng.normal(size=(50, 2)))


def test_one_flow_or_a_mixture_samples_whatever_its_log_normalizer():
    # For one flow, or the flows' mixture, log_normalizer_ is the flows' own log Z
    # (any real number; below log(1e-3) on strongly correlated columns), not an
    # acceptance rate: it never refuses to sample.
    X = _blobs()
    for params in ({"n_flows": 1}, {"flow_combination": "mixture"}):
        detector = EBFlowOutlierDetector(**{**SMALL, **params}).fit(X)
        detector.log_normalizer_ = -50.0  # a one-flow detector's value elsewhere
        assert detector.sample(3, random_state=0).shape == (3, 2)


def _unit_normal_at(mean: float) -> torch.nn.Module:
    """The flow of N(mean, 1) in one dimension (a shift of the base)."""
    from skebflow.flows import Dense, Flow

    return Flow([Dense(1, init="identity", bias_init=-mean)]).double()


def test_sampling_many_rows_is_limited_by_the_acceptance_rate_not_by_rounds():
    # N(-a, 1) and N(a, 1): their geometric mean is N(0, 1) times Z = exp(-a^2/2),
    # here 0.005, five times the rate below which sampling gives up. 10 000 rows
    # need about 2 million envelope draws, more than 100 rounds of 16 384.
    a = math.sqrt(2 * math.log(200.0))
    geometric = FlowGeometricMean([_unit_normal_at(-a), _unit_normal_at(a)])
    rows = geometric.sample(10_000, generator=gen(0))
    assert rows.shape == (10_000, 1)
    statistic = stats.kstest(rows.squeeze(1).numpy(), "norm").statistic
    assert statistic < 0.02  # about 1.36 / sqrt(10 000) at the 5 % level


def test_sampling_no_rows_gives_an_empty_batch():
    geometric = FlowGeometricMean([fc(2).double(), fc(2).double()])
    rows = geometric.sample(0, generator=gen(0))
    assert rows.shape == (0, 2) and rows.dtype == torch.float64
