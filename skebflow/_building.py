"""Torch objects of a fitted estimator, built from plain specs and arrays.

A fitted model is two specs (dicts of Python and NumPy values) plus two state dicts;
these functions turn them into the device's flow and preprocessing, and back. The
estimators pickle and load through them, so a model fitted on a GPU loads on a CPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from .flows import (
    BinProbit,
    ColumnNoise,
    Flow,
    FlowMixture,
    KernelGaussianize,
    LinearResidual,
    Logit,
    Preprocessing,
    Standardize,
    UniformDequantize,
)
from .flows import cnn as build_cnn
from .flows import coupling as build_coupling
from .flows import fc as build_fc
from .flows._conv_architecture import check_squeezable, image_shape_of

__all__ = [
    "CONV_BLOCKS",
    "build_flow",
    "build_preprocessing",
    "check_image_shape",
    "check_state_dtypes",
    "passed_columns",
    "resolve_device",
    "state_from_numpy",
    "state_to_numpy",
]


def resolve_device(device: str) -> torch.device:
    """The torch device for the estimators' ``device`` parameter.

    Examples
    --------
    >>> from skebflow._building import resolve_device
    >>> resolve_device("cpu")
    device(type='cpu')
    >>> resolve_device("tpu")
    Traceback (most recent call last):
    ...
    ValueError: device='tpu' is not a device torch knows; use 'auto', 'cpu', ...
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ValueError(
            f"device={device!r} is not a device torch knows; use 'auto', 'cpu', 'cuda'"
            " or 'cuda:N'."
        ) from error
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was asked for, but CUDA is not available on this"
                " machine; use device='cpu' or device='auto'."
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} does not exist: this machine has"
                f" {torch.cuda.device_count()} CUDA device(s)."
            )
    elif resolved.type != "cpu":
        raise ValueError(
            f"device={device!r} is not supported; use 'auto', 'cpu' or 'cuda'."
        )
    return resolved


#: Blocks of the estimator's convolutional flow (the paper's): two squeezes.
CONV_BLOCKS = 3


def check_image_shape(image_shape: Any, n_features: int) -> tuple[int, int, int]:
    """``image_shape`` as ``(C, H, W)``, checked against the data and the squeezes.

    Examples
    --------
    >>> from skebflow._building import check_image_shape
    >>> check_image_shape((8, 8), 64)
    (1, 8, 8)
    >>> check_image_shape((1, 6, 6), 36)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: architecture='conv' squeezes the image 2 times, so its height and ...
    """
    shape = image_shape_of(image_shape, n_features)
    factor = 2 ** (CONV_BLOCKS - 1)
    if shape[1] % factor or shape[2] % factor:
        # the estimator's words (check_squeezable speaks of the torch builder's)
        raise ValueError(
            f"architecture='conv' squeezes the image {CONV_BLOCKS - 1} times, so its"
            f" height and width must be divisible by {factor}; got {shape[1]} x"
            f" {shape[2]}. Pad or crop the images (e.g. to"
            f" {-(-shape[1] // factor) * factor} x {-(-shape[2] // factor) * factor}),"
            " or use architecture='coupling'."
        )
    check_squeezable(shape[1], shape[2], CONV_BLOCKS)
    return shape


