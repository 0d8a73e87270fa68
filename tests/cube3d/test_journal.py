"""Resumable runs (cube3d.journal): a fit killed with SIGKILL resumes where it stopped and writes
the maps of an uninterrupted run; another run's journal is refused in one line; a full disk
loses nothing and never replaces a good maps file."""

import contextlib
import errno
import io
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from astropy.io import fits

import cube3d.pipeline
from cube3d.cli import main
from cube3d.errors import InputError
from cube3d.journal import Journal, journal_path_for
from cube3d.pipeline import fit_journal_chunk
from tests.cube3d.test_cli import REPO, TEMPLATES, Z, make_cube, write_lsf

pytestmark = pytest.mark.timeout(300)

NY, NX = 8, 8
CHUNK = ["--chunk-spectra", "16"]  # 64 spectra in 4 chunks


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    d = tmp_path_factory.mktemp("journal_cube")
    yy, xx = np.mgrid[:NY, :NX]
    path, _, _ = make_cube(d / "cube.fits", 60.0 * np.tanh((xx - 3.5) / 2.0), 120.0 + 5.0 * yy, sn=30.0, seed=5)
    return {"path": path, "lsf": write_lsf(d / "lsf.txt")}


def fit_argv(cube, out, *extra):
    return ["fit", str(cube["path"]), "--templates", str(TEMPLATES), "--redshift", str(Z), "-o", str(out),
            "--moments", "2", "--lsf", str(cube["lsf"]), *CHUNK, *map(str, extra)]


def run(argv):
    """``main(argv)`` in this process: (exit status, standard error)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, err.getvalue()


def hdu_data(path):
    with fits.open(path) as hdul:
        return {h.name: np.array(h.data) for h in hdul if h.data is not None}


def assert_same_maps(a, b):
    da, db = hdu_data(a), hdu_data(b)
    assert list(da) == list(db)
    for name in da:
        np.testing.assert_array_equal(da[name], db[name], err_msg=name)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Environment of the `cube3d fit` subprocesses: one persistent compilation cache, so that
    the second compiles nothing."""
    cache = tmp_path_factory.mktemp("jax_cache")
    return dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(cache),
                JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")


@pytest.fixture(scope="module")
def reference(cube, tmp_path_factory):
    """An uninterrupted run with spectra and model cube."""
    out = tmp_path_factory.mktemp("reference") / "maps.fits"
    code, err = run(fit_argv(cube, out, "--model-cube", "--quiet"))
    assert code == 0, err
    assert not journal_path_for(out).exists()  # removed once the maps are written
    return out


# a `cube3d fit` that sleeps after journalling its first chunk, so that it can be killed mid-run
_SLOW_AFTER_FIRST_CHUNK = """
import sys, time
import cube3d.journal as j
real = j.Journal.write_chunk
def write_chunk(self, k, arrays):
    real(self, k, arrays)
    time.sleep(300)
j.Journal.write_chunk = write_chunk
from cube3d.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_9_mid_run_then_resume(cube, reference, env, tmp_path, monkeypatch):
    out = tmp_path / "maps.fits"
    journal = journal_path_for(out)
    argv = fit_argv(cube, out, "--model-cube")
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_AFTER_FIRST_CHUNK, *argv, "--quiet"], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not (journal / "chunk_000000.npz").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "no chunk was journalled"
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists() and sorted(p.name for p in journal.iterdir()) == \
        ["chunk_000000.npz", "journal.json", "plan.npz"]

    fitted = []
    real_fit = cube3d.pipeline.fit_spectra

    def counting(data, config, **kwargs):
        fitted.append(len(data.spectra))
        return real_fit(data, config, **kwargs)

    monkeypatch.setattr(cube3d.pipeline, "fit_spectra", counting)
    code, err = run(argv)  # the same command again
    assert code == 0, err
    assert "resuming from" in err and "1 of 4 chunks done; fitting the other 3" in err
    assert len(fitted) == 3
    assert_same_maps(out, reference)
    assert_same_maps(tmp_path / "maps_model.fits", reference.with_name("maps_model.fits"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maps.fits", "maps_model.fits"]


def test_another_runs_journal_is_refused_then_overwritten(cube, reference, tmp_path, monkeypatch):
    """A full disk while writing the maps keeps the journal and the earlier maps file; a change of
    setting refuses the journal in one line (status 2); the same command resumes with nothing to
    fit; a changed cube with --overwrite starts afresh."""
    out = tmp_path / "maps.fits"
    out.write_bytes(b"an earlier good result")
    argv = fit_argv(cube, out, "--overwrite")

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(cube3d.pipeline, "write_maps", full_disk)
        code, err = run(argv + ["--quiet"])
    assert code == 2 and err.count("\n") == 1 and "No space left on device" in err and "maps.fits.partial" in err
    assert out.read_bytes() == b"an earlier good result"
    assert Journal(journal_path_for(out), {}).done() == {0, 1, 2, 3}

    out.unlink()  # (an existing output is refused first, before the journal is looked at)
    code, err = run(fit_argv(cube, out, "--degree", "3", "--quiet"))
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"cube3d: error: {journal_path_for(out)}: journal of another run (settings differ: "
                          "degree 4 -> 3); pass --overwrite to start afresh")

    code, err = run(argv)
    assert code == 0 and "4 of 4 chunks done; fitting the other 0" in err, err
    with fits.open(out) as new, fits.open(reference) as ref:
        for name in ("V", "SIGMA", "V_ERR", "SIGMA_ERR", "CHI2", "FLAG", "BINID"):
            np.testing.assert_array_equal(new[name].data, ref[name].data)
        assert "SPEC" not in new  # kept only when asked

    journal = journal_path_for(out)
    journal.mkdir()
    (journal / "journal.json").write_text(json.dumps({"key": {"format": 1}, "plan": {}}))
    os.utime(cube["path"])  # a touched cube is another input
    code, err = run(argv)
    assert code == 0 and "removing the journal of another run" in err and "resuming" not in err, err
    assert not journal.exists()


def test_full_disk_while_journalling(cube, reference, tmp_path, monkeypatch):
    out = tmp_path / "maps.fits"
    real = Journal.write_chunk
    calls = []

    def fails_third(self, k, arrays):
        calls.append(k)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, k, arrays)

    with monkeypatch.context() as m:
        m.setattr(Journal, "write_chunk", fails_third)
        code, err = run(fit_argv(cube, out, "--quiet"))
    assert code == 2 and err.count("\n") == 1, err
    assert "cannot write the journal (No space left on device); the 2 chunks journalled so far are kept" in err
    assert not out.exists() and Journal(journal_path_for(out), {}).done() == {0, 1}
    fit_journal_chunk(journal_path_for(out), 3)  # as a worker would, from the journal alone
    code, err = run(fit_argv(cube, out))
    assert code == 0 and "3 of 4 chunks done; fitting the other 1" in err, err
    with fits.open(out) as new, fits.open(reference) as ref:
        for name in ("V", "SIGMA", "V_ERR", "SIGMA_ERR", "CHI2", "FLAG"):
            np.testing.assert_array_equal(new[name].data, ref[name].data)


# a `cube3d fit` whose files may not grow beyond argv[1] bytes once the fit is done (as a disk that
# fills up while the maps are written): writes past it fail with EFBIG (Python ignores SIGXFSZ)
_LIMITED = """
import resource, sys
import cube3d.pipeline as p
real = p.write_run
def write_run(*args, **kwargs):
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), resource.RLIM_INFINITY))
    return real(*args, **kwargs)
