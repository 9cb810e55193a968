"""Model loads that overlap or fail, and saving mistakes (found by an audit of user flows)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from PySide6.QtCore import QMimeData, QPointF, Qt
from PySide6.QtGui import QDropEvent, QImage

from core.checkpoint import save_model_file
from core.model import PConvUNet


def _square(shape: tuple[int, int], top: int, left: int, size: int) -> np.ndarray:
    hole = np.zeros(shape, dtype=bool)
    hole[top : top + size, left : left + size] = True
    return hole


def _junk(path: Path) -> Path:
    path.write_bytes(b"this is not a model")
    return path


# == model loads ===========================================================================
def test_the_file_that_loaded_is_remembered_not_the_last_one_asked_for(
        window, qtbot, settings, dialogs, tmp_path):
    good = tmp_path / "good.safetensors"
    save_model_file(good, PConvUNet(layers=5, width=8))
    bad = _junk(tmp_path / "bad.safetensors")
    window.load_checkpoint(good)
    window.load_checkpoint(bad)  # before the first has loaded
    qtbot.waitUntil(lambda: not window.model_loading, timeout=10_000)
    assert window.model_info.layers == 5
    assert settings.model_path == str(good)  # the next launch gets a model
    assert len(dialogs.errors) == 1 and "bad.safetensors" in dialogs.errors[0][1]


def test_a_saved_model_that_no_longer_loads_falls_back_to_the_shipped_one(
        make_window, qtbot, settings, dialogs, tmp_path, monkeypatch, tiny_model_path):
    resources = tmp_path / "resources"
    (resources / "model").mkdir(parents=True)
    shutil.copy(tiny_model_path, resources / "model" / "pconv_unet.safetensors")
    monkeypatch.setenv("PCONV_RESOURCES", str(resources))
    settings.model_path = str(_junk(tmp_path / "corrupted.safetensors"))
    window = make_window(checkpoint=None)
    qtbot.waitUntil(lambda: window.model_info is not None, timeout=10_000)
    assert Path(window.model_info.source).name == "pconv_unet.safetensors"
    assert settings.model_path == "" and not dialogs.errors
    assert "could not be loaded" in window.statusBar().currentMessage()


def test_a_load_that_fails_after_building_the_model_still_gets_one_answer(
        window, qtbot, settings, dialogs, tmp_path, monkeypatch):
    from desktop_app.worker import InpaintWorker

    real = InpaintWorker._warm_up
    good = tmp_path / "good.safetensors"
    save_model_file(good, PConvUNet(layers=5, width=8))

    def broken(self, inpainter):
        raise RuntimeError("moving the model back failed")

    monkeypatch.setattr(InpaintWorker, "_warm_up", broken)
    window.load_checkpoint(good)
    qtbot.waitUntil(lambda: not window.model_loading, timeout=10_000)
    assert "moving the model back failed" in dialogs.errors[-1][1]
    assert window.model_info.layers == 4 and settings.model_path != str(good)
    monkeypatch.setattr(InpaintWorker, "_warm_up", real)
    window.load_checkpoint(good)  # the answers still match the requests
    qtbot.waitUntil(lambda: not window.model_loading, timeout=10_000)
    assert window.model_info.layers == 5 and settings.model_path == str(good)


def test_an_option_whose_reload_fails_is_shown_as_it_applies(
        make_window, qtbot, settings, dialogs, tmp_path, tiny_model_path, photo_file):
    copy = tmp_path / "moved-later.safetensors"
    shutil.copy(tiny_model_path, copy)
    window = make_window(checkpoint=copy, photo=photo_file)
    qtbot.waitUntil(lambda: window.model_info is not None, timeout=10_000)
    copy.unlink()  # the reload for the option reads the file again
    window.single_pass_action.trigger()
    qtbot.waitUntil(lambda: bool(dialogs.errors), timeout=10_000)
    assert not window.single_pass_action.isChecked() and not settings.single_pass
    assert "not found. The model in use keeps its previous settings." in dialogs.errors[0][1]
    assert len(dialogs.errors) == 1 and window.model_info is not None
    window.set_device("auto")  # a device change whose reload fails is shown back too
    qtbot.waitUntil(lambda: len(dialogs.errors) == 2, timeout=10_000)
    assert [n for n, a in window.device_actions.items() if a.isChecked()] == ["cpu"]


def test_a_saved_cuda_choice_without_cuda_falls_back_to_automatic(
        qtbot, settings, dialogs, tiny_model_path, monkeypatch):
    from desktop_app.main_window import MainWindow

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a GPU that went away
    settings.device = "cuda"
    window = MainWindow(settings=settings, checkpoint=tiny_model_path, torch_threads=1)
    qtbot.addWidget(window)
    try:
        qtbot.waitUntil(lambda: window.model_info is not None, timeout=10_000)
        assert settings.device == "auto" and window.device_actions["auto"].isChecked()
        assert window.model_info.device_name.startswith("CPU") and not dialogs.errors
        assert "CUDA is not available here" in window.statusBar().currentMessage()
        assert [n for n, a in window.device_actions.items() if a.isChecked()] == ["auto"]
    finally:
        window.shutdown()


def test_a_saved_cuda_choice_stays_when_cuda_is_there_and_the_file_is_bad(
        qtbot, settings, dialogs, tmp_path, monkeypatch):
    from desktop_app.main_window import MainWindow

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the load still fails
    settings.device = "cuda"
    window = MainWindow(settings=settings, checkpoint=_junk(tmp_path / "bad.safetensors"),
                        torch_threads=1)
    qtbot.addWidget(window)
    try:
        qtbot.waitUntil(lambda: bool(dialogs.errors), timeout=10_000)
        assert settings.device == "cuda" and len(dialogs.errors) == 1
    finally:
        window.shutdown()


# == saving and opening mistakes ============================================================
def test_saving_an_outdated_result_asks_first(window, qtbot, dialogs, tmp_path):
    window.document.edit_mask(_square((96, 128), 20, 30, 16), "hole")
    window.run_inpaint()
    qtbot.waitUntil(lambda: window.has_current_result, timeout=20_000)
    window.document.edit_mask(_square((96, 128), 20, 30, 20), "bigger hole")
    target = tmp_path / "out.png"
    dialogs.confirm = False
    assert not window.save_to(target) and not target.exists()
    assert dialogs.questions[-1][0] == "Save Without the Fill?"
    dialogs.confirm = True
    assert window.save_to(target)
    assert np.array_equal(np.asarray(Image.open(target)), window.document.photo)


def test_the_mask_cannot_be_exported_over_the_open_photo(window, dialogs, photo_file):
    before = photo_file.read_bytes()
    window.document.edit_mask(_square((96, 128), 20, 30, 16), "hole")
    assert not window.export_mask_to(photo_file)
    assert dialogs.errors[-1] == ("Cannot Export Mask",
                                  "photo.png is the photo you opened; choose another name.")
    assert photo_file.read_bytes() == before and not dialogs.questions


def test_an_unusable_save_path_is_an_error_not_a_crash(window, dialogs, tmp_path):
    too_long = tmp_path / ("x" * 300 + ".png")
    assert not window.save_to(too_long)
    assert dialogs.errors[-1][0] == "Cannot Save" and "too long" in dialogs.errors[-1][1]
    assert not window.export_mask_to(too_long)
    assert dialogs.errors[-1][0] == "Cannot Export Mask"


def test_a_source_format_the_app_cannot_write_suggests_png(window, tmp_path, photo_maker):
    gif = tmp_path / "scan.gif"
    Image.fromarray(photo_maker(40, 60)).save(gif)
    assert window.open_path(gif)
    assert window.suggested_save_path() == str(tmp_path / "scan_inpainted.png")


@pytest.mark.parametrize("data", ["null image", "no image"])
def test_dropped_data_that_is_no_image_is_an_error(window, dialogs, data):
    before = window.document.photo.copy()
    mime = QMimeData()
    mime.setImageData(QImage() if data == "null image" else "not an image")
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime,
                       Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)
    assert dialogs.errors[-1][0] == "Cannot Open"
    assert np.array_equal(window.document.photo, before)


def test_live_mode_reports_a_failed_run_in_the_status_bar(window, dialogs):
    window.active_request, window._active_quiet = 7, True
    window._on_job_error(7, "out of memory")
    assert not dialogs.errors
    assert window.statusBar().currentMessage() == "Inpainting failed: out of memory"
    window._active_quiet = False
    window._on_job_error(7, "out of memory")
    assert dialogs.errors == [("Inpainting Failed", "out of memory")]


def test_a_result_neither_accepted_nor_saved_is_not_dropped_without_asking(
        window, qtbot, dialogs, tmp_path, photo_file):
    window.document.edit_mask(_square((96, 128), 20, 30, 16), "hole")
    window.run_inpaint()
    qtbot.waitUntil(lambda: window.has_current_result, timeout=20_000)
    dialogs.confirm = False
    assert not window.open_path(photo_file) and window.has_current_result
    assert not window.close() and window.isVisible()
    assert [title for title, _ in dialogs.questions] == ["Discard the Result?"] * 2
    assert window.save_to(tmp_path / "filled.png")  # saved: nothing is lost by closing
    assert window.close()
    assert len(dialogs.questions) == 2


def test_accepting_a_result_already_saved_asks_nothing_on_close(window, qtbot, dialogs,
                                                                 tmp_path):
    window.document.edit_mask(_square((96, 128), 20, 30, 16), "hole")
    window.run_inpaint()
    qtbot.waitUntil(lambda: window.has_current_result, timeout=20_000)
    assert window.save_to(tmp_path / "filled.png") and window.accept_result()
    assert window.close() and not dialogs.questions


def test_saving_the_composite_saves_the_accepted_results_too(window, qtbot, dialogs, tmp_path):
    for top in (10, 50):
        window.document.edit_mask(_square((96, 128), top, 30, 16), "hole")
        window.run_inpaint()
        qtbot.waitUntil(lambda: window.has_current_result, timeout=20_000)
        if top == 10:
            window.accept_result()
    assert window.document.is_photo_modified
    assert window.save_to(tmp_path / "both.png")  # the second fill on top of the first
    assert not window.document.is_photo_modified
    assert window.close() and not dialogs.questions