def passed_columns(
    preprocessing_spec: dict[str, Any], flow_spec: dict[str, Any]
) -> list[int] | None:
    """The columns a new flow leaves to its base (``Flow``'s ``passed_columns``).

    These are the columns that the preprocessing makes standard normal noise
    while training, independent of the others: those modelled as narrow normals
    (``constant_features="narrow"``, ``linear_relations="narrow"``) and constant
    integer columns mapped by a probit. The flow is then built on the others, and
    the density of these columns is exactly the one they were given. ``None``
    when there is none, and where the flow cannot pass columns: a ``"conv"``
    flow (whose layers need the image), a base other than the standard normal, or
    too few columns left (two for ``"coupling"``, one for ``"fc"``).

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow._building import passed_columns
    >>> flow_spec = {"architecture": "coupling", "n_features": 3}
    >>> passed_columns({"constant_columns": np.array([False, True, False])}, flow_spec)
    [1]
    >>> passed_columns({"constant_columns": None}, flow_spec) is None
    True
    """
    passed = np.zeros(flow_spec["n_features"], dtype=bool)
    for key in ("constant_columns", "one_bin_columns"):
        if preprocessing_spec.get(key) is not None:
            passed |= np.asarray(preprocessing_spec[key], dtype=bool)
    architecture = flow_spec["architecture"]
    fewest = {"coupling": 2, "fc": 1}.get(architecture)
    if (
        not passed.any()
        or fewest is None
        or flow_spec.get("base_distribution", "normal") != "normal"
        or int((~passed).sum()) < fewest
    ):
        return None
    return np.flatnonzero(passed).tolist()


def build_flow(
    spec: dict[str, Any], generator: torch.Generator | None
) -> Flow | FlowMixture:
    """The flow a flow spec describes, freshly initialized.

    Examples
    --------
    >>> import torch
    >>> from skebflow._building import build_flow
    >>> spec = {"architecture": "fc", "n_features": 3, "n_layers": 2}
    >>> build_flow(spec, torch.Generator().manual_seed(0)).n_features
    3
    >>> build_flow({**spec, "base_distribution": "student_t"}, None).base
    StudentT(df=5)
    """
    n_flows = spec.get("n_flows", 1)
    if n_flows > 1:
        member = {**spec, "n_flows": 1}
        return FlowMixture([build_flow(member, generator) for _ in range(n_flows)])
    # Models fitted before columns were passed to the base have no such entry.
    passed = spec.get("passed_columns")
    if passed:
        n_features = spec["n_features"]
        inner = build_flow(
            {**spec, "n_features": n_features - len(passed), "passed_columns": None},
            generator,
        )
        return Flow(
            inner.layers,
            base=spec.get("base_distribution", "normal"),
            passed_columns=passed,
        )
    # Models fitted before the base was recorded used a standard normal one.
    base = spec.get("base_distribution", "normal")
    if spec["architecture"] == "conv":
        return build_cnn(
            spec["image_shape"],
            n_features=spec["n_features"],
            base=base,
            generator=generator,
        )
    if spec["architecture"] == "fc":
        return build_fc(
            spec["n_features"],
            n_layers=spec["n_layers"],
            base=base,
            generator=generator,
        )
    return build_coupling(
        spec["n_features"],
        n_layers=spec["n_layers"],
        hidden_layer_sizes=spec["hidden_layer_sizes"],
        # Models fitted before the activation was recorded used SiLU conditioners.
        activation=spec.get("activation", "silu"),
        transform=spec.get("coupling_transform", "affine"),
        n_components=spec.get("n_components", 8),
        base=base,
        generator=generator,
    )


def _tensor(array: ArrayLike) -> torch.Tensor:
    """A tensor that owns a writable copy of ``array`` (which may be read-only)."""
    return torch.from_numpy(np.array(array, copy=True))


