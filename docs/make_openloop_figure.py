"""Draw the annotated open-loop figure of the docs from a report GIF.

    python docs/make_openloop_figure.py LOGDIR/media/report_openloop_image_1500.gif \
        --source "default.gin, TensorFlow backend, step 1500"

writes `docs/images/openloop_annotated.png`: one observed frame (green
border) and one imagined frame (red border) of the video, enlarged, with the
truth, model and error rows labelled and the borders explained. The script
reads only the GIF (Pillow and numpy); the layout it assumes is the one
`keras_dreamer.openloop.compose` writes: per frame, sequences side by side,
each a column of truth | model | error rows of square images framed by a
2-pixel border, followed by 10 black frames.
"""

import argparse
import os
import re

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont
from PIL import ImageSequence

BORDER = 2
TAIL_FRAMES = 10
GREEN = (0, 255, 0)
RED = (255, 0, 0)
INK = (30, 30, 30)
OBSERVED_INK = (0, 140, 0)
IMAGINED_INK = (200, 0, 0)
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "images")


def read_frames(path):
    """The GIF's frames as RGB uint8 arrays, black tail frames excluded.

    Returns:
        `(frames, observed)`: the `T` content frames and, per frame, True if
        its border is green (observed) and False if it is red (imagined).
    """
    with Image.open(path) as gif:
        frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(gif)]
    frames = frames[:-TAIL_FRAMES] if len(frames) > TAIL_FRAMES else frames
    observed = []
    for index, frame in enumerate(frames):
        corner = tuple(int(c) for c in frame[0, 0])
        if corner not in (GREEN, RED):
            raise ValueError(
                f"frame {index} of {path} has corner colour {corner}; expected the "
                "green or red border of an open-loop report video."
            )
        observed.append(corner == GREEN)
    if not any(observed) or all(observed):
        raise ValueError(f"{path} needs both observed and imagined frames.")
    return frames, observed


def layout(frame):
    """Image size `H` (square images assumed) and number of sequences."""
    height, width, _ = frame.shape
    size = (height - 2 * BORDER) // 3
    if 3 * size + 2 * BORDER != height or width % (size + 2 * BORDER):
        raise ValueError(
            f"A frame of {width}x{height} pixels is not a row of "
            "truth | model | error columns of square images."
        )
    return size, width // (size + 2 * BORDER)


def font(size):
    return ImageFont.load_default(size=size)


def text_width(text, size):
    return int(np.ceil(font(size).getlength(text)))


def arrow(draw, start, end, fill=INK, width=3, head=10):
    """A straight arrow from `start` to `end` with a filled head."""
    draw.line([start, end], fill=fill, width=width)
    (x0, y0), (x1, y1) = start, end
    direction = np.array([x1 - x0, y1 - y0], float)
    direction /= np.linalg.norm(direction) or 1.0
    normal = np.array([-direction[1], direction[0]])
    tip = np.array([x1, y1], float)
    base = tip - head * direction
    points = [tuple(tip), tuple(base + 0.6 * head * normal)]
    points.append(tuple(base - 0.6 * head * normal))
    draw.polygon(points, fill=fill)


def panel(frame, scale, size, title, colour, note, note_colour):
    """One enlarged frame with row labels on the left and a border note."""
    image = Image.fromarray(frame).resize(
        (frame.shape[1] * scale, frame.shape[0] * scale), Image.NEAREST
    )
    left, top, right, bottom = 150, 44, 40, 46
    border_x = left + (size + 2 * BORDER) * scale // 2
    width = max(
        image.width + left + right,
        left + text_width(title, 22) + right,
        border_x + 34 + text_width(note, 20) + right,
    )
    canvas = Image.new("RGB", (width, image.height + top + bottom), "white")
    canvas.paste(image, (left, top))
    draw = ImageDraw.Draw(canvas)
    draw.text((left, 8), title, fill=colour, font=font(22))
    row = size * scale
    for index, label in enumerate(("truth", "model", "error")):
        middle = top + (BORDER + index * size) * scale + row // 2
        draw.text((12, middle - 14), label, fill=INK, font=font(24))
        arrow(draw, (92, middle), (left + BORDER * scale + 6, middle))
    # Point at the bottom border of the first sequence.
    border_y = top + image.height - BORDER * scale // 2
    note_y = top + image.height + 14
    draw.text((border_x + 34, note_y), note, fill=note_colour, font=font(20))
    start, end = (border_x + 28, note_y + 12), (border_x, border_y + 4)
    arrow(draw, start, end, fill=note_colour)
    return canvas


