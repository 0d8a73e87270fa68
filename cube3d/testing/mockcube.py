"""Mock IFU cubes with known kinematic fields, for testing fits and spatial priors.

Three pieces:

* :func:`gp_field` draws a smooth random map from a Gaussian process with one of the
  kernels of :mod:`cube3d.spatial.kernels` (the same covariance the spatial priors use);
* :func:`rotating_disk_field` is a thin-disk arctan rotation field (Courteau 1997);
* :func:`make_mock_cube` turns maps of V, sigma (and optionally h3, h4) into a
  :class:`cube3d.io.Cube` built from real stellar templates, with Gaussian noise of
  exactly the variance its ``ivar`` says; :func:`write_mock_cube` saves it as a
  MUSE-like FITS file (``DATA``/``STAT``/``DQ``) for the command line.

Conventions
-----------
* Maps are ``(ny, nx)`` arrays: numpy axis 0 is the sky y (rows, FITS axis 2, North
  up), axis 1 is x (columns, FITS axis 1).  The mock WCS has North along +y and East
  along -x (``CD1_1 < 0``), 0.2 arcsec spaxels, as MUSE WFM.
* Velocities are km/s, relative to the cube's ``redshift`` in the ln(lambda) sense
  used by the fitter (Cappellari 2017, MNRAS 466, 798, Sec. 2): a spaxel with
  velocity ``v`` has its rest-frame spectrum shifted by ``ln(1 + z) + v / c`` in
  ln(lambda).
* What "truth" means: the observed spectrum of a spaxel is the template mix, taken
  as the piecewise-constant flux density per Angstrom of its pixels (as
  :mod:`cube3d.rebin` takes every spectrum), convolved in ln(lambda) with the LOSVD
  (the fitter's model, like ppxf's: the per-Angstrom density is shifted without
  the ``1 + v/c`` Jacobian), redshifted by ``1 + z`` and averaged over the cube's
  linear wavelength pixels.  So V, sigma, h3, h4 are exactly the parameters that
  :func:`cube3d.fit.fit_spectra` estimates.  The spectra keep the templates'
  resolution (FWHM 2.51 Angstrom for MILES; Falcon-Barroso et al. 2011), times
  ``1 + z`` in the observed frame, unless a broader ``lsf_fwhm`` is asked for.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .constants import C_KMS
from .errors import InputError

__all__ = ["FLUX_UNIT", "gp_field", "make_mock_cube", "rotating_disk_field", "write_mock_cube"]

#: Flux unit written into mock cubes (MUSE's).
FLUX_UNIT = "10**(-20)*erg/s/cm**2/Angstrom"

_PIXEL_ARCSEC = 0.2  # MUSE WFM spaxel
_CRVAL_SKY = (150.1, -30.2)  # arbitrary sky position of the mock (deg)
_LSF_MARGIN = 1.0001  # default LSF = template FWHM (1 + z) * this: LSF matching is then a no-op
_KERNEL_NSIGMA = 8.0  # LOSVD kernels are sampled out to |v| + 8 sigma
_MAX_GP_POINTS = 12000  # dense Cholesky: 12000^2 float64 is 1.2 GB


# ----------------------------------------------------------------------------- small helpers


def _shape2(shape, name="shape"):
    try:
        ny, nx = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise InputError(f"{name}: need two positive integers (ny, nx), got {shape!r}") from None
    if ny < 1 or nx < 1 or (ny, nx) != tuple(shape):
        raise InputError(f"{name}: need two positive integers (ny, nx), got {shape!r}")
    return ny, nx


def _positive(value, name):
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name}: must be a number, got {value!r}") from None
    if not (np.isfinite(x) and x > 0):
        raise InputError(f"{name}: must be a finite positive number, got {value!r}")
    return x


def _map(value, shape, name, *, positive=False, lower=None):
    """``value`` (scalar or array) broadcast to ``shape`` as float64, checked finite."""
    try:
        arr = np.broadcast_to(np.asarray(value, dtype=np.float64), shape).copy()
    except (TypeError, ValueError):
        raise InputError(
            f"{name}: must be a number or an array broadcastable to {shape}, got shape {np.shape(value)}"
        ) from None
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name}: holds non-finite values")
    if positive and np.any(arr <= 0):
        raise InputError(f"{name}: must be positive everywhere (min {arr.min():g})")
    if lower is not None and np.any(arr < lower):
        raise InputError(f"{name}: must be >= {lower:g} everywhere (min {arr.min():g})")
    return arr


def _standard_normal(key_or_seed, n):
    """``n`` independent N(0, 1) draws from an int seed, a numpy Generator or a JAX key."""
    if isinstance(key_or_seed, np.random.Generator):
        return key_or_seed.standard_normal(n)
    if isinstance(key_or_seed, (int, np.integer)) and not isinstance(key_or_seed, bool):
        if key_or_seed < 0:
            raise InputError(f"key_or_seed: a seed must be a non-negative integer, got {key_or_seed}")
        return np.random.default_rng(int(key_or_seed)).standard_normal(n)
    import jax

    if isinstance(key_or_seed, jax.Array):
        with jax.enable_x64(True):
            return np.asarray(jax.random.normal(key_or_seed, (n,), dtype=np.float64))
    raise InputError(
        f"key_or_seed: need an integer seed, a numpy Generator or a JAX PRNG key, got {type(key_or_seed).__name__}"
    )


# ----------------------------------------------------------------------------- fields


def gp_field(shape, scale, amp, kind="matern52", key_or_seed=0, mean=0.0):
    """A smooth random map: one draw of an isotropic Gaussian process on the spaxel grid.

    The covariance between spaxels ``p`` and ``q`` (integer positions, in spaxels) is
    ``cube3d.spatial.kernels.covariance(KernelSpec(terms, False), amp, scale, p, q)``,
    i.e. ``sum_t amp_t**2 rho_t(|p - q| / scale_t)`` with ``rho`` a Matern-3/2,
    Matern-5/2 or squared-exponential correlation (Rasmussen & Williams 2006, eqs. 4.14,
    4.17, 4.9).  The draw is ``mean + L z`` with ``L`` the Cholesky factor of the dense
    covariance plus a jitter of ``sqrt(eps) * sum(amp**2)`` on the diagonal, and ``z``
    standard normal (Rasmussen & Williams 2006, Appendix A.2).

    Parameters
    ----------
    shape : (int, int)
        ``(ny, nx)`` spaxels.
    scale : float or sequence of float
        Length scale of each kernel term, spaxels (> 0).
    amp : float or sequence of float
        Amplitude (standard deviation) of each term, in the units of the field (>= 0);
        the field's marginal variance is ``sum(amp**2)``.
    kind : str
        Kernel: ``"matern52"`` (default), ``"matern32"``, ``"expsquared"``, or a sum
        such as ``"matern32+expsquared"`` (then ``scale`` and ``amp`` have one entry
        per term).
    key_or_seed : int, numpy.random.Generator or JAX PRNG key
        Source of randomness.  The same integer seed (or key) gives the same field.
    mean : float or ndarray, shape (ny, nx)
        Added to the zero-mean draw.

    Returns
    -------
    ndarray, shape (ny, nx), float64

    Raises
    ------
    InputError
        Bad ``shape``, ``scale``, ``amp``, ``kind``, ``mean`` or ``key_or_seed``; more than
        12000 spaxels (the dense covariance would not fit comfortably in memory).

    Notes
    -----
    The cost is that of a dense Cholesky factorisation, O((ny nx)^3): about 0.3 s for
    60 x 60 spaxels on two cores.  The covariance is built from a table over the
    ``(2 ny - 1) x (2 nx - 1)`` spaxel lags, evaluated by :func:`covariance` in float64.

    Examples
    --------
    >>> v = gp_field((30, 30), scale=6.0, amp=50.0, key_or_seed=1)  # km/s
    >>> v.shape
    (30, 30)
    """
    import jax

    from .spatial.kernels import covariance, parse_kernel

    ny, nx = _shape2(shape)
    spec = parse_kernel(kind, separable=False)
    scale = np.atleast_1d(np.asarray(scale, dtype=np.float64))
    amp = np.atleast_1d(np.asarray(amp, dtype=np.float64))
    for name, arr in (("scale", scale), ("amp", amp)):
        if arr.ndim != 1 or arr.size not in (1, spec.n_terms):
            raise InputError(f"{name}: need one value per kernel term ({spec.n_terms}), got {arr.size}")
    scale = np.broadcast_to(scale, (spec.n_terms,))
    amp = np.broadcast_to(amp, (spec.n_terms,))
    if not np.all(np.isfinite(scale) & (scale > 0)):
        raise InputError(f"scale: length scales must be finite and positive (spaxels), got {scale.tolist()}")
    if not np.all(np.isfinite(amp) & (amp >= 0)):
        raise InputError(f"amp: amplitudes must be finite and non-negative, got {amp.tolist()}")
    mean = _map(mean, (ny, nx), "mean")
    n = ny * nx
    if n > _MAX_GP_POINTS:
        raise InputError(f"shape: {ny} x {nx} = {n} spaxels is too many for a dense GP draw (max {_MAX_GP_POINTS})")
    z = _standard_normal(key_or_seed, n)
    var = float(np.sum(amp**2))
    if var == 0.0:
        return mean

    # covariance on the table of lags (dy, dx), then gathered for every pair of spaxels
    dy, dx = np.meshgrid(np.arange(-(ny - 1), ny), np.arange(-(nx - 1), nx), indexing="ij")
    lags = np.column_stack([dy.ravel(), dx.ravel()]).astype(np.float64)
    with jax.enable_x64(True):
        table = np.asarray(covariance(spec, amp, scale, lags, np.zeros((1, 2))), dtype=np.float64)
    table = table.reshape(2 * ny - 1, 2 * nx - 1)
    iy, ix = np.divmod(np.arange(n), nx)
    cov = table[iy[:, None] - iy[None, :] + ny - 1, ix[:, None] - ix[None, :] + nx - 1]
    cov[np.diag_indices(n)] += np.sqrt(np.finfo(np.float64).eps) * var
    try:
        chol = np.linalg.cholesky(cov)
        draw = chol @ z
    except np.linalg.LinAlgError:  # numerically singular (very long scales): symmetric root
        w, u = np.linalg.eigh(cov)
        draw = u @ (np.sqrt(np.clip(w, 0.0, None)) * (u.T @ z))
    return mean + draw.reshape(ny, nx)


def rotating_disk_field(shape, v_max, r_turn, pa_deg, inc_deg, center=None):
    """Line-of-sight velocity of a thin rotating disk with an arctan rotation curve.

    ``V = v_max (2 / pi) arctan(R / r_turn) sin(i) cos(theta)`` (Courteau 1997, AJ 114,
    2402, eq. 2 without the systemic term; the projection of a circular velocity,
    e.g. Begeman 1989, A&A 223, 47), with ``R`` the radius in the disk plane and
    ``theta`` the azimuth in the disk plane measured from the receding half of the
    major axis.

    Parameters
    ----------
    shape : (int, int)
        ``(ny, nx)`` spaxels.
    v_max : float
        Asymptotic circular velocity, km/s (any sign; negative flips the sense).
    r_turn : float
        Turn-over radius, spaxels (> 0).
    pa_deg : float
        Position angle of the *receding* half of the major axis, degrees, measured from
        +y (North in the mock WCS) toward -x (East): the astronomical convention
        (North through East).  ``pa_deg = 0``: V > 0 at +y; ``pa_deg = 90``: V > 0 at -x.
    inc_deg : float
        Inclination, degrees, in [0, 90) (0 = face on: V = 0 everywhere).
    center : (float, float), optional
        ``(x0, y0)`` of the kinematic centre in spaxels (x = column, y = row);
        default the middle of the map, ``((nx - 1) / 2, (ny - 1) / 2)``.

    Returns
    -------
    ndarray, shape (ny, nx), float64
        Velocity in km/s, zero at the centre and along the minor axis, point-antisymmetric
        about the centre, tending to ``v_max sin(i)`` along the major axis far out.

    Notes
    -----
    With ``phi = pa_deg`` and offsets ``(dx, dy)`` from the centre, the sky coordinates
    along the major and minor axes are ``x_maj = -dx sin(phi) + dy cos(phi)``,
    ``y_min = dx cos(phi) + dy sin(phi)``; in the disk plane ``X = x_maj``,
    ``Y = y_min / cos(i)``, ``R = sqrt(X^2 + Y^2)`` and ``cos(theta) = X / R``.

    Examples
    --------
    >>> v = rotating_disk_field((21, 21), v_max=200.0, r_turn=3.0, pa_deg=30.0, inc_deg=60.0)
    >>> bool(abs(v[10, 10]) < 1e-12)
    True
    """
    ny, nx = _shape2(shape)
    v_max = float(v_max)
    if not np.isfinite(v_max):
        raise InputError(f"v_max: must be a finite number of km/s, got {v_max}")
    r_turn = _positive(r_turn, "r_turn")
    pa = float(pa_deg)
    if not np.isfinite(pa):
        raise InputError(f"pa_deg: must be a finite angle in degrees, got {pa_deg}")
    inc = float(inc_deg)
    if not (np.isfinite(inc) and 0.0 <= inc < 90.0):
        raise InputError(f"inc_deg: must lie in [0, 90) degrees, got {inc_deg}")
    if center is None:
        x0, y0 = (nx - 1) / 2.0, (ny - 1) / 2.0
    else:
        try:
            x0, y0 = (float(c) for c in center)
        except (TypeError, ValueError):
            raise InputError(f"center: need (x0, y0) in spaxels, got {center!r}") from None
        if not (np.isfinite(x0) and np.isfinite(y0)):
            raise InputError(f"center: need finite (x0, y0), got {center!r}")
    y, x = np.mgrid[0:ny, 0:nx].astype(np.float64)
    dx, dy = x - x0, y - y0
    phi, i = np.radians(pa), np.radians(inc)
    x_maj = -dx * np.sin(phi) + dy * np.cos(phi)
    y_disk = (dx * np.cos(phi) + dy * np.sin(phi)) / np.cos(i)
    r = np.hypot(x_maj, y_disk)
    # arctan(R / r_t) cos(theta) = x_maj * [arctan(R / r_t) / R], finite (-> 1 / r_t) at R = 0
    safe_r = np.where(r > 0, r, 1.0)
    ratio = np.where(r > 0, np.arctan(safe_r / r_turn) / safe_r, 1.0 / r_turn)
    return v_max * (2.0 / np.pi) * np.sin(i) * x_maj * ratio


# ----------------------------------------------------------------------------- the cube


def _load_library(templates_dir):
    from .templates import TemplateLibrary, load_templates

    if isinstance(templates_dir, TemplateLibrary):
        return templates_dir
    if templates_dir is None:
        from .datasets import demo_templates_dir

        templates_dir = demo_templates_dir()
    return load_templates(templates_dir)


def _weights(weights, n_tpl, shape):
    """Template weights, (n_tpl,) shared or (ny * nx, n_tpl) per spaxel."""
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


def _sky_header(ny, nx, wave0, dwave):
    """A MUSE-like 3-D header: TAN sky axes (0.2 arcsec spaxels, North up, East left), AWAV."""
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


_PDF_BATCH = None  # jit(vmap(gauss_hermite_pdf)), built on first use (no JAX work at import)


def _losvd_kernels(v_pix, s_pix, h, half):
    """Gauss-Hermite LOSVDs sampled at integer fine pixels -half..half, (n, 2 half + 1).

    Uses :func:`cube3d.losvd.gauss_hermite_pdf` (the real-space series, independent of
    the Fourier form the fitter uses), batched with ``jax.vmap``, in float64.
    """
    import jax

    global _PDF_BATCH
    if _PDF_BATCH is None:
        from .losvd import gauss_hermite_pdf

        _PDF_BATCH = jax.jit(jax.vmap(gauss_hermite_pdf, in_axes=(None, 0, 0, 0)))
    with jax.enable_x64(True):
        x = np.arange(-half, half + 1, dtype=np.float64)
        return np.asarray(_PDF_BATCH(x, v_pix, s_pix, h), dtype=np.float64)


def make_mock_cube(
    v,
    sigma,
    templates_dir=None,
    snr=5.0,
    redshift=0.0,
    wave_range=(4750.0, 5500.0),
    weights=None,
    seed=0,
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
    seed : int or numpy.random.Generator
        Noise seed.
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
        ``wave_range`` invalid, an ``lsf_fwhm`` narrower than the templates', or
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
    >>> v = rotating_disk_field((10, 12), 200.0, 2.0, 30.0, 60.0)
    >>> cube, truth = make_mock_cube(v, 150.0 + 0 * v, snr=30.0, redshift=0.01)  # doctest: +SKIP
    >>> cube.flux.shape  # doctest: +SKIP
    (601, 10, 12)
    """
    import scipy.fft
    from astropy.wcs import WCS

    from .io.container import Cube
    from .lsf import as_lsf, match_resolution
    from .rebin import log_rebin, overlap_matrix, wave_edges

    # --- checks
    try:
        v_arr, s_arr = np.broadcast_arrays(np.asarray(v, dtype=np.float64), np.asarray(sigma, dtype=np.float64))
    except (TypeError, ValueError):
        raise InputError(
            f"v, sigma: need arrays of one shape (ny, nx), got {np.shape(v)} and {np.shape(sigma)}"
        ) from None
    if v_arr.ndim != 2 or v_arr.size == 0:
        raise InputError(f"v: need a 2-D (ny, nx) map, got shape {v_arr.shape}")
    shape = v_arr.shape
    ny, nx = shape
    fine_kms = _positive(fine_kms, "fine_kms")
    if fine_kms > 5.0:
        raise InputError(f"fine_kms: must be <= 5 km/s, got {fine_kms}")
    v_arr = _map(v_arr, shape, "v")
    s_arr = _map(s_arr, shape, "sigma", lower=2.0 * fine_kms)
    if np.any(np.abs(v_arr) > 3000.0):
        raise InputError(f"v: |v| must be <= 3000 km/s, got {np.abs(v_arr).max():g}")
    if np.any(s_arr > 2000.0):
        raise InputError(f"sigma: must be <= 2000 km/s, got {s_arr.max():g}")
    hs = []
    for name, h in (("h3", h3), ("h4", h4)):
        arr = np.zeros(shape) if h is None else _map(h, shape, name)
        if np.any(np.abs(arr) > 0.3):
            raise InputError(f"{name}: |{name}| must be <= 0.3, got {np.abs(arr).max():g}")
        hs.append(arr)
    snr_arr = _map(snr, shape, "snr", positive=True)
    level = _map(flux_level, shape, "flux_level", positive=True)
    try:
        z = float(redshift)
    except (TypeError, ValueError):
        raise InputError(f"redshift: must be a finite number > -1, got {redshift!r}") from None
    if not (np.isfinite(z) and z > -1.0):
        raise InputError(f"redshift: must be a finite number > -1, got {redshift!r}")
    dwave = _positive(dwave, "dwave")
    try:
        lo, hi = (float(w) for w in wave_range)
    except (TypeError, ValueError):
        raise InputError(f"wave_range: need (min, max) in Angstrom, got {wave_range!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo and lo + dwave <= hi):
        raise InputError(f"wave_range: need 0 < min and at least two pixels up to max, got {wave_range!r}")
    chunk = int(chunk)
    if chunk < 1:
        raise InputError(f"chunk: must be a positive integer, got {chunk}")
    lib = _load_library(templates_dir)
    n_tpl = lib.n_templates
    w = _weights(weights, n_tpl, shape)
    rng = seed if isinstance(seed, np.random.Generator) else None
    if rng is None:
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise InputError(f"seed: need a non-negative integer or a numpy Generator, got {seed!r}")
        rng = np.random.default_rng(int(seed))

    # --- observed pixels, their rest-frame edges, the LSF
    zp1 = 1.0 + z
    n_wave = int(np.floor((hi - lo) / dwave * (1 + 1e-12))) + 1
    wave = lo + dwave * np.arange(n_wave)
    edges_rest = wave_edges(wave) / zp1
    if np.ndim(lib.fwhm) == 0:
        tpl_fwhm_obs = np.full(n_wave, float(lib.fwhm) * zp1)
    else:
        tpl_fwhm_obs = np.interp(wave / zp1, lib.wave, np.asarray(lib.fwhm)) * zp1
    pixel_lsf = bool(pixel_lsf)
    if lsf_fwhm is None:
        lsf = tpl_fwhm_obs * _LSF_MARGIN
    else:
        lsf = _map(lsf_fwhm, (n_wave,), "lsf_fwhm", positive=True)
        if np.any(lsf < tpl_fwhm_obs * (1 - 1e-9)):
            k = int(np.argmin(lsf - tpl_fwhm_obs))
            raise InputError(
                f"lsf_fwhm: {lsf[k]:.3f} A at {wave[k]:.1f} A is narrower than the templates' FWHM "
                f"x (1 + z) = {tpl_fwhm_obs[k]:.3f} A; a mock cannot be sharper than its templates"
            )

    # --- fine ln-lambda grid: output part covers the cube, input part adds the kernel margin
    step = fine_kms / C_KMS
    half = int(np.ceil((np.abs(v_arr).max() + _KERNEL_NSIGMA * s_arr.max()) / fine_kms))
    ln0 = np.log(edges_rest[0])
    n_out = int(np.ceil(np.log(edges_rest[-1] / edges_rest[0]) / step)) + 1
    n_in = n_out + 2 * half
    in_edges = ln0 + step * np.arange(-half, n_out + half + 1)
    tpl_edges = wave_edges(lib.wave, n_flux=lib.flux.shape[1])
    need_lo, need_hi = np.exp(in_edges[0]), np.exp(in_edges[-1])
    if need_lo < tpl_edges[0] or need_hi > tpl_edges[-1]:
        raise InputError(
            f"templates: they cover {tpl_edges[0]:.1f}-{tpl_edges[-1]:.1f} A (rest frame) but the mock needs "
            f"{need_lo:.1f}-{need_hi:.1f} A (wave_range {lo:g}-{hi:g} A at z = {z:g}, widened by the "
            f"{half * fine_kms:.0f} km/s LOSVD kernels); narrow wave_range or use other templates"
        )

    # --- templates: LSF-broadened on their own grid, rebinned onto the fine grid, transformed once
    pad = 60.0  # Angstrom beyond the needed range for the broadening kernel
    keep = np.flatnonzero((lib.wave > need_lo - pad) & (lib.wave < need_hi + pad))
    t_wave = lib.wave[keep]
    t_flux = np.asarray(lib.flux, dtype=np.float64)[:, keep]
    t_fwhm = lib.fwhm if np.ndim(lib.fwhm) == 0 else np.asarray(lib.fwhm)[keep]
    t_flux = match_resolution(t_wave, t_flux, t_fwhm, as_lsf((wave, lsf)), z, name="templates")
    fine_tpl = log_rebin(tpl_edges[keep[0] : keep[-1] + 2], t_flux, ln_edges=in_edges).flux
    n_fft = scipy.fft.next_fast_len(n_in, real=True)
    tpl_hat = scipy.fft.rfft(fine_tpl, n=n_fft, axis=-1, workers=-1)  # (n_tpl, n_fft // 2 + 1)
    del fine_tpl

    # --- cube-pixel averaging of the fine output pixels (rest frame, Angstrom)
    out_edges = np.exp(ln0 + step * np.arange(n_out + 1))
    avg = overlap_matrix(out_edges, edges_rest)
    avg = (avg.multiply(1.0 / np.diff(edges_rest)[:, None])).tocsr()  # (n_wave, n_out)

    # --- convolve, chunk by chunk of spaxels
    n_sp = ny * nx
    v_pix = v_arr.ravel() / fine_kms
    s_pix = s_arr.ravel() / fine_kms
    if h3 is None and h4 is None:
        h_all = np.zeros((n_sp, 0))
    elif h4 is None:
        h_all = hs[0].reshape(n_sp, 1)
    else:
        h_all = np.column_stack([hs[0].ravel(), hs[1].ravel()])
    shared_hat = (w @ tpl_hat)[None, :] if w.ndim == 1 else None  # one mix for every spaxel
    spec = np.empty((n_wave, n_sp))
    chunk = min(chunk, n_sp)
    for start in range(0, n_sp, chunk):  # chunks bound the memory; each is fully batched
        sl = slice(start, min(start + chunk, n_sp))
        m = sl.stop - sl.start
        take = np.arange(start, start + chunk).clip(max=n_sp - 1)  # last chunk padded: one jit shape
        kern = _losvd_kernels(v_pix[take], s_pix[take], h_all[take], half)[:m]  # (m, 2 half + 1)
        wrapped = np.zeros((m, n_fft))
        wrapped[:, : half + 1] = kern[:, half:]  # tap k >= 0 at index k
        wrapped[:, n_fft - half :] = kern[:, :half]  # tap k < 0 at index n_fft + k
        del kern
        prod = scipy.fft.rfft(wrapped, axis=-1, workers=-1, overwrite_x=True)
        del wrapped
        prod *= shared_hat if shared_hat is not None else w[sl] @ tpl_hat
        conv = scipy.fft.irfft(prod, n=n_fft, axis=-1, workers=-1, overwrite_x=True)
        del prod
        # fine output pixel j is input pixel j + half (Cappellari 2017 Sec. 2: a shift
        # in ln(lambda) is a shift in pixels); average it over the cube pixels
        spec[:, sl] = avg @ conv[:, half : half + n_out].T
        del conv

    # --- scale, noise
    med = np.median(spec, axis=0)
    if np.any(~(med > 0)):
        raise InputError("templates: the template mix has a non-positive median flux over wave_range")
    noiseless = (spec * (level.ravel() / med)).reshape(n_wave, ny, nx)
    noise = level / snr_arr  # 1-sigma per pixel, (ny, nx)
    flux = noiseless + rng.standard_normal(noiseless.shape) * noise[None]
    ivar = np.broadcast_to(1.0 / noise**2, noiseless.shape).copy()

    header = _sky_header(ny, nx, wave[0], dwave)
    cube = Cube(
        flux=flux,
        ivar=ivar,
        wave=wave,
        air=True,
        wcs=WCS(header).celestial,
        header=header,
        # box + step-function rebinning of the pixels: variance dwave^2 / 6 (Notes)
        lsf_fwhm=np.sqrt(lsf**2 + (8.0 * np.log(2.0) * dwave**2 / 6.0 if pixel_lsf else 0.0)),
        flux_unit=FLUX_UNIT,
        path="<mock>",
        layout="GENERIC",
    )
    truth = {
        "V": v_arr,
        "SIGMA": s_arr,
        "H3": hs[0],
        "H4": hs[1],
        "noiseless": noiseless,
        "noise": noise,
        "weights": w,
        "templates": tuple(lib.names),
    }
    return cube, truth


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
    prim.header["ORIGIN"] = "cube3d.mockcube"
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
