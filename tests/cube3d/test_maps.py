"""Tests of cube3d.maps: KinematicMaps, write_maps / read_maps round trip, atomic writes."""

import dataclasses
import os

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

import cube3d
from cube3d import maps as mapsmod
from cube3d.errors import InputError
from cube3d.maps import KinematicMaps, model_path_for, read_maps, write_maps

NY, NX, NW = 5, 7, 11


def cube_wcs3():
    """A MUSE-like 3-D WCS (RA---TAN, DEC--TAN, AWAV) with a rotated CD matrix."""
    w = WCS(naxis=3)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN", "AWAV"]
    w.wcs.cunit = ["deg", "deg", "Angstrom"]
    w.wcs.crval = [63.355417, 10.46556, 4749.890625]
    w.wcs.crpix = [4.3, 2.7, 1.0]
    c, s = np.cos(0.3), np.sin(0.3)
    d = 0.2 / 3600
    w.wcs.cd = [[-d * c, d * s, 0.0], [d * s, d * c, 0.0], [0.0, 0.0, 1.25]]
    w.wcs.radesys = "ICRS"
    w.wcs.set()
    return w


def make_maps(seed=0, with_spectra=True, meta=None):
    rng = np.random.default_rng(seed)
    m = {
        "V": rng.normal(0, 100, (NY, NX)),
        "SIGMA": rng.uniform(50, 300, (NY, NX)),
        "H3": rng.normal(0, 0.05, (NY, NX)),
        "H4": rng.normal(0, 0.05, (NY, NX)),
        "V_ERR": rng.uniform(1, 10, (NY, NX)),
        "SIGMA_ERR": rng.uniform(1, 10, (NY, NX)),
        "H3_ERR": rng.uniform(0.01, 0.1, (NY, NX)),
        "H4_ERR": rng.uniform(0.01, 0.1, (NY, NX)),
        "CHI2": rng.uniform(0.8, 1.2, (NY, NX)),
        "SNR": rng.uniform(1, 50, (NY, NX)),
        "BINID": np.arange(NY * NX).reshape(NY, NX) % 6 - 1,
        "FLAG": np.zeros((NY, NX), int),
    }
    m["V"][0, 0] = np.nan
    m["FLAG"][0, 0] = mapsmod.FLAG_NOT_FITTED
    spectra = None
    if with_spectra:
        npix = 13
        spectra = {
            "LOGLAM": np.linspace(np.log(4800.0), np.log(5400.0), npix),
            "SPEC": rng.normal(1, 0.1, (5, npix)),
            "MODEL": rng.normal(1, 0.1, (5, npix)),
            "WEIGHT": (rng.uniform(size=(5, npix)) > 0.2).astype(float),
        }
    if meta is None:
        meta = {
            "input_file": "/very/long/path/" + "x" * 150 + "/cube.fits",
            "templates": [f"MILESHC_{i:02d}.fits" for i in range(20)],
            "redshift": 0.0881,
            "settings": {"moments": 4, "degree": 8, "mask": [[5570.0, 5590.0]]},
            "n_bins": 5,
            "clipping": True,
        }
    return KinematicMaps(maps=m, units={"SNR": ""}, wcs=cube_wcs3().celestial, meta=meta, spectra=spectra)


def assert_same_sky(w1, w2, shape):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    c1 = w1.pixel_to_world(xx.ravel(), yy.ravel())
    c2 = w2.pixel_to_world(xx.ravel(), yy.ravel())
    sep = c1.separation(c2).to_value("arcsec")
    assert np.max(sep) < 1e-6


