"""The cube reader: :func:`read_cube` for MUSE, MaNGA LOGCUBE and generic 3-D FITS cubes."""

import os
import warnings

import numpy as np
from astropy.io import fits

from cube3d.errors import InputError, ResultWarning

from .container import Cube
from .fitsutil import (check_same_shape, get_hdu, has_hdu, hdu_label, index_of, is_cube_hdu, reading,
                       read_data, to_cube, where)
from .manga import manga_bad_pixels, manga_lsf_fwhm
from .noise import der_snr_noise
from .spectral import check_wave, spectral_axis

__all__ = ["LAYOUTS", "read_cube"]

LAYOUTS = ("MUSE", "MANGA", "GENERIC")

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


def _weights(flux, noise, kind, bad):
    """Inverse variance in place of ``noise``; zero weight and zero flux where ``bad``.

    ``kind`` is ``'var'``, ``'ivar'`` or ``'sigma'``; ``noise`` None gives unit weights
    (replaced by :func:`_estimated_weights`).  ``bad`` (bool array or None) holds the
    layout's mask (DQ != 0, MaNGA bits).
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


def _estimated_weights(flux, ivar, label, missing):
    """Without a noise HDU: one constant inverse variance per spaxel from its DER_SNR noise.

    ``ivar`` holds unit weights (0 = bad) and is overwritten; the noise of each spaxel
    is :func:`cube3d.io.noise.der_snr_noise` over its good pixels (Stoehr et al. 2008).
    A spaxel where no estimate is possible (too few pixels, zero noise) takes the
    median estimate of the others; unit weights stay when no spaxel has one.  Warns
    once, naming ``label`` (file and HDU) and the ``missing`` HDU.
    """
    good = ivar > 0
    noise = der_snr_noise(flux, good)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        var = noise * noise
        ok = np.isfinite(var) & (var > 0) & np.isfinite(1.0 / var)
    if np.any(ok):
        fill = float(np.median(var[ok]))
        n_fill = int(np.sum(~ok & good.any(0)))
        var = np.where(ok, var, fill)
        ivar *= (1.0 / var)[None, :, :]
        how = "so the noise of each spaxel is estimated from its own spectrum (DER_SNR, Stoehr et al. 2008) " \
              "as a constant variance"
        if n_fill:
            how += f" ({n_fill} spaxels without an estimate take the median one)"
    else:
        how = "and no spaxel has enough pixels to estimate its noise (DER_SNR), so every pixel has unit " \
              "weight and S/N, errors and CHI2 are on an arbitrary scale"
    warnings.warn(f"{label}: no {missing} HDU, {how}", ResultWarning, stacklevel=4)
    return ivar


def _noise_kind(hdu):
    return _NOISE_KINDS.get(hdu.name.upper(), "var")


def _find_noise_hdu(hdul, flux_index):
    for name in _NOISE_KINDS:
        for i, h in enumerate(hdul):
            if i != flux_index and h.name.upper() == name and is_cube_hdu(h):
                return i
    return None


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
        HDU of another shape, every pixel masked or non-finite, unknown ``layout``.

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
    lay = str(layout).strip().upper()
    if lay not in LAYOUTS + ("AUTO",):
        raise InputError(
            f"{path}: unknown layout {layout!r} (option layout=): expected auto, MUSE, MANGA or GENERIC"
        )
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory, not a FITS file")
    with reading(path):
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

    # --- arrays: one float64 copy each -----------------------------------------------------
    flux = to_cube(read_data(fhdu, path, flabel), np_axis, flip)
    noise, kind = None, None
    if nhdu is not None:
        noise = to_cube(read_data(nhdu, path, nlabel), np_axis, flip)
        kind = _noise_kind(nhdu)
    bad = None
    if mask_hdu is not None:
        mdata = read_data(mask_hdu, path, mask_hdu.name)
        # MUSE: any DQ flag (Weilbacher et al. 2020); MaNGA: the MANGA_BAD_BITS
        flagged = mdata != 0 if layout == "MUSE" else manga_bad_pixels(mdata, path)
        bad = to_cube(flagged, np_axis, flip, dtype=bool)
        del mdata, flagged
    ivar = _weights(flux, noise, kind, bad)
    del noise, bad
    if nhdu is None:
        missing = {"MUSE": "STAT", "MANGA": "IVAR"}.get(layout, "noise (STAT, VAR, IVAR or ERR)")
        ivar = _estimated_weights(flux, ivar, where(path, flabel), missing)
    if not np.any(ivar > 0):
        raise InputError(
            f"{where(path, flabel)}: every pixel is masked, has no positive variance or is non-finite"
        )

    lsf = manga_lsf_fwhm(hdul, wave, path, np_axis, flip) if layout == "MANGA" else None
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
