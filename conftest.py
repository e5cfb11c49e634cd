"""Root pytest configuration: shared by the test suite and the doctests."""

import os

# scikit-learn's check_array_api_input runs only when SciPy's array-API mode is on;
# it must be set before SciPy is first imported.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _isolate_torch_global_rng(doctest_namespace):
    """Run every test and doctest with torch's global RNG forked: none leaks state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield
