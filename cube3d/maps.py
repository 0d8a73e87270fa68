"""Kinematic maps: the result container and its FITS file.

A :class:`KinematicMaps` holds one 2-D image per quantity (V, SIGMA, H3, H4, their
errors, CHI2, SNR, BINID, FLAG), the cube's celestial WCS, provenance and, optionally,
the per-bin spectra and best-fit models for the spectrum-plus-fit plot.

:func:`write_maps` writes it to one FITS file:

* an empty primary HDU whose header holds the provenance (``HIERARCH CUBE3D <KEY>``
  cards; long strings continue on ``CONTINUE`` cards, lists and dicts are JSON);
* one ``ImageHDU`` per map, ``EXTNAME`` equal to the map name, with the cube's
  celestial WCS, ``BUNIT`` and a one-line ``CONTENT`` description;
* optionally the image HDUs ``LOGLAM`` (n_pix,), ``SPEC``, ``MODEL`` and ``WEIGHT``
  (n_bin, n_pix): row ``i`` belongs to the bin with ``BINID == i``.  They come from
  ``KinematicMaps.spectra`` or, a block of rows at a time, from a :class:`SpectraBlocks`
  (so that a cube's spectra need not fit in memory); a model cube likewise from a
  :class:`ModelBlocks`.

The file opens in astropy (``fits.open``, ``WCS(hdu.header)``), ds9 and spectral-cube
(``Projection.from_hdu``) with the cube's sky coordinates.  Writes are atomic: the file
is written to a temporary file in the target directory, flushed to disk and moved into
place with :func:`os.replace`, so a failed or interrupted run never leaves a truncated
file nor overwrites a good one.

Velocities are line-of-sight velocities relative to the redshift recorded in
``meta["redshift"]`` (km/s); h_m are the dimensionless Gauss-Hermite coefficients of
Cappellari (2017, eq. 38).

FLAG bits (0 = good fit): see :mod:`cube3d.flags`, which defines and sets them.
"""

from __future__ import annotations

import abc
import datetime
import gzip
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from cube3d.durable import fsync_dir
from cube3d.errors import InputError
from cube3d.flags import (  # noqa: F401  (re-exported: the maps file documents them)
    FLAG_AT_BOUND,
    FLAG_BITS,
    FLAG_CLIPPED,
    FLAG_LOW_SNR,
    FLAG_NONFINITE,
    FLAG_NOT_CONVERGED,
    FLAG_NOT_FITTED,
)

__all__ = [
    "KinematicMaps",
    "SpectraBlocks",
    "ModelBlocks",
    "write_maps",
    "read_maps",
    "model_path_for",
    "default_unit",
    "describe",
    "FLAG_NOT_FITTED",
    "FLAG_NOT_CONVERGED",
    "FLAG_NONFINITE",
    "FLAG_AT_BOUND",
    "FLAG_LOW_SNR",
    "FLAG_CLIPPED",
    "FLAG_BITS",
]

#: names of the optional per-bin spectra HDUs, in file order.
SPECTRA_NAMES = ("LOGLAM", "SPEC", "MODEL", "WEIGHT")
#: maps stored as integers.
INT_MAPS = ("BINID", "FLAG")
_SPECTRA_NOTES = {
    "LOGLAM": "ln(rest-frame wavelength / Angstrom)",
    "SPEC": "observed spectrum per bin (row = BINID)",
    "MODEL": "best-fit model per bin (row = BINID)",
    "WEIGHT": "fit weight per pixel, 0 = masked",
}

_META_PREFIX = "CUBE3D"
_META_JSONKEYS = "JSONKEYS"
_KIND_KEY = "C3DKIND"
_KIND_VALUE = "KINEMATIC_MAPS"
_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_GH_RE = re.compile(r"^H(\d+)$")

_DESCRIPTIONS = {
    "V": "line-of-sight velocity relative to the redshift",
    "SIGMA": "line-of-sight velocity dispersion",
    "CHI2": "reduced chi2 of the best fit",
    "SNR": "median signal-to-noise ratio per pixel",
    "BINID": "bin index of each spaxel (-1 = not fitted)",
    "FLAG": "quality bitmask (0 = good; bits in header)",
}


