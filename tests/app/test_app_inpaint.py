"""Inpainting through the worker thread: previews, accept, cancel, stale results,
responsiveness, missing or bad models, worker failures and closing mid-run."""

from __future__ import annotations

import math
import time

import numpy as np
from PIL import Image
from PySide6.QtCore import Qt, QTimer

from core.inference import Inpainter
from desktop_app.worker import InpaintJob, InpaintWorker, ModelRequest


def square_hole(shape: tuple[int, int], top: int, left: int, size: int) -> np.ndarray:
    hole = np.zeros(shape, dtype=bool)
    hole[top : top + size, left : left + size] = True
    return hole


def run_and_wait(window, qtbot, timeout: int = 20_000) -> None:
    assert window.run_inpaint() is not None
    qtbot.waitUntil(lambda: not window.is_running, timeout=timeout)


def wait_until_started(window, qtbot) -> int:
    """Start a run and wait until the worker has picked it up.

    (qtbot.waitSignal would run its handler in the worker thread, where it must not be.)
    """
    started: list[int] = []
    window.service.worker.started.connect(started.append)
    request_id = window.run_inpaint()
    qtbot.waitUntil(lambda: request_id in started, timeout=10_000)
    return request_id


def test_inpaint_fills_both_previews_and_keeps_the_photo_outside_the_hole(window, qtbot):
    document = window.document
    photo = document.photo.copy()
    hole = square_hole(photo.shape[:2], 30, 40, 24)
    document.edit_mask(hole, "hole")
    assert window.raw_panel.view.pixmap is None and window.composite_panel.view.pixmap is None

    window.activateWindow()  # shortcuts only reach the active window
    qtbot.waitUntil(window.isActiveWindow, timeout=5_000)
    qtbot.keyClick(window.canvas, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert window.is_running or window.has_current_result  # Ctrl+Enter started it
    qtbot.waitUntil(lambda: window.has_current_result, timeout=20_000)

    result = window.result
    raw, composite = window.raw_panel.view.pixels, window.composite_panel.view.pixels
    assert raw is result.raw and composite is result.composite
    assert window.raw_panel.view.pixmap is not None
    assert window.composite_panel.view.pixmap is not None
    assert composite.shape == photo.shape and composite.dtype == np.uint8
    assert np.array_equal(composite[~hole], photo[~hole])
    assert np.array_equal(composite[hole], raw[hole])
    assert window.accept_action.isEnabled()
    assert not window.progress_bar.isVisible()
    assert window.device_label.text().startswith("Device: CPU")


def test_accepting_the_result_is_one_undoable_step(window, qtbot):
    document = window.document
    original = document.photo.copy()
    hole = square_hole(original.shape[:2], 10, 10, 30)
    document.edit_mask(hole, "hole")
    run_and_wait(window, qtbot)
    composite = window.result.composite.copy()

    window.accept_action.trigger()
    assert np.array_equal(document.photo, composite)
    assert not document.hole_mask.any()
    assert document.is_photo_modified and window.isWindowModified()
    assert window.composite_panel.view.pixmap is None  # the photo is the result now

    document.undo_stack.undo()
    assert np.array_equal(document.photo, original)
    assert np.array_equal(document.hole_mask, hole)
    assert not document.is_photo_modified
    document.undo_stack.redo()
    assert np.array_equal(document.photo, composite)
    assert not document.hole_mask.any()


def test_flash_original_while_the_key_is_held(window, qtbot):
    document = window.document
    document.edit_mask(square_hole(document.photo.shape[:2], 10, 10, 20), "hole")
    run_and_wait(window, qtbot)
    qtbot.keyPress(window.canvas, Qt.Key.Key_O)
    assert window.canvas.show_original
    assert window.composite_panel.view.show_original and window.raw_panel.view.show_original
    qtbot.keyRelease(window.canvas, Qt.Key.Key_O)
    assert not window.canvas.show_original
    assert not window.composite_panel.view.show_original


def test_event_loop_keeps_ticking_while_the_worker_runs(make_window, slow_model_path,
                                                        photo_maker, tmp_path, qtbot):
    # Holes far apart, each its own 512 px crop, as many as this machine needs for about 0.6 s
    # of work on one warm thread (0.27 s a crop here; the worker warms up at load, so the job
    # builds no kernels): timed on one crop first.
    probe = Inpainter.from_checkpoint(slow_model_path, device="cpu")
    one = square_hole((512, 512), 110, 100, 300)
    probe.inpaint(photo_maker(512, 512), one)
    start = time.perf_counter()
    probe.inpaint(photo_maker(512, 512), one)
    crops = min(8, max(2, math.ceil(0.6 / (time.perf_counter() - start))))
    wide = tmp_path / "wide.png"
    Image.fromarray(photo_maker(512, 700 * crops, seed=3)).save(wide)
    window = make_window(checkpoint=slow_model_path, photo=wide)
    document = window.document
    hole = np.zeros((512, 700 * crops), dtype=bool)
    for i in range(crops):
        hole |= square_hole(hole.shape, 110, 100 + 700 * i, 300)
    document.edit_mask(hole, "holes")
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    qtbot.waitUntil(lambda: len(ticks) >= 3, timeout=2_000)
    started = time.perf_counter()
    window.run_inpaint()
    assert window.progress_bar.isVisible() and window.cancel_action.isEnabled()
    qtbot.waitUntil(lambda: not window.is_running, timeout=30_000)
    finished = time.perf_counter()
    timer.stop()
    assert window.has_current_result
    gaps = np.diff([t for t in ticks if t >= started - 0.05])
    assert finished - started > 0.3, "the model was too fast for this test to mean anything"
    print(f"worker ran {finished - started:.2f} s; longest event-loop gap "
          f"{gaps.max() * 1000:.0f} ms over {len(gaps)} ticks")
    assert gaps.max() < 0.2, f"the GUI thread stalled for {gaps.max() * 1000:.0f} ms"
    assert not window.progress_bar.isVisible()


def test_cancel_drops_the_running_job_and_the_window_goes_idle(make_window, slow_model_path,
                                                               big_photo_file, qtbot):
    window = make_window(checkpoint=slow_model_path, photo=big_photo_file)
    window.document.edit_mask(square_hole((512, 512), 100, 100, 60), "hole")
    finished: list[int] = []
    window.service.worker.finished.connect(finished.append)
    request_id = wait_until_started(window, qtbot)
    window.cancel_action.trigger()
    assert not window.is_running and not window.progress_bar.isVisible()
    assert not window.cancel_action.isEnabled()
    qtbot.waitUntil(lambda: request_id in finished, timeout=30_000)
    assert window.result is None
    assert window.composite_panel.view.pixmap is None


def test_worker_stops_between_steps_when_cancelled(tiny_model_path, photo_maker, qtbot):
    """Run the worker in this thread: a cancel during step 1 stops it before step 2."""
    worker = InpaintWorker(torch_threads=1)
    worker._inpainter = Inpainter.from_checkpoint(tiny_model_path, device="cpu")
    worker._inpainter.work_size = 64  # small crops so far-apart holes are separate steps
    photo = photo_maker(256, 256)
    hole = np.zeros((256, 256), dtype=bool)
    for top, left in ((10, 10), (10, 200), (200, 10), (200, 200)):
        hole[top : top + 20, left : left + 20] = True
    events: list[tuple] = []
    worker.progress.connect(lambda rid, done, total: events.append(("progress", done, total)))
    worker.progress.connect(lambda rid, done, total: worker.cancel_up_to(rid))
    worker.result.connect(lambda rid, result: events.append(("result",)))
    worker.cancelled.connect(lambda rid: events.append(("cancelled",)))
    worker.finished.connect(lambda rid: events.append(("finished",)))
    worker.run(InpaintJob(1, 0, photo, hole))
    assert events == [("progress", 0, 4), ("cancelled",), ("finished",)]


def test_worker_on_two_threads_fills_as_on_one_and_still_cancels(tiny_model_path, photo_maker):
    """With two threads the worker's job runs its crops at once (core.inference): the same
    fill as one thread gives, and a cancel at the first progress still stops it."""
    import threading

    import torch

    photo = photo_maker(256, 256)
    hole = np.zeros((256, 256), dtype=bool)
    for top, left in ((10, 10), (10, 200), (200, 10), (200, 200)):
        hole[top : top + 20, left : left + 20] = True
    results, names = {}, {}
    try:
        for threads in (1, 2):
            worker = InpaintWorker(torch_threads=threads)
            worker._inpainter = Inpainter.from_checkpoint(tiny_model_path, device="cpu")
            worker._inpainter.work_size = 64
            run = worker._inpainter._run
            worker._inpainter._run = lambda *a, t=threads, run=run: (
                names.setdefault(t, set()).add(threading.current_thread().name) or run(*a))
            worker.result.connect(lambda rid, result, t=threads: results.__setitem__(t, result))
            worker.run(InpaintJob(1, 0, photo, hole))
        assert np.array_equal(results[1].composite, results[2].composite)
        assert names[1] == {threading.current_thread().name}
        assert any(name.startswith("inpaint-crop") for name in names[2])
        events: list[tuple] = []
        worker.progress.connect(lambda rid, done, total: events.append(("progress", done, total)))
        worker.progress.connect(lambda rid, done, total: worker.cancel_up_to(rid))
        worker.cancelled.connect(lambda rid: events.append(("cancelled",)))
        worker.run(InpaintJob(2, 0, photo, hole))
        assert events == [("progress", 0, 4), ("cancelled",)]
    finally:
        torch.set_num_threads(1)


def test_a_loaded_model_is_warmed_up_before_it_is_announced(tiny_model_path, monkeypatch):
    """The worker runs one small job on a new model before model_loaded, so the user's first
    job does not build kernels; a failing warm-up still loads the model."""
    events: list[str] = []
    original = Inpainter.inpaint
    monkeypatch.setattr(Inpainter, "inpaint",
                        lambda self, *a, **k: events.append("inpaint") or original(self, *a, **k))
    worker = InpaintWorker(torch_threads=1)
    worker.model_loaded.connect(lambda info: events.append("loaded"))
    worker.model_error.connect(lambda message: events.append("error"))
    worker.load_model(ModelRequest(str(tiny_model_path), "cpu"))
    assert events == ["inpaint", "loaded"]

    def broken(self, *a, **k):
        events.append("inpaint")
        raise RuntimeError("no")

    monkeypatch.setattr(Inpainter, "inpaint", broken)
    events.clear()
    worker.load_model(ModelRequest(str(tiny_model_path), "cpu"))
    assert events == ["inpaint", "loaded"] and worker._inpainter is not None


def test_result_from_an_older_mask_is_dropped(make_window, slow_model_path, big_photo_file,
                                              qtbot):
    window = make_window(checkpoint=slow_model_path, photo=big_photo_file)
    document = window.document
    document.edit_mask(square_hole((512, 512), 100, 100, 60), "hole")
    results: list[int] = []
    window.service.worker.result.connect(lambda rid, _r: results.append(rid))
    request_id = window.run_inpaint()
    document.edit_mask(square_hole((512, 512), 300, 300, 40), "another hole")  # mid-run
    qtbot.waitUntil(lambda: not window.is_running, timeout=30_000)
    assert results == [request_id]  # the worker finished it...
    assert window.result is None and window.dropped_results == 1  # ...and it was not shown
    assert window.composite_panel.view.pixmap is None
    assert "dropped" in window.statusBar().currentMessage()


def test_a_newer_request_supersedes_an_older_one(window, qtbot):
    document = window.document
    document.edit_mask(square_hole(document.photo.shape[:2], 10, 10, 20), "hole")
    emitted: dict[int, object] = {}
    window.service.worker.result.connect(lambda rid, r: emitted.__setitem__(rid, r))
    first = window.run_inpaint()
    document.edit_mask(square_hole(document.photo.shape[:2], 50, 60, 20), "second hole")
    second = window.run_inpaint()
    qtbot.waitUntil(lambda: window.has_current_result and second in emitted, timeout=20_000)
    assert window.result is emitted[second]
    assert first not in emitted or emitted[first] is not window.result
    hole = document.hole_mask
    assert np.array_equal(window.result.composite[~hole], document.photo[~hole])


def test_live_mode_reruns_after_a_stroke(window, qtbot, settings):
    window.live_action.setChecked(True)
    assert settings.live_mode
    canvas = window.canvas
    canvas.set_brush_size(9)
    center = canvas.rect().center()
    qtbot.mousePress(canvas, Qt.MouseButton.LeftButton, pos=center)
    qtbot.mouseMove(canvas, center + type(center)(30, 5))
    qtbot.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=center + type(center)(30, 5))
    assert window.document.hole_pixels > 0
    assert window.live_timer.isActive()
    qtbot.waitUntil(lambda: window.has_current_result, timeout=20_000)


