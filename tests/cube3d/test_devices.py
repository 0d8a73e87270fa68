"""Spectra split over several JAX devices give the one-device answer (issue 12, part 4).

Several CPU devices are forced in a subprocess (``XLA_FLAGS`` must be set before JAX
starts); the same mock spectra are fitted here on one device.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from cube3d.devices import THREADS_ENV, n_devices, over_devices, usable_cores
from cube3d.fit import FitConfig, FitInput, fit_spectra, local_quadratic

sys.path.insert(0, str(Path(__file__).parent))
from test_fit import OFFSET, VELSCALE, _mock, _templates  # noqa: E402

pytestmark = pytest.mark.timeout(600)

CONFIG = dict(moments=4, degree=4, chunk_size=8)

SCRIPT = textwrap.dedent(
    """
    import sys
    import jax
    import jax.numpy as jnp
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    from cube3d.devices import THREADS_ENV, n_devices, over_devices, usable_cores
    from cube3d.fit import FitConfig, FitInput, fit_spectra, local_quadratic

    data = np.load(sys.argv[1])
    config = FitConfig(**{CONFIG!r})
    inputs = FitInput(data["obs"], data["ivar"], data["templates"], {OFFSET}, {VELSCALE})
    result = fit_spectra(inputs, config)
    quad = local_quadratic(inputs, result.params, config)
    # the toy function's output lies on every device: the batch was split, not copied
    toy = jax.jit(over_devices(lambda x, y: x * y, 1, n_devices()))(jnp.arange(8.0), 2.0)
    np.savez(sys.argv[2], devices=n_devices(), toy_devices=len(toy.sharding.device_set), params=result.params,
             errors=result.errors, chi2=result.chi2, bestfit=result.bestfit, ok=result.ok, hess=quad["hess"])
    """
)


@pytest.fixture(scope="module")
def spectra(repo_data):
    fine, coarse = _templates(repo_data)
    _, obs, ivar = _mock(fine, 20, sn=30, seed=3)  # 20 spectra: chunks of 8, the last padded
    return obs, ivar, coarse


def test_four_devices_give_the_one_device_fit(spectra, tmp_path):
    obs, ivar, coarse = spectra
    np.savez(tmp_path / "in.npz", obs=obs, ivar=ivar, templates=coarse)
    script = SCRIPT.format(CONFIG=CONFIG, OFFSET=OFFSET, VELSCALE=VELSCALE)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                         env=env, capture_output=True, text=True, timeout=500)
    assert run.returncode == 0, run.stderr[-3000:]
    four = np.load(tmp_path / "out.npz")
    assert int(four["devices"]) == 4 and int(four["toy_devices"]) == 4

    assert n_devices() == 1  # this process: the reference on one device
    # each of the four devices fits batches of chunk_size / 4 spectra: the reference fits batches of
    # that size too (the batch's shape alone may change the last bit of sums over pixels)
    config = FitConfig(**{**CONFIG, "chunk_size": CONFIG["chunk_size"] // 4})
    inputs = FitInput(obs, ivar, coarse, OFFSET, VELSCALE)
    one = fit_spectra(inputs, config)
    hess = local_quadratic(inputs, one.params, config)["hess"]
    assert one.ok.all()
    np.testing.assert_array_equal(four["ok"], one.ok)
    # the same compiled fit per spectrum: parameters, errors and best-fit spectra to the last
    # bit; sums over pixels (chi^2, the Hessian) may round in another order (measured: 1 ulp)
    np.testing.assert_array_equal(four["params"], one.params)
    np.testing.assert_array_equal(four["errors"], one.errors)
    np.testing.assert_array_equal(four["bestfit"], one.bestfit)
    np.testing.assert_allclose(four["chi2"], one.chi2, rtol=1e-13, atol=0)
    np.testing.assert_allclose(four["hess"], hess, rtol=1e-12, atol=1e-12 * np.abs(hess).max())


def test_one_device_is_the_function_itself():
    fn = lambda x: x  # noqa: E731
    assert over_devices(fn, 1, 1) is fn
    with pytest.raises(ValueError, match="devices asked for"):
        jax.jit(over_devices(fn, 1, n_devices() + 1))(np.arange(4.0))


def test_usable_cores_honours_the_share_and_the_affinity(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "3")
    assert usable_cores() == 3  # a Dask worker's share
    monkeypatch.setenv(THREADS_ENV, "zero")  # not a count: ignored
    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert usable_cores() == expected
    monkeypatch.delenv(THREADS_ENV)
    assert usable_cores() == expected
