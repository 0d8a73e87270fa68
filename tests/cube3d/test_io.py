"""Tests of cube3d.io: MUSE, MaNGA and generic cubes written as small synthetic FITS files."""

import tracemalloc
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from cube3d.errors import InputError
from cube3d.io import MANGA_BAD_BITS, Cube, air_to_vacuum, read_cube, vacuum_to_air

NW, NY, NX = 7, 4, 5
SIG2FWHM = np.sqrt(8.0 * np.log(2.0))
LN_PIX = np.log(10.0) * 1.0e-4  # a MaNGA pixel in ln(lambda)


def spatial_cards(h, cd=True, rot_deg=0.0):
    """TAN celestial axes 1, 2 (0.2 arcsec pixels), as a CD matrix or CDELT + PC."""
    scale = 0.2 / 3600.0
    c, s = np.cos(np.radians(rot_deg)), np.sin(np.radians(rot_deg))
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CUNIT1"], h["CUNIT2"] = "deg", "deg"
    h["CRVAL1"], h["CRVAL2"] = 150.1, -30.2
    h["CRPIX1"], h["CRPIX2"] = 2.5, 1.5
    if cd:
        h["CD1_1"], h["CD1_2"] = -scale * c, scale * s
        h["CD2_1"], h["CD2_2"] = scale * s, scale * c
    else:
        h["CDELT1"], h["CDELT2"] = -scale, scale
        h["PC1_1"], h["PC1_2"] = c, -s
        h["PC2_1"], h["PC2_2"] = s, c
    return h


def rng_cube(seed=0, shape=(NW, NY, NX)):
    return np.random.default_rng(seed).normal(10.0, 1.0, shape)


def write_muse(path, flux, stat, dq, crval=4750.0, step=1.25, crpix=1.0):
    h = spatial_cards(fits.Header(), cd=True, rot_deg=30.0)
    h["CTYPE3"], h["CUNIT3"] = "AWAV", "Angstrom"
    h["CRVAL3"], h["CRPIX3"], h["CD3_3"] = crval, crpix, step
    h["BUNIT"] = "10**(-20)*erg/s/cm**2/Angstrom"
    prim = fits.PrimaryHDU()
    prim.header["INSTRUME"] = "MUSE"
    hdus = [prim, fits.ImageHDU(flux.astype(np.float32), h, name="DATA"),
            fits.ImageHDU(stat.astype(np.float32), h, name="STAT")]
    if dq is not None:
        hdus.append(fits.ImageHDU(dq.astype(np.uint8), name="DQ"))
    fits.HDUList(hdus).writeto(path)
    return path


def manga_wave(n, log10_0=3.5589):
    return 10.0 ** (log10_0 + 1.0e-4 * np.arange(n))


def write_manga(path, flux, ivar, mask, with_wave=True, specres=None, lsfpre=None, extra=None, log10_0=3.5589):
    """A LOGCUBE; ``extra`` maps further resolution HDU names (``PRESPECRES``, ``DISP``...) to arrays."""
    n = flux.shape[0]
    lam0 = 10.0**log10_0
    h = spatial_cards(fits.Header(), cd=True)
    h["CTYPE3"], h["CUNIT3"] = "WAVE-LOG", "Angstrom"
    # FITS paper III eq. 5: lambda = CRVAL exp(CDELT (p - CRPIX) / CRVAL); MaNGA steps 1e-4 dex
    h["CRVAL3"], h["CRPIX3"], h["CD3_3"] = lam0, 1.0, lam0 * np.log(10.0) * 1.0e-4
    h["BUNIT"] = "1E-17 erg/s/cm^2/Ang/spaxel"
    hdus = [fits.PrimaryHDU(), fits.ImageHDU(flux, h, name="FLUX"), fits.ImageHDU(ivar, h, name="IVAR"),
            fits.ImageHDU(mask.astype(np.int32), h, name="MASK")]
    if with_wave:
        hdus.append(fits.ImageHDU(manga_wave(n, log10_0), name="WAVE"))
    if specres is not None:
        hdus.append(fits.ImageHDU(specres, name="SPECRES"))
    if lsfpre is not None:
        hdus.append(fits.ImageHDU(lsfpre, name="LSFPRE"))
    for name, data in (extra or {}).items():
        hdus.append(fits.ImageHDU(data, name=name))
    fits.HDUList(hdus).writeto(path)
    return path


def generic_header(ctype="WAVE", cunit="Angstrom", crval=5000.0, cdelt=2.0, crpix=3.0, cd=False):
    h = spatial_cards(fits.Header(), cd=cd)
    h["CTYPE3"] = ctype
    if cunit is not None:
        h["CUNIT3"] = cunit
    h["CRVAL3"], h["CRPIX3"] = crval, crpix
    h["CD3_3" if cd else "CDELT3"] = cdelt
    return h


def write_generic(path, flux, header, noise=None, noise_name="VAR"):
    hdus = [fits.PrimaryHDU(flux, header)]
    if noise is not None:
        hdus.append(fits.ImageHDU(noise, header, name=noise_name))
    fits.HDUList(hdus).writeto(path)
    return path


