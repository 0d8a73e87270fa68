"""Tests of cube3d.prepare: synthetic cubes from real templates and the real MUSE cube."""

import warnings
from dataclasses import dataclass

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d

from cube3d.constants import C_KMS
from cube3d.errors import InputError
from cube3d.prepare import EMISSION_LINES_AIR, PreparedData, emission_line_mask, prepare_cube
from cube3d.rebin import log_rebin
from cube3d.templates import TemplateLibrary, load_templates


@dataclass(frozen=True)
class FakeCube:
    """Stand-in with the fields of cube3d.io.Cube that prepare uses."""

    flux: np.ndarray
    ivar: np.ndarray
    wave: np.ndarray
    air: bool = True
    wcs: object = None
    header: object = None
    lsf_fwhm: np.ndarray | None = None
    flux_unit: str = ""
    path: str = "synthetic.fits"
    layout: str = "GENERIC"

    @property
    def spatial_shape(self):
        return self.flux.shape[1:]

    @property
    def n_wave(self):
        return self.flux.shape[0]


Z = 0.05
CUBE_WAVE = 4750.0 + 1.25 * np.arange(1800)  # 4750-6999 A observed, air


@pytest.fixture(scope="module")
def library(shared_data):
    return load_templates(shared_data / "templates" / "mileshc_v2")


def _galaxy(library, k, v, sigma, wave_obs=CUBE_WAVE, z=Z):
    """Template k at velocity v (km/s, ln-lambda shift) and dispersion sigma, redshift z,
    averaged over each observed pixel (8 sub-samples)."""
    fine = log_rebin(library.wave, library.flux[k], velscale=10.0)
    broad = gaussian_filter1d(fine.flux, sigma / 10.0)
    sub = (np.arange(8) + 0.5) / 8 - 0.5
    edges_obs = wave_obs[:, None] + 1.25 * sub[None, :]
    ln_rest = np.log(edges_obs) - np.log1p(z) - v / C_KMS
    return np.interp(ln_rest, fine.ln_wave, broad).mean(1)


def _cube(spectra, noise_frac=0.01, **kw):
    """(n_spec, n_wave) spectra -> a FakeCube with one row of spaxels."""
    spectra = np.asarray(spectra, dtype=np.float64)
    flux = spectra.T[:, None, :]
    ivar = 1.0 / (noise_frac * np.median(spectra, axis=1)[None, None, :]) ** 2 * np.ones_like(flux)
    return FakeCube(flux=flux, ivar=ivar, wave=CUBE_WAVE.copy(), **kw)


def _lag(a, b, mask, max_lag=12):
    """Shift (pixels) of spectrum a relative to the template slice b by cross-correlation
    of high-passed spectra, peak refined with a parabola through the log of the three
    highest points (exact for a Gaussian peak)."""
    a = (a - gaussian_filter1d(a, 25)) * mask
    b = b - gaussian_filter1d(b, 25)
    n = a.size
    assert b.size == n + 2 * max_lag  # galaxy pixel j <-> b[j + max_lag] at zero lag
    lags = np.arange(-max_lag, max_lag + 1)
    cc = np.array([np.sum(a * b[max_lag - k : max_lag - k + n]) for k in lags])
    i = int(np.argmax(cc))
    y0, y1, y2 = np.log(cc[i - 1 : i + 2])
    return lags[i] + 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2)


def test_prepared_spectra_line_up_with_templates(library):
    k = 7
    velocities = [0.0, 137.0, -241.3]
    cube = _cube([_galaxy(library, k, v, 150.0) for v in velocities])
    prep = prepare_cube(cube, library, Z, lsf=3.0)
    assert isinstance(prep, PreparedData)
    off, n = prep.template_offset, prep.n_pix
    step = prep.velscale / C_KMS
    np.testing.assert_allclose(np.diff(prep.ln_wave), step, rtol=1e-9)
    for s, v in enumerate(velocities):
        tpl = prep.templates[k, off - 12 : off + n + 12]
        lag = _lag(prep.spectra[s], tpl, prep.ivar[s] > 0)
        assert abs(lag - v / prep.velscale) < 0.1, (v, lag)


