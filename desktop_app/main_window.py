"""The main window: wires the document, the canvas, the previews and the worker together.

Dialogs go through four small methods (show_error, ask_confirm, ask_open_path,
ask_save_path) so tests and the self-test can answer them without a modal loop.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from pathlib import Path

import numpy as np
from PySide6.QtCore import QPointF, QSignalBlocker, QSize, Qt, QTimer
from PySide6.QtGui import (
    QAction,
    QActionGroup,
    QCloseEvent,
    QDragEnterEvent,
    QDropEvent,
    QGuiApplication,
    QImage,
    QKeyEvent,
    QKeySequence,
    QPixmap,
    QShowEvent,
)
from PySide6.QtWidgets import (
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QSlider,
    QSpinBox,
    QSplitter,
    QToolBar,
    QToolButton,
)

from core.imageio import IMAGE_SUFFIXES, ImageLoadError, load_image, save_image
from core.masks import load_mask, save_mask
from core.resources import shipped_model_path
from desktop_app import APP_NAME
from desktop_app.canvas import MaskCanvas, ViewState
from desktop_app.document import Document
from desktop_app.previews import PreviewPanel
from desktop_app.qtimages import qimage_to_rgb
from desktop_app.settings import MAX_BRUSH_SIZE, MIN_BRUSH_SIZE, AppSettings
from desktop_app.worker import NO_MODEL_MESSAGE, InpaintService, ModelInfo

LIVE_DELAY_MS = 400
# How long closing waits for a running network pass to notice the cancel; the window is
# already hidden, and the worker writes no files, so the process may then simply exit.
SHUTDOWN_WAIT_MS = 5_000
FLASH_ORIGINAL_KEY = Qt.Key.Key_O
PHOTO_FILTER = "Images ({})".format(" ".join(f"*{s}" for s in IMAGE_SUFFIXES))
CHECKPOINT_FILTER = "Checkpoints (*.safetensors *.pt *.pth *.ckpt);;All files (*)"
MASK_FILTER = "Mask PNG (*.png)"


class MainWindow(QMainWindow):
    """PConv Studio's single window."""

    def __init__(
        self,
        settings: AppSettings | None = None,
        checkpoint: str | Path | None = None,
        device: str | None = None,
        torch_threads: int | None = None,
        precision: str = "auto",
    ) -> None:
        super().__init__()
        self._precision = precision
        self.settings = settings or AppSettings()
        self.document = Document(self)
        self.view_state = ViewState()
        self.canvas = MaskCanvas(self.document, self.view_state)
        self.canvas.set_brush_size(self.settings.brush_size)
        self.raw_panel = PreviewPanel(
            "Raw network output", "The network's output appears here after Inpaint.",
            self.view_state)
        self.composite_panel = PreviewPanel(
            "Composite", "The photo with the hole filled appears here after Inpaint.",
            self.view_state)
        self.service = InpaintService(self, torch_threads)

        self.model_info: ModelInfo | None = None
        self.model_loading = False
        self.model_message = ""  # why there is no model, when there is none
        self._model_path_in_use: str | None = None  # None = the shipped model
        # Loads sent to the worker and not yet answered, oldest first: it answers each with
        # model_loaded or model_error, in order, so each answer is matched to its own request.
        self._model_loads: deque[_ModelLoad] = deque()
        self._options_in_use: tuple[str, bool, bool] | None = None  # of the model in use
        self._device = device or self.settings.device
        self._device_from_settings = device is None  # not the command line's
        self.active_request: int | None = None  # the request whose result is awaited
        self._active_quiet = False  # started by live mode: errors go to the status bar
        self._active_revision = -1
        self.result = None  # core.inference.InpaintResult for ``result_revision``
        self._result_saved = False  # ``result``'s composite was saved to a file
        self.result_revision = -1
        self.dropped_results = 0
        self._shut_down = False
        self._worker_stopped = True
        self._flash_held = False

        self.live_timer = QTimer(self)
        self.live_timer.setSingleShot(True)
        self.live_timer.setInterval(LIVE_DELAY_MS)
        self.live_timer.timeout.connect(lambda: self.run_inpaint(quiet=True))

        self.setWindowTitle(APP_NAME)
        self.setAcceptDrops(True)
        self._build_layout()
        self._build_actions()
        self._build_menus()
        self._build_toolbar()
        self._build_status_bar()
        self._connect()
        self._restore_window()
        self._start_model(checkpoint)
        self._update_actions()

    # == construction =======================================================================
    def _build_layout(self) -> None:
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(self.canvas)
        self.splitter.addWidget(self.raw_panel)
        self.splitter.addWidget(self.composite_panel)
        self.splitter.setStretchFactor(0, 2)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setStretchFactor(2, 1)
        self.splitter.setSizes([2000, 1000, 1000])
        self.splitter.setChildrenCollapsible(False)
        self.setCentralWidget(self.splitter)
        self.canvas.setFocus()

    def _action(self, text: str, slot, shortcut: str | QKeySequence | list | None = None,
                tip: str | None = None, checkable: bool = False) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            keys = shortcut if isinstance(shortcut, list) else [shortcut]
            action.setShortcuts([QKeySequence(k) for k in keys])
        if tip:
            action.setStatusTip(tip)
            action.setToolTip(tip)
        action.setCheckable(checkable)
        if checkable:
            action.toggled.connect(slot)
        else:
            action.triggered.connect(lambda _checked=False: slot())
        self.addAction(action)  # shortcuts work even when the menus are hidden
        return action

    def _build_actions(self) -> None:
        key = QKeySequence.StandardKey
        self.open_action = self._action("&Open...", self.open_dialog, key.Open,
                                        "Open a photo")
        self.paste_action = self._action("&Paste Photo", self.paste_from_clipboard, key.Paste,
                                         "Use the image on the clipboard as the photo")
        self.save_action = self._action(
            "&Save Result As...", self.save_dialog, [key.Save, "Ctrl+Shift+S"],
            "Save the composite (or the photo when there is no current result)")
        self.export_mask_action = self._action("&Export Mask...", self.export_mask_dialog,
                                               tip="Save the hole mask as a lossless PNG")
        self.import_mask_action = self._action("&Import Mask...", self.import_mask_dialog,
                                               tip="Load a hole mask (white = fill)")
        self.quit_action = self._action("&Quit", self.close, key.Quit)

        self.undo_action = self.document.undo_stack.createUndoAction(self, "&Undo")
        self.undo_action.setShortcuts([QKeySequence("Ctrl+Z")])
        self.redo_action = self.document.undo_stack.createRedoAction(self, "&Redo")
        self.redo_action.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        self.addAction(self.undo_action)
        self.addAction(self.redo_action)
        self.clear_mask_action = self._action("&Clear Mask", self.clear_mask, "Ctrl+Backspace",
                                              "Remove the whole hole")
        self.grow_action = self._action("&Grow Mask", lambda: self.grow_mask(+1),
                                        tip="Grow the hole by N pixels")
        self.shrink_action = self._action("S&hrink Mask", lambda: self.grow_mask(-1),
                                          tip="Shrink the hole by N pixels")
        self.accept_action = self._action(
            "&Accept Result", self.accept_result, "Ctrl+Shift+Return",
            "Make the composite the photo and keep editing (undoable)")

        self.brush_action = self._action("&Brush", lambda: self.set_erase_mode(False), "B",
                                         "Paint the hole (left button)")
        self.eraser_action = self._action("&Eraser", lambda: self.set_erase_mode(True), "E",
                                          "Erase the hole (or use the right button)")
        tools = QActionGroup(self)
        for action in (self.brush_action, self.eraser_action):
            action.setCheckable(True)
        tools.addAction(self.brush_action)
        tools.addAction(self.eraser_action)
        self.brush_action.setChecked(True)
        self.smaller_brush_action = self._action("Smaller Brush", lambda: self.step_brush(-1),
                                                 "[")
        self.bigger_brush_action = self._action("Bigger Brush", lambda: self.step_brush(+1),
                                                "]")

        self.fit_action = self._action("&Fit", self.canvas_fit, "Ctrl+0", "Fit the photo")
        self.actual_size_action = self._action("&100 %", lambda: self.canvas.zoom_to(1.0),
                                               "Ctrl+1", "One photo pixel per screen pixel")
        self.zoom_in_action = self._action("Zoom &In", lambda: self.canvas.zoom_at(1.25),
                                           ["Ctrl++", "Ctrl+="])
        self.zoom_out_action = self._action("Zoom &Out", lambda: self.canvas.zoom_at(0.8),
                                            "Ctrl+-")

        self.inpaint_action = self._action(
            "&Inpaint", self.run_inpaint, ["Ctrl+Return", "Ctrl+Enter"],
            "Fill the hole with the network (Ctrl+Enter)")
        self.cancel_action = self._action("&Cancel", self.cancel_inpaint, "Esc",
                                          "Stop the running inpainting")
        self.live_action = self._action(
            "&Live Mode", self.set_live_mode, tip="Inpaint again shortly after each stroke",
            checkable=True)
        self.live_action.setChecked(self.settings.live_mode)

        self.load_checkpoint_action = self._action(
            "&Load Checkpoint...", self.load_checkpoint_dialog,
            tip="Use a checkpoint or model file written by core.train")
        self.shipped_model_action = self._action("Use &Shipped Model", self.use_shipped_model)
        self.device_group = QActionGroup(self)
        self.device_actions: dict[str, QAction] = {}
        for name, label in (("auto", "&Automatic"), ("cpu", "&CPU"), ("cuda", "C&UDA GPU")):
            action = QAction(label, self)
            action.setCheckable(True)
            action.setChecked(name == self._device)
            action.triggered.connect(lambda _c=False, n=name: self.set_device(n))
            self.device_group.addAction(action)
            self.device_actions[name] = action
        self.device_actions["cuda"].setEnabled(False)  # until the worker reports CUDA
        self.single_pass_action = self._action(
            "&Single Pass (Faster)", self.set_single_pass, checkable=True,
            tip="Run the network once per hole instead of averaging mirrored runs: faster, "
                "but the widest holes can keep a dark or bright spot")
        self.single_pass_action.setChecked(self.settings.single_pass)
        self.full_resolution_action = self._action(
            "&Full-Resolution Strokes (Slower)", self.set_full_resolution, checkable=True,
            tip="Fill long strokes tile by tile at full resolution, never shrunk to fit: "
                "sharper on large photos, slower on a CPU (a GPU always does this)")
        self.full_resolution_action.setChecked(self.settings.full_resolution)

        self.about_action = self._action("&About", self.show_about)

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        file_menu.addAction(self.open_action)
        self.recent_menu = file_menu.addMenu("Open &Recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        file_menu.addAction(self.paste_action)
        file_menu.addSeparator()
        file_menu.addAction(self.save_action)
        file_menu.addSeparator()
        file_menu.addAction(self.export_mask_action)
        file_menu.addAction(self.import_mask_action)
        file_menu.addSeparator()
        file_menu.addAction(self.quit_action)

        edit_menu = bar.addMenu("&Edit")
        for action in (self.undo_action, self.redo_action, None, self.brush_action,
                       self.eraser_action, self.smaller_brush_action, self.bigger_brush_action,
                       None, self.clear_mask_action, self.grow_action, self.shrink_action,
                       None, self.accept_action):
            edit_menu.addSeparator() if action is None else edit_menu.addAction(action)

        view_menu = bar.addMenu("&View")
        for action in (self.fit_action, self.actual_size_action, self.zoom_in_action,
                       self.zoom_out_action):
            view_menu.addAction(action)
        view_menu.addSeparator()
        hint = view_menu.addAction("Hold O to Show the Original")
        hint.setEnabled(False)

        run_menu = bar.addMenu("&Run")
        run_menu.addAction(self.inpaint_action)
        run_menu.addAction(self.cancel_action)
        run_menu.addAction(self.live_action)

        model_menu = bar.addMenu("&Model")
        model_menu.addAction(self.load_checkpoint_action)
        model_menu.addAction(self.shipped_model_action)
        device_menu = model_menu.addMenu("&Device")
        for action in self.device_actions.values():
            device_menu.addAction(action)
        model_menu.addAction(self.single_pass_action)
        model_menu.addAction(self.full_resolution_action)

        help_menu = bar.addMenu("&Help")
        help_menu.addAction(self.about_action)

    def _build_toolbar(self) -> None:
        bar = QToolBar("Tools")
        bar.setObjectName("tools")
        bar.setMovable(False)
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        self.addToolBar(bar)
        bar.addAction(self.open_action)
        bar.addAction(self.save_action)
        bar.addSeparator()
        bar.addAction(self.undo_action)
        bar.addAction(self.redo_action)
        bar.addSeparator()
        bar.addAction(self.brush_action)
        bar.addAction(self.eraser_action)
        self.brush_slider = QSlider(Qt.Orientation.Horizontal)
        self.brush_slider.setRange(MIN_BRUSH_SIZE, min(MAX_BRUSH_SIZE, 300))
        self.brush_slider.setValue(self.canvas.brush_size)
        self.brush_slider.setFixedWidth(130)
        self.brush_slider.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.brush_slider.setToolTip("Brush size in photo pixels ([ and ] keys)")
        self.brush_label = QLabel()
        self.brush_label.setMinimumWidth(52)
        bar.addWidget(self.brush_slider)
        bar.addWidget(self.brush_label)
        bar.addSeparator()
        bar.addAction(self.clear_mask_action)
        bar.addAction(self.shrink_action)
        self.grow_spin = QSpinBox()
        self.grow_spin.setRange(1, 200)
        self.grow_spin.setValue(self.settings.grow_pixels)
        self.grow_spin.setSuffix(" px")
        self.grow_spin.setToolTip("How many pixels Grow and Shrink move the edge of the hole")
        bar.addWidget(self.grow_spin)
        bar.addAction(self.grow_action)
        bar.addSeparator()
        bar.addAction(self.fit_action)
        bar.addAction(self.actual_size_action)
        bar.addSeparator()
        bar.addAction(self.inpaint_action)
        bar.addAction(self.cancel_action)
        bar.addAction(self.live_action)
        bar.addAction(self.accept_action)
        self.original_button = QToolButton()
        self.original_button.setText("Original")
        self.original_button.setToolTip("Hold to show the original photo (or hold O)")
        self.original_button.pressed.connect(lambda: self.set_flash_original(True))
        self.original_button.released.connect(lambda: self.set_flash_original(False))
        bar.addWidget(self.original_button)
        self._update_brush_label()

    def _build_status_bar(self) -> None:
        status = self.statusBar()
        self.progress_bar = QProgressBar()
        self.progress_bar.setMaximumWidth(160)
        self.progress_bar.setTextVisible(False)
        self.progress_bar.hide()
        self.hole_label = QLabel()
        self.zoom_label = QLabel()
        self.model_label = QLabel()
        self.device_label = QLabel()
        for widget in (self.progress_bar, self.hole_label, self.zoom_label, self.model_label,
                       self.device_label):
            status.addPermanentWidget(widget)
        self._update_zoom_label()

    def _connect(self) -> None:
        worker = self.service.worker
        worker.started.connect(self._on_job_started)
        worker.progress.connect(self._on_job_progress)
        worker.result.connect(self._on_job_result)
        worker.error.connect(self._on_job_error)
        worker.cancelled.connect(self._on_job_cancelled)
        worker.finished.connect(self._on_job_finished)
        worker.model_loaded.connect(self._on_model_loaded)
        worker.model_error.connect(self._on_model_error)
        self.document.revision_changed.connect(self._on_revision_changed)
        self.document.mask_changed.connect(self._on_mask_edited)
        self.document.photo_replaced.connect(self._on_photo_replaced)
        self.document.undo_stack.cleanChanged.connect(self._update_title)
        self.view_state.changed.connect(self._update_zoom_label)
        self.brush_slider.valueChanged.connect(self.canvas.set_brush_size)
        self.canvas.brush_size_changed.connect(self._on_brush_size_changed)
        self.grow_spin.valueChanged.connect(self._on_grow_pixels_changed)
        self.canvas.cursor_moved.connect(self._on_cursor_moved)

    def _restore_window(self) -> None:
        geometry = self.settings.window_geometry
        if geometry is None or not self.restoreGeometry(geometry):
            self.resize(1400, 820)
        state = self.settings.splitter_state
        if state is not None:
            self.splitter.restoreState(state)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt override
        return QSize(1400, 820)

    # == dialogs (tests replace these) ======================================================
    def show_error(self, title: str, message: str) -> None:
        """Report an error in the GUI thread; the app carries on."""
        self.statusBar().showMessage(message, 15_000)
        QMessageBox.critical(self, title, message)

    def ask_confirm(self, title: str, question: str) -> bool:
        answer = QMessageBox.question(
            self, title, question,
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def ask_open_path(self, title: str, file_filter: str) -> str | None:
        path, _ = QFileDialog.getOpenFileName(self, title, self.settings.last_folder,
                                              file_filter)
        return path or None

    def ask_save_path(self, title: str, suggested: str, file_filter: str) -> str | None:
        # Overwriting is confirmed by save_to()/export_mask_to(), which know the opened file.
        path, _ = QFileDialog.getSaveFileName(
            self, title, suggested, file_filter,
            options=QFileDialog.Option.DontConfirmOverwrite)
        return path or None

    def notify(self, message: str, timeout_ms: int = 8_000) -> None:
        self.statusBar().showMessage(message, timeout_ms)

    # == opening photos =====================================================================
    def open_dialog(self) -> None:
        path = self.ask_open_path("Open Photo", PHOTO_FILTER + ";;All files (*)")
        if path:
            self.open_path(path)

    def open_path(self, path: str | Path) -> bool:
        """Open a photo; on failure show why and keep the current photo."""
        path = Path(path)
        if not self._may_discard_changes():
            return False
        try:
            loaded = load_image(path)
        except ImageLoadError as exc:
            self.show_error("Cannot Open Photo", str(exc))
            if not path.exists():
                self.settings.remove_recent_file(path)
            return False
        except Exception as exc:  # noqa: BLE001 - any decoder failure is just a bad file
            self.show_error("Cannot Open Photo", f"{path}: {exc}")
            return False
        self._set_photo(loaded.pixels, path, loaded.save_metadata())
        self.settings.add_recent_file(path)
        self.settings.last_folder = str(path.resolve().parent)
        notes = "".join(f"; {note}" for note in loaded.notes)
        self.notify(f"Opened {path.name}: {self.document.width} x {self.document.height}{notes}")
        return True

    def paste_from_clipboard(self) -> bool:
        """Use an image (or an image file) on the clipboard as the photo."""
        mime = QGuiApplication.clipboard().mimeData()
        if mime is not None and mime.hasImage():
            image = QGuiApplication.clipboard().image()
            if not image.isNull():
                return self.open_pixels(qimage_to_rgb(image), "Pasted image")
        if mime is not None and mime.hasUrls():
            for url in mime.urls():
                if url.isLocalFile():
                    return self.open_path(url.toLocalFile())
        if mime is not None and mime.hasText():
            candidate = Path(mime.text().strip())
            if candidate.suffix.lower() in IMAGE_SUFFIXES and candidate.is_file():
                return self.open_path(candidate)
        self.notify("The clipboard holds no image.")
        return False

    def open_pixels(self, pixels: np.ndarray, name: str) -> bool:
        """Edit pixels that have no file (pasted or dropped image data)."""
        if not self._may_discard_changes():
            return False
        self._set_photo(pixels, None, None, name)
        self.notify(f"{name}: {self.document.width} x {self.document.height}")
        return True

    def _may_discard_changes(self) -> bool:
        if self.document.is_photo_modified:
            return self.ask_confirm(
                "Discard Changes?",
                f"{self.document.display_name} has accepted results that were not saved. "
                "Discard them?")
        if self.has_current_result and not self._result_saved:
            # (a network run's result, maybe minutes on a CPU, neither accepted nor saved)
            return self.ask_confirm(
                "Discard the Result?",
                "The inpainting result was neither accepted nor saved. Discard it?")
        return True

    def _set_photo(self, pixels: np.ndarray, path: Path | None, metadata: dict | None,
                   name: str | None = None) -> None:
        self._drop_running_job()
        self._clear_result()
        self.document.replace_photo(pixels, path, metadata, name)
        self.canvas.setFocus()  # so the space bar pans right away

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        files = self.settings.recent_files
        for index, entry in enumerate(files, start=1):
            action = self.recent_menu.addAction(f"&{index % 10} {Path(entry).name}")
            action.setToolTip(entry)
            action.setStatusTip(entry)
            action.triggered.connect(lambda _c=False, p=entry: self.open_path(p))
        if files:
            self.recent_menu.addSeparator()
            self.recent_menu.addAction("Clear List", self.settings.clear_recent_files)
        else:
            self.recent_menu.addAction("(none)").setEnabled(False)

    # drag and drop ----------------------------------------------------------------------
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt override
        mime = event.mimeData()
        if mime.hasImage() or any(url.isLocalFile() for url in mime.urls()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802
        mime = event.mimeData()
        for url in mime.urls():
            if url.isLocalFile():
                event.acceptProposedAction()
                self.open_path(url.toLocalFile())
                return
        if mime.hasImage():
            event.acceptProposedAction()
            data = mime.imageData()
            if isinstance(data, QPixmap):
                data = data.toImage()
            if not isinstance(data, QImage) or data.isNull():
                self.show_error("Cannot Open", "The dropped data is not an image this app "
                                               "can read.")
                return
            self.open_pixels(qimage_to_rgb(data), "Dropped image")

    # == saving =============================================================================
    def image_to_save(self) -> np.ndarray | None:
        """The composite when it matches the current mask, otherwise the photo."""
        if self.has_current_result:
            return self.result.composite
        return self.document.photo

    def suggested_save_path(self) -> str:
        folder = Path(self.settings.last_folder)
        source = self.document.source_path
        if source is not None:
            # (a source the app reads but cannot write, such as GIF or TGA, saves as PNG)
            suffix = source.suffix if source.suffix.lower() in IMAGE_SUFFIXES else ".png"
            return str(source.parent / f"{source.stem}_inpainted{suffix}")
        return str(folder / "inpainted.png")

    def save_dialog(self) -> None:
        if not self.document.has_photo:
            return
        path = self.ask_save_path("Save Result", self.suggested_save_path(),
                                  PHOTO_FILTER + ";;All files (*)")
        if path:
            self.save_to(path)

    def save_to(self, path: str | Path) -> bool:
        """Save the composite (format from the extension, EXIF and ICC kept)."""
        pixels = self.image_to_save()
        if pixels is None:
            return False
        if self.result is not None and not self.has_current_result and not self.ask_confirm(
                "Save Without the Fill?",
                "The mask changed after Inpaint, so the result shown is out of date. Save the "
                "photo without it? (Inpaint again to save a filled photo.)"):
            return False
        path = Path(path)
        if not path.suffix:
            path = path.with_suffix(".png")
        if not self._confirm_overwrite(path, "Cannot Save"):
            return False
        try:
            notes = save_image(path, pixels, **self.document.metadata)
        except Exception as exc:  # noqa: BLE001 - disk full, bad folder, bad extension...
            self.show_error("Cannot Save", str(exc))
            return False
        # The file holds the accepted results either way (a composite is made from the photo
        # that has them), and the result when it is the composite.
        self.document.mark_saved()
        self._result_saved = pixels is not self.document.photo
        self.settings.last_folder = str(path.resolve().parent)
        self.settings.add_recent_file(path)
        self._update_title()
        self.notify(f"Saved {path}" + "".join(f"; {note}" for note in notes))
        return True

    def _confirm_overwrite(self, path: Path, failure_title: str,
                           may_replace_photo: bool = True) -> bool:
        try:
            exists = path.exists()
        except OSError as exc:  # a folder without access, a name too long
            self.show_error(failure_title, f"{path}: {exc.strerror or exc}")
            return False
        if not exists:
            return True
        source = self.document.source_path
        if source is not None and _same_file(path, source):
            if not may_replace_photo:
                self.show_error(failure_title, f"{path.name} is the photo you opened; choose "
                                               "another name.")
                return False
            return self.ask_confirm(
                "Overwrite the Original?",
                f"{path.name} is the photo you opened. Replace the original file with the "
                "result? This cannot be undone.")
        return self.ask_confirm("Replace File?", f"{path} already exists. Replace it?")

    def export_mask_dialog(self) -> None:
        if not self.document.has_photo:
            return
        source = self.document.source_path
        suggested = (source.parent / f"{source.stem}_mask.png") if source else \
            Path(self.settings.last_folder) / "mask.png"
        path = self.ask_save_path("Export Mask", str(suggested), MASK_FILTER)
        if path:
            self.export_mask_to(path)

    def export_mask_to(self, path: str | Path) -> bool:
        """Write the hole mask as a lossless PNG, white = hole."""
        if self.document.hole_mask is None:
            return False
        path = Path(path)
        if path.suffix.lower() != ".png":
            path = path.with_name(path.name + ".png")
        if not self._confirm_overwrite(path, "Cannot Export Mask", may_replace_photo=False):
            return False
        try:
            save_mask(path, self.document.hole_mask)
        except Exception as exc:  # noqa: BLE001
            self.show_error("Cannot Export Mask", str(exc))
            return False
        self.settings.last_folder = str(path.resolve().parent)
        self.notify(f"Mask saved to {path}")
        return True

    def import_mask_dialog(self) -> None:
        if not self.document.has_photo:
            return
        path = self.ask_open_path("Import Mask", "Masks (*.png *.bmp *.tif *.tiff *.webp);;"
                                                 "All files (*)")
        if path:
            self.import_mask_from(path)

    def import_mask_from(self, path: str | Path) -> bool:
        """Replace the hole with a mask image (undoable); it must match the photo's size."""
        if self.document.hole_mask is None:
            return False
        source = self.document.source_path
        if source is not None and _same_file(Path(path), source):
            # binarised, its bright half would become the hole
            self.show_error("Cannot Import Mask",
                            f"{path} is the photo itself, not a mask (white = fill).")
            return False
        try:
            mask = load_mask(path)
            changed = self.document.edit_mask(mask, "Import mask")
        except ValueError as exc:
            self.show_error("Cannot Import Mask", str(exc))
            return False
        if not changed:
            self.notify("The imported mask is the same as the current one.")
        return True

    # == mask editing =======================================================================
    def set_erase_mode(self, erase: bool) -> None:
        self.canvas.erase_mode = erase
        (self.eraser_action if erase else self.brush_action).setChecked(True)
        self.canvas.update()

    def step_brush(self, direction: int) -> None:
        size = self.canvas.brush_size
        step = max(1, round(size * 0.15))
        self.canvas.set_brush_size(size + direction * step)

    def clear_mask(self) -> None:
        self.document.clear_mask()

    def grow_mask(self, sign: int) -> None:
        if not self.document.grow_mask(sign * self.grow_spin.value()):
            self.notify("There is no hole to grow or shrink." if not self.document.hole_pixels
                        else "The mask did not change.")

    def canvas_fit(self) -> None:
        self.canvas.fit_to_view()

    # == inpainting =========================================================================
    @property
    def is_running(self) -> bool:
        return self.active_request is not None

    @property
    def has_current_result(self) -> bool:
        return self.result is not None and self.result_revision == self.document.revision

    @property
    def has_model_source(self) -> bool:
        return self.model_info is not None or self.model_loading

    def run_inpaint(self, quiet: bool = False) -> int | None:
        """Start inpainting the current mask; returns the request id (None if not started).

        ``quiet`` (live mode) reports problems in the status bar instead of dialogs.
        """
        document = self.document
        if not document.has_photo:
            if not quiet:
                self.notify("Open a photo first.")
            return None
        if not document.hole_pixels:
            if not quiet:
                self.notify("Paint over what should be filled first (the red overlay).")
            return None
        if document.hole_pixels == document.width * document.height:
            if not quiet:
                self.show_error("Nothing to Fill From",
                                "The mask covers the whole photo: leave some of it visible.")
            return None
        if not self.has_model_source:
            if quiet:
                self.notify(self.model_message or NO_MODEL_MESSAGE, 15_000)
            else:
                self.show_error("No Model", self.model_message or NO_MODEL_MESSAGE)
            return None
        assert document.photo is not None and document.hole_mask is not None
        self.live_timer.stop()
        request_id = self.service.submit(document.photo, document.hole_mask, document.revision)
        self.active_request = request_id
        self._active_quiet = quiet
        self._active_revision = document.revision
        self.progress_bar.setRange(0, 0)  # busy until the worker reports steps
        self.progress_bar.show()
        self.notify("Inpainting..." if not self.model_loading else
                    "Inpainting (the model is still loading)...", 0)
        self._update_actions()
        return request_id

    def cancel_inpaint(self) -> None:
        if self.active_request is None:
            return
        self._drop_running_job()
        self.notify("Inpainting cancelled.")

    def _drop_running_job(self) -> None:
        """Forget the running job: it is aborted and whatever it returns is ignored."""
        if self.active_request is not None:
            self.service.cancel(self.active_request)
        self.active_request = None
        self.progress_bar.hide()
        self._update_actions()

    def _on_job_started(self, request_id: int) -> None:
        if request_id == self.active_request:
            self.progress_bar.setRange(0, 0)

    def _on_job_progress(self, request_id: int, done: int, total: int) -> None:
        if request_id == self.active_request and total > 1:
            self.progress_bar.setRange(0, total)
            self.progress_bar.setValue(done)

    def _on_job_result(self, request_id: int, result) -> None:
        if request_id != self.active_request:
            self.dropped_results += 1  # superseded or cancelled: never shown
            return
        if self._active_revision != self.document.revision:
            self.dropped_results += 1
            self.notify("The mask changed while inpainting ran: that result was dropped. "
                        "Press Inpaint again.", 10_000)
            return
        self.result = result
        self._result_saved = False
        self.result_revision = self._active_revision
        self.raw_panel.view.set_result(result.raw)
        self.composite_panel.view.set_result(result.composite)
        if self.model_info is not None and result.device != self.model_info.device_name:
            self.model_info = dataclasses.replace(self.model_info, device_name=result.device)
            self._update_model_labels()
        if result.notices:
            self.notify("; ".join(result.notices), 15_000)
        else:
            self.notify("Done. Accept the result to keep editing, or save it.")
        self._update_actions()

    def _on_job_error(self, request_id: int, message: str) -> None:
        if request_id != self.active_request:
            return
        if self._active_quiet:  # live mode: a dialog for every pause in painting is too many
            self.notify(f"Inpainting failed: {message}", 15_000)
        else:
            self.show_error("Inpainting Failed", message)

    def _on_job_cancelled(self, request_id: int) -> None:
        if request_id == self.active_request:  # cancelled by the worker itself
            self.notify("Inpainting cancelled.")

    def _on_job_finished(self, request_id: int) -> None:
        if request_id == self.active_request:
            self.active_request = None
            self.progress_bar.hide()
            self._update_actions()

    def accept_result(self) -> bool:
        """The composite becomes the photo (undoable); previews are cleared."""
        if not self.has_current_result:
            self.notify("There is no result for the current mask to accept.")
            return False
        composite = self.result.composite
        saved = self._result_saved
        self._clear_result()
        self.document.accept_result(composite)
        if saved:  # the file written holds exactly this photo
            self.document.mark_saved()
        self.notify("Result accepted. Undo (Ctrl+Z) brings the hole back.")
        return True

    def _clear_result(self) -> None:
        self.result = None
        self.result_revision = -1
        self.raw_panel.view.set_result(None)
        self.composite_panel.view.set_result(None)
        self._update_actions()

    def set_live_mode(self, enabled: bool) -> None:
        self.settings.live_mode = enabled
        if enabled and self.document.hole_pixels and not self.has_current_result:
            self.live_timer.start()
        elif not enabled:
            self.live_timer.stop()

    def _on_mask_edited(self, _box) -> None:
        if self.live_action.isChecked() and self.document.hole_pixels:
            self.live_timer.start()  # restarts: runs once the user pauses

    # == model ==============================================================================
    def _start_model(self, checkpoint: str | Path | None) -> None:
        """Load --checkpoint, else the user's saved choice, else the shipped model."""
        if checkpoint:
            self._load_model(str(checkpoint), remember=False)
            return
        saved = self.settings.model_path
        if saved and Path(saved).is_file():
            self._load_model(saved, remember=False, saved_choice=True)
            return
        if saved:
            self.notify(f"The saved model {saved} is gone; using the shipped model.", 15_000)
        if shipped_model_path() is None:
            self.model_message = (
                "No trained model is shipped yet (resources/model/pconv_unet.safetensors is "
                "missing). Use Model > Load Checkpoint... to choose one written by core.train."
            )
            self.notify(self.model_message, 0)
            self._update_model_labels()
            return
        self._load_model(None, remember=False)

    def _options(self) -> tuple[str, bool, bool]:
        """Device, single pass, full resolution: what a load is asked to apply."""
        return (self._device, self.single_pass_action.isChecked(),
                self.full_resolution_action.isChecked())

    def _load_model(self, path: str | None, remember: bool, saved_choice: bool = False,
                    notice: str = "", clear_saved: bool = False) -> None:
        self._send_load(_ModelLoad(path, remember, self._options(), saved_choice, notice,
                                   clear_saved))

    def _send_load(self, load: _ModelLoad) -> None:
        self.model_loading = True
        self._model_loads.append(load)
        device, single_pass, full_resolution = load.options
        self.service.load_model(load.path, device, self._precision,
                                1 if single_pass else None, full_resolution)
        self._update_model_labels()

    def load_checkpoint_dialog(self) -> None:
        path = self.ask_open_path("Load Checkpoint", CHECKPOINT_FILTER)
        if path:
            self.load_checkpoint(path)

    def load_checkpoint(self, path: str | Path) -> None:
        """Load a checkpoint in the worker; a bad file leaves the current model in place."""
        self._load_model(str(path), remember=True)

    def use_shipped_model(self) -> None:
        if shipped_model_path() is None:
            self.show_error("No Shipped Model", NO_MODEL_MESSAGE)
            return
        self._load_model(None, remember=True)

    def set_device(self, device: str) -> None:
        self._device = device
        self.settings.device = device
        self.device_actions[device].setChecked(True)
        self._reload_model()

    def _reload_model(self) -> None:
        """Load the model in use (or the one loading) again with the current device and pass
        settings; a load the user asked to remember stays remembered."""
        if self._model_loads:  # the latest request again, with the options now set
            self._send_load(dataclasses.replace(self._model_loads[-1], options=self._options()))
        elif self.model_info is not None:
            self._load_model(self._model_path_in_use, remember=False)

    def set_single_pass(self, enabled: bool) -> None:
        """One network pass per hole (or the model's mirrored passes); reloads the model."""
        self.settings.single_pass = enabled
        self.single_pass_action.setChecked(enabled)
        self._reload_model()

    def set_full_resolution(self, enabled: bool) -> None:
        """Long strokes tile by tile at full resolution (or shrunk up to 2x on a CPU);
        reloads the model."""
        self.settings.full_resolution = enabled
        self.full_resolution_action.setChecked(enabled)
        self._reload_model()

    def _on_model_loaded(self, info: ModelInfo) -> None:
        load = self._model_loads.popleft() if self._model_loads else None
        self.model_loading = bool(self._model_loads)
        self.model_info = info
        self.model_message = ""
        if load is not None:
            self._model_path_in_use = load.path
            self._options_in_use = load.options
            if load.remember:  # the file that loaded, not whichever was asked for last
                self.settings.model_path = load.path or ""
            elif load.clear_saved:  # the shipped model replaced a saved one that failed
                self.settings.model_path = ""
        self._update_model_labels()
        ready = f"Model ready: {Path(info.source).name} on {info.device_name}"
        if load is not None and load.notice:  # why it is not the model that was asked for
            self.notify(f"{load.notice} {ready}", 20_000)
        else:
            self.notify(ready)
        self._update_actions()

    def _on_model_error(self, message: str) -> None:
        load = self._model_loads.popleft() if self._model_loads else None
        self.model_loading = bool(self._model_loads)
        if (load is not None and load.options[0] == "cuda" and self._device_from_settings
                and self.model_info is None and not self._model_loads and not _cuda_here()):
            # A saved CUDA choice on a machine that lost its GPU (driver, eGPU): carry on.
            self._show_options(("auto", *load.options[1:]))
            self._send_load(dataclasses.replace(
                load, options=self._options(),
                notice="CUDA is not available here; Model > Device is now Automatic."))
            return
        if (load is not None and load.saved_choice and self.model_info is None
                and not self._model_loads and shipped_model_path() is not None):
            # A remembered checkpoint that no longer loads must not leave every launch
            # without a model.
            self._load_model(None, remember=False, clear_saved=True,
                             notice=f"The saved model {load.path} could not be loaded "
                                    f"({message}); using the shipped model.")
            return
        if self.model_info is None:
            self.model_message = f"No model loaded: {message}"
        elif not self._model_loads and self._options_in_use not in (None, self._options()):
            # An option changed by a load that failed: show what the model in use applies.
            self._show_options(self._options_in_use)
            message = f"{message.rstrip('.')}. The model in use keeps its previous settings."
        self._update_model_labels()
        if not (load is not None and self._model_loads
                and self._model_loads[-1].path == load.path):
            # (a later load of the same file, for a changed option, reports it once)
            # (after a fallback, what the first load said too)
            self.show_error("Cannot Load Model",
                            f"{load.notice} {message}" if load is not None and load.notice
                            else message)
        self._update_actions()

    def _show_options(self, options: tuple[str, bool, bool]) -> None:
        device, single_pass, full_resolution = options
        self._device = device
        if self._device_from_settings:  # (not a --device from the command line)
            self.settings.device = device
        self.settings.single_pass = single_pass
        self.settings.full_resolution = full_resolution
        # Device items answer ``triggered``, which setChecked does not send; blocking their
        # signals would also keep the group from unchecking the others.
        self.device_actions[device].setChecked(True)
        for action, checked in ((self.single_pass_action, single_pass),
                                (self.full_resolution_action, full_resolution)):
            blocker = QSignalBlocker(action)  # showing, not asking for another load
            action.setChecked(checked)
            blocker.unblock()

    def _update_model_labels(self) -> None:
        info = self.model_info
        if self.model_loading:
            self.model_label.setText("Model: loading...")
        elif info is None:
            # Permanent, unlike status messages: the user must see why Inpaint cannot work.
            self.model_label.setText("No model: use Model > Load Checkpoint...")
            self.model_label.setToolTip(self.model_message or NO_MODEL_MESSAGE)
        else:
            self.model_label.setText(f"Model: {Path(info.source).name}")
            self.model_label.setToolTip(
                f"{info.source}\n{info.layers} levels, width {info.width}, "
                f"working size {info.work_size} px, "
                + (f"{info.passes} mirrored passes per hole (on a CPU thick holes only)"
                   if info.passes > 1 else "1 pass per hole")
                + (", long strokes at full resolution" if info.tile_shrink >= 1
                   else f", long strokes shrunk up to {1 / info.tile_shrink:g}x in large jobs"
                   if info.tile_shrink else ""))
        self.device_label.setText(f"Device: {info.device_name}" if info else "Device: -")
        cuda = info is not None and info.cuda_available
        self.device_actions["cuda"].setEnabled(cuda or self._device == "cuda")

    # == view and status ====================================================================
    def set_flash_original(self, show: bool) -> None:
        """While held, every view shows the photo without overlay or result."""
        self.canvas.show_original = show
        self.canvas.update()
        for panel in (self.raw_panel, self.composite_panel):
            panel.view.set_show_original(show)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt override
        if event.key() == FLASH_ORIGINAL_KEY and not event.modifiers():
            if not event.isAutoRepeat():
                self._flash_held = True
                self.set_flash_original(True)
            event.accept()
            return
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        if event.key() == FLASH_ORIGINAL_KEY and not event.isAutoRepeat():
            self._flash_held = False
            self.set_flash_original(False)
            event.accept()
            return
        super().keyReleaseEvent(event)

    def _on_photo_replaced(self) -> None:
        pixmap = self.canvas.photo_pixmap
        for panel in (self.raw_panel, self.composite_panel):
            panel.view.set_original(pixmap)
        self._update_title()
        self._update_actions()

    def _on_revision_changed(self, _revision: int) -> None:
        outdated = self.result is not None and not self.has_current_result
        for panel in (self.raw_panel, self.composite_panel):
            panel.view.set_outdated(outdated)
            panel.view.update()  # an accepted result repaints the shared original
        self._update_hole_label()
        self._update_title()
        self._update_actions()

    def _update_hole_label(self) -> None:
        document = self.document
        if not document.has_photo:
            self.hole_label.setText("")
            return
        holes = document.hole_pixels
        share = 100.0 * holes / (document.width * document.height)
        self.hole_label.setText(f"Hole: {share:.1f} %")

    def _update_zoom_label(self) -> None:
        self.zoom_label.setText(f"Zoom: {self.view_state.zoom * 100:.0f} %")

    def _on_cursor_moved(self, point: QPointF) -> None:
        if self.document.has_photo and not self.statusBar().currentMessage():
            x, y = int(point.x()), int(point.y())
            if 0 <= x < self.document.width and 0 <= y < self.document.height:
                self.statusBar().showMessage(f"x {x}, y {y}", 1500)

    def _on_brush_size_changed(self, size: int) -> None:
        self.settings.brush_size = size
        if self.brush_slider.value() != size:
            self.brush_slider.blockSignals(True)
            self.brush_slider.setValue(min(size, self.brush_slider.maximum()))
            self.brush_slider.blockSignals(False)
        self._update_brush_label()

    def _update_brush_label(self) -> None:
        self.brush_label.setText(f" {self.canvas.brush_size} px")

    def _on_grow_pixels_changed(self, value: int) -> None:
        self.settings.grow_pixels = value

    def _update_title(self, *_args) -> None:
        name = self.document.display_name or "Untitled"
        self.setWindowTitle(f"{name}[*] - {APP_NAME}" if self.document.has_photo else APP_NAME)
        self.setWindowModified(self.document.is_photo_modified)

    def _update_actions(self) -> None:
        has_photo = self.document.has_photo
        for action in (self.save_action, self.export_mask_action, self.import_mask_action,
                       self.clear_mask_action, self.grow_action, self.shrink_action,
                       self.fit_action, self.actual_size_action, self.zoom_in_action,
                       self.zoom_out_action, self.inpaint_action):
            action.setEnabled(has_photo)
        self.cancel_action.setEnabled(self.is_running)
        self.accept_action.setEnabled(self.has_current_result)

    def show_about(self) -> None:
        from desktop_app import app_version

        info = self.model_info
        QMessageBox.about(
            self, f"About {APP_NAME}",
            f"<b>{APP_NAME}</b> {app_version()}<p>Photo inpainting with a partial-convolution "
            "U-Net (Liu et al., ECCV 2018).</p>"
            f"<p>Model: {info.source if info else 'none'}<br>"
            f"Device: {info.device_name if info else '-'}</p>")

    # == lifetime ===========================================================================
    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        self.canvas.setFocus()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        if not self._shut_down and not self._may_discard_changes():
            event.ignore()
            return
        self.shutdown()
        event.accept()

    def shutdown(self, timeout_ms: int = SHUTDOWN_WAIT_MS) -> bool:
        """Stop the worker (cancelling any run) and remember the layout; safe to repeat.

        False when a network pass was still running after ``timeout_ms``: the caller must not
        let Qt destroy the running thread (that aborts the process); see __main__."""
        if self._shut_down:
            return self._worker_stopped
        self._shut_down = True
        self.live_timer.stop()
        self.active_request = None
        self.hide()  # the window goes at once even if a network pass is finishing
        self.settings.window_geometry = self.saveGeometry()
        self.settings.splitter_state = self.splitter.saveState()
        self.settings.sync()
        self._worker_stopped = self.service.shutdown(timeout_ms)
        return self._worker_stopped


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


@dataclasses.dataclass(frozen=True)
class _ModelLoad:
    """A model load sent to the worker and not yet answered."""

    path: str | None  # None: the shipped model
    remember: bool  # the user's choice: kept in the settings once it has loaded
    options: tuple[str, bool, bool]  # device, single pass, full resolution
    saved_choice: bool = False  # the remembered choice tried at start: else the shipped one
    notice: str = ""  # shown with "Model ready": why this load replaced the one asked for
    clear_saved: bool = False  # once loaded, forget the saved choice it replaces


def _cuda_here() -> bool:
    import torch  # (loaded already: the worker thread uses it)

    return bool(torch.cuda.is_available())
