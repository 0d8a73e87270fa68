"""Tier (a): per-spaxel Gaussian posteriors combined with GP priors on the fields.

Each spaxel's fit gives a Gaussian (Laplace) posterior of its moments; treating the
estimates as noisy observations ``y_i = f(x_i) + e_i``, ``e_i ~ N(0, err_i^2)``, of a
field with a GP prior, the hyperparameters follow from the marginal likelihood
(Rasmussen & Williams 2006, eq. 2.30) and the field from the GP posterior (eqs.
2.22-2.24), mixed over the hyperparameters' posterior by default
(:mod:`cube3d.spatial.integrate`; ``GPConfig.hyper_integration``).  The dispersion is
modelled as ``ln sigma`` (positive, and closer to Gaussian at low S/N:
``err(ln sigma) = err(sigma) / sigma``).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax.numpy as jnp
import numpy as np

from ..errors import InputError
from .config import GPConfig, validate_gp_config
from .estimates import gp_estimates
from .hyper import FieldHyper, amplitude_rate, hyper_problem, optimise_hyperparameters
from .integrate import HyperIntegration, integrate_hyperparameters
from .means import mean_field, mean_parameters
from .solvers import Solver, hsgp_min_scale, make_solver

__all__ = ["GPField", "GPResult", "gp_two_step", "two_step_fields", "field_data", "fit_field", "prior_ranges",
           "field_spread", "to_natural", "LOG_FIELDS"]

LOG_FIELDS = ("SIGMA",)


class GPField(NamedTuple):
    """Posterior of one field (natural units: km/s for V and SIGMA).

    ``mean`` and ``std`` are integrated over the hyperparameters when ``integration`` is
    set (its arrays in GP units: ``ln sigma`` for SIGMA); ``hyper`` holds their mode.
    """

    name: str
    mean: np.ndarray  # (ny, nx)
    std: np.ndarray  # (ny, nx)
    hyper: FieldHyper
    solver: str
    n_obs: int
    n_clipped: int = 0
    integration: Optional[HyperIntegration] = None


class GPResult(NamedTuple):
    """Posterior maps of all fields, and how they were obtained."""

    fields: dict
    tier: str
    config: GPConfig
    diagnostics: Optional[dict] = None

    def header_meta(self):
        """Provenance for the maps file: tier, solver, kernel and every hyperparameter."""
        meta = {"gp_tier": self.tier, "gp_kernel": self.config.kernel, "gp_separable": bool(self.config.separable)}
        meta.update(self.diagnostics or {})
        for name, f in self.fields.items():
            key = name.lower()
            meta[f"gp_{key}_solver"] = f.solver
            meta[f"gp_{key}_logev"] = float(f.hyper.log_evidence)
            meta[f"gp_{key}_noise_scale"] = float(f.hyper.noise_scale)
            meta[f"gp_{key}_n_obs"] = int(f.n_obs)
            meta[f"gp_{key}_n_clipped"] = int(f.n_clipped)
            meta[f"gp_{key}_hyper_points"] = 1 if f.integration is None else f.integration.n_points
            for t, (a, s) in enumerate(zip(f.hyper.amp, f.hyper.scale)):
                meta[f"gp_{key}_amp{t}"] = float(a)
                meta[f"gp_{key}_scale{t}"] = float(s)
            for k, v in f.hyper.mean_params.items():
                meta[f"gp_{key}_mean_{k}"] = float(v)
            if f.hyper.at_bound:
                meta[f"gp_{key}_at_bound"] = ",".join(f.hyper.at_bound)
        return meta


def field_data(name, value, error, mask):
    """Data and precision of one field in the GP's units (``ln sigma`` for SIGMA)."""
    value, error = np.asarray(value, float), np.asarray(error, float)
    ok = np.asarray(mask, bool) & np.isfinite(value) & np.isfinite(error) & (error > 0)
    if name in LOG_FIELDS:
        ok &= value > 0
        y = np.log(np.where(ok, value, 1.0))
        err = np.where(ok, error / np.where(ok, value, 1.0), 1.0)
    else:
        y, err = np.where(ok, value, 0.0), np.where(ok, error, 1.0)
    w = np.where(ok, 1.0 / err**2, 0.0)
    return y, w


