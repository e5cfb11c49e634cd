"""Properties of every layer and of whole flows: inverses, log-determinants, jets,
normalization, caches and randomness."""

import math
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from _helpers import gen as _gen
from _helpers import perturb as _perturb
from _helpers import randn as _randn
from torch import nn

from skebflow.flows import (
    AffineCoupling,
    Bijection,
    BinProbit,
    Dense,
    ElementwiseAffine,
    Flow,
    LogisticMixtureCoupling,
    Logit,
    Preprocessing,
    SmoothLeakyReLU,
    Standardize,
    UniformDequantize,
    coupling,
    fc,
)
from skebflow.objectives import energy_gradient_and_curvature, ml

pytestmark = [
    pytest.mark.usefixtures("single_thread"),
    # torch.func.jvp loads torch's forward-AD decompositions through torch.jit.script.
    pytest.mark.filterwarnings(
        "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
    ),
]

DTYPE = torch.float64


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class LayerCase:
    """One configured layer: how to build it and where its inputs live."""

    variant: str
    build: Callable[[int, torch.Generator], nn.Module]
    dims: tuple[int, ...]
    atol: float
    constant: bool = False
    sample: Callable[[nn.Module, int, torch.Generator], torch.Tensor] | None = None

    @property
    def id(self) -> str:
        layer = self.build(self.dims[0], _gen(0))
        return f"{type(layer).__name__}-{self.variant}"

    def dim(self, seed: int) -> int:
        return self.dims[seed % len(self.dims)]

    def inputs(
        self, layer: nn.Module, n_features: int, n_rows: int, generator: torch.Generator
    ) -> torch.Tensor:
        if self.sample is not None:
            return self.sample(layer, n_rows, generator)
        return 1.5 * _randn(n_rows, n_features, generator=generator)


def _dense(init: str) -> Callable[[int, torch.Generator], nn.Module]:
    def build(n_features: int, generator: torch.Generator) -> nn.Module:
        layer = Dense(n_features, init=init, generator=generator).double()
        return _perturb(layer, generator, 0.3)

    return build


def _elementwise_affine(n_features: int, generator: torch.Generator) -> nn.Module:
    return _perturb(ElementwiseAffine(n_features).double(), generator, 0.5)


def _smooth_leaky_relu(
    alpha: float, residual: bool
) -> Callable[[int, torch.Generator], nn.Module]:
    def build(n_features: int, generator: torch.Generator) -> nn.Module:
        return SmoothLeakyReLU(alpha, residual=residual)

    return build


def _affine_coupling(
    parity: int, activation: str
) -> Callable[[int, torch.Generator], nn.Module]:
    def build(n_features: int, generator: torch.Generator) -> nn.Module:
        layer = AffineCoupling(
            n_features,
            hidden_layer_sizes=(8, 8),
            parity=parity,
            activation=activation,
            generator=generator,
        ).double()
        # The conditioner's last layer starts at zero (an identity coupling): move it.
        return _perturb(layer, generator, 0.5)

    return build


def _standardize(n_features: int, generator: torch.Generator) -> nn.Module:
    mean = _randn(n_features, generator=generator)
    scale = torch.exp(0.5 * _randn(n_features, generator=generator))
    return Standardize(mean, scale)


def _logit(alpha: float) -> Callable[[int, torch.Generator], nn.Module]:
    def build(n_features: int, generator: torch.Generator) -> nn.Module:
        lower = -1.0 - torch.rand(n_features, generator=generator, dtype=DTYPE)
        upper = 1.0 + torch.rand(n_features, generator=generator, dtype=DTYPE)
        return Logit(lower, upper, alpha=alpha)

    return build


def _logit_passthrough(n_features: int, generator: torch.Generator) -> nn.Module:
    layer = _logit(1.0)(n_features, generator)
    passthrough = torch.arange(n_features) % 2 == 1
    return Logit(layer.lower, layer.upper, passthrough=passthrough)


def _bin_probit(n_features: int, generator: torch.Generator) -> nn.Module:
    columns = torch.arange(n_features) % 2 == 0
    lower = torch.randint(-3, 4, (n_features,), generator=generator).to(DTYPE)
    return BinProbit(columns, lower)


def _inside_bins(
    layer: nn.Module, n_rows: int, generator: torch.Generator
) -> torch.Tensor:
    u = 0.02 + 0.96 * torch.rand(
        n_rows, layer.lower.shape[0], generator=generator, dtype=DTYPE
    )
    return torch.where(layer.columns, layer.lower + u, 3.0 * (u - 0.5))


