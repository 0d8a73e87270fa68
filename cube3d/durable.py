"""Make a rename durable: flush a directory's entries to disk.

After ``os.rename(tmp, final)`` the new name survives a power cut only once the
directory holding it is flushed (POSIX ``fsync`` on the directory; rename(2) and
fsync(2)).  Used wherever a result is written to a temporary name and renamed (the
maps file, the journal's chunks).
"""

from __future__ import annotations

import os

__all__ = ["fsync_dir"]


def fsync_dir(directory) -> None:
    """Flush ``directory``'s entries to disk; a no-op where the system cannot
    (directories that cannot be opened or synced, e.g. on some network filesystems)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
