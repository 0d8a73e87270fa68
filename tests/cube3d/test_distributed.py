"""Chunks as Dask tasks (cube3d.cluster): ``--workers 2`` and a run whose worker is killed with
SIGKILL mid-run write the maps of a serial run; a scheduler that does not answer and a bad
``--workers`` are one line and status 2, and a good maps file is never replaced."""

import logging
import os
import signal

import numpy as np
import pytest
from astropy.io import fits

import cube3d.cluster
import cube3d.pipeline
from cube3d import FitConfig, PrepareConfig
from cube3d.cluster import dask_client, fit_chunks_on_cluster
from cube3d.errors import InputError
from cube3d.journal import Journal, journal_path_for
from tests.cube3d.test_cli import TEMPLATES, Z, make_cube, write_lsf
from tests.cube3d.test_journal import assert_same_maps, run

pytestmark = pytest.mark.timeout(400)

NY, NX = 6, 6
CHUNKS = ["--chunk-size", "8", "--chunk-spectra", "8"]  # 34 spectra in 5 chunks


@pytest.fixture(scope="module")
def cube(tmp_path_factory):
    """6 x 6 spaxels, two of them all NaN (not fitted: NaN in the maps)."""
    d = tmp_path_factory.mktemp("dask_cube")
    yy, xx = np.mgrid[:NY, :NX]
    path, _, _ = make_cube(d / "cube.fits", 60.0 * np.tanh((xx - 2.5) / 2.0), 120.0 + 5.0 * yy, sn=30.0, seed=7)
    with fits.open(path, mode="update") as hdul:
        hdul["DATA"].data[:, 0, :2] = np.nan
    return {"path": path, "lsf": write_lsf(d / "lsf.txt")}


