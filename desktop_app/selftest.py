"""``--self-test``: the whole app stack, offscreen, on the bundled sample photo.

It goes through the real window, document, worker thread and inpainter, so a passing
self-test on a user's machine means the installed app can load its model and fill a hole.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

SAMPLE_NAME = "sample.jpg"
MODEL_TIMEOUT_S = 300.0
INPAINT_TIMEOUT_S = 600.0
FORBIDDEN_MODULES = ("torchvision", "core.train")


class SelfTestFailure(Exception):
    """One clear line saying what went wrong."""


def run_self_test(checkpoint: str | None, device: str = "auto",
                  out: Callable[[str], None] | None = None, precision: str = "auto") -> int:
    """Print what was checked; 0 when everything passed, 1 otherwise."""
    def say(line: str) -> None:
        (out or _print)(line)

    try:
        _self_test(checkpoint, device, say, precision)
    except SelfTestFailure as exc:
        say(f"self-test FAILED: {exc}")
        return 1
    except Exception as exc:  # noqa: BLE001 - any surprise is a failure, reported in one line
        say(f"self-test FAILED: unexpected {type(exc).__name__}: {exc}")
        return 1
    say("self-test passed")
    return 0


def _print(line: str) -> None:
    print(line, flush=True)


def _self_test(
    checkpoint: str | None, device: str, say: Callable[[str], None], precision: str = "auto"
) -> None:
    os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before the QApplication exists
    import PIL
    import PySide6
    import torch
    from PySide6.QtCore import QEventLoop, QSettings, QTimer, qInstallMessageHandler, qVersion
    from PySide6.QtWidgets import QApplication

    from core.masks import MaskGenerator
    from core.resources import resource_path, shipped_model_path
    from desktop_app import APP_NAME, app_version
    from desktop_app.main_window import MainWindow
    from desktop_app.settings import AppSettings

    say(f"{APP_NAME} {app_version()} self-test")
    say(f"Python {platform.python_version()}, Qt {qVersion()}, PySide6 {PySide6.__version__}, "
        f"torch {torch.__version__}, numpy {np.__version__}, Pillow {PIL.__version__}")

    if checkpoint is None and shipped_model_path() is None:
        raise SelfTestFailure(
            "no model available: resources/model/pconv_unet.safetensors is not shipped "
            "yet; pass --checkpoint PATH (a file written by core.train)")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise SelfTestFailure(f"{checkpoint}: checkpoint file not found")
    sample = resource_path(SAMPLE_NAME)
    if not sample.is_file():
        raise SelfTestFailure(f"the sample photo {sample} is missing")

    qInstallMessageHandler(_quiet_offscreen_warnings)
    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "selftest"])
    errors: list[str] = []

    class SelfTestWindow(MainWindow):
        """Records dialogs instead of showing them: nobody is there to click."""

        def show_error(self, title: str, message: str) -> None:
            errors.append(f"{title}: {message}")

        def ask_confirm(self, title: str, question: str) -> bool:
            return False

    def wait_until(done: Callable[[], bool], timeout_s: float, what: str) -> float:
        start = time.perf_counter()
        loop = QEventLoop()
        while not done():
            if errors:
                raise SelfTestFailure(f"{what}: {errors[0]}")
            if time.perf_counter() - start > timeout_s:
                raise SelfTestFailure(f"{what}: no answer within {timeout_s:.0f} s")
            QTimer.singleShot(20, loop.quit)
            loop.exec()
        if errors:
            raise SelfTestFailure(f"{what}: {errors[0]}")
        return time.perf_counter() - start

    with tempfile.TemporaryDirectory(prefix="pconv-selftest-") as tmp:
        settings = AppSettings(QSettings(str(Path(tmp) / "settings.ini"),
                                         QSettings.Format.IniFormat))
        window = SelfTestWindow(settings=settings, checkpoint=checkpoint, device=device,
                                precision=precision)
        try:
            window.show()
            seconds = wait_until(lambda: window.model_info is not None, MODEL_TIMEOUT_S,
                                 "loading the model")
            info = window.model_info
            assert info is not None
            say(f"model: {info.source} ({info.layers} levels, width {info.width}), "
                f"loaded in {seconds:.1f} s")
            say(f"device: {info.device_name}")

            if not window.open_path(sample):
                raise SelfTestFailure(f"cannot open {sample}: {errors[:1]}")
            photo = window.document.photo
            assert photo is not None
            height, width = photo.shape[:2]
            hole = MaskGenerator(seed=2018).generate(height, width, bucket=(0.1, 0.2),
                                                     border_margin=8)
            window.document.edit_mask(hole, "Self-test hole")
            say(f"photo: {sample.name} {width} x {height}, hole {hole.mean() * 100:.1f} %")

            if window.run_inpaint() is None:
                raise SelfTestFailure(f"inpainting did not start: {errors[:1]}")
            seconds = wait_until(lambda: not window.is_running, INPAINT_TIMEOUT_S, "inpainting")
            result = window.result
            if result is None or not window.has_current_result:
                raise SelfTestFailure("inpainting finished without a result")
            say(f"inpaint: {seconds:.2f} s on {result.device}")
            for notice in result.notices:
                say(f"notice: {notice}")

            _check_result(photo, hole, result)
            shown = window.composite_panel.view.pixels
            if shown is None or not np.array_equal(shown, result.composite):
                raise SelfTestFailure("the composite preview does not show the result")
            say(f"composite: {width} x {height}, equals the photo outside the hole: OK")
        finally:
            if not window.shutdown(timeout_ms=60_000):
                # Returning would let Python destroy the still-running QThread, which aborts
                # the process; report the failure and leave at once instead.
                say("self-test FAILED: the worker thread did not stop within 60 s")
                sys.stdout.flush()
                os._exit(1)
            window.deleteLater()
            app.processEvents()

    loaded = [name for name in FORBIDDEN_MODULES if name in sys.modules]
    if loaded:
        raise SelfTestFailure(f"the app imported {', '.join(loaded)}, which it must never do")
    say("imports: no torchvision, no trainer: OK")


def _quiet_offscreen_warnings(_mode, _context, message: str) -> None:
    """The offscreen platform warns about window features it lacks; nothing else is hidden."""
    if "does not support" in message:
        return
    print(message, file=sys.stderr)


def _check_result(photo: np.ndarray, hole: np.ndarray, result) -> None:
    for name in ("raw", "composite"):
        arr = getattr(result, name)
        if arr.shape != photo.shape or arr.dtype != np.uint8:
            raise SelfTestFailure(
                f"{name} is {arr.dtype} {arr.shape}, expected uint8 {photo.shape}")
    outside = ~hole
    if not np.array_equal(result.composite[outside], photo[outside]):
        bad = int((result.composite[outside] != photo[outside]).any(axis=-1).sum())
        raise SelfTestFailure(f"the composite differs from the photo at {bad} pixels "
                              "outside the hole")
