"""Tests of cube3d.plot: map grids and spectrum-fit panels are drawn without global side effects."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.wcs import WCS

from cube3d.errors import InputError
from cube3d.maps import KinematicMaps
from cube3d.plot import brightest_bin, map_limits, plot_maps, plot_spectrum_fit

REPO = Path(__file__).resolve().parents[2]
NY, NX, NPIX = 12, 10, 300
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def sky_wcs():
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.crval = [63.355417, 10.46556]
    w.wcs.crpix = [5.5, 6.5]
    w.wcs.cd = [[-0.2 / 3600, 0], [0, 0.2 / 3600]]
    return w


def demo_maps(nan_maps=(), all_masked=False):
    """A rotating disc: V = 150 tanh(x) km/s, sigma peaked at the centre, per-spaxel bins."""
    yy, xx = np.mgrid[:NY, :NX]
    x, y = xx - 4.5, yy - 5.5
    r = np.hypot(x, y)
    m = {
        "V": 150 * np.tanh(x / 2.0),
        "SIGMA": 100 + 150 * np.exp(-(r**2) / 8),
        "H3": -0.05 * np.tanh(x / 2.0),
        "H4": 0.03 * np.ones((NY, NX)),
        "V_ERR": 5 + r,
        "SIGMA_ERR": 6 + r,
        "H3_ERR": 0.02 + 0.005 * r,
        "H4_ERR": 0.02 + 0.005 * r,
        "CHI2": np.ones((NY, NX)),
        "SNR": 40 * np.exp(-(r**2) / 20),
        "BINID": np.arange(NY * NX).reshape(NY, NX),
        "FLAG": np.zeros((NY, NX), int),
    }
    m["V"][0, :3] = np.nan  # not fitted
    for name in nan_maps:
        m[name] = np.full((NY, NX), np.nan)
    loglam = np.linspace(np.log(4800.0), np.log(5400.0), NPIX)
    lam = np.exp(loglam)
    n_bin = NY * NX
    scale = m["SNR"].ravel()[:, None] + 1
    model = scale * (1 - 0.3 * np.exp(-0.5 * ((lam - 5175) / 4) ** 2) - 0.2 * np.exp(-0.5 * ((lam - 5270) / 4) ** 2))
    rng = np.random.default_rng(1)
    spec = model + rng.normal(0, 0.5, model.shape)
    weight = np.ones((n_bin, NPIX))
    weight[:, (lam > 4950) & (lam < 5020)] = 0  # an emission-line mask
    if all_masked:
        weight[:] = 0
    spectra = {"LOGLAM": loglam, "SPEC": spec, "MODEL": model, "WEIGHT": weight}
    return KinematicMaps(m, {}, sky_wcs(), meta={"redshift": 0.0881}, spectra=spectra)


def read_png(path):
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert 10_000 < len(data) < 5_000_000
    return matplotlib.image.imread(path)


def test_plotting_leaves_pyplot_alone(tmp_path):
    code = (
        "import sys, pathlib, matplotlib; b = dict.__getitem__(matplotlib.rcParams, 'backend'); "
        "sys.path.insert(0, 'tests/cube3d'); import test_plot as t; "
        f"t.plot_maps(t.demo_maps(), pathlib.Path({str(tmp_path / 'x.png')!r}), dpi=30); "
        "assert 'matplotlib.pyplot' not in sys.modules; "
        "assert dict.__getitem__(matplotlib.rcParams, 'backend') == b"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=REPO)


def test_plot_maps_png(tmp_path):
    out = plot_maps(demo_maps(), tmp_path / "maps.png", dpi=80)
    img = read_png(out)
    h, w = img.shape[:2]
    assert (h, w) == (round((3.5 + 0.4) * 80), round(4 * 3.9 * 80))
    # the diverging V panel shows both red and blue pixels
    rgb = img[..., :3]
    red = (rgb[..., 0] > 0.6) & (rgb[..., 2] < 0.4)
    blue = (rgb[..., 2] > 0.6) & (rgb[..., 0] < 0.4)
    assert red.sum() > 200 and blue.sum() > 200


def test_plot_maps_errors_and_pixel_axes(tmp_path):
    one = read_png(plot_maps(demo_maps(), tmp_path / "a.png", sky_axes=False, dpi=60))
    two = read_png(plot_maps(demo_maps(), tmp_path / "b.png", errors=True, dpi=60))
    assert two.shape[0] > 1.8 * one.shape[0]  # a second row of error maps


def test_plot_maps_quantities_and_pdf(tmp_path):
    out = plot_maps(demo_maps(), tmp_path / "m.pdf", quantities=["SNR", "CHI2", "BINID", "FLAG"])
    assert out.read_bytes()[:5] == b"%PDF-" and out.stat().st_size > 5_000


@pytest.mark.parametrize("nan_maps", [("H4",), ("V", "SIGMA", "H3", "H4")])
def test_plot_maps_all_nan(tmp_path, nan_maps):
    read_png(plot_maps(demo_maps(nan_maps=nan_maps), tmp_path / "nan.png", dpi=60))


def test_map_limits():
    rng = np.random.default_rng(0)
    v = rng.uniform(-100, 100, 1000)
    v[0] = 1e4  # an outlier does not set the scale
    cmap, lo, hi = map_limits("V", v)
    assert lo == -hi and 90 < hi < 110 and cmap == "RdBu_r"
    _, lo, hi = map_limits("V", v + 500, v_reference=500.0)
    assert lo + hi == pytest.approx(1000.0) and 90 < hi - 500 < 110
    _, lo, hi = map_limits("H3", np.full(10, 1.0))
    assert (lo, hi) == (-0.3, 0.3)
    _, lo, hi = map_limits("H4", np.zeros(10))
    assert (lo, hi) == (-0.02, 0.02)
    s = rng.uniform(100, 300, 1000)
    _, lo, hi = map_limits("SIGMA", s)
    assert lo == pytest.approx(np.percentile(s, 2)) and hi == pytest.approx(np.percentile(s, 98))
    assert map_limits("SIGMA_ERR", s)[1] == 0.0
    for name in ("V", "SIGMA", "H3", "V_ERR", "BINID"):
        for vals in (np.full(5, np.nan), np.full(5, 7.0)):
            _, lo, hi = map_limits(name, vals)
            assert np.isfinite(lo) and np.isfinite(hi) and lo < hi


def test_plot_spectrum_fit(tmp_path):
    maps = demo_maps()
    out = plot_spectrum_fit(maps, tmp_path / "spec.png", dpi=80)
    img = read_png(out)
    assert img.shape[:2] == (round(5.2 * 80), 10 * 80)
    snr, binid = maps.maps["SNR"], maps.maps["BINID"]
    assert brightest_bin(maps) == binid.ravel()[np.argmax(snr)]
    read_png(plot_spectrum_fit(maps, tmp_path / "spec3.png", bin_index=3, dpi=60))


def test_brightest_bin_without_snr_map():
    maps = demo_maps()
    m = {k: v for k, v in maps.maps.items() if k != "SNR"}
    sp = dict(maps.spectra)
    no_snr = KinematicMaps(m, {}, maps.wcs, spectra=sp)
    # S/N from the spectra: brightest model with equal noise
    assert brightest_bin(no_snr) == int(np.argmax(sp["MODEL"].mean(axis=1)))


def test_plot_spectrum_all_masked(tmp_path):
    read_png(plot_spectrum_fit(demo_maps(all_masked=True), tmp_path / "s.png", bin_index=0, dpi=60))


@pytest.mark.parametrize("bad", [-1, NY * NX, 2.5, True, "3"])
def test_plot_spectrum_bad_bin(tmp_path, bad):
    with pytest.raises(InputError, match="bin_index"):
        plot_spectrum_fit(demo_maps(), tmp_path / "s.png", bin_index=bad)
    assert not (tmp_path / "s.png").exists()


def test_plot_spectrum_no_spectra(tmp_path):
    maps = demo_maps()
    bare = KinematicMaps(dict(maps.maps), {}, maps.wcs)
    with pytest.raises(InputError, match="spectra"):
        plot_spectrum_fit(bare, tmp_path / "s.png")


def test_plot_maps_bad_input(tmp_path):
    with pytest.raises(InputError, match="H7"):
        plot_maps(demo_maps(), tmp_path / "m.png", quantities=["V", "H7"])
    with pytest.raises(InputError, match="does not exist"):
        plot_maps(demo_maps(), tmp_path / "nope" / "m.png")
    with pytest.raises(InputError, match="v_reference"):
        plot_maps(demo_maps(), tmp_path / "m.png", v_reference="mean")
    with pytest.raises(InputError, match="KinematicMaps"):
        plot_maps({"V": np.zeros((2, 2))}, tmp_path / "m.png")
    assert list(tmp_path.iterdir()) == []


def test_import_has_no_global_side_effects():
    code = (
        "import sys, matplotlib; b = dict.__getitem__(matplotlib.rcParams, 'backend'); import cube3d.plot; "
        "assert 'matplotlib.pyplot' not in sys.modules; "
        "assert dict.__getitem__(matplotlib.rcParams, 'backend') == b"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
