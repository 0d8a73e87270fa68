"""Read IFU datacubes (MUSE, SDSS-MaNGA LOGCUBE, generic 3-D FITS) into one container.

This is the only module of the fitting path that touches FITS files and WCS: it turns a
file into a :class:`Cube` of plain float64 NumPy arrays (flux, inverse variance,
wavelengths) plus the celestial WCS and header kept for provenance.  Masked, flagged or
non-finite pixels become zero inverse variance, and the flux is set to 0 wherever the
weight is 0, so ``flux`` never holds NaN.

Conventions
-----------
* Arrays are in FITS axis order, ``(n_wave, ny, nx)``; wavelengths increase along
  axis 0 (a cube stored with decreasing wavelength is flipped on reading).
* ``wave`` is in Angstrom, exactly as the file defines it: air wavelengths when the
  spectral WCS says ``AWAV`` (``air=True``), vacuum otherwise (``WAVE``, ``WAVE-LOG``,
  frequency or energy axes).  Convert with :func:`air_to_vacuum` / :func:`vacuum_to_air`.
* Without a noise HDU (generic layout) every finite pixel gets unit weight.

Layouts
-------
``MUSE``
    ``DATA`` (flux), ``STAT`` (variance), ``DQ`` (data quality; any non-zero value gives
    zero weight), air wavelengths (``CTYPE3 = 'AWAV'``).
``MANGA``
    SDSS-MaNGA DRP LOGCUBE: ``FLUX``, ``IVAR``, ``MASK`` (``MANGA_DRP3PIXMASK``), ``WAVE``
    (vacuum Angstrom, the spectral WCS is ``WAVE-LOG``) and the spectral resolution
    extensions ``LSFPRE``/``PREDISP``/``LSFPOST``/``DISP`` (per-spaxel 1-sigma LSF in
    Angstrom) or ``PRESPECRES``/``SPECRES`` (median resolution R = lambda / FWHM).
``GENERIC``
    One 3-D image HDU with a spectral WCS and an optional noise HDU: ``STAT``, ``VAR``,
    ``VARIANCE`` (variance), ``IVAR`` (inverse variance) or ``ERR``, ``ERROR``,
    ``SIGMA``, ``NOISE`` (1-sigma error).

References
----------
Greisen, E. W. et al. 2006, A&A 446, 747 (FITS WCS paper III: spectral axes, ``WAVE-LOG``).
Law, D. R. et al. 2016, AJ 152, 83; Law et al. 2021, AJ 161, 52 (MaNGA DRP data model,
pixel mask and line-spread function).
Weilbacher, P. M. et al. 2020, A&A 641, A28 (MUSE pipeline: DATA/STAT/DQ cubes).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from cube3d.errors import InputError

__all__ = [
    "Cube",
    "read_cube",
    "air_to_vacuum",
    "vacuum_to_air",
    "LAYOUTS",
    "MANGA_BAD_BITS",
]

LAYOUTS = ("MUSE", "MANGA", "GENERIC")

#: MANGA_DRP3PIXMASK bits that give zero weight (Law et al. 2016, sect. 9.3; the DRP
#: bitmask table in sdss/mangadap).  LOWCOV (bit 1) is kept: its lower depth is already
#: in IVAR.
MANGA_BAD_BITS = {"NOCOV": 0, "DEADFIBER": 2, "FORESTAR": 3, "DONOTUSE": 10}
_MANGA_BAD_MASK = sum(1 << b for b in MANGA_BAD_BITS.values())

# MaNGA resolution extensions in order of preference (as the MaNGA DAP: pre-pixelised
# LSF first, since the fit samples the model at pixel centres; DR17 names before DR15).
_MANGA_LSF_ORDER = ("LSFPRE", "PREDISP", "PRESPECRES", "LSFPOST", "DISP", "SPECRES")

_NOISE_KINDS = {
    "STAT": "var",
    "VAR": "var",
    "VARIANCE": "var",
    "IVAR": "ivar",
    "ERR": "sigma",
    "ERROR": "sigma",
    "SIGMA": "sigma",
    "NOISE": "sigma",
}

_SIG2FWHM = np.sqrt(8.0 * np.log(2.0))  # FWHM of a Gaussian / its sigma


@dataclass(frozen=True, eq=False, repr=False)
class Cube:
    """An IFU datacube as plain arrays, with its WCS kept for output.

    Attributes
    ----------
    flux : ndarray, shape (n_wave, ny, nx), float64
        Flux in the file's units (``flux_unit``); 0 wherever ``ivar`` is 0.
    ivar : ndarray, shape (n_wave, ny, nx), float64
        Inverse variance, in ``flux_unit**-2``; 0 means no weight (masked, flagged,
        non-finite, non-positive variance).
    wave : ndarray, shape (n_wave,), float64
        Wavelength of each channel in Angstrom, increasing; air if ``air`` else vacuum.
    air : bool
        True when the spectral WCS is ``AWAV`` (air wavelengths).
    wcs : astropy.wcs.WCS
        2-D WCS of the spatial axes (pixel x = numpy axis 2, y = axis 1).
    header : astropy.io.fits.Header
        Copy of the flux HDU header.
    lsf_fwhm : ndarray, shape (n_wave,), or None
        Instrumental FWHM in Angstrom per channel when the file has it (MaNGA).
    flux_unit : str
        ``BUNIT`` of the flux HDU, or ``''``.
    path : str
        The file read.
    layout : str
        ``"MUSE"``, ``"MANGA"`` or ``"GENERIC"``.
    """

    flux: np.ndarray
    ivar: np.ndarray
    wave: np.ndarray
    air: bool
    wcs: WCS
    header: fits.Header
    lsf_fwhm: np.ndarray | None
    flux_unit: str
    path: str
    layout: str

    @property
    def spatial_shape(self) -> tuple[int, int]:
        """``(ny, nx)``."""
        return tuple(self.flux.shape[1:])

    @property
    def n_wave(self) -> int:
        """Number of spectral channels."""
        return self.flux.shape[0]

    def __repr__(self) -> str:
        return (
            f"Cube(path={self.path!r}, layout={self.layout!r}, shape={self.flux.shape}, "
            f"wave={self.wave[0]:.3f}..{self.wave[-1]:.3f} A ({'air' if self.air else 'vacuum'}), "
            f"flux_unit={self.flux_unit!r}, lsf={'yes' if self.lsf_fwhm is not None else 'no'})"
        )


# ----------------------------------------------------------------------------------------
# air <-> vacuum


def _refractive_index_vac(wave_vac):
    """Refractive index of standard air at vacuum wavelength ``wave_vac`` (Angstrom).

    Morton 2000, ApJS 130, 403, eq. 8 (the IAU standard, from Ciddor 1996,
    Appl. Opt. 35, 1566): with s = 10^4 / lambda_vac [micron^-1],
    n - 1 = 8.34254e-5 + 2.406147e-2 / (130 - s^2) + 1.5998e-4 / (38.9 - s^2).
    """
    s2 = (1.0e4 / wave_vac) ** 2
    return 1.0 + 8.34254e-5 + 2.406147e-2 / (130.0 - s2) + 1.5998e-4 / (38.9 - s2)


_IAU_VACUUM_LIMIT = 2000.0  # Angstrom: shorter wavelengths are quoted in vacuum (IAU)


def vacuum_to_air(wave):
    """Convert vacuum wavelengths to air (standard air, 15 C, 101325 Pa).

    Parameters
    ----------
    wave : array_like
        Vacuum wavelengths in Angstrom.

    Returns
    -------
    ndarray
        Air wavelengths in Angstrom, ``lambda_vac / n(lambda_vac)``; wavelengths below
        2000 A are returned unchanged (IAU convention: they are quoted in vacuum).

    References
    ----------
    Morton, D. C. 2000, ApJS 130, 403, eq. 8 (IAU standard, after Ciddor 1996).

    Examples
    --------
    >>> round(float(vacuum_to_air(5891.583)), 3)  # Na I D2
    5889.951
    """
    w = np.asarray(wave, dtype=np.float64)
    out = np.where(w >= _IAU_VACUUM_LIMIT, w / _refractive_index_vac(np.maximum(w, 1.0)), w)
    return out[()] if out.ndim == 0 else out


def air_to_vacuum(wave):
    """Convert air wavelengths to vacuum, the exact inverse of :func:`vacuum_to_air`.

    Solves ``lambda_air = lambda_vac / n(lambda_vac)`` (Morton 2000 eq. 8) by fixed-point
    iteration ``lambda_vac <- lambda_air * n(lambda_vac)``; since
    ``|d ln n / d ln lambda| < 1e-5`` in the optical, four iterations reach double precision.

    Parameters
    ----------
    wave : array_like
        Air wavelengths in Angstrom.

    Returns
    -------
    ndarray
        Vacuum wavelengths in Angstrom; air wavelengths below ``vacuum_to_air(2000 A)``
        are returned unchanged (IAU convention).

    References
    ----------
    Morton, D. C. 2000, ApJS 130, 403, eq. 8; Ciddor, P. E. 1996, Appl. Opt. 35, 1566.

    Examples
    --------
    >>> round(float(air_to_vacuum(5889.951)), 3)  # Na I D2
    5891.583
    """
    w = np.asarray(wave, dtype=np.float64)
    limit = _IAU_VACUUM_LIMIT / _refractive_index_vac(_IAU_VACUUM_LIMIT)
    use = w >= limit
    safe = np.where(use, w, _IAU_VACUUM_LIMIT)
    vac = safe * _refractive_index_vac(safe)
    for _ in range(4):
        vac = safe * _refractive_index_vac(vac)
    out = np.where(use, vac, w)
    return out[()] if out.ndim == 0 else out


# ----------------------------------------------------------------------------------------
# helpers


def _where(path, hdu_name):
    return f"{path}[{hdu_name}]"


def _hdu_label(hdul, key):
    hdu = hdul[key]
    return hdu.name if hdu.name else str(key)


def _get_hdu(hdul, key, path, role):
    """HDU ``key`` (name or index) of ``hdul``, or InputError naming file and HDU."""
    try:
        return hdul[key]
    except (KeyError, IndexError):
        raise InputError(f"{path}: no HDU {key!r} ({role})") from None


def _has(hdul, name):
    return any(h.name.upper() == name for h in hdul)


def _is_cube_hdu(hdu):
    return isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU)) and hdu.header.get("NAXIS", 0) == 3


def _read_data(hdu, path, label):
    """The HDU's data array (memory-mapped where possible), errors as InputError."""
    try:
        data = hdu.data
    except Exception as exc:  # truncated or corrupt data unit
        raise InputError(f"{_where(path, label)}: cannot read data ({exc})") from None
    if data is None:
        raise InputError(f"{_where(path, label)}: HDU has no data")
    return data


def _resolve_layout(path, hdul, layout):
    names = {h.name.upper() for h in hdul}
    if layout != "AUTO":
        return layout
    if "FLUX" in names and "IVAR" in names:
        return "MANGA"
    prim = hdul[0].header
    if "DATA" in names and (
        "STAT" in names or "DQ" in names or str(prim.get("INSTRUME", "")).strip().upper() == "MUSE"
    ):
        return "MUSE"
    return "GENERIC"


def _spectral_wcs(header, hdul, path, label, n_axis_len):
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
            raise InputError(f"{_where(path, label)}: invalid WCS ({exc})") from None
    spec = wcs.wcs.spec
    if wcs.naxis != 3 or spec < 0:
        return wcs, None, None, False
    ctype = wcs.wcs.ctype[spec].upper()
    base = ctype[:4]
    if base not in ("WAVE", "AWAV", "FREQ", "WAVN", "ENER"):
        raise InputError(
            f"{_where(path, label)}: spectral axis CTYPE{spec + 1} = {ctype!r} is not a "
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
            f"{_where(path, label)}: no CUNIT{spec + 1}; wavelengths read as Angstrom",
            stacklevel=3,
        )
        unit = u.AA
    wave = (world * unit).to_value(u.AA, equivalencies=u.spectral())
    return wcs, spec, wave, base == "AWAV"


def _check_wave(wave, path, label):
    if wave.size == 0 or not np.all(np.isfinite(wave)) or np.any(wave <= 0):
        raise InputError(f"{_where(path, label)}: non-finite or non-positive wavelengths")
    d = np.diff(wave)
    if not (np.all(d > 0) or np.all(d < 0)):
        raise InputError(f"{_where(path, label)}: wavelengths are not strictly monotonic")
    return bool(d.size and d[0] < 0)


def _to_cube(data, np_spec_axis, flip, dtype=np.float64):
    """One C-ordered copy with the spectral axis first (and increasing wavelength)."""
    a = np.moveaxis(data, np_spec_axis, 0)
    if flip:
        a = a[::-1]
    return np.array(a, dtype=dtype, order="C")


def _weights(flux, noise, kind, bad):
    """Inverse variance in place of ``noise``; zero weight and zero flux where ``bad``.

    ``kind`` is ``'var'``, ``'ivar'`` or ``'sigma'``; ``noise`` None gives unit weights.
    ``bad`` (bool array or None) holds the layout's mask (DQ != 0, MaNGA bits).
    """
    bad = ~np.isfinite(flux) if bad is None else (bad | ~np.isfinite(flux))
    if noise is None:
        ivar = np.ones_like(flux)
    else:
        ivar = noise
        bad |= ~np.isfinite(ivar)
        bad |= ivar <= 0  # negative or zero variance / ivar / sigma: no weight
        good = ~bad
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            if kind == "sigma":
                np.multiply(ivar, ivar, out=ivar, where=good)
            if kind in ("sigma", "var"):
                np.divide(1.0, ivar, out=ivar, where=good)
        del good
        bad |= ~np.isfinite(ivar)  # e.g. 1 / (denormal variance)
    ivar[bad] = 0.0
    flux[bad] = 0.0
    return ivar


