"""Issue #7 in the app: bad files, odd photos, odd masks, bad checkpoints, a GPU that runs
out of memory, stale runs and a full disk never lose the photo, the mask or the model.

Already covered elsewhere (not repeated): a corrupt JPEG and a vanished recent file
(test_app_files.py), L / RGBA / I;16 / P photos and EXIF orientation 6 (test_app_files.py),
a mask of another size (test_app_files.py), a junk .safetensors checkpoint, cancel, close
mid-run, superseded and stale-mask results, worker exceptions and notices
(test_app_inpaint.py).
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import core.atomic
from core.checkpoint import save_checkpoint
from core.masks import load_mask
from core.model import PConvUNet


def square_hole(shape: tuple[int, int], top: int, left: int, size: int) -> np.ndarray:
    hole = np.zeros(shape, dtype=bool)
    hole[top : top + size, left : left + size] = True
    return hole


def _bomb_png(width: int, height: int) -> bytes:
    """A PNG header claiming width x height (1-bit) with one row of data: ~100 bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + (width + 7) // 8))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows)
            + chunk(b"IEND", b""))


def _snapshot(window) -> tuple:
    document = window.document
    return (document.photo.copy(), document.hole_mask.copy(), document.undo_stack.count(),
            document.source_path, document.revision)


def _unchanged(window, before: tuple) -> bool:
    photo, mask, count, source, revision = before
    document = window.document
    return (np.array_equal(document.photo, photo) and np.array_equal(document.hole_mask, mask)
            and document.undo_stack.count() == count and document.source_path == source
            and document.revision == revision)


def _run_and_wait(window, qtbot, timeout: int = 20_000) -> None:
    assert window.run_inpaint() is not None
    qtbot.waitUntil(lambda: not window.is_running, timeout=timeout)


# == bad photo files ==========================================================================
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("kind", ["empty", "truncated", "text", "folder", "bomb", "html"])
def test_a_bad_photo_file_is_one_line_and_keeps_everything(window, dialogs, tmp_path, kind):
    window.document.edit_mask(square_hole((96, 128), 5, 5, 10), "hole")
    before = _snapshot(window)
    good = io.BytesIO()
    Image.new("RGB", (50, 40), (1, 2, 3)).save(good, "PNG")
    path = tmp_path / {"empty": "empty.png", "truncated": "cut.png", "text": "notes.jpg",
                       "folder": "album.png", "bomb": "bomb.png", "html": "page.webp"}[kind]
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(good.getvalue()[:-30])
    elif kind == "text":
        path.write_text("not a photo")
    elif kind == "folder":
        path.mkdir()
    elif kind == "bomb":
        path.write_bytes(_bomb_png(20_000, 20_000))  # 400 MP
    else:
        path.write_text("<html>404</html>")
    assert not window.open_path(path)
    assert len(dialogs.errors) == 1
    message = dialogs.errors[0][1]
    assert path.name in message and len(message.splitlines()) == 1
    if kind == "bomb":
        assert "400 MP" in message and "limit" in message
    assert _unchanged(window, before)


def test_a_png_named_jpg_opens_by_its_content(window, tmp_path, photo_maker):
    pixels = photo_maker(30, 50, seed=4)
    path = tmp_path / "really_a_png.jpg"
    Image.fromarray(pixels).save(path, format="PNG")
    assert window.open_path(path)
    assert np.array_equal(window.document.photo, pixels)


