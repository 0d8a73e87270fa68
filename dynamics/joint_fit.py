"""Fitting the joint model (:mod:`dynamics.joint_model`): Laplace approximation and NUTS.

* :func:`fit_laplace`: the maximum of the log posterior in numpyro's unconstrained space
  (L-BFGS-B on the jitted value and gradient, from the prior median and ``n_starts - 1``
  prior draws; then, only where the remaining Newton step exceeds :data:`REFINE_OFFSET`
  posterior sd, trust-region Newton steps on the Hessian until it does not), the Hessian
  there by central differences of the exact gradient, and draws from the Gaussian
  ``N(mode, H^-1)`` mapped back to the parameters (MacKay 2003, ch. 27).  It reports the
  optimiser's status and whether the Hessian is positive definite.
* :func:`fit_nuts`: numpyro's NUTS (Hoffman & Gelman 2014) with a dense mass matrix,
  chains started from dispersed draws of the Laplace approximation; split R-hat and ESS of
  every parameter are checked (:func:`dynamics.convergence.warn_if_not_converged`).

Both return a :class:`JointResult`: draws by chain (free parameters and the derived
enclosed masses), a summary table, convergence flags and an ArviZ ``InferenceData``.
"""

from __future__ import annotations

import time
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy
import scipy.optimize
from numpyro.diagnostics import summary as numpyro_summary
from numpyro.infer import MCMC, NUTS

from .convergence import convergence_problems, warn_if_not_converged
from .joint_model import derived_masses, log_likelihood_parts, predict_discrete, predict_ifu, prior_bounds
from .xla_options import compiled

__all__ = ["JointResult", "SUMMARY_COLUMNS", "fit_laplace", "fit_nuts", "summary_rows"]

SUMMARY_COLUMNS = ("name", "mean", "sd", "p16", "p50", "p84", "r_hat", "ess")


class JointResult(NamedTuple):
    """Result of a joint fit.

    Attributes
    ----------
    method : {"laplace", "nuts"}
    names : list of str
        Free parameters, in sampling order.
    samples_by_chain : dict
        ``name -> (chains, draws)``: free parameters and derived masses.
    summary : list of dict
        One row per quantity (:data:`SUMMARY_COLUMNS`).
    converged : bool
    problems : list of str
        Why it did not converge (empty when it did).
    point : dict
        The posterior mode (Laplace) or the posterior medians (NUTS), free parameters.
    info : dict
        Timings (s), numbers of gradient evaluations, divergences, optimiser messages.
    """

    method: str
    names: list
    samples_by_chain: dict
    summary: list
    converged: bool
    problems: list
    point: dict
    info: dict


class _Problem(NamedTuple):
    """The posterior in unconstrained coordinates ``u`` (one flat vector, :func:`param_names` order).

    Every prior is uniform, so ``x = lo + (hi - lo) sigmoid(u)`` (numpyro's bijection to an
    interval) and ``log p(u) = log L(x) + sum log |dx/du| - sum log(hi - lo)``: the density
    of :func:`dynamics.joint_model.joint_model`, without tracing the numpyro model at every
    start (each trace would compile the JAM code again).
    """

    names: list
    lo: numpy.ndarray
    hi: numpy.ndarray
    potential: object          # jitted u -> (-log p, -grad)
    constrain: object          # jitted u -> dict of parameters
    log_density: object        # u -> log p (not jitted)
    potential_value: object    # u -> -log p, its gradient from ``potential`` (for NUTS)

    def to_unconstrained(self, point):
        x = numpy.array([float(point[n]) for n in self.names])
        t = numpy.clip((x - self.lo) / (self.hi - self.lo), 1e-12, 1.0 - 1e-12)
        return numpy.log(t) - numpy.log1p(-t)

    def prior_draws(self, rng, n):
        t = rng.uniform(0.02, 0.98, size=(n, len(self.names)))
        return numpy.log(t) - numpy.log1p(-t)


