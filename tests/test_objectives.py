"""The training objectives: contract, agreement in expectation, the no-determinant
promise of the score-matching family, and recovery of a Gaussian's covariance."""

import copy
import math

import numpy as np
import pytest
import torch
from _helpers import gen as _gen
from _helpers import perturb as _perturb
from _helpers import randn as _randn

from skebflow.flows import Dense, ElementwiseAffine, Flow, coupling, fc
from skebflow.objectives import (
    OBJECTIVES,
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
STOCHASTIC = ["dsm", "fdssm", "sml", "ssm"]
N_STANDARD_ERRORS = 5.0


def _flow(arch: str, n_features: int, generator: torch.Generator, dtype=DTYPE) -> Flow:
    """A small flow with every parameter away from its initial value."""
    if arch == "coupling-passed":  # the flow's first column left to its base
        inner = _flow("coupling", n_features - 1, generator, dtype)
        return Flow(inner.layers, passed_columns=[0])
    if arch == "fc":
        flow = fc(n_features, n_layers=2, init="orthogonal", generator=generator)
    else:
        flow = coupling(
            n_features, n_layers=2, hidden_layer_sizes=(8,), generator=generator
        )
    return _perturb(flow.to(dtype), generator, 0.2)


def _assert_within_standard_errors(
    samples: torch.Tensor, expected: torch.Tensor, what: str, slack: float = 1e-10
):
    """``samples`` has the independent draws along dim 0."""
    mean = samples.mean(dim=0)
    standard_error = samples.std(dim=0) / math.sqrt(samples.shape[0])
    bound = N_STANDARD_ERRORS * standard_error + slack
    error = (mean - expected).abs()
    assert bool((error <= bound).all()), (
        f"{what}: |mean - expected| = {error.tolist()} exceeds"
        f" {N_STANDARD_ERRORS} standard errors + {slack} = {bound.tolist()}"
    )


# --------------------------------------------------------------------------- contract


def test_registry():
    assert set(OBJECTIVES) == {"ml", "sml", "ssm", "dsm", "fdssm"}


@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float64], ids=["float32", "float64"]
)
@pytest.mark.parametrize("arch", ["fc", "coupling"])
@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_objective_contract(name, arch, dtype):
    objective = OBJECTIVES[name]
    flow = _flow(arch, 3, _gen(0), dtype)
    x = _randn(6, 3, generator=_gen(1), dtype=dtype)
    state = torch.get_rng_state()
    loss = objective(flow, x, generator=_gen(2))
    again = objective(flow, x, generator=_gen(2))
    assert torch.equal(torch.get_rng_state(), state), f"{name} touched the global RNG"
    assert loss.shape == (6,) and loss.dtype == dtype
    assert bool(torch.isfinite(loss).all())
    assert torch.equal(loss, again), f"{name}: same generator seed, different loss"
    if name in STOCHASTIC:
        other = objective(flow, x, generator=_gen(3))
        assert not torch.equal(loss, other), f"{name} ignores its generator"
    loss.mean().backward()
    for parameter in flow.parameters():
        assert parameter.grad is not None and bool(torch.isfinite(parameter.grad).all())
    assert torch.equal(torch.get_rng_state(), state)


def _float32_noise(x: torch.Tensor, seed: int) -> torch.Tensor:
    """The standard normal draws a float32 objective takes from ``_gen(seed)``, in
    float64 (float32 and float64 draws from one seed differ)."""
    return torch.randn(x.shape, generator=_gen(seed), dtype=torch.float32).double()


