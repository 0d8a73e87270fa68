"""The cube reader: :func:`read_cube` for MUSE, MaNGA LOGCUBE and generic 3-D FITS cubes.

:func:`locate` reads the headers only (HDUs, wavelengths, WCS, noise kind); :func:`read_cube`
then loads the whole cube, and :func:`cube3d.io.source.open_cube` leaves it on disk and reads a
block of spaxels at a time.  Both turn the file's values into flux and inverse variance with
the same functions (:func:`pixel_weights`, :func:`bad_pixels`, :func:`estimated_variance`), so a
spaxel read either way is the same to the last bit.
"""

import os
import warnings
from typing import NamedTuple, Optional

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from cube3d.errors import InputError, ResultWarning

from .container import Cube
from .fitsutil import (check_same_shape, get_hdu, has_hdu, hdu_label, index_of, is_cube_hdu, reading,
                       read_data, to_cube, where)
from .manga import manga_bad_pixels, manga_lsf_fwhm
from .noise import der_snr_noise
from .spectral import check_wave, spectral_axis

__all__ = ["LAYOUTS", "read_cube", "locate", "Located", "pixel_weights", "bad_pixels", "estimated_variance",
           "available_memory", "format_bytes", "open_fits"]

LAYOUTS = ("MUSE", "MANGA", "GENERIC")

#: bytes per voxel that :func:`read_cube` holds at its peak (float64 flux, inverse
#: variance and noise, and a boolean mask)
READ_BYTES_PER_VOXEL = 25

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


class Located(NamedTuple):
    """What the headers of a cube file say: which HDUs hold what, and the axes (no data read).

    Attributes
    ----------
    layout : str
        ``"MUSE"``, ``"MANGA"`` or ``"GENERIC"``.
    flux, noise, mask : int or None
        Index of the flux, noise and mask HDUs in the file (None: absent).
    flux_label, noise_label, mask_label : str or None
        Their names, for messages.
    noise_kind : str or None
        ``"var"``, ``"ivar"`` or ``"sigma"``.
    shape : tuple of int
        NumPy shape of the flux HDU as stored.
    spec_axis : int
        NumPy axis of the spectral axis as stored.
    flip : bool
        Wavelengths decrease along the stored axis (reversed on reading).
    wave : ndarray, shape (n_wave,)
        Increasing wavelengths, Angstrom.
    air : bool
    wcs : astropy.wcs.WCS
        2-D celestial WCS.
    header : astropy.io.fits.Header
        Copy of the flux HDU header.
    lsf_fwhm : ndarray or None
        MaNGA instrumental FWHM per channel, Angstrom.
    """

    layout: str
    flux: int
    flux_label: str
    noise: Optional[int]
    noise_label: Optional[str]
    noise_kind: Optional[str]
    mask: Optional[int]
    mask_label: Optional[str]
    shape: tuple
    spec_axis: int
    flip: bool
    wave: np.ndarray
    air: bool
    wcs: WCS
    header: fits.Header
    lsf_fwhm: Optional[np.ndarray]

    @property
    def spatial_shape(self):
        """``(ny, nx)`` after moving the spectral axis first."""
        return tuple(n for k, n in enumerate(self.shape) if k != self.spec_axis)

    @property
    def missing_noise(self):
        """The noise HDU the layout expects, for the warning when it is absent."""
        return {"MUSE": "STAT", "MANGA": "IVAR"}.get(self.layout, "noise (STAT, VAR, IVAR or ERR)")


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


