"""A compressed template library (truncated SVD) with an exact finish, against the templates themselves.

The fit convolves the basis of a truncated SVD of the library instead of every template
(``FitConfig.svd_tol``) and finishes with Newton steps on the templates themselves
(cube3d.fit docstring, "Compressed templates", "Newton finish").  Checked here: the SVD basis meets its
stated accuracy at the smallest rank; the adjoint gradient of the template weights equals
explicit convolutions; on 50 real MILES SSPs (MUSE minicube preparation, S/N 30 mocks,
the setting of tests/benchmarks/bench_fit_vs_ppxf.py) the compressed fit agrees with the
uncompressed one within a small fraction of the errors; the basis depends on the
templates only, so a spectrum fitted alone or among others gets the same answer.
"""

import glob
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.signal import fftconvolve

from cube3d.basis import svd_basis
from cube3d.fit import FitConfig, FitInput, fit_spectra, template_basis
from cube3d.losvd import LOSVDFamily, gauss_hermite_pdf
from cube3d.spectral_model import SpectralProblem, convolved_templates, ft_jacobian, residual_curvature, template_gradient

pytestmark = pytest.mark.timeout(900)

MUSE_Z = 0.0857  # Abell 478 BCG (the emission-line masks sit on its lines)


@pytest.mark.parametrize("rtol", [0.1, 1e-2, 1e-3])
def test_svd_basis_meets_its_accuracy_at_the_smallest_rank(rtol):
    rng = np.random.default_rng(2)
    x = np.linspace(0, 1, 400)
    smooth = np.array([1 + 0.3 * np.sin(2 * np.pi * k * x + k) for k in range(1, 9)])
    lib = rng.random((30, 8)) @ smooth + 1e-3 * rng.normal(size=(30, 400))  # rank 8 + noise
    lib *= rng.uniform(0.5, 3.0, (30, 1))  # unequal scales: the accuracy is per template
    mix, basis, err = svd_basis(lib, rtol)
    rel = np.sqrt(np.mean((lib - mix @ basis) ** 2, axis=1) / np.mean(lib**2, axis=1))
    assert rel.max() <= rtol * (1 + 1e-9) and abs(rel.max() - err) < 1e-9
    np.testing.assert_allclose(basis @ basis.T, np.eye(len(basis)), atol=1e-9)
    if len(basis) > 1:  # one fewer singular vector misses the accuracy
        scale = np.sqrt(np.mean(lib**2, axis=1))[:, None]
        u, s, vt = np.linalg.svd(lib / scale, full_matrices=False)
        r = len(basis) - 1
        approx = (u[:, :r] * s[:r]) @ vt[:r] * scale
        assert np.max(np.sqrt(np.mean((lib - approx) ** 2, axis=1)) / scale[:, 0]) > rtol


