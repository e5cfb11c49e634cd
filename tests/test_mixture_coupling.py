"""Properties of the logistic-mixture coupling: log-determinant, inverse, jets,
normalization, monotonicity, affine tails and its use in the coupling builder."""

import copy
import math
import pickle
import warnings

import pytest
import torch
from _helpers import gen as _gen
from _helpers import perturb as _perturb
from _helpers import randn as _randn
from torch import nn

from skebflow.flows import (
    AffineCoupling,
    InverseNotConvergedWarning,
    LogisticMixtureCoupling,
    coupling,
)
from skebflow.objectives import energy_gradient_and_curvature

pytestmark = [
    pytest.mark.usefixtures("single_thread"),
    # torch.func.jvp loads torch's forward-AD decompositions through torch.jit.script.
    pytest.mark.filterwarnings(
        "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
    ),
    pytest.mark.filterwarnings("error::skebflow.flows.InverseNotConvergedWarning"),
]

DTYPE = torch.float64

# (n_features, parity, activation, hidden_layer_sizes, n_components)
CASES = [
    (2, 0, "tanh", (8,), 4),
    (3, 1, "tanh", (8, 8), 3),
    (4, 0, "silu", (8,), 5),
    (5, 1, "tanh", (), 2),
]
CASE_IDS = [f"D{d}-parity{p}-{a}-h{len(h)}-K{k}" for d, p, a, h, k in CASES]


def _layer(case, seed: int, scale: float = 0.7, dtype=DTYPE) -> nn.Module:
    n_features, parity, activation, hidden, n_components = case
    generator = _gen(seed)
    layer = LogisticMixtureCoupling(
        n_features,
        n_components=n_components,
        hidden_layer_sizes=hidden,
        parity=parity,
        activation=activation,
        generator=generator,
    ).to(dtype)
    return _perturb(layer, generator, scale)


def _second_directional(function, x, t):
    """``(d/de, d^2/de^2) function(x + e t)`` at ``e = 0`` by nested forward-mode AD."""

    def first(point):
        return torch.func.jvp(function, (point,), (t,))[1]

    return first(x), torch.func.jvp(first, (x,), (t,))[1]


def _along_transformed(layer, x_conditioning: float, x_transformed: torch.Tensor):
    """Rows whose conditioning half is fixed and whose transformed half varies."""
    x = torch.full(
        (x_transformed.shape[0], layer.n_features),
        x_conditioning,
        dtype=x_transformed.dtype,
    )
    conditioning, transformed = layer._halves(x)
    transformed = x_transformed.unsqueeze(1).expand_as(transformed)
    return layer._join(conditioning, transformed)


# --------------------------------------------------------------------------- layer


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_log_abs_det_matches_autograd_jacobian(case, seed):
    layer = _layer(case, seed)
    x = 2.0 * _randn(4, case[0], generator=_gen(100 + seed))
    expected = torch.stack(
        [
            torch.linalg.slogdet(
                torch.autograd.functional.jacobian(
                    lambda r: layer(r.unsqueeze(0))[0].squeeze(0), row
                )
            )[1]
            for row in x
        ]
    )
    _, log_abs_det = layer(x)
    assert log_abs_det.shape == (4,)
    torch.testing.assert_close(log_abs_det, expected, rtol=0.0, atol=1e-10)


