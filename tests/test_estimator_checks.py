"""scikit-learn's own estimator checks, with no expected failures."""

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from skebflow import EBFlowDensity, EBFlowImputer, EBFlowOutlierDetector

FAST = {
    "max_iter": 3,
    "n_layers": 1,
    "hidden_layer_sizes": (8,),
    "device": "cpu",
    "n_iter_no_change": 2,
}


def _instances():
    return [
        EBFlowDensity(**FAST),
        EBFlowDensity(architecture="fc", objective="dsm", **FAST),
        EBFlowOutlierDetector(**FAST),
        EBFlowOutlierDetector(contamination=0.1, objective="fdssm", **FAST),
        EBFlowImputer(EBFlowDensity(**FAST), n_steps=5, n_imputations=2),
        EBFlowImputer(EBFlowDensity(**FAST), method="mode", n_steps=5),
    ]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks(_instances())
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


def test_public_api_is_what_all_says():
    import skebflow

    for name in skebflow.__all__:
        value = getattr(skebflow, name)
        if name != "__version__":
            assert value.__name__ == name and value.__module__.startswith("skebflow.")
    assert isinstance(skebflow.__version__, str)
    with pytest.raises(AttributeError, match="no attribute 'Missing'"):
        skebflow.Missing  # noqa: B018
