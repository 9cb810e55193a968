"""PConv Studio: paint a hole on a photo and let the partial-convolution U-Net fill it.

The package is the desktop front end of ``core.inference``. It imports Qt through PySide6 and
must never import torchvision or the trainer, so that the installed app stays small.
"""

from __future__ import annotations

import os

# qimage2ndarray picks its Qt binding from QT_DRIVER; pin it before anyone imports it.
os.environ.setdefault("QT_DRIVER", "PySide6")

APP_NAME = "PConv Studio"
ORGANIZATION = "pconv-studio"
SETTINGS_APPLICATION = "studio"

__all__ = ["APP_NAME", "ORGANIZATION", "SETTINGS_APPLICATION", "app_version"]


def app_version() -> str:
    """The installed distribution's version, or the core package's in a bare checkout."""
    try:
        from importlib.metadata import version

        return version("pconv-studio")
    except Exception:  # noqa: BLE001 - a checkout without metadata still has a version
        import core

        return core.__version__