def _inside_box(
    layer: nn.Module, n_rows: int, generator: torch.Generator
) -> torch.Tensor:
    u = 0.02 + 0.96 * torch.rand(
        n_rows, layer.lower.shape[0], generator=generator, dtype=DTYPE
    )
    return layer.lower + u * (layer.upper - layer.lower)


CASES = [
    LayerCase("identity", _dense("identity"), (1, 3, 5), 1e-10, constant=True),
    LayerCase(
        "negative_identity", _dense("negative_identity"), (2, 4), 1e-10, constant=True
    ),
    LayerCase("orthogonal", _dense("orthogonal"), (3, 1, 6), 1e-10, constant=True),
    LayerCase("perturbed", _elementwise_affine, (1, 4), 1e-12, constant=True),
    LayerCase("alpha0.1", _smooth_leaky_relu(0.1, False), (1, 3), 1e-8),
    LayerCase("alpha0.6", _smooth_leaky_relu(0.6, False), (2, 5), 1e-8),
    LayerCase("residual-alpha0.1", _smooth_leaky_relu(0.1, True), (1, 3), 1e-8),
    LayerCase("residual-alpha0.6", _smooth_leaky_relu(0.6, True), (4, 2), 1e-8),
    LayerCase("D3-parity0-tanh", _affine_coupling(0, "tanh"), (3,), 1e-10),
    LayerCase("D3-parity1-silu", _affine_coupling(1, "silu"), (3,), 1e-10),
    LayerCase("D4-parity1-tanh", _affine_coupling(1, "tanh"), (4,), 1e-10),
    LayerCase("D2-parity0-silu", _affine_coupling(0, "silu"), (2,), 1e-10),
    LayerCase("fixed", _standardize, (1, 3), 1e-12, constant=True),
    LayerCase("alpha1", _logit(1.0), (1, 3), 1e-9, sample=_inside_box),
    LayerCase("alpha0.5", _logit(0.5), (2,), 1e-9, sample=_inside_box),
    LayerCase("passthrough", _logit_passthrough, (2, 3), 1e-9, sample=_inside_box),
    LayerCase("bins", _bin_probit, (1, 3), 1e-9, sample=_inside_bins),
]
CASE_IDS = [case.id for case in CASES]
BIJECTION_CASES = [
    pytest.param(case, id=case.id)
    for case in CASES
    if isinstance(case.build(case.dims[0], _gen(0)), Bijection)
]
CONSTANT_CASES = [pytest.param(case, id=case.id) for case in CASES if case.constant]
SEEDS = [0, 1, 2]


def _build(case: LayerCase, seed: int) -> tuple[nn.Module, int, torch.Generator]:
    generator = _gen(seed)
    n_features = case.dim(seed)
    return case.build(n_features, generator), n_features, generator


def _jacobian(layer: nn.Module, row: torch.Tensor) -> torch.Tensor:
    return torch.autograd.functional.jacobian(
        lambda r: layer(r.unsqueeze(0))[0].squeeze(0), row
    )


