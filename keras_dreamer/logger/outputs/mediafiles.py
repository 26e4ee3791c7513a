"""MediaOutput: every logged video also saved as a GIF file in the logdir."""

import os

from keras_dreamer.logger import media
from keras_dreamer.logger.outputs.base import AsyncOutput
from keras_dreamer.logger.outputs.base import kind_of
from keras_dreamer.logger.outputs.base import prepare_dir
from keras_dreamer.logger.outputs.base import write_atomically


class MediaOutput(AsyncOutput):
    """Saves each video (THWC) as `logdir/media/<key>_<step>.gif`.

    "/" in keys becomes "_" (so "a/b" and "a_b" share file names). Files are
    written to a temporary name and renamed, so a reader never sees half a
    GIF; a video logged again at the same step replaces its file. The GIF is
    the same encoding the other outputs use (`media.gif_bytes`). Writes run
    on a worker thread (see `AsyncOutput`).

    Args:
        logdir: run directory; files go to its `media/` subdirectory.
        fps: frame rate of the GIFs.
        pattern: optional regex (`re.search`) selecting the keys to save.
        parallel: write on a worker thread (default) or in the caller.

    Attributes:
        directory: the `media/` directory.

    Raises:
        OSError: `logdir/media` is not a writable directory.

    Examples:
        >>> import tempfile
        >>> import numpy as np
        >>> logdir = tempfile.mkdtemp()
        >>> output = MediaOutput(logdir)
        >>> output([(7, "report/video", np.zeros((4, 8, 8, 3), np.uint8))])
        >>> output.close()
        >>> os.listdir(os.path.join(logdir, "media"))
        ['report_video_7.gif']
    """

    def __init__(self, logdir, fps=15, pattern=None, parallel=True):
        super().__init__(pattern, parallel)
        self.directory = prepare_dir(os.path.join(logdir, "media"), "MediaOutput")
        self._fps = fps

    def _write(self, summaries):
        for step, name, value in summaries:
            if kind_of(value) == "video":
                path = os.path.join(self.directory, media.media_filename(name, step))
                write_atomically(path, media.gif_bytes(value, self._fps))