def test_grid_offsets_and_defaults(library):
    cube = _cube([_galaxy(library, 0, 0.0, 150.0)])
    prep = prepare_cube(cube, library, Z, lsf=3.0, margin_kms=1500.0)
    # default velscale: the smallest cube pixel in km/s inside the fitted range
    last = CUBE_WAVE[-1]
    assert prep.velscale == pytest.approx(C_KMS * np.log((last + 0.625) / (last - 0.625)), rel=1e-9)
    assert prep.template_offset >= 1500.0 / prep.velscale
    assert prep.templates.shape[1] - prep.template_offset - prep.n_pix >= 1500.0 / prep.velscale
    # templates cover the extended grid; galaxy within cube and templates
    ln_t0 = prep.ln_wave[0] - prep.template_offset * prep.velscale / C_KMS
    assert np.exp(ln_t0) > library.wave[0] - 0.45
    assert np.exp(prep.ln_wave[0]) * (1 + Z) > CUBE_WAVE[0] - 0.625
    np.testing.assert_allclose(np.median(prep.templates, axis=1), 1.0)
    np.testing.assert_allclose(np.median(prep.spectra[0][prep.ivar[0] > 0]), 1.0)
    assert prep.air is True and prep.redshift == Z and prep.spatial_shape == (1, 1)


def test_velscale_and_wave_range_options(library):
    cube = _cube([_galaxy(library, 0, 0.0, 150.0)])
    prep = prepare_cube(cube, library, Z, lsf=3.0, velscale=70.0, wave_range=(4800.0, 5600.0))
    assert prep.velscale == 70.0
    assert np.exp(prep.ln_wave[0] - 35.0 / C_KMS) == pytest.approx(4800.0)
    assert np.exp(prep.ln_wave[-1]) < 5600.0


def test_log_uniform_cube_is_not_resampled(library):
    # a MaNGA-like cube, uniform in ln(lambda) at 69 km/s: the default grid lands on
    # its pixel edges, so the prepared spectra and weights are the input ones
    step = 69.0 / C_KMS
    wave = np.exp(np.log(4800.0) + step * np.arange(1500))
    spec = np.interp(wave / (1 + Z), library.wave, library.flux[4])
    rng = np.random.default_rng(2)
    flux = spec * rng.uniform(0.9, 1.1, spec.size)
    ivar = rng.uniform(1.0, 2.0, spec.size) / np.median(spec) ** 2
    cube = FakeCube(flux=flux[:, None, None], ivar=ivar[:, None, None], wave=wave)
    prep = prepare_cube(cube, library, Z, lsf=3.0, mask_emission=False)
    assert prep.velscale == pytest.approx(69.0, rel=1e-9)
    i0 = int(np.argmin(np.abs(np.log(wave / (1 + Z)) - prep.ln_wave[0])))
    assert np.log(wave[i0] / (1 + Z)) == pytest.approx(prep.ln_wave[0], abs=1e-9 * step)
    sl = slice(i0, i0 + prep.n_pix)
    np.testing.assert_allclose(prep.spectra[0] * prep.scale[0], flux[sl], rtol=1e-9)
    np.testing.assert_allclose(prep.ivar[0] / prep.scale[0] ** 2, ivar[sl], rtol=1e-9)