def _problem(ifu, discrete, config):
    bounds = prior_bounds(config, ifu is not None, discrete is not None)
    names = list(bounds)
    lo = numpy.array([bounds[n][0] for n in names])
    hi = numpy.array([bounds[n][1] for n in names])
    log_volume = float(numpy.sum(numpy.log(hi - lo)))

    def constrain(u):
        x = lo + (hi - lo) * jax.nn.sigmoid(u)
        return dict(zip(names, x))

    def log_density(u):
        ll_ifu, ll_disc = log_likelihood_parts(constrain(u), ifu, discrete, config)
        log_jac = jnp.sum(jnp.log(hi - lo) - jax.nn.softplus(-u) - jax.nn.softplus(u))
        return ll_ifu + ll_disc + log_jac - log_volume

    # the JAM likelihood's value and gradient: the largest program of a fit (dynamics.xla_options)
    potential = compiled()(jax.value_and_grad(lambda u: -log_density(u)))

    # -log p with the gradient that ``potential`` computes with it: numpyro's NUTS takes the
    # value and differentiates it; outside its compiled loop (its initialisation) this runs
    # the program the Laplace fit compiled instead of compiling the JAM code once more
    @jax.custom_vjp
    def potential_value(u):
        return potential(u)[0]

    def value_and_cotangent(u):
        return potential(u)

    def pullback(grad, ct):
        return (ct * grad,)

    potential_value.defvjp(value_and_cotangent, pullback)
    return _Problem(names, lo, hi, potential, jax.jit(constrain), log_density, potential_value)


#: Largest finite-difference step of the Hessian in the unconstrained coordinates (for the flattest directions).
HESSIAN_STEP = 1.0


def _hessian_fd(potential, x, step=HESSIAN_STEP, like=None):
    """Hessian by central differences of the exact gradient, symmetrised (far cheaper than
    forward-over-reverse autodiff through the JAM quadratures).

    Central differences are exact for a Gaussian posterior at any step; a step of about half
    a posterior width averages over the small kinks that the clipped rotation of the first
    moment leaves in the likelihood (slope jumps of ~1e-3 where a quadrature node crosses the
    clipping boundary, which make steps of 1e-4 see curvatures of -1e4).  The widths come from
    the diagonal of ``like`` (a Hessian at a nearby point) or, without it, from a first pass at
    a step of 1e-3; the second pass uses ``clip(width / 2, 1e-3, step)``.
    """
    def columns(steps):
        cols = []
        for i, h in enumerate(steps):
            e = jnp.zeros(x.shape[0]).at[i].set(h)
            cols.append((numpy.asarray(potential(x + e)[1]) - numpy.asarray(potential(x - e)[1])) / (2.0 * h))
        hess = numpy.stack(cols, axis=1)
        return 0.5 * (hess + hess.T)

    first = columns(numpy.full(x.shape[0], 1e-3)) if like is None else like
    width = 1.0 / numpy.sqrt(numpy.maximum(numpy.abs(numpy.diag(first)), 1e-12))
    steps = numpy.clip(0.5 * numpy.where(numpy.isfinite(width), width, step), 1e-3, step)
    return columns(steps)


#: Newton offset (posterior sd, :func:`_newton_offset`) up to which a point counts as the mode:
#: L-BFGS-B's point is refined above it, and the refinement stops below it.  The kinks of the
#: first moment's quadrature (see :func:`_hessian_fd`) leave the mode uncertain by a few
#: hundredths of a posterior sd; a fit still more than 0.1 sd away is reported as not converged.
REFINE_OFFSET = 0.05


