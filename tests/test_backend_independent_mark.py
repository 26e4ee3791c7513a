"""The `backend_independent` mark is checked on JAX (see tests/conftest.py).

A pytest session in a subprocess runs three tests with the mark: one that
touches no backend passes; one that calls a Keras op and one whose thread
builds a layer fail with the guard's error. A test without the mark, after
them, computes as usual.
"""

import os
import subprocess
import sys

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.backend_independent

TESTS = """
import threading

import numpy as np
import pytest


@pytest.mark.backend_independent
def test_numpy_only():
    assert np.ones(3).sum() == 3


@pytest.mark.backend_independent
def test_a_keras_op():
    import keras

    keras.ops.add(np.ones(3), 1)


@pytest.mark.backend_independent
def test_a_layer_built_in_a_thread():
    import keras

    errors = []

    def build():
        try:
            keras.layers.Dense(2).build((1, 3))
        except Exception as error:
            errors.append(error)

    thread = threading.Thread(target=build)
    thread.start()
    thread.join()
    raise errors[0]


def test_a_model_test_afterwards():
    import keras

    assert float(keras.ops.add(np.ones(()), 1)) == 2
"""


def test_a_marked_test_that_computes_on_jax_fails(tmp_path):
    (tmp_path / "test_marked.py").write_text(TESTS)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        + ["-p", "tests.conftest", "-c", os.path.join(REPO, "setup.cfg")]
        + ["--rootdir", str(tmp_path), str(tmp_path / "test_marked.py")],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": REPO, "KERAS_BACKEND": "jax"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert "2 failed, 2 passed" in output, output[-3000:]
    for name in ("test_a_keras_op", "test_a_layer_built_in_a_thread"):
        assert (
            f"BackendUsedError: test_marked.py::{name} is marked backend_independent"
            f" but computed on JAX" in output
        ), output[-3000:]