def test_snr_and_scale(library):
    base = _galaxy(library, 3, 0.0, 150.0)
    flux = np.stack([base, 5.0 * base])
    med = np.median(base)
    sigma = np.array([0.1, 0.2]) * med  # S/N per input pixel 10 and 25 at the median
    ivar = (1.0 / sigma**2)[None, None, :] * np.ones((CUBE_WAVE.size, 1, 2))
    cube = FakeCube(flux=flux.T[:, None, :], ivar=ivar, wave=CUBE_WAVE.copy())
    prep = prepare_cube(cube, library, Z, lsf=3.0, velscale=60.0)
    assert prep.snr[1] / prep.snr[0] == pytest.approx(2.5, rel=1e-9)
    assert prep.scale[1] / prep.scale[0] == pytest.approx(5.0, rel=1e-9)
    # about the S/N per input pixel (a 60 km/s pixel holds ~1.0-1.1 input pixels)
    assert 9.0 < prep.snr[0] < 12.0


def test_emission_mask(library):
    cube = _cube([_galaxy(library, 0, 0.0, 150.0)])
    prep = prepare_cube(cube, library, Z, lsf=3.0, emission_width=1000.0)
    d = np.abs(prep.ln_wave - np.log(EMISSION_LINES_AIR["[OIII]5007"])) * C_KMS
    assert np.all(prep.ivar[0][d < 450.0] == 0)
    assert np.all(prep.ivar[0][(d > 560.0) & (d < 1500.0)] > 0)
    # observed-frame sky line [OI]5577 lands at 5577.34 / (1 + z)
    ds = np.abs(prep.ln_wave - np.log(5577.34 / (1 + Z))) * C_KMS
    assert np.all(prep.ivar[0][ds < 450.0] == 0)
    off = prepare_cube(cube, library, Z, lsf=3.0, mask_emission=False)
    assert np.all(off.ivar[0] > 0)
    mask = emission_line_mask(prep.ln_wave, Z, 1000.0)
    np.testing.assert_array_equal(mask, prep.ivar[0] == 0)


def test_bad_pixels_and_unusable_spaxels(library):
    base = _galaxy(library, 0, 0.0, 150.0)
    cube = _cube([base, base, base], noise_frac=0.05)
    ivar = cube.ivar.copy()
    flux = cube.flux.copy()
    ivar[600, 0, 0] = 0.0
    flux[600, 0, 0] = np.nan
    ivar[:, 0, 2] = 0.0  # fully masked spaxel
    cube = FakeCube(flux=flux, ivar=ivar, wave=CUBE_WAVE.copy())
    prep = prepare_cube(cube, library, Z, lsf=3.0, mask_emission=False)
    np.testing.assert_array_equal(prep.bin_id, [[0, 1, -1]])
    assert prep.n_spec == 2
    lam = np.exp(prep.ln_wave) * (1 + Z)
    half = 0.5 * prep.velscale / C_KMS
    touches = (lam * np.exp(half) > CUBE_WAVE[600] - 0.625) & (lam * np.exp(-half) < CUBE_WAVE[600] + 0.625)
    assert 1 <= touches.sum() <= 3
    np.testing.assert_array_equal(prep.ivar[0] == 0, touches)
    assert np.all(prep.ivar[1] > 0)
    assert np.all(np.isfinite(prep.spectra)) and np.all(np.isfinite(prep.ivar))


def test_min_sn_excludes_spaxels(library):
    base = _galaxy(library, 0, 0.0, 150.0)
    cube = _cube([base, base])
    ivar = cube.ivar.copy()
    ivar[:, 0, 1] /= 100.0  # S/N 10 instead of 100
    cube = FakeCube(flux=cube.flux, ivar=ivar, wave=CUBE_WAVE.copy())
    prep = prepare_cube(cube, library, Z, lsf=3.0, min_sn=30.0)
    np.testing.assert_array_equal(prep.bin_id, [[0, -1]])
    with pytest.raises(InputError, match="--min-sn"):
        prepare_cube(cube, library, Z, lsf=3.0, min_sn=1e6)