def test_round_trip(tmp_path):
    m = make_maps()
    out = write_maps(m, tmp_path / "maps.fits")
    assert out == tmp_path / "maps.fits"
    r = read_maps(out)
    assert r.names == m.names
    for k in m.maps:
        np.testing.assert_array_equal(r.maps[k], m.maps[k])
        assert r.units[k] == m.units[k]
    assert r.maps["BINID"].dtype.kind == "i" and r.maps["FLAG"].dtype.kind == "i"
    for k in mapsmod.SPECTRA_NAMES:
        np.testing.assert_array_equal(r.spectra[k], m.spectra[k])
        assert r.spectra[k].dtype.type is np.float64  # FITS byte order (memory-mapped), double precision
    for k, v in m.meta.items():
        assert r.meta[k] == v
    assert r.meta["version"] == cube3d.__version__
    assert "date" in r.meta
    assert_same_sky(r.wcs, m.wcs, m.shape)


def test_float32_spectra_kept(tmp_path):
    m = make_maps()
    sp = {k: (v if k == "LOGLAM" else v.astype(np.float32)) for k, v in m.spectra.items()}
    m32 = KinematicMaps(dict(m.maps), {}, m.wcs, meta={}, spectra=sp)
    r = read_maps(write_maps(m32, tmp_path / "m.fits"))
    assert r.spectra["SPEC"].dtype.type is np.float32 and r.spectra["LOGLAM"].dtype == np.float64
    np.testing.assert_array_equal(r.spectra["MODEL"], sp["MODEL"])


def test_read_maps_maps_the_spectra_without_reading_them(tmp_path):
    """A whole cube's per-bin spectra are GB: read_maps memory-maps them (read-only), so
    reading the file and one bin's row costs a small fraction of their size."""
    import tracemalloc

    m = make_maps()
    n_bin, n_pix = 3000, 1000  # 3 x 12 MB in float32
    rng = np.random.default_rng(3)
    sp = {"LOGLAM": np.linspace(8.4, 8.7, n_pix)}
    for k in ("SPEC", "MODEL", "WEIGHT"):
        sp[k] = rng.normal(size=(n_bin, n_pix)).astype(np.float32)
    path = write_maps(KinematicMaps(dict(m.maps), {}, m.wcs, meta={}, spectra=sp), tmp_path / "big.fits")
    tracemalloc.start()
    r = read_maps(path)
    row = np.array(r.spectra["MODEL"][1234])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    size = sum(sp[k].nbytes for k in ("SPEC", "MODEL", "WEIGHT"))
    print(f"read_maps peak {peak / 1e6:.2f} MB for {size / 1e6:.0f} MB of spectra")
    assert peak < 0.05 * size
    np.testing.assert_array_equal(row, sp["MODEL"][1234])
    np.testing.assert_array_equal(r.spectra["WEIGHT"], sp["WEIGHT"])
    with pytest.raises(ValueError):
        r.spectra["SPEC"][0, 0] = 1.0  # read-only: the file cannot be changed through it
    assert not r.spectra["SPEC"].dtype.isnative                 # the file's byte order, as documented
    assert np.asarray(r.spectra["SPEC"][:2], dtype=float).dtype.isnative


def test_units_defaults():
    m = make_maps(with_spectra=False)
    assert m.units["V"] == "km/s" and m.units["SIGMA_ERR"] == "km/s"
    assert m.units["H3"] == "" and m.units["CHI2"] == ""


def test_file_layout_in_astropy(tmp_path):
    m = make_maps()
    path = write_maps(m, tmp_path / "maps.fits")
    with fits.open(path) as hdul:
        assert hdul[0].data is None
        assert hdul[0].header["HIERARCH CUBE3D REDSHIFT"] == pytest.approx(0.0881)
        assert hdul[0].header["HIERARCH CUBE3D INPUT_FILE"] == m.meta["input_file"]
        names = [h.name for h in hdul[1:]]
        assert names == list(m.names) + ["LOGLAM", "SPEC", "MODEL", "WEIGHT"]
        for name in m.names:
            h = hdul[name].header
            assert h["BUNIT"] == m.units[name]
            assert h["CONTENT"]
            assert_same_sky(WCS(h), m.wcs, m.shape)
        assert hdul["V"].header["BUNIT"] == "km/s"
        assert hdul["FLAG"].header["FLAGB0"] == mapsmod.FLAG_NOT_FITTED


