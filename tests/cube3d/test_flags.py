"""FLAG bits: the convergence test, clipping, bounds, S/N, and the one function that sets them."""

import numpy as np
import pytest

from cube3d.fit import FitConfig, FitInput, fit_spectra
from cube3d.flags import (
    CLIP_FLAG_FRACTION,
    FLAG_AT_BOUND,
    FLAG_BELOW_RELIABLE_SN,
    FLAG_CLIPPED,
    FLAG_LOW_SNR,
    FLAG_NONFINITE,
    FLAG_NOT_CONVERGED,
    RELIABLE_SN,
    spectrum_flags,
)
from tests.cube3d.test_fit import OFFSET, VELSCALE, _mock, _templates


@pytest.fixture(scope="module")
def mock(repo_data):
    fine, coarse = _templates(repo_data)
    truth, obs, ivar = _mock(fine, 16, sn=40, seed=11)
    return truth, FitInput(obs, ivar, coarse, OFFSET, VELSCALE)


@pytest.fixture(scope="module")
def converged_fit(mock):
    return fit_spectra(mock[1], FitConfig(moments=4, chunk_size=8))


def test_high_sn_fits_converge_and_are_unflagged(mock, converged_fit):
    truth, data = mock
    res = converged_fit
    assert res.converged.mean() >= 0.9, res.converged
    flags = spectrum_flags(res, FitConfig(moments=4), VELSCALE, np.full(16, 40.0))
    assert np.all((flags == 0) == res.converged)


def test_too_few_iterations_are_flagged_not_converged(mock, converged_fit):
    """Two iterations from a start 400 km/s off cannot reach the optimum: flagged, and the
    flag is right (the parameters are still far, in units of their errors)."""
    truth, data = mock
    cfg = FitConfig(moments=4, n_iter=2, chunk_size=8)
    res = fit_spectra(data, cfg, v_start=truth[:, 0] + 400.0)
    assert not res.converged.any()
    far = np.abs(res.params[:, 0] - converged_fit.params[:, 0]) > 0.1 * converged_fit.errors[:, 0]
    assert far.all()
    flags = spectrum_flags(res, cfg, VELSCALE, np.full(16, 40.0))
    assert np.all(flags & FLAG_NOT_CONVERGED)


def test_heavy_clipping_is_flagged(mock):
    _, data = mock
    res = fit_spectra(data, FitConfig(moments=2, clip=0.1, chunk_size=8))
    assert np.all(res.clipped_fraction > 0.5)  # 0.1 sigma rejects ~90% of Gaussian residuals
    flags = spectrum_flags(res, FitConfig(moments=2, clip=0.1), VELSCALE, np.full(16, 40.0))
    assert np.all(flags & FLAG_CLIPPED)
    light = fit_spectra(data, FitConfig(moments=2, clip=5.0, chunk_size=8))
    assert np.all(light.clipped_fraction < CLIP_FLAG_FRACTION)


def test_flags_from_a_constructed_result(converged_fit):
    res = converged_fit
    n = len(res.ok)
    params = res.params.copy()
    params[0, 1] = 1000.0  # sigma at sigma_max
    ok = res.ok.copy()
    ok[1] = False
    converged = res.converged.copy()
    converged[:] = True
    converged[2] = False
    clipped = np.zeros(n)
    clipped[3] = 0.5
    snr = np.full(n, 40.0)
    snr[4] = 1.0
    fake = res._replace(params=params, ok=ok, converged=converged, clipped_fraction=clipped)
    flags = spectrum_flags(fake, FitConfig(moments=4), VELSCALE, snr, min_sn=3.0)
    assert flags[0] & FLAG_AT_BOUND
    assert flags[1] == FLAG_NONFINITE  # a failed fit is not also "not converged" or "at bound"
    assert flags[2] == FLAG_NOT_CONVERGED
    assert flags[3] == FLAG_CLIPPED
    assert flags[4] == FLAG_LOW_SNR | FLAG_BELOW_RELIABLE_SN
    assert np.all(flags[5:] == 0)


def test_reliable_sn_floor_flags_only_fitted_spectra_below_it(converged_fit):
    """FLAG_BELOW_RELIABLE_SN: set below the floor (default RELIABLE_SN) on fitted spectra
    only; 0 turns it off; the floor is the one the module's bias table supports."""
    res = converged_fit
    n = len(res.ok)
    snr = np.full(n, 40.0)
    snr[:3] = [RELIABLE_SN - 0.01, RELIABLE_SN, 2.0]
    ok = res.ok.copy()
    ok[2] = False
    fake = res._replace(ok=ok, converged=np.ones(n, bool))
    flags = spectrum_flags(fake, FitConfig(moments=4), VELSCALE, snr)
    assert flags[0] == FLAG_BELOW_RELIABLE_SN and flags[1] == 0
    assert flags[2] == FLAG_NONFINITE  # a failed fit gets only its own bit
    assert np.all(flags[3:] == 0)
    assert np.all(spectrum_flags(fake, FitConfig(moments=4), VELSCALE, snr, reliable_sn=0.0)[:2] == 0)
    assert 5.0 < RELIABLE_SN <= 10.0


def test_flag_descriptions_fit_in_a_header_card():
    """Each bit's text goes to the FLAG HDU as a card comment (``FLAGBn = value / text``):
    a longer text would be truncated with an astropy VerifyWarning on every write."""
    from astropy.io import fits

    from cube3d.flags import FLAG_BITS

    for bit, text in FLAG_BITS.items():
        card = fits.Card(f"FLAGB{bit.bit_length() - 1}", bit, text)
        assert len(str(card)) <= 80 and text in str(card), text