def _per_row_log_abs_det(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``log|det J|`` per row as the layer reports it (broadcast for constant layers)."""
    _, log_abs_det = layer(x)
    if log_abs_det is None:
        return layer.log_abs_det().expand(x.shape[0])
    return log_abs_det


# --------------------------------------------------------------------------- layers


def test_registry_covers_every_layer_class():
    built = {type(case.build(case.dims[0], _gen(0))) for case in CASES}
    assert built == {
        Dense,
        ElementwiseAffine,
        SmoothLeakyReLU,
        AffineCoupling,
        Standardize,
        Logit,
        BinProbit,
    }


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_inverse_round_trip(case, seed):
    layer, n_features, generator = _build(case, seed)
    x = case.inputs(layer, n_features, 3 + 2 * seed, generator)
    y, _ = layer(x)
    torch.testing.assert_close(
        layer.inverse(y),
        x,
        rtol=0.0,
        atol=case.atol,
        msg=lambda m: f"inverse(forward(x)) != x (atol={case.atol}): {m}",
    )
    y = 2.0 * _randn(3 + 2 * seed, n_features, generator=generator)
    torch.testing.assert_close(
        layer(layer.inverse(y))[0],
        y,
        rtol=0.0,
        atol=case.atol,
        msg=lambda m: f"forward(inverse(y)) != y (atol={case.atol}): {m}",
    )


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_log_abs_det_matches_autograd_jacobian(case, seed):
    layer, n_features, generator = _build(case, seed)
    x = case.inputs(layer, n_features, 1 + 2 * seed, generator)
    expected = torch.stack(
        [torch.linalg.slogdet(_jacobian(layer, row))[1] for row in x]
    )
    _, log_abs_det = layer(x)
    if getattr(layer, "constant_jacobian", False):
        assert log_abs_det is None, "a constant-Jacobian layer returns None per row"
        with torch.no_grad():
            cached = layer.log_abs_det()
        torch.testing.assert_close(
            cached.expand_as(expected), expected, rtol=0.0, atol=1e-10
        )
    else:
        assert log_abs_det.shape == (x.shape[0],)
    torch.testing.assert_close(
        _per_row_log_abs_det(layer, x), expected, rtol=0.0, atol=1e-10
    )


@pytest.mark.parametrize("case", CONSTANT_CASES)
def test_constant_jacobian_does_not_depend_on_input(case):
    layer, n_features, generator = _build(case, 1)
    x1, x2 = 3.0 * _randn(2, n_features, generator=generator)
    jacobian1, jacobian2 = _jacobian(layer, x1), _jacobian(layer, x2)
    torch.testing.assert_close(jacobian1, jacobian2, rtol=0.0, atol=1e-12)
    log_abs_det = _per_row_log_abs_det(layer, torch.stack([x1, x2]))
    # Each row's log-determinant against the slogdet of its own Jacobian.
    for row, jacobian in enumerate((jacobian1, jacobian2)):
        torch.testing.assert_close(
            log_abs_det[row], torch.linalg.slogdet(jacobian)[1], rtol=0.0, atol=1e-10
        )


@pytest.mark.parametrize("case", BIJECTION_CASES)
def test_constant_jacobian_flag(case):
    layer, n_features, generator = _build(case, 0)
    assert layer.constant_jacobian is case.constant
    if not case.constant:
        # An input-dependent Jacobian really changes with the input.
        x1, x2 = 2.0 * _randn(2, n_features, generator=generator)
        assert not torch.allclose(_jacobian(layer, x1), _jacobian(layer, x2))
        with pytest.raises(NotImplementedError):
            layer.log_abs_det()


def _second_directional(
    function, x: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(d/de, d^2/de^2) function(x + e t)`` at ``e = 0`` by nested forward-mode AD."""

    def first(point):
        return torch.func.jvp(function, (point,), (t,))[1]

    return first(x), torch.func.jvp(first, (x,), (t,))[1]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("case", BIJECTION_CASES)
def test_jet_matches_forward_mode_autodiff(case, seed):
    layer, n_features, generator = _build(case, seed)
    x = case.inputs(layer, n_features, 4, generator)
    t = _randn(4, n_features, generator=generator)
    jet = layer.jet(x, t)
    y, log_abs_det = layer(x)
    torch.testing.assert_close(jet.y, y, rtol=0.0, atol=1e-12)
    tangent, curvature = _second_directional(lambda a: layer(a)[0], x, t)
    torch.testing.assert_close(jet.tangent, tangent, rtol=1e-10, atol=1e-10)
    if layer.constant_jacobian:
        assert jet.curvature is None
        assert jet.log_abs_det is None and jet.log_abs_det_curvature is None
        torch.testing.assert_close(curvature, torch.zeros_like(curvature))
        return
    torch.testing.assert_close(jet.curvature, curvature, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(jet.log_abs_det, log_abs_det, rtol=0.0, atol=1e-12)
    _, log_abs_det_curvature = _second_directional(lambda a: layer(a)[1], x, t)
    torch.testing.assert_close(
        jet.log_abs_det_curvature, log_abs_det_curvature, rtol=1e-9, atol=1e-10
    )


# --------------------------------------------------------------------------- flows


def _flow(kind: str, n_features: int, generator: torch.Generator, dtype=DTYPE) -> Flow:
    if kind == "fc":
        flow = fc(n_features, n_layers=3, init="orthogonal", generator=generator)
    elif kind == "fc-residual":
        flow = fc(n_features, n_layers=2, alpha=0.2, residual=True, generator=generator)
    elif kind == "coupling-tanh":
        flow = coupling(
            n_features,
            n_layers=2,
            hidden_layer_sizes=(8,),
            activation="tanh",
            generator=generator,
        )
    elif kind == "coupling-silu":
        flow = coupling(
            n_features,
            n_layers=2,
            hidden_layer_sizes=(8, 8),
            activation="silu",
            generator=generator,
        )
    elif kind == "coupling-mixture":
        flow = coupling(
            n_features,
            n_layers=2,
            hidden_layer_sizes=(8,),
            transform="logistic_mixture",
            n_components=3,
            generator=generator,
        )
    elif kind == "coupling-mixture-passed":  # columns 0 and 3 left to the base
        inner = _flow("coupling-mixture", n_features - 2, generator, dtype)
        return Flow(inner.layers, passed_columns=[3, 0])
    elif kind == "fc-passed-last":  # the last column left to the base
        inner = _flow("fc", n_features - 1, generator, dtype)
        return Flow(inner.layers, passed_columns=[n_features - 1])
    else:  # pragma: no cover
        raise ValueError(kind)
    return _perturb(flow.to(dtype), generator, 0.2)


FLOW_KINDS = [
    ("fc", 3),
    ("fc-residual", 2),
    ("coupling-tanh", 3),
    ("coupling-silu", 4),
    ("coupling-mixture", 4),
    ("coupling-mixture-passed", 5),
    ("fc-passed-last", 4),
]
FLOW_IDS = [f"{kind}-D{n}" for kind, n in FLOW_KINDS]


@pytest.mark.parametrize(("kind", "n_features"), FLOW_KINDS, ids=FLOW_IDS)
def test_energy_gradient_and_curvature_matches_double_backward(kind, n_features):
    generator = _gen(11)
    flow = _flow(kind, n_features, generator)
    x = 1.5 * _randn(5, n_features, generator=generator)
    v = _randn(5, n_features, generator=generator)

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

    # The graph it keeps gives the same parameter gradient as the double backward.
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


@pytest.mark.parametrize(("kind", "n_features"), FLOW_KINDS, ids=FLOW_IDS)
def test_log_prob_splits_into_energy_and_log_normalizer(kind, n_features):
    generator = _gen(5)
    flow = _flow(kind, n_features, generator)
    x = _randn(6, n_features, generator=generator).requires_grad_(True)
    log_prob = flow.log_prob(x)
    energy = flow.energy(x)
    torch.testing.assert_close(
        log_prob, -energy - flow.log_normalizer(), rtol=0.0, atol=1e-12
    )
    (grad_log_prob,) = torch.autograd.grad(log_prob.sum(), x)
    (grad_energy,) = torch.autograd.grad(energy.sum(), x)
    torch.testing.assert_close(grad_log_prob, -grad_energy, rtol=0.0, atol=1e-12)
    # And log p is the change of variables through the whole flow.
    rows = x.detach()
    z, _ = flow(rows)
    jacobian_log_det = torch.stack(
        [torch.linalg.slogdet(_jacobian(flow, row))[1] for row in rows]
    )
    base = -0.5 * z.square().sum(1) - 0.5 * n_features * math.log(2.0 * math.pi)
    torch.testing.assert_close(
        log_prob.detach(), base + jacobian_log_det, rtol=0.0, atol=1e-10
    )


def _banana(n_rows: int, n_features: int, generator: torch.Generator) -> torch.Tensor:
    noise = _randn(n_rows, 2, generator=generator)
    data = torch.stack(
        [noise[:, 0], 0.5 * noise[:, 0].square() - 0.5 + 0.4 * noise[:, 1]], dim=1
    )
    return data[:, :n_features]


def _train_ml(
    flow: Flow, data: torch.Tensor, n_steps: int = 30, lr: float = 0.05
) -> Flow:
    optimizer = torch.optim.Adam(flow.parameters(), lr=lr)
    for _ in range(n_steps):
        optimizer.zero_grad()
        ml(flow, data).mean().backward()
        optimizer.step()
    return flow


def _moved(flow: Flow, before: dict[str, torch.Tensor]) -> float:
    return max(
        float((value - before[name]).abs().max())
        for name, value in flow.state_dict().items()
    )


@pytest.mark.parametrize("trained", [False, True], ids=["init", "trained"])
def test_log_prob_integrates_to_one_in_1d(trained):
    generator = _gen(3)
    flow = _perturb(
        fc(1, n_layers=3, init="orthogonal", generator=generator).double(),
        generator,
        0.3,
    )
    if trained:
        before = {k: v.clone() for k, v in flow.state_dict().items()}
        data = torch.cat(
            [
                _randn(128, 1, generator=generator) - 2.0,
                0.5 * _randn(128, 1, generator=generator) + 1.0,
            ]
        )
        _train_ml(flow, data)
        assert _moved(flow, before) > 0.1, (
            "training should move the parameters away from the init"
        )
    grid = torch.linspace(-150.0, 150.0, 300_001, dtype=DTYPE).unsqueeze(1)
    with torch.no_grad():
        density = flow.log_prob(grid).exp()
    assert float(density[[0, -1]].max()) < 1e-12, "the grid must hold all the mass"
    mass = float(torch.trapezoid(density, grid.squeeze(1)))
    assert abs(mass - 1.0) < 1e-4, f"1-D mass {mass} differs from 1 by more than 1e-4"


@pytest.mark.parametrize("trained", [False, True], ids=["init", "trained"])
@pytest.mark.parametrize("kind", ["fc", "coupling"])
def test_log_prob_integrates_to_one_in_2d(kind, trained):
    generator = _gen(4)
    if kind == "fc":
        flow = fc(2, n_layers=2, init="orthogonal", generator=generator).double()
    else:
        flow = coupling(
            2,
            n_layers=2,
            hidden_layer_sizes=(16,),
            activation="tanh",
            generator=generator,
        ).double()
    _perturb(flow, generator, 0.2)
    if trained:
        before = {k: v.clone() for k, v in flow.state_dict().items()}
        _train_ml(flow, _banana(256, 2, generator))
        assert _moved(flow, before) > 0.1, (
            "training should move the parameters away from the init"
        )
    half_width, n_points = 25.0, 801
    axis = torch.linspace(-half_width, half_width, n_points, dtype=DTYPE)
    grid = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        density = flow.log_prob(grid).exp().reshape(n_points, n_points)
    edge = torch.cat([density[0], density[-1], density[:, 0], density[:, -1]])
    assert float(edge.max()) < 1e-10, "the grid must hold all the mass"
    mass = float(torch.trapezoid(torch.trapezoid(density, axis, dim=1), axis))
    assert abs(mass - 1.0) < 2e-3, f"2-D mass {mass} differs from 1 by more than 2e-3"


# --------------------------------------------------------------------------- caches


OPTIMIZERS = {
    "adam": lambda p: torch.optim.Adam(p, lr=0.05),
    "adam-foreach": lambda p: torch.optim.Adam(p, lr=0.05, foreach=True),
    "adam-fused": lambda p: torch.optim.Adam(p, lr=0.05, fused=True),
    "sgd": lambda p: torch.optim.SGD(p, lr=0.05),
}


@pytest.mark.parametrize("optimizer_name", sorted(OPTIMIZERS))
def test_dense_caches_follow_optimizer_steps_and_load_state_dict(optimizer_name):
    generator = _gen(8)
    flow = _perturb(
        fc(3, n_layers=2, init="orthogonal", generator=generator).double(),
        generator,
        0.3,
    )
    dense = flow.layers[0]
    x = _randn(32, 3, generator=generator)
    initial_state = {k: v.clone() for k, v in flow.state_dict().items()}

    with torch.no_grad():
        log_det_before = dense.log_abs_det()
        inverse_before = dense.inverse_weight()
        log_normalizer_before = flow.log_normalizer()
        assert dense.log_abs_det() is log_det_before, "the no-grad log-det is cached"
        assert dense.inverse_weight() is inverse_before, "the inverse weight is cached"

    optimizer = OPTIMIZERS[optimizer_name](flow.parameters())
    ml(flow, x).mean().backward()
    optimizer.step()

    weight = dense.weight.detach()
    with torch.no_grad():
        log_det_after = dense.log_abs_det()
        inverse_after = dense.inverse_weight()
        log_normalizer_after = flow.log_normalizer()
    assert not torch.equal(log_det_after, log_det_before), (
        "log-det cache not invalidated by the step"
    )
    torch.testing.assert_close(log_det_after, torch.linalg.slogdet(weight)[1])
    torch.testing.assert_close(inverse_after, torch.linalg.inv(weight))
    assert not torch.equal(log_normalizer_after, log_normalizer_before)
    # Independent reference: log|det| of the whole flow's autograd Jacobian at a row,
    # minus the input-dependent layers' part, is -log Z of the stepped weights.
    row = x[:1]
    with torch.no_grad():
        _, nonlinear_log_det = flow(row)
    full_log_det = torch.linalg.slogdet(_jacobian(flow, row[0]))[1]
    expected_log_normalizer = nonlinear_log_det[0] - full_log_det
    torch.testing.assert_close(
        log_normalizer_after, expected_log_normalizer, rtol=0.0, atol=1e-10
    )
    torch.testing.assert_close(  # the graph-keeping path agrees with the cache
        flow.log_normalizer().detach(), expected_log_normalizer, rtol=0.0, atol=1e-10
    )
    with torch.no_grad():
        torch.testing.assert_close(flow.inverse(flow(x)[0]), x, rtol=0.0, atol=1e-9)

    flow.load_state_dict(initial_state)
    with torch.no_grad():
        torch.testing.assert_close(
            dense.log_abs_det(), log_det_before, rtol=0.0, atol=1e-14
        )
        torch.testing.assert_close(
            dense.inverse_weight(), inverse_before, rtol=0.0, atol=1e-14
        )
        torch.testing.assert_close(
            flow.log_normalizer(), log_normalizer_before, rtol=0.0, atol=1e-14
        )


def test_dense_cache_follows_writes_through_data():
    layer = Dense(3, init="orthogonal", generator=_gen(9)).double()
    with torch.no_grad():
        before = layer.log_abs_det()
    layer.weight.data.mul_(2.0)  # does not bump the parameter's version counter
    with torch.no_grad():
        after = layer.log_abs_det()
    torch.testing.assert_close(after, before + 3.0 * math.log(2.0))
    torch.testing.assert_close(
        layer.inverse_weight(), torch.linalg.inv(layer.weight.detach())
    )


def test_log_abs_det_keeps_gradient_when_asked():
    layer = _perturb(Dense(3, generator=_gen(1)).double(), _gen(2), 0.3)
    with torch.no_grad():
        layer.log_abs_det()  # fill the cache
    log_abs_det = layer.log_abs_det()
    assert log_abs_det.requires_grad
    (gradient,) = torch.autograd.grad(log_abs_det, layer.weight)
    torch.testing.assert_close(gradient, torch.linalg.inv(layer.weight.detach()).T)


# --------------------------------------------------------------------------- inverses


def _bisection_inverse(alpha: float, residual: bool, y: torch.Tensor) -> torch.Tensor:
    """Root of ``a x + (1 - alpha) log(1 + e^x) = y`` by bisection in float64: a
    reference that shares nothing with the layer's Newton inverse."""
    slope = 1.0 + alpha if residual else alpha

    def value(x):
        return slope * x + (1.0 - alpha) * torch.logaddexp(x, torch.zeros_like(x))

    # f(x) >= x for x >= 0 and f(x) <= alpha x + (1 - alpha) e^x for x < 0.
    low = -(y.abs() / alpha + 10.0)
    high = y.abs() + 10.0
    assert bool((value(low) < y).all() and (value(high) > y).all())
    for _ in range(200):  # the bracket is below float64 resolution long before
        middle = 0.5 * (low + high)
        below = value(middle) < y
        low = torch.where(below, middle, low)
        high = torch.where(below, high, middle)
    return 0.5 * (low + high)


@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float64], ids=["float32", "float64"]
)
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("alpha", [0.01, 0.3, 0.9])
def test_smooth_leaky_relu_inverse_converges_for_extreme_inputs(alpha, residual, dtype):
    layer = SmoothLeakyReLU(alpha, residual=residual)
    values = [-1e4, -3e3, -1e2, -20.0, -3.0, -1e-3, 0.0, 1e-3, 3.0, 20.0, 1e2, 3e3, 1e4]
    y = torch.tensor(values, dtype=dtype)
    for shaped in (y.reshape(1, -1), y.reshape(-1, 1)):
        x = layer.inverse(shaped)
        assert bool(torch.isfinite(x).all())
        rtol = 1e-5 if dtype == torch.float32 else 1e-10
        residual_error = (layer(x)[0] - shaped).abs() / (1.0 + shaped.abs())
        assert float(residual_error.max()) < rtol, f"|f(x) - y| / (1 + |y|) >= {rtol}"
        reference = _bisection_inverse(layer.alpha, residual, shaped.double())
        relative = ((x.double() - reference).abs() / (1.0 + reference.abs())).max()
        assert float(relative) < 10 * rtol, f"|x - bisection| / (1 + |x|) = {relative}"


