"""Mock MUSE-like cubes with known kinematics, and a FITS writer for the command line.

:func:`make_mock_cube` turns maps of V, sigma (and optionally h3, h4) into a
:class:`cube3d.io.Cube` built from real stellar templates, with Gaussian noise of
exactly the variance its ``ivar`` says; :func:`write_mock_cube` saves it as a
MUSE-like FITS file (``DATA``/``STAT``/``DQ``).  The conventions (axes, velocities,
what "truth" means) are in :mod:`cube3d.testing`; the convolution itself is in
:mod:`cube3d.testing._spectra`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import InputError
from . import _spectra
from ._checks import as_map, check_key, positive, standard_normal

__all__ = ["FLUX_UNIT", "make_mock_cube", "write_mock_cube"]

#: Flux unit written into mock cubes (MUSE's).
FLUX_UNIT = "10**(-20)*erg/s/cm**2/Angstrom"

_PIXEL_ARCSEC = 0.2  # MUSE WFM spaxel
_CRVAL_SKY = (150.1, -30.2)  # arbitrary sky position of the mock (deg)
_LSF_MARGIN = 1.0001  # default LSF = template FWHM (1 + z) * this: LSF matching is then a no-op


# ----------------------------------------------------------------------------- the cube


def make_mock_cube(
    v,
    sigma,
    templates_dir=None,
    snr=5.0,
    redshift=0.0,
    wave_range=(4750.0, 5500.0),
    weights=None,
    key=0,
    h3=None,
    h4=None,
    dwave=1.25,
    lsf_fwhm=None,
    *,
    flux_level=100.0,
    pixel_lsf=True,
    fine_kms=1.0,
    chunk=256,
):
    """A MUSE-like cube of stellar spectra with known kinematics and Gaussian noise.

    Every spaxel holds a positive mix of real stellar templates convolved with its own
    LOSVD (Gaussian, or Gauss-Hermite when ``h3``/``h4`` are given), redshifted, averaged
    over linear air-wavelength pixels ``dwave`` wide, scaled to a median of
    ``flux_level`` and given white Gaussian noise of constant variance
    ``(flux_level / snr)**2`` per spaxel.  ``ivar`` is exactly the inverse of that
    variance, so ``(flux - noiseless) * sqrt(ivar)`` is standard normal.

    Parameters
    ----------
    v : array_like, shape (ny, nx)
        Line-of-sight velocity V of each spaxel, km/s, relative to ``redshift``
        (|v| <= 3000).
    sigma : array_like, shape (ny, nx)
        Dispersion sigma, km/s (2 <= sigma <= 2000).  ``v`` and ``sigma`` broadcast
        against each other; the result must be 2-D.
    templates_dir : path or TemplateLibrary, optional
        Templates (rest frame, air, FWHM 2.51 Angstrom unless a library says
        otherwise; loaded with :func:`cube3d.templates.load_templates`).  Default: the 8
        bundled MILES-HC spectra (:func:`cube3d.datasets.demo_templates_dir`).
    snr : float or array_like, shape (ny, nx)
        Signal-to-noise per pixel, ``median(noiseless flux) / noise`` (> 0).
    redshift : float
        Galaxy redshift z (> -1).
    wave_range : (float, float)
        First and last observed pixel centre wanted, Angstrom (air); the grid is
        ``wave_range[0] + dwave * k`` up to ``wave_range[1]``.
    weights : array_like, shape (n_tpl,) or (ny, nx, n_tpl), optional
        Non-negative template weights (normalisation irrelevant); default equal
        weights, the same in every spaxel.
    key : int, numpy.random.Generator or JAX PRNG key
        Source of the noise: a non-negative integer seed, a Generator (advanced by
        ``n_wave * ny * nx`` normal draws) or a JAX key.  The same seed gives the same
        cube.
    h3, h4 : float or array_like, shape (ny, nx), optional
        Gauss-Hermite coefficients (van der Marel & Franx 1993, MNRAS 265, 175);
        |h| <= 0.3.  None: 0 (the LOSVD is then exactly Gaussian).
    dwave : float
        Pixel width, Angstrom (1.25 for MUSE).
    lsf_fwhm : float or array_like, shape (n_wave,), optional
        Instrumental FWHM imposed on the spectra before pixel integration, Angstrom,
        against observed wavelength.  Default the templates' FWHM times ``(1 + z)``
        times 1.0001 (the spectra then keep the templates' resolution).  A broader LSF
        is imposed by broadening the templates with :func:`cube3d.lsf.match_resolution`
        first (the same operation :func:`cube3d.prepare.prepare_cube` applies).
    flux_level : float or array_like, shape (ny, nx)
        Median noiseless flux of each spaxel, in ``FLUX_UNIT``.
    pixel_lsf : bool
        Whether ``cube.lsf_fwhm`` includes the pixel response (default True):
        ``sqrt(lsf_fwhm**2 + 8 ln2 dwave**2 / 6)``, see Notes.  False: ``cube.lsf_fwhm``
        is ``lsf_fwhm`` itself.
    fine_kms : float
        Step of the fine ln(lambda) grid the convolution is done on, km/s (<= 5;
        sigma must be at least twice it).
    chunk : int
        Spaxels convolved at once (bounds the memory: about 3 x 8 bytes x ``chunk``
        x the fine-grid length).

    Returns
    -------
    cube : cube3d.io.Cube
        ``flux``, ``ivar`` (n_wave, ny, nx) float64; ``wave`` (air, Angstrom); ``wcs``
        a 2-D TAN WCS with 0.2 arcsec spaxels; ``header`` with the 3-D MUSE-like WCS
        (``AWAV``); ``lsf_fwhm`` (n_wave,) the FWHM the pipeline should match the
        templates to (see ``pixel_lsf``); ``flux_unit`` :data:`FLUX_UNIT`;
        ``path`` ``"<mock>"``; ``layout`` ``"GENERIC"``.
    truth : dict
        ``"V"``, ``"SIGMA"``, ``"H3"``, ``"H4"`` (ny, nx) maps (zeros for h3/h4 not
        given), ``"noiseless"`` (n_wave, ny, nx), ``"noise"`` (ny, nx) the 1-sigma
        noise per pixel, ``"weights"`` the template weights used, ``"templates"``
        their names.

    Raises
    ------
    InputError
        Maps of the wrong shape or out of range, ``snr``/``dwave``/``redshift``/
        ``wave_range``/``key`` invalid, an ``lsf_fwhm`` narrower than the templates', or
        templates that do not cover the observed range de-redshifted and widened by
        the LOSVD kernels (naming both ranges).

    Notes
    -----
    Construction, for all spaxels at once in chunks (no loop over spaxels):

    1. The cube's pixel edges are de-redshifted (divided by ``1 + z``).  A fine grid
       uniform in ln(lambda), step ``fine_kms / c``, covers them, extended on both
       sides by the kernel half-width ``max|v| + 8 max(sigma)``.
    2. The templates (optionally LSF-broadened) are rebinned onto it exactly
       (:func:`cube3d.rebin.log_rebin`, piecewise-constant pixels) and
       Fourier-transformed once.
    3. Each spaxel's LOSVD is sampled at the fine pixels with
       :func:`cube3d.losvd.gauss_hermite_pdf`; the mix of template transforms times the
       kernel's transform, inverse-transformed, is the convolved spectrum (the grid
       is long enough that the circular convolution never wraps into the part kept).
    4. The fine spectra are averaged over the cube pixels with the exact overlap
       matrix (:func:`cube3d.rebin.overlap_matrix`).

    Pixel response.  Averaging over the cube's pixels (a box of width ``dwave``,
    variance ``dwave**2 / 12``) and the pipeline's log-rebinning, which treats those
    pixels as a step function (another ``dwave**2 / 12`` on average over sub-pixel
    phases), broaden the data but not the templates, which :func:`prepare_cube`
    rebins from their own finer pixels.  Without accounting for it the fitted sigma
    comes out high by ``sqrt(sigma**2 + s_pix**2) - sigma``, ``s_pix = c dwave /
    (sqrt(6) lambda)`` (about 30 km/s at 5000 Angstrom for 1.25 Angstrom pixels: +5
    km/s at sigma = 90 km/s, +1.7 at 220 km/s, measured noise-free).  With
    ``pixel_lsf=True`` that variance is added to the LSF the cube declares, so the
    pipeline's LSF matching gives the templates the same broadening and recovers
    sigma to about 0.3 km/s.  The same effect is present in real data whose LSF was
    measured without the rebinning term.

    Build time on two cores, 601 pixels (a fine grid of about 47,000 points): 24 x 24
    spaxels about 0.6 s (1.4 s in a fresh process, with the one JIT compilation of the
    kernel sampler); 100 x 100 spaxels about 8 s; linear in the number of spaxels.

    Examples
    --------
    >>> from cube3d.testing import make_mock_cube, rotating_disk_field
    >>> v = rotating_disk_field((10, 12), 200.0, 2.0, 30.0, 60.0)
    >>> cube, truth = make_mock_cube(v, 150.0 + 0 * v, snr=30.0, redshift=0.01)  # doctest: +SKIP
    >>> cube.flux.shape  # doctest: +SKIP
    (601, 10, 12)
    """
    # 1. every argument checked before any expensive work
    fine_kms = _check_fine_kms(fine_kms)
    maps = _check_maps(v, sigma, h3, h4, snr, flux_level, fine_kms)
    band = _check_band(redshift, dwave, wave_range)
    chunk = _check_chunk(chunk)
    lib = _load_library(templates_dir)
    w = _weights(weights, lib.n_templates, maps.v.shape)
    check_key(key)
    # 2. the cube's pixels and the resolution imposed on the spectra
    wave, edges_rest = _observed_pixels(band)
    lsf = _observed_lsf(lib, wave, band.z, lsf_fwhm)
    # 3. templates x LOSVD on the fine grid, averaged over the pixels (Notes, steps 1-4)
    spec = _noiseless_spectra(lib, w, maps, band, wave, edges_rest, lsf, fine_kms, chunk)
    # 4. flux scale, then the only random draw: white noise, one normal per pixel
    noiseless, noise = _scale_to_level(spec, maps)
    flux = noiseless + standard_normal(key, noiseless.shape) * noise[None]
    # 5. the container and the truth
    cube = _assemble_cube(flux, noise, wave, band.dwave, lsf, bool(pixel_lsf))
    truth = {
        "V": maps.v,
        "SIGMA": maps.sigma,
        "H3": maps.h3,
        "H4": maps.h4,
        "noiseless": noiseless,
        "noise": noise,
        "weights": w,
        "templates": tuple(lib.names),
    }
    return cube, truth


# ----------------------------------------------------------------------------- step 1: checks


class _Maps(NamedTuple):
    """Checked per-spaxel inputs, each (ny, nx) float64 (``h`` is (ny nx, n_h))."""

    v: np.ndarray  # km/s
    sigma: np.ndarray  # km/s
    h3: np.ndarray  # zeros when not given
    h4: np.ndarray
    h: np.ndarray  # Gauss-Hermite columns the LOSVD sampler gets: none, h3, or h3 and h4
    snr: np.ndarray  # per pixel
    level: np.ndarray  # median noiseless flux, FLUX_UNIT


class _Band(NamedTuple):
    """Checked spectral set-up."""

    z: float  # redshift
    dwave: float  # pixel width, Angstrom
    lo: float  # first pixel centre, Angstrom (observed, air)
    hi: float  # last pixel centre wanted, Angstrom


def _check_maps(v, sigma, h3, h4, snr, flux_level, fine_kms):
    """V, sigma (km/s), h3, h4, S/N and flux level as (ny, nx) maps, range-checked.

    ``fine_kms`` (km/s, already checked) sets the smallest sigma allowed, two fine pixels.
    """
    try:
        v_arr, s_arr = np.broadcast_arrays(np.asarray(v, dtype=np.float64), np.asarray(sigma, dtype=np.float64))
    except (TypeError, ValueError):
        raise InputError(
            f"v, sigma: need arrays of one shape (ny, nx), got {np.shape(v)} and {np.shape(sigma)}"
        ) from None
    if v_arr.ndim != 2 or v_arr.size == 0:
        raise InputError(f"v: need a 2-D (ny, nx) map, got shape {v_arr.shape}")
    shape = v_arr.shape
    v_arr = as_map(v_arr, shape, "v")
    s_arr = as_map(s_arr, shape, "sigma", lower=2.0 * fine_kms)
    if np.any(np.abs(v_arr) > 3000.0):
        raise InputError(f"v: |v| must be <= 3000 km/s, got {np.abs(v_arr).max():g}")
    if np.any(s_arr > 2000.0):
        raise InputError(f"sigma: must be <= 2000 km/s, got {s_arr.max():g}")
    hs = []
    for name, h in (("h3", h3), ("h4", h4)):
        arr = np.zeros(shape) if h is None else as_map(h, shape, name)
        if np.any(np.abs(arr) > 0.3):
            raise InputError(f"{name}: |{name}| must be <= 0.3, got {np.abs(arr).max():g}")
        hs.append(arr)
    n_sp = v_arr.size
    if h3 is None and h4 is None:
        h_cols = np.zeros((n_sp, 0))
    elif h4 is None:
        h_cols = hs[0].reshape(n_sp, 1)
    else:
        h_cols = np.column_stack([hs[0].ravel(), hs[1].ravel()])
    snr_arr = as_map(snr, shape, "snr", positive=True)
    level = as_map(flux_level, shape, "flux_level", positive=True)
    return _Maps(v_arr, s_arr, hs[0], hs[1], h_cols, snr_arr, level)


def _check_fine_kms(fine_kms):
    """The fine-grid step, km/s, in (0, 5]."""
    fine_kms = positive(fine_kms, "fine_kms")
    if fine_kms > 5.0:
        raise InputError(f"fine_kms: must be <= 5 km/s, got {fine_kms}")
    return fine_kms


def _check_band(redshift, dwave, wave_range):
    """Redshift, pixel width and wavelength range (Angstrom), checked."""
    try:
        z = float(redshift)
    except (TypeError, ValueError):
        raise InputError(f"redshift: must be a finite number > -1, got {redshift!r}") from None
    if not (np.isfinite(z) and z > -1.0):
        raise InputError(f"redshift: must be a finite number > -1, got {redshift!r}")
    dwave = positive(dwave, "dwave")
    try:
        lo, hi = (float(w) for w in wave_range)
    except (TypeError, ValueError):
        raise InputError(f"wave_range: need (min, max) in Angstrom, got {wave_range!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo and lo + dwave <= hi):
        raise InputError(f"wave_range: need 0 < min and at least two pixels up to max, got {wave_range!r}")
    return _Band(z, dwave, lo, hi)


def _check_chunk(chunk):
    """Spaxels per convolution batch, a positive int."""
    chunk = int(chunk)
    if chunk < 1:
        raise InputError(f"chunk: must be a positive integer, got {chunk}")
    return chunk


def _load_library(templates_dir):
    """A :class:`~cube3d.templates.TemplateLibrary` as given, loaded from a directory, or the bundled one."""
    from ..templates import TemplateLibrary, load_templates

    if isinstance(templates_dir, TemplateLibrary):
        return templates_dir
    if templates_dir is None:
        from ..datasets import demo_templates_dir

        templates_dir = demo_templates_dir()
    return load_templates(templates_dir)


def _weights(weights, n_tpl, shape):
    """Template weights, (n_tpl,) shared or (ny * nx, n_tpl) per spaxel; default equal."""
    if weights is None:
        return np.full(n_tpl, 1.0 / n_tpl)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape == (n_tpl,):
        rows = w[None, :]
    elif w.shape == tuple(shape) + (n_tpl,):
        rows = w.reshape(-1, n_tpl)
    else:
        raise InputError(f"weights: need shape ({n_tpl},) or {tuple(shape) + (n_tpl,)}, got {w.shape}")
    if not (np.all(np.isfinite(rows)) and np.all(rows >= 0) and np.all(rows.sum(1) > 0)):
        raise InputError("weights: must be finite, non-negative, with a positive sum in every spaxel")
    return w if w.ndim == 1 else rows


# ----------------------------------------------------------------------------- step 2: pixels and LSF


def _observed_pixels(band):
    """Observed pixel centres ``lo + dwave k`` (Angstrom, air) and their rest-frame edges."""
    from ..rebin import wave_edges

    n_wave = int(np.floor((band.hi - band.lo) / band.dwave * (1 + 1e-12))) + 1
    wave = band.lo + band.dwave * np.arange(n_wave)
    return wave, wave_edges(wave) / (1.0 + band.z)


def _observed_lsf(lib, wave, z, lsf_fwhm):
    """The FWHM (Angstrom, observed frame) imposed on the spectra at each pixel ``wave``.

    Default: the templates' FWHM times ``(1 + z)`` times ``_LSF_MARGIN``; a given
    ``lsf_fwhm`` must be at least the templates' FWHM times ``(1 + z)``.
    """
    zp1 = 1.0 + z
    if np.ndim(lib.fwhm) == 0:
        tpl_fwhm_obs = np.full(wave.size, float(lib.fwhm) * zp1)
    else:
        tpl_fwhm_obs = np.interp(wave / zp1, lib.wave, np.asarray(lib.fwhm)) * zp1
    if lsf_fwhm is None:
        return tpl_fwhm_obs * _LSF_MARGIN
    lsf = as_map(lsf_fwhm, (wave.size,), "lsf_fwhm", positive=True)
    if np.any(lsf < tpl_fwhm_obs * (1 - 1e-9)):
        k = int(np.argmin(lsf - tpl_fwhm_obs))
        raise InputError(
            f"lsf_fwhm: {lsf[k]:.3f} A at {wave[k]:.1f} A is narrower than the templates' FWHM "
            f"x (1 + z) = {tpl_fwhm_obs[k]:.3f} A; a mock cannot be sharper than its templates"
        )
    return lsf


# ----------------------------------------------------------------------------- step 3: spectra


def _noiseless_spectra(lib, w, maps, band, wave, edges_rest, lsf, fine_kms, chunk):
    """(n_wave, ny nx) noiseless spectra, in the templates' flux units (Notes of make_mock_cube)."""
    grid = _spectra.fine_grid(edges_rest, np.abs(maps.v).max(), maps.sigma.max(), fine_kms)
    _spectra.check_coverage(lib, grid, (band.lo, band.hi), band.z, fine_kms)
    tpl_hat, n_fft = _spectra.template_transforms(lib, grid, wave, lsf, band.z)
    avg = _spectra.pixel_average_matrix(grid, edges_rest)
    return _spectra.convolve_spaxels(
        tpl_hat, n_fft, w, maps.v.ravel() / fine_kms, maps.sigma.ravel() / fine_kms, maps.h, grid, avg, chunk
    )


