"""Every fitted attribute an estimator sets is named in its docstring, and every
attribute its docstring names is set by ``fit``."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import ConvergenceWarning

from skebflow import EBFlowDensity, EBFlowImputer, EBFlowOutlierDetector


def documented_attributes(cls: type) -> set[str]:
    """The names of the numpydoc ``Attributes`` section of ``cls``'s docstring
    (several names may share an entry, separated by commas and continued with a
    backslash)."""
    lines = (cls.__doc__ or "").splitlines()
    start = next(
        i
        for i, line in enumerate(lines[:-1])
        if line.strip() == "Attributes" and set(lines[i + 1].strip()) == {"-"}
    )
    names: set[str] = set()
    entry = ""
    for line, underline in zip(
        lines[start + 2 :], lines[start + 3 :] + [""], strict=True
    ):
        if underline.strip() and set(underline.strip()) == {"-"}:
            break  # the next section's title
        if entry or re.match(r"^ {4}[A-Za-z_]", line):
            entry += line.strip()
            if entry.endswith("\\"):
                entry = entry[:-1]
                continue
            names.update(n.strip() for n in entry.split(" : ")[0].split(","))
            entry = ""
    return {name for name in names if name}


def fitted_attributes(estimator: object) -> set[str]:
    """The public attributes ending in ``_`` that a fitted estimator has."""
    names = set()
    for name in dir(estimator):
        if name.startswith("_") or not name.endswith("_"):
            continue
        try:
            getattr(estimator, name)
        except AttributeError:
            continue
        names.add(name)
    return names


@pytest.mark.parametrize(
    "estimator",
    [
        EBFlowDensity(max_iter=2, device="cpu", random_state=0),
        EBFlowOutlierDetector(max_iter=2, device="cpu", random_state=0),
        EBFlowImputer(
            EBFlowDensity(max_iter=2, device="cpu"), n_steps=5, random_state=0
        ),
    ],
    ids=lambda estimator: type(estimator).__name__,
)
def test_documented_attributes_are_the_fitted_ones(estimator):
    X = np.random.RandomState(0).normal(size=(120, 3))
    if isinstance(estimator, EBFlowImputer):
        X[::7, 1] = np.nan
    X = pd.DataFrame(X, columns=["a", "b", "c"])  # for feature_names_in_
    documented = documented_attributes(type(estimator))
    assert len(documented) > 5, documented  # the parser found the section
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # two epochs
        fitted = fitted_attributes(estimator.fit(X))
    assert fitted - documented == set(), "set by fit, missing from the docstring"
    assert documented - fitted == set(), "documented, not set by fit"