def _newton_offset(hess, grad):
    """Largest remaining Newton step ``|H^-1 g|`` in units of the Laplace posterior sd
    ``sqrt(diag H^-1)``; infinite where ``H`` is not finite or not positive definite."""
    sym = 0.5 * (hess + hess.T)
    if not (numpy.all(numpy.isfinite(sym)) and numpy.all(numpy.isfinite(grad))):
        return numpy.inf
    if numpy.linalg.eigvalsh(sym).min() <= 0:
        return numpy.inf
    cov = numpy.linalg.inv(sym)
    return float(numpy.max(numpy.abs(cov @ grad) / numpy.sqrt(numpy.diag(cov))))


def _refine(potential, x0, hess0):
    """Trust-region Newton steps from ``x0`` (where the Hessian is ``hess0``) until the Newton
    offset (:func:`_newton_offset`) is at most :data:`REFINE_OFFSET`.

    Each Hessian takes its finite-difference steps from the one before (2 gradients per
    parameter).  Returns ``(result, the Hessian at result.x or None)``, or ``(None, None)``
    when scipy fails.
    """
    seen = {}                                   # x.tobytes() -> [gradient, Hessian]
    previous = [hess0]

    def fun(x):
        v, g = potential(jnp.asarray(x))
        v, g = float(v), numpy.asarray(g, dtype=float)
        if not (numpy.isfinite(v) and numpy.all(numpy.isfinite(g))):
            return 1e300, numpy.zeros_like(g)
        seen.setdefault(x.tobytes(), [None, None])[0] = g
        return v, g

    def hess(x):
        h = seen.get(x.tobytes(), (None, None))[1]
        if h is None:
            h = _hessian_fd(potential, jnp.asarray(x), like=previous[0])
            seen.setdefault(x.tobytes(), [None, None])[1] = h
        if not numpy.all(numpy.isfinite(h)):
            return numpy.eye(x.size)
        previous[0] = h
        return h

    def stop_at_mode(intermediate_result):
        g, h = seen.get(intermediate_result.x.tobytes(), (None, None))
        if g is not None and h is not None and _newton_offset(h, g) <= REFINE_OFFSET:
            raise StopIteration

    x0 = numpy.asarray(x0, dtype=float)
    seen[x0.tobytes()] = [None, hess0]
    try:
        res = scipy.optimize.minimize(fun, x0, jac=True, method="trust-exact", hess=hess, callback=stop_at_mode,
                                      options={"maxiter": 20, "gtol": 1e-4})
    except (ValueError, numpy.linalg.LinAlgError):
        return None, None
    return res, seen.get(res.x.tobytes(), (None, None))[1]


def _minimise(potential, x0):
    def fun(x):
        v, g = potential(jnp.asarray(x))
        v, g = float(v), numpy.asarray(g, dtype=float)
        if not numpy.isfinite(v):
            return 1e300, numpy.zeros_like(g)
        return v, g

    return scipy.optimize.minimize(fun, numpy.asarray(x0, dtype=float), jac=True, method="L-BFGS-B",
                                   options={"maxiter": 1000, "gtol": 1e-6})


def fit_laplace(key, ifu, discrete, config, *, n_starts=2, n_draws=4000, radii=(), predict=True):
    """Posterior mode and Laplace (inverse Hessian) covariance of the joint model.

    Parameters
    ----------
    key : jax random key
    ifu, discrete : IfuData, DiscreteData or None
    config : JointConfig
    n_starts : int
        Optimisations: from the prior median, then from ``n_starts - 1`` uniform prior draws;
        the best is kept.
    n_draws : int
        Draws from the Gaussian approximation (for the summary and derived masses).
    radii : sequence of float
        Radii (kpc) of the derived enclosed masses.
    predict : bool
        Compute the model's predictions at the mode (``info["predictions"]``).

    Returns
    -------
    JointResult
    """
    return _laplace(_problem(ifu, discrete, config), key, ifu, discrete, config, n_starts, n_draws, radii, predict)


