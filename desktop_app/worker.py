"""Inpainting off the GUI thread: one worker QObject living in a QThread.

The GUI hands the worker owned numpy copies through queued signals and gets owned arrays
back; the worker never touches a widget, QPixmap or the document. Every job carries a
request id. Cancelling sets an id threshold that the worker checks between the inpainter's
steps (``should_abort``), and the GUI drops any result whose id or revision is no longer
current, so a result computed from an older mask never reaches the screen.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, QThread, Signal, Slot

WARM_UP_SIDE = 512  # InpaintWorker._warm_up's photo: this high, twice as wide

NO_MODEL_MESSAGE = (
    "No inpainting model is loaded. No trained model is shipped with this copy yet: "
    "use Model > Load Checkpoint... to choose a checkpoint written by core.train."
)


@dataclass(frozen=True)
class InpaintJob:
    """One request: pixels and mask are private copies that only the worker reads."""

    request_id: int
    revision: int
    photo: np.ndarray
    hole_mask: np.ndarray


@dataclass(frozen=True)
class ModelRequest:
    path: str | None  # None: the model shipped in resources/
    device: str  # "auto", "cpu" or "cuda"
    precision: str = "auto"  # "auto", "fp32" or "bf16" (core.inference.PRECISIONS)
    passes: int | None = None  # network passes per hole; None: what the model file says
    full_resolution: bool = False  # long strokes never shrunk to fit (Inpainter.tile_shrink 1)


@dataclass(frozen=True)
class ModelInfo:
    """What the status bar and self-test report about the loaded model."""

    source: str
    device_name: str
    layers: int
    width: int
    work_size: int
    cuda_available: bool = False
    passes: int = 1
    tile_shrink: float = 1.0  # core.inference.Inpainter.tile_shrink; 0: no tiles


def worker_torch_threads() -> int:
    """Every core this process may use. Painting on the canvas while a job runs costs the GUI
    thread ~1 ms per brush segment, and with both cores of a 2-core machine busy the event
    loop still ticked within 15.5 ms; the job, scattered strokes on a 12-MP photo, took 1.2 s
    instead of 2.0 s on one thread (docs/performance.md, ninth session). Until then one core
    was left to the GUI."""
    try:
        return max(1, len(os.sched_getaffinity(0)))  # honours taskset and cpusets (not quotas)
    except (AttributeError, OSError):  # not on every platform
        return max(1, os.cpu_count() or 1)


class InpaintWorker(QObject):
    """Runs jobs and model loads in its own thread; talks back only through signals."""

    started = Signal(int)
    progress = Signal(int, int, int)  # request id, steps done, steps in all
    result = Signal(int, object)  # request id, core.inference.InpaintResult
    error = Signal(int, str)
    cancelled = Signal(int)
    finished = Signal(int)  # after result, error or cancelled, always
    model_loaded = Signal(object)  # ModelInfo
    model_error = Signal(str)

    def __init__(self, torch_threads: int | None = None) -> None:
        super().__init__()
        self._inpainter = None  # core.inference.Inpainter, touched only in the worker thread
        self._abort_below = 0
        self._lock = threading.Lock()
        self._torch_threads = torch_threads or worker_torch_threads()

    # -- called from the GUI thread --------------------------------------------------------
    def cancel_up_to(self, request_id: int) -> None:
        """Abort every job whose id is <= ``request_id`` (thread-safe)."""
        with self._lock:
            self._abort_below = max(self._abort_below, request_id + 1)

    def _should_abort(self, request_id: int) -> bool:
        with self._lock:
            return request_id < self._abort_below

    # -- slots, run in the worker thread ---------------------------------------------------
    @Slot(object)
    def load_model(self, request: ModelRequest) -> None:
        """Load a checkpoint; on failure keep the previous model and report why. Every
        request gets exactly one answer, model_loaded or model_error: the window matches
        answers to its requests in order."""
        try:
            from core.inference import Inpainter

            inpainter = Inpainter.from_checkpoint(request.path, device=request.device,
                                                  precision=request.precision,
                                                  passes=request.passes)
            if request.full_resolution:
                inpainter.tile_shrink = 1.0
            self._warm_up(inpainter)  # before the signal: once it is out, the worker is idle
            info = _model_info(inpainter)
        except Exception as exc:  # noqa: BLE001 - shown to the user, the app carries on
            self.model_error.emit(_one_line(exc))
            return
        self._inpainter = inpainter
        self.model_loaded.emit(info)

    def _warm_up(self, inpainter) -> None:
        """One small job right after a model loads, so that the user's first job does not
        build the kernels (oneDNN's for each shape, the decoder's phase kernels; on a GPU,
        cuDNN's). On this 2-core CPU it takes 0.17 s and the first 12-MP job (scattered
        strokes, 2 threads) went from 0.15 s above the later ones to 0.03-0.08 s
        (docs/performance.md, ninth session). Two holes, so crops run at once here too. A
        failure is left to the user's own job to report."""
        import torch

        torch.set_num_threads(self._torch_threads)
        side = WARM_UP_SIDE
        photo = np.full((side, 2 * side, 3), 128, dtype=np.uint8)
        hole = np.zeros(photo.shape[:2], dtype=bool)
        for x in (side // 2, side * 3 // 2):
            hole[side // 2 - 8 : side // 2 + 8, x - 8 : x + 8] = True
        device = inpainter.device
        try:
            inpainter.inpaint(photo, hole)
        except Exception:  # noqa: BLE001, S110 - the user's job reports it, in their words
            pass
        if inpainter.device != device:  # a GPU out of memory here: the user's job says so
            inpainter.to(device)

    @Slot(object)
    def run(self, job: InpaintJob) -> None:
        request_id = job.request_id
        if self._should_abort(request_id):  # superseded while it waited in the queue
            self.cancelled.emit(request_id)
            self.finished.emit(request_id)
            return
        self.started.emit(request_id)
        try:
            if self._inpainter is None:
                self.error.emit(request_id, NO_MODEL_MESSAGE)
                return
            import torch

            from core.inference import InpaintCancelled

            torch.set_num_threads(self._torch_threads)
            try:
                result = self._inpainter.inpaint(
                    job.photo,
                    job.hole_mask,
                    progress=lambda done, total: self.progress.emit(request_id, done, total),
                    should_abort=lambda: self._should_abort(request_id),
                )
            except InpaintCancelled:
                self.cancelled.emit(request_id)
                return
            self.result.emit(request_id, result)
        except Exception as exc:  # noqa: BLE001 - surfaced as a dialog in the GUI thread
            self.error.emit(request_id, _one_line(exc))
        finally:
            self.finished.emit(request_id)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    if isinstance(exc, (ValueError, OSError)):
        return text
    return f"{type(exc).__name__}: {text}"


def _model_info(inpainter) -> ModelInfo:
    import torch

    config = inpainter.model.config
    return ModelInfo(
        source=str(inpainter.source),
        device_name=inpainter.device_name,
        layers=int(config.layers),
        width=int(config.width),
        work_size=int(inpainter.work_size),
        cuda_available=bool(torch.cuda.is_available()),
        passes=int(inpainter.passes),
        # 0: no tiles (a model without max_hole_radius never gets them)
        tile_shrink=float(inpainter.tile_shrink) if inpainter.max_hole_radius else 0.0,
    )


class InpaintService(QObject):
    """The GUI thread's handle on the worker: owns the thread, numbers the requests."""

    _run_requested = Signal(object)
    _load_requested = Signal(object)

    def __init__(self, parent: QObject | None = None, torch_threads: int | None = None) -> None:
        super().__init__(parent)
        self.thread = QThread()
        self.thread.setObjectName("inpaint-worker")
        self.worker = InpaintWorker(torch_threads)
        self.worker.moveToThread(self.thread)
        # The worker lives in the other thread, so these connections are queued.
        self._run_requested.connect(self.worker.run)
        self._load_requested.connect(self.worker.load_model)
        self._last_request_id = 0
        self.thread.start()

    @property
    def last_request_id(self) -> int:
        return self._last_request_id

    def submit(self, photo: np.ndarray, hole_mask: np.ndarray, revision: int) -> int:
        """Queue a job on copies of ``photo`` and ``hole_mask``; older jobs are cancelled."""
        self._last_request_id += 1
        request_id = self._last_request_id
        self.worker.cancel_up_to(request_id - 1)
        job = InpaintJob(request_id, revision, np.array(photo, copy=True),
                         np.array(hole_mask, dtype=bool, copy=True))
        self._run_requested.emit(job)
        return request_id

    def cancel(self, request_id: int | None = None) -> None:
        """Cancel ``request_id`` and everything before it (default: every request so far)."""
        self.worker.cancel_up_to(self._last_request_id if request_id is None else request_id)

    def load_model(self, path: str | Path | None, device: str, precision: str = "auto",
                   passes: int | None = None, full_resolution: bool = False) -> None:
        self._load_requested.emit(ModelRequest(str(path) if path else None, device, precision,
                                               passes, full_resolution))

    def shutdown(self, timeout_ms: int = 60_000) -> bool:
        """Cancel everything and stop the thread; True when it stopped within the timeout.

        A job stops at the inpainter's next step, so the wait is at most one network pass.
        """
        self.cancel()
        self.thread.quit()
        return self.thread.wait(timeout_ms)
