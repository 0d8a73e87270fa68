"""Stellar template libraries: loading 1-D FITS spectra into one container.

Supported files: one spectrum per FITS file in the primary HDU, with a 1-D
spectral WCS (``CRVAL1``, ``CDELT1`` or ``CD1_1``, ``CRPIX1``): linear in
wavelength (MILES-HC, MILES SSPs), ``CTYPE1 = 'WAVE-LOG'`` (FITS paper III), or
``DC-FLAG = 1`` (IRAF/SDSS log10 lambda).  Wavelength units come from ``CUNIT1``
(default Angstrom).

Air or vacuum is *not* read from the header: libraries label it inconsistently
(MILES-HC writes ``CTYPE1 = 'WAVE'`` although MILES is in air), so the ``air``
argument decides (default True, as for MILES; Sanchez-Blazquez et al. 2006).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError

__all__ = ["TemplateLibrary", "load_templates", "MILES_FWHM"]

#: MILES spectral resolution, FWHM in Angstrom (Falcon-Barroso et al. 2011, A&A 532, A95).
MILES_FWHM = 2.51


@dataclass(frozen=True)
class TemplateLibrary:
    """Template spectra on one common wavelength grid.

    Attributes
    ----------
    flux : ndarray, shape (n_tpl, n_pix)
        Template spectra (flux density per Angstrom, arbitrary scale).
    wave : ndarray, shape (n_pix,)
        Rest-frame wavelengths of the pixel centres, Angstrom, increasing.
    fwhm : float or ndarray, shape (n_pix,)
        Spectral resolution (Gaussian FWHM), Angstrom.
    air : bool
        True when ``wave`` is in air, False for vacuum.
    names : tuple of str
        One name per template (file stem).
    """

    flux: np.ndarray
    wave: np.ndarray
    fwhm: float | np.ndarray
    air: bool
    names: tuple

    @property
    def n_templates(self) -> int:
        """Number of templates."""
        return int(self.flux.shape[0])

    @property
    def wave_range(self) -> tuple[float, float]:
        """(first, last) pixel-centre wavelength, Angstrom."""
        return float(self.wave[0]), float(self.wave[-1])


def _collect(path_or_files, pattern: str) -> list[Path]:
    if isinstance(path_or_files, (str, os.PathLike)):
        path = Path(path_or_files)
        if path.is_dir():
            files = sorted(p for p in path.glob(pattern) if p.is_file())
            if not files:
                raise InputError(f"--templates: no files matching {pattern!r} in directory {path}")
            return files
        if path.is_file():
            return [path]
        raise InputError(f"--templates: no such file or directory: {path}")
    files = [Path(p) for p in path_or_files]
    if not files:
        raise InputError("--templates: empty list of template files")
    for p in files:
        if not p.is_file():
            raise InputError(f"--templates: no such file: {p}")
    return files


def _wavelengths(header, n: int, path: Path) -> np.ndarray:
    """Pixel-centre wavelengths (Angstrom) from a 1-D spectral header."""
    import astropy.units as u

    try:
        crval = float(header["CRVAL1"])
        crpix = float(header.get("CRPIX1", 1.0))
        delta = header.get("CDELT1", header.get("CD1_1"))
        if delta is None:
            raise KeyError("CDELT1/CD1_1")
        delta = float(delta)
    except (KeyError, ValueError, TypeError) as exc:
        raise InputError(f"--templates: {path} has no usable 1-D wavelength WCS ({exc})") from None
    if delta <= 0:
        raise InputError(f"--templates: {path} has a non-increasing wavelength axis (CDELT1 = {delta})")
    ctype = str(header.get("CTYPE1", "")).strip().upper()
    cunit = str(header.get("CUNIT1", "Angstrom")).strip() or "Angstrom"
    try:
        factor = u.Unit(cunit).to(u.AA)
    except (ValueError, u.UnitConversionError):
        raise InputError(f"--templates: {path} has an unknown wavelength unit CUNIT1 = {cunit!r}") from None
    pix = np.arange(n, dtype=np.float64) + 1.0 - crpix  # FITS pixels count from 1
    if ctype.endswith("-LOG"):  # FITS paper III: lambda = CRVAL exp(CDELT p / CRVAL)
        wave = crval * np.exp(delta * pix / crval)
    elif int(header.get("DC-FLAG", 0)) == 1 or ctype in ("LOGLAM", "LOG10"):
        wave = 10.0 ** (crval + delta * pix)
        factor = 1.0  # log10(lambda / Angstrom) by convention
    else:
        wave = crval + delta * pix
    return wave * factor


def _read_one(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False) as hdul:
            hdu = hdul[0]
            data = hdu.data
            header = hdu.header
            if data is None:
                raise InputError(f"--templates: {path} has no data in its primary HDU")
            data = np.asarray(data, dtype=np.float64)
    except InputError:
        raise
    except Exception as exc:  # astropy raises OSError, TypeError, ValueError for broken files
        raise InputError(f"--templates: cannot read {path} as FITS ({type(exc).__name__}: {exc})") from None
    data = np.squeeze(data)
    if data.ndim != 1:
        raise InputError(f"--templates: {path} primary HDU is not a 1-D spectrum (shape {data.shape})")
    if not np.all(np.isfinite(data)):
        raise InputError(f"--templates: {path} holds non-finite flux values")
    wave = _wavelengths(header, data.size, path)
    return wave, data


def load_templates(
    path_or_files: str | os.PathLike | Sequence[str | os.PathLike],
    fwhm: float | np.ndarray = MILES_FWHM,
    air: bool = True,
    pattern: str = "*.fits",
) -> TemplateLibrary:
    """Load a library of 1-D FITS template spectra.

    Parameters
    ----------
    path_or_files : path or sequence of paths
        A directory (files matching ``pattern``, sorted by name), one FITS file,
        or a list of FITS files.
    fwhm : float or ndarray, shape (n_pix,)
        Template resolution, FWHM in Angstrom (``--template-fwhm``; 2.51 for
        MILES, Falcon-Barroso et al. 2011).
    air : bool
        Wavelengths are in air (True, MILES) or vacuum (False).  Not read from
        the headers, which are unreliable about it.
    pattern : str
        Glob pattern for a directory.

    Returns
    -------
    TemplateLibrary

    Raises
    ------
    InputError
        Empty directory, unreadable or non-1-D file, non-finite values, an
        invalid ``fwhm``, or files on different wavelength grids (naming the
        first file that differs).

    Examples
    --------
    >>> lib = load_templates("../shared/data/templates/mileshc_v2")  # doctest: +SKIP
    >>> lib.flux.shape  # doctest: +SKIP
    (63, 4300)
    """
    files = _collect(path_or_files, pattern)
    spectra = []
    wave0 = None
    for path in files:  # a loop over files (I/O), not over spaxels
        wave, data = _read_one(path)
        if wave0 is None:
            wave0, first = wave, path
        elif wave.shape != wave0.shape or not np.allclose(wave, wave0, rtol=0, atol=1e-6 * np.diff(wave0).min()):
            raise InputError(
                f"--templates: {path} is on a different wavelength grid "
                f"({wave[0]:.2f}-{wave[-1]:.2f} A, {wave.size} pixels) from {first} "
                f"({wave0[0]:.2f}-{wave0[-1]:.2f} A, {wave0.size} pixels)"
            )
        spectra.append(data)
    flux = np.stack(spectra)
    fwhm_arr = np.asarray(fwhm, dtype=np.float64)
    if fwhm_arr.ndim == 0:
        if not (np.isfinite(fwhm_arr) and fwhm_arr > 0):
            raise InputError(f"--template-fwhm: must be a positive number of Angstrom, got {fwhm}")
        fwhm_out: float | np.ndarray = float(fwhm_arr)
    else:
        if fwhm_arr.shape != wave0.shape or not np.all(np.isfinite(fwhm_arr) & (fwhm_arr > 0)):
            raise InputError(
                f"--template-fwhm: need a positive scalar or one value per template pixel ({wave0.size})"
            )
        fwhm_out = fwhm_arr
    names = tuple(p.stem for p in files)
    return TemplateLibrary(flux=flux, wave=wave0, fwhm=fwhm_out, air=bool(air), names=names)
