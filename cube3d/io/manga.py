"""SDSS-MaNGA DRP LOGCUBE specifics: pixel bitmask and line-spread function.

References: Law, D. R. et al. 2016, AJ 152, 83 (DRP, MANGA_DRP3PIXMASK); Law et al. 2021,
AJ 161, 52 (LSF, pre- and post-pixelised: ``LSFPRE``/``LSFPOST``, ``PRESPECRES``/``SPECRES``);
Westfall, K. B. et al. 2019, AJ 158, 231 (DAP).
"""

import warnings

import numpy as np

from cube3d.constants import C_KMS
from cube3d.errors import InputError

from .fitsutil import has_hdu, read_data, to_cube, where

__all__ = ["MANGA_BAD_BITS", "manga_bad_pixels", "manga_lsf_fwhm", "pre_pixel_fwhm"]

#: MANGA_DRP3PIXMASK bits that give zero weight (Law et al. 2016, sect. 9.3; the DRP
#: bitmask table in sdss/mangadap).  LOWCOV (bit 1) is kept: its lower depth is already
#: in IVAR.
MANGA_BAD_BITS = {"NOCOV": 0, "DEADFIBER": 2, "FORESTAR": 3, "DONOTUSE": 10}
MANGA_BAD_MASK = sum(1 << b for b in MANGA_BAD_BITS.values())

# MaNGA resolution extensions in order of preference (as the MaNGA DAP: pre-pixelised
# LSF first, since the fit samples the model at pixel centres; DR17 names before DR15).
MANGA_LSF_ORDER = ("LSFPRE", "PREDISP", "PRESPECRES", "LSFPOST", "DISP", "SPECRES")
#: Post-pixel extensions (the LSF measured after integration over the pixel; older releases
#: have only ``SPECRES``): read through :func:`pre_pixel_fwhm`.
MANGA_POST_PIXEL = ("LSFPOST", "DISP", "SPECRES")

SIG2FWHM = np.sqrt(8.0 * np.log(2.0))  # FWHM of a Gaussian / its sigma


def manga_bad_pixels(mask, path):
    """True where a MaNGA ``MASK`` value has one of :data:`MANGA_BAD_BITS` set."""
    if not np.issubdtype(mask.dtype, np.integer):
        raise InputError(f"{where(path, 'MASK')}: bitmask HDU is not integer ({mask.dtype})")
    return (mask & MANGA_BAD_MASK) != 0


def pre_pixel_fwhm(fwhm_post, wave):
    r"""Pre-pixel FWHM (Angstrom) from a post-pixel one, removing the pixel's boxcar.

    A post-pixel LSF is the pre-pixel one convolved with the pixel, a box of width
    :math:`\Delta\lambda` (Law et al. 2021, AJ 161, 52).  Variances add, so in
    Gaussian terms

    .. math::

        \mathrm{FWHM}_\mathrm{pre}^2 = \mathrm{FWHM}_\mathrm{post}^2
            - 8 \ln 2 \, \Delta\lambda^2 / 12,
        \qquad \Delta\lambda = \lambda \, \Delta\ln\lambda,

    with :math:`\Delta\ln\lambda` the local pixel step in ln(lambda) (MaNGA:
    ``ln(10) 1e-4``, 69.0 km/s, a box of sigma 19.9 km/s).

    Parameters
    ----------
    fwhm_post : ndarray, shape (n_wave,)
        Post-pixel FWHM, Angstrom (NaN where unknown).
    wave : ndarray, shape (n_wave,)
        Pixel centres, Angstrom, strictly increasing (at least two).

    Returns
    -------
    ndarray, shape (n_wave,)
        Pre-pixel FWHM, Angstrom; NaN where ``fwhm_post`` is NaN or not wider than the
        box alone.

    Examples
    --------
    MaNGA pixels at 5012 Angstrom are 1.154 Angstrom wide:

    >>> wave = 10.0 ** (3.7 + 1e-4 * np.arange(3))
    >>> pre_pixel_fwhm(np.full(3, 2.5), wave).round(3)
    array([2.374, 2.374, 2.374])
    """
    dlam = wave * np.gradient(np.log(wave))  # pixel width, Angstrom
    excess = fwhm_post**2 - 8.0 * np.log(2.0) * dlam**2 / 12.0
    with np.errstate(invalid="ignore"):
        return np.where(excess > 0, np.sqrt(np.where(excess > 0, excess, 1.0)), np.nan)