def test_voronoi_binning_coadds(library):
    rng = np.random.default_rng(5)
    base = _galaxy(library, 0, 0.0, 150.0)
    ny, nx = 6, 6
    amp = rng.uniform(0.5, 2.0, (ny, nx))
    flux = base[:, None, None] * amp[None]
    sigma = 0.25 * np.median(base)  # S/N per pixel 2-8
    ivar = np.full(flux.shape, 1.0 / sigma**2)
    cube = FakeCube(flux=flux, ivar=ivar, wave=CUBE_WAVE.copy())
    prep = prepare_cube(cube, library, Z, lsf=3.0, target_sn=15.0, velscale=60.0)
    assert prep.bin_id.min() == 0 and prep.bin_id.max() == prep.n_spec - 1
    assert 1 < prep.n_spec < ny * nx
    assert set(np.unique(prep.bin_id)) == set(range(prep.n_spec))
    # bin S/N: about sum(signal) / sqrt(n) sigma; every bin near the target
    single = prepare_cube(cube, library, Z, lsf=3.0, velscale=60.0)
    for b in range(prep.n_spec):
        members = prep.bin_id.ravel() == b
        expect = single.snr[members].sum() / np.sqrt(members.sum())
        assert prep.snr[b] == pytest.approx(expect, rel=0.02)
        # the co-added spectrum is the sum of the members (noise-free here)
        total = (single.spectra[members] * single.scale[members, None]).sum(0)
        np.testing.assert_allclose(prep.spectra[b] * prep.scale[b], total, rtol=1e-10)
    assert np.all(prep.snr > 0.7 * 15.0)


def test_n_basis_recovers_the_templates_used(library):
    from cube3d.prepare import fit_stack, select_basis

    keep = [5, 30]
    lib = TemplateLibrary(flux=library.flux[:40], wave=library.wave, fwhm=2.51, air=True, names=library.names[:40])
    ratio = np.median(lib.flux[keep[0]]) / np.median(lib.flux[keep[1]])
    mix = 0.6 * _galaxy(lib, keep[0], 0.0, 200.0) + 0.4 * ratio * _galaxy(lib, keep[1], 0.0, 200.0)
    no_lsf = 2.51 * (1 + Z) * (1 + 1e-9)  # templates stay at their own resolution
    prep = prepare_cube(_cube([mix]), lib, Z, lsf=no_lsf)
    good = prep.ivar[0] > 0
    args = dict(template_offset=prep.template_offset, velscale=prep.velscale)
    # without polynomial freedom the two templates used are recovered exactly
    np.testing.assert_array_equal(select_basis(prep.spectra[0], good, prep.templates, 2, poly_degree=0, **args), keep)
    # with the default multiplicative polynomial, a tilt (flux calibration) does not
    # change the choice, and the chosen pair fits the stack as well as the true pair
    tilted = mix * (1 + 0.2 * (CUBE_WAVE - 5800) / 1200)
    names = [prepare_cube(_cube([s, 1.3 * s]), lib, Z, lsf=no_lsf, n_basis=2).template_names for s in (mix, tilted)]
    assert names[0] == names[1] and lib.names[keep[0]] in names[0]
    chosen = [lib.names.index(n) for n in names[0]]
    broad = gaussian_filter1d(prep.templates, 200.0 / prep.velscale, axis=1)
    design = broad[:, prep.template_offset : prep.template_offset + prep.n_pix].T
    rms_true = fit_stack(prep.spectra[0], good, design[:, keep])[2]
    rms_chosen = fit_stack(prep.spectra[0], good, design[:, chosen])[2]
    assert rms_chosen < 1.5 * rms_true + 1e-3
    assert prepare_cube(_cube([mix]), lib, Z, lsf=no_lsf, n_basis=2).templates.shape[0] == 2


