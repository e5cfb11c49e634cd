"""Safe model files: skebflow.save / skebflow.load (safetensors, no pickle), and skops."""

from __future__ import annotations

import copy
import json
import math
import pickle
import warnings

import numpy as np
import pytest
import sklearn
import torch
from _helpers import quiet_fit
from safetensors import safe_open
from safetensors.numpy import load_file, save_file
from sklearn.exceptions import NotFittedError
from sklearn.neighbors import KernelDensity
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._missing import is_scalar_nan

import skebflow
from skebflow import EBFlowDensity, EBFlowImputer, EBFlowOutlierDetector
from skebflow._persistence import ALLOWED_CLASSES, InconsistentVersionWarning

TINY = {
    "n_flows": 1,
    "n_layers": 1,
    "hidden_layer_sizes": (8,),
    "max_iter": 3,
    "batch_size": 64,
    "device": "cpu",
    "random_state": 0,
}


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    x = rng.normal(size=(120, 1))
    return np.hstack([x, 0.5 * x + 0.3 * rng.normal(size=(120, 1))])


@pytest.fixture(scope="module")
def density(data):
    return quiet_fit(EBFlowDensity(**TINY), data)


@pytest.fixture(scope="module")
def detector(data):
    return quiet_fit(EBFlowOutlierDetector(contamination=0.1, **TINY), data)


@pytest.fixture(scope="module")
def imputer(data):
    X = data.copy()
    X[::7, 1] = np.nan
    inner = EBFlowDensity(**TINY)
    return quiet_fit(EBFlowImputer(inner, method="mode", n_steps=5, random_state=0), X)


@pytest.fixture(params=["density", "detector", "imputer"])
def fitted(request):
    return request.getfixturevalue(request.param)


def _density_of(estimator):
    return estimator.estimator_ if isinstance(estimator, EBFlowImputer) else estimator


def _roundtrip(estimator, tmp_path, name="model.safetensors"):
    path = tmp_path / name
    skebflow.save(estimator, path)
    return skebflow.load(path)


def _rewrite(path, *, keep_checksum=False, **changes):
    """Rewrite entries of a model file's metadata, keeping its tensors. Without
    ``keep_checksum`` the file becomes one of format version 1, written before the
    SHA-256 entry existed, so that what is tested is the check of its structure."""
    with safe_open(str(path), framework="numpy") as file:
        metadata = dict(file.metadata())
    tensors = load_file(str(path))
    if not keep_checksum:
        metadata.pop("sha256", None)
        metadata["format_version"] = "1"
    metadata.update(changes)
    save_file(tensors, str(path), metadata=metadata)


def _metadata(path):
    with safe_open(str(path), framework="numpy") as file:
        return dict(file.metadata())


def _same_params(left, right):
    a, b = left.get_params(deep=False), right.get_params(deep=False)
    assert a.keys() == b.keys()
    for name in a:
        if hasattr(a[name], "get_params"):
            assert type(a[name]) is type(b[name])
            _same_params(a[name], b[name])
        else:
            assert type(a[name]) is type(b[name]), name
            both_nan = is_scalar_nan(a[name]) and is_scalar_nan(b[name])
            assert both_nan or a[name] == b[name], name


# ---------------------------------------------------------------- round trips


def _marked(data):
    X = data.copy()
    X[::7, 1] = -1.0
    return X


def _with_an_empty_feature(data):
    X = np.c_[data[:, :1], np.full(len(data), np.nan), data[:, 1:]]
    X[::7, 2] = np.nan
    return X


@pytest.mark.parametrize(
    "make_X, settings, attribute, expected",
    [
        (
            _marked,
            {"missing_values": -1, "add_indicator": True},
            "indicator_features_",
            [1],
        ),
        (_with_an_empty_feature, {"keep_empty_features": True}, "empty_features_", [1]),
    ],
)
def test_an_imputer_with_its_options_round_trips(
    data, tmp_path, make_X, settings, attribute, expected
):
    X = make_X(data)
    imputer = quiet_fit(
        EBFlowImputer(
            EBFlowDensity(**TINY), method="mode", n_steps=5, random_state=0, **settings
        ),
        X,
    )
    loaded = _roundtrip(imputer, tmp_path)
    _same_params(loaded, imputer)
    np.testing.assert_array_equal(getattr(loaded, attribute), expected)
    np.testing.assert_array_equal(loaded.transform(X[:20]), imputer.transform(X[:20]))
    assert loaded.transform(X[:20]).shape == (20, 3)