# ----------------------------------------------------------------------------- step 4: flux scale and noise


def _scale_to_level(spec, maps):
    """Spectra scaled to a median of ``maps.level``, (n_wave, ny, nx), and the 1-sigma noise, (ny, nx)."""
    med = np.median(spec, axis=0)
    if np.any(~(med > 0)):
        raise InputError("templates: the template mix has a non-positive median flux over wave_range")
    noiseless = (spec * (maps.level.ravel() / med)).reshape((spec.shape[0],) + maps.v.shape)
    return noiseless, maps.level / maps.snr


# ----------------------------------------------------------------------------- step 5: the container


def _assemble_cube(flux, noise, wave, dwave, lsf, pixel_lsf):
    """The :class:`cube3d.io.Cube`: flux, constant-per-spaxel ivar, sky WCS, declared LSF."""
    from astropy.wcs import WCS

    from ..io.container import Cube

    _, ny, nx = flux.shape
    header = _sky_header(ny, nx, wave[0], dwave)
    return Cube(
        flux=flux,
        ivar=np.broadcast_to(1.0 / noise**2, flux.shape).copy(),
        wave=wave,
        air=True,
        wcs=WCS(header).celestial,
        header=header,
        # box + step-function rebinning of the pixels: variance dwave^2 / 6 (make_mock_cube Notes)
        lsf_fwhm=np.sqrt(lsf**2 + (8.0 * np.log(2.0) * dwave**2 / 6.0 if pixel_lsf else 0.0)),
        flux_unit=FLUX_UNIT,
        path="<mock>",
        layout="GENERIC",
    )