def test_spectral_cube_projection(tmp_path):
    from astropy import units as u
    from spectral_cube import Projection

    m = make_maps(with_spectra=False)
    path = write_maps(m, tmp_path / "maps.fits")
    with fits.open(path) as hdul:
        for name in ("V", "SIGMA", "H3"):
            proj = Projection.from_hdu(hdul[name])
            assert proj.unit == (u.km / u.s if name != "H3" else u.dimensionless_unscaled)
            np.testing.assert_array_equal(proj.value, m.maps[name])
            assert_same_sky(proj.wcs, m.wcs, m.shape)
            # one pixel, by hand: pixel (x=3, y=2) has the same sky position
            c = proj.wcs.pixel_to_world(3, 2)
            assert c.separation(m.wcs.pixel_to_world(3, 2)).to_value("arcsec") < 1e-6


def test_overwrite_refused_before_any_work(tmp_path, monkeypatch):
    path = tmp_path / "maps.fits"
    path.write_bytes(b"precious")

    def boom(*a, **k):
        raise AssertionError("work started")

    monkeypatch.setattr(mapsmod, "_build_hdulist", boom)
    with pytest.raises(InputError, match=str(path)):
        write_maps(make_maps(), path)
    assert path.read_bytes() == b"precious"


def test_overwrite_true_replaces(tmp_path):
    path = tmp_path / "maps.fits"
    write_maps(make_maps(seed=1), path)
    write_maps(make_maps(seed=2), path, overwrite=True)
    np.testing.assert_array_equal(read_maps(path).maps["SIGMA"], make_maps(seed=2).maps["SIGMA"])


def test_failure_during_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "maps.fits"
    write_maps(make_maps(seed=1), path)
    before = path.read_bytes()
    real_writeto = fits.HDUList.writeto

    def half_write(self, fileobj, *a, **k):
        fileobj.write(b"SIMPLE  =                    T" + b" " * 500)  # a truncated start
        raise OSError("disk full (injected)")

    monkeypatch.setattr(fits.HDUList, "writeto", half_write)
    with pytest.raises(OSError, match="injected"):
        write_maps(make_maps(seed=2), path, overwrite=True)
    monkeypatch.setattr(fits.HDUList, "writeto", real_writeto)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["maps.fits"]


def test_failure_during_replace_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "maps.fits"

    def bad_replace(src, dst):
        raise OSError("replace failed (injected)")

    monkeypatch.setattr(mapsmod.os, "replace", bad_replace)
    with pytest.raises(OSError, match="injected"):
        write_maps(make_maps(), path)
    assert os.listdir(tmp_path) == []


def test_model_cube(tmp_path):
    m = make_maps(with_spectra=False)
    w3 = cube_wcs3()
    rng = np.random.default_rng(3)
    model = rng.normal(size=(NW, NY, NX)).astype(np.float32)
    header = w3.to_header()
    header["BUNIT"] = "10**(-20)*erg/s/cm**2/Angstrom"
    path = write_maps(m, tmp_path / "maps.fits", model_cube=model, cube_header=header)
    mpath = model_path_for(path)
    assert mpath == tmp_path / "maps_model.fits"
    with fits.open(mpath) as hdul:
        np.testing.assert_array_equal(hdul["MODEL"].data, model)
        w = WCS(hdul["MODEL"].header)
        assert w.naxis == 3 and w.wcs.ctype[2] == "AWAV"
        assert hdul["MODEL"].header["BUNIT"] == header["BUNIT"]
        pix = np.array([[0, 0, 0], [6, 4, 10], [2.5, 1.5, 3]])
        np.testing.assert_allclose(w.wcs_pix2world(pix, 0), w3.wcs_pix2world(pix, 0), rtol=1e-12)
    # an ImageHDU carries its own header
    hdu = fits.ImageHDU(model, header=header)
    write_maps(m, path, overwrite=True, model_cube=hdu)
    with fits.open(mpath) as hdul:
        assert WCS(hdul["MODEL"].header).wcs.ctype[2] == "AWAV"