# == photos of every kind ======================================================================
def _odd_photo(kind: str, folder: Path, photo_maker) -> tuple[Path, tuple[int, int]]:
    rgb = photo_maker(30, 40, seed=2)
    path = folder / f"{kind}.png"
    if kind == "cmyk":
        path = folder / "cmyk.jpg"
        Image.fromarray(rgb).convert("CMYK").save(path, quality=95)
    elif kind == "grey_alpha":
        Image.fromarray(rgb).convert("LA").save(path)
    elif kind == "palette_transparent":
        Image.fromarray(rgb).convert("P").save(path, transparency=0)
    elif kind == "exif8":
        path = folder / "exif8.jpg"
        exif = Image.Exif()
        exif[0x0112] = 8
        Image.fromarray(rgb).save(path, exif=exif.tobytes())
        return path, (40, 30)
    elif kind == "row":
        Image.fromarray(photo_maker(1, 40)).save(path)
        return path, (1, 40)
    elif kind == "column":
        Image.fromarray(photo_maker(40, 1)).save(path)
        return path, (40, 1)
    elif kind == "eight":
        Image.fromarray(photo_maker(8, 8)).save(path)
        return path, (8, 8)
    return path, (30, 40)


@pytest.mark.parametrize("kind", ["cmyk", "grey_alpha", "palette_transparent", "exif8", "row",
                                  "column", "eight"])
