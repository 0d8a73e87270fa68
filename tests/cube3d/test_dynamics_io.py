"""Inputs of ``cube3d dynamics``: every bad input is one line, exit status 2, nothing written.

The files are small tables and maps written here with astropy (no JAM mock, no fit): each
bad-input command fails while reading its inputs, before any fitting starts.
"""

from __future__ import annotations

import math

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.table import Table
from astropy.wcs import WCS

from cube3d.cli import main
from cube3d.dynamics_io import (
    MAPS_REQUIRED,
    check_frame,
    kpc_per_arcsec,
    read_ifu,
    read_mge,
    read_stars,
    sky_to_galaxy,
)
from cube3d.errors import InputError
from cube3d.flags import FLAG_BELOW_RELIABLE_SN
from cube3d.maps import KinematicMaps, write_maps

CENTRE = (150.0, 2.0)
PA = 40.0
DISTANCE = 20.0
N_SIDE = 6
N_STARS = 20
SURF = np.array([2e4, 3e3, 250.0])
SIGMA = np.array([0.5, 4.0, 30.0])
Q = np.array([0.85, 0.8, 0.7])


# --------------------------------------------------------------------------- file makers


def mge_table(surf=SURF, sigma=SIGMA, q=Q, units=True, drop=()):
    cols = {"surf": np.asarray(surf, float), "sigma": np.asarray(sigma, float), "q": np.asarray(q, float)}
    table = Table({k: v for k, v in cols.items() if k not in drop})
    if units:
        if "surf" in table.colnames:
            table["surf"].unit = u.Lsun / u.pc**2
        if "sigma" in table.colnames:
            table["sigma"].unit = u.arcsec
    return table


def star_table(n=N_STARS, units=True, drop=(), p_member=None, **overrides):
    """Stars 3-30 arcsec from CENTRE in all directions; ``overrides`` replace one value of a column
    (``name=(row, value)``)."""
    rng = np.random.default_rng(1)
    angle = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    radius = np.linspace(3.0, 30.0, n)
    c = SkyCoord(CENTRE[0] * u.deg, CENTRE[1] * u.deg).spherical_offsets_by(
        radius * np.sin(angle) * u.arcsec, radius * np.cos(angle) * u.arcsec)
    cols = {"ra": c.ra.deg, "dec": c.dec.deg, "v": rng.normal(0.0, 150.0, n), "v_err": np.full(n, 8.0)}
    if p_member is not None:
        cols["p_member"] = np.full(n, float(p_member))
    for name, (row, value) in overrides.items():
        cols[name] = np.array(cols[name], dtype=float)
        cols[name][row] = value
    table = Table({k: v for k, v in cols.items() if k not in drop})
    if units:
        for name, unit in (("ra", u.deg), ("dec", u.deg), ("v", u.km / u.s), ("v_err", u.km / u.s)):
            if name in table.colnames:
                table[name].unit = unit
    return table


def write_table(table, path):
    fmt = "ascii.csv" if path.suffix == ".csv" else "ascii.ecsv"
    table.write(path, format=fmt, overwrite=True)
    return path


