"""Properties of the convolution and squeeze layers and of the ``cnn`` flow:
dense Jacobians, log-determinants and their gradients, inverses, jets, caches,
change of variables, the objectives and the shape checks."""

import math

import pytest
import torch
import torch.nn.functional as F
from _helpers import gen as _gen
from _helpers import perturb as _perturb
from _helpers import randn as _randn

from skebflow.flows import Conv2d, Flow, SmoothLeakyReLU, Squeeze, cnn
from skebflow.flows._conv import (
    _FLIPPED_BACKWARD_MAX_CHANNELS,
    _KernelToJacobian,
    _SameConvolution,
)
from skebflow.objectives import OBJECTIVES, energy_gradient_and_curvature, ml

pytestmark = [
    pytest.mark.usefixtures("single_thread"),
    # torch.func.jvp loads torch's forward-AD decompositions through torch.jit.script.
    pytest.mark.filterwarnings(
        "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
    ),
]

DTYPE = torch.float64

# (channels, height, width, kernel_size): a plain case, a kernel wider than the image,
# an image narrower than the kernel's reach (taps of one diagonal collide, the zero
# padding must keep them apart) and a non-square one.
CONV_SHAPES = [(2, 4, 4, 3), (1, 4, 4, 7), (3, 2, 2, 3), (2, 3, 5, 5)]
CONV_IDS = [f"C{c}-{h}x{w}-k{k}" for c, h, w, k in CONV_SHAPES]


def _conv(shape: tuple[int, int, int, int], seed: int) -> Conv2d:
    channels, height, width, kernel_size = shape
    generator = _gen(seed)
    layer = Conv2d(
        channels,
        height,
        width,
        kernel_size,
        init_noise=0.3,
        generator=generator,
    ).double()
    return _perturb(layer, generator, 0.1)


def _reference_convolution(
    layer: Conv2d, weight: torch.Tensor, x: torch.Tensor
) -> torch.Tensor:
    """The layer's map without its bias, written with F.conv2d directly."""
    images = x.reshape(-1, layer.channels, layer.height, layer.width)
    return F.conv2d(images, weight, padding=layer.kernel_size // 2).reshape(
        x.shape[0], -1
    )


def _jacobian(function, row: torch.Tensor) -> torch.Tensor:
    return torch.autograd.functional.jacobian(
        lambda r: function(r.unsqueeze(0)).squeeze(0), row
    )


def _flow(image_shape, seed: int, **kwargs) -> Flow:
    generator = _gen(seed)
    flow = cnn(image_shape, init_noise=0.05, generator=generator, **kwargs).double()
    with torch.no_grad():  # the kernels already moved; move the biases off zero
        for layer in flow.layers:
            if isinstance(layer, Conv2d):
                layer.bias.add_(0.3 * _randn(layer.channels, generator=generator))
    return flow


# --------------------------------------------------------------------------- Conv2d


@pytest.mark.parametrize("shape", CONV_SHAPES, ids=CONV_IDS)
def test_conv_dense_jacobian_and_log_abs_det_match_autograd(shape):
    layer = _conv(shape, seed=1)
    x1, x2 = 2.0 * _randn(2, layer.n_features, generator=_gen(2))
    jacobian = _jacobian(lambda r: layer(r)[0], x1)
    # The Jacobian is the same at another point: the layer is affine.
    torch.testing.assert_close(
        _jacobian(lambda r: layer(r)[0], x2), jacobian, rtol=0.0, atol=1e-12
    )
    torch.testing.assert_close(
        layer.dense_jacobian().detach(), jacobian, rtol=0.0, atol=1e-12
    )
    expected = torch.linalg.slogdet(jacobian)[1]
    assert layer(x1.unsqueeze(0))[1] is None
    with torch.no_grad():
        cached = layer.log_abs_det()
    torch.testing.assert_close(cached, expected, rtol=0.0, atol=1e-10)
    graph = layer.log_abs_det()
    assert graph.requires_grad
    torch.testing.assert_close(graph.detach(), expected, rtol=0.0, atol=1e-10)


