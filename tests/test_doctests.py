"""Every docstring example runs, and every public name has one.

The examples in the docstrings are the API reference's examples (the docs
site renders them), so they run here on the current backend, module by
module. Doctest runs with ELLIPSIS and NORMALIZE_WHITESPACE; no example may
be skipped with `+SKIP`.
"""

import doctest
import importlib
import inspect
import os
import pkgutil
import sys

import keras
import pytest

import keras_dreamer
from tests.helpers import require

# `python -m keras_dreamer.train` runs the command when imported.
ENTRY_POINTS = {"keras_dreamer.train.__main__"}
# Modules whose examples need a package of the `envs` (or `dmc`) extra.
NEEDS = {
    "keras_dreamer.envs.crafter": "crafter",
    "keras_dreamer.envs.dmc": "dm_control",
    "keras_dreamer.envs.gym": "ale_py",
    "keras_dreamer.logger.outputs.mlflow": "mlflow",
}
# Public names without an example of their own: a namedtuple (its docstring
# is generated). Data constants (dicts, tuples, strings) need none either.
NO_EXAMPLE = {"keras_dreamer.data.dataset.ArraySpec"}
# The packages whose `__all__` is the public API.
API_PACKAGES = (
    "keras_dreamer",
    "keras_dreamer.data",
    "keras_dreamer.envs",
    "keras_dreamer.layers",
    "keras_dreamer.logger",
    "keras_dreamer.logger.outputs",
)
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
BACKEND_PACKAGE = "keras_dreamer.backend."


def backend_of(name):
    """The backend a module of `keras_dreamer.backend` serves (its name up to
    the first "_": `jax`, `jax_conv` -> "jax"), or None for any other module."""
    if not name.startswith(BACKEND_PACKAGE):
        return None
    backend = name[len(BACKEND_PACKAGE) :].split("_")[0]
    return None if backend == "common" else backend


def all_modules():
    names = ["keras_dreamer"]
    for info in pkgutil.walk_packages(keras_dreamer.__path__, "keras_dreamer."):
        if info.name not in ENTRY_POINTS:
            names.append(info.name)
    return sorted(names)


MODULES = all_modules()


def public_objects(module):
    """Classes and functions a module defines, by qualified name."""
    found = {}
    for name, value in vars(module).items():
        if name.startswith("_"):
            continue
        if inspect.isclass(value) or inspect.isfunction(value):
            if value.__module__ == module.__name__:
                found[f"{module.__name__}.{name}"] = value
    return found


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    if name in NEEDS:
        require(NEEDS[name], reason=f"{name} needs the envs extra")
    if backend_of(name) not in (None, keras.backend.backend()):
        pytest.skip(f"{name}'s examples run on its own backend")
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=FLAGS, verbose=False)
    report = []
    try:
        for test in finder.find(module, name):
            runner.run(test, out=report.append)
    finally:
        gin = sys.modules.get("gin")
        if gin is not None:  # the train() example binds gin parameters
            gin.clear_config()
    results = runner.summarize(verbose=False)
    assert results.failed == 0, "".join(report)


@pytest.mark.backend_independent
def test_no_example_is_skipped():
    skipped = []
    for name in MODULES:
        module = importlib.import_module(name)
        for test in doctest.DocTestFinder(exclude_empty=True).find(module, name):
            for example in test.examples:
                if example.options.get(doctest.SKIP):
                    skipped.append(f"{test.name}: {example.source.strip()}")
    assert not skipped, "examples must run:\n" + "\n".join(skipped)


def documented_objects():
    """Every public class and function of the package but the exceptions."""
    for name in MODULES:
        for qualname, value in public_objects(importlib.import_module(name)).items():
            if qualname not in NO_EXAMPLE:
                yield qualname, value


def takes_arguments(value):
    """Whether a function, or a class's own constructor, takes arguments."""
    target = value.__init__ if inspect.isclass(value) else value
    if inspect.isclass(value) and (
        target is object.__init__ or issubclass(value, BaseException)
    ):
        return False  # no constructor of its own, or an exception's message
    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
    return any(p not in ("self", "cls") for p in parameters)


@pytest.mark.backend_independent
def test_every_public_class_and_function_has_an_example():
    missing = [
        qualname
        for qualname, value in documented_objects()
        if "Examples:" not in (inspect.getdoc(value) or "")
    ]
    assert not missing, "no Examples section: " + ", ".join(missing)


@pytest.mark.backend_independent
def test_documented_parameters():
    """Every public function (and class constructor) with parameters has Args."""
    missing = [
        qualname
        for qualname, value in documented_objects()
        if takes_arguments(value) and "Args:" not in (inspect.getdoc(value) or "")
    ]
    assert not missing, "no Args section: " + ", ".join(missing)


@pytest.mark.backend_independent
@pytest.mark.parametrize("package", API_PACKAGES)
def test_public_api_names_are_documented(package):
    module = importlib.import_module(package)
    missing = []
    for name in module.__all__:
        value = getattr(module, name)
        if inspect.ismodule(value):
            if not (value.__doc__ or "").strip():
                missing.append(f"{package}.{name} (module docstring)")
            assert value.__name__ in MODULES or value.__name__ in ENTRY_POINTS
        elif inspect.isclass(value) or inspect.isfunction(value):
            qualname = f"{value.__module__}.{value.__qualname__}"
            if qualname not in NO_EXAMPLE and "Examples:" not in (
                inspect.getdoc(value) or ""
            ):
                missing.append(f"{package}.{name}")
    assert not missing, "undocumented public names: " + ", ".join(missing)


@pytest.mark.backend_independent
def test_modules_are_found():
    # A packaging change must not silently drop modules from the doctests.
    package = os.path.dirname(keras_dreamer.__file__)
    files = []
    for root, _, names in os.walk(package):
        for file in names:
            if file.endswith(".py"):
                relative = os.path.relpath(os.path.join(root, file), package)
                module = "keras_dreamer." + relative[:-3].replace(os.sep, ".")
                files.append(module.removesuffix(".__init__"))
    expected = sorted(set(files) - ENTRY_POINTS)
    assert MODULES == expected
