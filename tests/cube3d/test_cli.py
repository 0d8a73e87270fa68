"""Tests of the ``cube3d`` command line: bad input, one fit end to end, plot, demo.

Every bad-input test runs :func:`cube3d.cli.main` in-process and checks the contract of
the command line (``cube3d/cli.py``): exit status 2, one line ``cube3d: error: ...`` on
standard error that names the file, HDU or option at fault, no traceback, and no output
file created (or an existing one left byte-identical).

The synthetic cubes are MUSE-like (DATA/STAT/DQ, ``AWAV``) and built from a bundled
MILES-HC template: log-resampled, convolved with a Gaussian LOSVD of known V and sigma,
redshifted and sampled on the cube's linear air-wavelength grid.  Their line-spread
function is given as a constant-FWHM table equal to the templates' FWHM times (1 + z)
(Falcon-Barroso et al. 2011: MILES 2.51 A), so that after de-redshifting the galaxy and
the templates have the same resolution and the recovered sigma is the LOSVD's alone.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from cube3d import __version__
from cube3d.cli import main
from cube3d.maps import FLAG_NOT_FITTED

pytestmark = pytest.mark.timeout(300)

C_KMS = 299792.458
REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "data" / "templates"
TEMPLATE = TEMPLATES / "MILESHC_19.fits"
TEMPLATE_FWHM = 2.51  # Angstrom, MILES (Falcon-Barroso et al. 2011)
Z = 0.02
WAVE0, DWAVE, NWAVE = 4750.0, 1.25, 800  # observed air wavelengths, Angstrom (MUSE-like)


# ----------------------------------------------------------------------------- mock data


def _template():
    """Rest-frame wavelength (pixel centres, Angstrom) and flux of the bundled template."""
    with fits.open(TEMPLATE) as hdul:
        h, flux = hdul[0].header, np.asarray(hdul[0].data, dtype=np.float64)
    wave = h["CRVAL1"] + h["CDELT1"] * (np.arange(flux.size) + 1 - h["CRPIX1"])
    return wave, flux


def obs_wave():
    """The cube's observed air wavelengths (pixel centres), Angstrom."""
    return WAVE0 + DWAVE * np.arange(NWAVE)


def mock_spectra(v, sigma, z=Z, wave=None):
    """Template spectrum seen through Gaussian LOSVDs (km/s), at observed wavelengths.

    The template is resampled on a fine ln-lambda grid (2 km/s pixels), convolved with
    a normalised Gaussian in velocity, shifted by ``ln(1 + z) + v / c`` in ln-lambda and
    interpolated at ``wave`` (default: the cube's pixel centres).  Returns (n_wave, n_spec).
    """
    t_wave, t_flux = _template()
    dv = 2.0
    ln_w = np.arange(np.log(t_wave[0]), np.log(t_wave[-1]), dv / C_KMS)
    fine = np.interp(ln_w, np.log(t_wave), t_flux)
    u = np.arange(-1500.0, 1500.0 + dv, dv)
    obs = np.log(obs_wave() if wave is None else np.asarray(wave, dtype=np.float64))
    out = []
    for vi, si in zip(np.ravel(v), np.ravel(sigma)):
        kern = np.exp(-0.5 * (u / si) ** 2)
        conv = np.convolve(fine, kern / kern.sum(), mode="same")
        out.append(np.interp(obs, ln_w + np.log1p(z) + vi / C_KMS, conv))
    return np.array(out).T


def muse_header():
    """Celestial TAN axes (0.2 arcsec pixels) and an AWAV spectral axis."""
    h = fits.Header()
    scale = 0.2 / 3600.0
    h["CTYPE1"], h["CTYPE2"], h["CTYPE3"] = "RA---TAN", "DEC--TAN", "AWAV"
    h["CUNIT1"], h["CUNIT2"], h["CUNIT3"] = "deg", "deg", "Angstrom"
    h["CRVAL1"], h["CRVAL2"], h["CRVAL3"] = 150.1, -30.2, WAVE0
    h["CRPIX1"], h["CRPIX2"], h["CRPIX3"] = 2.5, 1.5, 1.0
    h["CD1_1"], h["CD2_2"], h["CD3_3"] = -scale, scale, DWAVE
    h["CD1_2"] = h["CD2_1"] = 0.0
    h["BUNIT"] = "10**(-20)*erg/s/cm**2/Angstrom"
    return h