def test_allowlist_covers_public_estimators():
    public = {
        name
        for name in skebflow.__all__
        if isinstance(getattr(skebflow, name), type)
        and hasattr(getattr(skebflow, name), "fit")
    }
    assert public == set(ALLOWED_CLASSES)


def test_roundtrip_scores_and_samples_identical(fitted, data, tmp_path):
    loaded = _roundtrip(fitted, tmp_path)
    assert type(loaded) is type(fitted)
    _same_params(loaded, fitted)
    original, restored = _density_of(fitted), _density_of(loaded)
    np.testing.assert_array_equal(
        restored.score_samples(data), original.score_samples(data)
    )
    np.testing.assert_array_equal(
        restored.sample(5, random_state=0), original.sample(5, random_state=0)
    )
    for name in (
        "n_features_in_",
        "objective_",
        "n_iter_",
        "loss_curve_",
        "validation_scores_",
        "best_validation_score_",
        "converged_",
        "device_",
        "log_normalizer_",
        "_flow_spec",
        "_structure",
    ):
        assert getattr(restored, name) == getattr(original, name), name
    assert restored.flow_.dtype == torch.float64
    for step in restored.preprocessing_.steps:
        for buffer in step.buffers():
            assert buffer.dtype in (torch.float64, torch.bool), type(step).__name__


@pytest.mark.parametrize(
    "params",
    [
        {"preprocessing": "logit", "bounds": (np.full(3, -9.0), np.full(3, 9.0))},
        {"dequantize": True, "constant_features": "narrow"},
        {"architecture": "fc", "objective": "dsm"},
    ],
    ids=["logit-array-bounds", "dequantize-constant", "fc-dsm"],
)
def test_roundtrip_preprocessing_variants(params, tmp_path):
    rng = np.random.RandomState(1)
    X = np.column_stack(
        [rng.normal(size=120), rng.randint(0, 4, size=120), np.full(120, 2.0)]
    )
    if "constant_features" not in params:
        X[:, 2] += rng.normal(size=120)
    est = quiet_fit(EBFlowDensity(**{**TINY, **params}), X)
    loaded = _roundtrip(est, tmp_path)
    np.testing.assert_array_equal(loaded.score_samples(X), est.score_samples(X))
    np.testing.assert_array_equal(
        loaded.sample(5, random_state=0), est.sample(5, random_state=0)
    )
    steps = [type(step).__name__ for step in loaded.preprocessing_.steps]
    assert steps == [type(step).__name__ for step in est.preprocessing_.steps]
    if params.get("dequantize"):
        assert steps == [
            "KernelGaussianize",
            "UniformDequantize",
            "Standardize",
            "ColumnNoise",
        ]
    if "bounds" in params:
        lower, upper = loaded.bounds
        assert type(loaded.bounds) is tuple
        np.testing.assert_array_equal(lower, params["bounds"][0])
        np.testing.assert_array_equal(upper, params["bounds"][1])


def test_roundtrip_detector_threshold(detector, data, tmp_path):
    loaded = _roundtrip(detector, tmp_path)
    assert loaded.offset_ == detector.offset_
    assert loaded.contamination == detector.contamination
    np.testing.assert_array_equal(loaded.predict(data), detector.predict(data))
    np.testing.assert_array_equal(
        loaded.decision_function(data), detector.decision_function(data)
    )


def test_roundtrip_imputer_transform(imputer, data, tmp_path):
    loaded = _roundtrip(imputer, tmp_path)
    X = data[:10].copy()
    X[::2, 1] = np.nan
    np.testing.assert_array_equal(loaded.transform(X), imputer.transform(X))
    assert type(loaded.estimator) is EBFlowDensity  # the (unfitted) parameter
    assert not hasattr(loaded.estimator, "flow_")


def test_loaded_model_refits_with_warm_start_and_pickles(density, data, tmp_path):
    loaded = _roundtrip(density, tmp_path)
    assert loaded.get_params()["hidden_layer_sizes"] == (8,)  # still a tuple
    assert type(loaded._flow_spec["hidden_layer_sizes"]) is tuple
    again = pickle.loads(pickle.dumps(loaded))
    np.testing.assert_array_equal(
        again.score_samples(data), density.score_samples(data)
    )
    quiet_fit(loaded.set_params(warm_start=True, max_iter=1), data)  # no ValueError
    assert loaded.n_iter_ == 1


