"""Image and video encoding for the logging outputs (numpy and Pillow only).

Images are rank 2 (HW) or rank 3 (HWC) arrays and videos rank 4 (THWC), with
C in {1, 3, 4}. `to_uint8` converts any of them to uint8: floats are taken to
lie in [0, 1] and are scaled by 255, rounded and clipped (never truncated);
NaN becomes 0; booleans become 0/255; other integers are clipped to [0, 255].

Videos become animated GIFs with one global palette of 248 colours built from
the whole clip (like ffmpeg's palettegen/paletteuse), which is fast and free of
frame-to-frame colour flicker. Every frame is kept, so a decoded GIF has
exactly T frames (see `encode_gif`). `gif_bytes` memoises the encoding of one
video object so that TensorBoard, W&B and the media files share a single
encoding of each logged video.
"""

import collections
import io
import threading
import weakref

import numpy as np
from PIL import Image

_PALETTE_SAMPLE_PIXELS = 1 << 18
_TWINS = 8  # palette entries kept free for _keep_repeated_frames
_COLOURS = 256 - _TWINS


def to_uint8(array):
    """Converts an image or video array to uint8.

    Args:
        array: array-like of any numeric dtype. Floats are assumed to be in
            [0, 1]; values outside are clipped and NaN becomes 0.

    Returns:
        A uint8 numpy array of the same shape.

    Examples:
        >>> to_uint8(np.array([0.0, 0.5, 1.0, 2.0])).tolist()
        [0, 128, 255, 255]
    """
    array = np.asarray(array)
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * np.uint8(255)
    if np.issubdtype(array.dtype, np.integer):
        return np.clip(array, 0, 255).astype(np.uint8)
    array = np.nan_to_num(np.asarray(array, np.float32), nan=0.0)
    return np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)


