"""Copy the MaNGA DAP's stellar-kinematics test data into this folder.

Source: the ``sdss-mangadap`` 4.5.0 wheel from PyPI (BSD 3-clause), e.g.::

    pip download sdss-mangadap==4.5.0 --no-deps -d /tmp/dap
    python data/manga_dap/make_manga_dap_data.py /tmp/dap/sdss_mangadap-4.5.0-py3-none-any.whl

Writes
------
MaNGA_test_spectra.fits.gz
    ``mangadap/data/tests/MaNGA_test_spectra.fits.gz``, copied byte for byte.
MILESHC.fits.gz
    The 42 spectra of ``mangadap/data/spectral_templates/miles_cluster/MILES_cluster_group_*.fits``
    (the DAP's ``MILESHC`` library, its stellar-kinematics default), in file-name order, stacked
    into one (42, 4300) float32 primary image (the float64 values rounded to float32, relative
    change below 6e-8) with the linear air-wavelength axis of the originals (3540.5 A + 0.9 A per
    pixel) and a ``NAME`` table of the original file names, gzipped with a zero time stamp
    (so that reruns give the same bytes).
"""

import argparse
import gzip
import io
import zipfile
from pathlib import Path

import numpy as np
from astropy.io import fits

SPECTRA = "mangadap/data/tests/MaNGA_test_spectra.fits.gz"
TEMPLATES = "mangadap/data/spectral_templates/miles_cluster/"


def _members(wheel):
    """Name -> bytes of the files of the wheel this script needs."""
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n == SPECTRA or (n.startswith(TEMPLATES) and n.endswith(".fits"))]
        return {n: zf.read(n) for n in sorted(names)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", help="sdss_mangadap-4.5.0-py3-none-any.whl")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent), help="output folder (default: this one)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    files = _members(args.wheel)
    (out / "MaNGA_test_spectra.fits.gz").write_bytes(files.pop(SPECTRA))

    flux, names, header0 = [], [], None
    for name, blob in files.items():
        with fits.open(io.BytesIO(blob)) as hdul:
            hdr = hdul[0].header
            if header0 is None:
                header0 = hdr
            if (hdr["CRVAL1"], hdr["NAXIS1"]) != (header0["CRVAL1"], header0["NAXIS1"]):
                raise ValueError(f"{name}: wavelength grid differs from the first template")
            flux.append(np.asarray(hdul[0].data, dtype=np.float64))
            names.append(Path(name).name)
    if len(flux) != 42:
        raise ValueError(f"expected 42 MILESHC templates, found {len(flux)}")
    hdr = fits.Header()
    hdr["CTYPE1"] = ("AWAV", "air wavelength")
    hdr["CUNIT1"] = "Angstrom"
    hdr["CRPIX1"] = 1.0
    hdr["CRVAL1"] = float(header0["CRVAL1"])
    hdr["CDELT1"] = 0.9
    hdr["FWHM"] = (float(header0["FWHM"]), "FWHM of the spectral resolution (Angstrom)")
    hdr["TPLLIB"] = ("MILESHC", "MaNGA DAP library key (miles_cluster)")
    hdr["HISTORY"] = "sdss-mangadap 4.5.0 " + TEMPLATES + "MILES_cluster_group_*.fits"
    names_hdu = fits.BinTableHDU.from_columns([fits.Column(name="NAME", format="32A", array=np.array(names))],
                                              name="NAME")
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(np.array(flux, dtype=np.float32), hdr), names_hdu]).writeto(buf)
    # gzip with a fixed time stamp, so that reruns give the same bytes
    (out / "MILESHC.fits.gz").write_bytes(gzip.compress(buf.getvalue(), compresslevel=9, mtime=0))


if __name__ == "__main__":
    main()