def make_figure(path, source=None, observed_frame=None, imagined_frame=None, scale=3):
    """The annotated figure as a PIL image.

    Args:
        path: a report GIF (`LOGDIR/media/report_openloop_<key>_<step>.gif`).
        source: a line saying which run made the GIF, printed at the bottom.
        observed_frame: index of the observed frame to show (default: the
            last observed one).
        imagined_frame: index of the imagined frame to show (default: the
            middle of the imagined part).
        scale: enlargement factor (nearest neighbour, so pixels stay sharp).

    Returns:
        A `PIL.Image.Image`.
    """
    frames, observed = read_frames(path)
    size, sequences = layout(frames[0])
    seen = [i for i, flag in enumerate(observed) if flag]
    imagined = [i for i, flag in enumerate(observed) if not flag]
    if observed_frame is None:
        observed_frame = seen[-1]
    if imagined_frame is None:
        imagined_frame = imagined[len(imagined) // 2]
    for index, wanted in ((observed_frame, True), (imagined_frame, False)):
        if not 0 <= index < len(frames) or observed[index] != wanted:
            kind = "observed" if wanted else "imagined"
            raise ValueError(f"frame {index} is not an {kind} frame of {path}.")
    ahead = imagined_frame - seen[-1]
    top = panel(
        frames[observed_frame],
        scale,
        size,
        f"frame {observed_frame}: observed (the model sees this step's image)",
        OBSERVED_INK,
        "green border: observed frame; the model row is a reconstruction",
        OBSERVED_INK,
    )
    bottom = panel(
        frames[imagined_frame],
        scale,
        size,
        f"frame {imagined_frame}: imagined, {ahead} steps after the last observed one",
        IMAGINED_INK,
        "red border: imagined frame; the model row is an open-loop prediction",
        IMAGINED_INK,
    )
    lines = [
        f"{sequences} sequences side by side; {len(seen)} observed + "
        f"{len(imagined)} imagined frames, then {TAIL_FRAMES} black frames.",
        "error = (model - truth + 255) / 2: mid-grey where the model is exact,",
        "darker where it predicts too dark, brighter where it predicts too bright.",
    ]
    if source:
        lines.append(f"Source: {source}.")
    footer = 16 + 30 * len(lines)
    width = max(top.width, bottom.width, *(24 + text_width(x, 20) for x in lines))
    figure = Image.new("RGB", (width, top.height + bottom.height + footer), "white")
    figure.paste(top, (0, 0))
    figure.paste(bottom, (0, top.height))
    draw = ImageDraw.Draw(figure)
    for index, line in enumerate(lines):
        y = top.height + bottom.height + 8 + 30 * index
        draw.text((12, y), line, fill=INK, font=font(20))
    return figure


def step_of(path):
    """The step in a media file name (`..._<step>.gif`), or None."""
    match = re.search(r"_(\d+)\.gif$", os.path.basename(path))
    return int(match.group(1)) if match else None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gif", help="an open-loop report GIF from LOGDIR/media/")
    parser.add_argument(
        "--out",
        default=os.path.join(DEFAULT_OUT, "openloop_annotated.png"),
        help="PNG to write (default: docs/images/openloop_annotated.png)",
    )
    parser.add_argument("--source", help="which run made the GIF, for the caption")
    parser.add_argument("--observed-frame", type=int, help="observed frame index")
    parser.add_argument("--imagined-frame", type=int, help="imagined frame index")
    parser.add_argument("--scale", type=int, default=3, help="enlargement factor")
    args = parser.parse_args(argv)
    source = args.source
    if source is None and step_of(args.gif) is not None:
        source = f"{os.path.basename(args.gif)}, step {step_of(args.gif)}"
    figure = make_figure(
        args.gif, source, args.observed_frame, args.imagined_frame, args.scale
    )
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    # Few colours: a palette PNG keeps the file small and the pixels exact.
    figure.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(
        args.out, optimize=True
    )
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