def _laplace(prob, key, ifu, discrete, config, n_starts, n_draws, radii, predict):
    """:func:`fit_laplace` on the posterior ``prob`` (:func:`_problem` of the same data and config)."""
    t0 = time.perf_counter()
    names, potential = prob.names, prob.potential
    rng = numpy.random.default_rng(int(jax.random.randint(key, (), 0, 2**31 - 1)))
    starts = [numpy.zeros(len(names))] + list(prob.prior_draws(rng, max(n_starts - 1, 0)))
    best, n_eval, messages = None, 0, []
    for start in starts:
        res = _minimise(potential, start)
        n_eval += int(res.nfev)
        messages.append(str(res.message))
        if best is None or res.fun < best.fun:
            best = res
    # Newton refinement with a trust region on the (finite-difference) Hessian, only where
    # L-BFGS-B stopped short of the mode (on a flat ridge where the curvature is still
    # indefinite, or more than REFINE_OFFSET posterior sd away): from a point already at the
    # mode it moves nothing and costs a Hessian (2 gradients per parameter) per iteration
    t_hess = time.perf_counter()
    hess = _hessian_fd(potential, jnp.asarray(best.x))
    t_hess = time.perf_counter() - t_hess
    n_eval += 4 * best.x.size
    if _newton_offset(hess, numpy.asarray(potential(jnp.asarray(best.x))[1])) > REFINE_OFFSET:
        refined, hess_refined = _refine(potential, best.x, hess)
        if refined is not None:
            n_eval += int(refined.nfev) + 2 * best.x.size * int(refined.nhev)
            stopped = "StopIteration" in str(refined.message)
            messages.append("trust-exact: " + ("reached the mode" if stopped else str(refined.message)))
            if refined.fun <= best.fun:
                best = refined
                if hess_refined is None:
                    t_hess = time.perf_counter()
                    hess_refined = _hessian_fd(potential, jnp.asarray(best.x))
                    t_hess = time.perf_counter() - t_hess
                    n_eval += 4 * best.x.size
                hess = hess_refined
    t_opt = time.perf_counter() - t0 - t_hess
    mode = jnp.asarray(best.x)
    problems = []
    grad = numpy.asarray(potential(mode)[1])
    grad_norm = float(numpy.max(numpy.abs(grad)))
    if not numpy.all(numpy.isfinite(hess)):
        bad = sorted({names[i] for i in numpy.argwhere(~numpy.isfinite(hess)).reshape(-1)})
        problems.append(f"the Hessian at the mode is not finite for {', '.join(bad)} (a parameter at its bound?)")
        hess = numpy.where(numpy.isfinite(hess), hess, 0.0) + numpy.diag(~numpy.isfinite(numpy.diag(hess)) * 1.0)
    eig = numpy.linalg.eigvalsh(0.5 * (hess + hess.T))
    if not numpy.all(numpy.isfinite(eig)) or eig.min() <= 0:
        problems.append(f"the Hessian at the mode is not positive definite (smallest eigenvalue {eig.min():.3g})")
        cov = numpy.diag(1.0 / numpy.maximum(numpy.abs(numpy.diag(hess)), 1e-12))
    else:
        cov = numpy.linalg.inv(0.5 * (hess + hess.T))
        offset = _newton_offset(hess, grad)     # the mode is found when the remaining step is small
        if offset > 0.1:
            problems.append(f"optimiser: the mode is still {offset:.2g} posterior sd away (gradient "
                            f"{grad_norm:.2g}; {messages[-1]})")
    draws_u = rng.multivariate_normal(numpy.asarray(mode), cov, size=n_draws,
                                      method="cholesky" if eig.min() > 0 else "eigh")
    draws = jax.vmap(prob.constrain)(jnp.asarray(draws_u))
    by_chain = {n: numpy.asarray(draws[n])[None, :] for n in names}
    by_chain.update(_derived(by_chain, names, config, radii))
    point = {n: float(v) for n, v in prob.constrain(mode).items()}
    info = dict(seconds=time.perf_counter() - t0, seconds_optimise=t_opt, seconds_hessian=t_hess,
                n_potential_evaluations=n_eval, optimiser=messages, max_abs_gradient=grad_norm,
                hessian_eigenvalues=eig.tolist(), covariance_unconstrained=cov.tolist())
    if predict:
        info["predictions"] = {k: v[0] for k, v in _predict_many([point], ifu, discrete, config).items()}
    rows = summary_rows(by_chain, with_diagnostics=False)
    converged = not problems
    if problems:
        warnings.warn("Laplace fit did not converge: " + "; ".join(problems), stacklevel=3)  # the caller of fit_*
    return JointResult("laplace", names, by_chain, rows, converged, problems, point, info)


