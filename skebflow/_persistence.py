"""Safe model files: a fitted estimator as one safetensors file, loaded without pickle.

A model file holds the arrays (the weights of the flow and of its preprocessing, and
any other array a fitted estimator keeps) as safetensors tensors, and everything else
as JSON in the file's metadata (a ``dict[str, str]``):

``format``, ``format_version``
    ``"skebflow-model"`` and the version of this layout: 2 since the checksum below
    (:func:`load` reads 1 and 2).
``class``
    The estimator's class name, one of :data:`ALLOWED_CLASSES`.
``params``
    ``get_params(deep=False)``.
``fitted``
    The fitted attributes that are not arrays (``n_features_in_``, ``objective_``,
    ``loss_curve_``, ``device_``, ...) and the flow and preprocessing specs, with
    references to the tensors for those that are.
``versions``
    skebflow, torch, scikit-learn and NumPy (and Python, for information).
``sha256``
    A SHA-256 digest of the tensors (names, dtypes, shapes and bytes) and of the
    other metadata entries. :func:`load` refuses a file whose contents no longer
    match it: a damaged copy or a changed weight, which safetensors' own checks
    (of the header and the tensors' sizes) would let through. Format version 2
    requires it; files of version 1, written before it existed, have none and load
    as before, checked for structure only.

The state is the one the estimators pickle: ``__getstate__`` (which turns the torch
modules into NumPy state dicts) on saving and ``__setstate__`` (which rebuilds them
on ``device_``, or on the CPU when that device is missing) on loading. Loading runs
no pickle, imports nothing named by the file and calls no code the file names: the
class comes from a fixed allowlist and every value is plain JSON or an array.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import platform
import warnings
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np
import sklearn
import torch
from numpy.typing import NDArray
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file
from sklearn.base import BaseEstimator
from sklearn.utils._missing import is_pandas_na
from sklearn.utils.validation import check_is_fitted

from . import __version__
from ._density import EBFlowDensity
from ._impute import EBFlowImputer
from ._outlier import _BASE_SCALE_RANGE, EBFlowOutlierDetector

__all__ = ["ALLOWED_CLASSES", "InconsistentVersionWarning", "load", "save"]

FORMAT = "skebflow-model"
FORMAT_VERSION = 2
#: Format versions :func:`load` reads: 1 had no ``sha256`` entry.
_READABLE_FORMAT_VERSIONS = ("1", "2")

#: The only classes :func:`load` builds, by the name stored in the file (read-only).
ALLOWED_CLASSES: Mapping[str, type[BaseEstimator]] = MappingProxyType(
    {
        "EBFlowDensity": EBFlowDensity,
        "EBFlowOutlierDetector": EBFlowOutlierDetector,
        "EBFlowImputer": EBFlowImputer,
    }
)

# Fitted attributes without which a loaded estimator would only look fitted.
_FLOW_ATTRIBUTES = (
    "n_features_in_",
    "device_",
    "flow_",
    "preprocessing_",
    "_flow_spec",
    "_preprocessing_spec",
    "log_normalizer_",
)
_REQUIRED_FITTED: dict[str, tuple[str, ...]] = {
    "EBFlowDensity": _FLOW_ATTRIBUTES,
    "EBFlowOutlierDetector": (*_FLOW_ATTRIBUTES, "offset_"),
    "EBFlowImputer": ("n_features_in_", "estimator_"),
}

# Array dtypes stored as tensors (safetensors has no object or string dtype).
_TENSOR_KINDS = frozenset("biuf")
# Libraries whose version is checked on loading, by the metadata key.
_CHECKED_LIBRARIES = ("skebflow", "torch", "scikit-learn", "numpy")


class InconsistentVersionWarning(UserWarning):
    """A model file was written with other versions of skebflow or its libraries.

    Raised (as a warning) by :func:`load` when the skebflow, torch, scikit-learn or
    NumPy version recorded in the file differs from the one installed (torch's local
    build tag, such as ``+cu121`` or ``+cpu``, is ignored). The model usually loads
    and scores as before, but nothing guarantees it; refit to be sure.

    Examples
    --------
    >>> from skebflow._persistence import InconsistentVersionWarning
    >>> issubclass(InconsistentVersionWarning, UserWarning)
    True
    """


def _versions() -> dict[str, str]:
    return {
        "skebflow": __version__,
        "torch": torch.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _public_version(version: str) -> str:
    """``version`` without its local label: ``"2.3.0+cu121"`` -> ``"2.3.0"``."""
    return version.split("+", 1)[0]


# ------------------------------------------------------------------ encoding


def _class_name(estimator: Any) -> str:
    name = type(estimator).__name__
    if ALLOWED_CLASSES.get(name) is not type(estimator):
        raise TypeError(
            f"skebflow.save stores only {_allowed_names()} (not subclasses); got an"
            f" instance of {type(estimator).__module__}.{type(estimator).__qualname__}."
            " For a pipeline, see skops.io in the persistence guide."
        )
    return name


def _allowed_names() -> str:
    return ", ".join(sorted(ALLOWED_CLASSES))


class _Encoder:
    """Turns a state into JSON values, collecting its arrays as tensors.

    JSON objects in the output are always tagged (``{"__dict__": ...}``,
    ``{"__tuple__": ...}``, ...), so a stored dict cannot pass for a tag.
    """

    def __init__(self) -> None:
        self.tensors: dict[str, NDArray[Any]] = {}

    def _tensor_key(self, path: str, array: NDArray[Any]) -> str:
        key, suffix = path, 1
        while key in self.tensors:
            suffix += 1
            key = f"{path}#{suffix}"
        # np.ascontiguousarray would turn a 0-d array into a 1-d one.
        self.tensors[key] = np.array(array, order="C", copy=True)
        return key

    def estimator(self, estimator: Any, path: str) -> dict[str, Any]:
        """``params`` and ``fitted`` of an allowlisted estimator, JSON-encoded."""
        params = estimator.get_params(deep=False)
        state = estimator.__getstate__()  # what pickle stores; torch -> NumPy
        fitted = {name: value for name, value in state.items() if name not in params}
        if _METADATA_REQUEST in fitted:
            fitted[_METADATA_REQUEST] = _metadata_requests(fitted[_METADATA_REQUEST])
        return {
            "params": {
                name: self.value(value, f"{path}params/{name}")
                for name, value in params.items()
            },
            "fitted": {
                name: self.value(value, f"{path}{name}")
                for name, value in fitted.items()
            },
        }

    def value(self, value: Any, path: str) -> Any:
        if isinstance(value, np.str_):  # a parameter from a NumPy grid of strings
            return str(value)
        if is_pandas_na(value):  # EBFlowImputer(missing_values=pd.NA)
            return {"__pandas_na__": True}
        # numpy scalars first: np.float64 is a float and np.bool_ compares like one.
        if isinstance(value, np.generic):
            if value.dtype.kind not in _TENSOR_KINDS:
                self._refuse(value, path)
            return {
                "__numpy_scalar__": value.dtype.str,
                "value": self.value(value.item(), path),  # a non-finite float tagged
            }
        if value is None or isinstance(value, bool | str):
            return value
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            if math.isfinite(value):
                return value
            return {"__float__": repr(value)}  # 'nan', 'inf' or '-inf'
        if isinstance(value, np.ndarray):
            return self._array(value, path)
        if isinstance(value, tuple):
            return {
                "__tuple__": [
                    self.value(item, f"{path}/{index}")
                    for index, item in enumerate(value)
                ]
            }
        if isinstance(value, list):
            return [
                self.value(item, f"{path}/{index}") for index, item in enumerate(value)
            ]
        if isinstance(value, dict):
            if not all(isinstance(key, str) for key in value):
                self._refuse(value, path, "a dict whose keys are not all strings")
            return {
                "__dict__": {
                    key: self.value(item, f"{path}/{key}")
                    for key, item in value.items()
                }
            }
        if type(value) is np.random.RandomState:
            name, keys, position, has_gauss, cached_gaussian = value.get_state()
            return {
                "__random_state__": {
                    "bit_generator": name,
                    "keys": self._tensor_key(path, keys),
                    "pos": int(position),
                    "has_gauss": int(has_gauss),
                    "cached_gaussian": float(cached_gaussian),
                }
            }
        if isinstance(value, BaseEstimator):
            if ALLOWED_CLASSES.get(type(value).__name__) is not type(value):
                self._refuse(value, path)
            return {
                "__estimator__": {
                    "class": type(value).__name__,
                    **self.estimator(value, f"{path}/"),
                }
            }
        self._refuse(value, path)

    def _array(self, array: NDArray[Any], path: str) -> dict[str, Any]:
        if array.dtype.kind in _TENSOR_KINDS:
            return {"__array__": self._tensor_key(path, array)}
        items = array.ravel().tolist()
        if array.dtype.kind in "OU" and all(isinstance(item, str) for item in items):
            # feature_names_in_: an object array of str
            return {
                "__string_array__": items,
                "dtype": "object" if array.dtype.kind == "O" else array.dtype.str,
                "shape": list(array.shape),
            }
        self._refuse(array, path, f"an array of dtype {array.dtype}")

    @staticmethod
    def _refuse(value: Any, path: str, what: str | None = None) -> None:
        what = what or f"a {type(value).__module__}.{type(value).__qualname__}"
        raise ValueError(
            f"{path.replace('/', '.')} is {what}, which a safe model file cannot"
            " store: it holds only None, bool, int, float, str, lists, tuples,"
            " dicts with string keys, numeric NumPy arrays and scalars, NumPy"
            " RandomState instances and skebflow estimators. Set the parameter to"
            " one of those (for example random_state=<int>), or delete an"
            " attribute of your own, before saving."
        )


# ------------------------------------------------------------------ decoding


class _Decoder:
    """The inverse of :class:`_Encoder`; any unexpected shape raises ValueError."""

    def __init__(self, tensors: dict[str, NDArray[Any]]) -> None:
        self.tensors = tensors

    def estimator(
        self, class_name: Any, document: Any, *, required: bool = False
    ) -> BaseEstimator:
        """The estimator a document describes; fitted if ``required``."""
        cls = ALLOWED_CLASSES.get(class_name) if isinstance(class_name, str) else None
        if cls is None:
            raise ValueError(
                f"The model file names the class {class_name!r}, which skebflow.load"
                f" does not build; the allowed classes are {_allowed_names()}."
            )
        if not isinstance(document, dict) or set(document) != {"params", "fitted"}:
            raise _corrupted("an estimator entry lacks 'params' or 'fitted'")
        params, fitted = document["params"], document["fitted"]
        if not isinstance(params, dict) or not isinstance(fitted, dict):
            raise _corrupted("'params' and 'fitted' must be JSON objects")
        unknown = sorted(set(params) - set(cls._get_param_names()))
        if unknown:
            raise ValueError(
                f"The model file gives {class_name} the parameter(s) {unknown}, which"
                " this version of skebflow does not have; load it with the version"
                " that wrote it (see the file's 'versions' metadata)."
            )
        bad = sorted(name for name in fitted if name in params or name.startswith("__"))
        if bad:
            raise _corrupted(f"fitted attribute name(s) {bad} are not allowed")
        # What set_{method}_request asked for (metadata routing) is not a fitted
        # attribute: it is set again below, as the estimator's own setters set it.
        fitted = dict(fitted)
        requests = _checked_requests(
            cls,
            self.value(fitted.pop(_METADATA_REQUEST))
            if _METADATA_REQUEST in fitted
            else None,
        )
        missing = [name for name in _REQUIRED_FITTED[class_name] if name not in fitted]
        if (fitted or required) and missing:
            raise _corrupted(f"the fitted {class_name} lacks {missing}")
        # What pickle does: the stored parameters and fitted attributes go to
        # ``__setstate__`` as they are, so that a file written before a parameter
        # existed gets the value the class keeps for such models (its
        # ``__setstate__`` fills it), not today's default; it also converts the
        # NumPy state dicts into torch modules on device_.
        estimator = cls.__new__(cls)
        state = {name: self.value(value) for name, value in params.items()}
        state.update((name, self.value(value)) for name, value in fitted.items())
        estimator.__setstate__(state)
        # A parameter neither the file nor __setstate__ gave takes its default.
        for name, default in _parameter_defaults(cls).items():
            if name not in vars(estimator):
                setattr(estimator, name, default)
        if requests:
            with sklearn.config_context(enable_metadata_routing=True):
                for method, method_requests in requests.items():
                    getattr(estimator, f"set_{method}_request")(**method_requests)
        if fitted:
            _check_rebuilt(estimator)
        return estimator

    def value(self, value: Any) -> Any:
        if value is None or isinstance(value, bool | int | float | str):
            return value
        if isinstance(value, list):
            return [self.value(item) for item in value]
        if not isinstance(value, dict) or len(value) == 0:
            raise _corrupted(f"unexpected value {value!r}")
        if (
            "__dict__" in value
            and len(value) == 1
            and isinstance(value["__dict__"], dict)
        ):
            return {key: self.value(item) for key, item in value["__dict__"].items()}
        if (
            "__tuple__" in value
            and len(value) == 1
            and isinstance(value["__tuple__"], list)
        ):
            return tuple(self.value(item) for item in value["__tuple__"])
        if "__array__" in value and len(value) == 1:
            return self._tensor(value["__array__"])
        if set(value) == {"__float__"} and value["__float__"] in ("nan", "inf", "-inf"):
            return float(value["__float__"])
        if set(value) == {"__numpy_scalar__", "value"}:
            return self._scalar(value["__numpy_scalar__"], self.value(value["value"]))
        if set(value) == {"__string_array__", "dtype", "shape"}:
            return self._string_array(value)
        if set(value) == {"__random_state__"}:
            return self._random_state(value["__random_state__"])
        if value == {"__pandas_na__": True}:
            import pandas  # only a file that stores pd.NA needs it

            return pandas.NA
        if set(value) == {"__estimator__"} and isinstance(value["__estimator__"], dict):
            document = dict(value["__estimator__"])
            return self.estimator(document.pop("class", None), document)
        raise _corrupted(f"unknown entry {sorted(value)}")

    def _tensor(self, key: Any) -> NDArray[Any]:
        if not isinstance(key, str) or key not in self.tensors:
            raise _corrupted(f"it refers to a tensor {key!r} that it does not hold")
        return self.tensors[key]

    @staticmethod
    def _scalar(dtype: Any, item: Any) -> np.generic:
        try:
            resolved = np.dtype(dtype)
        except TypeError as error:
            raise _corrupted(f"unknown NumPy dtype {dtype!r}") from error
        if resolved.kind not in _TENSOR_KINDS or not isinstance(
            item, bool | int | float
        ):
            raise _corrupted(f"a NumPy scalar of dtype {dtype!r} and value {item!r}")
        return resolved.type(item)

    @staticmethod
    def _string_array(value: dict[str, Any]) -> NDArray[Any]:
        items, shape = value["__string_array__"], value["shape"]
        if (
            not isinstance(items, list)
            or not all(isinstance(item, str) for item in items)
            or not isinstance(shape, list)
            or not all(isinstance(size, int) and size >= 0 for size in shape)
            or math.prod(shape) != len(items)
        ):
            raise _corrupted("a malformed string array")
        if value["dtype"] == "object":
            array = np.empty(len(items), dtype=object)
            array[:] = items
        else:
            try:
                dtype = np.dtype(value["dtype"])
            except TypeError as error:
                raise _corrupted(f"unknown dtype {value['dtype']!r}") from error
            if dtype.kind != "U":
                raise _corrupted(f"a string array of dtype {dtype}")
            array = np.array(items, dtype=dtype)
        return array.reshape(shape)

    def _random_state(self, value: Any) -> np.random.RandomState:
        try:
            state = (
                value["bit_generator"],
                self._tensor(value["keys"]),
                value["pos"],
                value["has_gauss"],
                value["cached_gaussian"],
            )
            random_state = np.random.RandomState()
            random_state.set_state(state)
        except (TypeError, KeyError, ValueError) as error:
            raise _corrupted("a malformed RandomState") from error
        return random_state


def _check_rebuilt(estimator: BaseEstimator) -> None:
    """Refuse a rebuilt estimator whose parts do not fit together (a hand-edited
    file): the flow and preprocessing must take ``n_features_in_`` features, and an
    imputer's density must be a fitted :class:`EBFlowDensity` of its features and
    its indicator columns distinct features."""
    n_features = getattr(estimator, "n_features_in_", None)
    if (
        isinstance(n_features, bool)
        or not isinstance(n_features, int)
        or n_features < 1
    ):
        raise _corrupted(f"n_features_in_ is {n_features!r}, not a positive integer")
    if isinstance(estimator, EBFlowImputer):
        for name in ("indicator_features_", "empty_features_", "constant_features_"):
            if not _distinct_indices(getattr(estimator, name), n_features):
                raise _corrupted(
                    f"the imputer's {name} are not distinct indices of its"
                    f" {n_features} features"
                )
        modelled = n_features - estimator._unmodelled().size
        inner = estimator.estimator_
        if (
            not isinstance(inner, EBFlowDensity)
            or not hasattr(inner, "flow_")
            or inner.n_features_in_ != modelled
        ):
            raise _corrupted(
                "the imputer's estimator_ is not a fitted EBFlowDensity of its"
                f" {modelled} features that have an observed value and vary"
            )
        return
    _check_scoring_attributes(estimator)
    flow = estimator.flow_
    zeros = torch.zeros(1, n_features, dtype=flow.dtype, device=flow.device)
    with torch.no_grad():  # a size mismatch raises RuntimeError: reported by load
        flow.energy(zeros)
        estimator.preprocessing_.inverse(zeros)


def _finite_real(value: Any) -> bool:
    """Whether ``value`` is a finite real number (not a bool)."""
    return (
        isinstance(value, int | float | np.integer | np.floating)
        and not isinstance(value, bool | np.bool_)
        and math.isfinite(value)
    )


def _check_scoring_attributes(estimator: BaseEstimator) -> None:
    """Refuse scoring attributes of the wrong type or out of their range (a
    hand-edited file): they would score silently wrong or fail only when used."""
    if not _finite_real(getattr(estimator, "log_normalizer_", None)):
        raise _corrupted("log_normalizer_ is not a finite number")
    if not isinstance(estimator, EBFlowOutlierDetector):
        return
    if not _finite_real(estimator.offset_):
        raise _corrupted(f"offset_ is {estimator.offset_!r}, not a finite number")
    combination = getattr(estimator, "flow_combination_", "geometric_mean")
    if combination not in ("geometric_mean", "mixture"):
        raise _corrupted(
            f"flow_combination_ is {combination!r}, not 'geometric_mean' or 'mixture'"
        )
    base_scale = getattr(estimator, "base_scale_", 1.0)
    low, high = _BASE_SCALE_RANGE
    if not (_finite_real(base_scale) and low <= base_scale <= high):
        raise _corrupted(f"base_scale_ is {base_scale!r}, not in [{low:g}, {high:g}]")


def _distinct_indices(indices: Any, n_features: int) -> bool:
    """Whether ``indices`` is a 1-D integer array of distinct feature indices."""
    return (
        isinstance(indices, np.ndarray)
        and indices.ndim == 1
        and indices.dtype.kind in "iu"
        and np.unique(indices).size == indices.size
        and not np.any((indices < 0) | (indices >= n_features))
    )


def _checksum(tensors: Mapping[str, NDArray[Any]], metadata: Mapping[str, str]) -> str:
    """The SHA-256 digest stored as the metadata's ``sha256``: of each tensor's name,
    dtype, shape and little-endian bytes, and of every other metadata entry."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        array = np.asarray(tensors[key])
        array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        header = [key, array.dtype.str, list(array.shape)]
        digest.update(json.dumps(header).encode())
        digest.update(array.tobytes())
    for key in sorted(metadata):
        if key != "sha256":
            digest.update(json.dumps([key, metadata[key]]).encode())
    return digest.hexdigest()


