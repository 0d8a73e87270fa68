"""Tests of cube3d.datasets and the bundled demo data in data/ (installed as cube3d.demo_data)."""

from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from cube3d import datasets
from cube3d.errors import InputError

# the cut ranges of data/make_demo_data.py (0-based, end exclusive), see data/README.md
X0, Y0, K0, NSIDE, NWAVE = 13, 4, 320, 20, 681


def test_files_exist_and_small():
    cube = datasets.demo_cube_path()
    tdir = datasets.demo_templates_dir()
    lsf = datasets.demo_lsf_path()
    assert cube.is_file() and lsf.is_file()
    temps = sorted(tdir.glob("MILESHC_*.fits"))
    assert len(temps) == 8
    total = sum(p.stat().st_size for p in datasets.data_dir().rglob("*") if p.is_file())
    assert total <= 5 * 1024**2
    assert cube.stat().st_size <= 3 * 1024**2


def test_cutout_layout_and_wcs():
    with fits.open(datasets.demo_cube_path(), checksum=True) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "DATA", "STAT", "DQ"]
        assert hdul[0].data is None and hdul[0].header["INSTRUME"].strip() == "MUSE"
        assert hdul["DATA"].data.shape == (NWAVE, NSIDE, NSIDE)
        assert hdul["DATA"].data.dtype == np.dtype(">f4") and hdul["STAT"].data.dtype == np.dtype(">f4")
        assert hdul["DQ"].data.dtype == np.uint8
        assert hdul["DATA"].header["BUNIT"] == "10**(-20)*erg/s/cm**2/Angstrom"
        w = WCS(hdul["DATA"].header)
        assert w.wcs.ctype[2] == "AWAV"
        # spectral axis: 1.25 A pixels from 4749.890625 A + K0 pixels
        lam = w.spectral.pixel_to_world(np.arange(NWAVE)).to_value("Angstrom")
        np.testing.assert_allclose(lam, 4749.890625 + 1.25 * (K0 + np.arange(NWAVE)), rtol=0, atol=1e-6)
        assert lam[0] < 5150 < 6000 < lam[-1] + 1.25
        # variances positive where the data are finite
        stat = hdul["STAT"].data
        good = np.isfinite(hdul["DATA"].data) & np.isfinite(stat)
        assert good.mean() > 0.99 and np.all(stat[good] > 0)


def test_cutout_centred_on_galaxy():
    img = np.nanmedian(fits.getdata(datasets.demo_cube_path(), "DATA"), axis=0)
    iy, ix = np.unravel_index(np.nanargmax(img), img.shape)
    assert 5 <= iy < NSIDE - 5 and 5 <= ix < NSIDE - 5


def test_cutout_matches_full_cube(shared_data):
    full = shared_data / "cubes" / "muse_abell478_minicube.fits"
    with fits.open(full) as f, fits.open(datasets.demo_cube_path()) as c:
        wf, wc = WCS(f["DATA"].header), WCS(c["DATA"].header)
        # same pixels, same values
        for name in ("DATA", "STAT", "DQ"):
            np.testing.assert_array_equal(
                c[name].data, f[name].data[K0:K0 + NWAVE, Y0:Y0 + NSIDE, X0:X0 + NSIDE]
            )
    # same sky coordinates and wavelengths for the same physical pixel
    pix = np.array([[0, 0, 0], [19, 0, 7], [3, 17, 680], [10.5, 9.25, 100.0]])
    world_c = wc.wcs_pix2world(pix, 0)
    world_f = wf.wcs_pix2world(pix + [X0, Y0, K0], 0)
    np.testing.assert_allclose(world_c, world_f, rtol=1e-12, atol=1e-12)
    sky_c = wc.celestial.pixel_to_world(pix[:, 0], pix[:, 1])
    sky_f = wf.celestial.pixel_to_world(pix[:, 0] + X0, pix[:, 1] + Y0)
    assert np.max(sky_c.separation(sky_f).to_value("mas")) < 1e-3


def test_templates_truncated_and_wcs_valid(shared_data):
    for p in sorted(datasets.demo_templates_dir().glob("MILESHC_*.fits")):
        with fits.open(p) as t, fits.open(shared_data / "templates" / "mileshc_v2" / p.name) as o:
            h = t[0].header
            lam = h["CRVAL1"] + h["CDELT1"] * (np.arange(h["NAXIS1"]) + 1 - h["CRPIX1"])
            assert h["CD1_1"] == h["CDELT1"] == 0.9
            assert lam[0] <= 4500 and lam[-1] >= 6000
            ho = o[0].header
            lam_o = ho["CRVAL1"] + ho["CDELT1"] * (np.arange(ho["NAXIS1"]) + 1 - ho["CRPIX1"])
            i0 = int(np.argmin(abs(lam_o - lam[0])))
            np.testing.assert_array_equal(t[0].data, o[0].data[i0:i0 + lam.size])
            np.testing.assert_array_equal(t["IVAR"].data, o["IVAR"].data[i0:i0 + lam.size])
            np.testing.assert_allclose(lam, lam_o[i0:i0 + lam.size], rtol=0, atol=1e-9)


def test_lsf_table():
    tab = np.loadtxt(datasets.demo_lsf_path())
    assert tab.shape[1] == 2
    assert tab[0, 0] < 5150 and tab[-1, 0] > 6000
    assert np.all((tab[:, 1] > 1.5) & (tab[:, 1] < 4.0))


def test_missing_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("CUBE3D_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="nowhere"):
        datasets.demo_cube_path()


def test_missing_file(monkeypatch, tmp_path):
    monkeypatch.setenv("CUBE3D_DATA", str(tmp_path))
    for fn, name in [(datasets.demo_cube_path, "muse_a478_cutout.fits"),
                     (datasets.demo_templates_dir, "templates"),
                     (datasets.demo_lsf_path, "MUSE-WFM.lsf")]:
        with pytest.raises(InputError, match=name):
            fn()


def test_installed_data_are_the_repo_data(monkeypatch, repo_data):
    """Without CUBE3D_DATA the files come from the package cube3d.demo_data, which is data/ of the
    source tree (editable install) or a copy of it (wheel): same names, same bytes."""
    monkeypatch.delenv("CUBE3D_DATA", raising=False)
    root = datasets.data_dir()
    assert root == Path(resources.files(datasets.DATA_PACKAGE))
    assert datasets.demo_cube_path() == root / "muse_a478_cutout.fits"
    shipped = ["muse_a478_cutout.fits", "lsf/MUSE-WFM.lsf"] + [
        f"templates/{p.name}" for p in sorted((repo_data / "templates").glob("*.fits"))]
    assert len(shipped) == 10
    for name in shipped:
        assert (root / name).read_bytes() == (repo_data / name).read_bytes(), name


def test_data_found_from_any_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("CUBE3D_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    assert datasets.demo_cube_path().is_file()
    assert datasets.demo_cube_path().is_absolute()


def test_missing_package(monkeypatch):
    monkeypatch.delenv("CUBE3D_DATA", raising=False)
    monkeypatch.setattr(datasets, "DATA_PACKAGE", "cube3d.no_such_data")
    with pytest.raises(InputError, match="cube3d.no_such_data.*CUBE3D_DATA"):
        datasets.demo_cube_path()


def test_missing_file_in_package(monkeypatch, tmp_path):
    monkeypatch.delenv("CUBE3D_DATA", raising=False)
    monkeypatch.setattr(datasets, "_package_data_dir", lambda: tmp_path / "site-packages" / "demo_data")
    with pytest.raises(InputError, match="site-packages"):
        datasets.demo_lsf_path()