def test_without_a_model_the_app_opens_and_inpaint_explains(make_window, photo_file, dialogs,
                                                           monkeypatch, tmp_path):
    monkeypatch.setenv("PCONV_RESOURCES", str(tmp_path / "no-resources"))
    window = make_window(checkpoint=None, photo=photo_file)
    assert window.model_info is None and not window.model_loading
    assert window.model_label.text() == "No model: use Model > Load Checkpoint..."
    assert "No trained model is shipped" in window.model_label.toolTip()
    window.document.edit_mask(square_hole((96, 128), 10, 10, 20), "hole")
    assert window.run_inpaint() is None
    assert len(dialogs.errors) == 1
    title, message = dialogs.errors[0]
    assert "Load Checkpoint" in message


def test_a_bad_checkpoint_shows_an_error_and_keeps_the_model(window, qtbot, dialogs, tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"this is not a model")
    before = window.model_info
    window.load_checkpoint(bad)
    qtbot.waitUntil(lambda: bool(dialogs.errors), timeout=10_000)
    assert "broken.safetensors" in dialogs.errors[0][1]
    assert dialogs.error_threads_ok == [True]
    assert window.model_info is before and not window.model_loading
    window.document.edit_mask(square_hole((96, 128), 10, 10, 20), "hole")
    run_and_wait(window, qtbot)
    assert window.has_current_result


