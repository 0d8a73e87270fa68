"""The :class:`Cube` container returned by :func:`cube3d.io.read_cube`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

__all__ = ["Cube"]


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
