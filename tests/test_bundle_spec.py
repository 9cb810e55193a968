"""Fast static checks of the PyInstaller bundle recipe (app.spec, scripts/build_bundle.sh).

The real build and the frozen self-test run in scripts/build_bundle.sh (CI's last stage); these
tests only catch a broken recipe early: the spec is executed with stand-ins for PyInstaller's
classes, and the app's own imports are compared with what the spec leaves out.
"""

from __future__ import annotations

import ast
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "app.spec"
BUILD_SCRIPT = ROOT / "scripts" / "build_bundle.sh"


class _Recorder:
    """Stands in for one of PyInstaller's spec classes and keeps what it was given."""

    calls: dict[str, dict[str, Any]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs
        _Recorder.calls[type(self).__name__] = {"args": args, **kwargs}


class Analysis(_Recorder):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pure: list[tuple[str, str, str]] = []
        self.scripts: list[tuple[str, str, str]] = []
        self.binaries = list(SAMPLE_BINARIES)
        self.datas = list(SAMPLE_DATAS)


class PYZ(_Recorder):
    pass


class EXE(_Recorder):
    pass


class COLLECT(_Recorder):
    pass


SAMPLE_BINARIES = [
    ("torch/lib/libc10.so", "/x/torch/lib/libc10.so", "BINARY"),
    ("torch/lib/libtorchbind_test.so", "/x/torch/lib/libtorchbind_test.so", "BINARY"),
    ("torch/bin/torch_shm_manager", "/x/torch/bin/torch_shm_manager", "BINARY"),
    ("torch/bin/test_api", "/x/torch/bin/test_api", "BINARY"),
    ("PySide6/Qt/lib/libQt6Gui.so.6", "/x/libQt6Gui.so.6", "BINARY"),
    ("PySide6/Qt/lib/libQt6Network.so.6", "/x/libQt6Network.so.6", "BINARY"),
    ("libQt6Gui.so.6", "PySide6/Qt/lib/libQt6Gui.so.6", "SYMLINK"),
    ("libQt6Network.so.6", "PySide6/Qt/lib/libQt6Network.so.6", "SYMLINK"),
    ("PySide6/Qt/plugins/platforms/libqxcb.so", "/x/libqxcb.so", "BINARY"),
    ("PySide6/Qt/plugins/platforms/libqoffscreen.so", "/x/libqoffscreen.so", "BINARY"),
    ("PySide6/Qt/plugins/platforms/libqwayland-egl.so", "/x/libqwayland-egl.so", "BINARY"),
    ("PySide6/Qt/plugins/imageformats/libqjpeg.so", "/x/libqjpeg.so", "BINARY"),
]
SAMPLE_DATAS = [
    ("resources/sample.jpg", "/x/resources/sample.jpg", "DATA"),
    ("resources/model/pconv_unet.safetensors", "/x/pconv_unet.safetensors", "DATA"),
    ("torch/include/ATen/ATen.h", "/x/ATen.h", "DATA"),
    ("torch/__init__.pyi", "/x/__init__.pyi", "DATA"),
    ("PySide6/Qt/translations/qtbase_de.qm", "/x/qtbase_de.qm", "DATA"),
]


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """app.spec executed with the stand-ins: its namespace plus the recorded calls."""
    _Recorder.calls = {}
    namespace: dict[str, Any] = {
        "Analysis": Analysis, "PYZ": PYZ, "EXE": EXE, "COLLECT": COLLECT,
        "SPECPATH": str(ROOT), "SPEC": str(SPEC), "specnm": "app",
        "workpath": str(tmp_path_factory.mktemp("pyinstaller-work")),
        "DISTPATH": str(tmp_path_factory.mktemp("dist")), "os": os,
    }
    exec(compile(SPEC.read_text(), str(SPEC), "exec"), namespace)  # noqa: S102 - our own spec
    namespace["calls"] = dict(_Recorder.calls)
    return namespace


def test_spec_builds_a_windowed_onedir_bundle_without_upx(spec: dict[str, Any]) -> None:
    exe = spec["calls"]["EXE"]
    collect = spec["calls"]["COLLECT"]
    assert exe["name"] == "pconv-studio" and collect["name"] == "pconv-studio"
    assert exe["exclude_binaries"] is True  # one folder, not one file
    assert exe["console"] is False
    assert exe["upx"] is False and collect["upx"] is False
    assert exe["args"][2] == []  # no debug/verbose bootloader options left in


def test_spec_entry_point_and_resources(spec: dict[str, Any]) -> None:
    analysis = spec["calls"]["Analysis"]
    (scripts,) = analysis["args"]
    assert [Path(s) for s in scripts] == [ROOT / "desktop_app" / "__main__.py"]
    assert str(ROOT) in analysis["pathex"]
    # resources/ goes in as "resources", where core.resources looks under sys._MEIPASS
    assert (str(ROOT / "resources"), "resources") in analysis["datas"]
    assert "desktop_app.selftest" in analysis["hiddenimports"]


def test_spec_excludes_the_trainer_and_its_tools(spec: dict[str, Any]) -> None:
    excludes = set(spec["calls"]["Analysis"]["excludes"])
    for name in ("torchvision", "tensorboard", "tqdm", "pytest", "core.train",
                 "PySide6.QtWebEngineCore", "PySide6.QtQml", "PySide6.QtQuick",
                 "PySide6.QtNetwork"):
        assert name in excludes, name


def test_spec_drops_unneeded_files_and_their_links(spec: dict[str, Any]) -> None:
    binaries = {dest for dest, _src, _kind in spec["a"].binaries}
    datas = {dest for dest, _src, _kind in spec["a"].datas}
    assert binaries == {
        "torch/lib/libc10.so", "torch/bin/torch_shm_manager", "PySide6/Qt/lib/libQt6Gui.so.6",
        "libQt6Gui.so.6", "PySide6/Qt/plugins/platforms/libqxcb.so",
        "PySide6/Qt/plugins/platforms/libqoffscreen.so",
        "PySide6/Qt/plugins/imageformats/libqjpeg.so",
    }
    assert datas == {"resources/sample.jpg", "resources/model/pconv_unet.safetensors"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _app_imports() -> set[str]:
    """Every module name the app's code imports, following core.* from desktop_app."""
    seen: set[str] = set()
    todo = [p for p in sorted((ROOT / "desktop_app").glob("*.py"))]
    done: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in done:
            continue
        done.add(path)
        for name in _imports(path):
            seen.add(name)
            if name.startswith("core."):
                candidate = ROOT / (name.split(".")[0] + "/" + name.split(".")[1] + ".py")
                if candidate.is_file():
                    todo.append(candidate)
    return seen


def _excluded(name: str, excludes: set[str]) -> bool:
    parts = name.split(".")
    return any(".".join(parts[:i]) in excludes for i in range(1, len(parts) + 1))


def test_nothing_the_app_imports_is_excluded(spec: dict[str, Any]) -> None:
    excludes = set(spec["calls"]["Analysis"]["excludes"])
    imported = _app_imports()
    assert any(name.startswith("core.inference") for name in imported)
    assert any(name.startswith("PySide6.QtWidgets") for name in imported)
    clash = sorted(name for name in imported if _excluded(name, excludes))
    assert not clash, f"app.spec excludes modules the app imports: {clash}"


def test_build_script_is_valid_and_runs_the_frozen_self_test() -> None:
    subprocess.run(["bash", "-n", str(BUILD_SCRIPT)], check=True)
    text = BUILD_SCRIPT.read_text()
    assert "QT_QPA_PLATFORM=offscreen" in text and "--self-test" in text
    assert "build/bundle-venv" in text and "app.spec" in text
    commands = text.replace("\\\n", " ").splitlines()  # join continued lines
    installs = [line for line in commands if '"${pip[@]}"' in line]
    assert installs and not any("torchvision" in line or ".[" in line or " -e " in line
                                for line in installs)
    assert "build_bundle.sh" in (ROOT / ".ci" / "run").read_text()
