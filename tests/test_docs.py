"""The documentation site: it builds strictly, its code runs, its tables match the code.

- `mkdocs build --strict` succeeds (broken links, bad references and docstring
  warnings fail it).
- Every ```python block of every page in docs/ runs, page by page in a fresh
  process (blocks of a page share one namespace, in order), in an empty
  directory, on the current backend. So does the README's. Tracebacks point
  at the page and line of the failing block.
- The gin configuration reference (docs/configuration.md) lists exactly the
  parameters of the configurables and of `presets.DEFAULTS`, with their
  defaults, and every packaged gin file.
"""

import ast
import glob
import html
import inspect
import os
import re
import subprocess
import sys

import keras
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(REPO, "docs")
BACKEND = keras.backend.backend()
# What the API reference must document (ids of its headings).
API_OBJECTS = (
    "world_model.WorldModel",
    "agent.Agent",
    "policy.AgentPolicy",
    "layers.Actor",
    "layers.Critic",
    "returns",
    "layers.RSSM",
    "layers.Encoder",
    "layers.Decoder",
    "presets",
    "optimizers.LaProp",
    "callbacks.DreamerReportCallback",
    "openloop",
    "logger.Agg",
    "logger.Logger",
    "logger.outputs.CallableOutput",
    "envs.make",
    "data.Collector",
    "train.job",
    "plot",
)
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)

# Runs the ```python blocks of a Markdown file in order, in one namespace,
# each compiled under the file's name and line numbers.
DRIVER = r"""
import re, sys
path = sys.argv[1]
text = open(path).read()
namespace = {"__name__": "__main__"}
for match in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
    line = text.count("\n", 0, match.start(1))
    exec(compile("\n" * line + match.group(1), path, "exec"), namespace)
"""


def pages_with_code():
    pages = []
    for path in sorted(glob.glob(os.path.join(DOCS, "*.md"))):
        with open(path) as file:
            if FENCE.search(file.read()):
                pages.append(os.path.basename(path))
    return pages