def _parameter_defaults(cls: type[BaseEstimator]) -> dict[str, Any]:
    """The default of each of ``cls``'s parameters, as its ``__init__`` gives it."""
    signature = inspect.signature(cls.__init__)
    return {
        name: signature.parameters[name].default for name in cls._get_param_names()
    }


#: Where scikit-learn keeps what ``set_{method}_request`` asked for (metadata
#: routing): a ``MetadataRequest``, stored as ``{method: {parameter: alias}}``.
_METADATA_REQUEST = "_metadata_request"


def _metadata_requests(request: Any) -> dict[str, Any]:
    """The requests of a ``MetadataRequest`` as plain values, tagged: for each
    method with any, its ``{parameter: True, False, None or an alias}``."""
    methods = {
        name: dict(method.requests)
        for name, method in vars(request).items()
        if hasattr(method, "requests") and method.requests
    }
    return {"__metadata_requests__": methods}


def _checked_requests(cls: type, stored: Any) -> dict[str, dict[str, Any]]:
    """The requests :func:`_metadata_requests` stored, checked against ``cls``'s
    ``set_{method}_request`` setters; ``{}`` where none were stored."""
    if stored is None:
        return {}
    methods = stored.get("__metadata_requests__") if isinstance(stored, dict) else None
    if not isinstance(methods, dict):
        raise _corrupted("the metadata requests are not a tagged JSON object")
    for method, requests in methods.items():
        if not (
            hasattr(cls, f"set_{method}_request")
            and isinstance(requests, dict)
            and all(
                isinstance(alias, bool | str) or alias is None
                for alias in requests.values()
            )
        ):
            raise _corrupted(f"the metadata requests of {method!r} are not valid")
    return methods


