"""One cube3d run per output file: an advisory lock beside it.

Two runs writing the same maps file would share its journal (``MAPS.fits.partial/``)
and race to replace the file.  A run holds ``MAPS.fits.lock`` (``flock``, POSIX) from
checking its output until the maps are written; a second run is refused in one line.
The lock dies with its process (a ``kill -9`` leaves a file no one holds, which the
next run takes over), and the file is removed when the run ends.  Where ``flock`` does
not exist (not POSIX) or the folder is not writable, no lock is taken.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .errors import InputError

__all__ = ["lock_path_for", "output_lock"]


def lock_path_for(output) -> Path:
    """The lock file of an output: ``MAPS.fits`` -> ``MAPS.fits.lock``."""
    output = Path(output)
    return output.with_name(output.name + ".lock")


def _holder(fd) -> str:
    try:
        return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
    except OSError:
        return "unknown"


@contextlib.contextmanager
def output_lock(output):
    """Hold the lock of ``output`` for the ``with`` block.

    Raises
    ------
    InputError
        Another process holds it (the message names the output and that process).
    """
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield None
        return
    path = lock_path_for(output)
    for _ in range(10):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:  # a folder we cannot write to: the output check says so
            yield None
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _holder(fd)
            os.close(fd)
            raise InputError(f"{output}: another cube3d run (process {holder}) is writing it; wait for it to "
                             f"finish or choose another output (lock {path})") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except OSError:
            same = False
        if same:  # not a file the previous holder removed after we opened it
            break
        os.close(fd)
    else:
        yield None
        return
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # while still held, so no one waits on a removed file
        os.close(fd)
