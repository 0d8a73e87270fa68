"""One mass model for IFU kinematic maps and discrete tracers: the joint JAM likelihood.

Mass model: the stars' MGE times a free mass-to-light ratio ``ml``, a dark halo
(:mod:`dynamics.halos`: NFW by ``log10_m200`` and ``concentration``, gNFW adding the inner
slope ``gamma``, or none) and an optional black hole (``log10_m_bh``), seen at a free
``inclination``.  The stars (the MGE as tracer) have a cylindrically aligned velocity
ellipsoid with free ``beta_z`` and rotation ``kappa`` (Cappellari 2008).

IFU likelihood (maps of ``V`` and ``V_rms = sqrt(V^2 + sigma^2)`` per bin): Gaussian in both,
at the model's PSF- and spaxel-convolved first moment (:func:`dynamics.jam_velocity`) and
V_rms (:func:`dynamics.jam_vrms`), averaged over the spaxels of each bin with the
luminosity weights (second moments for V_rms).

Discrete likelihood (Watkins et al. 2013, MNRAS 436, 2598, eq. 9, without rotation): a
tracer with its own round density (an MGE, e.g. a Plummer fitted to the positions) and its
own ``beta_z_discrete`` moves in the same potential; star ``i`` at sky ``(x_i, y_i)`` with
velocity ``v_i`` and error ``e_i`` has

``L_i = p_i (1 - f_out) N(v_i | 0, V_rms^2(x_i, y_i) + e_i^2)
        + (1 - p_i (1 - f_out)) N(v_i | 0, sigma_out^2 + e_i^2)``

with ``p_i`` the prior membership probability, ``f_out`` the free outlier fraction and
``sigma_out`` the fixed, broad dispersion of the contaminants.  Fixing ``sigma_out``
(default three times the stars' velocity dispersion, :func:`default_outlier_sigma`) keeps
the mixture identifiable: the outlier component cannot shrink to mimic the members.
V_rms at the stars comes from a product grid and interpolation
(:mod:`dynamics.jam_points`).

Priors are uniform on the bounds of :data:`DEFAULT_PRIORS` (``JointConfig.priors``
overrides them; the inclination's lower bound is raised to the flattest Gaussian's
limit ``arccos(q_min)``).  Units: kpc, km/s, Msun, degrees.

References
----------
Cappellari M. 2008, MNRAS 390, 71.  Watkins L. L., van de Ven G., den Brok M., van den
Bosch R. C. E. 2013, MNRAS 436, 2598.  Zhu L. et al. 2016, MNRAS 462, 4001.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy
import numpyro
import numpyro.distributions as dist

from .halos import gnfw_from_m200, nfw_from_m200
from .jam import JamSettings, bin_average, jam_velocity, jam_vrms
from .jam_cyl_separable import product_grid
from .jam_points import jam_vrms_points, point_grid
from .mge import MGE
from .xla_options import compiled, holds_tracers

__all__ = ["IfuData", "DiscreteData", "JointConfig", "DEFAULT_PRIORS", "param_names", "prior_bounds",
           "build_mass", "predict_ifu", "predict_discrete", "log_likelihood_parts", "joint_model",
           "derived_masses", "default_outlier_sigma", "membership_probability"]

_LOG_2PI = float(numpy.log(2.0 * numpy.pi))

#: Uniform-prior bounds (sampling coordinates) of every parameter (read-only).
DEFAULT_PRIORS = MappingProxyType({
    "ml": (0.1, 20.0),                 # M/L in the MGE's band, Msun/Lsun
    "inclination": (0.0, 90.0),        # degrees; lower bound raised to arccos(q_min) + 0.5
    "beta_z": (-1.0, 0.9),
    "kappa": (-2.0, 2.0),
    "log10_m_bh": (5.0, 11.0),         # Msun
    "log10_m200": (9.0, 15.5),         # Msun
    "concentration": (2.0, 40.0),
    "gamma": (0.0, 2.0),
    "beta_z_discrete": (-1.0, 0.9),
    "f_out": (0.0, 0.5),
})


class IfuData(NamedTuple):
    """IFU kinematics per bin and the spaxels that make the bins (concrete numpy arrays).

    x, y : (N,) spaxel centres in the galaxy frame (kpc).  binid : (N,) bin of each spaxel
    (0..B-1).  weight : (N,) luminosity weights within bins.  v, v_err, vrms, vrms_err : (B,)
    km/s.  psf_sigma, psf_weight : PSF Gaussians (kpc, weights).  pixel_size : kpc.
    """

    x: numpy.ndarray
    y: numpy.ndarray
    binid: numpy.ndarray
    weight: numpy.ndarray
    v: numpy.ndarray
    v_err: numpy.ndarray
    vrms: numpy.ndarray
    vrms_err: numpy.ndarray
    psf_sigma: tuple = (0.0,)
    psf_weight: tuple = (1.0,)
    pixel_size: float = 0.0

    @property
    def n_bins(self):
        return int(self.v.shape[0])


class DiscreteData(NamedTuple):
    """Discrete tracers: positions (kpc, galaxy frame), velocities and errors (km/s),
    prior membership probabilities (1 when unknown)."""

    x: numpy.ndarray
    y: numpy.ndarray
    v: numpy.ndarray
    v_err: numpy.ndarray
    p_member: numpy.ndarray


def default_outlier_sigma(v):
    """Default dispersion of the contaminants (km/s): three times the stars' sample dispersion."""
    return 3.0 * float(numpy.std(numpy.asarray(v, dtype=float)))


