"""TerminalOutput: a compact, human-readable line of scalars per write."""

import math
import sys

from keras_dreamer.logger.outputs.base import Output
from keras_dreamer.logger.outputs.base import kind_of


def format_value(value):
    """Formats a scalar the way the terminal shows it: short and aligned-free.

    Zero is "0". Magnitudes strictly between 0.01 and 10_000 get two decimals
    with trailing zeros (and a trailing ".") removed. Anything else gets one
    significant decimal in scientific notation with the exponent's "+" sign
    and leading zeros removed, and ".0" dropped from the mantissa.

    Args:
        value: a real number (int, float, numpy scalar, bool).

    Returns:
        The formatted string.

    Examples:
        >>> [format_value(v) for v in (0, 0.5, 1234.5678, 12345, 1e-5, -0.25)]
        ['0', '0.5', '1234.57', '1.2e4', '1e-5', '-0.25']
    """
    value = float(value)
    if value == 0:
        return "0"
    if 0.01 < abs(value) < 10_000:
        return f"{value:.2f}".rstrip("0").rstrip(".")
    if not math.isfinite(value):
        return str(value)
    text = f"{value:.1e}".replace(".0e", "e")
    mantissa, exponent = text.split("e")
    return f"{mantissa}e{int(exponent)}"


class TerminalOutput(Output):
    """Prints the scalars of each write under a `[Step 1_234]` header.

    Synchronous. Only scalars are shown, in the order they were added; the
    header shows the largest step of the write and a key logged at several
    steps shows its latest value. Without a pattern the first `limit` scalars
    are shown and a note says how many there were; with a pattern every
    matching scalar is shown. A write with no matching scalar prints nothing.

    Args:
        pattern: optional regex (`re.search`) selecting the keys to show.
        limit: how many scalars to show when no pattern is given.
        stream: file to print to; defaults to `sys.stdout` at print time.

    Examples:
        >>> TerminalOutput()([(1234, "loss", 0.5), (1234, "fps", 12345)])
        <BLANKLINE>
        --------------------[Step 1_234]--------------------
        loss 0.5 / fps 1.2e4
        <BLANKLINE>
    """

    def __init__(self, pattern=None, limit=50, stream=None):
        super().__init__(pattern)
        if int(limit) < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self._limit = int(limit)
        self._stream = stream

    def __call__(self, summaries):
        scalars = {}
        step = None
        for summary_step, name, value in self.select(summaries):
            if kind_of(value) == "scalar":
                scalars[name] = value
                step = (
                    int(summary_step) if step is None else max(step, int(summary_step))
                )
        if not scalars:
            return
        lines = [f"\n{'-' * 20}[Step {step:_}]{'-' * 20}"]
        items = list(scalars.items())
        if self._pattern is not None:
            lines.append(f"Metrics filtered by: '{self._pattern.pattern}'")
        elif len(items) > self._limit:
            lines.append(
                f"Showing {self._limit} of {len(items)} metrics; "
                "filter with a pattern to see others."
            )
            items = items[: self._limit]
        lines.append(" / ".join(f"{name} {format_value(v)}" for name, v in items))
        print("\n".join(lines) + "\n", file=self._stream or sys.stdout, flush=True)