def field_spread(y, w):
    """The larger of the data's standard deviation and their median error (data units):
    the yardstick of the amplitude prior (:func:`cube3d.spatial.hyper.amplitude_rate`)."""
    obs = w > 0
    return max(float(np.std(y[obs])) if obs.sum() > 1 else 0.0, float(np.median(1 / np.sqrt(w[obs]))))


def prior_ranges(spec, shape, y, w, config, solver_name):
    """Prior ranges of the amplitudes (data units) and length scales (spaxels) of one field.

    Returns ``(amp_range, scale_range, user)`` with ``user`` True when the scale range is
    ``config.scale_range`` (a bound hit is then an error, not a default to widen).
    """
    obs = w > 0
    spread = field_spread(y, w)
    amp_range = (1e-3 * spread, 10.0 * spread)
    user = config.scale_range is not None
    if user:
        scale_range = tuple(float(v) for v in config.scale_range)
    else:
        # below ~2 spaxels a correlated field is not told apart from white noise (the
        # error factor's job) on a grid sampled once per spaxel
        lo = 2.0
        if solver_name == "hsgp" or (solver_name == "auto" and int(obs.sum()) > config.max_dense):
            lo = max(lo, hsgp_min_scale(spec, shape, config))
        scale_range = (lo, 2.0 * max(shape))
    return amp_range, scale_range, user


def fit_field(name, y, w, config: GPConfig, spec, mean_kind="constant", integrate=True,
              z0=None) -> tuple[GPField, Solver]:
    """Hyperparameters and posterior of one field from data ``y`` and precisions ``w``.

    With ``config.clip``, spaxels further than ``clip`` standard deviations (error and
    plug-in posterior combined) from the GP prediction are dropped and the field refitted
    once.  With ``integrate`` and ``config.hyper_integration == "ccd"`` the returned mean
    and standard deviation are mixed over the hyperparameters' posterior
    (:func:`cube3d.spatial.integrate.integrate_hyperparameters`), else those of the
    type-II MAP.  ``z0``: a start for the optimiser (:func:`fit_hyperparameters`).
    Returns ``(GPField in GP units, solver)``; raises when a user-given length-scale
    range excludes the scale the data prefer.
    """
    field, solver, problem = _fit_field_once(name, y, w, config, spec, mean_kind, z0)
    if config.clip is not None:
        obs = w > 0
        alpha = field.hyper.noise_scale
        z = (y - field.mean) / np.sqrt(alpha**2 / np.where(obs, w, 1.0) + field.std**2)
        bad = obs & (np.abs(z) > config.clip)
        if np.any(bad) and np.sum(obs & ~bad) > 0:
            field, solver, problem = _fit_field_once(name, y, np.where(bad, 0.0, w), config, spec, mean_kind)
            field = field._replace(n_clipped=int(bad.sum()))
    if integrate and config.hyper_integration == "ccd":
        mix = integrate_hyperparameters(problem, solver, field.hyper.z)
        field = field._replace(mean=mix.mean, std=np.sqrt(mix.var), integration=mix)
    return field, solver


