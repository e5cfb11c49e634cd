"""Kernel marginals (``marginal_transform="kde"``): the layer's inverse,
log-determinant and normalization, how it is fitted, and the estimator around it."""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.exceptions import ConvergenceWarning

import skebflow._preparation as preparation
from skebflow import EBFlowDensity
from skebflow._preparation import (
    KERNEL_BANDWIDTHS,
    KERNEL_MAX_CENTRES,
    fit_kernel_marginals,
)
from skebflow._training import TrainingConfig, evaluate_log_likelihood, train
from skebflow.flows import (
    KernelGaussianize,
    Preprocessing,
    Standardize,
    UniformDequantize,
    coupling,
)
from skebflow.flows._preprocessing import _normal_quantile_of_log

pytestmark = pytest.mark.usefixtures("single_thread")

DTYPE = torch.float64


#: One kernel width per column (models fitted before 5 December 2026) or one per
#: centre (adaptive kernels): every test of the layer runs with both.
WIDTHS = ("column", "centre")


def _layer(
    columns=(True, False, True), n_centres=40, seed=0, widths="centre"
) -> KernelGaussianize:
    generator = torch.Generator().manual_seed(seed)
    mapped = sum(columns)
    centres = torch.randn(n_centres, mapped, generator=generator, dtype=DTYPE)
    weights = torch.rand(n_centres, mapped, generator=generator, dtype=DTYPE)
    weights[-5:, 0] = 0.0  # padding centres
    weights = weights / weights.sum(dim=0)
    bandwidth = torch.linspace(0.02, 0.8, mapped, dtype=DTYPE)
    if widths == "centre":  # each kernel 0.2 to 5 times its column's width
        factors = torch.exp(
            math.log(5.0) * (2 * torch.rand(n_centres, mapped, generator=generator) - 1)
        ).to(DTYPE)
        bandwidth = bandwidth * factors
    return KernelGaussianize(
        torch.tensor(columns),
        centres,
        weights,
        bandwidth,
        torch.zeros(mapped, dtype=DTYPE),
        torch.full((mapped,), 3.0, dtype=DTYPE),
    )


def _fitted_layer(spec) -> KernelGaussianize:
    """The layer ``fit_kernel_marginals``'s ``spec`` describes."""
    keys = ("columns", "centres", "weights", "bandwidth", "wide_loc", "wide_scale")
    return KernelGaussianize(
        *(torch.as_tensor(spec[f"kde_{key}"]) for key in keys),
        wide_weight=spec["kde_wide_weight"],
    )


