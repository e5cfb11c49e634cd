"""Base distributions of a flow: the Student-t base against closed forms, autograd,
scipy and the score-matching identities, through the flows, the objectives and the
estimator."""

from __future__ import annotations

import math
import pickle
import warnings

import numpy as np
import pytest
import torch
from _helpers import gen as _gen
from _helpers import perturb as _perturb
from _helpers import randn as _randn
from scipy import stats
from sklearn.exceptions import ConvergenceWarning

from skebflow import EBFlowDensity, EBFlowOutlierDetector
from skebflow._building import build_flow
from skebflow.flows import (
    Dense,
    Flow,
    StandardNormal,
    StudentT,
    coupling,
    fc,
    make_base,
)
from skebflow.objectives import (
    dsm,
    energy_gradient_and_curvature,
    exact_sm,
    fdssm,
    ml,
    sml,
    ssm,
)

pytestmark = pytest.mark.usefixtures("single_thread")

DTYPE = torch.float64
N_STANDARD_ERRORS = 5.0


def _flow(kind: str, n_features: int, generator: torch.Generator, df: float = 5.0):
    """A small Student-t flow with every parameter away from its initial value
    (``"learned"``: one df per coordinate, perturbed like every other parameter)."""
    base = StudentT(df)
    if kind == "learned":
        flow = coupling(
            n_features,
            n_layers=2,
            hidden_layer_sizes=(8,),
            base=StudentT(df, n_features=n_features, learn_df=True),
            generator=generator,
        )
        return _perturb(flow.to(DTYPE), generator, 0.3)
    if kind == "fc":
        flow = fc(
            n_features, n_layers=3, init="orthogonal", base=base, generator=generator
        )
    elif kind == "coupling":
        flow = coupling(
            n_features,
            n_layers=2,
            hidden_layer_sizes=(8,),
            base=base,
            generator=generator,
        )
    else:
        flow = coupling(
            n_features,
            n_layers=2,
            hidden_layer_sizes=(8,),
            transform="logistic_mixture",
            n_components=3,
            base=base,
            generator=generator,
        )
    return _perturb(flow.to(DTYPE), generator, 0.2)


KINDS = ["fc", "coupling", "mixture", "learned"]


def _assert_within_standard_errors(
    samples: torch.Tensor, expected: torch.Tensor, what: str, slack: float = 1e-10
) -> None:
    """``samples`` has the independent draws along dim 0."""
    mean = samples.mean(dim=0)
    standard_error = samples.std(dim=0) / math.sqrt(samples.shape[0])
    bound = N_STANDARD_ERRORS * standard_error + slack
    error = (mean - expected).abs()
    assert bool((error <= bound).all()), (
        f"{what}: |mean - expected| = {error.tolist()} exceeds {bound.tolist()}"
    )


def _jacobian(flow: Flow, row: torch.Tensor) -> torch.Tensor:
    return torch.autograd.functional.jacobian(lambda r: flow(r.unsqueeze(0))[0][0], row)


# ------------------------------------------------------------------ the base itself


@pytest.mark.parametrize("df", [1.0, 2.5, 5.0, 30.0])
def test_student_t_log_density_is_scipys(df):
    base = StudentT(df).double()
    z = 3.0 * _randn(50, 3, generator=_gen(0))
    ours = -base.energy(z) - base.log_normalizer(3)
    reference = stats.t(df).logpdf(z.numpy()).sum(axis=1)
    np.testing.assert_allclose(ours.numpy(), reference, rtol=0, atol=1e-12)
    # The energy holds every z-dependent term, the log-normalizer none: zero at z=0.
    zero = torch.zeros(2, 3, dtype=DTYPE)
    assert torch.equal(base.energy(zero), torch.zeros(2, dtype=DTYPE))


