"""Tier (c): numpyro NUTS over the fields and their GP hyperparameters together.

The two-step tier fixes the hyperparameters at their type-II MAP values; here they are
marginalised.  For each field, with per-spaxel estimates ``y_i`` and errors ``err_i``
(``ln sigma`` for SIGMA, :func:`cube3d.spatial.twostep.field_data`)::

    amp_t ~ Exponential(lambda) on (amp range),  scale_t ~ LogUniform(scale range)  (spaxels)
    noise_scale ~ LogUniform(config.noise_scale_range)   (or fixed at 1)
    c ~ Normal(weighted data mean, 10 x data spread)
    z ~ Normal(0, I)
    f = c + B z      dense:  B = L,  L L^T = K + jitter I over ALL grid spaxels
                     hsgp:   B = Phi diag(s)   (Solin & Saerkkae 2020, eq. 20)
    y_i ~ Normal(f_i, noise_scale * err_i)      on the observed spaxels

The amplitude prior is the two-step tier's penalised-complexity prior
(:func:`cube3d.spatial.hyper.amplitude_log_prior`, rate from
:func:`cube3d.spatial.hyper.amplitude_rate`), so both tiers integrate the same
hyperparameter posterior.  The field is *non-centred* (Papaspiliopoulos, Roberts & Skold 2007, Stat. Sci. 22, 59):
the latent ``z`` is white noise whatever the hyperparameters.  Two ways to sample it:

``parametrisation="latent"``
    NUTS (Hoffman & Gelman 2014, JMLR 15, 1593; numpyro, Phan et al. 2019) over the
    hyperparameters and ``z`` together, literally the model above.  It works for any
    likelihood, but where the data constrain the field (errors below ``amp``) the
    posterior has a ridge between ``amp`` and ``|z|`` and trajectories run to 2^7-2^8
    leapfrog steps (measured: 136 per iteration on 10 x 10 spaxels, amp/err ~ 2).

``parametrisation="marginal"`` (default)
    The likelihood is Gaussian and linear in ``z``, so ``z`` integrates out: NUTS
    samples the hyperparameters from ``p(theta | y)`` with the marginal likelihood
    ``N(y | c, B B^T + D)`` (Rasmussen & Williams 2006, eq. 2.30), and each sample
    gets an exact draw of ``z | theta, y ~ N(P^-1 b, P^-1)``, ``P = I + B^T D^-1 B``,
    ``b = B^T D^-1 (y - c)`` (Woodbury; Rasmussen & Williams eqs. 2.22-2.24 in weight
    space).  The pairs are exact samples of the same joint posterior; NUTS needs ~10
    steps per iteration (measured: 8-17) and the field draws are independent given
    ``theta``.

Cost per NUTS gradient (marginal form): dense, one Cholesky of the observed block,
``O(n_obs^3)``: 19 ms at 400 spaxels, 254 ms at 900 (measured, see
:data:`DENSE_AUTO_MAX`); Hilbert basis, one ``M x M`` Cholesky with ``M = m_y m_x``
set by the shortest length scale allowed (``scale_range``): ~0.5 s at the default
``max_basis=36`` (``M = 1296``), 17 ms for ``M = 400``, 7 ms for ``M = 256``.  ``solver="auto"`` takes the
dense factor up to :data:`DENSE_AUTO_MAX` spaxels (and ``config.max_dense``) and the
Hilbert basis of :mod:`cube3d.spatial.hsgp` beyond; it only resolves length scales
above :func:`cube3d.spatial.solvers.hsgp_min_scale`.  The latent form costs
``O(N^3)`` (dense) or ``O(N (m_y + m_x))`` (Hilbert basis) per gradient but needs ten
or more times as many gradients.  This tier is meant for small grids and as a
reference for the two-step tier; compiling the sampler takes a few seconds per field.
"""

from __future__ import annotations

import time
from functools import partial
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_solve, solve_triangular