def default_unit(name):
    """Return the BUNIT string of a map name.

    Parameters
    ----------
    name : str
        Map name, e.g. ``"V"``, ``"SIGMA_ERR"``, ``"H3"``.

    Returns
    -------
    str
        ``"km/s"`` for V, SIGMA and their errors, ``""`` (dimensionless) otherwise.
    """
    base = name[:-4] if name.endswith("_ERR") else name
    base = base[:-7] if base.endswith("_SPAXEL") else base
    return "km/s" if base in ("V", "SIGMA") else ""


def describe(name):
    """Return a one-line description of a map name (written as the HDU's ``CONTENT``)."""
    if name.endswith("_ERR"):
        return "1-sigma error of " + describe(name[:-4])
    if name.endswith("_SPAXEL"):
        return describe(name[:-7]) + ", per-spaxel fit"
    if name in _DESCRIPTIONS:
        return _DESCRIPTIONS[name]
    m = _GH_RE.match(name)
    if m:
        return f"Gauss-Hermite coefficient h{m.group(1)} (Cappellari 2017 eq. 38)"
    return name


@dataclass(frozen=True)
class KinematicMaps:
    """Kinematic maps of one cube, with WCS and provenance (immutable).

    Parameters
    ----------
    maps : dict of str -> ndarray, shape (ny, nx)
        ``"V"``, ``"SIGMA"`` (km/s), ``"H3"``, ``"H4"`` [, ``"H5"``, ``"H6"``], their
        errors ``"<NAME>_ERR"``, ``"CHI2"`` (reduced), ``"SNR"``, ``"BINID"`` (int,
        -1 = not fitted) and ``"FLAG"`` (int bitmask, see the module docstring).
        Names are upper-case FITS EXTNAMEs; all maps share one shape.
    units : dict of str -> str
        BUNIT per map name; missing names get :func:`default_unit`.
    wcs : astropy.wcs.WCS
        2-D celestial WCS of the cube (``cube_wcs.celestial``).
    meta : dict, optional
        Provenance: input file, templates, redshift, settings, ...  Keys are
        case-insensitive (letters, digits, ``_``, ``-``) and are returned lower case;
        values are JSON-serialisable.  :func:`write_maps` adds ``version``
        (``cube3d.__version__``) and ``date`` when absent.
    spectra : dict of str -> ndarray, optional
        ``"LOGLAM"`` (n_pix,) natural log of the rest-frame wavelength in Angstrom,
        ``"SPEC"``, ``"MODEL"``, ``"WEIGHT"`` (n_bin, n_pix); row ``i`` is the bin with
        ``BINID == i``.  ``WEIGHT == 0`` marks masked pixels.

    Arrays are copied and made read-only, except read-only float spectra (such as the
    memory-mapped ones of :func:`read_maps`), which are kept without a copy.
    """

    maps: dict
    units: dict
    wcs: WCS
    meta: dict = field(default_factory=dict)
    spectra: dict | None = None

    def __post_init__(self):
        if not isinstance(self.maps, dict) or not self.maps:
            raise InputError("KinematicMaps: 'maps' must be a non-empty dict of 2-D arrays")
        shape = None
        maps = {}
        for name, arr in self.maps.items():
            if not isinstance(name, str) or not _KEY_RE.match(name) or name != name.upper():
                raise InputError(f"KinematicMaps: map name {name!r} must be an upper-case FITS EXTNAME")
            if name in SPECTRA_NAMES:
                raise InputError(f"KinematicMaps: map name {name!r} is reserved for the spectra")
            a = np.array(arr, dtype=np.int32 if name in INT_MAPS else np.float64)
            if a.ndim != 2:
                raise InputError(f"KinematicMaps: map {name!r} must be 2-D, got shape {a.shape}")
            if shape is None:
                shape = a.shape
            elif a.shape != shape:
                raise InputError(f"KinematicMaps: map {name!r} has shape {a.shape}, expected {shape}")
            a.setflags(write=False)
            maps[name] = a
        object.__setattr__(self, "maps", maps)

        if not isinstance(self.wcs, WCS) or self.wcs.naxis != 2 or not self.wcs.has_celestial:
            raise InputError("KinematicMaps: 'wcs' must be a 2-D celestial astropy WCS")
        units = {k: str(v) for k, v in dict(self.units or {}).items()}
        unknown = set(units) - set(maps)
        if unknown:
            raise InputError(f"KinematicMaps: 'units' names unknown maps {sorted(unknown)}")
        for name in maps:
            units.setdefault(name, default_unit(name))
        object.__setattr__(self, "units", units)

        meta = dict(self.meta or {})
        for key in meta:
            if not isinstance(key, str) or not _KEY_RE.match(key):
                raise InputError(f"KinematicMaps: meta key {key!r} must use letters, digits, '_' or '-'")
        lowered = {k.lower(): v for k, v in meta.items()}
        if len(lowered) != len(meta):
            raise InputError("KinematicMaps: meta keys differ only by case")
        object.__setattr__(self, "meta", lowered)

        if self.spectra is not None:
            object.__setattr__(self, "spectra", _check_spectra(self.spectra))

    @property
    def shape(self):
        """(ny, nx) of the maps."""
        return next(iter(self.maps.values())).shape

    @property
    def names(self):
        """Map names in file order."""
        return tuple(self.maps)