@pytest.mark.parametrize("shape", CONV_SHAPES, ids=CONV_IDS)
def test_conv_log_abs_det_gradient_matches_autodiff_through_conv2d(shape):
    layer = _conv(shape, seed=3)
    row = torch.zeros(layer.n_features, dtype=DTYPE)

    def reference(weight: torch.Tensor) -> torch.Tensor:
        jacobian = torch.func.jacrev(
            lambda r: _reference_convolution(layer, weight, r.unsqueeze(0))[0]
        )(row)
        return torch.linalg.slogdet(jacobian)[1]

    expected = torch.func.grad(reference)(layer.weight.detach())
    (gradient,) = torch.autograd.grad(layer.log_abs_det(), layer.weight)
    torch.testing.assert_close(gradient, expected, rtol=1e-10, atol=1e-10)
    # The bias is not part of the Jacobian: it gets no log-det gradient.
    (bias_gradient,) = torch.autograd.grad(
        layer.log_abs_det(), [layer.bias], allow_unused=True, materialize_grads=True
    )
    assert torch.equal(bias_gradient, torch.zeros_like(bias_gradient))


def test_kernel_to_jacobian_passes_gradcheck():
    layer = _conv((2, 3, 3, 3), seed=4)
    weight = layer.weight.detach().clone().requires_grad_(True)
    plan = layer._plan(weight.device)
    assert torch.autograd.gradcheck(
        lambda w: _KernelToJacobian.apply(w, plan, 9), (weight,), fast_mode=True
    )


def test_small_channel_convolution_has_exact_first_and_second_derivatives():
    # Layers with few channels take their input gradient through a custom function
    # (the forward kernel with the flipped kernel); check it against finite
    # differences in reverse and forward mode, to second order.
    generator = _gen(13)
    x = _randn(2, 2, 4, 5, generator=generator).requires_grad_(True)
    weight = _randn(2, 2, 3, 3, generator=generator).requires_grad_(True)

    def convolve(a, w):
        return _SameConvolution.apply(a, w, 1)

    torch.testing.assert_close(convolve(x, weight), F.conv2d(x, weight, padding=1))
    assert torch.autograd.gradcheck(convolve, (x, weight), check_forward_ad=True)
    assert torch.autograd.gradgradcheck(convolve, (x, weight))
    layer = Conv2d(2, 4, 5, kernel_size=3).double()
    assert layer.channels <= _FLIPPED_BACKWARD_MAX_CHANNELS, "uses the custom path"


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("shape", CONV_SHAPES, ids=CONV_IDS)
def test_conv_inverse_round_trip(shape, seed):
    layer = _conv(shape, seed)
    generator = _gen(10 + seed)
    x = 1.5 * _randn(5, layer.n_features, generator=generator)
    torch.testing.assert_close(layer.inverse(layer(x)[0]), x, rtol=0.0, atol=1e-10)
    y = 2.0 * _randn(4, layer.n_features, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(layer(layer.inverse(y))[0], y, rtol=0.0, atol=1e-10)


def _second_directional(function, x, t):
    def first(point):
        return torch.func.jvp(function, (point,), (t,))[1]

    return first(x), torch.func.jvp(first, (x,), (t,))[1]


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda: _conv((2, 4, 4, 3), 5), id="Conv2d"),
        pytest.param(lambda: _conv((1, 4, 4, 7), 6), id="Conv2d-k7"),
        pytest.param(lambda: Squeeze(3, 4, 2).double(), id="Squeeze"),
    ],
)
def test_linear_layer_jets_match_forward_mode_autodiff(build):
    layer = build()
    generator = _gen(7)
    x = _randn(4, layer.n_features, generator=generator)
    t = _randn(4, layer.n_features, generator=generator)
    jet = layer.jet(x, t)
    torch.testing.assert_close(jet.y, layer(x)[0], rtol=0.0, atol=0.0)
    tangent, curvature = _second_directional(lambda a: layer(a)[0], x, t)
    torch.testing.assert_close(jet.tangent, tangent, rtol=1e-12, atol=1e-12)
    assert jet.curvature is None
    assert jet.log_abs_det is None and jet.log_abs_det_curvature is None
    torch.testing.assert_close(curvature, torch.zeros_like(curvature))
    assert layer.constant_jacobian is True


def test_conv_starts_at_minus_identity_and_init_noise_moves_it():
    plain = Conv2d(2, 4, 4, kernel_size=5, generator=_gen(0)).double()
    identity = torch.eye(32, dtype=DTYPE)
    torch.testing.assert_close(plain.dense_jacobian().detach(), -identity)
    bias_std = 0.01 * math.sqrt(1.0 / (2 * 25))
    assert 0 < float(plain.bias.detach().abs().max()) < 5 * bias_std
    noisy = Conv2d(2, 4, 4, kernel_size=5, init_noise=0.05, generator=_gen(0))
    moved = (noisy.weight.detach().double() - plain.weight.detach()).std()
    assert 0.03 < float(moved) < 0.07


