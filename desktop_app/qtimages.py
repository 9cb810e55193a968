"""Moving pixels between numpy arrays and Qt images without sharing memory by accident.

qimage2ndarray's views do not keep their QImage alive, so every helper here either copies
out of the view before returning or is handed a QImage that the caller keeps referenced.
(desktop_app/__init__.py sets QT_DRIVER before qimage2ndarray is first imported.)
"""

from __future__ import annotations

import numpy as np
import qimage2ndarray
from PySide6.QtCore import QRect
from PySide6.QtGui import QColor, QImage, QPainter

# The hole overlay: a semi-transparent red that reads well on most photos.
OVERLAY_COLOR = QColor(255, 48, 48, 140)


def rgb_to_qimage(pixels: np.ndarray) -> QImage:
    """(H, W, 3) uint8 RGB -> a QImage that owns a copy of the pixels."""
    arr = np.ascontiguousarray(pixels, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) uint8 pixels, got {arr.shape}")
    height, width = arr.shape[:2]
    image = QImage(arr.data, width, height, 3 * width, QImage.Format.Format_RGB888)
    return image.copy()  # detach from the numpy buffer, which may go away


def qimage_to_rgb(image: QImage) -> np.ndarray:
    """Any QImage (e.g. from the clipboard) -> an owned (H, W, 3) uint8 RGB array.

    Transparent pixels are composited on white, like core.imageio does for RGBA files.
    """
    if image.isNull():
        raise ValueError("the image is empty")
    if image.hasAlphaChannel():
        flat = QImage(image.size(), QImage.Format.Format_RGB32)
        flat.fill(QColor(255, 255, 255))
        painter = QPainter(flat)
        painter.drawImage(0, 0, image)
        painter.end()
        converted = flat
    else:
        converted = image.convertToFormat(QImage.Format.Format_RGB32)
    rgb = qimage2ndarray.rgb_view(converted).copy()  # `converted` stays alive until here
    return rgb


def gray_view(image: QImage) -> np.ndarray:
    """A (H, W) uint8 view of a Format_Grayscale8 image; the caller keeps ``image`` alive."""
    return qimage2ndarray.raw_view(image)


def new_overlay(width: int, height: int) -> QImage:
    """A transparent premultiplied ARGB image the size of the photo, for the hole overlay."""
    overlay = QImage(width, height, QImage.Format.Format_ARGB32_Premultiplied)
    overlay.fill(0)
    return overlay


def _premultiplied_bgra(color: QColor) -> np.ndarray:
    """The in-memory bytes of one ARGB32_Premultiplied pixel (little-endian: B, G, R, A)."""
    alpha = color.alpha()
    def premul(c: int) -> int:
        return (c * alpha + 127) // 255

    return np.array(
        [premul(color.blue()), premul(color.green()), premul(color.red()), alpha], dtype=np.uint8
    )


def paint_overlay(overlay: QImage, hole_mask: np.ndarray, box: QRect) -> None:
    """Redraw the overlay inside ``box`` (image pixels) from the bool hole mask."""
    box = box.intersected(overlay.rect())
    if box.isEmpty():
        return
    top, left = box.top(), box.left()
    bottom, right = top + box.height(), left + box.width()
    view = qimage2ndarray.byte_view(overlay)  # (H, W, 4) view; `overlay` is the caller's
    region = hole_mask[top:bottom, left:right]
    view[top:bottom, left:right] = np.where(
        region[..., None], _premultiplied_bgra(OVERLAY_COLOR), np.uint8(0)
    )


def bounding_rect(changed: np.ndarray) -> QRect:
    """The smallest QRect holding every True pixel of ``changed`` (empty if none)."""
    rows = np.flatnonzero(changed.any(axis=1))
    if rows.size == 0:
        return QRect()
    cols = np.flatnonzero(changed.any(axis=0))
    return QRect(int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1),
                 int(rows[-1] - rows[0] + 1))
