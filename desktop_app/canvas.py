"""The views: a zoomable, pannable image view, and the canvas where the hole is painted.

All views share one ViewState (zoom and the image point at the view's centre), so the
previews follow the canvas. Mapping between widget and image coordinates goes through one
transform, used both to draw and to read the mouse, which is what keeps the brush accurate
at every zoom. Strokes are drawn with QPainter (round caps and joins, lines between mouse events)
into a Grayscale8 image of the photo's size; on release the touched rectangle becomes one undo
command. Paint events only blit ready-made images: no numpy work happens in them.
"""

from __future__ import annotations

import math

from PySide6.QtCore import QObject, QPoint, QPointF, QRect, QRectF, QSize, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QImage,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPen,
    QPixmap,
    QPolygonF,
    QTransform,
    QWheelEvent,
)
from PySide6.QtWidgets import QWidget

from desktop_app.document import Document
from desktop_app.qtimages import OVERLAY_COLOR, gray_view, new_overlay, paint_overlay, rgb_to_qimage
from desktop_app.settings import MAX_BRUSH_SIZE, MIN_BRUSH_SIZE

# Brush circles are polygons this close to the true circle (in image pixels), so a pixel
# is painted exactly when its centre lies within the brush, up to this tolerance.
BRUSH_CIRCLE_TOLERANCE = 0.002
MIN_ZOOM = 1 / 64
MAX_ZOOM = 32.0
WHEEL_ZOOM_STEP = 1.25
BACKGROUND = QColor(42, 42, 46)


def disk_polygon(center: QPointF, radius: float) -> QPolygonF:
    """A polygon within BRUSH_CIRCLE_TOLERANCE of the circle (QPainter's ellipses are
    Bezier approximations that can be a tenth of a pixel off)."""
    cosine = max(-1.0, 1.0 - BRUSH_CIRCLE_TOLERANCE / max(radius, 1e-6))
    count = max(16, min(4096, math.ceil(math.pi / math.acos(cosine))))
    cx, cy = center.x(), center.y()
    return QPolygonF([
        QPointF(cx + radius * math.cos(2 * math.pi * k / count),
                cy + radius * math.sin(2 * math.pi * k / count))
        for k in range(count)
    ])


def stroke_polygons(start: QPointF, end: QPointF, radius: float) -> list[QPolygonF]:
    """One piece of a round brush stroke: the disk at ``end`` and the band from ``start``.

    The disk at ``start`` was drawn with the previous piece; together the pieces are a
    line with round caps and round joins.
    """
    polygons = [disk_polygon(end, radius)]
    dx, dy = end.x() - start.x(), end.y() - start.y()
    length = math.hypot(dx, dy)
    if length > 0:
        nx, ny = -dy / length * radius, dx / length * radius
        polygons.append(QPolygonF([
            QPointF(start.x() + nx, start.y() + ny), QPointF(end.x() + nx, end.y() + ny),
            QPointF(end.x() - nx, end.y() - ny), QPointF(start.x() - nx, start.y() - ny),
        ]))
    return polygons


class ViewState(QObject):
    """Zoom and the image point shown at the centre of every view.

    ``zoom`` is the canvas's; a smaller view scales it by its size relative to
    ``reference_size`` (the canvas's size), so every view shows the same part of the photo.
    """

    changed = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.zoom = 1.0
        self.center = QPointF(0.0, 0.0)
        # Keep fitting the photo to the canvas on resize until the user zooms or pans.
        self.auto_fit = True
        self.reference_size = QSize()

    def set_reference_size(self, size: QSize) -> None:
        if size != self.reference_size:
            self.reference_size = QSize(size)
            self.changed.emit()

    def set(self, zoom: float, center: QPointF) -> None:
        zoom = min(max(float(zoom), MIN_ZOOM), MAX_ZOOM)
        if zoom == self.zoom and center == self.center:
            return
        self.zoom = zoom
        self.center = QPointF(center)
        self.changed.emit()