def _reference_in_float64(name: str, flow: Flow, x: torch.Tensor, seed: int):
    """Each objective's defining formula, in float64 and by plain autograd, on the
    noise the float32 objective draws from ``_gen(seed)`` (default settings)."""
    n_features = x.shape[1]
    if name == "ml":
        return -flow.log_prob(x) / n_features
    if name == "sml":
        samples = flow.inverse(_float32_noise(x, seed)).detach()
        return (flow.energy(x) - flow.energy(samples)) / n_features
    if name == "fdssm":
        gaussian = _float32_noise(x, seed)
        step = 0.1 * gaussian / gaussian.norm(dim=1, keepdim=True)
        center, plus, minus = (
            flow.energy(x),
            flow.energy(x + step),
            flow.energy(x - step),
        )
        return ((plus - minus).square() / 8.0 + 2.0 * center - plus - minus) / 0.01
    if name == "dsm":
        noise = _float32_noise(x, seed)
        noisy = (x + 0.1 * noise).requires_grad_(True)
        (gradient,) = torch.autograd.grad(
            flow.energy(noisy).sum(), noisy, create_graph=True
        )
        return 0.5 * (gradient - noise / 0.1).square().sum(dim=1) / n_features
    assert name == "ssm"
    direction = torch.where(_float32_noise(x, seed) >= 0, 1.0, -1.0).to(DTYPE)
    x = x.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(flow.energy(x).sum(), x, create_graph=True)
    (hessian_v,) = torch.autograd.grad(
        (gradient * direction).sum(), x, create_graph=True
    )
    curvature = (hessian_v * direction).sum(dim=1)
    return (0.5 * gradient.square().sum(dim=1) - curvature) / n_features


# fdssm divides energy differences by xi^2 = 0.01: float32 rounding of the energies
# is amplified a hundredfold.
FLOAT32_TOLERANCE = {"ml": 1e-5, "sml": 1e-5, "ssm": 1e-5, "dsm": 1e-5, "fdssm": 2e-3}


@pytest.mark.parametrize("arch", ["fc", "coupling"])
@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_float32_values_and_gradients_match_a_float64_reference(name, arch):
    flow64 = _flow(arch, 3, _gen(0))
    flow32 = copy.deepcopy(flow64).float()
    x32 = 1.5 * _randn(6, 3, generator=_gen(1), dtype=torch.float32)
    loss32 = OBJECTIVES[name](flow32, x32, generator=_gen(2))
    reference = _reference_in_float64(name, flow64, x32.double(), seed=2)
    assert loss32.dtype == torch.float32
    tolerance = FLOAT32_TOLERANCE[name]
    scale = float(reference.detach().abs().max())
    assert scale > 0.05, f"{name}: the reference loss is too small to test against"
    torch.testing.assert_close(
        loss32.double(),
        reference.detach(),
        rtol=tolerance,
        atol=tolerance * scale,
        msg=lambda m: f"{name} ({arch}) float32 loss vs float64 reference: {m}",
    )
    gradients32 = torch.autograd.grad(loss32.mean(), list(flow32.parameters()))
    gradients64 = torch.autograd.grad(reference.mean(), list(flow64.parameters()))
    gradient_scale = max(float(g.abs().max()) for g in gradients64)
    for mine, theirs in zip(gradients32, gradients64, strict=True):
        torch.testing.assert_close(
            mine.double(),
            theirs,
            rtol=10 * tolerance,
            atol=10 * tolerance * gradient_scale,
            msg=lambda m: f"{name} ({arch}) float32 gradient vs float64: {m}",
        )


@pytest.mark.parametrize("arch", ["fc", "coupling"])
def test_ml_is_negative_log_prob_per_dimension(arch):
    # Against the change of variables computed independently: the standard normal
    # log-density of f(x) plus log|det| of f's autograd Jacobian, per row.
    flow = _flow(arch, 3, _gen(0))
    x = _randn(5, 3, generator=_gen(1))
    expected = []
    for row in x:
        z = flow.forward(row.unsqueeze(0))[0][0]
        jacobian = torch.autograd.functional.jacobian(
            lambda v: flow.forward(v.unsqueeze(0))[0][0], row
        )
        log_normal = -0.5 * z.square().sum() - 1.5 * math.log(2 * math.pi)
        expected.append(log_normal + torch.linalg.slogdet(jacobian)[1])
    expected = torch.stack(expected)
    torch.testing.assert_close(ml(flow, x), -expected / 3, rtol=0.0, atol=1e-10)


# --------------------------------------------------------------------------- expectations


