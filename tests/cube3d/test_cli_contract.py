"""Property-based test of the command line's contract over hostile inputs.

Whatever the header corruption, option values or data pathology, ``cube3d fit`` either

* exits 0 with a valid maps file whose FLAG is honest (every FLAG 0 spaxel has finite
  values and errors, errors inside the parameters' ranges, a non-degenerate chi^2), or
* exits 2 with one line ``cube3d: error: ...`` on standard error, no traceback, no output
  file, the input unchanged and no temporary file left behind.

The cube is a 6 x 6 crop of the bundled real MUSE cutout, fitted with 2 moments;
hypothesis runs a fixed, derandomised set of examples so CI sees the same cases each time.
"""

from __future__ import annotations


import numpy as np
import pytest
from astropy.io import fits

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from cube3d import datasets  # noqa: E402
from cube3d.cli import main  # noqa: E402
from cube3d.fit import FitConfig  # noqa: E402

pytestmark = pytest.mark.timeout(900)

HEADER_CASES = ("none", "no_ctype3", "cd3_3_zero", "cd3_3_text", "no_celestial", "crval3_negative")
DATA_CASES = ("none", "nan_pixels", "all_zero", "constant", "huge_spaxel", "negative_stat", "no_stat",
              "all_dq_bad")
#: option -> values tried besides leaving it out (left out most of the time, so that
#: examples also reach the fit and the maps instead of stopping at one bad option)
OPTIONS = {
    "--velscale": ["0.01", "60", "1e6", "-5"],
    "--degree": ["-1", "1000"],
    "--mdegree": ["2", "1000"],
    "--clip": ["0.1", "3"],
    "--sigma-start": ["1e6", "-1"],
    "--wave-range": ["4800 5400", "1000 2000", "5400 4800"],
    "--target-sn": ["5", "1e9"],
}


def _crop(path, n=6):
    """The first n x n spaxels of the demo cube as HDUs (DATA, STAT, DQ)."""
    with fits.open(path) as hdul:
        out = [fits.PrimaryHDU(header=hdul[0].header)]
        for name in ("DATA", "STAT", "DQ"):
            out.append(fits.ImageHDU(np.array(hdul[name].data[:, :n, :n]), hdul[name].header.copy(), name=name))
    return fits.HDUList(out)


def _corrupt_header(hdul, case):
    for hdu in hdul[1:]:
        h = hdu.header
        if case == "no_ctype3":
            h.remove("CTYPE3", ignore_missing=True)
        elif case == "cd3_3_zero":
            h["CD3_3"] = 0.0
        elif case == "cd3_3_text":
            h["CD3_3"] = "wide"
        elif case == "no_celestial":
            for key in ("CTYPE1", "CTYPE2"):
                h.remove(key, ignore_missing=True)
        elif case == "crval3_negative":
            h["CRVAL3"] = -5000.0


def _corrupt_data(hdul, case):
    data, stat, dq = hdul["DATA"], hdul["STAT"], hdul["DQ"]
    if case == "nan_pixels":
        data.data[::7] = np.nan
    elif case == "all_zero":
        data.data[:] = 0.0
    elif case == "constant":
        data.data[:] = 100.0
    elif case == "huge_spaxel":
        data.data[:, 2, 3] = 1e38
    elif case == "negative_stat":
        stat.data[:, :3] = -1.0
    elif case == "no_stat":
        del hdul["STAT"]
    elif case == "all_dq_bad":
        dq.data[:] = 1


@st.composite
def cases(draw):
    options = {k: draw(st.one_of(st.none(), st.none(), st.none(), st.none(), st.none(), st.sampled_from(v)))
               for k, v in OPTIONS.items()}
    # intact headers and data half of the time, so that examples also reach the fit
    header = draw(st.one_of(st.just("none"), st.sampled_from(HEADER_CASES)))
    data = draw(st.one_of(st.just("none"), st.sampled_from(DATA_CASES)))
    return header, data, options


def _check_maps(path):
    """A valid maps file with an honest FLAG."""
    cfg = FitConfig()
    with fits.open(path) as m:
        names = [h.name for h in m]
        for name in ("V", "SIGMA", "V_ERR", "SIGMA_ERR", "CHI2", "FLAG", "BINID"):
            assert name in names, name
        flag = m["FLAG"].data
        assert np.issubdtype(flag.dtype, np.integer)
        good = flag == 0
        for name in ("V", "SIGMA", "V_ERR", "SIGMA_ERR", "CHI2"):
            assert np.all(np.isfinite(m[name].data[good])), name
        assert np.all(m["V_ERR"].data[good] < cfg.v_range)
        assert np.all(m["SIGMA_ERR"].data[good] < cfg.sigma_max)
        assert np.all(m["CHI2"].data[good] > 1e-6)
        assert np.all(np.abs(m["V"].data[good]) < cfg.v_range)
        assert np.all(m["BINID"].data[~good & (flag & 1 == 1)] == -1)


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=cases())
def test_fit_contract(tmp_path_factory, capsys, case):
    header_case, data_case, options = case
    work = tmp_path_factory.mktemp("contract")
    hdul = _crop(datasets.demo_cube_path())
    _corrupt_header(hdul, header_case)
    _corrupt_data(hdul, data_case)
    cube = work / "cube.fits"
    hdul.writeto(cube, output_verify="silentfix+ignore")
    before = cube.read_bytes()
    out = work / "maps.fits"
    argv = ["fit", str(cube), "--templates", str(datasets.demo_templates_dir()), "--redshift",
            str(datasets.DEMO_REDSHIFT), "-o", str(out), "--moments", "2", "--quiet"]
    for option, value in options.items():
        if value is not None:
            argv += [option, *value.split()]
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code in (0, 2), (case, err)
    assert "Traceback" not in err, (case, err)
    assert cube.read_bytes() == before, case
    assert not [p for p in work.iterdir() if p.name.endswith(".tmp")], case
    if code == 0:
        _check_maps(out)
    else:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("cube3d: error: ")]
        assert len(errors) == 1 and lines[-1] == errors[0], (case, err)
        assert all(ln.startswith("cube3d: ") for ln in lines), (case, err)
        assert not out.exists(), case
