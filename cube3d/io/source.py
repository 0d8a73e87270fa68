"""A FITS cube left on disk and read a block of spaxels at a time: :func:`open_cube`.

:func:`cube3d.io.read_cube` holds the whole cube in memory as float64 (25 bytes per voxel
at its peak: 8 GiB for a 300 x 300 x 3681 MUSE cube).  :func:`open_cube` reads only the
headers (with the same checks and one-line errors), and :meth:`CubeSource.read` returns
the flux and inverse variance of any set of spaxels, converted exactly as
:func:`~cube3d.io.read_cube` converts them (same functions, elementwise), so a spaxel is
the same to the last bit either way.

Reading.  A cube is stored wavelength-major: a block of spaxels is one run of bytes per
wavelength plane (neighbouring spaxels, rows of the cube), read with positioned reads
(``preadv``) straight into the block's array, so the process holds only the block (a
memory map would also hold every file page it touched, and the kernel maps 64 KiB
around each).  Tile-compressed HDUs and gzip-compressed files cannot be read so: their
data units are loaded whole, after a check that they fit in the memory available.
"""

from __future__ import annotations

import hashlib
import os
from typing import Optional

import numpy as np
from astropy.io import fits

from cube3d.errors import InputError

from .fitsutil import read_data, where
from .noise import der_snr_noise
from .reader import (READ_BYTES_PER_VOXEL, Located, available_memory, bad_pixels, estimated_variance,
                     format_bytes, locate, open_fits, pixel_weights)

__all__ = ["CubeSource", "open_cube", "raster_blocks"]

#: spaxels per block of the noise-estimation pass (cubes without a noise HDU)
NOISE_BLOCK = 1024

#: a gap of fewer spaxels between two wanted ones is read through rather than skipped
READ_GAP = 64

_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"PK\x03\x04")

#: FITS BITPIX -> big-endian NumPy dtype of the stored values (FITS standard 4.0, table 8)
_BITPIX_DTYPES = {8: "u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


class _FileHDU:
    """Reads spaxels of one uncompressed image HDU with positioned reads (no memory map).

    With the spectral axis first (MUSE, generic cubes), spaxel ``y * nx + x`` of plane
    ``k`` is at ``offset + (k * ny * nx + y * nx + x) * itemsize``: a set of spaxels is
    read as runs of consecutive indices (gaps under :data:`READ_GAP` spaxels are read
    through), one ``preadv`` per run and plane, straight into the output array.  A
    memory map would be simpler but the kernel maps up to 64 KiB around every page
    touched (fault-around), so a block of spaxels, which touches every plane, would
    briefly make ~64 KiB x n_wave x 3 HDUs resident (700 MiB for MUSE).  Other axis
    orders (rare) go through a memory map opened per read.
    """

    def __init__(self, path, hdu, label):
        info = hdu.fileinfo()
        self.path, self.label = path, label
        self.offset = int(info["datLoc"])
        self.shape = tuple(hdu.shape)
        bitpix = int(hdu.header["BITPIX"])
        self.dtype = np.dtype(_BITPIX_DTYPES[bitpix])
        self.bscale = float(hdu.header.get("BSCALE", 1.0))
        self.bzero = float(hdu.header.get("BZERO", 0.0))
        self.blank = hdu.header.get("BLANK") if bitpix > 0 else None
        need = self.offset + self.dtype.itemsize * int(np.prod(self.shape))
        size = os.path.getsize(path)
        if size < need:
            raise InputError(f"{where(path, label)}: cannot read data (the file ends at byte {size}, the HDU's "
                             f"data needs {need}: truncated?)")

    def _gather(self, spec_axis, idx):
        if spec_axis != 0:
            mm = np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.offset, shape=self.shape)
            ys, xs = np.divmod(idx, self.shape[2] if spec_axis != 2 else self.shape[1])
            return np.moveaxis(mm, spec_axis, 0)[:, ys, xs]  # a copy; the map goes with this frame
        n_wave = self.shape[0]
        plane = self.shape[1] * self.shape[2] * self.dtype.itemsize
        order = np.unique(idx)
        breaks = np.flatnonzero(np.diff(order) > READ_GAP) + 1
        first = order[np.r_[0, breaks]]
        stop = order[np.r_[breaks - 1, order.size - 1]] + 1
        cols = np.r_[0, np.cumsum(stop - first)]
        out = np.empty((n_wave, int(cols[-1])), dtype=self.dtype)
        size = self.dtype.itemsize
        with open(self.path, "rb", buffering=0) as fh:
            fd = fh.fileno()
            for r in range(first.size):
                start = self.offset + int(first[r]) * size
                nbytes = int(stop[r] - first[r]) * size
                view = out[:, cols[r] : cols[r + 1]]
                for k in range(n_wave):
                    if os.preadv(fd, [view[k]], start + k * plane) != nbytes:
                        raise InputError(f"{where(self.path, self.label)}: cannot read data (short read at plane "
                                         f"{k}: the file changed or is truncated)")
        position = np.searchsorted(np.concatenate([np.arange(a, b) for a, b in zip(first, stop)]), idx)
        return out[:, position]

    def take(self, spec_axis, idx):
        """Spaxels ``idx`` (flattened) with the spectral axis first, (n_wave, n), as stored (scaled)."""
        raw = self._gather(spec_axis, idx)
        if self.bscale == 1.0 and self.bzero == 0.0 and self.blank is None:
            return raw
        if self.dtype.kind in "iu" and self.bscale == 1.0 and float(self.bzero).is_integer():
            return raw.astype(np.int64) + int(self.bzero)  # the unsigned-integer convention
        out = raw.astype(np.float64) * self.bscale + self.bzero
        if self.blank is not None:
            out[raw == self.blank] = np.nan
        return out


