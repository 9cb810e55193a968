"""The document model, undo commands and settings, without any window."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QSettings

from desktop_app.commands import diff_patch
from desktop_app.document import Document
from desktop_app.settings import AppSettings


def test_diff_patch_holds_only_the_changed_box():
    old = np.zeros((50, 60), dtype=bool)
    new = old.copy()
    new[10:13, 20:30] = True
    new[15, 22] = True
    patch = diff_patch(old, new)
    assert (patch.top, patch.left, patch.after.shape) == (10, 20, (6, 10))
    assert not patch.before.any() and patch.after.sum() == 31
    assert diff_patch(old, old.copy()) is None
    rgb_old = np.zeros((4, 5, 3), np.uint8)
    rgb_new = rgb_old.copy()
    rgb_new[2, 3, 1] = 9
    patch = diff_patch(rgb_old, rgb_new)
    assert (patch.top, patch.left, patch.after.shape) == (2, 3, (1, 1, 3))


def test_document_history_revisions_and_signals(qtbot):
    document = Document()
    changed = []
    document.mask_changed.connect(lambda rect: changed.append(rect.getRect()))
    photo = np.full((20, 30, 3), 100, np.uint8)
    document.replace_photo(photo)
    assert document.photo is not photo  # the document owns its pixels
    start = document.revision
    mask = np.zeros((20, 30), bool)
    mask[2:5, 3:9] = True
    assert document.edit_mask(mask, "hole")
    assert not document.edit_mask(mask, "same again")  # no change, no history entry
    assert document.undo_stack.count() == 1
    assert changed == [(3, 2, 6, 3)]
    assert document.revision == start + 1
    document.undo_stack.undo()
    assert document.revision == start + 2 and not document.hole_mask.any()

    composite = photo.copy()
    composite[2:5, 3:9] = 7
    document.undo_stack.redo()
    assert document.accept_result(composite)
    assert document.is_photo_modified
    document.mark_saved()
    assert not document.is_photo_modified
    document.undo_stack.undo()
    assert document.is_photo_modified  # the saved file holds the accepted result
    document.undo_stack.redo()
    assert not document.is_photo_modified

    document.replace_photo(np.zeros((5, 5, 3), np.uint8))
    assert document.undo_stack.count() == 0 and document.hole_mask.shape == (5, 5)


def test_settings_survive_garbage(tmp_path):
    qsettings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    qsettings.setValue("brush/size", "huge")
    qsettings.setValue("model/device", "tpu")
    qsettings.setValue("files/recent", "/only/one.png")
    qsettings.setValue("files/last_folder", str(tmp_path / "gone"))
    settings = AppSettings(qsettings)
    assert settings.brush_size == 40
    assert settings.device == "auto"
    assert settings.recent_files == ["/only/one.png"]
    assert settings.last_folder != str(tmp_path / "gone")
    settings.brush_size = 10_000
    assert settings.brush_size == 500
