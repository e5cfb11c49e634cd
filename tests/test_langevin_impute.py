"""Langevin sampling from the energy, conditional sampling and EBFlowImputer."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp
from sklearn.datasets import make_moons
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from skebflow import EBFlowDensity, EBFlowImputer
from skebflow._langevin import langevin, mode_search

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _gaussian_energy(x):
    return 0.5 * x.square().sum(dim=1)


@pytest.mark.parametrize("metropolis", [True, False])
def test_langevin_samples_a_standard_normal(metropolis):
    generator = torch.Generator().manual_seed(0)
    start = torch.full((4000, 2), 3.0, dtype=torch.float64)
    result = langevin(
        _gaussian_energy,
        start,
        n_steps=200,
        step_size=0.5,
        metropolis=metropolis,
        generator=generator,
    )
    np.testing.assert_allclose(result.x.mean(0).numpy(), 0.0, atol=0.08)
    # ULA's stationary law is N(0, 1 / (1 - step / 2)): 15 % too wide at this step,
    # which tells the two samplers apart (at 0.1 the 2.6 % bias was within the
    # tolerance, and the test passed with the flag ignored either way).
    expected_std = 1.0 if metropolis else (1.0 / (1.0 - 0.25)) ** 0.5
    np.testing.assert_allclose(result.x.std(0).numpy(), expected_std, rtol=0.04)
    if metropolis:  # adapted towards MALA's optimal 0.574
        assert 0.45 < result.acceptance_rate < 0.7
    else:
        assert result.acceptance_rate == 1.0


def test_langevin_holds_unmasked_entries_and_uses_only_its_generator():
    start = torch.arange(12.0, dtype=torch.float64).reshape(6, 2)
    mask = torch.zeros(6, 2, dtype=torch.bool)
    mask[:, 1] = True
    before = torch.get_rng_state()
    first = langevin(
        _gaussian_energy,
        start,
        n_steps=10,
        mask=mask,
        generator=torch.Generator().manual_seed(3),
    ).x
    second = langevin(
        _gaussian_energy,
        start,
        n_steps=10,
        mask=mask,
        generator=torch.Generator().manual_seed(3),
    ).x
    assert torch.equal(before, torch.get_rng_state())
    assert torch.equal(first, second)
    assert torch.equal(first[:, 0], start[:, 0])
    assert not torch.equal(first[:, 1], start[:, 1])


def test_chains_in_blocks_follow_the_same_law_and_pool_their_acceptance():
    """Blocks of chains run one after the other: the draws are those of the
    blocks run in turn on one generator, still a standard normal, and the rate
    is over the chains with an entry to update, whichever block holds them."""
    start = torch.full((3000, 2), 3.0, dtype=torch.float64)
    mask = torch.ones(3000, 2, dtype=torch.bool)
    mask[:1000] = False  # a first block of complete rows
    settings = {"n_steps": 150, "step_size": 0.5}
    blocked = langevin(
        _gaussian_energy,
        start,
        mask=mask,
        generator=torch.Generator().manual_seed(0),
        chunk_rows=1000,
        **settings,
    )
    generator = torch.Generator().manual_seed(0)
    in_turn = [
        langevin(
            _gaussian_energy,
            start[rows],
            mask=mask[rows],
            generator=generator,
            **settings,
        )
        for rows in (slice(0, 1000), slice(1000, 2000), slice(2000, 3000))
    ]
    assert torch.equal(blocked.x, torch.cat([result.x for result in in_turn]))
    assert torch.equal(blocked.x[:1000], start[:1000])
    # the complete rows (rate 1.0 on their own) do not dilute the moving ones'
    moving_rate = (in_turn[1].acceptance_rate + in_turn[2].acceptance_rate) / 2
    assert in_turn[0].acceptance_rate == 1.0
    assert blocked.acceptance_rate == pytest.approx(moving_rate)
    assert blocked.acceptance_rate < 0.95
    moved = blocked.x[1000:].numpy()
    np.testing.assert_allclose(moved.mean(0), 0.0, atol=0.1)
    np.testing.assert_allclose(moved.std(0), 1.0, rtol=0.06)


def test_a_mode_search_in_blocks_finds_the_same_modes():
    energy = lambda x: 0.5 * ((x[:, 0] - x[:, 1]) ** 2) + 0.05 * x[:, 1] ** 2  # noqa: E731
    x = torch.stack(
        [torch.linspace(-2.0, 2.0, 50, dtype=torch.float64), torch.zeros(50)], 1
    )
    mask = torch.zeros(50, 2, dtype=torch.bool)
    mask[:, 1] = True
    whole = mode_search(energy, x, mask=mask, n_steps=300).x
    blocked = mode_search(energy, x, mask=mask, n_steps=300, chunk_rows=7).x
    torch.testing.assert_close(blocked, whole, rtol=1e-12, atol=1e-12)
    # the conditional mode of x1 given x0: x0 / 1.1
    torch.testing.assert_close(whole[:, 1], x[:, 0] / 1.1, rtol=0, atol=0.02)


def test_the_estimators_samplers_run_in_blocks(moons_model, monkeypatch):
    import skebflow._density as density

    X = moons_model.sample(40, random_state=0)
    X[::2, 1] = np.nan
    original = X.copy()
    modes = moons_model.sample_conditional(X, method="mode", n_steps=50)
    monkeypatch.setattr(density, "_LANGEVIN_CHUNK_ROWS", 6)
    blocked_modes = moons_model.sample_conditional(X, method="mode", n_steps=50)
    np.testing.assert_allclose(blocked_modes, modes, rtol=1e-10, atol=1e-10)
    filled = moons_model.sample_conditional(X, random_state=0, n_steps=30)
    draws = moons_model.sample_langevin(40, random_state=0, n_steps=30)
    np.testing.assert_array_equal(X, original)
    np.testing.assert_array_equal(filled[1::2], X[1::2])
    assert np.isfinite(filled).all() and np.isfinite(draws).all()
    assert draws.shape == (40, 2)


def test_only_rows_with_a_missing_value_run_chains(moons_model, monkeypatch):
    """Complete rows cost no chain, and a complete row the model finds very
    unlikely does not read as a chain that diverged."""
    import skebflow._density as density

    X = moons_model.sample(50, random_state=0)
    X[:5, 1] = np.nan
    X[10] = [100.0, 100.0]  # complete, and far outside the data
    chain_rows = []
    for name in ("langevin", "mode_search"):
        real = getattr(density, name)

        def recording(energy, x, *args, _real=real, **kwargs):
            chain_rows.append(x.shape[0])
            return _real(energy, x, *args, **kwargs)

        monkeypatch.setattr(density, name, recording)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        filled = moons_model.sample_conditional(X, random_state=0, n_steps=20)
        modes = moons_model.sample_conditional(X, method="mode", n_steps=20)
    assert chain_rows == [5, 5]
    for result in (filled, modes):
        np.testing.assert_array_equal(result[5:], X[5:])
        assert np.isfinite(result[:5]).all()


def _double_well_energy(x):
    # wells at +-1, barrier 8 at T = 1 (crossed in ~e^8 time units), 0.8 at T = 10
    return 8.0 * (x.square() - 1.0).square().sum(dim=1)


def test_annealing_starts_hot_and_ends_at_temperature_one():
    # Ends at T = 1: the final law is N(0, 1), not N(0, T) at a higher T.
    start = torch.zeros(4000, 1, dtype=torch.float64)
    result = langevin(
        _gaussian_energy,
        start,
        n_steps=400,
        step_size=0.1,
        initial_temperature=10.0,
        generator=torch.Generator().manual_seed(1),
    )
    assert result.x.std().item() == pytest.approx(1.0, rel=0.05)
    # Starts hot: chains started in the left well of a symmetric double well cross
    # the barrier only while hot, and end split evenly between the wells; at T = 1
    # all along they stay where they started.
    start = torch.full((2000, 1), -1.0, dtype=torch.float64)
    right_share = {}
    for initial_temperature in (1.0, 10.0):
        chains = langevin(
            _double_well_energy,
            start,
            n_steps=400,
            step_size=0.01,
            initial_temperature=initial_temperature,
            generator=torch.Generator().manual_seed(2),
        ).x
        right_share[initial_temperature] = (chains > 0).double().mean().item()
    assert right_share[1.0] < 0.05, right_share
    assert right_share[10.0] == pytest.approx(0.5, abs=0.1), right_share


def test_mode_search_finds_the_conditional_mode():
    # E = (x0 - x1)^2 / 2 + x1^2 / 2: given x0 = 2, the mode of x1 is 1
    def energy(x):
        return 0.5 * (x[:, 0] - x[:, 1]) ** 2 + 0.5 * x[:, 1] ** 2

    x = torch.tensor([[2.0, -5.0]], dtype=torch.float64)
    mask = torch.tensor([[False, True]])
    mode, unsettled = mode_search(energy, x, mask=mask, n_steps=400,
                                  learning_rate=0.1)
    assert mode[0, 0].item() == 2.0
    assert mode[0, 1].item() == pytest.approx(1.0, abs=1e-3)
    assert not unsettled.any()
    # 6 units away: 40 steps of 0.1 travel only 4, and say so
    _, unsettled = mode_search(energy, x, mask=mask, n_steps=40, learning_rate=0.1)
    assert unsettled.all()

    # Within reach (10 < 300 steps of 0.05), but the gradient fades towards the
    # mode and Adam's steps shrink with it: the search crawls and stops 0.9
    # short. A review found it unflagged (steps judged against full ones).
    def narrow(x):
        return 0.5 * ((x[:, 1] - 10.0) / 0.5) ** 2

    start = torch.zeros(1, 2, dtype=torch.float64)
    mode, unsettled = mode_search(narrow, start, mask=mask, n_steps=300)
    assert 10.0 - mode[0, 1].item() > 0.5 and unsettled.all()

    # a search that went where the energy is not finite found no mode (inf - inf
    # read as settled); a row with nothing to search is never unsettled
    def broken(x):
        return torch.where(x[:, 1] > 0.5, torch.nan, (x[:, 1] - 5.0) ** 2)

    _, unsettled = mode_search(broken, start.repeat(2, 1),
                               mask=torch.tensor([[False, True], [False, False]]),
                               n_steps=300)
    assert unsettled.tolist() == [True, False]


@pytest.fixture(scope="module")
def moons_model():
    X, _ = make_moons(1000, noise=0.1, random_state=0)
    return EBFlowDensity(
        max_iter=40, n_layers=2, hidden_layer_sizes=(32,), device="cpu", random_state=0
    ).fit(X)


def test_langevin_and_exact_inversion_agree_in_distribution(moons_model):
    exact = moons_model.sample(2000, random_state=1)
    chains = moons_model.sample_langevin(
        2000, random_state=2, n_steps=300, step_size=0.1
    )
    directions = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, -1.0]])
    for direction in directions:
        p_value = ks_2samp(exact @ direction, chains @ direction).pvalue
        assert p_value > 0.01, f"projection {direction}: KS p = {p_value:.4f}"
    # and the test has power: too few steps from a N(0, I) start are told apart
    short = moons_model.sample_langevin(2000, random_state=2, n_steps=2, step_size=0.01)
    assert min(ks_2samp(exact @ d, short @ d).pvalue for d in directions) < 1e-6


@pytest.fixture(scope="module")
def correlated():
    rng = np.random.RandomState(0)
    cov = np.array([[1.0, 0.8], [0.8, 1.0]])
    return rng.multivariate_normal([0.0, 0.0], cov, size=3000)


def _model_gaussian(model):
    """Mean and covariance, in data units, of a one-dense-layer flow (a Gaussian)."""
    dense = model.flow_.layers[0]
    weight = dense.weight.detach().numpy()
    bias = dense.bias.detach().numpy()
    standardize = model.preprocessing_.steps[0]
    scale, shift = standardize.scale.numpy(), standardize.mean.numpy()
    mean = -np.linalg.solve(weight, bias) * scale + shift
    cov = np.linalg.inv(weight.T @ weight) * np.outer(scale, scale)
    return mean, cov


def _gaussian_model(**params):
    """One Gaussian flow (one dense layer, in standardized units, so a Gaussian
    in x too), whose mean and covariance :func:`_model_gaussian` reads."""
    return EBFlowDensity(
        architecture="fc",
        n_layers=1,
        n_flows=1,
        marginal_transform=None,
        objective="ml",
        device="cpu",
        random_state=0,
        **params,
    )


def test_conditional_samples_of_a_gaussian_model(correlated):
    model = _gaussian_model(max_iter=60, learning_rate=1e-2).fit(correlated)
    mean, cov = _model_gaussian(model)
    # the model's own conditional law of x1 given x0 = 1
    conditional_mean = mean[1] + cov[1, 0] / cov[0, 0] * (1.0 - mean[0])
    conditional_var = cov[1, 1] - cov[1, 0] ** 2 / cov[0, 0]
    assert conditional_mean == pytest.approx(0.8, abs=0.1)  # and the data's
    rows = np.tile([[1.0, np.nan]], (3000, 1))
    draws = model.sample_conditional(rows, random_state=0, n_steps=200, step_size=0.2)
    assert np.all(draws[:, 0] == 1.0)
    standard_error = (conditional_var / len(draws)) ** 0.5
    assert abs(draws[:, 1].mean() - conditional_mean) < 5 * standard_error
    assert draws[:, 1].var() == pytest.approx(conditional_var, rel=0.1)
    mode = model.sample_conditional([[1.0, np.nan]], method="mode", n_steps=300)
    assert mode[0, 1] == pytest.approx(conditional_mean, abs=0.01)
    with pytest.raises(ValueError, match="method='gibbs'"):
        model.sample_conditional(rows[:2], method="gibbs")



def test_sample_langevin_mixes_along_a_wide_direction():
    """A Gaussian model of correlation 0.999: the narrow direction (sd 0.04) sets
    the chains' step, and along the wide one (sd 1.4) 500 steps could not forget
    the N(0, I) start: the draws were 10-15 % too narrow there, silently. Whitened
    after a pilot (precondition=True, the default) the chains reach the model's
    spread; without it the call now says they have not mixed."""
    cov = np.array([[1.0, 0.999], [0.999, 1.0]])
    X = np.random.RandomState(0).multivariate_normal([0.0, 0.0], cov, size=3000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = _gaussian_model(
            max_iter=400, n_iter_no_change=400, learning_rate=3e-2
        ).fit(X)
    _, model_cov = _model_gaussian(model)
    variances, directions = np.linalg.eigh(model_cov)
    assert variances[-1] > 400 * variances[0]  # the model is that narrow
    wide_sd, narrow_sd = variances[-1] ** 0.5, variances[0] ** 0.5

    def draw(**settings):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            draws = model.sample_langevin(4000, random_state=1, **settings)
        messages = [str(w.message) for w in caught if w.category is ConvergenceWarning]
        return (draws @ directions).std(axis=0), messages

    # 4 000 chains: a standard error of 1.1 % on a standard deviation
    (narrow, wide), messages = draw()
    assert wide == pytest.approx(wide_sd, rel=0.04) and not messages
    assert narrow == pytest.approx(narrow_sd, rel=0.04)
    (_, wide), messages = draw(precondition=False)
    assert wide < 0.93 * wide_sd  # too narrow along the wide direction ...
    assert len(messages) == 1 and "have not mixed along it" in messages[0]  # said
    (_, wide), messages = draw(precondition=False, n_steps=4000)
    assert wide == pytest.approx(wide_sd, rel=0.04) and not messages


def test_the_mixing_warning_is_for_the_adjusted_sampler_only(moons_model, monkeypatch):
    """On a 10-D correlated Gaussian the unadjusted sampler's fixed step gave
    draws several times too wide without diverging, and the mixing warning said
    they were "too narrow" and advised precondition=True, which it does not use
    (a review's reproduction): it now judges Metropolis-adjusted chains only.
    Here the chains' spread is made to dwarf their reach."""
    import skebflow._density as density_module

    real = density_module.with_spread

    def far_too_wide(result):
        result = real(result)
        result.spread = 1e6
        return result

    monkeypatch.setattr(density_module, "with_spread", far_too_wide)
    for metropolis in (True, False):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            moons_model.sample_langevin(
                50,
                random_state=0,
                n_steps=20,
                step_size=0.01,
                metropolis=metropolis,
                precondition=False,
            )
        said = any("have not mixed" in str(w.message) for w in caught)
        assert said is metropolis


def test_chains_stuck_in_the_pilot_restart_from_other_chains():
    """Chains started where the density is far narrower than the shared step
    suits (a steep wall at x > 3) accept nothing and ended at their starts, a
    warning for a few chains of 4 000 at the defaults on the moons' default
    model. After the pilot they now move to other chains' states."""
    from skebflow._langevin import whitened_langevin

    def energy(x):
        return 0.5 * x[:, 0] ** 2 + 500.0 * torch.relu(x[:, 0] - 3.0) ** 2

    generator = torch.Generator().manual_seed(0)
    start = torch.randn(2000, 1, generator=generator, dtype=torch.float64)
    start[:10] = 5.0
    plain = langevin(
        energy, start, n_steps=150, step_size=0.5, generator=generator,
        shared_step=True,
    )
    assert plain.n_stuck >= 10 and bool((plain.x[:10] == 5.0).all())
    result = whitened_langevin(
        energy, start, n_steps=200, step_size=0.5, generator=generator
    )
    assert result.n_stuck == 0 and not bool((result.x == 5.0).any())
    assert abs(result.x.std().item() - 1.0) < 0.05

def test_the_whitened_sampler_shows_one_progress_bar_over_its_steps(capsys):
    """The pilot and the whitened stage showed two bars, of 10 and 30 steps for a
    call of 40; one bar now counts all 40."""
    pytest.importorskip("tqdm")
    X, _ = make_moons(200, noise=0.1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = EBFlowDensity(
            n_flows=1, max_iter=2, device="cpu", random_state=0, verbose=1
        ).fit(X)
        capsys.readouterr()
        model.sample_langevin(100, random_state=0, n_steps=40)
    said = capsys.readouterr().err
    assert "/40" in said and "/10" not in said and "/30" not in said


@pytest.mark.parametrize("marginal_transform", ["kde", None])
def test_observed_values_without_a_density_are_refused(correlated, marginal_transform):
    """A row so far out that its log-density is -inf has energy +inf (not the
    NaN the kernel marginals gave), and its missing values have no conditional
    density: sample_conditional refuses it (the mode search left NaN in it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = EBFlowDensity(n_flows=1, max_iter=5, device="cpu", random_state=0,
                              marginal_transform=marginal_transform).fit(correlated)
    far = np.array([[1e300, 0.0], [1.0, 0.5]])
    scores, energy = model.score_samples(far), model.energy(far)
    assert scores[0] == -np.inf and energy[0] == np.inf
    np.testing.assert_allclose(scores[1], -energy[1] - model.log_normalizer_)
    rows = np.array([[1.0, np.nan], [1e300, np.nan]])
    for method in ("langevin", "mode"):
        with pytest.raises(ValueError, match=r"Row\(s\) \[1\] of X have observed"):
            model.sample_conditional(rows, method=method, n_steps=5)


def _damaged(X, rate, seed):
    rng = np.random.RandomState(seed)
    damaged = X.copy()
    hidden = rng.uniform(size=X.shape) < rate
    hidden[hidden.all(axis=1), 0] = False
    damaged[hidden] = np.nan
    return damaged, hidden


def _small_imputer(**params):
    density = EBFlowDensity(
        n_layers=2,
        hidden_layer_sizes=(16,),
        max_iter=30,
        learning_rate=1e-2,
        device="cpu",
        random_state=0,
    )
    return EBFlowImputer(density, n_steps=100, random_state=0, **params)


def test_float32_input_gives_float32_output(correlated):
    """scikit-learn's imputers keep float32; this one returned float64."""
    damaged, _ = _damaged(correlated[:300], 0.3, seed=0)
    imputer = _small_imputer(n_refits=0, n_imputations=2)
    imputer.estimator.set_params(max_iter=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        imputer.fit(damaged)
    single = damaged.astype(np.float32)
    filled = imputer.transform(single)
    assert filled.dtype == np.float32
    # the same draws as for the float64 rows of the same values
    np.testing.assert_array_equal(
        filled, imputer.transform(single.astype(np.float64)).astype(np.float32)
    )
    assert imputer.sample_imputations(single[:5], 2).dtype == np.float32
    assert imputer.transform(damaged).dtype == np.float64


def test_sample_posterior_with_the_mode_is_refused(correlated):
    """method="mode" returned the mode whatever sample_posterior said."""
    damaged, _ = _damaged(correlated[:300], 0.3, seed=0)
    with pytest.raises(ValueError, match="sample_posterior=True returns a draw"):
        _small_imputer(method="mode", sample_posterior=True).fit(damaged)
    imputer = _small_imputer(method="mode", n_refits=0)
    imputer.estimator.set_params(max_iter=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        imputer.fit(damaged)
    imputer.set_params(sample_posterior=True)  # changed after fitting
    with pytest.raises(ValueError, match="set method='langevin' to draw"):
        imputer.transform(damaged)


@pytest.mark.parametrize("method", ["langevin", "mode"])
def test_imputer_fills_only_missing_entries_and_beats_the_mean(correlated, method):
    damaged, hidden = _damaged(correlated[:1000], 0.3, seed=0)
    original = damaged.copy()
    imputer = _small_imputer(method=method, n_imputations=10).fit(damaged)
    filled = imputer.transform(damaged)
    np.testing.assert_array_equal(damaged, original)
    assert not np.isnan(filled).any()
    np.testing.assert_array_equal(filled[~hidden], correlated[:1000][~hidden])
    error = np.sqrt(np.mean((filled[hidden] - correlated[:1000][hidden]) ** 2))
    baseline = SimpleImputer().fit_transform(damaged)
    mean_error = np.sqrt(np.mean((baseline[hidden] - correlated[:1000][hidden]) ** 2))
    # with correlation 0.8, the conditional mean's error is 0.6 of the marginal's
    assert error < 0.75 * mean_error, f"{method}: {error:.3f} vs mean {mean_error:.3f}"


def test_multiple_imputation_and_posterior_draws(correlated):
    damaged, hidden = _damaged(correlated[:400], 0.3, seed=1)
    imputer = _small_imputer(n_imputations=4).fit(damaged)
    draws = imputer.sample_imputations(damaged)
    assert draws.shape == (4, 400, 2)
    assert np.all(draws[:, ~hidden] == damaged[~hidden])
    assert np.all(draws[:, hidden].std(axis=0) > 0)
    average = imputer.transform(damaged)
    one = imputer.set_params(sample_posterior=True).transform(damaged)
    other = imputer.set_params(random_state=1).transform(damaged)
    for single in (one, other):
        np.testing.assert_array_equal(single[~hidden], damaged[~hidden])
    # One posterior draw, not the average of n_imputations draws; another seed draws
    # anew; and a draw sits about one conditional sd from the average (0.6 * 1.1 for
    # the data's law, more for this small model's wider conditionals).
    assert not np.any(one[hidden] == average[hidden])
    assert not np.any(one[hidden] == other[hidden])
    spread = np.sqrt(np.mean((one[hidden] - average[hidden]) ** 2))
    assert 0.4 < spread < 1.5, f"posterior draw vs average: rms {spread:.3f}"
    # and the average of draws is the better point estimate of the hidden truth
    truth = correlated[:400][hidden]
    rms_one = np.sqrt(np.mean((one[hidden] - truth) ** 2))
    rms_average = np.sqrt(np.mean((average[hidden] - truth) ** 2))
    assert rms_average < rms_one, f"average {rms_average:.3f}, draw {rms_one:.3f}"


def test_imputer_in_a_pipeline_and_grid_search(correlated):
    damaged, _ = _damaged(correlated[:300], 0.2, seed=2)
    target = correlated[:300, 0] + correlated[:300, 1]
    pipe = make_pipeline(_small_imputer(method="mode"), LinearRegression())
    search = GridSearchCV(
        pipe, {"ebflowimputer__n_steps": [20, 50]}, cv=2, error_score="raise"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(damaged, target)
    assert np.isfinite(search.best_score_)
    names = search.best_estimator_[:-1].get_feature_names_out(["a", "b"])
    assert list(names) == ["a", "b"]


def test_an_all_missing_column_is_dropped_or_kept_as_scikit_learn_does(correlated):
    # Like SimpleImputer: dropped with a warning, or kept (filled with 0) under
    # keep_empty_features; the density models the other features either way.
    damaged, _ = _damaged(correlated[:300], 0.2, seed=6)
    X = np.c_[damaged[:, :1], np.full(300, np.nan), damaged[:, 1:]]
    new = np.array([[0.5, np.nan, np.nan], [0.5, 7.0, 1.0]])
    with pytest.warns(UserWarning, match=r"Skipping feature\(s\) \[1\]"):
        dropped = _small_imputer(method="mode", n_refits=0).fit(X)
    assert dropped.empty_features_.tolist() == [1]
    assert dropped.estimator_.n_features_in_ == 2
    out = dropped.transform(new)
    assert out.shape == (2, 2) and not np.isnan(out).any()
    assert out[1].tolist() == [0.5, 1.0]  # observed entries as given
    assert dropped.get_feature_names_out(["a", "b", "c"]).tolist() == ["a", "c"]
    # The same density as an imputer fitted without the column.
    plain = _small_imputer(method="mode", n_refits=0).fit(np.delete(X, 1, axis=1))
    np.testing.assert_array_equal(out, plain.transform(np.delete(new, 1, axis=1)))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kept = _small_imputer(method="mode", n_refits=0, keep_empty_features=True)
        kept.fit(X)
    assert not [w for w in caught if "Skipping" in str(w.message)]  # kept: silent
    full = kept.transform(new)
    assert full.shape == (2, 3)
    assert full[:, 1].tolist() == [0.0, 7.0]  # missing -> 0, observed kept
    np.testing.assert_array_equal(full[:, [0, 2]], out)
    assert kept.get_feature_names_out(["a", "b", "c"]).tolist() == ["a", "b", "c"]
    draws = kept.sample_imputations(new, n_imputations=2)
    assert draws.shape == (2, 2, 3) and (draws[:, :, 1] == [0.0, 7.0]).all()
    # Its indicator column is there like any feature missing in fit.
    marked = _small_imputer(method="mode", n_refits=0, add_indicator=True)
    with pytest.warns(UserWarning, match="Skipping"):
        marked.fit(X)
    assert marked.indicator_features_.tolist() == [0, 1, 2]
    assert marked.get_feature_names_out(["a", "b", "c"]).tolist() == [
        "a",
        "c",
        "missingindicator_a",
        "missingindicator_b",
        "missingindicator_c",
    ]
    np.testing.assert_array_equal(marked.transform(new)[:, 2:], np.isnan(new))


def test_an_empty_feature_with_refits_draws_and_names(correlated):
    # The default method (averaged draws) after a refit, one draw per entry, the
    # draws of sample_imputations, and names with the feature kept and marked.
    import pandas as pd

    damaged, _ = _damaged(correlated[:200], 0.2, seed=7)
    X = pd.DataFrame(
        np.c_[damaged[:, :1], np.full(200, np.nan), damaged[:, 1:]],
        columns=["a", "b", "c"],
    )
    new = X.iloc[:5]
    observed = ~np.isnan(new.to_numpy()[:, [0, 2]])
    imputer = _small_imputer(n_refits=1, n_imputations=2).set_params(n_steps=20)
    imputer.estimator.set_params(max_iter=3)
    with pytest.warns(UserWarning, match=r"\[1\] \(b\) of X"):
        imputer.fit(X)
    out = imputer.transform(new)
    assert out.shape == (5, 2) and not np.isnan(out).any()
    np.testing.assert_array_equal(out[observed], new.to_numpy()[:, [0, 2]][observed])
    one = imputer.set_params(sample_posterior=True).transform(new)
    assert one.shape == (5, 2) and not np.isnan(one).any()
    assert imputer.sample_imputations(new, n_imputations=3).shape == (3, 5, 2)
    imputer.set_params(keep_empty_features=True, add_indicator=True).fit(X)
    assert imputer.get_feature_names_out().tolist() == [
        "a",
        "b",
        "c",
        "missingindicator_a",
        "missingindicator_b",
        "missingindicator_c",
    ]
    marked = imputer.transform(new)
    assert marked.shape == (5, 6) and (marked[:, 1] == 0.0).all()
    np.testing.assert_array_equal(marked[:, 3:], np.isnan(new.to_numpy()))


def test_a_constant_feature_is_filled_with_its_value_as_scikit_learn_does(
    correlated,
):
    """A feature whose observed values are all the same (a flag that never moved)
    made fit fail (the default density refuses constant features), where
    SimpleImputer and IterativeImputer fill it with the value. The density now
    leaves it out, and its missing entries take the value exactly."""
    from sklearn.impute import SimpleImputer

    damaged, _ = _damaged(correlated[:300], 0.2, seed=9)
    flag = np.full(300, 4.0)
    flag[::6] = np.nan  # missing in some rows, constant where observed
    X = np.c_[damaged[:, :1], flag, damaged[:, 1:]]
    new = np.array([[0.5, np.nan, np.nan], [0.5, 7.0, 1.0], [np.nan, np.nan, 1.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        imputer = _small_imputer(method="mode", n_refits=1).fit(X)
    assert imputer.constant_features_.tolist() == [1]
    assert imputer.constant_values_.tolist() == [4.0]
    assert imputer.estimator_.n_features_in_ == 2
    out = imputer.transform(new)
    assert out.shape == (3, 3) and not np.isnan(out).any()
    assert out[:, 1].tolist() == [4.0, 7.0, 4.0]  # the value; observed as given
    assert out[1].tolist() == [0.5, 7.0, 1.0]
    np.testing.assert_array_equal(
        out[:, 1], SimpleImputer().fit(X).transform(new)[:, 1]
    )
    # The other features as an imputer fitted without the flag fills them.
    plain = _small_imputer(method="mode", n_refits=1).fit(np.delete(X, 1, axis=1))
    np.testing.assert_array_equal(
        np.delete(out, 1, axis=1), plain.transform(np.delete(new, 1, axis=1))
    )
    assert imputer.get_feature_names_out(["a", "b", "c"]).tolist() == ["a", "b", "c"]
    draws = imputer.sample_imputations(new, n_imputations=2)
    assert draws.shape == (2, 3, 3) and (draws[:, :, 1] == [4.0, 7.0, 4.0]).all()
    # Beside an empty feature, dropped or kept.
    with_empty = np.c_[X, np.full(300, np.nan)]
    with pytest.warns(UserWarning, match=r"Skipping feature\(s\) \[3\]"):
        both = _small_imputer(method="mode", n_refits=0).fit(with_empty)
    assert both.transform(np.c_[new, [np.nan] * 3]).shape == (3, 3)
    both.set_params(keep_empty_features=True)
    kept = both.transform(np.c_[new, [np.nan] * 3])
    assert kept[:, 1].tolist() == [4.0, 7.0, 4.0] and kept[:, 3].tolist() == [0.0] * 3


def test_a_value_seen_only_in_rows_of_weight_zero_does_not_count(correlated):
    """Constant among the rows that count: a row of weight zero is as if it were
    not in X."""
    damaged, _ = _damaged(correlated[:200], 0.2, seed=10)
    X = np.c_[damaged, np.full(200, 2.0)]
    X[0, 2] = 9.0
    weights = np.ones(200)
    weights[0] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        imputer = _small_imputer(method="mode", n_refits=0)
        imputer.fit(X, sample_weight=weights)
    assert imputer.constant_features_.tolist() == [2]
    assert imputer.constant_values_.tolist() == [2.0]


def test_an_imputer_whose_observed_features_are_all_constant_is_refused():
    X = np.array([[1.0, np.nan], [1.0, 3.0], [np.nan, 3.0]] * 5)
    with pytest.raises(ValueError, match=r"is constant \(feature\(s\) \[0, 1\]\)"):
        _small_imputer().fit(X)


def test_an_imputer_with_no_observed_feature_is_refused():
    with pytest.raises(ValueError, match="No feature of X has an observed value"):
        _small_imputer().fit(np.full((10, 2), np.nan))


@pytest.mark.filterwarnings("default::sklearn.exceptions.ConvergenceWarning")
def test_chains_that_fail_say_so_and_bad_metropolis_is_refused(moons_model):
    def convergence_warnings(call):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
        return [str(w.message) for w in caught if w.category is ConvergenceWarning]

    # A sound run is silent.
    assert not convergence_warnings(
        lambda: moons_model.sample_langevin(50, random_state=0, n_steps=50)
    )
    # Far too large a step: MALA rejects every proposal and the chains stay at
    # their N(0, I) start; the unadjusted sampler and the mode search diverge.
    stuck = convergence_warnings(
        lambda: moons_model.sample_langevin(
            8, random_state=0, n_steps=30, step_size=1e4
        )
    )
    assert len(stuck) == 1 and "accepted 0.00%" in stuck[0]
    # Far too small a step, and too few steps for the adaptation to grow it:
    # MALA accepts every proposal and the chains stay near their start (this
    # was silent), for sample_langevin as for sample_conditional.
    for call in (
        lambda: moons_model.sample_langevin(
            8, random_state=0, n_steps=10, step_size=1e-6
        ),
        lambda: moons_model.sample_conditional(
            [[0.5, np.nan]] * 8, random_state=0, n_steps=10, step_size=1e-6
        ),
    ):
        timid = convergence_warnings(call)
        assert len(timid) == 1 and "Raise step_size or n_steps" in timid[0]
    # Few steps of a sound size reach far enough: silent, though they accept
    # almost every proposal.
    assert not convergence_warnings(
        lambda: moons_model.sample_conditional(
            [[0.5, np.nan]] * 8, random_state=0, n_steps=5
        )
    )
    diverged = convergence_warnings(
        lambda: moons_model.sample_langevin(
            8, random_state=0, n_steps=30, step_size=1e4, metropolis=False
        )
    )
    assert len(diverged) == 1 and "diverged" in diverged[0]
    mode = convergence_warnings(
        lambda: moons_model.sample_conditional(
            [[0.5, np.nan]], method="mode", n_steps=30, step_size=1e3
        )
    )
    assert len(mode) == 1 and "diverged" in mode[0]
    # A row whose observed value is itself very unlikely, its chain sound: silent.
    far = [[100.0, np.nan], [0.5, np.nan]]
    assert moons_model.score_samples([[100.0, 0.0]])[0] < -50 * 2
    for method in ("mode", "langevin"):
        assert not convergence_warnings(
            lambda method=method: moons_model.sample_conditional(
                far, method=method, random_state=0, n_steps=30
            )
        )
    for method in ("sample_langevin", "sample_conditional"):
        args = (2,) if method == "sample_langevin" else ([[0.5, np.nan]],)
        with pytest.raises(ValueError, match="metropolis='no' must be True"):
            getattr(moons_model, method)(*args, metropolis="no")


def test_a_failed_imputer_fit_keeps_the_previous_one(correlated):
    damaged, _ = _damaged(correlated[:300], 0.2, seed=3)
    imputer = _small_imputer(method="mode", n_refits=0).fit(damaged)
    state = dict(vars(imputer))
    filled = imputer.transform(damaged)
    with pytest.raises(ValueError, match="No feature of X has an observed value"):
        imputer.fit(np.full_like(damaged, np.nan))
    assert vars(imputer) == state
    np.testing.assert_array_equal(imputer.transform(damaged), filled)
    # Interrupted inside the density's fit: the same.
    fresh = _small_imputer(method="mode", n_refits=0)
    fresh.estimator.set_params(max_iter=0)  # refused by the density: fit raises
    with pytest.raises(ValueError, match="max_iter"):
        fresh.fit(damaged)
    assert not hasattr(fresh, "n_features_in_")


def test_a_column_observed_only_in_rows_of_weight_zero_has_no_observed_value(
    correlated,
):
    X = correlated[:200].copy()
    X[:100, 1] = np.nan
    weights = np.r_[np.ones(100), np.zeros(100)]
    with pytest.warns(UserWarning, match=r"\[1\].*positive sample_weight"):
        imputer = _small_imputer(n_refits=0, method="mode").fit(
            X, sample_weight=weights
        )
    assert imputer.empty_features_.tolist() == [1]
    assert imputer.transform(X[:3]).shape == (3, 1)


def test_the_refits_leave_out_the_rows_of_weight_zero():
    """A row of weight zero is as if it were not in X: its value outside the
    logit box (fitted on the rows that count) is not conditioned on."""
    rng = np.random.RandomState(1)
    X = rng.uniform(1.0, 4.0, size=(200, 2))
    X[:20, 1] = np.nan
    X[0, 0] = 50.0
    weights = np.r_[0.0, np.ones(199)]
    density = EBFlowDensity(
        preprocessing="logit", max_iter=2, n_layers=2, device="cpu", random_state=0
    )
    imputer = EBFlowImputer(density, method="mode", n_refits=1, n_steps=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        imputer.fit(X, sample_weight=weights)
    filled = imputer.transform(X[1:])
    assert np.isfinite(filled).all()


@pytest.mark.parametrize("bad", [0, -1, 2.5, "3", True])
def test_sample_imputations_refuses_a_bad_count(correlated, bad):
    damaged, _ = _damaged(correlated[:200], 0.2, seed=4)
    imputer = _small_imputer(method="mode", n_refits=0)
    imputer.estimator.set_params(max_iter=2)
    imputer.fit(damaged)
    with pytest.raises(ValueError, match="n_imputations must be a positive integer"):
        imputer.sample_imputations(damaged[:3], n_imputations=bad)


def test_an_imputation_count_of_true_is_refused_at_fit(correlated):
    """True passes scikit-learn's Integral constraint: fit took it, and transform
    then failed with "an integer is required" (found by a review)."""
    damaged, _ = _damaged(correlated[:200], 0.2, seed=4)
    imputer = _small_imputer(method="langevin", n_refits=0, n_imputations=True)
    with pytest.raises(ValueError, match="n_imputations must be a positive integer"):
        imputer.fit(damaged)


def test_the_acceptance_rate_counts_only_chains_with_an_entry_to_update():
    # Steps far too large for N(0, 1): every proposal of the chains that move is
    # rejected. Complete rows (nothing to update) always "accept"; 95 of them
    # must not hide the five failing chains from the rate.
    from skebflow._langevin import langevin

    x = torch.zeros(100, 2, dtype=torch.float64)
    mask = torch.zeros(100, 2, dtype=torch.bool)
    mask[:5, 1] = True
    result = langevin(
        lambda rows: 0.5 * rows.square().sum(1),
        x,
        n_steps=20,
        step_size=1e4,
        mask=mask,
        generator=torch.Generator().manual_seed(0),
    )
    assert result.acceptance_rate < 0.01
    nothing_to_update = langevin(
        lambda rows: 0.5 * rows.square().sum(1),
        x,
        n_steps=5,
        mask=torch.zeros_like(mask),
    )
    assert nothing_to_update.acceptance_rate == 1.0


def test_an_imputer_fitted_on_a_dataframe_transforms_one_without_warnings():
    pd = pytest.importorskip("pandas")
    rng = np.random.RandomState(0)
    frame = pd.DataFrame(rng.normal(size=(120, 3)), columns=["a", "b", "c"])
    frame.iloc[::5, 1] = np.nan
    density = EBFlowDensity(
        n_flows=1,
        max_iter=3,
        n_layers=1,
        hidden_layer_sizes=(8,),
        device="cpu",
        random_state=0,
        early_stopping=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        imputer = EBFlowImputer(
            density, n_steps=3, n_imputations=2, random_state=0
        ).fit(frame)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "X does not have valid feature names"
        filled = imputer.transform(frame)
    assert not np.isnan(filled).any()


def test_a_numeric_missing_value_marker_imputes_exactly_as_nan_does(correlated):
    """missing_values=-999 marks the same entries NaN would: the same fit, the same
    draws, bit for bit; the caller's array is untouched; NaN is then refused."""
    damaged, hidden = _damaged(correlated[:300], 0.2, seed=3)
    marked = np.where(np.isnan(damaged), -999.0, damaged)
    original = marked.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        by_nan = _small_imputer(method="mode").fit(damaged)
        by_marker = _small_imputer(method="mode", missing_values=-999).fit(marked)
    np.testing.assert_array_equal(marked, original)
    filled = by_marker.transform(marked)
    np.testing.assert_array_equal(filled, by_nan.transform(damaged))
    assert not np.any(filled == -999.0)
    np.testing.assert_array_equal(filled[~hidden], correlated[:300][~hidden])
    with pytest.raises(ValueError, match="NaN"):
        by_marker.transform(damaged)


def test_add_indicator_appends_the_missingness_of_the_features_missing_in_fit(
    correlated,
):
    damaged = correlated[:200].copy()
    damaged[::4, 1] = np.nan  # only the second feature has missing entries in fit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        imputer = _small_imputer(method="mode", add_indicator=True).fit(damaged)
    np.testing.assert_array_equal(imputer.indicator_features_, [1])
    new = np.array([[0.5, np.nan], [np.nan, 0.5], [0.5, 0.5]])
    out = imputer.transform(new)
    assert out.shape == (3, 3)
    # the column marks feature 1's missingness; feature 0, never missing in fit,
    # gets no column (as sklearn's MissingIndicator with error_on_new=False)
    np.testing.assert_array_equal(out[:, 2], [1.0, 0.0, 0.0])
    assert not np.isnan(out).any()
    without = imputer.set_params(add_indicator=False).fit(damaged).transform(new)
    np.testing.assert_array_equal(out[:, :2], without)
    assert imputer.get_feature_names_out(["a", "b"]).tolist() == ["a", "b"]
    imputer.set_params(add_indicator=True).fit(damaged)
    assert imputer.get_feature_names_out(["a", "b"]).tolist() == [
        "a",
        "b",
        "missingindicator_b",
    ]
    with pytest.raises(ValueError, match="input_features"):
        imputer.get_feature_names_out(["a", "b", "c"])


def test_pandas_na_marks_missing_as_nan_does(correlated):
    pd = pytest.importorskip("pandas")
    damaged, _ = _damaged(correlated[:200], 0.2, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        by_nan = _small_imputer(method="mode").fit(damaged)
        by_na = _small_imputer(method="mode", missing_values=pd.NA).fit(damaged)
    np.testing.assert_array_equal(by_na.transform(damaged), by_nan.transform(damaged))
    assert by_na.__sklearn_tags__().input_tags.allow_nan


def test_indicator_columns_come_from_the_rows_that_count():
    """A row of weight zero is as if it were not in X: a feature missing only there
    gets no indicator column."""
    X = np.random.RandomState(0).normal(size=(120, 2))
    X[0, 0] = np.nan  # only in the row of weight zero
    X[1::4, 1] = np.nan
    weights = np.ones(len(X))
    weights[0] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        weighted = _small_imputer(method="mode", add_indicator=True, n_refits=0)
        weighted.fit(X, sample_weight=weights)
        without = _small_imputer(method="mode", add_indicator=True, n_refits=0)
        without.fit(X[1:])
    np.testing.assert_array_equal(weighted.indicator_features_, [1])
    np.testing.assert_array_equal(without.indicator_features_, [1])


def test_an_imputer_from_before_missing_values_existed_still_works(correlated):
    """A pickle (or model file) of an imputer fitted before missing_values and
    add_indicator existed lacks them and indicator_features_: it keeps imputing
    NaN entries without indicator columns."""
    import pickle

    damaged, _ = _damaged(correlated[:200], 0.2, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        imputer = _small_imputer(method="mode").fit(damaged)
    expected = imputer.transform(damaged)
    old_state = {
        name: value
        for name, value in imputer.__getstate__().items()
        if name
        not in (
            "missing_values",
            "add_indicator",
            "indicator_features_",
            "keep_empty_features",
            "empty_features_",
            "constant_features_",
            "constant_values_",
        )
    }
    old = EBFlowImputer.__new__(EBFlowImputer)
    old.__setstate__(old_state)
    restored = pickle.loads(pickle.dumps(old))
    assert restored.get_params()["add_indicator"] is False
    np.testing.assert_array_equal(restored.transform(damaged), expected)
    assert restored.get_feature_names_out().tolist() == ["x0", "x1"]


# --------------------------------------------------- interruptions and messages


def test_an_interrupted_first_fit_skips_the_refits(correlated, monkeypatch):
    from _helpers import interrupt_epoch

    damaged, _ = _damaged(correlated[:300], 0.2, seed=5)
    calls = interrupt_epoch(monkeypatch, on_call=3)  # Ctrl-C in the first fit
    imputer = _small_imputer(method="mode", n_refits=2)
    with pytest.warns(UserWarning, match="Imputation interrupted by user"):
        imputer.fit(damaged)
    assert calls["n"] == 3  # no epoch after the interrupt: no refit ran
    assert imputer.estimator_.n_iter_ == 2
    filled = imputer.transform(damaged)
    assert np.isfinite(filled).all()


def test_an_interrupt_in_a_refits_sampler_keeps_the_last_fit(correlated, monkeypatch):
    damaged, _ = _damaged(correlated[:300], 0.2, seed=6)
    real = EBFlowDensity.sample_conditional

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    imputer = _small_imputer(method="mode", n_refits=2)
    monkeypatch.setattr(EBFlowDensity, "sample_conditional", interrupted)
    with pytest.warns(UserWarning, match="Imputation interrupted by user"):
        imputer.fit(damaged)
    monkeypatch.setattr(EBFlowDensity, "sample_conditional", real)
    # the first fit, whole, and no longer warm-started
    assert imputer.estimator_.n_iter_ == 30
    assert imputer.estimator_.warm_start is False
    assert np.isfinite(imputer.transform(damaged)).all()


@pytest.mark.parametrize("where", ["first fit", "refit's sampler", "refit's fit"])
def test_an_interrupted_refit_of_a_fitted_imputer_keeps_it(
    correlated, monkeypatch, where
):
    """A fitted imputer, fitted again and interrupted, was replaced by the
    half-trained new one (of other columns, here) and the KeyboardInterrupt
    swallowed; the density and the detector keep their previous model and let it
    through, and so does the imputer now."""
    from _helpers import interrupt_epoch

    damaged, _ = _damaged(correlated[:300], 0.2, seed=8)
    density = EBFlowDensity(
        n_flows=1,
        n_layers=1,
        hidden_layer_sizes=(8,),
        max_iter=5,
        early_stopping=False,
        device="cpu",
        random_state=0,
    )
    imputer = EBFlowImputer(density, method="mode", n_steps=20, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        imputer.fit(damaged)
    before = imputer.transform(damaged)
    fitted = imputer.estimator_
    other = np.hstack([damaged, damaged[:, :1] * 2.0])  # three columns
    if where == "refit's sampler":

        def interrupted(self, *args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(EBFlowDensity, "sample_conditional", interrupted)
    else:  # epochs: 5 in the first fit, then the refit's
        interrupt_epoch(monkeypatch, on_call=3 if where == "first fit" else 7)
    with pytest.raises(KeyboardInterrupt), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        imputer.fit(other)
    monkeypatch.undo()
    assert imputer.estimator_ is fitted and imputer.n_features_in_ == 2
    np.testing.assert_array_equal(imputer.transform(damaged), before)


def test_the_refits_leave_the_users_warm_start_as_it_was(correlated):
    damaged, _ = _damaged(correlated[:200], 0.2, seed=7)
    density = EBFlowDensity(
        n_layers=2, hidden_layer_sizes=(8,), max_iter=2, warm_start=True, device="cpu"
    )
    imputer = EBFlowImputer(density, method="mode", n_refits=1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        imputer.fit(damaged)
    assert imputer.estimator_.warm_start is True
    assert density.warm_start is True and not hasattr(density, "n_iter_")


def test_the_densitys_errors_name_the_features_of_x():
    """The density models the features that have an observed value and vary: its
    errors' feature indices are mapped to X's (an empty feature 0, a constant 2),
    in messages that say "feature" in lower case too."""
    uniform = np.random.RandomState(0).uniform(size=(300, 3))
    X = np.c_[np.full(300, np.nan), uniform[:, 0], np.full(300, 7.0), uniform[:, 1:]]
    X[:, 3] += 5.0  # outside the density's bounds
    X[::5, 4] = np.nan
    density = EBFlowDensity(preprocessing="logit", bounds=(0.0, 1.0), max_iter=2)
    with (
        pytest.warns(UserWarning, match="Skipping feature"),
        pytest.raises(
            ValueError,
            match=r"feature 1: .* skip the feature\(s\) \[0, 2\] of X: index 0 above"
            r" is feature 1 of X, 1 is 3, 2 is 4",
        ),
    ):
        EBFlowImputer(density, random_state=0).fit(X)


def test_one_row_is_refused_by_the_imputer(correlated):
    with pytest.raises(ValueError, match="minimum of 2 is required by EBFlowImputer"):
        _small_imputer().fit(correlated[:1])


def test_a_parameter_error_of_the_density_passes_through_unchanged(correlated):
    from sklearn.utils._param_validation import InvalidParameterError

    X = np.c_[np.full(300, np.nan), correlated[:300]]
    X[::5, 2] = np.nan
    imputer = _small_imputer()
    imputer.estimator.set_params(max_iter=-3)
    with (
        pytest.warns(UserWarning, match="Skipping feature"),
        pytest.raises(InvalidParameterError, match="max_iter") as raised,
    ):
        imputer.fit(X)
    assert "feature indices" not in str(raised.value)


def test_an_interrupted_trimmed_refit_of_a_detector_ends_the_rounds(monkeypatch):
    from _helpers import interrupt_epoch

    from skebflow import EBFlowOutlierDetector

    rng = np.random.RandomState(0)
    X = rng.normal(size=(200, 2))
    X[::5, 1] = np.nan
    detector = EBFlowOutlierDetector(
        n_flows=1,
        max_iter=3,
        n_layers=1,
        hidden_layer_sizes=(4,),
        trim_fraction=0.1,
        early_stopping=False,
        device="cpu",
        random_state=0,
    )
    calls = interrupt_epoch(monkeypatch, on_call=4)  # the trimmed refit's first
    with pytest.warns(UserWarning, match="Imputation interrupted by user"):
        imputer = EBFlowImputer(detector, n_refits=2, n_steps=3, random_state=0)
        imputer.fit(X)
    assert calls["n"] == 4  # no round ran after it
    assert imputer.estimator_.n_trimmed_ == 0  # the first fit kept


def test_an_observed_value_outside_the_logit_box_is_refused_not_clamped():
    """Such a row has no density (score_samples gives -inf), so its missing values
    have no conditional distribution: conditioning on the box's edge instead would
    be a silent wrong answer."""
    rng = np.random.RandomState(0)
    X = rng.uniform(1.0, 4.0, size=(200, 2))
    model = EBFlowDensity(
        preprocessing="logit", max_iter=2, device="cpu", random_state=0
    ).fit(X)
    assert model.score_samples([[50.0, 2.0]])[0] == -np.inf
    with pytest.raises(ValueError, match=r"Row\(s\) \[1\] of X have observed values"):
        model.sample_conditional([[3.0, np.nan], [50.0, np.nan]], random_state=0)
    # The imputer, which samples through it, refuses the row too.
    imputer = EBFlowImputer(
        estimator=EBFlowDensity(preprocessing="logit", max_iter=2, device="cpu"),
        n_refits=0,
        n_imputations=1,
        n_steps=5,
        random_state=0,
    ).fit(X)
    with pytest.raises(ValueError, match="outside the box"):
        imputer.transform([[50.0, np.nan]])
    # ... naming the rows of X, not of X repeated for each imputation
    imputer.set_params(n_imputations=5)
    with pytest.raises(ValueError, match=r"Row\(s\) \[1\] of X"):
        imputer.transform([[3.0, np.nan], [50.0, np.nan]])
    # A complete row is not conditioned on: it comes back as it is, alone or not.
    complete = [[50.0, 2.0]]
    np.testing.assert_array_equal(model.sample_conditional(complete), complete)
    mixed = model.sample_conditional([[3.0, np.nan], [50.0, 2.0]], n_steps=5)
    np.testing.assert_array_equal(mixed[1], complete[0])
    np.testing.assert_array_equal(imputer.transform([[3.0, np.nan], *complete])[1], [50.0, 2.0])
    # A row inside the box, its missing entry anywhere, is imputed inside the box.
    filled = model.sample_conditional([[3.0, np.nan]], random_state=0, n_steps=20)
    lower, upper = model._preprocessing_spec["lower"], model._preprocessing_spec["upper"]
    assert filled[0, 0] == 3.0 and lower[1] < filled[0, 1] < upper[1]


def test_the_mode_of_a_constant_integer_column_is_its_value():
    """Under dequantize=True a constant integer column is uniform on its bin
    (BinProbit): its density is flat there and far lower outside, so the mode
    search, whose last step may end just past the bin's edge, returns the
    constant, never the next integer (a review found 2 and 4 for a column of 3)."""
    rng = np.random.RandomState(0)
    n = 300
    X = np.c_[rng.normal(size=n), np.full(n, 3.0), rng.randint(0, 4, n),
              np.full(n, 7.0)]
    X[rng.uniform(size=n) < 0.5, 1:] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        imputer = EBFlowImputer(
            EBFlowDensity(n_layers=1, hidden_layer_sizes=(8,), max_iter=3, n_flows=1,
                          dequantize=True, device="cpu", random_state=0),
            method="mode", n_steps=300, random_state=0,
        ).fit(X)
        filled = imputer.transform(X)
    assert np.all(filled[:, 1] == 3.0) and np.all(filled[:, 3] == 7.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_a_float32_placeholder_is_found_in_float32_input(dtype):
    """missing_values=0.1 in float32 (or float16) input is float32(0.1), as
    scikit-learn's SimpleImputer finds it; a float64 comparison missed it, and the
    placeholder was fitted and returned as an observation."""
    rng = np.random.RandomState(0)
    X = rng.normal(size=(50, 2)).astype(dtype)
    X[:10, 1] = 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        imputer = EBFlowImputer(
            EBFlowDensity(n_layers=1, hidden_layer_sizes=(8,), max_iter=2, n_flows=1,
                          device="cpu", random_state=0),
            missing_values=0.1, add_indicator=True, random_state=0,
        )
        filled = imputer.fit_transform(X)
    expected = SimpleImputer(missing_values=0.1, add_indicator=True).fit(X)
    assert imputer.indicator_features_.tolist() == expected.indicator_.features_.tolist()
    assert filled.shape == (50, 3) and not np.any(filled[:10, 1] == dtype(0.1))
    np.testing.assert_array_equal(filled[:, 2], np.r_[np.ones(10), np.zeros(40)])


def test_nan_beside_a_numeric_placeholder_is_refused_clearly():
    X = np.random.RandomState(0).normal(size=(20, 2))
    X[0, 1], X[1, 0] = -1.0, np.nan
    with pytest.raises(ValueError, match=r"X contains 1 NaN entries, but"
                       r" missing_values=-1 .* use missing_values=np.nan"):
        EBFlowImputer(missing_values=-1).fit(X)


def test_a_dataframe_without_columns_is_refused_in_every_method():
    """Every method that takes X says that it has no columns, as fit does, not
    scikit-learn's "at least one array or dtype is required"."""
    pd = pytest.importorskip("pandas")
    X = np.random.RandomState(0).normal(size=(40, 2))
    X[::5, 0] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        imputer = EBFlowImputer(
            EBFlowDensity(n_layers=1, hidden_layer_sizes=(8,), max_iter=2, n_flows=1,
                          device="cpu", random_state=0),
            n_steps=2, random_state=0,
        ).fit(X)
    density = imputer.estimator_
    empty = pd.DataFrame(index=range(5))
    calls = [imputer.transform, EBFlowImputer().fit, density.score_samples,
             density.score, density.sample_conditional]
    for call in calls:
        with pytest.raises(ValueError, match="X has no columns"):
            call(empty)


def test_mala_adapts_each_chains_step_to_a_narrow_density():
    """A density 20 times narrower than the default step suits (a missing value
    nearly fixed by the observed ones): at a fixed step the chains accepted a few
    per cent of their proposals and stayed near their wide start; adapted during
    the burn-in, they reach the density's spread and accept about half of them."""
    generator = torch.Generator().manual_seed(0)
    sd = 0.05
    start = torch.randn(4000, 1, generator=generator, dtype=torch.float64)
    result = langevin(lambda x: 0.5 * (x / sd).square().sum(1), start, n_steps=300,
                      step_size=0.05, generator=generator)
    assert abs(result.x.std().item() - sd) < 0.1 * sd
    assert 0.4 < result.acceptance_rate < 0.75


def test_mala_chains_started_outside_the_support_enter_it():
    """A chain at infinite energy takes any finite proposal (and keeps its step
    until it does): started at -1.2 with the support x > -1, every chain enters
    and then samples the density there."""
    generator = torch.Generator().manual_seed(0)

    def energy(x):
        inside = x[:, 0] > -1.0
        return torch.where(inside, 0.5 * x[:, 0].square(), torch.inf)

    start = torch.full((2000, 1), -1.2, dtype=torch.float64)
    result = langevin(energy, start, n_steps=200, step_size=0.2, generator=generator)
    assert bool((result.x[:, 0] > -1.0).all())
    assert result.acceptance_rate > 0.4


def test_a_chain_stuck_at_its_start_says_so_among_ordinary_chains():
    """A row whose missing value the observed ones nearly fix (conditional sd 1e-4
    of the step's scale) accepts no proposal and ends at its random start. Alone,
    the pooled acceptance said so; beside ordinary rows it was hidden, and its
    start passed the divergence check, which compares the end with the start."""
    X = np.random.RandomState(0).normal(size=(500, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = EBFlowDensity(architecture="fc", n_layers=1, n_flows=1,
                              objective="ml", max_iter=3, device="cpu",
                              marginal_transform=None, random_state=0).fit(X)
    with torch.no_grad():  # y1 | y0 ~ N(y0, 1e-8) in standardized units
        model.flow_.layers[0].weight.copy_(
            torch.tensor([[1.0, 0, 0], [-1e4, 1e4, 0], [0, 0, 1.0]]))
        model.flow_.layers[0].bias.zero_()
    standardize = model.preprocessing_.steps[0]
    scale, mean = standardize.scale.numpy(), standardize.mean.numpy()
    narrow = np.array([0.5, np.nan, 0.0]) * scale + mean
    ordinary = np.array([0.5, 0.5, np.nan]) * scale + mean
    rows = np.vstack([narrow] + [ordinary] * 20)
    with pytest.warns(ConvergenceWarning, match="1 of the 21 Langevin chains"):
        model.sample_conditional(rows, random_state=0)


def test_a_shared_step_keeps_exact_draws_exact():
    """Chains started at exact draws of exp(-x^4/4) must stay exact. With a step
    adapted per chain they ended with E[x^4] 8 % low (a chain's step followed its
    own path); with one step for all (sample_langevin's) they stay."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=400_000)
    keep = np.log(rng.uniform(size=z.size)) < -(z**4) / 4 + z**2 / 2 - 0.25
    exact = z[keep][:40_000]  # rejection sampling from the N(0, 1) envelope
    moments = np.mean(exact**2), np.mean(exact**4)
    errors = np.std(exact**2) / 200, np.std(exact**4) / 200  # 40 000 = 200^2
    result = langevin(lambda x: (x**4).sum(1) / 4,
                      torch.tensor(exact[:, None]), n_steps=100, step_size=0.5,
                      generator=torch.Generator().manual_seed(1), shared_step=True)
    draws = result.x[:, 0].numpy()
    # the reference draws are a sample too: their error counts twice
    assert abs(np.mean(draws**2) - moments[0]) < 4 * np.sqrt(2) * errors[0]
    assert abs(np.mean(draws**4) - moments[1]) < 4 * np.sqrt(2) * errors[1]


def test_many_stuck_chains_in_a_short_run_say_so():
    """With 15 counted steps (n_steps=30) a quarter of the chains at a step far too
    large accepted nothing and ended at their random start, with no warning: a
    chain counted as stuck only after 20 refusals. From 10, a share of 5 % of
    such chains says so; an ordinary short run stays quiet."""

    def energy(x):
        return 0.5 * x.square().sum(1)

    start = torch.randn(2000, 1, generator=torch.Generator().manual_seed(0),
                        dtype=torch.float64)
    mask = torch.ones_like(start, dtype=torch.bool)
    too_large = langevin(energy, start, mask=mask, n_steps=30, step_size=50.0,
                         generator=torch.Generator().manual_seed(1))
    assert too_large.n_stuck > 0.05 * start.shape[0]
    ordinary = langevin(energy, start, mask=mask, n_steps=30, step_size=0.5,
                        generator=torch.Generator().manual_seed(1))
    assert ordinary.n_stuck == 0
    fewer = langevin(energy, start, mask=mask, n_steps=16, step_size=50.0,
                     generator=torch.Generator().manual_seed(1))
    assert fewer.n_stuck == 0  # 8 counted steps: too few to tell


def test_a_single_step_runs_at_temperature_one():
    """The temperature falls to 1 over the first half of the steps: with one step
    there is no first half, and the step targets the density itself (it ran at
    initial_temperature, a hundred times too wide)."""
    start = torch.randn(20000, 1, generator=torch.Generator().manual_seed(0),
                        dtype=torch.float64)
    for metropolis in (False, True):
        draws = [
            langevin(lambda x: 0.5 * x.square().sum(1), start, n_steps=1,
                     step_size=0.5, initial_temperature=temperature,
                     metropolis=metropolis,
                     generator=torch.Generator().manual_seed(1)).x
            for temperature in (100.0, 1.0)
        ]
        torch.testing.assert_close(draws[0], draws[1], rtol=0, atol=0)
        assert float(draws[0].var()) < 1.5  # at 100: about 70


def test_the_imputer_keeps_an_exact_relation_of_the_complete_rows():
    """A total beside its parts: the first fill must not break it, so that the
    density finds and models it (it once broke it, and filled rows lay up to 785
    widths off it); a row missing one part gets it back from the total."""
    rng = np.random.RandomState(0)
    parts = rng.normal(size=(1500, 3)) * [1.0, 2.0, 0.5]
    X = np.c_[parts, parts.sum(axis=1)]
    holes = X.copy()
    holes[rng.uniform(size=X.shape) < 0.1] = np.nan
    density = EBFlowDensity(n_flows=1, max_iter=30, device="cpu", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)  # rows missing two parts
        imputer = EBFlowImputer(density, n_refits=1, n_steps=50, random_state=0)
        filled = imputer.fit(holes).transform(holes)
    assert imputer.estimator_.dependent_features_.tolist() == [False] * 3 + [True]
    width = 1e-3 * X[:, 3].std()
    off = np.abs(filled[:, 3] - filled[:, :3].sum(axis=1)) / width
    one_missing = np.isnan(holes).sum(axis=1) == 1
    assert one_missing.sum() > 300
    assert np.all(off[one_missing] < 10.0)


def _hot_deck(holes, rng):
    missing, filled = np.isnan(holes), holes.copy()
    for column in range(holes.shape[1]):
        rows = missing[:, column]
        filled[rows, column] = rng.choice(holes[~rows, column], size=rows.sum())
    return missing, filled


def test_the_first_fill_solves_shared_inputs_and_the_input_that_moves_most():
    """From a review: relations sharing an input are both kept, a total of a
    large part and a small one solves the large part (a solved small part was
    thousands of its spreads off), and integer columns or a relation that only
    the complete rows keep by chance change nothing."""
    from skebflow._impute import _keep_relations

    rng = np.random.RandomState(0)
    parts = rng.normal(size=(100, 3))
    X = np.c_[parts, parts[:, 0] + parts[:, 1], parts[:, 0] + parts[:, 2]]
    holes = X.copy()
    holes[:10, [0, 1]] = np.nan  # both inputs of the first total
    kept = _keep_relations(holes, *_hot_deck(holes, rng), None)
    np.testing.assert_allclose(kept[:10], X[:10], atol=1e-12)  # exactly recovered
    income, fee = rng.normal(5e4, 1e4, 300), rng.normal(10.0, 1.0, 300)
    X = np.c_[income, fee, income + fee]
    holes = X.copy()
    holes[:20, [0, 1]] = np.nan
    kept = _keep_relations(holes, *_hot_deck(holes, rng), None)
    np.testing.assert_allclose(kept[:, 2], kept[:, 0] + kept[:, 1], rtol=1e-12)
    assert np.all(np.abs(kept[:20, 1] - 10.0) < 5.0)  # the fee keeps a draw
    counts = np.c_[rng.normal(size=200), rng.poisson(3.0, size=(200, 2))]
    counts = np.c_[counts, counts[:, 1] + counts[:, 2]].astype(float)
    holes = counts.copy()
    holes[rng.uniform(size=holes.shape) < 0.1] = np.nan
    missing, filled = _hot_deck(holes, rng)
    assert not np.array_equal(_keep_relations(holes, missing, filled, None), filled)
    np.testing.assert_array_equal(
        _keep_relations(holes, missing, filled, None, dequantized=True), filled
    )
    chance = rng.normal(size=(200, 4))
    holes = chance.copy()
    holes[rng.uniform(size=holes.shape) < 0.45] = np.nan
    complete = ~np.isnan(holes).any(axis=1)
    holes[complete, 3] = holes[complete, 0] - 0.1 * holes[complete, 1]  # by chance
    missing, filled = _hot_deck(holes, rng)
    np.testing.assert_array_equal(_keep_relations(holes, missing, filled, None), filled)


def test_a_density_that_does_not_model_relations_gets_the_plain_first_fill():
    rng = np.random.RandomState(0)
    parts = rng.normal(size=(400, 2))
    holes = np.c_[parts, parts.sum(axis=1)]
    holes[rng.uniform(size=holes.shape) < 0.1] = np.nan
    density = EBFlowDensity(
        n_flows=1, max_iter=3, device="cpu", random_state=0, linear_relations="warn"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no hyperplane warning
        warnings.simplefilter("ignore", ConvergenceWarning)
        EBFlowImputer(density, n_refits=0, random_state=0).fit(holes)


def test_the_imputers_warnings_name_rows_of_the_users_x():
    """sample_imputations stacks copies of X: the relations warning named rows
    of the stack (5, 105, 205, ...), not of X."""
    rng = np.random.RandomState(0)
    parts = rng.normal(size=(600, 3))
    X = np.c_[parts, parts.sum(axis=1)]
    density = EBFlowDensity(n_flows=1, max_iter=5, device="cpu", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        imputer = EBFlowImputer(density, n_refits=0, n_steps=5, random_state=0).fit(X)
    rows = X[:20].copy()
    rows[7, [0, 1]] = np.nan  # two parts of the observed total missing
    with pytest.warns(UserWarning, match=r"Row\(s\) \[7\] of X observe") as caught:
        warnings.simplefilter("ignore", ConvergenceWarning)
        imputer.sample_imputations(rows, n_imputations=3)
    assert not any("27" in str(warning.message) for warning in caught)


def test_a_rows_fill_does_not_depend_on_the_rows_beside_it():
    """transform averages Langevin draws; their noise came from one generator
    for the whole batch, so a row's fill moved with the batch and its order (by
    up to 0.6 here). Each row now draws from a stream keyed by its values and the
    seed: the same fill alone, in a batch, reversed, or beside a copy of itself."""
    rng = np.random.RandomState(0)
    x = rng.normal(size=300)
    X = np.c_[x, 2 * x + 0.3 * rng.normal(size=300)]
    X[::4, 1] = np.nan
    density = EBFlowDensity(max_iter=10, n_flows=1, device="cpu", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        imputer = EBFlowImputer(density, n_refits=0, n_steps=40, random_state=0)
        imputer.fit(X)
        rows = X[:40:4]
        batch = imputer.transform(rows)
        reversed_ = imputer.transform(rows[::-1])[::-1]
        alone = np.vstack([imputer.transform(row[None]) for row in rows])
        doubled = imputer.transform(np.vstack([rows, rows]))
        # one draw per row: a row's draw is its own; a copy draws afresh
        draw = imputer.set_params(sample_posterior=True).transform(rows)
        draw_reversed = imputer.transform(rows[::-1])[::-1]
        draws_doubled = imputer.transform(np.vstack([rows, rows]))
        # several draws per row: a row's first copy draws as the row alone (the
        # copies of a row were interleaved with the draws, found by a review)
        several = imputer.sample_imputations(rows[:2], n_imputations=4)
        beside_a_copy = imputer.sample_imputations(rows[[0, 0, 1]], n_imputations=4)
    np.testing.assert_allclose(beside_a_copy[:, [0, 2]], several, rtol=0, atol=1e-9)
    assert not np.allclose(beside_a_copy[:, 1, 1], several[:, 0, 1])
    np.testing.assert_allclose(batch, reversed_, rtol=0, atol=1e-9)
    np.testing.assert_allclose(batch, alone, rtol=0, atol=1e-9)
    np.testing.assert_allclose(np.vstack([batch, batch]), doubled, rtol=0, atol=1e-9)
    assert np.ptp(batch[:, 1]) > 1.0  # the fills differ from row to row
    np.testing.assert_allclose(draw, draw_reversed, rtol=0, atol=1e-9)
    np.testing.assert_allclose(draws_doubled[:10], draw, rtol=0, atol=1e-9)
    assert not np.allclose(draws_doubled[10:, 1], draw[:, 1])


def test_verbose_shows_the_langevin_steps_and_changes_no_draw(capsys):
    """The imputer's fills run Langevin chains for minutes at its defaults, with
    no sign of progress (found by a new user's review): the density's verbose
    now shows their steps too, and draws the same."""
    rng = np.random.RandomState(0)
    X = rng.normal(size=(200, 3))
    X[::5, 1] = np.nan
    fills = {}
    for verbose in (0, 1):
        density = EBFlowDensity(
            n_flows=1, max_iter=2, device="cpu", random_state=0, verbose=verbose
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            imputer = EBFlowImputer(density, n_refits=0, n_steps=10, random_state=0)
            fills[verbose] = imputer.fit(X).transform(X[:20])
        said = capsys.readouterr().err
        assert ("Langevin" in said) == bool(verbose)
    np.testing.assert_array_equal(fills[0], fills[1])


@pytest.mark.parametrize("conditional", [False, True])
def test_a_stuck_chain_is_explained_for_its_sampler(conditional):
    """sample_langevin's warning about a stuck chain spoke of "a missing value
    nearly fixed by the observed ones", which only conditional chains have."""
    from skebflow._density import _warn_if_chains_failed
    from skebflow.flows import fc

    flow = fc(2, generator=torch.Generator().manual_seed(0)).double()
    states = torch.zeros(10, 2, dtype=torch.float64)
    with pytest.warns(ConvergenceWarning, match="1 of the 10 Langevin chains") as w:
        _warn_if_chains_failed(
            flow, states, 0.5, True, starts=states if conditional else None, n_stuck=1
        )
    message = str(w[0].message)
    assert ("missing value" in message) is conditional
    assert ("narrow ridge or mode" in message) is not conditional


def test_trapped_chains_are_told_from_chains_in_real_modes():
    """A false peak 30 nats below the mode traps a chain started beyond it; a
    second mode as high as the first holds half the mass and traps nothing."""
    from skebflow._langevin import trapped_chains

    def energy(x, depth):
        peak = -0.5 * (x[:, 1] / 0.05) ** 2
        other = -depth - 0.5 * ((x[:, 1] + 3.0) / 0.05) ** 2
        return -torch.logaddexp(peak, other)

    states = torch.tensor([[0.0, 0.02], [0.0, -3.01], [0.0, -1.5]], dtype=torch.float64)
    mask = torch.tensor([[False, True]] * 3)
    trapped, modes = trapped_chains(lambda x: energy(x, 30.0), states, mask)
    # the chain between the wells is 450 nats up: trapped too (off the support)
    assert trapped.tolist() == [False, True, True]
    assert modes[:, 1].abs().max() < 1e-3 and bool((modes[:, 0] == 0).all())
    trapped, _ = trapped_chains(lambda x: energy(x, 0.0), states[:2], mask[:2])
    assert trapped.tolist() == [False, False]


def test_conditional_draws_leave_false_peaks_of_the_model():
    """Given x0, the model's conditional of x1 (rho 0.999) is 0.04 wide, and a
    small false peak of the fitted flow 2 standardized units away held 83 of 200
    chains started beyond it, silently (draws sd 0.47 against 0.04); they now
    draw again from the conditional's mode."""
    rng = np.random.RandomState(0)
    X = rng.multivariate_normal([0, 0], [[1, 0.999], [0.999, 1]], 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = EBFlowDensity(n_flows=1, max_iter=60, device="cpu", random_state=0)
        est.fit(X)
    grid = np.linspace(-5, 5, 20001)
    log_p = est.score_samples(np.c_[np.full_like(grid, -1.2), grid])
    p = np.exp(log_p - log_p.max())
    mean = (grid * p).sum() / p.sum()
    sd = np.sqrt(((grid - mean) ** 2 * p).sum() / p.sum())
    draws = est.sample_conditional(
        np.tile([-1.2, np.nan], (200, 1)), random_state=0, n_steps=200
    )[:, 1]
    assert np.abs(draws - mean).max() < 6 * sd
    assert abs(draws.std() / sd - 1) < 0.2


def test_redrawn_chains_keep_the_callers_settings(monkeypatch):
    """The redraw of trapped chains ran without the caller's annealing."""
    import skebflow._density as density_module

    X = np.random.RandomState(0).normal(size=(200, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = EBFlowDensity(n_flows=1, max_iter=2, device="cpu", random_state=0).fit(X)
    calls = []
    real = density_module.langevin

    def recording(energy, x, **settings):
        calls.append(settings)
        return real(energy, x, **settings)

    def all_trapped(energy, states, mask, **settings):
        return torch.ones(len(states), dtype=torch.bool), states.clone()

    monkeypatch.setattr(density_module, "langevin", recording)
    monkeypatch.setattr(density_module, "trapped_chains", all_trapped)
    rows = np.c_[X[:5, :1], np.full(5, np.nan)]
    est.sample_conditional(rows, random_state=0, n_steps=10, initial_temperature=3.0)
    assert len(calls) == 2
    for key in ("initial_temperature", "n_steps", "step_size", "metropolis"):
        assert calls[0][key] == calls[1][key], key


def test_a_mode_search_that_runs_out_of_steps_says_so(correlated):
    # Found by a review: a fill whose conditional mode lies farther than the
    # search's reach (n_steps * step_size, standardized) stopped where its steps
    # ran out, with no word (at n_steps=30 the fill of x1 given x0 = 1e3 and given
    # x0 = 1e8 was the same 2.96).
    model = EBFlowDensity(max_iter=20, n_flows=1, device="cpu",
                          random_state=0).fit(correlated)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        near = model.sample_conditional([[0.5, np.nan]], method="mode", n_steps=300)
    assert abs(near[0, 1] - 0.4) < 0.3
    with pytest.warns(ConvergenceWarning, match="had not settled in 1 of 2 rows"):
        model.sample_conditional([[0.5, np.nan], [1e3, np.nan]], method="mode",
                                 n_steps=300)
