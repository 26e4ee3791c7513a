"""`DreamerReportCallback`: DreamerV3-style logging and open-loop reports for `fit`."""

import math
import os
import time
import warnings

import keras
import numpy as np

from keras_dreamer.batch import FRAMES_KEY
from keras_dreamer.data.collect import Collector
from keras_dreamer.data.driver import EpisodeStats
from keras_dreamer.logger import FPS
from keras_dreamer.logger import Agg
from keras_dreamer.logger import Logger
from keras_dreamer.logger import Usage
from keras_dreamer.logger import check_logdir
from keras_dreamer.logger import make_outputs
from keras_dreamer.logger.outputs import NAMES as OUTPUT_NAMES


class _Schedule:
    """Due every `steps` steps and/or every `secs` seconds (either triggers)."""

    def __init__(self, steps, secs, name):
        for value, what in ((steps, name), (secs, f"{name}_secs")):
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or value <= 0
            ):
                raise ValueError(
                    f"{what} must be a positive number or None, got {value!r}."
                )
        if steps is not None and int(steps) != steps:
            raise ValueError(
                f"{name} must be an integer number of steps, got {steps!r}."
            )
        self.steps = None if steps is None else int(steps)
        self.secs = secs
        self.last_time = time.monotonic()

    @property
    def enabled(self):
        return self.steps is not None or self.secs is not None

    def due(self, previous_step, step):
        if self.steps is not None and step // self.steps > previous_step // self.steps:
            return True
        return self.secs is not None and time.monotonic() - self.last_time >= self.secs

    def mark(self):
        self.last_time = time.monotonic()