class ImageView(QWidget):
    """Draws an image under the shared ViewState; wheel zooms, middle-drag pans."""

    zoom_requested = Signal()

    def __init__(self, view_state: ViewState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.view_state = view_state
        self.view_state.changed.connect(self.update)
        self.image_size = QSize()  # size of the shown photo in image pixels
        self._pan_anchor: QPointF | None = None
        self.setMouseTracking(True)
        self.setMinimumSize(160, 120)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)

    # -- coordinates -----------------------------------------------------------------------
    def zoom_factor(self) -> float:
        """This view's zoom relative to the shared one (1 for the canvas)."""
        return 1.0

    def effective_zoom(self) -> float:
        return self.view_state.zoom * self.zoom_factor()

    def _offset(self) -> QPointF:
        """Where image point (0, 0) lands in the widget; whole pixels so 100 % is crisp."""
        zoom, center = self.effective_zoom(), self.view_state.center
        return QPointF(
            round(self.width() / 2 - center.x() * zoom),
            round(self.height() / 2 - center.y() * zoom),
        )

    def image_transform(self) -> QTransform:
        """Image coordinates -> widget coordinates."""
        offset = self._offset()
        zoom = self.effective_zoom()
        return QTransform(zoom, 0, 0, zoom, offset.x(), offset.y())

    def widget_to_image(self, pos: QPointF | QPoint) -> QPointF:
        """The image point under a mouse position (a widget pixel: its centre is +0.5)."""
        offset = self._offset()
        zoom = self.effective_zoom()
        return QPointF(
            (pos.x() + 0.5 - offset.x()) / zoom, (pos.y() + 0.5 - offset.y()) / zoom
        )

    def image_to_widget(self, point: QPointF) -> QPointF:
        """The widget position whose pixel centre shows ``point`` (inverse of the above)."""
        offset = self._offset()
        zoom = self.effective_zoom()
        return QPointF(point.x() * zoom + offset.x() - 0.5, point.y() * zoom + offset.y() - 0.5)

    def image_rect_to_widget(self, rect: QRectF) -> QRect:
        return self.image_transform().mapRect(rect).toAlignedRect().adjusted(-2, -2, 2, 2)

    # -- zoom and pan ----------------------------------------------------------------------
    def zoom_at(self, factor: float, anchor: QPointF | None = None) -> None:
        """Zoom by ``factor`` keeping the image point under ``anchor`` (widget) in place."""
        state = self.view_state
        if anchor is None:
            anchor = QPointF(self.width() / 2, self.height() / 2)
        image_point = self.widget_to_image(anchor)
        zoom = min(max(state.zoom * factor, MIN_ZOOM), MAX_ZOOM)
        own_zoom = zoom * self.zoom_factor()
        center = QPointF(
            image_point.x() - (anchor.x() + 0.5 - self.width() / 2) / own_zoom,
            image_point.y() - (anchor.y() + 0.5 - self.height() / 2) / own_zoom,
        )
        state.auto_fit = False
        state.set(zoom, center)

    def fit_zoom(self) -> float:
        if self.image_size.isEmpty():
            return 1.0
        return max(MIN_ZOOM, min(
            (self.width() - 8) / self.image_size.width(),
            (self.height() - 8) / self.image_size.height(),
        ))

    def fit_to_view(self) -> None:
        size = self.image_size
        self.view_state.auto_fit = True
        self.view_state.set(self.fit_zoom(), QPointF(size.width() / 2, size.height() / 2))

    def zoom_to(self, zoom: float, center: QPointF | None = None) -> None:
        """Set the zoom (1.0 = 100 %), keeping the centre unless one is given."""
        self.view_state.auto_fit = False
        self.view_state.set(zoom, self.view_state.center if center is None else center)

    def _start_pan(self, pos: QPointF) -> None:
        self._pan_anchor = QPointF(pos)
        self.setCursor(Qt.CursorShape.ClosedHandCursor)

    def _pan_to(self, pos: QPointF) -> None:
        assert self._pan_anchor is not None
        delta = pos - self._pan_anchor
        self._pan_anchor = QPointF(pos)
        own_zoom = self.effective_zoom()
        center = self.view_state.center
        self.view_state.auto_fit = False
        self.view_state.set(self.view_state.zoom,
                            QPointF(center.x() - delta.x() / own_zoom,
                                    center.y() - delta.y() / own_zoom))

    def _end_pan(self) -> None:
        self._pan_anchor = None
        self._update_cursor()

    def _update_cursor(self) -> None:
        self.setCursor(Qt.CursorShape.OpenHandCursor)

    # -- events ----------------------------------------------------------------------------
    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802 - Qt override
        steps = event.angleDelta().y() / 120.0
        if steps:
            self.zoom_at(WHEEL_ZOOM_STEP ** steps, event.position())
            self.zoom_requested.emit()
        event.accept()

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if event.button() in (Qt.MouseButton.MiddleButton, Qt.MouseButton.LeftButton):
            self._start_pan(event.position())
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if self._pan_anchor is not None:
            self._pan_to(event.position())
            event.accept()
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if self._pan_anchor is not None and not event.buttons():
            self._end_pan()
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def paint_background(self, painter: QPainter, rect: QRect) -> None:
        painter.fillRect(rect, BACKGROUND)

    def draw_placeholder(self, painter: QPainter, text: str) -> None:
        painter.setPen(QColor(170, 170, 176))
        painter.drawText(self.rect().adjusted(12, 12, -12, -12),
                         int(Qt.AlignmentFlag.AlignCenter) | int(Qt.TextFlag.TextWordWrap), text)

    def set_smoothing(self, painter: QPainter) -> None:
        """Smooth when zoomed out; show crisp pixels when zoomed in."""
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform,
                              self.effective_zoom() < 1.0)