from ..errors import InputError
from .config import GPConfig, validate_gp_config
from .estimates import gp_estimates
from .hyper import FieldHyper, amplitude_log_prior, amplitude_rate
from .solvers import SOLVER_CLASSES, DenseSolver, HSGPSolver, WeightSpaceSolver, hsgp_min_scale
from .twostep import LOG_FIELDS, GPField, GPResult, field_data, field_spread, prior_ranges

__all__ = ["gp_nuts", "nuts_fields", "latent_model", "marginal_model", "log_marginal", "draw_fields", "nuts_solver",
           "PARAMETRISATIONS", "DENSE_AUTO_MAX"]

PARAMETRISATIONS = ("marginal", "latent")

# Largest grid for which solver="auto" takes the dense factor.  One marginal-likelihood
# value-and-gradient took 19 ms at 400 spaxels and 254 ms at 900 (a 900 x 900 Cholesky
# and its adjoint; single-threaded OpenBLAS on a busy 2-core machine), i.e. ~2 and ~25
# minutes for 600 NUTS iterations of ~10 steps.
DENSE_AUTO_MAX = 400


def log_marginal(solver: WeightSpaceSolver, amp, scale, noise_scale, c, y, w):
    """``log N(y_obs | c, B B^T + D)``, ``D = noise_scale^2 diag(1 / w)`` (R&W 2006, eq. 2.30).

    :meth:`cube3d.spatial.solvers.WeightSpaceSolver.log_marginal`: dense, one Cholesky of
    the observed block of ``K + jitter I + D``; Hilbert basis, Woodbury and the
    determinant lemma in weight space.
    """
    return solver.log_marginal(amp, scale, noise_scale, c, y, w)


def _hyper_sites(n_terms, amp_range, scale_range, noise_range, mean0, mean_sd, amp_rate=None):
    import numpyro
    import numpyro.distributions as dist

    def log_uniform(name, lo, hi, n=None):
        d = dist.Uniform(np.log(lo), np.log(hi))
        return numpyro.sample(name, d if n is None else d.expand([n]).to_event(1))

    amp = jnp.exp(log_uniform("log_amp", *amp_range, n=n_terms))
    if amp_rate is not None:  # log-uniform x (amp exp(-rate amp)): exponential in amp (Simpson et al. 2017)
        numpyro.factor("amp_prior", jnp.sum(amplitude_log_prior(amp, amp_rate)))
    scale = jnp.exp(log_uniform("log_scale", *scale_range, n=n_terms))
    noise = 1.0 if noise_range is None else jnp.exp(log_uniform("log_noise", *noise_range))
    # c ~ Normal(mean0, mean_sd), non-centred too so every site is of order one
    c = numpyro.deterministic("c", mean0 + mean_sd * numpyro.sample("c_raw", dist.Normal(0.0, 1.0)))
    return amp, scale, noise, c


def latent_model(y, w, *, solver: WeightSpaceSolver, amp_range, scale_range, noise_range, mean0, mean_sd,
                 amp_rate=None):
    """numpyro model with the field's white noise ``z`` as a sampled site.

    Parameters
    ----------
    y : array (ny, nx)
        Per-spaxel estimates in GP units (``ln sigma`` for SIGMA); ignored where ``w == 0``.
    w : array (ny, nx)
        Precisions ``1 / err**2`` (0 = unobserved; the field is still predicted there).
    solver : WeightSpaceSolver
        The field's ``f - c = B z`` (dense factor or Hilbert-space basis; its kernel is the
        prior's).
    amp_range, scale_range : (float, float)
        Prior ranges of every term's amplitude (data units) and length scale (spaxels),
        log-uniform within them.
    amp_rate : float or None
        Rate of the exponential amplitude prior within ``amp_range``
        (:func:`cube3d.spatial.hyper.amplitude_log_prior`); None: log-uniform.
    noise_range : (float, float) or None
        Log-uniform prior range of the factor on the errors; None fixes it at 1.
    mean0, mean_sd : float
        Centre and width of the normal prior of the constant mean ``c``.

    Sites: ``log_amp``, ``log_scale`` (n_terms,), ``log_noise`` (when inferred),
    ``c_raw``, ``z`` (``solver.latent_size``); deterministic ``c`` and ``f`` (ny, nx).
    """
    import numpyro
    import numpyro.distributions as dist

    amp, scale, noise, c = _hyper_sites(solver.spec.n_terms, amp_range, scale_range, noise_range, mean0, mean_sd,
                                        amp_rate)
    z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([solver.latent_size]).to_event(1))
    f = numpyro.deterministic("f", c + solver.apply_factor(solver.prior_factor(amp, scale), z))
    obs = w > 0
    err = noise / jnp.sqrt(jnp.where(obs, w, 1.0))
    # masked spaxels contribute nothing (zero weight, static shapes; STYLE point 4)
    numpyro.sample("y", dist.Normal(f, err).mask(obs).to_event(2), obs=jnp.where(obs, y, 0.0))


