"""Atomic file writes: a temp file in the target folder, fsync, then rename over the target.

A crash, a full disk or a kill mid-write leaves the previous file intact and no half-written
one. The result keeps the permissions of the file it replaces (a private 0600 file stays
private); a new file gets ordinary permissions (0666 minus the umask), not mkstemp's 0600.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(file_object)`` on a temp file beside ``path``, fsync, then rename."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        # The name is cut so that the temp name stays within the 255-byte limit of common
        # file systems when the target's own name is close to it.
        # (bytes as the file system sees them: a name that is not UTF-8 survives the cut).
        stem = os.fsdecode(os.fsencode(path.name)[:200])
        fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=".tmp", dir=folder)
    except OSError as exc:  # e.g. a read-only folder: name the file the caller asked for
        exc.filename = str(path)
        raise
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except OSError:  # a new file
            mode = 0o666 & ~_umask()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and exc.filename in (None, tmp):
            exc.filename = str(path)  # "No space left on device: 'out.png'", not the temp
        raise


def check_writable_folder(path: str | Path) -> None:
    """Raise OSError unless ``path`` is, or can be made, a folder that takes new files.

    For tools that write their results only at the end (training logs and checkpoints, an
    evaluation's tables): an unwritable folder should stop them before the work, not after.
    Proven by writing a file; the file and any folder made for it are removed again, so a
    run that stops for another reason leaves nothing behind."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} exists and is not a folder")
    missing = []
    folder = path
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    made: list[Path] = []
    try:
        for folder in reversed(missing):
            folder.mkdir()
            made.append(folder)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", suffix=".tmp", dir=path)
        os.close(fd)
        os.unlink(probe)
    finally:
        for folder in reversed(made):
            try:
                folder.rmdir()
            except OSError:  # something else wrote there meanwhile: leave it
                pass