def test_model_file_exists_refused(tmp_path):
    path = tmp_path / "maps.fits"
    model_path_for(path).write_bytes(b"old model")
    model = np.zeros((NW, NY, NX))
    with pytest.raises(InputError, match="maps_model.fits"):
        write_maps(make_maps(), path, model_cube=model, cube_header=cube_wcs3())
    assert not path.exists()
    assert model_path_for(path).read_bytes() == b"old model"


def test_model_failure_leaves_maps_untouched(tmp_path, monkeypatch):
    path = tmp_path / "maps.fits"
    write_maps(make_maps(seed=1), path)
    before = path.read_bytes()
    calls = []
    real = mapsmod._atomic_write

    def second_fails(hdul, target):
        calls.append(target)
        if len(calls) == 2:
            raise OSError("model write failed (injected)")
        return real(hdul, target)

    monkeypatch.setattr(mapsmod, "_atomic_write", second_fails)
    with pytest.raises(OSError, match="injected"):
        write_maps(make_maps(seed=2), path, overwrite=True, model_cube=np.zeros((NW, NY, NX)), cube_header=cube_wcs3())
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["maps.fits"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(model_cube=np.zeros((NW, NY + 1, NX)), cube_header=None), "model_cube"),
        (dict(model_cube=np.zeros((NW, NY, NX)), cube_header=None), "cube_header"),
        (dict(model_cube=np.zeros((NW, NY, NX)), cube_header="junk"), "cube_header"),
    ],
)
def test_model_bad_input(tmp_path, kwargs, match):
    with pytest.raises(InputError, match=match):
        write_maps(make_maps(), tmp_path / "m.fits", **kwargs)
    assert os.listdir(tmp_path) == []


def test_model_header_not_3d(tmp_path):
    with pytest.raises(InputError, match="3-D"):
        write_maps(make_maps(), tmp_path / "m.fits", model_cube=np.zeros((NW, NY, NX)), cube_header=cube_wcs3().celestial)
    assert os.listdir(tmp_path) == []


def test_missing_output_directory(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        write_maps(make_maps(), tmp_path / "nope" / "maps.fits")


def test_immutable():
    m = make_maps()
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.meta = {}
    with pytest.raises(ValueError):
        m.maps["V"][1, 1] = 0.0
    with pytest.raises(ValueError):
        m.spectra["SPEC"][0, 0] = 0.0


def test_input_arrays_copied():
    v = np.zeros((NY, NX))
    m = KinematicMaps({"V": v}, {}, cube_wcs3().celestial)
    v[0, 0] = 5.0
    assert m.maps["V"][0, 0] == 0.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(maps={}), "maps"),
        (dict(maps={"V": np.zeros(3)}), "2-D"),
        (dict(maps={"V": np.zeros((2, 2)), "SIGMA": np.zeros((2, 3))}), "SIGMA"),
        (dict(maps={"v": np.zeros((2, 2))}), "upper-case"),
        (dict(maps={"SPEC": np.zeros((2, 2))}), "reserved"),
        (dict(units={"NOPE": "km/s"}), "units"),
        (dict(wcs=WCS(naxis=2)), "celestial"),
        (dict(wcs=cube_wcs3()), "celestial"),
        (dict(meta={"bad key": 1}), "meta key"),
        (dict(meta={"a": 1, "A": 2}), "case"),
        (dict(spectra={"LOGLAM": np.zeros(4)}), "spectra"),
        (dict(spectra={"LOGLAM": np.zeros(4), "SPEC": np.zeros((2, 3)), "MODEL": np.zeros((2, 3)),
                       "WEIGHT": np.zeros((2, 3))}), "SPEC"),
    ],
)
def test_container_bad_input(kwargs, match):
    args = dict(maps={"V": np.zeros((2, 2))}, units={}, wcs=cube_wcs3().celestial)
    args.update(kwargs)
    with pytest.raises(InputError, match=match):
        KinematicMaps(**args)


