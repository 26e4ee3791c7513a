"""The backend seam: one module per backend behind one set of names.

Every backend module defines the same names; the package exports the
running backend's; no module outside `keras_dreamer/backend/` asks which
backend runs, and no backend module imports another backend's library.
"""

import ast
import importlib
import os

import keras
import pytest

import keras_dreamer
from keras_dreamer import backend

PACKAGE = os.path.dirname(keras_dreamer.__file__)
BACKEND_DIR = os.path.join(PACKAGE, "backend")
LIBRARIES = {"jax": "jax", "tensorflow": "tensorflow", "torch": "torch"}


def sources(directory):
    for root, _, names in os.walk(directory):
        for name in sorted(names):
            if name.endswith(".py"):
                yield os.path.join(root, name)


def imported_roots(path):
    with open(path) as file:
        tree = ast.parse(file.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module.split(".")[0]


def test_the_package_exports_the_running_backends_names():
    module = importlib.import_module(f"keras_dreamer.backend.{backend.name()}")
    assert backend.NAME == keras.config.backend() == backend.name()
    for name in module.__all__:
        assert getattr(backend, name) is getattr(module, name), name


@pytest.mark.backend_independent
def test_every_backend_module_defines_the_same_names():
    names = {}
    for name in backend.SUPPORTED:
        try:
            module = importlib.import_module(f"keras_dreamer.backend.{name}")
        except ImportError:
            continue  # its library is not installed here
        names[name] = sorted(module.__all__)
        missing = [n for n in module.__all__ if not hasattr(module, n)]
        assert not missing, f"{name} lists but lacks {missing}"
    assert backend.name() in names
    first = names[backend.name()]
    for name, listed in names.items():
        assert listed == first, f"{name} differs from {backend.name()}"


@pytest.mark.backend_independent
def test_only_the_backend_package_asks_which_backend_runs():
    askers = []
    for path in sources(PACKAGE):
        if path.startswith(BACKEND_DIR + os.sep):
            continue
        with open(path) as file:
            if "backend()" in file.read():
                askers.append(os.path.relpath(path, PACKAGE))
    assert not askers, askers


@pytest.mark.backend_independent
@pytest.mark.parametrize("path", list(sources(BACKEND_DIR)))
def test_no_backend_module_imports_another_backends_library(path):
    stem = os.path.basename(path)[:-3].split("_")[0]
    own = LIBRARIES.get(stem)
    foreign = set(LIBRARIES.values()) - {own}
    assert not foreign & set(imported_roots(path)), path


@pytest.mark.backend_independent
def test_an_unsupported_backend_is_named_in_the_error(tmp_path):
    from tests.helpers import run_python

    script = (
        "import keras_dreamer.backend as b\n"
        "print(b.name())\n"
        "try:\n"
        "    b.scan\n"
        "except NotImplementedError as error:\n"
        "    print(error)\n"
    )
    result = run_python(script, tmp_path, backend="numpy")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0] == "numpy"
    assert "supports the jax, tensorflow, torch backends, not 'numpy'" in lines[1]