def _corrupted(detail: str) -> ValueError:
    return ValueError(
        f"The model file is corrupted or was not written by skebflow: {detail}."
    )


# ---------------------------------------------------------------------- API


def save(estimator: BaseEstimator, path: str | os.PathLike[str]) -> None:
    """Save a fitted skebflow estimator as one safetensors file, without pickle.

    The arrays (weights of the flow and of its preprocessing) are stored as
    tensors; the class name, ``get_params(deep=False)``, the fitted attributes that
    are not arrays, the flow and preprocessing specs and the versions of skebflow,
    torch, scikit-learn and NumPy are stored as JSON in the file's metadata. Load it
    with :func:`load`.

    Parameters
    ----------
    estimator : EBFlowDensity, EBFlowOutlierDetector or EBFlowImputer
        A fitted estimator of one of these classes (not a subclass, not a
        pipeline: see the persistence guide for ``skops.io``).
    path : str or path-like
        The file to write (overwritten if it exists); ``.safetensors`` is the
        conventional extension.

    Raises
    ------
    TypeError
        If ``estimator`` is not an instance of one of the allowed classes.
    sklearn.exceptions.NotFittedError
        If ``estimator`` is not fitted.
    ValueError
        If a parameter holds a value a model file cannot represent: anything but
        None, bool, int, float, str, lists, tuples, dicts with string keys, numeric
        NumPy arrays and scalars, a ``numpy.random.RandomState`` (stored exactly:
        its full Mersenne Twister state) or a skebflow estimator. Nothing is
        written then.

    See Also
    --------
    load : Read the file back.

    Notes
    -----
    The file holds exactly what pickling the estimator holds: ``__getstate__``
    gives the state, with the torch modules as NumPy state dicts, so nothing in it
    depends on the device the model was fitted on.

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> import numpy as np
    >>> from sklearn.datasets import make_moons
    >>> import skebflow
    >>> from skebflow import EBFlowDensity
    >>> X, _ = make_moons(200, noise=0.1, random_state=0)
    >>> est = EBFlowDensity(max_iter=30, n_iter_no_change=3, tol=1e-2, device="cpu",
    ...                     random_state=0).fit(X)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "flow.safetensors")
    ...     skebflow.save(est, path)
    ...     loaded = skebflow.load(path)
    >>> bool(np.array_equal(loaded.score_samples(X), est.score_samples(X)))
    True
    >>> skebflow.save(EBFlowDensity(), "never-written.safetensors")
    Traceback (most recent call last):
    ...
    sklearn.exceptions.NotFittedError: This EBFlowDensity is not fitted yet; ...
    """
    class_name = _class_name(estimator)
    check_is_fitted(
        estimator,
        msg=(
            f"This {class_name} is not fitted yet; only a fitted estimator can be"
            " saved: call fit first (or store its get_params() to refit later)."
        ),
    )
    encoder = _Encoder()
    document = encoder.estimator(estimator, "")
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "class": class_name,
        "params": json.dumps(document["params"], allow_nan=False),
        "fitted": json.dumps(document["fitted"], allow_nan=False),
        "versions": json.dumps(_versions()),
    }
    metadata["sha256"] = _checksum(encoder.tensors, metadata)
    # Written beside the target and then moved onto it: an interrupted save or a
    # full disk never leaves a half-written file where a model was.
    target = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"Cannot save to {target!r}: the folder {folder!r} does not exist;"
            " create it first (os.makedirs)."
        )
    partial = f"{target}.partial-{os.getpid()}"
    try:
        save_file(encoder.tensors, partial, metadata=metadata)
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def load(path: str | os.PathLike[str]) -> BaseEstimator:
    """Load an estimator written by :func:`save`, without pickle.

    The class is looked up by name in a fixed allowlist (:class:`EBFlowDensity`,
    :class:`EBFlowOutlierDetector`, :class:`EBFlowImputer`); nothing named by the
    file is imported and no pickle runs. The torch modules are rebuilt from their
    specs and arrays exactly as when unpickling, on the device the model was fitted
    on, or on the CPU (with a ``UserWarning``) when that device is not available.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save`.

    Returns
    -------
    estimator : EBFlowDensity, EBFlowOutlierDetector or EBFlowImputer
        The fitted estimator, scoring and sampling as the saved one did.

    Raises
    ------
    ValueError
        If the file is not a skebflow model file, names a class outside the
        allowlist (the message lists the allowed ones) or is otherwise corrupted.

    Warns
    -----
    InconsistentVersionWarning
        A :class:`UserWarning` subclass, when the file was written with another
        version of skebflow, torch, scikit-learn or NumPy.
    UserWarning
        When the model was fitted on a CUDA device that is not available here; it
        is loaded on the CPU.

    See Also
    --------
    save : Write the file.

    Examples
    --------
    >>> import os
    >>> import tempfile
    >>> import numpy as np
    >>> from safetensors import SafetensorError, safe_open
    >>> import skebflow
    >>> from skebflow import EBFlowOutlierDetector
    >>> X = np.random.RandomState(0).normal(size=(300, 2))
    >>> detector = EBFlowOutlierDetector(max_iter=30, n_iter_no_change=3, tol=1e-2,
    ...                                  device="cpu", random_state=0).fit(X)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "detector.safetensors")
    ...     skebflow.save(detector, path)
    ...     with safe_open(path, framework="numpy") as file:  # plain JSON metadata
    ...         metadata = file.metadata()
    ...     loaded = skebflow.load(path)
    >>> metadata["class"], sorted(metadata)
    ('EBFlowOutlierDetector', ['class', 'fitted', 'format', 'format_version', \
'params', 'sha256', 'versions'])
    >>> loaded.offset_ == detector.offset_
    True
    >>> bool(np.array_equal(loaded.predict(X), detector.predict(X)))
    True
    """
    if os.path.isdir(path):
        raise ValueError(
            f"{os.fspath(path)!r} is a directory; pass the path of a file written by"
            " skebflow.save."
        )
    try:
        with safe_open(os.fspath(path), framework="numpy") as file:
            metadata = file.metadata() or {}
            tensors = {key: file.get_tensor(key) for key in file.keys()}
    except SafetensorError as error:
        raise ValueError(
            f"{os.fspath(path)!r} is not a safetensors file: {error}"
        ) from error
    if metadata.get("format") != FORMAT:
        raise ValueError(
            f"{os.fspath(path)!r} is not a skebflow model file (its metadata has no"
            f" format={FORMAT!r}); write one with skebflow.save."
        )
    version = metadata.get("format_version")
    if version not in _READABLE_FORMAT_VERSIONS:
        raise ValueError(
            f"{os.fspath(path)!r} has format version {version!r}; this skebflow"
            f" reads versions {', '.join(_READABLE_FORMAT_VERSIONS)}. Load it with"
            " the skebflow version that wrote it."
        )
    # Version 1 predates the checksum; a checksum present is checked whatever the
    # version says, so that relabelling a changed file as version 1 (or one damaged
    # byte in its version) does not skip the check.
    if version != "1" or "sha256" in metadata:
        if "sha256" not in metadata:
            raise _corrupted(
                f"its metadata has no sha256 entry, which format version {version}"
                " always writes"
            )
        if metadata["sha256"] != _checksum(tensors, metadata):
            raise _corrupted(
                "its tensors or metadata do not match the SHA-256 checksum written"
                " with them, so the file was damaged or changed after skebflow.save"
                " wrote it; save the model again from a fitted estimator"
            )
    try:
        params = json.loads(metadata["params"])
        fitted = json.loads(metadata["fitted"])
        versions = json.loads(metadata.get("versions", "{}"))
    except (KeyError, RecursionError, json.JSONDecodeError) as error:
        raise _corrupted(f"its metadata is incomplete or not JSON ({error})") from error
    _check_versions(versions)
    decoder = _Decoder(tensors)
    document = {"params": params, "fitted": fitted}
    try:
        return decoder.estimator(metadata.get("class"), document, required=True)
    except RecursionError as error:
        raise _corrupted("its metadata is nested too deeply") from error
    except (KeyError, TypeError, AttributeError, IndexError, RuntimeError) as error:
        # A spec entry missing or of the wrong type, arrays that do not fit the flow
        # the spec describes (load_state_dict), or a device torch cannot use.
        raise ValueError(
            f"The model in {os.fspath(path)!r} could not be rebuilt: {error!r}."
        ) from error


def _check_versions(saved: Any) -> None:
    if not isinstance(saved, dict):
        saved = {}
    current = _versions()
    drift = [
        f"{library} {saved.get(library, 'unknown')} (installed: {current[library]})"
        for library in _CHECKED_LIBRARIES
        if _public_version(str(saved.get(library, "")))
        != _public_version(current[library])
    ]
    if drift:
        warnings.warn(
            "This model file was written with other versions than those installed: "
            + ", ".join(drift)
            + ". It usually loads and scores as before, but this is not guaranteed;"
            " to be sure, refit with the installed versions.",
            InconsistentVersionWarning,
            stacklevel=3,
        )