@pytest.mark.parametrize("projection", ["rademacher", "gaussian"])
@pytest.mark.parametrize("arch", ["fc", "coupling"])
def test_ssm_is_unbiased_for_exact_score_matching(arch, projection):
    flow = _flow(arch, 3, _gen(0))
    x = 1.5 * _randn(4, 3, generator=_gen(1))
    n_draws = 2000
    draws = ssm(flow, x.repeat(n_draws, 1), generator=_gen(2), projection=projection)
    draws = draws.detach().reshape(n_draws, 4)
    exact = exact_sm(flow, x).detach()
    _assert_within_standard_errors(draws, exact, f"ssm ({projection}) vs exact_sm")
    # n_slices averages exactly these draws (same projections from the same seed).
    sliced = ssm(flow, x, generator=_gen(2), projection=projection, n_slices=n_draws)
    torch.testing.assert_close(
        sliced.detach(), draws.mean(dim=0), rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize("arch", ["fc", "coupling", "coupling-passed"])
def test_basis_slices_give_exact_score_matching_and_its_parameter_gradient(arch):
    """With v running over the basis, sum_i e_i^T H e_i = tr H exactly: the jet path
    and its parameter gradient must reproduce exact_sm deterministically."""
    n_features, n_rows = 3, 4
    flow = _flow(arch, n_features, _gen(0))
    x = _randn(n_rows, n_features, generator=_gen(1))
    basis = torch.eye(n_features, dtype=DTYPE).repeat_interleave(n_rows, dim=0)
    _, gradient, curvature = energy_gradient_and_curvature(
        flow, x.repeat(n_features, 1), basis
    )
    trace = curvature.reshape(n_features, n_rows).sum(dim=0)
    ours = (0.5 * gradient[:n_rows].square().sum(dim=1) - trace) / n_features
    reference = exact_sm(flow, x)
    torch.testing.assert_close(ours, reference, rtol=1e-9, atol=1e-10)
    _assert_same_parameter_gradient(flow, ours, reference, rtol=1e-9, atol=1e-10)


def _assert_same_parameter_gradient(flow, ours, reference, *, rtol, atol):
    parameters = list(flow.parameters())
    for mine, theirs in zip(
        torch.autograd.grad(ours.sum(), parameters),
        torch.autograd.grad(reference.sum(), parameters),
        strict=True,
    ):
        torch.testing.assert_close(mine, theirs, rtol=rtol, atol=atol)


@pytest.mark.parametrize("arch", ["fc", "coupling"])
def test_fdssm_with_small_radius_matches_exact_score_matching(arch):
    flow = _flow(arch, 3, _gen(0))
    x = _randn(4, 3, generator=_gen(1))
    n_draws = 2000
    draws = fdssm(flow, x.repeat(n_draws, 1), generator=_gen(2), fd_epsilon=1e-3)
    draws = draws.detach().reshape(n_draws, 4)
    # Bias O(xi^2) = O(1e-6) and rounding O(eps |E| / xi^2) = O(1e-9): both far below 1e-4.
    _assert_within_standard_errors(
        draws, exact_sm(flow, x).detach(), "fdssm (xi=1e-3) vs exact_sm", slack=1e-4
    )


def test_fdssm_is_exact_in_expectation_on_a_quadratic_energy():
    """A one-layer fc flow has a quadratic energy: central differences are exact for
    any radius, so fdssm is sliced score matching with directions on the sphere."""
    flow = _perturb(fc(3, n_layers=1).double(), _gen(0), 0.3)
    x = _randn(4, 3, generator=_gen(1))
    n_draws = 2000
    draws = (
        fdssm(flow, x.repeat(n_draws, 1), generator=_gen(2), fd_epsilon=0.5)
        .detach()
        .reshape(n_draws, 4)
    )
    _assert_within_standard_errors(
        draws, exact_sm(flow, x).detach(), "fdssm (quadratic energy) vs exact_sm"
    )


@pytest.mark.parametrize("arch", ["fc", "coupling", "coupling-passed"])
def test_fdssm_over_a_full_frame_is_exact_score_matching_and_its_gradient(arch):
    """n_slices = D directions per row are an orthonormal frame: the squared
    differences add up to xi^2 |grad E|^2 and the second differences to xi^2 tr H,
    so one draw (no averaging) is exact_sm up to the finite differences' O(xi^2),
    and so is its parameter gradient."""
    n_features = 3
    flow = _flow(arch, n_features, _gen(0))
    x = _randn(5, n_features, generator=_gen(1))
    ours = fdssm(flow, x, generator=_gen(2), fd_epsilon=1e-4, n_slices=n_features)
    reference = exact_sm(flow, x)
    torch.testing.assert_close(ours, reference, rtol=1e-6, atol=1e-6)
    one_direction = fdssm(flow, x, generator=_gen(2), fd_epsilon=1e-4)
    assert (one_direction - reference).abs().max() > 1e-2  # control: one is noisy
    _assert_same_parameter_gradient(flow, ours, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n_slices", [2, 5])
def test_fdssm_slices_are_unbiased_orthonormal_sphere_directions(n_slices):
    """Fewer slices than D are still unbiased (each direction uniform on the sphere);
    more than D repeat the frame with fresh draws. Each row's first D directions are
    orthonormal."""
    from skebflow.objectives import _orthonormal_directions

    like = torch.zeros(4000, 3, dtype=DTYPE)
    directions = _orthonormal_directions(like, n_slices, _gen(3))
    assert directions.shape == (n_slices, 4000, 3)
    frame = directions[: min(n_slices, 3)].permute(1, 0, 2)  # (rows, slices, D)
    gram = frame @ frame.transpose(1, 2)
    torch.testing.assert_close(
        gram, torch.eye(gram.shape[1], dtype=DTYPE).expand_as(gram)
    )
    # uniform on the sphere: mean 0 and E[v v^T] = I / D for every slice
    for slice_ in directions:
        torch.testing.assert_close(
            slice_.mean(dim=0), torch.zeros(3, dtype=DTYPE), atol=0.05, rtol=0
        )
        second = slice_.T @ slice_ / slice_.shape[0]
        torch.testing.assert_close(
            second, torch.eye(3, dtype=DTYPE) / 3, atol=0.03, rtol=0
        )
    flow = _flow("coupling", 3, _gen(0))
    x = _randn(4, 3, generator=_gen(1))
    n_draws = 1000
    draws = fdssm(
        flow,
        x.repeat(n_draws, 1),
        generator=_gen(2),
        fd_epsilon=1e-3,
        n_slices=n_slices,
    )
    _assert_within_standard_errors(
        draws.detach().reshape(n_draws, 4),
        exact_sm(flow, x).detach(),
        f"fdssm ({n_slices} slices) vs exact_sm",
        slack=1e-4,
    )
    if n_slices > 3:  # the second frame is orthonormal too
        second = directions[3:].permute(1, 0, 2)
        gram = second @ second.transpose(1, 2)
        torch.testing.assert_close(
            gram, torch.eye(gram.shape[1], dtype=DTYPE).expand_as(gram)
        )


def test_fdssm_rejects_a_bad_slice_count():
    flow = _flow("fc", 2, _gen(0))
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="n_slices"):
            fdssm(flow, torch.zeros(2, 2, dtype=DTYPE), n_slices=bad)


def test_sml_gradient_matches_ml_gradient_in_expectation():
    flow = _flow("fc", 2, _gen(0))
    x = _banana(128, _gen(1))
    parameters = list(flow.parameters())
    ml_gradient = torch.cat(
        [g.flatten() for g in torch.autograd.grad(ml(flow, x).mean(), parameters)]
    )
    generator = _gen(2)
    draws = []
    for _ in range(400):
        gradients = torch.autograd.grad(
            sml(flow, x, generator=generator).mean(), parameters
        )
        draws.append(torch.cat([g.flatten() for g in gradients]))
    _assert_within_standard_errors(
        torch.stack(draws), ml_gradient, "mean sml gradient vs ml gradient"
    )


def _gaussian_flow(
    generator: torch.Generator, n_features: int = 2
) -> tuple[Flow, torch.Tensor, torch.Tensor]:
    """fc with one layer: E(x) = |W x + b|^2 / 2 + c."""
    flow = _perturb(fc(n_features, n_layers=1).double(), generator, 0.4)
    dense = flow.layers[0]
    return flow, dense.weight.detach(), dense.bias.detach()


def test_dsm_matches_the_textbook_formula_on_a_gaussian_flow():
    flow, weight, bias = _gaussian_flow(_gen(0))
    x = _randn(5, 2, generator=_gen(1))
    sigma = 0.3
    loss = dsm(flow, x, generator=_gen(2), noise_std=sigma)
    noise = torch.randn(x.shape, generator=_gen(2), dtype=DTYPE)
    noisy = x + sigma * noise
    score_of_energy = (noisy @ weight.T + bias) @ weight  # W^T (W x~ + b), row-wise
    expected = 0.5 * (score_of_energy - noise / sigma).square().sum(dim=1) / 2
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-12, atol=1e-12)