# ---------------------------------------------------------------------------------------
# MUSE


def test_muse_weights_wavelengths_and_air(tmp_path):
    flux = rng_cube(1)
    stat = np.random.default_rng(2).uniform(0.5, 2.0, flux.shape)
    dq = np.zeros(flux.shape, dtype=np.uint8)
    flux[0, 0, 0] = np.nan          # non-finite flux
    stat[1, 1, 1] = -3.0            # negative variance
    stat[2, 2, 2] = np.inf          # non-finite variance
    dq[3, 3, 3] = 4                 # DQ flag
    stat[4, 0, 1] = 0.0             # zero variance
    path = write_muse(tmp_path / "muse.fits", flux, stat, dq, crval=4750.0, step=1.25, crpix=2.0)
    cube = read_cube(path)
    assert isinstance(cube, Cube) and cube.layout == "MUSE" and cube.air is True
    assert cube.flux.shape == (NW, NY, NX) and cube.flux.dtype == np.float64
    assert cube.spatial_shape == (NY, NX) and cube.n_wave == NW
    # CRVAL3 + CD3_3 (p - CRPIX3), p 1-based
    np.testing.assert_allclose(cube.wave, 4750.0 + 1.25 * (np.arange(NW) + 1 - 2.0), rtol=0, atol=1e-9)
    bad = np.zeros(flux.shape, bool)
    for idx in [(0, 0, 0), (1, 1, 1), (2, 2, 2), (3, 3, 3), (4, 0, 1)]:
        bad[idx] = True
    f32, s32 = flux.astype(np.float32), stat.astype(np.float32)
    np.testing.assert_array_equal(cube.ivar[bad], 0.0)
    np.testing.assert_array_equal(cube.flux[bad], 0.0)
    np.testing.assert_allclose(cube.ivar[~bad], 1.0 / s32[~bad].astype(np.float64), rtol=1e-15)
    np.testing.assert_array_equal(cube.flux[~bad], f32[~bad])
    assert np.all(np.isfinite(cube.flux))
    assert cube.flux_unit == "10**(-20)*erg/s/cm**2/Angstrom"
    assert cube.lsf_fwhm is None and cube.header["EXTNAME"] == "DATA"
    with pytest.raises(ValueError):  # read-only, immutable container
        cube.flux[0, 0, 0] = 1.0


def gnomonic(dx, dy, cd, ra0, dec0):
    """TAN deprojection (Calabretta & Greisen 2002 eqs. 54, 2): pixel offsets -> RA, Dec."""
    xi, eta = np.radians(cd @ np.array([dx, dy]))
    d0, a0 = np.radians(dec0), np.radians(ra0)
    den = np.cos(d0) - eta * np.sin(d0)
    ra = a0 + np.arctan2(xi, den)
    dec = np.arctan2(np.sin(d0) + eta * np.cos(d0), np.hypot(xi, den))
    return np.degrees(ra) % 360.0, np.degrees(dec)