@pytest.mark.parametrize(
    ("dtype", "atol"),
    [(torch.float64, 1e-9), (torch.float32, 2e-4)],
    ids=["float64", "float32"],
)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_inverse_round_trip(case, dtype, atol):
    layer = _layer(case, 2, dtype=dtype)
    generator = _gen(3)
    x = 2.0 * _randn(64, case[0], generator=generator, dtype=dtype)
    x[:4] *= 30.0  # a few points in the affine tails
    y, _ = layer(x)
    with torch.no_grad():
        back = layer.inverse(y)
    # Between two far-apart narrow modes the map is nearly flat and x is
    # ill-conditioned: allow the error in y divided by the slope there.
    conditioning, transformed = layer._halves(x)
    _, log_slope = layer._map(transformed, layer._mixture_parameters(conditioning))
    _, y_transformed = layer._halves(y)
    allowed = atol * ((1.0 + y_transformed.abs()) / log_slope.exp() + 1.0)
    error = (layer._halves(back)[1] - transformed).abs()
    assert bool((error <= allowed).all()), "inverse(forward(x)) != x"
    assert torch.equal(layer._halves(back)[0], conditioning)
    y = 3.0 * _randn(64, case[0], generator=generator, dtype=dtype)
    y[:4] *= 1e3
    with torch.no_grad():
        forward = layer(layer.inverse(y))[0]
    scale = 1.0 + y.abs()
    assert float(((forward - y).abs() / scale).max()) < atol


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_jet_matches_nested_forward_mode_autodiff(case, seed):
    layer = _layer(case, seed)
    generator = _gen(200 + seed)
    x = 1.5 * _randn(4, case[0], generator=generator)
    t = _randn(4, case[0], generator=generator)
    jet = layer.jet(x, t)
    y, log_abs_det = layer(x)
    torch.testing.assert_close(jet.y, y, rtol=0.0, atol=1e-12)
    tangent, curvature = _second_directional(lambda a: layer(a)[0], x, t)
    torch.testing.assert_close(jet.tangent, tangent, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(jet.curvature, curvature, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(jet.log_abs_det, log_abs_det, rtol=0.0, atol=1e-12)
    _, log_abs_det_curvature = _second_directional(lambda a: layer(a)[1], x, t)
    torch.testing.assert_close(
        jet.log_abs_det_curvature, log_abs_det_curvature, rtol=1e-9, atol=1e-10
    )


def test_jet_gives_analytic_derivatives_in_the_transformed_half():
    layer = _layer(CASES[0], 4)
    x = _along_transformed(layer, 0.3, torch.linspace(-4, 4, 9, dtype=DTYPE))
    direction = _along_transformed(layer, 0.0, torch.ones(9, dtype=DTYPE))
    jet = layer.jet(x, direction)
    _, transformed = layer._halves(x)

    def column(values):
        x_ = _along_transformed(layer, 0.3, values)
        return layer._halves(layer(x_)[0])[1].squeeze(1)

    values = transformed.squeeze(1)
    first = torch.func.jacfwd(column)(values).diagonal()
    second = torch.func.jacfwd(torch.func.jacfwd(column))(values)
    second = second.diagonal(dim1=0, dim2=1).diagonal()
    torch.testing.assert_close(layer._halves(jet.tangent)[1].squeeze(1), first)
    torch.testing.assert_close(layer._halves(jet.curvature)[1].squeeze(1), second)
    _, log_abs_det = layer(x)
    torch.testing.assert_close(log_abs_det, first.log())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["32", "64"])
def test_strictly_increasing_and_finite_far_out(dtype):
    layer = _layer(CASES[0], 5, scale=2.0, dtype=dtype)
    values = torch.cat(
        [
            -torch.logspace(6, -2, 60, dtype=dtype),
            torch.linspace(-6, 6, 2001, dtype=dtype),
            torch.logspace(-2, 6, 60, dtype=dtype),
        ]
    ).sort()[0]
    for conditioning in (-1e4, -2.0, 0.0, 0.5, 3.0, 1e4):
        x = _along_transformed(layer, conditioning, values)
        with torch.no_grad():
            y, log_abs_det = layer(x)
        column = layer._halves(y)[1].squeeze(1)
        assert bool(torch.isfinite(column).all() & torch.isfinite(log_abs_det).all())
        assert bool((torch.diff(column) >= 0).all()), "the map must not decrease"
        assert bool((column[1:-1] != column[2:]).any())
        # y' = exp(a) F' / (F (1 - F)) <= 2 exp(a) max_k exp(-s_k) <= 2 exp(2 + 5);
        # in the tails y' = exp(a - s_widest) >= exp(-2 - 1).
        slope = log_abs_det.exp()
        assert bool((slope > 0).all() & (slope <= 2.0 * math.exp(7) * 1.001).all())
        tails = slope[[0, 1, -2, -1]]
        assert bool((tails >= math.exp(-3) * 0.999).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["32", "64"])
def test_map_is_affine_far_from_the_data(dtype):
    layer = _layer(CASES[1], 6, scale=1.5, dtype=dtype)
    distances = torch.tensor([1e2, 1e3, 1e4, 1e5], dtype=dtype)
    for sign in (-1.0, 1.0):
        x = _along_transformed(layer, 0.7, sign * distances)
        direction = _along_transformed(layer, 0.0, torch.ones(4, dtype=dtype))
        with torch.no_grad():
            jet = layer.jet(x, direction)
        slope = layer._halves(jet.tangent)[1]
        curvature = layer._halves(jet.curvature)[1]
        # the slope settles to exp(a - s_widest), the curvature vanishes
        torch.testing.assert_close(
            slope, slope[-1:].expand_as(slope), rtol=5e-3, atol=0.0
        )
        assert float(curvature.abs().max()) < 1e-6 * float(slope.max())
        assert float(jet.log_abs_det_curvature.abs().max()) < 1e-6


def test_flow_log_density_decays_like_a_gaussian_far_out():
    generator = _gen(7)
    flow = coupling(
        3,
        n_layers=2,
        hidden_layer_sizes=(8,),
        transform="logistic_mixture",
        n_components=4,
        generator=generator,
    ).double()
    _perturb(flow, generator, 0.5)
    direction = torch.nn.functional.normalize(_randn(5, 3, generator=generator))
    curvatures, energies = [], []
    for distance in (1e5, 1e6, 1e7):
        energy, _, curvature = energy_gradient_and_curvature(
            flow, distance * direction, direction
        )
        curvatures.append(curvature.detach())
        energies.append(energy.detach() / distance**2)
    # Far out the energy is a quadratic in x: u^T Hess E u is the same constant at
    # every distance along u, and E(r u) / r^2 tends to half of it.
    assert bool((curvatures[0] > 0).all())
    for curvature in curvatures[1:]:
        torch.testing.assert_close(curvature, curvatures[0], rtol=1e-6, atol=0.0)
    torch.testing.assert_close(energies[-1], curvatures[0] / 2, rtol=2e-3, atol=0.0)


def test_starts_near_the_identity():
    layer = LogisticMixtureCoupling(
        2, n_components=8, hidden_layer_sizes=(4,), generator=_gen(0)
    ).double()
    values = torch.linspace(-50, 50, 4001, dtype=DTYPE)
    x = _along_transformed(layer, 1.3, values)
    with torch.no_grad():
        y, log_abs_det = layer(x)
    assert float((y - x).abs().max()) < 0.21
    slope = log_abs_det.exp()
    assert float(slope.min()) > 0.9 and float(slope.max()) <= 1.0 + 1e-12
    single = LogisticMixtureCoupling(
        3, n_components=1, hidden_layer_sizes=(4,), generator=_gen(0)
    ).double()
    x = _randn(6, 3, generator=_gen(1))
    y, log_abs_det = single(x)
    torch.testing.assert_close(y, x, rtol=0.0, atol=1e-12)
    torch.testing.assert_close(log_abs_det, torch.zeros(6, dtype=DTYPE))


def test_one_layer_makes_a_column_multimodal():
    # Means at -2 and 2, scales exp(-2.5): p(x_b) = N(y(x_b)) y'(x_b) has two narrow
    # modes and a trough between them.
    layer = LogisticMixtureCoupling(
        2, n_components=2, hidden_layer_sizes=(4,), generator=_gen(0)
    ).double()
    last = layer.conditioner.linears[-1]
    with torch.no_grad():
        last.weight.zero_()
        means = layer._means.raw(torch.tensor([-2.0, 2.0], dtype=DTYPE))
        log_scales = layer._log_scales.raw(torch.full((2,), -2.5, dtype=DTYPE))
        zeros = torch.zeros(2, dtype=DTYPE)
        last.bias.copy_(torch.cat([zeros, means, log_scales, zeros]))
    values = torch.linspace(-4, 4, 801, dtype=DTYPE)
    x = _along_transformed(layer, 0.0, values)
    with torch.no_grad():
        y, log_abs_det = layer(x)
    column = layer._halves(y)[1].squeeze(1)
    log_density = -0.5 * column.square() - 0.5 * math.log(2 * math.pi) + log_abs_det
    density = log_density.exp()
    peaks = (density[1:-1] > density[:-2]) & (density[1:-1] > density[2:])
    assert int(peaks.sum()) == 2
    middle = density[400]
    assert float(density.max()) > 20.0 * float(middle), "a deep trough at 0"
    assert abs(float(torch.trapezoid(density, values)) - 1.0) < 1e-3


def test_inverse_reports_non_convergence():
    layer = _layer(CASES[0], 0)
    layer.max_steps = 1
    layer.tol = 0.0
    y = 3.0 * _randn(8, 2, generator=_gen(1))
    with pytest.warns(InverseNotConvergedWarning, match="LogisticMixtureCoupling"):
        layer.inverse(y)


def test_gradient_flows_through_the_inverse():
    layer = _layer(CASES[0], 3)
    y = _randn(5, 2, generator=_gen(4)).requires_grad_(True)
    assert torch.autograd.gradcheck(layer.inverse, (y,))
    # The parameters get the implicit-function gradient too.
    x = layer.inverse(y.detach())
    loss = x.square().sum()
    grads = torch.autograd.grad(loss, list(layer.parameters()), allow_unused=True)
    assert any(g is not None and float(g.abs().sum()) > 0 for g in grads)
    last = layer.conditioner.linears[-1].bias
    (analytic,) = torch.autograd.grad(layer.inverse(y.detach()).square().sum(), last)
    direction = _randn(*last.shape, generator=_gen(5))
    step = 1e-6
    with torch.no_grad():
        last.add_(step * direction)
        plus = layer.inverse(y.detach()).square().sum()
        last.sub_(2 * step * direction)
        minus = layer.inverse(y.detach()).square().sum()
        last.add_(step * direction)
    numeric = (plus - minus) / (2 * step)
    torch.testing.assert_close(
        (analytic * direction).sum(), numeric, rtol=1e-6, atol=1e-8
    )


def test_cached_constants_filled_under_inference_mode_do_not_break_autograd():
    layer = _layer(CASES[1], seed=3)
    x = _randn(4, layer.n_features, generator=_gen(4))
    with torch.inference_mode():
        expected = layer(x)[0]
    x = x.clone().requires_grad_(True)
    y, log_abs_det = layer(x)
    (y.sum() + log_abs_det.sum()).backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())
    torch.testing.assert_close(y.detach(), expected)