@dataclass(frozen=True)
class JointConfig:
    """Static choices of the joint model (immutable).

    Attributes
    ----------
    tracer : MGE
        The stars' surface brightness (Lsun/kpc^2, kpc), also their mass with ``ml``.
    halo : {"nfw", "gnfw", "none"}
    black_hole : bool
    discrete_tracer : MGE or None
        Density of the discrete tracer (round, kpc); needed with discrete data.
    outlier_sigma : float or None
        Contaminant dispersion (km/s); None: no contamination term.
    priors, fixed : mapping
        ``name -> (lo, hi)`` bound overrides; ``name -> value`` parameters held fixed.
    vrms_settings, velocity_settings, discrete_settings : JamSettings
        Quadratures of the IFU V_rms, the IFU first moment and the discrete V_rms.
    n_grid : int
        Interpolation nodes per axis for scattered points (:mod:`dynamics.jam_points`).
    """

    tracer: MGE
    halo: str = "nfw"
    black_hole: bool = False
    discrete_tracer: MGE | None = None
    outlier_sigma: float | None = None
    priors: dict = field(default_factory=dict)
    fixed: dict = field(default_factory=dict)
    vrms_settings: JamSettings = JamSettings(quad=(8, 6))
    velocity_settings: JamSettings = JamSettings(quad=(8, 6), los=(4, 8), psf_step=1.0, table=64)
    discrete_settings: JamSettings = JamSettings(quad=(8, 6))
    n_grid: int = 48

    def __post_init__(self):
        if self.halo not in ("nfw", "gnfw", "none"):
            raise ValueError(f"halo must be 'nfw', 'gnfw' or 'none', got {self.halo!r}")
        if not isinstance(self.tracer, MGE):
            raise ValueError(f"tracer must be an MGE, got {type(self.tracer).__name__}")
        object.__setattr__(self, "priors", MappingProxyType({k: tuple(v) for k, v in dict(self.priors).items()}))
        object.__setattr__(self, "fixed", MappingProxyType(dict(self.fixed)))

    def __hash__(self):
        return id(self)


def param_names(config, has_ifu, has_discrete):
    """Free parameters, in sampling order, for the data sets present."""
    names = ["ml", "inclination", "beta_z"]
    if has_ifu:
        names.append("kappa")
    if config.black_hole:
        names.append("log10_m_bh")
    if config.halo != "none":
        names += ["log10_m200", "concentration"]
    if config.halo == "gnfw":
        names.append("gamma")
    if has_discrete:
        names.append("beta_z_discrete")
        if config.outlier_sigma is not None:
            names.append("f_out")
    return [n for n in names if n not in config.fixed]


def prior_bounds(config, has_ifu, has_discrete):
    """``name -> (lo, hi)`` uniform bounds of the free parameters."""
    q_min = float(numpy.min(numpy.asarray(config.tracer.q)))
    if config.discrete_tracer is not None and has_discrete:
        q_min = min(q_min, float(numpy.min(numpy.asarray(config.discrete_tracer.q))))
    inc_min = float(numpy.degrees(numpy.arccos(q_min))) + 0.5
    bounds = {}
    for name in param_names(config, has_ifu, has_discrete):
        lo, hi = config.priors.get(name, DEFAULT_PRIORS[name])
        if name == "inclination":
            lo = max(lo, inc_min)
            if not lo < hi:
                raise ValueError(f"inclination: the flattest MGE Gaussian (q = {q_min:.4g}) needs "
                                 f"inclination > {inc_min - 0.5:.4g} deg, but the prior ends at {hi}")
        if not lo < hi:
            raise ValueError(f"prior bounds of {name!r} must satisfy lo < hi, got ({lo}, {hi})")
        bounds[name] = (float(lo), float(hi))
    return bounds