def _check_spectra(spectra):
    if not isinstance(spectra, dict):
        raise InputError("KinematicMaps: 'spectra' must be a dict or None")
    missing = [k for k in SPECTRA_NAMES if k not in spectra]
    extra = [k for k in spectra if k not in SPECTRA_NAMES]
    if missing or extra:
        raise InputError(f"KinematicMaps: 'spectra' needs exactly {list(SPECTRA_NAMES)} (missing {missing}, extra {extra})")
    out = {}
    loglam = np.array(spectra["LOGLAM"], dtype=np.float64)
    if loglam.ndim != 1:
        raise InputError(f"KinematicMaps: spectra 'LOGLAM' must be 1-D, got shape {loglam.shape}")
    out["LOGLAM"] = loglam
    for k in SPECTRA_NAMES[1:]:
        a = np.asarray(spectra[k])
        if not (a.dtype.kind == "f" and a.dtype.itemsize in (4, 8) and not a.flags.writeable):
            # float32 stays float32 (halves the file), others become float64; read-only
            # float arrays (the memory-mapped rows of read_maps) are kept as they are
            a = np.array(a, dtype=np.float32 if a.dtype.kind == "f" and a.dtype.itemsize == 4 else np.float64)
        if a.ndim != 2 or a.shape[1] != loglam.size:
            raise InputError(f"KinematicMaps: spectra {k!r} must have shape (n_bin, {loglam.size}), got {a.shape}")
        out[k] = a
    if not out["SPEC"].shape == out["MODEL"].shape == out["WEIGHT"].shape:
        raise InputError("KinematicMaps: spectra 'SPEC', 'MODEL' and 'WEIGHT' differ in shape")
    for a in out.values():
        a.setflags(write=False)
    return out


class SpectraBlocks(abc.ABC):
    """Per-bin spectra that :func:`write_maps` writes a block of rows at a time.

    Attributes
    ----------
    loglam : ndarray, shape (n_pix,)
        ln(rest-frame wavelength / Angstrom).
    n_rows : int
        Number of bins (rows of ``SPEC``, ``MODEL``, ``WEIGHT``).
    """

    loglam: np.ndarray
    n_rows: int

    @abc.abstractmethod
    def blocks(self, name):
        """Yield the rows of ``name`` (``"SPEC"``, ``"MODEL"`` or ``"WEIGHT"``) in order, as
        arrays of shape (n, n_pix) that together have ``n_rows`` rows."""


class ModelBlocks(abc.ABC):
    """A model cube that :func:`write_maps` writes a block of spaxels at a time.

    Attributes
    ----------
    n_pix : int
        Spectral pixels of the model.
    """

    n_pix: int

    @abc.abstractmethod
    def blocks(self):
        """Yield ``(spaxels, values)``: flattened spaxel indices ``y * nx + x`` (n,) and the
        model there, (n, n_pix), cube flux units; spaxels never yielded stay NaN."""