def _sky_header(ny, nx, wave0, dwave):
    """A MUSE-like 3-D header: TAN sky axes (0.2 arcsec spaxels, North up, East left), AWAV.

    ``wave0`` is the first pixel centre and ``dwave`` the pixel width, Angstrom.
    """
    from astropy.io import fits

    h = fits.Header()
    step = _PIXEL_ARCSEC / 3600.0
    h["CTYPE1"], h["CTYPE2"], h["CTYPE3"] = "RA---TAN", "DEC--TAN", "AWAV"
    h["CUNIT1"], h["CUNIT2"], h["CUNIT3"] = "deg", "deg", "Angstrom"
    h["CRVAL1"], h["CRVAL2"], h["CRVAL3"] = _CRVAL_SKY[0], _CRVAL_SKY[1], float(wave0)
    h["CRPIX1"], h["CRPIX2"], h["CRPIX3"] = (nx + 1) / 2.0, (ny + 1) / 2.0, 1.0
    h["CD1_1"], h["CD1_2"], h["CD2_1"], h["CD2_2"] = -step, 0.0, 0.0, step
    h["CD3_3"] = float(dwave)
    h["CD1_3"] = h["CD2_3"] = h["CD3_1"] = h["CD3_2"] = 0.0
    h["BUNIT"] = FLUX_UNIT
    h["OBJECT"] = "cube3d mock"
    return h


