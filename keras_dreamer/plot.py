"""Curves of one or several runs from their `metrics.jsonl` (`keras-dreamer plot`)."""

import json
import math
import os
import re

import numpy as np


def load_metrics(logdir):
    """The scalar series of a run.

    Args:
        logdir: a run directory holding `metrics.jsonl`.

    Returns:
        dict of key -> `(steps, values)` float arrays, in file order; `null`
        (non-finite) values are NaN.

    Raises:
        OSError: there is no `metrics.jsonl` in `logdir`.

    Examples:
        >>> import tempfile
        >>> run = tempfile.mkdtemp()
        >>> with open(os.path.join(run, "metrics.jsonl"), "w") as file:
        ...     _ = file.write('{"step": 10, "train/loss": 2.0}\\n')
        ...     _ = file.write('{"step": 20, "train/loss": null}\\n')
        >>> steps, values = load_metrics(run)["train/loss"]
        >>> steps.tolist(), values.tolist()
        ([10.0, 20.0], [2.0, nan])
    """
    path = os.path.join(logdir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise OSError(f"no metrics.jsonl in {logdir!r}")
    series = {}
    with open(path) as file:
        for line in file:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line from a killed writer
            step = row.pop("step", None)
            for key, value in row.items():
                if value is None or isinstance(value, (int, float)):
                    steps, values = series.setdefault(key, ([], []))
                    steps.append(step)
                    values.append(math.nan if value is None else float(value))
    return {
        k: (np.asarray(s, float), np.asarray(v, float)) for k, (s, v) in series.items()
    }


def smooth(values, window):
    """Moving average over `window` points (shorter at the start), NaN-aware.

    Args:
        values: 1-D float array.
        window: number of points averaged (1: no smoothing).

    Returns:
        A float array of the same length; NaN values are skipped.

    Examples:
        >>> smooth(np.array([1.0, 3.0, np.nan, 5.0]), 2).tolist()
        [1.0, 2.0, 3.0, 5.0]
    """
    if window <= 1 or len(values) < 2:
        return values
    finite = np.isfinite(values)
    sums = np.cumsum(np.where(finite, values, 0.0))
    counts = np.cumsum(finite)
    start = np.maximum(np.arange(len(values)) - window + 1, 0)
    lower_sums = np.where(start > 0, sums[start - 1], 0.0)
    lower_counts = np.where(start > 0, counts[start - 1], 0)
    total = counts - lower_counts
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (sums - lower_sums) / total, np.nan)


def select_keys(runs, patterns, required=True):
    """Keys of any run matching any pattern (`re.search`), sorted.

    Args:
        runs: dict of run label to the `load_metrics` result.
        patterns: regexes of the keys wanted.
        required: raise if a pattern matches nothing (else skip it).

    Returns:
        The matching keys, in the order of the patterns (each pattern's
        matches sorted), without repeats.

    Raises:
        ValueError: a required pattern matches no key (the message lists the
            keys), or no pattern matches anything.

    Examples:
        >>> runs = {"a": {"train/loss": None, "train/loss/image": None, "fps": None}}
        >>> select_keys(runs, ["^train/loss"])
        ['train/loss', 'train/loss/image']
    """
    available = sorted({key for run in runs.values() for key in run})
    keys = []
    for pattern in patterns:
        regex = re.compile(pattern)
        matched = [key for key in available if regex.search(key)]
        if not matched and required:
            raise ValueError(
                f"--keys pattern {pattern!r} matches no metric; available: "
                f"{', '.join(available) or 'none'}"
            )
        keys.extend(key for key in matched if key not in keys)
    if not keys:
        raise ValueError(
            f"no metric matches {list(patterns)}; available: "
            f"{', '.join(available) or 'none'}"
        )
    return keys


# What `keras-dreamer plot` shows without --keys: the train losses and, once
# episodes have ended, the score.
DEFAULT_KEYS = (r"^train/loss$", r"^train/loss/", r"^episode/score$")


def plot_runs(logdirs, patterns=None, out="plot.png", window=1):
    """Draws one panel per matching key with every run overlaid, as a PNG.

    Args:
        logdirs: run directories.
        patterns: regexes of the keys to plot; each must match a metric.
            None: `DEFAULT_KEYS`, those that match.
        out: the PNG path to write.
        window: moving-average window (1: no smoothing).

    Returns:
        The path written.

    Examples:
        >>> import tempfile, json, os
        >>> run = tempfile.mkdtemp()
        >>> with open(os.path.join(run, "metrics.jsonl"), "w") as f:
        ...     _ = f.write(json.dumps({"step": 1, "train/loss": 2.0}) + "\\n")
        >>> plot_runs([run], ["loss"], os.path.join(run, "p.png")).endswith("p.png")
        True
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            "keras-dreamer plot needs matplotlib: pip install 'keras-dreamer[plot]'"
        ) from error
    if window < 1:
        raise ValueError(f"--smooth must be >= 1, got {window}")
    runs = {_label(logdir, logdirs): load_metrics(logdir) for logdir in logdirs}
    keys = select_keys(runs, patterns or DEFAULT_KEYS, required=patterns is not None)
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False
    )
    for ax, key in zip(axes.flat, keys):
        for label, run in runs.items():
            if key in run:
                steps, values = run[key]
                ax.plot(steps, smooth(values, window), label=label, linewidth=1.5)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(runs) > 1:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.tight_layout()
    directory = os.path.dirname(os.path.abspath(out))
    os.makedirs(directory, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _label(logdir, logdirs):
    name = os.path.basename(os.path.normpath(logdir))
    names = [os.path.basename(os.path.normpath(d)) for d in logdirs]
    return name if names.count(name) == 1 else os.path.normpath(logdir)