def _noise_kind(hdu):
    return _NOISE_KINDS.get(hdu.name.upper(), "var")


def _find_noise_hdu(hdul, flux_index):
    for name in _NOISE_KINDS:
        for i, h in enumerate(hdul):
            if i != flux_index and h.name.upper() == name and _is_cube_hdu(h):
                return i
    return None


def _index_of(hdul, hdu):
    for i, h in enumerate(hdul):
        if h is hdu:
            return i
    return None


def _same_shape(hdu, shape, path, label, role):
    if tuple(hdu.shape) != tuple(shape):
        raise InputError(
            f"{_where(path, label)}: {role} shape {tuple(hdu.shape)} differs from the "
            f"flux shape {tuple(shape)}"
        )


def _manga_lsf(hdul, wave, path, np_spec_axis, flip):
    """Instrumental FWHM (Angstrom) per channel from MaNGA resolution extensions.

    ``LSFPRE``/``PREDISP``/``LSFPOST``/``DISP`` hold the 1-sigma LSF width in Angstrom per
    spaxel: FWHM = sqrt(8 ln 2) sigma, median over spaxels with positive finite values.
    ``PRESPECRES``/``SPECRES`` hold R = lambda / FWHM (median over the cube):
    FWHM = lambda / R.  Channels without a valid value are interpolated linearly.
    """
    for name in _MANGA_LSF_ORDER:
        if not _has(hdul, name):
            continue
        hdu = hdul[name]
        data = _read_data(hdu, path, name)
        if "SPECRES" in name:
            if data.ndim != 1 or data.shape[0] != wave.size:
                raise InputError(f"{_where(path, name)}: expected {wave.size} values, got {data.shape}")
            res = np.array(data[::-1] if flip else data, dtype=np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                fwhm = np.where(np.isfinite(res) & (res > 0), wave / res, np.nan)
        else:
            if data.ndim != 3 or data.shape[np_spec_axis] != wave.size:
                raise InputError(f"{_where(path, name)}: shape {data.shape} does not match the cube")
            sig = _to_cube(data, np_spec_axis, flip, dtype=np.float32)
            sig = sig.reshape(sig.shape[0], -1)
            sig[~(np.isfinite(sig) & (sig > 0))] = np.nan
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN channels
                fwhm = _SIG2FWHM * np.nanmedian(sig, axis=1).astype(np.float64)
            del sig
        ok = np.isfinite(fwhm)
        if not ok.any():
            warnings.warn(f"{_where(path, name)}: no valid resolution values; trying the next", stacklevel=3)
            continue
        if not ok.all():
            fwhm = np.interp(wave, wave[ok], fwhm[ok])
        return fwhm
    return None


# ----------------------------------------------------------------------------------------
# the reader


def read_cube(path, layout="auto", flux_hdu=None, var_hdu=None) -> Cube:
    """Read an IFU datacube into a :class:`Cube`.

    Parameters
    ----------
    path : str or os.PathLike
        FITS file.
    layout : {"auto", "MUSE", "MANGA", "GENERIC"}
        File layout (case-insensitive).  ``"auto"``: ``MANGA`` when the file has ``FLUX``
        and ``IVAR`` HDUs, ``MUSE`` when it has ``DATA`` with ``STAT`` or ``DQ`` (or
        ``INSTRUME = 'MUSE'``), else ``GENERIC``.
    flux_hdu : str or int, optional
        Flux HDU (name or index) instead of the layout's (``DATA``, ``FLUX``, or the first
        3-D image HDU for the generic layout).
    var_hdu : str or int, optional
        Noise HDU instead of the layout's.  Its ``EXTNAME`` says what it holds: ``IVAR``
        inverse variance; ``ERR``, ``ERROR``, ``SIGMA``, ``NOISE`` 1-sigma errors; anything
        else variance.

    Returns
    -------
    Cube
        float64 flux and inverse variance ``(n_wave, ny, nx)``, wavelengths in Angstrom.

    Raises
    ------
    InputError
        One line naming the file (and HDU): missing or unreadable file, no 3-D HDU, no
        spectral axis in the WCS, noise or mask HDU of another shape, every pixel masked
        or non-finite, unknown ``layout``.

    Notes
    -----
    Zero weight (``ivar = 0``, ``flux = 0``) for: non-finite flux or noise; non-positive
    variance, error or inverse variance; MUSE ``DQ != 0``; MaNGA ``MASK`` bits in
    :data:`MANGA_BAD_BITS` (NOCOV, DEADFIBER, FORESTAR, DONOTUSE).  The MaNGA LSF comes
    from the first of ``LSFPRE``, ``PREDISP``, ``PRESPECRES``, ``LSFPOST``, ``DISP``,
    ``SPECRES`` present (pre-pixelisation first, as the MaNGA DAP, Law et al. 2021).

    Examples
    --------
    >>> cube = read_cube("muse_abell478_minicube.fits")  # doctest: +SKIP
    >>> cube.flux.shape, cube.air
    ((3681, 40, 40), True)
    """
    path = os.fspath(path)
    lay = str(layout).strip().upper()
    if lay not in LAYOUTS + ("AUTO",):
        raise InputError(
            f"{path}: unknown layout {layout!r} (option layout=): expected auto, MUSE, MANGA or GENERIC"
        )
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory, not a FITS file")
    try:
        hdul = fits.open(path, memmap=True)
    except Exception as exc:
        raise InputError(f"{path}: not a readable FITS file ({type(exc).__name__}: {exc})") from None
    with hdul:
        return _read_open(hdul, path, _resolve_layout(path, hdul, lay), flux_hdu, var_hdu)


def _read_open(hdul, path, layout, flux_hdu, var_hdu):
    # --- locate the HDUs -----------------------------------------------------------------
    mask_hdu = None
    if layout == "MUSE":
        fkey = "DATA" if flux_hdu is None else flux_hdu
        nkey = var_hdu if var_hdu is not None else ("STAT" if _has(hdul, "STAT") else None)
        mask_hdu = hdul["DQ"] if _has(hdul, "DQ") else None
    elif layout == "MANGA":
        fkey = "FLUX" if flux_hdu is None else flux_hdu
        nkey = var_hdu if var_hdu is not None else ("IVAR" if _has(hdul, "IVAR") else None)
        mask_hdu = hdul["MASK"] if _has(hdul, "MASK") else None
    else:
        if flux_hdu is None:
            idx = next((i for i, h in enumerate(hdul) if _is_cube_hdu(h)), None)
            if idx is None:
                raise InputError(f"{path}: no 3-D image HDU")
            fkey = idx
        else:
            fkey = flux_hdu
        nkey = var_hdu
    fhdu = _get_hdu(hdul, fkey, path, "flux")
    flabel = _hdu_label(hdul, fkey)
    if not _is_cube_hdu(fhdu):
        raise InputError(
            f"{_where(path, flabel)}: flux HDU is not a 3-D image (NAXIS = {fhdu.header.get('NAXIS')})"
        )
    if layout == "GENERIC" and var_hdu is None:
        nkey = _find_noise_hdu(hdul, _index_of(hdul, fhdu))
    nhdu = None if nkey is None else _get_hdu(hdul, nkey, path, "noise")
    shape = tuple(fhdu.shape)
    if nhdu is not None:
        nlabel = _hdu_label(hdul, nkey)
        if not _is_cube_hdu(nhdu):
            raise InputError(f"{_where(path, nlabel)}: noise HDU is not a 3-D image")
        _same_shape(nhdu, shape, path, nlabel, "noise")
    if mask_hdu is not None:
        _same_shape(mask_hdu, shape, path, mask_hdu.name, "mask")

    # --- spectral axis ---------------------------------------------------------------------
    header = fhdu.header
    wcs, spec, wave, air = _spectral_wcs(header, hdul, path, flabel, lambda k: shape[2 - k])
    if layout == "MANGA" and _has(hdul, "WAVE"):
        # The tabulated vacuum wavelengths are the DRP's own (Law et al. 2016).
        if spec is None:
            spec, air = 2, False
        wdata = _read_data(hdul["WAVE"], path, "WAVE")
        if wdata.ndim != 1 or wdata.size != shape[2 - spec]:
            raise InputError(f"{_where(path, 'WAVE')}: {wdata.size} wavelengths for {shape[2 - spec]} channels")
        wave = np.array(wdata, dtype=np.float64)
    if spec is None:
        raise InputError(
            f"{_where(path, flabel)}: no spectral axis in the WCS (CTYPE = "
            f"{[str(c) for c in wcs.wcs.ctype]}); expected WAVE, AWAV, WAVE-LOG or FREQ"
        )
    flip = _check_wave(wave, path, flabel)
    if flip:
        wave = wave[::-1].copy()
    np_axis = 2 - spec
    spatial_wcs = wcs.sub([k + 1 for k in range(3) if k != spec])

    # --- arrays: one float64 copy each -----------------------------------------------------
    flux = _to_cube(_read_data(fhdu, path, flabel), np_axis, flip)
    noise, kind = None, None
    if nhdu is not None:
        noise = _to_cube(_read_data(nhdu, path, nlabel), np_axis, flip)
        kind = _noise_kind(nhdu)
    bad = None
    if mask_hdu is not None:
        mdata = _read_data(mask_hdu, path, mask_hdu.name)
        if layout == "MUSE":
            flagged = mdata != 0  # any DQ flag (Weilbacher et al. 2020)
        elif np.issubdtype(mdata.dtype, np.integer):
            flagged = (mdata & _MANGA_BAD_MASK) != 0
        else:
            raise InputError(f"{_where(path, mask_hdu.name)}: bitmask HDU is not integer ({mdata.dtype})")
        bad = _to_cube(flagged, np_axis, flip, dtype=bool)
        del mdata, flagged
    ivar = _weights(flux, noise, kind, bad)
    del noise, bad
    if not np.any(ivar > 0):
        raise InputError(
            f"{_where(path, flabel)}: every pixel is masked, has no positive variance or is non-finite"
        )

    lsf = _manga_lsf(hdul, wave, path, np_axis, flip) if layout == "MANGA" else None
    for a in (flux, ivar, wave) + ((lsf,) if lsf is not None else ()):
        a.flags.writeable = False
    return Cube(
        flux=flux,
        ivar=ivar,
        wave=wave,
        air=bool(air),
        wcs=spatial_wcs,
        header=header.copy(),
        lsf_fwhm=lsf,
        flux_unit=str(header.get("BUNIT", "")).strip(),
        path=path,
        layout=layout,
    )
