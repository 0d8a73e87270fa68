"""Tier (b): joint MAP of all spaxels' spectra and the GP priors on the fields.

The objective is ``sum_i chi2_i(theta_i) / 2 - sum_k ln N(f_k | mu_k, K_k)`` over the
moment fields ``f_k`` (V, ln sigma, h3, ...) with each spectrum's template weights and
additive polynomial profiled out (re-solved, non-negative, at every evaluation).

Fields step by Gauss-Newton with the diagonal of each spaxel's kinematic Hessian
``H_i``: the step solves ``(D + K^-1) delta = -(g + K^-1 (f - mu))`` with
``D = diag(H_kk)``, which is the GP posterior mean given pseudo-data
``y = f - g / H_kk`` of precision ``H_kk`` (Rasmussen & Williams 2006, Sect. 3.4.1, the
same Newton form as their eq. 3.18 for non-Gaussian likelihoods).  Its fixed point is the
exact joint mode.  Hyperparameters are updated between rounds from the Laplace
approximation of the marginal likelihood: each spectrum's likelihood as a Gaussian about
its Newton point ``f - H^-1 g`` with the marginal variances ``(H^-1)_kk`` (the two-step
tier's data, re-linearised where the prior has pulled the fields).  The reported
standard deviations are the GP posterior's given each spectrum's likelihood as a
Gaussian at the mode; with ``GPConfig.hyper_integration == "ccd"`` (default) the
hyperparameters are refitted to those data once more and the posterior mixed over their
uncertainty (:mod:`cube3d.spatial.integrate`): the standard deviation is the mixture's
and the mean is the joint mode moved by the mixture's shift from the plug-in posterior
mean.

The Gaussian of V at the mode
-----------------------------
At S/N 2-5 per pixel a spectrum's likelihood in V is not a parabola: it is wider than
its curvature at the mode says, skewed, or has a second hump a few errors away (noise
minima).  The Newton data ``f - H^-1 g`` then sit too close to the mode (0.35-0.56 of the
way to each spectrum's own optimum, measured on the mocks of
``tests/benchmarks/validate_gp_coverage.py``), so the field refitted to them looks
smoother than it is, its amplitude comes out 2-3 times below the truth and the V errors
undercover (68% coverage 0.53 and 0.51 on seeds 0-9 and 10-19).  With
``GPConfig.v_likelihood_grid`` points (default 17) the V datum of each spectrum is
instead the mean, and its variance the variance, of the profiled likelihood
``exp(-chi^2 / 2)`` on an even grid across the mode +- 4 Laplace errors (within the fit's
V bounds), the other parameters at the mode (:func:`likelihood_moments`): the Gaussian
with the likelihood's own mass and spread, rather than its curvature at one point (the
moment matching of expectation propagation, Minka 2001, applied to the likelihood
alone; Rasmussen & Williams 2006, Sect. 3.6).  Coverage then 0.63 and 0.66, the V
maps nearly unchanged and their errors 1.08-1.92 times wider (figures in README.md,
Accuracy).
"""

from __future__ import annotations

import time

import jax.numpy as jnp
import numpy as np

from ..errors import InputError
from ..fit import local_quadratic, profiled_chi2
from .config import GPConfig, validate_gp_config
from .estimates import gp_estimates
from .means import mean_field
from .solvers import make_solver
from .twostep import LOG_FIELDS, GPResult, fit_field, to_natural, two_step_fields

__all__ = ["gp_joint_map", "likelihood_moments"]


def _natural(name, f):
    return np.exp(f) if name in LOG_FIELDS else f