@pytest.mark.parametrize("parity", [0, 1])
def test_tanh_coupling_moves_far_points_by_a_bounded_shift(parity):
    # With tanh conditioners |y_b - x_b * exp(s)| = |m| <= sum_j |W_ij| + |b_i| for
    # every input, however far: far from the data the coupling is affine with bounded
    # coefficients, so the flow's log-density decays like a Gaussian's. A silu
    # conditioner's shift keeps growing with the input (checked below, so this test
    # would notice the bound holding for the wrong reason).
    generator = torch.Generator().manual_seed(3)
    direction = _randn(1, 3, generator=generator)
    bounds = {}
    shifts = {}
    for activation in ("tanh", "silu"):
        layer = _affine_coupling(parity, activation)(6, generator).requires_grad_(False)
        last = layer.conditioner.linears[-1]
        bound = last.weight.abs().sum(dim=1) + last.bias.abs()
        bounds[activation] = bound.chunk(2)[1]
        shifts[activation] = []
        for distance in (1e1, 1e3, 1e5):
            x = distance * torch.cat([direction, direction], dim=1)
            conditioning, transformed = layer._halves(x)
            y, _ = layer(x)
            _, y_transformed = layer._halves(y)
            raw_log_scale, _ = layer.conditioner(conditioning).chunk(2, dim=1)
            scale = torch.exp(2.0 * torch.tanh(0.5 * raw_log_scale))
            shifts[activation].append((y_transformed - transformed * scale).abs())
    for shift in shifts["tanh"]:
        assert bool((shift <= bounds["tanh"] * (1 + 1e-12)).all())
    assert float(shifts["silu"][-1].max()) > 100 * float(bounds["silu"].max())