# ---------------------------------------------------------------------------------------
# provenance <-> header
# ---------------------------------------------------------------------------------------


def _meta_to_header(meta, header):
    json_keys = []
    for key, value in meta.items():
        card = f"HIERARCH {_META_PREFIX} {key.upper()}"
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if isinstance(value, np.generic):
            value = value.item()
        scalar = isinstance(value, (str, bool, int)) or (isinstance(value, float) and math.isfinite(value))
        if scalar:
            header[card] = value
        else:
            try:
                header[card] = json.dumps(value, default=_json_default)
            except TypeError as exc:
                raise InputError(f"KinematicMaps: meta value of {key!r} is not JSON-serialisable ({exc})") from None
            json_keys.append(key.upper())
    if json_keys:
        header[f"HIERARCH {_META_PREFIX} {_META_JSONKEYS}"] = ",".join(json_keys)


def _json_default(obj):
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def _header_to_meta(header):
    prefix = _META_PREFIX + " "
    json_key = prefix + _META_JSONKEYS
    json_keys = set(filter(None, str(header.get(json_key, "")).split(",")))
    meta = {}
    for key in header.keys():
        if not key.startswith(prefix) or key == json_key:
            continue
        name = key[len(prefix):]
        value = header[key]
        if name in json_keys:
            value = json.loads(value)
        meta[name.lower()] = value
    return meta


# ---------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------


def model_path_for(path):
    """Return the model-cube path that goes with a maps file: ``<stem>_model.fits``
    (``maps.fits`` -> ``maps_model.fits``; ``maps.fits.gz`` -> ``maps_model.fits.gz``)."""
    path = Path(path)
    if path.name.lower().endswith(".fits.gz"):
        return path.with_name(path.name[: -len(".fits.gz")] + "_model.fits.gz")
    return path.with_name(path.stem + "_model.fits")


def _build_hdulist(maps):
    from cube3d import __version__

    primary = fits.PrimaryHDU()
    hdr = primary.header
    hdr[_KIND_KEY] = (_KIND_VALUE, "cube3d kinematic maps file")
    meta = dict(maps.meta)
    meta.setdefault("version", __version__)
    meta.setdefault("date", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    _meta_to_header(meta, hdr)
    hdr["MAPS"] = ",".join(maps.names)

    wcs_header = maps.wcs.to_header()
    hdus = [primary]
    for name, arr in maps.maps.items():
        h = fits.Header()
        h.update(wcs_header)
        h["BUNIT"] = (maps.units[name], "physical unit of the map")
        h["CONTENT"] = describe(name)
        if name == "FLAG":
            for bit, text in FLAG_BITS.items():
                h[f"FLAGB{int(math.log2(bit))}"] = (bit, text)
        hdus.append(fits.ImageHDU(data=np.asarray(arr), header=h, name=name))

    if maps.spectra is not None:
        for name in SPECTRA_NAMES:
            h = fits.Header()
            h["CONTENT"] = _SPECTRA_NOTES[name]
            hdus.append(fits.ImageHDU(data=np.asarray(maps.spectra[name]), header=h, name=name))
    return fits.HDUList(hdus)


def _model_header(cube_header):
    """The MODEL HDU's header from the cube's 3-D WCS (Header or WCS), checked."""
    if isinstance(cube_header, WCS):
        hdr = cube_header.to_header()
    elif isinstance(cube_header, fits.Header):
        hdr = cube_header.copy()
    else:
        raise InputError("write_maps: 'cube_header' (the cube's 3-D WCS header, Header or WCS) is required with 'model_cube'")
    for key in ("SIMPLE", "XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "EXTEND",
                "PCOUNT", "GCOUNT", "EXTNAME", "CHECKSUM", "DATASUM", "BSCALE", "BZERO"):
        hdr.remove(key, ignore_missing=True, remove_all=True)
    try:
        naxis = WCS(hdr).naxis
    except Exception as exc:
        raise InputError(f"write_maps: 'cube_header' has an invalid WCS ({exc})") from None
    if naxis != 3:
        raise InputError(f"write_maps: 'cube_header' must describe a 3-D WCS, got {naxis} axes")
    hdr["CONTENT"] = "best-fit model cube (cube flux units, rest-frame ln-lambda grid of the fit)"
    return hdr


def _model_hdulist(model_cube, cube_header, shape2d):
    if isinstance(model_cube, (fits.ImageHDU, fits.PrimaryHDU)):
        cube_header = model_cube.header if cube_header is None else cube_header
        model_cube = model_cube.data
    model = np.asarray(model_cube)
    if model.ndim != 3 or model.shape[1:] != tuple(shape2d):
        raise InputError(
            f"write_maps: 'model_cube' must have shape (n_wave, {shape2d[0]}, {shape2d[1]}), got {model.shape}"
        )
    hdr = _model_header(cube_header)
    return fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data=model.astype(np.float32), header=hdr, name="MODEL")])