def _rows(n=200, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = 2.0 * torch.randn(n, 3, generator=generator, dtype=DTYPE)
    x[0, 0], x[1, 2], x[2, 0] = 200.0, -1e4, -60.0  # where the kernel sums underflow
    return x


# ------------------------------------------------------------------------- the layer


@pytest.mark.parametrize("widths", WIDTHS)
def test_inverse_round_trips_also_far_beyond_the_centres(widths):
    layer, x = _layer(widths=widths), _rows()
    y, _ = layer(x)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(layer.inverse(y), x, rtol=1e-8, atol=1e-8)
    # the column left alone is left exactly
    torch.testing.assert_close(y[:, 1], x[:, 1], rtol=0, atol=0)


@pytest.mark.parametrize("widths", WIDTHS)
def test_log_det_matches_the_autograd_jacobian(widths):
    layer, x = _layer(widths=widths), _rows(12)
    _, log_abs_det = layer(x)
    for row in range(x.shape[0]):
        jacobian = torch.autograd.functional.jacobian(
            lambda point: layer(point.unsqueeze(0))[0].squeeze(0), x[row]
        )
        expected = torch.linalg.slogdet(jacobian).logabsdet
        if row < 3:  # the far rows: the derivative is e^(log det), compare logs
            assert math.isfinite(float(log_abs_det[row]))
        torch.testing.assert_close(log_abs_det[row], expected, rtol=1e-7, atol=1e-7)


def test_inverse_keeps_its_precision_on_a_column_far_from_zero():
    # 1e9 plus noise of 1e-3: a tolerance relative to |x| (0.1 there) would stop
    # the solver at its first guess, clamped to the table's range
    rng = np.random.RandomState(0)
    X = np.c_[1e9 + rng.normal(scale=1e-3, size=1000), rng.normal(size=1000)]
    spec = fit_kernel_marginals(X, np.ones(2, bool), None, np.random.RandomState(0))
    layer = _fitted_layer(spec)
    z = torch.linspace(-8.0, 8.0, 9, dtype=DTYPE).unsqueeze(1).repeat(1, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no InverseNotConvergedWarning either
        again, _ = layer(layer.inverse(z))
    # float64 holds x to about 1e-7 here, a few 1e-5 of the column's spread
    torch.testing.assert_close(again, z, rtol=0, atol=1e-3)


@pytest.mark.parametrize("far", [1e12, 1e40, 1e100])
def test_inverse_keeps_its_precision_beside_one_row_far_out(far):
    """One row at 1e12 among unit normals moved the wide normal's mean and
    scale, in whose units the solver worked, by 1e10 and more: its relative
    tolerance spanned the bulk (inverse(0) off by units, samples with them) and
    the far row's own kernel (a bracket said not to hold its root). From 1e40
    the solver's bisection, halving a bracket reaching the far row, ran out of
    steps before it came down to the bulk: 83 % of the samples beyond 100
    (found by a review)."""
    rng = np.random.RandomState(0)
    X = np.c_[np.r_[rng.normal(size=199), far], rng.normal(size=200)]
    spec = fit_kernel_marginals(X, np.ones(2, bool), None, np.random.RandomState(0))
    layer = _fitted_layer(spec)
    z = torch.linspace(-3.0, 3.0, 13, dtype=DTYPE).unsqueeze(1).repeat(1, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no InverseNotConvergedWarning either
        x = layer.inverse(z)
        again, _ = layer(x)
    # (float64 holds x to 1e-4 at 1e12, where z moves about 4 per unit of x; at
    # 1e40 to 1e24, wider than the far row's kernel, so z there is rounded)
    held = slice(None) if far == 1e12 else z[:, 0].abs() <= 2.0
    torch.testing.assert_close(again[held], z[held], rtol=0, atol=1e-5)
    # the bulk's values within 2 standard normals (the far row's kernel, 1 of
    # 200, takes the last half per cent)
    assert float(x[z.abs() <= 2.0].abs().max()) < 10.0
    # the bulk's quartiles where the data's are
    quartiles = layer.inverse(torch.tensor([[-0.6745] * 2, [0.6745] * 2], dtype=DTYPE))
    data = np.percentile(X[:-1, 0], [25, 75])
    np.testing.assert_allclose(quartiles[:, 0].numpy(), data, atol=0.2)


@pytest.mark.parametrize("widths", WIDTHS)
def test_the_density_of_one_column_integrates_to_one(widths):
    layer = _layer(columns=(True,), widths=widths)
    grid = torch.linspace(-40.0, 40.0, 400_001, dtype=DTYPE)
    z, log_abs_det = layer(grid.unsqueeze(1))
    density = torch.exp(
        log_abs_det - 0.5 * z[:, 0].square() - 0.5 * math.log(2 * math.pi)
    )
    assert float(torch.trapezoid(density, grid)) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("widths", WIDTHS)
def test_the_map_is_a_standard_normal_of_its_own_draws(widths):
    # draws of the kernel mixture, mapped, are standard normal
    layer = _layer(columns=(True,), n_centres=6, widths=widths)
    generator = torch.Generator().manual_seed(3)
    n = 4000
    pick = torch.multinomial(
        layer.weights[:, 0], n, replacement=True, generator=generator
    )
    wide = torch.rand(n, generator=generator, dtype=DTYPE) < layer.wide_weight
    noise = torch.randn(n, generator=generator, dtype=DTYPE)
    x = torch.where(
        wide,
        layer.wide_loc[0] + layer.wide_scale[0] * noise,
        layer.centres[pick, 0] + layer._kernel_widths()[:, 0].expand(6)[pick] * noise,
    )
    z, _ = layer(x.unsqueeze(1))
    assert stats.kstest(z[:, 0].numpy(), "norm").pvalue > 0.01


@pytest.mark.parametrize("widths", WIDTHS)
def test_gradients_stay_finite_where_the_sums_underflow(widths):
    layer, x = _layer(widths=widths), _rows(5)
    x = x.clone().requires_grad_(True)
    y, log_abs_det = layer(x)
    (y.sum() + log_abs_det.sum()).backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize(
    ("dtype", "start", "stop"),
    [(torch.float32, 12.0, 15.0), (torch.float64, 37.0, 39.0)],
)
def test_tails_where_the_sums_are_subnormal_match_the_log_space_sums(
    dtype, start, stop
):
    """Where the survival sum is subnormal but not 0 (float32 from about 13 widths
    of the wide normal, float64 from about 38) its few digits gave wrong z and
    log-determinants (errors of 0.1 nats), between correct values on both sides."""
    one = torch.ones(1, 1, dtype=torch.float64)
    reference = KernelGaussianize(
        torch.tensor([True]), 0 * one, one, 0.1 * one, 0 * one[0], one[0]
    )
    layer = copy.deepcopy(reference).to(dtype)
    x = torch.linspace(start, stop, 61, dtype=torch.float64).unsqueeze(1)
    log_cdf, log_sf, log_pdf = reference._log_parts_exact(x)
    z_reference = -_normal_quantile_of_log(log_sf)
    log_det_reference = (log_pdf + 0.5 * z_reference.square()).squeeze(1) + 0.5 * (
        math.log(2 * math.pi)
    )
    z, log_abs_det = layer(x.to(dtype))
    tolerance = 1e-4 if dtype == torch.float32 else 1e-9
    assert torch.allclose(z.double(), z_reference, rtol=0, atol=tolerance)
    assert torch.allclose(
        log_abs_det.double(), log_det_reference, rtol=0, atol=tolerance
    )


def test_the_log_density_gradient_stays_right_far_beyond_the_rows():
    """torch.special.log_ndtr's backward is wrong below about -1e8 (0.4 at -1e9,
    then inf, then NaN): the gradient of a finite log-density must not be."""
    X = np.random.RandomState(0).normal(size=(300, 3))
    est = EBFlowDensity(n_flows=1, max_iter=3, device="cpu", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X)
    for value in (1e8, 1e9):
        row, step = np.array([[value, 0.0, 0.0]]), value * 1e-4
        gradient = est.log_density_gradient(row)[0, 0]
        difference = est.score_samples(row + [step, 0, 0]) - est.score_samples(
            row - [step, 0, 0]
        )
        assert gradient == pytest.approx(difference[0] / (2 * step), rel=1e-6)
    far = np.array([[1e12, 0.0, 0.0]])
    assert np.isfinite(est.score_samples(far)).all()
    assert np.isfinite(est.log_density_gradient(far)).all()


def test_the_log_density_gradient_is_right_at_the_training_rows():
    """Every training value is a kernel's centre, where the CDF's sum took |u|
    by abs, whose gradient at 0 is 0: that kernel's density dropped out of the
    derivative, and log_density_gradient at the training rows was off by up to
    0.12 (right 1e-9 away)."""
    X = np.random.RandomState(0).normal(size=(100, 2))
    est = EBFlowDensity(n_flows=1, max_iter=2, device="cpu", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X)
    rows, step = X[:10], 1e-6
    gradient = est.log_density_gradient(rows)
    for column in range(2):
        shift = np.zeros(2)
        shift[column] = step
        difference = est.score_samples(rows + shift) - est.score_samples(rows - shift)
        np.testing.assert_allclose(
            gradient[:, column], difference / (2 * step), rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize("widths", WIDTHS)
def test_log_det_at_output_agrees_with_forward(widths):
    layer, x = _layer(widths=widths), _rows(30)
    y, log_abs_det = layer(x)
    torch.testing.assert_close(layer.log_abs_det_at_output(y), log_abs_det)


def test_the_noiseless_head_and_the_tail_compose_to_the_chain():
    chain = Preprocessing(
        [
            _layer(),
            UniformDequantize(torch.tensor([False, True, False])),
            Standardize(
                torch.zeros(3, dtype=DTYPE), torch.full((3,), 2.0, dtype=DTYPE)
            ),
        ]
    )
    head, tail = chain.split_fixed_head()
    assert [type(step).__name__ for step in head.steps] == ["KernelGaussianize"]
    x = _rows(20)
    x[:, 1] = torch.arange(20, dtype=DTYPE)
    y, log_abs_det = chain(x, torch.Generator().manual_seed(0))
    middle, head_det = head(x)
    y_split, tail_det = tail(middle, torch.Generator().manual_seed(0))
    torch.testing.assert_close(y_split, y, rtol=0, atol=0)
    torch.testing.assert_close(head_det + tail_det, log_abs_det)


def test_training_adds_the_mapped_steps_log_det_to_the_held_out_score():
    layer = _layer(columns=(True, True))
    chain = Preprocessing([layer])
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(300, 2, generator=generator, dtype=DTYPE)
    flow = coupling(
        2, n_layers=2, hidden_layer_sizes=(8,), generator=generator
    ).double()
    result = train(
        flow,
        chain,
        x[:240],
        x[240:],
        config=TrainingConfig(objective="ml", max_iter=2, batch_size=64),
        generator=generator,
    )
    expected = float(evaluate_log_likelihood(flow, chain, x[240:]).mean())
    assert result.best_validation_score == pytest.approx(expected, rel=1e-9)


# ---------------------------------------------------------------------- the fitting


def test_a_lumpy_column_gets_a_narrow_bandwidth_and_a_smooth_one_a_wide_one():
    rng = np.random.RandomState(0)
    lumps = rng.choice([0.0, 1.0, 2.0, 5.0], 600) + rng.normal(scale=0.01, size=600)
    X = np.c_[rng.normal(size=600), lumps]
    spec = fit_kernel_marginals(X, np.array([True, True]), None, rng)
    widths = np.where(spec["kde_weights"] > 0, spec["kde_bandwidth"], np.nan)
    # every kernel of the lumpy column is narrower than any of the smooth one's
    assert np.nanmax(widths[:, 1]) < 0.03 < 0.1 < np.nanmin(widths[:, 0])
    assert spec["kde_centres"].shape[0] <= KERNEL_MAX_CENTRES
    np.testing.assert_allclose(spec["kde_weights"].sum(axis=0), 1.0)


def _used_widths(spec, column=0):
    return spec["kde_bandwidth"][spec["kde_weights"][:, column] > 0, column]


def test_the_bandwidth_is_the_subsamples_unless_scaled_to_every_row(monkeypatch):
    # normal rows: the best bandwidth is about 1.06 n^(-1/5) (Silverman), 0.31 for
    # the 500 rows it is chosen on and 0.20 for all 4 000 (one width per column:
    # pooling adds at most a few per cent, its bins' spread)
    monkeypatch.setattr(preparation, "KERNEL_ADAPTIVE_SENSITIVITY", 0.0)
    X = np.random.RandomState(0).normal(size=(4000, 1))
    spec = fit_kernel_marginals(X, np.array([True]), None, np.random.RandomState(1))
    widths = _used_widths(spec)
    assert 0.24 < widths.min() <= widths.max() < 1.03 * widths.min() < 0.41
    monkeypatch.setattr(preparation, "KERNEL_SCALED_TO_ALL_ROWS", True)
    spec = fit_kernel_marginals(X, np.array([True]), None, np.random.RandomState(1))
    assert 0.14 < np.median(_used_widths(spec)) < 0.26


def test_adaptive_kernels_widen_where_the_rows_are_sparse(monkeypatch):
    # a normal column: the kernels of the outermost centres are wider than those
    # at the mode by about the square root of the density ratio (clipped)
    monkeypatch.setattr(preparation, "KERNEL_ADAPTIVE_SENSITIVITY", 0.5)
    X = np.random.RandomState(0).normal(size=(4000, 1))
    spec = fit_kernel_marginals(X, np.array([True]), None, np.random.RandomState(1))
    used = spec["kde_weights"][:, 0] > 0
    centres, widths = spec["kde_centres"][used, 0], spec["kde_bandwidth"][used, 0]
    at_mode = widths[np.abs(centres) < 0.5]
    in_tails = widths[np.abs(centres) > 3.0]
    assert in_tails.min() > 2.0 * at_mode.max()


def _held_out_log_density(spec, X):
    layer = _fitted_layer(spec)
    with torch.no_grad():
        z, log_abs_det = layer(torch.as_tensor(X))
    normal = -0.5 * z.square().sum(dim=1) - 0.5 * X.shape[1] * math.log(2 * math.pi)
    return float((log_abs_det + normal).mean())


@pytest.mark.parametrize(
    "draw",
    [
        lambda rng, n: rng.standard_t(2.0, size=n),  # heavy tails
        lambda rng, n: rng.lognormal(sigma=1.0, size=n),  # skewed
        # a narrow mode beside a wide one
        lambda rng, n: np.where(
            rng.rand(n) < 0.5, rng.normal(scale=0.05, size=n), rng.normal(2, 1, n)
        ),
    ],
    ids=["student_t", "lognormal", "narrow_and_wide"],
)
def test_adaptive_kernels_fit_held_out_rows_better_than_one_bandwidth(
    draw, monkeypatch
):
    # a single bandwidth either blurs the crowded part or breaks up the sparse
    # one; held-out rows tell (the gains are 0.009 to 0.05 nats per row, the
    # standard error of the 5 000 rows' mean difference about 0.001)
    rng = np.random.RandomState(0)
    train_rows, test_rows = draw(rng, 2000)[:, None], draw(rng, 5000)[:, None]
    monkeypatch.setattr(preparation, "KERNEL_ADAPTIVE_SENSITIVITY", 0.5)
    adaptive = fit_kernel_marginals(
        train_rows, np.array([True]), None, np.random.RandomState(1)
    )
    monkeypatch.setattr(preparation, "KERNEL_ADAPTIVE_SENSITIVITY", 0.0)
    fixed = fit_kernel_marginals(
        train_rows, np.array([True]), None, np.random.RandomState(1)
    )
    gain = _held_out_log_density(adaptive, test_rows) - _held_out_log_density(
        fixed, test_rows
    )
    assert gain > 0.005


@pytest.mark.parametrize("sentinel", [1e9, 1e15, 1e20])
def test_a_sentinel_value_does_not_blur_the_rest_of_the_column(sentinel):
    # 1 % of the rows hold a sentinel (1e9 among standard normal values): it
    # inflated the standard deviation the bandwidths are multiples of, and the
    # leave-one-out likelihood widened every kernel to give it density (the
    # held-out rows scored -19.5 nats instead of -1.42). From about 1e14 the
    # kernels' floor of 64 ulps, taken at the sentinel's magnitude for every
    # kernel, widened them again (8 at 1e15, 1e6 at 1e20); it is each centre's now
    rng = np.random.RandomState(0)
    X = rng.normal(size=(1000, 1))
    X[::100, 0] = sentinel
    spec = fit_kernel_marginals(X, np.array([True]), None, np.random.RandomState(0))
    truth = -0.5 * (1.0 + math.log(2.0 * math.pi))  # E log N(x; 0, 1)
    assert _held_out_log_density(spec, rng.normal(size=(5000, 1))) > truth - 0.1


def test_no_kernel_is_narrower_than_the_values_resolution():
    # 80 % of the rows are 0.3 up to two ulps: the robust spread is a few ulps,
    # and the isolated rows' kernels fell below one ulp (a density of e^28 at them)
    rng = np.random.RandomState(0)
    lump = 0.3 + rng.randint(-2, 3, 2000) * np.spacing(0.3)
    X = np.where(rng.rand(2000) < 0.8, lump, rng.normal(size=2000))[:, None]
    spec = fit_kernel_marginals(X, np.array([True]), None, np.random.RandomState(0))
    # at least 64 ulps of the kernel's own centre
    used = spec["kde_weights"] > 0
    floor = preparation.KERNEL_MIN_ULPS * np.spacing(np.abs(spec["kde_centres"][used]))
    assert np.all(_used_widths(spec) >= floor)
    z, _ = _fitted_layer(spec)(torch.as_tensor(X))
    assert torch.isfinite(z).all()


def test_pooled_centres_keep_their_rows_first_two_moments():
    # each bin's centre is its rows' mean and its kernel's variance their mean
    # kernel variance plus their spread: the mixture's mean and variance are the
    # rows' kernel density's, however coarse the pooling
    rng = np.random.RandomState(0)
    values = rng.standard_t(3.0, size=5000)
    weights = rng.rand(5000)
    row_widths = 0.05 * np.exp(rng.normal(size=5000))
    centres, centre_weights, widths = preparation._binned_centres(
        values, weights, row_widths
    )
    assert centres.size <= KERNEL_MAX_CENTRES < 5000
    shares = weights / weights.sum()
    assert centre_weights @ centres == pytest.approx(shares @ values, rel=1e-10)
    assert centre_weights @ (centres**2 + widths**2) == pytest.approx(
        shares @ (values**2 + row_widths**2), rel=1e-10
    )


def test_a_rare_departure_from_a_constant_gets_a_bandwidth():
    # 2 of 20 000 rows leave zero: the 500 rows the bandwidth is chosen on are
    # all zero (there was nothing to leave out, and the fit raised)
    X = np.zeros((20_000, 1))
    X[[10, 20], 0] = [1.5, 2.5]
    spec = fit_kernel_marginals(X, np.array([True]), None, np.random.RandomState(0))
    assert (
        np.isfinite(spec["kde_bandwidth"]).all() and (spec["kde_bandwidth"] > 0).all()
    )
    rng = np.random.RandomState(1)
    est = _fit(np.c_[X[:, 0], rng.normal(size=20_000)], max_iter=1)
    assert np.isfinite(est.score_samples(np.array([[0.0, 0.0], [1.5, 0.0]]))).all()


def test_tied_values_do_not_pull_the_bandwidth_to_the_floor():
    # values rounded to a tenth: every one repeats; leaving only the row itself
    # out would make a spike on each value the likeliest
    rng = np.random.RandomState(0)
    rounded = np.round(rng.normal(size=(800, 1)), 1)
    spec = fit_kernel_marginals(rounded, np.array([True]), None, rng)
    floor = KERNEL_BANDWIDTHS[0] * rounded.std()
    assert np.median(_used_widths(spec)) > 0.03 > 10 * floor


def test_a_row_of_weight_zero_counts_as_removed():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(300, 2))
    weights = np.ones(300)
    weights[::3] = 0.0
    weighted = fit_kernel_marginals(
        X, np.array([True, True]), weights, np.random.RandomState(1)
    )
    removed = fit_kernel_marginals(
        X[weights > 0], np.array([True, True]), None, np.random.RandomState(1)
    )
    for key in ("kde_bandwidth", "kde_wide_loc", "kde_wide_scale"):
        np.testing.assert_allclose(weighted[key], removed[key])


# --------------------------------------------------------------------- the estimator


SMALL = {
    "n_flows": 1,
    "n_layers": 2,
    "hidden_layer_sizes": (16,),
    "max_iter": 10,
    "batch_size": 64,
    "device": "cpu",
    "random_state": 0,
}


def _fit(X, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return EBFlowDensity(**{**SMALL, **params}).fit(X)


@pytest.fixture(scope="module")
def lumpy():
    rng = np.random.RandomState(0)
    n = 500
    first = rng.normal(size=n)
    second = np.where(rng.rand(n) < 0.6, 0.0, 3.0) + 0.05 * rng.normal(size=n)
    return np.c_[first, second + 0.3 * first]


def test_the_estimators_density_integrates_to_one(lumpy):
    est = _fit(lumpy)
    assert est.marginal_transform_ == "kde"
    low, high = lumpy.min(axis=0) - 2.0, lumpy.max(axis=0) + 2.0
    n = 500
    xs, ys = np.linspace(low[0], high[0], n), np.linspace(low[1], high[1], 2 * n)
    grid = np.stack(np.meshgrid(xs, ys, indexing="ij"), axis=-1).reshape(-1, 2)
    density = np.exp(est.score_samples(grid)).reshape(n, 2 * n)
    mass = np.trapezoid(np.trapezoid(density, ys, axis=1), xs)
    assert mass == pytest.approx(1.0, abs=0.02)


def test_kernel_marginals_fit_lumps_better_than_standardized_columns(lumpy):
    rng = np.random.RandomState(1)
    n = 500
    first = rng.normal(size=n)
    second = np.where(rng.rand(n) < 0.6, 0.0, 3.0) + 0.05 * rng.normal(size=n)
    fresh = np.c_[first, second + 0.3 * first]
    with_kde = _fit(lumpy, max_iter=30).score(fresh)
    without = _fit(lumpy, max_iter=30, marginal_transform=None).score(fresh)
    assert with_kde > without + 0.2


def test_samples_follow_the_lumpy_marginal(lumpy):
    est = _fit(lumpy, max_iter=30)
    samples = est.sample(2000, random_state=0)
    assert np.isfinite(samples).all()
    # the share of draws near the two lumps' centres is the data's
    near_high = np.mean(samples[:, 1] - 0.3 * samples[:, 0] > 1.5)
    assert near_high == pytest.approx(0.4, abs=0.05)


def test_only_continuous_columns_are_mapped():
    rng = np.random.RandomState(0)
    X = np.c_[rng.normal(size=300), rng.poisson(3.0, size=300), np.full(300, 2.0)]
    est = _fit(X, constant_features="narrow")
    steps = [type(step).__name__ for step in est.preprocessing_.steps]
    assert steps == [
        "KernelGaussianize",
        "UniformDequantize",
        "Standardize",
        "ColumnNoise",
    ]
    assert est.preprocessing_.steps[0].columns.tolist() == [True, False, False]
    assert est.dequantized_features_.tolist() == [False, True, False]


def test_none_and_other_preprocessings_leave_the_columns_standardized(lumpy):
    assert _fit(lumpy, marginal_transform=None).marginal_transform_ is None
    est = _fit(lumpy, marginal_transform=None)
    assert [type(step).__name__ for step in est.preprocessing_.steps] == ["Standardize"]
    assert _fit(lumpy * 10, preprocessing="logit").marginal_transform_ is None
    with pytest.raises(ValueError, match="needs preprocessing='standardize'"):
        _fit(lumpy, preprocessing="logit", marginal_transform="kde")


def test_a_warm_start_cannot_change_it(lumpy):
    est = _fit(lumpy, warm_start=True)
    est.set_params(marginal_transform=None)
    with pytest.raises(ValueError, match="marginal_transform"):
        est.fit(lumpy)


def test_a_warm_start_under_the_logit_may_change_it(lumpy):
    # "auto" does nothing under the logit, and None neither: no change to refuse
    est = _fit(lumpy, preprocessing="logit", warm_start=True)
    est.set_params(marginal_transform=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(lumpy)
    assert est.marginal_transform_ is None


def test_sample_weight_zero_equals_removing_the_rows(lumpy):
    weights = np.ones(lumpy.shape[0])
    weights[::4] = 0.0
    est = EBFlowDensity(**{**SMALL, "max_iter": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        weighted = est.fit(lumpy, sample_weight=weights)._preprocessing_spec
        removed = (
            EBFlowDensity(**{**SMALL, "max_iter": 1})
            .fit(lumpy[weights > 0])
            ._preprocessing_spec
        )
    np.testing.assert_allclose(weighted["kde_bandwidth"], removed["kde_bandwidth"])
    np.testing.assert_allclose(weighted["kde_centres"], removed["kde_centres"])


def test_a_model_pickled_before_the_kernel_marginals_loads_and_refits_as_then():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(200, 2))
    est = _fit(X, marginal_transform=None)
    state = est.__getstate__()
    del state["marginal_transform"], state["marginal_transform_"]
    old = EBFlowDensity.__new__(EBFlowDensity)
    old.__setstate__(state)
    assert old.get_params()["marginal_transform"] is None
    assert old.marginal_transform_ is None
    np.testing.assert_array_equal(old.score_samples(X), est.score_samples(X))