# --------------------------------------------------------------------------- randomness


def test_sample_is_reproducible_and_leaves_global_rng_alone():
    flow = _flow("coupling-silu", 4, _gen(2))
    state = torch.get_rng_state()
    first = flow.sample(16, generator=_gen(3))
    second = flow.sample(16, generator=_gen(3))
    other = flow.sample(16, generator=_gen(4))
    assert torch.equal(torch.get_rng_state(), state), "sampling touched the global RNG"
    assert first.shape == (16, 4) and first.dtype == DTYPE and not first.requires_grad
    assert torch.equal(first, second)
    assert not torch.equal(first, other)
    z = torch.randn(16, 4, generator=_gen(3), dtype=DTYPE)
    torch.testing.assert_close(flow(first)[0], z, rtol=0.0, atol=1e-10)


def test_uniform_dequantize(generator):
    columns = torch.tensor([True, False, True, False])
    layer = UniformDequantize(columns)
    x = torch.cat(
        [
            torch.randint(-5, 6, (200, 1), generator=generator),
            torch.zeros(200, 1),
            torch.randint(0, 10, (200, 1), generator=generator),
            torch.zeros(200, 1),
        ],
        dim=1,
    ).to(DTYPE)
    x[:, [1, 3]] = _randn(200, 2, generator=generator)

    state = torch.get_rng_state()
    y, log_abs_det = layer(x, generator=_gen(7))
    assert torch.equal(torch.get_rng_state(), state)
    noise = y - x
    assert torch.equal(noise[:, ~columns], torch.zeros(200, 2, dtype=DTYPE)), (
        "noise outside the flagged columns"
    )
    flagged = noise[:, columns]
    assert bool(((flagged >= 0) & (flagged < 1)).all()), "noise outside [0, 1)"
    assert float(flagged.std()) > 0.2, "the noise should look uniform, not constant"
    assert torch.equal(log_abs_det, torch.zeros(200, dtype=DTYPE))
    assert torch.equal(layer(x, generator=_gen(7))[0], y), "same seed, same noise"
    assert torch.equal(layer.inverse(y), x), "the inverse floors the flagged columns"
    # A value off the integers is scored, and trained, as its nearest integer.
    off = x.clone()
    off[:, columns] += 0.4 * (2 * torch.rand(200, 2, generator=_gen(8)) - 1).to(DTYPE)
    assert torch.equal(layer(off)[0], layer(x)[0])
    assert torch.equal(layer(off, generator=_gen(7))[0], y)
    # Just below a half, too: floor(x + 0.5) rounded 0.49999999999999994 up to 1.
    below_half = x.clone()
    below_half[:, columns] = torch.nextafter(x + 0.5, x)[:, columns]
    assert torch.equal(layer(below_half)[0], layer(x)[0])

    centred, _ = layer(x)
    expected = x.clone()
    expected[:, columns] += 0.5
    assert torch.equal(centred, expected), (
        "without a generator the bin centre (x + 1/2)"
    )
    assert torch.equal(layer.inverse(centred), x)

    chain = Preprocessing(
        [layer, Standardize(torch.zeros(4, dtype=DTYPE), torch.ones(4, dtype=DTYPE))]
    )
    assert torch.equal(chain(x, generator=_gen(7))[0], y), (
        "Preprocessing passes the generator on"
    )