def write_ifu(path, drop=(), flag=0, psf=0.8, centre=CENTRE, n=N_SIDE, meta=None):
    """A cube3d maps file: ``n x n`` spaxels of 1 arcsec, north up, centred on ``centre``."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = list(centre)
    wcs.wcs.crpix = [(n + 1) / 2.0, (n + 1) / 2.0]
    wcs.wcs.cdelt = [-1.0 / 3600.0, 1.0 / 3600.0]
    wcs.wcs.cunit = ["deg", "deg"]
    yy, xx = np.mgrid[:n, :n]
    maps = {"V": 20.0 * (xx - (n - 1) / 2.0), "V_ERR": np.full((n, n), 5.0), "SIGMA": np.full((n, n), 150.0),
            "SIGMA_ERR": np.full((n, n), 6.0), "BINID": np.arange(n * n).reshape(n, n),
            "FLAG": np.full((n, n), flag)}
    maps = {k: v for k, v in maps.items() if k not in drop}
    meta = {**({} if psf is None else {"psf_sigma_arcsec": psf}), **(meta or {})}
    write_maps(KinematicMaps(maps=maps, units={}, wcs=wcs, meta=meta), path, overwrite=True)
    return path


@pytest.fixture
def files(tmp_path):
    """Good inputs in ``tmp_path/in``, and an empty output folder ``tmp_path/out``."""
    src = tmp_path / "in"
    src.mkdir()
    out = tmp_path / "out"
    out.mkdir()

    class F:
        folder = src
        outdir = out
        mge = write_table(mge_table(), src / "mge.ecsv")
        stars = write_table(star_table(), src / "stars.ecsv")
        maps = write_ifu(src / "maps.fits")

    return F


def dynamics_args(files, *, mge=None, maps=None, stars=None, centre=CENTRE, pa=PA, distance=DISTANCE, extra=()):
    args = ["dynamics", "--mge", str(files.mge if mge is None else mge), "--distance", str(distance),
            "--centre", str(centre[0]), str(centre[1]), "--pa", str(pa), "-o", str(files.outdir),
            "--method", "laplace", "--no-plots"]
    if maps is not None:
        args += ["--maps", str(maps)]
    if stars is not None:
        args += ["--stars", str(stars)]
    return args + list(extra)


def assert_bad_input(capsys, argv, *needles, outdir):
    """``main(argv)`` exits 2 with one line ``cube3d: error: ...`` holding every needle; outdir untouched."""
    before = sorted(p.name for p in outdir.iterdir()) if outdir.exists() else None
    status = main(argv)
    captured = capsys.readouterr()
    assert status == 2, captured.err
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("cube3d: error:"), lines[0]
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])
    assert captured.out == ""
    after = sorted(p.name for p in outdir.iterdir()) if outdir.exists() else None
    assert after == before
    return lines[0]


# --------------------------------------------------------------------------- MGE


@pytest.mark.parametrize("column", ["surf", "sigma", "q"])
def test_mge_missing_column(files, capsys, column):
    path = write_table(mge_table(drop=(column,)), files.folder / "bad_mge.ecsv")
    with pytest.raises(InputError, match=rf"bad_mge\.ecsv: missing column '{column}'"):
        read_mge(path, DISTANCE)
    assert_bad_input(capsys, dynamics_args(files, mge=path, stars=files.stars), "bad_mge.ecsv",
                     f"missing column '{column}'", outdir=files.outdir)


def test_mge_unit_that_does_not_convert(files, capsys):
    table = mge_table()
    table["sigma"].unit = u.km
    path = write_table(table, files.folder / "km_mge.ecsv")
    with pytest.raises(InputError, match=r"km_mge\.ecsv: column 'sigma' has unit km that does not convert"):
        read_mge(path, DISTANCE)
    assert_bad_input(capsys, dynamics_args(files, mge=path, stars=files.stars), "km_mge.ecsv", "'sigma'",
                     outdir=files.outdir)


def test_mge_unit_that_does_not_parse(files, capsys):
    path = files.folder / "garbage_mge.ecsv"
    rows = "\n".join(f"{float(s)!r} {float(g)!r} {float(q)!r}" for s, g, q in zip(SURF, SIGMA, Q))
    path.write_text("# %ECSV 1.0\n# ---\n# datatype:\n"
                    "# - {name: surf, unit: Lsun / pc2, datatype: float64}\n"
                    "# - {name: sigma, unit: blargh_per_fortnight, datatype: float64}\n"
                    "# - {name: q, datatype: float64}\n# schema: astropy-2.0\n"
                    f"surf sigma q\n{rows}\n")
    with pytest.raises(InputError, match=r"garbage_mge\.ecsv: column 'sigma' has unit blargh_per_fortnight"):
        read_mge(path, DISTANCE)
    assert_bad_input(capsys, dynamics_args(files, mge=path, stars=files.stars), "garbage_mge.ecsv", "'sigma'",
                     outdir=files.outdir)


@pytest.mark.parametrize("column, value, what", [("surf", 0.0, "> 0"), ("sigma", -1.0, "> 0"),
                                                  ("q", 0.0, r"in \(0, 1\]"), ("q", 1.2, r"in \(0, 1\]")])
def test_mge_values_out_of_range(files, column, value, what):
    cols = dict(surf=SURF.copy(), sigma=SIGMA.copy(), q=Q.copy())
    cols[column][1] = value
    path = write_table(mge_table(**cols), files.folder / "range_mge.ecsv")
    with pytest.raises(InputError, match=rf"range_mge\.ecsv: column '{column}' must be {what}.*at row 1"):
        read_mge(path, DISTANCE)


def test_mge_non_finite(files):
    path = write_table(mge_table(sigma=[0.5, np.nan, 30.0]), files.folder / "nan_mge.ecsv")
    with pytest.raises(InputError,
                       match=r"nan_mge\.ecsv: column 'sigma' has 1 non-finite value\(s\) \(first at row 1\)"):
        read_mge(path, DISTANCE)


@pytest.mark.parametrize("use", ["maps", "stars"])
def test_mge_too_flat_for_any_inclination(files, capsys, use):
    # arccos(0.005) + 0.5 deg = 90.2 deg: no inclination is left in the prior
    path = write_table(mge_table(q=[0.85, 0.3, 0.005]), files.folder / "flat_mge.ecsv")
    read_mge(path, DISTANCE)  # a valid table: the prior is what fails
    line = assert_bad_input(capsys, dynamics_args(files, mge=path, **{use: getattr(files, use)}),
                            "--mge", "flat_mge.ecsv", "inclination", outdir=files.outdir)
    assert "0.005" in line


# --------------------------------------------------------------------------- stars


@pytest.mark.parametrize("column", ["ra", "dec", "v", "v_err"])
def test_stars_missing_column(files, capsys, column):
    path = write_table(star_table(drop=(column,)), files.folder / "bad_stars.ecsv")
    with pytest.raises(InputError, match=rf"bad_stars\.ecsv: missing column '{column}'"):
        read_stars(path, CENTRE, PA, DISTANCE)
    assert_bad_input(capsys, dynamics_args(files, stars=path), "bad_stars.ecsv", f"missing column '{column}'",
                     outdir=files.outdir)


@pytest.mark.parametrize("column, unit", [("ra", u.km / u.s), ("dec", u.m), ("v", u.deg), ("v_err", u.Lsun)])
def test_stars_unit_that_does_not_convert(files, capsys, column, unit):
    table = star_table()
    table[column].unit = unit
    path = write_table(table, files.folder / "unit_stars.ecsv")
    with pytest.raises(InputError, match=rf"unit_stars\.ecsv: column '{column}' has unit .* does not convert"):
        read_stars(path, CENTRE, PA, DISTANCE)
    assert_bad_input(capsys, dynamics_args(files, stars=path), "unit_stars.ecsv", f"'{column}'",
                     outdir=files.outdir)


def test_stars_units_convert(files):
    # arcsec/hourangle and m/s are converted, not rejected
    table = star_table()
    ref = read_stars(write_table(table, files.folder / "ref.ecsv"), CENTRE, PA, DISTANCE)
    table["ra"] = (table["ra"].data / 15.0) * u.hourangle
    table["dec"] = (table["dec"].data * 3600.0) * u.arcsec
    table["v"] = (table["v"].data * 1e3) * u.m / u.s
    got = read_stars(write_table(table, files.folder / "conv.ecsv"), CENTRE, PA, DISTANCE)
    np.testing.assert_allclose(got.x, ref.x, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got.y, ref.y, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got.v, ref.v, rtol=1e-12)


@pytest.mark.parametrize("column, value", [("ra", np.nan), ("dec", np.inf), ("v", np.nan), ("v", -np.inf),
                                           ("v_err", np.nan)])
def test_stars_non_finite(files, capsys, column, value):
    path = write_table(star_table(**{column: (3, value)}), files.folder / "nonfinite_stars.ecsv")
    with pytest.raises(InputError, match=rf"nonfinite_stars\.ecsv: column '{column}' has 1 non-finite value\(s\) "
                                         r"\(first at row 3\)"):
        read_stars(path, CENTRE, PA, DISTANCE)
    assert_bad_input(capsys, dynamics_args(files, stars=path), "nonfinite_stars.ecsv", f"'{column}'",
                     outdir=files.outdir)


@pytest.mark.parametrize("value", [0.0, -2.0])
def test_stars_v_err_not_positive(files, capsys, value):
    path = write_table(star_table(v_err=(5, value)), files.folder / "verr_stars.ecsv")
    with pytest.raises(InputError, match=r"verr_stars\.ecsv: column 'v_err' must be > 0 km/s, .* at row 5"):
        read_stars(path, CENTRE, PA, DISTANCE)
    assert_bad_input(capsys, dynamics_args(files, stars=path), "verr_stars.ecsv", "'v_err'", outdir=files.outdir)


@pytest.mark.parametrize("value", [0.0, -0.1, 1.5])
def test_stars_p_member_outside_unit_interval(files, capsys, value):
    table = star_table(p_member=0.9)
    table["p_member"][2] = value
    path = write_table(table, files.folder / "p_stars.ecsv")
    with pytest.raises(InputError, match=r"p_stars\.ecsv: column 'p_member' must lie in \(0, 1\]"):
        read_stars(path, CENTRE, PA, DISTANCE)
    assert_bad_input(capsys, dynamics_args(files, stars=path), "p_stars.ecsv", "'p_member'", outdir=files.outdir)


def test_stars_p_member_non_finite(files):
    table = star_table(p_member=0.5)
    table["p_member"][0] = np.nan
    path = write_table(table, files.folder / "pnan_stars.ecsv")
    with pytest.raises(InputError, match=r"pnan_stars\.ecsv: column 'p_member' has 1 non-finite"):
        read_stars(path, CENTRE, PA, DISTANCE)


def test_stars_p_member_read(files):
    table = star_table(p_member=1.0)
    table["p_member"][:5] = 0.25
    data = read_stars(write_table(table, files.folder / "p_ok.ecsv"), CENTRE, PA, DISTANCE)
    np.testing.assert_array_equal(np.asarray(data.p_member), np.r_[np.full(5, 0.25), np.ones(N_STARS - 5)])
    no_p = read_stars(files.stars, CENTRE, PA, DISTANCE)
    np.testing.assert_array_equal(np.asarray(no_p.p_member), np.ones(N_STARS))


@pytest.mark.parametrize("value", [90.5, -95.0])
def test_stars_dec_out_of_range(files, capsys, value):
    path = write_table(star_table(dec=(4, value)), files.folder / "dec_stars.ecsv")
    with pytest.raises(InputError, match=r"dec_stars\.ecsv: column 'dec' must lie in \[-90, 90\]"):
        read_stars(path, CENTRE, PA, DISTANCE)
    assert_bad_input(capsys, dynamics_args(files, stars=path), "dec_stars.ecsv", "'dec'", outdir=files.outdir)


def test_stars_too_few_and_at_centre(files):
    few = write_table(star_table(n=2), files.folder / "few.ecsv")
    with pytest.raises(InputError, match=r"few\.ecsv: need at least 3 stars, got 2"):
        read_stars(few, CENTRE, PA, DISTANCE)
    at_centre = write_table(star_table(ra=(0, CENTRE[0]), dec=(0, CENTRE[1])), files.folder / "centre.ecsv")
    with pytest.raises(InputError, match=r"centre\.ecsv: a star lies exactly at the centre"):
        read_stars(at_centre, CENTRE, PA, DISTANCE)


@pytest.mark.parametrize("suffix", [".csv", ".ecsv"])
def test_stars_empty_field_is_rejected(files, suffix):
    path = write_table(star_table(units=suffix == ".ecsv"), files.folder / f"empty{suffix}")
    lines = path.read_text().splitlines()
    header = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    sep = "," if suffix == ".csv" else " "
    fields = lines[header + 3].split(sep)
    fields[2] = "" if suffix == ".csv" else '""'  # no velocity for star 2
    lines[header + 3] = sep.join(fields)
    path.write_text("\n".join(lines) + "\n")
    assert np.ma.is_masked(Table.read(path)["v"][2])
    with pytest.raises(InputError, match=rf"empty{suffix}: column 'v'"):
        read_stars(path, CENTRE, PA, DISTANCE)


# --------------------------------------------------------------------------- CSV tables


def test_csv_tables_read_like_ecsv(files, capsys):
    mge_csv = write_table(mge_table(units=False), files.folder / "mge.csv")
    stars_csv = write_table(star_table(units=False, p_member=0.8), files.folder / "stars.csv")
    assert mge_csv.read_text().splitlines()[0] == "surf,sigma,q"
    ecsv_mge, csv_mge = read_mge(files.mge, DISTANCE), read_mge(mge_csv, DISTANCE)
    for name in ("surf", "sigma", "q"):
        np.testing.assert_allclose(np.asarray(getattr(csv_mge, name)), np.asarray(getattr(ecsv_mge, name)),
                                   rtol=1e-12)
    ecsv_stars, csv_stars = read_stars(files.stars, CENTRE, PA, DISTANCE), read_stars(stars_csv, CENTRE, PA, DISTANCE)
    for name in ("x", "y", "v", "v_err"):
        np.testing.assert_allclose(np.asarray(getattr(csv_stars, name)), np.asarray(getattr(ecsv_stars, name)),
                                   rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(np.asarray(csv_stars.p_member), np.full(N_STARS, 0.8))
    # through the command: the inputs pass, and only the earlier outputs stop it (before any fit)
    (files.outdir / "summary.ecsv").write_text("earlier\n")
    assert_bad_input(capsys, dynamics_args(files, mge=mge_csv, stars=stars_csv), "--outdir", "summary.ecsv",
                     outdir=files.outdir)


def test_csv_missing_column_and_junk(files):
    path = files.folder / "stars.csv"
    path.write_text("ra,dec,velocity,v_err\n150.001,2.0,10,5\n150.0,2.001,20,5\n150.002,2.0,30,5\n")
    with pytest.raises(InputError, match=r"stars\.csv: missing column 'v' \(columns: ra, dec, velocity, v_err\)"):
        read_stars(path, CENTRE, PA, DISTANCE)
    path.write_text("ra,dec,v,v_err\n150.001,2.0,fast,5\n150.0,2.001,20,5\n150.002,2.0,30,5\n")
    with pytest.raises(InputError, match=r"stars\.csv: column 'v' is not numeric"):
        read_stars(path, CENTRE, PA, DISTANCE)
    junk = files.folder / "junk.ecsv"
    junk.write_text("# %ECSV 1.0\n# ---\n# datatype: [oops\nsurf sigma q\n1 2 3\n")
    with pytest.raises(InputError, match=r"--mge .*junk\.ecsv: not a readable ECSV table"):
        read_mge(junk, DISTANCE)


@pytest.mark.parametrize("option", ["--mge", "--stars", "--maps"])
def test_missing_input_file(files, capsys, option):
    missing = files.folder / "nowhere.ecsv"
    kw = {"mge": missing} if option == "--mge" else {option[2:]: missing}
    if option != "--stars":
        kw.setdefault("stars", files.stars)
    assert_bad_input(capsys, dynamics_args(files, **kw), "nowhere.ecsv", "no such file", outdir=files.outdir)


# --------------------------------------------------------------------------- frame: centre, PA, distance


@pytest.mark.parametrize("centre, pa, distance, option", [
    ((360.0, 2.0), PA, DISTANCE, "--centre"), ((-0.5, 2.0), PA, DISTANCE, "--centre"),
    ((150.0, 90.5), PA, DISTANCE, "--centre"), ((150.0, -91.0), PA, DISTANCE, "--centre"),
    ((math.nan, 2.0), PA, DISTANCE, "--centre"),
    (CENTRE, 400.0, DISTANCE, "--pa"), (CENTRE, -360.5, DISTANCE, "--pa"), (CENTRE, math.inf, DISTANCE, "--pa"),
    (CENTRE, PA, 0.0, "--distance"), (CENTRE, PA, -3.0, "--distance"), (CENTRE, PA, math.nan, "--distance"),
])
def test_frame_out_of_range(files, capsys, centre, pa, distance, option):
    with pytest.raises(InputError, match=rf"^{option}: "):
        check_frame(centre, pa, distance)
    line = assert_bad_input(capsys, dynamics_args(files, stars=files.stars, maps=files.maps, centre=centre, pa=pa,
                                                  distance=distance), outdir=files.outdir)
    assert line.startswith(f"cube3d: error: {option}: "), line


def test_frame_accepts_limits():
    assert check_frame((0.0, -90.0), -360.0, 1e-3) == (0.0, -90.0, -360.0, 1e-3)
    assert check_frame(("359.9", "90"), "360", "16.5") == (359.9, 90.0, 360.0, 16.5)


def test_neither_maps_nor_stars(files, capsys):
    assert_bad_input(capsys, dynamics_args(files), "--maps", "--stars", outdir=files.outdir)


def test_nothing_created_for_missing_outdir(files, capsys):
    outdir = files.outdir.parent / "new_out"
    argv = dynamics_args(files, stars=files.stars, pa=400.0)
    argv[argv.index("-o") + 1] = str(outdir)
    assert_bad_input(capsys, argv, "--pa", outdir=outdir)
    assert not outdir.exists()


# --------------------------------------------------------------------------- maps


def test_read_ifu_good(files):
    data, info = read_ifu(files.maps, CENTRE, PA, DISTANCE)
    assert info["shape"] == (N_SIDE, N_SIDE)
    assert info["n_dropped"] == 0 and info["index"].size == N_SIDE**2
    assert info["psf_sigma_arcsec"] == pytest.approx(0.8)
    assert info["pixel_arcsec"] == pytest.approx(1.0, rel=1e-9)
    assert data.pixel_size == pytest.approx(kpc_per_arcsec(DISTANCE), rel=1e-9)
    # the map is centred on CENTRE: the spaxels lie symmetrically around the galaxy centre
    np.testing.assert_allclose(np.mean(data.x), 0.0, atol=1e-9)
    np.testing.assert_allclose(np.mean(data.y), 0.0, atol=1e-9)
    # --psf-sigma wins over the header
    _, info = read_ifu(files.maps, CENTRE, PA, DISTANCE, psf_sigma=0.0)
    assert info["psf_sigma_arcsec"] == 0.0


@pytest.mark.parametrize("missing", ["SIGMA_ERR", "V_ERR", "BINID", "FLAG"])
def test_maps_missing_hdu(files, capsys, missing):
    path = write_ifu(files.folder / "nohdu.fits", drop=(missing,))
    with pytest.raises(InputError, match=rf"nohdu\.fits: missing map HDU\(s\) {missing} "):
        read_ifu(path, CENTRE, PA, DISTANCE)
    assert_bad_input(capsys, dynamics_args(files, maps=path), "nohdu.fits", missing, outdir=files.outdir)


def test_maps_required_list():
    assert set(MAPS_REQUIRED) == {"V", "V_ERR", "SIGMA", "SIGMA_ERR", "BINID", "FLAG"}


def test_maps_no_usable_spaxel(files, capsys):
    path = write_ifu(files.folder / "flagged.fits", flag=1)
    with pytest.raises(InputError, match=r"flagged\.fits: no spaxel has FLAG == 0"):
        read_ifu(path, CENTRE, PA, DISTANCE)
    assert_bad_input(capsys, dynamics_args(files, maps=path), "flagged.fits", "no spaxel", outdir=files.outdir)


@pytest.mark.parametrize("tier, kept", [(None, 0), ("two_step", 0), ("nuts", 0), ("joint_map", 1)])
def test_reliable_sn_flag_applies_unless_the_gp_fitted_the_spectra(files, tier, kept):
    """FLAG 128 (one spectrum below the reliable S/N) drops a spaxel from per-spaxel maps and from
    GP tiers whose data are the per-spaxel fits; joint_map's values were fitted to the spectra."""
    path = write_ifu(files.folder / "low_sn.fits", flag=FLAG_BELOW_RELIABLE_SN, meta=None if tier is None else
                     {"gp_tier": tier})
    if kept:
        data, _ = read_ifu(path, CENTRE, PA, DISTANCE)
        assert data.x.size == N_SIDE * N_SIDE
    else:
        with pytest.raises(InputError, match=r"low_sn\.fits: no spaxel has FLAG == 0"):
            read_ifu(path, CENTRE, PA, DISTANCE)


