"""skebflow: density estimation with energy-based normalizing flows for scikit-learn.

Examples
--------
>>> import skebflow
>>> sorted(skebflow.__all__)
['EBFlowDensity', 'EBFlowOutlierDetector', '__version__']
"""

from ._density import EBFlowDensity
from ._outlier import EBFlowOutlierDetector

__version__ = "0.1.0"

__all__ = ["EBFlowDensity", "EBFlowOutlierDetector", "__version__"]