def test_dsm_expectation_on_a_gaussian_flow():
    """E_n dsm = (|A x + c|^2 + ||sigma A - I / sigma||_F^2) / (2 D), A = W^T W, c = W^T b."""
    flow, weight, bias = _gaussian_flow(_gen(0))
    x = _randn(3, 2, generator=_gen(1))
    sigma = 0.3
    n_draws = 4000
    draws = (
        dsm(flow, x.repeat(n_draws, 1), generator=_gen(2), noise_std=sigma)
        .detach()
        .reshape(n_draws, 3)
    )
    a = weight.T @ weight
    c = weight.T @ bias
    expected = (
        (x @ a.T + c).square().sum(dim=1)
        + (sigma * a - torch.eye(2, dtype=DTYPE) / sigma).square().sum()
    ) / 4
    _assert_within_standard_errors(draws, expected, "mean dsm vs closed form")


# --------------------------------------------------------------------------- no det / inverse


def _raiser(name: str):
    def raise_(*args, **kwargs):
        raise AssertionError(f"{name} was called")

    return raise_


FORBIDDEN_TORCH = [
    (torch.linalg, "slogdet"),
    (torch.linalg, "det"),
    (torch.linalg, "inv"),
    (torch.linalg, "inv_ex"),
    (torch.linalg, "solve"),
    (torch.linalg, "lu_factor"),
    (torch, "logdet"),
    (torch, "slogdet"),
    (torch, "det"),
    (torch, "inverse"),
    (torch.Tensor, "logdet"),
    (torch.Tensor, "slogdet"),
    (torch.Tensor, "det"),
    (torch.Tensor, "inverse"),
]
FORBIDDEN_SKEBFLOW = [
    (Dense, "inverse"),
    (Dense, "log_abs_det"),
    (Dense, "inverse_weight"),
    (ElementwiseAffine, "inverse"),
    (ElementwiseAffine, "log_abs_det"),
    (Flow, "log_normalizer"),
    (Flow, "inverse"),
]