def test_conv_rejects_bad_arguments_and_widths():
    with pytest.raises(ValueError, match="must be odd"):
        Conv2d(1, 4, 4, kernel_size=4)
    with pytest.raises(ValueError, match="positive integer"):
        Conv2d(0, 4, 4)
    with pytest.raises(ValueError, match="non-negative"):
        Conv2d(1, 4, 4, init_noise=-0.1)
    layer = Conv2d(2, 4, 4, kernel_size=3)
    with pytest.raises(ValueError, match="rows of 32 = 2 x 4 x 4 features, got 16"):
        layer(torch.zeros(3, 16))


# --------------------------------------------------------------------------- caches


def test_conv_cache_follows_optimizer_steps_writes_and_state_dicts():
    layer = _conv((2, 4, 4, 3), seed=8)
    initial = {k: v.clone() for k, v in layer.state_dict().items()}
    x = _randn(6, 32, generator=_gen(9))
    with torch.no_grad():
        before = layer.log_abs_det()
        assert layer.log_abs_det() is before, "the no-grad log-det is cached"
        lu_before = layer._lu_factor()[0]
        assert layer._lu_factor()[0] is lu_before, "the LU factorization is cached"

    optimizer = torch.optim.Adam(layer.parameters(), lr=0.05)
    (layer(x)[0].square().mean() - layer.log_abs_det()).backward()
    optimizer.step()

    def reference() -> torch.Tensor:
        jacobian = _jacobian(lambda r: layer(r)[0], x[0])
        return torch.linalg.slogdet(jacobian)[1]

    with torch.no_grad():
        after = layer.log_abs_det()
    assert not torch.equal(after, before), "the optimizer step must invalidate it"
    torch.testing.assert_close(after, reference(), rtol=0.0, atol=1e-10)
    torch.testing.assert_close(layer.inverse(layer(x)[0]), x, rtol=0.0, atol=1e-10)

    layer.weight.data.mul_(2.0)  # does not bump the version counter
    with torch.no_grad():
        doubled = layer.log_abs_det()
    torch.testing.assert_close(doubled, after + 32 * math.log(2.0))
    torch.testing.assert_close(layer.inverse(layer(x)[0]), x, rtol=0.0, atol=1e-10)

    layer.load_state_dict(initial)
    with torch.no_grad():
        torch.testing.assert_close(layer.log_abs_det(), before, rtol=0.0, atol=1e-14)


# --------------------------------------------------------------------------- Squeeze