def test_vacuum_cube_is_converted_to_air(library):
    io = pytest.importorskip("cube3d.io")
    air_spec = _galaxy(library, 2, 0.0, 150.0)
    vac_wave = io.air_to_vacuum(CUBE_WAVE)
    cube = FakeCube(flux=air_spec[:, None, None], ivar=np.full((CUBE_WAVE.size, 1, 1), 1e4 / np.median(air_spec) ** 2),
                    wave=vac_wave, air=False)
    prep = prepare_cube(cube, library, Z, lsf=3.0)
    off, n = prep.template_offset, prep.n_pix
    lag = _lag(prep.spectra[0], prep.templates[2, off - 12 : off + n + 12], prep.ivar[0] > 0)
    assert abs(lag) < 0.1


def test_lsf_defaults(library):
    spec = _galaxy(library, 0, 0.0, 150.0)
    cube = _cube([spec])
    with pytest.warns(UserWarning, match="no line-spread function"):
        plain = prepare_cube(cube, library, Z)
    muse = FakeCube(flux=cube.flux, ivar=cube.ivar, wave=CUBE_WAVE.copy(), layout="MUSE")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        by_layout = prepare_cube(muse, library, Z)
        explicit = prepare_cube(cube, library, Z, lsf="MUSE")
    np.testing.assert_allclose(by_layout.templates, explicit.templates)
    assert not np.allclose(plain.templates, explicit.templates)
    own = FakeCube(flux=cube.flux, ivar=cube.ivar, wave=CUBE_WAVE.copy(), lsf_fwhm=np.full(CUBE_WAVE.size, 3.0))
    np.testing.assert_allclose(
        prepare_cube(own, library, Z).templates, prepare_cube(cube, library, Z, lsf=3.0).templates
    )


@pytest.mark.parametrize("z", [np.nan, np.inf, -1.0, -2.0, None, "abc"])
def test_bad_redshift(library, z):
    cube = _cube([_galaxy(library, 0, 0.0, 150.0)])
    with pytest.raises(InputError, match="--redshift"):
        prepare_cube(cube, library, z, lsf=3.0)


def test_templates_not_covering(library):
    cube = _cube([_galaxy(library, 0, 0.0, 150.0)])
    with pytest.raises(InputError, match="--templates.*3540"):
        prepare_cube(cube, library, -0.5, lsf=3.0)  # rest frame 9500-14000 A: no overlap
    with pytest.raises(InputError, match="--templates.*7410"):
        # rest frame 5000-7369 A: inside the templates, but not with the 2000 km/s margin
        prepare_cube(cube, library, -0.05, lsf=3.0, wave_range=(5500.0, 7368.0))
    with pytest.raises(InputError, match="--templates"):
        prepare_cube(cube, library, 0.7, lsf=3.0, wave_range=(2800.0, 4000.0))


def test_empty_wave_range_and_options(library):
    cube = _cube([_galaxy(library, 0, 0.0, 150.0)])
    with pytest.raises(InputError, match="--wave-range"):
        prepare_cube(cube, library, Z, lsf=3.0, wave_range=(8000.0, 9000.0))
    with pytest.raises(InputError, match="--wave-range"):
        prepare_cube(cube, library, Z, lsf=3.0, wave_range=(6000.0, 5000.0))
    with pytest.raises(InputError, match="--n-basis"):
        prepare_cube(cube, library, Z, lsf=3.0, n_basis=0)
    with pytest.raises(InputError, match="--target-sn"):
        prepare_cube(cube, library, Z, lsf=3.0, target_sn=-5)
    with pytest.raises(InputError, match="--velscale"):
        prepare_cube(cube, library, Z, lsf=3.0, velscale=0.0)
    with pytest.raises(InputError, match="--min-sn"):
        prepare_cube(cube, library, Z, lsf=3.0, min_sn=np.nan)
    with pytest.raises(InputError, match="--emission-width"):
        prepare_cube(cube, library, Z, lsf=3.0, emission_width=-1.0)
    with pytest.raises(InputError, match="min_good_fraction"):
        prepare_cube(cube, library, Z, lsf=3.0, min_good_fraction=1.5)
    with pytest.raises(InputError, match="--lsf"):
        prepare_cube(cube, library, Z, lsf=-3.0)


