"""MLflowOutput: logs to an MLflow run (a tracking server or a local store)."""

import os
import pathlib
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

from keras_dreamer.logger import media
from keras_dreamer.logger import video
from keras_dreamer.logger.outputs.base import AsyncOutput
from keras_dreamer.logger.outputs.base import kind_of
from keras_dreamer.logger.outputs.base import prepare_dir

DEFAULT_EXPERIMENT = "keras-dreamer"
# MLflow's limits: metrics and params per `log_batch` call, characters of a
# param value.
MAX_METRICS = 1000
MAX_PARAMS = 100
MAX_PARAM_LENGTH = 6000
_BINDING = re.compile(r"^([A-Za-z_][\w./]*)\s*=\s*(.*)$")


class MLflowOutput(AsyncOutput):
    """Logs scalars as MLflow metrics, and videos, images and text as artifacts.

    The run is created in the constructor and ended (status FINISHED) by
    `close()`. Each write sends its scalars in one `log_batch` call with
    their steps; a video becomes the artifact `media/<key>_<step>.mp4` when
    PyAV is installed (the `video` extra), else `media/<key>_<step>.gif`
    (the GIF the other outputs write; see `video_format`; "/" in keys
    becomes "_"), an image
    `media/<key>_<step>.png`, a text `text/<key>_<step>.txt`. Histograms have
    no MLflow type and are skipped. With a `logdir` holding `config.gin`
    (the operative config that `keras-dreamer train` writes), every binding
    of it is logged as a param (`make_world_model.preset` -> `'debug'`) and
    the file as the artifact `config.gin`.

    Where the run goes: `tracking_uri`, else the `MLFLOW_TRACKING_URI`
    environment variable, else a local store in `logdir/mlruns` (view it
    with `mlflow ui --backend-store-uri LOGDIR/mlruns`). A local directory
    store is MLflow's file store, which recent MLflow versions only open
    with `MLFLOW_ALLOW_FILE_STORE=true`: this output sets that default for a
    local store (use a `sqlite:///...` URI, which needs the full `mlflow`
    package, to avoid it).

    A tracking server that does not answer within `timeout` seconds fails
    the constructor with one line naming the URI, and fails each later
    write at once (the `Logger` reports it once and the other outputs go
    on), instead of waiting through MLflow's own retries. Writes run on a
    worker thread (see `AsyncOutput`).

    Args:
        tracking_uri: an MLflow tracking URI (`http://host:5000`,
            `sqlite:///runs.db`, `file:///path` or a directory), or None
            (see above).
        experiment: experiment name, created if missing; None for the
            `MLFLOW_EXPERIMENT_NAME` environment variable, else
            "keras-dreamer".
        run_name: the run's name.
        params: dict of params logged at the start (values shown as str).
        tags: dict of run tags.
        logdir: the run directory: the default store and `config.gin`.
        fps: frame rate of the videos.
        video_format: "auto" (MP4 when PyAV is installed, else GIF), "mp4"
            or "gif" (see `kd.logger.video`).
        timeout: seconds a tracking server may take to answer.
        pattern: optional regex (`re.search`) selecting the keys to log.
        parallel: write on a worker thread (default) or in the caller.

    Attributes:
        client: the `mlflow.tracking.MlflowClient`.
        run_id: the id of the run this output logs to.
        tracking_uri: the resolved tracking URI.

    Raises:
        ImportError: the `mlflow` package is not installed.
        ConnectionError: the tracking server cannot be reached.
        OSError: a local store is not a writable directory.
        ValueError: no tracking URI, no `MLFLOW_TRACKING_URI` and no logdir.

    Examples:
        >>> import tempfile
        >>> import numpy as np
        >>> output = MLflowOutput(logdir=tempfile.mkdtemp(), run_name="demo")
        >>> output([(10, "train/loss", 0.5), (10, "report/video", np.zeros((4, 8, 8, 3)))])
        >>> output.close()
        >>> run = output.client.get_run(output.run_id)
        >>> run.data.metrics, run.info.status
        ({'train/loss': 0.5}, 'FINISHED')
    """  # noqa: E501

    def __init__(
        self,
        tracking_uri=None,
        experiment=None,
        run_name=None,
        params=None,
        tags=None,
        logdir=None,
        fps=15,
        video_format="auto",
        timeout=10.0,
        pattern=None,
        parallel=True,
    ):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as error:
            raise ImportError(
                "MLflowOutput needs the `mlflow` package (or `mlflow-skinny`): "
                "pip install 'keras-dreamer[mlflow]'"
            ) from error
        self.tracking_uri = _resolve_uri(tracking_uri, logdir)
        self._timeout = float(timeout)
        self._fps = fps
        self._video_format = video.resolve_format(video_format)
        _check_reachable(self.tracking_uri, self._timeout)
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        experiment = experiment or os.environ.get(
            "MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT
        )
        run = self.client.create_run(
            self._experiment_id(experiment), run_name=run_name, tags=tags
        )
        self.run_id = run.info.run_id
        # The run exists from here on: end it if the start-up logging fails.
        try:
            config_file = os.path.join(logdir, "config.gin") if logdir else None
            if config_file and not os.path.isfile(config_file):
                config_file = None
            all_params = dict(params or {})
            if config_file:
                with open(config_file) as file:
                    all_params.update(gin_params(file.read()))
                self.client.log_artifact(self.run_id, config_file)
            self._log_params(all_params)
        except BaseException:
            self.client.set_terminated(self.run_id, "FAILED")
            raise
        super().__init__(pattern, parallel)
        self._tmpdir = None

    def _experiment_id(self, name):
        from mlflow.exceptions import MlflowException

        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return self.client.create_experiment(name)
        except MlflowException:  # another process created it meanwhile
            return self.client.get_experiment_by_name(name).experiment_id

    def _log_params(self, params):
        from mlflow.entities import Param

        items = [Param(str(key), _param_value(value)) for key, value in params.items()]
        for start in range(0, len(items), MAX_PARAMS):
            self.client.log_batch(self.run_id, params=items[start : start + MAX_PARAMS])

    def _write(self, summaries):
        from mlflow.entities import Metric

        _check_reachable(self.tracking_uri, self._timeout)
        timestamp = int(time.time() * 1000)
        metrics = []
        for step, name, value in summaries:
            kind = kind_of(value)
            if kind == "scalar":
                metrics.append(Metric(name, float(value), timestamp, int(step)))
            elif kind == "text":
                path = "text/" + media.media_filename(name, step, ".txt")
                self.client.log_text(self.run_id, value, path)
            elif kind in ("image", "video"):
                self._log_media(name, step, value, kind)
        for start in range(0, len(metrics), MAX_METRICS):
            self.client.log_batch(
                self.run_id, metrics=metrics[start : start + MAX_METRICS]
            )

    def _log_media(self, name, step, value, kind):
        if kind == "video":
            data, suffix = video.video_bytes(value, self._fps, self._video_format)
        else:
            data, suffix = media.encode_png(media.to_uint8(value)), ".png"
        self._tmpdir = self._tmpdir or tempfile.mkdtemp(prefix="keras_dreamer_mlflow_")
        path = os.path.join(self._tmpdir, media.media_filename(name, step, suffix))
        with open(path, "wb") as file:
            file.write(data)
        try:
            self.client.log_artifact(self.run_id, path, "media")
        finally:
            os.remove(path)

    def _close(self):
        try:
            self.client.set_terminated(self.run_id)
        finally:
            if self._tmpdir:
                shutil.rmtree(self._tmpdir, ignore_errors=True)