def run_blocks(path, workdir, timeout=600):
    env = {
        **os.environ,
        "KERAS_BACKEND": BACKEND,
        "PYTHONPATH": REPO,
        "WANDB_MODE": os.environ.get("WANDB_MODE", "offline"),
        "WANDB_SILENT": "true",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    return subprocess.run(
        [sys.executable, "-c", DRIVER, path],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def check_ran(result, what):
    assert result.returncode == 0, (
        f"the code of {what} failed on {BACKEND}:\n{result.stdout[-3000:]}\n"
        f"{result.stderr[-6000:]}"
    )


@pytest.mark.backend_independent
def test_site_builds_strictly(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--site-dir",
            str(tmp_path / "site"),
        ],
        cwd=REPO,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    site = tmp_path / "site"
    for page in ("quickstart", "concepts", "openloop", "configuration", "api"):
        assert (site / page / "index.html").is_file(), page
    api = (site / "api" / "index.html").read_text()
    for name in API_OBJECTS:
        assert f'id="keras_dreamer.{name}"' in api, f"api.md lacks keras_dreamer.{name}"
    openloop = (site / "openloop" / "index.html").read_text()
    assert "images/openloop_annotated.png" in openloop
    assert (site / "images" / "openloop_annotated.png").is_file()
    benchmarks = (site / "benchmarks" / "index.html").read_text()
    assert "<!-- benchmark-results -->" not in benchmarks  # the hook replaced it
    with open(os.path.join(REPO, "benchmarks", "RESULTS.md")) as file:
        text = re.sub(r"^```.*?^```", "", file.read(), flags=re.S | re.M)
    headings = re.findall(r"^#+ .*$", text, re.M)
    assert headings, "benchmarks/RESULTS.md has no sections"
    for heading in headings:
        title = html.escape(heading.lstrip("#").strip().replace("`", ""), quote=False)
        assert title in re.sub(r"</?code>", "", benchmarks), title


@pytest.mark.parametrize("page", pages_with_code())
def test_page_code_runs(page, tmp_path):
    check_ran(run_blocks(os.path.join(DOCS, page), tmp_path), f"docs/{page}")


@pytest.mark.backend_independent
def test_the_pages_users_start_from_have_code():
    # The quick start, the custom-sink page and the environments page must
    # keep runnable examples (and so stay in the parametrization above).
    for page in ("quickstart.md", "logging.md", "environments.md"):
        assert page in pages_with_code()


def test_readme_code_runs(tmp_path):
    check_ran(run_blocks(os.path.join(REPO, "README.md"), tmp_path), "README.md")


# ----------------------------------------------------------------------------
# The configuration reference.


def split_row(line):
    """Cells of a Markdown table row; pipes inside `code` do not split."""
    cells, cell, in_code = [], "", False
    for char in line.strip().strip("|"):
        if char == "`":
            in_code = not in_code
        if char == "|" and not in_code:
            cells.append(cell.strip())
            cell = ""
        else:
            cell += char
    cells.append(cell.strip())
    return cells


def table_after(text, heading):
    """`{first cell: second cell}` of the first table after `heading`."""
    lines = text.splitlines()
    start = lines.index(heading)
    rows = {}
    for line in lines[start + 1 :]:
        if line.startswith("#"):
            break
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = split_row(line)
        if set(cells[0]) <= set("-: ") or cells[0] == "parameter":
            continue
        name = cells[0].strip("`")
        assert name not in rows, f"{name} listed twice under {heading!r}"
        rows[name] = cells[1]
    assert rows, f"no table after {heading!r}"
    return rows


def literal(cell, where):
    match = re.fullmatch(r"`([^`]*)`", cell)
    assert match, f"{where}: the default {cell!r} is not a `literal`"
    return ast.literal_eval(match.group(1))


def same(a, b):
    return type(a) is type(b) and a == b


@pytest.fixture(scope="module")
def configuration():
    with open(os.path.join(DOCS, "configuration.md")) as file:
        return file.read()


@pytest.mark.backend_independent
@pytest.mark.parametrize(
    "name", ["train", "make_env", "make_world_model", "make_agent", "make_optimizer"]
)
def test_configuration_lists_every_parameter_and_default(configuration, name):
    import gin

    from keras_dreamer.train import job

    rows = table_after(configuration, f"## `{name}`")
    parameters = inspect.signature(getattr(job, name)).parameters
    expected = {
        ("**" + p.name if p.kind is p.VAR_KEYWORD else p.name): p
        for p in parameters.values()
    }
    assert set(rows) == set(expected), (
        f"{name}: missing {sorted(set(expected) - set(rows))}, "
        f"extra {sorted(set(rows) - set(expected))}"
    )
    for key, parameter in expected.items():
        cell, where = rows[key], f"{name}.{key}"
        if parameter.kind is parameter.VAR_KEYWORD:
            assert cell == "—", where
        elif parameter.default is inspect.Parameter.empty:
            assert cell.startswith("set by"), where
        elif parameter.default is gin.REQUIRED:
            assert cell.startswith("required"), where
        else:
            value = literal(cell, where)
            assert same(value, parameter.default), (where, value, parameter.default)


@pytest.mark.backend_independent
def test_configuration_lists_every_hyperparameter(configuration):
    from keras_dreamer import presets

    rows = table_after(configuration, "### `make_world_model` hyperparameters")
    assert set(rows) == set(presets.DEFAULTS), (
        f"missing {sorted(set(presets.DEFAULTS) - set(rows))}, "
        f"extra {sorted(set(rows) - set(presets.DEFAULTS))}"
    )
    for key, default in presets.DEFAULTS.items():
        value = literal(rows[key], key)
        assert same(value, default), (key, value, default)


@pytest.mark.backend_independent
def test_configuration_lists_every_agent_hyperparameter(configuration):
    from keras_dreamer import presets

    rows = table_after(configuration, "### `make_agent` hyperparameters")
    assert set(rows) == set(presets.AGENT_DEFAULTS), (
        f"missing {sorted(set(presets.AGENT_DEFAULTS) - set(rows))}, "
        f"extra {sorted(set(rows) - set(presets.AGENT_DEFAULTS))}"
    )
    for key, default in presets.AGENT_DEFAULTS.items():
        value = literal(rows[key], key)
        assert same(value, default), (key, value, default)


@pytest.mark.backend_independent
def test_configuration_lists_every_packaged_gin_file(configuration):
    from keras_dreamer.train.command import GIN_DIR

    rows = table_after(configuration, "## The packaged configs")
    listed = set()
    for cell in rows:
        listed.update(re.findall(r"[\w.]+\.gin", cell))
    packaged = {os.path.basename(p) for p in glob.glob(os.path.join(GIN_DIR, "*.gin"))}
    sizes = {p for p in packaged if re.fullmatch(r"size\d+m\.gin", p)}
    listed |= sizes if {"size1m.gin", "size400m.gin"} <= listed else set()
    assert listed == packaged, (sorted(packaged - listed), sorted(listed - packaged))
