"""Toy generators, a known density and loaders for the real data of the benchmarks.

The 2-D generators follow the EBFlow paper's toy experiments (Chao et al., 2023);
:class:`BimodalHeavyTailed` is a 4-D density whose log-density is known exactly. The
loaders read files that are never shipped with skebflow: they look in ``data_dir``,
then in the ``SKEBFLOW_DATA`` environment variable, then in ``../shared/data`` beside
the repository, and say what is missing and where to get it.
"""

from __future__ import annotations

import gzip
import os
from numbers import Integral, Real
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.linalg import solve_triangular
from scipy.special import gammaln, logsumexp
from sklearn.utils import check_random_state, check_scalar
from sklearn.utils._param_validation import Interval, validate_params

__all__ = [
    "ADBENCH_LARGE_NAMES",
    "ADBENCH_NAMES",
    "BimodalHeavyTailed",
    "find_data_dir",
    "load_adbench",
    "load_mnist_test",
    "make_bimodal_heavy_tailed",
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
"""The 20 classical ADBench data sets the benchmarks use (folder ``adbench/``)."""

ADBENCH_LARGE_NAMES = (
    "8_celeba",
    "10_cover",
    "11_donors",
    "16_http",
    "17_InternetAds",
    "33_skin",
    "34_smtp",
)
"""Seven more classical ADBench sets, large or wide (folder ``adbench_large/``)."""


#: What scikit-learn's ``make_*`` generators check, with its messages: a count of
#: at least one row, a non-negative noise, a seed.
_GENERATOR_CONSTRAINTS = {
    "n_samples": [Interval(Integral, 1, None, closed="left")],
    "noise": [Interval(Real, 0, None, closed="left")],
    "random_state": ["random_state"],
}


@validate_params(_GENERATOR_CONSTRAINTS, prefer_skip_nested_validation=True)
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


@validate_params(_GENERATOR_CONSTRAINTS, prefer_skip_nested_validation=True)
def make_swirl(
    n_samples: int = 1000, *, noise: float = 0.0, random_state: int | None = None
) -> NDArray[np.float64]:
    """A spiral arm: angle ``sqrt(U) * 540`` degrees, radius growing with it, x 2.5/3.

    The paper's generator negates the points and shifts them by ``(1, 2)`` before
    the scaling; this arm is the same shape turned by 180 degrees and centred
    about ``(2.5 / 3) * (1, 2)`` further from the origin, which changes no
    divergence between a model and it.

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


@validate_params(_GENERATOR_CONSTRAINTS, prefer_skip_nested_validation=True)
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


def _read_only(values: ArrayLike) -> NDArray[np.float64]:
    """A float64 array that cannot be written to."""
    array = np.array(values, dtype=np.float64)
    array.flags.writeable = False
    return array


class BimodalHeavyTailed:
    """A 4-D density with an exact log-density: two unequal modes, one heavy tail.

    A mixture of two components of weights ``weights = (0.4, 0.6)``. In component
    ``k`` the first three columns are correlated normals around ``(-2, -2, 0)`` and
    ``(2, 2, 0.5)``, far enough apart that Bayes' rule misassigns 0.05 % of the rows;
    the fourth column is ``-/+0.3 + 0.3 x_3 + (0.8 or 1.2) T`` with ``T`` a Student-t
    of ``df = 5`` degrees of freedom: its marginal excess kurtosis is 5.76 (a normal
    has 0) and its tails decay like ``|x|^-6``. The differential entropy is 5.94 nats.
    Everything about it is known exactly, so a fitted model can be scored by
    ``KL(p || model) = E_p[log p(x) - log model(x)]``, by the mass it gives each mode
    and by its tails.

    Attributes
    ----------
    weights : ndarray of shape (2,)
        Mixture weights: the smaller mode has 0.4 (read-only: shared by every
        instance).
    df : float
        Degrees of freedom of the heavy-tailed fourth column.

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow.datasets import BimodalHeavyTailed
    >>> density = BimodalHeavyTailed()
    >>> X, modes = density.sample(20000, random_state=0, return_modes=True)
    >>> X.shape, round(float(np.mean(modes == 0)), 1)
    ((20000, 4), 0.4)
    >>> # Bayes' rule recovers the modes almost perfectly.
    >>> posterior = density.mode_posterior(X)
    >>> bool(np.mean((posterior[:, 0] > 0.5) == (modes == 0)) > 0.99)
    True
    >>> # Its differential entropy, -E_p[log p], is 5.94 nats.
    >>> round(float(-density.log_density(X).mean()), 1)
    5.9
    """

    # Read-only: every instance shares them, so an assignment into one would
    # change the "exact" density of all, for the rest of the process.
    weights = _read_only([0.4, 0.6])
    df = 5.0
    _means = _read_only([[-2.0, -2.0, 0.0], [2.0, 2.0, 0.5]])
    _cholesky = _read_only(
        [
            [[0.8, 0.0, 0.0], [0.5, 0.6, 0.0], [0.0, -0.3, 0.7]],
            [[1.0, 0.0, 0.0], [-0.4, 0.9, 0.0], [0.3, 0.2, 0.8]],
        ]
    )
    _shifts = _read_only([-0.3, 0.3])
    _scales = _read_only([0.8, 1.2])
    _slope = 0.3

    def sample(
        self,
        n_samples: int = 1000,
        *,
        random_state: int | np.random.RandomState | None = None,
        return_modes: bool = False,
    ) -> NDArray[np.float64] | tuple[NDArray[np.float64], NDArray[np.int64]]:
        """Independent draws of the density.

        Parameters
        ----------
        n_samples : int, default=1000
            Number of rows.
        random_state : int, RandomState instance or None, default=None
            Seed.
        return_modes : bool, default=False
            Also return the component (0 for the smaller one) each row came from.

        Returns
        -------
        X : ndarray of shape (n_samples, 4)
        modes : ndarray of shape (n_samples,)
            Only with ``return_modes=True``.

        Examples
        --------
        >>> from skebflow.datasets import BimodalHeavyTailed
        >>> BimodalHeavyTailed().sample(3, random_state=0).shape
        (3, 4)
        """
        check_scalar(n_samples, "n_samples", Integral, min_val=1)
        rng = check_random_state(random_state)
        modes = (rng.uniform(size=n_samples) >= self.weights[0]).astype(np.int64)
        normal = rng.normal(size=(n_samples, 3))
        gaussian = self._means[modes] + np.einsum(
            "nij,nj->ni", self._cholesky[modes], normal
        )
        heavy = rng.standard_t(self.df, size=n_samples)
        last = (
            self._shifts[modes]
            + self._slope * gaussian[:, 2]
            + self._scales[modes] * heavy
        )
        X = np.ascontiguousarray(np.c_[gaussian, last], dtype=np.float64)
        return (X, modes) if return_modes else X

    def _component_log_densities(self, X: NDArray[np.float64]) -> NDArray[np.float64]:
        """``log w_k + log p_k(x)`` per row and component, shape (n, 2)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != 4:
            raise ValueError(f"X must have shape (n_samples, 4), got {X.shape}.")
        df = self.df
        t_constant = (
            gammaln(0.5 * (df + 1.0)) - gammaln(0.5 * df) - 0.5 * np.log(df * np.pi)
        )
        columns = []
        for k in range(2):
            cholesky = self._cholesky[k]
            white = solve_triangular(
                cholesky, (X[:, :3] - self._means[k]).T, lower=True
            )
            log_normal = (
                -0.5 * np.sum(white**2, axis=0)
                - np.sum(np.log(np.diag(cholesky)))
                - 1.5 * np.log(2.0 * np.pi)
            )
            residual = (
                X[:, 3] - self._shifts[k] - self._slope * X[:, 2]
            ) / self._scales[k]
            log_t = (
                t_constant
                - 0.5 * (df + 1.0) * np.log1p(residual**2 / df)
                - np.log(self._scales[k])
            )
            columns.append(np.log(self.weights[k]) + log_normal + log_t)
        return np.stack(columns, axis=1)

    def log_density(self, X: ArrayLike) -> NDArray[np.float64]:
        """The exact log-density of each row.

        Parameters
        ----------
        X : array-like of shape (n_samples, 4)
            Points.

        Returns
        -------
        ndarray of shape (n_samples,)

        Examples
        --------
        >>> import numpy as np
        >>> from skebflow.datasets import BimodalHeavyTailed
        >>> density = BimodalHeavyTailed()
        >>> X = density.sample(5, random_state=0)
        >>> density.log_density(X).shape
        (5,)
        """
        return logsumexp(self._component_log_densities(X), axis=1)

    def mode_posterior(self, X: ArrayLike) -> NDArray[np.float64]:
        """The probability of each component given each row (Bayes' rule).

        Parameters
        ----------
        X : array-like of shape (n_samples, 4)
            Points.

        Returns
        -------
        ndarray of shape (n_samples, 2)
            Column 0 is the smaller (weight 0.4) component.

        Examples
        --------
        >>> import numpy as np
        >>> from skebflow.datasets import BimodalHeavyTailed
        >>> density = BimodalHeavyTailed()
        >>> density.mode_posterior([[-2.0, -2.0, 0.0, -1.0]]).round(3).tolist()
        [[1.0, 0.0]]
        """
        joint = self._component_log_densities(X)
        return np.exp(joint - logsumexp(joint, axis=1, keepdims=True))


@validate_params(
    {
        "n_samples": _GENERATOR_CONSTRAINTS["n_samples"],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def make_bimodal_heavy_tailed(
    n_samples: int = 1000, *, random_state: int | np.random.RandomState | None = None
) -> NDArray[np.float64]:
    """Rows of :class:`BimodalHeavyTailed`, a 4-D density with an exact log-density.

    Two well separated modes of weights 0.4 and 0.6; the fourth column has Student-t
    tails (5 degrees of freedom). ``BimodalHeavyTailed().log_density`` scores any row
    exactly.

    Parameters
    ----------
    n_samples : int, default=1000
        Number of rows.
    random_state : int, RandomState instance or None, default=None
        Seed.

    Returns
    -------
    X : ndarray of shape (n_samples, 4)

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow.datasets import BimodalHeavyTailed, make_bimodal_heavy_tailed
    >>> X = make_bimodal_heavy_tailed(2000, random_state=0)
    >>> X.shape
    (2000, 4)
    >>> # The smaller mode holds about 40 % of the rows.
    >>> round(float(np.mean(X[:, 0] < 0)), 1)
    0.4
    >>> mean_log_density = BimodalHeavyTailed().log_density(X).mean()
    >>> bool(-7 < mean_log_density < -5)
    True
    """
    return BimodalHeavyTailed().sample(n_samples, random_state=random_state)


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
            # Asked for by name: a wrong path is an error, not a silent fallback.
            named = Path(os.environ["SKEBFLOW_DATA"])
            if not named.is_dir():
                raise FileNotFoundError(
                    f"SKEBFLOW_DATA={str(named)!r} is not a folder. Point it at a"
                    " folder holding adbench/*.npz and mnist/, or unset it to use"
                    " ../shared/data."
                )
            return named
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
        One of :data:`ADBENCH_NAMES`, e.g. ``"6_cardio"``, or of
        :data:`ADBENCH_LARGE_NAMES`, e.g. ``"10_cover"``.
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
    if name not in ADBENCH_NAMES + ADBENCH_LARGE_NAMES:
        raise ValueError(
            f"name={name!r} is not an ADBench set here; use one of"
            f" {ADBENCH_NAMES + ADBENCH_LARGE_NAMES}."
        )
    folder = "adbench" if name in ADBENCH_NAMES else "adbench_large"
    path = find_data_dir(data_dir) / folder / f"{name}.npz"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; get {name}.npz from ADBench's Classical sets."
        )
    with np.load(path) as archive:
        missing = [key for key in ("X", "y") if key not in archive.files]
        if missing:
            raise ValueError(
                f"{path} holds the arrays {archive.files}, not {missing}: it is not"
                f" an ADBench file; get {name}.npz again from ADBench's Classical"
                " sets."
            )
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