def test_cached_constants_are_not_pickled():
    # A pickled layer carries its weights, not its caches: values stored under a
    # cache's name (here made wrong on purpose, as a layer saved by older code
    # could hold) are dropped, and the loaded layer recomputes them.
    layer = _layer(CASES[0], seed=5)
    x = _randn(6, layer.n_features, generator=_gen(6))
    expected = layer(x)[0].detach()
    for name in layer._CACHES:
        cache = layer.__dict__[name]
        for key, value in cache.items():
            cache[key] = (
                tuple(v * 3.0 for v in value)
                if isinstance(value, tuple)
                else value.flip(0)
            )
    loaded = pickle.loads(pickle.dumps(layer))
    assert not set(layer._CACHES) & set(vars(loaded))
    torch.testing.assert_close(loaded(x)[0].detach(), expected)
    torch.testing.assert_close(copy.deepcopy(layer)(x)[0].detach(), expected)
    assert layer(x)[0].detach().sub(expected).abs().max() > 1e-3  # the sabotage


def test_invalid_arguments():
    with pytest.raises(ValueError, match="n_components"):
        LogisticMixtureCoupling(4, n_components=0)
    with pytest.raises(ValueError, match="at least 2 features"):
        LogisticMixtureCoupling(1)
    with pytest.raises(ValueError, match="activation"):
        LogisticMixtureCoupling(4, activation="relu")
    with pytest.raises(ValueError, match="mean_bound"):
        LogisticMixtureCoupling(4, mean_bound=0.5)
    with pytest.raises(ValueError, match="log_scale_range"):
        LogisticMixtureCoupling(4, log_scale_range=(0.5, 2.0))


