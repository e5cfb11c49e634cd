"""Columns a flow leaves to its base (``Flow(passed_columns=...)``): the columns
modelled as narrow normals are exactly those normals, beside a flow on the others."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from _helpers import gen, perturb, randn

import skebflow
from skebflow import EBFlowDensity, EBFlowOutlierDetector
from skebflow._building import build_flow, passed_columns
from skebflow.flows import ColumnNoise, Flow, coupling, fc, widen_base
from skebflow.flows._calibration import can_whiten_output, whiten_output

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

FAST = {"n_flows": 1, "max_iter": 15, "device": "cpu", "random_state": 0}
HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)


def _passed_flow(seed: int = 0):
    """A perturbed 3-feature coupling flow with columns 1 and 3 of 5 passed."""
    inner = coupling(
        3,
        n_layers=2,
        hidden_layer_sizes=(8,),
        transform="logistic_mixture",
        n_components=3,
        generator=gen(seed),
    ).double()
    perturb(inner, gen(seed + 1), 0.3)
    return inner, Flow(inner.layers, passed_columns=[3, 1])


def test_passed_columns_are_exact_standard_normals_beside_the_inner_flow():
    inner, flow = _passed_flow()
    x = 2.0 * randn(40, 5, generator=gen(2))
    kept, passed = x[:, [0, 2, 4]], x[:, [1, 3]]
    expected = inner.log_prob(kept) - (0.5 * passed.square() + HALF_LOG_TWO_PI).sum(1)
    torch.testing.assert_close(flow.log_prob(x), expected, rtol=0, atol=1e-10)
    # the split: the inner flow's log-normalizer (the permutation adds nothing,
    # the normals' constants sit in the base's energy), and the energy the rest
    torch.testing.assert_close(flow.log_normalizer(), inner.log_normalizer())
    torch.testing.assert_close(
        flow.energy(x) + flow.log_normalizer(), -flow.log_prob(x), rtol=0, atol=1e-10
    )


def test_a_passed_flow_inverts_and_samples_standard_normals_where_it_passes():
    _, flow = _passed_flow()
    x = randn(30, 5, generator=gen(3))
    z, _ = flow(x)
    torch.testing.assert_close(flow.inverse(z), x, rtol=0, atol=1e-9)
    draws = flow.sample(20000, generator=gen(4))
    passed = draws[:, [1, 3]]
    assert torch.allclose(passed.mean(0), torch.zeros(2, dtype=passed.dtype), atol=0.03)
    assert torch.allclose(passed.std(0), torch.ones(2, dtype=passed.dtype), atol=0.03)
    # independent of the columns the flow maps
    correlation = torch.corrcoef(draws.T)[[1, 3]][:, [0, 2, 4]]
    assert correlation.abs().max() < 0.03


def test_a_passed_flow_integrates_to_one_in_2d():
    inner = fc(1, n_layers=2, init="orthogonal", generator=gen(0)).double()
    perturb(inner, gen(1), 0.4)
    flow = Flow(inner.layers, passed_columns=[0])
    grid = torch.linspace(-9.0, 9.0, 601, dtype=torch.float64)
    a, b = torch.meshgrid(grid, grid, indexing="ij")
    with torch.no_grad():
        density = flow.log_prob(torch.stack([a.flatten(), b.flatten()], 1)).exp()
    step = float(grid[1] - grid[0])
    assert float(density.sum()) * step**2 == pytest.approx(1.0, abs=2e-3)


def test_a_passed_flow_keeps_its_layers_state_and_widens():
    inner, flow = _passed_flow(5)
    assert flow.state_dict().keys() == inner.state_dict().keys()
    assert flow.passed_columns == [1, 3] and flow.n_features == 5
    x = 2.0 * randn(6, 5, generator=gen(6))
    # widened, a passed column is N(0, s^2) beside the widened inner flow
    wide, wide_inner = widen_base(flow, 2.0), widen_base(inner, 2.0)
    passed = x[:, [1, 3]] / 2.0
    normals = (-0.5 * passed.square() - math.log(2.0) - HALF_LOG_TWO_PI).sum(1)
    torch.testing.assert_close(
        wide.log_prob(x),
        wide_inner.log_prob(x[:, [0, 2, 4]]) + normals,
        rtol=0,
        atol=1e-10,
    )


def test_a_flow_refuses_passed_columns_out_of_range():
    inner = coupling(2, n_layers=1, generator=gen(0))
    with pytest.raises(ValueError, match="must lie in"):
        Flow(inner.layers, passed_columns=[7])


def test_whitening_a_passed_flow_leaves_the_passed_outputs():
    _, flow = _passed_flow(7)
    assert can_whiten_output(flow)
    x = 0.5 + 2.0 * randn(400, 5, generator=gen(8))
    before = flow.log_prob(x).mean()
    gain = whiten_output(flow, x, shrink=False)
    assert gain is not None and float(gain) > 0
    torch.testing.assert_close(flow.log_prob(x).mean() - before, gain)
    z, _ = flow(x)
    torch.testing.assert_close(z[:, 3:], x[:, [1, 3]], rtol=0, atol=0)


def test_the_rule_passes_narrow_columns_only_where_the_flow_can():
    constant = {"constant_columns": np.array([False, True, False, False])}
    one_bin = {"constant_columns": None, "one_bin_columns": np.array([1, 0, 0, 0])}
    spec = {"architecture": "coupling", "n_features": 4}
    assert passed_columns(constant, spec) == [1]
    assert passed_columns(one_bin, spec) == [0]
    assert passed_columns(constant, {**spec, "architecture": "conv"}) is None
    assert passed_columns(constant, {**spec, "base_distribution": "student_t"}) is None
    crowded = {"constant_columns": np.array([True, True, True, False])}
    assert passed_columns(crowded, spec) is None  # one column left: no coupling
    assert passed_columns(crowded, {**spec, "architecture": "fc"}) == [0, 1, 2]


def _with_constant_column(n_rows=600):
    X = np.random.RandomState(0).normal(size=(n_rows, 4))
    X[:, 2] = 5.0
    return X


@pytest.mark.parametrize("architecture", ["coupling", "fc"])
def test_a_constant_column_is_exactly_its_narrow_normal(architecture):
    X = _with_constant_column()
    est = EBFlowDensity(
        constant_features="narrow", architecture=architecture, **FAST
    ).fit(X)
    assert est._flow_spec["passed_columns"] == [2]
    width = est._preprocessing_spec["scale"][2]
    rows = X[:20]
    for k in (0.5, 1.0, 3.0):
        moved = rows.copy()
        moved[:, 2] += k * width
        np.testing.assert_allclose(
            est.score_samples(moved) - est.score_samples(rows), -0.5 * k**2, atol=1e-6
        )
    draws = est.sample(4000, random_state=0)[:, 2]
    assert abs(draws.mean() - 5.0) < 0.1 * width
    assert abs(draws.std() / width - 1.0) < 0.05


def test_an_exact_relation_is_exactly_its_narrow_normal_across_the_line():
    x0 = np.random.RandomState(0).normal(size=(1500, 2))
    X = np.c_[x0, x0[:, 0] - 2.0 * x0[:, 1] + 1.0]
    est = EBFlowDensity(**FAST).fit(X)
    assert est.dependent_features_.tolist() == [False, False, True]
    assert est._flow_spec["passed_columns"] == [2]
    width = est._preprocessing_spec["scale"][2]
    moved = X[:10].copy()
    moved[:, 2] += 2.0 * width
    np.testing.assert_allclose(
        est.score_samples(moved) - est.score_samples(X[:10]), -2.0, atol=1e-6
    )


def test_the_detector_and_partial_fit_pass_constant_columns():
    X = _with_constant_column()
    detector = EBFlowOutlierDetector(n_flows=2, max_iter=10, random_state=0).fit(X)
    assert detector._flow_spec["passed_columns"] == [2]
    assert all(
        member.passed_columns == [2] and member.n_features == 4
        for member in detector.flow_.members
    )
    est = EBFlowDensity(constant_features="narrow", device="cpu", random_state=0)
    est.partial_fit(X).partial_fit(X)
    assert est._flow_spec["passed_columns"] == [2]
    assert np.isfinite(est.score_samples(X)).all()


def test_a_student_t_base_keeps_the_flow_over_every_column():
    est = EBFlowDensity(
        constant_features="narrow", base_distribution="student_t", **FAST
    ).fit(_with_constant_column())
    assert est._flow_spec["passed_columns"] is None
    assert est.flow_.n_features == 4 and not est.flow_.passed_columns


def test_a_passed_model_round_trips_through_pickle_and_save(tmp_path):
    X = _with_constant_column()
    est = EBFlowDensity(constant_features="narrow", **FAST).fit(X)
    expected = est.score_samples(X[:30])
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_allclose(again.score_samples(X[:30]), expected, rtol=1e-12)
    path = tmp_path / "model"
    skebflow.save(est, path)
    loaded = skebflow.load(path)
    np.testing.assert_allclose(loaded.score_samples(X[:30]), expected, rtol=1e-12)
    rebuilt = build_flow(est._flow_spec, gen(0))
    assert rebuilt.passed_columns == [2] and rebuilt.n_features == 4


def test_passed_columns_may_be_any_sequence_of_indices():
    inner = fc(2, generator=gen(0))
    for columns in ([0], (0,), np.array([0]), torch.tensor([0])):
        flow = Flow(inner.layers, passed_columns=columns)
        assert flow.passed_columns == [0] and flow.n_features == 3
    assert Flow(fc(1).layers, passed_columns=np.array([0, 2])).n_features == 3
    with pytest.raises(ValueError, match="integers"):
        Flow(inner.layers, passed_columns=[1.5])


def test_a_learned_base_covers_the_passed_columns():
    flow = Flow(fc(3).layers, base="student_t_learned", passed_columns=[1])
    x = randn(5, 4, generator=gen(0)).float()
    assert torch.isfinite(flow.log_prob(x)).all()
    assert flow.sample(3, generator=gen(1)).shape == (3, 4)


def test_flows_and_column_noise_pickled_before_passed_columns_still_work():
    flow = coupling(3, n_layers=1, generator=gen(0))
    state = flow.__getstate__()
    for name in ("passed_columns", "_passes_last"):
        state.pop(name, None)
    restored = Flow.__new__(Flow)
    restored.__setstate__(state)
    x = torch.zeros(2, 3)
    torch.testing.assert_close(restored.log_prob(x), flow.log_prob(x))
    noise = ColumnNoise(torch.tensor([True, False]))
    state = noise.__getstate__()
    state["_buffers"] = {
        name: value for name, value in state["_buffers"].items() if name == "columns"
    }
    old = pickle.loads(pickle.dumps(state))
    restored_noise = ColumnNoise.__new__(ColumnNoise)
    restored_noise.__setstate__(old)
    noisy, _ = restored_noise(torch.zeros(4, 2), gen(0))
    assert bool((noisy[:, 0] != 0).all()) and bool((noisy[:, 1] == 0).all())


@pytest.mark.parametrize("width", [1, 2, 5])
def test_a_passed_flow_refuses_rows_of_another_width(width):
    """index_select picked the flow's columns out of wider rows and dropped the
    rest: a 3-feature flow scored rows of 5 (and every objective divided by 5)."""
    flow = Flow(fc(2).layers, passed_columns=[0])
    with pytest.raises(ValueError, match=f"models 3 features.*x has {width}"):
        flow.log_prob(torch.zeros(1, width))


def test_column_noise_indexes_the_columns_a_state_dict_loads():
    """The noisy columns' index is not in the state dict: loading other columns
    kept the old index, and the noise went to the wrong column."""
    source = ColumnNoise(torch.tensor([False, True]))
    target = ColumnNoise(torch.tensor([True, False]))
    target.load_state_dict(source.state_dict())
    noisy, _ = target(torch.zeros(4, 2), torch.Generator().manual_seed(0))
    assert bool((noisy[:, 0] == 0).all()) and bool((noisy[:, 1] != 0).all())