def manga_lsf_fwhm(hdul, wave, path, np_spec_axis, flip):
    r"""Instrumental pre-pixel FWHM (Angstrom) per channel from MaNGA resolution extensions.

    The first extension of :data:`MANGA_LSF_ORDER` with a valid value is used.
    ``LSFPRE``/``PREDISP``/``LSFPOST``/``DISP`` hold the 1-sigma LSF width in Angstrom per
    spaxel: FWHM = sqrt(8 ln 2) sigma, median over spaxels with positive finite values.
    ``PRESPECRES``/``SPECRES`` hold R = lambda / FWHM (median over the cube):
    FWHM = lambda / R.  Channels without a valid value are interpolated linearly.

    The fit wants the pre-pixel LSF: the cube's pixels add their own box to the data,
    and the templates get the same box when they are averaged over those pixels on the
    fitted ln(lambda) grid (the cube's own grid, which :func:`cube3d.prepare.prepare_cube`
    keeps for a cube uniform in ln(lambda)).  When only a post-pixel extension is present
    (:data:`MANGA_POST_PIXEL`; older releases have just ``SPECRES``), the pixel's box is
    removed (Law et al. 2021, AJ 161, 52):

    .. math::

        \mathrm{FWHM}_\mathrm{pre}^2 = \mathrm{FWHM}_\mathrm{post}^2
            - 8 \ln 2 \, (\lambda \, \Delta\ln\lambda)^2 / 12

    (:func:`pre_pixel_fwhm`), with a warning that says so.  Left as it is, a post-pixel
    LSF broadens the templates by the box once too often: sigma comes out low by
    ``sigma - sqrt(sigma**2 - s_pix**2)``, ``s_pix = c Delta ln lambda / sqrt(12)``
    = 19.9 km/s for MaNGA (3.7 km/s, 7 per cent, at sigma = 55 km/s).

    Warns
    -----
    UserWarning
        When a post-pixel extension is converted (naming it), and when an extension has
        no valid value (the next one is tried).
    """
    for name in MANGA_LSF_ORDER:
        if not has_hdu(hdul, name):
            continue
        hdu = hdul[name]
        data = read_data(hdu, path, name)
        if "SPECRES" in name:
            if data.ndim != 1 or data.shape[0] != wave.size:
                raise InputError(f"{where(path, name)}: expected {wave.size} values, got {data.shape}")
            res = np.array(data[::-1] if flip else data, dtype=np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                fwhm = np.where(np.isfinite(res) & (res > 0), wave / res, np.nan)
        else:
            if data.ndim != 3 or data.shape[np_spec_axis] != wave.size:
                raise InputError(f"{where(path, name)}: shape {data.shape} does not match the cube")
            sig = to_cube(data, np_spec_axis, flip, dtype=np.float32)
            sig = sig.reshape(sig.shape[0], -1)
            sig[~(np.isfinite(sig) & (sig > 0))] = np.nan
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN channels
                fwhm = SIG2FWHM * np.nanmedian(sig, axis=1).astype(np.float64)
            del sig
        if name in MANGA_POST_PIXEL:
            if wave.size < 2:
                raise InputError(f"{where(path, name)}: a post-pixel resolution needs two or more channels "
                                 "(the pixel width comes off it)")
            fwhm = pre_pixel_fwhm(fwhm, wave)
        ok = np.isfinite(fwhm)
        if not ok.any():
            warnings.warn(f"{where(path, name)}: no valid resolution values; trying the next", stacklevel=3)
            continue
        if name in MANGA_POST_PIXEL:
            pix_kms = C_KMS * float(np.median(np.diff(np.log(wave))))
            warnings.warn(
                f"{where(path, name)}: only the post-pixel resolution is given (no LSFPRE, PREDISP or "
                f"PRESPECRES); converted to the pre-pixel LSF the fit needs by removing the "
                f"{pix_kms:.1f} km/s pixel's boxcar, FWHM_pre^2 = FWHM_post^2 - 8 ln2 (lambda dln lambda)^2 / 12 "
                "(Law et al. 2021, AJ 161, 52)",
                stacklevel=3,
            )
        if not ok.all():
            fwhm = np.interp(wave, wave[ok], fwhm[ok])
        return fwhm
    return None
