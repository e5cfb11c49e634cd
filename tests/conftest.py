"""Shared fixtures and markers.

Markers
-------
gpu
    Needs a CUDA device; skipped automatically when ``torch.cuda.is_available()`` is
    False. ``requires_cuda`` is the equivalent ``skipif`` mark for direct use.
slow
    Longer statistical or training tests; deselect with ``-m "not slow"``.
"""

import os

import pytest
import torch

# Under pytest-xdist (``make test`` runs ``-n auto``) every worker is a process with
# its own intra-op pool; sharing the cores between the workers keeps the pools from
# oversubscribing them, which slows tiny ops a hundredfold on a small machine.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    torch.set_num_threads(
        max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    )

requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"
)


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped without one)")
    config.addinivalue_line("markers", "slow: longer statistical or training test")


def pytest_report_header(config):
    # make test-oldest-sklearn runs these tests against another scikit-learn
    import sklearn

    return f"torch {torch.__version__}, scikit-learn {sklearn.__version__}"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def generator():
    """A fresh CPU generator with a fixed seed: the only randomness a test should use."""
    return torch.Generator().manual_seed(20230525)


@pytest.fixture
def single_thread():
    """Run torch on one thread: on a small shared machine, tiny ops slow down a
    hundredfold when the intra-op pool oversubscribes the cores."""
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n_threads)
