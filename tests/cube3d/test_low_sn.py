"""Per-spectrum fits at S/N 2-5 per pixel: no jumps into noise minima, at least as good as ppxf.

The mocks: a rotating disk (|V| <= 200 km/s) with a central sigma peak (100-250 km/s),
random positive mixes of the 8 bundled MILES-HC stars, S/N 2-5 per pixel, 12 x 12
spaxels, fitted with V and sigma.  At these S/N the chi^2 of a single spectrum has noise
minima hundreds of km/s away that are deeper than the true one (checked by
``test_noise_minima_exist``), so a start or a step that lands there keeps them.  The
per-spectrum fit starts at the systemic velocity unless the cross-correlation peak is
clearly better, and moves by at most half a sigma per iteration (cube3d.fit docstring);
before that change the cross-correlation start put 8-13% of these spaxels more than
300 km/s off (V RMS 184-398 km/s on the seeds below, against 128-155 km/s now and ppxf's
129-187 km/s).
"""

import warnings

import numpy as np
import pytest

from cube3d import datasets
from cube3d.fit import FitConfig, fit_spectra
from cube3d.prepare import prepare_cube
from cube3d.templates import load_templates
from cube3d.testing import make_mock_cube, rotating_disk_field

N = 12
REDSHIFT = 0.01


def _disk_mock(seed):
    lib = load_templates(datasets.demo_templates_dir())
    yy, xx = np.mgrid[:N, :N] - (N - 1) / 2
    v = rotating_disk_field((N, N), 200.0, 2.0, 30.0, 60.0)
    sigma = 100 + 150 * np.exp(-(xx**2 + yy**2) / (2 * (N / 5) ** 2))
    rng = np.random.default_rng(seed)
    snr = rng.uniform(2, 5, (N, N))
    weights = rng.uniform(0, 1, (N, N, lib.n_templates))
    cube, truth = make_mock_cube(v, sigma, lib, snr=snr, redshift=REDSHIFT, weights=weights, key=seed)
    return prepare_cube(cube, lib, REDSHIFT), truth


@pytest.fixture(scope="module")
def mocks():
    return [_disk_mock(seed) for seed in (0, 1, 2)]


@pytest.fixture(scope="module")
def fits(mocks):
    return [fit_spectra(prep, FitConfig(moments=2)) for prep, _ in mocks]


def _errors(params, truth):
    dv = params[:, 0] - truth["V"].ravel()
    ds = params[:, 1] - truth["SIGMA"].ravel()
    return np.sqrt(np.mean(dv**2)), np.sqrt(np.mean(ds**2)), np.mean(np.abs(dv) > 300)


def test_low_sn_fits_stay_out_of_noise_minima(mocks, fits):
    for (prep, truth), res in zip(mocks, fits):
        v_rms, s_rms, far = _errors(res.params, truth)
        # before: V RMS 184-398 km/s, 8-13% of the spaxels > 300 km/s off
        assert v_rms < 170 and far < 0.06, (v_rms, far)
        assert s_rms < 150, s_rms
        assert np.mean(np.abs(res.params[:, 0]) >= 1499) == 0  # nobody at the velocity bound


def test_noise_minima_exist(mocks, fits):
    """The reason for the systemic start: started *at the truth*, a fit without the trust
    region still ends far away on some spectra, with a lower chi^2 than near the truth."""
    prep, truth = mocks[1]
    free = fit_spectra(prep, FitConfig(moments=2, step_limit=1e6), v_start=truth["V"].ravel())
    assert np.mean(np.abs(free.params[:, 0] - truth["V"].ravel()) > 300) > 0.0
    _, _, far_kept = _errors(fits[1].params, truth)
    assert far_kept <= np.mean(np.abs(free.params[:, 0] - truth["V"].ravel()) > 300)


def test_cross_correlation_still_finds_a_large_offset():
    """At high S/N a galaxy 900 km/s away from the given redshift is found (the
    cross-correlation start wins when its chi^2 is clearly lower)."""
    lib = load_templates(datasets.demo_templates_dir())
    v = np.full((2, 2), 900.0)
    cube, _ = make_mock_cube(v, 150.0 + 0 * v, lib, snr=30.0, redshift=REDSHIFT, key=4)
    res = fit_spectra(prepare_cube(cube, lib, REDSHIFT), FitConfig(moments=2))
    assert np.all(np.abs(res.params[:, 0] - 900.0) < 20), res.params[:, 0]


def test_at_least_as_good_as_ppxf(mocks, fits):
    """ppxf (Cappellari 2017) on the same arrays, started at V = 0, sigma = 200 km/s."""
    pytest.importorskip("ppxf")
    from ppxf.ppxf import ppxf

    ours, theirs = [], []
    for (prep, truth), res in zip(mocks, fits):
        sol = []
        for i in range(prep.n_spec):
            good = prep.ivar[i] > 0
            noise = np.where(good, 1 / np.sqrt(np.where(good, prep.ivar[i], 1.0)), 1.0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pp = ppxf(prep.templates.T, prep.spectra[i], noise, prep.velscale, start=[0.0, 200.0], moments=2,
                          degree=4, mdegree=0, vsyst=-prep.template_offset * prep.velscale, mask=good, quiet=True)
            sol.append(pp.sol[:2])
        theirs.append(_errors(np.array(sol), truth))
        ours.append(_errors(res.params, truth))
    ours, theirs = np.array(ours), np.array(theirs)
    # summed over the three mocks: V RMS, sigma RMS and the fraction > 300 km/s off
    assert np.all(ours.sum(axis=0) <= 1.05 * theirs.sum(axis=0)), (ours, theirs)