def marginal_model(y, w, *, solver: WeightSpaceSolver, amp_range, scale_range, noise_range, mean0, mean_sd,
                   amp_rate=None):
    """numpyro model of the hyperparameters with the field integrated out.

    Same arguments and hyperparameter sites as :func:`latent_model`; the likelihood is
    :func:`log_marginal` (a ``numpyro.factor``).  Fields come from :func:`draw_fields`.
    The dense form works on the observed spaxels ``solver.obs_idx`` (which must be
    those with ``w > 0``).
    """
    import numpyro

    amp, scale, noise, c = _hyper_sites(solver.spec.n_terms, amp_range, scale_range, noise_range, mean0, mean_sd,
                                        amp_rate)
    numpyro.factor("log_marginal", log_marginal(solver, amp, scale, noise, c, y, w))


def draw_fields(solver: WeightSpaceSolver, hyper_samples, y, w, key):
    """One exact draw of the field per hyperparameter sample: ``f = c + B z``,
    ``z ~ N(P^-1 b, P^-1)`` (weight-space GP posterior, Rasmussen & Williams 2006 eq. 2.8).

    Parameters
    ----------
    solver : WeightSpaceSolver
    hyper_samples : dict
        ``log_amp``, ``log_scale`` (S, n_terms), ``c`` (S,), ``log_noise`` (S,) if inferred.
    key : jax PRNG key

    Returns
    -------
    array (S, ny, nx)
        Runs sample by sample (``lax.map``; no batched factorisations).
    """
    n = hyper_samples["c"].shape[0]
    keys = jax.random.split(key, n)
    noise = jnp.exp(hyper_samples["log_noise"]) if "log_noise" in hyper_samples else jnp.ones(n)
    y, w = jnp.asarray(y), jnp.asarray(w)

    def one(args):
        la, ls, ln, c, k = args
        fac, cp, b, _, _ = solver.posterior_weights(jnp.exp(la), jnp.exp(ls), ln, c, y, w)
        z = cho_solve((cp, True), b) + solve_triangular(cp.T, jax.random.normal(k, b.shape), lower=False)
        return c + solver.apply_factor(fac, z)

    return jax.lax.map(one, (hyper_samples["log_amp"], hyper_samples["log_scale"], noise, hyper_samples["c"], keys))