def _streamed_header(name, shape, header=None):
    """Header of a float32 image HDU ``name`` of ``shape`` (NumPy order) whose data are written later."""
    hdu = fits.ImageHDU(data=np.zeros((1,) * len(shape), np.float32), header=header, name=name)
    for k, n in enumerate(reversed(shape)):
        hdu.header[f"NAXIS{k + 1}"] = int(n)
    return hdu.header


def _write_streamed(fh, header, blocks, n_values, dtype=">f4"):
    """Append one image HDU: ``header``, then the blocks (big-endian ``dtype``), padding."""
    fh.write(header.tostring().encode("ascii"))
    written = 0
    for block in blocks:
        data = np.ascontiguousarray(block, dtype=dtype)
        fh.write(data.tobytes())
        written += data.size
    if written != n_values:
        raise InputError(f"write_maps: {header.get('EXTNAME')}: the blocks held {written} values, expected {n_values}")
    fh.write(b"\0" * ((-np.dtype(dtype).itemsize * written) % 2880))


def _spectra_hdus(spectra: SpectraBlocks):
    """``(header, blocks, n_values, dtype)`` of the LOGLAM, SPEC, MODEL, WEIGHT HDUs of a
    :class:`SpectraBlocks` (LOGLAM float64, the others float32)."""
    loglam = np.asarray(spectra.loglam, dtype=np.float64)
    n_rows, n_pix = int(spectra.n_rows), loglam.size
    out = []
    for name in SPECTRA_NAMES:
        h = fits.Header()
        h["CONTENT"] = _SPECTRA_NOTES[name]
        if name == "LOGLAM":
            out.append((fits.ImageHDU(data=loglam, header=h, name=name).header, [loglam], n_pix, ">f8"))
        else:
            out.append((_streamed_header(name, (n_rows, n_pix), h), spectra.blocks(name), n_rows * n_pix, ">f4"))
    return out


def _temp_prefix(path):
    """Prefix of the temporary files written next to ``path`` by this process."""
    return f".{path.name}.{os.getpid()}."