class DreamerReportCallback(keras.callbacks.Callback):
    """Logs training like DreamerV3 and writes scheduled open-loop reports.

    Added to `fit`, it records every train step's logs and, every `log_every`
    steps (and/or `log_every_secs` seconds), writes under the global step (the
    optimizer's iteration count, so it continues across epochs and resumed
    runs):

    - `train/<key>`: the mean over the window of each per-step scalar log
      value (`WorldModel` logs per-step values, not Keras's running means),
      aggregated by `kd.logger.Agg`, so non-finite values are skipped like in
      every `Agg` mean (a window of only NaN values gives NaN, written as
      `null`);
    - `fps/train`: replayed frames per second: the frames (B * T) of every
      update since the last write, divided by the seconds since it. The
      frames come from the `frames` entry of the train logs, which
      `WorldModel` and `Agent` add for every batch (so it is exact with any
      data source and with varying batch sizes); `frames_per_step` overrides
      it, and `train_data.batch_spec` is the fallback for a model that does
      not log `frames`;
    - `usage/*`: process CPU and memory, system memory, accelerator memory;
    - the episodes pushed to `add_episode` since the last write (a
      `kd.data.Collector` as `train_data` pushes its own): `episode/score`,
      `episode/length` (means), `episode/<log key>`, `episode/count`;
    - whatever the training data source produced since the last write, via
      its `drain_metrics()`: `fps/env`, `env/steps`, `replay/*` (see
      `kd.data.Collector`).

    Every `report_every` steps (and/or `report_every_secs` seconds), and once
    when training begins (the untrained baseline), it calls
    `model.report(batch)` on a batch from `report_data` and writes its
    results under `report/`: the losses and `report/openloop/<image key>`,
    the open-loop video (truth | model | error; see
    `keras_dreamer.openloop`), which also lands in `LOGDIR/media/`. Once an
    episode with frames was pushed (a `kd.data.Collector` records env 0's),
    each report also writes `episode/policy_<image key>`, the video of the
    latest such episode (from the first report after one finished).

    With an `evaluator` (e.g. a `kd.data.Evaluator`: a callable returning a
    dict of metrics such as `eval/episode/score`), every `eval_every` steps
    (and/or `eval_every_secs` seconds) it runs it and writes what it returns.

    Outputs are closed at the end of `fit`. If `fit` is interrupted
    (KeyboardInterrupt, an exception), `WorldModel.fit` closes the callback,
    which writes what is pending; with another model call `close()` yourself
    (e.g. in a `finally:`). A closed callback can be used in a later `fit`.

    A non-finite `loss` makes the callback write the window at once, is
    reported once with its step (a `RuntimeWarning`), and stops training
    when `stop_on_nan` is True.

    The callback reads the model's device state only when a report is due,
    so it costs little per batch.

    Args:
        logdir: the run directory (created if missing).
        outputs: output names ("terminal", "jsonl", "scores", "tensorboard",
            "wandb", "mlflow", "media") and/or output objects or callables (custom
            sinks); see `keras_dreamer.logger.outputs`. Videos are always
            saved under `LOGDIR/media/` as well.
        log_every: write every this many train steps (None: only by time).
        report_every: report every this many train steps (None: only by
            time; None with no `report_every_secs`: only the first report).
        report_data: what to report on: a batch dict, a `keras.utils.PyDataset`
            or other indexable or iterable of batches, or a callable returning
            a batch. Required when reports are scheduled; None disables
            reports.
        log_every_secs: also write when this many seconds have passed.
        report_every_secs: also report when this many seconds have passed.
        train_data: the training data source: a `kd.data.Collector` pushes
            its finished episodes to `add_episode` during `fit`; one with
            `drain_metrics()` gives its metrics (env and replay), one with
            `batch_spec` the frames per update.
        frames_per_step: replayed frames per update (B * T) for `fps/train`,
            overriding the `frames` the model logs; if None, the model's
            `frames` logs are used, else `train_data.batch_spec` (without
            any of them, `fps/train` is not logged).
        stop_on_nan: stop training at a non-finite loss.
        usage: log `usage/*`.
        strict: raise output errors instead of reporting them once.
        report_at_start: report once when training begins (the untrained
            baseline); a resumed run may turn it off.
        evaluator: callable returning a dict of metrics to write (e.g. a
            `kd.data.Evaluator`), or None.
        eval_every: run `evaluator` every this many train steps (None: only
            by time).
        eval_every_secs: also run it when this many seconds have passed.

    Examples:
        >>> import tempfile
        >>> callback = DreamerReportCallback(
        ...     tempfile.mkdtemp(), outputs=("jsonl",), log_every=10, report_data=None)
        >>> callback.log_every
        10
    """

    close_on_interrupt = True

    def __init__(
        self,
        logdir,
        outputs=("terminal", "jsonl", "tensorboard"),
        log_every=100,
        report_every=1000,
        report_data=None,
        log_every_secs=None,
        report_every_secs=None,
        train_data=None,
        frames_per_step=None,
        stop_on_nan=True,
        usage=True,
        strict=False,
        report_at_start=True,
        evaluator=None,
        eval_every=None,
        eval_every_secs=None,
    ):
        super().__init__()
        if logdir is None or not str(logdir):
            raise ValueError("DreamerReportCallback needs a logdir.")
        self.logdir = os.fspath(logdir)
        self.outputs = tuple([outputs] if isinstance(outputs, str) else outputs)
        for spec in self.outputs:
            if isinstance(spec, str) and spec.strip().lower() not in OUTPUT_NAMES:
                known = ", ".join(repr(name) for name in OUTPUT_NAMES)
                raise ValueError(f"Unknown output {spec!r}; known outputs: {known}.")
            if not isinstance(spec, str) and not callable(spec):
                raise ValueError(
                    f"An output is a name ({', '.join(OUTPUT_NAMES)}) or a callable, "
                    f"got {spec!r}."
                )
        self.log_every = log_every
        self.report_every = report_every
        self._log_schedule = _Schedule(log_every, log_every_secs, "log_every")
        self._report_schedule = _Schedule(
            report_every, report_every_secs, "report_every"
        )
        if not self._log_schedule.enabled:
            raise ValueError(
                "Set log_every or log_every_secs: nothing would be logged."
            )
        self._eval_schedule = _Schedule(eval_every, eval_every_secs, "eval_every")
        if evaluator is not None and not callable(evaluator):
            raise ValueError(
                f"evaluator must be a callable returning metrics, got {evaluator!r}."
            )
        if evaluator is not None and not self._eval_schedule.enabled:
            raise ValueError(
                "An evaluator needs eval_every or eval_every_secs: it would never run."
            )
        self.evaluator = evaluator
        self.eval_every = eval_every
        self.report_data = report_data
        self.train_data = train_data
        self.frames_per_step = frames_per_step
        self.stop_on_nan = stop_on_nan
        self.usage = usage
        self.strict = strict
        self.report_at_start = report_at_start
        self.logger = None
        self.step = 0
        self._reported_nan = False
        self._warned_frames = False
        self._report_source = None
        self._logged_frames = 0.0
        self._frames_logged = False
        self._window = Agg()
        self._window_size = 0
        self._episodes = EpisodeStats()
        self._episode_source = False
        self._listening_to = None

    def add_episode(self, episode):
        """Takes a finished training episode, for the next log write and report.

        The episode counts in the next write's `episode/*` means; its frames
        (if any) become the `episode/policy_<image key>` video of the next
        reports. Thread-safe: drivers call it from the thread that collects.
        A `kd.data.Collector` given as `train_data` calls it by itself during
        `fit`; call it (or register it with `kd.data.Driver.on_episode`) for
        episodes played elsewhere.

        Args:
            episode: a `kd.data.Episode`.

        Examples:
            >>> import tempfile
            >>> import keras_dreamer as kd
            >>> callback = DreamerReportCallback(tempfile.mkdtemp(), outputs=(),
            ...                                  report_data=None)
            >>> callback.add_episode(kd.data.Episode(0, score=1.0, length=9, logs={}))
        """
        self._episode_source = True
        self._episodes.add(episode)

    # ------------------------------------------------------------ lifecycle

    def on_train_begin(self, logs=None):
        self._open()
        model = self.model  # synchronised: read once at the start
        self.step = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        self._epoch_base = self.step
        self._last_step = self.step
        self._window = Agg()
        self._window_size = 0
        self._logged_frames = 0.0
        self._frames = FPS()
        self._updates_since_write = 0
        self._log_schedule.mark()
        self._report_schedule.mark()
        self._eval_schedule.mark()
        if isinstance(self.train_data, Collector) and self._listening_to is None:
            self._listening_to = self.train_data
            self.train_data.add_episode_listener(self.add_episode)
            self._episode_source = True
        self._report_source = self._make_report_source(model)
        if self._report_source is not None:
            batch = self._next_report_batch(model)  # checked before any step
            if self.report_at_start:
                self._report(batch)
                self.logger.write()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_base = self.step

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        step = self._epoch_base + int(batch) + 1
        previous, self.step = self.step, step
        self._add_step_logs(logs)
        self._updates_since_write += step - previous
        nonfinite = self._check_loss(logs)
        log_due = nonfinite or self._log_schedule.due(previous, step)
        report_due = self._report_source is not None and self._report_schedule.due(
            previous, step
        )
        if log_due:
            self._add_train_metrics()
        if report_due:
            self._report(self._next_report_batch(self.model))
        eval_due = self.evaluator is not None and self._eval_schedule.due(
            previous, step
        )
        if eval_due:
            self._evaluate()
        if log_due or report_due or eval_due:
            self.logger.write()

    def on_train_end(self, logs=None):
        self.close()

    def close(self):
        """Writes what is pending and closes every output (idempotent)."""
        if self._listening_to is not None:
            self._listening_to.remove_episode_listener(self.add_episode)
            self._listening_to = None
        if self.logger is None:
            return
        try:
            if self._window_size:
                self._add_train_metrics()
        finally:
            logger, self.logger = self.logger, None
            logger.close()

    # ------------------------------------------------------------- helpers

    def _open(self):
        if self.logger is not None:
            self.close()
        check_logdir(self.logdir)
        self._usage = Usage() if self.usage else None
        self.logger = Logger(
            self.step, make_outputs(self.outputs, self.logdir), strict=self.strict
        )

    def _add_step_logs(self, logs):
        logs = dict(logs)
        frames = logs.pop(FRAMES_KEY, None)
        if self.frames_per_step:
            frames = None
        if frames is not None:
            self._logged_frames += float(frames)
            self._frames_logged = True
        scalars = {
            key: float(value)
            for key, value in logs.items()
            if isinstance(value, (int, float, np.floating, np.integer))
            or (isinstance(value, np.ndarray) and value.ndim == 0)
        }
        self._window.add(scalars, agg="mean")
        self._window_size += 1

    def _add_train_metrics(self):
        metrics = self._window.result(prefix="train")
        self._window_size = 0
        if self._frames_logged:
            frames = self._logged_frames
        else:
            per_step = self._frames_per_step()
            frames = per_step * self._updates_since_write if per_step else None
        self._logged_frames = 0.0
        if frames is not None:
            self._frames.step(frames)
            metrics["fps/train"] = self._frames.result()
        elif not self._warned_frames:
            self._warned_frames = True
            warnings.warn(
                "DreamerReportCallback cannot log fps/train: the model logs no "
                f"{FRAMES_KEY!r}; pass frames_per_step (B * T) or a train_data "
                "with a batch_spec.",
                stacklevel=2,
            )
        self._updates_since_write = 0
        if self._usage is not None:
            metrics.update(self._usage.result())
        if self._episode_source:
            metrics.update(self._episodes.drain())
        if isinstance(self.train_data, Collector):
            metrics.update(self.train_data.drain_metrics(episodes=False))
        elif hasattr(self.train_data, "drain_metrics"):
            metrics.update(self.train_data.drain_metrics())
        self.logger.step = self.step
        self.logger.add(metrics)
        self._log_schedule.mark()

    def _frames_per_step(self):
        if self.frames_per_step:
            return self.frames_per_step
        spec = getattr(self.train_data, "batch_spec", None)
        if isinstance(spec, dict) and "is_first" in spec:
            shape = spec["is_first"].shape
            if len(shape) == 2 and None not in shape:
                self.frames_per_step = int(shape[0]) * int(shape[1])
        return self.frames_per_step

    def _check_loss(self, logs):
        loss = logs.get("loss")
        if loss is None:
            return False
        try:
            finite = math.isfinite(float(loss))
        except (TypeError, ValueError):
            return False
        if finite:
            return False
        if not self._reported_nan:
            self._reported_nan = True
            action = "stopping training" if self.stop_on_nan else "training goes on"
            warnings.warn(
                f"DreamerReportCallback: non-finite loss {float(loss)} at step "
                f"{self.step}; {action}.",
                RuntimeWarning,
                stacklevel=2,
            )
        if self.stop_on_nan:
            self.model.stop_training = True
        return True

    def _make_report_source(self, model):
        data = self.report_data
        if data is None:
            return None
        if not hasattr(model, "report"):
            raise ValueError(
                f"report_data is set but {type(model).__name__} has no report() "
                "method; use a kd.WorldModel or report_data=None."
            )
        if isinstance(data, dict):
            return lambda: data
        if callable(data) and not hasattr(data, "__getitem__"):
            return data
        if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
            state = {"index": 0}

            def indexed():
                length = len(data) or 1
                batch = data[state["index"] % length]
                state["index"] += 1
                return batch

            return indexed
        if hasattr(data, "__iter__") or hasattr(data, "__next__"):
            iterator = iter(data)
            return lambda: next(iterator)
        raise ValueError(
            "report_data must be a batch dict, an indexable or iterable of batches, "
            f"or a callable returning a batch; got {type(data).__name__}."
        )

    def _next_report_batch(self, model):
        batch = self._report_source()
        if isinstance(batch, tuple) and batch and isinstance(batch[0], dict):
            batch = batch[0]
        if not isinstance(batch, dict):
            raise ValueError(
                f"report_data produced a {type(batch).__name__}, expected a batch dict."
            )
        model.check_batch(batch, min_length=2)
        return batch

    def _report(self, batch):
        metrics = self.model.report(batch)
        self.logger.step = self.step
        self.logger.add(metrics, prefix="report")
        self._add_episode_video()
        self._report_schedule.mark()

    def _add_episode_video(self):
        frames = self._episodes.video()
        if frames:
            self.logger.add(
                {f"policy_{key}": value for key, value in frames.items()},
                prefix="episode",
            )

    def _evaluate(self):
        metrics = self.evaluator()
        if not isinstance(metrics, dict):
            raise ValueError(
                f"The evaluator returned a {type(metrics).__name__}, expected a "
                "dict of metrics."
            )
        self.logger.step = self.step
        self.logger.add(metrics)
        self._eval_schedule.mark()
