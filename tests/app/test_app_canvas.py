"""Painting, erasing, undo/redo, grow/shrink, zoom and pan on the canvas."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, QRectF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication

BRUSH = 11
# The canvas draws brush circles as polygons within 0.002 px of the true circle, so only a
# pixel whose centre is this close to the brush's edge may go either way.
EDGE_BAND = 0.01


def capsule_pixels(shape: tuple[int, int], points: list[QPointF], diameter: float,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Pixels whose centre lies within diameter/2 of the polyline through ``points``.

    Also returns the distance of each centre to the polyline, to check the margin.
    """
    height, width = shape
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    distance = np.full(shape, np.inf)
    pts = [(p.x(), p.y()) for p in points]
    segments = list(zip(pts, pts[1:])) or [(pts[0], pts[0])]
    for (x0, y0), (x1, y1) in segments:
        dx, dy = x1 - x0, y1 - y0
        length2 = dx * dx + dy * dy
        t = np.zeros(shape) if length2 == 0 else np.clip(
            ((xs - x0) * dx + (ys - y0) * dy) / length2, 0.0, 1.0)
        distance = np.minimum(distance, np.hypot(xs - (x0 + t * dx), ys - (y0 + t * dy)))
    return distance <= diameter / 2, distance


def stroke(qtbot, canvas, points: list[QPoint], button=Qt.MouseButton.LeftButton) -> None:
    qtbot.mousePress(canvas, button, pos=points[0])
    for point in points[1:]:
        qtbot.mouseMove(canvas, point)
    qtbot.mouseRelease(canvas, button, pos=points[-1])


def set_zoom_two(canvas) -> tuple[float, float]:
    """Zoom 200 % with the photo centred; returns where image (0, 0) lands in the widget."""
    canvas.zoom_to(2.0, QPointF(64.0, 48.0))
    origin_x = round(canvas.width() / 2 - 64.0 * 2)
    origin_y = round(canvas.height() / 2 - 48.0 * 2)
    return origin_x, origin_y


def image_point(origin: tuple[float, float], widget: QPoint, zoom: float = 2.0) -> QPointF:
    """Independent of the canvas: the centre of widget pixel ``widget`` in image coordinates."""
    return QPointF((widget.x() + 0.5 - origin[0]) / zoom, (widget.y() + 0.5 - origin[1]) / zoom)


def widget_pos(origin: tuple[float, float], x: float, y: float, zoom: float = 2.0) -> QPoint:
    return QPoint(round(origin[0] + x * zoom), round(origin[1] + y * zoom))


def test_stroke_sets_exactly_the_brush_pixels_and_undo_redo_restore_them(window, qtbot):
    canvas, document = window.canvas, window.document
    canvas.set_brush_size(BRUSH)
    origin = set_zoom_two(canvas)
    widget_points = [widget_pos(origin, x, y) for x, y in
                     ((20, 30), (34, 33), (52, 41), (60, 58), (61, 70))]
    stroke(qtbot, canvas, widget_points)

    image_points = [image_point(origin, p) for p in widget_points]
    for p, q in zip(widget_points, image_points):
        mapped = canvas.widget_to_image(p)
        assert (mapped.x(), mapped.y()) == pytest.approx((q.x(), q.y()))
    expected, distance = capsule_pixels(document.hole_mask.shape, image_points, BRUSH)
    clear_cut = np.abs(distance - BRUSH / 2) >= EDGE_BAND
    assert np.array_equal(document.hole_mask[clear_cut], expected[clear_cut])
    assert (~clear_cut).sum() <= 8  # centres (almost) exactly on the edge
    painted = document.hole_mask.copy()
    assert document.undo_stack.count() == 1
    patch = document.undo_stack.command(0).patch
    assert patch.after.size < document.hole_mask.size  # only the stroke's bounding box

    document.undo_stack.undo()
    assert not document.hole_mask.any()
    document.undo_stack.redo()
    assert np.array_equal(document.hole_mask, painted)