def test_meta_not_serialisable(tmp_path):
    m = make_maps(meta={"thing": object()})
    with pytest.raises(InputError, match="thing"):
        write_maps(m, tmp_path / "m.fits")
    assert os.listdir(tmp_path) == []


def test_write_rejects_non_maps(tmp_path):
    with pytest.raises(InputError, match="KinematicMaps"):
        write_maps({"V": np.zeros((2, 2))}, tmp_path / "m.fits")


def test_read_missing_file(tmp_path):
    with pytest.raises(InputError, match="nothere.fits"):
        read_maps(tmp_path / "nothere.fits")


def test_read_not_fits(tmp_path):
    p = tmp_path / "junk.fits"
    p.write_text("this is not FITS\n" * 10)
    with pytest.raises(InputError, match="junk.fits"):
        read_maps(p)


def test_read_fits_without_maps(tmp_path):
    p = tmp_path / "spec.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros(10), name="FLUX")]).writeto(p)
    with pytest.raises(InputError, match="spec.fits"):
        read_maps(p)


def test_maps_share_sky_with_demo_cube(tmp_path):
    """Maps written with the demo cube's celestial WCS land on the cube's sky pixels."""
    from spectral_cube import Projection, SpectralCube

    from cube3d.datasets import demo_cube_path

    with fits.open(demo_cube_path()) as hdul:
        hdr = hdul["DATA"].header
        ny, nx = hdul["DATA"].data.shape[1:]
    w3 = WCS(hdr)
    yy, xx = np.mgrid[:ny, :nx]
    m = KinematicMaps({"V": xx * 10.0 - yy, "SIGMA": np.full((ny, nx), 200.0)}, {}, w3.celestial,
                      meta={"input_file": str(demo_cube_path()), "redshift": 0.0881, "nan_value": float("nan"),
                            "npint": np.int64(3)})
    path = write_maps(m, tmp_path / "maps.fits", model_cube=np.zeros((5, ny, nx)), cube_header=hdr)
    cube = SpectralCube.read(demo_cube_path(), hdu="DATA", format="fits")
    with fits.open(path) as out:
        proj = Projection.from_hdu(out["V"])
    sky_cube = cube.wcs.celestial.pixel_to_world(xx.ravel(), yy.ravel())
    sky_map = proj.wcs.pixel_to_world(xx.ravel(), yy.ravel())
    assert np.max(sky_cube.separation(sky_map).to_value("mas")) < 1e-3
    # spectral-cube's own world arrays agree too: Projection.world -> (dec, ra), cube.world -> (wave, dec, ra)
    p_dec, p_ra = proj.world[:]
    _, c_dec, c_ra = cube.world[0, :, :]
    np.testing.assert_allclose(p_dec.to_value("deg"), c_dec.to_value("deg"), rtol=0, atol=1e-12)
    np.testing.assert_allclose(p_ra.to_value("deg"), c_ra.to_value("deg"), rtol=0, atol=1e-12)
    assert p_ra.shape == (ny, nx)
    r = read_maps(path)
    assert np.isnan(r.meta["nan_value"]) and r.meta["npint"] == 3
    with fits.open(model_path_for(path)) as mod:
        assert WCS(mod["MODEL"].header).wcs.ctype[2] == "AWAV"
        assert mod["MODEL"].header["BUNIT"] == hdr["BUNIT"]


def test_written_file_has_umask_permissions(tmp_path):
    import os
    import stat

    m = make_maps()
    umask = os.umask(0o022)
    try:
        path = write_maps(m, tmp_path / "perm.fits")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


def test_per_spaxel_copies_of_gp_maps_are_described():
    from cube3d.maps import default_unit, describe

    assert default_unit("V_SPAXEL") == default_unit("SIGMA_SPAXEL_ERR") == "km/s"
    assert default_unit("H3_SPAXEL") == ""
    assert describe("V_SPAXEL").endswith("per-spaxel fit") and describe("V_SPAXEL_ERR").startswith("1-sigma error")
