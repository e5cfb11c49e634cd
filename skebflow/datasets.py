"""Toy 2-D generators and loaders for the real data of the benchmarks.

The generators follow the EBFlow paper's toy experiments (Chao et al., 2023). The
loaders read files that are never shipped with skebflow: they look in ``data_dir``,
then in the ``SKEBFLOW_DATA`` environment variable, then in ``../shared/data`` beside
the repository, and say what is missing and where to get it.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from sklearn.utils import check_random_state

__all__ = [
    "ADBENCH_NAMES",
    "find_data_dir",
    "load_adbench",
    "load_mnist_test",
    "make_checkerboard",
    "make_sine",
    "make_swirl",
]

ADBENCH_NAMES = (
    "2_annthyroid",
    "6_cardio",
    "7_Cardiotocography",
    "12_fault",
    "14_glass",
    "18_Ionosphere",
    "19_landsat",
    "22_magic.gamma",
    "23_mammography",
    "25_musk",
    "27_PageBlocks",
    "28_pendigits",
    "29_Pima",
    "31_satimage-2",
    "38_thyroid",
    "40_vowels",
    "41_Waveform",
    "43_WDBC",
    "44_Wilt",
    "47_yeast",
)
"""The 20 classical ADBench data sets the benchmarks use."""


def make_sine(
    n_samples: int = 1000, *, noise: float = 0.0, random_state: int | None = None
) -> NDArray[np.float64]:
    """Points around a sine wave: ``x ~ U[-2, 2]``, ``y = sin(3x) + N(0, 0.25^2)``, x4.

    Parameters
    ----------
    n_samples : int, default=1000
        Number of points.
    noise : float, default=0.0
        Standard deviation of extra Gaussian noise added to both coordinates.
    random_state : int, RandomState instance or None, default=None
        Seed.

    Returns
    -------
    X : ndarray of shape (n_samples, 2)

    Examples
    --------
    >>> from skebflow.datasets import make_sine
    >>> make_sine(5, random_state=0).shape
    (5, 2)
    """
    rng = check_random_state(random_state)
    x = rng.uniform(-2.0, 2.0, n_samples)
    y = np.sin(3.0 * x) + 0.25 * rng.normal(size=n_samples)
    return _finish(4.0 * np.c_[x, y], noise, rng)


def make_swirl(
    n_samples: int = 1000, *, noise: float = 0.0, random_state: int | None = None
) -> NDArray[np.float64]:
    """A spiral arm: angle ``sqrt(U) * 540`` degrees, radius growing with it, x 2.5/3.

    Parameters
    ----------
    n_samples : int, default=1000
        Number of points.
    noise : float, default=0.0
        Standard deviation of extra Gaussian noise added to both coordinates.
    random_state : int, RandomState instance or None, default=None
        Seed.

    Returns
    -------
    X : ndarray of shape (n_samples, 2)

    Examples
    --------
    >>> from skebflow.datasets import make_swirl
    >>> make_swirl(5, random_state=0).shape
    (5, 2)
    """
    rng = check_random_state(random_state)
    angle = np.sqrt(rng.uniform(size=n_samples)) * 540.0 * np.pi / 180.0
    jitter = rng.uniform(size=(n_samples, 2)) * 0.5
    points = np.c_[-np.cos(angle) * angle, np.sin(angle) * angle] + jitter
    return _finish(points * 2.5 / 3.0, noise, rng)


def make_checkerboard(
    n_samples: int = 1000, *, noise: float = 0.0, random_state: int | None = None
) -> NDArray[np.float64]:
    """Uniform points on the dark cells of a 4 x 4 board over ``[-6, 6]^2``.

    Parameters
    ----------
    n_samples : int, default=1000
        Number of points.
    noise : float, default=0.0
        Standard deviation of extra Gaussian noise added to both coordinates.
    random_state : int, RandomState instance or None, default=None
        Seed.

    Returns
    -------
    X : ndarray of shape (n_samples, 2)

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow.datasets import make_checkerboard
    >>> X = make_checkerboard(1000, random_state=0)
    >>> cells = np.floor((X + 6) / 3).astype(int)
    >>> bool(np.all((cells.sum(axis=1) % 2) == 0))
    True
    """
    rng = check_random_state(random_state)
    x1 = rng.uniform(-2.0, 2.0, n_samples)
    x2 = rng.uniform(0.0, 1.0, n_samples) + rng.randint(-2, 2, n_samples)
    x2 = x2 + (
        np.floor(x1) % 2 != np.floor(x2) % 2
    )  # move to a cell of matching parity
    x2 = np.where(x2 >= 2.0, x2 - 4.0, x2)
    return _finish(3.0 * np.c_[x1, x2], noise, rng)


def _finish(
    X: NDArray[np.float64], noise: float, rng: np.random.RandomState
) -> NDArray[np.float64]:
    if noise > 0:
        X = X + noise * rng.normal(size=X.shape)
    return np.ascontiguousarray(X, dtype=np.float64)


def find_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding ``adbench/`` and ``mnist/``.

    Parameters
    ----------
    data_dir : path or None, default=None
        Explicit folder; else ``$SKEBFLOW_DATA``; else ``../shared/data`` beside the
        repository or the working directory.

    Returns
    -------
    Path

    Raises
    ------
    FileNotFoundError
        When no candidate exists, naming each place looked at.

    Examples
    --------
    >>> from skebflow.datasets import find_data_dir
    >>> find_data_dir("/nonexistent")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    FileNotFoundError: ...
    """
    if data_dir is not None:
        candidates = [Path(data_dir)]
    else:
        candidates = []
        if os.environ.get("SKEBFLOW_DATA"):
            candidates.append(Path(os.environ["SKEBFLOW_DATA"]))
        repository = Path(__file__).resolve().parents[1]
        candidates += [
            repository.parent / "shared" / "data",
            Path.cwd().parent / "shared" / "data",
        ]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"No data folder found (looked in: {looked}). Pass data_dir=, or set"
        " SKEBFLOW_DATA to a folder holding adbench/*.npz (ADBench, Han et al. 2022,"
        " github.com/Minqi824/ADBench) and mnist/t10k-images-idx3-ubyte.gz (the"
        " official MNIST test files)."
    )


