"""cube3d's per-spectrum fit against ppxf (Cappellari 2017, 2023) on real spectra.

ppxf is used only as an oracle (optional ``compare`` extra): both codes fit the *same*
arrays (galaxy, inverse variance, mask, log-rebinned LSF-matched MILES templates,
additive Legendre degree 4, no multiplicative polynomial, moments 2 and 4).

Conventions that make the two fits identical problems:

* cube3d places galaxy pixel ``j`` at template pixel ``j + offset``; ppxf measures
  velocities relative to ``vsyst = c ln(lambda_tpl[0] / lambda_gal[0])``, which is
  ``-offset * velscale`` here (checked by ``test_vsyst_convention`` with a template
  shifted by a known number of pixels).
* ppxf's default ``bias`` penalises h3, h4 towards zero (Cappellari & Emsellem 2004,
  sec. 3.3); cube3d has no penalty, so ppxf runs with ``bias=0``.
* ppxf's formal errors and cube3d's Laplace errors are both unscaled by chi^2.

The spectra: the SAURON spectrum of NGC 4550 shipped with ppxf (no error spectrum: a
constant noise is set from the residual rms of a first fit, so chi^2/DOF ~ 1), and the
four highest-S/N Voronoi bins (target S/N 25) of the real MUSE cube of the Abell 478
BCG.  Where ppxf's optimiser ends in a worse local minimum than cube3d (higher chi^2),
ppxf is restarted from cube3d's solution and must then confirm it.
"""

import glob
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

pytest.importorskip("ppxf")
from ppxf.ppxf import ppxf  # noqa: E402

from cube3d.fit import FitConfig, FitInput, fit_spectra  # noqa: E402
from cube3d.io import Cube, read_cube  # noqa: E402
from cube3d.prepare import prepare_cube  # noqa: E402
from cube3d.templates import load_templates  # noqa: E402

pytestmark = pytest.mark.timeout(600)

SAURON_FWHM = 4.2  # Angstrom, SAURON instrumental resolution (Bacon et al. 2001)
SAURON_Z = 0.0015  # NGC 4550; V comes out about -15 km/s relative to it (cz ~ 435 km/s)
MUSE_Z = 0.0857  # Abell 478 BCG: 0.0881 - 650 km/s, so the emission-line masks sit on the lines
N_BASIS = 20  # MILES SSPs kept by cube3d's basis selection (same set for both codes)


