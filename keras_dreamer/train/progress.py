"""Plain progress lines for logs that are not a terminal (batch jobs, nohup).

Keras's progress bar redraws itself with carriage returns and ANSI codes even
when stdout is a file (it counts any POSIX system as a live display), so a
batch job's log gets one ever-growing line. `fit_verbosity` keeps the bar for
a terminal and swaps it for `ProgressLines` elsewhere.
"""

import math
import sys
import time

import keras


def fit_verbosity(verbose, stream=None):
    """`fit`'s `verbose`, and whether plain progress lines replace the bar.

    Args:
        verbose: "auto" (the bar on a terminal or in a notebook, plain
            lines otherwise),
            "lines" (plain lines), or `fit`'s 0, 1, 2.
        stream: the output to test, default `sys.stdout`.

    Returns:
        `(fit_verbose, lines)`.

    Raises:
        ValueError: any other `verbose`.

    Examples:
        >>> import io
        >>> fit_verbosity("auto", io.StringIO()), fit_verbosity(2)
        ((0, True), (2, False))
    """
    if verbose == "lines":
        return 0, True
    if verbose == "auto":
        stream = sys.stdout if stream is None else stream
        isatty = getattr(stream, "isatty", None)
        live = "ipykernel" in sys.modules or (isatty is not None and isatty())
        return ("auto", False) if live else (0, True)
    if verbose in (0, 1, 2) and not isinstance(verbose, bool):
        return verbose, False
    raise ValueError(
        f"train.verbose must be 'auto', 'lines', 0, 1 or 2, got {verbose!r}."
    )


class ProgressLines(keras.callbacks.Callback):
    """Prints one plain line every `every` train steps and at the end.

        step 200/2,000 (10%) | loss 10.53 | 3.12 steps/s | 1m04s elapsed | eta 9m37s

    The loss is the mean of the finite per-step `loss` logs since the last
    line; steps/s is measured over the same steps; the ETA extrapolates the
    rate since training began. No carriage returns, no ANSI codes.

    Args:
        total_steps: the step the run ends at.
        every: train steps between lines.
        stream: where to print, default `sys.stdout` at print time.

    Examples:
        >>> import io
        >>> out = io.StringIO()
        >>> lines = ProgressLines(total_steps=4, every=2, stream=out)
        >>> lines.start(0)
        >>> for step, loss in enumerate([4.0, 2.0, 1.0, 1.0], 1):
        ...     lines.on_step(step, {"loss": loss})
        >>> print(out.getvalue().split(" | ")[:2])
        ['step 2/4 (50%)', 'loss 3']
    """

    def __init__(self, total_steps, every, stream=None):
        super().__init__()
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an int >= 1, got {every!r}.")
        self.total_steps = int(total_steps)
        self.every = every
        self.stream = stream

    def start(self, step):
        """Starts counting at `step` (what `on_train_begin` does)."""
        self.step = self._epoch_base = self._start_step = int(step)
        self._start_time = self._last_time = time.monotonic()
        self._last_step = self.step
        self._losses = []

    def on_step(self, step, logs):
        """Records train step `step` and prints a line when one is due."""
        previous, self.step = self.step, step
        loss = (logs or {}).get("loss")
        if loss is not None and math.isfinite(float(loss)):
            self._losses.append(float(loss))
        if step // self.every > previous // self.every or step >= self.total_steps:
            self._print()

    def on_train_begin(self, logs=None):
        self.start(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_base = self.step

    def on_train_batch_end(self, batch, logs=None):
        self.on_step(self._epoch_base + int(batch) + 1, logs)

    def on_train_end(self, logs=None):
        if self.step != self._last_step:
            self._print()

    def _print(self):
        now = time.monotonic()
        interval = max(now - self._last_time, 1e-9)
        rate = (self.step - self._last_step) / interval
        done = self.step - self._start_step
        elapsed = now - self._start_time
        parts = [
            f"step {self.step:,}/{self.total_steps:,} "
            f"({100 * self.step // max(self.total_steps, 1)}%)"
        ]
        if self._losses:
            parts.append(f"loss {sum(self._losses) / len(self._losses):.4g}")
        parts.append(f"{rate:.3g} steps/s")
        parts.append(f"{_duration(elapsed)} elapsed")
        if done and self.step < self.total_steps:
            eta = (self.total_steps - self.step) * elapsed / done
            parts.append(f"eta {_duration(eta)}")
        print(" | ".join(parts), file=self.stream or sys.stdout, flush=True)
        self._last_time, self._last_step, self._losses = now, self.step, []


def _duration(seconds):
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