def test_maps_without_psf(files, capsys):
    path = write_ifu(files.folder / "nopsf.fits", psf=None)
    with pytest.raises(InputError, match=r"nopsf\.fits: the header gives no PSF .*--psf-sigma"):
        read_ifu(path, CENTRE, PA, DISTANCE)
    assert_bad_input(capsys, dynamics_args(files, maps=path), "nopsf.fits", "--psf-sigma", outdir=files.outdir)
    _, info = read_ifu(path, CENTRE, PA, DISTANCE, psf_sigma=0.6)
    assert info["psf_sigma_arcsec"] == 0.6


@pytest.mark.parametrize("value", ["-0.5", "nan"])
def test_maps_bad_psf_sigma(files, capsys, value):
    with pytest.raises(InputError, match=r"^--psf-sigma: "):
        read_ifu(files.maps, CENTRE, PA, DISTANCE, psf_sigma=float(value))
    assert_bad_input(capsys, dynamics_args(files, maps=files.maps, extra=("--psf-sigma", value)), "--psf-sigma",
                     outdir=files.outdir)


@pytest.mark.parametrize("centre", [(150.01, 2.0), (150.0, 1.99), (330.0, -2.0)])
def test_maps_centre_outside(files, capsys, centre):
    with pytest.raises(InputError, match=r"--centre .*: outside the map of .*maps\.fits"):
        read_ifu(files.maps, centre, PA, DISTANCE)
    assert_bad_input(capsys, dynamics_args(files, maps=files.maps, centre=centre), "--centre", "maps.fits",
                     outdir=files.outdir)


