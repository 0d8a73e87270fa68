"""fsync_dir: flushes a directory, and is quiet where the system cannot."""

import os

from cube3d.durable import fsync_dir


def test_fsync_dir_flushes_a_directory(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    fsync_dir(tmp_path)
    assert len(synced) == 1


def test_fsync_dir_is_quiet_where_it_cannot(tmp_path, monkeypatch):
    fsync_dir(tmp_path / "missing")  # cannot be opened: nothing to do

    def refuse(fd):
        raise OSError("not supported")

    monkeypatch.setattr(os, "fsync", refuse)
    fsync_dir(tmp_path)  # opened, cannot be synced: still quiet