def test_squeeze_is_the_space_to_depth_permutation():
    layer = Squeeze(2, 4, 6).double()
    c, h, w = 2, 4, 6
    x = torch.arange(c * h * w, dtype=DTYPE).unsqueeze(0)
    y, log_abs_det = layer(x)
    assert log_abs_det is None and layer.output_shape == (8, 2, 3)
    images, squeezed = x.reshape(c, h, w), y.reshape(8, 2, 3)
    for channel in range(c):
        for u in range(2):
            for v in range(2):
                torch.testing.assert_close(
                    squeezed[4 * channel + 2 * u + v], images[channel, u::2, v::2]
                )
    jacobian = _jacobian(lambda r: layer(r)[0], x[0])
    assert set(jacobian.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(jacobian.sum(0), torch.ones(48, dtype=DTYPE))
    assert torch.equal(jacobian.sum(1), torch.ones(48, dtype=DTYPE))
    z = _randn(3, 48, generator=_gen(1))
    assert torch.equal(layer.inverse(layer(z)[0]), z)
    assert torch.equal(layer(layer.inverse(z))[0], z)
    assert layer.log_abs_det().dtype == DTYPE and float(layer.log_abs_det()) == 0.0
    with pytest.raises(ValueError, match="even height and width"):
        Squeeze(1, 4, 3)


# --------------------------------------------------------------------------- the cnn flow


FLOW_SHAPES = [
    pytest.param((2, 4, 4), {"kernel_size": 3}, id="C2-4x4-k3"),
    pytest.param((1, 4, 4), {}, id="C1-4x4-k7"),
    pytest.param((1, 2, 6), {"n_blocks": 2, "kernel_size": 3}, id="C1-2x6-2blocks"),
]


def test_cnn_has_the_papers_layers_shapes_and_parameter_counts():
    mnist = cnn((1, 28, 28))
    kinds = [type(layer).__name__ for layer in mnist.layers]
    assert kinds == (
        ["Conv2d", "SmoothLeakyReLU"] * 2
        + ["Squeeze"]
        + ["Conv2d", "SmoothLeakyReLU"] * 2
        + ["Squeeze", "Conv2d", "SmoothLeakyReLU", "Conv2d"]
    )
    shapes = [
        (layer.channels, layer.height, layer.width)
        for layer in mnist.layers
        if isinstance(layer, Conv2d)
    ]
    assert shapes == [(1, 28, 28)] * 2 + [(4, 14, 14)] * 2 + [(16, 7, 7)] * 2
    assert all(layer.kernel_size == 7 for layer in mnist.layers[::2][:2])
    slrs = [layer for layer in mnist.layers if isinstance(layer, SmoothLeakyReLU)]
    assert all(layer.residual and layer.alpha == 0.3 for layer in slrs)
    # METHOD.md section 3.3: 26 796 (MNIST) and 240 912 (CIFAR-10) parameters.
    assert sum(p.numel() for p in mnist.parameters()) == 26_796
    cifar = cnn((3, 32, 32), n_features=3072)
    assert sum(p.numel() for p in cifar.parameters()) == 240_912
    assert cifar.n_features == 3072
    assert (cifar.layers[-1].channels, cifar.layers[-1].height) == (48, 8)
    # The paper's flow starts at the identity, up to the tiny biases.
    with torch.no_grad():
        assert float(mnist.log_normalizer()) == 0.0


def test_cnn_rejects_bad_shapes_with_clear_errors():
    with pytest.raises(ValueError, match="divisible by 4; got 30 x 30"):
        cnn((3, 30, 30))
    with pytest.raises(ValueError, match="divisible by 8; got 16 x 12"):
        cnn((1, 16, 12), n_blocks=4)
    cnn((1, 6, 10), n_blocks=2)  # 2 squeezes need 4 | H, W; one needs 2 | H, W
    with pytest.raises(ValueError, match="holds 3072 pixel values.*784 features"):
        cnn((3, 32, 32), n_features=784)
    for bad in [(0, 4, 4), (1, 4, 4, 1), (4,), 5, (2.0, 4, 4), (True, 4, 4)]:
        with pytest.raises(ValueError, match="must be \\(channels, height, width\\)"):
            cnn(bad)
    with pytest.raises(ValueError, match="n_blocks=0 must be a positive integer"):
        cnn((1, 4, 4), n_blocks=0)
    with pytest.raises(ValueError, match="must be odd"):
        cnn((1, 4, 4), kernel_size=2)
    assert cnn((8, 8), n_blocks=2).n_features == 64  # (H, W) means one channel


@pytest.mark.parametrize(("image_shape", "kwargs"), FLOW_SHAPES)
def test_cnn_inverse_round_trip(image_shape, kwargs):
    flow = _flow(image_shape, 1, **kwargs)
    n_features = math.prod(image_shape)
    x = 1.5 * _randn(6, n_features, generator=_gen(2))
    with torch.no_grad():
        z, _ = flow(x)
        torch.testing.assert_close(flow.inverse(z), x, rtol=0.0, atol=1e-9)
    samples = flow.sample(5, generator=_gen(3))
    assert samples.shape == (5, n_features) and samples.dtype == DTYPE
    torch.testing.assert_close(
        flow(samples)[0],
        torch.randn(5, n_features, generator=_gen(3), dtype=DTYPE),
        rtol=1e-8,
        atol=1e-9,
    )


@pytest.mark.parametrize(("image_shape", "kwargs"), FLOW_SHAPES)
def test_cnn_log_prob_is_the_change_of_variables_with_the_dense_jacobian(
    image_shape, kwargs
):
    flow = _flow(image_shape, 4, **kwargs)
    n_features = math.prod(image_shape)
    x = _randn(4, n_features, generator=_gen(5))
    with torch.no_grad():
        log_prob = flow.log_prob(x)
        z, _ = flow(x)
    log_det = torch.stack(
        [torch.linalg.slogdet(_jacobian(lambda r: flow(r)[0], row))[1] for row in x]
    )
    base = -0.5 * z.square().sum(1) - 0.5 * n_features * math.log(2.0 * math.pi)
    torch.testing.assert_close(log_prob, base + log_det, rtol=0.0, atol=1e-10)
    # The log-normalizer is minus the convolutions' log-dets (squeezes add zero).
    with torch.no_grad():
        conv_log_dets = sum(
            torch.linalg.slogdet(layer.dense_jacobian())[1]
            for layer in flow.layers
            if isinstance(layer, Conv2d)
        )
        torch.testing.assert_close(
            flow.log_normalizer(), -conv_log_dets, rtol=0.0, atol=1e-10
        )


@pytest.mark.parametrize(("image_shape", "kwargs"), FLOW_SHAPES[:2])
def test_cnn_energy_gradient_and_curvature_match_double_backward(image_shape, kwargs):
    flow = _flow(image_shape, 6, **kwargs)
    n_features = math.prod(image_shape)
    generator = _gen(7)
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
    parameters = list(flow.parameters())
    ours = torch.autograd.grad(
        (0.5 * gradient.square().sum(1) - curvature).sum(), parameters
    )
    theirs = torch.autograd.grad(
        (0.5 * reference_gradient.square().sum(1) - reference_curvature).sum(),
        parameters,
    )
    for mine, reference in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-8, atol=1e-9)


