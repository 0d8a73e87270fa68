"""SDSS-MaNGA DRP LOGCUBE specifics: pixel bitmask and line-spread function.

References: Law, D. R. et al. 2016, AJ 152, 83 (DRP, MANGA_DRP3PIXMASK); Law et al. 2021,
AJ 161, 52 (LSF, ``LSFPRE``/``LSFPOST``); Westfall, K. B. et al. 2019, AJ 158, 231 (DAP).
"""

import warnings

import numpy as np

from cube3d.errors import InputError

from .fitsutil import has_hdu, read_data, to_cube, where

__all__ = ["MANGA_BAD_BITS", "manga_bad_pixels", "manga_lsf_fwhm"]

#: MANGA_DRP3PIXMASK bits that give zero weight (Law et al. 2016, sect. 9.3; the DRP
#: bitmask table in sdss/mangadap).  LOWCOV (bit 1) is kept: its lower depth is already
#: in IVAR.
MANGA_BAD_BITS = {"NOCOV": 0, "DEADFIBER": 2, "FORESTAR": 3, "DONOTUSE": 10}
MANGA_BAD_MASK = sum(1 << b for b in MANGA_BAD_BITS.values())

# MaNGA resolution extensions in order of preference (as the MaNGA DAP: pre-pixelised
# LSF first, since the fit samples the model at pixel centres; DR17 names before DR15).
MANGA_LSF_ORDER = ("LSFPRE", "PREDISP", "PRESPECRES", "LSFPOST", "DISP", "SPECRES")

SIG2FWHM = np.sqrt(8.0 * np.log(2.0))  # FWHM of a Gaussian / its sigma


def manga_bad_pixels(mask, path):
    """True where a MaNGA ``MASK`` value has one of :data:`MANGA_BAD_BITS` set."""
    if not np.issubdtype(mask.dtype, np.integer):
        raise InputError(f"{where(path, 'MASK')}: bitmask HDU is not integer ({mask.dtype})")
    return (mask & MANGA_BAD_MASK) != 0


def manga_lsf_fwhm(hdul, wave, path, np_spec_axis, flip):
    """Instrumental FWHM (Angstrom) per channel from MaNGA resolution extensions.

    ``LSFPRE``/``PREDISP``/``LSFPOST``/``DISP`` hold the 1-sigma LSF width in Angstrom per
    spaxel: FWHM = sqrt(8 ln 2) sigma, median over spaxels with positive finite values.
    ``PRESPECRES``/``SPECRES`` hold R = lambda / FWHM (median over the cube):
    FWHM = lambda / R.  Channels without a valid value are interpolated linearly.
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
        ok = np.isfinite(fwhm)
        if not ok.any():
            warnings.warn(f"{where(path, name)}: no valid resolution values; trying the next", stacklevel=3)
            continue
        if not ok.all():
            fwhm = np.interp(wave, wave[ok], fwhm[ok])
        return fwhm
    return None