def test_student_t_far_out_keeps_its_polynomial_energy():
    """z^2 overflowed from |z| ~ 1e154: the energy was inf (log_prob -inf where
    the density is finite), the curvature inf / inf = NaN, and a learned df's
    gradient NaN for the whole batch (found by a review)."""
    base = StudentT(5.0).double()
    z = torch.tensor([[1e150], [1e155], [1e200], [-1e300]], dtype=DTYPE)
    expected = 3.0 * (2.0 * torch.log(z.abs()[:, 0]) - math.log(5.0))
    torch.testing.assert_close(base.energy(z), expected, rtol=1e-12, atol=0)
    curvature = base.curvature(z, torch.ones_like(z))
    assert torch.isfinite(curvature).all() and (curvature <= 0).all()
    learned = make_base("student_t_learned", 1).double()
    (-learned.energy(z) - learned.log_normalizer(1)).sum().backward()
    assert torch.isfinite(learned.log_df.grad).all()
    # up to the largest floats: u^2 overflowed in the derivative (0 * inf)
    top = torch.tensor([[1.5e308], [1.0]], dtype=DTYPE, requires_grad=True)
    StudentT(1.0).double().energy(top).sum().backward()
    assert torch.isfinite(top.grad).all()


def test_normal_base_keeps_its_constant_in_the_energy():
    base = StandardNormal()
    z = _randn(7, 4, generator=_gen(1))
    reference = stats.norm.logpdf(z.numpy()).sum(axis=1)
    np.testing.assert_allclose((-base.energy(z)).numpy(), reference, atol=1e-12)
    assert float(base.log_normalizer(4)) == 0.0


@pytest.mark.parametrize("base", [StandardNormal(), StudentT(3.0), StudentT(0.8)])
def test_base_curvature_and_gradient_match_autograd(base):
    base = base.double()
    z = 4.0 * _randn(20, 3, generator=_gen(2)).requires_grad_(True)
    t = _randn(20, 3, generator=_gen(3))
    (gradient,) = torch.autograd.grad(base.energy(z).sum(), z, create_graph=True)
    (hessian_t,) = torch.autograd.grad((gradient * t).sum(), z)
    torch.testing.assert_close(
        base.curvature(z.detach(), t),
        (hessian_t * t).sum(dim=1),
        rtol=1e-12,
        atol=1e-12,
    )


def test_student_t_draws_follow_scipys_distribution():
    for df in (0.7, 3.0, 5.0):
        draws = StudentT(df).sample(20000, 2, generator=_gen(4), dtype=DTYPE)
        assert draws.shape == (20000, 2) and draws.dtype == DTYPE
        for column in draws.T:
            p_value = stats.kstest(column.numpy(), stats.t(df).cdf).pvalue
            assert p_value > 1e-3, f"df={df}: KS p-value {p_value}"
        # The columns are independent (a factorized base).
        correlation = stats.spearmanr(draws[:, 0], draws[:, 1]).statistic
        assert abs(correlation) < 0.03


def test_student_t_draws_come_from_the_generator_only():
    base = StudentT(4.0)
    state = torch.get_rng_state()
    first = base.sample(100, 3, generator=_gen(5))
    assert torch.equal(torch.get_rng_state(), state), "sampling touched the global RNG"
    assert torch.equal(first, base.sample(100, 3, generator=_gen(5)))
    assert not torch.equal(first, base.sample(100, 3, generator=_gen(6)))


def test_bad_bases_are_refused():
    with pytest.raises(ValueError, match="'laplace' is not supported"):
        make_base("laplace")
    with pytest.raises(ValueError, match="df=0.0 must be a positive"):
        StudentT(0.0)
    with pytest.raises(ValueError, match="is not supported"):
        Flow([Dense(2)], base="cauchy")


# ------------------------------------------------------------------ the flow's density


