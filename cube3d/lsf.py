"""Instrumental line-spread functions and template resolution matching.

An LSF is described by its Gaussian FWHM (Angstrom) as a function of observed
wavelength.  Sources: a two-column table (wavelength, FWHM; e.g.
``../shared/data/lsf/MUSE-WFM.lsf``), the MUSE WFM analytic fit (Bacon et al. 2017,
A&A 608, A1, eq. 8), a cube's own per-wavelength LSF (MaNGA), or a constant.

:func:`match_resolution` convolves rest-frame templates with a Gaussian of
wavelength-dependent width so that their FWHM equals the instrument's FWHM
de-redshifted to the galaxy rest frame, ``FWHM_obs(lambda (1 + z)) / (1 + z)``:
Gaussian widths add in quadrature, so the kernel has
``sigma_diff^2 = (FWHM_target^2 - FWHM_template^2) / (8 ln 2)``.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

__all__ = [
    "FWHM_TO_SIGMA",
    "LineSpreadFunction",
    "read_lsf_table",
    "muse_wfm_fwhm",
    "as_lsf",
    "check_lsf_coverage",
    "rest_frame_fwhm",
    "gaussian_filter_variable",
    "match_resolution",
]

#: sigma = FWHM * FWHM_TO_SIGMA for a Gaussian, 1 / (2 sqrt(2 ln 2)).
FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


@dataclass(frozen=True)
class LineSpreadFunction:
    """Gaussian LSF: FWHM (Angstrom) tabulated against observed wavelength.

    Attributes
    ----------
    wave : ndarray, shape (n,)
        Observed wavelengths, Angstrom, increasing (length 1 for a constant).
    fwhm : ndarray, shape (n,)
        FWHM at ``wave``, Angstrom.  Linear interpolation inside the table,
        constant extrapolation outside it.
    source : str
        Where it came from (file name, "MUSE WFM Bacon+2017 eq. 8", ...).
    """

    wave: np.ndarray
    fwhm: np.ndarray
    source: str = ""

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        """FWHM in Angstrom at observed wavelengths ``wave`` (Angstrom)."""
        wave = np.asarray(wave, dtype=np.float64)
        if self.wave.size == 1:
            return np.full(wave.shape, float(self.fwhm[0]))
        return np.interp(wave, self.wave, self.fwhm)


def read_lsf_table(path: str | os.PathLike) -> LineSpreadFunction:
    """Read a two-column LSF table: wavelength (Angstrom), FWHM (Angstrom).

    Lines starting with ``#`` are comments.  Raises :class:`InputError` naming
    the file when it is missing, unreadable, or not two increasing columns of
    positive numbers.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--lsf: file not found: {path}")
    try:
        data = np.loadtxt(path, comments="#", ndmin=2, dtype=np.float64)
    except (ValueError, OSError) as exc:
        raise InputError(f"--lsf: cannot read {path} as two numeric columns ({exc})") from None
    if data.shape[0] < 1 or data.shape[1] != 2:
        raise InputError(f"--lsf: {path} must have two columns (wavelength, FWHM in Angstrom)")
    wave, fwhm = data[:, 0], data[:, 1]
    if not (np.all(np.isfinite(data)) and np.all(fwhm > 0) and np.all(wave > 0)):
        raise InputError(f"--lsf: {path} holds non-finite or non-positive values")
    if np.any(np.diff(wave) <= 0):
        raise InputError(f"--lsf: wavelengths in {path} are not strictly increasing")
    return LineSpreadFunction(wave, fwhm, str(path))


def muse_wfm_fwhm(wave: np.ndarray) -> np.ndarray:
    """MUSE wide-field-mode LSF FWHM (Angstrom) at observed wavelength (Angstrom).

    Bacon et al. 2017, A&A 608, A1, eq. 8:
    ``FWHM = 5.866e-8 lambda^2 - 9.187e-4 lambda + 6.040`` (lambda in Angstrom),
    valid over the MUSE range 4750-9350 A (about 2.9 A at 5000 A, 2.4 A at 7000 A).
    """
    wave = np.asarray(wave, dtype=np.float64)
    return 5.866e-8 * wave**2 - 9.187e-4 * wave + 6.040


def _muse_default() -> LineSpreadFunction:
    wave = np.linspace(4650.0, 9350.0, 941)
    return LineSpreadFunction(wave, muse_wfm_fwhm(wave), "MUSE WFM, Bacon et al. 2017 eq. 8")


