"""Flux-conserving rebinning of spectra onto a uniform ln(wavelength) grid.

A spectrum sampled in wavelength pixels is treated as a piecewise-constant flux
density f_lambda (flux per Angstrom) over the pixel edges.  Rebinning onto new
edges then integrates that step function exactly over each new pixel:

    F_j = sum_i w_ji f_i,        w_ji = |[a_j, b_j] ∩ [e_i, e_{i+1}]|  (Angstrom),

where [a_j, b_j] are the new pixel edges and [e_i, e_{i+1}] the old ones.  The
output is the mean flux density ``F_j / (b_j - a_j)`` (units unchanged: a flat
spectrum stays flat) or, with ``conserve="flux"``, the integral ``F_j`` itself.
The total integral over the covered range is conserved exactly in both cases.

The ln grid has a constant step ``velscale / c`` (``velscale`` in km/s), so a
Doppler shift is a constant shift in pixels (e.g. Cappellari 2017, MNRAS 466, 798,
Sec. 2).  The overlap matrix ``W`` is sparse (each new pixel touches one to a few
old ones); it is built once per grid and applied to all spectra at once, so any
number of spectra (leading axes of ``flux``) is rebinned without a Python loop.

Noise: the diagonal of the propagated covariance is ``sum_i w_ji^2 var_i``.  The
rebinned pixels are correlated (neighbours share input pixels); see
:func:`log_rebin` for the variance convention used for fitting.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from .constants import C_KMS
from .errors import InputError

__all__ = [
    "LogRebinned",
    "wave_edges",
    "log_grid",
    "overlap_matrix",
    "rebin",
    "log_rebin",
    "ln_wave_centres",
]


class LogRebinned(NamedTuple):
    """Result of :func:`log_rebin`.

    Attributes
    ----------
    flux : ndarray, shape (..., n_pix)
        Rebinned spectra, wavelength on the same axis as the input (mean flux
        density per new pixel, or integrated flux).
    ln_wave : ndarray, shape (n_pix,)
        ln(wavelength / Angstrom) at the new pixel centres.
    velscale : float
        Pixel size in km/s (``c * d ln(lambda)``).
    variance : ndarray or None, shape (..., n_pix)
        Propagated variance (see :func:`log_rebin` for the convention).
    variance_diag : ndarray or None, shape (..., n_pix)
        Exact diagonal of the propagated covariance, ``sum_i w_ji^2 var_i``.
    bad : ndarray of bool or None, shape (..., n_pix)
        True where any input pixel overlapping the new pixel was bad.
    """

    flux: np.ndarray
    ln_wave: np.ndarray
    velscale: float
    variance: np.ndarray | None
    variance_diag: np.ndarray | None
    bad: np.ndarray | None


def _is_log_uniform(wave: np.ndarray) -> bool:
    d = np.diff(np.log(wave))
    return bool(np.all(np.abs(d - d.mean()) <= 1e-6 * abs(d.mean())))


def wave_edges(wave: np.ndarray, n_flux: int | None = None) -> np.ndarray:
    """Pixel edges (Angstrom) from pixel centres, or the edges themselves.

    Parameters
    ----------
    wave : array_like, shape (n,) or (n + 1,)
        Strictly increasing pixel centres (length ``n_flux``) or edges (length
        ``n_flux + 1``), Angstrom.
    n_flux : int, optional
        Number of flux pixels; when given, ``len(wave)`` decides whether ``wave``
        holds centres (``n_flux``) or edges (``n_flux + 1``).  Default: centres.

    Returns
    -------
    ndarray, shape (n_flux + 1,)
        Edges.  For centres uniform in ln(lambda) the edges are geometric
        midpoints, otherwise arithmetic midpoints; the outer edges are placed
        half a pixel beyond the first and last centres.
    """
    wave = np.asarray(wave, dtype=np.float64)
    if wave.ndim != 1 or wave.size < 2:
        raise InputError("wave: need a 1-D array of at least two wavelengths")
    if not np.all(np.isfinite(wave)) or np.any(wave <= 0):
        raise InputError("wave: wavelengths must be finite and positive")
    if np.any(np.diff(wave) <= 0):
        raise InputError("wave: wavelengths must be strictly increasing")
    if n_flux is not None:
        if wave.size == n_flux + 1:
            return wave
        if wave.size != n_flux:
            raise InputError(
                f"wave: length {wave.size} matches neither the {n_flux} flux pixels "
                f"(centres) nor {n_flux + 1} (edges)"
            )
    if _is_log_uniform(wave):
        lw = np.log(wave)
        mid = 0.5 * (lw[1:] + lw[:-1])
        return np.exp(np.concatenate([[1.5 * lw[0] - 0.5 * lw[1]], mid, [1.5 * lw[-1] - 0.5 * lw[-2]]]))
    mid = 0.5 * (wave[1:] + wave[:-1])
    return np.concatenate([[1.5 * wave[0] - 0.5 * wave[1]], mid, [1.5 * wave[-1] - 0.5 * wave[-2]]])


def log_grid(wave_min: float, wave_max: float, velscale: float) -> np.ndarray:
    """Edges of a uniform ln(lambda) grid that starts at ``wave_min``.

    Parameters
    ----------
    wave_min, wave_max : float
        Range to cover, Angstrom.  The grid starts exactly at ``wave_min`` and
        holds as many whole pixels as fit below ``wave_max``.
    velscale : float
        Pixel size, km/s.

    Returns
    -------
    ndarray, shape (n_pix + 1,)
        ln(lambda / Angstrom) of the pixel edges, step ``velscale / c``.
    """
    if not (np.isfinite(velscale) and velscale > 0):
        raise InputError(f"velscale: must be a positive number of km/s, got {velscale}")
    step = velscale / C_KMS
    n_pix = int(np.floor(np.log(wave_max / wave_min) / step * (1 + 1e-12)))
    if n_pix < 1:
        raise InputError(
            f"velscale: {velscale} km/s is larger than the range {wave_min:.2f}-{wave_max:.2f} A"
        )
    return np.log(wave_min) + step * np.arange(n_pix + 1)


def ln_wave_centres(ln_edges: np.ndarray) -> np.ndarray:
    """ln(lambda) at pixel centres (midpoints in ln) from ln edges."""
    ln_edges = np.asarray(ln_edges, dtype=np.float64)
    return 0.5 * (ln_edges[1:] + ln_edges[:-1])


def overlap_matrix(old_edges: np.ndarray, new_edges: np.ndarray) -> sp.csr_matrix:
    """Sparse matrix of overlap lengths between new and old pixels.

    Parameters
    ----------
    old_edges : ndarray, shape (n_old + 1,)
        Increasing edges of the input pixels, Angstrom.
    new_edges : ndarray, shape (n_new + 1,)
        Increasing edges of the output pixels, Angstrom.

    Returns
    -------
    scipy.sparse.csr_matrix, shape (n_new, n_old)
        ``W[j, i]`` = length (Angstrom) of the intersection of new pixel ``j``
        with old pixel ``i``; zero outside the old range.
    """
    old_edges = np.asarray(old_edges, dtype=np.float64)
    new_edges = np.asarray(new_edges, dtype=np.float64)
    n_old = old_edges.size - 1
    n_new = new_edges.size - 1
    a, b = new_edges[:-1], new_edges[1:]
    # first and last old pixel with a positive overlap with each new pixel
    i_lo = np.clip(np.searchsorted(old_edges, a, side="right") - 1, 0, n_old - 1)
    i_hi = np.clip(np.searchsorted(old_edges, b, side="left") - 1, 0, n_old - 1)
    count = np.maximum(i_hi - i_lo + 1, 0)
    rows = np.repeat(np.arange(n_new), count)
    starts = np.repeat(i_lo, count)
    offsets = np.arange(rows.size) - np.repeat(np.cumsum(count) - count, count)
    cols = starts + offsets
    lo = np.maximum(a[rows], old_edges[cols])
    hi = np.minimum(b[rows], old_edges[cols + 1])
    vals = np.clip(hi - lo, 0.0, None)
    # overlaps of a few ulp are round-off where edges coincide (exp(log(x)) != x)
    tiny = 1e-9 * np.minimum(b[rows] - a[rows], old_edges[cols + 1] - old_edges[cols])
    keep = vals > tiny
    return sp.csr_matrix((vals[keep], (rows[keep], cols[keep])), shape=(n_new, n_old))


def _apply(matrix: sp.csr_matrix, x: np.ndarray, axis: int = -1) -> np.ndarray:
    """``matrix @ x`` along ``axis`` of ``x`` (all other axes are batch axes)."""
    x0 = np.moveaxis(x, axis, 0)
    rest = x0.shape[1:]
    out = np.asarray(matrix @ x0.reshape(x0.shape[0], -1))
    return np.moveaxis(out.reshape((matrix.shape[0],) + rest), 0, axis)


def rebin(
    old_edges: np.ndarray,
    flux: np.ndarray,
    new_edges: np.ndarray,
    *,
    variance: np.ndarray | None = None,
    bad: np.ndarray | None = None,
    conserve: str = "density",
    axis: int = -1,
):
    """Flux-conserving rebinning between two arbitrary increasing pixel grids.

    The engine of :func:`log_rebin` (see there for ``variance``, ``bad``,
    ``conserve`` and the noise convention).

    Parameters
    ----------
    old_edges : ndarray, shape (n + 1,)
        Input pixel edges, Angstrom.
    flux : ndarray
        Spectra with ``n`` pixels along ``axis``.
    new_edges : ndarray, shape (m + 1,)
        Output pixel edges, Angstrom.

    Returns
    -------
    flux, variance, variance_diag, bad : ndarray or None
        Each with ``m`` pixels along ``axis`` (None where not requested).
    """
    if conserve not in ("density", "flux"):
        raise InputError(f"conserve: must be 'density' or 'flux', got {conserve!r}")
    flux = np.asarray(flux, dtype=np.float64)
    edges = wave_edges(old_edges, n_flux=flux.shape[axis])
    new_edges = np.asarray(new_edges, dtype=np.float64)
    if new_edges.ndim != 1 or new_edges.size < 2 or np.any(np.diff(new_edges) <= 0):
        raise InputError("new_edges: need an increasing 1-D array of at least two edges")
    width_new = np.diff(new_edges)
    width_old = np.diff(edges)
    matrix = overlap_matrix(edges, new_edges)

    bad_in = None
    if bad is not None:
        bad_in = np.broadcast_to(np.asarray(bad, dtype=bool), flux.shape)
    if variance is not None:
        variance = np.broadcast_to(np.asarray(variance, dtype=np.float64), flux.shape)
        nonfinite = ~np.isfinite(variance) | (variance < 0)
        bad_in = nonfinite if bad_in is None else (bad_in | nonfinite)
    if bad_in is not None:
        bad_in = bad_in | ~np.isfinite(flux)
        flux = np.where(bad_in, 0.0, flux)

    integral = _apply(matrix, flux, axis)
    norm = width_new if conserve == "density" else np.ones_like(width_new)
    # broadcastable along the wavelength axis
    shape = [1] * flux.ndim
    shape[axis] = norm.size
    norm = norm.reshape(shape)
    out_flux = integral / norm

    out_var = out_diag = out_bad = None
    if bad_in is not None:
        covered = np.asarray(matrix.sum(axis=1)).ravel()
        uncovered = covered < width_new * (1 - 1e-9)
        touched = _apply((matrix > 0).astype(np.float64), bad_in.astype(np.float64), axis)
        out_bad = (touched > 0) | uncovered.reshape(shape)
    if variance is not None:
        var_in = np.where(bad_in, 0.0, variance)
        out_diag = _apply(matrix.multiply(matrix).tocsr(), var_in, axis) / norm**2
        shared = matrix.multiply(width_old[None, :]).tocsr()
        out_var = _apply(shared, var_in, axis) / norm**2
    return out_flux, out_var, out_diag, out_bad


def log_rebin(
    wave: np.ndarray,
    flux: np.ndarray,
    velscale: float | None = None,
    *,
    ln_edges: np.ndarray | None = None,
    variance: np.ndarray | None = None,
    bad: np.ndarray | None = None,
    conserve: str = "density",
    axis: int = -1,
) -> LogRebinned:
    """Rebin spectra onto a uniform ln(lambda) grid, conserving flux.

    Parameters
    ----------
    wave : array_like, shape (n,) or (n + 1,)
        Input pixel centres (length ``n``) or edges (length ``n + 1``), Angstrom,
        strictly increasing; ``n = flux.shape[-1]``.
    flux : array_like, shape (..., n)
        Flux density per Angstrom; any leading axes (spectra) are rebinned at once.
    velscale : float, optional
        Output pixel size in km/s.  Default: the same number of pixels as the
        input over the same range, ``c ln(lambda_max / lambda_min) / n``.
        Ignored when ``ln_edges`` is given.
    ln_edges : array_like, shape (m + 1,), optional
        Explicit output edges in ln(lambda / Angstrom), uniformly spaced.  Output
        pixels outside the input range receive only the covered part (and are
        flagged ``bad`` when ``bad`` or ``variance`` is given).
    variance : array_like, shape (..., n), optional
        Variance of ``flux``.  Propagated as described in Notes.
    bad : array_like of bool, shape (..., n), optional
        True for unusable input pixels.  An output pixel is bad when *any* input
        pixel overlapping it is bad (or when it is not fully covered by the
        input).  Bad input values are excluded from the sums (treated as zero).
    conserve : {"density", "flux"}
        "density" (default): the output is the mean flux density in each new
        pixel (same units as ``flux``).  "flux": the integrated flux in each new
        pixel (flux density x Angstrom).
    axis : int
        Wavelength axis of ``flux`` (and ``variance``, ``bad``); default last.
        ``axis=0`` rebins a (n_wave, ny, nx) cube without transposing it.

    Returns
    -------
    LogRebinned
        ``(flux, ln_wave, velscale, variance, variance_diag, bad)``.

    Notes
    -----
    The exact covariance of the rebinned pixels is ``W diag(var) W^T``; only its
    diagonal ``sum_i w_ji^2 var_i`` is returned as ``variance_diag``.  Because
    neighbouring output pixels share input pixels, a fit that uses only the
    diagonal over-counts the information when the output pixels are smaller than
    the input ones.  ``variance`` therefore shares each input pixel's variance
    among the output pixels it feeds in proportion to the overlap,

        var_j = sum_i w_ji a_i var_i / b_j^2     (a_i, b_j: old, new widths),

    which equals the diagonal where an output pixel is a union of whole input
    pixels and is larger by the oversampling factor ``a_i / b_j`` where one
    input pixel is split; the sum of ``var_j b_j^2`` over any set of whole input
    pixels equals the exact variance of their integrated flux, so parameter
    errors from a diagonal-weighted fit come out right to first order
    (chi^2 per degree of freedom then comes out near one over the mean
    oversampling factor, below 1, where the output pixels are the smaller).

    Examples
    --------
    >>> import numpy as np
    >>> wave = np.linspace(4800.0, 5500.0, 701)
    >>> out = log_rebin(wave, np.ones_like(wave), velscale=60.0)
    >>> bool(np.allclose(out.flux, 1.0))
    True
    """
    if conserve not in ("density", "flux"):
        raise InputError(f"conserve: must be 'density' or 'flux', got {conserve!r}")
    flux = np.asarray(flux, dtype=np.float64)
    n = flux.shape[axis]
    edges = wave_edges(wave, n_flux=n)
    if ln_edges is None:
        if velscale is None:
            velscale = C_KMS * np.log(edges[-1] / edges[0]) / n
        ln_edges = log_grid(edges[0], edges[-1], velscale)
    else:
        ln_edges = np.asarray(ln_edges, dtype=np.float64)
        if ln_edges.ndim != 1 or ln_edges.size < 2 or np.any(np.diff(ln_edges) <= 0):
            raise InputError("ln_edges: need an increasing 1-D array of at least two edges")
        velscale = float(C_KMS * np.mean(np.diff(ln_edges)))
    out_flux, out_var, out_diag, out_bad = rebin(
        edges, flux, np.exp(ln_edges), variance=variance, bad=bad, conserve=conserve, axis=axis
    )
    return LogRebinned(out_flux, ln_wave_centres(ln_edges), float(velscale), out_var, out_diag, out_bad)