@pytest.fixture
def no_determinant_or_inverse(monkeypatch):
    for owner, name in FORBIDDEN_TORCH + FORBIDDEN_SKEBFLOW:
        monkeypatch.setattr(
            owner, name, _raiser(f"{getattr(owner, '__name__', owner)}.{name}")
        )


@pytest.mark.parametrize("arch", ["fc", "coupling"])
@pytest.mark.parametrize("name", ["ssm", "dsm", "fdssm"])
def test_score_matching_never_calls_a_determinant_or_an_inverse(
    name, arch, no_determinant_or_inverse
):
    flow = _flow(arch, 3, _gen(0))
    x = _randn(6, 3, generator=_gen(1))
    loss = OBJECTIVES[name](flow, x, generator=_gen(2))
    loss.mean().backward()
    assert all(p.grad is not None for p in flow.parameters())


@pytest.mark.parametrize("arch", ["fc", "coupling"])
@pytest.mark.parametrize("name", ["ml", "sml"])
def test_the_patch_catches_likelihood_objectives(name, arch, no_determinant_or_inverse):
    """Control: the same patch stops the objectives that need det or inverse."""
    flow = _flow(arch, 3, _gen(0))
    x = _randn(6, 3, generator=_gen(1))
    with pytest.raises(AssertionError, match="was called"):
        OBJECTIVES[name](flow, x, generator=_gen(2)).mean().backward()