def _ppxf(spec, ivar, templates, offset, velscale, moments, start, degree=4):
    """ppxf on cube3d's arrays: same mask, same templates, velocities relative to vsyst."""
    good = ivar > 0
    noise = np.where(good, 1.0 / np.sqrt(np.where(good, ivar, 1.0)), 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # capfit divides 0/0 on flat steps
        return ppxf(templates.T, spec, noise, velscale, start=list(start), moments=moments, degree=degree,
                    mdegree=0, vsyst=-offset * velscale, mask=good, bias=0, quiet=True)


def _chi2(spec, ivar, model):
    return float(np.sum(ivar * (spec - model) ** 2))


def _miles_ssp(shared_data):
    files = sorted(glob.glob(str(shared_data / "templates" / "miles_ssp" / "*.fits")))
    if not files:
        pytest.skip("MILES SSP templates not available")
    return load_templates(files)


@pytest.fixture(scope="module")
def sauron(shared_data):
    """NGC 4550 as a 1 x 1 cube, prepared by cube3d with 20 MILES SSPs at 4.2 A FWHM."""
    path = shared_data / "spectra" / "NGC4550_SAURON.fits"
    data, head = fits.getdata(path, header=True)
    wave = head["CRVAL1"] + head["CDELT1"] * np.arange(data.size)
    flux = data.astype(np.float64)[:, None, None]
    cube = Cube(flux=flux, ivar=np.ones_like(flux), wave=wave, air=True, wcs=WCS(naxis=2), header=head,
                lsf_fwhm=None, flux_unit="", path=str(path), layout="GENERIC")
    # the whole SAURON range (the templates extend far beyond it)
    prep = prepare_cube(cube, _miles_ssp(shared_data), SAURON_Z, lsf=SAURON_FWHM,
                        wave_range=(wave[0] / (1 + SAURON_Z) - 10, wave[-1] / (1 + SAURON_Z) + 10),
                        n_basis=N_BASIS)
    spec = prep.spectra[0]
    good = prep.ivar[0] > 0
    # no error spectrum: constant noise equal to the residual rms of a first (Gaussian) fit
    first = _ppxf(spec, good.astype(float), prep.templates, prep.template_offset, prep.velscale, 2, [0.0, 150.0])
    sigma = np.std((spec - first.bestfit)[good])
    ivar = np.where(good, 1.0 / sigma**2, 0.0)
    return prep, spec, ivar


def test_vsyst_convention(sauron):
    """A template shifted by +5 pixels and broadened by 2 pixels: ppxf with
    vsyst = -offset * velscale returns V = +5 velscale, sigma = 2 velscale."""
    prep, _, _ = sauron
    from scipy.ndimage import gaussian_filter1d

    tpl, off, vs, n = prep.templates, prep.template_offset, prep.velscale, prep.n_pix
    shift = 5
    gal = gaussian_filter1d(tpl[0], 2.0)[off - shift : off - shift + n]  # g_j = T(j + off - 5): redshifted
    ivar = np.full(n, 1e6)
    pp = _ppxf(gal, ivar, tpl, off, vs, 2, [0.0, 150.0])
    np.testing.assert_allclose(pp.sol, [shift * vs, 2.0 * vs], atol=0.01 * vs)


@pytest.mark.parametrize("moments", [2, 4])
def test_sauron_ngc4550_agrees_with_ppxf(sauron, moments):
    prep, spec, ivar = sauron
    tpl, off, vs = prep.templates, prep.template_offset, prep.velscale
    ours = fit_spectra(FitInput(spec[None], ivar[None], tpl, off, vs), FitConfig(moments=moments, degree=4, chunk_size=1))
    ref = _ppxf(spec, ivar, tpl, off, vs, moments, [0.0, 150.0])
    assert ours.ok[0]
    # the same minimum: chi^2 equal to 1e-4 relative (cube3d may be lower, never higher)
    chi2_ours, chi2_ref = _chi2(spec, ivar, ours.bestfit[0]), _chi2(spec, ivar, ref.bestfit)
    assert chi2_ours <= chi2_ref * (1 + 1e-4)
    assert abs(chi2_ours - chi2_ref) < 1e-4 * chi2_ref + 1.0
    # a real, resolved LOSVD: V within 100 km/s of z = 0.0015, sigma ~ 100-130 km/s
    assert abs(ours.params[0, 0]) < 100 and 80 < ours.params[0, 1] < 150
    # parameters within a quarter of ppxf's formal error (the issue asks for 1 sigma)
    dev = (ours.params[0] - ref.sol) / ref.error
    assert np.all(np.abs(dev) < 0.25), dev
    # formal errors within 10 per cent (the issue asks for ~20)
    np.testing.assert_allclose(ours.errors[0], ref.error, rtol=0.10)


@pytest.fixture(scope="module")
def muse_bins(shared_data):
    """The four highest-S/N Voronoi bins (S/N 25) of the MUSE minicube, 4800-5800 A rest."""
    cube = read_cube(shared_data / "cubes" / "muse_abell478_minicube.fits")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no LSF in the file: MUSE formula (cube3d warns)
        prep = prepare_cube(cube, _miles_ssp(shared_data), MUSE_Z, target_sn=25, wave_range=(4800.0, 5800.0),
                            n_basis=15)
    pick = np.argsort(-prep.snr)[:4]
    return prep, pick


@pytest.mark.parametrize("moments", [2, 4])
def test_muse_voronoi_bins_agree_with_ppxf(muse_bins, moments):
    prep, pick = muse_bins
    tpl, off, vs = prep.templates, prep.template_offset, prep.velscale
    spec, ivar = prep.spectra[pick], prep.ivar[pick]
    ours = fit_spectra(FitInput(spec, ivar, tpl, off, vs), FitConfig(moments=moments, degree=4, chunk_size=len(pick)))
    assert np.all(ours.ok)
    for i in range(len(pick)):
        ref = _ppxf(spec[i], ivar[i], tpl, off, vs, moments, [0.0, 200.0])
        chi2_ours, chi2_ref = _chi2(spec[i], ivar[i], ours.bestfit[i]), _chi2(spec[i], ivar[i], ref.bestfit)
        if chi2_ref > chi2_ours + 1.0:
            # ppxf stopped in a worse local minimum: from cube3d's solution it must stay there
            ref = _ppxf(spec[i], ivar[i], tpl, off, vs, moments, ours.params[i])
            chi2_ref = _chi2(spec[i], ivar[i], ref.bestfit)
        assert chi2_ours <= chi2_ref * (1 + 1e-4) + 0.1, (i, chi2_ours, chi2_ref)
        # BCG: V within 300 km/s of z = 0.0857, sigma 200-450 km/s
        assert abs(ours.params[i, 0]) < 300 and 200 < ours.params[i, 1] < 450, ours.params[i]
        dev = (ours.params[i] - ref.sol) / ref.error
        assert np.all(np.abs(dev) < 1.0), (i, dev)
        np.testing.assert_allclose(ours.errors[i], ref.error, rtol=0.20)