# --------------------------------------------------------------------------- flows


def _mixture_flow(n_features: int, seed: int, scale: float = 0.3) -> nn.Module:
    generator = _gen(seed)
    flow = coupling(
        n_features,
        n_layers=2,
        hidden_layer_sizes=(8,),
        transform="logistic_mixture",
        n_components=3,
        generator=generator,
    ).double()
    return _perturb(flow, generator, scale)


def test_log_prob_integrates_to_one_in_2d():
    flow = _mixture_flow(2, 4, scale=0.5)
    half_width, n_points = 25.0, 801
    axis = torch.linspace(-half_width, half_width, n_points, dtype=DTYPE)
    grid = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        density = flow.log_prob(grid).exp().reshape(n_points, n_points)
    edge = torch.cat([density[0], density[-1], density[:, 0], density[:, -1]])
    assert float(edge.max()) < 1e-10, "the grid must hold all the mass"
    mass = float(torch.trapezoid(torch.trapezoid(density, axis, dim=1), axis))
    assert abs(mass - 1.0) < 2e-3, f"2-D mass {mass} differs from 1"


def test_sample_round_trips_through_the_flow():
    flow = _mixture_flow(3, 8, scale=0.5)
    samples = flow.sample(64, generator=_gen(9))
    z = torch.randn(64, 3, generator=_gen(9), dtype=DTYPE)
    torch.testing.assert_close(flow(samples)[0], z, rtol=0.0, atol=1e-9)


def test_coupling_builder_transform():
    default = coupling(4, n_layers=2, generator=_gen(0))
    assert [type(layer) for layer in default.layers[2::3]] == [AffineCoupling] * 2
    mixture = coupling(
        4,
        n_layers=3,
        hidden_layer_sizes=(16,),
        transform="logistic_mixture",
        n_components=6,
        generator=_gen(0),
    )
    couplings = list(mixture.layers[2::3])
    assert [type(layer) for layer in couplings] == [LogisticMixtureCoupling] * 3
    assert [layer.parity for layer in couplings] == [0, 1, 0]
    assert {layer.n_components for layer in couplings} == {6}
    # 3 K + 2 outputs per transformed coordinate
    assert couplings[0].conditioner.linears[-1].out_features == 2 * (3 * 6 + 2)
    with pytest.raises(ValueError, match="transform"):
        coupling(4, transform="spline")


