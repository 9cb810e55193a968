"""One place that finds the shipped resources, from a source checkout or a frozen bundle."""

from __future__ import annotations

import os
import sys
from pathlib import Path

SHIPPED_MODEL_NAME = "pconv_unet.safetensors"


def resources_dir() -> Path:
    """resources/ beside the packages, or inside a PyInstaller bundle (sys._MEIPASS)."""
    override = os.environ.get("PCONV_RESOURCES")
    if override:
        return Path(override)
    frozen_root = getattr(sys, "_MEIPASS", None)
    if frozen_root:
        return Path(frozen_root) / "resources"
    return Path(__file__).resolve().parent.parent / "resources"


def resource_path(*parts: str) -> Path:
    return resources_dir().joinpath(*parts)


def shipped_model_path() -> Path | None:
    """The model the app uses by default, or None when none is shipped."""
    path = resource_path("model", SHIPPED_MODEL_NAME)
    return path if path.is_file() else None
