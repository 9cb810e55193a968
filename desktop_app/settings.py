"""What the app remembers between runs, typed, in one place (QSettings underneath)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings

from desktop_app import ORGANIZATION, SETTINGS_APPLICATION

MAX_RECENT_FILES = 10
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_BRUSH_SIZE = 40
MIN_BRUSH_SIZE = 1
MAX_BRUSH_SIZE = 500


class AppSettings:
    """Brush size, last folder, device, model, recent files, live mode, window layout.

    Tests and the self-test pass their own QSettings so a user's settings are never touched.
    """

    def __init__(self, qsettings: QSettings | None = None) -> None:
        self.qsettings = qsettings or QSettings(ORGANIZATION, SETTINGS_APPLICATION)

    # -- helpers ---------------------------------------------------------------------------
    def _get_int(self, key: str, default: int, low: int, high: int) -> int:
        try:
            value = int(self.qsettings.value(key, default))
        except (TypeError, ValueError):
            return default
        return min(max(value, low), high)

    def _get_str(self, key: str, default: str = "") -> str:
        value = self.qsettings.value(key, default)
        return value if isinstance(value, str) else default

    def _get_bool(self, key: str, default: bool) -> bool:
        value = self.qsettings.value(key, default)
        if isinstance(value, str):  # INI files store booleans as text
            return value.lower() in ("true", "1", "yes")
        return bool(value)

    def sync(self) -> None:
        self.qsettings.sync()

    # -- values ----------------------------------------------------------------------------
    @property
    def brush_size(self) -> int:
        return self._get_int("brush/size", DEFAULT_BRUSH_SIZE, MIN_BRUSH_SIZE, MAX_BRUSH_SIZE)

    @brush_size.setter
    def brush_size(self, value: int) -> None:
        self.qsettings.setValue("brush/size", int(value))

    @property
    def grow_pixels(self) -> int:
        return self._get_int("mask/grow_pixels", 4, 1, 200)

    @grow_pixels.setter
    def grow_pixels(self, value: int) -> None:
        self.qsettings.setValue("mask/grow_pixels", int(value))

    @property
    def last_folder(self) -> str:
        folder = self._get_str("files/last_folder")
        return folder if folder and Path(folder).is_dir() else str(Path.home())

    @last_folder.setter
    def last_folder(self, folder: str | Path) -> None:
        self.qsettings.setValue("files/last_folder", str(folder))

    @property
    def device(self) -> str:
        device = self._get_str("model/device", "auto")
        return device if device in DEVICES else "auto"

    @device.setter
    def device(self, value: str) -> None:
        self.qsettings.setValue("model/device", value if value in DEVICES else "auto")

    @property
    def model_path(self) -> str:
        """A checkpoint the user loaded, or "" for the shipped model."""
        return self._get_str("model/path")

    @model_path.setter
    def model_path(self, value: str | Path | None) -> None:
        self.qsettings.setValue("model/path", str(value) if value else "")

    @property
    def single_pass(self) -> bool:
        """Run the network once per hole instead of the model's mirrored passes (faster, but
        the widest holes can keep a spot; see core.inference.Inpainter._forward)."""
        return self._get_bool("model/single_pass", False)

    @single_pass.setter
    def single_pass(self, value: bool) -> None:
        self.qsettings.setValue("model/single_pass", bool(value))

    @property
    def full_resolution(self) -> bool:
        """Fill long strokes tile by tile at the scale their thickness needs, as on a GPU,
        instead of letting a CPU shrink them up to 2x in large jobs (sharper, slower; see
        core.inference.Inpainter.tile_shrink)."""
        return self._get_bool("model/full_resolution", False)

    @full_resolution.setter
    def full_resolution(self, value: bool) -> None:
        self.qsettings.setValue("model/full_resolution", bool(value))

    @property
    def live_mode(self) -> bool:
        return self._get_bool("inpaint/live", False)

    @live_mode.setter
    def live_mode(self, value: bool) -> None:
        self.qsettings.setValue("inpaint/live", bool(value))

    @property
    def recent_files(self) -> list[str]:
        value = self.qsettings.value("files/recent", [])
        if isinstance(value, str):  # a single entry comes back as a plain string
            value = [value]
        if not isinstance(value, list):
            return []
        return [str(v) for v in value if v][:MAX_RECENT_FILES]

    def add_recent_file(self, path: str | Path) -> None:
        entry = str(Path(path).resolve())
        files = [f for f in self.recent_files if f != entry]
        self.qsettings.setValue("files/recent", [entry, *files][:MAX_RECENT_FILES])

    def remove_recent_file(self, path: str | Path) -> None:
        entry = str(Path(path).resolve())
        self.qsettings.setValue("files/recent", [f for f in self.recent_files if f != entry])

    def clear_recent_files(self) -> None:
        self.qsettings.setValue("files/recent", [])

    @property
    def window_geometry(self) -> QByteArray | None:
        value = self.qsettings.value("window/geometry")
        return value if isinstance(value, QByteArray) else None

    @window_geometry.setter
    def window_geometry(self, value: QByteArray) -> None:
        self.qsettings.setValue("window/geometry", value)

    @property
    def splitter_state(self) -> QByteArray | None:
        value = self.qsettings.value("window/splitter")
        return value if isinstance(value, QByteArray) else None

    @splitter_state.setter
    def splitter_state(self, value: QByteArray) -> None:
        self.qsettings.setValue("window/splitter", value)
