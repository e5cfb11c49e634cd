"""Toy generators and data loaders."""

from __future__ import annotations

import numpy as np
import pytest

from skebflow import datasets


@pytest.mark.parametrize(
    "make", [datasets.make_sine, datasets.make_swirl, datasets.make_checkerboard]
)
def test_generators_are_reproducible_and_bounded(make):
    first = make(2000, random_state=0)
    assert first.shape == (2000, 2) and first.dtype == np.float64
    np.testing.assert_array_equal(first, make(2000, random_state=0))
    assert not np.array_equal(first, make(2000, random_state=1))
    assert np.all(np.abs(first) < 10)
    noisy = make(2000, noise=0.375, random_state=0)
    assert 0.3 < np.std(noisy - first) < 0.45


@pytest.mark.parametrize(
    "make", [datasets.make_sine, datasets.make_swirl, datasets.make_checkerboard]
)
@pytest.mark.parametrize(
    "arguments, named",
    [
        ({"n_samples": 0}, "n_samples"),
        ({"n_samples": -1}, "n_samples"),
        ({"n_samples": 2.5}, "n_samples"),
        ({"n_samples": 5, "noise": -1.0}, "noise"),
    ],
)
def test_generators_refuse_bad_arguments_by_name(make, arguments, named):
    # A negative noise was taken for none, and a bad count failed inside NumPy
    # without naming the parameter.
    with pytest.raises(ValueError, match=f"'{named}' parameter"):
        make(**arguments)


@pytest.mark.parametrize("n_samples", [0, -3, 2.5])
def test_known_density_refuses_a_bad_count(n_samples):
    with pytest.raises((ValueError, TypeError), match="n_samples"):
        datasets.BimodalHeavyTailed().sample(n_samples)
    with pytest.raises(ValueError, match="'n_samples' parameter"):
        datasets.make_bimodal_heavy_tailed(n_samples)


def test_checkerboard_fills_only_dark_cells():
    X = datasets.make_checkerboard(5000, random_state=0)
    cells = np.floor((X + 6) / 3).astype(int)
    assert np.all(cells.sum(axis=1) % 2 == 0)
    assert len({tuple(c) for c in cells}) == 8


def test_missing_data_folder_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("SKEBFLOW_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="SKEBFLOW_DATA"):
        datasets.find_data_dir(tmp_path / "nothing")
    (tmp_path / "adbench").mkdir()
    with pytest.raises(FileNotFoundError, match="6_cardio.npz is missing"):
        datasets.load_adbench("6_cardio", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="adbench_large.*10_cover.npz"):
        datasets.load_adbench("10_cover", data_dir=tmp_path)
    with pytest.raises(ValueError, match="not an ADBench set"):
        datasets.load_adbench("cardio", data_dir=tmp_path)
    # A wrong SKEBFLOW_DATA is an error, not a silent fall-back to ../shared/data.
    with pytest.raises(FileNotFoundError, match="SKEBFLOW_DATA=.*is not a folder"):
        datasets.find_data_dir()
    monkeypatch.setenv("SKEBFLOW_DATA", str(tmp_path))
    assert datasets.find_data_dir() == tmp_path


def test_a_file_without_adbench_arrays_is_named(tmp_path):
    # It raised a bare KeyError('X is not a file in the archive').
    (tmp_path / "adbench").mkdir()
    np.savez(tmp_path / "adbench" / "6_cardio.npz", data=np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"6_cardio.npz holds the arrays \['data'\]"):
        datasets.load_adbench("6_cardio", data_dir=tmp_path)


def test_real_data_when_present():
    try:
        folder = datasets.find_data_dir()
    except FileNotFoundError:
        pytest.skip("the shared data folder is not on this machine")
    X, y = datasets.load_adbench("6_cardio", data_dir=folder)
    assert X.shape == (1831, 21) and int(y.sum()) == 176
    X, y = datasets.load_adbench("34_smtp", data_dir=folder)
    assert X.shape == (95156, 3) and int(y.sum()) == 30
    images, labels = datasets.load_mnist_test(data_dir=folder)
    assert images.shape == (10000, 784) and labels.shape == (10000,)