def pixel_weights(flux, noise, kind, bad):
    """Inverse variance in place of ``noise``; zero weight and zero flux where ``bad``.

    ``kind`` is ``'var'``, ``'ivar'`` or ``'sigma'``; ``noise`` None gives unit weights
    (replaced by :func:`estimated_variance`).  ``bad`` (bool array or None) holds the
    layout's mask (:func:`bad_pixels`).  Elementwise, so any block of spaxels gives the
    same values as the whole cube.
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


def bad_pixels(layout, mask, path):
    """The pixels a mask HDU's values flag: MUSE any DQ flag (Weilbacher et al. 2020),
    MaNGA the :data:`~cube3d.io.MANGA_BAD_BITS`; elementwise."""
    return mask != 0 if layout == "MUSE" else manga_bad_pixels(mask, path)


def estimated_variance(noise, has_pixels, label, missing, stacklevel=4):
    """The constant variance of each spaxel from its DER_SNR ``noise``, or None.

    Parameters
    ----------
    noise : ndarray
        :func:`cube3d.io.noise.der_snr_noise` of every spaxel (NaN: no estimate).
    has_pixels : ndarray of bool, like ``noise``
        Spaxels with at least one good pixel (counted in the warning when they take the fill).
    label, missing : str
        File and HDU, and the noise HDU that is missing, for the warning.

    Returns
    -------
    ndarray or None
        Variance per spaxel; spaxels without an estimate (too few pixels, zero noise)
        take the median of the others.  None when no spaxel has one: unit weights stay.

    Warns
    -----
    cube3d.errors.ResultWarning
        Always (once), saying what was done.
    """
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        var = noise * noise
        ok = np.isfinite(var) & (var > 0) & np.isfinite(1.0 / var)
    if np.any(ok):
        fill = float(np.median(var[ok]))
        n_fill = int(np.sum(~ok & has_pixels))
        var = np.where(ok, var, fill)
        how = "so the noise of each spaxel is estimated from its own spectrum (DER_SNR, Stoehr et al. 2008) " \
              "as a constant variance"
        if n_fill:
            how += f" ({n_fill} spaxels without an estimate take the median one)"
    else:
        var = None
        how = "and no spaxel has enough pixels to estimate its noise (DER_SNR), so every pixel has unit " \
              "weight and S/N, errors and CHI2 are on an arbitrary scale"
    warnings.warn(f"{label}: no {missing} HDU, {how}", ResultWarning, stacklevel=stacklevel)
    return var


def _noise_kind(hdu):
    return _NOISE_KINDS.get(hdu.name.upper(), "var")


def _find_noise_hdu(hdul, flux_index):
    for name in _NOISE_KINDS:
        for i, h in enumerate(hdul):
            if i != flux_index and h.name.upper() == name and is_cube_hdu(h):
                return i
    return None


def available_memory():
    """Bytes this process may still allocate: the smaller of the system's ``MemAvailable``
    and what its cgroup (v2 or v1) leaves; None when neither can be read (not Linux)."""
    limits = []
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    limits.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_file) as fh:
                text = fh.read().strip()
            if text == "max":
                continue
            with open(usage_file) as fh:
                used = int(fh.read().strip())
            limit = int(text)
            if limit < 1 << 60:  # v1 reports "no limit" as a huge number
                limits.append(max(limit - used, 0))
        except (OSError, ValueError):
            continue
    return min(limits) if limits else None


def format_bytes(n) -> str:
    """``n`` bytes in words: ``"3.2 GiB"``, ``"12 MiB"``, ``"900 bytes"``."""
    if n >= 2**30:
        return f"{n / 2**30:.1f} GiB"
    if n >= 2**20:
        return f"{n / 2**20:.0f} MiB"
    return f"{int(n)} bytes"


class open_fits:
    """``with open_fits(path, layout) as (hdul, layout):`` the file opened lazily (memory-mapped,
    no data read), its layout resolved, astropy's warnings named by :func:`reading`;
    one-line :class:`InputError` for a missing, unreadable or unknown-layout file."""

    def __init__(self, path, layout="auto"):
        self.path = os.fspath(path)
        self.layout = layout

    def __enter__(self):
        path = self.path
        lay = str(self.layout).strip().upper()
        if lay not in LAYOUTS + ("AUTO",):
            raise InputError(
                f"{path}: unknown layout {self.layout!r} (option layout=): expected auto, MUSE, MANGA or GENERIC"
            )
        if not os.path.exists(path):
            raise InputError(f"{path}: no such file")
        if os.path.isdir(path):
            raise InputError(f"{path}: is a directory, not a FITS file")
        self._reading = reading(path)
        self._reading.__enter__()
        try:
            self.hdul = fits.open(path, memmap=True)
        except Exception as exc:
            self._reading.__exit__(None, None, None)
            raise InputError(f"{path}: not a readable FITS file ({type(exc).__name__}: {exc})") from None
        return self.hdul, _resolve_layout(path, self.hdul, lay)

    def __exit__(self, *exc):
        self.hdul.close()
        return self._reading.__exit__(*exc)  # re-emits astropy's warnings, or drops them on an error


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
        spectral axis in the WCS, a degenerate spectral WCS (zero or non-finite step,
        naming the keyword; wavelengths not positive or not strictly monotonic), no
        celestial WCS on the spatial axes (naming ``CTYPE1``/``CTYPE2``), noise or mask
        HDU of another shape, every pixel masked or non-finite, unknown ``layout``, and a
        cube whose float64 arrays would not fit in the memory available (use
        :func:`cube3d.io.open_cube`, which reads it a block of spaxels at a time).

    Warns
    -----
    cube3d.errors.ResultWarning
        When the layout's noise HDU is missing (``STAT``, ``IVAR``, or any of the
        generic names): each spaxel then gets one constant inverse variance,
        ``1 / noise**2`` with the DER_SNR noise of its own good pixels
        (Stoehr et al. 2008, :func:`cube3d.io.noise.der_snr_noise`), so that S/N,
        errors and chi2 are on the right scale for white noise.

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
    >>> cube.flux.shape, cube.air  # doctest: +SKIP
    ((3681, 40, 40), True)
    """
    path = os.fspath(path)
    with open_fits(path, layout) as (hdul, lay):
        loc = locate(hdul, path, lay, flux_hdu, var_hdu)
        _check_memory(loc, path)
        flux, ivar = _load_arrays(hdul, loc, path)
    for a in (flux, ivar, loc.wave) + ((loc.lsf_fwhm,) if loc.lsf_fwhm is not None else ()):
        a.flags.writeable = False
    return Cube(
        flux=flux,
        ivar=ivar,
        wave=loc.wave,
        air=bool(loc.air),
        wcs=loc.wcs,
        header=loc.header,
        lsf_fwhm=loc.lsf_fwhm,
        flux_unit=str(loc.header.get("BUNIT", "")).strip(),
        path=path,
        layout=loc.layout,
    )