def _halo(p, config):
    if config.halo == "none":
        return None
    m200 = 10.0 ** p["log10_m200"]
    if config.halo == "nfw":
        return nfw_from_m200(m200, p["concentration"])
    return gnfw_from_m200(m200, p["concentration"], p["gamma"])


def build_mass(params, config):
    """``(mass, m_bh)``: the mass model (MGE or MGE + halo) and the black-hole mass (Msun)."""
    p = {**config.fixed, **params}
    stars = config.tracer.scaled(p["ml"])
    halo = _halo(p, config)
    mass = stars if halo is None else stars + halo
    m_bh = 10.0 ** p["log10_m_bh"] if config.black_hole else 0.0
    return mass, m_bh


def _vrms_at(x, y, tracer, mass, settings, n_grid, **kw):
    """V_rms at concrete points: directly on a product grid, else by interpolation."""
    if product_grid(x, y) is not None:
        return jam_vrms(x, y, tracer, mass, settings=settings, **kw)
    return jam_vrms_points(x, y, tracer, mass, grid=point_grid(x, y, n_grid), settings=settings, **kw)


def predict_ifu(params, ifu, config):
    """Model ``(V, V_rms)`` per bin (km/s): PSF/spaxel-convolved, luminosity-weighted bin averages.

    Called with concrete parameters (outside ``jit``), it runs as one compiled program
    for these data (:func:`_compiled_for`); inside a traced function it is traced inline.
    """
    return _compiled_for(_predict_ifu, params, ifu, config)


def _predict_ifu(params, ifu, config):
    p = {**config.fixed, **params}
    mass, m_bh = build_mass(p, config)
    psf = dict(psf_sigma=numpy.asarray(ifu.psf_sigma), psf_weight=numpy.asarray(ifu.psf_weight),
               pixel_size=ifu.pixel_size)
    common = dict(inclination=p["inclination"], beta=p["beta_z"], m_bh=m_bh, **psf)
    vrms = _vrms_at(ifu.x, ifu.y, config.tracer, mass, config.vrms_settings, config.n_grid, **common)
    vel = jam_velocity(ifu.x, ifu.y, config.tracer, mass, kappa=p["kappa"], settings=config.velocity_settings,
                       **common)
    w = jnp.asarray(ifu.weight)
    v_bin = bin_average(vel, w, ifu.binid, ifu.n_bins)
    vrms_bin = jnp.sqrt(bin_average(vrms**2, w, ifu.binid, ifu.n_bins))
    return v_bin, vrms_bin


def predict_discrete(params, discrete, config):
    """Model V_rms (km/s) of the discrete tracer at each star (no PSF); compiled as
    :func:`predict_ifu` is."""
    return _compiled_for(_predict_discrete, params, discrete, config)


def _predict_discrete(params, discrete, config):
    p = {**config.fixed, **params}
    mass, m_bh = build_mass(p, config)
    return _vrms_at(discrete.x, discrete.y, config.discrete_tracer, mass, config.discrete_settings,
                    config.n_grid, inclination=p["inclination"], beta=p["beta_z_discrete"], m_bh=m_bh)


#: (function, digest of the data, id(config)) -> (config, jitted closure), the most recent first
_PROGRAMS = OrderedDict()
_PROGRAMS_LOCK = threading.Lock()
_MAX_PROGRAMS = 8


def _digest(data):
    """A hash of the values in ``data`` (its arrays' bytes, shapes and types, and its other leaves)."""
    h = hashlib.blake2b(digest_size=16)
    for leaf in jax.tree.leaves(data):
        if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):  # numpy or jax arrays, numpy scalars
            values = numpy.asarray(leaf)
            h.update(f"{values.dtype.str}{values.shape}".encode())
            h.update(numpy.ascontiguousarray(values).tobytes())
        else:
            h.update(repr(leaf).encode())
    return h.hexdigest()


def _compiled_for(fn, params, data, config):
    """``fn(params, data, config)``, as one compiled program per data set and config when
    ``params`` are concrete.

    Run eagerly, the JAM code compiles hundreds of small programs, one per operation and
    shape (14 s for the first ``predict_ifu`` of a 12 x 12 map, against 2.4 s for one
    program, compiled with :mod:`dynamics.xla_options`); the data stay concrete numpy arrays inside the closure (a copy), so the JAM
    code's folding of symmetric points still applies.  The program is kept for data of
    the same values and the same ``config`` object (the :data:`_MAX_PROGRAMS` most recent),
    so repeated calls run it again without compiling (0.01 s).  Inside a traced function
    (``params`` or ``data`` hold tracers) ``fn`` is traced inline.
    """
    if holds_tracers((params, data)):
        return fn(params, data, config)
    key = (fn, _digest(data), id(config))
    with _PROGRAMS_LOCK:
        entry = _PROGRAMS.get(key)
        if entry is None or entry[0] is not config:  # an id reused by a new config
            frozen = jax.tree.map(lambda a: a.copy() if isinstance(a, numpy.ndarray) else a, data)
            entry = (config, compiled()(lambda p: fn(p, frozen, config)))
            _PROGRAMS[key] = entry
            while len(_PROGRAMS) > _MAX_PROGRAMS:
                _PROGRAMS.popitem(last=False)
        _PROGRAMS.move_to_end(key)
    return entry[1](params)


