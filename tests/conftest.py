import atexit
import os
import shutil
import tempfile
from pathlib import Path

# One BLAS thread for scipy/numpy: JAX keeps both cores busy, and oversubscribed OpenBLAS
# threads slow the small dense solves of the reference computations by 10-100x.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# The command line keeps compiled programs in a persistent cache (cube3d.compile_cache): the
# tests' runs share one of their own, removed at exit, instead of the user's.
_XLA_CACHE = tempfile.mkdtemp(prefix="cube3d-tests-xla-")
os.environ.setdefault("CUBE3D_CACHE_DIR", _XLA_CACHE)
atexit.register(shutil.rmtree, _XLA_CACHE, True)

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
