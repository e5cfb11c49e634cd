"""A flow's base widened after training (ScaledBase, widen_base) and the detector's
``base_scale``: closed forms from scipy, autograd, densities that integrate to one,
samples that follow them, and the outlier contract on the widened density."""

from __future__ import annotations

import copy
import math
import pickle

import numpy as np
import pytest
import torch
from _helpers import SMALL_ESTIMATOR, gen, perturb, quiet_fit, randn
from scipy import stats

from skebflow import EBFlowDensity, EBFlowOutlierDetector, load, save
from skebflow.flows import (
    FlowMixture,
    ScaledBase,
    StandardNormal,
    StudentT,
    coupling,
    fc,
    widen_base,
)

SMALL = {**SMALL_ESTIMATOR, "max_iter": 20}


# ------------------------------------------------------------------ ScaledBase


@pytest.mark.parametrize("scale", [0.5, 2.5])
@pytest.mark.parametrize(
    ("inner", "reference"),
    [
        (StandardNormal(), lambda s: stats.norm(scale=s)),
        (StudentT(df=4.0), lambda s: stats.t(df=4.0, scale=s)),
    ],
)
def test_scaled_base_log_density_is_scipys(inner, reference, scale):
    base = ScaledBase(inner.double(), scale)
    z = randn(50, 3, generator=gen(0)) * 3.0
    log_p = -base.energy(z) - base.log_normalizer(3)
    expected = reference(scale).logpdf(z.numpy()).sum(axis=1)
    np.testing.assert_allclose(log_p.numpy(), expected, rtol=1e-7)


@pytest.mark.parametrize("inner", [StandardNormal(), StudentT(df=3.0)])
def test_scaled_base_curvature_is_the_autograd_hessian(inner):
    base = ScaledBase(inner.double(), 1.7)
    z = randn(4, 3, generator=gen(1)) * 2.0
    tangent = randn(4, 3, generator=gen(2))
    for row in range(4):
        hessian = torch.autograd.functional.hessian(
            lambda v: base.energy(v.unsqueeze(0)).sum(), z[row]
        )
        expected = tangent[row] @ hessian @ tangent[row]
        got = base.curvature(z[row : row + 1], tangent[row : row + 1])
        assert torch.allclose(got, expected.reshape(1), rtol=1e-10)


def test_scaled_base_samples_follow_its_density():
    base = ScaledBase(StudentT(df=5.0), 3.0)
    draws = base.sample(4000, 2, generator=gen(3), dtype=torch.float64).numpy()
    for column in draws.T:
        assert stats.kstest(column, stats.t(df=5.0, scale=3.0).cdf).pvalue > 1e-3


def test_scaled_base_rejects_a_bad_scale():
    for scale in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="positive, finite"):
            ScaledBase(StandardNormal(), scale)


# ------------------------------------------------------------------ widen_base


def _trained_like(flow):
    return perturb(flow.double(), gen(5), 0.3)