def test_overlap_narrower_than_margin(library):
    # cube rest frame 7350-7500 A: overlaps the templates (to 7410 A) by 2460 km/s < 2 x 2000 km/s
    wave = np.arange(7350.0, 7500.0, 1.0)
    flux = np.ones((wave.size, 1, 1))
    cube = FakeCube(flux=flux, ivar=flux.copy(), wave=wave)
    with pytest.raises(InputError, match=r"--wave-range.*7349\.5-7410\.1 A.*2000 km/s"):
        prepare_cube(cube, library, 0.0, lsf=3.0)


def test_all_masked_cube(library):
    cube = _cube([_galaxy(library, 0, 0.0, 150.0)])
    dead = FakeCube(flux=cube.flux, ivar=np.zeros_like(cube.ivar), wave=CUBE_WAVE.copy(), path="dead.fits")
    with pytest.raises(InputError, match="dead.fits.*no spaxel"):
        prepare_cube(dead, library, Z, lsf=3.0)


def _read_minicube(path):
    try:
        from cube3d.io import read_cube

        return read_cube(path)
    except ImportError:
        from astropy.io import fits

        with fits.open(path) as h:
            flux = h["DATA"].data.astype(np.float64)
            var = h["STAT"].data.astype(np.float64)
            dq = h["DQ"].data
            hdr = h["DATA"].header
        wave = hdr["CRVAL3"] + hdr["CD3_3"] * (np.arange(flux.shape[0]) + 1 - hdr["CRPIX3"])
        ok = np.isfinite(flux) & np.isfinite(var) & (var > 0) & (dq == 0)
        return FakeCube(flux=np.where(ok, flux, 0.0), ivar=np.where(ok, 1.0 / np.where(ok, var, 1.0), 0.0),
                        wave=wave, air=True, path=str(path), layout="MUSE")


def test_real_muse_minicube(shared_data, library):
    cube = _read_minicube(shared_data / "cubes" / "muse_abell478_minicube.fits")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MILES is broader than MUSE/(1+z) in the red
        prep = prepare_cube(cube, library, 0.0881)
    ny, nx = 40, 40
    assert prep.spatial_shape == (ny, nx) and prep.bin_id.shape == (ny, nx)
    assert prep.n_spec == (prep.bin_id >= 0).sum() > 1500
    assert prep.spectra.shape == prep.ivar.shape == (prep.n_spec, prep.ln_wave.size)
    assert prep.templates.shape[0] == 63
    for a in (prep.spectra, prep.ivar, prep.templates, prep.snr, prep.scale):
        assert np.all(np.isfinite(a))
    assert np.all(prep.ivar >= 0) and 0.8 < (prep.ivar > 0).mean() < 1.0
    assert 2.0 < np.median(prep.snr) < 3.0
    assert 40.0 < prep.velscale < 80.0
    rest = np.exp(prep.ln_wave[[0, -1]])
    assert 4365.0 < rest[0] < 4450.0 and 7300.0 < rest[1] < 7409.6
    # binned to S/N 20 with a 6-template basis
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        binned = prepare_cube(cube, library, 0.0881, target_sn=20.0, n_basis=6)
    assert 5 < binned.n_spec < 200 and binned.templates.shape[0] == 6
    assert np.median(binned.snr) > 15.0


def test_emission_mask_in_vacuum():
    io = pytest.importorskip("cube3d.io")
    ln = np.log(np.linspace(6500.0, 6620.0, 2401))
    air = emission_line_mask(ln, 0.0, 300.0, lines={"Ha": 6562.80}, sky_lines={})
    vac = emission_line_mask(ln, 0.0, 300.0, air=False, lines={"Ha": 6562.80}, sky_lines={})
    centre = lambda m: np.exp(ln[m]).mean()  # noqa: E731
    assert centre(air) == pytest.approx(6562.80, abs=0.05)
    assert centre(vac) == pytest.approx(float(io.air_to_vacuum(np.array([6562.80]))[0]), abs=0.05)
    assert centre(vac) - centre(air) == pytest.approx(1.81, abs=0.05)