class _LoadedHDU:
    """A data unit that cannot be mapped (compressed), loaded whole once."""

    def __init__(self, path, hdu, label):
        self.data = np.asarray(read_data(hdu, path, label))

    def take(self, spec_axis, idx):
        data = np.moveaxis(self.data, spec_axis, 0)
        return data.reshape(data.shape[0], -1)[:, idx]


class CubeSource:
    """An IFU cube on disk: metadata in memory, spectra read on demand (:func:`open_cube`).

    Attributes
    ----------
    path : str
    layout : str
    wave : ndarray, shape (n_wave,)
        Increasing wavelengths, Angstrom (air if ``air``).
    air : bool
    wcs : astropy.wcs.WCS
        2-D celestial WCS.
    header : astropy.io.fits.Header
        Copy of the flux HDU header.
    lsf_fwhm : ndarray or None
        Instrumental FWHM per channel, Angstrom (MaNGA).
    flux_unit : str
    spatial_shape : tuple of int
        ``(ny, nx)``.
    n_wave : int
    streamed : bool
        False when the data units had to be loaded whole (compressed file or HDU).

    The attributes :func:`cube3d.prepare.prepare_cube` uses of a :class:`~cube3d.io.Cube`
    are here too, without ``flux`` and ``ivar``.
    """

    def __init__(self, path: str, loc: Located, flux, noise, mask, variance: Optional[np.ndarray]):
        self.path = path
        self.layout = loc.layout
        self.wave = loc.wave
        self.air = loc.air
        self.wcs = loc.wcs
        self.header = loc.header
        self.lsf_fwhm = loc.lsf_fwhm
        self.flux_unit = str(loc.header.get("BUNIT", "")).strip()
        self.spatial_shape = loc.spatial_shape
        self.n_wave = loc.shape[loc.spec_axis]
        self.streamed = isinstance(flux, _FileHDU)
        self._loc = loc
        self._hdus = (flux, noise, mask)
        self._variance = variance  # (ny * nx,) DER_SNR variance when there is no noise HDU

    @property
    def n_spaxels(self) -> int:
        """``ny * nx``."""
        return int(np.prod(self.spatial_shape))

    def read(self, spaxels):
        """Flux and inverse variance of some spaxels, as :func:`~cube3d.io.read_cube` gives them.

        Parameters
        ----------
        spaxels : array_like of int, shape (n,)
            Flattened indices ``y * nx + x``; increasing indices read fastest.

        Returns
        -------
        flux, ivar : ndarray, shape (n_wave, n), float64
            Zero weight and zero flux at masked, flagged and non-finite pixels.
        """
        idx = np.asarray(spaxels, dtype=np.int64)
        flux, ivar = self._read_raw(idx)
        if self._variance is not None:
            ivar *= (1.0 / self._variance[idx])[None, :]
        return flux, ivar

    def _read_raw(self, idx):
        loc = self._loc
        flux_hdu, noise_hdu, mask_hdu = self._hdus
        flux = np.asarray(flux_hdu.take(loc.spec_axis, idx), dtype=np.float64)
        noise = None
        if noise_hdu is not None:
            noise = np.asarray(noise_hdu.take(loc.spec_axis, idx), dtype=np.float64)
        bad = None
        if mask_hdu is not None:
            bad = bad_pixels(loc.layout, mask_hdu.take(loc.spec_axis, idx), self.path)
        if loc.flip:
            flux = flux[::-1].copy()
            noise = None if noise is None else noise[::-1].copy()
            bad = None if bad is None else bad[::-1].copy()
        ivar = pixel_weights(flux, noise, loc.noise_kind, bad)
        return flux, ivar

    def identity(self) -> dict:
        """What identifies the input for a journal (:mod:`cube3d.journal`): the resolved path,
        size and modification time of the file and a SHA-256 of all its headers (the data
        are not hashed: that would read the whole file)."""
        st = os.stat(self.path)
        digest = hashlib.sha256()
        with fits.open(self.path, memmap=True) as hdul:
            for hdu in hdul:
                digest.update(hdu.header.tostring().encode("ascii", "replace"))
        return {"path": os.path.realpath(self.path), "size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns),
                "headers_sha256": digest.hexdigest()}

    def __repr__(self) -> str:
        ny, nx = self.spatial_shape
        return (f"CubeSource(path={self.path!r}, layout={self.layout!r}, shape=({self.n_wave}, {ny}, {nx}), "
                f"streamed={self.streamed})")


