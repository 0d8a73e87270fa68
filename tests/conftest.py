import os
from pathlib import Path

# One BLAS thread for scipy/numpy: JAX keeps both cores busy, and oversubscribed OpenBLAS
# threads slow the small dense solves of the reference computations by 10-100x.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# The command line keeps compiled programs in a persistent cache (cube3d.compile_cache).  The tests
# turn it off, in this process and in the processes they start: a command run in-process turns it on
# for the rest of the pytest worker, whose later programs can then be serialized into it, and CI once
# died there with a segmentation fault inside JAX's serializer (`put_executable_and_time`); the run
# then made no progress until CI's 90 minutes were gone.  test_compile_cache.py turns the cache on
# in subprocesses of its own.
os.environ["CUBE3D_CACHE_DIR"] = "off"

import jax  # noqa: E402
import pytest

# Tests run in float64, as the entry points do.
jax.config.update("jax_enable_x64", True)

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


def pytest_configure(config):
    # A worker that dies (a segmentation fault in compiled code, or pytest-timeout's thread method
    # ending a hung test) fails its test; under `--dist loadfile` its file goes to a fresh worker,
    # which runs the failed test again.  Twice is enough to tell a flaky crash from a steady one;
    # pytest-xdist's default (4 per worker) lets a steady one take most of CI's 90 minutes.
    if getattr(config.option, "maxworkerrestart", "") is None:
        config.option.maxworkerrestart = "2"