class MaskCanvas(ImageView):
    """The main view: the photo, the hole overlay, the brush and eraser."""

    brush_size_changed = Signal(int)
    cursor_moved = Signal(QPointF)  # image coordinates, for the status bar

    def __init__(self, document: Document, view_state: ViewState,
                 parent: QWidget | None = None) -> None:
        super().__init__(view_state, parent)
        self.document = document
        self.brush_size = 40
        self.erase_mode = False  # the eraser tool; the right button erases either way
        self.show_original = False  # hides the overlay while the user flashes the original
        self.photo_pixmap: QPixmap | None = None
        self._overlay: QImage | None = None  # hole overlay, photo-sized, premultiplied ARGB
        self._stroke_image: QImage | None = None  # this stroke's pixels, Grayscale8
        self._stroke_erase = False
        self._stroke_last: QPointF | None = None
        self._stroke_box = QRect()
        self._space_held = False
        self._mouse_pos: QPointF | None = None
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setAcceptDrops(False)  # drops go to the main window
        document.photo_replaced.connect(self._on_photo_replaced)
        document.photo_changed.connect(self._on_photo_changed)
        document.mask_changed.connect(self._on_mask_changed)
        self._update_cursor()

    # -- document changes ------------------------------------------------------------------
    def _on_photo_replaced(self) -> None:
        self._cancel_stroke()
        photo = self.document.photo
        assert photo is not None and self.document.hole_mask is not None
        height, width = photo.shape[:2]
        self.image_size = QSize(width, height)
        self.photo_pixmap = QPixmap.fromImage(rgb_to_qimage(photo))
        self._overlay = new_overlay(width, height)
        paint_overlay(self._overlay, self.document.hole_mask, self._overlay.rect())
        self._stroke_image = QImage(width, height, QImage.Format.Format_Grayscale8)
        self._stroke_image.fill(0)
        self.fit_to_view()
        self._update_cursor()
        self.update()

    def _on_photo_changed(self, box: QRect) -> None:
        photo = self.document.photo
        if self.photo_pixmap is None or photo is None:
            return
        top, left = box.top(), box.left()
        patch = rgb_to_qimage(photo[top : top + box.height(), left : left + box.width()])
        painter = QPainter(self.photo_pixmap)
        painter.drawImage(box.topLeft(), patch)
        painter.end()
        self.update(self.image_rect_to_widget(QRectF(box)))

    def _on_mask_changed(self, box: QRect) -> None:
        if self._overlay is None or self.document.hole_mask is None:
            return
        paint_overlay(self._overlay, self.document.hole_mask, box)
        self.update(self.image_rect_to_widget(QRectF(box)))

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        self.view_state.set_reference_size(self.size())
        if self.view_state.auto_fit and self.photo_pixmap is not None:
            self.fit_to_view()

    # -- brush -----------------------------------------------------------------------------
    def set_brush_size(self, size: int) -> None:
        size = int(min(max(size, MIN_BRUSH_SIZE), MAX_BRUSH_SIZE))
        if size != self.brush_size:
            self.brush_size = size
            self.brush_size_changed.emit(size)
            self.update()

    def _begin_stroke(self, image_point: QPointF, erase: bool) -> None:
        self._stroke_erase = erase
        self._stroke_last = image_point
        self._stroke_box = QRect()
        self._draw_segment(image_point, image_point)

    def _draw_segment(self, start: QPointF, end: QPointF) -> None:
        """Draw one piece of the stroke into the stroke image and, for feedback, the overlay.

        Both get the same aliased polygons, so what is shown is what is recorded.
        """
        assert self._stroke_image is not None and self._overlay is not None
        radius = self.brush_size / 2
        polygons = stroke_polygons(start, end, radius)
        feedback = QColor(0, 0, 0, 0) if self._stroke_erase else OVERLAY_COLOR
        for target, color in ((self._stroke_image, QColor(255, 255, 255)),
                              (self._overlay, feedback)):
            painter = QPainter(target)
            # Source mode writes the colour as is: the eraser's transparent fill clears.
            painter.setCompositionMode(QPainter.CompositionMode.CompositionMode_Source)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(color)
            for polygon in polygons:
                painter.drawPolygon(polygon)
            painter.end()
        reach = radius + 2
        touched = QRectF(start, end).normalized().adjusted(-reach, -reach, reach, reach)
        box = touched.toAlignedRect().intersected(self._stroke_image.rect())
        self._stroke_box = self._stroke_box.united(box)
        self.update(self.image_rect_to_widget(touched))

    def _finish_stroke(self) -> None:
        """Turn the stroke's pixels into one undo command covering only its bounding box."""
        image, box = self._stroke_image, self._stroke_box
        mask = self.document.hole_mask
        self._stroke_last = None
        self._stroke_box = QRect()
        if image is None or mask is None or box.isEmpty():
            return
        top, left, bottom, right = box.top(), box.left(), box.bottom() + 1, box.right() + 1
        painted = gray_view(image)[top:bottom, left:right] > 0  # a copy; `image` is alive
        self._clear_stroke_image(box)
        before = mask[top:bottom, left:right]
        after = (before & ~painted) if self._stroke_erase else (before | painted)
        text = "Erase" if self._stroke_erase else "Brush stroke"
        if not self.document.edit_mask_region(top, left, after, text):
            self._on_mask_changed(box)  # nothing changed: drop the feedback drawn on the overlay

    def _cancel_stroke(self) -> None:
        if self._stroke_last is not None and not self._stroke_box.isEmpty():
            self._clear_stroke_image(self._stroke_box)
            self._on_mask_changed(self._stroke_box)
        self._stroke_last = None
        self._stroke_box = QRect()

    def _clear_stroke_image(self, box: QRect) -> None:
        assert self._stroke_image is not None
        painter = QPainter(self._stroke_image)
        painter.setCompositionMode(QPainter.CompositionMode.CompositionMode_Source)
        painter.fillRect(box, QColor(0, 0, 0))
        painter.end()

    @property
    def is_stroking(self) -> bool:
        return self._stroke_last is not None

    # -- events ----------------------------------------------------------------------------
    def _update_cursor(self) -> None:
        if self._pan_anchor is not None:
            self.setCursor(Qt.CursorShape.ClosedHandCursor)
        elif self._space_held:
            self.setCursor(Qt.CursorShape.OpenHandCursor)
        elif self.photo_pixmap is None:
            self.setCursor(Qt.CursorShape.ArrowCursor)
        else:
            self.setCursor(Qt.CursorShape.BlankCursor)  # the brush circle is the cursor

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        button = event.button()
        pos = event.position()
        if self.is_stroking or self._pan_anchor is not None:
            event.accept()  # a second button during a stroke or pan is ignored
            return
        if button == Qt.MouseButton.MiddleButton or (
            button == Qt.MouseButton.LeftButton and self._space_held
        ):
            self._start_pan(pos)
        elif self.photo_pixmap is not None and button in (
            Qt.MouseButton.LeftButton, Qt.MouseButton.RightButton
        ):
            erase = self.erase_mode or button == Qt.MouseButton.RightButton
            self._begin_stroke(self.widget_to_image(pos), erase)
        event.accept()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        pos = event.position()
        old_cursor = self._cursor_rect()
        self._mouse_pos = QPointF(pos)
        if self._pan_anchor is not None:
            self._pan_to(pos)
        elif self.is_stroking:
            assert self._stroke_last is not None
            point = self.widget_to_image(pos)
            self._draw_segment(self._stroke_last, point)
            self._stroke_last = point
        self.update(old_cursor)
        self.update(self._cursor_rect())
        if self.photo_pixmap is not None:
            self.cursor_moved.emit(self.widget_to_image(pos))
        event.accept()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if self._pan_anchor is not None and not (
            event.buttons() & (Qt.MouseButton.MiddleButton | Qt.MouseButton.LeftButton)
        ):
            self._end_pan()
        elif self.is_stroking and not (
            event.buttons() & (Qt.MouseButton.LeftButton | Qt.MouseButton.RightButton)
        ):
            self._finish_stroke()
        event.accept()

    def leaveEvent(self, event) -> None:  # noqa: N802
        old = self._cursor_rect()
        self._mouse_pos = None
        self.update(old)
        super().leaveEvent(event)

    def focusOutEvent(self, event) -> None:  # noqa: N802
        self._space_held = False
        self._update_cursor()
        super().focusOutEvent(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space_held = True
            self._update_cursor()
            event.accept()
            return
        if event.key() == Qt.Key.Key_Space:
            event.accept()
            return
        event.ignore()  # let the main window see the rest (e.g. hold-to-flash)

    def keyReleaseEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space_held = False
            self._update_cursor()
            event.accept()
            return
        event.ignore()

    def set_space_held(self, held: bool) -> None:
        """For tests and the screenshot script: same as holding the space bar."""
        self._space_held = held
        self._update_cursor()

    # -- painting --------------------------------------------------------------------------
    def _cursor_rect(self) -> QRect:
        if self._mouse_pos is None:
            return QRect()
        radius = self.brush_size * self.view_state.zoom / 2 + 4
        center = self._mouse_pos + QPointF(0.5, 0.5)
        return QRectF(center.x() - radius, center.y() - radius, 2 * radius, 2 * radius) \
            .toAlignedRect().adjusted(-2, -2, 2, 2)

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802
        painter = QPainter(self)
        self.paint_background(painter, event.rect())
        if self.photo_pixmap is None:
            self.draw_placeholder(
                painter,
                "Open a photo (Ctrl+O), drop one here, or paste one (Ctrl+V).\n\n"
                "Then paint over what should go and press Ctrl+Enter.",
            )
            painter.end()
            return
        painter.save()
        painter.setTransform(self.image_transform())
        self.set_smoothing(painter)
        painter.drawPixmap(0, 0, self.photo_pixmap)
        if self._overlay is not None and not self.show_original:
            painter.drawImage(0, 0, self._overlay)
        painter.restore()
        self._draw_brush_cursor(painter)
        painter.end()

    def _draw_brush_cursor(self, painter: QPainter) -> None:
        if self._mouse_pos is None or self._space_held or self._pan_anchor is not None:
            return
        center = self._mouse_pos + QPointF(0.5, 0.5)
        radius = self.brush_size * self.view_state.zoom / 2
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        for color, width in ((QColor(0, 0, 0, 200), 3.0), (QColor(255, 255, 255), 1.0)):
            painter.setPen(QPen(color, width))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            if radius >= 3:
                painter.drawEllipse(center, radius, radius)
            # A small cross marks the centre, and is the cursor when the circle is tiny.
            arm = 4 if radius >= 3 else 6
            painter.drawLine(center - QPointF(arm, 0), center + QPointF(arm, 0))
            painter.drawLine(center - QPointF(0, arm), center + QPointF(0, arm))
        if self.erase_mode:
            painter.setPen(QPen(QColor(255, 255, 255), 1.0))
            painter.drawText(center + QPointF(max(radius, 6) * 0.75 + 4, -4), "erase")