def fit_nuts(key, ifu, discrete, config, *, num_warmup=500, num_samples=500, num_chains=2, radii=(),
             init=None, target_accept_prob=0.8, max_tree_depth=10, progress_bar=False, predict_draws=50):
    """NUTS posterior of the joint model, with convergence checked.

    Parameters
    ----------
    key : jax random key
    ifu, discrete, config : as :func:`fit_laplace`
    num_warmup, num_samples, num_chains : int
        Chains run one after the other.
    radii : sequence of float
        Radii (kpc) of the derived enclosed masses.
    init : JointResult or None
        A Laplace result whose Gaussian approximation provides dispersed starting points
        (its covariance doubled); None runs :func:`fit_laplace` (one start) first.
    max_tree_depth : int
        NUTS's largest tree depth (at most ``2**depth - 1`` gradients per draw).
    predict_draws : int
        Draws per chain at which the model's predictions are stored (``info["predictions"]``
        holds those at the posterior medians).

    Returns
    -------
    JointResult
        ``converged`` is False (and a :class:`dynamics.convergence.ConvergenceWarning` is
        issued) when some split R-hat exceeds 1.01 or some ESS is below 100.
    """
    t0 = time.perf_counter()
    k_lap, k_init, k_run = jax.random.split(key, 3)
    prob = _problem(ifu, discrete, config)
    if init is None:
        init = _laplace(prob, k_lap, ifu, discrete, config, 1, 1000, (), False)
    names = prob.names
    # starting points: the Laplace Gaussian in the unconstrained space, covariance doubled
    rng = numpy.random.default_rng(int(jax.random.randint(k_init, (), 0, 2**31 - 1)))
    cov = 2.0 * numpy.asarray(init.info["covariance_unconstrained"])
    starts = rng.multivariate_normal(prob.to_unconstrained(init.point), cov, size=num_chains, method="eigh")
    init_params = jnp.asarray(starts if num_chains > 1 else starts[0])
    # the Laplace covariance starts the (dense) mass-matrix adaptation: warm-up then begins with
    # steps of the posterior's own scales instead of unit ones
    # compiled: numpyro's initialisation evaluates the potential and its gradient outside its own
    # compiled loop, which would otherwise dispatch (and compile) the JAM code operation by operation
    kernel = NUTS(potential_fn=prob.potential_value, dense_mass=True,
                  inverse_mass_matrix=jnp.asarray(0.5 * cov), target_accept_prob=target_accept_prob,
                  max_tree_depth=max_tree_depth)
    mcmc = MCMC(kernel, num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains,
                chain_method="sequential", progress_bar=progress_bar)
    mcmc.run(k_run, init_params=init_params, extra_fields=("diverging", "num_steps"))
    u = numpy.asarray(jax.block_until_ready(mcmc.get_samples(group_by_chain=True)))      # (chains, draws, k)
    x = prob.lo + (prob.hi - prob.lo) / (1.0 + numpy.exp(-u))
    samples = {n: x[..., i] for i, n in enumerate(names)}
    t_run = time.perf_counter() - t0
    by_chain = {n: numpy.asarray(samples[n]) for n in names}
    extra = mcmc.get_extra_fields(group_by_chain=True)
    diverging = numpy.asarray(extra["diverging"])
    num_steps = numpy.asarray(extra["num_steps"])
    stats = numpyro_summary(by_chain, group_by_chain=True)
    r_hat = {n: float(stats[n]["r_hat"]) for n in names}
    ess = {n: float(stats[n]["n_eff"]) for n in names}
    by_chain.update(_derived(by_chain, names, config, radii))
    problems = convergence_problems(r_hat, ess)
    n_div = int(diverging.sum())
    if n_div:
        problems.append(f"{n_div} divergent transitions")
    if problems:
        warn_if_not_converged(r_hat, ess, what="NUTS")
        if n_div and not convergence_problems(r_hat, ess):
            warnings.warn(f"NUTS: {n_div} divergent transitions; the posterior may be biased", stacklevel=2)
    point = {n: float(numpy.median(by_chain[n])) for n in names}
    info = dict(seconds=time.perf_counter() - t0, seconds_sampling=t_run, num_divergences=n_div,
                n_gradient_evaluations=int(num_steps.sum()), mean_steps_per_draw=float(num_steps.mean()),
                diverging=diverging, num_steps=num_steps, r_hat=r_hat, ess=ess)
    n_draw = by_chain[names[0]].shape[1]
    idx = numpy.linspace(0, n_draw - 1, min(max(predict_draws, 1), n_draw)).astype(int)
    pts = [point] + [{n: by_chain[n][c, i] for n in names} for c in range(num_chains) for i in idx]
    preds = _predict_many(pts, ifu, discrete, config)
    info["predictions"] = {k: v[0] for k, v in preds.items()}
    if predict_draws:
        info["predictions_draws"] = {k: v[1:].reshape(num_chains, idx.size, -1) for k, v in preds.items()}
    rows = summary_rows(by_chain, with_diagnostics=True)
    return JointResult("nuts", names, by_chain, rows, not problems, problems, point, info)