def test_same_generator_same_weights_and_no_global_rng():
    state = torch.get_rng_state()
    first = coupling(4, transform="logistic_mixture", generator=_gen(3))
    second = coupling(4, transform="logistic_mixture", generator=_gen(3))
    assert torch.equal(torch.get_rng_state(), state)
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.gpu
def test_mixture_flow_on_cuda_matches_cpu():
    flow = _mixture_flow(4, 1)
    x = _randn(8, 4, generator=_gen(2))
    expected = flow.log_prob(x).detach()
    on_cuda = flow.to("cuda")
    torch.testing.assert_close(on_cuda.log_prob(x.to("cuda")).detach().cpu(), expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InverseNotConvergedWarning)
        samples = on_cuda.sample(64, generator=torch.Generator("cuda").manual_seed(0))
    assert samples.device.type == "cuda" and bool(torch.isfinite(samples).all())


# ----------------------------------------------------------- through the estimator


def test_estimator_with_logistic_mixture_couplings_fits_pickles_and_samples():
    import pickle
    import warnings

    import numpy as np
    from sklearn.exceptions import ConvergenceWarning

    from skebflow import EBFlowDensity
    from skebflow.flows import LogisticMixtureCoupling

    rng = np.random.RandomState(0)
    # One column with two narrow modes: the mixture's job.
    X = np.c_[
        rng.choice([-2.0, 2.0], 600) + 0.1 * rng.normal(size=600), rng.normal(size=600)
    ]
    est = EBFlowDensity(
        coupling_transform="logistic_mixture",
        n_components=4,
        n_layers=2,
        n_flows=1,  # one flow, whose layers are inspected below
        max_iter=40,
        device="cpu",
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X)
    assert any(isinstance(layer, LogisticMixtureCoupling) for layer in est.flow_.layers)
    scores = est.score_samples(X)
    assert np.isfinite(scores).all()
    # A point between the modes is less likely than one on a mode.
    assert est.score_samples([[2.0, 0.0]])[0] > est.score_samples([[0.0, 0.0]])[0] + 1.0
    restored = pickle.loads(pickle.dumps(est))
    np.testing.assert_allclose(restored.score_samples(X), scores, rtol=1e-12)
    samples = est.sample(500, random_state=0)
    assert np.isfinite(samples).all() and np.isfinite(est.score_samples(samples)).all()
    np.testing.assert_array_equal(samples, restored.sample(500, random_state=0))


def test_log_sum_exp_first_is_torch_logsumexp_with_infinite_terms():
    from skebflow.flows._mixture_coupling import _log_sum_exp_first

    inf = float("inf")
    terms = torch.tensor(
        [
            [0.0, -inf, -inf, 3.0, -1e4],
            [1.0, -inf, inf, -inf, -1e4 - 2.0],
            [-2.0, -inf, 5.0, 700.0, -1e4 - 1.0],
        ],
        dtype=torch.float64,
    )
    expected = torch.logsumexp(terms, dim=0)
    got = _log_sum_exp_first(terms)
    assert torch.equal(got.isinf(), expected.isinf())
    assert not got.isnan().any()
    torch.testing.assert_close(got, expected, rtol=1e-15, atol=0)


def test_torch_func_transforms_can_be_repeated_on_a_fresh_layer():
    """The layer caches constants it derives from its settings; computed inside a
    ``torch.func`` transform they were that call's wrapped tensors, and the next
    transform failed on an internal assertion."""
    from torch.func import hessian

    from skebflow.flows import coupling

    flow = coupling(
        4,
        n_layers=1,
        hidden_layer_sizes=(8,),
        transform="logistic_mixture",
        n_components=3,
        generator=_gen(0),
    ).double()
    x = torch.randn(4, dtype=torch.float64, generator=_gen(1))

    def energy(point: torch.Tensor) -> torch.Tensor:
        return flow.energy(point.unsqueeze(0)).squeeze(0)

    first = hessian(energy)(x)
    second = hessian(energy)(x)
    torch.testing.assert_close(second, first, rtol=0.0, atol=0.0)
    torch.testing.assert_close(second, second.T)
    # The layer still works outside any transform afterwards.
    assert bool(torch.isfinite(flow.energy(x.unsqueeze(0))).all())
