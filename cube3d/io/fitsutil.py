"""Small FITS helpers of the cube reader: HDU look-up, data access, errors naming file and HDU."""

import contextlib
import warnings

import numpy as np
from astropy.io import fits

from cube3d.errors import InputError


def where(path, hdu_name):
    return f"{path}[{hdu_name}]"


def hdu_label(hdul, key):
    hdu = hdul[key]
    return hdu.name if hdu.name else str(key)


def get_hdu(hdul, key, path, role):
    """HDU ``key`` (name or index) of ``hdul``, or InputError naming file and HDU."""
    try:
        return hdul[key]
    except (KeyError, IndexError):
        raise InputError(f"{path}: no HDU {key!r} ({role})") from None


def has_hdu(hdul, name):
    return any(h.name.upper() == name for h in hdul)


def is_cube_hdu(hdu):
    return isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU)) and hdu.header.get("NAXIS", 0) == 3


@contextlib.contextmanager
def reading(path):
    """Collect astropy's warnings while a file is read: dropped when the read fails with
    an :class:`InputError` (its one line says it all), repeated with the file named
    when it succeeds."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        text = str(w.message)
        warnings.warn(text if str(path) in text else f"{path}: {text}", w.category, stacklevel=3)


def read_data(hdu, path, label):
    """The HDU's data array (memory-mapped where possible), errors as InputError."""
    try:
        data = hdu.data
    except Exception as exc:  # truncated or corrupt data unit
        raise InputError(f"{where(path, label)}: cannot read data ({exc})") from None
    if data is None:
        raise InputError(f"{where(path, label)}: HDU has no data")
    return data


def to_cube(data, np_spec_axis, flip, dtype=np.float64):
    """One C-ordered copy with the spectral axis first (and increasing wavelength)."""
    a = np.moveaxis(data, np_spec_axis, 0)
    if flip:
        a = a[::-1]
    return np.array(a, dtype=dtype, order="C")


def index_of(hdul, hdu):
    for i, h in enumerate(hdul):
        if h is hdu:
            return i
    return None


def check_same_shape(hdu, shape, path, label, role):
    if tuple(hdu.shape) != tuple(shape):
        raise InputError(
            f"{where(path, label)}: {role} shape {tuple(hdu.shape)} differs from the "
            f"flux shape {tuple(shape)}"
        )