def _normal_logpdf(r, var):
    return -0.5 * (r * r / var + jnp.log(var) + _LOG_2PI)


def log_likelihood_parts(params, ifu, discrete, config):
    """``(log L_ifu, log L_discrete)`` (scalars; 0 for an absent data set)."""
    p = {**config.fixed, **params}
    ll_ifu = jnp.asarray(0.0)
    ll_disc = jnp.asarray(0.0)
    if ifu is not None:
        v_mod, vrms_mod = predict_ifu(p, ifu, config)
        ll_ifu = (jnp.sum(_normal_logpdf(ifu.v - v_mod, ifu.v_err**2))
                  + jnp.sum(_normal_logpdf(ifu.vrms - vrms_mod, ifu.vrms_err**2)))
    if discrete is not None:
        member, outlier = _mixture_terms(p, discrete, config)
        ll_disc = jnp.sum(member if outlier is None else jnp.logaddexp(member, outlier))
    return ll_ifu, ll_disc


def _mixture_terms(p, discrete, config):
    """Per star: log of (prior member probability x member density) and of the outlier term
    (None without a contamination term)."""
    vrms = predict_discrete(p, discrete, config)
    ll_mem = _normal_logpdf(discrete.v, vrms**2 + discrete.v_err**2)
    if config.outlier_sigma is None:
        return ll_mem, None
    ll_out = _normal_logpdf(discrete.v, config.outlier_sigma**2 + discrete.v_err**2)
    p_mem = jnp.asarray(discrete.p_member) * (1.0 - p["f_out"])
    return jnp.log(p_mem) + ll_mem, jnp.log1p(-p_mem) + ll_out


def membership_probability(params, discrete, config):
    """Posterior probability (given ``params``) that each discrete tracer is a member (1 without
    a contamination term)."""
    member, outlier = _mixture_terms({**config.fixed, **params}, discrete, config)
    if outlier is None:
        return jnp.ones_like(member)
    return jnp.exp(member - jnp.logaddexp(member, outlier))


def joint_model(ifu, discrete, config):
    """numpyro model: uniform priors (:func:`prior_bounds`), IFU and discrete likelihood factors.

    ``ifu`` and ``discrete`` (either may be None) hold concrete numpy arrays: bind them with
    ``functools.partial`` (they fix static grids), not as traced arguments.
    """
    bounds = prior_bounds(config, ifu is not None, discrete is not None)
    params = {name: numpyro.sample(name, dist.Uniform(lo, hi)) for name, (lo, hi) in bounds.items()}
    ll_ifu, ll_disc = log_likelihood_parts(params, ifu, discrete, config)
    if ifu is not None:
        numpyro.factor("log_likelihood_ifu", ll_ifu)
    if discrete is not None:
        numpyro.factor("log_likelihood_discrete", ll_disc)


def derived_masses(params, config, radii):
    """``name -> log10 M`` (Msun): total, stellar and dark mass within spheres of ``radii`` (kpc).

    Names ``log10_mass_total_10kpc`` etc. (radius formatted with ``%g``).  The black hole
    counts in the total.  Without a halo, the dark mass is absent.
    """
    p = {**config.fixed, **params}
    stars = config.tracer.scaled(p["ml"])
    halo = _halo(p, config)
    m_bh = 10.0 ** p["log10_m_bh"] if config.black_hole else 0.0
    out = {}
    for r in radii:
        tag = f"{float(r):g}kpc"
        m_star = stars.mass_in_sphere(float(r), p["inclination"])
        m_dark = 0.0 if halo is None else halo.enclosed_mass(jnp.asarray(float(r)))
        out[f"log10_mass_total_{tag}"] = jnp.log10(m_star + m_dark + m_bh)
        out[f"log10_mass_stars_{tag}"] = jnp.log10(m_star)
        if halo is not None:
            out[f"log10_mass_dark_{tag}"] = jnp.log10(m_dark)
    return out