def remove_stale_temps(path):
    """Remove temporary files left next to ``path`` by writers that no longer run (a
    ``kill -9`` or a power cut); the writer's process id is part of the name."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(\d+)\..*\.tmp$")
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        match = pattern.match(entry.name)
        if match and not _process_alive(int(match.group(1))):
            _unlink_quietly(entry)


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _new_temp(path):
    """A new temporary file next to ``path`` with the permissions a plain open() gives: (fd, name)."""
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    umask = os.umask(0)  # mkstemp creates the file 0600
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return fd, tmp


def _atomic_write(hdul, path, streamed=()):
    """Write an HDUList, then the ``streamed`` HDUs (``(header or HDU, blocks, n_values)``),
    to a temporary file next to ``path``; return the temp path.

    A name ending in ``.gz`` is written gzip-compressed (as astropy reads it back).
    """
    fd, tmp = _new_temp(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            if path.name.lower().endswith(".gz"):
                with gzip.GzipFile(filename=path.name[:-3], mode="wb", fileobj=fh) as gz:
                    _write_all(gz, hdul, streamed)
            else:
                _write_all(fh, hdul, streamed)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return tmp


def _write_all(fh, hdul, streamed):
    hdul.writeto(fh)
    for header, blocks, n_values, dtype in streamed:
        _write_streamed(fh, header, blocks, n_values, dtype)


def _model_file(model: ModelBlocks, cube_header, shape2d, target):
    """Write a model cube a block of spaxels at a time into a temporary file for ``target``.

    The data unit is first filled with NaN (so that a full disk fails here, on a plain
    write), then each block is written in place through a memory map opened and closed
    per block; a ``.gz`` target is compressed from that file afterwards.
    """
    ny, nx = shape2d
    n_pix = int(model.n_pix)
    header = _streamed_header("MODEL", (n_pix, ny, nx), _model_header(cube_header))
    fd, plain = _new_temp(target)
    try:
        with os.fdopen(fd, "wb") as fh:
            fits.HDUList([fits.PrimaryHDU()]).writeto(fh)
            fh.write(header.tostring().encode("ascii"))
            offset = fh.tell()
            plane = np.full((ny, nx), np.nan, dtype=">f4").tobytes()
            for _ in range(n_pix):
                fh.write(plane)
            fh.write(b"\0" * ((-len(plane) * n_pix) % 2880))
        for spaxels, values in model.blocks():
            _scatter(plain, offset, (n_pix, ny, nx), np.asarray(spaxels), np.asarray(values, np.float32))
        if not target.name.lower().endswith(".gz"):
            with open(plain, "rb+") as fh:
                os.fsync(fh.fileno())
            return plain
        fd_gz, packed = _new_temp(target)
        try:
            with os.fdopen(fd_gz, "wb") as out, open(plain, "rb") as src:
                with gzip.GzipFile(filename=target.name[:-3], mode="wb", fileobj=out) as gz:
                    shutil.copyfileobj(src, gz, 1 << 22)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            _unlink_quietly(packed)
            raise
        _unlink_quietly(plain)
        return packed
    except BaseException:
        _unlink_quietly(plain)
        raise


def _scatter(path, offset, shape, spaxels, values):
    """``data[:, y, x] = values.T`` in a file's data unit, through a map closed on return."""
    mm = np.memmap(path, dtype=">f4", mode="r+", offset=offset, shape=shape)
    ys, xs = np.divmod(spaxels, shape[2])
    mm[:, ys, xs] = values.T
    mm.flush()


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass



def write_maps(maps, path, overwrite=False, model_cube=None, cube_header=None, spectra=None):
    """Write kinematic maps to one FITS file, atomically.

    Parameters
    ----------
    maps : KinematicMaps
        The maps to write.
    path : str or os.PathLike
        Output FITS file.
    overwrite : bool, optional
        Replace an existing file.  When False (default) an existing ``path`` (or model
        file) raises :class:`~cube3d.errors.InputError` before any work.
    model_cube : ndarray, shape (n_wave, ny, nx), astropy ImageHDU or ModelBlocks, optional
        Best-fit model cube, written to ``<stem>_model.fits`` (see
        :func:`model_path_for`) as an image HDU ``MODEL`` with the cube's 3-D WCS.
        An HDU brings its own header; a :class:`ModelBlocks` is written a block of
        spaxels at a time (memory: one block).
    cube_header : astropy.io.fits.Header or astropy.wcs.WCS, optional
        Header (or WCS) of the input cube's data HDU; required with ``model_cube``.
    spectra : SpectraBlocks, optional
        Per-bin spectra written a block of rows at a time as the ``LOGLAM``, ``SPEC``,
        ``MODEL`` and ``WEIGHT`` HDUs (``maps.spectra`` must then be None).

    Returns
    -------
    pathlib.Path
        The maps file written.

    Notes
    -----
    Every file is written to a temporary file in the target directory, flushed with
    ``fsync`` and moved into place with :func:`os.replace`; both files are complete on
    disk before either is moved, and a failure removes the temporary files and leaves
    existing files untouched.

    Examples
    --------
    >>> import numpy as np
    >>> from astropy.wcs import WCS
    >>> w = WCS(naxis=2); w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    >>> m = KinematicMaps({"V": np.zeros((3, 4))}, {}, w)
    >>> write_maps(m, "maps.fits", overwrite=True).name  # doctest: +SKIP
    'maps.fits'
    """
    if not isinstance(maps, KinematicMaps):
        raise InputError("write_maps: 'maps' must be a KinematicMaps")
    path = Path(path)
    targets = [path] + ([model_path_for(path)] if model_cube is not None else [])
    for target in targets:
        if target.exists() and not overwrite:
            raise InputError(f"{target}: file exists (pass overwrite=True / --overwrite to replace it)")
        if target.is_dir():
            raise InputError(f"{target}: is a directory")
    if not path.parent.is_dir():
        raise InputError(f"{path.parent}: output directory does not exist")
    if spectra is not None and (maps.spectra is not None or not isinstance(spectra, SpectraBlocks)):
        raise InputError("write_maps: 'spectra' must be a SpectraBlocks, for maps without spectra of their own")
    for target in targets:
        remove_stale_temps(target)

    hdul = _build_hdulist(maps)
    streamed = _spectra_hdus(spectra) if spectra is not None else ()
    model_hdul = None
    if model_cube is not None and not isinstance(model_cube, ModelBlocks):
        model_hdul = _model_hdulist(model_cube, cube_header, maps.shape)
    elif model_cube is not None:
        _model_header(cube_header)  # checked before anything is written

    temps = []
    try:
        temps.append(_atomic_write(hdul, path, streamed) if streamed else _atomic_write(hdul, path))
        if model_hdul is not None:
            temps.append(_atomic_write(model_hdul, targets[1]))
        elif model_cube is not None:
            temps.append(_model_file(model_cube, cube_header, maps.shape, targets[1]))
        for tmp, target in zip(temps, targets):
            os.replace(tmp, target)
    finally:
        for tmp in temps:
            _unlink_quietly(tmp)
    fsync_dir(path.parent)
    return path