@pytest.mark.parametrize("kind", KINDS)
def test_log_prob_is_the_change_of_variables_with_the_student_t_base(kind):
    generator = _gen(7)
    flow = _flow(kind, 3, generator, df=4.0)
    x = 1.5 * _randn(6, 3, generator=generator)
    z, _ = flow(x)
    log_det = torch.stack([torch.linalg.slogdet(_jacobian(flow, row))[1] for row in x])
    df = flow.base.degrees_of_freedom().detach().numpy()
    reference = stats.t(df).logpdf(z.detach().numpy()).sum(axis=1) + log_det.numpy()
    with torch.no_grad():
        log_prob = flow.log_prob(x)
    np.testing.assert_allclose(log_prob.numpy(), reference, rtol=0, atol=1e-10)
    torch.testing.assert_close(log_prob, -flow.energy(x) - flow.log_normalizer())
    # The base's constant sits in the log-normalizer, the layers' in the energy.
    linear = sum(
        float(layer.log_abs_det().detach())
        for layer in flow.layers
        if layer.constant_jacobian
    )
    constant = -stats.t(df).logpdf(np.zeros(3)).sum()  # -log p_base(0)
    expected = -linear + constant
    log_normalizer = float(flow.log_normalizer().detach())
    assert math.isclose(log_normalizer, expected, abs_tol=1e-12)


def test_log_prob_integrates_to_one_in_1d():
    generator = _gen(8)
    flow = _perturb(
        fc(1, n_layers=3, init="orthogonal", base="student_t", generator=generator),
        generator,
        0.3,
    ).double()
    grid = torch.linspace(-300.0, 300.0, 600_001, dtype=DTYPE).unsqueeze(1)
    with torch.no_grad():
        density = flow.log_prob(grid).exp()
    mass = float(torch.trapezoid(density, grid.squeeze(1)))
    # The tails beyond +-300 hold O(300^-5) of the mass: far below the tolerance.
    assert abs(mass - 1.0) < 1e-5, f"1-D mass {mass}"


@pytest.mark.parametrize("kind", ["coupling", "mixture", "learned"])
def test_log_prob_integrates_to_one_by_importance_sampling(kind):
    """E_q[p / q] = 1 with q a product of wide Cauchy densities, whose tails are
    heavier than the flow's (|x|^-6 per coordinate), so p / q is bounded."""
    flow = _flow(kind, 2, _gen(9))
    scale = 4.0
    rng = np.random.default_rng(0)
    proposal = stats.cauchy(scale=scale)
    x = proposal.rvs(size=(200_000, 2), random_state=rng)
    log_q = proposal.logpdf(x).sum(axis=1)
    with torch.no_grad():
        log_p = flow.log_prob(torch.from_numpy(x)).numpy()
    ratio = np.exp(log_p - log_q)
    mean, standard_error = ratio.mean(), ratio.std() / math.sqrt(ratio.size)
    assert standard_error < 0.01, "the check must be able to see a 5 % error"
    assert abs(mean - 1.0) < N_STANDARD_ERRORS * standard_error, (mean, standard_error)


@pytest.mark.parametrize("kind", ["coupling", "mixture", "learned"])
def test_student_t_base_gives_polynomial_tails(kind):
    """Far from the data every layer is affine, so with a Student-t base
    log p(2 r u) - log p(r u) -> -sum_j (df_j + 1) log 2; a normal base drops like
    r^2."""
    heavy = _flow(kind, 2, _gen(10), df=5.0)
    light = _flow(kind, 2, _gen(10))
    light.base = StandardNormal()
    u = torch.tensor([[0.6, 0.8], [-0.96, 0.28]], dtype=DTYPE)
    with torch.no_grad():
        drop = heavy.log_prob(2e4 * u) - heavy.log_prob(1e4 * u)
        light_drop = light.log_prob(2e4 * u) - light.log_prob(1e4 * u)
    df = heavy.base.degrees_of_freedom().detach()  # per coordinate for "learned"
    total = float(torch.broadcast_to(df + 1.0, (2,)).sum())
    expected = -total * math.log(2.0) * torch.ones_like(drop)
    torch.testing.assert_close(drop, expected, atol=0.02, rtol=0)
    assert bool((light_drop < -1e6).all())


# ------------------------------------------------------------------ sampling


