"""`keras-dreamer plot` on real run directories from the debug config.

One debug training run (a subprocess of `keras-dreamer train`) provides the
logdir; the plots are made by `python -m keras_dreamer.cli plot` in
subprocesses and checked as images: the figure has one panel per selected key
(3 columns of 450x320 pixels), every used panel holds a curve, unused ones are
blank. Labels and smoothing are checked on the figure itself. The same logdir
also checks that docs/logdir.md names every metric key a run writes.
"""

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.backend_independent

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKEND = keras.backend.backend()
PANEL = (450, 320)  # pixels per panel: figsize (4.5, 3.2) inches at 100 dpi
COLUMNS = 3
DEBUG_GIN = os.path.join("gin_configs", "debug.gin")
# Matplotlib's first two line colours (C0, C1).
FIRST, SECOND = (31, 119, 180), (255, 127, 14)


def environment():
    return {
        **os.environ,
        "PYTHONPATH": REPO,
        "KERAS_BACKEND": BACKEND,
        "MPLBACKEND": "Agg",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }


def cli(*args, cwd=REPO, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "keras_dreamer.cli", *map(str, args)],
        cwd=cwd,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def shared_directory(tmp_path_factory):
    """A directory all xdist workers of this test session share (else private)."""
    session = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if session is None:
        return tmp_path_factory.mktemp("plot")
    directory = tmp_path_factory.getbasetemp().parent / f"plot-{session}"
    directory.mkdir(exist_ok=True)
    return directory


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The logdir of one debug run, trained once per session even under xdist.

    Tests only read it (they copy it to change it), and write their plots to
    their own tmp_path.
    """
    directory = shared_directory(tmp_path_factory)
    logdir, done = directory / "debug", directory / "debug.done"
    with open(directory / "debug.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one worker trains; the others wait
        if not done.exists():
            shutil.rmtree(logdir, ignore_errors=True)
            result = cli(
                "train", "--logdir", logdir, "--gin_file", DEBUG_GIN, timeout=600
            )
            assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
            done.touch()
    return logdir


def read_metrics(logdir):
    with open(os.path.join(logdir, "metrics.jsonl")) as file:
        return [json.loads(line) for line in file]


def keys_matching(logdir, patterns):
    available = sorted({k for row in read_metrics(logdir) for k in row} - {"step"})
    keys = []
    for pattern in patterns:
        keys += [k for k in available if re.search(pattern, k) and k not in keys]
    return keys


def panels(image, count):
    """The image's panels, row by row, as RGB arrays (all grid cells)."""
    pixels = np.asarray(image.convert("RGB"))
    width, height = PANEL
    rows = -(-count // COLUMNS)
    columns = min(COLUMNS, count)
    return [
        pixels[r * height : (r + 1) * height, c * width : (c + 1) * width]
        for r in range(rows)
        for c in range(columns)
    ]


def coloured(pixels, colour, tolerance=40):
    distance = np.abs(pixels.astype(int) - np.array(colour)).sum(-1)
    return int((distance < tolerance).sum())


def non_white(pixels):
    return float((pixels.min(-1) < 250).mean())


def test_plot_draws_one_panel_per_key(run, tmp_path):
    patterns = [r"^train/loss$", r"^train/loss/", r"^fps/train$"]
    out = tmp_path / "curves.png"
    result = cli("plot", run, "--keys", *patterns, "--out", out)
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout
    keys = keys_matching(run, patterns)
    # the total, five world-model and three agent loss terms, and fps/train
    assert len(keys) == 10
    with Image.open(out) as image:
        columns, rows = min(COLUMNS, len(keys)), -(-len(keys) // COLUMNS)
        assert image.size == (PANEL[0] * columns, PANEL[1] * rows)
        cells = panels(image, len(keys))
    assert np.asarray(cells[0]).std() > 10  # not a blank image
    for index, cell in enumerate(cells):
        if index < len(keys):
            assert non_white(cell) > 0.02, f"panel {index} ({keys[index]}) is blank"
            assert coloured(cell, FIRST) > 50, f"panel {index} has no curve"
        else:
            assert non_white(cell) < 0.001, f"grid cell {index} should be empty"


def test_runs_are_overlaid(run, tmp_path):
    other = tmp_path / "halved"
    shutil.copytree(run, other)
    rows = read_metrics(run)
    with open(other / "metrics.jsonl", "w") as file:
        for row in rows:
            if "train/loss" in row:
                row["train/loss"] *= 0.5
            file.write(json.dumps(row) + "\n")
    single, both = tmp_path / "single.png", tmp_path / "both.png"
    assert cli("plot", run, "--keys", "^train/loss$", "--out", single).returncode == 0
    result = cli("plot", run, other, "--keys", "^train/loss$", "--out", both)
    assert result.returncode == 0, result.stderr
    with Image.open(single) as image:
        alone = np.asarray(image.convert("RGB"))
    with Image.open(both) as image:
        assert image.size == PANEL
        overlaid = np.asarray(image.convert("RGB"))
    assert coloured(alone, FIRST) > 50 and coloured(alone, SECOND) == 0
    assert coloured(overlaid, FIRST) > 50 and coloured(overlaid, SECOND) > 50


@pytest.fixture
def figures(monkeypatch):
    """The figures `plot_runs` draws, captured before it closes them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    captured, close = [], plt.close

    def keep(figure=None):
        captured.append(figure)
        close(figure)

    monkeypatch.setattr(plt, "close", keep)
    return captured


def test_overlaid_runs_are_labelled(run, tmp_path, figures):
    from keras_dreamer.plot import plot_runs

    twin = tmp_path / "elsewhere" / run.name  # the same base name
    shutil.copytree(run, twin)
    plot_runs([run, twin], ["^train/loss$"], tmp_path / "twins.png")
    (axes,) = figures[0].axes
    labels = [text.get_text() for text in axes.get_legend().get_texts()]
    assert labels == [os.path.normpath(run), os.path.normpath(twin)]
    assert axes.get_title() == "train/loss"


def test_smooth_averages_the_curve(run, tmp_path, figures):
    from keras_dreamer.plot import plot_runs

    rows = [row for row in read_metrics(run) if "train/loss" in row]
    values = np.array([row["train/loss"] for row in rows])
    plot_runs([run], ["^train/loss$"], tmp_path / "smooth.png", window=2)
    (line,) = figures[0].axes[0].get_lines()
    expected = [values[0], *((values[1:] + values[:-1]) / 2)]
    np.testing.assert_allclose(line.get_ydata(), expected, rtol=1e-6)
    np.testing.assert_array_equal(line.get_xdata(), [row["step"] for row in rows])

    out = tmp_path / "smooth-cli.png"
    result = cli("plot", run, "--keys", "^train/loss/", "--smooth", 3, "--out", out)
    assert result.returncode == 0 and out.is_file(), result.stderr
    result = cli("plot", run, "--smooth", 0, "--out", tmp_path / "no.png")
    assert result.returncode == 2
    assert "--smooth must be >= 1, got 0" in result.stderr


def test_a_pattern_that_matches_nothing_exits_2(run, tmp_path):
    out = tmp_path / "none.png"
    result = cli("plot", run, "--keys", "^train/loss$", "^nothing/here$", "--out", out)
    assert result.returncode == 2
    message = result.stderr.strip()
    assert message.startswith("keras-dreamer plot: error:")
    assert "'^nothing/here$' matches no metric" in message
    assert "available:" in message and "train/loss/image" in message
    assert len(message.splitlines()) == 1
    assert not out.exists()


def test_a_logdir_without_metrics_exits_2(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = cli("plot", empty, "--keys", "loss", "--out", tmp_path / "x.png")
    assert result.returncode == 2
    assert f"no metrics.jsonl in '{empty}'" in result.stderr


def test_default_keys_plot_a_run_without_episodes(run, tmp_path):
    early = tmp_path / "early"  # the run before its first episode ended
    early.mkdir()
    with open(early / "metrics.jsonl", "w") as file:
        for row in read_metrics(run):
            row = {k: v for k, v in row.items() if not k.startswith("episode/")}
            file.write(json.dumps(row) + "\n")
    result = cli("plot", early, "--out", tmp_path / "default.png")
    assert result.returncode == 0, result.stderr


def test_logdir_page_names_every_metric_key(run):
    with open(os.path.join(REPO, "docs", "logdir.md")) as file:
        text = file.read()
    table = text[text.index("## Metric keys") : text.index("## Reading the files")]
    patterns = []
    for line in table.splitlines():
        if line.startswith("| `"):
            first_cell = line.split(" | ")[0]
            for key in re.findall(r"`([^`]+)`", first_cell):
                regex = re.escape(key).replace(r"\*", ".*")
                patterns.append(re.sub(r"<[^>]+>", "[^/]+", regex))
    keys = {key for row in read_metrics(run) for key in row} - {"step"}
    undocumented = sorted(
        key for key in keys if not any(re.fullmatch(p, key) for p in patterns)
    )
    assert not undocumented, f"docs/logdir.md does not list {undocumented}"