@pytest.mark.parametrize("scale", [0.7, 2.0, 3.0])
def test_widened_flow_integrates_to_one_in_two_dimensions(scale):
    flow = _trained_like(coupling(2, n_layers=2, hidden_layer_sizes=(8,)))
    wide = widen_base(flow, scale)
    axis = torch.linspace(-40.0, 40.0, 801, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        density = wide.log_prob(grid).exp().reshape(801, 801)
    mass = torch.trapezoid(torch.trapezoid(density, axis, dim=1), axis)
    assert abs(mass.item() - 1.0) < 2e-3


def test_widened_flow_shares_the_layers_and_keeps_the_trained_density():
    flow = _trained_like(fc(3, generator=gen(6)))
    x = randn(20, 3, generator=gen(7))
    before = flow.log_prob(x).detach()
    assert widen_base(flow, 1.0) is flow
    wide = widen_base(flow, 2.0)
    assert all(a is b for a, b in zip(wide.layers, flow.layers, strict=True))
    wide.log_prob(x)
    assert torch.equal(flow.log_prob(x).detach(), before)
    assert isinstance(flow.base, StandardNormal)


def test_widened_samples_follow_the_widened_density():
    # One dimension: the samples' empirical CDF against the CDF of the widened
    # density, integrated on a grid.
    flow = _trained_like(fc(1, generator=gen(8)))
    wide = widen_base(flow, 2.5)
    with torch.no_grad():
        draws = wide.sample(3000, generator=gen(9)).squeeze(1).numpy()
        grid = torch.linspace(-80, 80, 40001, dtype=torch.float64).reshape(-1, 1)
        density = wide.log_prob(grid).exp().numpy()
    cdf = np.cumsum(density) * (grid[1, 0] - grid[0, 0]).item()
    result = stats.kstest(draws, lambda v: np.interp(v, grid[:, 0].numpy(), cdf))
    assert result.pvalue > 1e-3


def test_widened_mixture_is_the_mixture_of_widened_members():
    members = [_trained_like(fc(2, generator=gen(k))) for k in range(3)]
    mixture = FlowMixture(members)
    x = randn(10, 2, generator=gen(10))
    wide = widen_base(mixture, 2.0)
    member_log_probs = torch.stack([widen_base(m, 2.0).log_prob(x) for m in members])
    expected = torch.logsumexp(member_log_probs, dim=0) - math.log(3)
    assert torch.allclose(wide.log_prob(x), expected)


# ------------------------------------------------------------------ the detector


def _blobs(n=600, seed=0):
    rng = np.random.RandomState(seed)
    return np.vstack(
        [rng.normal(-2, 0.5, size=(n // 2, 2)), rng.normal(2, 0.8, size=(n // 2, 2))]
    )


def test_base_scale_one_is_the_density_estimators_log_density():
    X = _blobs()
    # The same fit: the settings whose defaults differ between the two, pinned.
    # ("auto" for the detector: its resolution without novelty)
    weight_decay = EBFlowOutlierDetector()._resolved_weight_decay()
    params = {
        **SMALL,
        "dequantize": False,
        "weight_decay": weight_decay,
        "marginal_transform": None,
    }
    density = quiet_fit(EBFlowDensity(**params), X)
    detector = quiet_fit(EBFlowOutlierDetector(base_scale=1.0, **params), X)
    np.testing.assert_allclose(detector.score_samples(X), density.score_samples(X))


@pytest.mark.parametrize(
    ("n_flows", "combination", "tolerance"),
    [
        (1, "geometric_mean", 5e-3),
        (2, "mixture", 5e-3),
        # Its log-normalizer is a Monte Carlo estimate (standard error about 0.007
        # here); unnormalized, the mass is about 0.82.
        (2, "geometric_mean", 0.03),
    ],
)
def test_detector_with_a_widened_base_has_a_normalized_density(
    n_flows, combination, tolerance
):
    X = _blobs()
    params = {**SMALL, "n_flows": n_flows, "flow_combination": combination}
    detector = quiet_fit(EBFlowOutlierDetector(base_scale=2.5, **params), X)
    assert detector.base_scale_ == 2.5
    axis = np.linspace(-30, 30, 601)
    grid = np.array(np.meshgrid(axis, axis, indexing="ij")).reshape(2, -1).T
    density = np.exp(detector.score_samples(grid)).reshape(601, 601)
    mass = np.trapezoid(np.trapezoid(density, axis, axis=1), axis)
    assert abs(mass - 1.0) < tolerance
    # The energy / log-normalizer split holds for the widened density too.
    np.testing.assert_allclose(
        detector.score_samples(X[:20]),
        -detector.energy(X[:20]) - detector.log_normalizer_,
        rtol=1e-10,
    )


def test_widening_changes_the_ranking_not_the_trained_flow():
    X = _blobs()
    narrow = quiet_fit(EBFlowOutlierDetector(base_scale=1.0, **SMALL), X)
    wide = quiet_fit(EBFlowOutlierDetector(base_scale=3.0, **SMALL), X)
    for a, b in zip(narrow.flow_.parameters(), wide.flow_.parameters(), strict=True):
        assert torch.equal(a, b)
    far = np.array([[8.0, 8.0], [-9.0, 1.0]])
    # The far rows stay the least likely, but less extremely so under the wider base.
    assert np.all(wide.score_samples(far) > narrow.score_samples(far))
    assert np.all(wide.score_samples(far) < wide.score_samples(X).min())


def test_widened_samples_are_wider_than_the_trained_flows():
    X = _blobs()
    narrow = quiet_fit(EBFlowOutlierDetector(base_scale=1.0, **SMALL), X)
    wide = quiet_fit(EBFlowOutlierDetector(base_scale=3.0, **SMALL), X)
    spread = [m.sample(2000, random_state=0).std(axis=0) for m in (narrow, wide)]
    assert np.all(spread[1] > 1.5 * spread[0])


@pytest.mark.parametrize("contamination", [0.05, 0.2])
def test_widened_threshold_flags_the_contamination_among_fresh_rows(contamination):
    rng = np.random.RandomState(0)
    train, fresh = _blobs(1000, seed=1), _blobs(4000, seed=2)
    rng.shuffle(fresh)
    detector = quiet_fit(
        EBFlowOutlierDetector(contamination=contamination, base_scale=2.5, **SMALL),
        train,
    )
    share = np.mean(detector.predict(fresh) == -1)
    standard_error = np.sqrt(
        contamination * (1 - contamination) * (1 / len(train) + 1 / len(fresh))
    )
    assert abs(share - contamination) < 4 * standard_error


def test_base_scale_survives_a_safe_file_and_a_pickle(tmp_path):
    X = _blobs()
    detector = quiet_fit(EBFlowOutlierDetector(base_scale=2.0, **SMALL), X)
    save(detector, tmp_path / "detector.safetensors")
    for loaded in (
        load(tmp_path / "detector.safetensors"),
        pickle.loads(pickle.dumps(detector)),
    ):
        assert loaded.base_scale == loaded.base_scale_ == 2.0
        np.testing.assert_array_equal(
            loaded.score_samples(X), detector.score_samples(X)
        )


def test_partial_fit_widens_each_update_and_thresholds_the_chunk():
    rng = np.random.RandomState(0)
    chunks = [_blobs(seed=k)[rng.permutation(600)] for k in range(3)]
    detector = EBFlowOutlierDetector(contamination=0.1, **SMALL)
    for chunk, scale in zip(chunks, (1.0, 2.0, 3.0), strict=True):
        detector.set_params(base_scale=scale).partial_fit(chunk)
        assert detector.base_scale_ == scale
        scores = detector.score_samples(chunk)
        np.testing.assert_allclose(
            scores, -detector.energy(chunk) - detector.log_normalizer_, rtol=1e-10
        )
        expected = np.percentile(scores, 10.0, method="averaged_inverted_cdf")
        assert detector.offset_ == pytest.approx(expected)
    # The widening never reaches the trained flow: its base is still the standard
    # normal, and at scale 1 the detector scores by the change of variables through
    # the trained map, its Jacobian taken by autograd.
    assert type(detector.flow_.base) is StandardNormal
    plain = copy.copy(detector)
    plain.base_scale_ = 1.0
    rows = chunks[-1][:6]
    y, log_abs_det = detector.preprocessing_(torch.from_numpy(rows))
    with torch.no_grad():
        z = detector.flow_(y)[0].numpy()
    jacobian_log_dets = [
        float(torch.linalg.slogdet(torch.autograd.functional.jacobian(
            lambda point: detector.flow_(point[None])[0][0], row
        ))[1])
        for row in y
    ]
    expected = (
        stats.norm.logpdf(z).sum(axis=1) + np.array(jacobian_log_dets)
        + log_abs_det.numpy()
    )
    np.testing.assert_allclose(plain.score_samples(rows), expected, rtol=1e-8)


def test_an_interrupted_refit_leaves_the_previous_detector(monkeypatch):
    X = _blobs()
    detector = quiet_fit(EBFlowOutlierDetector(base_scale=1.0, **SMALL), X)
    before = {
        name: getattr(detector, name)
        for name in ("base_scale_", "log_normalizer_", "offset_", "flow_")
    }
    scores = detector.score_samples(X)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    # Interrupted after the training, while the threshold is computed.
    monkeypatch.setattr(EBFlowOutlierDetector, "_offset", interrupted)
    with pytest.raises(KeyboardInterrupt):
        quiet_fit(detector.set_params(base_scale=3.0, n_flows=2), X)
    for name, value in before.items():
        assert getattr(detector, name) is value
    np.testing.assert_array_equal(detector.score_samples(X), scores)


def test_a_detector_saved_before_base_scale_keeps_scoring_as_it_did():
    X = _blobs()
    detector = quiet_fit(EBFlowOutlierDetector(base_scale=1.0, **SMALL), X)
    state = detector.__getstate__()
    del state["base_scale"], state["base_scale_"]  # what an older version stored
    old = EBFlowOutlierDetector.__new__(EBFlowOutlierDetector)
    old.__setstate__(state)
    assert old.get_params()["base_scale"] == old.base_scale_ == 1.0
    np.testing.assert_array_equal(old.score_samples(X), detector.score_samples(X))
    unfitted = EBFlowOutlierDetector().__getstate__()
    del unfitted["base_scale"]
    blank = EBFlowOutlierDetector.__new__(EBFlowOutlierDetector)
    blank.__setstate__(unfitted)
    assert blank.get_params()["base_scale"] == 1.0


@pytest.mark.parametrize("bad", [0.0, -1.0, "wide", 1e-300, 1e-4, 1e4, math.inf])
def test_bad_base_scale_is_named(bad):
    with pytest.raises(ValueError, match="base_scale"):
        EBFlowOutlierDetector(base_scale=bad, **SMALL).fit(_blobs())


def test_a_threshold_that_is_not_finite_is_refused_and_the_detector_kept(monkeypatch):
    X = _blobs()
    detector = quiet_fit(EBFlowOutlierDetector(**SMALL), X)
    offset, scores = detector.offset_, detector.score_samples(X)
    # Most training scores -inf (an overflow), so the 10 % quantile is not finite
    # (numpy gives nan); the fit must say so instead of storing it.
    real_scores = EBFlowOutlierDetector.score_samples

    def overflowing(self, rows):
        values = real_scores(self, rows)
        values[: int(0.9 * len(values))] = -np.inf
        return values

    monkeypatch.setattr(EBFlowOutlierDetector, "score_samples", overflowing)
    with pytest.raises(ValueError, match="offset_ is (-inf|nan).*previous state"):
        quiet_fit(detector.set_params(random_state=1), X)
    monkeypatch.undo()
    assert detector.offset_ == offset
    np.testing.assert_array_equal(detector.score_samples(X), scores)
