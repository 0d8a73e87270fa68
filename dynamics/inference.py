"""Discrete-star inference: numpyro models for line-of-sight velocities, fit by NUTS.

The likelihood of star ``i`` with projected radius ``R_i``, velocity ``v_i`` and error
``e_i`` is

``L_i = (1 - f_fg) N(v_i | v_sys, sigma_los^2(R_i) + e_i^2) p_mem(R_i)
        + f_fg N(v_i | mu_fg, sigma_fg^2 + e_i^2) p_fg(R_i)``

(e.g. Walker et al. 2009; Martinez et al. 2011), with ``sigma_los`` from the spherical
Jeans equation (:func:`dynamics.jeans.sigma_los2_profile`) evaluated at 32 Chebyshev
points in ``ln R`` spanning the stars and interpolated to every star by a fixed matrix
(:func:`radius_grid`; relative error ~1e-6 over 3.5 decades in ``R``). The positional terms enter only when the
tracer's Plummer scale is free: ``p_mem(R) = 2 R a^2 / (R^2 + a^2)^2`` normalised within
``R_max``, ``p_fg(R) = 2 R / R_max^2`` (uniform foreground). Without a foreground the
likelihood is the Gaussian member term alone.

The foreground dispersion is sampled relative to the members' (ordered dispersions):

``sigma_fg = 10**log10_fg_ratio * max_i sigma_los(R_i)``,  ``log10_fg_ratio >= log10 2``

so that the foreground is always at least twice as broad as the broadest member
Gaussian. The Walker et al. (2009) and Martinez et al. (2011) mixtures describe the
contamination as a distribution much broader than the galaxy's (a Milky-Way model or a
wide Gaussian); with both dispersions free and exchangeable the mixture is not
identified: a chain can give the foreground the members' velocities (``fg_mean`` at
``v_sys``, ``sigma_fg`` near the members' dispersion, ``f_fg`` near 1) and leave the
member term to the tails, and two chains then disagree (R-hat of 20 for the mock of
``examples/mock_dwarf.py`` with free ``log10_fg_sigma``). The ordering removes that mode
and keeps ``f_fg``'s prior uniform on ``(0, 1)``, so that samples dominated by
non-members remain allowed. When the true contamination is barely broader than the
galaxy, lower the bound through ``config.priors["log10_fg_ratio"]`` (0 still keeps the
order).

The halo and the anisotropy are objects: fixed (a :class:`dynamics.Profile`, a
:class:`dynamics.Anisotropy` such as ``Isotropic()``) or a :class:`Family`, a function of
sampled parameters that declares their uniform priors. The user's own profile enters the
same way (a :class:`Family` whose ``build`` returns it). The parameters, in sampling
coordinates (uniform priors; ``config.priors`` overrides the bounds):

========================  ==========================================================
``log10_rho_s``           halo scale density, log10 Msun/kpc^3 (:data:`ZHAO_HALO`,
                          :data:`NFW_HALO`), or, when ``config.mass_radius`` is set,
                          in place of the halo family's ``amplitude``
``log10_m_ref``           log10 halo mass (Msun) within ``mass_radius`` (the quantity
                          the stars measure best, e.g. Wolf et al. 2010, so that the
                          posterior is far less curved than in ``rho_s``)
``log10_r_s``             halo scale radius, log10 kpc (:data:`ZHAO_HALO`, :data:`NFW_HALO`)
``gamma``                 Zhao inner slope (``alpha = 1``, ``beta = 3``; :data:`ZHAO_HALO`)
``beta_sym``              symmetrised anisotropy ``beta / (2 - beta)`` (:data:`CONSTANT_BETA`)
``log10_r_a``             Osipkov-Merritt radius, log10 kpc (:data:`OSIPKOV_MERRITT`)
``u_s``                   ``r_ref / (r_ref + r_s)``, in place of ``log10_r_s``
                          (:func:`nfw_halo_at`, :func:`zhao_halo_at`): the density
                          slope at ``r_ref``; uniform on the same ``r_s`` support
``beta_ref``              Osipkov-Merritt ``beta(r_ref)``, in place of ``log10_r_a``
                          (:func:`osipkov_merritt_at`); uniform on the same ``r_a`` support
``log10_r_plummer``       tracer Plummer scale, log10 kpc (when not fixed)
``v_sys``                 systemic velocity, km/s
``f_fg``                  foreground fraction (``foreground=True``)
``fg_mean``               foreground mean, km/s
``log10_fg_ratio``        log10 of the foreground dispersion over the members'
                          largest ``sigma_los`` over the stars (:func:`foreground_sigma`)
========================  ==========================================================

Units kpc, km/s, Msun. Random functions take explicit keys; results are NamedTuples.
:func:`fit_nuts` checks split R-hat and the effective sample size and warns
(:class:`dynamics.convergence.ConvergenceWarning`) when they fail their limits.

References
----------
Read J. I. et al. 2006, MNRAS 367, 387 (symmetrised beta).
Walker M. G. et al. 2009, AJ 137, 3109; Martinez G. D. et al. 2011, ApJ 738, 55.
Hoffman M. D. & Gelman A. 2014, JMLR 15, 1593 (NUTS).
Vehtari A. et al. 2021, Bayesian Anal. 16, 667 (R-hat < 1.01).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.diagnostics import summary
from numpyro.infer import MCMC, NUTS, init_to_median, init_to_value

from dynamics.anisotropy import Anisotropy, ConstantBeta, OsipkovMerritt
from dynamics.convergence import warn_if_not_converged
from dynamics.jeans import sigma_los2_profile
from dynamics.profiles import NFW, Plummer, Profile, Zhao

__all__ = [
    "StarData",
    "Family",
    "ZHAO_HALO",
    "NFW_HALO",
    "CONSTANT_BETA",
    "OSIPKOV_MERRITT",
    "nfw_halo_at",
    "zhao_halo_at",
    "osipkov_merritt_at",
    "ModelConfig",
    "RadiusGrid",
    "radius_grid",
    "member_variance",
    "foreground_sigma",
    "FitResult",
    "DEFAULT_PRIORS",
    "param_names",
    "build_models",
    "log_likelihood",
    "make_log_likelihood",
    "dwarf_model",
    "fit_nuts",
]

# uniform-prior bounds of the parameters that belong to no family (read-only)
DEFAULT_PRIORS = MappingProxyType({
    "log10_m_ref": (4.0, 10.0),
    "log10_r_plummer": (-2.0, 1.0),
    "v_sys": (-1000.0, 1000.0),
    "f_fg": (0.0, 1.0),
    "fg_mean": (-1000.0, 1000.0),
    # sigma_fg / max_i sigma_los(R_i) in [2, 100]: the foreground cannot mimic the members
    "log10_fg_ratio": (float(np.log10(2.0)), 2.0),
})

_LOG_2PI = float(np.log(2.0 * np.pi))


class StarData(NamedTuple):
    """Discrete kinematic data: projected radii (kpc), velocities and errors (km/s)."""

    R: jax.Array
    v: jax.Array
    v_err: jax.Array


class RadiusGrid(NamedTuple):
    """Chebyshev nodes in ``ln R`` spanning the stars and the star-by-node interpolation matrix.

    ``ln sigma_los^2(R_i) = sum_k W[i, k] ln sigma_los^2(R_k)`` (barycentric Lagrange
    interpolation on Chebyshev points; Berrut & Trefethen 2004), spectrally accurate for
    the smooth ``sigma_los`` profiles.
    """

    R_nodes: jax.Array
    weights: jax.Array


def radius_grid(R, n_nodes=32):
    """Build the :class:`RadiusGrid` for projected radii ``R`` (kpc), once, outside jit.

    Parameters
    ----------
    R : array_like, (n,)
        Projected radii in kpc, > 0.
    n_nodes : int
        Number of Chebyshev nodes (second kind) in ``ln R``.

    Returns
    -------
    RadiusGrid
    """
    x_star = np.log(np.asarray(R, dtype=float))
    if n_nodes < 2:
        raise ValueError(f"n_nodes must be >= 2, got {n_nodes}")
    lo, hi = x_star.min(), x_star.max()
    hi = max(hi, lo + 1e-6)
    k = np.arange(n_nodes)
    nodes = 0.5 * (lo + hi) + 0.5 * (hi - lo) * np.cos(np.pi * k / (n_nodes - 1))
    bw = (-1.0) ** k
    bw[0] *= 0.5
    bw[-1] *= 0.5
    diff = x_star[:, None] - nodes[None, :]
    exact = diff == 0.0
    safe = np.where(exact, 1.0, diff)
    terms = bw / safe
    mat = terms / terms.sum(axis=1, keepdims=True)
    hit = exact.any(axis=1)
    mat[hit] = exact[hit].astype(float)
    return RadiusGrid(jnp.asarray(np.exp(nodes)), jnp.asarray(mat))


def _read_only(mapping, value=lambda v: v):
    """A read-only copy of a mapping (or of a sequence of pairs)."""
    return MappingProxyType({str(k): value(v) for k, v in dict(mapping).items()})


@dataclass(frozen=True)
class Family:
    """A profile or anisotropy built from sampled parameters, with their uniform priors.

    Parameters
    ----------
    build : callable
        ``params -> model``: maps the parameter values (a dict of scalars by name, which
        also holds the model's other sampled and fixed parameters) to a
        :class:`dynamics.Profile` (a halo; the user's own subclass works as in
        :func:`dynamics.sigma_los`) or a :class:`dynamics.Anisotropy`. Traced by JAX.
    priors : mapping or sequence of pairs
        ``name -> (lo, hi)``: the parameters that ``build`` reads, in sampling order, and
        the bounds of their uniform priors (in the sampling coordinate, e.g. log10 kpc).
        Stored as a read-only copy.
    amplitude : str or None
        For a halo: the name of a log10 normalisation among ``priors``, the density being
        proportional to ``10**params[amplitude]``. Needed by ``ModelConfig.mass_radius``,
        which samples ``log10_m_ref`` in its place.

    Examples
    --------
    A cored halo, sampled in log10 of its density (Msun/kpc^3) and core radius (kpc):

    >>> from dynamics import Burkert, Isotropic
    >>> burkert = Family(lambda p: Burkert(10.0 ** p["log10_rho_0"], 10.0 ** p["log10_r_0"]),
    ...                  {"log10_rho_0": (5.0, 10.0), "log10_r_0": (-1.0, 1.5)},
    ...                  amplitude="log10_rho_0")
    >>> param_names(ModelConfig(halo=burkert, anisotropy=Isotropic()))
    ['log10_rho_0', 'log10_r_0', 'v_sys']
    """

    build: Callable
    priors: Mapping
    amplitude: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "priors", _read_only(self.priors, tuple))
        if not callable(self.build):
            raise ValueError(f"Family: build must be callable, got {self.build!r}")
        if self.amplitude is not None and self.amplitude not in self.priors:
            raise ValueError(f"Family: amplitude {self.amplitude!r} is not among the priors "
                             f"{list(self.priors)}")


def _zhao(p):
    return Zhao(10.0 ** p["log10_rho_s"], 10.0 ** p["log10_r_s"], 1.0, 3.0, p["gamma"])


def _nfw(p):
    return NFW(10.0 ** p["log10_rho_s"], 10.0 ** p["log10_r_s"])


def _constant_beta(p):
    bs = p["beta_sym"]
    return ConstantBeta(2.0 * bs / (1.0 + bs))  # Read et al. 2006: beta_sym = beta/(2-beta)


def _osipkov_merritt(p):
    return OsipkovMerritt(10.0 ** p["log10_r_a"])


_HALO_PRIORS = {"log10_rho_s": (4.0, 10.0), "log10_r_s": (-1.0, 1.5)}
#: Zhao halo ``(alpha, beta) = (1, 3)`` with free inner slope: ``log10_rho_s``, ``log10_r_s``, ``gamma``.
ZHAO_HALO = Family(_zhao, {**_HALO_PRIORS, "gamma": (0.0, 1.5)}, amplitude="log10_rho_s")
#: NFW halo: ``log10_rho_s``, ``log10_r_s``.
NFW_HALO = Family(_nfw, _HALO_PRIORS, amplitude="log10_rho_s")
#: Constant anisotropy, sampled as ``beta_sym = beta / (2 - beta)`` (Read et al. 2006).
CONSTANT_BETA = Family(_constant_beta, {"beta_sym": (-0.95, 0.95)})
#: Osipkov-Merritt anisotropy: ``log10_r_a`` (kpc).
OSIPKOV_MERRITT = Family(_osipkov_merritt, {"log10_r_a": (-2.0, 1.5)})


def _check_r_ref(r_ref, where):
    r_ref = float(r_ref)
    if not (np.isfinite(r_ref) and r_ref > 0):
        raise ValueError(f"{where}: r_ref must be a finite radius > 0 (kpc), got {r_ref}")
    return r_ref


def _u_s_bounds(r_ref):
    # u_s = r_ref / (r_ref + r_s) over the support of _HALO_PRIORS["log10_r_s"]
    lo, hi = _HALO_PRIORS["log10_r_s"]
    return (r_ref / (r_ref + 10.0**hi), r_ref / (r_ref + 10.0**lo))


def _r_s_from_u(u, r_ref):
    return r_ref * (1.0 - u) / u  # inverse of u_s = r_ref / (r_ref + r_s)


def nfw_halo_at(r_ref):
    """NFW halo whose scale radius is sampled as ``u_s = r_ref / (r_ref + r_s)``.

    ``u_s`` is where ``r_ref`` sits between the inner and the outer slope: the
    logarithmic density slope there is ``-(1 + 2 u_s)`` (Navarro, Frenk & White 1997,
    eq. 1), the quantity a tracer near ``r_ref`` measures. Its prior is uniform on the
    support of ``log10_r_s`` in :data:`NFW_HALO` (``r_s`` in 0.1 to 31.6 kpc), i.e. a
    density in ``ln r_s`` proportional to ``u_s (1 - u_s)``, which falls as
    ``r_ref / r_s`` where the stars no longer tell ``r_s`` apart (``r_s`` well outside
    them) instead of the flat plateau of a log-uniform prior that NUTS crawls along.

    Parameters
    ----------
    r_ref : float
        Reference radius in kpc (e.g. ``config.mass_radius``, about the tracer's
        3-D half-light radius).

    Returns
    -------
    Family
        Parameters ``log10_rho_s`` (the amplitude) and ``u_s``.

    Examples
    --------
    >>> from dynamics import Isotropic
    >>> param_names(ModelConfig(halo=nfw_halo_at(0.33), anisotropy=Isotropic(), mass_radius=0.33))
    ['log10_m_ref', 'u_s', 'v_sys']
    """
    r_ref = _check_r_ref(r_ref, "nfw_halo_at")

    def build(p):
        return NFW(10.0 ** p["log10_rho_s"], _r_s_from_u(p["u_s"], r_ref))

    priors = {"log10_rho_s": _HALO_PRIORS["log10_rho_s"], "u_s": _u_s_bounds(r_ref)}
    return Family(build, priors, amplitude="log10_rho_s")


def zhao_halo_at(r_ref):
    """Zhao ``(1, 3, gamma)`` halo with its scale radius sampled as ``u_s`` (:func:`nfw_halo_at`).

    The logarithmic density slope at ``r_ref`` is ``-(gamma + (3 - gamma) u_s)``
    (Zhao 1996, eq. 1 with ``alpha = 1``, ``beta = 3``). ``gamma`` keeps the uniform
    prior of :data:`ZHAO_HALO` on ``(0, 1.5)``.

    Returns
    -------
    Family
        Parameters ``log10_rho_s`` (the amplitude), ``u_s`` and ``gamma``.
    """
    r_ref = _check_r_ref(r_ref, "zhao_halo_at")

    def build(p):
        r_s = _r_s_from_u(p["u_s"], r_ref)
        return Zhao(10.0 ** p["log10_rho_s"], r_s, 1.0, 3.0, p["gamma"])

    priors = {"log10_rho_s": _HALO_PRIORS["log10_rho_s"], "u_s": _u_s_bounds(r_ref),
              "gamma": ZHAO_HALO.priors["gamma"]}
    return Family(build, priors, amplitude="log10_rho_s")


def osipkov_merritt_at(r_ref):
    """Osipkov-Merritt anisotropy sampled as its ``beta(r_ref) = r_ref^2 / (r_ref^2 + r_a^2)``.

    ``beta(r) = r^2 / (r^2 + r_a^2)`` (Osipkov 1979; Merritt 1985); ``beta_ref`` is the
    anisotropy at ``r_ref``, where the stars constrain it. Its prior is uniform on the
    support of ``log10_r_a`` in :data:`OSIPKOV_MERRITT` (``r_a`` in 0.01 to 31.6 kpc),
    i.e. a density in ``ln r_a`` proportional to ``beta_ref (1 - beta_ref)``, which
    falls at both plateaus of the likelihood (``r_a >> r_ref``: isotropic;
    ``r_a << r_ref``: radial) instead of staying flat there as the log-uniform prior does.

    Parameters
    ----------
    r_ref : float
        Reference radius in kpc.

    Returns
    -------
    Family
        Parameter ``beta_ref``.
    """
    r_ref = _check_r_ref(r_ref, "osipkov_merritt_at")
    lo, hi = OSIPKOV_MERRITT.priors["log10_r_a"]
    bounds = tuple(r_ref**2 / (r_ref**2 + 10.0 ** (2.0 * x)) for x in (hi, lo))

    def build(p):
        b = p["beta_ref"]
        return OsipkovMerritt(r_ref * jnp.sqrt((1.0 - b) / b))

    return Family(build, {"beta_ref": bounds})


@dataclass(frozen=True)
class ModelConfig:
    """Static choices of the discrete-star model (not traced; immutable).

    Attributes
    ----------
    halo : Family or Profile
        Dark halo: a :class:`Family` (:data:`ZHAO_HALO`, :data:`NFW_HALO` or the user's
        own), or a fixed :class:`dynamics.Profile` (no halo parameter sampled).
    anisotropy : Family or Anisotropy
        :data:`CONSTANT_BETA`, :data:`OSIPKOV_MERRITT`, the user's own :class:`Family`,
        or a fixed :class:`dynamics.Anisotropy` such as ``Isotropic()``.
    foreground : bool
        Include the Gaussian foreground mixture.
    tracer_r_s : float or None
        Fixed Plummer scale of the tracer (kpc); ``None`` makes ``log10_r_plummer`` free
        and adds the positional likelihood (needs ``R_max``).
    R_max : float or None
        Radius (kpc) of the survey footprint for the positional terms.
    mass_radius : float or None
        When set (kpc), the halo normalisation (the halo family's ``amplitude``) is
        sampled as ``log10_m_ref``, the log10 halo mass within this radius.
    stellar_mass : float
        Known stellar mass (Msun) in a Plummer sphere of the tracer's scale added to the
        halo; ``0`` for a dark-matter-only mass model.
    priors : mapping
        ``name -> (lo, hi)`` uniform-prior bounds overriding those of the families and
        :data:`DEFAULT_PRIORS`. Stored as a read-only copy.
    fixed : mapping
        ``name -> value`` parameters held fixed (not sampled). Stored as a read-only copy.

    Examples
    --------
    >>> from dynamics import Isotropic
    >>> config = ModelConfig(halo=NFW_HALO, anisotropy=Isotropic(), fixed={"log10_r_s": 0.0})
    >>> param_names(config)
    ['log10_rho_s', 'v_sys']
    """

    halo: Family | Profile = ZHAO_HALO
    anisotropy: Family | Anisotropy = CONSTANT_BETA
    foreground: bool = False
    tracer_r_s: float | None = 0.25
    R_max: float | None = None
    mass_radius: float | None = None
    stellar_mass: float = 0.0
    priors: Mapping = field(default_factory=dict)
    fixed: Mapping = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "priors", _read_only(self.priors, tuple))
        object.__setattr__(self, "fixed", _read_only(self.fixed))


class FitResult(NamedTuple):
    """NUTS result.

    Attributes
    ----------
    samples : dict
        ``name -> (num_chains * num_samples,)`` posterior draws (free parameters).
    samples_by_chain : dict
        ``name -> (num_chains, num_samples)``.
    r_hat, n_eff : dict
        Split-R-hat and effective sample size per parameter (numpyro diagnostics).
    num_divergences : int
    num_steps : Array
        Leapfrog steps per draw (all chains, flattened).
    mcmc : numpyro.infer.MCMC
        The sampler object (for its own diagnostics).
    converged : bool
        Every parameter has R-hat <= ``r_hat_max`` and ``n_eff >= ess_min``
        (:func:`dynamics.convergence.convergence_problems`); when False, :func:`fit_nuts`
        has issued a :class:`dynamics.convergence.ConvergenceWarning`.
    """

    samples: dict
    samples_by_chain: dict
    r_hat: dict
    n_eff: dict
    num_divergences: int
    num_steps: jax.Array
    mcmc: object
    converged: bool


def _check_config(config):
    if not isinstance(config.halo, (Family, Profile)):
        raise ValueError("config.halo must be a Family (e.g. ZHAO_HALO, NFW_HALO) or a dynamics "
                         f"Profile, got {config.halo!r}")
    if not isinstance(config.anisotropy, (Family, Anisotropy)):
        raise ValueError("config.anisotropy must be a Family (e.g. CONSTANT_BETA, OSIPKOV_MERRITT) "
                         f"or a dynamics Anisotropy (e.g. Isotropic()), got {config.anisotropy!r}")
    if config.tracer_r_s is None and config.R_max is None:
        raise ValueError("config.R_max is needed when the tracer scale (tracer_r_s) is free")
    if config.tracer_r_s is not None and not config.tracer_r_s > 0:
        raise ValueError(f"config.tracer_r_s must be > 0, got {config.tracer_r_s}")
    if config.mass_radius is not None and not config.mass_radius > 0:
        raise ValueError(f"config.mass_radius must be > 0, got {config.mass_radius}")
    if config.mass_radius is not None and getattr(config.halo, "amplitude", None) is None:
        raise ValueError("config.mass_radius needs a halo Family with an amplitude parameter")
    if config.stellar_mass < 0:
        raise ValueError(f"config.stellar_mass must be >= 0, got {config.stellar_mass}")
    bounds = _default_bounds(config)
    names = [name for name, _ in bounds]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"parameters {twice} are declared twice (halo, anisotropy and model "
                         "parameters need distinct names)")
    for key in list(config.priors) + list(config.fixed):
        if key not in names:
            raise ValueError(f"unknown parameter {key!r} for this config; known: {sorted(names)}")
    for key, (lo, hi) in bounds + list(config.priors.items()):
        if not lo < hi:
            raise ValueError(f"prior bounds for {key!r} must satisfy lo < hi, got ({lo}, {hi})")


def _default_bounds(config):
    """``[(name, (lo, hi)), ...]``: every parameter of a config and its default prior, in order."""
    bounds = []
    if isinstance(config.halo, Family):
        for name, lo_hi in config.halo.priors.items():
            if config.mass_radius is not None and name == config.halo.amplitude:
                name, lo_hi = "log10_m_ref", DEFAULT_PRIORS["log10_m_ref"]
            bounds.append((name, lo_hi))
    if isinstance(config.anisotropy, Family):
        bounds += list(config.anisotropy.priors.items())
    model = ["log10_r_plummer"] if config.tracer_r_s is None else []
    model.append("v_sys")
    if config.foreground:
        model += ["f_fg", "fg_mean", "log10_fg_ratio"]
    return bounds + [(name, DEFAULT_PRIORS[name]) for name in model]


def param_names(config):
    """Names of the free (sampled) parameters of a config, in a fixed order."""
    _check_config(config)
    return [n for n, _ in _default_bounds(config) if n not in config.fixed]


def _prior_bounds(config):
    """``name -> (lo, hi)`` of the free parameters, ``config.priors`` taking precedence."""
    defaults = dict(_default_bounds(config))
    return {n: config.priors.get(n, defaults[n]) for n in param_names(config)}


def _build_halo(p, config):
    halo = config.halo
    if not isinstance(halo, Family):
        return halo
    if config.mass_radius is None:
        return halo.build(p)
    # the density is proportional to 10**amplitude: scale a unit halo to the requested M(<r_ref)
    unit_mass = halo.build({**p, halo.amplitude: 0.0}).enclosed_mass(config.mass_radius)
    return halo.build({**p, halo.amplitude: p["log10_m_ref"] - jnp.log10(unit_mass)})


def build_models(params, config):
    """Tracer, total mass and anisotropy objects from a parameter dict.

    Parameters
    ----------
    params : dict
        Free parameters (``fixed`` ones are taken from the config).
    config : ModelConfig

    Returns
    -------
    tracer : Plummer
    mass : Profile
        The halo, plus a Plummer stellar component when ``config.stellar_mass > 0``.
    anisotropy : Anisotropy
    """
    p = {**config.fixed, **params}
    halo = _build_halo(p, config)
    a = config.tracer_r_s if config.tracer_r_s is not None else 10.0 ** p["log10_r_plummer"]
    tracer = Plummer(1.0, a)
    mass = halo if config.stellar_mass == 0 else Plummer(config.stellar_mass, a) + halo
    aniso = config.anisotropy
    if isinstance(aniso, Family):
        aniso = aniso.build(p)
    return tracer, mass, aniso


def _normal_logpdf(x, var):
    return -0.5 * (x * x / var + jnp.log(var) + _LOG_2PI)


def _sigma_los2_stars(params, data, config, grid):
    """``sigma_los^2(R_i)`` of the members at every star (no errors), (km/s)^2."""
    tracer, mass, aniso = build_models(params, config)
    if grid is None:
        return sigma_los2_profile(data.R, tracer, mass, aniso, grid=True)
    s2_nodes = sigma_los2_profile(grid.R_nodes, tracer, mass, aniso, grid=False)
    return jnp.exp(grid.weights @ jnp.log(s2_nodes))


def member_variance(params, data, config, grid=None):
    """``sigma_los^2(R_i) + e_i^2`` for every star, (km/s)^2.

    With a :class:`RadiusGrid`, ``sigma_los^2`` is computed at its nodes
    (:func:`dynamics.jeans.sigma_los2_profile`) and interpolated to the stars; with
    ``grid=None`` by ``sigma_los2_profile(..., grid=True)`` at the stars.
    """
    return _sigma_los2_stars(params, data, config, grid) + data.v_err**2


def _fg_sigma2(p, s2):
    # ordered dispersions: sigma_fg = 10**log10_fg_ratio * max_i sigma_los(R_i) (module notes)
    return 10.0 ** (2.0 * p["log10_fg_ratio"]) * jnp.max(s2)


def foreground_sigma(params, data, config, grid=None):
    """Foreground velocity dispersion (km/s) implied by ``log10_fg_ratio``.

    ``sigma_fg = 10**log10_fg_ratio * max_i sigma_los(R_i)``, the maximum taken over
    the stars of ``data`` (see the module notes).

    Parameters
    ----------
    params : dict
        Free parameters by name, including ``log10_fg_ratio`` (or fixed in ``config``).
    data : StarData
    config : ModelConfig
    grid : RadiusGrid or None
        As in :func:`log_likelihood`; use the same as the fit.

    Returns
    -------
    Array
        Scalar, km/s.
    """
    p = {**config.fixed, **params}
    return jnp.sqrt(_fg_sigma2(p, _sigma_los2_stars(params, data, config, grid)))


def log_likelihood(params, data, config, grid=None):
    """Log-likelihood of the star data for one parameter set (see the module notes).

    Parameters
    ----------
    params : dict
        Free parameters by name (:func:`param_names`), scalars.
    data : StarData
    config : ModelConfig
    grid : RadiusGrid or None
        Interpolation grid (:func:`radius_grid`); ``None`` uses the Jeans module's own.

    Returns
    -------
    Array
        Scalar log-likelihood.
    """
    p = {**config.fixed, **params}
    s2 = _sigma_los2_stars(params, data, config, grid)
    ll_mem = _normal_logpdf(data.v - p["v_sys"], s2 + data.v_err**2)
    if config.tracer_r_s is None:
        a = 10.0 ** p["log10_r_plummer"]
        R_max = config.R_max
        norm = R_max**2 / (R_max**2 + a**2)  # Plummer projected mass fraction within R_max
        ll_mem = ll_mem + jnp.log(2.0 * data.R * a**2 / (data.R**2 + a**2) ** 2 / norm)
    if not config.foreground:
        return jnp.sum(ll_mem)
    fg_var = _fg_sigma2(p, s2) + data.v_err**2
    ll_fg = _normal_logpdf(data.v - p["fg_mean"], fg_var)
    if config.tracer_r_s is None:
        ll_fg = ll_fg + jnp.log(2.0 * data.R / config.R_max**2)
    f = p["f_fg"]
    return jnp.sum(jnp.logaddexp(jnp.log1p(-f) + ll_mem, jnp.log(f) + ll_fg))


def make_log_likelihood(data, config, *, n_nodes=32):
    """A jitted ``theta -> (log L, d log L / d theta)`` on a flat parameter vector.

    ``theta`` holds the free parameters in :func:`param_names` order; ``sigma_los`` is
    evaluated at ``n_nodes`` Chebyshev radii (:func:`radius_grid`) and interpolated.

    Returns
    -------
    value_and_grad : callable
        Jitted, ``theta (k,) -> (scalar, (k,))``.
    names : list of str
    """
    names = param_names(config)
    data = StarData(*(jnp.asarray(x, dtype=float) for x in data))
    check_data(data)
    grid = radius_grid(data.R, n_nodes)

    def ll(theta):
        return log_likelihood(dict(zip(names, theta)), data, config, grid)

    return jax.jit(jax.value_and_grad(ll)), names


def check_data(data):
    """Raise ValueError unless ``data = (R, v, v_err)`` are finite 1-D arrays of one length, R > 0 and v_err >= 0."""
    R, v, e = (np.asarray(x) for x in data)
    if not (R.shape == v.shape == e.shape and R.ndim == 1):
        raise ValueError(f"R, v, v_err must be 1-D of one length, got {R.shape}, {v.shape}, {e.shape}")
    if not (np.all(np.isfinite(R)) and np.all(np.isfinite(v)) and np.all(np.isfinite(e))):
        raise ValueError("R, v, v_err must be finite")
    if np.any(R <= 0) or np.any(e < 0):
        raise ValueError("R must be > 0 and v_err >= 0")


def dwarf_model(data, config=ModelConfig(), grid=None):
    """numpyro model: uniform priors on the free parameters, the mixture likelihood.

    Parameters
    ----------
    data : StarData
    config : ModelConfig
    grid : RadiusGrid or None
        See :func:`log_likelihood`.
    """
    params = {}
    for name, (lo, hi) in _prior_bounds(config).items():
        params[name] = numpyro.sample(name, dist.Uniform(lo, hi))
    numpyro.factor("log_likelihood", log_likelihood(params, data, config, grid))


def fit_nuts(key, data, config=ModelConfig(), *, num_warmup=500, num_samples=500, num_chains=2,
             chain_method="sequential", init_params=None, dense_mass=False, target_accept_prob=0.8,
             progress_bar=False, n_nodes=32, r_hat_max=1.01, ess_min=100):
    """Fit :func:`dwarf_model` by NUTS and return draws with convergence diagnostics.

    Split R-hat and the effective sample size (numpyro's ``n_eff``) of every parameter
    are checked against ``r_hat_max`` and ``ess_min``; a failing run issues one
    :class:`dynamics.convergence.ConvergenceWarning` naming the offenders and returns
    ``converged=False`` (its draws must not be reported as a posterior).

    Parameters
    ----------
    key : jax.random key
    data : StarData
    config : ModelConfig
    num_warmup, num_samples, num_chains : int
    chain_method : {"sequential", "vectorized", "parallel"}
    init_params : dict or None
        Starting values by name (else the prior medians).
    dense_mass : bool
    target_accept_prob : float
    progress_bar : bool
    n_nodes : int
        Chebyshev radii for ``sigma_los`` (:func:`radius_grid`).
    r_hat_max, ess_min : float
        Convergence limits (:func:`dynamics.convergence.convergence_problems`).

    Returns
    -------
    FitResult
        Draws are blocked on (``jax.block_until_ready``) before returning.

    Warns
    -----
    dynamics.convergence.ConvergenceWarning
        When R-hat > ``r_hat_max`` or ``n_eff < ess_min`` for any parameter.
    """
    data = StarData(*(jnp.asarray(x, dtype=float) for x in data))
    check_data(data)
    names = param_names(config)
    init = init_to_median() if init_params is None else init_to_value(values=init_params)
    grid = radius_grid(data.R, n_nodes)
    kernel = NUTS(partial(dwarf_model, config=config, grid=grid), init_strategy=init, dense_mass=dense_mass,
                  target_accept_prob=target_accept_prob)
    mcmc = MCMC(kernel, num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains,
                chain_method=chain_method, progress_bar=progress_bar)
    mcmc.run(key, data, extra_fields=("diverging", "num_steps"))
    by_chain = jax.block_until_ready(mcmc.get_samples(group_by_chain=True))
    by_chain = {k: by_chain[k] for k in names}
    stats = summary(by_chain, group_by_chain=True)
    flat = {k: v.reshape(-1) for k, v in by_chain.items()}
    extra = mcmc.get_extra_fields()
    n_div = int(np.sum(np.asarray(extra["diverging"])))
    r_hat = {k: float(stats[k]["r_hat"]) for k in names}
    n_eff = {k: float(stats[k]["n_eff"]) for k in names}
    problems = warn_if_not_converged(r_hat, n_eff, what="fit_nuts (NUTS)", r_hat_max=r_hat_max,
                                     ess_min=ess_min)
    return FitResult(
        samples=flat,
        samples_by_chain=by_chain,
        r_hat=r_hat,
        n_eff=n_eff,
        num_divergences=n_div,
        num_steps=jnp.asarray(extra["num_steps"]).reshape(-1),
        mcmc=mcmc,
        converged=not problems,
    )
