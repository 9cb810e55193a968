"""The document: the photo, its hole mask and the edit history, with no widgets in sight.

Everything that changes pixels goes through the undo stack, and every change bumps
``revision``; an inpainting result is only used while the revision it was computed for is
still current.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, QRect, Signal
from PySide6.QtGui import QUndoStack

from core.masks import grow_mask
from desktop_app.commands import AcceptResultCommand, MaskEditCommand, diff_patch

_photo_states = itertools.count(1)


class Document(QObject):
    """Photo (H, W, 3) uint8, hole mask (H, W) bool (True = fill), metadata and history."""

    photo_replaced = Signal()  # a different photo, maybe of another size: rebuild everything
    photo_changed = Signal(QRect)  # pixels inside the rectangle changed
    mask_changed = Signal(QRect)
    revision_changed = Signal(int)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.undo_stack = QUndoStack(self)
        self.photo: np.ndarray | None = None
        self.hole_mask: np.ndarray | None = None
        self.source_path: Path | None = None
        self.display_name = ""
        # The photo's EXIF, ICC profile and DPI, as save_image takes them.
        self.metadata: dict[str, Any] = {}
        self.revision = 0
        # Identifies the photo's pixels, so that undoing back to the saved state is "clean".
        self.photo_state = 0
        self.saved_photo_state = 0

    # -- state -----------------------------------------------------------------------------
    @property
    def has_photo(self) -> bool:
        return self.photo is not None

    @property
    def width(self) -> int:
        return 0 if self.photo is None else int(self.photo.shape[1])

    @property
    def height(self) -> int:
        return 0 if self.photo is None else int(self.photo.shape[0])

    @property
    def hole_pixels(self) -> int:
        return 0 if self.hole_mask is None else int(self.hole_mask.sum())

    @property
    def is_photo_modified(self) -> bool:
        """True when accepted results have not been saved yet."""
        return self.has_photo and self.photo_state != self.saved_photo_state

    def mark_saved(self) -> None:
        self.saved_photo_state = self.photo_state

    def _bump_revision(self) -> None:
        self.revision += 1
        self.revision_changed.emit(self.revision)

    # -- whole-photo changes (not undoable: they start a new history) ----------------------
    def replace_photo(
        self,
        pixels: np.ndarray,
        source_path: Path | None = None,
        metadata: dict[str, Any] | None = None,
        display_name: str | None = None,
    ) -> None:
        """Start editing a new photo: empty mask, empty history."""
        arr = np.ascontiguousarray(pixels, dtype=np.uint8)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
            raise ValueError(f"expected (H, W, 3) uint8 pixels, got {arr.shape}")
        self.undo_stack.clear()
        self.photo = arr.copy() if arr is pixels else arr  # the document owns its pixels
        self.hole_mask = np.zeros(arr.shape[:2], dtype=bool)
        self.source_path = Path(source_path) if source_path else None
        self.display_name = display_name or (self.source_path.name if self.source_path else "")
        self.metadata = dict(metadata or {})
        self.photo_state = next(_photo_states)
        self.saved_photo_state = self.photo_state
        self.undo_stack.setClean()
        self._bump_revision()
        self.photo_replaced.emit()

    # -- region setters used by the undo commands ------------------------------------------
    def set_mask_region(self, top: int, left: int, values: np.ndarray) -> None:
        assert self.hole_mask is not None
        h, w = values.shape[:2]
        self.hole_mask[top : top + h, left : left + w] = values
        self._bump_revision()
        self.mask_changed.emit(QRect(left, top, w, h))

    def set_photo_region(self, top: int, left: int, values: np.ndarray, photo_state: int) -> None:
        assert self.photo is not None
        h, w = values.shape[:2]
        self.photo[top : top + h, left : left + w] = values
        self.photo_state = photo_state
        self._bump_revision()
        self.photo_changed.emit(QRect(left, top, w, h))

    # -- undoable edits --------------------------------------------------------------------
    def edit_mask_region(self, top: int, left: int, new_values: np.ndarray, text: str) -> bool:
        """Replace a rectangle of the mask through the undo stack; False if nothing changed."""
        if self.hole_mask is None:
            return False
        h, w = new_values.shape
        old = self.hole_mask[top : top + h, left : left + w]
        patch = diff_patch(old, np.asarray(new_values, dtype=bool), top, left)
        if patch is None:
            return False
        self.undo_stack.push(MaskEditCommand(self, patch, text))
        return True

    def edit_mask(self, new_mask: np.ndarray, text: str) -> bool:
        """Replace the whole mask (same size) through the undo stack."""
        if self.hole_mask is None:
            return False
        if new_mask.shape != self.hole_mask.shape:
            raise ValueError(
                f"mask is {new_mask.shape[1]} x {new_mask.shape[0]} but the photo is "
                f"{self.width} x {self.height}"
            )
        return self.edit_mask_region(0, 0, new_mask, text)

    def clear_mask(self) -> bool:
        if self.hole_mask is None:
            return False
        return self.edit_mask(np.zeros_like(self.hole_mask), "Clear mask")

    def grow_mask(self, pixels: int) -> bool:
        """Grow (pixels > 0) or shrink (pixels < 0) the hole by ``pixels`` pixels."""
        if self.hole_mask is None or pixels == 0 or not self.hole_mask.any():
            return False
        text = f"Grow mask by {pixels} px" if pixels > 0 else f"Shrink mask by {-pixels} px"
        return self.edit_mask(grow_mask(self.hole_mask, pixels), text)

    def accept_result(self, composite: np.ndarray) -> bool:
        """Make ``composite`` the photo and empty the hole, as one undoable step."""
        if self.photo is None or self.hole_mask is None:
            return False
        if composite.shape != self.photo.shape:
            raise ValueError("the result does not match the photo's size")
        photo_patch = diff_patch(self.photo, composite)
        mask_patch = diff_patch(self.hole_mask, np.zeros_like(self.hole_mask))
        if photo_patch is None and mask_patch is None:
            return False
        state_after = next(_photo_states) if photo_patch is not None else self.photo_state
        self.undo_stack.push(
            AcceptResultCommand(self, photo_patch, mask_patch, self.photo_state, state_after)
        )
        return True