def test_the_patch_catches_raw_torch_calls(no_determinant_or_inverse):
    matrix = torch.eye(2, dtype=DTYPE)
    for owner, name in FORBIDDEN_TORCH:
        with pytest.raises(AssertionError, match="was called"):
            getattr(matrix if owner is torch.Tensor else owner, name)(matrix)


# --------------------------------------------------------------------------- fitting


def _banana(n_rows: int, generator: torch.Generator) -> torch.Tensor:
    noise = _randn(n_rows, 2, generator=generator)
    return torch.stack(
        [noise[:, 0], 0.5 * noise[:, 0].square() - 0.5 + 0.4 * noise[:, 1]], dim=1
    )


TRUE_MEAN = torch.tensor([0.5, -1.0], dtype=DTYPE)
TRUE_COVARIANCE = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=DTYPE)
# (settings, tolerance on max |model - target| over covariance and mean entries).
# ml is exact up to optimization; the score-matching fits carry gradient noise.
FITS = {
    "ml": ({}, 0.005),
    "ssm": ({"n_slices": 1}, 0.02),
    "fdssm": ({"fd_epsilon": 0.1}, 0.02),
    # sigma = 0.3 makes the sigma^2 = 0.09 shift of the smoothed covariance larger than
    # the tolerance, so the test sees it; much smaller sigma makes DSM's gradient
    # noise (~1/sigma) dominate a few hundred steps.
    "dsm": ({"noise_std": 0.3}, 0.03),
}


@pytest.mark.parametrize("name", list(FITS))
def test_single_dense_layer_recovers_gaussian_covariance(name):
    generator = _gen(10)
    cholesky = torch.linalg.cholesky(TRUE_COVARIANCE)
    data = TRUE_MEAN + _randn(4000, 2, generator=generator) @ cholesky.T
    centred = data - data.mean(dim=0)
    sample_covariance = centred.T @ centred / data.shape[0]
    settings, tolerance = FITS[name]
    # DSM fits the data smoothed by N(0, sigma^2 I).
    shift = settings.get("noise_std", 0.0) ** 2
    target = sample_covariance + shift * torch.eye(2, dtype=DTYPE)

    flow = fc(2, n_layers=1).double()
    optimizer = torch.optim.Adam(flow.parameters(), lr=0.05)
    n_steps = 400
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, n_steps)
    objective = OBJECTIVES[name]
    for _ in range(n_steps):
        optimizer.zero_grad()
        objective(flow, data, generator=generator, **settings).mean().backward()
        optimizer.step()
        scheduler.step()

    weight, bias = flow.layers[0].weight.detach(), flow.layers[0].bias.detach()
    model_covariance = torch.linalg.inv(weight.T @ weight)
    model_mean = -torch.linalg.solve(weight, bias)
    error = float((model_covariance - target).abs().max())
    assert error < tolerance, (
        f"{name}: max |(W^T W)^-1 - target covariance| = {error:.4f}, tolerance {tolerance}"
    )
    mean_error = float((model_mean - data.mean(dim=0)).abs().max())
    assert mean_error < tolerance, (
        f"{name}: max |-W^-1 b - sample mean| = {mean_error:.4f}, tolerance {tolerance}"
    )
    if shift > 0:
        unshifted = float((model_covariance - sample_covariance).abs().max())
        assert unshifted > tolerance, (
            "the sigma^2 I shift should be visible at this tolerance"
        )


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"n_slices": 0}, "n_slices=0"),
        ({"n_slices": -2}, "n_slices=-2"),
        ({"n_slices": 1.5}, "n_slices=1.5"),
        ({"projection": "sphere"}, "projection='sphere'"),
    ],
)
def test_ssm_refuses_settings_it_cannot_honour(settings, message):
    # A unit-sphere projection has E[v v^T] = I / D, which would scale the trace
    # term wrongly; zero slices once ran silently as one.
    from skebflow.flows import fc

    with pytest.raises(ValueError, match=message):
        ssm(fc(3), torch.zeros(4, 3), **settings)
    # numpy integers (a parameter grid's values) are integers.
    assert ssm(fc(3), torch.zeros(4, 3), n_slices=np.int64(2)).shape == (4,)
