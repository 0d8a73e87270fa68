"""Tests of cube3d.templates: loading FITS template libraries."""

import numpy as np
import pytest
from astropy.io import fits

from cube3d.errors import InputError
from cube3d.templates import TemplateLibrary, load_templates


def _write(path, data, **cards):
    hdu = fits.PrimaryHDU(np.asarray(data))
    for key, value in cards.items():
        hdu.header["DC-FLAG" if key == "DC_FLAG" else key] = value
    hdu.writeto(path)
    return path


def _linear_dir(tmp_path, n=3, npix=50):
    rng = np.random.default_rng(0)
    flux = rng.uniform(1, 2, (n, npix))
    for i in range(n):
        _write(tmp_path / f"t{i:02d}.fits", flux[i], CRVAL1=4000.0, CDELT1=2.0, CRPIX1=1.0)
    return flux


def test_linear_directory(tmp_path):
    flux = _linear_dir(tmp_path)
    lib = load_templates(tmp_path, fwhm=3.0, air=False)
    assert isinstance(lib, TemplateLibrary)
    np.testing.assert_allclose(lib.flux, flux)
    np.testing.assert_allclose(lib.wave, 4000.0 + 2.0 * np.arange(50))
    assert lib.names == ("t00", "t01", "t02")
    assert lib.fwhm == 3.0 and lib.air is False and lib.n_templates == 3
    assert lib.flux.dtype == np.float64


def test_crpix_cd_and_units(tmp_path):
    _write(tmp_path / "a.fits", np.ones(10), CRVAL1=500.0, CD1_1=0.1, CRPIX1=3.0, CUNIT1="nm")
    lib = load_templates(tmp_path / "a.fits")
    np.testing.assert_allclose(lib.wave, 10 * (500.0 + 0.1 * (np.arange(10) - 2.0)))


def test_log_wcs_forms(tmp_path):
    _write(tmp_path / "wlog.fits", np.ones(20), CTYPE1="WAVE-LOG", CRVAL1=4000.0, CDELT1=0.4, CRPIX1=1.0)
    lib = load_templates(tmp_path / "wlog.fits")
    np.testing.assert_allclose(lib.wave, 4000.0 * np.exp(0.4 * np.arange(20) / 4000.0))
    _write(tmp_path / "dc.fits", np.ones(20), CRVAL1=3.6, CDELT1=1e-4, CRPIX1=1.0, DC_FLAG=1)
    lib = load_templates(tmp_path / "dc.fits")
    np.testing.assert_allclose(lib.wave, 10 ** (3.6 + 1e-4 * np.arange(20)))


def test_list_of_files_and_pattern(tmp_path):
    _linear_dir(tmp_path)
    lib = load_templates([tmp_path / "t02.fits", tmp_path / "t00.fits"])
    assert lib.names == ("t02", "t00")
    assert load_templates(tmp_path, pattern="t01*").names == ("t01",)


def test_vector_fwhm(tmp_path):
    _linear_dir(tmp_path)
    lib = load_templates(tmp_path, fwhm=np.full(50, 2.0))
    assert lib.fwhm.shape == (50,)
    with pytest.raises(InputError, match="--template-fwhm"):
        load_templates(tmp_path, fwhm=np.full(49, 2.0))
    with pytest.raises(InputError, match="--template-fwhm"):
        load_templates(tmp_path, fwhm=0.0)


def test_empty_directory(tmp_path):
    with pytest.raises(InputError, match=f"--templates.*{tmp_path.name}"):
        load_templates(tmp_path)


def test_missing_path(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_templates(tmp_path / "nope")
    with pytest.raises(InputError, match="no such file"):
        load_templates([tmp_path / "nope.fits"])


def test_unreadable_file(tmp_path):
    _linear_dir(tmp_path)
    (tmp_path / "broken.fits").write_bytes(b"this is not a FITS file" * 200)
    with pytest.raises(InputError, match="broken.fits"):
        load_templates(tmp_path)


def test_different_grids(tmp_path):
    _linear_dir(tmp_path)
    _write(tmp_path / "t99.fits", np.ones(50), CRVAL1=4001.0, CDELT1=2.0, CRPIX1=1.0)
    with pytest.raises(InputError, match="t99.fits.*different wavelength grid"):
        load_templates(tmp_path)


def test_not_one_dimensional_or_nonfinite_or_no_wcs(tmp_path):
    _write(tmp_path / "img.fits", np.ones((4, 5)), CRVAL1=1.0, CDELT1=1.0)
    with pytest.raises(InputError, match="img.fits.*1-D"):
        load_templates(tmp_path / "img.fits")
    _write(tmp_path / "nan.fits", np.array([1.0, np.nan, 2.0]), CRVAL1=1.0, CDELT1=1.0)
    with pytest.raises(InputError, match="nan.fits.*non-finite"):
        load_templates(tmp_path / "nan.fits")
    _write(tmp_path / "nowcs.fits", np.ones(5))
    with pytest.raises(InputError, match="nowcs.fits.*wavelength"):
        load_templates(tmp_path / "nowcs.fits")


def test_real_mileshc(shared_data):
    lib = load_templates(shared_data / "templates" / "mileshc_v2")
    assert lib.flux.shape == (63, 4300)
    assert lib.wave[0] == pytest.approx(3540.5) and lib.wave[-1] == pytest.approx(7409.6)
    np.testing.assert_allclose(np.diff(lib.wave), 0.9, rtol=1e-9)
    assert lib.air is True and lib.fwhm == 2.51  # header says WAVE; MILES is in air
    assert np.all(np.median(lib.flux, axis=1) > 0)


def test_real_miles_ssp(shared_data):
    lib = load_templates(shared_data / "templates" / "miles_ssp")
    assert lib.flux.shape == (150, 4300)
    assert lib.names[0].startswith("Mun1.30Z")
    np.testing.assert_allclose(lib.wave[[0, -1]], [3540.5, 7409.6])