def _derived(by_chain, names, config, radii):
    """Derived enclosed masses for every draw: ``name -> (chains, draws)``."""
    if not radii:
        return {}
    flat = {n: jnp.asarray(by_chain[n]).reshape(-1) for n in names}
    shape = by_chain[names[0]].shape
    out = jax.jit(jax.vmap(lambda p: derived_masses(p, config, tuple(radii))))(flat)
    return {k: numpy.asarray(v).reshape(shape) for k, v in out.items()}


def _predict_many(points, ifu, discrete, config):
    """Model values at parameter sets ``points`` (one compiled function, mapped over them):
    ``v_model``, ``vrms_model`` (per bin), ``vrms_discrete`` (per star), each (len(points), n)."""
    names = list(points[0])
    stacked = {n: jnp.asarray([float(pt[n]) for pt in points]) for n in names}

    def one(p):
        out = {}
        if ifu is not None:
            out["v_model"], out["vrms_model"] = predict_ifu(p, ifu, config)
        if discrete is not None:
            out["vrms_discrete"] = predict_discrete(p, discrete, config)
        return out

    vals = compiled()(lambda s: jax.lax.map(one, s))(stacked)
    return {k: numpy.asarray(v) for k, v in vals.items()}


def summary_rows(by_chain, *, with_diagnostics):
    """Rows ``name, mean, sd, p16, p50, p84, r_hat, ess`` (R-hat and ESS NaN without chains)."""
    rows = []
    stats = numpyro_summary({k: numpy.asarray(v) for k, v in by_chain.items()}, group_by_chain=True) \
        if with_diagnostics else {}
    for name, draws in by_chain.items():
        d = numpy.asarray(draws, dtype=float).reshape(-1)
        p16, p50, p84 = numpy.percentile(d, [16, 50, 84])
        rows.append(dict(name=name, mean=float(d.mean()), sd=float(d.std(ddof=1)), p16=float(p16), p50=float(p50),
                         p84=float(p84), r_hat=float(stats[name]["r_hat"]) if stats else numpy.nan,
                         ess=float(stats[name]["n_eff"]) if stats else numpy.nan))
    return rows