@pytest.mark.parametrize("cd", [True, False])
def test_celestial_wcs_round_trip(tmp_path, cd):
    flux = rng_cube(3)
    h = spatial_cards(generic_header(cd=cd), cd=cd, rot_deg=25.0)
    cube = read_cube(write_generic(tmp_path / "g.fits", flux, h))
    assert cube.wcs.naxis == 2 and cube.wcs.has_celestial
    full = WCS(h)
    x, y = np.array([0.0, 4.0, 1.5, 2.0]), np.array([0.0, 3.0, 0.5, 2.7])
    sky = cube.wcs.pixel_to_world_values(x, y)
    ref = full.pixel_to_world_values(x, y, np.zeros_like(x))
    np.testing.assert_allclose(sky[0], ref[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(sky[1], ref[1], rtol=0, atol=1e-12)
    # closed form of the gnomonic projection, independently of WCSLIB
    scale, t = 0.2 / 3600.0, np.radians(25.0)
    cdm = scale * np.array([[-np.cos(t), np.sin(t)], [np.sin(t), np.cos(t)]])
    for xi, yi, ra, dec in zip(x, y, *sky):
        ra_c, dec_c = gnomonic(xi + 1 - 2.5, yi + 1 - 1.5, cdm, 150.1, -30.2)
        assert abs(ra - ra_c) < 1e-10 and abs(dec - dec_c) < 1e-10
    # the reference pixel maps to CRVAL
    np.testing.assert_allclose(cube.wcs.pixel_to_world_values(1.5, 0.5), (150.1, -30.2), atol=1e-12)


# ---------------------------------------------------------------------------------------
# MaNGA


def manga_arrays(seed=4):
    flux = rng_cube(seed)
    ivar = np.random.default_rng(seed + 1).uniform(0.5, 2.0, flux.shape)
    mask = np.zeros(flux.shape, np.int32)
    mask[0, 1, 1] = 1 << MANGA_BAD_BITS["DONOTUSE"]
    mask[1, 2, 2] = 1 << MANGA_BAD_BITS["FORESTAR"]
    mask[2, 3, 3] = (1 << 0) | (1 << 10)  # NOCOV | DONOTUSE
    mask[3, 0, 0] = 1 << 1                 # LOWCOV: kept
    mask[4, 1, 0] = 1 << 5                 # undefined bit: kept
    ivar[5, 2, 1] = -1.0                   # negative ivar
    ivar[6, 3, 4] = np.nan
    return flux, ivar, mask


def test_manga_logcube_wave_mask_and_specres(tmp_path):
    flux, ivar, mask = manga_arrays()
    wave = manga_wave(NW)
    r = np.linspace(1800.0, 2300.0, NW)
    r[3] = 0.0  # invalid resolution: interpolated from neighbours
    path = write_manga(tmp_path / "manga-1-2-LOGCUBE.fits", flux, ivar, mask, specres=r)
    with pytest.warns(UserWarning, match=r"LOGCUBE\.fits\[SPECRES\]: only the post-pixel"):
        cube = read_cube(path)
    assert cube.layout == "MANGA" and cube.air is False
    np.testing.assert_allclose(cube.wave, wave, rtol=1e-14)
    bad = np.zeros(flux.shape, bool)
    for idx in [(0, 1, 1), (1, 2, 2), (2, 3, 3), (5, 2, 1), (6, 3, 4)]:
        bad[idx] = True
    np.testing.assert_array_equal(cube.ivar[bad], 0.0)
    np.testing.assert_array_equal(cube.flux[bad], 0.0)
    np.testing.assert_array_equal(cube.ivar[~bad], ivar[~bad])
    assert cube.ivar[3, 0, 0] > 0 and cube.ivar[4, 1, 0] > 0
    # SPECRES is post-pixel: the pixel's box (1e-4 dex wide) comes off, then the gap is interpolated
    expect = np.sqrt((wave / np.where(r > 0, r, 1.0)) ** 2 - SIG2FWHM**2 * (wave * LN_PIX) ** 2 / 12.0)
    expect[3] = np.interp(wave[3], wave[[2, 4]], expect[[2, 4]])
    np.testing.assert_allclose(cube.lsf_fwhm, expect, rtol=1e-11)
    assert cube.flux_unit == "1E-17 erg/s/cm^2/Ang/spaxel"


def test_manga_wave_log_wcs_without_wave_extension(tmp_path):
    flux, ivar, mask = manga_arrays()
    path = write_manga(tmp_path / "m.fits", flux, ivar, mask, with_wave=False)
    cube = read_cube(path)
    # WAVE-LOG with CDELT = CRVAL ln(10) 1e-4: lambda_i = CRVAL 10^(1e-4 i)
    np.testing.assert_allclose(cube.wave, manga_wave(NW), rtol=1e-13)
    assert cube.air is False and cube.lsf_fwhm is None


def test_manga_lsfpre_takes_precedence(tmp_path):
    flux, ivar, mask = manga_arrays()
    wave = manga_wave(NW)
    sig0 = np.linspace(1.0, 1.4, NW)
    # per-spaxel sigma: sig0 * (1 + k/100), k = 0..NY*NX-1 arranged so the median is known
    k = np.arange(NY * NX, dtype=float).reshape(NY, NX)
    sig = sig0[:, None, None] * (1.0 + k[None] / 100.0)
    sig[:, 0, 0] = 0.0      # non-positive: ignored
    sig[:, 0, 1] = np.nan   # non-finite: ignored
    valid = np.sort((1.0 + k.ravel()[2:] / 100.0))
    med = np.median(valid)
    path = write_manga(tmp_path / "m.fits", flux, ivar, mask, specres=np.full(NW, 2000.0),
                       lsfpre=sig.astype(np.float32))
    cube = read_cube(path)
    np.testing.assert_allclose(cube.lsf_fwhm, SIG2FWHM * sig0 * med, rtol=2e-7)  # float32 input
    assert not np.allclose(cube.lsf_fwhm, wave / 2000.0)


@pytest.mark.parametrize("post, pre", [("SPECRES", "PRESPECRES"), ("DISP", "PREDISP"), ("LSFPOST", "LSFPRE")])
def test_manga_post_pixel_lsf_loses_the_pixel_box(tmp_path, post, pre):
    """Post-pixel resolution alone: FWHM_pre^2 = FWHM_post^2 - 8 ln2 (lambda dln lambda)^2 / 12, with a warning
    (Law et al. 2021); with its pre-pixel counterpart present that one is used, unchanged and without one."""
    flux, ivar, mask = manga_arrays()
    wave = manga_wave(NW)
    fwhm_pre = wave / np.linspace(1800.0, 2300.0, NW)
    fwhm_post = np.sqrt(fwhm_pre**2 + SIG2FWHM**2 * (wave * LN_PIX) ** 2 / 12.0)

    def hdu(fwhm):  # R for the SPECRES pair, a per-spaxel sigma cube otherwise
        if "SPECRES" in post:
            return wave / fwhm
        return np.broadcast_to((fwhm / SIG2FWHM)[:, None, None], flux.shape).astype(np.float32)

    path = write_manga(tmp_path / "post.fits", flux, ivar, mask, extra={post: hdu(fwhm_post)})
    with pytest.warns(UserWarning, match=rf"post\.fits\[{post}\]: only the post-pixel resolution .* "
                                         r"converted .* 69\.0 km/s pixel's boxcar"):
        cube = read_cube(path)
    rtol = 1e-11 if "SPECRES" in post else 1e-6  # float32 sigma
    np.testing.assert_allclose(cube.lsf_fwhm, fwhm_pre, rtol=rtol)
    path = write_manga(tmp_path / "both.fits", flux, ivar, mask, extra={post: hdu(fwhm_post), pre: hdu(fwhm_pre)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cube = read_cube(path)
    np.testing.assert_allclose(cube.lsf_fwhm, fwhm_pre, rtol=rtol)


def test_manga_post_pixel_lsf_narrower_than_the_pixel_is_invalid(tmp_path):
    """A post-pixel FWHM at or below the box's own is no measurement: interpolated over, or skipped."""
    flux, ivar, mask = manga_arrays()
    wave = manga_wave(NW)
    box = SIG2FWHM * wave * LN_PIX / np.sqrt(12.0)  # FWHM of a Gaussian with the box's variance
    fwhm_post = 2.0 * box
    fwhm_post[3] = 0.9 * box[3]
    path = write_manga(tmp_path / "m.fits", flux, ivar, mask, specres=wave / fwhm_post)
    with pytest.warns(UserWarning, match="post-pixel"):
        cube = read_cube(path)
    expect = np.sqrt(3.0) * box
    expect[3] = np.interp(wave[3], wave[[2, 4]], expect[[2, 4]])
    np.testing.assert_allclose(cube.lsf_fwhm, expect, rtol=1e-11)
    path = write_manga(tmp_path / "n.fits", flux, ivar, mask, specres=wave / (0.5 * box))
    with pytest.warns(UserWarning, match=r"n\.fits\[SPECRES\]: no valid resolution values"):
        cube = read_cube(path)
    assert cube.lsf_fwhm is None


def manga_mock(r_pre, sigma, v, z, flux_level=100.0, snr=1.0e3):
    """A noise-free MaNGA-like mock: MILES-HC spectra (labelled vacuum) x Gaussian LOSVD x Gaussian LSF
    (FWHM ``wave / r_pre``, Angstrom), integrated over log-lambda pixels 1e-4 dex wide.

    The spectra are built on a 1 km/s grid and averaged over the pixels exactly
    (:mod:`cube3d.testing._spectra`, as :func:`cube3d.testing.make_mock_cube`), so the
    post-pixel LSF is the pre-pixel one convolved with the pixel's box.  The templates
    are labelled vacuum, like the cube, so that the fitted grid is the cube's own.
    Returns the library, the flux cube (n_wave, ny, nx), the ivar of S/N ``snr`` (the flux
    has no noise) and log10 of the first wavelength.
    """
    import dataclasses

    from cube3d.datasets import demo_templates_dir
    from cube3d.templates import load_templates
    from cube3d.testing import _spectra

    lib = dataclasses.replace(load_templates(demo_templates_dir()), air=False)
    log10_0, n = np.log10(4800.0 * (1.0 + z)), 580
    wave = manga_wave(n, log10_0)
    edges_rest = 10.0 ** (log10_0 + 1.0e-4 * (np.arange(n + 1) - 0.5)) / (1.0 + z)
    grid = _spectra.fine_grid(edges_rest, np.abs(v).max(), sigma.max(), 1.0)
    tpl_hat, n_fft = _spectra.template_transforms(lib, grid, wave, wave / r_pre, z)
    avg = _spectra.pixel_average_matrix(grid, edges_rest)
    w = np.full(lib.n_templates, 1.0 / lib.n_templates)
    spec = _spectra.convolve_spaxels(tpl_hat, n_fft, w, v.ravel(), sigma.ravel(), np.zeros((v.size, 0)), grid,
                                     avg, 64)
    flux = (spec * (flux_level / np.median(spec, axis=0))).reshape((n,) + v.shape)
    return lib, flux, np.full(flux.shape, (snr / flux_level) ** 2), log10_0


@pytest.mark.timeout(120)
def test_manga_sigma_from_specres_alone_matches_prespecres(tmp_path):
    """Issue 11: sigma = 55 km/s from a SPECRES-only cube is right (it came out 6% low), as from PRESPECRES."""
    from cube3d.fit import FitConfig, fit_spectra
    from cube3d.prepare import prepare_cube

    z, sigma = 0.02, 55.0
    v = np.linspace(-60.0, 60.0, 9).reshape(3, 3)
    r_pre = 1800.0  # FWHM 2.7-3.1 A, above the templates' 2.51 A (1 + z)
    lib, flux, ivar, log10_0 = manga_mock(r_pre, np.full(v.shape, sigma), v, z)
    wave = manga_wave(flux.shape[0], log10_0)
    fwhm_pre = wave / r_pre
    fwhm_post = np.sqrt(fwhm_pre**2 + SIG2FWHM**2 * (wave * LN_PIX) ** 2 / 12.0)  # pre-pixel (x) the pixel's box
    mask = np.zeros(flux.shape, np.int32)
    fitted = {}
    for name, fwhm in (("PRESPECRES", fwhm_pre), ("SPECRES", fwhm_post)):
        path = write_manga(tmp_path / f"{name}.fits", flux, ivar, mask, extra={name: wave / fwhm}, log10_0=log10_0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cube = read_cube(path)
        assert any("post-pixel" in str(w.message) for w in caught) == (name == "SPECRES")  # said in the log
        prep = prepare_cube(cube, lib, z, target_sn=None, mask_emission=False)
        k = (prep.ln_wave + np.log((1.0 + z) / wave[0])) / LN_PIX
        np.testing.assert_allclose(k, np.round(k), atol=1e-6)  # the cube's own pixels: no rebinning
        res = fit_spectra(prep, FitConfig(moments=2))
        assert res.ok.all()
        np.testing.assert_allclose(res.params[:, 0], v.ravel(), atol=0.5)
        fitted[name] = res.params[:, 1]
    np.testing.assert_allclose(fitted["PRESPECRES"], sigma, rtol=0.01)
    np.testing.assert_allclose(fitted["SPECRES"], sigma, rtol=0.01)  # was 51.5 (-6.4%)
    np.testing.assert_allclose(fitted["SPECRES"], fitted["PRESPECRES"], rtol=1e-3)


# ---------------------------------------------------------------------------------------
# generic


def test_generic_without_noise_gives_unit_weights(tmp_path):
    flux = rng_cube(6)
    flux[2, 1, 3] = np.inf
    path = write_generic(tmp_path / "g.fits", flux, generic_header(crval=5000.0, cdelt=2.0, crpix=3.0))
    cube = read_cube(path)
    assert cube.layout == "GENERIC" and cube.air is False and cube.flux_unit == ""
    np.testing.assert_allclose(cube.wave, 5000.0 + 2.0 * (np.arange(NW) + 1 - 3.0), atol=1e-9, rtol=0)
    expect = np.ones(flux.shape)
    expect[2, 1, 3] = 0.0
    np.testing.assert_array_equal(cube.ivar, expect)
    assert cube.flux[2, 1, 3] == 0.0
    np.testing.assert_array_equal(cube.flux[expect > 0], flux[expect > 0])


@pytest.mark.parametrize(
    "name, to_noise",
    [("VAR", lambda v: v), ("VARIANCE", lambda v: v), ("STAT", lambda v: v),
     ("IVAR", lambda v: 1.0 / v), ("ERR", np.sqrt), ("ERROR", np.sqrt)],
)
def test_generic_noise_hdus(tmp_path, name, to_noise):
    flux = rng_cube(7)
    var = np.random.default_rng(8).uniform(0.5, 2.0, flux.shape)
    noise = to_noise(var)
    noise[1, 2, 3] = -noise[1, 2, 3]  # negative -> zero weight, not an error
    path = write_generic(tmp_path / "g.fits", flux, generic_header(cd=True), noise, name)
    cube = read_cube(path)
    good = np.ones(flux.shape, bool)
    good[1, 2, 3] = False
    np.testing.assert_allclose(cube.ivar[good], 1.0 / var[good], rtol=1e-13)
    assert cube.ivar[1, 2, 3] == 0.0 and cube.flux[1, 2, 3] == 0.0


def test_explicit_hdus(tmp_path):
    flux = rng_cube(9)
    var = np.full(flux.shape, 4.0)
    h = generic_header()
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(flux, h, name="SCI"),
                  fits.ImageHDU(var, h, name="WHT2")]).writeto(tmp_path / "g.fits")
    cube = read_cube(tmp_path / "g.fits", flux_hdu="SCI", var_hdu=2)
    np.testing.assert_array_equal(cube.ivar, 0.25)  # unknown EXTNAME read as variance
    np.testing.assert_array_equal(cube.flux, flux)


def test_cd_and_cdelt_headers_agree(tmp_path):
    flux = rng_cube(10)
    a = read_cube(write_generic(tmp_path / "a.fits", flux, generic_header(cd=True, cdelt=0.7)))
    b = read_cube(write_generic(tmp_path / "b.fits", flux, generic_header(cd=False, cdelt=0.7)))
    np.testing.assert_allclose(a.wave, b.wave, rtol=1e-15)
    np.testing.assert_allclose(a.wave, 5000.0 + 0.7 * (np.arange(NW) - 2.0), rtol=1e-14)


def test_wavelength_in_metres_and_missing_unit(tmp_path):
    flux = rng_cube(11)
    h = generic_header(ctype="AWAV", cunit="m", crval=5.0e-7, cdelt=1.0e-10, crpix=1.0)
    cube = read_cube(write_generic(tmp_path / "m.fits", flux, h))
    np.testing.assert_allclose(cube.wave, 5000.0 + np.arange(NW), rtol=1e-13)
    assert cube.air is True
    h = generic_header(cunit=None, crval=5000.0, cdelt=1.0, crpix=1.0)
    with pytest.warns(UserWarning, match="CUNIT3"):
        cube = read_cube(write_generic(tmp_path / "a.fits", flux, h))
    np.testing.assert_allclose(cube.wave, 5000.0 + np.arange(NW), rtol=1e-13)


def test_decreasing_wavelength_is_flipped(tmp_path):
    flux = rng_cube(12)
    var = np.arange(1.0, flux.size + 1).reshape(flux.shape)
    h = generic_header(crval=5000.0, cdelt=-2.0, crpix=1.0)
    cube = read_cube(write_generic(tmp_path / "d.fits", flux, h, var, "VAR"))
    np.testing.assert_allclose(cube.wave, (5000.0 - 2.0 * np.arange(NW))[::-1], rtol=1e-14)
    np.testing.assert_array_equal(cube.flux, flux[::-1])
    np.testing.assert_allclose(cube.ivar, 1.0 / var[::-1], rtol=1e-15)


def test_frequency_axis_converted_to_vacuum_wavelength(tmp_path):
    flux = rng_cube(13)
    c = 299792458.0
    nu0, dnu = c / 5.0e-7, -1.0e11
    h = generic_header(ctype="FREQ", cunit="Hz", crval=nu0, cdelt=dnu, crpix=1.0)
    cube = read_cube(write_generic(tmp_path / "f.fits", flux, h))
    np.testing.assert_allclose(cube.wave, 1e10 * c / (nu0 + dnu * np.arange(NW)), rtol=1e-13)
    assert cube.air is False


def test_spectral_axis_first_in_fits_order(tmp_path):
    flux = rng_cube(14)  # (NW, NY, NX) in the expected order
    h = fits.Header()
    h["CTYPE1"], h["CUNIT1"], h["CRVAL1"], h["CDELT1"], h["CRPIX1"] = "WAVE", "Angstrom", 6000.0, 1.5, 1.0
    h["CTYPE2"], h["CTYPE3"] = "RA---TAN", "DEC--TAN"
    h["CRVAL2"], h["CRVAL3"], h["CRPIX2"], h["CRPIX3"] = 10.0, 20.0, 1.0, 1.0
    h["CDELT2"], h["CDELT3"] = -1e-4, 1e-4
    stored = np.transpose(flux, (1, 2, 0))  # numpy (NY, NX, NW): FITS axis 1 is the spectrum
    cube = read_cube(write_generic(tmp_path / "t.fits", stored, h))
    np.testing.assert_array_equal(cube.flux, flux)
    np.testing.assert_allclose(cube.wave, 6000.0 + 1.5 * np.arange(NW), rtol=1e-14)
    ref = WCS(h).pixel_to_world_values(0.0, 2.0, 3.0)  # wave pixel 0, x = 2, y = 3
    np.testing.assert_allclose(cube.wcs.pixel_to_world_values(2.0, 3.0), ref[1:], atol=1e-12)


# ---------------------------------------------------------------------------------------
# bad input: one-line InputError naming the file and HDU


def assert_one_line(excinfo, *words):
    msg = str(excinfo.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_missing_file(tmp_path):
    with pytest.raises(InputError) as e:
        read_cube(tmp_path / "nope.fits")
    assert_one_line(e, "nope.fits", "no such file")


def test_not_a_fits_file(tmp_path):
    p = tmp_path / "text.fits"
    p.write_text("this is not FITS\n" * 10)
    with pytest.raises(InputError) as e:
        read_cube(p)
    assert_one_line(e, "text.fits", "not a readable FITS file")


def test_truncated_fits_file(tmp_path):
    flux = rng_cube(15, shape=(40, 20, 20))
    p = write_generic(tmp_path / "t.fits", flux, generic_header())
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError) as e, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        read_cube(p)
    assert_one_line(e, "t.fits[PRIMARY]", "cannot read data")


def test_no_3d_hdu(tmp_path):
    p = tmp_path / "img.fits"
    fits.HDUList([fits.PrimaryHDU(np.ones((4, 5)))]).writeto(p)
    with pytest.raises(InputError) as e:
        read_cube(p)
    assert_one_line(e, "img.fits", "no 3-D image HDU")


@pytest.mark.parametrize("ctype", ["LAMBDA", "VRAD", None])
def test_no_spectral_axis(tmp_path, ctype):
    h = spatial_cards(fits.Header())
    if ctype is not None:
        h["CTYPE3"], h["CRVAL3"], h["CDELT3"] = ctype, 5000.0, 1.0
    p = write_generic(tmp_path / "ns.fits", rng_cube(16), h)
    with pytest.raises(InputError) as e:
        read_cube(p)
    assert_one_line(e, "ns.fits[PRIMARY]", "CTYPE")


def test_variance_shape_differs(tmp_path):
    h = generic_header()
    p = write_generic(tmp_path / "v.fits", rng_cube(17), h, np.ones((NW, NY, NX + 1)), "VAR")
    with pytest.raises(InputError) as e:
        read_cube(p)
    assert_one_line(e, "v.fits[VAR]", "shape")


def test_muse_dq_shape_differs(tmp_path):
    flux = rng_cube(18)
    p = write_muse(tmp_path / "m.fits", flux, np.ones_like(flux), np.zeros((NW, NY, 2)))
    with pytest.raises(InputError) as e:
        read_cube(p)
    assert_one_line(e, "m.fits[DQ]", "shape")


def test_all_non_finite_cube(tmp_path):
    p = write_generic(tmp_path / "nan.fits", np.full((NW, NY, NX), np.nan), generic_header())
    with pytest.raises(InputError) as e:
        read_cube(p)
    assert_one_line(e, "nan.fits[PRIMARY]", "masked")


def test_all_masked_cube(tmp_path):
    flux = rng_cube(19)
    p = write_muse(tmp_path / "dq.fits", flux, np.ones_like(flux), np.ones(flux.shape))
    with pytest.raises(InputError) as e:
        read_cube(p)
    assert_one_line(e, "dq.fits[DATA]", "masked")
    flux, ivar, mask = manga_arrays()
    p = write_manga(tmp_path / "mm.fits", flux, -np.abs(ivar), mask)  # every ivar negative
    with pytest.raises(InputError) as e:
        read_cube(p)
    assert_one_line(e, "mm.fits[FLUX]")


def test_unknown_layout(tmp_path):
    p = write_generic(tmp_path / "g.fits", rng_cube(20), generic_header())
    with pytest.raises(InputError) as e:
        read_cube(p, layout="KMOS")
    assert_one_line(e, "g.fits", "KMOS", "layout")


def test_forced_layout_without_its_hdus(tmp_path):
    p = write_generic(tmp_path / "g.fits", rng_cube(21), generic_header())
    with pytest.raises(InputError) as e:
        read_cube(p, layout="muse")
    assert_one_line(e, "g.fits", "'DATA'")
    # a generic file read as GENERIC even when forced
    assert read_cube(p, layout="Generic").layout == "GENERIC"


# ---------------------------------------------------------------------------------------
# air <-> vacuum


def test_air_vacuum_round_trip_and_known_values():
    w = np.linspace(3000.0, 11000.0, 2001)
    np.testing.assert_allclose(air_to_vacuum(vacuum_to_air(w)), w, rtol=0, atol=1e-6)
    np.testing.assert_allclose(vacuum_to_air(air_to_vacuum(w)), w, rtol=0, atol=1e-6)
    # NIST atomic spectra database: Na I D2 and Ca II K, air and vacuum wavelengths
    assert abs(vacuum_to_air(5891.58264) - 5889.95095) < 2e-3
    assert abs(air_to_vacuum(5889.95095) - 5891.58264) < 2e-3
    assert abs(air_to_vacuum(3933.663) - 3934.777) < 2e-3
    # IAU convention: below 2000 A wavelengths stay in vacuum
    assert vacuum_to_air(1215.67) == 1215.67 and air_to_vacuum(1215.67) == 1215.67
    assert np.ndim(vacuum_to_air(5000.0)) == 0


# ---------------------------------------------------------------------------------------
# the real MUSE cube


def test_real_muse_minicube(shared_data):
    path = shared_data / "cubes" / "muse_abell478_minicube.fits"
    tracemalloc.start()
    cube = read_cube(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert cube.layout == "MUSE" and cube.air is True
    assert cube.flux.shape == (3681, 40, 40)
    assert cube.wave[0] == pytest.approx(4749.890625, abs=1e-9)
    np.testing.assert_allclose(cube.wave, 4749.890625 + 1.25 * np.arange(3681), rtol=1e-14)
    assert np.all(np.isfinite(cube.flux)) and np.all(cube.ivar >= 0)
    with fits.open(path) as hdul:
        stat = hdul["STAT"].data[:, 20, 20].astype(np.float64)
        data = hdul["DATA"].data[:, 20, 20].astype(np.float64)
        ok = np.isfinite(stat) & (stat > 0) & np.isfinite(data) & (hdul["DQ"].data[:, 20, 20] == 0)
        header = hdul["DATA"].header
    np.testing.assert_allclose(cube.ivar[ok, 20, 20], 1.0 / stat[ok], rtol=1e-15)
    np.testing.assert_array_equal(cube.ivar[~ok, 20, 20], 0.0)
    np.testing.assert_array_equal(cube.flux[ok, 20, 20], data[ok])
    ra, dec = cube.wcs.pixel_to_world_values(header["CRPIX1"] - 1, header["CRPIX2"] - 1)
    assert ra == pytest.approx(header["CRVAL1"], abs=1e-10) and dec == pytest.approx(header["CRVAL2"], abs=1e-10)
    # memory: the two float64 cubes (flux, ivar) plus boolean masks, no further copies
    nbytes = cube.flux.nbytes + cube.ivar.nbytes
    assert peak < 1.35 * nbytes, (peak / 2**20, nbytes / 2**20)


def test_manga_bad_auxiliary_extensions(tmp_path):
    flux, ivar, mask = manga_arrays()
    p = write_manga(tmp_path / "w.fits", flux, ivar, mask, with_wave=False)
    with fits.open(p, mode="append") as hdul:
        hdul.append(fits.ImageHDU(manga_wave(NW + 1), name="WAVE"))
    with pytest.raises(InputError) as e:
        read_cube(p)
    assert_one_line(e, "w.fits[WAVE]", "wavelengths")
    p = write_manga(tmp_path / "s.fits", flux, ivar, mask, specres=np.full(NW - 2, 2000.0))
    with pytest.raises(InputError) as e:
        read_cube(p)
    assert_one_line(e, "s.fits[SPECRES]")
    p = write_manga(tmp_path / "one.fits", flux[:1], ivar[:1], mask[:1], specres=np.full(1, 2000.0))
    with pytest.raises(InputError) as e:  # no pixel width to take off a post-pixel LSF
        read_cube(p)
    assert_one_line(e, "one.fits[SPECRES]", "two or more channels")


# ---------------------------------------------------------------------------------------
# hostile headers and missing noise (issue 13)


def test_no_noise_hdu_gives_der_snr_variance_per_spaxel(tmp_path):
    """Without a noise HDU each spaxel gets 1 / DER_SNR(noise)^2, with a warning naming file and HDU."""
    nw = 600
    rng = np.random.default_rng(30)
    sigma = rng.uniform(0.5, 3.0, (NY, NX))  # known white noise, different per spaxel
    flux = 50.0 + np.sin(np.arange(nw) / 40.0)[:, None, None] + rng.normal(size=(nw, NY, NX)) * sigma
    flux[5, 1, 1] = np.nan
    h = generic_header(crval=5000.0, cdelt=1.0, crpix=1.0)
    path = write_generic(tmp_path / "g.fits", flux, h)
    with pytest.warns(UserWarning, match=r"g\.fits\[PRIMARY\]: no noise .*HDU.*DER_SNR"):
        cube = read_cube(path)
    assert cube.ivar[5, 1, 1] == 0.0 and cube.flux[5, 1, 1] == 0.0
    good = cube.ivar > 0
    for y, x in np.ndindex(NY, NX):  # one constant variance per spaxel
        assert np.ptp(cube.ivar[:, y, x][good[:, y, x]]) == 0.0
    np.testing.assert_allclose(1.0 / np.sqrt(cube.ivar[0]), sigma, rtol=0.1)
    # MUSE without STAT: the warning names STAT
    stat = np.ones_like(flux)
    muse = write_muse(tmp_path / "m.fits", np.nan_to_num(flux), stat, None)
    with fits.open(muse) as hdul:
        fits.HDUList([hdul[0], hdul["DATA"]]).writeto(tmp_path / "m_nostat.fits")
    with pytest.warns(UserWarning, match=r"m_nostat\.fits\[DATA\]: no STAT HDU"):
        cube = read_cube(tmp_path / "m_nostat.fits")
    assert cube.layout == "MUSE"
    np.testing.assert_allclose(1.0 / np.sqrt(cube.ivar[0]), sigma, rtol=0.1)


@pytest.mark.parametrize("cd, key", [(True, "CD3_3"), (False, "CDELT3")])
def test_degenerate_spectral_step(tmp_path, cd, key):
    """A zero step must not become astropy's silent 1 A (or 1 m) per pixel."""
    h = generic_header(cd=cd, cdelt=0.0)
    p = write_generic(tmp_path / "z.fits", rng_cube(31), h, np.ones((NW, NY, NX)), "VAR")
    with pytest.raises(InputError) as e:
        read_cube(p)
    assert_one_line(e, "z.fits[PRIMARY]", "degenerate spectral WCS", key)


def test_degenerate_wavelengths(tmp_path):
    h = generic_header(crval=-5000.0, cdelt=1.0)  # negative wavelengths
    p = write_generic(tmp_path / "n.fits", rng_cube(32), h, np.ones((NW, NY, NX)), "VAR")
    with pytest.raises(InputError) as e:
        read_cube(p)
    assert_one_line(e, "n.fits[PRIMARY]", "degenerate spectral WCS", "non-positive")


def test_no_celestial_wcs(tmp_path):
    """No CTYPE1/CTYPE2: refused when reading, before any fit (the maps need sky coordinates)."""
    h = generic_header()
    del h["CTYPE1"], h["CTYPE2"]
    p = write_generic(tmp_path / "s.fits", rng_cube(33), h, np.ones((NW, NY, NX)), "VAR")
    with pytest.raises(InputError) as e:
        read_cube(p)
    assert_one_line(e, "s.fits[PRIMARY]", "celestial", "CTYPE1", "CTYPE2")
