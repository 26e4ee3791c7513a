"""MLflowOutput: a real local MLflow store, read back with MLflow's client."""

import os
import shutil
import socket
import time

import numpy as np
import pytest
from PIL import Image

from keras_dreamer.logger import Logger
from keras_dreamer.logger import OutputWarning
from keras_dreamer.logger import make_output
from keras_dreamer.logger.outputs import JSONLOutput
from keras_dreamer.logger.outputs import MLflowOutput
from keras_dreamer.logger.video import mp4_available
from tests.helpers import decode_video
from tests.helpers import read_jsonl
from tests.helpers import require

require("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

pytestmark = pytest.mark.backend_independent

CONFIG = """\
# Parameters for train:
# ==============================================================================
train.steps = 8
train.outputs = \\
    ('jsonl', 'mlflow')

# Parameters for make_world_model:
make_world_model.preset = 'debug'
"""


def store_client(logdir):
    """A client of its own on the store under `logdir` (not the output's)."""
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MlflowClient(tracking_uri=f"file://{logdir}/mlruns")


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("mlflow_logdir")
    (logdir / "config.gin").write_text(CONFIG)
    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    mp.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    try:
        output = make_output("mlflow", logdir)
    finally:
        mp.undo()
    video = np.zeros((6, 8, 12, 3), np.uint8)
    video[:, :, :, 0] = np.arange(6)[:, None, None] * 40  # every frame differs
    logger = Logger(0, [output], strict=True)
    for step in (2, 4, 6):
        logger.step = step
        logger.add({"loss": step / 4, "hist": np.arange(10.0)}, prefix="train")
        logger.write()
    logger.add(
        {"openloop/image": video, "frame": np.full((5, 7, 3), 0.5), "note": "hi"},
        prefix="report",
    )
    logger.close()
    return logdir, output.run_id, video


def test_scalars_are_metrics_with_their_steps(logged):
    logdir, run_id, _ = logged
    client = store_client(logdir)
    history = client.get_metric_history(run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(2, 0.5), (4, 1.0), (6, 1.5)]
    run = client.get_run(run_id)
    assert set(run.data.metrics) == {"train/loss"}  # no histograms in MLflow
    assert run.info.status == "FINISHED"
    assert run.info.run_name == os.path.basename(logdir)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "keras-dreamer"


def test_the_gin_config_is_params_and_an_artifact(logged, tmp_path):
    logdir, run_id, _ = logged
    client = store_client(logdir)
    assert client.get_run(run_id).data.params == {
        "train.steps": "8",
        "train.outputs": "('jsonl', 'mlflow')",
        "make_world_model.preset": "'debug'",
    }
    path = client.download_artifacts(run_id, "config.gin", str(tmp_path))
    assert open(path).read() == CONFIG


def test_videos_images_and_text_are_artifacts(logged, tmp_path):
    logdir, run_id, video = logged
    client = store_client(logdir)
    media = sorted(a.path for a in client.list_artifacts(run_id, "media"))
    suffix = ".mp4" if mp4_available() else ".gif"  # MP4 with the video extra
    assert media == [
        "media/report_frame_6.png",
        f"media/report_openloop_image_6{suffix}",
    ]
    path = client.download_artifacts(run_id, media[1], str(tmp_path))
    frames = decode_video(path)
    assert frames.shape == (len(video), 8, 12, 3)
    # H.264 is lossy; a GIF of so few colours is exact.
    tolerance = 12 if suffix == ".mp4" else 0
    assert abs(int(frames[3, 4, 6, 0]) - 120) <= tolerance
    png = client.download_artifacts(run_id, media[0], str(tmp_path))
    with Image.open(png) as image:
        assert image.size == (7, 5)
    text = client.download_artifacts(run_id, "text/report_note_6.txt", str(tmp_path))
    assert open(text).read() == "hi"


def test_a_failing_store_never_stops_the_other_outputs(tmp_path):
    output = MLflowOutput(tracking_uri=str(tmp_path / "store"))
    logger = Logger(0, [output, JSONLOutput(tmp_path)])
    with pytest.warns(OutputWarning) as record:
        for step in range(6):
            if step == 2:  # the store goes away, and cannot be made again
                shutil.rmtree(tmp_path / "store")
                (tmp_path / "store").write_text("not a directory")
            logger.step = step
            logger.scalar("x", float(step))
            logger.write()
        logger.close()
    failures = [r for r in record if "MLflowOutput" in str(r.message)]
    assert len(failures) == 1  # reported once
    assert logger.failures["MLflowOutput"] >= 4
    lines = read_jsonl(tmp_path / "metrics.jsonl")
    assert [line["step"] for line in lines] == list(range(6))


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_server_fails_at_once_naming_it(monkeypatch, tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(ConnectionError, match=f"cannot reach .* at {uri} "):
        MLflowOutput(tracking_uri=uri, timeout=5)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(ConnectionError, match=uri):
        make_output("mlflow", tmp_path)
    assert time.monotonic() - started < 30  # not MLflow's minutes of retries


def test_without_a_uri_or_logdir_it_says_what_it_needs(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ValueError, match="MLFLOW_TRACKING_URI"):
        MLflowOutput()