def encode_png(image):
    """Encodes an HW or HWC image (C in 1, 3, 4) as PNG bytes.

    Args:
        image: array-like image; see `to_uint8` for the value conventions.

    Returns:
        The PNG file contents as bytes.

    Examples:
        >>> encode_png(np.zeros((4, 6, 3), np.uint8))[:4]
        b'\\x89PNG'
    """
    image = to_uint8(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (3, 4)):
        raise ValueError(f"Expected an HW or HWC image, got shape {image.shape}")
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def encode_gif(video, fps=15):
    """Encodes a THWC video (C in 1, 3, 4) as an animated, looping GIF.

    Grayscale is stored as RGB and an alpha channel is dropped. GIF stores
    frame durations in hundredths of a second, so the played rate is
    `100 / round(100 / fps)` frames per second (15 fps plays at 14.3).

    Args:
        video: array-like video; see `to_uint8` for the value conventions.
        fps: frames per second, positive.

    Returns:
        The GIF file contents as bytes; decoding them gives exactly T frames.

    Examples:
        >>> video = np.zeros((5, 8, 8, 3), np.uint8)
        >>> Image.open(io.BytesIO(encode_gif(video))).n_frames
        5
    """
    video = to_uint8(video)
    if video.ndim != 4 or video.shape[-1] not in (1, 3, 4):
        raise ValueError(f"Expected a THWC video with C in 1, 3, 4, got {video.shape}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if video.shape[-1] == 1:
        video = np.repeat(video, 3, axis=-1)
    video = np.ascontiguousarray(video[..., :3])
    palette_image = _global_palette(video)
    indices = np.stack(
        [
            np.asarray(
                Image.fromarray(frame).quantize(
                    palette=palette_image, dither=Image.Dither.NONE
                )
            )
            for frame in video
        ]
    )
    palette = list(palette_image.getpalette()[: 3 * _COLOURS])
    palette += [0] * (3 * 256 - len(palette))
    _keep_repeated_frames(indices, palette)
    frames = []
    for frame_indices in indices:
        frame = Image.frombytes("P", frame_indices.shape[::-1], frame_indices.tobytes())
        frame.putpalette(palette)
        frames.append(frame)
    buffer = io.BytesIO()
    frames[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=frames[1:],
        duration=10 * max(1, round(100 / fps)),
        loop=0,
        optimize=False,  # per-frame palette pruning would defeat the twin entry
    )
    return buffer.getvalue()


def _global_palette(video):
    """Returns a 'P' image whose palette holds `_COLOURS` colours fitted to `video`."""
    pixels = video.reshape(-1, 3)
    stride = max(1, len(pixels) // _PALETTE_SAMPLE_PIXELS)
    sample = np.ascontiguousarray(pixels[::stride])[None]
    return Image.fromarray(sample).quantize(
        colors=_COLOURS, method=Image.Quantize.FASTOCTREE
    )


def _keep_repeated_frames(indices, palette):
    """Makes repeated frames differ invisibly, so that none is merged away.

    Pillow merges a frame identical to the previous one into one longer frame,
    which changes the frame count. The `_TWINS` spare palette entries are
    given the colours most often found at pixel (0, 0) of repeated frames
    (twins of those entries); in every other frame of a repeated run one pixel
    of such a colour is switched to its twin entry. The pictures do not change
    and the GIF keeps all T frames. Edits `indices` and `palette` in place.
    """
    repeated = [
        t for t in range(1, len(indices)) if np.array_equal(indices[t], indices[t - 1])
    ]
    corners = collections.Counter(int(indices[t, 0, 0]) for t in repeated)
    twin_of = {
        source: _COLOURS + k
        for k, (source, _) in enumerate(corners.most_common(_TWINS))
    }
    for source, twin in twin_of.items():
        palette[3 * twin : 3 * twin + 3] = palette[3 * source : 3 * source + 3]
    sources = list(twin_of)
    for t in repeated:
        # The previous frame may have been switched already: compare again.
        if np.array_equal(indices[t], indices[t - 1]):
            pixels = indices[t].reshape(-1)
            hits = np.flatnonzero(np.isin(pixels, sources))
            if hits.size:
                pixels[hits[0]] = twin_of[int(pixels[hits[0]])]


class _GifCache:
    """Memoises `encode_gif` per live video object, shared across threads.

    Entries are keyed by object identity and dropped when the video array is
    garbage collected, so the cache never outlives the summaries that hold it.
    Concurrent requests for one video wait for a single encoding.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._entries = {}

    def get(self, video, fps):
        key = (id(video), float(fps))
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0]() is not video:
                try:
                    ref = weakref.ref(video, lambda ref, key=key: self._evict(key, ref))
                except TypeError:  # not weak-referenceable: encode without caching
                    return encode_gif(video, fps)
                entry = (ref, threading.Lock(), [])
                self._entries[key] = entry
        _, entry_lock, result = entry
        with entry_lock:
            if not result:
                result.append(encode_gif(video, fps))
        return result[0]

    def _evict(self, key, ref):
        with self._lock:
            if key in self._entries and self._entries[key][0] is ref:
                del self._entries[key]

    def __len__(self):
        with self._lock:
            return len(self._entries)


_GIF_CACHE = _GifCache()


def gif_bytes(video, fps=15):
    """Returns `encode_gif(video, fps)`, encoding each live video object once.

    Outputs call this with the very array object the `Logger` handed them, so
    a video logged once is encoded once however many outputs write it. The
    array must not be modified after it was first encoded.

    Args:
        video: a THWC numpy array.
        fps: frames per second.

    Returns:
        The GIF file contents as bytes.

    Examples:
        >>> video = np.zeros((3, 4, 4, 3), np.uint8)
        >>> gif_bytes(video) is gif_bytes(video)
        True
    """
    return _GIF_CACHE.get(video, fps)


def media_filename(name, step, suffix=".gif"):
    """Returns the file name a media file of metric `name` at `step` gets.

    Args:
        name: metric key; "/" becomes "_".
        step: integer step.
        suffix: file extension including the dot.

    Returns:
        The base name, e.g. "report_openloop_image_1000.gif".

    Examples:
        >>> media_filename("report/openloop/image", 1000)
        'report_openloop_image_1000.gif'
    """
    return f"{name.replace('/', '_')}_{int(step)}{suffix}"
