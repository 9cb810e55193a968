"""Fixtures for the desktop app tests: offscreen Qt, private settings, tiny models, no
blocking dialogs."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

# Before Qt or qimage2ndarray are imported anywhere.
os.environ["QT_QPA_PLATFORM"] = "offscreen"
os.environ.setdefault("QT_DRIVER", "PySide6")
_SESSION_CONFIG = tempfile.mkdtemp(prefix="pconv-app-tests-")
os.environ["XDG_CONFIG_HOME"] = _SESSION_CONFIG

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from PySide6.QtCore import QSettings, QThread  # noqa: E402
from PySide6.QtWidgets import QApplication, QFileDialog, QMessageBox  # noqa: E402

from core.checkpoint import save_model_file  # noqa: E402
from core.model import PConvUNet  # noqa: E402
from desktop_app.settings import AppSettings  # noqa: E402

# Torch in the test process (model building) must not starve the GUI thread either.
torch.set_num_threads(1)

for _format in (QSettings.Format.NativeFormat, QSettings.Format.IniFormat):
    QSettings.setPath(_format, QSettings.Scope.UserScope, _SESSION_CONFIG)


@dataclass
class DialogRecorder:
    """What the app tried to tell or ask; ``confirm`` is the answer to every question."""

    errors: list[tuple[str, str]] = field(default_factory=list)
    error_threads_ok: list[bool] = field(default_factory=list)
    questions: list[tuple[str, str]] = field(default_factory=list)
    confirm: bool = True


@pytest.fixture(autouse=True)
def dialogs(monkeypatch: pytest.MonkeyPatch) -> DialogRecorder:
    """Replace modal dialogs so no test can block; record errors and questions."""
    recorder = DialogRecorder()
    buttons = QMessageBox.StandardButton

    def critical(parent, title, text, *args, **kwargs):
        recorder.errors.append((title, text))
        app = QApplication.instance()
        recorder.error_threads_ok.append(app is not None and
                                         QThread.currentThread() == app.thread())
        return buttons.Ok

    def question(parent, title, text, *args, **kwargs):
        recorder.questions.append((title, text))
        return buttons.Yes if recorder.confirm else buttons.No

    def no_file_dialog(*args, **kwargs):
        raise AssertionError("a test opened a file dialog; call the *_to/_from method instead")

    monkeypatch.setattr(QMessageBox, "critical", staticmethod(critical))
    monkeypatch.setattr(QMessageBox, "warning", staticmethod(critical))
    monkeypatch.setattr(QMessageBox, "question", staticmethod(question))
    monkeypatch.setattr(QMessageBox, "about", staticmethod(lambda *a, **k: None))
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(no_file_dialog))
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(no_file_dialog))
    return recorder


@pytest.fixture
def settings(tmp_path: Path) -> AppSettings:
    """Settings in this test's own INI file."""
    return AppSettings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight 4-level model: inference on a 96 x 128 photo takes milliseconds."""
    path = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    torch.manual_seed(0)
    save_model_file(path, PConvUNet(layers=4, width=8))
    return path


@pytest.fixture(scope="session")
def slow_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model big enough that one 512 x 512 pass keeps the worker busy about 0.3 s (one
    thread, warm; 0.35 s cold)."""
    path = tmp_path_factory.mktemp("models") / "slow.safetensors"
    torch.manual_seed(0)
    save_model_file(path, PConvUNet(layers=7, width=64))
    return path


def make_photo(height: int = 96, width: int = 128, seed: int = 0) -> np.ndarray:
    """A smooth colour gradient with some texture: every pixel differs from its neighbours."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    base = np.stack([xs * 255 / max(1, width - 1), ys * 255 / max(1, height - 1),
                     np.full_like(xs, 128)], axis=-1)
    noise = rng.integers(-20, 21, size=base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


@pytest.fixture
def photo_maker():
    """make_photo, for tests that need other sizes (test modules do not import conftest)."""
    return make_photo


@pytest.fixture
def photo_file(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    Image.fromarray(make_photo()).save(path)
    return path


@pytest.fixture
def big_photo_file(tmp_path: Path, photo_maker) -> Path:
    """A 512 x 512 photo: one pass of the slow model over it takes about 0.3 s."""
    path = tmp_path / "big.png"
    Image.fromarray(photo_maker(512, 512, seed=3)).save(path)
    return path


@pytest.fixture
def make_window(qtbot, settings: AppSettings, tiny_model_path: Path):
    """Build a MainWindow on the CPU with a given model; it is shut down after the test."""
    from desktop_app.main_window import MainWindow

    windows = []

    def make(checkpoint: Path | None = tiny_model_path, photo: Path | None = None,
             size: tuple[int, int] = (1000, 600)) -> MainWindow:
        window = MainWindow(settings=settings, checkpoint=checkpoint, device="cpu",
                            torch_threads=1)
        windows.append(window)
        qtbot.addWidget(window)
        window.resize(*size)
        window.show()
        qtbot.waitExposed(window)
        if checkpoint is not None:
            qtbot.waitUntil(lambda: window.model_info is not None or not window.model_loading,
                            timeout=20_000)
        if photo is not None:
            assert window.open_path(photo)
        return window

    yield make
    for window in windows:
        window.shutdown()


@pytest.fixture
def window(make_window, photo_file: Path):
    """A window with the tiny model and a 96 x 128 photo open."""
    return make_window(photo=photo_file)
