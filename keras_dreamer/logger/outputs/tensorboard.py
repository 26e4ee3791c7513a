"""TensorBoardOutput: event files written with the `tensorboard` package only.

No TensorFlow is imported: events are built from tensorboard's own protos and
framed as TFRecords by `records` (tensorboard's `EventFileWriter` would import
TensorFlow when it is installed, and its TensorFlow-free checksum is too slow
for videos).
"""

import itertools
import os
import socket
import time

import numpy as np

from keras_dreamer.logger import media
from keras_dreamer.logger.outputs import records
from keras_dreamer.logger.outputs.base import AsyncOutput
from keras_dreamer.logger.outputs.base import group_by_step
from keras_dreamer.logger.outputs.base import kind_of
from keras_dreamer.logger.outputs.base import prepare_dir

HISTOGRAM_BINS = 30
_file_counter = itertools.count()


class TensorBoardOutput(AsyncOutput):
    """Writes every kind of summary to a TensorBoard event file in `logdir`.

    - scalars: `simple_value` (Scalars tab);
    - histograms (rank 1): a `HistogramProto` of 30 equal-width bins over the
      finite values (Histograms and Distributions tabs; skipped if none is
      finite);
    - images (HW or HWC): PNG (Images tab);
    - videos (THWC): an animated GIF at `fps` in an image summary (Images
      tab; the GIF is shared with the other outputs, see `media.gif_bytes`);
    - text: a text-plugin string tensor (Text tab).

    Each step of a write becomes one event; the file is flushed after every
    write. The file is named `events.out.tfevents.<time>.<host>.<pid>.<n>`.
    Writes run on a worker thread (see `AsyncOutput`).

    Args:
        logdir: directory of the event file; created if missing.
        fps: frame rate of the video GIFs.
        pattern: optional regex (`re.search`) selecting the keys to write.
        parallel: write on a worker thread (default) or in the caller.
        purge_step: for a run resumed from a checkpoint: the first step this
            writer will log. A session-start event at that step makes
            TensorBoard drop the events of earlier files at that step and
            later (written after the checkpoint), so curves continue without
            duplicates.

    Attributes:
        path: the path of the event file.

    Raises:
        ImportError: the `tensorboard` package is not installed.
        OSError: `logdir` is not a writable directory.

    Examples:
        >>> import tempfile
        >>> output = TensorBoardOutput(tempfile.mkdtemp())
        >>> output([(0, "loss", 1.0), (0, "frame", np.zeros((8, 8, 3)))])
        >>> output.close()
    """

    def __init__(self, logdir, fps=15, pattern=None, parallel=True, purge_step=None):
        try:
            from tensorboard.compat.proto import event_pb2
            from tensorboard.compat.proto import summary_pb2
        except ImportError as error:
            raise ImportError(
                "TensorBoardOutput needs the `tensorboard` package: "
                "pip install 'keras-dreamer[tensorboard]'"
            ) from error
        super().__init__(pattern, parallel)
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self._fps = fps
        self._event_pb2 = event_pb2
        self._summary_pb2 = summary_pb2
        logdir = prepare_dir(logdir, "TensorBoardOutput")
        host, pid, count = socket.gethostname(), os.getpid(), next(_file_counter)
        name = f"events.out.tfevents.{int(time.time()):010d}.{host}.{pid}.{count}"
        self.path = os.path.join(logdir, name)
        self._file = open(self.path, "xb")
        self._add_event(self._event_pb2.Event(file_version="brain.Event:2"))
        if purge_step is not None:
            start = self._event_pb2.SessionLog(status=self._event_pb2.SessionLog.START)
            self._add_event(
                self._event_pb2.Event(step=int(purge_step), session_log=start)
            )
        self._file.flush()

    def _write(self, summaries):
        for step, values in group_by_step(summaries):
            protos = [self._value(name, value) for name, value in values.items()]
            protos = [proto for proto in protos if proto is not None]
            if protos:
                summary = self._summary_pb2.Summary(value=protos)
                self._add_event(self._event_pb2.Event(step=step, summary=summary))
        self._file.flush()

    def _add_event(self, event):
        event.wall_time = time.time()
        self._file.write(records.frame(event.SerializeToString()))

    def _value(self, name, value):
        pb = self._summary_pb2
        kind = kind_of(value)
        if kind == "scalar":
            return pb.Summary.Value(tag=name, simple_value=float(value))
        if kind == "histogram":
            histogram = _histogram(pb, value)
            return (
                None
                if histogram is None
                else pb.Summary.Value(tag=name, histo=histogram)
            )
        if kind == "image":
            image = media.to_uint8(value)
            image = image[..., None] if image.ndim == 2 else image
            return self._image(name, image.shape, media.encode_png(image))
        if kind == "video":
            return self._image(name, value.shape[1:], media.gif_bytes(value, self._fps))
        return pb.Summary.Value(
            tag=name, metadata=_text_metadata(), tensor=_text(value)
        )

    def _image(self, name, shape, encoded):
        height, width, channels = shape
        image = self._summary_pb2.Summary.Image(
            height=height,
            width=width,
            colorspace=channels,
            encoded_image_string=encoded,
        )
        return self._summary_pb2.Summary.Value(tag=name, image=image)

    def _close(self):
        self._file.close()


def _histogram(pb, values):
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if not values.size:
        return None
    counts, edges = np.histogram(values, bins=HISTOGRAM_BINS)
    return pb.HistogramProto(
        min=float(values.min()),
        max=float(values.max()),
        num=float(values.size),
        sum=float(values.sum()),
        sum_squares=float(np.dot(values, values)),
        bucket_limit=edges[1:].tolist(),
        bucket=counts.astype(np.float64).tolist(),
    )


def _text(text):
    from tensorboard.compat.proto import tensor_pb2
    from tensorboard.compat.proto import tensor_shape_pb2
    from tensorboard.compat.proto import types_pb2

    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(),
        string_val=[text.encode("utf-8")],
    )


def _text_metadata():
    from tensorboard.plugins.text import metadata

    return metadata.create_summary_metadata(display_name="", description="")
