"""Mock data for the joint model: IFU maps and discrete tracers with known truth.

The mocks take the model values on a path independent of the likelihood's: V_rms directly
at every (rotated) spaxel and star with :func:`dynamics.jam_vrms` (point by point, dense
quadrature, no product grid or interpolation), first moments with dense line-of-sight,
PSF-grid and table rules; positions of discrete tracers are drawn from a projected
Plummer law (``P(<R) = R^2 / (R^2 + a^2)``, inverted exactly) and their velocities from
Gaussians of the model's V_rms, plus a fraction of contaminants from a broad Gaussian.

Units: kpc, km/s, Msun, degrees.
"""

from typing import NamedTuple

import jax
import numpy

from .jam import JamSettings, jam_velocity, jam_vrms
from .joint_model import DiscreteData, IfuData, build_mass

__all__ = ["REFERENCE_SETTINGS", "mock_ifu", "mock_discrete", "plummer_positions", "DiscreteMock"]

#: Dense settings for mock truths (V_rms ~1e-12, first moments ~1e-5 of max V).
REFERENCE_SETTINGS = JamSettings(quad=(12, 8), los=(12, 12), psf_step=0.5, table=256)


def mock_ifu(key, params, config, *, n_side=20, pixel_size=0.1, angle=0.0, psf_sigma=0.0, v_err=5.0,
             vrms_err=5.0, positions=None, settings=REFERENCE_SETTINGS):
    """A square IFU map of ``n_side^2`` spaxels (one bin each) with Gaussian noise.

    Parameters
    ----------
    key : jax random key
    params : dict
        True parameters of :mod:`dynamics.joint_model` (``ml``, ``inclination``, ``beta_z``,
        ``kappa``, halo and black-hole parameters as the config asks).
    config : JointConfig
        Mass model and tracer.
    n_side : int
    pixel_size : float
        Spaxel side (kpc).
    angle : float
        Angle (degrees) between the grid's rows and the galaxy's major axis.
    psf_sigma : float
        Gaussian PSF dispersion (kpc).
    v_err, vrms_err : float
        Noise of V and V_rms (km/s).
    positions : (x, y) or None
        Spaxel centres (kpc, galaxy frame) replacing the ``n_side`` grid.

    Returns
    -------
    data : IfuData
    truth : (v, vrms) noiseless model per spaxel
    """
    g = (numpy.arange(n_side) - (n_side - 1) / 2.0) * pixel_size
    X, Y = (a.reshape(-1) for a in numpy.meshgrid(g, g))
    t = numpy.radians(angle)
    x, y = X * numpy.cos(t) + Y * numpy.sin(t), -X * numpy.sin(t) + Y * numpy.cos(t)
    if positions is not None:
        x, y = (numpy.asarray(c, dtype=float).reshape(-1) for c in positions)
    p = {**config.fixed, **params}
    mass, m_bh = build_mass(p, config)
    kw = dict(inclination=p["inclination"], beta=p["beta_z"], m_bh=m_bh, psf_sigma=psf_sigma,
              pixel_size=pixel_size, settings=settings)
    vrms = numpy.asarray(jam_vrms(x, y, config.tracer, mass, **kw))
    vel = numpy.asarray(jam_velocity(x, y, config.tracer, mass, kappa=p["kappa"], **kw))
    k1, k2 = jax.random.split(key)
    n = x.size
    v_obs = vel + v_err * numpy.asarray(jax.random.normal(k1, (n,)))
    vrms_obs = vrms + vrms_err * numpy.asarray(jax.random.normal(k2, (n,)))
    data = IfuData(x=x, y=y, binid=numpy.arange(n), weight=numpy.ones(n), v=v_obs, v_err=numpy.full(n, v_err),
                   vrms=vrms_obs, vrms_err=numpy.full(n, vrms_err), psf_sigma=(float(psf_sigma),),
                   psf_weight=(1.0,), pixel_size=float(pixel_size))
    return data, (vel, vrms)


def plummer_positions(key, n, a, r_max):
    """Sky positions (kpc) of ``n`` tracers of a projected Plummer law of scale ``a``, within ``r_max``."""
    k1, k2 = jax.random.split(key)
    u = numpy.asarray(jax.random.uniform(k1, (n,))) * r_max**2 / (r_max**2 + a**2)
    R = a * numpy.sqrt(u / (1.0 - u))
    phi = numpy.asarray(jax.random.uniform(k2, (n,), minval=0.0, maxval=2.0 * numpy.pi))
    return R * numpy.cos(phi), R * numpy.sin(phi)


class DiscreteMock(NamedTuple):
    data: DiscreteData
    member: numpy.ndarray
    vrms_true: numpy.ndarray


def mock_discrete(key, params, config, *, n=300, a=5.0, r_max=20.0, v_err=20.0, outlier_fraction=0.0,
                  outlier_sigma=600.0, settings=REFERENCE_SETTINGS):
    """Discrete tracers of a projected Plummer law moving in the model's potential.

    Members' velocities are Gaussian with the model's V_rms of ``config.discrete_tracer``
    (no rotation) at their positions; a fraction ``outlier_fraction`` are contaminants,
    Gaussian of dispersion ``outlier_sigma``; every velocity gets a Gaussian error ``v_err``.
    """
    k_pos, k_mem, k_v, k_e = jax.random.split(key, 4)
    x, y = plummer_positions(k_pos, n, a, r_max)
    p = {**config.fixed, **params}
    mass, m_bh = build_mass(p, config)
    vrms = numpy.asarray(jam_vrms(x, y, config.discrete_tracer, mass, inclination=p["inclination"],
                                  beta=p["beta_z_discrete"], m_bh=m_bh, settings=settings))
    member = numpy.asarray(jax.random.uniform(k_mem, (n,))) >= outlier_fraction
    scale = numpy.where(member, vrms, outlier_sigma)
    v = scale * numpy.asarray(jax.random.normal(k_v, (n,))) + v_err * numpy.asarray(jax.random.normal(k_e, (n,)))
    data = DiscreteData(x=x, y=y, v=v, v_err=numpy.full(n, float(v_err)), p_member=numpy.ones(n))
    return DiscreteMock(data, member, vrms)

