"""Video files for the trackers: MP4 (H.264) when PyAV is installed, else GIF.

W&B and MLflow play MP4 in the browser and store it far smaller than a GIF.
The MP4 encoder is PyAV (`pip install 'keras-dreamer[video]'`), which brings
its own FFmpeg; without it videos stay GIFs (`media.gif_bytes`). Outputs take
a `video_format`: "auto" (MP4 when PyAV is installed), "mp4" or "gif".
"""

import importlib.util
import io

import numpy as np

from keras_dreamer.logger import media

FORMATS = ("auto", "mp4", "gif")


def mp4_available():
    """Whether the MP4 encoder (the `av` package, PyAV) is installed.

    Returns:
        A bool.

    Examples:
        >>> isinstance(mp4_available(), bool)
        True
    """
    return importlib.util.find_spec("av") is not None


def resolve_format(video_format):
    """The file format a `video_format` setting gives on this install.

    Args:
        video_format: "auto" (MP4 when PyAV is installed, else GIF), "mp4"
            or "gif".

    Returns:
        "mp4" or "gif".

    Raises:
        ValueError: an unknown setting.
        ImportError: "mp4" without PyAV (the message names the extra).

    Examples:
        >>> resolve_format("gif")
        'gif'
        >>> resolve_format("auto") == ("mp4" if mp4_available() else "gif")
        True
    """
    if video_format not in FORMATS:
        raise ValueError(
            f"video_format must be one of {FORMATS}, got {video_format!r}."
        )
    if video_format == "auto":
        return "mp4" if mp4_available() else "gif"
    if video_format == "mp4" and not mp4_available():
        raise ImportError(
            "MP4 videos need PyAV: pip install 'keras-dreamer[video]' "
            "(or use video_format='gif')."
        )
    return video_format


def encode_mp4(video, fps=15):
    """Encodes a THWC video as an H.264 MP4 (yuv420p) with PyAV.

    Every frame is kept. H.264 needs an even width and height: an odd one
    gets one more row or column, a copy of the last.

    Args:
        video: a THWC array with C in {1, 3, 4} (see `media.to_uint8`).
        fps: frames per second.

    Returns:
        The MP4 file contents as bytes.

    Raises:
        ImportError: PyAV is not installed.

    Examples:
        >>> data = encode_mp4(np.zeros((5, 16, 16, 3), np.uint8))
        >>> data[4:8]
        b'ftyp'
    """
    import av

    frames = media.to_uint8(np.asarray(video))
    if frames.ndim != 4:
        raise ValueError(f"encode_mp4 needs a THWC video, got shape {frames.shape}.")
    frames = frames[..., :3] if frames.shape[-1] == 4 else frames
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    height, width = frames.shape[1:3]
    frames = np.pad(
        frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge"
    )
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=int(fps))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            picture = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(frame), format="rgb24"
            )
            container.mux(stream.encode(picture))
        container.mux(stream.encode())  # the frames the encoder still holds
    return buffer.getvalue()


def video_bytes(video, fps=15, video_format="auto"):
    """A video as file contents in the format `video_format` resolves to.

    Args:
        video: a THWC array.
        fps: frames per second.
        video_format: "auto", "mp4" or "gif" (see `resolve_format`).

    Returns:
        `(data, suffix)`: the bytes and ".mp4" or ".gif".

    Examples:
        >>> data, suffix = video_bytes(np.zeros((3, 4, 4, 3), np.uint8),
        ...                            video_format="gif")
        >>> suffix, data[:6]
        ('.gif', b'GIF89a')
    """
    if resolve_format(video_format) == "mp4":
        return encode_mp4(video, fps), ".mp4"
    return media.gif_bytes(video, fps), ".gif"