@pytest.mark.parametrize("n_fft", [360, 375])  # even and odd lengths (Nyquist bin or none)
def test_template_gradient_equals_explicit_convolutions(n_fft):
    rng = np.random.default_rng(n_fft)
    templates = 1 + rng.random((7, 300))
    mix, basis, _ = svd_basis(templates, 0.3)
    omega = 2 * np.pi * jnp.arange(n_fft // 2 + 1) / n_fft
    problem = SpectralProblem(
        template_ft=jnp.fft.rfft(basis, n_fft), omega=omega, add_basis=None, mult_basis=None, lower=None,
        upper=None, xcorr_template=None, xcorr_basis=None, theta_start=None, template_mix=jnp.asarray(mix),
        exact_ft=jnp.fft.rfft(templates, n_fft),
    )
    family = LOSVDFamily.gauss_hermite(4)
    kin, offset, n_pix = jnp.array([1.3, 2.2, 0.05, -0.04]), 40, 220
    v = jnp.asarray(rng.normal(size=n_pix))
    grad = template_gradient(problem, family.ft, kin, v, offset, n_pix, n_fft)
    exact = problem._replace(template_ft=problem.exact_ft, template_mix=None, exact_ft=None)
    ref = convolved_templates(exact, family.ft, kin, offset, n_pix, n_fft) @ v
    np.testing.assert_allclose(grad, ref, rtol=1e-10, atol=1e-10 * float(jnp.max(jnp.abs(ref))))


@pytest.mark.parametrize("n_fft", [360, 375])
def test_residual_curvature_equals_second_derivatives_of_the_convolved_model(n_fft):
    """The Newton term from one transform of the residual (Parseval) against JAX's second
    derivatives of the pixel-space model's inner product with that residual."""
    rng = np.random.default_rng(n_fft + 1)
    templates = 1 + rng.random((5, 300))
    omega = 2 * np.pi * jnp.arange(n_fft // 2 + 1) / n_fft
    problem = SpectralProblem(
        template_ft=jnp.fft.rfft(templates, n_fft), omega=omega, add_basis=None, mult_basis=None, lower=None,
        upper=None, xcorr_template=None, xcorr_basis=None, theta_start=None, template_mix=None, exact_ft=None,
    )
    family = LOSVDFamily.gauss_hermite(4)
    kin, offset, n_pix = jnp.array([1.3, 2.2, 0.05, -0.04]), 40, 220
    a, v = jnp.asarray(rng.random(5)), jnp.asarray(rng.normal(size=n_pix))
    s_kk, s_kb = residual_curvature(problem, family.ft_hessian, kin, a, v, ft_jacobian(problem, family.ft, kin),
                                    offset, n_pix, n_fft)

    def inner(k):
        return convolved_templates(problem, family.ft, k, offset, n_pix, n_fft) @ v  # (n_tpl,)

    ref_kk = jax.hessian(lambda k: a @ inner(k))(kin)
    ref_kb = jax.jacfwd(inner)(kin).T
    np.testing.assert_allclose(s_kk, ref_kk, rtol=1e-9, atol=1e-10 * float(jnp.max(jnp.abs(ref_kk))))
    np.testing.assert_allclose(s_kb, ref_kb, rtol=1e-9, atol=1e-10 * float(jnp.max(jnp.abs(ref_kb))))


def _ssp_mocks(shared_data, n, seed=3, n_templates=50):
    """The bench_fit_vs_ppxf setting: 50 MILES SSPs prepared for the MUSE minicube, S/N 30 mocks."""
    from cube3d.io import read_cube
    from cube3d.prepare import prepare_cube
    from cube3d.templates import load_templates

    files = sorted(glob.glob(str(shared_data / "templates" / "miles_ssp" / "*.fits")))
    cube_path = shared_data / "cubes" / "muse_abell478_minicube.fits"
    if not files or not cube_path.exists():
        pytest.skip("MILES SSPs or the MUSE minicube not available")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prep = prepare_cube(read_cube(cube_path), load_templates(files), MUSE_Z, target_sn=25,
                            wave_range=(4800.0, 5800.0), n_basis=n_templates)
    templates, offset, velscale = prep.templates, prep.template_offset, prep.velscale
    good = prep.ivar[int(np.argmax(prep.snr))] > 0
    rng = np.random.default_rng(seed)
    truth = np.c_[rng.uniform(-200, 200, n), rng.uniform(150, 350, n), rng.uniform(-0.1, 0.1, (n, 2))]
    mix = rng.dirichlet(np.ones(len(templates)), n) @ templates
    x = np.arange(-(offset - 1), offset) * 1.0
    kern = np.array([gauss_hermite_pdf(x, t[0] / velscale, t[1] / velscale, t[2:]) for t in truth])
    gal = fftconvolve(mix, kern, mode="same", axes=1)[:, offset : offset + good.size]
    gal /= np.median(gal, axis=1, keepdims=True)
    spectra = gal + rng.normal(size=gal.shape) / 30.0
    ivar = np.broadcast_to(np.where(good, 900.0, 0.0), spectra.shape).copy()
    return truth, FitInput(spectra, ivar, templates, offset, velscale)


@pytest.fixture(scope="module")
def ssp_fits(shared_data):
    truth, data = _ssp_mocks(shared_data, 64)
    exact = fit_spectra(data, FitConfig(svd_tol=None))
    compressed = fit_spectra(data, FitConfig())
    return truth, data, exact, compressed


def test_compressed_library_matches_the_templates_within_a_small_fraction_of_the_errors(ssp_fits):
    truth, data, exact, compressed = ssp_fits
    mix, basis = template_basis(data.templates, FitConfig())
    assert basis.shape[0] < len(data.templates) // 4  # 50 SSPs at 1% per template: a handful of spectra
    ok = exact.ok & compressed.ok
    assert ok.mean() > 0.95
    diff = np.abs(compressed.params - exact.params)[ok] / exact.errors[ok]
    # the same fit: the median difference is a few per cent of an error; the tail is where
    # the near-degenerate SSP mixes let the non-negative weights pick another set of
    # templates (the uncompressed fit and ppxf differ there alike, bench_fit_vs_ppxf.py)
    assert np.all(np.median(diff, axis=0) < 0.05), np.median(diff, axis=0)
    assert np.mean(diff.max(axis=1) < 0.25) > 0.85
    np.testing.assert_allclose(np.median(compressed.errors[ok] / exact.errors[ok], axis=0), 1.0, atol=0.01)
    # equally good fits: chi^2 within a fraction of its scatter sqrt(2 n)
    n_good = exact.n_good[ok]
    dchi2 = (compressed.chi2 - exact.chi2)[ok] * (n_good - 10)
    assert abs(np.median(dchi2)) < 0.5
    # and the same recovery of the truth, in units of the errors
    for res in (exact, compressed):
        pull = (res.params[ok] - truth[ok]) / res.errors[ok]
        assert np.all(np.abs(np.median(pull, axis=0)) < 0.3) and np.all(np.std(pull, axis=0) < 1.5)
    # template weights: non-negative, on the templates themselves
    assert np.all(compressed.template_weights[ok] >= 0)
    assert compressed.template_weights.shape == (len(truth), len(data.templates))


def test_newton_finish_converges_where_gauss_newton_steps_do_not(ssp_fits):
    """The same schedule with Gauss-Newton steps in the finish stops short of the optimum
    more often (cube3d.fit docstring, "Newton finish": they converge linearly there); the
    Newton finish reaches the same optimum and passes the convergence test, compressed or not."""
    _, data, exact, compressed = ssp_fits
    gauss_newton = fit_spectra(data, FitConfig(newton_finish=False))
    ok = compressed.ok & gauss_newton.ok
    # compressed 0.967 on 2048 such mocks, uncompressed 0.91 on these; about two binomial sigmas below
    assert compressed.converged.mean() >= 0.92 and exact.converged.mean() >= 0.85
    assert gauss_newton.converged.mean() < compressed.converged.mean() - 0.05
    diff = np.abs(compressed.params - gauss_newton.params)[ok] / compressed.errors[ok]
    assert np.all(np.median(diff, axis=0) < 0.02), np.median(diff, axis=0)


def test_the_basis_depends_on_the_templates_only(ssp_fits):
    _, data, _, compressed = ssp_fits
    one = fit_spectra(data._replace(spectra=data.spectra[5:6], ivar=data.ivar[5:6]), FitConfig())
    np.testing.assert_allclose(one.params[0], compressed.params[5], rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(one.errors[0], compressed.errors[5], rtol=1e-7)
    a = template_basis(data.templates, FitConfig())
    b = template_basis(data.templates.copy(), FitConfig())
    np.testing.assert_array_equal(a[1], b[1])


def test_double_precision_iterations_give_the_same_fit(ssp_fits):
    _, data, _, compressed = ssp_fits
    sub = data._replace(spectra=data.spectra[:16], ivar=data.ivar[:16])
    double = fit_spectra(sub, FitConfig(single_fft=False))
    diff = np.abs(double.params - compressed.params[:16]) / compressed.errors[:16]
    assert np.median(diff) < 1e-3 and np.mean(diff.max(axis=1) < 0.01) >= 0.9


def test_low_sn_star_library_recovers_the_truth_as_well_as_the_templates_themselves(shared_data):
    """63 MILES-HC stars (which compress poorly: rank 19 at 1%) on the minicube's grid,
    S/N 5 per pixel: single fits are multimodal there, so compressed and uncompressed fits
    of one spectrum may end in different minima; against the truth they do equally well."""
    from cube3d.io import read_cube
    from cube3d.prepare import prepare_cube
    from cube3d.templates import load_templates

    tpl_dir = shared_data / "templates" / "mileshc_v2"
    cube_path = shared_data / "cubes" / "muse_abell478_minicube.fits"
    if not tpl_dir.is_dir() or not cube_path.exists():
        pytest.skip("MILES-HC templates or the MUSE minicube not available")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prep = prepare_cube(read_cube(cube_path), load_templates(tpl_dir), MUSE_Z, wave_range=(4800.0, 6000.0))
    templates, offset, velscale = prep.templates, prep.template_offset, prep.velscale
    good = prep.ivar[0] > 0
    rng = np.random.default_rng(8)
    n = 96
    truth = np.c_[rng.uniform(-150, 150, n), rng.uniform(120, 300, n)]
    mix = (rng.random((n, len(templates))) * (rng.random((n, len(templates))) < 0.15)) @ templates
    x = np.arange(-(offset - 1), offset) * 1.0
    kern = np.array([gauss_hermite_pdf(x, t[0] / velscale, t[1] / velscale, np.zeros(0)) for t in truth])
    gal = fftconvolve(mix, kern, mode="same", axes=1)[:, offset : offset + good.size]
    gal /= np.median(gal, axis=1, keepdims=True)
    data = FitInput(gal + rng.normal(size=gal.shape) / 5.0, np.broadcast_to(np.where(good, 25.0, 0.0), gal.shape).copy(),
                    templates, offset, velscale)
    assert template_basis(templates, FitConfig())[1].shape[0] < len(templates) // 2
    rms = {}
    for name, cfg in (("exact", FitConfig(moments=2, svd_tol=None)), ("compressed", FitConfig(moments=2))):
        res = fit_spectra(data, cfg)
        assert res.ok.all()
        rms[name] = np.sqrt(np.mean(((res.params - truth) / res.errors) ** 2, axis=0))
    np.testing.assert_array_less(rms["compressed"], 1.15 * rms["exact"] + 0.05)