def test_identity_flow_samples_are_student_t():
    flow = Flow([Dense(3, init="identity", bias_init=0.0)], base=StudentT(3.0))
    samples = flow.double().sample(20000, generator=_gen(11))
    for column in samples.T:
        assert stats.kstest(column.numpy(), stats.t(3.0).cdf).pvalue > 1e-3


def test_samples_follow_the_flows_own_density_in_1d():
    generator = _gen(12)
    flow = _perturb(
        fc(1, n_layers=3, init="orthogonal", base="student_t", generator=generator),
        generator,
        0.3,
    ).double()
    grid = torch.linspace(-300.0, 300.0, 600_001, dtype=DTYPE)
    with torch.no_grad():
        density = flow.log_prob(grid.unsqueeze(1)).exp()
    steps = 0.5 * (density[1:] + density[:-1]) * (grid[1:] - grid[:-1])
    cdf = torch.cat([torch.zeros(1, dtype=DTYPE), torch.cumsum(steps, 0)]).numpy()
    samples = flow.sample(20000, generator=_gen(13)).squeeze(1).numpy()
    p_value = stats.kstest(samples, lambda s: np.interp(s, grid.numpy(), cdf)).pvalue
    assert p_value > 1e-3, f"KS p-value {p_value}"


@pytest.mark.parametrize("kind", KINDS)
def test_sample_inverts_the_flow_on_student_t_draws(kind):
    flow = _flow(kind, 3, _gen(14))
    samples = flow.sample(64, generator=_gen(15))
    assert samples.dtype == DTYPE and not samples.requires_grad
    assert torch.equal(samples, flow.sample(64, generator=_gen(15)))
    z = flow.base.sample(64, 3, generator=_gen(15), dtype=DTYPE)
    torch.testing.assert_close(flow(samples)[0], z, rtol=0.0, atol=1e-8)


# ------------------------------------------------------------------ the objectives