# ----------------------------------------------------------------------------- hostile inputs (issue 13)


def test_velscale_far_finer_than_the_cube_is_refused(library):
    """--velscale 0.01 allocated gigabytes; now refused (more than 5x finer than the cube's pixels)."""
    cube = _cube([_galaxy(library, 0, 0.0, 150.0)])
    with pytest.raises(InputError, match=r"^--velscale: 0\.01 km/s is more than 5 times finer"):
        prepare_cube(cube, library, Z, lsf=3.0, velscale=0.01)
    native = prepare_cube(cube, library, Z, lsf=3.0).velscale
    assert prepare_cube(cube, library, Z, lsf=3.0, velscale=native / 4.9).velscale == pytest.approx(native / 4.9)
    with pytest.raises(InputError, match="--velscale"):
        prepare_cube(cube, library, Z, lsf=3.0, velscale=native / 5.1)


def test_velscale_too_coarse_names_velscale(library):
    """--velscale 1e6 used to blame --wave-range."""
    cube = _cube([_galaxy(library, 0, 0.0, 150.0)])
    with pytest.raises(InputError, match=r"^--velscale: a step of 1e\+06 km/s leaves 0 pixels.*fewer than 10"):
        prepare_cube(cube, library, Z, lsf=3.0, velscale=1e6)
    with pytest.raises(InputError, match=r"^--velscale: .*fewer than 10"):
        prepare_cube(cube, library, Z, lsf=3.0, velscale=3e4, wave_range=(4800.0, 6000.0))


def test_extreme_spaxel_is_rejected_without_overflow(library):
    """A spaxel at 1e38 with an ordinary variance: not fitted, one warning, no RuntimeWarning."""
    spec = _galaxy(library, 0, 0.0, 150.0)
    cube = _cube([spec, spec, spec])
    flux = cube.flux.copy()
    flux[:, 0, 1] *= 1e38 / np.median(spec)
    hot = FakeCube(flux=flux, ivar=cube.ivar, wave=CUBE_WAVE.copy(), path="hot.fits")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prep = prepare_cube(hot, library, Z, lsf=3.0)
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]
    msgs = [str(w.message) for w in caught]
    assert any(m.startswith("hot.fits: 1 spaxel(s) not fitted") and "float32" in m for m in msgs), msgs
    np.testing.assert_array_equal(prep.bin_id, [[0, -1, 1]])
    assert prep.n_spec == 2
    f32 = np.finfo(np.float32).max
    assert np.all(np.isfinite(prep.ivar)) and prep.ivar.max() < f32 and np.abs(prep.spectra).max() < f32


def test_check_degrees():
    from cube3d.prepare import MAX_DEGREE, check_degrees

    check_degrees(2000, 4, 0, 10, 2)
    check_degrees(2000, -1, MAX_DEGREE, 10, 4)
    check_degrees(400, 40, 40, 17, 2)  # exactly n_pix / 4 = 100 free parameters
    with pytest.raises(InputError, match=r"^--degree: at most 50, got 1000 .*absorbs the LOSVD"):
        check_degrees(10**6, 1000, 0, 10, 2)
    with pytest.raises(InputError, match=r"^--mdegree: at most 50, got 1000"):
        check_degrees(10**6, 4, 1000, 10, 2)
    with pytest.raises(InputError, match=r"^--degree: .*102 free parameters, more than a quarter of the 400"):
        check_degrees(400, 41, 40, 18, 2)
    with pytest.raises(InputError, match=r"^--mdegree: .*quarter of the 200 fitted pixels"):
        check_degrees(200, 4, 40, 10, 2)