def load_adbench(
    name: str, *, data_dir: str | os.PathLike[str] | None = None
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """One classical ADBench data set: features ``X`` and labels ``y`` (1 = outlier).

    Parameters
    ----------
    name : str
        One of :data:`ADBENCH_NAMES`, e.g. ``"6_cardio"``.
    data_dir : path or None, default=None
        See :func:`find_data_dir`.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,)

    Examples
    --------
    >>> from skebflow.datasets import load_adbench
    >>> load_adbench("not_a_set")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    ValueError: ...
    """
    if name not in ADBENCH_NAMES:
        raise ValueError(
            f"name={name!r} is not an ADBench set here; use one of {ADBENCH_NAMES}."
        )
    path = find_data_dir(data_dir) / "adbench" / f"{name}.npz"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; get {name}.npz from ADBench's Classical sets."
        )
    with np.load(path) as archive:
        return archive["X"].astype(np.float64), archive["y"].astype(np.int64)


def load_mnist_test(
    *, data_dir: str | os.PathLike[str] | None = None
) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """The 10 000 MNIST test images (flattened to 784 uint8 pixels) and their labels.

    Parameters
    ----------
    data_dir : path or None, default=None
        See :func:`find_data_dir`.

    Returns
    -------
    images : ndarray of shape (10000, 784)
    labels : ndarray of shape (10000,)

    Examples
    --------
    >>> from skebflow.datasets import load_mnist_test
    >>> load_mnist_test(data_dir="/nonexistent")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    FileNotFoundError: ...
    """
    folder = find_data_dir(data_dir) / "mnist"
    images_path = folder / "t10k-images-idx3-ubyte.gz"
    labels_path = folder / "t10k-labels-idx1-ubyte.gz"
    for path in (images_path, labels_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing; get it from the official MNIST files."
            )
    with gzip.open(images_path, "rb") as handle:
        images = np.frombuffer(handle.read(), dtype=np.uint8, offset=16).reshape(
            -1, 784
        )
    with gzip.open(labels_path, "rb") as handle:
        labels = np.frombuffer(handle.read(), dtype=np.uint8, offset=8)
    return images.copy(), labels.copy()
