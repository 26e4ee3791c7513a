"""WandBOutput: logs to a Weights & Biases run (online, offline or disabled)."""

import os
import secrets
import shutil
import tempfile
import warnings

import numpy as np

from keras_dreamer.logger import media
from keras_dreamer.logger import video
from keras_dreamer.logger.outputs.base import AsyncOutput
from keras_dreamer.logger.outputs.base import OutputWarning
from keras_dreamer.logger.outputs.base import group_by_step
from keras_dreamer.logger.outputs.base import kind_of
from keras_dreamer.logger.outputs.base import prepare_dir

# The id of a logdir's W&B run, kept beside the runs W&B writes there.
RUN_ID_FILE = "keras_dreamer_run_id"


class WandBOutput(AsyncOutput):
    """Logs scalars, histograms, images, videos and text to a W&B run.

    The run is created in the constructor with `wandb.init` and finished by
    `close()`. The mode follows `mode`, else the `WANDB_MODE` environment
    variable (`"offline"` stores the run under `dir/wandb/` for a later
    `wandb sync`; `"disabled"` logs nothing and builds no media). Each step of
    a write becomes one `run.log(data, step=step)` call, in increasing step
    order.

    W&B cannot log to a step below one it already has: such a step (e.g. after
    resuming from an earlier checkpoint in the same process) is dropped, with
    one warning per output. Videos are passed to W&B as MP4 files when PyAV
    is installed (the `video` extra), else as GIF files (see
    `video_format`; no moviepy needed either way); images as uint8 arrays;
    histograms as `wandb.Histogram` of the finite values. Writes run on a
    worker thread (see `AsyncOutput`).

    Args:
        project: W&B project name.
        name: run display name.
        mode: "online", "offline", "disabled" or None for `WANDB_MODE`.
        dir: directory for the run files (the run goes to `dir/wandb/`);
            created if missing.
        config: dict of hyperparameters stored with the run.
        fps: frame rate of the videos.
        video_format: "auto" (MP4 when PyAV is installed, else GIF), "mp4"
            or "gif" (see `kd.logger.video`).
        pattern: optional regex (`re.search`) selecting the keys to log.
        parallel: write on a worker thread (default) or in the caller.
        **init_kwargs: more `wandb.init` arguments (e.g. `id`, `resume`,
            `tags`). `reinit` defaults to "create_new", so this output owns
            its run even if another one is active.

    Attributes:
        run: the `wandb` run this output logs to.

    Raises:
        ImportError: the `wandb` package is not installed.
        OSError: `dir` is not a writable directory.

    Examples:
        >>> output = WandBOutput(mode="disabled")
        >>> output([(0, "loss", 1.0)])
        >>> output.close()
    """

    def __init__(
        self,
        project=None,
        name=None,
        mode=None,
        dir=None,
        config=None,
        fps=15,
        video_format="auto",
        pattern=None,
        parallel=True,
        **init_kwargs,
    ):
        try:
            import wandb
        except ImportError as error:
            raise ImportError(
                "WandBOutput needs the `wandb` package: "
                "pip install 'keras-dreamer[wandb]'"
            ) from error
        video_format = video.resolve_format(video_format)
        super().__init__(pattern, parallel)
        if dir is not None:
            dir = prepare_dir(dir, "WandBOutput")
        init_kwargs.setdefault("reinit", "create_new")
        self._wandb = wandb
        self._fps = fps
        self._video_format = video_format
        self.run = wandb.init(
            project=project, name=name, mode=mode, dir=dir, config=config, **init_kwargs
        )
        self._disabled = bool(getattr(self.run, "disabled", False))
        self._last_step = -1
        self._warned_backwards = False
        self._tmpdir = None

    def _write(self, summaries):
        if self._disabled:
            return
        for step, values in group_by_step(summaries):
            if step < self._last_step:
                self._warn_backwards(step)
                continue
            data = {}
            for name, value in values.items():
                item = self._convert(name, step, value)
                if item is not None:
                    data[name] = item
            self.run.log(data, step=step)
            self._last_step = step
            self._remove_temporary_files()

    def _convert(self, name, step, value):
        kind = kind_of(value)
        if kind == "text":
            return value
        if kind == "scalar":
            return float(value)
        if kind == "histogram":
            finite = np.asarray(value, np.float64)
            finite = finite[np.isfinite(finite)]
            return self._wandb.Histogram(finite) if finite.size else None
        if kind == "image":
            image = media.to_uint8(value)
            if image.ndim == 3 and image.shape[-1] == 1:
                image = image[..., 0]
            return self._wandb.Image(image)
        # W&B copies the file into the run during run.log, so it can go after.
        self._tmpdir = self._tmpdir or tempfile.mkdtemp(prefix="keras_dreamer_wandb_")
        data, suffix = video.video_bytes(value, self._fps, self._video_format)
        path = os.path.join(self._tmpdir, media.media_filename(name, step, suffix))
        with open(path, "wb") as file:
            file.write(data)
        return self._wandb.Video(path, format=suffix[1:])

    def _warn_backwards(self, step):
        if not self._warned_backwards:
            self._warned_backwards = True
            warnings.warn(
                f"WandBOutput: dropped step {step}, which is below the last logged "
                f"step {self._last_step} (W&B steps must increase); later such "
                "steps are dropped silently.",
                OutputWarning,
                stacklevel=2,
            )

    def _remove_temporary_files(self):
        if self._tmpdir:
            for entry in os.scandir(self._tmpdir):
                os.remove(entry.path)

    def _close(self):
        try:
            self.run.finish()
        finally:
            if self._tmpdir:
                shutil.rmtree(self._tmpdir, ignore_errors=True)


def logdir_run_id(logdir, resume):
    """The `wandb.init` arguments that keep one W&B run per run directory.

    A resumed run (`resume=True`) gets the id stored in
    `logdir/wandb/keras_dreamer_run_id`, so W&B continues the same run;
    otherwise (or with no stored id) a new id is drawn and stored. Pass the
    result to `WandBOutput(**...)`. Offline, each session is its own
    `offline-run-*` folder with that id, and `wandb sync` joins them.

    Args:
        logdir: the run directory (`logdir/wandb/` is created).
        resume: whether the run resumes from a checkpoint.

    Returns:
        `{"id": str, "resume": "allow"}`.

    Examples:
        >>> import tempfile
        >>> logdir = tempfile.mkdtemp()
        >>> first = logdir_run_id(logdir, resume=False)
        >>> logdir_run_id(logdir, resume=True) == first, first["resume"]
        (True, 'allow')
        >>> logdir_run_id(logdir, resume=False) == first
        False
    """
    directory = prepare_dir(os.path.join(logdir, "wandb"), "WandBOutput")
    path = os.path.join(directory, RUN_ID_FILE)
    run_id = None
    if resume and os.path.isfile(path):
        with open(path) as file:
            run_id = file.read().strip() or None
    if run_id is None:
        run_id = secrets.token_hex(4)  # W&B ids are [a-z0-9]
        with open(path + ".tmp", "w") as file:
            file.write(run_id + "\n")
        os.replace(path + ".tmp", path)
    return {"id": run_id, "resume": "allow"}
