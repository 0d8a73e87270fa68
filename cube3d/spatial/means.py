"""Mean fields of the spatial priors: a constant, or a rotating disk's velocity field.

Coordinates are spaxel indices (y, x) of the map; parameters are named and bounded so
the hyperparameter optimiser can treat them like the kernel's.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

__all__ = ["constant_mean", "disk_velocity", "mean_parameters", "MEAN_FUNCTIONS", "mean_field"]


def constant_mean(params, yy, xx):
    """``c`` everywhere."""
    return params["c"] + 0.0 * yy


def disk_velocity(params, yy, xx):
    """Line-of-sight velocity of a thin rotating disk with an arctan rotation curve.

    ``V = v_sys + v_amp (2/pi) arctan(R / r_turn) cos(theta)`` (Courteau 1997, eq. 2,
    projected) with ``R`` the radius in the disk plane and ``theta`` the azimuth from the
    receding major axis: ``pa`` (radians) is the angle of the receding side from +y
    towards +x, ``q = cos(i)`` the axis ratio, (``y0``, ``x0``) the centre in spaxels.
    ``v_amp`` is the projected amplitude ``v_max sin(i)``.
    """
    dy, dx = yy - params["y0"], xx - params["x0"]
    c, s = jnp.cos(params["pa"]), jnp.sin(params["pa"])
    along = dy * c + dx * s  # along the receding major axis
    across = (-dy * s + dx * c) / params["q"]  # deprojected minor-axis offset
    r2 = along**2 + across**2
    r = jnp.sqrt(r2 + 1e-12)
    return params["v_sys"] + params["v_amp"] * (2.0 / jnp.pi) * jnp.arctan(r / params["r_turn"]) * along / r


#: ``GPConfig.v_mean`` name -> mean function ``f(params, yy, xx)``
MEAN_FUNCTIONS = {"constant": constant_mean, "disk": disk_velocity}


def mean_field(kind, params, yy, xx):
    """The mean ``kind`` (a key of :data:`MEAN_FUNCTIONS`) with ``params`` at (``yy``, ``xx``)."""
    return MEAN_FUNCTIONS[kind](params, yy, xx)


def mean_parameters(kind, y, w, shape):
    """Names, transforms, bounds and starting values of a mean's parameters.

    Returns a list of ``(name, transform, lo, hi, start)`` with transform ``"free"``,
    ``"linear"`` (bounded) or ``"log"`` (bounded, log-uniform); starts from the data
    ``y`` weighted by ``w`` (0 = missing).
    """
    obs = w > 0
    yo, wo = y[obs], w[obs]
    centre = float(np.sum(wo * yo) / np.sum(wo))
    if kind == "constant":
        return [("c", "free", None, None, centre)]
    ny, nx = shape
    spread = float(np.percentile(yo, 95) - np.percentile(yo, 5)) if yo.size > 2 else 1.0
    yy, xx = np.nonzero(obs)
    # starting PA from the weighted gradient direction of the velocity field
    a = np.c_[np.ones(yo.size), yy - yy.mean(), xx - xx.mean()]
    coef = np.linalg.lstsq(a * np.sqrt(wo)[:, None], yo * np.sqrt(wo), rcond=None)[0]
    pa0 = float(np.arctan2(coef[2], coef[1]))
    size = float(max(ny, nx))
    return [
        ("v_sys", "free", None, None, centre),
        ("v_amp", "log", 1e-3 * max(spread, 1.0), 10.0 * max(spread, 1.0), max(spread / 2, 1e-2)),
        ("r_turn", "log", 0.1, 10.0 * size, size / 8),
        ("pa", "free", None, None, pa0),
        ("q", "linear", 0.1, 1.0, 0.7),
        ("y0", "linear", -0.5, ny - 0.5, (ny - 1) / 2),
        ("x0", "linear", -0.5, nx - 0.5, (nx - 1) / 2),
    ]
