"""TerminalOutput: the reference number formatting, header, filter and limit."""

import io

import numpy as np
import pytest

from keras_dreamer.logger.outputs import TerminalOutput
from keras_dreamer.logger.outputs import format_value

pytestmark = pytest.mark.backend_independent

# The reference rules: 0 -> "0"; 0.01 < |v| < 1e4 -> two decimals, trailing
# zeros and "." stripped; otherwise "{:.1e}" with ".0e" -> "e", "+0" -> "",
# "+" -> "" and "-0" -> "-".
FORMAT_TABLE = [
    (0, "0"),
    (0.0, "0"),
    (-0.0, "0"),
    (1, "1"),
    (0.5, "0.5"),
    (0.25, "0.25"),
    (0.125, "0.12"),
    (1.0, "1"),
    (10, "10"),
    (2.50, "2.5"),
    (1234.5678, "1234.57"),
    (9999.99, "9999.99"),
    (9999.999, "10000"),
    (-0.5, "-0.5"),
    (-42.424, "-42.42"),
    (0.011, "0.01"),
    (0.01, "1e-2"),
    (0.005, "5e-3"),
    (0.00123, "1.2e-3"),
    (1e-5, "1e-5"),
    (-1e-5, "-1e-5"),
    (1e4, "1e4"),
    (12345, "1.2e4"),
    (-12345, "-1.2e4"),
    (558096, "5.6e5"),
    (1.5e10, "1.5e10"),
    (2e-10, "2e-10"),
    (1e100, "1e100"),
    (3.3e-100, "3.3e-100"),
    (float("nan"), "nan"),
    (float("inf"), "inf"),
    (float("-inf"), "-inf"),
    (np.float32(0.5), "0.5"),
    (np.int64(20000), "2e4"),
    (True, "1"),
]


@pytest.mark.parametrize("value, expected", FORMAT_TABLE)
def test_format_value_follows_the_reference_rules(value, expected):
    assert format_value(value) == expected


def run(summaries, **kwargs):
    stream = io.StringIO()
    TerminalOutput(stream=stream, **kwargs)(summaries)
    return stream.getvalue()


def test_header_shows_the_largest_step_with_separators():
    text = run([(1_234, "loss", 0.5), (558_096, "fps", 12345.0)])
    assert text == (
        "\n" + "-" * 20 + "[Step 558_096]" + "-" * 20 + "\nloss 0.5 / fps 1.2e4\n\n"
    )


def test_only_scalars_are_shown_and_the_latest_value_wins():
    text = run(
        [
            (1, "loss", 2.0),
            (1, "hist", np.ones(3)),
            (1, "note", "text"),
            (2, "loss", 1.0),
            (1, "video", np.zeros((2, 4, 4, 3))),
        ]
    )
    assert text.strip().splitlines()[-1] == "loss 1"


def test_pattern_filters_and_is_announced():
    text = run([(5, "train/loss", 1.0), (5, "fps", 3.0)], pattern="loss|score")
    assert "Metrics filtered by: 'loss|score'" in text
    assert text.strip().splitlines()[-1] == "train/loss 1"


def test_limit_truncates_without_a_pattern():
    summaries = [(0, f"m{i}", float(i)) for i in range(60)]
    lines = run(summaries).strip().splitlines()
    assert "Showing 50 of 60 metrics" in lines[1]
    assert lines[2].count(" / ") == 49 and lines[2].startswith("m0 0 / m1 1")
    assert run(summaries, pattern="^m").strip().splitlines()[2].count(" / ") == 59


def test_nothing_is_printed_without_a_matching_scalar():
    assert run([(1, "image", np.zeros((4, 4)))]) == ""
    assert run([(1, "loss", 1.0)], pattern="score") == ""


def test_prints_to_stdout_by_default(capsys):
    TerminalOutput()([(3, "x", 1.0)])
    assert "[Step 3]" in capsys.readouterr().out


def test_bad_limit_is_rejected():
    with pytest.raises(ValueError, match="limit"):
        TerminalOutput(limit=0)