# --------------------------------------------------------------------------- misc


def test_flows_and_objectives_do_not_import_sklearn():
    code = textwrap.dedent(
        """
        import sys
        import skebflow, skebflow.flows, skebflow.objectives, skebflow._training
        loaded = sorted(name for name in sys.modules if name.split(".")[0] == "sklearn")
        print(len(loaded))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert result.stdout.strip() == "0", (
        "importing skebflow.flows / skebflow.objectives loaded sklearn"
    )


@pytest.mark.gpu
def test_flow_on_cuda_matches_cpu():
    flow = _flow("coupling-silu", 4, _gen(1))
    x = _randn(8, 4, generator=_gen(2))
    expected = flow.log_prob(x).detach()
    on_cuda = flow.to("cuda")
    torch.testing.assert_close(on_cuda.log_prob(x.to("cuda")).detach().cpu(), expected)
    samples = on_cuda.sample(8, generator=torch.Generator("cuda").manual_seed(0))
    assert samples.device.type == "cuda" and bool(torch.isfinite(samples).all())


def test_a_cache_filled_under_inference_mode_does_not_break_autograd():
    from skebflow.flows import Dense

    layer = Dense(3, init="orthogonal", generator=torch.Generator().manual_seed(0))
    layer = layer.double()
    with torch.no_grad():
        layer.weight.add_(0.1)
    with torch.inference_mode():
        layer.inverse(torch.zeros(1, 3, dtype=torch.float64))
        layer.log_abs_det()
    z = torch.randn(
        2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )
    z.requires_grad_(True)
    layer.inverse(z).sum().backward()
    assert torch.allclose(z.grad, layer.inverse_weight().sum(dim=0).expand(2, 3))
    assert torch.allclose(layer.log_abs_det(), torch.linalg.slogdet(layer.weight)[1])


def test_smooth_leaky_relu_is_increasing_and_matches_its_slope_past_softplus_threshold():
    # torch's softplus returns x itself above 20: in float64 the map then stepped
    # down at 20 and disagreed with its slope sigmoid(x) up to about 35.
    layer = SmoothLeakyReLU(0.3)
    x = torch.tensor(
        [[19.999, 20.0, 20.0 + 3.6e-15, 25.0, 30.0, 39.0, 45.0]], dtype=torch.float64
    )
    y, _ = layer(x)
    assert bool((y.diff(dim=1) > 0).all())
    x.requires_grad_(True)
    (slope,) = torch.autograd.grad(layer(x)[0].sum(), x)
    expected = layer._slope(torch.sigmoid(x.detach()))
    torch.testing.assert_close(slope, expected, rtol=0.0, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_bin_probit_keeps_values_far_off_the_bin_finite_and_invertible(dtype):
    """A value far off the bin (an untrained model's sample, 1e17) has a tail
    probability that underflows; its quantile, from the log-probability, stays
    finite, decreasing in the distance, and inverts back to the value."""
    step = BinProbit(torch.tensor([True]), torch.tensor([3.0], dtype=dtype))
    # (in float32 exp underflows from about -87: -90 and -200 are past it)
    x = torch.tensor([[-2e17], [-1e6], [-800.0], [-200.0], [-90.0], [10.0], [90.0],
                      [800.0], [1e6], [2.4e17]], dtype=dtype)
    z, log_abs_det = step(x)
    assert torch.isfinite(z).all() and torch.isfinite(log_abs_det).all()
    assert bool((z[1:, 0] > z[:-1, 0]).all())  # increasing
    rtol = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(step.inverse(z), x, rtol=rtol, atol=0.0)


def test_bin_probit_log_det_follows_the_branch_taken_and_stays_exact_far_off():
    """At the bin's lower edge (x = v, in the half-open bin) the log-det is the
    bin's, as autograd's slope says, not a tail's 14.5 nats lower; far off the bin
    it is log r plus the log of Mills' ratio, about -log|z|, without the cancelling
    of two terms of order z^2 that left it 27 nats off at 1e17."""
    step = BinProbit(torch.tensor([True]), torch.tensor([3.0], dtype=torch.float64))
    x = torch.tensor([[-47.0], [2.7], [3.0], [3.0 + 1e-9], [3.7], [3.999], [4.0],
                      [43.0]], dtype=torch.float64, requires_grad=True)
    z, log_abs_det = step(x)
    (slope,) = torch.autograd.grad(z.sum(), x)
    torch.testing.assert_close(log_abs_det, slope.log()[:, 0], rtol=1e-10, atol=1e-12)
    far = torch.tensor([[-2e17], [2.4e17]], dtype=torch.float64)
    z, log_abs_det = step(far)
    torch.testing.assert_close(log_abs_det, -z[:, 0].abs().log(), rtol=0, atol=1e-6)


def test_bin_probit_at_the_lower_edge_is_the_bin_both_ways():
    """x = v maps to Phi^-1(eps / 2), whose log Phi rounds just below eps / 2:
    log_abs_det_at_output took it for the tail (14.5 nats off forward's) and the
    inverse returned a hair below v, which floors to v - 1 (found by a review)."""
    step = BinProbit(torch.tensor([True]), torch.tensor([3.0], dtype=torch.float64))
    x = torch.tensor([[2.5], [3.0], [3.5], [4.0]], dtype=torch.float64)
    z, log_abs_det = step(x)
    torch.testing.assert_close(step.log_abs_det_at_output(z), log_abs_det)
    assert step.inverse(z)[1, 0].item() == 3.0
    torch.testing.assert_close(step.inverse(z), x, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Dense(0),
        lambda: Dense(-1),
        lambda: Dense(2.5),
        lambda: Dense(True),
        lambda: ElementwiseAffine(0),
        lambda: fc(0),
        lambda: LogisticMixtureCoupling(4, n_components=2.5),
    ],
)
def test_layers_refuse_counts_that_are_not_positive_integers(build):
    # Dense(0) and fc(0) built flows of nothing, Dense(2.5) failed inside torch,
    # and n_components=2.5 was truncated to 2.
    with pytest.raises(ValueError, match="integer"):
        build()