def raster_blocks(n_spaxels: int, size: int):
    """Consecutive ranges of at most ``size`` flattened spaxel indices, in raster order."""
    for s0 in range(0, n_spaxels, size):
        yield np.arange(s0, min(s0 + size, n_spaxels))


def _mappable(path, hdu):
    with open(path, "rb") as fh:
        magic = fh.read(4)
    return not magic.startswith(_COMPRESSED_MAGIC) and not isinstance(hdu, fits.CompImageHDU)


def open_cube(path, layout="auto", flux_hdu=None, var_hdu=None) -> CubeSource:
    """Open an IFU cube for reading a block of spaxels at a time.

    Parameters are those of :func:`cube3d.io.read_cube`, with the same checks of the
    headers and the same one-line :class:`~cube3d.errors.InputError`.  The data are not
    read, except for a cube without a noise HDU: then one pass over it (blocks of
    :data:`NOISE_BLOCK` spaxels) estimates each spaxel's DER_SNR noise, as
    :func:`~cube3d.io.read_cube` does, with the same warning.

    Returns
    -------
    CubeSource

    Raises
    ------
    InputError
        As :func:`~cube3d.io.read_cube` (the check that some pixel has weight is left to
        the first full pass over the data, :func:`cube3d.stream.plan_cube`); also a data
        unit shorter than its header says (a truncated file), and a compressed cube
        whose data would not fit in the memory available.

    Examples
    --------
    >>> src = open_cube("muse_abell478_minicube.fits")  # doctest: +SKIP
    >>> flux, ivar = src.read(range(40))                 # doctest: +SKIP
    >>> flux.shape                                      # doctest: +SKIP
    (3681, 40)
    """
    path = os.fspath(path)
    with open_fits(path, layout) as (hdul, lay):
        loc = locate(hdul, path, lay, flux_hdu, var_hdu)
        readers = []
        for index, label in ((loc.flux, loc.flux_label), (loc.noise, loc.noise_label), (loc.mask, loc.mask_label)):
            if index is None:
                readers.append(None)
            elif _mappable(path, hdul[index]):
                readers.append(_FileHDU(path, hdul[index], label))
            else:
                need = READ_BYTES_PER_VOXEL * int(np.prod(loc.shape))
                free = available_memory()
                if free is not None and need > free:
                    raise InputError(
                        f"{where(path, label)}: a compressed cube is read whole and needs {format_bytes(need)}, "
                        f"more than the {format_bytes(free)} available; decompress it (funpack, gunzip) so that "
                        "it can be read a block of spaxels at a time")
                readers.append(_LoadedHDU(path, hdul[index], label))
        source = CubeSource(path, loc, *readers, variance=None)
        if loc.noise is None:
            source._variance = _estimate_variance(source, where(path, loc.flux_label), loc.missing_noise)
    return source


def _estimate_variance(source, label, missing):
    """DER_SNR variance of every spaxel (flattened), in blocks; the warning of read_cube."""
    noise = np.empty(source.n_spaxels)
    has_pixels = np.empty(source.n_spaxels, dtype=bool)
    for idx in raster_blocks(source.n_spaxels, NOISE_BLOCK):
        flux, ivar = source._read_raw(idx)
        good = ivar > 0
        noise[idx] = der_snr_noise(flux[:, None, :], good[:, None, :])[0]
        has_pixels[idx] = good.any(0)
    return estimated_variance(noise, has_pixels, label, missing, stacklevel=4)
