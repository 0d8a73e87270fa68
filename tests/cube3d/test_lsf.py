"""Tests of cube3d.lsf: LSF tables, the MUSE formula, resolution matching."""

import warnings

import numpy as np
import pytest

from cube3d.errors import InputError
from cube3d.lsf import (
    FWHM_TO_SIGMA,
    LineSpreadFunction,
    as_lsf,
    gaussian_filter_variable,
    match_resolution,
    muse_wfm_fwhm,
    read_lsf_table,
    rest_frame_fwhm,
)

WAVE = np.arange(3540.5, 7409.7, 0.9)  # the MILES grid
LINES = (4300.0, 5200.0, 6100.0, 7000.0)


def _lines(fwhm):
    sig = fwhm * FWHM_TO_SIGMA
    return sum(np.exp(-0.5 * ((WAVE - c) / sig) ** 2) for c in LINES)


def _measured_fwhm(flux, centre):
    """FWHM of the Gaussian with the line's second moment (pixel sums, discrete)."""
    m = np.abs(WAVE - centre) < 25
    x, y = WAVE[m], flux[m]
    mu = (x * y).sum() / y.sum()
    return np.sqrt(((x - mu) ** 2 * y).sum() / y.sum()) / FWHM_TO_SIGMA


def test_muse_formula_bacon2017():
    # Bacon et al. 2017 eq. 8 by hand at three wavelengths
    for lam in (4750.0, 7000.0, 9300.0):
        assert muse_wfm_fwhm(lam) == pytest.approx(5.866e-8 * lam**2 - 9.187e-4 * lam + 6.040, rel=1e-14)
    assert 2.3 < muse_wfm_fwhm(7000.0) < 2.6 < 2.8 < muse_wfm_fwhm(5000.0) < 3.0


def test_muse_table_matches_formula(shared_data):
    lsf = read_lsf_table(shared_data / "lsf" / "MUSE-WFM.lsf")
    # the table follows eq. 8 except where it is floored at the MILES 2.51 A
    above = lsf.fwhm > 2.52
    assert above.sum() > 1000
    np.testing.assert_allclose(lsf.fwhm[above], muse_wfm_fwhm(lsf.wave[above]), rtol=1e-6)
    assert np.all(lsf.fwhm >= 2.51 - 1e-9)


def test_constant_tables(shared_data):
    lsf = read_lsf_table(shared_data / "lsf" / "SAURON_E3D.lsf")
    np.testing.assert_allclose(lsf([3500.0, 5000.0, 9000.0]), 4.2)


def test_rest_frame_fwhm_is_deredshifted():
    lsf = LineSpreadFunction(np.array([4000.0, 10000.0]), np.array([2.0, 5.0]))
    z = 0.1
    lam = np.array([5000.0, 6000.0])
    expect = (2.0 + 3.0 * (lam * 1.1 - 4000.0) / 6000.0) / 1.1
    np.testing.assert_allclose(rest_frame_fwhm(lsf, lam, z), expect, rtol=1e-14)


@pytest.mark.parametrize("z", [0.0, 0.0881])
def test_match_resolution_reaches_target_fwhm(shared_data, z):
    lsf = read_lsf_table(shared_data / "lsf" / "MANGA.lsf")  # 2.6-3.1 A, > MILES everywhere
    flux = _lines(2.51)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no template-broader warning here
        out = match_resolution(WAVE, flux, 2.51, lsf, z)
    for c in LINES:
        target = float(rest_frame_fwhm(lsf, c, z))
        if target <= 2.52:
            continue
        assert _measured_fwhm(out, c) == pytest.approx(target, rel=0.01)


def test_delta_line_gets_target_fwhm():
    flux = np.zeros(WAVE.size)
    idx = [np.argmin(np.abs(WAVE - c)) for c in LINES]
    flux[idx] = 1.0
    lsf = as_lsf("MUSE")
    out = match_resolution(WAVE, flux, 0.0, lsf, 0.05)
    for i, c in zip(idx, LINES):
        target = float(rest_frame_fwhm(lsf, WAVE[i], 0.05))
        assert _measured_fwhm(out, WAVE[i]) == pytest.approx(target, rel=0.01)
        assert out[np.abs(WAVE - WAVE[i]) < 25].sum() == pytest.approx(1.0, rel=1e-6)


def test_small_kernels_have_exact_variance():
    # widths below a pixel: a naive sampled Gaussian is ~3 per cent too narrow at 0.6 px
    n = 201
    for s in (0.3, 0.6, 1.0, 2.5):
        delta = np.zeros(n)
        delta[100] = 1.0
        out = gaussian_filter_variable(delta, np.full(n, s))
        k = np.arange(n) - 100
        assert (out * k**2).sum() == pytest.approx(s**2, rel=1e-3)
        assert out.sum() == pytest.approx(1.0, rel=1e-12)


