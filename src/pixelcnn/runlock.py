"""One writer per run folder: an advisory lock held for the life of the training process.

The lock is ``fcntl.flock`` on ``run.lock`` inside the run folder. The kernel drops it when
the process ends in any way (kill -9 included), so a lock is never left stuck: the file stays
behind, but nobody holds it and the next ``train --resume`` takes it. The file records the
holder's process id, for the message that refuses a second writer.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from pixelcnn.errors import TrainingError

LOCK_FILE = "run.lock"

try:
    import fcntl
except ImportError:                 # not POSIX: no locking (one writer is then up to the user)
    fcntl = None


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _refusal(folder: Path, fd: int) -> TrainingError:
    os.lseek(fd, 0, os.SEEK_SET)
    pid = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
    return TrainingError(f"{folder} is in use by another training process (pid {pid}): expected a run folder "
                         f"no other process writes to; wait for it to finish, or pick another --out")


def check_free(folder: str | os.PathLike) -> None:
    """Refuse a folder another process holds, without creating anything."""
    file = Path(folder) / LOCK_FILE
    if fcntl is None or not file.is_file():
        return
    fd = os.open(file, os.O_RDONLY)
    try:
        if not _try_lock(fd):
            raise _refusal(Path(folder), fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def hold(folder: str | os.PathLike) -> Iterator[None]:
    """Hold the lock of ``folder`` (which must exist) for the duration, or refuse with TrainingError."""
    if fcntl is None:
        yield
        return
    folder = Path(folder)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_lock(fd):
            raise _refusal(folder, fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)                # closing the last descriptor releases the lock