def gin_params(text):
    """The bindings of a gin config as `{"fn.param": "value text"}`.

    Comments, `import` and `include` lines are skipped; a value continued on
    indented lines (after a trailing backslash or an open bracket) is joined
    into one line.

    Args:
        text: the gin config, e.g. `gin.operative_config_str()`.

    Returns:
        A dict of binding name -> the value as written.

    Examples:
        >>> gin_params("# Parameters for train:\\ntrain.steps = 8\\n"
        ...            "train.outputs = \\\\\\n    ('jsonl',\\n    'mlflow')")
        {'train.steps': '8', 'train.outputs': "('jsonl', 'mlflow')"}
    """
    params, key = {}, None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _BINDING.match(line)
        if match:
            key = match.group(1)
            params[key] = match.group(2).strip()
        elif line[0].isspace() and key is not None:
            value = params[key].removesuffix("\\").rstrip()
            joiner = "" if not value or value.endswith(("(", "[", "{")) else " "
            params[key] = value + joiner + stripped
        else:
            key = None
    return params


def _param_value(value):
    text = str(value)
    if len(text) > MAX_PARAM_LENGTH:
        text = text[: MAX_PARAM_LENGTH - 3] + "..."
    return text


def _resolve_uri(tracking_uri, logdir):
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        if logdir is None:
            raise ValueError(
                "MLflowOutput needs a tracking_uri, the MLFLOW_TRACKING_URI "
                "environment variable or a logdir (for a store in logdir/mlruns)."
            )
        uri = os.path.join(os.fspath(logdir), "mlruns")
    uri = os.fspath(uri)
    scheme = urllib.parse.urlparse(uri).scheme
    if scheme in ("", "file"):  # a local directory store
        path = urllib.parse.urlparse(uri).path if scheme else uri
        path = prepare_dir(os.path.abspath(path), "MLflowOutput")
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        return pathlib.Path(path).as_uri()
    return uri


def _check_reachable(uri, timeout):
    """Raises ConnectionError if an http(s) tracking server does not answer."""
    if urllib.parse.urlparse(uri).scheme not in ("http", "https"):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        return  # it answered (a server or proxy without /health)
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", None) or error
        raise ConnectionError(
            f"MLflowOutput: cannot reach the MLflow tracking server at {uri} "
            f"({reason}); start it, or fix MLFLOW_TRACKING_URI / tracking_uri."
        ) from None