# ----------------------------------------------------------------------------- FITS file


def write_mock_cube(path, cube, *, lsf_path=None, dtype=np.float32):
    """Write a cube as a MUSE-like FITS file (``DATA``, ``STAT``, ``DQ``) for the CLI.

    :func:`cube3d.io.read_cube` reads it back (layout ``MUSE``) with the same flux,
    inverse variance (up to ``dtype`` rounding), wavelengths and sky WCS.  The MUSE
    reader does not read an LSF from the file (it uses the MUSE WFM formula unless
    told otherwise), so give the cube's own LSF to ``prepare_cube(lsf=...)`` or to
    ``cube3d fit --lsf``: ``lsf_path`` writes it as the two-column table
    :func:`cube3d.lsf.read_lsf_table` reads.

    Parameters
    ----------
    path : str or os.PathLike
        Output FITS file; must not exist.
    cube : cube3d.io.Cube
        A cube with a 3-D spectral header (as :func:`make_mock_cube` returns).
    lsf_path : str or os.PathLike, optional
        Also write ``cube.lsf_fwhm`` against ``cube.wave`` here (must not exist).
    dtype : numpy dtype
        Type of ``DATA`` and ``STAT`` (float32 as MUSE; float64 for exact round trips).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    InputError
        ``path`` or ``lsf_path`` exists (naming it; nothing is written), or
        ``lsf_path`` is given for a cube without ``lsf_fwhm``.

    Notes
    -----
    ``STAT = 1 / ivar`` where ``ivar > 0``; elsewhere ``STAT = 0``, ``DQ = 1`` and
    ``DATA = NaN``, so the same pixels come back with zero weight.
    """
    from astropy.io import fits

    path = Path(path)
    lsf_path = None if lsf_path is None else Path(lsf_path)
    for p, name in ((path, "path"), (lsf_path, "lsf_path")):
        if p is not None and (p.exists() or os.path.islink(p)):
            raise InputError(f"{name}: {p} already exists; refusing to overwrite it")
    if lsf_path is not None and cube.lsf_fwhm is None:
        raise InputError("lsf_path: the cube has no lsf_fwhm to write")
    good = cube.ivar > 0
    stat = np.zeros(cube.ivar.shape)
    np.divide(1.0, cube.ivar, out=stat, where=good)
    data = np.where(good, cube.flux, np.nan)
    header = cube.header.copy()
    for key in ("SIMPLE", "XTENSION", "BITPIX", "PCOUNT", "GCOUNT", "EXTEND", "EXTNAME"):
        header.remove(key, ignore_missing=True, remove_all=True)
    header["BUNIT"] = cube.flux_unit
    stat_header = header.copy()
    stat_header["BUNIT"] = f"({cube.flux_unit})**2" if cube.flux_unit else ""
    dq_header = header.copy()
    dq_header.remove("BUNIT", ignore_missing=True)
    prim = fits.PrimaryHDU()
    prim.header["INSTRUME"] = "MUSE"
    prim.header["ORIGIN"] = "cube3d.testing"
    hdus = fits.HDUList([
        prim,
        fits.ImageHDU(data.astype(dtype), header, name="DATA"),
        fits.ImageHDU(stat.astype(dtype), stat_header, name="STAT"),
        fits.ImageHDU((~good).astype(np.uint8), dq_header, name="DQ"),
    ])
    try:
        hdus.writeto(path, overwrite=False)
    except OSError as exc:
        if path.exists():
            raise InputError(f"path: {path} already exists; refusing to overwrite it") from None
        raise InputError(f"path: cannot write {path} ({exc})") from None
    if lsf_path is not None:
        table = np.column_stack([np.asarray(cube.wave, float), np.asarray(cube.lsf_fwhm, float)])
        with open(lsf_path, "x") as fh:  # "x": never overwrite
            np.savetxt(fh, table, fmt="%.6f", header="wavelength_A FWHM_A (cube3d mock LSF)")
    return path
