"""The spectral axis of a cube, from its FITS WCS (WCSLIB through astropy.wcs).

Reference: Greisen, E. W. et al. 2006, A&A 446, 747 (FITS WCS paper III: ``WAVE``, ``AWAV``,
``FREQ``, the ``-LOG`` and ``-TAB`` algorithms).
"""

import warnings

import astropy.units as u
import numpy as np
from astropy.wcs import WCS, FITSFixedWarning

from cube3d.errors import InputError

from .fitsutil import where


def spectral_axis(header, hdul, path, label, n_axis_len):
    """Full WCS, spectral FITS axis index (or None), and wavelengths in Angstrom.

    The wavelengths are the world coordinates of the spectral axis evaluated by WCSLIB
    (handles CDi_j vs CDELTi/PCi_j, CRPIX, ``-LOG`` and ``-TAB`` algorithms and unit
    conversion), at the reference pixel of the other axes.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header, fobj=hdul)
        except Exception as exc:
            raise InputError(f"{where(path, label)}: invalid WCS ({exc})") from None
    spec = wcs.wcs.spec
    if wcs.naxis != 3 or spec < 0:
        return wcs, None, None, False
    ctype = wcs.wcs.ctype[spec].upper()
    base = ctype[:4]
    if base not in ("WAVE", "AWAV", "FREQ", "WAVN", "ENER"):
        raise InputError(
            f"{where(path, label)}: spectral axis CTYPE{spec + 1} = {ctype!r} is not a "
            "wavelength, frequency or energy axis"
        )
    n = n_axis_len(spec)
    pc = wcs.wcs.get_pc()
    coupled = np.any(np.delete(pc[spec], spec) != 0) or np.any(np.delete(pc[:, spec], spec) != 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if coupled:  # spectral axis mixed with the spatial ones: evaluate at CRPIX
            pix = np.tile(wcs.wcs.crpix - 1.0, (n, 1))
            pix[:, spec] = np.arange(n, dtype=np.float64)
            world = wcs.wcs_pix2world(pix, 0)[:, spec]
        else:
            sub = wcs.sub([spec + 1])
            world = sub.wcs_pix2world(np.arange(n, dtype=np.float64)[:, None], 0)[:, 0]
    unit = u.Unit(wcs.wcs.cunit[spec])
    if (
        base in ("WAVE", "AWAV")
        and f"CUNIT{spec + 1}" not in header
        and np.all(np.isfinite(world))
        and np.nanmax(np.abs(world)) > 1.0e-2
    ):
        # No CUNIT: FITS says metres, but values above a centimetre are surely Angstrom.
        warnings.warn(
            f"{where(path, label)}: no CUNIT{spec + 1}; wavelengths read as Angstrom",
            stacklevel=3,
        )
        unit = u.AA
    wave = (world * unit).to_value(u.AA, equivalencies=u.spectral())
    return wcs, spec, wave, base == "AWAV"


def check_wave(wave, path, label):
    if wave.size == 0 or not np.all(np.isfinite(wave)) or np.any(wave <= 0):
        raise InputError(f"{where(path, label)}: non-finite or non-positive wavelengths")
    d = np.diff(wave)
    if not (np.all(d > 0) or np.all(d < 0)):
        raise InputError(f"{where(path, label)}: wavelengths are not strictly monotonic")
    return bool(d.size and d[0] < 0)