def test_loading_a_checkpoint_is_remembered(window, qtbot, settings, tmp_path):
    from core.checkpoint import save_model_file
    from core.model import PConvUNet

    other = tmp_path / "other.safetensors"
    save_model_file(other, PConvUNet(layers=5, width=8))
    window.load_checkpoint(other)
    qtbot.waitUntil(lambda: window.model_info.layers == 5, timeout=10_000)
    assert settings.model_path == str(other)
    assert window.model_label.text() == "Model: other.safetensors"


def test_a_worker_failure_is_a_dialog_in_the_gui_thread(window, qtbot, dialogs, monkeypatch):
    def explode(self, *args, **kwargs):
        raise RuntimeError("boom in the worker")

    real = Inpainter.inpaint
    monkeypatch.setattr(Inpainter, "inpaint", explode)
    window.document.edit_mask(square_hole((96, 128), 10, 10, 20), "hole")
    run_and_wait(window, qtbot)
    assert dialogs.errors == [("Inpainting Failed", "RuntimeError: boom in the worker")]
    assert dialogs.error_threads_ok == [True]
    assert window.document.hole_pixels == 400  # nothing lost
    # (not monkeypatch.undo(): that would also bring back the real, blocking dialogs)
    monkeypatch.setattr(Inpainter, "inpaint", real)
    run_and_wait(window, qtbot)
    assert window.has_current_result