@pytest.mark.parametrize("kind", KINDS)
def test_energy_gradient_and_curvature_match_double_backward(kind):
    generator = _gen(16)
    flow = _flow(kind, 3, generator, df=3.0)
    x = 2.0 * _randn(5, 3, generator=generator)
    v = _randn(5, 3, generator=generator)
    energy, gradient, curvature = energy_gradient_and_curvature(flow, x, v)
    x_ = x.clone().requires_grad_(True)
    reference_energy = flow.energy(x_)
    (reference_gradient,) = torch.autograd.grad(
        reference_energy.sum(), x_, create_graph=True
    )
    (hessian_v,) = torch.autograd.grad(
        (reference_gradient * v).sum(), x_, create_graph=True
    )
    reference_curvature = (hessian_v * v).sum(dim=1)
    torch.testing.assert_close(energy, reference_energy, rtol=0.0, atol=1e-12)
    torch.testing.assert_close(gradient, reference_gradient, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(curvature, reference_curvature, rtol=1e-9, atol=1e-9)
    parameters = list(flow.parameters())
    ours = torch.autograd.grad(
        (0.5 * gradient.square().sum(1) - curvature).sum(), parameters
    )
    theirs = torch.autograd.grad(
        (0.5 * reference_gradient.square().sum(1) - reference_curvature).sum(),
        parameters,
    )
    for mine, reference in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kind", KINDS)
def test_basis_slices_give_exact_score_matching(kind):
    n_features, n_rows = 3, 4
    flow = _flow(kind, n_features, _gen(17))
    x = 1.5 * _randn(n_rows, n_features, generator=_gen(18))
    basis = torch.eye(n_features, dtype=DTYPE).repeat_interleave(n_rows, dim=0)
    _, gradient, curvature = energy_gradient_and_curvature(
        flow, x.repeat(n_features, 1), basis
    )
    trace = curvature.reshape(n_features, n_rows).sum(dim=0)
    ours = (0.5 * gradient[:n_rows].square().sum(dim=1) - trace) / n_features
    torch.testing.assert_close(ours, exact_sm(flow, x), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("kind", ["fc", "coupling", "learned"])
def test_ssm_is_unbiased_for_exact_score_matching(kind):
    flow = _flow(kind, 3, _gen(19))
    x = 1.5 * _randn(4, 3, generator=_gen(20))
    n_draws = 2000
    draws = ssm(flow, x.repeat(n_draws, 1), generator=_gen(21)).detach()
    _assert_within_standard_errors(
        draws.reshape(n_draws, 4), exact_sm(flow, x).detach(), "ssm vs exact_sm"
    )


@pytest.mark.parametrize("kind", ["fc", "coupling", "learned"])
def test_fdssm_with_small_radius_matches_exact_score_matching(kind):
    flow = _flow(kind, 3, _gen(22))
    x = 1.5 * _randn(4, 3, generator=_gen(23))
    n_draws = 2000
    draws = fdssm(flow, x.repeat(n_draws, 1), generator=_gen(24), fd_epsilon=1e-3)
    _assert_within_standard_errors(
        draws.detach().reshape(n_draws, 4),
        exact_sm(flow, x).detach(),
        "fdssm (xi=1e-3) vs exact_sm",
        slack=1e-4,
    )


@pytest.mark.parametrize("kind", ["fc", "coupling", "learned"])
def test_dsm_is_exact_score_matching_at_the_noisy_points_by_steins_lemma(kind):
    """E_n[grad E(x + s n) . n] = s E_n[tr Hess E(x + s n)], so
    dsm(x) - exact_sm(x + s n) - |n|^2 / (2 s^2 D) has mean zero over the noise n."""
    flow = _flow(kind, 3, _gen(25))
    x = 1.5 * _randn(4, 3, generator=_gen(26))
    sigma, n_draws = 0.3, 2000
    repeated = x.repeat(n_draws, 1)
    loss = dsm(flow, repeated, generator=_gen(27), noise_std=sigma).detach()
    noise = torch.randn(repeated.shape, generator=_gen(27), dtype=DTYPE)
    at_noisy = exact_sm(flow, repeated + sigma * noise).detach()
    centred = loss - at_noisy - noise.square().sum(dim=1) / (2 * sigma**2 * 3)
    _assert_within_standard_errors(
        centred.reshape(n_draws, 4), torch.zeros(4, dtype=DTYPE), "dsm vs Stein"
    )


def test_ml_and_sml_use_the_base():
    # Against references built apart from Flow.energy, log_prob and sample (the
    # test compared ml with -log_prob / 2, ml's own definition, and passed with
    # the flow scoring a normal base or sampling one).
    flow = _flow("coupling", 2, _gen(28))
    x = _randn(64, 2, generator=_gen(29))
    df = flow.base.degrees_of_freedom().detach().numpy()

    def reference_log_density(rows: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            z, _ = flow(rows)
        log_det = [torch.linalg.slogdet(_jacobian(flow, row))[1] for row in rows]
        return stats.t(df).logpdf(z.numpy()).sum(axis=1) + torch.stack(log_det).numpy()

    with torch.no_grad():
        np.testing.assert_allclose(
            ml(flow, x).numpy(), -reference_log_density(x) / 2, rtol=0, atol=1e-10
        )
        # sml contrasts the data with the flow's own samples, drawn from its base:
        # the inverse of Student-t draws (sml's generator draws them first).
        base_draws = flow.base.sample(64, 2, generator=_gen(30), dtype=DTYPE)
        samples = flow.inverse(base_draws)
        # energies differ from minus log-densities by the log-normalizer alone
        expected = (reference_log_density(samples) - reference_log_density(x)) / 2
        np.testing.assert_allclose(
            sml(flow, x, generator=_gen(30)).numpy(), expected, rtol=0, atol=1e-8
        )


# ------------------------------------------------------------------ building, estimator


def test_build_flow_reads_the_base_and_defaults_to_normal():
    spec = {
        "architecture": "coupling",
        "n_features": 3,
        "n_layers": 1,
        "hidden_layer_sizes": (4,),
    }
    assert isinstance(build_flow(spec, _gen(0)).base, StandardNormal)
    heavy = build_flow({**spec, "base_distribution": "student_t"}, _gen(0))
    assert isinstance(heavy.base, StudentT) and "base.df" in heavy.state_dict()
    fc_spec = {
        "architecture": "fc",
        "n_features": 2,
        "n_layers": 2,
        "base_distribution": "student_t",
    }
    assert isinstance(build_flow(fc_spec, _gen(0)).base, StudentT)
    # The normal base adds nothing to the state dict, so older states still load.
    assert not any(k.startswith("base.") for k in build_flow(spec, None).state_dict())


def test_df_travels_in_the_state_dict():
    flow = _flow("coupling", 2, _gen(31), df=2.5)
    rebuilt = coupling(2, n_layers=2, hidden_layer_sizes=(8,), base="student_t")
    rebuilt.load_state_dict(flow.state_dict())
    x = _randn(5, 2, generator=_gen(32))
    torch.testing.assert_close(rebuilt.double().log_prob(x), flow.log_prob(x))


def test_learned_df_is_a_parameter_that_travels_in_the_state_dict():
    flow = _flow("learned", 3, _gen(33))
    assert "base.log_df" in dict(flow.named_parameters())
    df = flow.base.degrees_of_freedom()
    assert df.shape == (3,) and len(set(df.tolist())) == 3  # perturbed apart
    rebuilt = build_flow(
        {
            "architecture": "coupling",
            "n_features": 3,
            "n_layers": 2,
            "hidden_layer_sizes": (8,),
            "activation": "tanh",
            "coupling_transform": "affine",
            "base_distribution": "student_t_learned",
        },
        None,
    ).double()
    rebuilt.load_state_dict(flow.state_dict())
    x = _randn(5, 3, generator=_gen(34))
    torch.testing.assert_close(rebuilt.log_prob(x), flow.log_prob(x))
    # Maximum likelihood differentiates the base's constant in df; score matching
    # reaches df through the energy alone.
    for loss in (ml(flow, x), ssm(flow, x, generator=_gen(35))):
        (gradient,) = torch.autograd.grad(loss.sum(), flow.base.log_df)
        assert bool((gradient.abs() > 0).all())
    # The clip keeps df in [0.5, 1000].
    with torch.no_grad():
        flow.base.log_df.copy_(torch.tensor([-5.0, 0.0, 20.0]))
    torch.testing.assert_close(
        flow.base.degrees_of_freedom(),
        torch.tensor([0.5, 1.0, 1000.0], dtype=DTYPE),
    )
    with pytest.raises(ValueError, match="needs n_features"):
        StudentT(learn_df=True)


def _bases(estimator) -> list:
    """The base of each flow of a fitted estimator (several with ``n_flows > 1``)."""
    flows = getattr(estimator.flow_, "members", [estimator.flow_])
    return [flow.base for flow in flows]


def _all(estimator, kind: type) -> bool:
    return all(isinstance(base, kind) for base in _bases(estimator))


def _fit(estimator, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(X)


SMALL = {
    "n_layers": 1,
    "hidden_layer_sizes": (8,),
    "max_iter": 3,
    "device": "cpu",
    "random_state": 0,
}


@pytest.fixture(scope="module")
def heavy_data():
    rng = np.random.default_rng(0)
    return np.c_[rng.standard_t(3.0, size=300), rng.normal(size=300)]


@pytest.mark.parametrize("objective", ["ml", "ssm", "dsm", "fdssm"])
def test_estimator_fits_and_pickles_with_the_student_t_base(objective, heavy_data):
    est = _fit(
        EBFlowDensity(objective=objective, base_distribution="student_t", **SMALL),
        heavy_data,
    )
    assert _all(est, StudentT)
    assert est._flow_spec["base_distribution"] == "student_t"
    assert math.isclose(est.log_normalizer_, float(est.flow_.log_normalizer().detach()))
    scores = est.score_samples(heavy_data)
    assert np.all(np.isfinite(scores))
    loaded = pickle.loads(pickle.dumps(est))
    assert _all(loaded, StudentT)
    np.testing.assert_array_equal(loaded.score_samples(heavy_data), scores)
    np.testing.assert_array_equal(
        loaded.sample(5, random_state=1), est.sample(5, random_state=1)
    )


def test_estimator_bases_differ_and_old_pickles_load_as_normal(heavy_data):
    # standardized columns: kernel marginals' wide normal would widen both tails
    plain = {**SMALL, "marginal_transform": None}
    normal = _fit(EBFlowDensity(**plain), heavy_data)
    heavy = _fit(EBFlowDensity(base_distribution="student_t", **plain), heavy_data)
    assert _all(normal, StandardNormal)
    assert normal.get_params()["base_distribution"] == "normal"
    far = np.array([[60.0, 0.0]])
    # A row 60 standard deviations out: the normal base's density collapses.
    assert heavy.score_samples(far)[0] > normal.score_samples(far)[0] + 100
    state = normal.__getstate__()
    state["_flow_spec"] = {
        k: v for k, v in state["_flow_spec"].items() if k != "base_distribution"
    }
    old = EBFlowDensity.__new__(EBFlowDensity)
    old.__setstate__(state)
    assert _all(old, StandardNormal)
    np.testing.assert_array_equal(
        old.score_samples(heavy_data), normal.score_samples(heavy_data)
    )


def test_estimator_validates_the_base_and_keeps_it_under_warm_start(heavy_data):
    with pytest.raises(ValueError, match="base_distribution"):
        EBFlowDensity(base_distribution="laplace", **SMALL).fit(heavy_data)
    est = _fit(EBFlowDensity(warm_start=True, **SMALL), heavy_data)
    est.set_params(base_distribution="student_t")
    with pytest.raises(ValueError, match="base_distribution='normal' -> 'student_t'"):
        est.fit(heavy_data)


def test_estimator_learns_the_degrees_of_freedom(heavy_data):
    est = _fit(
        EBFlowDensity(
            base_distribution="student_t_learned", **{**SMALL, "max_iter": 5}
        ),
        heavy_data,
    )
    loaded = pickle.loads(pickle.dumps(est))
    for base, loaded_base in zip(_bases(est), _bases(loaded), strict=True):
        df = base.degrees_of_freedom().detach()
        assert df.shape == (2,) and not torch.allclose(df, torch.full_like(df, 5.0))
        torch.testing.assert_close(loaded_base.degrees_of_freedom(), df)
    np.testing.assert_array_equal(
        loaded.score_samples(heavy_data), est.score_samples(heavy_data)
    )


def test_outlier_detector_forwards_the_base(heavy_data):
    detector = _fit(
        EBFlowOutlierDetector(base_distribution="student_t", **SMALL), heavy_data
    )
    assert _all(detector, StudentT)
    assert detector.get_params()["base_distribution"] == "student_t"


def test_safe_model_files_keep_the_student_t_base(heavy_data, tmp_path):
    import skebflow

    est = _fit(EBFlowDensity(base_distribution="student_t", **SMALL), heavy_data)
    path = tmp_path / "model.safetensors"
    skebflow.save(est, path)
    loaded = skebflow.load(path)
    assert _all(loaded, StudentT)
    assert loaded.get_params()["base_distribution"] == "student_t"
    np.testing.assert_array_equal(
        loaded.score_samples(heavy_data), est.score_samples(heavy_data)
    )


def test_a_learned_df_pushed_past_its_range_can_come_back():
    # The range of log df is a clamp in value only: past an end, the gradient
    # still flows (once, a step below df = 0.5 froze it there for good).
    base = StudentT(learn_df=True, n_features=2).double()
    with torch.no_grad():
        base.log_df.fill_(math.log(0.49))
    z = torch.randn(
        500, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    optimizer = torch.optim.Adam(base.parameters(), lr=0.05)
    for _ in range(100):
        optimizer.zero_grad()
        (base.energy(z) + base.log_normalizer(2)).mean().backward()
        optimizer.step()
    # Gaussian data pull the degrees of freedom up, away from the lower end.
    assert bool((base.degrees_of_freedom() > 2.0).all())
