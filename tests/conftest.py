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


@pytest.fixture
def fake_cuda_oom(monkeypatch):
    """``fake_cuda_oom(inpainter) -> calls``: make ``inpainter`` believe it is on a GPU whose
    every pass runs out of memory (the model itself stays on the CPU); ``calls`` records the
    device type of each network pass, ``fake_cuda_oom.sparse`` whether it computed only the
    needed pixels."""
    from core.inference import Inpainter

    calls: list[str] = []
    sparse: list[bool] = []  # per pass: whether the decoder computed only the needed pixels
    real_forward = Inpainter._forward

    def forward(self, image_t, valid_t, passes=1, needed_t=None):
        calls.append(self.device.type)
        sparse.append(needed_t is not None)
        if self.device.type == "cuda":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(self, image_t, valid_t, passes, needed_t)

    monkeypatch.setattr(Inpainter, "_forward", forward)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)

    def on(inpainter: Inpainter) -> list[str]:
        inpainter.device = torch.device("cuda")  # so also the GPU's dense decoder
        return calls

    on.sparse = sparse
    return on