def test_maps_centre_at_edge_is_inside(files):
    # 2.9 arcsec east of the centre of a 6-spaxel map: still on the outermost spaxel
    c = SkyCoord(CENTRE[0] * u.deg, CENTRE[1] * u.deg).spherical_offsets_by(2.9 * u.arcsec, 0 * u.arcsec)
    data, _ = read_ifu(files.maps, (c.ra.deg, c.dec.deg), PA, DISTANCE)
    assert data.x.size == N_SIDE**2


# --------------------------------------------------------------------------- earlier outputs


@pytest.mark.parametrize("use", ["maps", "stars"])
def test_outdir_with_earlier_outputs(files, capsys, use):
    earlier = files.outdir / "summary.ecsv"
    content = b"# earlier run\nname p50\nml 3.0\n\x00\xff"
    earlier.write_bytes(content)
    mtime = earlier.stat().st_mtime_ns
    assert_bad_input(capsys, dynamics_args(files, **{use: getattr(files, use)}), "--outdir", "summary.ecsv",
                     "--overwrite", outdir=files.outdir)
    assert earlier.read_bytes() == content
    assert earlier.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in files.outdir.iterdir()) == ["summary.ecsv"]


# --------------------------------------------------------------------------- sky -> galaxy frame


def test_sky_to_galaxy_hand_calculation():
    # 1 arcsec at 20 Mpc: 20e3 kpc x (pi / 180 / 3600) rad
    kpc = 20e3 * math.pi / 180.0 / 3600.0
    assert kpc_per_arcsec(20.0) == pytest.approx(kpc, rel=1e-12)
    # 10 arcsec north at PA = 0: on the major axis, x = +10"
    x, y = sky_to_galaxy(150.0, 2.0 + 10.0 / 3600.0, (150.0, 2.0), 0.0, 20.0)
    assert float(x) == pytest.approx(10.0 * kpc, rel=1e-9)
    assert float(y) == pytest.approx(0.0, abs=1e-9 * kpc)
    # 10 arcsec east (on the equator: RA + 10") at PA = 90: x = +10"
    x, y = sky_to_galaxy(30.0 + 10.0 / 3600.0, 0.0, (30.0, 0.0), 90.0, 20.0)
    assert float(x) == pytest.approx(10.0 * kpc, rel=1e-9)
    assert float(y) == pytest.approx(0.0, abs=1e-9 * kpc)
    # the same east point at PA = 0 lies on the minor axis at y = -10"; north at PA = 90 at y = +10"
    x, y = sky_to_galaxy(30.0 + 10.0 / 3600.0, 0.0, (30.0, 0.0), 0.0, 20.0)
    assert (float(x), float(y)) == pytest.approx((0.0, -10.0 * kpc), abs=1e-9 * kpc)
    x, y = sky_to_galaxy(30.0, 10.0 / 3600.0, (30.0, 0.0), 90.0, 20.0)
    assert (float(x), float(y)) == pytest.approx((0.0, 10.0 * kpc), abs=1e-9 * kpc)