def test_ml_gradient_matches_the_change_of_variables_through_autodiff():
    flow = _flow((2, 4, 4), 8, kernel_size=3)
    x = _randn(3, 32, generator=_gen(9))
    parameters = dict(flow.named_parameters())

    def negative_log_likelihood(params: dict[str, torch.Tensor]) -> torch.Tensor:
        def forward(row: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(flow, params, (row.unsqueeze(0),))[0][0]

        total = 0.0
        for row in x:
            z = forward(row)
            log_det = torch.linalg.slogdet(torch.func.jacrev(forward)(row))[1]
            log_prob = -0.5 * z.square().sum() - 16 * math.log(2 * math.pi) + log_det
            total = total - log_prob / 32
        return total / x.shape[0]

    expected = torch.func.grad(negative_log_likelihood)(
        {name: value.detach() for name, value in parameters.items()}
    )
    loss = ml(flow, x).mean()
    torch.testing.assert_close(
        loss.detach(),
        negative_log_likelihood(
            {name: value.detach() for name, value in parameters.items()}
        ),
        rtol=1e-12,
        atol=0.0,
    )
    gradients = torch.autograd.grad(loss, list(parameters.values()))
    for (name, _), gradient in zip(parameters.items(), gradients, strict=True):
        torch.testing.assert_close(
            gradient, expected[name], rtol=1e-9, atol=1e-11, msg=name
        )


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_objectives_run_on_the_cnn_with_finite_gradients(name):
    flow = _flow((1, 4, 4), 10).float()
    x = torch.randn(8, 16, generator=_gen(11))
    loss = OBJECTIVES[name](flow, x, generator=_gen(12))
    assert loss.shape == (8,) and bool(torch.isfinite(loss).all())
    parameters = list(flow.parameters())
    gradients = torch.autograd.grad(loss.mean(), parameters)
    assert all(bool(torch.isfinite(g).all()) for g in gradients)
    kernels = [g for p, g in zip(parameters, gradients, strict=True) if p.dim() == 4]
    assert all(float(g.abs().max()) > 0 for g in kernels), "every kernel learns"


def test_cnn_randomness_comes_from_the_generator_only():
    state = torch.get_rng_state()
    first = cnn((2, 4, 4), init_noise=0.1, generator=_gen(0))
    second = cnn((2, 4, 4), init_noise=0.1, generator=_gen(0))
    other = cnn((2, 4, 4), init_noise=0.1, generator=_gen(1))
    assert torch.equal(torch.get_rng_state(), state)
    for a, b, c in zip(
        first.parameters(), second.parameters(), other.parameters(), strict=True
    ):
        assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.gpu
def test_cnn_on_cuda_matches_cpu():
    flow = _flow((2, 8, 8), 1)
    x = _randn(4, 128, generator=_gen(2))
    with torch.no_grad():
        expected = flow.log_prob(x)
        on_cuda = flow.to("cuda")
        torch.testing.assert_close(on_cuda.log_prob(x.cuda()).cpu(), expected)
        z = on_cuda(x.cuda())[0]
        torch.testing.assert_close(on_cuda.inverse(z).cpu(), x, rtol=0.0, atol=1e-9)
    loss = ml(on_cuda, x.cuda()).mean()
    loss.backward()
    assert all(bool(torch.isfinite(p.grad).all()) for p in on_cuda.parameters())


def test_squeeze_refuses_rows_of_another_width_clearly():
    """As Conv2d does: a ValueError naming C x H x W, not reshape's RuntimeError."""
    squeeze = Squeeze(1, 4, 4)
    for call in (lambda x: squeeze(x), squeeze.inverse):
        with pytest.raises(ValueError, match="expects rows of 16 = 1 x 4 x 4"):
            call(torch.zeros(2, 15))
