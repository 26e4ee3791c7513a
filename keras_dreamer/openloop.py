"""Composition of the open-loop prediction video (plain numpy, no backend).

The layout is DreamerV3's `report/openloop/<key>`: for each of RB sequences,
three rows stacked vertically (truth, model, error), framed by a 2-pixel
border that is green on observed frames and red on imagined ones; the
sequences sit side by side and 10 black frames close the loop. The error row
is `(model - truth + 255) / 2`: mid-grey (127) where the prediction is exact,
darker where the model is too dark, brighter where it is too bright, per
channel.
"""

import numpy as np

OBSERVED_COLOR = (0, 255, 0)
IMAGINED_COLOR = (255, 0, 0)
BORDER = 2
TAIL_FRAMES = 10


def error_frames(truth, model):
    """`(model - truth + 255) / 2` as uint8 (127 for a perfect prediction).

    Args:
        truth: uint8 array, the real frames.
        model: uint8 array of the same shape, the predicted frames.

    Returns:
        uint8 array of the same shape: 127 where exact, darker where the
        model is too dark, brighter where it is too bright.

    Examples:
        >>> truth = np.uint8([0, 100, 255])
        >>> error_frames(truth, np.uint8([0, 0, 255])).tolist()
        [127, 77, 127]
    """
    diff = model.astype(np.int32) - truth.astype(np.int32) + 255
    return (diff // 2).astype(np.uint8)


def compose(truth, model, observed):
    """The open-loop video of several sequences.

    Args:
        truth: uint8 `[RB, T, H, W, C]`, the real frames.
        model: uint8 `[RB, T, H, W, C]`, the model's frames (reconstructions
            for the first `observed` steps, open-loop predictions after).
        observed: number of frames the model observed (T // 2 in reports).

    Returns:
        uint8 `[T + 10, 3 * H + 4, RB * (W + 4), C']` with `C' = C` for RGB
        images; single-channel images are shown as RGB (`C' = 3`) so that the
        green and red borders stay visible.

    Raises:
        ValueError: on mismatched shapes, a wrong rank or dtype, or `observed`
            outside `[0, T]`.

    Examples:
        >>> truth = np.zeros((2, 4, 8, 8, 3), np.uint8)
        >>> compose(truth, truth, observed=2).shape
        (14, 28, 24, 3)
    """
    truth = np.asarray(truth)
    model = np.asarray(model)
    if truth.shape != model.shape or truth.ndim != 5:
        raise ValueError(
            f"truth and model must both be [RB, T, H, W, C]; got {truth.shape} "
            f"and {model.shape}."
        )
    if truth.dtype != np.uint8 or model.dtype != np.uint8:
        raise ValueError(
            f"truth and model must be uint8, got {truth.dtype}, {model.dtype}."
        )
    batch, length, height, width, channels = truth.shape
    if not 0 <= observed <= length:
        raise ValueError(f"observed={observed} must lie in [0, {length}].")
    if channels == 1:
        truth, model = np.repeat(truth, 3, -1), np.repeat(model, 3, -1)
        channels = 3
    rows = np.concatenate([truth, model, error_frames(truth, model)], axis=2)
    colors = np.empty((length, channels), np.uint8)
    colors[:observed] = OBSERVED_COLOR[:channels]
    colors[observed:] = IMAGINED_COLOR[:channels]
    framed = np.empty(
        (batch, length, 3 * height + 2 * BORDER, width + 2 * BORDER, channels), np.uint8
    )
    framed[...] = colors[None, :, None, None, :]
    framed[:, :, BORDER:-BORDER, BORDER:-BORDER] = rows
    tail = np.zeros((batch, TAIL_FRAMES, *framed.shape[2:]), np.uint8)
    video = np.concatenate([framed, tail], axis=1)
    video = video.transpose(1, 2, 0, 3, 4)
    return video.reshape(
        length + TAIL_FRAMES, framed.shape[2], batch * framed.shape[3], -1
    )


def to_uint8_frames(frames):
    """Float images in [0, 1] as uint8 `clip(255 * x)` (uint8 passes through).

    Args:
        frames: float array in [0, 1] or uint8 array.

    Returns:
        uint8 array of the same shape.

    Examples:
        >>> to_uint8_frames(np.float32([0.0, 0.5, 1.2])).tolist()
        [0, 127, 255]
    """
    frames = np.asarray(frames)
    if frames.dtype == np.uint8:
        return frames
    return np.clip(np.asarray(frames, np.float32) * 255.0, 0, 255).astype(np.uint8)
