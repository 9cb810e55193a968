"""Undo commands. Each keeps only the bounding box of what changed (before and after), so a
long session on a large photo does not hold a full copy of the mask per brush stroke."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtGui import QUndoCommand

from desktop_app.qtimages import bounding_rect

if TYPE_CHECKING:
    from desktop_app.document import Document


@dataclass(frozen=True)
class Patch:
    """A rectangle of an array before and after an edit; arrays are owned copies."""

    top: int
    left: int
    before: np.ndarray
    after: np.ndarray

    @property
    def nbytes(self) -> int:
        return self.before.nbytes + self.after.nbytes


def diff_patch(
    old: np.ndarray, new: np.ndarray, top: int = 0, left: int = 0
) -> Patch | None:
    """The smallest patch turning ``old`` into ``new`` (both the same shape), None if equal.

    ``top``/``left`` place the two arrays inside the full image when they are regions.
    """
    changed = old != new
    if changed.ndim == 3:
        changed = changed.any(axis=2)
    box = bounding_rect(changed)
    if box.isEmpty():
        return None
    rows = slice(box.top(), box.top() + box.height())
    cols = slice(box.left(), box.left() + box.width())
    return Patch(
        top=top + box.top(),
        left=left + box.left(),
        before=old[rows, cols].copy(),
        after=new[rows, cols].copy(),
    )


class MaskEditCommand(QUndoCommand):
    """A brush or eraser stroke, clear, grow/shrink or imported mask."""

    def __init__(self, document: Document, patch: Patch, text: str) -> None:
        super().__init__(text)
        self.document = document
        self.patch = patch

    def redo(self) -> None:
        self.document.set_mask_region(self.patch.top, self.patch.left, self.patch.after)

    def undo(self) -> None:
        self.document.set_mask_region(self.patch.top, self.patch.left, self.patch.before)


class AcceptResultCommand(QUndoCommand):
    """The composite becomes the photo and the hole is emptied, in one undoable step."""

    def __init__(
        self,
        document: Document,
        photo_patch: Patch | None,
        mask_patch: Patch | None,
        photo_state_before: int,
        photo_state_after: int,
    ) -> None:
        super().__init__("Accept result")
        self.document = document
        self.photo_patch = photo_patch
        self.mask_patch = mask_patch
        self.photo_state_before = photo_state_before
        self.photo_state_after = photo_state_after

    def redo(self) -> None:
        if self.photo_patch is not None:
            p = self.photo_patch
            self.document.set_photo_region(p.top, p.left, p.after, self.photo_state_after)
        if self.mask_patch is not None:
            m = self.mask_patch
            self.document.set_mask_region(m.top, m.left, m.after)

    def undo(self) -> None:
        if self.mask_patch is not None:
            m = self.mask_patch
            self.document.set_mask_region(m.top, m.left, m.before)
        if self.photo_patch is not None:
            p = self.photo_patch
            self.document.set_photo_region(p.top, p.left, p.before, self.photo_state_before)
