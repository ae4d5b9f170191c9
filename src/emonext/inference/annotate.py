"""Drawing: labelled face boxes on frames, per-face probability charts, STN views, timelines.

Boxes and labels are drawn with OpenCV straight into the frame (about a millisecond per frame,
so video annotation costs little next to detection), each emotion in its own colour. Labels sit
on a filled badge in the box colour with black or white text picked by the badge's luminance,
and boxes get a dark outline, so they stay readable on light and dark backgrounds alike. Charts
are OpenCV too (fast, no global state, safe in the GUI's worker threads); only the timeline plot
uses matplotlib, through its object API and the Agg canvas, never ``pyplot``'s global figures.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from emonext.cleaning.faces import Box

ChannelOrder = Literal["bgr", "rgb"]

#: One colour per FER2013 emotion, as RGB (the GUI uses the same hues).
EMOTION_COLOURS: dict[str, tuple[int, int, int]] = {
    "angry": (220, 38, 38),
    "disgust": (101, 163, 13),
    "fear": (124, 58, 237),
    "happy": (234, 179, 8),
    "sad": (37, 99, 235),
    "surprise": (234, 88, 12),
    "neutral": (100, 116, 139),
    "contempt": (190, 24, 93),
}
#: Colours for classes outside the table (picked by a stable hash of the name).
EXTRA_COLOURS: tuple[tuple[int, int, int], ...] = (
    (8, 145, 178),
    (217, 70, 239),
    (22, 163, 74),
    (202, 138, 4),
    (71, 85, 105),
    (225, 29, 72),
)
#: Badges lighter than this (ITU-R 601 luma, 0-255) get black text, darker ones white.
LIGHT_BADGE = 150


def emotion_colour(name: str, order: ChannelOrder = "rgb") -> tuple[int, int, int]:
    """The colour of an emotion, as RGB or BGR (OpenCV frames).

    Unknown classes get a colour from :data:`EXTRA_COLOURS` chosen by a CRC of their name, so the
    same class has the same colour in every image and run.
    """
    rgb = EMOTION_COLOURS.get(name) or EXTRA_COLOURS[zlib.crc32(name.encode()) % len(EXTRA_COLOURS)]
    return rgb if order == "rgb" else (rgb[2], rgb[1], rgb[0])


def text_colour(background_rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``background_rgb``."""
    red, green, blue = background_rgb
    return (0, 0, 0) if 0.299 * red + 0.587 * green + 0.114 * blue > LIGHT_BADGE else (255, 255, 255)


@dataclass(frozen=True)
class FaceOverlay:
    """What is drawn for one face.

    Attributes:
        box: The face's window in the frame's pixels.
        probabilities: One per class (the top one labels the face).
        face_id: Track number shown as ``#N`` (videos, webcam); None for still images.
    """

    box: Box
    probabilities: np.ndarray
    face_id: int | None = None


def label_text(probabilities: np.ndarray, classes: Sequence[str], face_id: int | None = None) -> str:
    """``"happy 87%"`` (``"#2 happy 87%"`` with a face id)."""
    top = int(np.argmax(probabilities))
    text = f"{classes[top]} {round(float(probabilities[top]) * 100)}%"
    return f"#{face_id} {text}" if face_id is not None else text


def _style(height: int, width: int) -> tuple[float, int, int]:
    """Font scale, text thickness and box thickness proportional to the frame size."""
    side = min(height, width)
    scale = max(0.45, side / 700)
    return scale, max(1, round(scale * 1.6)), max(2, round(side / 250))


