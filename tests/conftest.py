"""Shared test setup: one torch thread (timings on 2 cores collapse with more)."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QT_DRIVER", "PySide6")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def tiny_model_file(tmp_path):
    """A random-weight 4-level model saved as the app/CLI would load it."""
    from core.checkpoint import save_model_file
    from core.model import PConvUNet

    torch.manual_seed(0)
    path = tmp_path / "tiny.safetensors"
    save_model_file(path, PConvUNet(layers=4, width=8), half=False, extra={"work_size": 64})
    return path


@pytest.fixture
def rng():
    return np.random.default_rng(0)