def test_stroke_at_100_percent_through_pixel_centres_is_exact(window, qtbot):
    """At 100 % every mouse position is a pixel centre, and a brush of 11 keeps every
    centre at least 0.1 px from its edge: no tolerance at all."""
    canvas, document = window.canvas, window.document
    canvas.set_brush_size(BRUSH)
    canvas.zoom_to(1.0, QPointF(64, 48))
    origin = (round(canvas.width() / 2 - 64), round(canvas.height() / 2 - 48))
    widget_points = [widget_pos(origin, x, y, zoom=1.0) for x, y in
                     ((20, 30), (50, 30), (50, 70), (90, 70))]
    stroke(qtbot, canvas, widget_points)
    image_points = [image_point(origin, p, zoom=1.0) for p in widget_points]
    assert (image_points[0].x(), image_points[0].y()) == (20.5, 30.5)
    expected, distance = capsule_pixels(document.hole_mask.shape, image_points, BRUSH)
    assert np.abs(distance - BRUSH / 2).min() > 0.1
    assert np.array_equal(document.hole_mask, expected)


def test_eraser_and_right_button_clear_what_they_touch(window, qtbot):
    canvas, document = window.canvas, window.document
    canvas.set_brush_size(BRUSH)
    origin = set_zoom_two(canvas)
    paint = [widget_pos(origin, x, 48) for x in (10, 60, 110)]
    stroke(qtbot, canvas, paint)
    painted = document.hole_mask.copy()
    assert painted.sum() > 500

    right = [widget_pos(origin, 30, y) for y in (35, 48, 62)]
    stroke(qtbot, canvas, right, Qt.MouseButton.RightButton)
    erased, _ = capsule_pixels(painted.shape, [image_point(origin, p) for p in right], BRUSH)
    assert np.array_equal(document.hole_mask, painted & ~erased)

    window.eraser_action.trigger()
    assert canvas.erase_mode
    left = [widget_pos(origin, 90, y) for y in (35, 62)]
    stroke(qtbot, canvas, left)
    erased2, _ = capsule_pixels(painted.shape, [image_point(origin, p) for p in left], BRUSH)
    assert np.array_equal(document.hole_mask, painted & ~erased & ~erased2)

    document.undo_stack.undo()
    document.undo_stack.undo()
    assert np.array_equal(document.hole_mask, painted)
    assert document.undo_stack.undoText() == "Brush stroke"


def assert_click_paints_a_dab(canvas, document, qtbot, origin) -> None:
    """A click at image pixel (40, 40) paints exactly the brush's round dab there (pixels
    within EDGE_BAND of the circle's edge may go either way)."""
    click = widget_pos(origin, 40, 40)
    qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=click)
    expected, distance = capsule_pixels(document.hole_mask.shape, [image_point(origin, click)],
                                        BRUSH)
    clear_cut = np.abs(distance - BRUSH / 2) >= EDGE_BAND
    assert np.array_equal(document.hole_mask[clear_cut], expected[clear_cut])


def test_single_click_paints_a_round_dab(window, qtbot):
    canvas, document = window.canvas, window.document
    canvas.set_brush_size(BRUSH)
    origin = set_zoom_two(canvas)
    assert_click_paints_a_dab(canvas, document, qtbot, origin)


def test_overlay_shows_the_hole_over_the_photo(window, qtbot):
    canvas = window.canvas
    canvas.set_brush_size(BRUSH)
    origin = set_zoom_two(canvas)
    before = canvas.grab().toImage()
    stroke(qtbot, canvas, [widget_pos(origin, x, 48) for x in (30, 90)])
    canvas._mouse_pos = None  # leave the brush circle out of the picture
    after = canvas.grab().toImage()
    spot = widget_pos(origin, 60, 48)
    old, new = before.pixelColor(spot), after.pixelColor(spot)
    assert new.red() > old.red() and new.green() < old.green()  # tinted red, not replaced
    assert new.green() > 0
    outside = widget_pos(origin, 60, 20)
    assert before.pixelColor(outside) == after.pixelColor(outside)


def test_grow_shrink_and_clear_change_the_hole_as_expected(window):
    document = window.document
    square = np.zeros_like(document.hole_mask)
    square[30:50, 40:60] = True
    document.edit_mask(square, "square")
    window.grow_spin.setValue(3)
    window.grow_action.trigger()
    assert document.hole_pixels == 26 * 26
    assert document.hole_mask[27:53, 37:63].all()
    document.undo_stack.undo()
    window.shrink_action.trigger()
    assert document.hole_pixels == 14 * 14
    assert document.hole_mask[33:47, 43:57].all()
    window.clear_mask_action.trigger()
    assert document.hole_pixels == 0
    document.undo_stack.undo()
    assert document.hole_pixels == 14 * 14
    document.undo_stack.undo()
    assert np.array_equal(document.hole_mask, square)