def draw_faces(
    frame: np.ndarray,
    faces: Sequence[FaceOverlay],
    classes: Sequence[str],
    order: ChannelOrder = "bgr",
    copy: bool = True,
) -> np.ndarray:
    """Draw each face's box and ``label NN%`` badge in its emotion's colour.

    Args:
        frame: uint8 (H, W, 3) image, or (H, W) grayscale (converted to colour).
        faces: What to draw.
        classes: Class names in the order of the probabilities.
        order: Channel order of ``frame`` (OpenCV frames are BGR, PIL/matplotlib arrays RGB).
        copy: Draw on a copy (False draws in place, for video frames nobody else reads).

    Returns:
        The annotated image, (H, W, 3) in ``order``.
    """
    if frame.ndim == 2:
        frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    elif copy:
        frame = frame.copy()
    height, width = frame.shape[:2]
    scale, text_thickness, line = _style(height, width)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for face in faces:
        top = int(np.argmax(face.probabilities))
        rgb = emotion_colour(classes[top], "rgb")
        colour = rgb if order == "rgb" else rgb[::-1]
        ink = text_colour(rgb)
        box = face.box
        corner1, corner2 = (box.x, box.y), (box.x + box.width - 1, box.y + box.height - 1)
        cv2.rectangle(frame, corner1, corner2, (0, 0, 0), line + 2, cv2.LINE_AA)  # contrast outline
        cv2.rectangle(frame, corner1, corner2, colour, line, cv2.LINE_AA)
        text = label_text(face.probabilities, classes, face.face_id)
        (text_width, text_height), baseline = cv2.getTextSize(text, font, scale, text_thickness)
        pad = max(2, line)
        badge_height = text_height + baseline + 2 * pad
        left = min(max(box.x - line // 2, 0), max(width - text_width - 2 * pad, 0))
        # Above the box when there is room, else just inside its top edge.
        badge_top = box.y - badge_height if box.y - badge_height >= 0 else box.y
        cv2.rectangle(
            frame,
            (left, badge_top),
            (left + text_width + 2 * pad, badge_top + badge_height),
            colour,
            cv2.FILLED,
        )
        cv2.putText(
            frame,
            text,
            (left + pad, badge_top + pad + text_height),
            font,
            scale,
            ink,
            text_thickness,
            cv2.LINE_AA,
        )
    return frame


def draw_status(frame: np.ndarray, text: str) -> np.ndarray:
    """Write a status line (e.g. ``12.5 fps``) at the top-left corner, in place, on a dark band."""
    height, width = frame.shape[:2]
    scale, thickness, _ = _style(height, width)
    font = cv2.FONT_HERSHEY_SIMPLEX
    (text_width, text_height), baseline = cv2.getTextSize(text, font, scale, thickness)
    pad = 4
    region = frame[: text_height + baseline + 2 * pad, : text_width + 2 * pad]
    region[:] = (region * 0.4).astype(np.uint8)  # darken rather than hide what is behind
    cv2.putText(frame, text, (pad, pad + text_height), font, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return frame


def probability_chart(
    probabilities: np.ndarray,
    classes: Sequence[str],
    title: str | None = None,
    width: int = 360,
    row_height: int = 26,
    order: ChannelOrder = "bgr",
) -> np.ndarray:
    """A horizontal bar chart of one face's class probabilities.

    Args:
        probabilities: One per class.
        classes: Class names.
        title: Heading; None for ``"<label> NN%"``.
        width: Image width in pixels.
        row_height: Pixels per class row.
        order: Channel order of the returned image.

    Returns:
        uint8 (H, width, 3) image on a white background.
    """
    font = cv2.FONT_HERSHEY_SIMPLEX
    header = row_height + 8
    height = header + row_height * len(classes) + 8
    chart = np.full((height, width, 3), 255, dtype=np.uint8)
    top = int(np.argmax(probabilities))
    heading = title if title is not None else label_text(probabilities, classes)
    cv2.putText(chart, heading, (8, row_height - 6), font, 0.6, (0, 0, 0), 2, cv2.LINE_AA)
    name_width = 8 + max(cv2.getTextSize(name, font, 0.5, 1)[0][0] for name in classes) + 8
    value_width = cv2.getTextSize("100%", font, 0.5, 1)[0][0] + 12
    bar_space = max(10, width - name_width - value_width)
    for row, (name, value) in enumerate(zip(classes, probabilities, strict=True)):
        y = header + row * row_height
        rgb = emotion_colour(name, "rgb")
        colour = rgb if order == "rgb" else rgb[::-1]
        weight = 2 if row == top else 1
        baseline_y = y + row_height // 2 + 5
        cv2.putText(chart, name, (8, baseline_y), font, 0.5, (0, 0, 0), weight, cv2.LINE_AA)
        cv2.rectangle(
            chart, (name_width, y + 4), (name_width + bar_space, y + row_height - 4), (235, 235, 235), -1
        )
        length = round(float(np.clip(value, 0.0, 1.0)) * bar_space)
        if length:
            cv2.rectangle(chart, (name_width, y + 4), (name_width + length, y + row_height - 4), colour, -1)
        percent = f"{float(value) * 100:.0f}%"
        cv2.putText(
            chart,
            percent,
            (name_width + bar_space + 6, baseline_y),
            font,
            0.5,
            (0, 0, 0),
            weight,
            cv2.LINE_AA,
        )
    return chart


def side_by_side(
    left: np.ndarray,
    right: np.ndarray,
    captions: tuple[str, str] = ("input", "STN aligned"),
    side: int = 192,
    order: ChannelOrder = "bgr",
) -> np.ndarray:
    """Two faces next to each other at the same size, captioned (the STN view).

    Args:
        left: uint8 face, gray (H, W) or colour (H, W, 3) in ``order``.
        right: The other face.
        captions: Text under each.
        side: Displayed side of each face in pixels (upscaled with bicubic interpolation).
        order: Channel order of colour inputs and of the result.

    Returns:
        uint8 (side + caption band, 2 * side + gap, 3) image.
    """
    gap, band = 8, 28
    canvas = np.full((side + band, 2 * side + gap, 3), 255, dtype=np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for column, (face, caption) in enumerate(zip((left, right), captions, strict=True)):
        colour = cv2.cvtColor(face, cv2.COLOR_GRAY2BGR) if face.ndim == 2 else face
        grown = cv2.resize(colour, (side, side), interpolation=cv2.INTER_CUBIC)
        x = column * (side + gap)
        canvas[:side, x : x + side] = grown
        (text_width, _), _ = cv2.getTextSize(caption, font, 0.5, 1)
        cv2.putText(
            canvas, caption, (x + (side - text_width) // 2, side + 19), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA
        )
    return canvas


def timeline_png(
    times: np.ndarray,
    probabilities: np.ndarray,
    classes: Sequence[str],
    title: str,
    size: tuple[float, float] = (8.0, 3.2),
    dpi: int = 100,
) -> bytes:
    """A plot of one face's (smoothed) class probabilities over time, as PNG bytes.

    Each emotion is a line in its colour; a strip along the bottom shows the winning emotion at
    each moment, so the changes summarised in text can be checked at a glance.

    Args:
        times: Seconds, shape (T,).
        probabilities: Shape (T, C).
        classes: Class names (C).
        title: Plot title.
        size: Figure size in inches.
        dpi: Resolution.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for index, name in enumerate(classes):
        colour = np.array(emotion_colour(name, "rgb")) / 255.0
        axes.plot(times, probabilities[:, index], color=colour, linewidth=1.4, label=name)
    if len(times):
        winners = probabilities.argmax(axis=1)
        strip = np.array([emotion_colour(classes[k], "rgb") for k in winners], dtype=np.uint8)[None]
        end = times[-1] if len(times) > 1 and times[-1] > times[0] else times[0] + 1.0
        axes.imshow(strip, extent=(times[0], end, -0.09, -0.03), aspect="auto", interpolation="nearest")
        axes.set_xlim(times[0], end)
    axes.set_ylim(-0.1, 1.0)
    axes.set_xlabel("time (s)")
    axes.set_ylabel("probability")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def encode_image(image: np.ndarray, suffix: str = ".png", quality: int = 90) -> bytes:
    """Encode a BGR (or gray) image with OpenCV (``.png`` or ``.jpg``).

    Raises:
        ValueError: OpenCV cannot encode it.
    """
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if suffix.lower() in (".jpg", ".jpeg") else []
    ok, encoded = cv2.imencode(suffix, image, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} image as {suffix}")
    return encoded.tobytes()


__all__ = [
    "EMOTION_COLOURS",
    "FaceOverlay",
    "draw_faces",
    "draw_status",
    "emotion_colour",
    "encode_image",
    "label_text",
    "probability_chart",
    "side_by_side",
    "text_colour",
    "timeline_png",
]