def test_notices_from_the_inpainter_reach_the_status_bar(window, qtbot, monkeypatch):
    real = Inpainter.inpaint

    def with_notice(self, *args, **kwargs):
        result = real(self, *args, **kwargs)
        result.notices.append("CUDA: Fake GPU ran out of memory; this run used the CPU")
        return result

    monkeypatch.setattr(Inpainter, "inpaint", with_notice)
    window.document.edit_mask(square_hole((96, 128), 10, 10, 20), "hole")
    run_and_wait(window, qtbot)
    assert "ran out of memory" in window.statusBar().currentMessage()


def test_closing_during_a_run_stops_the_worker_cleanly(make_window, slow_model_path,
                                                       big_photo_file, qtbot):
    window = make_window(checkpoint=slow_model_path, photo=big_photo_file)
    window.document.edit_mask(square_hole((512, 512), 100, 100, 60), "hole")
    wait_until_started(window, qtbot)  # the network pass is under way when the window closes
    start = time.perf_counter()
    assert window.close()
    assert time.perf_counter() - start < 10
    assert window.service.thread.isFinished()
    assert not window.isVisible()


def test_single_pass_reloads_the_model_and_is_remembered(make_window, qtbot, settings, tmp_path,
                                                         photo_file):
    """A model file asking for 3 mirrored passes gets them; Model > Single Pass reloads it
    with one pass, is remembered, and unchecking it gives the file's passes back."""
    from core.checkpoint import save_model_file
    from core.model import PConvUNet

    path = tmp_path / "three.safetensors"
    save_model_file(path, PConvUNet(layers=4, width=8), extra={"flip_passes": 3})
    window = make_window(checkpoint=path, photo=photo_file)
    qtbot.waitUntil(lambda: window.model_info is not None, timeout=10_000)
    assert window.model_info.passes == 3
    assert "3 mirrored passes per hole" in window.model_label.toolTip()
    window.single_pass_action.trigger()
    qtbot.waitUntil(lambda: window.model_info is not None and window.model_info.passes == 1,
                    timeout=10_000)
    assert settings.single_pass and "1 pass per hole" in window.model_label.toolTip()
    window.document.edit_mask(square_hole((96, 128), 10, 10, 20), "hole")
    run_and_wait(window, qtbot)
    assert window.has_current_result
    window.single_pass_action.trigger()
    qtbot.waitUntil(lambda: window.model_info is not None and window.model_info.passes == 3,
                    timeout=10_000)
    assert not settings.single_pass


