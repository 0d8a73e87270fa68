"""Per-spectrum LOSVD fitting, written for one spectrum and ``vmap``-ped over chunks.

The model of one spectrum (templates convolved with the LOSVD in Fourier space,
non-negative template weights, additive and multiplicative Legendre polynomials) is
described in :mod:`cube3d.spectral_model`.

Nonlinear parameters ``theta = (V, sigma, h3.., c_1..)`` and linear ones ``(a, b)`` are
fitted by a damped Gauss-Newton (Levenberg 1944; Marquardt 1963) iteration: each step
linearises the model in ``theta`` (it is already linear in ``(a, b)``) and solves the
linearised least-squares problem for ``(delta theta, a, b)`` on the current face of the
constraints (templates with positive weight free, those at zero held there: the
variable-projection step of Kaufman 1975).  A step is kept when the chi^2 of the
profiled problem (``a >= 0, b`` re-solved at the new ``theta`` by non-negative least
squares, Lawson & Hanson 1974, so templates enter and leave there) decreases, otherwise
the damping grows.  The iteration count is fixed (``lax.scan``), so every spectrum has
the same static shapes and many are fitted at once with ``jax.vmap``.

Starts and steps
----------------
The fit starts at V = 0 (the redshift, or ``v_start``) and the start dispersion; the
cross-correlation peak (Tonry & Davis 1979) replaces that start only when its profiled
chi^2 is lower by more than ``start_dchi2``.  Every iteration moves V and sigma by at
most ``step_limit`` times the current sigma (a trust region), so that a low-S/N fit does
not jump into one of the noise minima hundreds of km/s away; the first third of the
iterations keeps the shape parameters (h3, h4, ...) at their start.

Compressed templates
--------------------
A library of ``n_tpl`` templates is replaced by its truncated singular value
decomposition, ``templates ~ mix @ basis`` with ``r`` orthonormal basis spectra, at the
smallest rank that reproduces every template to ``svd_tol`` (rms per pixel relative to
the template's rms; :func:`cube3d.basis.svd_basis`, Eckart & Young 1936).  The LOSVD
convolution is linear, so the iterations convolve the ``r`` basis spectra instead of the
templates and build the normal matrix of the ``n_tpl`` weights from the ``r x r`` one,
keeping non-negativity on the weights of the templates themselves; at most ``r`` plus
the free parameters are ever passive, so the non-negative solves are of that size.  The
basis depends on the templates and the settings only (every chunk of a cube gets the
same basis and the same compiled function).  The last ``n_polish`` iterations (3 of 9 by default)
run on the templates themselves, on ``max(12, r + 4)`` of them: those with positive
weight and then those whose zero weight the data most want to raise (the gradient of
chi^2, :func:`cube3d.spectral_model.template_gradient`).  So the reported fit is that of
the templates, not of their approximation: on 50 MILES SSPs at S/N 30 per pixel the
median difference from the uncompressed fit is 0.01-0.03 of an error
(``tests/cube3d/test_fit_compressed.py``).

Newton finish
-------------
The compressed optimum lies up to ~0.5 of an error from the exact one, and Gauss-Newton
steps close that gap only linearly (each leaves ~0.2 of the distance on MILES fits at S/N
30): they drop the residual curvature ``sum_i w_i r_i d2 model_i`` of the chi^2 Hessian,
which is not small against ``J^T W J`` in the kinematic block (Nocedal & Wright
2006, sect. 10.3).  With ``newton_finish`` the exact steps are Newton steps with that term
(:func:`cube3d.spectral_model.residual_curvature`, the LOSVD's second derivatives in closed
form, :meth:`cube3d.losvd.LOSVDFamily.ft_hessian`), which converge quadratically from
there: after 6 compressed and 3 exact steps 96.7% of 2048 such fits pass the convergence
test, against 90.6% after 9 + 3 Gauss-Newton steps, and they are 1.16x faster.  A rejected
Newton step (chi^2 rose) is followed by Gauss-Newton steps until one is kept.  Without a
compressed library (``svd_tol=None``) the last ``min(3, n_iter // 3)`` steps are Newton
steps.

The iterations run their transforms in single
precision (``single_fft``; relative error ~1e-7); the exact finish, the model, chi^2 and
the covariance are in double precision.

Convergence: a fit has converged when, over its last two iterations (the last one on
the templates themselves after a compressed library), chi^2 fell by less than
``chi2_rtol`` times chi^2 (relative change) and no LOSVD parameter moved by more than
``param_rtol`` times its one-sigma error (relative to its error, since V has no natural
scale), nor would the last step have moved it by more, had it been kept (a rejected step
leaves theta unchanged without being at the optimum).  :attr:`FitResult.converged` is
False otherwise, and the maps set FLAG bit 2 (:mod:`cube3d.flags`).

Errors come from the Laplace (Gauss-Newton) covariance ``(J^T W J)^{-1}`` over all free
parameters at the solution, with templates at zero weight held at their bound; the
kinematic block therefore includes the correlation with template weights and
polynomials (as in a variable-projection fit).

Velocities are in km/s relative to the redshift used to de-redshift the spectra:
a shift of one ln-lambda pixel is ``velscale`` km/s (``V = c * Delta ln lambda``).
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dynamics.xla_options import compiled

from . import losvd
from .basis import svd_basis
from .devices import n_devices, over_devices, usable_cores
from .errors import InputError
from .linalg import restricted_solve, spd_inverse
from .spectral_model import (
    basis_weights,
    build_problem,
    convolved_templates,
    expand,
    ft_jacobian,
    kinematic_jacobian,
    legendre_basis,
    linear_solve,
    n_templates,
    reduce_coef,
    reduced_columns,
    residual_curvature,
    start_velocity,
    template_gradient,
)

__all__ = [
    "FitConfig",
    "FitInput",
    "FitResult",
    "fit_spectra",
    "local_quadratic",
    "profiled_chi2",
    "legendre_basis",
    "losvd_family",
    "validate_config",
]


class FitConfig(NamedTuple):
    """Settings of the per-spectrum fit (hashable).

    The names match the command-line options of ``cube3d fit`` (``--moments``,
    ``--losvd``, ``--degree``, ``--mdegree``, ``--clip``, ``--sigma-start``,
    ``--chunk-size``) and the maps header (``MOMENTS``, ``LOSVD``, ...).

    Parameters
    ----------
    moments : int
        Gauss-Hermite moments: 2 (V, sigma), 3, 4 (h3, h4), 5 or 6.  Ignored for the
        Sanders-Evans family, which has its own parameters.
    losvd : str
        LOSVD family: ``"gauss_hermite"`` or ``"sanders_evans"``.
    degree : int
        Degree of the additive Legendre polynomial (-1 for none).
    mdegree : int
        Degree of the multiplicative Legendre polynomial (0 for none).
    n_iter : int or None
        Damped Gauss-Newton iterations (fixed, so shapes are static); with a compressed
        library the last ``min(3, n_iter // 3)`` of them on the templates themselves.
        None: 9 for Gauss-Hermite, 12 for Sanders-Evans (whose shape parameters leave
        their start slowly: with 9 the median A stays at its start on the mocks of
        ``tests/cube3d/test_fit.py``).
    clip : float or None
        If set, pixels whose residual exceeds ``clip`` times the rms of the normalised
        residuals are masked after a first fit, and the fit is repeated once (a single
        round of the outlier clipping of Cappellari 2023, sec. 3.7).
    sigma_start : float
        Starting dispersion in km/s.
    v_range : float
        Velocities are bounded to ``+-v_range`` km/s around 0 (the redshift); the start
        (cross-correlation or ``v_start``) lies inside these bounds.
    sigma_max : float
        Upper bound of the dispersion in km/s (lower bound 0.1 pixel).
    h_bound : float
        Bound on |h_m| for the Gauss-Hermite family.
    step_limit : float
        Trust region of every iteration: V moves by at most ``step_limit`` times the
        current sigma, sigma by at most that fraction of itself.  Keeps a fit in the
        basin it starts in instead of jumping to a noise minimum (module docstring,
        "Starts and steps").
    start_dchi2 : float
        The cross-correlation start replaces the systemic start (V = 0 or ``v_start``)
        only when its profiled chi^2 is lower by more than this (module docstring).
    chi2_rtol : float
        Convergence: largest relative decrease of chi^2 over the last two iterations.
    param_rtol : float
        Convergence: largest change of any LOSVD parameter over the last two iterations,
        in units of its one-sigma error.
    svd_tol : float or None
        Compressed templates (module docstring): the iterations use the truncated SVD of
        the library at the smallest rank whose truncation error, rms per pixel relative to
        each template's rms, is below ``svd_tol``, and finish on the templates themselves.
        None: the templates themselves throughout.
    single_fft : bool
        The Gauss-Newton iterations convolve in single precision (relative error ~1e-7,
        far below any spectrum's noise); the reported weights, chi^2, model and
        covariance come from a double-precision solve at the final parameters.
    newton_finish : bool
        The last steps (on the templates themselves, after a compressed library) are
        Newton steps (module docstring, "Newton finish"); False: Gauss-Newton steps
        throughout, as before 2026-12-07 (with ``n_iter=12``).
    chunk_size : int
        Spectra per compiled batch (static shape; sets the peak memory).
    n_threads : int or None
        Chunks fitted concurrently (default: the cores this process may use,
        :func:`cube3d.devices.usable_cores`); peak memory
        grows with ``n_threads * chunk_size``.
    """

    moments: int = 4
    losvd: str = "gauss_hermite"
    degree: int = 4
    mdegree: int = 0
    n_iter: Optional[int] = None
    clip: Optional[float] = None
    sigma_start: float = 150.0
    v_range: float = 1500.0
    sigma_max: float = 1000.0
    h_bound: float = 0.3
    step_limit: float = 0.5
    start_dchi2: float = 25.0
    chi2_rtol: float = 1e-5
    param_rtol: float = 0.1
    svd_tol: Optional[float] = 0.01
    single_fft: bool = True
    newton_finish: bool = True
    chunk_size: int = 16
    n_threads: Optional[int] = None


class FitInput(NamedTuple):
    """Spectra and templates for :func:`fit_spectra`, when they do not come from
    :func:`cube3d.prepare.prepare_cube` (whose :class:`~cube3d.prepare.PreparedData`
    has the same attributes and can be passed directly).

    Attributes
    ----------
    spectra : array (n_spec, n_pix) or (n_pix,)
        Rest-frame spectra on a uniform ln-lambda grid (typically normalised to median 1).
    ivar : array, like ``spectra``
        Inverse variances; 0 masks a pixel.
    templates : array (n_tpl, n_tpl_pix)
        Templates on the same ln-lambda step; galaxy pixel ``j`` sits at template pixel
        ``j + template_offset``.
    template_offset : int
        See above; must leave room for the largest velocity shift on both sides.
    velscale : float
        km/s per pixel.
    """

    spectra: np.ndarray
    ivar: np.ndarray
    templates: np.ndarray
    template_offset: int
    velscale: float


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
    converged : (n_spec,) bool
        The convergence criterion (module docstring) was met within ``n_iter``.
    clipped_fraction : (n_spec,)
        Fraction of the usable pixels that outlier clipping rejected (0 without ``clip``).
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
    converged: np.ndarray
    clipped_fraction: np.ndarray


def validate_config(config):
    """Reject settings the fit cannot use, with a message naming the option.

    Called by :func:`fit_spectra`, and by the pipeline before any file is read.

    Returns
    -------
    cube3d.losvd.LOSVDFamily
        The LOSVD family the settings select.
    """

    def positive(x):
        return isinstance(x, (int, float, np.integer, np.floating)) and np.isfinite(x) and x > 0

    def integer(x):
        return isinstance(x, (int, np.integer)) and not isinstance(x, bool)

    if config.losvd == "gauss_hermite" and not (integer(config.moments) and 2 <= config.moments <= 6):
        raise InputError(f"--moments: must be an integer from 2 to 6, got {config.moments}")
    if not (integer(config.degree) and config.degree >= -1):
        raise InputError(f"--degree: must be an integer >= -1 (-1: no additive polynomial), got {config.degree}")
    if not (integer(config.mdegree) and config.mdegree >= 0):
        raise InputError(f"--mdegree: must be an integer >= 0, got {config.mdegree}")
    if config.clip is not None and not positive(config.clip):
        raise InputError(f"--clip: must be a positive number of sigmas, got {config.clip}")
    if not positive(config.sigma_start):
        raise InputError(f"--sigma-start: must be a positive number of km/s, got {config.sigma_start}")
    if not (positive(config.sigma_max) and config.sigma_start < config.sigma_max):
        raise InputError(f"--sigma-start: must lie below the dispersion bound sigma_max = {config.sigma_max:g} km/s, "
                         f"got {config.sigma_start:g}")
    if not positive(config.step_limit):
        raise InputError(f"step_limit: must be a positive multiple of sigma, got {config.step_limit}")
    if not (isinstance(config.start_dchi2, (int, float, np.integer, np.floating)) and config.start_dchi2 >= 0):
        raise InputError(f"start_dchi2: must be a chi^2 difference >= 0, got {config.start_dchi2}")
    if config.svd_tol is not None and not positive(config.svd_tol):
        raise InputError(f"svd_tol: must be a positive relative accuracy or None, got {config.svd_tol}")
    if not (integer(config.chunk_size) and config.chunk_size >= 1):
        raise InputError(f"--chunk-size: must be a positive integer, got {config.chunk_size}")
    if not (config.n_iter is None or (integer(config.n_iter) and config.n_iter >= 1)):
        raise InputError(f"n_iter: must be a positive integer or None, got {config.n_iter}")
    if not isinstance(config.newton_finish, (bool, np.bool_)):
        raise InputError(f"newton_finish: must be True or False, got {config.newton_finish!r}")
    if not (positive(config.chi2_rtol) and positive(config.param_rtol)):
        raise InputError(f"chi2_rtol, param_rtol: must be positive, got {config.chi2_rtol}, {config.param_rtol}")
    return losvd_family(config)


def losvd_family(config):
    """The :class:`cube3d.losvd.LOSVDFamily` selected by ``config.losvd`` and ``config.moments``."""
    if config.losvd == "gauss_hermite":
        if config.moments not in (2, 3, 4, 5, 6):
            raise InputError(f"--moments: must be an integer from 2 to 6, got {config.moments}")
        return losvd.LOSVDFamily.gauss_hermite(config.moments)
    if config.losvd == "sanders_evans":
        return losvd.LOSVDFamily.sanders_evans()
    raise InputError(f"--losvd must be 'gauss_hermite' or 'sanders_evans', got {config.losvd!r}")


def _iterations(config):
    """The number of iterations ``config`` asks for (``FitConfig.n_iter``, its default by family)."""
    if config.n_iter is not None:
        return int(config.n_iter)
    return 12 if config.losvd == "sanders_evans" else 9


def _shape_bounds(family, config):
    """Lower/upper bounds of the LOSVD shape parameters (after V and sigma)."""
    n_shape = len(family.param_names) - 2
    if config.losvd == "gauss_hermite":
        return -config.h_bound * np.ones(n_shape), config.h_bound * np.ones(n_shape)
    lo, hi = losvd.sanders_evans_bounds()
    return np.asarray(lo, float), np.asarray(hi, float)


def template_basis(templates, config):
    """The compressed library of a fit (module docstring, "Compressed templates").

    Returns ``(mix, basis)`` with ``templates ~ mix @ basis`` from
    :func:`cube3d.basis.svd_basis` at the relative accuracy ``config.svd_tol``, or
    ``(None, templates)`` when ``config.svd_tol`` is None or the truncated SVD would not
    be smaller than the library.  Depends on the templates and the settings only, so
    every chunk of a cube gets the same basis (and the same compiled fit).
    """
    templates = np.asarray(templates, dtype=np.float64)
    if config.svd_tol is None:
        return None, templates
    mix, basis, _ = svd_basis(templates, float(config.svd_tol))
    if basis.shape[0] >= templates.shape[0]:
        return None, templates
    return mix, basis


def _problem_for(data, config, family):
    """The shared arrays of a fit (:func:`cube3d.spectral_model.build_problem`) from a config."""
    mix, basis = template_basis(data.templates, config)
    return build_problem(
        data.templates, data.template_offset, data.spectra.shape[1], data.velscale,
        v_range=config.v_range, sigma_max=config.sigma_max, sigma_start=config.sigma_start,
        shape_bounds=_shape_bounds(family, config), shape_start=family.shape_start,
        degree=config.degree, mdegree=config.mdegree, compressed=None if mix is None else (mix, basis),
    )


class _Static(NamedTuple):
    """Everything that fixes the shapes and the control flow of one fit (a static jit
    argument: equal settings reuse the compiled function)."""

    family: losvd.LOSVDFamily
    offset: int
    n_pix: int
    n_fft: int
    n_iter: int
    clip: Optional[float]
    use_xcorr: bool
    step_limit: float
    start_dchi2: float
    chi2_rtol: float
    param_rtol: float
    single: bool = False  # single-precision transforms in the iterations (FitConfig.single_fft)
    width: int = 1 << 30  # spectra per vectorised batch inside a chunk (_vmap_width)
    n_slots: int = 0  # compressed library: templates of the exact finish (0: none)
    n_polish: int = 0  # steps of the finish (on the templates themselves; Newton steps with newton_finish)
    newton_finish: bool = False  # FitConfig.newton_finish: the exact finish takes Newton steps
    newton: bool = False  # this spectrum's steps are Newton steps (set for the exact finish)


_LAMBDA_START = 1e-4  # Marquardt damping of a fresh state


class _State(NamedTuple):
    """Carry of the damped Gauss-Newton iteration for one spectrum."""

    theta: jax.Array  # nonlinear parameters (pixels for V, sigma)
    coef: jax.Array  # linear coefficients: template weights, then additive polynomial
    chi2: jax.Array
    conv: jax.Array  # (n_tpl, n_pix) templates convolved at theta
    mpoly: jax.Array  # (n_pix,) multiplicative polynomial at theta
    gram: jax.Array  # normal matrix of the linear columns
    rhs: jax.Array
    lam: jax.Array  # Marquardt damping


class _Spectrum:
    """The pieces of one spectrum's fit at fixed static settings (built at trace time)."""

    def __init__(self, problem, static, galaxy):
        self.problem, self.s, self.galaxy = problem, static, galaxy
        self.n_kin = static.family.n_params
        self.n_tpl = n_templates(problem)
        self.n_theta = self.n_kin + problem.mult_basis.shape[0]
        self.n_lin = self.n_tpl + problem.add_basis.shape[0]

    def model(self, coef, conv, mpoly):
        """The model spectrum for linear coefficients ``coef`` and convolved basis ``conv``."""
        return reduce_coef(self.problem, coef) @ reduced_columns(conv, mpoly, self.problem)

    def expand_joint(self, x):
        """:func:`cube3d.spectral_model.expand` for a last axis that starts with theta."""
        return jnp.concatenate([x[..., : self.n_theta], expand(self.problem, x[..., self.n_theta :])], axis=-1)

    def profiled(self, theta, w, passive_init=None, single=None):
        """The state at ``theta``: linear coefficients re-solved (non-negative templates).
        ``single``: transforms in single precision (default: the fit's setting)."""
        s, p = self.s, self.problem
        conv = convolved_templates(p, s.family.ft, theta[: self.n_kin], s.offset, s.n_pix, s.n_fft,
                                   single=s.single if single is None else single)
        mpoly = 1.0 + theta[self.n_kin :] @ p.mult_basis
        coef, _, chi2, gram, rhs = linear_solve(conv, mpoly, p, self.galaxy, w, passive_init)
        return coef, chi2, conv, mpoly, gram, rhs

    def theta_columns(self, theta, coef, conv, mpoly, single=None):
        """Columns of d model / d theta at fixed linear coefficients: (n_theta, n_pix)."""
        return self._theta_columns(theta, coef, conv, mpoly, single)[0]

    def _theta_columns(self, theta, coef, conv, mpoly, single=None):
        """:meth:`theta_columns`, with the kinematic columns before the multiplicative
        polynomial and the LOSVD transform's derivative they were made from."""
        s, p = self.s, self.problem
        a = basis_weights(p, coef[: self.n_tpl])
        dlhat = ft_jacobian(p, s.family.ft, theta[: self.n_kin])
        dkin = kinematic_jacobian(p, s.family.ft, theta[: self.n_kin], a, s.offset, s.n_pix, s.n_fft,
                                  single=s.single if single is None else single, dlhat=dlhat)
        dmult = p.mult_basis * (a @ conv)[None, :]
        return jnp.concatenate([dkin * mpoly[None, :], dmult], axis=0), dkin, dlhat

    def residual_curvature(self, state, w, red, dkin, dlhat):
        """``S = sum_i w_i r_i d2 model_i`` over (theta, linear coefficients) at ``state``,
        the term of the chi^2 Hessian that Gauss-Newton drops
        (:func:`cube3d.spectral_model.residual_curvature`): the (theta, theta) and
        (theta, linear) blocks; the (linear, linear) block is zero.  ``red``, ``dkin`` and
        ``dlhat``: the state's reduced columns and :meth:`_theta_columns`' pieces."""
        p, n_kin = self.problem, self.n_kin
        wr = w * (self.galaxy - reduce_coef(p, state.coef) @ red)
        a = basis_weights(p, state.coef[: self.n_tpl])
        s_kk, s_kb = residual_curvature(p, self.s.family.ft_hessian, state.theta[:n_kin], a, wr * state.mpoly,
                                        dlhat, self.s.offset, self.s.n_pix, self.s.n_fft)
        n_basis, n_mult = state.conv.shape[0], p.mult_basis.shape[0]
        s_tt = jnp.zeros((self.n_theta, self.n_theta)).at[:n_kin, :n_kin].set(s_kk)
        s_tb = jnp.zeros((self.n_theta, red.shape[0])).at[:n_kin, :n_basis].set(s_kb)
        if n_mult:
            # model = mpoly (conv . a) + additive: d2 / d kin d c_m = P_m d(conv . a) / d kin,
            # d2 / d c_m d a_b = P_m conv_b
            wrp = wr[None, :] * p.mult_basis
            s_km = dkin @ wrp.T
            s_tt = s_tt.at[:n_kin, n_kin:].set(s_km).at[n_kin:, :n_kin].set(s_km.T)
            s_tb = s_tb.at[n_kin:, :n_basis].set(wrp @ state.conv.T)
        return s_tt, expand(p, s_tb)

    def gauss_newton_trial(self, state, it, w):
        """The trial point of one damped Gauss-Newton step from ``state`` (a Newton step
        where ``static.newton``, unless the last step was rejected)."""
        p, n_theta = self.problem, self.n_theta
        jac, dkin, dlhat = self._theta_columns(state.theta, state.coef, state.conv, state.mpoly)
        red = reduced_columns(state.conv, state.mpoly, p)
        # Normal equations of the joint linearised problem: only the blocks involving the
        # Jacobian columns are new; the linear-linear block comes from the last solve.
        jw = jac * w[None, :]
        g_tt, g_tl = jw @ jac.T, expand(p, jw @ red.T)
        gram = jnp.block([[g_tt, g_tl], [g_tl.T, state.gram]])
        rhs = jnp.concatenate([jw @ self.galaxy, state.rhs])
        norm = jnp.sqrt(jnp.diagonal(gram)) + 1e-30
        m = gram / (norm[:, None] * norm[None, :])
        # Marquardt (1963) damping on theta, in units of the diagonal of J^T W J
        damping = jnp.diag(jnp.concatenate([state.lam * jnp.ones(n_theta), jnp.zeros(self.n_lin)]) * jnp.diag(m))
        if self.s.newton:
            # Newton: the Hessian of chi^2 / 2 is J^T W J - S (residual_curvature), and
            # the step solves (G - S) (d, coef') = [J L]^T W y - S (0, coef) for the same
            # unknowns as below.  Near the optimum it converges quadratically where
            # Gauss-Newton converges linearly (at a rate ~0.2 on MILES fits at S/N 30:
            # S is not small against J^T W J in the kinematic block).  Far from it
            # S can make the matrix indefinite: after a rejected step (the damping raised
            # above its start) the step is Gauss-Newton's until one is kept.
            s_tt, s_tl = self.residual_curvature(state, w, red, dkin, dlhat)
            use = state.lam <= _LAMBDA_START
            curvature = jnp.block([[s_tt, s_tl], [s_tl.T, jnp.zeros((self.n_lin, self.n_lin))]])
            m = m - jnp.where(use, curvature, 0.0) / (norm[:, None] * norm[None, :])
            rhs = rhs.at[:n_theta].add(-jnp.where(use, s_tl @ state.coef, 0.0))
        m = m + damping
        # Linearisation: model(theta + d, coef') ~ lin(theta) coef' + jac(theta, coef) d,
        # solved for (d, coef') on the current face of the constraints: the templates with
        # positive weight free, those at zero held there (the variable-projection step of
        # Kaufman 1975 with the active set of the last non-negative solve).  Templates
        # enter or leave in the profiled solve at the trial point.
        face = jnp.concatenate([jnp.ones(n_theta, bool), (state.coef > 0) | (jnp.arange(self.n_lin) >= self.n_tpl)])
        # at most rank = n_basis + n_add linear parameters are free (linear_solve)
        sol = restricted_solve(m, rhs / norm, face, size=n_theta + red.shape[0]) / norm
        # The first third of the iterations fits V and sigma only (shape parameters frozen
        # at their start values, h_m = 0), which keeps h_m off their bounds while V and
        # sigma are still far from the solution.
        shape = (jnp.arange(n_theta) >= 2) & (jnp.arange(n_theta) < self.n_kin)
        step = jnp.where(shape & (it < self.s.n_iter // 3), 0.0, sol[:n_theta])
        # Trust region ("Starts and steps" in the module docstring): V and sigma move by at
        # most step_limit * sigma per iteration, so the fit cannot jump across the noise
        # minima of a low-S/N spectrum in one step.
        reach = self.s.step_limit * state.theta[1]
        step = step.at[0].set(jnp.clip(step[0], -reach, reach)).at[1].set(jnp.clip(step[1], -reach, reach))
        return jnp.clip(state.theta + step, p.lower, p.upper)

    def lm_step(self, state, step, w, targets):
        """One step of the schedule (:meth:`iterate`): a damped Gauss-Newton step, kept
        only when the profiled chi^2 decreases (else the damping grows), or the profiled
        evaluation of a given point ``targets[k]``, kept when its chi^2 is lower by more
        than ``margin``."""
        it, k, margin = step
        # k is the same for every spectrum of a batch, so this stays a branch under vmap
        trial = lax.cond(k < 0, lambda: self.gauss_newton_trial(state, it, w), lambda: targets[jnp.maximum(k, 0)])
        # Accept on the profiled chi^2 (linear coefficients re-solved at the trial theta):
        # keeping the joint solve's coefficients instead stalls with many templates.
        coef_t, chi2_t, conv_t, mpoly_t, gram_t, rhs_t = self.profiled(trial, w, state.coef > 0)
        better = jnp.isfinite(chi2_t) & (chi2_t < state.chi2 - margin)
        lam = jnp.clip(jnp.where(better, state.lam * 0.1, state.lam * 10.0), 1e-7, 1e7)
        lam = jnp.where(k < 0, lam, state.lam)
        new = _State(trial, coef_t, chi2_t, conv_t, mpoly_t, gram_t, rhs_t, lam)
        kept = jax.tree.map(lambda a, b: jnp.where(better, a, b), new, state)
        return kept._replace(lam=lam), (kept.chi2, kept.theta, trial - state.theta)

    def start(self, theta, w, passive_init=None, single=None):
        """The state at ``theta`` (linear coefficients profiled)."""
        return _State(theta, *self.profiled(theta, w, passive_init, single), jnp.asarray(_LAMBDA_START))

    def blank(self, theta, coef=None):
        """A state at ``theta`` that any evaluation replaces (chi^2 = inf); the positive
        entries of ``coef`` are the warm start of the first non-negative solve."""
        p = self.problem
        n_basis, n_pix = p.template_ft.shape[0], self.s.n_pix
        return _State(theta, jnp.zeros(self.n_lin) if coef is None else coef, jnp.asarray(jnp.inf),
                      jnp.zeros((n_basis, n_pix)), jnp.ones(n_pix), jnp.zeros((self.n_lin, self.n_lin)),
                      jnp.zeros(self.n_lin), jnp.asarray(_LAMBDA_START))

    def iterate(self, state, w, n_steps, first=None, targets=None, margins=None):
        """Profiled evaluations at ``targets`` (rows, in turn; kept when chi^2 falls by more
        than ``margins``), then ``n_steps`` damped Gauss-Newton steps numbered from ``first``
        in the schedule of ``n_iter`` (default: the last ones).  Every evaluation is the
        same code (one copy to compile).  Returns the final state, the chi^2 and theta
        from the last target's state on (or ``state``'s) and after every step, and the
        move the last step proposed (kept or not)."""
        first = self.s.n_iter - n_steps if first is None else first
        n_targets = 0 if targets is None else targets.shape[0]
        targets = jnp.zeros((1, self.n_theta)) if targets is None else targets
        margins = jnp.zeros(n_targets) if margins is None else jnp.asarray(margins, dtype=float)
        schedule = (jnp.concatenate([jnp.zeros(n_targets, int), jnp.arange(n_steps) + first]),
                    jnp.concatenate([jnp.arange(n_targets), -jnp.ones(n_steps, int)]),
                    jnp.concatenate([margins, jnp.zeros(n_steps)]))
        end, (chi2_hist, theta_hist, moves) = lax.scan(lambda st, x: self.lm_step(st, x, w, targets), state,
                                                       schedule)
        chi2_hist = jnp.concatenate([state.chi2[None], chi2_hist])[n_targets:]
        theta_hist = jnp.concatenate([state.theta[None], theta_hist])[n_targets:]
        return end, chi2_hist, theta_hist, moves[-1]

    def clip_outliers(self, state, w, nsigma):
        """Weights with pixels deviating by more than ``nsigma`` rms of the normalised
        residuals set to 0 (Cappellari 2023, sec. 3.7, one round)."""
        model = self.model(state.coef, state.conv, state.mpoly)
        resid = (self.galaxy - model) * jnp.sqrt(w)
        rms = jnp.sqrt(jnp.sum(resid**2) / jnp.maximum(jnp.sum(w > 0), 1))
        return jnp.where(jnp.abs(resid) > nsigma * rms, 0.0, w)

    def covariance(self, state, w):
        """Laplace covariance over all free parameters, zero-weight templates held at their
        bound; returns the kinematic block and the number of free parameters.

        The kinematic block of the inverse of the joint Gauss-Newton matrix
        ``[[G_tt, G_tl], [G_lt, G_ll]]`` is the kinematic block of the inverse of its
        Schur complement ``G_tt - G_tf G_ff^-1 G_ft`` over theta, with ``f`` the free
        linear parameters (the inverse of a partitioned matrix by block elimination).
        ``G_ll`` is the state's normal matrix of its profiled solve, so only the theta
        rows of the matrix touch the pixels.
        """
        p, n_theta = self.problem, self.n_theta
        jac = self.theta_columns(state.theta, state.coef, state.conv, state.mpoly, single=False)
        red = reduced_columns(state.conv, state.mpoly, p)
        jw = jac * w[None, :]
        g_tt, g_tl = jw @ jac.T, expand(p, jw @ red.T)
        free = (jnp.arange(self.n_lin) >= self.n_tpl) | (state.coef > 0.0)
        # parameters scaled to unit diagonal for conditioning
        norm_t = jnp.sqrt(jnp.abs(jnp.diagonal(g_tt))) + 1e-30
        norm_l = jnp.sqrt(jnp.abs(jnp.diagonal(state.gram))) + 1e-30
        g_ll = state.gram / (norm_l[:, None] * norm_l[None, :])
        g_lt = jnp.where(free[:, None], g_tl.T / (norm_l[:, None] * norm_t[None, :]), 0.0)
        # at most rank = n_basis + n_add linear parameters are free (linear_solve)
        solved = jax.vmap(lambda b: restricted_solve(g_ll, b, free, size=red.shape[0]), in_axes=1, out_axes=1)(g_lt)
        schur = g_tt / (norm_t[:, None] * norm_t[None, :]) - g_lt.T @ solved
        cov = spd_inverse(0.5 * (schur + schur.T)) / (norm_t[:, None] * norm_t[None, :])
        return cov[: self.n_kin, : self.n_kin], n_theta + jnp.sum(free)

    def finish_exact(self, state, w):
        """The exact finish of a fit on a compressed library (module docstring,
        "Compressed templates"): the last ``n_polish`` steps (Newton steps with
        ``newton_finish``, module docstring "Newton finish") on the templates
        themselves, restricted to ``n_slots`` of them.

        The slots hold the templates with positive weight at ``state`` and then those
        whose zero weight the data most want to raise (largest gradient of ``-chi^2/2``,
        :func:`cube3d.spectral_model.template_gradient`, per unit template norm); every
        other template stays at zero.  Returns the spectrum's exact sub-problem, the slot
        indices, the final state and the chi^2 and theta histories of the steps.
        """
        p, s, n_tpl = self.problem, self.s, self.n_tpl
        resid = w * (self.galaxy - self.model(state.coef, state.conv, state.mpoly)) * state.mpoly
        grad = template_gradient(p, s.family.ft, state.theta[: self.n_kin], resid, s.offset, s.n_pix, s.n_fft)
        a = state.coef[:n_tpl]
        norm = jnp.sqrt(jnp.sum(jnp.abs(p.exact_ft) ** 2, axis=1))  # templates' norms (Parseval)
        priority = jnp.where(a > 0, jnp.inf, grad / norm)
        slots = jnp.argsort(-priority)[: s.n_slots]
        exact = _Spectrum(p._replace(template_ft=p.exact_ft[slots], template_mix=None, exact_ft=None),
                          s._replace(single=False, newton=s.newton_finish), self.galaxy)
        warm = jnp.concatenate([a[slots], state.coef[n_tpl:]])
        end, chi2_hist, theta_hist, move = exact.iterate(exact.blank(state.theta, warm), w, s.n_polish,
                                                         targets=state.theta[None])
        return exact, slots, end, chi2_hist, theta_hist, move

    def converged(self, chi2_hist, theta_hist, cov, move, back=2):
        """The convergence criterion of the module docstring, over the last ``back`` steps
        and the ``move`` the last step proposed: a rejected step (theta unchanged) that
        proposed to move the LOSVD by more than ``param_rtol`` errors has not converged."""
        back = min(back, chi2_hist.shape[0] - 1)
        chi2_prev, chi2_end = chi2_hist[-1 - back], chi2_hist[-1]
        dchi2 = (chi2_prev - chi2_end) <= self.s.chi2_rtol * jnp.abs(chi2_end)
        dtheta = jnp.abs(theta_hist[-1, : self.n_kin] - theta_hist[-1 - back, : self.n_kin])
        err = jnp.sqrt(jnp.clip(jnp.diagonal(cov), 0.0, None))
        proposed = jnp.abs(move[: self.n_kin])
        return dchi2 & jnp.all(dtheta <= self.s.param_rtol * err) & jnp.all(proposed <= self.s.param_rtol * err)


def _fit_one(galaxy, w, v_start, problem, static):
    """Fit one spectrum; every size static.  Returns a dict of per-spectrum results
    (pixel units for V and sigma)."""
    spec = _Spectrum(problem, static, galaxy)
    theta0 = jnp.clip(problem.theta_start.at[0].set(v_start), problem.lower, problem.upper)
    if static.use_xcorr:
        # The cross-correlation peak replaces the systemic start only when the data
        # prefer it clearly (module docstring, "Starts and steps").
        v_x = start_velocity(problem, galaxy, w, static.offset, static.n_pix, static.n_fft, problem.upper[0])
        targets = jnp.stack([theta0, jnp.clip(theta0.at[0].set(v_x), problem.lower, problem.upper)])
        margins = [0.0, static.start_dchi2]
    else:
        targets, margins = theta0[None], [0.0]

    w_in = w
    n_main = max(static.n_iter - static.n_polish, 0)
    state, chi2_hist, theta_hist, move = spec.iterate(spec.blank(theta0), w, n_main, first=0, targets=targets,
                                                      margins=margins)
    if static.clip is not None:
        w = spec.clip_outliers(state, w, static.clip)
        state, chi2_hist, theta_hist, move = spec.iterate(spec.blank(state.theta, state.coef), w,
                                                          max(static.n_iter // 2, 4), targets=state.theta[None])

    if static.n_slots:
        # compressed library: the last steps on the templates themselves
        final, slots, state, chi2_exact, theta_exact, move = spec.finish_exact(state, w)
        cov, n_free = final.covariance(state, w)
        model = final.model(state.coef, state.conv, state.mpoly)
        coef = jnp.zeros(spec.n_lin).at[slots].set(state.coef[: static.n_slots])
        coef = coef.at[spec.n_tpl :].set(state.coef[static.n_slots :])
        # converged: the last exact step moved the LOSVD by < param_rtol of an error and
        # chi^2 by < chi2_rtol (the compressed steps before it aim at a slightly shifted
        # optimum, so their history says nothing about the exact one)
        converged = final.converged(chi2_exact, theta_exact, cov, move, back=1)
    else:
        if static.n_polish:
            # the templates themselves throughout: the last steps are Newton steps
            newton = _Spectrum(problem, static._replace(newton=True), galaxy)
            state, chi2_end, theta_end, move = newton.iterate(state, w, static.n_polish)
            chi2_hist = jnp.concatenate([chi2_hist, chi2_end[1:]])
            theta_hist = jnp.concatenate([theta_hist, theta_end[1:]])
        if static.single:
            # the iterations used single-precision transforms: the reported weights, chi^2,
            # model and covariance come from a double-precision solve at the final theta
            state = spec.start(state.theta, w, state.coef > 0, single=False)
        cov, n_free = spec.covariance(state, w)
        model = spec.model(state.coef, state.conv, state.mpoly)
        coef = state.coef
        converged = spec.converged(chi2_hist, theta_hist, cov, move)
    n_good = jnp.sum(w > 0)
    n_usable = jnp.sum(w_in > 0)
    return dict(theta=state.theta, cov=cov, chi2=state.chi2 / jnp.maximum(n_good - n_free, 1), coef=coef,
                model=model, w=w, n_good=n_good, converged=converged,
                clipped=(n_usable - n_good) / jnp.maximum(n_usable, 1))


_CACHE_BYTES = 3 << 20  # working set of one vectorised batch (this CPU: 1 MiB L2 per core, 32 MiB L3)


def _finish_settings(problem, config):
    """``n_slots`` and ``n_polish`` of the exact finish (module docstring, "Compressed
    templates" and "Newton finish").  Without a compressed library no slots, and the last
    ``n_polish`` steps are Newton steps with ``newton_finish`` (none below 3 steps)."""
    if problem.template_mix is None:
        return dict(n_slots=0, n_polish=int(min(3, _iterations(config) // 3)) if config.newton_finish else 0)
    n_tpl, rank = problem.template_mix.shape
    return dict(n_slots=int(min(n_tpl, max(_MIN_SLOTS, rank + _EXTRA_SLOTS))),
                n_polish=int(min(3, max(1, _iterations(config) // 3))))


_MIN_SLOTS = 12  # exact finish: templates at least (fits of 50 MILES SSPs at S/N 30 use 5, at most 8)
_EXTRA_SLOTS = 4  # ... and at least this many beyond the compressed rank


def _vmap_width(n_basis, problem, n_pix, n_theta):
    """Spectra fitted side by side inside a chunk.

    The arrays of one spectrum's iteration (convolved basis, Jacobian, linear columns:
    ``n_basis + n_add + n_theta`` rows of ``n_pix``) are read several times per
    iteration; a batch whose working set stays in cache is faster than a wide one that
    streams from memory (40 x 40 MUSE spaxels, 3306 pixels, 63 templates: batches of 4
    took 15.8 ms per spectrum, of 16 22.3 ms).  The widest power of two whose working set
    fits ``_CACHE_BYTES``.
    """
    rows = n_basis + problem.add_basis.shape[0] + n_theta
    per_spectrum = 8 * rows * n_pix
    return max(1, 1 << int(np.floor(np.log2(max(_CACHE_BYTES / per_spectrum, 1.0)))))


@compiled(static_argnames=("static", "devices"))
def _fit_chunk(galaxy, w, v_start, problem, static, devices=1):
    """:func:`_fit_one` over a chunk of spectra (leading axis), compiled once per
    ``static`` settings and chunk shape (JAX's own cache), split over ``devices``
    devices (:func:`cube3d.devices.over_devices`)."""
    return over_devices(functools.partial(_fit_batch, static=static), 3, devices)(galaxy, w, v_start, problem)


def _fit_batch(galaxy, w, v_start, problem, static):
    """:func:`_fit_one` over the spectra of one device."""
    one = functools.partial(_fit_one, problem=problem, static=static)
    if static.width >= galaxy.shape[0]:
        return jax.vmap(one)(galaxy, w, v_start)
    # batches of static.width spectra in turn (_vmap_width)
    return lax.map(lambda args: one(*args), (galaxy, w, v_start), batch_size=static.width)


def _as_input(data):
    """Float64 arrays of ``data`` (a :class:`FitInput` or a PreparedData), checked."""
    spectra = np.asarray(data.spectra, dtype=np.float64)
    ivar = np.asarray(data.ivar, dtype=np.float64)
    templates = np.asarray(data.templates, dtype=np.float64)
    if spectra.ndim == 1:
        spectra, ivar = spectra[None], ivar[None]
    if spectra.shape != ivar.shape:
        raise InputError(f"spectra {spectra.shape} and ivar {ivar.shape} differ in shape")
    n_pix = spectra.shape[1]
    n_tpl_pix = templates.shape[1]
    offset = int(data.template_offset)
    if offset < 0 or offset + n_pix > n_tpl_pix:
        raise InputError(f"templates ({n_tpl_pix} pixels, offset {offset}) do not cover the {n_pix} galaxy pixels")
    velscale = float(data.velscale)
    if not (np.isfinite(velscale) and velscale > 0):
        raise InputError(f"velscale must be positive, got {data.velscale}")
    return FitInput(spectra, ivar, templates, offset, velscale)


def fit_spectra(data, config=FitConfig(), *, v_start=None, progress=None):
    """Fit the LOSVD of many log-rebinned spectra, chunk by chunk.

    Parameters
    ----------
    data : cube3d.prepare.PreparedData or FitInput
        Spectra, inverse variances, templates, template offset and velscale (km/s
        per pixel).
    config : FitConfig
    v_start : array (n_spec,) or float, optional
        Starting velocities in km/s (then used as given).  Default: V = 0 (the
        redshift), replaced by the cross-correlation peak where its chi^2 is lower by
        more than ``config.start_dchi2``.
    progress : callable, optional
        Called as ``progress(n_done, n_total)`` after every chunk.

    Returns
    -------
    FitResult

    Examples
    --------
    >>> import jax; jax.config.update("jax_enable_x64", True)
    >>> from cube3d import datasets, read_cube, load_templates, prepare_cube
    >>> cube = read_cube(datasets.demo_cube_path())
    >>> prepared = prepare_cube(cube, load_templates(datasets.demo_templates_dir()), 0.0857, target_sn=15)
    >>> result = fit_spectra(prepared, FitConfig(moments=2))
    >>> result.params.shape == (prepared.n_spec, 2)
    True
    """
    data = _as_input(data)
    family = validate_config(config)
    n_spec, n_pix = data.spectra.shape
    problem, n_fft, _ = _problem_for(data, config, family)
    use_xcorr = v_start is None
    v0 = np.zeros(n_spec) if v_start is None else np.broadcast_to(np.asarray(v_start, float) / data.velscale, (n_spec,))
    static = _Static(family=family, offset=data.template_offset, n_pix=n_pix, n_fft=n_fft, n_iter=_iterations(config),
                     clip=config.clip, use_xcorr=use_xcorr, step_limit=float(config.step_limit),
                     start_dchi2=float(config.start_dchi2), chi2_rtol=float(config.chi2_rtol),
                     param_rtol=float(config.param_rtol), single=bool(config.single_fft),
                     newton_finish=bool(config.newton_finish), **_finish_settings(problem, config))
    static = static._replace(width=_vmap_width(max(problem.template_ft.shape[0], static.n_slots), problem, n_pix,
                                               family.n_params + max(config.mdegree, 0)))
    devices = n_devices()
    out = _run_chunks(lambda g, w, vs: _fit_chunk(g, w, vs, problem, static, devices), (data.spectra, data.ivar, v0),
                      config, progress, devices)
    return _to_result(out, family, n_templates(problem), config, data.velscale)


def _run_chunks(fn, arrays, config, progress=None, devices=1):
    """Apply a compiled batched ``fn(*chunk_arrays) -> dict`` to fixed-size chunks of the
    leading axis of ``arrays`` (zero-padded to a multiple of ``devices``, which share
    every chunk), on ``config.n_threads`` threads; returns the concatenated outputs."""
    n_spec = arrays[0].shape[0]
    chunk = max(1, min(int(config.chunk_size), n_spec))  # never pad a few spectra to a big chunk
    chunk = -(-chunk // devices) * devices
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
    n_threads = max(1, min(int(config.n_threads or usable_cores()), len(starts)))
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


def _local_quadratic_one(galaxy, w, kin, problem, static):
    """Profiled chi^2 of one spectrum at fixed kinematics, with its gradient and
    Gauss-Newton Hessian with respect to the kinematics (linear weights profiled out).

    By the envelope theorem the gradient of the profiled ``chi^2 / 2`` is ``-J^T W r``
    with ``J`` the model's derivative at fixed weights; the Hessian is the Schur
    complement of the linear block in the joint Gauss-Newton matrix, i.e. the inverse
    of the kinematic block of the Laplace covariance (zero-weight templates held fixed).
    """
    spec = _Spectrum(problem, static, galaxy)
    n_kin = spec.n_kin
    kin = jnp.clip(kin, problem.lower[:n_kin], problem.upper[:n_kin])
    coef, chi2, conv, mpoly, gram, _ = spec.profiled(kin, w)
    model = spec.model(coef, conv, mpoly)
    state = _State(kin, coef, chi2, conv, mpoly, gram, None, None)
    jac = spec.theta_columns(kin, coef, conv, mpoly)
    grad = -(jac * w[None, :]) @ (galaxy - model)
    cov, _ = spec.covariance(state, w)
    return dict(chi2=chi2, grad=grad, hess=spd_inverse(cov), cov=cov, model=model)


@compiled(static_argnames=("static", "devices"))
def _local_quadratic_chunk(galaxy, w, kin, problem, static, devices=1):
    """:func:`_local_quadratic_one` over a chunk of spectra, compiled once per settings,
    split over ``devices`` devices."""
    one = jax.vmap(functools.partial(_local_quadratic_one, static=static), in_axes=(0, 0, 0, None))
    return over_devices(one, 3, devices)(galaxy, w, kin, problem)


def local_quadratic(data, kinematics, config=FitConfig()):
    """Profiled chi^2, gradient and Gauss-Newton Hessian of many spectra at given kinematics.

    The quadratic model of each spectrum's likelihood around ``kinematics`` that the
    joint spatial fit (:mod:`cube3d.spatial.joint`) iterates on.  Template weights and
    additive polynomials are re-solved (non-negative) at the given kinematics.

    Parameters
    ----------
    data : cube3d.prepare.PreparedData or FitInput
        As for :func:`fit_spectra`.
    kinematics : array (n_spec, n_kin)
        V, sigma (km/s) and the shape parameters of ``config.losvd``; clipped to the
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
    out, units = _at_kinematics(_local_quadratic_chunk, data, kinematics, config, points=False)
    return dict(
        chi2=out["chi2"],
        grad=out["grad"] / units,
        hess=out["hess"] / (units[:, None] * units[None, :]),
        cov=out["cov"] * (units[:, None] * units[None, :]),
        model=out["model"],
    )


def _profiled_chi2_one(galaxy, w, kins, problem, static):
    """Profiled chi^2 of one spectrum at each row of ``kins`` (n_points, n_kin), in turn
    (one profiled solve in memory at a time)."""
    spec = _Spectrum(problem, static, galaxy)
    lower, upper = problem.lower[: spec.n_kin], problem.upper[: spec.n_kin]
    return dict(chi2=lax.map(lambda kin: spec.profiled(jnp.clip(kin, lower, upper), w)[1], kins))


@compiled(static_argnames=("static", "devices"))
def _profiled_chi2_chunk(galaxy, w, kins, problem, static, devices=1):
    """:func:`_profiled_chi2_one` over a chunk of spectra, split over ``devices`` devices."""
    one = jax.vmap(functools.partial(_profiled_chi2_one, static=static), in_axes=(0, 0, 0, None))
    return over_devices(one, 3, devices)(galaxy, w, kins, problem)


def profiled_chi2(data, kinematics, config=FitConfig()):
    """Profiled chi^2 of many spectra, each at several given kinematics.

    The spectra's likelihood ``exp(-chi^2 / 2)`` away from its optimum, where the
    quadratic model of :func:`local_quadratic` may not hold (e.g. along a grid in V for
    the joint spatial fit, :mod:`cube3d.spatial.joint`).  Template weights and additive
    polynomials are re-solved (non-negative) at every point, on the templates themselves.

    Parameters
    ----------
    data : cube3d.prepare.PreparedData or FitInput
        As for :func:`fit_spectra`.
    kinematics : array (n_spec, n_points, n_kin)
        V, sigma (km/s) and the shape parameters of ``config.losvd`` at which each
        spectrum is evaluated; clipped to the fit bounds.
    config : FitConfig
        ``mdegree`` must be 0.

    Returns
    -------
    ndarray (n_spec, n_points)
        chi^2 over the spectrum's good pixels.
    """
    return _at_kinematics(_profiled_chi2_chunk, data, kinematics, config, points=True)[0]["chi2"]


def _at_kinematics(chunk_fn, data, kinematics, config, points):
    """Run ``chunk_fn`` (a compiled per-chunk evaluation at fixed kinematics) over all
    spectra of ``data`` at ``kinematics`` (km/s; ``(n_spec, n_kin)``, or ``(n_spec,
    n_points, n_kin)`` with ``points``), checked; returns its outputs and the units (km/s
    per pixel for V and sigma, 1 for the rest) the kinematics were divided by."""
    data = _as_input(data)
    family = validate_config(config)
    if config.mdegree > 0:
        raise InputError(f"mdegree={config.mdegree}: the spectra are profiled over additive polynomials only; "
                         "use mdegree=0")
    n_kin = family.n_params
    kinematics = np.asarray(kinematics, dtype=np.float64)
    n_spec, n_pix = data.spectra.shape
    expected = f"({n_spec}, n_points, {n_kin})" if points else str((n_spec, n_kin))
    if kinematics.ndim != (3 if points else 2) or kinematics.shape[0] != n_spec or kinematics.shape[-1] != n_kin:
        raise InputError(f"kinematics: expected shape {expected}, got {kinematics.shape}")
    # one evaluation per spectrum and point: the templates themselves (no compressed library)
    problem, n_fft, _ = _problem_for(data, config._replace(svd_tol=None), family)
    static = _Static(family=family, offset=data.template_offset, n_pix=n_pix, n_fft=n_fft, n_iter=1,
                     clip=None, use_xcorr=False, step_limit=1.0, start_dchi2=0.0, chi2_rtol=1.0, param_rtol=1.0)
    units = np.ones(n_kin)
    units[:2] = data.velscale
    devices = n_devices()
    out = _run_chunks(lambda g, w, k: chunk_fn(g, w, k, problem, static, devices),
                      (data.spectra, data.ivar, kinematics / units), config, devices=devices)
    return out, units


def _to_result(out, family, n_tpl, config, velscale):
    """Convert pixel units to km/s, flag unusable spectra with NaN."""
    n_kin = family.n_params
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
        converged=out["converged"] & ok,
        clipped_fraction=out["clipped"],
    )
