"""Opening (dialog-free paths, drop, paste, command line), saving, mask files, settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent, QGuiApplication
from PySide6.QtWidgets import QApplication

from core.imageio import load_image
from core.masks import load_mask
from desktop_app.qtimages import rgb_to_qimage


def square_hole(shape, top, left, size):
    hole = np.zeros(shape, dtype=bool)
    hole[top : top + size, left : left + size] = True
    return hole


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def test_a_corrupt_file_shows_an_error_and_keeps_everything(window, dialogs, tmp_path):
    document = window.document
    document.edit_mask(square_hole((96, 128), 5, 5, 10), "hole")
    photo, mask = document.photo.copy(), document.hole_mask.copy()
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    assert not window.open_path(bad)
    assert len(dialogs.errors) == 1 and "broken.jpg" in dialogs.errors[0][1]
    assert np.array_equal(document.photo, photo) and np.array_equal(document.hole_mask, mask)
    assert document.undo_stack.count() == 1
    assert document.source_path.name == "photo.png"


def test_a_missing_recent_file_is_reported_and_forgotten(window, settings, dialogs, tmp_path):
    gone = tmp_path / "gone.png"
    Image.new("RGB", (8, 8)).save(gone)
    assert window.open_path(gone)
    gone.unlink()
    assert str(gone.resolve()) in settings.recent_files
    assert not window.open_path(gone)
    assert "file not found" in dialogs.errors[0][1]
    assert str(gone.resolve()) not in settings.recent_files


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16", "P"])
def test_grey_alpha_16_bit_and_palette_photos_open_as_rgb(window, tmp_path, mode):
    path = tmp_path / f"odd-{mode.replace(';', '')}.png"
    if mode == "I;16":
        Image.fromarray((np.arange(40 * 30).reshape(30, 40) * 50).astype(np.uint16)).save(path)
    else:
        Image.new("RGB", (40, 30), (200, 30, 90)).convert(mode).save(path)
    assert window.open_path(path)
    assert window.document.photo.shape == (30, 40, 3)


def test_exif_orientation_is_applied(window, tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    Image.new("RGB", (40, 20), (10, 200, 10)).save(path, exif=exif.tobytes())
    assert window.open_path(path)
    assert window.document.photo.shape == (40, 20, 3)


def test_saving_the_composite_round_trips_and_keeps_exif_and_icc(make_window, tmp_path, qtbot,
                                                                photo_maker):
    source = tmp_path / "holiday.jpg"
    icc = srgb_icc()  # once: the profile records its creation time
    exif = Image.Exif()
    exif[0x010F] = "TestCam"  # Make
    Image.fromarray(photo_maker()).save(source, quality=95, exif=exif.tobytes(),
                                        icc_profile=icc, dpi=(240, 240))
    window = make_window(photo=source)
    window.document.edit_mask(square_hole((96, 128), 20, 20, 30), "hole")
    assert window.run_inpaint() is not None
    qtbot.waitUntil(lambda: window.has_current_result, timeout=20_000)
    composite = window.result.composite

    png = tmp_path / "out.png"
    assert window.save_to(png)
    assert np.array_equal(load_image(png).pixels, composite)

    jpeg = tmp_path / "out.jpg"
    assert window.save_to(jpeg)
    with Image.open(jpeg) as saved:
        assert saved.format == "JPEG"
        assert saved.info.get("icc_profile") == icc
        assert saved.getexif().get(0x010F) == "TestCam"
        assert tuple(round(v) for v in saved.info["dpi"]) == (240, 240)

    assert window.save_to(tmp_path / "no-extension")
    assert (tmp_path / "no-extension.png").is_file()

    # A format without room for the metadata still saves, and says what it left out.
    assert window.save_to(tmp_path / "out.bmp")
    assert "BMP cannot hold the photo's colour profile or EXIF data" in (
        window.statusBar().currentMessage())


def test_the_opened_file_is_never_overwritten_without_confirmation(window, dialogs):
    source = window.document.source_path
    before = source.read_bytes()
    window.document.edit_mask(square_hole((96, 128), 20, 20, 30), "hole")
    dialogs.confirm = False
    assert not window.save_to(source)
    assert source.read_bytes() == before
    assert "photo you opened" in dialogs.questions[-1][1]
    dialogs.confirm = True
    assert window.save_to(source)
    assert len(dialogs.questions) == 2


def test_saving_the_accepted_photo_marks_it_saved(window, qtbot, tmp_path):
    window.document.edit_mask(square_hole((96, 128), 20, 20, 30), "hole")
    window.run_inpaint()
    qtbot.waitUntil(lambda: window.has_current_result, timeout=20_000)
    window.accept_result()
    assert window.document.is_photo_modified
    assert window.save_to(tmp_path / "accepted.png")
    assert not window.document.is_photo_modified


def test_closing_with_unsaved_accepted_results_asks_first(window, qtbot, dialogs):
    window.document.edit_mask(square_hole((96, 128), 20, 20, 30), "hole")
    window.run_inpaint()
    qtbot.waitUntil(lambda: window.has_current_result, timeout=20_000)
    window.accept_result()
    dialogs.confirm = False
    assert not window.close()
    assert window.isVisible() and dialogs.questions
    dialogs.confirm = True
    assert window.close()


def test_mask_export_and_import_round_trip(window, dialogs, tmp_path):
    document = window.document
    hole = square_hole((96, 128), 11, 17, 23)
    hole[60:70, 90:120] = True
    document.edit_mask(hole, "hole")
    assert window.export_mask_to(tmp_path / "mask")  # .png is added
    saved = tmp_path / "mask.png"
    with Image.open(saved) as img:
        assert img.format == "PNG" and img.mode == "L"
    assert np.array_equal(load_mask(saved), hole)

    window.clear_mask()
    assert window.import_mask_from(saved)
    assert np.array_equal(document.hole_mask, hole)
    document.undo_stack.undo()
    assert not document.hole_mask.any()

    wrong = tmp_path / "wrong.png"
    Image.new("L", (10, 10), 255).save(wrong)
    assert not window.import_mask_from(wrong)
    assert "does not match" in dialogs.errors[-1][1] or "10 x 10" in dialogs.errors[-1][1]
    assert not document.hole_mask.any()
    # the photo itself, picked by mistake: its bright half is no hole
    assert not window.import_mask_from(document.source_path)
    assert "is the photo itself, not a mask" in dialogs.errors[-1][1]
    assert not document.hole_mask.any()


def test_recent_files_menu_lists_and_reopens(window, settings, tmp_path, photo_maker):
    second = tmp_path / "second.png"
    Image.fromarray(photo_maker(40, 60, seed=1)).save(second)
    assert window.open_path(second)
    first_entry, second_entry = settings.recent_files[:2]
    assert Path(first_entry).name == "second.png" and Path(second_entry).name == "photo.png"
    window._fill_recent_menu()
    actions = [a for a in window.recent_menu.actions() if a.toolTip().endswith(".png")]
    assert [Path(a.toolTip()).name for a in actions] == ["second.png", "photo.png"]
    actions[1].trigger()
    assert window.document.source_path.name == "photo.png"


def test_paste_an_image_from_the_clipboard(window, photo_maker):
    pixels = photo_maker(30, 50, seed=5)
    QGuiApplication.clipboard().setImage(rgb_to_qimage(pixels))
    window.paste_action.trigger()
    assert np.array_equal(window.document.photo, pixels)
    assert window.document.source_path is None
    assert window.windowTitle().startswith("Pasted image")


def test_drop_a_file_on_the_window(window, tmp_path, photo_maker):
    dropped = tmp_path / "dropped.png"
    Image.fromarray(photo_maker(20, 30, seed=6)).save(dropped)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(dropped))])
    event = QDropEvent(QPointF(50, 50), Qt.DropAction.CopyAction, mime,
                       Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)
    assert window.document.source_path == dropped
    assert window.document.photo.shape == (20, 30, 3)


def test_command_line_opens_the_image(monkeypatch, photo_file, tiny_model_path):
    from desktop_app import __main__ as entry
    from desktop_app.main_window import MainWindow

    seen: dict[str, object] = {}

    def fake_exec(self=None):
        windows = [w for w in QApplication.topLevelWidgets()
                   if isinstance(w, MainWindow) and w.isVisible()]  # other tests' are closed
        seen["source"] = [w.document.source_path for w in windows]
        return 0

    monkeypatch.setattr(QApplication, "exec", fake_exec)
    code = entry.main([str(photo_file), "--checkpoint", str(tiny_model_path),
                       "--device", "cpu"])
    assert code == 0
    assert seen == {"source": [photo_file]}


def test_settings_persist_between_windows(make_window, settings, photo_file):
    first = make_window(photo=photo_file)
    first.canvas.set_brush_size(77)
    first.grow_spin.setValue(9)
    first.set_device("cpu")
    first.close()
    second = make_window(photo=photo_file)
    assert second.canvas.brush_size == 77
    assert second.grow_spin.value() == 9
    assert settings.device == "cpu" and second.device_actions["cpu"].isChecked()
    assert settings.last_folder == str(photo_file.parent.resolve())


def test_pasted_rgba_image_is_flattened_on_white(window):
    from PySide6.QtGui import QColor, QImage

    image = QImage(4, 3, QImage.Format.Format_ARGB32)
    image.fill(QColor(0, 0, 0, 0))
    QGuiApplication.clipboard().setImage(image)
    assert window.paste_from_clipboard()
    assert (window.document.photo == 255).all()
