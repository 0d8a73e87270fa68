"""Per-spectrum LOSVD fitting, written for one spectrum and ``vmap``-ped over chunks.

The model of one log-rebinned spectrum ``g`` (pixel ``j``) is

    m_j = P_mult(x_j) * sum_k a_k (T_k * L)(j + offset) + sum_l b_l P_l(x_j),

with templates ``T_k`` convolved with the line-of-sight velocity distribution ``L`` in
Fourier space (Cappellari 2017, MNRAS 466, 798, sec. 3 and eq. 38: the LOSVD transform is
analytic, so no sampled kernel and no pixel-integration bias at small sigma), non-negative
template weights ``a_k``, additive Legendre polynomials ``P_l`` (free coefficients ``b_l``)
and an optional multiplicative Legendre polynomial ``P_mult = 1 + sum_m c_m P_m``.

Nonlinear parameters ``theta = (V, sigma, h3.., c_1..)`` and linear ones ``(a, b)`` are
fitted together by a damped Gauss-Newton (Levenberg 1944; Marquardt 1963) iteration on
the joint parameter vector: each step linearises the model in ``theta`` only (it is
already linear in ``(a, b)``) and solves the bounded linear least-squares problem for
``(delta theta, a, b)`` with ``a >= 0`` (Lawson & Hanson 1974).  A step is kept when the
chi^2 of the profiled problem (``a, b`` re-solved at the new ``theta``) decreases,
otherwise the damping grows.  The iteration count is fixed (``lax.scan``), so every
spectrum has the same static shapes and many are fitted at once with ``jax.vmap``.

Errors come from the Laplace (Gauss-Newton) covariance ``(J^T W J)^{-1}`` over all free
parameters at the solution, with templates at zero weight held at their bound; the
kinematic block therefore includes the correlation with template weights and
polynomials (as in a variable-projection fit).

Velocities are in km/s relative to the redshift used to de-redshift the spectra:
a shift of one ln-lambda pixel is ``velscale`` km/s (``V = c * Delta ln lambda``).
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import losvd
from .errors import InputError
from .linalg import bounded_least_squares, cholesky_solve, spd_inverse

__all__ = ["local_quadratic", "FitConfig", "FitResult", "fit_spectra", "legendre_basis", "validate_config"]


class FitConfig(NamedTuple):
    """Settings of the per-spectrum fit (hashable: used as a static jit argument).

    Parameters
    ----------
    n_moments : int
        Gauss-Hermite moments: 2 (V, sigma), 3, 4 (h3, h4), 5 or 6.  Ignored for the
        Sanders-Evans family, which has its own parameters.
    family : str
        ``"gauss_hermite"`` or ``"sanders_evans"``.
    degree : int
        Degree of the additive Legendre polynomial (-1 for none).
    mdegree : int
        Degree of the multiplicative Legendre polynomial (0 for none).
    n_iter : int
        Damped Gauss-Newton iterations (fixed, so shapes are static).
    clip_sigma : float or None
        If set, pixels whose residual exceeds ``clip_sigma`` times the rms of the
        normalised residuals are masked after a first fit, and the fit is repeated
        once (a single round of the outlier clipping of Cappellari 2023, sec. 3.7).
    sigma_start : float
        Starting dispersion in km/s.
    v_range : float
        Velocities are bounded to ``v_start +- v_range`` km/s.
    sigma_max : float
        Upper bound of the dispersion in km/s (lower bound 0.1 pixel).
    h_bound : float
        Bound on |h_m| for the Gauss-Hermite family.
    chunk_size : int
        Spectra per compiled batch (static shape; sets the peak memory).
    n_threads : int or None
        Chunks fitted concurrently (default: the number of CPU cores); peak memory
        grows with ``n_threads * chunk_size``.
    """

    n_moments: int = 4
    family: str = "gauss_hermite"
    degree: int = 4
    mdegree: int = 0
    n_iter: int = 12
    clip_sigma: Optional[float] = None
    sigma_start: float = 150.0
    v_range: float = 1500.0
    sigma_max: float = 1000.0
    h_bound: float = 0.3
    chunk_size: int = 16
    n_threads: Optional[int] = None


class FitResult(NamedTuple):
    """Per-spectrum fit results (numpy arrays, first axis = spectrum).

    Attributes
    ----------
    param_names : tuple of str
        Names of the LOSVD parameters, e.g. ("V", "SIGMA", "H3", "H4").
    params : (n_spec, n_par)
        LOSVD parameters; V and SIGMA in km/s, shape parameters dimensionless.
    errors : (n_spec, n_par)
        One-sigma errors (square roots of the covariance diagonal).
    covariance : (n_spec, n_par, n_par)
        Laplace covariance of the LOSVD parameters (km/s units for V, SIGMA).
    chi2 : (n_spec,)
        Reduced chi^2 (chi^2 / (n_good - n_free)).
    template_weights : (n_spec, n_tpl)
    additive : (n_spec, degree + 1)
    multiplicative : (n_spec, mdegree)
    bestfit : (n_spec, n_pix)
        Best-fit model spectra (same normalisation as the input spectra).
    weights_used : (n_spec, n_pix)
        Inverse variances after outlier clipping (0 = masked).
    n_good : (n_spec,)
        Number of pixels with non-zero weight.
    ok : (n_spec,) bool
        False where the spectrum had too few usable pixels (its parameters are NaN).
    """

    param_names: tuple
    params: np.ndarray
    errors: np.ndarray
    covariance: np.ndarray
    chi2: np.ndarray
    template_weights: np.ndarray
    additive: np.ndarray
    multiplicative: np.ndarray
    bestfit: np.ndarray
    weights_used: np.ndarray
    n_good: np.ndarray
    ok: np.ndarray


def legendre_basis(n_pix, degree, start=0):
    """Legendre polynomials P_start..P_degree on x in [-1, 1] over n_pix pixels.

    Returns an array of shape (degree + 1 - start, n_pix) (numpy, float64).
    """
    x = np.linspace(-1.0, 1.0, n_pix)
    return np.polynomial.legendre.legvander(x, max(degree, 0)).T[start : degree + 1]


def validate_config(config):
    """Reject settings the fit cannot use, with a message naming the option.

    Called by :func:`fit_spectra`, and by the pipeline before any file is read.
    Returns the LOSVD family the settings select.
    """

    def positive(x):
        return isinstance(x, (int, float, np.integer, np.floating)) and np.isfinite(x) and x > 0

    def integer(x):
        return isinstance(x, (int, np.integer)) and not isinstance(x, bool)

    if config.family == "gauss_hermite" and not (integer(config.n_moments) and 2 <= config.n_moments <= 6):
        raise InputError(f"--moments: must be an integer from 2 to 6, got {config.n_moments}")
    if not (integer(config.degree) and config.degree >= -1):
        raise InputError(f"--degree: must be an integer >= -1 (-1: no additive polynomial), got {config.degree}")
    if not (integer(config.mdegree) and config.mdegree >= 0):
        raise InputError(f"--mdegree: must be an integer >= 0, got {config.mdegree}")
    if config.clip_sigma is not None and not positive(config.clip_sigma):
        raise InputError(f"--clip: must be a positive number of sigmas, got {config.clip_sigma}")
    if not positive(config.sigma_start):
        raise InputError(f"--sigma-start: must be a positive number of km/s, got {config.sigma_start}")
    if not (integer(config.chunk_size) and config.chunk_size >= 1):
        raise InputError(f"--chunk-size: must be a positive integer, got {config.chunk_size}")
    if not (integer(config.n_iter) and config.n_iter >= 1):
        raise InputError(f"n_iter: must be a positive integer, got {config.n_iter}")
    return _family(config)


def _family(config):
    if config.family == "gauss_hermite":
        if config.n_moments not in (2, 3, 4, 5, 6):
            raise InputError(f"--moments: must be an integer from 2 to 6, got {config.n_moments}")
        return losvd.LOSVDFamily.gauss_hermite(config.n_moments)
    if config.family == "sanders_evans":
        return losvd.LOSVDFamily.sanders_evans()
    raise InputError(f"--losvd must be 'gauss_hermite' or 'sanders_evans', got {config.family!r}")


def _shape_bounds(family, config):
    """Lower/upper bounds of the LOSVD shape parameters (after V and sigma)."""
    n_shape = len(family.param_names) - 2
    if config.family == "gauss_hermite":
        return -config.h_bound * np.ones(n_shape), config.h_bound * np.ones(n_shape)
    lo, hi = losvd.sanders_evans_bounds()
    return np.asarray(lo, float), np.asarray(hi, float)


class _Problem(NamedTuple):
    """Arrays shared by every spectrum of a fit (unbatched under vmap)."""

    template_ft: jax.Array  # (n_tpl, n_freq) complex
    omega: jax.Array  # (n_freq,) radians per pixel
    add_basis: jax.Array  # (n_add, n_pix)
    mult_basis: jax.Array  # (mdegree, n_pix)
    lower: jax.Array  # (n_theta,) bounds of theta (pixels for V, sigma)
    upper: jax.Array
    xcorr_template: jax.Array  # (n_fft,) high-passed mean template for the start
    xcorr_basis: jax.Array  # (5, n_pix) Legendre P0..P4 for the continuum of the start
    theta_start: jax.Array  # (n_theta,) start of the shape parameters (V, sigma set per spectrum)


def _materialize(x):
    """Return ``x`` unchanged, computed once.

    XLA fuses the elementwise LOSVD transform into its broadcast product with the
    (n_tpl, n_freq) template transforms and so recomputes the cosines, exponentials and
    Hermite polynomials once per template (2.5x slower).  A length-1 FFT is the identity
    but cannot be fused through, so the transform is evaluated once per spectrum.
    """
    return jnp.fft.fft(x[..., None], axis=-1)[..., 0]


def _convolve(problem, ft_fn, kin, offset, n_pix, n_fft):
    """Templates convolved with the LOSVD, sliced to the galaxy pixels: (n_tpl, n_pix)."""
    lhat = _materialize(ft_fn(problem.omega, kin))
    full = jnp.fft.irfft(problem.template_ft * lhat[None, :], n_fft, axis=-1)
    return lax.dynamic_slice_in_dim(full, offset, n_pix, axis=-1)


def _linear_solve(conv, mpoly, problem, galaxy, w, passive_init=None):
    """Profiled linear problem at fixed theta: non-negative template weights + additive poly.

    Returns ``(coef, model, chi2, gram, rhs)``: the coefficients, the model, its chi^2,
    and the weighted normal matrix ``L W L^T`` and vector ``L W g`` of the linear columns
    ``L`` (reused by the next Gauss-Newton step).  Columns are scaled to unit weighted
    norm for conditioning and the solution is scaled back.
    """
    cols = jnp.concatenate([conv * mpoly[None, :], problem.add_basis], axis=0)
    n_tpl = conv.shape[0]
    gram = (cols * w[None, :]) @ cols.T
    rhs = cols @ (w * galaxy)
    norm = jnp.sqrt(jnp.diagonal(gram)) + 1e-30
    m = gram / (norm[:, None] * norm[None, :])
    nonneg = jnp.arange(cols.shape[0]) < n_tpl
    coef = bounded_least_squares(m, rhs / norm, nonneg, passive_init=passive_init) / norm
    model = coef @ cols
    chi2 = jnp.sum(w * (galaxy - model) ** 2)
    return coef, model, chi2, gram, rhs


def _start_velocity(problem, galaxy, w, offset, n_pix, n_fft, vmax_pix):
    """Cross-correlation start (Tonry & Davis 1979): peak of the weighted, continuum-
    subtracted galaxy correlated with the high-passed mean template, parabola-refined."""
    basis = problem.xcorr_basis
    m = (basis * w[None, :]) @ basis.T + 1e-12 * jnp.eye(basis.shape[0])
    cont = cholesky_solve(m, basis @ (w * galaxy)) @ basis
    u = jnp.zeros(n_fft).at[offset : offset + n_pix].set(w * (galaxy - cont))
    corr = jnp.fft.irfft(jnp.fft.rfft(problem.xcorr_template) * jnp.conj(jnp.fft.rfft(u)), n_fft)
    lags = jnp.arange(-n_fft // 4, n_fft // 4)
    # corr[k] = sum_i u[i] t[i + k]; a galaxy redshifted by s pixels peaks at k = -s
    cc = jnp.where(jnp.abs(lags) <= vmax_pix, corr[(-lags) % n_fft], -jnp.inf)
    i = jnp.argmax(cc)
    y0, y1, y2 = cc[jnp.maximum(i - 1, 0)], cc[i], cc[jnp.minimum(i + 1, cc.size - 1)]
    den = y0 - 2 * y1 + y2
    frac = jnp.where(jnp.isfinite(den) & (den < 0), 0.5 * (y0 - y2) / den, 0.0)
    return lags[i] + jnp.clip(frac, -0.5, 0.5)


def _laplace_covariance(cols, w, keep):
    """Inverse of the Gauss-Newton matrix ``cols W cols^T`` over the parameters ``keep``
    (the others, e.g. templates at zero weight, held fixed: zero rows/columns).  Columns
    are scaled to unit weighted norm for conditioning; LAPACK-free inverse (vmap-safe)."""
    norm = jnp.sqrt(jnp.sum(w[None, :] * cols**2, axis=1)) + 1e-30
    scaled = cols / norm[:, None]
    fisher = (scaled * w[None, :]) @ scaled.T
    fisher = jnp.where(keep[:, None] & keep[None, :], fisher, 0.0) + jnp.diag(jnp.where(keep, 0.0, 1.0))
    return spd_inverse(fisher) / (norm[:, None] * norm[None, :])


def _fit_one(galaxy, w, v_start, problem, *, ft_fn, n_kin, offset, n_pix, n_fft, n_iter,
             clip_sigma, sigma_start, use_xcorr, vmax_pix):
    """Fit one spectrum; all sizes static.  Returns a dict of per-spectrum results."""
    n_mult = problem.mult_basis.shape[0]
    n_tpl = problem.template_ft.shape[0]
    n_theta = n_kin + n_mult

    if use_xcorr:
        v0 = _start_velocity(problem, galaxy, w, offset, n_pix, n_fft, vmax_pix)
    else:
        v0 = v_start
    theta0 = problem.theta_start.at[0].set(v0).at[1].set(sigma_start)
    theta0 = jnp.clip(theta0, problem.lower, problem.upper)

    def pieces(theta):
        kin, c = theta[:n_kin], theta[n_kin:]
        conv = _convolve(problem, ft_fn, kin, offset, n_pix, n_fft)
        mpoly = 1.0 + c @ problem.mult_basis
        return conv, mpoly

    def profiled(theta, wgt, passive_init=None):
        conv, mpoly = pieces(theta)
        coef, model, chi2, gram, rhs = _linear_solve(conv, mpoly, problem, galaxy, wgt, passive_init)
        return coef, chi2, conv, mpoly, gram, rhs

    def jacobian_columns(theta, coef, conv, mpoly):
        """Columns of d model / d theta at fixed linear coefficients: (n_theta, n_pix)."""
        kin = theta[:n_kin]
        a = coef[:n_tpl]
        combined_ft = a @ problem.template_ft  # (n_freq,) the weighted template, one FFT
        dlhat = _materialize(jax.jacfwd(lambda k: ft_fn(problem.omega, k))(kin))  # (n_freq, n_kin)
        dfull = jnp.fft.irfft(combined_ft[None, :] * dlhat.T, n_fft, axis=-1)
        dkin = lax.dynamic_slice_in_dim(dfull, offset, n_pix, axis=-1) * mpoly[None, :]
        dmult = problem.mult_basis * (a @ conv)[None, :]
        return jnp.concatenate([dkin, dmult], axis=0)

    def design(theta, coef, conv, mpoly):
        jac = jacobian_columns(theta, coef, conv, mpoly)
        lin = jnp.concatenate([conv * mpoly[None, :], problem.add_basis], axis=0)
        return jnp.concatenate([jac, lin], axis=0)  # (n_theta + n_lin, n_pix)

    n_lin = n_tpl + problem.add_basis.shape[0]
    nonneg = jnp.concatenate([jnp.zeros(n_theta, bool), jnp.arange(n_lin) < n_tpl])

    # The first third of the iterations fits V and sigma only (shape parameters frozen at
    # their start values, h_m = 0), which keeps h_m off their bounds while V and sigma are
    # still far from the solution.
    gauss_only = jnp.arange(n_theta) >= 2
    gauss_only = gauss_only & (jnp.arange(n_theta) < n_kin)

    def lm_step(state, it, wgt):
        theta, coef, chi2, conv, mpoly, gram_ll, rhs_l, lam = state
        # Normal equations of the joint linearised problem: only the blocks involving the
        # Jacobian columns are new; the linear-linear block comes from the last solve.
        jac = jacobian_columns(theta, coef, conv, mpoly)
        lin = jnp.concatenate([conv * mpoly[None, :], problem.add_basis], axis=0)
        jw = jac * wgt[None, :]
        g_tt, g_tl = jw @ jac.T, jw @ lin.T
        gram = jnp.block([[g_tt, g_tl], [g_tl.T, gram_ll]])
        rhs = jnp.concatenate([jw @ galaxy, rhs_l])
        norm = jnp.sqrt(jnp.diagonal(gram)) + 1e-30
        m = gram / (norm[:, None] * norm[None, :])
        # Linearisation: model(theta + d, coef') ~ lin(theta) coef' + jac(theta, coef) d,
        # so one bounded least-squares solve gives the step d and the new coef' together.
        damping = jnp.concatenate([lam * jnp.ones(n_theta), jnp.zeros(n_lin)])
        m = m + jnp.diag(damping * jnp.diag(m))  # Marquardt (1963) diagonal scaling
        warm = jnp.concatenate([jnp.zeros(n_theta, bool), coef > 0])  # last active templates
        sol = bounded_least_squares(m, rhs / norm, nonneg, passive_init=warm) / norm
        step = jnp.where(gauss_only & (it < n_iter // 3), 0.0, sol[:n_theta])
        trial = jnp.clip(theta + step, problem.lower, problem.upper)
        # Accept on the profiled chi^2 (linear coefficients re-solved at the trial theta):
        # keeping the joint solve's coefficients instead stalls with many templates.
        coef_t, chi2_t, conv_t, mpoly_t, gram_t, rhs_t = profiled(trial, wgt, sol[n_theta:] > 0)
        better = jnp.isfinite(chi2_t) & (chi2_t < chi2)
        pick = lambda new, old: jnp.where(better, new, old)
        new_state = (
            pick(trial, theta),
            pick(coef_t, coef),
            pick(chi2_t, chi2),
            pick(conv_t, conv),
            pick(mpoly_t, mpoly),
            pick(gram_t, gram_ll),
            pick(rhs_t, rhs_l),
            jnp.clip(jnp.where(better, lam * 0.1, lam * 10.0), 1e-7, 1e7),
        )
        return new_state, None

    def run(theta_init, wgt, iters):
        coef, chi2, conv, mpoly, gram, rhs = profiled(theta_init, wgt)
        state = (theta_init, coef, chi2, conv, mpoly, gram, rhs, jnp.asarray(1e-4))
        state, _ = lax.scan(lambda s, it: lm_step(s, it, wgt), state, jnp.arange(iters) + n_iter - iters)
        return state[:5]

    state = run(theta0, w, n_iter)
    if clip_sigma is not None:
        theta, coef, chi2, conv, mpoly = state
        model = coef @ jnp.concatenate([conv * mpoly[None, :], problem.add_basis], axis=0)
        resid = (galaxy - model) * jnp.sqrt(w)
        rms = jnp.sqrt(jnp.sum(resid**2) / jnp.maximum(jnp.sum(w > 0), 1))
        w = jnp.where(jnp.abs(resid) > clip_sigma * rms, 0.0, w)
        state = run(theta, w, max(n_iter // 2, 4))

    theta, coef, chi2, conv, mpoly = state
    lin_cols = jnp.concatenate([conv * mpoly[None, :], problem.add_basis], axis=0)
    model = coef @ lin_cols

    # Laplace covariance over all free parameters; zero-weight templates stay at their bound.
    cols = design(theta, coef, conv, mpoly)
    fixed = jnp.concatenate([jnp.zeros(n_theta, bool), (jnp.arange(n_lin) < n_tpl) & (coef <= 0.0)])
    keep = ~fixed
    cov = _laplace_covariance(cols, w, keep)[:n_kin, :n_kin]

    n_good = jnp.sum(w > 0)
    n_free = n_theta + jnp.sum(keep[n_theta:])
    return dict(theta=theta, cov=cov, chi2=chi2 / jnp.maximum(n_good - n_free, 1), coef=coef,
                model=model, w=w, n_good=n_good)


_COMPILED = {}


def _compiled_chunk_fn(config, family, n_kin, offset, n_pix, n_fft, use_xcorr, vmax_pix):
    key = (config._replace(n_threads=None), n_kin, offset, n_pix, n_fft, use_xcorr, vmax_pix)
    if key not in _COMPILED:
        one = functools.partial(
            _fit_one, ft_fn=family.ft, n_kin=n_kin, offset=offset, n_pix=n_pix, n_fft=n_fft,
            n_iter=config.n_iter, clip_sigma=config.clip_sigma,
            sigma_start=config.sigma_start, use_xcorr=use_xcorr, vmax_pix=vmax_pix,
        )
        _COMPILED[key] = jax.jit(jax.vmap(one, in_axes=(0, 0, 0, None)))
    return _COMPILED[key]


def _good_fft_length(n):
    """Smallest 2^a 3^b 5^c >= n (fast FFT sizes)."""
    best = 1 << int(np.ceil(np.log2(n)))
    p5 = 1
    while p5 < 2 * n:
        p3 = p5
        while p3 < 2 * n:
            p2 = p3
            while p2 < n:
                p2 *= 2
            best = min(best, p2)
            p3 *= 3
        p5 *= 5
    return best


def _build_problem(templates, offset, n_pix, velscale, config, family):
    """Arrays shared by all spectra of a fit: template transforms, bases, bounds, start."""
    n_tpl_pix = templates.shape[1]
    # Zero-pad so that a circular convolution does not wrap the largest LOSVD into the
    # galaxy range (shift + 5 sigma on each side).
    pad = int(np.ceil((config.v_range + 5 * config.sigma_max) / velscale))
    n_fft = _good_fft_length(n_tpl_pix + pad)
    tpl_ft = jnp.fft.rfft(jnp.asarray(templates), n_fft, axis=-1)
    omega = 2.0 * np.pi * np.arange(n_fft // 2 + 1) / n_fft

    mean_tpl = templates.mean(axis=0)
    seg = mean_tpl[offset : offset + n_pix]
    basis5 = legendre_basis(n_pix, 4)
    cont = np.linalg.lstsq(basis5.T, seg, rcond=None)[0] @ basis5
    # High-passed mean template at the start dispersion, for the cross-correlation.
    xt = np.zeros(n_fft)
    xt[:n_tpl_pix] = mean_tpl
    xt[offset : offset + n_pix] -= cont
    xt[:offset] -= cont[0]
    xt[offset + n_pix : n_tpl_pix] -= cont[-1]
    s0 = config.sigma_start / velscale
    xt = np.fft.irfft(np.fft.rfft(xt) * np.exp(-0.5 * (omega * s0) ** 2), n_fft)

    vmax_pix = config.v_range / velscale
    lo_shape, hi_shape = _shape_bounds(family, config)
    n_mult = max(config.mdegree, 0)
    lower = np.concatenate([[-vmax_pix, 0.1], lo_shape, -np.ones(n_mult)])
    upper = np.concatenate([[vmax_pix, config.sigma_max / velscale], hi_shape, np.ones(n_mult)])
    problem = _Problem(
        template_ft=tpl_ft,
        omega=jnp.asarray(omega),
        add_basis=jnp.asarray(legendre_basis(n_pix, config.degree) if config.degree >= 0 else np.zeros((0, n_pix))),
        mult_basis=jnp.asarray(legendre_basis(n_pix, n_mult, start=1) if n_mult else np.zeros((0, n_pix))),
        lower=jnp.asarray(lower),
        upper=jnp.asarray(upper),
        xcorr_template=jnp.asarray(xt),
        xcorr_basis=jnp.asarray(basis5),
        theta_start=jnp.asarray(np.concatenate([[0.0, 0.0], family.shape_start, np.zeros(n_mult)])),
    )

    return problem, n_fft, float(vmax_pix)


def fit_spectra(spectra, ivar, templates, template_offset, velscale, config=FitConfig(),
                v_start=None, progress=None):
    """Fit the LOSVD of many log-rebinned spectra, chunk by chunk.

    Parameters
    ----------
    spectra : array (n_spec, n_pix)
        Rest-frame spectra on a uniform ln-lambda grid (typically normalised to median 1).
    ivar : array (n_spec, n_pix)
        Inverse variances; 0 masks a pixel.
    templates : array (n_tpl, n_tpl_pix)
        Templates on the same ln-lambda step; galaxy pixel ``j`` sits at template pixel
        ``j + template_offset``.
    template_offset : int
        See above; must leave room for the largest velocity shift on both sides.
    velscale : float
        km/s per pixel.
    config : FitConfig
    v_start : array (n_spec,) or float, optional
        Starting velocities in km/s; default: cross-correlation per spectrum.
    progress : callable, optional
        Called as ``progress(n_done, n_total)`` after every chunk.

    Returns
    -------
    FitResult
    """
    spectra = np.asarray(spectra, dtype=np.float64)
    ivar = np.asarray(ivar, dtype=np.float64)
    templates = np.asarray(templates, dtype=np.float64)
    if spectra.ndim == 1:
        spectra, ivar = spectra[None], ivar[None]
    if spectra.shape != ivar.shape:
        raise InputError(f"spectra {spectra.shape} and ivar {ivar.shape} differ in shape")
    n_spec, n_pix = spectra.shape
    n_tpl, n_tpl_pix = templates.shape
    offset = int(template_offset)
    if offset < 0 or offset + n_pix > n_tpl_pix:
        raise InputError(f"templates ({n_tpl_pix} pixels, offset {offset}) do not cover the {n_pix} galaxy pixels")
    if not (np.isfinite(velscale) and velscale > 0):
        raise InputError(f"velscale must be positive, got {velscale}")
    family = validate_config(config)
    n_kin = len(family.param_names)
    problem, n_fft, vmax_pix = _build_problem(templates, offset, n_pix, velscale, config, family)

    use_xcorr = v_start is None
    v0 = np.zeros(n_spec) if v_start is None else np.broadcast_to(np.asarray(v_start, float) / velscale, (n_spec,))
    cfg = config._replace(sigma_start=config.sigma_start / velscale)
    fn = _compiled_chunk_fn(cfg, family, n_kin, offset, n_pix, n_fft, use_xcorr, vmax_pix)

    out = _run_chunks(lambda g, w, vs: fn(g, w, vs, problem), (spectra, ivar, v0), config, progress)
    return _to_result(out, family, n_kin, n_tpl, config, velscale)


def _run_chunks(fn, arrays, config, progress=None):
    """Apply a compiled batched ``fn(*chunk_arrays) -> dict`` to fixed-size chunks of the
    leading axis of ``arrays`` (zero-padded), on ``config.n_threads`` threads; returns
    the concatenated outputs."""
    n_spec = arrays[0].shape[0]
    chunk = max(1, min(int(config.chunk_size), n_spec))  # never pad a few spectra to a big chunk
    starts = list(range(0, n_spec, chunk))

    def run_chunk(start):
        stop = min(start + chunk, n_spec)
        padded = []
        for arr in arrays:
            z = np.zeros((chunk,) + arr.shape[1:])
            z[: stop - start] = arr[start:stop]
            padded.append(jnp.asarray(z))
        res = fn(*padded)
        return {k: np.asarray(v)[: stop - start] for k, v in res.items()}

    if progress is not None:
        progress(0, n_spec)
    n_threads = max(1, min(int(config.n_threads or os.cpu_count() or 1), len(starts)))
    outputs = []
    if n_threads == 1:
        for start in starts:
            outputs.append(run_chunk(start))
            if progress is not None:
                progress(min(start + chunk, n_spec), n_spec)
    else:
        # Chunks are independent: XLA releases the GIL, so threads keep every core busy
        # with the same compiled function (static shapes, one compilation).
        with ThreadPoolExecutor(max_workers=n_threads) as pool:
            done = 0
            for out in pool.map(run_chunk, starts):
                outputs.append(out)
                done += len(next(iter(out.values())))
                if progress is not None:
                    progress(done, n_spec)
    return {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}


def _local_quadratic_one(galaxy, w, kin, problem, *, ft_fn, n_kin, offset, n_pix, n_fft):
    """Profiled chi^2 of one spectrum at fixed kinematics, with its gradient and
    Gauss-Newton Hessian with respect to the kinematics (linear weights profiled out).

    By the envelope theorem the gradient of the profiled ``chi^2 / 2`` is ``-J^T W r``
    with ``J`` the model's derivative at fixed weights; the Hessian is the Schur
    complement of the linear block in the joint Gauss-Newton matrix, i.e. the inverse
    of the kinematic block of the Laplace covariance (zero-weight templates held fixed).
    """
    n_tpl = problem.template_ft.shape[0]
    kin = jnp.clip(kin, problem.lower[:n_kin], problem.upper[:n_kin])
    conv = _convolve(problem, ft_fn, kin, offset, n_pix, n_fft)
    coef, model, chi2, _, _ = _linear_solve(conv, jnp.ones(n_pix), problem, galaxy, w)
    combined_ft = coef[:n_tpl] @ problem.template_ft
    dlhat = _materialize(jax.jacfwd(lambda k: ft_fn(problem.omega, k))(kin))  # (n_freq, n_kin)
    dfull = jnp.fft.irfft(combined_ft[None, :] * dlhat.T, n_fft, axis=-1)
    jac = lax.dynamic_slice_in_dim(dfull, offset, n_pix, axis=-1)  # (n_kin, n_pix)
    grad = -(jac * w[None, :]) @ (galaxy - model)
    lin = jnp.concatenate([conv, problem.add_basis], axis=0)
    cols = jnp.concatenate([jac, lin], axis=0)
    n_lin = lin.shape[0]
    fixed = jnp.concatenate([jnp.zeros(n_kin, bool), (jnp.arange(n_lin) < n_tpl) & (coef <= 0.0)])
    cov = _laplace_covariance(cols, w, ~fixed)[:n_kin, :n_kin]
    return dict(chi2=chi2, grad=grad, hess=spd_inverse(cov), cov=cov, model=model)


def local_quadratic(spectra, ivar, templates, template_offset, velscale, kinematics, config=FitConfig()):
    """Profiled chi^2, gradient and Gauss-Newton Hessian of many spectra at given kinematics.

    The quadratic model of each spectrum's likelihood around ``kinematics`` that the
    joint spatial fit (:mod:`cube3d.spatial.joint`) iterates on.  Template weights and
    additive polynomials are re-solved (non-negative) at the given kinematics.

    Parameters
    ----------
    spectra, ivar : array (n_spec, n_pix)
    templates, template_offset, velscale
        As for :func:`fit_spectra`.
    kinematics : array (n_spec, n_kin)
        V, sigma (km/s) and the shape parameters of ``config.family``; clipped to the
        fit bounds.
    config : FitConfig
        ``mdegree`` must be 0 (multiplicative polynomials are not profiled here).

    Returns
    -------
    dict
        ``chi2`` (n_spec,) of chi^2; ``grad`` (n_spec, n_kin) of d(chi^2/2)/d theta;
        ``hess`` (n_spec, n_kin, n_kin) of the Gauss-Newton Hessian of chi^2/2 and
        ``cov`` its inverse, in the units of ``kinematics``; ``model`` (n_spec, n_pix).
    """
    spectra = np.asarray(spectra, dtype=np.float64)
    ivar = np.asarray(ivar, dtype=np.float64)
    templates = np.asarray(templates, dtype=np.float64)
    family = validate_config(config)
    if config.mdegree > 0:
        raise InputError(f"mdegree={config.mdegree}: the joint spatial fit profiles additive polynomials only; use mdegree=0")
    n_kin = len(family.param_names)
    kinematics = np.asarray(kinematics, dtype=np.float64)
    if kinematics.shape != (spectra.shape[0], n_kin):
        raise InputError(f"kinematics: expected shape {(spectra.shape[0], n_kin)}, got {kinematics.shape}")
    n_pix = spectra.shape[1]
    offset = int(template_offset)
    problem, n_fft, _ = _build_problem(templates, offset, n_pix, velscale, config, family)
    units = np.ones(n_kin)
    units[:2] = velscale
    key = ("quadratic", config._replace(n_threads=None, sigma_start=0.0), n_kin, offset, n_pix, n_fft)
    if key not in _COMPILED:
        one = functools.partial(_local_quadratic_one, ft_fn=family.ft, n_kin=n_kin, offset=offset,
                                n_pix=n_pix, n_fft=n_fft)
        _COMPILED[key] = jax.jit(jax.vmap(one, in_axes=(0, 0, 0, None)))
    fn = _COMPILED[key]
    out = _run_chunks(lambda g, w, k: fn(g, w, k, problem), (spectra, ivar, kinematics / units), config)
    return dict(
        chi2=out["chi2"],
        grad=out["grad"] / units,
        hess=out["hess"] / (units[:, None] * units[None, :]),
        cov=out["cov"] * (units[:, None] * units[None, :]),
        model=out["model"],
    )


def _to_result(out, family, n_kin, n_tpl, config, velscale):
    """Convert pixel units to km/s, flag unusable spectra with NaN."""
    n_add = config.degree + 1 if config.degree >= 0 else 0
    n_theta_min = n_kin + max(config.mdegree, 0) + n_add + 1
    ok = out["n_good"] > max(2 * n_theta_min, 10)
    units = np.ones(n_kin)
    units[:2] = velscale
    params = out["theta"][:, :n_kin] * units
    cov = out["cov"] * units[None, :, None] * units[None, None, :]
    errors = np.sqrt(np.clip(np.diagonal(cov, axis1=1, axis2=2), 0, None))
    ok &= np.all(np.isfinite(params), axis=1) & np.all(np.isfinite(errors), axis=1)
    nan = lambda a: np.where(ok.reshape((-1,) + (1,) * (a.ndim - 1)), a, np.nan)
    coef = out["coef"]
    return FitResult(
        param_names=tuple(family.param_names),
        params=nan(params),
        errors=nan(errors),
        covariance=nan(cov),
        chi2=nan(out["chi2"]),
        template_weights=nan(coef[:, :n_tpl]),
        additive=nan(coef[:, n_tpl:]),
        multiplicative=nan(out["theta"][:, n_kin:]),
        bestfit=nan(out["model"]),
        weights_used=out["w"],
        n_good=out["n_good"],
        ok=ok,
    )