def as_lsf(lsf: Any, *, wave: np.ndarray | None = None) -> LineSpreadFunction:
    """Turn the accepted LSF descriptions into a :class:`LineSpreadFunction`.

    Parameters
    ----------
    lsf : LineSpreadFunction, float, str, path, "MUSE", or (wave, fwhm) pair, or array
        A constant FWHM in Angstrom; a table file (:func:`read_lsf_table`); the
        string ``"MUSE"`` for the Bacon et al. (2017) WFM fit; two arrays
        ``(wave, fwhm)``; or an array of FWHM values at ``wave``.
    wave : ndarray, optional
        Observed wavelengths that a bare FWHM array refers to.
    """
    if isinstance(lsf, LineSpreadFunction):
        return lsf
    if isinstance(lsf, str) and lsf.upper() in ("MUSE", "MUSE-WFM", "MUSE_WFM"):
        return _muse_default()
    if isinstance(lsf, (str, os.PathLike)):
        return read_lsf_table(lsf)
    if np.isscalar(lsf):
        value = float(lsf)
        if not (np.isfinite(value) and value > 0):
            raise InputError(f"--lsf: FWHM must be a positive number of Angstrom, got {lsf}")
        return LineSpreadFunction(np.array([1.0]), np.array([value]), f"constant {value} A")
    if isinstance(lsf, tuple) and len(lsf) == 2:
        w, f = (np.asarray(x, dtype=np.float64) for x in lsf)
    else:
        f = np.asarray(lsf, dtype=np.float64)
        if wave is None:
            raise InputError("--lsf: an array of FWHM values needs its wavelengths")
        w = np.asarray(wave, dtype=np.float64)
    if w.shape != f.shape or w.ndim != 1 or w.size < 1:
        raise InputError("--lsf: wavelength and FWHM arrays must be 1-D of equal length")
    ok = np.isfinite(w) & np.isfinite(f) & (f > 0)
    if not np.any(ok):
        raise InputError("--lsf: no finite positive FWHM values")
    w, f = w[ok], f[ok]
    if w.size > 1 and np.any(np.diff(w) <= 0):
        raise InputError("--lsf: wavelengths must be strictly increasing")
    return LineSpreadFunction(w, f, "array")


def check_lsf_coverage(lsf: LineSpreadFunction, lo: float, hi: float, tol: float = 0.0, *, name: str = "--lsf"):
    """Raise :class:`InputError` unless a tabulated LSF covers the observed range ``lo``-``hi``.

    Outside its table :class:`LineSpreadFunction` extrapolates a constant, which is
    no measurement; ``tol`` (Angstrom, e.g. two of the cube's pixels) allows a small
    extrapolation at each end.  A constant LSF (one value) covers everything.

    Parameters
    ----------
    lsf : LineSpreadFunction
    lo, hi : float
        Observed-frame range fitted, Angstrom.
    tol : float
        Allowed extrapolation at each end, Angstrom.
    name : str
        The option named in the error.

    Examples
    --------
    >>> lsf = as_lsf((np.array([1000.0, 2000.0]), np.array([2.5, 2.5])))
    >>> check_lsf_coverage(lsf, 5150.0, 6000.0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    cube3d.errors.InputError: --lsf: the LSF (array) covers 1000.0-2000.0 A but the fit needs 5150.0-6000.0 A ...
    """
    if lsf.wave.size < 2:
        return
    w_lo, w_hi = float(lsf.wave[0]), float(lsf.wave[-1])
    if lo < w_lo - tol or hi > w_hi + tol:
        raise InputError(
            f"{name}: the LSF ({lsf.source}) covers {w_lo:.1f}-{w_hi:.1f} A but the fit needs "
            f"{lo:.1f}-{hi:.1f} A (observed frame); give an LSF table that covers the fitted range"
        )


def rest_frame_fwhm(lsf: Any, wave_rest: np.ndarray, redshift: float) -> np.ndarray:
    """Instrumental FWHM in the rest frame: ``FWHM_obs(lambda (1 + z)) / (1 + z)``.

    Parameters
    ----------
    lsf : anything :func:`as_lsf` accepts
        The instrument's FWHM (Angstrom) against observed wavelength.
    wave_rest : ndarray
        Rest-frame wavelengths, Angstrom.
    redshift : float
        Galaxy redshift z.
    """
    lsf = as_lsf(lsf)
    zp1 = 1.0 + redshift
    return lsf(np.asarray(wave_rest, dtype=np.float64) * zp1) / zp1


def _discrete_variance(s: np.ndarray, half: int) -> np.ndarray:
    """Variance (pixels^2) of a sampled, normalised Gaussian of width ``s`` pixels."""
    k = np.arange(-half, half + 1, dtype=np.float64)
    g = np.exp(-0.5 * (k[:, None] / s[None, :]) ** 2)
    return (g * k[:, None] ** 2).sum(0) / g.sum(0)


