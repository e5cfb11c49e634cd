"""skebflow: density estimation with energy-based normalizing flows for scikit-learn.

The estimators are imported on first use, so that ``import skebflow.flows`` and
``import skebflow.objectives`` (torch only) never load scikit-learn.

Examples
--------
>>> import skebflow
>>> sorted(skebflow.__all__)  # doctest: +NORMALIZE_WHITESPACE
['EBFlowDensity', 'EBFlowImputer', 'EBFlowOutlierDetector', '__version__',
 'load', 'local_training', 'save']
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "EBFlowDensity",
    "EBFlowImputer",
    "EBFlowOutlierDetector",
    "__version__",
    "load",
    "local_training",
    "save",
]

_LAZY = {
    "EBFlowDensity": "._density",
    "EBFlowImputer": "._impute",
    "EBFlowOutlierDetector": "._outlier",
    "load": "._persistence",
    "local_training": "._distributed",
    "save": "._persistence",
}

if TYPE_CHECKING:  # pragma: no cover
    from ._density import EBFlowDensity
    from ._distributed import local_training
    from ._impute import EBFlowImputer
    from ._outlier import EBFlowOutlierDetector
    from ._persistence import load, save


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'skebflow' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