def write_muse(path, flux, stat, dq=None, header=None):
    h = muse_header() if header is None else header
    prim = fits.PrimaryHDU()
    prim.header["INSTRUME"] = "MUSE"
    hdus = [prim, fits.ImageHDU(flux.astype(np.float32), h, name="DATA"),
            fits.ImageHDU(stat.astype(np.float32), h, name="STAT")]
    if dq is None:
        dq = np.zeros(flux.shape, dtype=np.uint8)
    hdus.append(fits.ImageHDU(dq.astype(np.uint8), h, name="DQ"))
    fits.HDUList(hdus).writeto(path)
    return path


def make_cube(path, v, sigma, sn=50.0, seed=0):
    """A MUSE-like cube of (ny, nx) spaxels with LOSVD fields ``v``, ``sigma`` (km/s).

    Flux is scaled to a median of 100 per pixel; STAT = (median flux / sn)^2, and Gaussian
    noise of that variance is added.  Returns (path, flux, stat).
    """
    v, sigma = np.asarray(v, float), np.asarray(sigma, float)
    ny, nx = v.shape
    spec = mock_spectra(v, sigma)
    spec = 100.0 * spec / np.median(spec)
    flux = spec.reshape(NWAVE, ny, nx)
    stat = np.broadcast_to((np.median(flux, axis=0) / sn) ** 2, flux.shape).copy()
    flux = flux + np.random.default_rng(seed).normal(size=flux.shape) * np.sqrt(stat)
    write_muse(path, flux, stat)
    return path, flux, stat


def write_lsf(path, z=Z):
    """Constant observed FWHM = template FWHM x (1 + z) (x 1.0001 to stay just above it)."""
    fwhm = TEMPLATE_FWHM * (1.0 + z) * 1.0001
    w = np.array([4000.0, 7000.0])
    np.savetxt(path, np.column_stack([w, [fwhm, fwhm]]), header="Lambda FWHM")
    return path


@pytest.fixture(scope="module")
def small_cube(tmp_path_factory):
    """3 x 3 spaxels, V = 0, sigma = 150 km/s, S/N 50: a valid input for the bad-input tests."""
    d = tmp_path_factory.mktemp("small")
    path, flux, stat = make_cube(d / "cube.fits", np.zeros((3, 3)), np.full((3, 3), 150.0))
    return {"path": path, "flux": flux, "stat": stat, "lsf": write_lsf(d / "lsf.txt")}


# ----------------------------------------------------------------------------- helpers


def fit_args(cube, output, *extra, templates=TEMPLATES, redshift=Z, lsf=None):
    args = ["fit", str(cube), "--templates", str(templates), "--redshift", str(redshift), "-o", str(output),
            "--moments", "2", "--quiet"]
    if lsf is not None:
        args += ["--lsf", str(lsf)]
    return args + [str(e) for e in extra]


def assert_user_error(capsys, argv, *names, output=None, before=None):
    """``main(argv)`` fails cleanly: status 2, one error line naming ``names``, no traceback.

    ``output`` must not exist afterwards (``before is None``) or still hold the bytes ``before``.
    """
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("cube3d: error: "), err
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    if output is not None:
        output = Path(output)
        if before is None:
            assert not output.exists()
        else:
            assert output.read_bytes() == before
    return lines[0]


# ----------------------------------------------------------------------------- bad input: the cube


def test_missing_cube_file(tmp_path, capsys):
    out = tmp_path / "maps.fits"
    missing = tmp_path / "no_such_cube.fits"
    assert_user_error(capsys, fit_args(missing, out), missing, output=out)


