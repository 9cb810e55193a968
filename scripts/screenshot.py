"""Start the real app on a virtual X screen, paint a hole, inpaint, save a screenshot.

    .venv/bin/python scripts/screenshot.py [--checkpoint PATH] [--output docs/screenshot.png]

Without a DISPLAY it starts Xvfb itself (Debian/Ubuntu: apt-get install xvfb libxcb-icccm4
libxcb-keysyms1 libxcb-cursor0 libxkbcommon-x11-0 fonts-dejavu-core) and grabs the window
from that screen. With --offscreen, or when Xvfb is missing, it renders offscreen and grabs
the widget instead (same pixels, no window system involved). The model is the shipped one
unless --checkpoint names another; rerun this after a new model is shipped.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Two brush strokes in image coordinates of resources/sample.jpg (680 x 452): a scribble
# over the small pyramid on the right (apex near (565, 212), base from x 490 to 642 at
# y 322), then the people and camels at the lower left.
def _pyramid_scribble() -> list[tuple[float, float]]:
    points: list[tuple[float, float]] = [(565, 206)]
    for row, y in enumerate(range(222, 326, 16)):
        half = (y - 206) / 116 * 80 + 4
        ends = [(565 - half, y), (565 + half, y)]
        points.extend(ends if row % 2 == 0 else ends[::-1])
    return points


STROKES: list[tuple[int, list[tuple[float, float]]]] = [
    (30, _pyramid_scribble()),
    (20, [(60, 346), (90, 340), (122, 346)]),
]
HOVER_AT = (300, 395)  # where the brush circle is left, on plain sand


def start_xvfb() -> subprocess.Popen | None:
    """A private X server on a free display number, or None when Xvfb is not installed."""
    binary = shutil.which("Xvfb")
    if binary is None:
        return None
    for number in range(90, 140):
        if Path(f"/tmp/.X11-unix/X{number}").exists() or Path(f"/tmp/.X{number}-lock").exists():
            continue
        server = subprocess.Popen(
            [binary, f":{number}", "-screen", "0", "1920x1080x24", "-nolisten", "tcp"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if Path(f"/tmp/.X11-unix/X{number}").exists():
                os.environ["DISPLAY"] = f":{number}"
                return server
            if server.poll() is not None:
                break
            time.sleep(0.05)
        server.kill()
    return None


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="model file (default: the shipped model)")
    parser.add_argument("--output", default=str(ROOT / "docs" / "screenshot.png"))
    parser.add_argument("--size", default="1560x720", help="window size, WIDTHxHEIGHT")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--offscreen", action="store_true",
                        help="no X server: render offscreen and grab the widget")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    xvfb = None
    if args.offscreen:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    elif not os.environ.get("DISPLAY"):
        xvfb = start_xvfb()
        if xvfb is None:
            print("Xvfb not found: rendering offscreen instead", flush=True)
            os.environ["QT_QPA_PLATFORM"] = "offscreen"
    if os.environ.get("QT_QPA_PLATFORM") != "offscreen":
        os.environ["QT_QPA_PLATFORM"] = "xcb"
    try:
        return take_screenshot(args, width, height)
    finally:
        if xvfb is not None:
            xvfb.terminate()
            xvfb.wait(timeout=10)


def take_screenshot(args: argparse.Namespace, width: int, height: int) -> int:
    from PySide6.QtCore import QPointF, QSettings, Qt
    from PySide6.QtGui import QGuiApplication
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    from core.resources import resource_path, shipped_model_path
    from desktop_app.main_window import MainWindow
    from desktop_app.settings import AppSettings

    if args.checkpoint is None and shipped_model_path() is None:
        print("no model: resources/model/pconv_unet.safetensors is not shipped yet; "
              "pass --checkpoint PATH", file=sys.stderr)
        return 1
    app = QApplication.instance() or QApplication([sys.argv[0]])
    errors: list[str] = []

    class ScriptWindow(MainWindow):
        def show_error(self, title: str, message: str) -> None:
            errors.append(f"{title}: {message}")

    def wait_for(done, seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while not done():
            if errors:
                raise SystemExit(f"{what} failed: {errors[0]}")
            if time.monotonic() > deadline:
                raise SystemExit(f"{what}: no answer within {seconds:.0f} s")
            QTest.qWait(20)

    with tempfile.TemporaryDirectory() as tmp:
        settings = AppSettings(QSettings(str(Path(tmp) / "s.ini"), QSettings.Format.IniFormat))
        window = ScriptWindow(settings=settings, checkpoint=args.checkpoint, device=args.device)
        try:
            window.resize(width, height)
            window.move(0, 0)
            window.show()
            QTest.qWaitForWindowExposed(window)
            wait_for(lambda: window.model_info is not None, 300, "loading the model")
            if not window.open_path(resource_path("sample.jpg")):
                raise SystemExit(f"cannot open the sample: {errors}")
            canvas = window.canvas
            QTest.qWait(100)
            window.canvas_fit()
            QTest.qWait(100)

            def at(x: float, y: float):
                return canvas.image_to_widget(QPointF(x, y)).toPoint()

            for size, points in STROKES:
                canvas.set_brush_size(size)
                QTest.mousePress(canvas, Qt.MouseButton.LeftButton, pos=at(*points[0]))
                for point in points[1:]:
                    QTest.mouseMove(canvas, at(*point))
                QTest.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=at(*points[-1]))
            canvas.set_brush_size(STROKES[0][0])
            QTest.mouseMove(canvas, at(*HOVER_AT))  # show the brush circle

            window.run_inpaint()
            wait_for(lambda: not window.is_running, 600, "inpainting")
            if not window.has_current_result:
                raise SystemExit(f"no result: {errors}")
            QTest.mouseMove(canvas, at(*HOVER_AT))
            QTest.qWait(300)
            platform = QGuiApplication.platformName()
            if platform == "offscreen":
                image = window.grab()
            else:  # what the X server shows, not just what Qt painted
                geometry = window.frameGeometry()
                image = window.screen().grabWindow(0, geometry.x(), geometry.y(),
                                                   geometry.width(), geometry.height())
            output = Path(args.output)
            output.parent.mkdir(parents=True, exist_ok=True)
            if not image.save(str(output), "PNG"):
                raise SystemExit(f"could not write {output}")
            info = window.model_info
            print(f"saved {output} ({image.width()} x {image.height()}, platform {platform}, "
                  f"model {Path(info.source).name} on {info.device_name})")
        finally:
            window.shutdown()
            app.processEvents()
    return 0


if __name__ == "__main__":
    sys.exit(main())