p.write_run = write_run
from cube3d.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_file_size_limit_while_writing_maps_keeps_the_good_file(cube, reference, env, tmp_path):
    """A real write failure (RLIMIT_FSIZE: EFBIG, as a full disk) in a real process: status 2,
    one line; the earlier maps file untouched, no temporary file; the journal lets the next run
    write the maps without fitting."""
    out = tmp_path / "maps.fits"
    out.write_bytes(b"an earlier good result")
    argv = fit_argv(cube, out, "--overwrite", "--spectra", "--quiet")
    proc = subprocess.run([sys.executable, "-c", _LIMITED, "100000", *argv], cwd=REPO, capture_output=True,
                          text=True, env=env, timeout=280)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "File too large" in proc.stderr, proc.stderr
    assert out.read_bytes() == b"an earlier good result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maps.fits", "maps.fits.partial"]
    code, err = run(argv[:-1])
    assert code == 0 and "4 of 4 chunks done" in err, err
    with fits.open(out) as new, fits.open(reference) as ref:
        for name in ("V", "SIGMA", "SPEC", "MODEL", "WEIGHT"):
            np.testing.assert_array_equal(new[name].data, ref[name].data)


def test_journal_files(tmp_path):
    path = tmp_path / "m.fits.partial"
    key = {"cube": {"path": "/c.fits", "size": 1, "mtime_ns": 2, "headers_sha256": "a"}, "templates": "t",
           "lsf": None, "settings": {"moments": 2, "clip": None}, "version": "0"}
    j = Journal(path, key)
    j.check()  # nothing there yet
    assert not j.has_plan() and j.done() == set()
    j.create({"a": np.arange(3)}, {"velscale": 50.0})
    j.write_chunk(2, {"params": np.ones((2, 2))})
    assert j.done() == {2} and j.chunk_names(2) == {"params"}
    np.testing.assert_array_equal(j.load_plan()[0]["a"], np.arange(3))
    Journal(path, key).check()  # the same run: accepted
    stale = path / f".chunk_000003.npz.{2**22 + 12345}.abc.tmp"  # a writer that no longer runs
    stale.write_bytes(b"partial")
    for change, words in ((dict(templates="u"), "the templates differ"),
                          (dict(settings={"moments": 4, "clip": None}), "settings differ: moments 2 -> 4"),
                          (dict(cube=dict(key["cube"], size=5)), "the input cube differs (size)")):
        with pytest.raises(InputError, match=re.escape(f"journal of another run ({words}")):
            Journal(path, dict(key, **change)).check()
    assert not stale.exists()
    Journal(path, dict(key, templates="u")).check(overwrite=True)
    assert not path.exists()
    path.write_text("not a directory")
    with pytest.raises(InputError, match="not a directory"):
        Journal(path, key).check()
    path.unlink()
    path.mkdir()
    (path / "journal.json").write_text("{")
    with pytest.raises(InputError, match="not a readable cube3d journal"):
        Journal(path, key).check()


def test_ctrl_c_says_where_the_chunks_are(cube, reference, tmp_path, monkeypatch):
    out = tmp_path / "maps.fits"
    real_fit = cube3d.pipeline.fit_spectra
    calls = []

    def interrupted_third(data, config, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_fit(data, config, **kwargs)

    monkeypatch.setattr(cube3d.pipeline, "fit_spectra", interrupted_third)
    code, err = run(fit_argv(cube, out, "--quiet"))
    assert code == 130 and err == (f"cube3d: interrupted; no output written; the finished chunks are kept in "
                                   f"{journal_path_for(out)}: the same command resumes\n")
    assert Journal(journal_path_for(out), {}).done() == {0, 1} and not out.exists()