@pytest.mark.parametrize("kind", ["empty", "text", "truncated"])
def test_unreadable_or_non_fits_cube(tmp_path, capsys, small_cube, kind):
    bad = tmp_path / "cube.fits"
    if kind == "truncated":  # a real cube cut in the middle of its DATA block
        content = small_cube["path"].read_bytes()
        bad.write_bytes(content[: len(content) // 3])
    else:
        bad.write_bytes(b"" if kind == "empty" else b"this is not a FITS file\n" * 200)
    out = tmp_path / "maps.fits"
    assert_user_error(capsys, fit_args(bad, out), bad, output=out)


def test_cube_is_a_directory(tmp_path, capsys):
    out = tmp_path / "maps.fits"
    (tmp_path / "dir.fits").mkdir()
    assert_user_error(capsys, fit_args(tmp_path / "dir.fits", out), tmp_path / "dir.fits", output=out)


def test_cube_without_spectral_axis(tmp_path, capsys, small_cube):
    h = muse_header()
    h["CTYPE3"] = "PIXEL"
    del h["CUNIT3"]
    path = write_muse(tmp_path / "cube.fits", small_cube["flux"], small_cube["stat"], header=h)
    out = tmp_path / "maps.fits"
    line = assert_user_error(capsys, fit_args(path, out), path, "[DATA]", "spectral axis", output=out)
    assert "PIXEL" in line


def test_cube_without_3d_data(tmp_path, capsys):
    path = tmp_path / "image.fits"
    fits.PrimaryHDU(np.ones((5, 5))).writeto(path)
    out = tmp_path / "maps.fits"
    assert_user_error(capsys, fit_args(path, out), path, "3-D", output=out)


def test_all_masked_cube(tmp_path, capsys, small_cube):
    """Every DQ flag set: no usable pixel anywhere."""
    dq = np.ones(small_cube["flux"].shape, dtype=np.uint8)
    path = write_muse(tmp_path / "cube.fits", small_cube["flux"], small_cube["stat"], dq=dq)
    out = tmp_path / "maps.fits"
    assert_user_error(capsys, fit_args(path, out), path, "masked", output=out)


@pytest.mark.parametrize("which", ["flux_nan", "stat_inf", "stat_nan"])
def test_non_finite_cube(tmp_path, capsys, small_cube, which):
    flux, stat = small_cube["flux"].copy(), small_cube["stat"].copy()
    if which == "flux_nan":
        flux[:] = np.nan
    else:
        stat[:] = np.inf if which == "stat_inf" else np.nan
    path = write_muse(tmp_path / "cube.fits", flux, stat)
    out = tmp_path / "maps.fits"
    assert_user_error(capsys, fit_args(path, out), path, "non-finite", output=out)


def test_no_spaxel_with_usable_pixels_in_range(tmp_path, capsys, small_cube):
    """Flux negative everywhere: nothing to fit, though some pixels are 'valid'."""
    path = write_muse(tmp_path / "cube.fits", -small_cube["flux"], small_cube["stat"])
    out = tmp_path / "maps.fits"
    assert_user_error(capsys, fit_args(path, out, lsf=small_cube["lsf"]), path, "usable", output=out)


# ----------------------------------------------------------------------------- bad input: templates


def test_templates_directory_empty(tmp_path, capsys, small_cube):
    empty = tmp_path / "templates"
    empty.mkdir()
    out = tmp_path / "maps.fits"
    assert_user_error(capsys, fit_args(small_cube["path"], out, templates=empty), "--templates", empty, output=out)


def test_templates_directory_missing(tmp_path, capsys, small_cube):
    missing = tmp_path / "no_templates"
    out = tmp_path / "maps.fits"
    assert_user_error(capsys, fit_args(small_cube["path"], out, templates=missing), "--templates", missing,
                      output=out)


@pytest.mark.parametrize("kind", ["not-fits", "2-d"])
def test_template_file_unreadable(tmp_path, capsys, small_cube, kind):
    tdir = tmp_path / "templates"
    tdir.mkdir()
    bad = tdir / "bad.fits"
    if kind == "not-fits":
        bad.write_text("not FITS\n" * 100)
    else:
        fits.PrimaryHDU(np.ones((3, 4))).writeto(bad)
    out = tmp_path / "maps.fits"
    assert_user_error(capsys, fit_args(small_cube["path"], out, templates=tdir), "--templates", bad, output=out)


def test_wave_range_outside_the_cube(tmp_path, capsys, small_cube):
    out = tmp_path / "maps.fits"
    assert_user_error(capsys, fit_args(small_cube["path"], out, "--wave-range", 9000, 9500), "--wave-range",
                      "9000", output=out)


def test_wave_range_not_covered_by_templates(tmp_path, capsys, small_cube):
    """Templates cut to 4500-5100 A rest frame cannot fit 4700-5500 A."""
    tdir = tmp_path / "templates"
    tdir.mkdir()
    with fits.open(TEMPLATE) as hdul:
        fits.PrimaryHDU(hdul[0].data[:667], hdul[0].header).writeto(tdir / "cut.fits")
    out = tmp_path / "maps.fits"
    line = assert_user_error(capsys, fit_args(small_cube["path"], out, "--wave-range", 4700, 5500, templates=tdir),
                             "--templates", output=out)
    assert "cover" in line


def test_redshift_moves_cube_off_the_templates(tmp_path, capsys, small_cube):
    """At z = 3 the cube's rest frame (1187-1437 A) misses the optical templates."""
    out = tmp_path / "maps.fits"
    assert_user_error(capsys, fit_args(small_cube["path"], out, redshift=3.0), "--templates", "z = 3",
                      output=out)


# ----------------------------------------------------------------------------- bad input: options and output


@pytest.mark.parametrize("value", ["nan", "-2", "inf", "-1", "abc"])
def test_invalid_redshift(tmp_path, capsys, small_cube, value):
    out = tmp_path / "maps.fits"
    assert_user_error(capsys, fit_args(small_cube["path"], out, redshift=value), "--redshift", output=out)


def test_missing_required_options(tmp_path, capsys, small_cube):
    out = tmp_path / "maps.fits"
    assert_user_error(capsys, ["fit", str(small_cube["path"]), "-o", str(out)], "--templates", "--redshift",
                      output=out)


@pytest.mark.parametrize(
    "option, value",
    [("--moments", "7"), ("--moments", "1"), ("--moments", "x"), ("--chunk-size", "0"), ("--degree", "-5"),
     ("--mdegree", "-1"), ("--sigma-start", "0"), ("--template-fwhm", "-2.5"), ("--clip", "0"),
     ("--velscale", "-30"), ("--target-sn", "0"), ("--n-basis", "0"), ("--wave-range", "5500 4700"),
     ("--layout", "SINFONI"), ("--losvd", "lorentz")],
)
def test_invalid_option_values(tmp_path, capsys, small_cube, option, value):
    out = tmp_path / "maps.fits"
    argv = fit_args(small_cube["path"], out, lsf=small_cube["lsf"])
    if option == "--moments":
        argv = argv[: argv.index("--moments")] + argv[argv.index("--moments") + 2:]
    assert_user_error(capsys, argv + [option] + value.split(), option, output=out)


def test_missing_lsf_file(tmp_path, capsys, small_cube):
    out = tmp_path / "maps.fits"
    missing = tmp_path / "no.lsf"
    assert_user_error(capsys, fit_args(small_cube["path"], out, lsf=missing), "--lsf", missing, output=out)


@pytest.mark.parametrize("model_cube", [False, True])
def test_output_exists_without_overwrite(tmp_path, capsys, small_cube, model_cube):
    """An existing maps file (or model file, with --model-cube) is refused and left byte-identical."""
    out = tmp_path / "maps.fits"
    existing = tmp_path / "maps_model.fits" if model_cube else out
    existing.write_bytes(b"a good earlier result\n")
    extra = ["--model-cube"] if model_cube else []
    assert_user_error(capsys, fit_args(small_cube["path"], out, *extra), existing, "--overwrite",
                      output=existing, before=b"a good earlier result\n")
    if model_cube:
        assert not out.exists()


def test_output_directory_missing(tmp_path, capsys, small_cube):
    out = tmp_path / "no_such_dir" / "maps.fits"
    assert_user_error(capsys, fit_args(small_cube["path"], out), tmp_path / "no_such_dir", output=out)
    assert not out.parent.exists()


def test_output_is_a_directory(tmp_path, capsys, small_cube):
    out = tmp_path / "maps.fits"
    out.mkdir()
    assert_user_error(capsys, fit_args(small_cube["path"], out, "--overwrite"), out, "directory")
    assert out.is_dir() and not any(out.iterdir())


def test_plot_bad_input(tmp_path, capsys, small_cube):
    png = tmp_path / "maps.png"
    missing = tmp_path / "no_maps.fits"
    assert_user_error(capsys, ["plot", str(missing), "-o", str(png)], missing, output=png)
    # a cube is not a maps file
    assert_user_error(capsys, ["plot", str(small_cube["path"]), "-o", str(png)], small_cube["path"], output=png)
    junk = tmp_path / "junk.fits"
    junk.write_text("not FITS\n" * 100)
    assert_user_error(capsys, ["plot", str(junk), "-o", str(png)], junk, output=png)


def test_demo_outdir_is_a_file(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_bytes(b"keep me")
    assert_user_error(capsys, ["demo", "--outdir", str(target), "--quiet"], "--outdir", target,
                      output=target, before=b"keep me")


def test_unknown_subcommand(capsys):
    assert_user_error(capsys, ["frobnicate"], "frobnicate")


# ----------------------------------------------------------------------------- one fit end to end

NY, NX = 4, 4
DEAD = (3, 0)  # a spaxel with no usable pixel (NaN flux, every DQ flag set)


def true_fields():
    """V = -100 km/s on the left half, +100 km/s on the right; sigma = 150 km/s."""
    v = np.where(np.arange(NX)[None, :] < NX // 2, -100.0, 100.0) * np.ones((NY, 1))
    return v, np.full((NY, NX), 150.0)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """``cube3d fit`` on a 4 x 4 mock cube (S/N 50) with ``--model-cube``; run once."""
    d = tmp_path_factory.mktemp("fit")
    v, sigma = true_fields()
    path, flux, stat = make_cube(d / "cube.fits", v, sigma, sn=50.0, seed=1)
    flux = flux.copy()
    dq = np.zeros(flux.shape, dtype=np.uint8)
    flux[:, DEAD[0], DEAD[1]] = np.nan
    dq[:, DEAD[0], DEAD[1]] = 1
    path.unlink()
    write_muse(path, flux, stat, dq=dq)
    lsf = write_lsf(d / "lsf.txt")
    out = d / "maps.fits"
    argv = fit_args(path, out, "--model-cube", lsf=lsf)
    argv.remove("--quiet")
    code = main(argv)
    return {"code": code, "cube": path, "out": out, "dir": d, "v": v, "sigma": sigma, "argv": argv}


def test_fit_writes_maps_with_expected_hdus(fitted):
    assert fitted["code"] == 0
    with fits.open(fitted["out"]) as hdul:
        names = [h.name for h in hdul]
        for name in ("V", "V_ERR", "SIGMA", "SIGMA_ERR", "CHI2", "SNR", "BINID", "FLAG"):
            assert name in names
            assert hdul[name].data.shape == (NY, NX)
        assert "H3" not in names  # --moments 2
        for name in ("V", "V_ERR", "SIGMA", "SIGMA_ERR"):
            assert hdul[name].header["BUNIT"].strip() == "km/s"
        assert np.issubdtype(hdul["BINID"].data.dtype, np.integer)
        assert np.issubdtype(hdul["FLAG"].data.dtype, np.integer)


def test_fit_maps_share_the_cube_sky_coordinates(fitted):
    with fits.open(fitted["cube"]) as c, fits.open(fitted["out"]) as m:
        cube_wcs = WCS(c["DATA"].header).celestial
        for name in ("V", "SIGMA", "FLAG"):
            map_wcs = WCS(m[name].header)
            assert map_wcs.naxis == 2 and map_wcs.has_celestial
            for x, y in [(0, 0), (3, 1), (1.5, 2.5)]:
                a, b = cube_wcs.pixel_to_world(x, y), map_wcs.pixel_to_world(x, y)
                assert a.separation(b).to_value("arcsec") < 1e-6


def test_fit_provenance_in_primary_header(fitted):
    h = fits.getheader(fitted["out"], 0)
    text = repr(h)
    assert str(Path(fitted["cube"]).resolve()) in text
    assert str(TEMPLATES) in text
    assert __version__ in text
    values = {k.upper(): v for k, v in h.items()}
    assert values["CUBE3D REDSHIFT"] == pytest.approx(Z)
    assert values["CUBE3D MOMENTS"] == 2
    assert values["CUBE3D LAYOUT"].strip() == "MUSE"


def test_fit_recovers_the_velocity_field(fitted):
    with fits.open(fitted["out"]) as m:
        V, dV = m["V"].data, m["V_ERR"].data
        S, dS = m["SIGMA"].data, m["SIGMA_ERR"].data
        flag = m["FLAG"].data
    good = np.ones((NY, NX), bool)
    good[DEAD] = False
    assert np.all(flag[good] == 0)
    # errors: finite and of the size expected at S/N 50 over ~800 pixels (a few km/s)
    assert np.all(np.isfinite(dV[good]) & (dV[good] > 0.2) & (dV[good] < 10.0))
    assert np.all(np.isfinite(dS[good]) & (dS[good] > 0.2) & (dS[good] < 10.0))
    assert np.all(np.abs(V[good] - fitted["v"][good]) < 4.0 * dV[good])
    assert np.all(np.abs(S[good] - fitted["sigma"][good]) < 4.0 * dS[good])
    # the two halves differ by 200 km/s, measured to a few km/s
    diff = V[:, NX // 2:][good[:, NX // 2:]].mean() - V[:, : NX // 2][good[:, : NX // 2]].mean()
    assert abs(diff - 200.0) < 4.0 * np.sqrt(np.mean(dV[good] ** 2) * (1 / 7 + 1 / 8))


def test_fit_chi2_and_snr(fitted):
    with fits.open(fitted["out"]) as m:
        chi2, snr = m["CHI2"].data, m["SNR"].data
    good = np.ones((NY, NX), bool)
    good[DEAD] = False
    # the model reaches the noise: no misfit (a 20 km/s error in V alone would give chi2 >> 1 at
    # S/N 50).  It is below 1 (about 0.6 here) because the log-rebinned ivar keeps the input pixels'
    # variance while rebinning averages overlapping pixels (cube3d.prepare, Notes).
    assert np.all(np.isfinite(chi2[good]) & (chi2[good] > 0.3) & (chi2[good] < 1.3)), chi2
    # S/N per pixel: 50 at the median flux; log-rebinning averages overlapping pixels (<= sqrt 2 gain)
    assert np.all((snr[good] > 45.0) & (snr[good] < 50.0 * np.sqrt(2.0) * 1.05)), snr


def test_spaxel_without_usable_pixels_is_flagged_not_fitted(fitted):
    with fits.open(fitted["out"]) as m:
        for name in ("V", "V_ERR", "SIGMA", "SIGMA_ERR", "CHI2", "SNR"):
            assert np.isnan(m[name].data[DEAD]), name
            good = np.ones((NY, NX), bool)
            good[DEAD] = False
            assert np.all(np.isfinite(m[name].data[good])), name
        assert m["FLAG"].data[DEAD] & FLAG_NOT_FITTED
        assert m["BINID"].data[DEAD] == -1
        binid = m["BINID"].data
        assert sorted(binid[binid >= 0].tolist()) == list(range(NY * NX - 1))


def test_fit_model_cube(fitted):
    """The model file: rest-frame ln-lambda grid, cube flux units, close to the noiseless truth."""
    model_path = fitted["dir"] / "maps_model.fits"
    assert model_path.is_file()
    with fits.open(model_path) as hdul:
        hdu = next(h for h in hdul if h.data is not None and h.data.ndim == 3)
        model = np.asarray(hdu.data, dtype=np.float64)
        w = WCS(hdu.header)
    assert model.shape[1:] == (NY, NX)
    assert w.has_celestial and w.has_spectral
    assert hdu.header.get("WCSAXES", 3) == 3  # strict readers (wcslib) ignore axes beyond WCSAXES
    assert np.all(np.isnan(model[:, DEAD[0], DEAD[1]]))
    n = model.shape[0]
    wave_rest = w.spectral.pixel_to_world(np.arange(n)).to_value("Angstrom")
    assert 4650.0 < wave_rest[0] < wave_rest[-1] < 5650.0
    # truth at the same rest wavelengths (observed = rest (1 + z)), scaled as make_cube did
    v, sigma = fitted["v"], fitted["sigma"]
    scale = 100.0 / np.median(mock_spectra(v, sigma))
    truth = scale * mock_spectra(v, sigma, wave=wave_rest * (1.0 + Z)).reshape(n, NY, NX)
    noise = 100.0 / 50.0  # per native pixel at the median flux
    good = np.ones((NY, NX), bool)
    good[DEAD] = False
    resid = (model - truth)[:, good]
    assert np.sqrt(np.mean(resid**2)) < 0.3 * noise


def test_plot_writes_pngs(fitted, tmp_path, capsys):
    png = tmp_path / "maps.png"
    code = main(["plot", str(fitted["out"]), "-o", str(png), "--errors"])
    err = capsys.readouterr().err
    assert code == 0, err
    spectrum = tmp_path / "maps_spectrum.png"
    for p in (png, spectrum):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        from matplotlib.image import imread
        img = imread(p)
        assert img.shape[0] > 100 and img.shape[1] > 100
        assert np.ptp(img[..., :3]) > 0  # not blank
        assert str(p) in err


def test_fit_again_refuses_existing_maps(fitted, capsys):
    """Rerunning the same command leaves the maps written by the first run byte-identical."""
    before = fitted["out"].read_bytes()
    argv = list(fitted["argv"]) + ["--quiet"]
    assert_user_error(capsys, argv, fitted["out"], output=fitted["out"], before=before)


# ----------------------------------------------------------------------------- demo and console script


def test_demo(tmp_path, capsys):
    """``cube3d demo`` fits the bundled MUSE cutout of the Abell 478 BCG end to end."""
    outdir = tmp_path / "demo"
    code = main(["demo", "--outdir", str(outdir), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    for name in ("maps.fits", "maps.png", "spectrum.png"):
        assert (outdir / name).is_file() and (outdir / name).stat().st_size > 0
    assert "cube3d demo:" in captured.out
    with fits.open(outdir / "maps.fits") as m:
        v, s, flag, binid = m["V"].data, m["SIGMA"].data, m["FLAG"].data, m["BINID"].data
    assert v.shape == (20, 20)
    good = flag == 0
    assert good.sum() > 0.5 * good.size
    # a giant elliptical: sigma of a few hundred km/s; the BCG sits within ~1000 km/s of the cluster z
    assert 150.0 < np.median(s[good]) < 450.0
    assert abs(np.median(v[good])) < 1000.0
    assert binid.max() + 1 < binid.size  # Voronoi-binned to S/N 15
    # with --quiet the routine warning (the bundled MILES templates are broader than MUSE's
    # LSF over part of the range) is not shown; nothing reaches the user as a Python warning
    lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert not any("template FWHM exceeds" in ln for ln in lines), lines
    assert all(ln.startswith("cube3d: ") for ln in lines), lines
    assert "Warning:" not in captured.err and ".py:" not in captured.err


def _run_console(*args):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, cwd=REPO)


def test_console_script_help_and_version():
    """The installed ``cube3d`` entry point and ``python -m cube3d.cli`` (subprocess, once each)."""
    import shutil

    exe = shutil.which("cube3d")
    if exe is None:
        pytest.skip("the cube3d console script is not installed (pip install -e .)")
    r = _run_console(exe, "--help")
    assert r.returncode == 0, r.stderr
    for word in ("fit", "plot", "demo"):
        assert word in r.stdout
    r = _run_console(sys.executable, "-m", "cube3d.cli", "--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"cube3d {__version__}"
    # a user error through the real entry point: status 2, one line, no traceback
    r = _run_console(exe, "fit", "no_such_cube.fits", "--templates", str(TEMPLATES), "-z", "0.02", "-o",
                     "never_written.fits")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert r.stderr.startswith("cube3d: error: ") and "no_such_cube.fits" in r.stderr
    assert not (REPO / "never_written.fits").exists()


def test_fit_help_explains_every_option(capsys):
    assert main(["fit", "--help"]) == 0
    text = capsys.readouterr().out
    for option in ("--templates", "--redshift", "--output", "--overwrite", "--model-cube", "--template-fwhm",
                   "--lsf", "--wave-range", "--target-sn", "--moments", "--losvd", "--degree", "--mdegree",
                   "--clip", "--chunk-size", "--quiet"):
        assert option in text, option


def test_fit_overwrite_replaces_with_the_same_result(fitted, tmp_path):
    """--overwrite replaces an existing file (and model file) with complete ones; the fit is deterministic."""
    out = tmp_path / "maps.fits"
    out.write_bytes(b"stale")
    (tmp_path / "maps_model.fits").write_bytes(b"stale")
    argv = list(fitted["argv"])
    argv[argv.index("-o") + 1] = str(out)
    assert main(argv + ["--overwrite", "--quiet"]) == 0
    with fits.open(out) as new, fits.open(fitted["out"]) as old:
        for name in ("V", "SIGMA", "V_ERR", "SIGMA_ERR", "FLAG", "BINID"):
            np.testing.assert_array_equal(new[name].data, old[name].data)
    with fits.open(tmp_path / "maps_model.fits") as hdul:
        assert any(h.data is not None and h.data.ndim == 3 for h in hdul)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maps.fits", "maps_model.fits"]


def test_interrupted_fit_leaves_existing_output(small_cube, tmp_path, capsys, monkeypatch):
    """Ctrl-C during the fit: status 130, the earlier maps file is untouched, no temporary files."""
    import cube3d.pipeline

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cube3d.pipeline, "fit_spectra", interrupt)
    out = tmp_path / "maps.fits"
    out.write_bytes(b"a good earlier result\n")
    code = main(fit_args(small_cube["path"], out, "--overwrite", "--model-cube", lsf=small_cube["lsf"]))
    err = capsys.readouterr().err
    assert code == 130 and "Traceback" not in err and "interrupted" in err
    assert out.read_bytes() == b"a good earlier result\n"
    assert [p.name for p in tmp_path.iterdir()] == ["maps.fits"]


@pytest.mark.parametrize(
    "extra, names",
    [(["--bin", "99"], ["--bin"]), (["--bin", "-1"], ["--bin"]), ([], ["--output", ".txt"])],
    ids=["bin-too-large", "bin-negative", "bad-format"],
)
def test_plot_bad_options(fitted, tmp_path, capsys, extra, names):
    """Bad plot options fail before anything is drawn: no PNG at all."""
    out = tmp_path / ("maps.txt" if not extra else "maps.png")
    assert_user_error(capsys, ["plot", str(fitted["out"]), "-o", str(out)] + extra, *names, output=out)
    assert list(tmp_path.iterdir()) == []


def test_plot_output_directory_missing(fitted, tmp_path, capsys):
    out = tmp_path / "no_such_dir" / "maps.png"
    assert_user_error(capsys, ["plot", str(fitted["out"]), "-o", str(out)], tmp_path / "no_such_dir", output=out)


def test_progress_bar_is_closed_when_the_fit_is_done(capsys):
    """The bar ends its line at 100%, so that the next stage's lines (GP, writing) start below it."""
    from cube3d.cli import _progress

    update, close = _progress(quiet=False)
    update(0, 4)
    update(4, 4)
    print("cube3d: next stage", file=sys.stderr)
    close()                                             # harmless after the bar closed itself
    err = capsys.readouterr().err
    assert "4/4" in err
    assert err[err.rindex("4/4"):].split("\n")[1] == "cube3d: next stage"