def test_odd_photos_open_upright_and_inpaint_at_their_size(window, qtbot, tmp_path, photo_maker,
                                                          kind):
    path, (h, w) = _odd_photo(kind, tmp_path, photo_maker)
    assert window.open_path(path)
    document = window.document
    assert document.photo.shape == (h, w, 3)
    hole = np.zeros((h, w), dtype=bool)
    hole[h // 3 : h // 3 + max(1, h // 3), w // 3 : w // 3 + max(1, w // 3)] = True
    document.edit_mask(hole, "hole")
    _run_and_wait(window, qtbot)
    assert window.has_current_result
    composite = window.result.composite
    assert composite.shape == (h, w, 3)
    assert np.array_equal(composite[~hole], document.photo[~hole])


# == masks: empty, full, non-binary ============================================================
def test_empty_and_full_masks_explain_and_lose_nothing(window, dialogs):
    document = window.document
    assert window.run_inpaint() is None  # nothing painted yet
    assert "Paint over" in window.statusBar().currentMessage() and not dialogs.errors
    document.edit_mask(np.ones((96, 128), dtype=bool), "everything")
    before = _snapshot(window)
    assert window.run_inpaint() is None
    assert len(dialogs.errors) == 1 and "whole photo" in dialogs.errors[0][1]
    assert not window.is_running and _unchanged(window, before)


def test_an_imported_soft_or_coloured_mask_is_binarised(window, tmp_path):
    hole = square_hole((96, 128), 20, 30, 40)
    soft = hole.astype(np.uint8) * 255
    soft[19, 30:70] = 90  # anti-aliased fringe below half: not a hole
    soft[60, 30:70] = 200  # above half: a hole
    Image.fromarray(soft).save(tmp_path / "soft.jpg", quality=80)
    assert window.import_mask_from(tmp_path / "soft.jpg")
    mask = window.document.hole_mask
    assert mask.dtype == bool and np.array_equal(mask, load_mask(tmp_path / "soft.jpg"))
    assert mask[60, 50] and not mask[19, 50] and mask[40, 50]
    red = np.zeros((96, 128, 3), np.uint8)
    red[hole] = (230, 0, 0)  # painted red in an image editor
    Image.fromarray(red).save(tmp_path / "red.png")
    assert window.import_mask_from(tmp_path / "red.png")
    assert np.array_equal(window.document.hole_mask, hole)


# == bad checkpoints: the current model stays ================================================
class _Payload:
    target = ""

    def __reduce__(self):
        return (os.mkdir, (_Payload.target,))


def _bad_checkpoint(kind: str, folder: Path) -> Path:
    torch.manual_seed(0)
    model = PConvUNet(layers=4, width=8)
    if kind == "truncated":
        save_checkpoint(folder / "whole.pt", {"model": model.state_dict(),
                                              "model_config": model.config.to_dict()})
        data = (folder / "whole.pt").read_bytes()
        (folder / "cut.pt").write_bytes(data[: len(data) * 2 // 3])
        return folder / "cut.pt"
    if kind == "mismatched":
        other = PConvUNet(layers=4, width=4)
        save_checkpoint(folder / "mismatched.pt", {"model": other.state_dict(),
                                                   "model_config": model.config.to_dict()})
        return folder / "mismatched.pt"
    if kind == "pickled_code":
        torch.save({"model": {}, "model_config": {}, "x": _Payload()}, folder / "evil.ckpt")
        return folder / "evil.ckpt"
    if kind == "raw_pickle":
        (folder / "evil.pth").write_bytes(pickle.dumps({"model": _Payload()}, protocol=2))
        return folder / "evil.pth"
    raise KeyError(kind)


@pytest.mark.parametrize("kind", ["truncated", "mismatched", "pickled_code", "raw_pickle"])
def test_a_bad_checkpoint_is_refused_and_the_model_stays(window, qtbot, dialogs, settings,
                                                         tmp_path, kind):
    marker = tmp_path / "pwned"
    _Payload.target = str(marker)
    path = _bad_checkpoint(kind, tmp_path)
    before, remembered = window.model_info, settings.model_path
    window.load_checkpoint(path)
    qtbot.waitUntil(lambda: bool(dialogs.errors), timeout=10_000)
    message = dialogs.errors[0][1]
    assert path.name in message and len(message.splitlines()) == 1
    assert window.model_info is before and not window.model_loading
    assert settings.model_path == remembered
    assert window.model_label.text() == f"Model: {Path(before.source).name}"
    assert not marker.exists()
    if kind == "pickled_code":
        window.document.edit_mask(square_hole((96, 128), 10, 10, 20), "hole")
        _run_and_wait(window, qtbot)
        assert window.has_current_result


# == CUDA out of memory (simulated) ============================================================
def test_a_gpu_out_of_memory_is_finished_on_the_cpu_with_a_notice(window, qtbot, dialogs,
                                                                  fake_cuda_oom):
    # the window is idle: the worker is not using its inpainter now
    devices = fake_cuda_oom(window.service.worker._inpainter)
    window.document.edit_mask(square_hole((96, 128), 30, 40, 24), "hole")
    _run_and_wait(window, qtbot)
    assert window.has_current_result and not dialogs.errors
    assert devices == ["cuda", "cpu"]
    message = window.statusBar().currentMessage()
    assert "ran out of memory" in message and "CPU" in message
    assert window.device_label.text().startswith("Device: CPU")
    photo, hole = window.document.photo, window.document.hole_mask
    assert np.array_equal(window.result.composite[~hole], photo[~hole])


# == stale runs and closing ===================================================================
def test_opening_another_photo_mid_run_drops_the_stale_result(make_window, slow_model_path,
                                                             big_photo_file, qtbot, tmp_path,
                                                             photo_maker, dialogs):
    window = make_window(checkpoint=slow_model_path, photo=big_photo_file)
    window.document.edit_mask(square_hole((512, 512), 100, 100, 60), "hole")
    started: list[int] = []
    finished: list[int] = []
    window.service.worker.started.connect(started.append)
    window.service.worker.finished.connect(finished.append)
    request_id = window.run_inpaint()
    qtbot.waitUntil(lambda: request_id in started, timeout=10_000)
    second = tmp_path / "second.png"
    pixels = photo_maker(60, 80, seed=9)
    Image.fromarray(pixels).save(second)
    assert window.open_path(second)  # mid-run
    assert not window.is_running
    qtbot.waitUntil(lambda: request_id in finished, timeout=30_000)
    qtbot.wait(50)  # let any queued result signal arrive
    assert window.result is None and window.composite_panel.view.pixmap is None
    assert np.array_equal(window.document.photo, pixels)
    assert window.document.hole_mask.shape == (60, 80) and not window.document.hole_pixels
    assert not dialogs.errors


def test_closing_while_a_model_loads_does_not_hang(make_window, slow_model_path, photo_file):
    window = make_window(photo=photo_file)
    window.load_checkpoint(slow_model_path)
    start = time.perf_counter()
    assert window.close()
    assert time.perf_counter() - start < 10
    assert window.service.thread.isFinished()


# == a full disk while saving =================================================================
class _OsWithFullDisk:
    """core.atomic's view of ``os`` in which every file it writes is /dev/full (ENOSPC)."""

    def fdopen(self, fd: int, mode: str = "r", *args, **kwargs):
        os.close(fd)
        return open("/dev/full", mode)  # noqa: SIM115 - atomic_write closes it

    def __getattr__(self, name: str):
        return getattr(os, name)


def test_a_full_disk_keeps_the_old_file_and_the_edits(window, qtbot, dialogs, monkeypatch,
                                                      tmp_path):
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    document = window.document
    document.edit_mask(square_hole((96, 128), 20, 20, 30), "hole")
    _run_and_wait(window, qtbot)
    window.accept_result()  # an unsaved accepted result: the thing that must not be lost
    document.edit_mask(square_hole((96, 128), 50, 60, 10), "another hole")
    before = _snapshot(window)
    old_photo, old_mask = tmp_path / "result.jpg", tmp_path / "mask.png"
    old_photo.write_bytes(b"yesterday's result")
    old_mask.write_bytes(b"yesterday's mask")
    monkeypatch.setattr(core.atomic, "os", _OsWithFullDisk())

    assert not window.save_to(old_photo)
    assert not window.export_mask_to(old_mask)
    assert [title for title, _ in dialogs.errors] == ["Cannot Save", "Cannot Export Mask"]
    for (_title, message), name in zip(dialogs.errors, ("result.jpg", "mask.png")):
        assert "No space left" in message and name in message
    assert old_photo.read_bytes() == b"yesterday's result"
    assert old_mask.read_bytes() == b"yesterday's mask"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert _unchanged(window, before) and document.is_photo_modified  # still to be saved

    monkeypatch.setattr(core.atomic, "os", os)  # space again: the same save now works
    assert window.save_to(old_photo)
    assert not document.is_photo_modified


# == closing during one long network pass =====================================================
def test_closing_during_a_long_pass_reports_it_instead_of_hanging(window, qtbot):
    """A pass that cannot be interrupted outlives the close wait: shutdown says so (the entry
    point then exits without tearing down the running thread) and never waits 60 s."""
    import threading

    release = threading.Event()
    entered = threading.Event()
    real = window.service.worker._inpainter.inpaint

    def long_pass(*args, **kwargs):
        entered.set()
        release.wait(30)
        return real(*args, **kwargs)

    window.service.worker._inpainter.inpaint = long_pass
    window.document.edit_mask(np.ones((96, 128), bool) & (np.arange(128) < 30), "hole")
    window.run_inpaint()
    qtbot.waitUntil(entered.is_set, timeout=10_000)
    start = time.perf_counter()
    try:
        assert window.shutdown(timeout_ms=200) is False
        assert window.shutdown() is False  # repeated: the same answer, no second wait
        assert time.perf_counter() - start < 5
        assert not window.isVisible()
    finally:
        release.set()
        assert window.service.thread.wait(30_000)


def test_entry_point_exits_at_once_when_the_worker_is_still_busy(monkeypatch, qapp):
    from PySide6.QtCore import QTimer

    import desktop_app.__main__ as entry
    import desktop_app.main_window as main_window

    class BusyWindow:
        def __init__(self, **kwargs) -> None:
            self.shutdowns = 0

        def show(self) -> None:
            QTimer.singleShot(0, qapp.quit)

        def shutdown(self) -> bool:
            self.shutdowns += 1
            return False

        def show_error(self, *args) -> None:
            pass

    exits: list[int] = []
    monkeypatch.setattr(main_window, "MainWindow", BusyWindow)
    monkeypatch.setattr(entry.os, "_exit", exits.append)
    monkeypatch.setattr(entry.sys, "excepthook", entry.sys.excepthook)
    entry.main([])
    assert exits == [0]