def build_preprocessing(spec: dict[str, Any]) -> Preprocessing:
    """The preprocessing chain a preprocessing spec describes.

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow._building import build_preprocessing
    >>> spec = {"kind": "standardize", "dequantize_columns": None,
    ...         "mean": np.zeros(2), "scale": np.ones(2)}
    >>> [type(step).__name__ for step in build_preprocessing(spec).steps]
    ['Standardize']
    """
    steps: list[torch.nn.Module] = []
    # First, in the data's units: the columns that are affine functions of the
    # others become their (constant) residuals. Models fitted before exact
    # linear relations were modelled have no such entry.
    if spec.get("relation_weight") is not None:
        steps.append(LinearResidual(_tensor(spec["relation_weight"])))
    # Then, so that training maps the rows once (nothing random comes before it)
    if spec.get("kde_columns") is not None:
        steps.append(
            KernelGaussianize(
                _tensor(spec["kde_columns"]),
                _tensor(spec["kde_centres"]),
                _tensor(spec["kde_weights"]),
                _tensor(spec["kde_bandwidth"]),
                _tensor(spec["kde_wide_loc"]),
                _tensor(spec["kde_wide_scale"]),
                wide_weight=spec["kde_wide_weight"],
            )
        )
    if spec["dequantize_columns"] is not None:
        steps.append(UniformDequantize(_tensor(spec["dequantize_columns"])))
    # Models fitted before constant integer columns were mapped by a probit have
    # no such entry: they rebuild as they were fitted.
    one_bin = spec.get("one_bin_columns")
    if one_bin is not None:
        steps.append(BinProbit(_tensor(one_bin), _tensor(spec["one_bin_lower"])))
    if spec["kind"] == "standardize":
        steps.append(Standardize(_tensor(spec["mean"]), _tensor(spec["scale"])))
    elif spec["kind"] == "logit":
        steps.append(
            Logit(
                _tensor(spec["lower"]),
                _tensor(spec["upper"]),
                alpha=spec["alpha"],
                passthrough=None if one_bin is None else _tensor(one_bin),
            )
        )
    # Models fitted before constant columns could be modelled have no such entry.
    if spec.get("constant_columns") is not None:
        steps.append(ColumnNoise(_tensor(spec["constant_columns"])))
    return Preprocessing(steps)


def state_to_numpy(module: torch.nn.Module) -> dict[str, NDArray[Any]]:
    """A module's state dict as CPU NumPy arrays (for pickling).

    Examples
    --------
    >>> import torch
    >>> from skebflow._building import state_to_numpy
    >>> sorted(state_to_numpy(torch.nn.Linear(2, 1)))
    ['bias', 'weight']
    """
    return {
        name: value.detach().to("cpu").numpy().copy()
        for name, value in module.state_dict().items()
    }


def check_state_dtypes(
    module: torch.nn.Module, state: dict[str, NDArray[Any]], name: str
) -> None:
    """Refuse stored arrays of another kind than ``module``'s tensors (a weight
    stored as integers or booleans) or floats narrower than float32:
    ``load_state_dict`` would convert them silently into another model.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from skebflow._building import check_state_dtypes
    >>> check_state_dtypes(torch.nn.Linear(1, 1), {"weight": np.zeros((1, 1))}, "f")
    >>> check_state_dtypes(
    ...     torch.nn.Linear(1, 1), {"weight": np.zeros((1, 1), dtype=int)}, "f")
    Traceback (most recent call last):
    ...
    ValueError: f's weight is stored as int64, ...
    """
    expected = module.state_dict()
    for key, array in state.items():
        tensor = expected.get(key)
        if tensor is None:
            continue  # load_state_dict names the unexpected key
        dtype = np.asarray(array).dtype
        if tensor.is_floating_point():
            fits = dtype in (np.float32, np.float64)
        else:
            fits = dtype == torch.empty(0, dtype=tensor.dtype).numpy().dtype
        if not fits:
            wanted = (
                "float32 or float64" if tensor.is_floating_point() else tensor.dtype
            )
            raise ValueError(
                f"{name}'s {key} is stored as {dtype}, not {wanted}: the arrays do"
                " not fit the model the file describes."
            )


def state_from_numpy(state: dict[str, NDArray[Any]]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`state_to_numpy`: tensors that own their memory.

    Examples
    --------
    >>> import numpy as np
    >>> from skebflow._building import state_from_numpy
    >>> state_from_numpy({"bias": np.zeros(1)})["bias"].dtype
    torch.float64
    """
    return {name: _tensor(value) for name, value in state.items()}
