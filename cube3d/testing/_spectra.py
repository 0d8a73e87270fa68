"""Noiseless mock spectra: templates convolved with per-spaxel LOSVDs, averaged over pixels.

The construction behind :func:`cube3d.testing.make_mock_cube` (its Notes give the
steps and the conventions).  Everything is rest frame: the cube's pixel edges are
divided by ``1 + z`` first, so a velocity ``v`` (km/s) is a shift of ``v / fine_kms``
pixels on the fine grid uniform in ln(lambda) (Cappellari 2017, MNRAS 466, 798,
Sec. 2).  All spaxels are handled at once, in chunks that bound the memory.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from ..constants import C_KMS
from ..errors import InputError

_KERNEL_NSIGMA = 8.0  # LOSVD kernels are sampled out to |v| + 8 sigma
_TEMPLATE_PAD = 60.0  # Angstrom of template kept beyond the needed range, for the LSF broadening


class FineGrid(NamedTuple):
    """The fine rest-frame ln(lambda) grid the convolution runs on.

    The input part (``n_out + 2 half`` pixels, edges ``in_edges``) holds the templates;
    the output part is input pixels ``half .. half + n_out - 1`` and covers the cube.
    """

    step: float  # ln(lambda) step, fine_kms / c
    half: int  # LOSVD kernel half-width, fine pixels
    ln0: float  # ln(lambda / Angstrom) of the first output edge (the cube's first rest-frame edge)
    n_out: int  # fine pixels covering the cube
    in_edges: np.ndarray  # (n_out + 2 half + 1,) ln(lambda / Angstrom) edges of the input pixels

    @property
    def n_in(self):
        """Fine input pixels, ``n_out + 2 half``."""
        return self.n_out + 2 * self.half


def fine_grid(edges_rest, v_abs_max, sigma_max, fine_kms):
    """The fine ln(lambda) grid over the cube's rest-frame pixels plus the LOSVD margin.

    Parameters
    ----------
    edges_rest : ndarray, shape (n_wave + 1,)
        Rest-frame pixel edges of the cube, Angstrom, increasing.
    v_abs_max, sigma_max : float
        Largest |V| and sigma of any spaxel, km/s: the kernels reach
        ``v_abs_max + 8 sigma_max``.
    fine_kms : float
        Step of the grid, km/s.

    Returns
    -------
    FineGrid
    """
    step = fine_kms / C_KMS
    half = int(np.ceil((v_abs_max + _KERNEL_NSIGMA * sigma_max) / fine_kms))
    ln0 = np.log(edges_rest[0])
    n_out = int(np.ceil(np.log(edges_rest[-1] / edges_rest[0]) / step)) + 1
    in_edges = ln0 + step * np.arange(-half, n_out + half + 1)
    return FineGrid(step, half, ln0, n_out, in_edges)


def check_coverage(lib, grid, wave_range, z, fine_kms):
    """Raise :class:`InputError` unless the templates cover the fine input grid.

    ``wave_range`` (Angstrom, observed), ``z`` and ``fine_kms`` (km/s) only go into the
    message, which names both wavelength ranges.
    """
    from ..rebin import wave_edges

    tpl_edges = wave_edges(lib.wave, n_flux=lib.flux.shape[1])
    need_lo, need_hi = np.exp(grid.in_edges[0]), np.exp(grid.in_edges[-1])
    if need_lo < tpl_edges[0] or need_hi > tpl_edges[-1]:
        lo, hi = wave_range
        raise InputError(
            f"templates: they cover {tpl_edges[0]:.1f}-{tpl_edges[-1]:.1f} A (rest frame) but the mock needs "
            f"{need_lo:.1f}-{need_hi:.1f} A (wave_range {lo:g}-{hi:g} A at z = {z:g}, widened by the "
            f"{grid.half * fine_kms:.0f} km/s LOSVD kernels); narrow wave_range or use other templates"
        )


def template_transforms(lib, grid, wave, lsf, z):
    """Templates broadened to the LSF, rebinned onto the fine grid and Fourier-transformed.

    Parameters
    ----------
    lib : cube3d.templates.TemplateLibrary
        Rest-frame templates covering the fine grid (:func:`check_coverage`).
    grid : FineGrid
    wave : ndarray, shape (n_wave,)
        Observed pixel centres, Angstrom.
    lsf : ndarray, shape (n_wave,)
        Instrumental FWHM at ``wave``, Angstrom (observed frame), at least the
        templates' own times ``1 + z``.
    z : float
        Redshift.

    Returns
    -------
    tpl_hat : ndarray, complex, shape (n_tpl, n_fft // 2 + 1)
        Real FFTs of the fine templates, zero-padded to ``n_fft``.
    n_fft : int
        FFT length, at least ``grid.n_in`` (a fast size).
    """
    import scipy.fft

    from ..lsf import as_lsf, match_resolution
    from ..rebin import log_rebin, wave_edges

    tpl_edges = wave_edges(lib.wave, n_flux=lib.flux.shape[1])
    need_lo, need_hi = np.exp(grid.in_edges[0]), np.exp(grid.in_edges[-1])
    keep = np.flatnonzero((lib.wave > need_lo - _TEMPLATE_PAD) & (lib.wave < need_hi + _TEMPLATE_PAD))
    t_wave = lib.wave[keep]
    t_flux = np.asarray(lib.flux, dtype=np.float64)[:, keep]
    t_fwhm = lib.fwhm if np.ndim(lib.fwhm) == 0 else np.asarray(lib.fwhm)[keep]
    t_flux = match_resolution(t_wave, t_flux, t_fwhm, as_lsf((wave, lsf)), z, name="templates")
    # exact rebinning of the piecewise-constant template pixels
    fine_tpl = log_rebin(tpl_edges[keep[0] : keep[-1] + 2], t_flux, ln_edges=grid.in_edges).flux
    n_fft = scipy.fft.next_fast_len(grid.n_in, real=True)
    return scipy.fft.rfft(fine_tpl, n=n_fft, axis=-1, workers=-1), n_fft


def pixel_average_matrix(grid, edges_rest):
    """Sparse (n_wave, n_out) matrix averaging the fine output pixels over each cube pixel.

    Row ``i`` holds the overlap (Angstrom) of each fine output pixel with cube pixel
    ``i`` divided by that pixel's width, so it maps flux densities to flux densities.
    """
    from ..rebin import overlap_matrix

    out_edges = np.exp(grid.ln0 + grid.step * np.arange(grid.n_out + 1))
    avg = overlap_matrix(out_edges, edges_rest)
    return (avg.multiply(1.0 / np.diff(edges_rest)[:, None])).tocsr()


@functools.cache
def _pdf_batch():
    """``jit(vmap(gauss_hermite_pdf))`` over spaxels, built on first use (no JAX work at import)."""
    import jax

    from ..losvd import gauss_hermite_pdf

    return jax.jit(jax.vmap(gauss_hermite_pdf, in_axes=(None, 0, 0, 0)))


def losvd_kernels(v_pix, s_pix, h, half):
    """Gauss-Hermite LOSVDs sampled at the integer fine pixels ``-half .. half``.

    Uses :func:`cube3d.losvd.gauss_hermite_pdf` (the real-space series, independent of
    the Fourier form the fitter uses), batched with ``jax.vmap``, in float64.

    Parameters
    ----------
    v_pix, s_pix : ndarray, shape (n,)
        V and sigma of each spaxel in fine pixels (km/s divided by ``fine_kms``).
    h : ndarray, shape (n, n_h)
        Gauss-Hermite coefficients ``h3[, h4]`` (``n_h`` = 0, 1 or 2).
    half : int
        Kernel half-width, fine pixels.

    Returns
    -------
    ndarray, shape (n, 2 half + 1), float64
    """
    import jax

    with jax.enable_x64(True):
        x = np.arange(-half, half + 1, dtype=np.float64)
        return np.asarray(_pdf_batch()(x, v_pix, s_pix, h), dtype=np.float64)


def _wrapped_kernels(kern, half, n_fft):
    """Kernels laid out for a circular convolution of length ``n_fft``: tap k at index k mod n_fft."""
    wrapped = np.zeros((kern.shape[0], n_fft))
    wrapped[:, : half + 1] = kern[:, half:]  # tap k >= 0 at index k
    wrapped[:, n_fft - half :] = kern[:, :half]  # tap k < 0 at index n_fft + k
    return wrapped


def convolve_spaxels(tpl_hat, n_fft, weights, v_pix, s_pix, h, grid, avg, chunk):
    """Every spaxel's template mix convolved with its LOSVD and averaged over the cube pixels.

    Parameters
    ----------
    tpl_hat, n_fft
        From :func:`template_transforms`.
    weights : ndarray, shape (n_tpl,) or (n_sp, n_tpl)
        Template weights, shared or per spaxel.
    v_pix, s_pix : ndarray, shape (n_sp,)
        V and sigma in fine pixels.
    h : ndarray, shape (n_sp, n_h)
        Gauss-Hermite coefficients.
    grid : FineGrid
    avg : scipy.sparse matrix, shape (n_wave, n_out)
        From :func:`pixel_average_matrix`.
    chunk : int
        Spaxels convolved at once (every chunk is padded to this size: one jit shape).

    Returns
    -------
    ndarray, shape (n_wave, n_sp), float64
        Flux density per Angstrom, in the templates' units.

    Notes
    -----
    The grid is long enough (``2 half`` margin pixels, ``n_fft >= n_in``) that the
    circular convolution never wraps into the output part kept.
    """
    import scipy.fft

    half, n_out, n_sp = grid.half, grid.n_out, v_pix.size
    shared_hat = (weights @ tpl_hat)[None, :] if weights.ndim == 1 else None  # one mix for every spaxel
    spec = np.empty((avg.shape[0], n_sp))
    chunk = min(chunk, n_sp)
    for start in range(0, n_sp, chunk):  # chunks bound the memory; each is fully batched
        sl = slice(start, min(start + chunk, n_sp))
        m = sl.stop - sl.start
        take = np.arange(start, start + chunk).clip(max=n_sp - 1)  # last chunk padded: one jit shape
        kern = losvd_kernels(v_pix[take], s_pix[take], h[take], half)[:m]  # (m, 2 half + 1)
        prod = scipy.fft.rfft(_wrapped_kernels(kern, half, n_fft), axis=-1, workers=-1, overwrite_x=True)
        del kern
        prod *= shared_hat if shared_hat is not None else weights[sl] @ tpl_hat
        conv = scipy.fft.irfft(prod, n=n_fft, axis=-1, workers=-1, overwrite_x=True)
        del prod
        # fine output pixel j is input pixel j + half (Cappellari 2017 Sec. 2: a shift
        # in ln(lambda) is a shift in pixels); average it over the cube pixels
        spec[:, sl] = avg @ conv[:, half : half + n_out].T
        del conv
    return spec
