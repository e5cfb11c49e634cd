"""The bracketed Newton solver behind the numerical inverses, and the smooth leaky
ReLU's inverse that uses it."""

import warnings

import pytest
import torch

from skebflow.flows import (
    InverseNotConvergedWarning,
    SmoothLeakyReLU,
    solve_increasing,
)

pytestmark = pytest.mark.usefixtures("single_thread")

DTYPES = pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float64], ids=["float32", "float64"]
)


def _cubic(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An increasing function with a flat spot at 0 (slope 1e-3 there)."""
    return x.pow(3) + 1e-3 * x, 3.0 * x.square() + 1e-3


def _logistic_mixture(
    x: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """logit of a two-component logistic mixture with a wide gap between its modes."""
    means = torch.tensor([-3.0, 4.0], dtype=x.dtype)
    scales = torch.tensor([0.2, 0.5], dtype=x.dtype)
    z = (x.unsqueeze(-1) - means) / scales
    log_weight = torch.log(torch.tensor([0.3, 0.7], dtype=x.dtype))
    log_cdf = torch.logsumexp(log_weight + torch.nn.functional.logsigmoid(z), -1)
    log_survival = torch.logsumexp(log_weight + torch.nn.functional.logsigmoid(-z), -1)
    density = (log_weight.exp() * torch.sigmoid(z) * torch.sigmoid(-z) / scales).sum(-1)
    value = log_cdf - log_survival
    return value, density / (log_cdf.exp() * log_survival.exp())


def _bisection(function, target, lower, upper, n_steps=200):
    lower = lower.expand_as(target).clone()
    upper = upper.expand_as(target).clone()
    for _ in range(n_steps):
        middle = 0.5 * (lower + upper)
        above = function(middle)[0] > target
        upper = torch.where(above, middle, upper)
        lower = torch.where(above, lower, middle)
    return 0.5 * (lower + upper)


@pytest.mark.parametrize(
    "function", [_cubic, _logistic_mixture], ids=["cubic", "mixture"]
)
def test_solver_matches_bisection(function):
    x_true = torch.linspace(-6.0, 7.0, 53, dtype=torch.float64)
    target = function(x_true)[0]
    lower = torch.full_like(target, -50.0)
    upper = torch.full_like(target, 50.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InverseNotConvergedWarning)
        x = solve_increasing(function, target, lower, upper, tol=1e-12)
    reference = _bisection(function, target, lower, upper)
    value, slope = function(x)
    residual = (value - target).abs()
    # The solver's criterion: a small residual, or a Newton step below the tolerance.
    small_residual = residual <= 1e-12 * (1.0 + target.abs())
    small_step = residual <= 1e-12 * (1.0 + x.abs()) * slope
    assert bool((small_residual | small_step).all())
    # Where the function is flat the root is ill-conditioned: compare x through the
    # slope, |x - x_ref| <~ residual tolerance / f'(x).
    slope = function(reference)[1]
    allowed = 1e-12 * (1.0 + target.abs()) / slope + 1e-12 * (1.0 + x.abs())
    assert bool(((x - reference).abs() <= 2.0 * allowed).all())


@DTYPES
def test_solver_handles_a_bad_start_and_a_wide_bracket(dtype):
    target = torch.tensor([-1e3, -1.0, 0.0, 2e-3, 1.0, 1e3], dtype=dtype)
    lower = torch.full_like(target, -1e6)
    upper = torch.full_like(target, 1e6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InverseNotConvergedWarning)
        x = solve_increasing(_cubic, target, lower, upper, initial=upper, tol=0.0)
    tol = 4.0 * torch.finfo(dtype).eps
    value, slope = _cubic(x)
    residual = (value - target).abs()
    converged = (residual <= tol * (1 + target.abs())) | (
        residual <= tol * (1 + x.abs()) * slope
    )
    assert bool(converged.all())


@DTYPES
def test_a_bracket_many_orders_of_magnitude_wide_is_bisected_in_few_steps(dtype):
    """Halving [-3, 1e100] takes some 330 steps to reach roots near 1: the
    default budget of 100 ran out (found by a review); bisected in asinh units,
    it comes down in about ten."""

    def logarithmic(x):  # flat far out: Newton leaves the bracket there
        return torch.sign(x) * torch.log1p(x.abs()), 1.0 / (1.0 + x.abs())

    big = 1e100 if dtype == torch.float64 else 1e30
    target = torch.tensor([-1.0, 0.5, 2.0, 10.0], dtype=dtype)
    lower = torch.full_like(target, -3.0)
    upper = torch.full_like(target, big)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InverseNotConvergedWarning)
        x = solve_increasing(logarithmic, target, lower, upper, initial=upper)
    value, _ = logarithmic(x)
    torch.testing.assert_close(value, target)


def test_a_wide_bracket_near_the_largest_float_keeps_its_midpoint_inside():
    """torch's vectorized sinh overflows early (from 16 float64 values): the
    asinh midpoint of a bracket near 1e308 was inf, and the solver ended at inf
    (found by a review)."""
    from skebflow.flows._solve import _midpoint

    lower = torch.full((16,), 1e307, dtype=torch.float64)
    upper = torch.full((16,), 1.7e308, dtype=torch.float64)
    middle = _midpoint(lower, upper)
    assert bool(((middle > lower) & (middle < upper)).all())

    def steep(x):  # Newton leaves the bracket: bisection decides
        return torch.tanh((x - 1.2e308) / 1e305), 1e-305 / torch.cosh(
            (x - 1.2e308) / 1e305
        ).square()

    target = torch.zeros(16, dtype=torch.float64)
    x = solve_increasing(
        steep,
        target,
        torch.zeros_like(target),
        upper,
        initial=torch.full_like(target, 5.5e307),
        max_steps=200,
    )
    assert bool(torch.isfinite(x).all())


def test_forced_non_convergence_warns_with_count_and_residual():
    target = torch.tensor([0.5, 2.0, 5.0, 0.0], dtype=torch.float64)
    lower = torch.zeros_like(target) - 1.0
    upper = torch.full_like(target, 2.0)
    with pytest.warns(InverseNotConvergedWarning) as record:
        solve_increasing(
            _cubic, target, lower, upper, initial=upper, tol=1e-300, max_steps=1
        )
    message = str(record[0].message)
    assert "entries did not reach the tolerance" in message
    assert "of 4 entries" in message and "largest residual" in message
    assert issubclass(InverseNotConvergedWarning, UserWarning)
    assert not issubclass(InverseNotConvergedWarning, RuntimeWarning)


def test_smooth_leaky_relu_reports_non_convergence():
    layer = SmoothLeakyReLU(0.1, tol=0.0, max_newton_steps=1)
    y = torch.tensor([[-50.0, 3.0, 40.0]], dtype=torch.float64)
    with pytest.warns(InverseNotConvergedWarning, match="SmoothLeakyReLU.inverse"):
        layer.inverse(y)


def test_convergence_is_checked_every_few_steps_only():
    calls = []

    def counted(x):
        calls.append(1)
        return _cubic(x)

    target = torch.tensor([0.3, 1.0, 8.0], dtype=torch.float64)
    bounds = torch.full_like(target, -3.0), torch.full_like(target, 3.0)
    results, n_steps = {}, {}
    for check_every in (1, 8, 1000):
        calls.clear()
        with torch.no_grad():
            results[check_every] = solve_increasing(
                counted, target, *bounds, check_every=check_every, max_steps=40
            )
        n_steps[check_every] = len(calls) - 1  # one call for the initial point
    assert n_steps[1] < 8, "converges in a few steps"
    assert n_steps[8] == 8, "stops at the first check after converging"
    assert n_steps[1000] == 40, "no check before the budget is spent"
    # Converged entries are frozen: the answer does not depend on the cadence.
    assert torch.equal(results[1], results[8])
    assert torch.equal(results[1], results[1000])


def test_non_finite_targets_pass_through():
    layer = SmoothLeakyReLU(0.3)
    y = torch.tensor([[float("inf"), float("-inf"), float("nan"), 1.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error", InverseNotConvergedWarning)
        x = layer.inverse(y)
    assert x[0, 0] == float("inf") and x[0, 1] == float("-inf")
    assert bool(torch.isnan(x[0, 2])) and bool(torch.isfinite(x[0, 3]))


def test_gradient_of_the_inverse_is_the_implicit_one():
    layer = SmoothLeakyReLU(0.2, residual=True)
    y = torch.tensor([[-30.0, -1.0, 0.5, 12.0]], dtype=torch.float64)
    y.requires_grad_(True)
    assert torch.autograd.gradcheck(layer.inverse, (y,))
    x = layer.inverse(y)
    (gradient,) = torch.autograd.grad(x.sum(), y)
    slope = layer._slope(torch.sigmoid(x.detach()))
    torch.testing.assert_close(gradient, 1.0 / slope)


def test_invalid_arguments():
    target = torch.zeros(2)
    with pytest.raises(ValueError, match="max_steps"):
        solve_increasing(_cubic, target, target - 1, target + 1, max_steps=0)
    with pytest.raises(ValueError, match="check_every"):
        solve_increasing(_cubic, target, target - 1, target + 1, check_every=0)


@DTYPES
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("alpha", [0.01, 0.5, 0.99])
def test_smooth_leaky_relu_round_trips_at_extreme_values(alpha, residual, dtype):
    layer = SmoothLeakyReLU(alpha, residual=residual)
    values = [-1e6, -1e4, -300.0, -30.0, -1.0, -1e-6, 0.0, 1e-6, 1.0, 30.0, 1e4, 1e6]
    rtol = 1e-5 if dtype == torch.float32 else 1e-10
    points = torch.tensor(values, dtype=dtype).reshape(2, -1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InverseNotConvergedWarning)
        x = layer.inverse(points)
        y, _ = layer(points)
        back = layer.inverse(y)
    forward_error = (layer(x)[0] - points).abs() / (1.0 + points.abs())
    assert float(forward_error.max()) < rtol, "forward(inverse(y)) != y"
    # f' >= alpha, so an error of rtol in y is at most rtol / alpha in x.
    backward_error = (back - points).abs() / (1.0 + points.abs())
    assert float(backward_error.max()) < rtol / alpha, "inverse(forward(x)) != x"


def test_smooth_leaky_relu_inverse_is_quick():
    calls = []
    layer = SmoothLeakyReLU(0.3)
    original = layer._value_and_slope

    def counted(x):
        calls.append(1)
        return original(x)

    layer._value_and_slope = counted
    y = torch.linspace(-1e3, 1e3, 1001, dtype=torch.float64).reshape(1, -1)
    with torch.no_grad():
        layer.inverse(y)
    assert len(calls) - 1 <= 16, "Newton from the convex side needs few steps"


def test_huge_brackets_do_not_overflow_to_infinity():
    # The midpoint of two ends near the float32 maximum overflows as (a + b) / 2;
    # an infinite iterate once counted as converged, silently.
    identity = lambda x: (x, torch.ones_like(x))  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("error", InverseNotConvergedWarning)
        x = solve_increasing(
            identity,
            torch.tensor([-2e38]),
            torch.tensor([-3.3e38]),
            torch.tensor([-1.5e38]),
        )
        assert float(x) == pytest.approx(-2e38, rel=1e-6)
        y = SmoothLeakyReLU(0.3).inverse(torch.tensor([[-1e38]]))
    assert bool(torch.isfinite(y).all())


def test_a_bracket_without_the_root_is_reported():
    identity = lambda x: (x, torch.ones_like(x))  # noqa: E731
    y = torch.tensor([5.0, 0.5, -3.0], dtype=torch.float64)
    with pytest.warns(InverseNotConvergedWarning, match="does not hold the root of 2"):
        x = solve_increasing(identity, y, torch.zeros_like(y), torch.ones_like(y))
    assert x.tolist() == pytest.approx([1.0, 0.5, 0.0], abs=1e-9)


def test_non_finite_targets_are_the_same_with_and_without_autograd():
    cube = lambda x: (x.pow(3), 3 * x.square())  # noqa: E731
    y = torch.tensor([float("nan"), float("inf"), -float("inf"), 8.0]).double()
    bounds = torch.full_like(y, -10.0), torch.full_like(y, 10.0)
    with torch.no_grad():
        plain = solve_increasing(cube, y, *bounds)
    with_grad = y.clone().requires_grad_(True)
    x = solve_increasing(cube, with_grad, *bounds)
    for result in (plain, x.detach()):
        assert bool(torch.isnan(result[0]))
        assert result[1:3].tolist() == [float("inf"), -float("inf")]
        assert float(result[3]) == pytest.approx(2.0)
    # The finite entry's gradient is the implicit one, and no NaN leaks into it.
    (gradient,) = torch.autograd.grad(x[3], with_grad)
    assert gradient.tolist() == pytest.approx([0.0, 0.0, 0.0, 1.0 / 12.0])


@pytest.mark.parametrize("function", [_cubic, _logistic_mixture])
def test_the_root_is_the_same_with_gradients_on_or_off(function):
    """The implicit gradient's Newton step is taken back out of the value: where
    the map is nearly flat, the step moved the root by up to the tolerance over
    the slope, so that inverse(y) depended on whether autograd was on."""
    y = torch.linspace(-6.0, 6.0, 41, dtype=torch.float64)
    bounds = (torch.full_like(y, -40.0), torch.full_like(y, 40.0))
    with torch.no_grad():
        without = solve_increasing(function, y, *bounds, tol=1e-4)
    with_grad = y.clone().requires_grad_(True)
    x = solve_increasing(function, with_grad, *bounds, tol=1e-4)
    torch.testing.assert_close(x.detach(), without, rtol=0.0, atol=0.0)
    (gradient,) = torch.autograd.grad(x.sum(), with_grad)
    torch.testing.assert_close(gradient, 1.0 / function(without)[1])


def test_a_slope_that_underflows_to_zero_keeps_the_root_with_autograd_on():
    """On a flat stretch of the map (float32 tanh beyond 9: slope 0 at the root)
    the implicit gradient's Newton step divided 0 by 0, so the root came back NaN
    whenever autograd was on; with it off the same call gave a finite root."""
    tanh = lambda x: (torch.tanh(x), 1.0 - torch.tanh(x).square())  # noqa: E731
    y = torch.tensor([1.0, 0.5])
    bounds = torch.zeros_like(y), torch.full_like(y, 20.0)
    with torch.no_grad():
        without = solve_increasing(tanh, y, *bounds)
    with_grad = y.clone().requires_grad_(True)
    x = solve_increasing(tanh, with_grad, *bounds)
    assert bool(torch.isfinite(x).all())
    torch.testing.assert_close(x.detach(), without, rtol=0.0, atol=0.0)
    # The flat entry takes no gradient; the other keeps the implicit one.
    (gradient,) = torch.autograd.grad(x.sum(), with_grad)
    assert float(gradient[0]) == 0.0
    assert float(gradient[1]) == pytest.approx(1.0 / (1.0 - 0.25), rel=1e-5)