def test_special_values_roundtrip(density, tmp_path):
    est = copy.deepcopy(density)
    est.loss_curve_ = [math.nan, math.inf, -math.inf, 1.5]
    est.best_validation_score_ = np.float64(-1.25)
    est.n_iter_ = np.int64(3)
    est.validation_scores_ = [np.float32("nan"), np.float64(-2.0), np.bool_(True)]
    est.extra_arrays_ = {"empty": np.zeros((0, 3)), "scalar": np.array(1.5)}
    est.set_params(random_state=np.random.RandomState(42))
    est.random_state.normal(size=3)  # a state that is not the seed's
    loaded = _roundtrip(est, tmp_path)
    assert math.isnan(loaded.loss_curve_[0])
    assert loaded.loss_curve_[1:] == [math.inf, -math.inf, 1.5]
    assert type(loaded.best_validation_score_) is np.float64
    assert loaded.best_validation_score_ == -1.25
    assert type(loaded.n_iter_) is np.int64
    nan32, minus_two, true = loaded.validation_scores_
    assert type(nan32) is np.float32 and np.isnan(nan32)
    assert type(minus_two) is np.float64 and minus_two == -2.0
    assert type(true) is np.bool_ and true
    assert loaded.extra_arrays_["empty"].shape == (0, 3)
    assert loaded.extra_arrays_["scalar"].shape == ()
    assert loaded.extra_arrays_["scalar"] == 1.5
    # A RandomState is stored exactly (its full state), as pickle would.
    assert isinstance(loaded.random_state, np.random.RandomState)
    np.testing.assert_array_equal(
        loaded.random_state.normal(size=4), est.random_state.normal(size=4)
    )


def test_feature_names_preserved(data, tmp_path):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(data, columns=["height", "weight"])
    est = quiet_fit(EBFlowDensity(**TINY), frame)
    loaded = _roundtrip(est, tmp_path)
    assert loaded.feature_names_in_.dtype == object
    assert loaded.feature_names_in_.tolist() == ["height", "weight"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "X does not have valid feature names"
        np.testing.assert_array_equal(
            loaded.score_samples(frame), est.score_samples(frame)
        )
    with pytest.raises(ValueError, match="feature names"):
        loaded.score_samples(frame.rename(columns={"weight": "mass"}))


def test_metadata_is_plain_json(density, tmp_path):
    path = tmp_path / "model.safetensors"
    skebflow.save(density, path)
    metadata = _metadata(path)
    assert metadata["format"] == "skebflow-model"
    assert metadata["class"] == "EBFlowDensity"
    params = json.loads(metadata["params"])
    assert params["n_layers"] == 1
    assert params["hidden_layer_sizes"] == {"__tuple__": [8]}
    fitted = json.loads(metadata["fitted"])
    assert fitted["objective_"] == density.objective_
    assert fitted["device_"] == "cpu"
    assert "_flow_spec" in fitted and "_preprocessing_spec" in fitted
    versions = json.loads(metadata["versions"])
    assert versions["skebflow"] == skebflow.__version__
    assert versions["torch"] == torch.__version__
    tensors = load_file(str(path))
    assert any(key.startswith("flow_/") for key in tensors)
    assert any(key.startswith("preprocessing_/") for key in tensors)


# --------------------------------------------------------------------- safety


def test_load_runs_no_pickle(fitted, data, tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    skebflow.save(fitted, path)

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle was used")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    loaded = skebflow.load(path)
    np.testing.assert_array_equal(
        _density_of(loaded).score_samples(data), _density_of(fitted).score_samples(data)
    )


@pytest.mark.parametrize(
    "class_name", ["os.system", "Pipeline", "KernelDensity", "builtins.eval", ""]
)
def test_tampered_class_name_refused(density, tmp_path, class_name):
    path = tmp_path / "model.safetensors"
    skebflow.save(density, path)
    _rewrite(path, **{"class": class_name})
    with pytest.raises(
        ValueError,
        match="allowed classes are EBFlowDensity, EBFlowImputer, EBFlowOutlierDetector",
    ):
        skebflow.load(path)


def test_tampered_nested_class_name_refused(imputer, tmp_path):
    path = tmp_path / "model.safetensors"
    skebflow.save(imputer, path)
    fitted = json.loads(_metadata(path)["fitted"])
    assert fitted["estimator_"]["__estimator__"]["class"] == "EBFlowDensity"
    fitted["estimator_"]["__estimator__"]["class"] = "subprocess.Popen"
    _rewrite(path, fitted=json.dumps(fitted))
    with pytest.raises(ValueError, match="'subprocess.Popen'.*allowed classes"):
        skebflow.load(path)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"format": "other"}, "not a skebflow model file"),
        ({"format_version": "99"}, "format version"),
        ({"fitted": "{not json"}, "corrupted"),
        ({"params": json.dumps({"n_layers": {"__pickle__": "x"}})}, "corrupted"),
        ({"params": json.dumps({"no_such_param": 1})}, "no_such_param"),
        ({"fitted": json.dumps({"__class__": "x"})}, "corrupted"),
        ({"fitted": "[" * 100_000 + "]" * 100_000}, "corrupted"),
        ({"fitted": json.dumps({"objective_": "ml"})}, "lacks"),
    ],
)
def test_corrupted_file_refused(density, tmp_path, changes, message):
    path = tmp_path / "model.safetensors"
    skebflow.save(density, path)
    _rewrite(path, **changes)
    with pytest.raises(ValueError, match=message):
        skebflow.load(path)