def _check_memory(loc, path):
    """InputError when the whole cube would not fit in the memory available."""
    need = READ_BYTES_PER_VOXEL * int(np.prod(loc.shape))
    free = available_memory()
    if free is not None and need > free:
        raise InputError(
            f"{where(path, loc.flux_label)}: reading the whole {' x '.join(map(str, loc.shape))} cube needs "
            f"{format_bytes(need)}, more than the {format_bytes(free)} available; `cube3d fit` and "
            "cube3d.run_fit read it a block of spaxels at a time (cube3d.io.open_cube)"
        )


def locate(hdul, path, layout, flux_hdu=None, var_hdu=None) -> Located:
    """Find the flux, noise and mask HDUs of an open file and read its axes (no data).

    Parameters are those of :func:`read_cube` (``layout`` resolved, upper case), plus
    the open ``hdul``.  Raises the :class:`InputError` of :func:`read_cube` for every
    header problem; the MaNGA LSF extensions (small) are read here.
    """
    # --- locate the HDUs -----------------------------------------------------------------
    mask_hdu = None
    if layout == "MUSE":
        fkey = "DATA" if flux_hdu is None else flux_hdu
        nkey = var_hdu if var_hdu is not None else ("STAT" if has_hdu(hdul, "STAT") else None)
        mask_hdu = hdul["DQ"] if has_hdu(hdul, "DQ") else None
    elif layout == "MANGA":
        fkey = "FLUX" if flux_hdu is None else flux_hdu
        nkey = var_hdu if var_hdu is not None else ("IVAR" if has_hdu(hdul, "IVAR") else None)
        mask_hdu = hdul["MASK"] if has_hdu(hdul, "MASK") else None
    else:
        if flux_hdu is None:
            idx = next((i for i, h in enumerate(hdul) if is_cube_hdu(h)), None)
            if idx is None:
                raise InputError(f"{path}: no 3-D image HDU")
            fkey = idx
        else:
            fkey = flux_hdu
        nkey = var_hdu
    fhdu = get_hdu(hdul, fkey, path, "flux")
    flabel = hdu_label(hdul, fkey)
    if not is_cube_hdu(fhdu):
        raise InputError(
            f"{where(path, flabel)}: flux HDU is not a 3-D image (NAXIS = {fhdu.header.get('NAXIS')})"
        )
    if layout == "GENERIC" and var_hdu is None:
        nkey = _find_noise_hdu(hdul, index_of(hdul, fhdu))
    nhdu = None if nkey is None else get_hdu(hdul, nkey, path, "noise")
    shape = tuple(fhdu.shape)
    nlabel = None
    if nhdu is not None:
        nlabel = hdu_label(hdul, nkey)
        if not is_cube_hdu(nhdu):
            raise InputError(f"{where(path, nlabel)}: noise HDU is not a 3-D image")
        check_same_shape(nhdu, shape, path, nlabel, "noise")
    if mask_hdu is not None:
        check_same_shape(mask_hdu, shape, path, mask_hdu.name, "mask")

    # --- spectral axis ---------------------------------------------------------------------
    header = fhdu.header
    wcs, spec, wave, air = spectral_axis(header, hdul, path, flabel, lambda k: shape[2 - k])
    if layout == "MANGA" and has_hdu(hdul, "WAVE"):
        # The tabulated vacuum wavelengths are the DRP's own (Law et al. 2016).
        if spec is None:
            spec, air = 2, False
        wdata = read_data(hdul["WAVE"], path, "WAVE")
        if wdata.ndim != 1 or wdata.size != shape[2 - spec]:
            raise InputError(f"{where(path, 'WAVE')}: {wdata.size} wavelengths for {shape[2 - spec]} channels")
        wave = np.array(wdata, dtype=np.float64)
    if spec is None:
        raise InputError(
            f"{where(path, flabel)}: no spectral axis in the WCS (CTYPE = "
            f"{[str(c) for c in wcs.wcs.ctype]}); expected WAVE, AWAV, WAVE-LOG or FREQ"
        )
    flip = check_wave(wave, path, flabel)
    if flip:
        wave = wave[::-1].copy()
    np_axis = 2 - spec
    spatial_axes = [k + 1 for k in range(3) if k != spec]
    spatial_wcs = wcs.sub(spatial_axes)
    if not spatial_wcs.has_celestial:
        keys = "/".join(f"CTYPE{k}" for k in spatial_axes)
        found = ", ".join(f"CTYPE{k} = {str(wcs.wcs.ctype[k - 1])!r}" for k in spatial_axes)
        raise InputError(
            f"{where(path, flabel)}: no celestial WCS on the spatial axes ({found}); the maps need "
            f"sky coordinates: set {keys} (e.g. 'RA---TAN', 'DEC--TAN')"
        )
    lsf = manga_lsf_fwhm(hdul, wave, path, np_axis, flip) if layout == "MANGA" else None
    return Located(
        layout=layout,
        flux=index_of(hdul, fhdu),
        flux_label=flabel,
        noise=None if nhdu is None else index_of(hdul, nhdu),
        noise_label=nlabel,
        noise_kind=None if nhdu is None else _noise_kind(nhdu),
        mask=None if mask_hdu is None else index_of(hdul, mask_hdu),
        mask_label=None if mask_hdu is None else mask_hdu.name,
        shape=shape,
        spec_axis=np_axis,
        flip=bool(flip),
        wave=wave,
        air=bool(air),
        wcs=spatial_wcs,
        header=header.copy(),
        lsf_fwhm=lsf,
    )