def test_full_resolution_strokes_reload_the_model_and_are_remembered(make_window, qtbot,
                                                                    settings, photo_file,
                                                                    tmp_path):
    """On a CPU long strokes may shrink up to 2x by default; Model > Full-Resolution Strokes
    reloads the model with tiles at full scale, is remembered, and unchecking undoes it. A
    model without a trained hole radius gets no tiles, and the tooltip does not claim any."""
    from core.checkpoint import save_model_file
    from core.model import PConvUNet

    path = tmp_path / "radius.safetensors"
    save_model_file(path, PConvUNet(layers=4, width=8), extra={"max_hole_radius": 16})
    window = make_window(photo=photo_file)
    qtbot.waitUntil(lambda: window.model_info is not None, timeout=10_000)
    assert window.model_info.tile_shrink == 0 and "strokes" not in window.model_label.toolTip()
    window.load_checkpoint(path)
    qtbot.waitUntil(lambda: not window.model_loading, timeout=10_000)
    assert window.model_info.tile_shrink == 0.5
    assert "shrunk up to 2x" in window.model_label.toolTip()
    window.full_resolution_action.trigger()
    qtbot.waitUntil(lambda: window.model_info is not None
                    and window.model_info.tile_shrink == 1.0, timeout=10_000)
    assert settings.full_resolution
    assert "long strokes at full resolution" in window.model_label.toolTip()
    window.full_resolution_action.trigger()
    qtbot.waitUntil(lambda: window.model_info is not None
                    and window.model_info.tile_shrink == 0.5, timeout=10_000)
    assert not settings.full_resolution


def test_a_remembered_load_stays_remembered_when_a_setting_reloads_it(window, qtbot, settings,
                                                                      tmp_path):
    """Load Checkpoint (remembered), then Single Pass before the load has finished: the
    reload must not forget the user's choice of model."""
    from core.checkpoint import save_model_file
    from core.model import PConvUNet

    other = tmp_path / "chosen.safetensors"
    save_model_file(other, PConvUNet(layers=5, width=8))
    window.load_checkpoint(other)
    assert window.model_loading  # the worker has not answered yet: the event loop has not run
    window.single_pass_action.trigger()
    qtbot.waitUntil(lambda: not window.model_loading and window.model_info.layers == 5,
                    timeout=10_000)
    assert window.model_info.passes == 1
    assert settings.model_path == str(other)