def gp_joint_map(prepared, fit_result, fit_config, gp_config: GPConfig = GPConfig(tier="joint_map"),
                 log=None) -> GPResult:
    """Joint MAP of spectra + GP priors; starts from the two-step solution.

    Parameters
    ----------
    prepared : cube3d.prepare.PreparedData
        One spectrum per spaxel (``bin_id`` gives its row).
    fit_result : cube3d.fit.FitResult
        The per-spaxel fit.
    fit_config : cube3d.fit.FitConfig
        ``mdegree`` must be 0.
    gp_config : GPConfig
        ``n_outer`` hyperparameter rounds of ``n_inner`` Gauss-Newton steps each; the
        two-step start uses the per-spaxel estimates
        (:func:`cube3d.spatial.estimates.gp_estimates`).
    log : callable, optional
        Receives progress lines.

    Returns
    -------
    GPResult
        ``tier == "joint_map"``; ``diagnostics`` of the iterations in the fields'
        hyperparameter records (``header_meta`` adds ``gp_steps`` and ``gp_last_step``).
    """
    spec = validate_gp_config(gp_config)
    names = tuple(fit_result.param_names)
    if gp_config.fields and tuple(gp_config.fields) != names:
        raise InputError(f"gp tier 'joint_map' models every kinematic parameter {names}; leave fields unset")
    if fit_config.mdegree > 0:
        raise InputError(f"gp tier 'joint_map': mdegree={fit_config.mdegree} is not supported; use mdegree=0 or tier 'two_step'")
    say = log or (lambda msg: None)
    t0 = time.perf_counter()
    values, errors, ok = gp_estimates(prepared, fit_result, fit_config, gp_config)
    # the start needs the hyperparameters' mode only: no integration over them
    start = two_step_fields(values, errors, ok, gp_config._replace(fields=None, hyper_integration="none"))
    # later rounds use the spectra's own noise: no error factor, no clipping
    refit_config = gp_config._replace(noise_scale_range=None, clip=None)
    say(f"gp joint: two-step start in {time.perf_counter() - t0:.1f} s")

    bin_id = np.asarray(prepared.bin_id)
    shape = bin_id.shape
    has_spec = bin_id >= 0
    rows = bin_id[has_spec]
    usable = np.zeros(shape, bool)
    usable[has_spec] = np.asarray(fit_result.n_good)[rows] > 10
    ny, nx = shape
    yy, xx = jnp.mgrid[:ny, :nx]

    # fields in GP units on the grid
    f = {}
    hyper = {}
    for name in names:
        g = start.fields[name]
        f[name] = np.log(g.mean) if name in LOG_FIELDS else np.array(g.mean)
        hyper[name] = g.hyper

    def kinematics():
        """The current fields as one row of kinematics per spectrum (one spaxel per row)."""
        kin = np.zeros((prepared.n_spec, len(names)))
        kin[rows] = np.stack([_natural(n, f[n])[has_spec] for n in names], axis=1)
        return kin

    def quadratic():
        q = local_quadratic(prepared, kinematics(), fit_config)
        grad = np.zeros((ny, nx, len(names)))
        hess = np.zeros((ny, nx, len(names), len(names)))
        grad[has_spec] = q["grad"][rows]
        hess[has_spec] = q["hess"][rows]
        for k, n in enumerate(names):
            if n in LOG_FIELDS:  # d/d ln s = s d/ds (Gauss-Newton: no second-derivative term)
                s = _natural(n, f[n])
                grad[..., k] *= s
                hess[..., k, :] *= s[..., None]
                hess[..., :, k] *= s[..., None]
        grad[~usable] = 0.0
        hess[~usable] = 0.0
        return float(np.sum(q["chi2"][rows[usable[has_spec]]])), grad, hess

    def laplace_data(grad, hess):
        """Each spectrum's likelihood as a Gaussian about its Newton point: per field, the
        data ``f - (H^-1 g)_k`` and their precision ``1 / (H^-1)_kk`` (marginal variance)."""
        good = usable & np.all(np.isfinite(hess), axis=(-1, -2))
        cov = np.zeros_like(hess)
        cov[good] = np.linalg.inv(hess[good])
        newton = np.einsum("yxkl,yxl->yxk", cov, grad)
        out = {}
        for k, name in enumerate(names):
            var = cov[..., k, k]
            w = np.where(good & (var > 0), 1.0 / np.where(var > 0, var, 1.0), 0.0)
            out[name] = (np.where(w > 0, f[name] - newton[..., k], 0.0), w)
        return out

    def v_moment_data(y, w):
        """V data and precisions from the moments of each spectrum's likelihood in V
        (module docstring, "The Gaussian of V at the mode"), where ``w > 0``."""
        good = w > 0
        err = 1.0 / np.sqrt(np.where(good, w, 1.0))
        v_max = float(fit_config.v_range)  # the fit's V bounds
        lo = np.clip(f["V"] - 4.0 * err, -v_max, v_max)
        hi = np.clip(f["V"] + 4.0 * err, -v_max, v_max)
        grid = lo[..., None] + (hi - lo)[..., None] * np.linspace(0.0, 1.0, gp_config.v_likelihood_grid)
        kin = np.repeat(kinematics()[:, None, :], grid.shape[-1], axis=1)
        kin[rows, :, names.index("V")] = grid[has_spec]
        c2 = np.full(grid.shape, np.inf)
        c2[has_spec] = profiled_chi2(prepared, kin, fit_config)[rows]
        mean, var = likelihood_moments(c2, grid)
        # a likelihood narrower than the grid's step puts its mass on one point: no
        # narrower than a uniform density over that step
        var = np.maximum(var, ((hi - lo) / (gp_config.v_likelihood_grid - 1)) ** 2 / 12.0)
        ok = good & np.isfinite(mean) & (var > 0)
        # where the grid has no width (the mode on a V bound) the quadratic stays
        return np.where(ok, mean, y), np.where(ok, 1.0 / np.where(ok, var, 1.0), w)

    def mean_kind(name):
        return gp_config.v_mean if name == "V" else "constant"

    def field_mean(name):
        return np.asarray(mean_field(mean_kind(name), hyper[name].mean_params, yy, xx))

    steps = []
    current = None  # the spectral quadratic at the current fields (one pass over all spectra)
    for outer in range(gp_config.n_outer):
        if outer > 0:  # hyperparameters from the Laplace data at the current fields
            current = quadratic()
            for name, (y, w) in laplace_data(current[1], current[2]).items():
                hyper[name] = fit_field(name, y, w, refit_config, spec, mean_kind(name), integrate=False)[0].hyper
        for inner in range(gp_config.n_inner):
            chi2, grad, hess = current if current is not None else quadratic()
            current = None
            biggest = 0.0
            for k, name in enumerate(names):
                h = hess[..., k, k]
                w = np.where(usable & (h > 0), h, 0.0)
                y = np.where(w > 0, f[name] - grad[..., k] / np.where(w > 0, w, 1.0), 0.0)
                hp = hyper[name]
                solver = make_solver(gp_config.solver, spec, shape, w, gp_config, float(np.min(hp.scale)))
                mu = field_mean(name)
                post = solver.posterior(jnp.asarray(hp.amp), jnp.asarray(hp.scale), jnp.asarray(y - mu))
                new = mu + np.asarray(post.mean)
                std = start.fields[name].std / (start.fields[name].mean if name in LOG_FIELDS else 1.0)
                biggest = max(biggest, float(np.nanmax(np.abs(new - f[name]) / np.maximum(std, 1e-12))))
                f[name] = new
            steps.append(biggest)
            say(f"gp joint: round {outer + 1} step {inner + 1}: chi2 {chi2:.1f}, largest change {biggest:.3f} sigma")

    # posterior standard deviation at the mode: each spectrum's likelihood as a Gaussian there
    # (Laplace, or the moments of V's; module docstring), final hyperparameters
    chi2, grad, hess = quadratic()
    data = laplace_data(grad, hess)
    if gp_config.v_likelihood_grid:
        data["V"] = v_moment_data(*data["V"])
    fields = {}
    for name, (y, w) in data.items():
        hp, mean, mix = hyper[name], f[name], None
        if gp_config.hyper_integration == "ccd":
            # the hyperparameters' posterior given the Laplace data at the mode, and the
            # field's posterior mixed over it (Rue et al. 2009 Sect. 3.1)
            refit, solver = fit_field(name, y, w, refit_config, spec, mean_kind(name), z0=hp.z)
            hp, mix = refit.hyper, refit.integration
            mean = f[name] + (mix.mean - mix.centre_mean)
            std = np.sqrt(mix.var)
        else:
            solver = make_solver(gp_config.solver, spec, shape, w, gp_config, float(np.min(hp.scale)))
            std = solver.posterior(jnp.asarray(hp.amp), jnp.asarray(hp.scale), jnp.asarray(y - field_mean(name))).std
        fields[name] = to_natural(start.fields[name]._replace(
            mean=mean, std=std, hyper=hp, solver=solver.name, n_obs=int(np.sum(w > 0)), n_clipped=0,
            integration=mix))
    say(f"gp joint: done in {time.perf_counter() - t0:.1f} s, total chi2 {chi2:.1f}")
    diagnostics = {"gp_steps": len(steps), "gp_last_step": float(steps[-1]) if steps else 0.0, "gp_chi2": chi2}
    return GPResult(fields=fields, tier="joint_map", config=gp_config, diagnostics=diagnostics)


def likelihood_moments(chi2, grid):
    """Mean and variance of the likelihood ``exp(-chi2 / 2)`` over an evenly spaced grid.

    Parameters
    ----------
    chi2 : ndarray (..., n)
        chi^2 at the grid points (non-finite: no likelihood there).
    grid : ndarray (..., n)
        Evenly spaced points along the last axis.

    Returns
    -------
    mean, var : ndarray (...)
        The likelihood's moments (a normalised density on the grid, rectangle rule); NaN
        where no point has a finite chi^2.
    """
    chi2 = np.where(np.isfinite(chi2), chi2, np.inf)
    best = np.min(chi2, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        like = np.exp(-0.5 * (chi2 - np.where(np.isfinite(best), best, 0.0)))
        norm = np.sum(like, axis=-1)
        mean = np.sum(like * grid, axis=-1) / norm
        var = np.sum(like * (grid - mean[..., None]) ** 2, axis=-1) / norm
    return mean, var