def test_a_changed_weight_or_entry_fails_the_checksum(density, data, tmp_path):
    path = tmp_path / "model.safetensors"
    skebflow.save(density, path)
    metadata = _metadata(path)
    tensors = load_file(str(path))
    key = next(key for key in sorted(tensors) if key.startswith("flow_/"))
    changed = dict(tensors)
    changed[key] = tensors[key].copy()
    changed[key].flat[0] = np.nextafter(changed[key].flat[0], np.inf)  # one ulp
    save_file(changed, str(path), metadata=metadata)
    with pytest.raises(ValueError, match="do not match the SHA-256 checksum"):
        skebflow.load(path)
    # The same file with its tensors as saved loads and scores as the estimator.
    save_file(tensors, str(path), metadata=metadata)
    np.testing.assert_array_equal(
        skebflow.load(path).score_samples(data), density.score_samples(data)
    )
    # A metadata entry changed under the checksum.
    fitted = json.loads(metadata["fitted"])
    fitted["n_iter_"] += 1
    _rewrite(path, keep_checksum=True, fitted=json.dumps(fitted))
    with pytest.raises(ValueError, match="do not match the SHA-256 checksum"):
        skebflow.load(path)
    # A file of format version 1 (from before the checksum) with the same edit
    # loads; one of version 2 without its checksum does not.
    _rewrite(path)
    assert skebflow.load(path).n_iter_ == density.n_iter_ + 1
    _rewrite(path, keep_checksum=True, format_version="2")  # none to keep
    with pytest.raises(ValueError, match="no sha256 entry"):
        skebflow.load(path)
    # A changed file relabelled as version 1, its checksum left in place, is
    # checked all the same: the relabelling does not skip the check.
    skebflow.save(density, path)
    _rewrite(path, keep_checksum=True, format_version="1", fitted=json.dumps(fitted))
    with pytest.raises(ValueError, match="do not match the SHA-256 checksum"):
        skebflow.load(path)


def test_a_damaged_byte_in_the_file_is_refused(density, tmp_path):
    path = tmp_path / "model.safetensors"
    skebflow.save(density, path)
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x10  # a byte of the last tensor's data
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="corrupted"):
        skebflow.load(path)


def test_missing_tensor_refused(density, tmp_path):
    path = tmp_path / "model.safetensors"
    skebflow.save(density, path)
    metadata = _metadata(path)
    tensors = load_file(str(path))
    tensors.pop(next(key for key in tensors if key.startswith("flow_/")))
    # the structure's check, as for a file of format version 1 (no checksum)
    metadata.pop("sha256")
    metadata["format_version"] = "1"
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(ValueError, match="corrupted"):
        skebflow.load(path)


def test_arrays_that_do_not_fit_the_spec_refused(density, tmp_path):
    path = tmp_path / "model.safetensors"
    skebflow.save(density, path)
    fitted = json.loads(_metadata(path)["fitted"])
    fitted["_flow_spec"]["__dict__"]["n_layers"] = 3
    _rewrite(path, fitted=json.dumps(fitted))
    with pytest.raises(ValueError, match="could not be rebuilt"):
        skebflow.load(path)