@pytest.fixture(scope="module", autouse=True)
def worker_cache(tmp_path_factory):
    """The worker processes share one persistent compilation cache (the later ones compile nothing)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("JAX_PLATFORMS", "cpu")
    mp.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path_factory.mktemp("jax_cache")))
    mp.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    yield
    mp.undo()


def fit_argv(cube, out, *extra):
    return ["fit", str(cube["path"]), "--templates", str(TEMPLATES), "--redshift", str(Z), "-o", str(out),
            "--moments", "2", "--lsf", str(cube["lsf"]), *CHUNKS, *map(str, extra)]


def fit_run(cube, **kwargs):
    """run_fit with the settings of fit_argv."""
    return cube3d.pipeline.run_fit(cube["path"], TEMPLATES, Z, PrepareConfig(lsf=str(cube["lsf"])),
                                   FitConfig(moments=2, chunk_size=8), chunk_spectra=8, **kwargs)


@pytest.fixture(scope="module")
def serial(cube, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial") / "maps.fits"
    code, err = run(fit_argv(cube, out, "--quiet"))
    assert code == 0, err
    with fits.open(out) as hdul:
        assert np.isnan(hdul["V"].data).sum() == 2 and (hdul["BINID"].data >= 0).sum() == 34
    return out


def test_two_workers_write_the_maps_of_a_serial_run(cube, serial, tmp_path):
    out = tmp_path / "maps.fits"
    code, err = run(fit_argv(cube, out, "--workers", "2"))
    assert code == 0, err
    assert "started a Dask LocalCluster of 2 worker processes" in err and "fitting 5 chunks as Dask tasks" in err
    assert_same_maps(out, serial)  # every HDU, NaN where they are
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maps.fits"]  # the journal is gone


def test_a_killed_worker_has_its_chunk_run_again(cube, monkeypatch):
    """SIGKILL one of two workers while it fits a chunk: Dask's nanny restarts it, the chunk runs
    again, the progress counts every chunk once, and the maps are a serial run's (here from
    run_fit without a journal: a temporary one, removed)."""
    real = cube3d.pipeline.fit_chunks_on_cluster
    killed = {}

    def kill_one_after_the_first_chunk(client, task, journal, chunks, sizes, *, keep_spectra, progress=None):
        pids = client.run(os.getpid)  # worker address -> pid

        def finished(n):
            if not killed:
                busy = [addr for addr, keys in client.processing().items() if keys and addr in pids]
                killed.update(pid=pids[busy[0]] if busy else None, journal=journal)
                if busy:
                    os.kill(killed["pid"], signal.SIGKILL)
            progress(n)

        real(client, task, journal, chunks, sizes, keep_spectra=keep_spectra, progress=finished)
        client.wait_for_workers(2, timeout=120)  # the nanny restarts the dead one
        killed["after"] = set(client.run(os.getpid).values())

    monkeypatch.setattr(cube3d.pipeline, "fit_chunks_on_cluster", kill_one_after_the_first_chunk)
    seen = []
    run = fit_run(cube, workers=2, keep_spectra=True, progress=lambda done, total: seen.append((done, total)))
    assert killed["pid"] is not None, "no worker was fitting a chunk after the first finished"
    assert killed["pid"] not in killed["after"] and len(killed["after"]) == 2  # restarted
    assert seen[-1] == (34, 34) and len(seen) == 6 and all(a[0] < b[0] for a, b in zip(seen, seen[1:]))
    assert not os.path.exists(killed["journal"]) and run.journal is None

    monkeypatch.undo()
    reference = fit_run(cube, keep_spectra=True)  # serial, in memory
    assert list(run.maps.maps) == list(reference.maps.maps)
    for name, value in reference.maps.maps.items():
        assert np.array_equal(run.maps.maps[name], value, equal_nan=True), name
    for name, value in reference.maps.spectra.items():
        assert np.array_equal(run.maps.spectra[name], value, equal_nan=True), name


def test_a_scheduler_that_does_not_answer(cube, serial, tmp_path, monkeypatch):
    monkeypatch.setattr(cube3d.cluster, "SCHEDULER_TIMEOUT", 2.0)
    out = tmp_path / "maps.fits"
    out.write_bytes(b"an earlier good result")
    for address, words in (("tcp://127.0.0.1:1", "no Dask scheduler answers"),
                           ("localhost", "not the address of a Dask scheduler")):
        code, err = run(fit_argv(cube, out, "--overwrite", "--scheduler", address))
        assert code == 2 and err.count("\n") == 1, err
        assert err.startswith(f"cube3d: error: --scheduler {address}: {words}"), err
    assert out.read_bytes() == b"an earlier good result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maps.fits"]


@pytest.mark.parametrize("extra, words", [
    (["--workers", "0"], "--workers 0: must be a positive number"),
    (["--workers", "-2"], "--workers -2: must be a positive number"),
    (["--workers", "two"], "--workers: invalid int value"),
    (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "--workers and --scheduler: give one"),
])
def test_bad_workers(cube, tmp_path, extra, words):
    out = tmp_path / "maps.fits"
    code, err = run(fit_argv(cube, out, *extra))
    assert code == 2 and err.count("\n") == 1 and words in err, err
    assert not out.exists() and not journal_path_for(out).exists()


def test_run_fit_checks_the_request_before_reading(tmp_path):
    for kwargs, words in ((dict(workers=-1), "--workers: must be a positive integer"),
                          (dict(workers=1.5), "--workers: must be a positive integer"),
                          (dict(scheduler="tcp://127.0.0.1:1"), "pass journal=")):
        with pytest.raises(InputError, match=words):
            cube3d.pipeline.run_fit(tmp_path / "missing.fits", TEMPLATES, Z, **kwargs)


def test_resuming_with_workers(cube, serial, tmp_path):
    """A journal with some chunks (from a serial run, say) is finished by the workers."""
    out = tmp_path / "maps.fits"
    journal = journal_path_for(out)
    cube3d.pipeline.run_fit(cube["path"], TEMPLATES, Z, PrepareConfig(lsf=str(cube["lsf"])),
                            FitConfig(moments=2, chunk_size=8), chunk_spectra=8, journal=journal)
    jr = Journal(journal, {})
    for k in (1, 3, 4):
        (journal / f"chunk_{k:06d}.npz").unlink()
    assert jr.done() == {0, 2}
    code, err = run(fit_argv(cube, out, "--workers", "1"))
    assert code == 0 and "2 of 5 chunks done; fitting the other 3" in err, err
    assert_same_maps(out, serial)


@pytest.fixture(scope="module")
def running_cluster():
    """A Dask cluster of one worker process started apart from cube3d (as dask-jobqueue would)."""
    from distributed import LocalCluster

    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=logging.ERROR)
    yield cluster
    cluster.close()


def test_scheduler_of_a_running_cluster(cube, serial, running_cluster, tmp_path):
    out = tmp_path / "maps.fits"
    address = running_cluster.scheduler_address
    code, err = run(fit_argv(cube, out, "--scheduler", address))
    assert code == 0 and f"Dask scheduler {address}: 1 worker now" in err, err
    assert_same_maps(out, serial)
    assert len(running_cluster.workers) == 1  # left running


def failing_chunk(journal, k, keep_spectra=False):
    """A task that fails on the worker as a cube changed since the plan (k = 0) or a journal that
    the worker cannot write (k = 1) would."""
    if k == 0:
        raise InputError(f"{journal}: the input cube changed since the journal was made")
    raise PermissionError(13, "Permission denied", os.path.join(journal, "chunk_000001.npz"))


def test_an_error_on_a_worker_is_one_line(running_cluster, tmp_path):
    with dask_client(scheduler=running_cluster.scheduler_address) as client:
        with pytest.raises(InputError, match=r"^chunk 0 on a Dask worker: .*: the input cube changed since"):
            fit_chunks_on_cluster(client, failing_chunk, tmp_path, [0], [8], keep_spectra=False)
        with pytest.raises(InputError, match=r"^chunk 1 on a Dask worker: Permission denied \(.*chunk_000001.npz\); "
                                             r"the workers must reach the cube and .* at the same paths"):
            fit_chunks_on_cluster(client, failing_chunk, tmp_path, [1], [8], keep_spectra=False)


def test_local_workers_share_the_cores():
    """Each of N local workers fits on its share of the cores, not all of them (no oversubscription)."""
    from cube3d.devices import usable_cores

    share = max(1, usable_cores() // 2)
    with dask_client(workers=2) as client:
        assert sorted(client.run(usable_cores).values()) == [share, share]


def test_local_workers_use_the_compile_cache_of_the_client(monkeypatch, tmp_path):
    """Local workers load and store compiled programs where the client does (or nowhere)."""
    from cube3d.compile_cache import CACHE_ENV

    def cache_env():
        return os.environ.get(CACHE_ENV)

    monkeypatch.setattr(cube3d.cluster, "active_cache_dir", lambda: tmp_path / "xla")
    with dask_client(workers=2) as client:
        assert set(client.run(cache_env).values()) == {str(tmp_path / "xla")}
    monkeypatch.setattr(cube3d.cluster, "active_cache_dir", lambda: None)
    with dask_client(workers=1) as client:
        assert set(client.run(cache_env).values()) == {"off"}

