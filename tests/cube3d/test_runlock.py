"""One run per output: a second cube3d fit on the same maps file is refused in one line."""

import os

import pytest

from cube3d import datasets
from cube3d.cli import main
from cube3d.errors import InputError
from cube3d.runlock import lock_path_for, output_lock

pytest.importorskip("fcntl")


def test_a_held_lock_refuses_a_second_holder(tmp_path):
    out = tmp_path / "maps.fits"
    with output_lock(out) as path:
        assert path == lock_path_for(out) and path.read_text().strip() == str(os.getpid())
        with pytest.raises(InputError, match=rf"maps\.fits: another cube3d run \(process {os.getpid()}\)"):
            with output_lock(out):
                pass
    assert not lock_path_for(out).exists()  # removed at the end
    with output_lock(out):  # and free again
        pass


def test_a_lock_file_nobody_holds_is_taken_over(tmp_path):
    out = tmp_path / "maps.fits"
    lock_path_for(out).write_text("12345\n")  # left by a run killed with -9
    with output_lock(out) as path:
        assert path.read_text().strip() == str(os.getpid())
    assert not lock_path_for(out).exists()


def test_second_fit_on_the_same_output_is_refused(tmp_path, capsys):
    out = tmp_path / "maps.fits"
    out.write_bytes(b"an earlier result")
    argv = ["fit", str(datasets.demo_cube_path()), "--templates", str(datasets.demo_templates_dir()), "-z", "0.0857",
            "-o", str(out), "--overwrite", "--quiet"]
    with output_lock(out):  # another run is writing it
        assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(out) in err and "another cube3d run" in err, err
    assert out.read_bytes() == b"an earlier result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maps.fits"]