# ---------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------


def read_maps(path):
    """Read a kinematic maps file written by :func:`write_maps`.

    Parameters
    ----------
    path : str or os.PathLike
        The maps FITS file.

    Returns
    -------
    KinematicMaps
        The maps in memory; the per-bin spectra (``LOGLAM``, ``SPEC``, ``MODEL``,
        ``WEIGHT``), when present, memory-mapped and read-only, so that a whole cube's
        spectra (GB) are read from disk only where used (one bin's plot reads one row).
        Being mapped, they keep the file's big-endian byte order, which JAX refuses:
        ``numpy.asarray(rows, dtype=float)`` gives a native copy of the rows needed.

    Raises
    ------
    cube3d.errors.InputError
        When the file is missing, not FITS, or holds no 2-D map HDU.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        hdul = fits.open(path, memmap=True)
    except Exception as exc:  # astropy raises OSError/ValueError/TypeError for junk
        raise InputError(f"{path}: not a readable FITS file ({type(exc).__name__}: {exc})") from None
    with hdul:
        meta = _header_to_meta(hdul[0].header)
        maps, units, wcs, spectra = {}, {}, None, {}
        for hdu in hdul[1:]:
            name = (hdu.name or "").upper()
            if not isinstance(hdu, fits.ImageHDU) or hdu.data is None:
                continue
            if name in SPECTRA_NAMES:
                rows = hdu.data  # memory-mapped; stays readable after the file is closed
                rows.setflags(write=False)
                spectra[name] = rows
                continue
            if hdu.data.ndim != 2:
                continue
            maps[name] = np.array(hdu.data)
            units[name] = str(hdu.header.get("BUNIT", default_unit(name)))
            if wcs is None:
                try:
                    wcs = WCS(hdu.header).celestial
                except Exception as exc:
                    raise InputError(f"{path}[{name}]: invalid WCS ({exc})") from None
        if not maps:
            raise InputError(f"{path}: no 2-D map HDU found (not a cube3d maps file?)")
        if not wcs.has_celestial:
            raise InputError(f"{path}[{next(iter(maps))}]: no celestial WCS")
    shapes = {k: v.shape for k, v in maps.items()}
    if len(set(shapes.values())) != 1:
        raise InputError(f"{path}: maps differ in shape {shapes}")
    spec = spectra if len(spectra) == len(SPECTRA_NAMES) else None
    try:
        return KinematicMaps(maps=maps, units=units, wcs=wcs, meta=meta, spectra=spec)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
