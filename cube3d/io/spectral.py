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


_SPECTRAL = ("WAVE", "AWAV", "FREQ", "WAVN", "ENER")


def spectral_axis(header, hdul, path, label, n_axis_len):
    """Full WCS, spectral FITS axis index (or None), and wavelengths in Angstrom.

    The wavelengths are the world coordinates of the spectral axis evaluated by WCSLIB
    (handles CDi_j vs CDELTi/PCi_j, CRPIX, ``-LOG`` and ``-TAB`` algorithms and unit
    conversion), at the reference pixel of the other axes.
    """
    for k in (1, 2, 3):  # before WCSLIB, which fails on (or silently fixes) a zero step
        if str(header.get(f"CTYPE{k}", "")).strip().upper()[:4] in _SPECTRAL:
            _check_step(header, k - 1, path, label)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header, fobj=hdul)
        except Exception as exc:
            text = " ".join(str(exc).split())
            raise InputError(f"{where(path, label)}: invalid WCS ({text})") from None
    spec = wcs.wcs.spec
    if wcs.naxis != 3 or spec < 0:
        return wcs, None, None, False
    ctype = wcs.wcs.ctype[spec].upper()
    base = ctype[:4]
    if base not in _SPECTRAL:
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


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _check_step(header, spec, path, label):
    """Reject a zero or non-finite spectral step in the header (``CDk_k`` or ``CDELTk``).

    WCSLIB's ``cdfix`` silently replaces a zero ``CDk_k`` row by 1 (one metre or one
    Angstrom per pixel), so a degenerate step must be caught from the header itself.
    """
    k = spec + 1
    has_cd = any(key.startswith("CD") and key[2:3].isdigit() and "_" in key for key in header.keys())
    if has_cd:
        row = [f"CD{k}_{j}" for j in (1, 2, 3)]
        values = [_number(header.get(key, 0.0)) for key in row]
        diag = f"CD{k}_{k}"
        if not np.all(np.isfinite(values)):
            bad = next(key for key, v in zip(row, values) if not np.isfinite(v))
            raise InputError(
                f"{where(path, label)}: degenerate spectral WCS: {bad} = {header.get(bad)!r} is not a finite number"
            )
        if all(v == 0 for v in values):
            state = f"{diag} = {header[diag]!r}" if diag in header else f"{diag} missing"
            raise InputError(f"{where(path, label)}: degenerate spectral WCS: {state} (zero wavelength step)")
    elif f"CDELT{k}" in header:
        value = _number(header[f"CDELT{k}"])
        if not (np.isfinite(value) and value != 0):
            raise InputError(
                f"{where(path, label)}: degenerate spectral WCS: CDELT{k} = {header[f'CDELT{k}']!r} "
                "(zero or non-finite wavelength step)"
            )


def check_wave(wave, path, label):
    """Raise :class:`InputError` unless ``wave`` is finite, positive and strictly monotonic.

    Returns True when it decreases.
    """
    if wave.size == 0 or not np.all(np.isfinite(wave)) or np.any(wave <= 0):
        raise InputError(
            f"{where(path, label)}: degenerate spectral WCS: non-finite or non-positive wavelengths "
            "(check CRVAL, CDELT/CD and CUNIT of the spectral axis)"
        )
    d = np.diff(wave)
    if not (np.all(d > 0) or np.all(d < 0)):
        raise InputError(
            f"{where(path, label)}: degenerate spectral WCS: wavelengths are not strictly monotonic "
            "(check the step CDELT/CD of the spectral axis)"
        )
    return bool(d.size and d[0] < 0)