def test_wheel_zoom_keeps_the_point_under_the_cursor(window):
    canvas = window.canvas
    canvas.zoom_to(1.0, QPointF(64, 48))
    pos = QPointF(canvas.width() / 2 + 37, canvas.height() / 2 - 21)
    under = canvas.widget_to_image(pos)
    event = QWheelEvent(pos, canvas.mapToGlobal(pos), QPoint(), QPoint(0, 240),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier,
                        Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(canvas, event)
    assert canvas.view_state.zoom == pytest.approx(1.25 ** 2)
    after = canvas.widget_to_image(pos)
    assert abs(after.x() - under.x()) <= 1 / canvas.view_state.zoom
    assert abs(after.y() - under.y()) <= 1 / canvas.view_state.zoom
    assert window.zoom_label.text() == "Zoom: 156 %"


def test_pan_with_space_drag_and_middle_button_keeps_the_brush_accurate(window, qtbot):
    canvas, document = window.canvas, window.document
    canvas.set_brush_size(BRUSH)
    set_zoom_two(canvas)
    center = canvas.view_state.center
    start = QPoint(canvas.width() // 2, canvas.height() // 2)
    qtbot.keyPress(canvas, Qt.Key.Key_Space)
    stroke(qtbot, canvas, [start, start + QPoint(20, 10), start + QPoint(40, 20)])
    qtbot.keyRelease(canvas, Qt.Key.Key_Space)
    assert not document.hole_mask.any()  # panning never paints
    moved = canvas.view_state.center
    assert (moved.x(), moved.y()) == pytest.approx((center.x() - 20, center.y() - 10))

    stroke(qtbot, canvas, [start, start + QPoint(-30, 0)], Qt.MouseButton.MiddleButton)
    moved = canvas.view_state.center
    assert (moved.x(), moved.y()) == pytest.approx((center.x() - 5, center.y() - 10))
    assert not document.hole_mask.any()

    # After panning, a click lands exactly on the image pixel shown under the cursor.
    origin = (round(canvas.width() / 2 - moved.x() * 2),
              round(canvas.height() / 2 - moved.y() * 2))
    assert_click_paints_a_dab(canvas, document, qtbot, origin)


def test_brush_size_keys_slider_and_settings(window, qtbot, settings):
    canvas = window.canvas
    canvas.set_brush_size(40)
    window.bigger_brush_action.trigger()
    assert canvas.brush_size == 46
    window.smaller_brush_action.trigger()
    assert canvas.brush_size < 46
    assert [s.toString() for s in window.bigger_brush_action.shortcuts()] == ["]"]
    assert [s.toString() for s in window.smaller_brush_action.shortcuts()] == ["["]
    window.brush_slider.setValue(25)
    assert canvas.brush_size == 25
    assert settings.brush_size == 25
    assert window.brush_label.text().strip() == "25 px"


def test_fit_and_actual_size(window):
    canvas = window.canvas
    window.actual_size_action.trigger()
    assert canvas.view_state.zoom == 1.0
    window.fit_action.trigger()
    assert canvas.view_state.zoom == pytest.approx(canvas.fit_zoom())
    assert canvas.view_state.zoom > 1.0  # the 128 x 96 test photo is enlarged to fit


def test_previews_follow_the_canvas_view(window):
    """Zoom and pan on the canvas: each preview shows the same part of the photo, scaled."""
    canvas = window.canvas
    canvas.zoom_to(3.0, QPointF(20, 30))
    visible, _ = canvas.image_transform().inverted()
    canvas_region = visible.mapRect(QRectF(canvas.rect()))
    for panel in (window.raw_panel, window.composite_panel):
        view = panel.view
        assert view.view_state is canvas.view_state
        shown = view.widget_to_image(QPointF(view.width() / 2, view.height() / 2))
        assert abs(shown.x() - 20) <= 1 and abs(shown.y() - 30) <= 1
        assert view.effective_zoom() < 3.0  # the previews are narrower than the canvas
        on_preview = view.image_transform().mapRect(canvas_region)
        assert on_preview.left() >= -2 and on_preview.right() <= view.width() + 2
        assert on_preview.top() >= -2 and on_preview.bottom() <= view.height() + 2
        assert (abs(on_preview.width() - view.width()) <= 2
                or abs(on_preview.height() - view.height()) <= 2)
