"""The two result previews (raw network output, composite), following the canvas's view."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRect, QSize, Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPaintEvent, QPixmap
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from desktop_app.canvas import ImageView, ViewState
from desktop_app.qtimages import rgb_to_qimage


class PreviewView(ImageView):
    """Shows one result image under the shared ViewState: the same part of the photo as the
    canvas, scaled to fit. Dragging or the wheel here moves every view."""

    def __init__(self, title: str, placeholder: str, view_state: ViewState,
                 parent: QWidget | None = None) -> None:
        super().__init__(view_state, parent)
        self.title = title
        self.placeholder = placeholder
        self.pixels: np.ndarray | None = None  # the shown result, for tests and saving
        self.pixmap: QPixmap | None = None
        self.original: QPixmap | None = None  # shown while the user flashes the original
        self.show_original = False
        self.outdated = False
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self._update_cursor()

    def zoom_factor(self) -> float:
        """Show what the canvas shows: its view, scaled down to fit this smaller widget."""
        reference = self.view_state.reference_size
        if reference.isEmpty():
            return 1.0
        return min(self.width() / reference.width(), self.height() / reference.height())

    def set_result(self, pixels: np.ndarray | None) -> None:
        """Show ``pixels`` ((H, W, 3) uint8, GUI thread only: builds a QPixmap)."""
        self.pixels = pixels
        self.pixmap = None if pixels is None else QPixmap.fromImage(rgb_to_qimage(pixels))
        if pixels is not None:
            self.image_size = QSize(pixels.shape[1], pixels.shape[0])
        self.outdated = False
        self.update()

    def set_original(self, pixmap: QPixmap | None) -> None:
        self.original = pixmap
        if pixmap is not None:
            self.image_size = pixmap.size()
        self.update()

    def set_outdated(self, outdated: bool) -> None:
        if outdated != self.outdated:
            self.outdated = outdated
            self.update()

    def set_show_original(self, show: bool) -> None:
        if show != self.show_original:
            self.show_original = show
            self.update()

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt override
        painter = QPainter(self)
        self.paint_background(painter, event.rect())
        shown = self.original if self.show_original else self.pixmap
        if shown is None:
            self.draw_placeholder(painter, self.placeholder)
            painter.end()
            return
        painter.save()
        painter.setTransform(self.image_transform())
        self.set_smoothing(painter)
        painter.drawPixmap(0, 0, shown)
        painter.restore()
        badge = "original" if self.show_original else ("outdated: mask changed"
                                                       if self.outdated else "")
        if badge:
            self._draw_badge(painter, badge)
        painter.end()

    def _draw_badge(self, painter: QPainter, text: str) -> None:
        font = QFont(painter.font())
        font.setBold(True)
        painter.setFont(font)
        metrics = painter.fontMetrics()
        rect = QRect(8, 8, metrics.horizontalAdvance(text) + 16, metrics.height() + 8)
        painter.fillRect(rect, QColor(0, 0, 0, 170))
        painter.setPen(QColor(255, 210, 90) if text != "original" else QColor(255, 255, 255))
        painter.drawText(rect, int(Qt.AlignmentFlag.AlignCenter), text)


class PreviewPanel(QWidget):
    """A title above a PreviewView."""

    def __init__(self, title: str, placeholder: str, view_state: ViewState,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.label = QLabel(title)
        self.label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        font = QFont(self.label.font())
        font.setBold(True)
        self.label.setFont(font)
        self.view = PreviewView(title, placeholder, view_state)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.label)
        layout.addWidget(self.view, 1)