def nuts_solver(name, spec, shape, w, config, scale_range, user_scale):
    """The weight-space solver (dense factor or Hilbert basis) for one field.

    ``solver="auto"`` takes the dense factor up to :data:`DENSE_AUTO_MAX` grid spaxels
    (and ``config.max_dense``), else the Hilbert basis, whose floor may raise the lower end
    of ``scale_range``.  Returns ``(WeightSpaceSolver, scale_range)``.

    Raises :class:`InputError` for a solver without a weight-space form
    (``"kronecker"``), a grid above ``max_dense`` with ``solver="dense"``, or a user
    ``scale_range`` the basis cannot resolve.
    """
    n = int(np.prod(shape))
    solver = config.solver
    if solver != "auto" and not issubclass(SOLVER_CLASSES[solver], WeightSpaceSolver):
        raise InputError(f"gp solver {solver!r} is not available in the nuts tier; use solver='dense' "
                         "(small grids), 'hsgp' or 'auto'")
    if solver == "auto":
        solver = "dense" if n <= min(config.max_dense, DENSE_AUTO_MAX) else "hsgp"
    if solver == "dense":
        if n > config.max_dense:
            raise InputError(
                f"gp solver 'dense' in the nuts tier: the {shape[0]}x{shape[1]} grid has {n} spaxels "
                f"(limit max_dense={config.max_dense}); use solver='hsgp', tier='two_step' or 'joint_map', "
                "or bin the cube")
        return DenseSolver(spec, shape, w), scale_range
    floor = hsgp_min_scale(spec, shape, config)
    if scale_range[0] < floor * (1 - 1e-9):
        if user_scale:
            raise InputError(
                f"gp scale_range={config.scale_range}: the Hilbert basis on a {shape[0]}x{shape[1]} grid resolves "
                f"length scales down to {floor:.3g} spaxels (max_basis={config.max_basis}); raise the minimum or "
                "max_basis, use solver='dense', or tier='two_step' or 'joint_map'")
        scale_range = (floor, scale_range[1])
    if not scale_range[0] < scale_range[1]:
        raise InputError(f"gp field {name}: the {shape[0]}x{shape[1]} grid is too small for the Hilbert basis; "
                         "use solver='dense'")
    return HSGPSolver(spec, shape, w, scale_range[0], config.boundary_factor), scale_range


def _chain_stats(grouped, sites):
    """Largest split r-hat and smallest effective sample size over the given sites
    (NaN with fewer than 4 samples per chain, where split r-hat is undefined)."""
    from numpyro.diagnostics import effective_sample_size, split_gelman_rubin

    if np.shape(grouped[sites[0]])[1] < 4:
        return float("nan"), float("nan")
    rhat, neff = [], []
    for k in sites:
        x = np.asarray(grouped[k], dtype=float)
        x = x.reshape(x.shape[0], x.shape[1], -1)
        rhat.append(np.ravel(split_gelman_rubin(x)))
        neff.append(np.ravel(effective_sample_size(x)))
    return float(np.nanmax(np.concatenate(rhat))), float(np.nanmin(np.concatenate(neff)))


def _sample_field(name, y, w, spec, config, key, parametrisation):
    """NUTS for one field: (GPField in natural units, diagnostics dict)."""
    from numpyro.infer import MCMC, NUTS

    shape = y.shape
    obs = w > 0
    amp_range, scale_range, user = prior_ranges(spec, shape, y, w, config, "dense")
    solver, scale_range = nuts_solver(name, spec, shape, w, config, scale_range, user)
    yo, wo = y[obs], w[obs]
    mean0 = float(np.sum(wo * yo) / np.sum(wo))
    spread = field_spread(y, w)
    fn = marginal_model if parametrisation == "marginal" else latent_model
    model = partial(fn, solver=solver, amp_range=amp_range, scale_range=scale_range,
                    noise_range=config.noise_scale_range, mean0=mean0, mean_sd=10.0 * spread,
                    amp_rate=amplitude_rate(spread))
    mcmc = MCMC(NUTS(model), num_warmup=config.num_warmup, num_samples=config.num_samples,
                num_chains=config.num_chains, chain_method="sequential", progress_bar=False)
    key_run, key_draw = jax.random.split(key)
    t0 = time.perf_counter()
    mcmc.run(key_run, jnp.asarray(y), jnp.asarray(w), extra_fields=("diverging", "num_steps"))
    grouped = dict(mcmc.get_samples(group_by_chain=True))
    if parametrisation == "marginal":
        n_chains, n_samples = grouped["c"].shape[:2]
        flat = {k: v.reshape(n_chains * n_samples, *v.shape[2:]) for k, v in grouped.items()}
        grouped["f"] = draw_fields(solver, flat, y, w, key_draw).reshape(n_chains, n_samples, *shape)
    grouped = jax.block_until_ready(grouped)
    seconds = time.perf_counter() - t0

    f = np.asarray(grouped["f"], dtype=float).reshape(-1, *shape)
    if name in LOG_FIELDS:
        f = np.exp(f)  # natural units from the samples themselves (no delta method)
    hyper_sites = ["log_amp", "log_scale", "c"] + (["log_noise"] if "log_noise" in grouped else [])
    rhat, neff = _chain_stats(grouped, hyper_sites + ["f"])
    extra = mcmc.get_extra_fields()
    flat = {k: np.asarray(grouped[k], dtype=float).reshape(-1, *np.shape(grouped[k])[2:]) for k in hyper_sites}
    hyper = FieldHyper(
        amp=np.median(np.exp(flat["log_amp"]), axis=0),
        scale=np.median(np.exp(flat["log_scale"]), axis=0),
        mean_params={"c": float(np.median(flat["c"]))},
        log_evidence=float("nan"),
        at_bound=(),
        noise_scale=float(np.median(np.exp(flat["log_noise"]))) if "log_noise" in flat else 1.0,
    )
    field = GPField(name, f.mean(axis=0), f.std(axis=0), hyper, f"nuts-{solver.name}", int(obs.sum()))
    diag = {"rhat_max": rhat, "neff_min": neff, "divergences": int(np.sum(np.asarray(extra["diverging"]))),
            "steps_mean": float(np.mean(np.asarray(extra["num_steps"]))), "nuts_seconds": seconds}
    return field, diag


