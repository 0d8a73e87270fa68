"""Joint fits on small mocks: the Laplace approximation recovers the truth.

NUTS on the same model, and its convergence report, run through the command line
(tests/cube3d/test_dynamics_cli.py); coverage on repeated mocks: tests/benchmarks/validate_joint.py.
"""

import jax
import numpy as np
import pytest

from dynamics import MGE
from dynamics.joint_fit import SUMMARY_COLUMNS, fit_laplace
from dynamics.joint_mocks import mock_discrete, mock_ifu
from dynamics.joint_model import JointConfig
from dynamics.tracer_density import plummer_mge

TRACER = MGE.from_observed([2e4, 5e3, 8e2, 60.0], [0.4, 2.0, 8.0, 30.0], [0.85, 0.75, 0.7, 0.65], 20.0)
TRUTH = dict(ml=3.0, inclination=60.0, beta_z=0.1, kappa=0.8, beta_z_discrete=0.0, f_out=0.05)


@pytest.fixture(scope="module")
def small():
    cfg = JointConfig(tracer=TRACER, halo="none", discrete_tracer=plummer_mge(3.0), outlier_sigma=600.0)
    ifu, _ = mock_ifu(jax.random.PRNGKey(0), TRUTH, cfg, n_side=8, pixel_size=0.1, angle=25.0, psf_sigma=0.07)
    stars = mock_discrete(jax.random.PRNGKey(1), TRUTH, cfg, n=60, a=3.0, r_max=10.0, outlier_fraction=0.05)
    return cfg, ifu, stars.data


def test_laplace_recovers_the_truth(small):
    cfg, ifu, stars = small
    res = fit_laplace(jax.random.PRNGKey(2), ifu, stars, cfg, radii=(1.0,), n_draws=2000)
    assert res.converged, res.problems
    rows = {r["name"]: r for r in res.summary}
    assert list(res.summary[0]) == list(SUMMARY_COLUMNS)
    assert set(rows) == {"ml", "inclination", "beta_z", "kappa", "beta_z_discrete", "f_out",
                         "log10_mass_total_1kpc", "log10_mass_stars_1kpc"}
    for name, true in TRUTH.items():
        r = rows[name]
        half = 0.5 * (r["p84"] - r["p16"])
        assert 0 < half and abs(r["p50"] - true) < 3.5 * half, (name, r)
    assert np.isnan(rows["ml"]["r_hat"])                        # no chains: no R-hat
    assert set(res.info["predictions"]) == {"v_model", "vrms_model", "vrms_discrete"}

