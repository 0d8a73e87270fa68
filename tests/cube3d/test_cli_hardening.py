"""The command line never destroys input and never calls a failure a success.

One test per case found by trying hostile inputs (issue: outputs that are inputs, nothing
fitted, featureless data, heavy clipping, demo overwrite, compressed output names,
SIGTERM while writing, stale temporary files, warnings with --quiet, GP options named).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from cube3d.cli import main
from cube3d.flags import FLAG_CLIPPED, FLAG_UNCONSTRAINED
from cube3d.maps import remove_stale_temps
from tests.cube3d.test_cli import assert_user_error, fit_args, make_cube, write_lsf, write_muse

pytestmark = pytest.mark.timeout(300)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    """3 x 3 spaxels, V = 0, sigma = 150 km/s, S/N 50."""
    d = tmp_path_factory.mktemp("hard")
    path, flux, stat = make_cube(d / "cube.fits", np.zeros((3, 3)), np.full((3, 3), 150.0))
    return {"dir": d, "path": path, "flux": flux, "stat": stat, "lsf": write_lsf(d / "lsf.txt")}


def _copy_cube(cube, tmp_path):
    target = tmp_path / "cube.fits"
    target.write_bytes(Path(cube["path"]).read_bytes())
    return target


# ----------------------------------------------------------------------------- outputs that are inputs


@pytest.mark.parametrize("how", ["same", "dotdot", "symlink", "model_cube"])
def test_output_that_is_the_input_is_refused(cube, tmp_path, capsys, how):
    src = _copy_cube(cube, tmp_path)
    before = src.read_bytes()
    extra = ["--overwrite"]
    if how == "same":
        out = src
    elif how == "dotdot":
        (tmp_path / "sub").mkdir()
        out = tmp_path / "sub" / ".." / src.name
    elif how == "symlink":
        out = tmp_path / "link.fits"
        os.symlink(src, out)
    else:  # maps named so that <stem>_model.fits is the cube
        src = src.rename(tmp_path / "m_model.fits")
        before = src.read_bytes()
        out = tmp_path / "m.fits"
        extra.append("--model-cube")
    line = assert_user_error(capsys, fit_args(src, out, *extra, lsf=cube["lsf"]), "is the input")
    assert src.read_bytes() == before, line


def test_lsf_table_as_output_is_refused(cube, tmp_path, capsys):
    lsf = tmp_path / "lsf.txt"
    lsf.write_bytes(Path(cube["lsf"]).read_bytes())
    assert_user_error(capsys, fit_args(cube["path"], lsf, "--overwrite", lsf=lsf), "is the input")
    assert lsf.read_bytes() == Path(cube["lsf"]).read_bytes()


# ----------------------------------------------------------------------------- failures are not successes


def test_nothing_fitted_exits_non_zero(cube, tmp_path, capsys):
    """A step so coarse that no spectrum keeps enough pixels: status 2, nothing written."""
    out = tmp_path / "maps.fits"
    code = main(fit_args(cube["path"], out, "--velscale", "5000", lsf=cube["lsf"]))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "could be fitted" in err or "--velscale" in err, err
    assert not out.exists()


def test_featureless_cube_is_flagged_unconstrained(cube, tmp_path, capsys):
    flux = np.full_like(cube["flux"], 100.0)
    path = write_muse(tmp_path / "flat.fits", flux, cube["stat"])
    out = tmp_path / "maps.fits"
    code = main(fit_args(path, out, lsf=cube["lsf"]))
    err = capsys.readouterr().err
    assert code == 0, err
    with fits.open(out) as m:
        flag = m["FLAG"].data
    assert np.all(flag & FLAG_UNCONSTRAINED), flag
    assert "do not constrain the LOSVD" in err  # printed even with --quiet


def test_heavy_clipping_sets_flag_and_warns(cube, tmp_path, capsys):
    out = tmp_path / "maps.fits"
    code = main(fit_args(cube["path"], out, "--clip", "0.1", lsf=cube["lsf"]))
    err = capsys.readouterr().err
    assert code == 0, err
    with fits.open(out) as m:
        assert np.all(m["FLAG"].data & FLAG_CLIPPED)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert any(ln.startswith("cube3d: warning: --clip 0.1:") for ln in lines), err


def test_sigma_start_beyond_the_bound_is_refused(cube, tmp_path, capsys):
    out = tmp_path / "maps.fits"
    assert_user_error(capsys, fit_args(cube["path"], out, "--sigma-start", "1e6", lsf=cube["lsf"]),
                      "--sigma-start", output=out)


def test_quiet_hides_routine_warnings_only(cube, tmp_path, capsys, monkeypatch):
    """Warnings print as one line each, once per message; -q keeps only ResultWarnings."""
    import warnings

    from cube3d import pipeline
    from cube3d.errors import ResultWarning

    real_prepare = pipeline.plan_cube

    def noisy_prepare(*args, **kwargs):
        for _ in range(2):  # a repeat prints once
            warnings.warn("a routine remark\nover two lines", UserWarning)
            warnings.warn("the results are affected", ResultWarning)
        return real_prepare(*args, **kwargs)

    monkeypatch.setattr(pipeline, "plan_cube", noisy_prepare)
    out = tmp_path / "maps.fits"
    assert main(fit_args(cube["path"], out, lsf=cube["lsf"])) == 0
    err = capsys.readouterr().err
    assert err.splitlines() == ["cube3d: warning: the results are affected"], err
    argv = fit_args(cube["path"], tmp_path / "maps2.fits", lsf=cube["lsf"])
    argv.remove("--quiet")
    assert main(argv) == 0
    err = capsys.readouterr().err
    warned = [ln for ln in err.splitlines() if "warning" in ln.lower()]
    assert warned == ["cube3d: warning: a routine remark over two lines",
                      "cube3d: warning: the results are affected"], err
    assert ".py:" not in err


# ----------------------------------------------------------------------------- demo and plot


def test_demo_refuses_to_overwrite_without_the_option(tmp_path, capsys):
    outdir = tmp_path / "demo"
    outdir.mkdir()
    (outdir / "maps.fits").write_bytes(b"precious")
    assert_user_error(capsys, ["demo", "--outdir", str(outdir), "--quiet"], "maps.fits", "--overwrite")
    assert (outdir / "maps.fits").read_bytes() == b"precious"


def test_demo_help_states_the_moments_it_uses(capsys):
    assert main(["demo", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "up to 6 (default 2)" in text


def test_plot_refuses_to_overwrite_an_image(cube, tmp_path, capsys):
    maps = tmp_path / "maps.fits"
    assert main(fit_args(cube["path"], maps, lsf=cube["lsf"])) == 0
    png = tmp_path / "maps.png"
    png.write_bytes(b"keep me")
    capsys.readouterr()
    assert_user_error(capsys, ["plot", str(maps), "-o", str(png)], "exists", "--overwrite")
    assert png.read_bytes() == b"keep me"
    assert main(["plot", str(maps), "-o", str(png), "--overwrite"]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


# ----------------------------------------------------------------------------- the maps file


def test_gz_output_is_compressed_and_reads_back(cube, tmp_path, capsys):
    out = tmp_path / "maps.fits.gz"
    assert main(fit_args(cube["path"], out, "--model-cube", lsf=cube["lsf"])) == 0
    assert out.read_bytes()[:2] == b"\x1f\x8b"  # gzip magic
    assert (tmp_path / "maps_model.fits.gz").read_bytes()[:2] == b"\x1f\x8b"
    with fits.open(out) as m:
        assert m["V"].data.shape == (3, 3)
    assert_user_error(capsys, fit_args(cube["path"], tmp_path / "maps.gz", lsf=cube["lsf"]), ".fits.gz")


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    pid = int(dead.stdout)
    stale = tmp_path / f".maps.fits.{pid}.abc123.tmp"
    stale.write_bytes(b"")
    alive = tmp_path / f".maps.fits.{os.getpid()}.def456.tmp"  # this process: a live writer
    alive.write_bytes(b"")
    other = tmp_path / "maps.fits.backup"
    other.write_bytes(b"x")
    remove_stale_temps(tmp_path / "maps.fits")
    assert not stale.exists() and alive.exists() and other.exists()


_SLOW_WRITER = """
import sys, time
import astropy.io.fits as f
def slow(self, fh, *args, **kwargs):
    fh.write(b"partial")
    fh.flush()
    time.sleep(120)
f.HDUList.writeto = slow
from cube3d.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_while_writing_leaves_no_temp_file(cube, tmp_path):
    out = tmp_path / "maps.fits"
    argv = fit_args(cube["path"], out, lsf=cube["lsf"])
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, *argv], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not list(tmp_path.glob(".maps.fits.*.tmp")):
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "the writer never started"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "terminated" in err
    assert not list(tmp_path.glob(".maps.fits.*")) and not out.exists()


# ----------------------------------------------------------------------------- GP options named


def test_gp_min_sn_that_masks_everything_is_named(cube, tmp_path, capsys):
    out = tmp_path / "maps.fits"
    assert_user_error(capsys, fit_args(cube["path"], out, "--gp", "--gp-min-sn", "1e6", lsf=cube["lsf"]),
                      "--gp-min-sn", output=out)


@pytest.mark.parametrize("option", ["--degree", "--mdegree"])
def test_polynomial_degree_beyond_the_pixels_is_refused(cube, tmp_path, capsys, option):
    out = tmp_path / "maps.fits"
    assert_user_error(capsys, fit_args(cube["path"], out, option, "1000", lsf=cube["lsf"]), option, output=out)