def _fit_field_once(name, y, w, config, spec, mean_kind, z0=None):
    shape = y.shape
    amp_range, scale_range, user = prior_ranges(spec, shape, y, w, config, config.solver)
    rate = amplitude_rate(field_spread(y, w))
    solver = make_solver(config.solver, spec, shape, w, config, scale_range[0])
    mspec = mean_parameters(mean_kind, y, w, shape)
    problem = hyper_problem(solver, spec, y, w, mean_kind, mspec, amp_range, scale_range, config.noise_scale_range,
                            rate)
    hyper = optimise_hyperparameters(problem, solver, w, z0=z0)
    if user:
        hit = [b for b in hyper.at_bound if b.startswith("scale")]
        if hit:
            side = "shorter" if hit[0].endswith("min") else "longer"
            raise InputError(
                f"gp scale_range={config.scale_range}: the {name} field's length scale ran into the prior bound "
                f"({hit[0]}); the data prefer a {side} scale, widen scale_range")
    ny, nx = shape
    yy, xx = jnp.mgrid[:ny, :nx]
    mu = mean_field(mean_kind, hyper.mean_params, yy, xx)
    resid = jnp.asarray(np.where(w > 0, y, 0.0)) - mu
    post = solver.posterior(jnp.asarray(hyper.amp), jnp.asarray(hyper.scale), resid, hyper.noise_scale)
    mean = np.asarray(mu + post.mean)
    return GPField(name, mean, post.std, hyper, solver.name, int(np.sum(w > 0))), solver, problem


def to_natural(field: GPField):
    """GP units -> natural units (``exp`` for ln sigma, delta-method standard deviation)."""
    if field.name in LOG_FIELDS:
        m = np.exp(field.mean)
        return field._replace(mean=m, std=m * field.std)
    return field


def gp_two_step(prepared, fit_result, fit_config, gp_config: GPConfig = GPConfig(), log=None) -> GPResult:
    """Tier (a) on a per-spaxel fit: :func:`two_step_fields` of its estimates.

    Parameters
    ----------
    prepared : cube3d.prepare.PreparedData
        Unbinned spectra (one per spaxel).
    fit_result : cube3d.fit.FitResult
        The per-spaxel fit.
    fit_config : cube3d.fit.FitConfig
        Its settings (spaxels on a fit bound are unobserved).
    gp_config : GPConfig
    log : callable, optional
        Progress lines (none from this tier; the argument completes the common tier
        signature of :data:`cube3d.spatial.apply.TIER_FUNCTIONS`).

    Returns
    -------
    GPResult
        ``tier == "two_step"``.
    """
    validate_gp_config(gp_config)
    values, errors, ok = gp_estimates(prepared, fit_result, fit_config, gp_config)
    return two_step_fields(values, errors, ok, gp_config)


def two_step_fields(values, errors, mask, config: GPConfig = GPConfig()) -> GPResult:
    """Tier (a): GP posterior maps from per-spaxel estimates and their errors.

    Parameters
    ----------
    values, errors : dict of str -> ndarray (ny, nx)
        Per-spaxel estimates and 1-sigma errors (``"V"``, ``"SIGMA"`` in km/s,
        ``"H3"``...).  Non-finite values or errors <= 0 count as unobserved.
    mask : ndarray of bool (ny, nx)
        Spaxels to use (False = unobserved; the GP still predicts there).
    config : GPConfig

    Returns
    -------
    GPResult
        Posterior mean and standard deviation maps per field, hyperparameters.

    Examples
    --------
    >>> res = two_step_fields({"V": v}, {"V": v_err}, np.ones(v.shape, bool))  # doctest: +SKIP
    >>> res.fields["V"].mean.shape                                         # doctest: +SKIP
    """
    spec = validate_gp_config(config)
    names = tuple(config.fields) if config.fields else tuple(values)
    missing = [n for n in names if n not in values or n not in errors]
    if missing:
        raise InputError(f"gp fields {missing}: no per-spaxel values/errors for them (have {sorted(values)})")
    shape = np.shape(values[names[0]])
    if len(shape) != 2 or np.shape(mask) != shape:
        raise InputError(f"gp: maps must be 2-D and the mask must match them, got {shape} and {np.shape(mask)}")
    fields = {}
    for name in names:
        y, w = field_data(name, values[name], errors[name], mask)
        if not np.any(w > 0):
            raise InputError(f"gp field {name}: no spaxel is usable as data (all masked: unfitted, flagged, "
                             f"without a usable error, or below --gp-min-sn {config.min_sn:g})")
        mean_kind = config.v_mean if name == "V" else "constant"
        field, _ = fit_field(name, y, w, config, spec, mean_kind)
        fields[name] = to_natural(field)
    return GPResult(fields=fields, tier="two_step", config=config)