def gp_nuts(prepared, fit_result, fit_config, gp_config: GPConfig = GPConfig(tier="nuts"), log=None) -> GPResult:
    """Tier (c) on a per-spaxel fit: :func:`nuts_fields` of its estimates (marginal form).

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
        Receives one progress line per field.

    Returns
    -------
    GPResult
        ``tier == "nuts"``; see :func:`nuts_fields`.
    """
    validate_gp_config(gp_config)
    values, errors, ok = gp_estimates(prepared, fit_result, fit_config, gp_config)
    return nuts_fields(values, errors, ok, gp_config, log=log)


def nuts_fields(values, errors, mask, config: GPConfig = GPConfig(tier="nuts"), parametrisation="marginal",
                log=None) -> GPResult:
    """Tier (c): GP posterior maps by NUTS over fields and hyperparameters.

    Parameters
    ----------
    values, errors : dict of str -> ndarray (ny, nx)
        Per-spaxel estimates and 1-sigma errors (``"V"``, ``"SIGMA"`` in km/s,
        ``"H3"``...).  Non-finite values or errors <= 0 count as unobserved.
    mask : ndarray of bool (ny, nx)
        Spaxels to use (False = unobserved; the field is still sampled there).
    config : GPConfig
        Uses ``kernel``, ``separable``, ``solver`` (``auto``, ``dense`` or ``hsgp``),
        ``scale_range``, ``noise_scale_range``, ``max_dense``, ``max_basis``,
        ``boundary_factor``, ``fields``, ``num_warmup``, ``num_samples``,
        ``num_chains`` (run one after the other) and ``seed``; ``v_mean`` must be
        ``"constant"``.  ``clip`` and ``min_sn`` are not applied here
        (:func:`cube3d.spatial.apply.run_gp` applies ``min_sn`` to the mask).
    parametrisation : str
        ``"marginal"`` (hyperparameters by NUTS on the marginal likelihood, exact field
        draws; default) or ``"latent"`` (NUTS over hyperparameters and the field's white
        noise together); see the module docstring.
    log : callable, optional
        Receives one progress line per field.

    Returns
    -------
    GPResult
        ``tier="nuts"``; per field the mean and standard deviation of the posterior
        samples in natural units (for SIGMA those of ``exp(f)``: km/s), hyperparameters
        as posterior medians (``log_evidence`` NaN), solver ``"nuts-dense"`` or
        ``"nuts-hsgp"``.  ``diagnostics``: ``gp_rhat_max`` (split Gelman-Rubin, Gelman
        et al. 2013 BDA3 Sect. 11.4, over amplitudes, scales, noise factor, mean and every
        field value), ``gp_neff_min`` (smallest effective sample size of the same),
        ``gp_divergences`` (all fields), ``gp_nuts_seconds`` (wall time including
        compilation), and per field ``gp_<name>_rhat_max``, ``_neff_min``,
        ``_divergences``, ``_steps_mean`` (leapfrog steps per iteration), ``_nuts_seconds``.

    Raises
    ------
    InputError
        Bad config, missing fields, maps of the wrong shape, ``v_mean="disk"``,
        ``solver="kronecker"``, a grid above ``max_dense`` with ``solver="dense"``, or
        a ``scale_range`` the Hilbert basis cannot resolve.

    Notes
    -----
    The LAPACK calls inside the sampler run through scipy's OpenBLAS; on an
    oversubscribed CPU its spinning threads slowed a 100 x 100 triangular solve from
    0.17 ms to 16 ms (load 8 on 2 cores).  Set ``OPENBLAS_NUM_THREADS=1`` in the
    environment before Python starts in that case.

    Examples
    --------
    >>> res = nuts_fields({"V": v}, {"V": v_err}, np.ones(v.shape, bool),
    ...               GPConfig(tier="nuts", num_warmup=200, num_samples=200))  # doctest: +SKIP
    >>> res.fields["V"].mean.shape, res.diagnostics["gp_rhat_max"] < 1.1   # doctest: +SKIP
    """
    spec = validate_gp_config(config)
    if parametrisation not in PARAMETRISATIONS:
        raise InputError(f"nuts_fields parametrisation={parametrisation!r}: use one of {', '.join(PARAMETRISATIONS)}")
    names = tuple(config.fields) if config.fields else tuple(values)
    missing = [n for n in names if n not in values or n not in errors]
    if missing:
        raise InputError(f"gp fields {missing}: no per-spaxel values/errors for them (have {sorted(values)})")
    if "V" in names and config.v_mean != "constant":
        raise InputError(f"gp v_mean={config.v_mean!r}: the nuts tier supports v_mean='constant' only; "
                         "use tier='two_step' or 'joint_map' for a disk mean")
    shape = np.shape(values[names[0]])
    if len(shape) != 2 or np.shape(mask) != shape:
        raise InputError(f"gp: maps must be 2-D and the mask must match them, got {shape} and {np.shape(mask)}")
    say = log or (lambda msg: None)
    key = jax.random.PRNGKey(config.seed)
    fields, diagnostics = {}, {}
    per_field = []
    for i, name in enumerate(names):
        if np.shape(values[name]) != shape or np.shape(errors[name]) != shape:
            raise InputError(f"gp field {name}: values and errors must have the grid's shape {shape}")
        y, w = field_data(name, values[name], errors[name], mask)
        if not np.any(w > 0):
            raise InputError(f"gp field {name}: no spaxel is usable as data (all masked: unfitted, flagged, "
                             f"without a usable error, or below --gp-min-sn {config.min_sn:g})")
        field, diag = _sample_field(name, y, w, spec, config, jax.random.fold_in(key, i), parametrisation)
        say(f"gp nuts: {name} ({field.solver}) in {diag['nuts_seconds']:.1f} s, r-hat {diag['rhat_max']:.3f}, "
            f"{diag['divergences']} divergences")
        fields[name] = field
        per_field.append(diag)
        diagnostics.update({f"gp_{name.lower()}_{k}": v for k, v in diag.items()})
    diagnostics.update(
        gp_rhat_max=max(d["rhat_max"] for d in per_field),
        gp_neff_min=min(d["neff_min"] for d in per_field),
        gp_divergences=sum(d["divergences"] for d in per_field),
        gp_nuts_seconds=float(sum(d["nuts_seconds"] for d in per_field)),
    )
    return GPResult(fields=fields, tier="nuts", config=config, diagnostics=diagnostics)