def test_broader_template_left_alone_with_one_warning():
    flux = _lines(2.51)
    with pytest.warns(UserWarning, match="exceeds") as rec:
        out = match_resolution(WAVE, flux, 2.51, 2.0, 0.0)
    assert len(rec) == 1
    np.testing.assert_array_equal(out, flux)


def test_variable_width_batched_equals_single():
    rng = np.random.default_rng(0)
    flux = rng.normal(size=(3, WAVE.size))
    out = match_resolution(WAVE, flux, 2.0, "MUSE", 0.0)
    for i in range(3):
        np.testing.assert_allclose(out[i], match_resolution(WAVE, flux[i], 2.0, "MUSE", 0.0), rtol=1e-13)


def test_as_lsf_forms(tmp_path):
    assert as_lsf(3.0)(5000.0) == 3.0
    w = np.array([4000.0, 6000.0])
    assert as_lsf((w, np.array([2.0, 4.0])))(5000.0) == pytest.approx(3.0)
    assert as_lsf(np.array([2.0, 4.0]), wave=w)(5500.0) == pytest.approx(3.5)
    assert as_lsf("MUSE")(6000.0) == pytest.approx(muse_wfm_fwhm(6000.0), rel=1e-4)


def test_bad_lsf_inputs(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_lsf_table(tmp_path / "missing.lsf")
    bad = tmp_path / "three.lsf"
    bad.write_text("1 2 3\n4 5 6\n")
    with pytest.raises(InputError, match="three.lsf"):
        read_lsf_table(bad)
    text = tmp_path / "text.lsf"
    text.write_text("# l fwhm\nfoo bar\n")
    with pytest.raises(InputError, match="text.lsf"):
        read_lsf_table(text)
    dec = tmp_path / "dec.lsf"
    dec.write_text("5000 2.5\n4000 2.6\n")
    with pytest.raises(InputError, match="increasing"):
        read_lsf_table(dec)
    neg = tmp_path / "neg.lsf"
    neg.write_text("4000 2.5\n5000 -1\n")
    with pytest.raises(InputError, match="neg.lsf"):
        read_lsf_table(neg)
    with pytest.raises(InputError, match="--lsf"):
        as_lsf(-2.0)
    with pytest.raises(InputError, match="--lsf"):
        as_lsf(np.array([1.0, 2.0]))


def test_lsf_table_must_cover_the_fitted_range(tmp_path, shared_data):
    """A 1000-2000 A table for a 4750-7000 A cube was accepted silently (issue 13)."""
    from cube3d.lsf import check_lsf_coverage
    from cube3d.prepare import prepare_cube
    from cube3d.templates import load_templates

    far = tmp_path / "far.lsf"
    far.write_text("# lambda fwhm\n1000 2.6\n2000 2.6\n")
    lsf = read_lsf_table(far)
    with pytest.raises(InputError, match=r"^--lsf: the LSF \(.*far\.lsf\) covers 1000\.0-2000\.0 A but the fit "
                                         r"needs 5150\.0-6000\.0 A \(observed frame\)"):
        check_lsf_coverage(lsf, 5150.0, 6000.0)
    check_lsf_coverage(lsf, 999.0, 2001.0, tol=1.0)  # a pixel of extrapolation is fine
    check_lsf_coverage(as_lsf(2.5), 5150.0, 6000.0)  # a constant covers everything
    library = load_templates(shared_data / "templates" / "mileshc_v2")
    wave = 4750.0 + 1.25 * np.arange(1800)
    flux = np.interp(wave / 1.05, library.wave, library.flux[0])[:, None, None] * np.ones((1, 1, 2))

    class Cube:  # the fields prepare_cube uses
        pass

    cube = Cube()
    cube.flux, cube.ivar, cube.wave, cube.air = flux, np.full(flux.shape, 1e4), wave, True
    cube.lsf_fwhm, cube.layout, cube.path = None, "GENERIC", "c.fits"
    with pytest.raises(InputError, match=r"^--lsf: .*covers 1000\.0-2000\.0 A but the fit needs"):
        prepare_cube(cube, library, 0.05, lsf=str(far))
    part = tmp_path / "part.lsf"
    part.write_text("4000 2.6\n6000 2.6\n")  # covers only the blue half
    with pytest.raises(InputError, match=r"^--lsf: .*covers 4000\.0-6000\.0 A"):
        prepare_cube(cube, library, 0.05, lsf=str(part))
    ok = tmp_path / "ok.lsf"
    ok.write_text("4752 2.6\n6997 2.6\n")  # within two pixels of the cube's ends
    prepare_cube(cube, library, 0.05, lsf=str(ok))
