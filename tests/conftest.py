"""Shared test setup: every test runs on the backend named by KERAS_BACKEND.

Tests marked `backend_independent` (logger, spaces, envs, replay, gin
parsing, plots, CLI argument errors: no Keras tensor, op or model on the
running backend) run on one backend only in CI (`-m "not
backend_independent"` deselects them on the others). On JAX, where CI runs
them, the mark is checked: a marked test that moves data to or from a JAX
device fails (see docs/contributing.md).
"""

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

INDEPENDENT = "backend_independent"


def pytest_report_header(config):
    return f"KERAS_BACKEND={os.environ['KERAS_BACKEND']}"


@pytest.fixture
def backend():
    return os.environ["KERAS_BACKEND"]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """Fails a `backend_independent` test that computes on JAX.

    JAX's transfer guard, set process-wide for the test's call, raises on
    every transfer between host and device in any thread: a Keras op, a
    layer's weights or a value read back all need one. Subprocesses and
    errors the code under test swallows are not seen.
    """
    if item.get_closest_marker(INDEPENDENT) is None or (
        os.environ["KERAS_BACKEND"] != "jax"
    ):
        return (yield)
    import jax

    previous = jax.config.jax_transfer_guard
    jax.config.update("jax_transfer_guard", "disallow_explicit")
    try:
        return (yield)
    except Exception as error:
        if "Disallowed" not in str(error) or "transfer" not in str(error):
            raise
        raise BackendUsedError(
            f"{item.nodeid} is marked {INDEPENDENT} but computed on JAX; "
            f"drop the mark (it is a model test, run on every backend)"
        ) from error
    finally:
        jax.config.update("jax_transfer_guard", previous)


class BackendUsedError(AssertionError):
    """A test marked `backend_independent` computed on the backend."""
