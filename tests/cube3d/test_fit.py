"""The per-spectrum fit: simulate-and-recover with real templates, and its invariances.

Mock spectra are made independently of the fitter's Fourier model: templates are
interpolated onto a ln-lambda grid 8 times finer than the fitted one, convolved in
real space with the sampled LOSVD, and averaged over the 8 sub-pixels (pixel
integration), then noise is added.
"""

import glob

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from astropy.io import fits
from jax.test_util import check_grads
from scipy.signal import fftconvolve

from cube3d import fit as fitmod
from cube3d.errors import InputError
from cube3d.fit import FitConfig, FitInput, fit_spectra
from cube3d.spectral_model import SpectralProblem, build_problem, convolved_templates
from cube3d.losvd import LOSVDFamily, gauss_hermite_pdf, sanders_evans_pdf

C_KMS = 299792.458
VELSCALE = 50.0
OVERSAMPLE = 8
OFFSET = 60


def _templates(repo_data):
    files = sorted(glob.glob(str(repo_data / "templates" / "*.fits")))
    flux = []
    for f in files:
        with fits.open(f) as hdul:
            h = hdul[0].header
            d = hdul[0].data.astype(float)
        wave = h["CRVAL1"] + h["CDELT1"] * (np.arange(d.size) + 1 - h["CRPIX1"])
        flux.append(d)
    step = VELSCALE / C_KMS / OVERSAMPLE
    ln_fine = np.arange(np.log(4600.0), np.log(5900.0), step)
    ln_fine = ln_fine[: ln_fine.size // OVERSAMPLE * OVERSAMPLE]
    fine = np.array([np.interp(np.exp(ln_fine), wave, f) for f in flux])
    fine /= np.median(fine, axis=1, keepdims=True)
    coarse = fine.reshape(len(fine), -1, OVERSAMPLE).mean(-1)
    return fine, coarse


def _mock(fine, n, sn, seed, h_scale=0.1):
    rng = np.random.default_rng(seed)
    truth = np.c_[
        rng.uniform(-250, 250, n),
        rng.uniform(100, 300, n),
        rng.uniform(-h_scale, h_scale, n),
        rng.uniform(-h_scale, h_scale, n),
    ]
    weights = rng.dirichlet(np.ones(len(fine)), n)
    x = np.arange(-160 * OVERSAMPLE, 160 * OVERSAMPLE + 1) / OVERSAMPLE  # coarse pixels
    n_coarse = fine.shape[1] // OVERSAMPLE
    n_pix = n_coarse - 2 * OFFSET
    poly = 1 + 0.1 * np.linspace(-1, 1, n_pix)
    kern = np.array([gauss_hermite_pdf(x, t[0] / VELSCALE, t[1] / VELSCALE, t[2:]) for t in truth]) / OVERSAMPLE
    # sampled-kernel convolution on the fine grid (via FFT for speed), then pixel integration
    conv = fftconvolve(weights @ fine, kern, mode="same", axes=-1)
    gal = conv.reshape(n, -1, OVERSAMPLE).mean(-1)[:, OFFSET : OFFSET + n_pix] * poly
    noise = gal.mean(axis=1, keepdims=True) / sn
    obs = gal + rng.normal(size=gal.shape) * noise
    return truth, obs, np.ones_like(obs) / noise**2


@pytest.fixture(scope="module")
def templates(repo_data):
    return _templates(repo_data)


@pytest.fixture(scope="module")
def mock_fit(templates):
    fine, coarse = templates
    truth, obs, ivar = _mock(fine, 1200, sn=40, seed=1)
    result = fit_spectra(FitInput(obs, ivar, coarse, OFFSET, VELSCALE), FitConfig(moments=4, degree=4))
    return truth, obs, ivar, result


def test_recovers_mock_without_bias_and_with_honest_errors(mock_fit):
    truth, _, _, result = mock_fit
    assert result.ok.all()
    assert result.param_names == ("V", "SIGMA", "H3", "H4")
    pull = (result.params - truth) / result.errors
    # Unbiased: mean error below 0.1 of the reported error, for every moment (with 1200
    # spectra the mean pull has a standard error of 0.03, so this can fail on a real bias).
    assert np.all(np.abs(pull.mean(axis=0)) < 0.1), pull.mean(axis=0)
    # Reported errors match the scatter within 20%.
    assert np.all(np.abs(pull.std(axis=0) - 1) < 0.2), pull.std(axis=0)
    assert np.all(np.abs(np.median(result.chi2) - 1) < 0.05)


def test_bestfit_reproduces_noiseless_shape(mock_fit):
    _, obs, ivar, result = mock_fit
    resid = (obs - result.bestfit) * np.sqrt(ivar)
    assert np.allclose(np.sqrt(np.mean(resid**2, axis=1)), 1.0, atol=0.1)


def test_batched_equals_single_and_no_recompilation(templates, mock_fit, monkeypatch):
    _, coarse = templates
    truth, obs, ivar, result = mock_fit
    cfg = FitConfig(moments=4, degree=4, chunk_size=8)
    traces = []
    real_fit_one = fitmod._fit_one

    def counting_fit_one(*args, **kwargs):  # runs once per trace, not per call
        traces.append(1)
        return real_fit_one(*args, **kwargs)

    monkeypatch.setattr(fitmod, "_fit_one", counting_fit_one)
    fitmod._fit_chunk.clear_cache()
    many = fit_spectra(FitInput(obs[:20], ivar[:20], coarse, OFFSET, VELSCALE), cfg)  # 3 chunks, last padded
    assert len(traces) == 1  # one trace for all chunks
    fit_spectra(FitInput(obs[:20], ivar[:20], coarse, OFFSET, VELSCALE), cfg)  # same settings: compiled already
    assert len(traces) == 1
    one = fit_spectra(FitInput(obs[13], ivar[13], coarse, OFFSET, VELSCALE), cfg)  # a chunk of 1: its own shape
    assert len(traces) == 2
    np.testing.assert_allclose(one.params[0], many.params[13], rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(one.errors[0], many.errors[13], rtol=1e-7)
    # chunk size does not change the answer
    np.testing.assert_allclose(many.params, result.params[:20], rtol=1e-6, atol=1e-6)


def test_jit_equals_eager(templates, mock_fit):
    # Eager execution dispatches every loop step from Python, so use a tiny problem.
    _, coarse = templates
    _, obs, ivar, _ = mock_fit
    cfg = FitConfig(moments=2, degree=1, n_iter=1, chunk_size=1, n_threads=1, v_range=300.0, sigma_max=400.0)
    data = FitInput(obs[:1, :120], ivar[:1, :120], coarse[:2, : 120 + 2 * OFFSET], OFFSET, VELSCALE)
    jitted = fit_spectra(data, cfg)
    with jax.disable_jit():
        eager = fit_spectra(data, cfg)
    np.testing.assert_allclose(eager.params, jitted.params, rtol=1e-8)
    np.testing.assert_allclose(eager.errors, jitted.errors, rtol=1e-6)


def test_sanders_evans_family_recovers_v_sigma(templates):
    fine, coarse = templates
    rng = np.random.default_rng(7)
    n, sn = 200, 40
    truth = np.c_[rng.uniform(-200, 200, n), rng.uniform(120, 280, n)]
    x = np.arange(-160 * OVERSAMPLE, 160 * OVERSAMPLE + 1) / OVERSAMPLE
    kern = np.array([sanders_evans_pdf(x, t[0] / VELSCALE, t[1] / VELSCALE, 0.6, 0.3) for t in truth]) / OVERSAMPLE
    weights = rng.dirichlet(np.ones(len(fine)), n)
    conv = fftconvolve(weights @ fine, kern, mode="same", axes=-1)
    n_pix = fine.shape[1] // OVERSAMPLE - 2 * OFFSET
    gal = conv.reshape(n, -1, OVERSAMPLE).mean(-1)[:, OFFSET : OFFSET + n_pix]
    noise = gal.mean(axis=1, keepdims=True) / sn
    obs = gal + rng.normal(size=gal.shape) * noise
    res = fit_spectra(FitInput(obs, np.ones_like(obs) / noise**2, coarse, OFFSET, VELSCALE),
                      FitConfig(losvd="sanders_evans"))
    assert res.param_names == ("V", "SIGMA", "A", "ASYM")
    pull = (res.params[:, :2] - truth) / res.errors[:, :2]
    assert np.all(np.abs(pull.mean(axis=0)) < 0.25), pull.mean(axis=0)
    assert np.all(np.abs(pull.std(axis=0) - 1) < 0.25), pull.std(axis=0)
    # the shape parameters are recovered on average (true A = 0.6, ASYM = 0.3)
    np.testing.assert_allclose(np.median(res.params[:, 2:], axis=0), [0.6, 0.3], atol=0.15)


def _inverse_gauss_newton_kinematic_block(coarse, obs, ivar, res, moments, mdegree, i):
    """The kinematic block of ``(J^T W J)^-1`` for spectrum ``i`` of fit ``res``: ``J`` by
    automatic differentiation of the model written out here, the inverse by numpy's LAPACK."""
    n_pix = obs.shape[1]
    cfg, n_shape = FitConfig(), moments - 2
    problem, n_fft, _ = build_problem(coarse, OFFSET, n_pix, VELSCALE, v_range=cfg.v_range, sigma_max=cfg.sigma_max,
                                      sigma_start=cfg.sigma_start, shape_bounds=(-np.ones(n_shape), np.ones(n_shape)),
                                      shape_start=np.zeros(n_shape), degree=4, mdegree=mdegree)
    ft = LOSVDFamily.gauss_hermite(moments).ft
    units = np.r_[VELSCALE, VELSCALE, np.ones(moments - 2)]
    free = res.template_weights[i] > 0
    index = jnp.asarray(np.flatnonzero(free))
    a_fixed = jnp.asarray(np.where(free, 0.0, res.template_weights[i]))
    n_lin = moments + mdegree + index.size

    @jax.jit
    def model(x):
        kin, mult = x[:moments], x[moments : moments + mdegree]
        a = a_fixed.at[index].set(x[moments + mdegree : n_lin])
        conv = convolved_templates(problem, ft, kin, OFFSET, n_pix, n_fft)
        return (1.0 + mult @ problem.mult_basis) * (a @ conv) + x[n_lin:] @ problem.add_basis

    x = jnp.asarray(np.concatenate([res.params[i] / units, res.multiplicative[i], res.template_weights[i][free],
                                    res.additive[i]]))
    np.testing.assert_allclose(model(x), res.bestfit[i], rtol=1e-9, atol=1e-9 * np.abs(obs[i]).max())
    jac = np.asarray(jax.jit(jax.jacfwd(model))(x))  # (n_pix, n_params)
    return np.linalg.inv(jac.T @ (ivar[i][:, None] * jac))[:moments, :moments] * np.outer(units, units)


def test_covariance_is_the_kinematic_block_of_the_inverse_gauss_newton_matrix(templates, mock_fit):
    """The reported covariance is the kinematic block of ``(J^T W J)^-1`` over every free
    parameter (LOSVD, multiplicative polynomial, positive template weights, additive
    polynomial; zero weights held at their bound): on the compressed library with h3, h4,
    and on the templates themselves with a multiplicative polynomial."""
    fine, coarse = templates
    _, obs, ivar, res = mock_fit  # svd_tol 0.01, moments 4
    for i in range(3):
        np.testing.assert_allclose(res.covariance[i],
                                   _inverse_gauss_newton_kinematic_block(coarse, obs, ivar, res, 4, 0, i), rtol=1e-6)
    _, obs, ivar = _mock(fine, 2, sn=30, seed=5)
    res = fit_spectra(FitInput(obs, ivar, coarse, OFFSET, VELSCALE),
                      FitConfig(moments=2, degree=4, mdegree=2, svd_tol=None, chunk_size=2))
    for i in range(2):
        np.testing.assert_allclose(res.covariance[i],
                                   _inverse_gauss_newton_kinematic_block(coarse, obs, ivar, res, 2, 2, i), rtol=1e-6)


def test_model_gradient_matches_finite_differences(templates):
    _, coarse = templates
    tpl = jnp.asarray(coarse[:3])
    n_fft = 2 * coarse.shape[1]
    omega = 2 * np.pi * jnp.arange(n_fft // 2 + 1) / n_fft
    problem = SpectralProblem(
        template_ft=jnp.fft.rfft(tpl, n_fft), omega=omega, add_basis=None, mult_basis=None,
        lower=None, upper=None, xcorr_template=None, xcorr_basis=None, theta_start=None,
    )
    family = LOSVDFamily.gauss_hermite(4)

    def model(kin):
        conv = convolved_templates(problem, family.ft, kin, OFFSET, 300, n_fft)
        return jnp.sum(conv * jnp.sin(jnp.arange(300) / 7.0))

    check_grads(model, (jnp.array([3.3, 2.7, 0.05, -0.04]),), order=2, modes=("fwd", "rev"), eps=1e-4)


def test_unusable_spectrum_gives_nan_not_crash(templates, mock_fit):
    _, coarse = templates
    _, obs, ivar, _ = mock_fit
    w = ivar[:3].copy()
    w[1] = 0.0
    res = fit_spectra(FitInput(obs[:3], w, coarse, OFFSET, VELSCALE), FitConfig(moments=2, chunk_size=4))
    assert res.ok.tolist() == [True, False, True]
    assert np.isnan(res.params[1]).all() and np.isfinite(res.params[[0, 2]]).all()


def test_outlier_clipping_masks_spikes(templates, mock_fit):
    _, coarse = templates
    truth, obs, ivar, _ = mock_fit
    spiky = obs[:4].copy()
    spiky[:, 100:103] += 50 / np.sqrt(ivar[:4, :1])  # 50-sigma cosmic rays
    cfg = FitConfig(moments=2, clip=4.0, chunk_size=4)
    res = fit_spectra(FitInput(spiky, ivar[:4], coarse, OFFSET, VELSCALE), cfg)
    assert np.all(res.weights_used[:, 100:103] == 0)
    assert np.mean(res.weights_used[:, :100] == 0) < 0.01
    assert np.all(np.abs(res.params[:, 0] - truth[:4, 0]) < 5 * res.errors[:, 0] + 10)


def test_start_from_given_velocity(templates, mock_fit):
    _, coarse = templates
    truth, obs, ivar, _ = mock_fit
    res = fit_spectra(FitInput(obs[:4], ivar[:4], coarse, OFFSET, VELSCALE), FitConfig(moments=2, chunk_size=4),
                      v_start=truth[:4, 0] + 30.0)
    assert np.all(np.abs(res.params[:, 0] - truth[:4, 0]) < 5 * res.errors[:, 0] + 10)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(config=FitConfig(moments=7)), "--moments"),
        (dict(config=FitConfig(losvd="bogus")), "--losvd"),
        (dict(config=FitConfig(degree=-5)), "--degree"),
        (dict(config=FitConfig(chunk_size=0)), "--chunk-size"),
        (dict(config=FitConfig(clip=-1.0)), "--clip"),
        (dict(template_offset=10_000), "templates"),
        (dict(velscale=-1.0), "velscale"),
    ],
)
def test_bad_input_is_named(templates, mock_fit, kwargs, match):
    _, coarse = templates
    _, obs, ivar, _ = mock_fit
    args = dict(template_offset=OFFSET, velscale=VELSCALE, config=FitConfig())
    args.update(kwargs)
    with pytest.raises(InputError, match=match):
        fit_spectra(FitInput(obs[:2], ivar[:2], coarse, args["template_offset"], args["velscale"]), args["config"])


def test_shape_mismatch_is_named(templates, mock_fit):
    _, coarse = templates
    _, obs, ivar, _ = mock_fit
    with pytest.raises(InputError, match="ivar"):
        fit_spectra(FitInput(obs[:2], ivar[:3], coarse, OFFSET, VELSCALE))


def test_the_fit_chunks_are_compiled_with_the_options():
    """The chunk programs get the compile options of dynamics.xla_options (tests/dynamics/test_xla_options.py)."""
    from dynamics import xla_options

    for program in (fitmod._fit_chunk, fitmod._local_quadratic_chunk, fitmod._profiled_chi2_chunk):
        assert isinstance(program, xla_options._Program)
        assert program._jit_kwargs == {"static_argnames": ("static", "devices")}
