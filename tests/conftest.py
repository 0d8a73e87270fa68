import os
import shutil
import tempfile
from pathlib import Path

# One BLAS thread for scipy/numpy: JAX keeps both cores busy, and oversubscribed OpenBLAS
# threads slow the small dense solves of the reference computations by 10-100x.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# The command line keeps compiled programs in a persistent cache (cube3d.compile_cache).  The tests
# share one of their own, made afresh for each run (never the user's): this process, the pytest-xdist
# workers (which inherit the controller's environment) and the commands the tests start all load
# what any of them compiled before, instead of compiling it again; it is removed when the run ends.
# test_compile_cache.py checks the cache itself in subprocesses with folders of their own.  (CI once
# died inside JAX's serializer, `put_executable_and_time`, with a cache on: most likely the worker's
# memory-mapping limit, which `_release_compiled_programs` below now keeps it far from.)
_TEST_CACHE_ENV = "CUBE3D_TEST_CACHE_DIR"
_OWN_TEST_CACHE = _TEST_CACHE_ENV not in os.environ
if _OWN_TEST_CACHE:
    os.environ[_TEST_CACHE_ENV] = tempfile.mkdtemp(prefix="cube3d-tests-xla-")
os.environ["CUBE3D_CACHE_DIR"] = os.environ[_TEST_CACHE_ENV]

# Most of the suite's time is XLA compiling (1517 s of 2469 s of test time in one run), much of it
# thousands of tiny programs for eager operations at ~38 ms each.  XLA's older elemental emitter
# compiles them ~25% faster; the chunk fits and the joint model's potential are compiled with it
# outside the tests too (dynamics.xla_options).  The values agree with the default code's to
# rounding (~1e-10 relative).
# Set for this process, the xdist workers and the commands the tests start, once this XLA is seen
# to accept it (an unknown flag in XLA_FLAGS aborts the process, so it is tried in a subprocess).
_FAST_COMPILE_FLAG = "--xla_cpu_use_fusion_emitters=false"
if _FAST_COMPILE_FLAG not in os.environ.get("XLA_FLAGS", ""):
    import subprocess
    import sys

    _flags = (os.environ.get("XLA_FLAGS", "") + " " + _FAST_COMPILE_FLAG).strip()
    try:
        _probe = subprocess.run([sys.executable, "-c", "import jax; jax.jit(lambda x: x + 1)(1.0)"],
                                env=dict(os.environ, XLA_FLAGS=_flags, JAX_PLATFORMS="cpu"), capture_output=True,
                                timeout=300)
    except subprocess.TimeoutExpired:
        _probe = None
    if _probe is not None and _probe.returncode == 0:
        os.environ["XLA_FLAGS"] = _flags

import jax  # noqa: E402
import pytest

from cube3d.compile_cache import enable_compile_cache  # noqa: E402

# Tests run in float64, as the entry points do.
jax.config.update("jax_enable_x64", True)
enable_compile_cache()  # before the first compilation: JAX reads the setting then

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data():
    """Path to ../shared/data; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not available")
    return SHARED_DATA


@pytest.fixture(scope="session")
def repo_data():
    return REPO / "data"


@pytest.fixture(scope="module", autouse=True)
def _release_compiled_programs():
    """Drop JAX's compiled programs after every test module.

    Every program XLA compiles for the CPU holds its machine code in memory mappings of its own
    (~3-10 per program here), and JAX keeps every program it compiled (its caches hold them even after
    the jitted function is gone) until ``jax.clear_caches()``.  A pytest worker that runs half of the
    suite compiles thousands of programs; once the process reaches the kernel's limit of 65,530
    mappings (``vm.max_map_count``), LLVM cannot map the next program's code ("LLVM compilation
    error: Cannot allocate memory") and XLA dies with a segmentation fault.  Without this fixture a
    worker here reached 64,739 mappings in one full run, and in another died compiling in the joint
    NUTS test, as CI's did; with it the largest was 10,553.
    """
    yield
    jax.clear_caches()


def pytest_configure(config):
    # A worker that dies (a segmentation fault in compiled code, or pytest-timeout's thread method
    # ending a hung test) fails its test.  pytest-xdist 3.8's replacement of a crashed worker under
    # `--dist loadfile` then hangs the run (pytest-xdist issues #1313, #1378: the dead worker's
    # finished files are queued again as empty units), as it did on CI until its 90 minutes were
    # gone.  No restart: the run ends at once, with the crash reported.
    if getattr(config.option, "maxworkerrestart", "") is None:
        config.option.maxworkerrestart = "0"


def pytest_unconfigure(config):
    if _OWN_TEST_CACHE:  # the process that made the cache (xdist: the controller, after its workers)
        shutil.rmtree(os.environ[_TEST_CACHE_ENV], ignore_errors=True)