def _effective_sigma(sigma: np.ndarray) -> np.ndarray:
    """Width to sample a Gaussian at so that its *discrete* variance is ``sigma^2``.

    Below about one pixel a sampled Gaussian has a variance smaller than
    ``sigma^2`` (at 0.6 pixels by 3 per cent); the inverse is tabulated once and
    interpolated, so convolved widths add exactly in quadrature.
    """
    table_s = np.linspace(0.05, 3.0, 600)
    table_sd = np.sqrt(_discrete_variance(table_s, 16))
    out = np.interp(sigma, table_sd, table_s)
    return np.where(sigma >= table_sd[-1], sigma, np.where(sigma <= 0, 0.0, out))


def gaussian_filter_variable(flux: np.ndarray, sigma_pix: np.ndarray, *, n_sigma: float = 5.0) -> np.ndarray:
    """Convolve spectra with a Gaussian whose width varies along the spectrum.

    Each output pixel ``i`` is the weighted mean of its neighbours with a
    normalised Gaussian kernel of its own width ``sigma_pix[i]``; pixels where
    the width is zero are copied.  Near the ends the kernel is renormalised over
    the pixels that exist.

    Parameters
    ----------
    flux : ndarray, shape (..., n)
        Spectra (any leading axes).
    sigma_pix : ndarray, shape (n,)
        Gaussian sigma in pixels (>= 0) at each pixel.
    n_sigma : float
        Kernel half-width in units of the largest sigma.
    """
    flux = np.asarray(flux, dtype=np.float64)
    sigma_pix = np.broadcast_to(np.asarray(sigma_pix, dtype=np.float64), flux.shape[-1:])
    s_eff = _effective_sigma(sigma_pix)
    half = int(np.ceil(n_sigma * max(float(s_eff.max()), 0.0)))
    if half == 0:
        return flux.copy()
    n = flux.shape[-1]
    k = np.arange(-half, half + 1)
    idx = np.arange(n)[None, :] + k[:, None]  # (2 half + 1, n)
    inside = (idx >= 0) & (idx < n)
    safe_s = np.where(s_eff > 0, s_eff, 1.0)
    kernel = np.exp(-0.5 * (k[:, None] / safe_s[None, :]) ** 2)
    kernel = np.where(s_eff[None, :] > 0, kernel, (k[:, None] == 0).astype(np.float64))
    kernel = kernel * inside
    kernel /= kernel.sum(0, keepdims=True)
    out = np.zeros_like(flux)
    for row in range(k.size):  # loop over kernel taps (a few), not over spectra
        out += flux[..., np.clip(idx[row], 0, n - 1)] * kernel[row]
    return out


def match_resolution(
    wave: np.ndarray,
    flux: np.ndarray,
    fwhm_template: float | np.ndarray,
    lsf: Any,
    redshift: float = 0.0,
    *,
    name: str = "templates",
) -> np.ndarray:
    """Broaden rest-frame templates to the instrument's rest-frame resolution.

    The target is ``FWHM_obs(lambda (1 + z)) / (1 + z)`` (the observed LSF
    de-redshifted); the templates are convolved with a Gaussian of
    ``sigma(lambda) = sqrt(FWHM_target^2 - FWHM_template^2) / (2 sqrt(2 ln 2))``
    (Gaussian widths add in quadrature).  Where the template is already broader
    than the target it is left unchanged and one warning is issued.

    Parameters
    ----------
    wave : ndarray, shape (n,)
        Template rest-frame wavelengths (pixel centres), Angstrom, increasing;
        a linear or logarithmic grid.
    flux : ndarray, shape (..., n)
        Template spectra.
    fwhm_template : float or ndarray, shape (n,)
        Template FWHM, Angstrom (2.51 for MILES, Falcon-Barroso et al. 2011).
    lsf : anything :func:`as_lsf` accepts
        Instrumental FWHM against observed wavelength.
    redshift : float
        Galaxy redshift.
    name : str
        Used in the warning text.

    Returns
    -------
    ndarray, shape (..., n)
        Broadened templates.
    """
    wave = np.asarray(wave, dtype=np.float64)
    target = rest_frame_fwhm(lsf, wave, redshift)
    fwhm_t = np.broadcast_to(np.asarray(fwhm_template, dtype=np.float64), wave.shape)
    diff2 = target**2 - fwhm_t**2
    broader = diff2 < 0
    if np.any(broader):
        w = wave[broader]
        warnings.warn(
            f"{name}: template FWHM exceeds the instrument's rest-frame FWHM over "
            f"{w.min():.1f}-{w.max():.1f} A ({broader.mean():.0%} of pixels); left unbroadened there",
            stacklevel=2,
        )
    dlam = np.gradient(wave)
    sigma_pix = np.sqrt(np.clip(diff2, 0.0, None)) * FWHM_TO_SIGMA / dlam
    return gaussian_filter_variable(flux, sigma_pix)