def _load_arrays(hdul, loc, path):
    """The whole cube as float64 flux and inverse variance, (n_wave, ny, nx): one copy each."""
    flux = to_cube(read_data(hdul[loc.flux], path, loc.flux_label), loc.spec_axis, loc.flip)
    noise = None
    if loc.noise is not None:
        noise = to_cube(read_data(hdul[loc.noise], path, loc.noise_label), loc.spec_axis, loc.flip)
    bad = None
    if loc.mask is not None:
        mdata = read_data(hdul[loc.mask], path, loc.mask_label)
        bad = to_cube(bad_pixels(loc.layout, mdata, path), loc.spec_axis, loc.flip, dtype=bool)
        del mdata
    ivar = pixel_weights(flux, noise, loc.noise_kind, bad)
    del noise, bad
    if loc.noise is None:
        label = where(path, loc.flux_label)
        var = estimated_variance(der_snr_noise(flux, ivar > 0), (ivar > 0).any(0), label, loc.missing_noise,
                                 stacklevel=5)
        if var is not None:
            ivar *= (1.0 / var)[None, :, :]
    if not np.any(ivar > 0):
        raise InputError(
            f"{where(path, loc.flux_label)}: every pixel is masked, has no positive variance or is non-finite"
        )
    return flux, ivar