def test_not_a_safetensors_file(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(ValueError, match="not a safetensors file"):
        skebflow.load(path)


def test_version_drift_warns(density, tmp_path):
    path = tmp_path / "model.safetensors"
    skebflow.save(density, path)
    versions = json.loads(_metadata(path)["versions"])
    _rewrite(path, versions=json.dumps({**versions, "torch": "1.0.0"}))
    with pytest.warns(InconsistentVersionWarning, match=r"torch 1\.0\.0") as record:
        skebflow.load(path)
    assert issubclass(record[0].category, UserWarning)
    assert record[0].filename == __file__  # points at the caller of load


def test_same_versions_do_not_warn(density, tmp_path):
    path = tmp_path / "model.safetensors"
    skebflow.save(density, path)
    versions = json.loads(_metadata(path)["versions"])
    # torch's local build label (CUDA or CPU wheel) is not a version change.
    torch_public = torch.__version__.split("+")[0]
    _rewrite(path, versions=json.dumps({**versions, "torch": torch_public + "+cu121"}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        skebflow.load(path)


# ---------------------------------------------------------------- refusals


def test_unfitted_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    with pytest.raises(NotFittedError, match="not fitted yet; only a fitted"):
        skebflow.save(EBFlowDensity(), path)
    assert not path.exists()


def test_other_classes_refused(data, tmp_path):
    class MyDensity(EBFlowDensity):
        pass

    with pytest.raises(TypeError, match="stores only EBFlowDensity"):
        skebflow.save(KernelDensity().fit(data), tmp_path / "kde.safetensors")
    subclassed = quiet_fit(MyDensity(**TINY), data)
    with pytest.raises(TypeError, match="not subclasses"):
        skebflow.save(subclassed, tmp_path / "sub.safetensors")


def test_unrepresentable_parameter_refused(density, tmp_path):
    est = copy.deepcopy(density)
    est.random_state = np.random.default_rng(0)  # not a RandomState
    path = tmp_path / "model.safetensors"
    with pytest.raises(ValueError, match="params.random_state is a numpy.random"):
        skebflow.save(est, path)
    assert not path.exists()


# ------------------------------------------------------------------ devices


def _saved_as_fitted_on(estimator, device: str, path):
    """Save ``estimator`` to ``path`` as if it had been fitted on ``device``."""
    skebflow.save(estimator, path)
    fitted = json.loads(_metadata(path)["fitted"])
    fitted["device_"] = device
    _rewrite(path, fitted=json.dumps(fitted))
    return path


def test_cuda_model_loads_on_cpu_simulated(density, data, tmp_path, monkeypatch):
    """A file whose model lived on 'cuda:0' loads on a machine without CUDA."""
    path = _saved_as_fitted_on(density, "cuda:0", tmp_path / "model.safetensors")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(UserWarning, match="'cuda:0', which is not available here"):
        loaded = skebflow.load(path)
    assert loaded.device_ == "cpu"
    np.testing.assert_array_equal(
        loaded.score_samples(data), density.score_samples(data)
    )


def test_a_model_of_a_gpu_this_machine_lacks_loads_on_cpu(
    density, data, tmp_path, monkeypatch
):
    """Fitted on 'cuda:1' and loaded where CUDA has one device: the CPU, with the
    warning (torch would fail on the device ordinal), by pickle and by load."""
    path = _saved_as_fitted_on(density, "cuda:1", tmp_path / "model.safetensors")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.warns(UserWarning, match="'cuda:1', which is not available here"):
        loaded = skebflow.load(path)
    assert loaded.device_ == "cpu"
    np.testing.assert_array_equal(
        loaded.score_samples(data), density.score_samples(data)
    )
    state = density.__getstate__()
    state["device_"] = "cuda:1"
    copied = EBFlowDensity.__new__(EBFlowDensity)
    with pytest.warns(UserWarning, match="'cuda:1', which is not available here"):
        copied.__setstate__(state)
    assert copied.device_ == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_saved_model_loads_on_cpu(data, tmp_path, monkeypatch):
    est = quiet_fit(EBFlowDensity(**{**TINY, "device": "cuda"}), data)
    assert est.device_.startswith("cuda")
    path = tmp_path / "model.safetensors"
    skebflow.save(est, path)
    on_gpu = skebflow.load(path)
    assert on_gpu.device_ == est.device_  # back on the GPU where there is one
    np.testing.assert_allclose(
        on_gpu.score_samples(data), est.score_samples(data), rtol=1e-12, atol=1e-12
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(UserWarning, match="which is not available here"):
        loaded = skebflow.load(path)
    assert loaded.device_ == "cpu"
    assert loaded.flow_.device.type == "cpu"
    np.testing.assert_allclose(
        loaded.score_samples(data), est.score_samples(data), rtol=1e-10, atol=1e-10
    )


# -------------------------------------------------------------------- skops


def test_skops_pipeline_needs_only_skebflow_types_trusted(data, tmp_path):
    sio = pytest.importorskip("skops.io")
    pipeline = quiet_fit(make_pipeline(StandardScaler(), EBFlowDensity(**TINY)), data)
    path = tmp_path / "pipeline.skops"
    sio.dump(pipeline, path)
    untrusted = sio.get_untrusted_types(file=path)
    # The flow is stored as NumPy state dicts (__getstate__): no torch type to trust.
    assert untrusted == ["skebflow._density.EBFlowDensity"]
    with pytest.raises(Exception, match="Untrusted types"):
        sio.load(path)
    loaded = sio.load(path, trusted=["skebflow._density.EBFlowDensity"])
    np.testing.assert_array_equal(
        loaded.score_samples(data), pipeline.score_samples(data)
    )
    np.testing.assert_array_equal(
        loaded[-1].sample(5, random_state=0), pipeline[-1].sample(5, random_state=0)
    )


@pytest.mark.parametrize(
    "edit, message",
    [
        # a spec of the wrong type
        (lambda fitted: fitted.update(_flow_spec=[1, 2]), "could not be rebuilt"),
        # a feature count that the stored flow does not take
        (lambda fitted: fitted.update(n_features_in_=7), "could not be rebuilt"),
        (lambda fitted: fitted.update(n_features_in_=0), "n_features_in_ is 0"),
        # a device skebflow never fits on: refused, not a model that fails later
        (lambda fitted: fitted.update(device_="meta"), "'meta' is not one skebflow"),
        (lambda fitted: fitted.update(device_="nonsense"), "is not a torch device"),
        # without it, every scoring method would fail with an AttributeError
        (lambda fitted: fitted.pop("log_normalizer_"), r"lacks \['log_normalizer_'\]"),
    ],
)
def test_hand_edited_fitted_attributes_refused(density, tmp_path, edit, message):
    path = tmp_path / "model.safetensors"
    skebflow.save(density, path)
    fitted = json.loads(_metadata(path)["fitted"])
    edit(fitted)
    _rewrite(path, fitted=json.dumps(fitted))
    with pytest.raises(ValueError, match=message):
        skebflow.load(path)


@pytest.mark.parametrize(
    "name, value, message",
    [
        # each loaded before, and then scored silently wrong or failed when used
        ("offset_", "abc", "offset_ is 'abc'"),
        ("offset_", None, "offset_ is None"),
        ("flow_combination_", "bogus", "flow_combination_ is 'bogus'"),
        ("base_scale_", -5.0, "base_scale_ is -5.0"),
        ("log_normalizer_", "x", "log_normalizer_ is not a finite number"),
    ],
)
def test_hand_edited_scoring_attributes_refused(
    detector, tmp_path, name, value, message
):
    path = tmp_path / "model.safetensors"
    skebflow.save(detector, path)
    fitted = json.loads(_metadata(path)["fitted"])
    assert name in fitted
    fitted[name] = value
    _rewrite(path, fitted=json.dumps(fitted))
    with pytest.raises(ValueError, match=message):
        skebflow.load(path)


@pytest.mark.parametrize("inner", [5, "unfitted"])
def test_an_imputer_without_a_fitted_density_refused(imputer, tmp_path, inner):
    path = tmp_path / "model.safetensors"
    skebflow.save(imputer, path)
    fitted = json.loads(_metadata(path)["fitted"])
    if inner == "unfitted":
        fitted["estimator_"]["__estimator__"]["fitted"] = {}
    else:
        fitted["estimator_"] = inner
    _rewrite(path, fitted=json.dumps(fitted))
    with pytest.raises(ValueError, match="not a fitted EBFlowDensity"):
        skebflow.load(path)


def test_a_directory_is_refused_with_what_to_pass(tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        skebflow.load(tmp_path)


def test_an_interrupted_save_keeps_the_previous_file(
    density, data, tmp_path, monkeypatch
):
    path = tmp_path / "model.safetensors"
    skebflow.save(density, path)
    before = path.read_bytes()

    def interrupted(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:  # half a file, then the interruption
            handle.write(b"\x00" * 10)
        raise KeyboardInterrupt

    monkeypatch.setattr("skebflow._persistence.save_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        skebflow.save(density, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]
    np.testing.assert_array_equal(
        skebflow.load(path).score_samples(data), density.score_samples(data)
    )


def test_a_hand_edited_indicator_list_is_refused(imputer):
    from skebflow._persistence import _check_rebuilt

    edited = copy.deepcopy(imputer)
    for bad in (np.array([2]), np.array([1, 1]), np.array([0.5]), [1]):
        edited.indicator_features_ = bad
        with pytest.raises(ValueError, match="indicator_features_"):
            _check_rebuilt(edited)
    edited.indicator_features_ = np.array([1])
    _check_rebuilt(edited)  # a valid list passes
    # An empty feature the density models, or one out of range, is refused too.
    for bad in (np.array([0]), np.array([5]), [0]):
        edited.empty_features_ = bad
        with pytest.raises(ValueError, match="empty_features_|estimator_"):
            _check_rebuilt(edited)


def test_values_from_numpy_grids_and_pandas_round_trip(data, tmp_path):
    """A string parameter from a NumPy grid (numpy.str_, as GridSearchCV sets it)
    and the imputer's documented missing_values=pd.NA are saved and come back."""
    pd = pytest.importorskip("pandas")
    density = quiet_fit(EBFlowDensity(**{**TINY, "objective": np.str_("ml")}), data)
    path = tmp_path / "model.safetensors"
    skebflow.save(density, path)
    loaded = skebflow.load(path)
    assert loaded.objective == "ml" and loaded.objective_ == "ml"
    np.testing.assert_array_equal(
        loaded.score_samples(data), density.score_samples(data)
    )
    X = data.copy()
    X[::7, 1] = np.nan
    imputer = quiet_fit(
        EBFlowImputer(
            EBFlowDensity(**TINY),
            missing_values=pd.NA,
            method="mode",
            n_steps=5,
            random_state=0,
        ),
        X,
    )
    skebflow.save(imputer, path)
    loaded = skebflow.load(path)
    assert loaded.missing_values is pd.NA
    np.testing.assert_array_equal(loaded.transform(X), imputer.transform(X))


def test_saving_into_a_missing_folder_says_so(density, tmp_path):
    target = tmp_path / "no_such_folder" / "model.safetensors"
    with pytest.raises(FileNotFoundError, match="does not exist; create it first"):
        skebflow.save(density, target)


# ------------------------------------------------- files older than a parameter


def _without(path, params=(), fitted=()):
    """The model file at ``path`` as a version that predates ``params`` and the
    fitted attributes ``fitted`` wrote it (format version 1)."""
    metadata = _metadata(path)
    stored_params = json.loads(metadata["params"])
    stored_fitted = json.loads(metadata["fitted"])
    for name in params:
        del stored_params[name]
    for name in fitted:
        del stored_fitted[name]
    _rewrite(path, params=json.dumps(stored_params), fitted=json.dumps(stored_fitted))


@pytest.mark.filterwarnings("ignore:The training rows lie on a hyperplane")
def test_a_file_older_than_a_parameter_loads_as_its_pickle_does(tmp_path):
    """A model saved before ``marginal_transform`` and ``linear_relations``
    existed standardized every column and fitted relations as they were; its
    ``__setstate__`` keeps that for a refit. The loader built the estimator with
    today's defaults first, so the loaded model refitted with kernel marginals and
    narrowed relations, unlike the same model unpickled."""
    rng = np.random.RandomState(0)
    X = rng.normal(size=(200, 3))
    X[:, 2] = X[:, 0] + X[:, 1]
    old = quiet_fit(
        EBFlowDensity(**TINY, marginal_transform=None, linear_relations="warn"), X
    )
    path = tmp_path / "old.safetensors"
    skebflow.save(old, path)
    names = ("marginal_transform", "linear_relations")
    _without(path, params=names, fitted=("marginal_transform_",))
    loaded = skebflow.load(path)
    state = old.__getstate__()
    for name in (*names, "marginal_transform_"):
        del state[name]
    unpickled = EBFlowDensity.__new__(EBFlowDensity)
    unpickled.__setstate__(state)
    assert (loaded.marginal_transform, loaded.linear_relations) == (None, "warn")
    _same_params(loaded, unpickled)
    np.testing.assert_array_equal(loaded.score_samples(X), unpickled.score_samples(X))
    quiet_fit(loaded, X)
    assert loaded.marginal_transform_ is None
    assert not loaded.dependent_features_.any()


def test_a_parameter_no_version_handles_takes_its_default(density, tmp_path):
    """A parameter the file lacks and the class keeps no older value for takes
    today's default."""
    path = tmp_path / "model.safetensors"
    skebflow.save(density, path)
    _without(path, params=("verbose",))
    loaded = skebflow.load(path)
    assert loaded.verbose == EBFlowDensity().verbose
    rows = np.full((3, density.n_features_in_), 0.1)
    np.testing.assert_array_equal(
        loaded.score_samples(rows), density.score_samples(rows)
    )


def test_an_imputer_with_a_constant_feature_round_trips(data, tmp_path):
    X = np.c_[data, np.full(len(data), 3.0)]
    X[::7, 1] = np.nan
    X[::5, 2] = np.nan
    inner = EBFlowDensity(**TINY)
    imputer = quiet_fit(
        EBFlowImputer(inner, method="mode", n_steps=5, random_state=0), X
    )
    assert imputer.constant_features_.tolist() == [2]
    loaded = _roundtrip(imputer, tmp_path)
    np.testing.assert_array_equal(loaded.constant_values_, [3.0])
    np.testing.assert_array_equal(loaded.transform(X), imputer.transform(X))


def test_metadata_routing_requests_round_trip(data, tmp_path):
    """What set_{method}_request asked for (scikit-learn's metadata routing) is
    kept; saving refused such an estimator, calling the request a parameter."""
    with sklearn.config_context(enable_metadata_routing=True):
        inner = EBFlowDensity(**TINY).set_fit_request(sample_weight="weights")
        imputer = EBFlowImputer(inner, method="mode", n_steps=2, random_state=0)
        X = data.copy()
        X[::7, 1] = np.nan
        for estimator in (
            EBFlowDensity(**TINY)
            .set_fit_request(sample_weight="weights")
            .set_partial_fit_request(sample_weight=False),
            EBFlowOutlierDetector(**TINY).set_fit_request(sample_weight=True),
            imputer.set_fit_request(sample_weight=True),
        ):
            quiet_fit(estimator, X if estimator is imputer else data)
            loaded = _roundtrip(estimator, tmp_path)
            assert str(loaded.get_metadata_routing()) == str(
                estimator.get_metadata_routing()
            )
        assert loaded.estimator._metadata_request.fit.requests == {
            "sample_weight": "weights"
        }
        np.testing.assert_array_equal(
            loaded.transform(X[:10]), estimator.transform(X[:10])
        )


def test_bad_metadata_requests_are_refused(density, tmp_path):
    with sklearn.config_context(enable_metadata_routing=True):
        routed = copy.deepcopy(density).set_fit_request(sample_weight=True)
    path = tmp_path / "routed.safetensors"
    skebflow.save(routed, path)
    fitted = json.loads(_metadata(path)["fitted"])
    # a density has no set_transform_request
    fitted["_metadata_request"]["__dict__"]["__metadata_requests__"]["__dict__"][
        "transform"
    ] = {"__dict__": {"sample_weight": True}}
    _rewrite(path, fitted=json.dumps(fitted))
    with pytest.raises(ValueError, match="metadata requests of 'transform'"):
        skebflow.load(path)


@pytest.mark.parametrize("dtype", [np.int64, np.float16, np.bool_])
def test_weights_of_another_dtype_are_refused(density, data, tmp_path, dtype):
    """load_state_dict converted them silently: integer or boolean weights loaded
    as another model (scores -inf), float16 ones as a rounded one."""
    path = tmp_path / "model.safetensors"
    skebflow.save(density, path)
    tensors = load_file(str(path))
    key = next(k for k in tensors if k.startswith("flow_/") and k.endswith("weight"))
    tensors[key] = tensors[key].astype(dtype)
    save_file(tensors, str(path), metadata=_metadata(path))
    _rewrite(path)  # format version 1: no checksum to fail first
    with pytest.raises(ValueError, match=r"flow_'s .*weight is stored as"):
        skebflow.load(path)
