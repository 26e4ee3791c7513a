"""Shared test setup: every test runs on the backend named by KERAS_BACKEND."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("WANDB_SILENT", "true")
# Tests never reach W&B's servers: every run is offline unless a test says
# otherwise (W&B reads some settings once per process, so per-test
# environment patches are not enough under pytest-xdist).
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# As `import keras_dreamer` sets it: test modules import Keras (and PyTorch)
# first, and OpenMP's spinning threads slow PyTorch's ops many times over.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402


def pytest_report_header(config):
    return f"KERAS_BACKEND={os.environ['KERAS_BACKEND']}"


@pytest.fixture
def backend():
    return os.environ["KERAS_BACKEND"]