def test_sky_to_galaxy_east_offset_away_from_equator():
    # at Dec 60, 10" east is an RA step of 10" / cos(60) = 20"
    dec0 = 60.0
    ra = 150.0 + 20.0 / 3600.0
    x, y = sky_to_galaxy(ra, dec0, (150.0, dec0), 90.0, 10.0)
    kpc = kpc_per_arcsec(10.0)
    assert float(x) == pytest.approx(10.0 * kpc, rel=1e-6)
    # the small-circle step bends the point north of the great circle by ~10"^2 tan(dec)/2
    assert abs(float(y)) < 1e-3 * kpc


def test_sky_to_galaxy_rotation_preserves_radius():
    rng = np.random.default_rng(3)
    ra = 150.0 + rng.uniform(-0.01, 0.01, 50)
    dec = 2.0 + rng.uniform(-0.01, 0.01, 50)
    x0, y0 = sky_to_galaxy(ra, dec, CENTRE, 0.0, DISTANCE)
    for pa in (30.0, -75.0, 200.0, 360.0):
        x, y = sky_to_galaxy(ra, dec, CENTRE, pa, DISTANCE)
        np.testing.assert_allclose(np.hypot(x, y), np.hypot(x0, y0), rtol=1e-12)
        t = np.radians(pa)
        # x(PA) = east sin(PA) + north cos(PA), with east = -y(0), north = x(0)
        np.testing.assert_allclose(x, -y0 * np.sin(t) + x0 * np.cos(t), atol=1e-12)
