"""Input files for ``cube3d dynamics`` made from a mock with known truth.

A maps FITS file (cube3d's format, with a TAN WCS whose rows are turned by the position angle),
an MGE table and a discrete-tracer table, all from :mod:`dynamics.joint_mocks` (JAM at dense
settings, with noise).  Used by the tests, the benchmark and for trying the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import astropy.units as u
import jax
import numpy as np
from astropy.table import Table
from astropy.wcs import WCS

from dynamics.joint_model import JointConfig
from dynamics.joint_mocks import mock_discrete, mock_ifu
from dynamics.mge import MGE
from dynamics.tracer_density import plummer_mge

from ..dynamics_io import kpc_per_arcsec, sky_to_galaxy
from ..maps import KinematicMaps, write_maps

__all__ = ["MockFiles", "MOCK_MGE", "MOCK_TRUTH", "write_dynamics_mock"]

#: A 6-Gaussian MGE (surf Lsun/pc^2, sigma arcsec, q) of an early-type galaxy.
MOCK_MGE = (np.array([2e4, 8e3, 3e3, 1e3, 250.0, 40.0]), np.geomspace(0.3, 40.0, 6), np.linspace(0.85, 0.7, 6))
#: True parameters of the mocks (NFW halo, no black hole).
MOCK_TRUTH = dict(ml=3.0, inclination=60.0, beta_z=0.1, kappa=0.8, log10_m200=12.5, concentration=8.0,
                  beta_z_discrete=0.0, f_out=0.05)


class MockFiles(NamedTuple):
    maps: Path
    mge: Path
    stars: Path
    centre: tuple
    pa: float
    distance: float
    psf_sigma: float
    truth: dict


def write_dynamics_mock(folder, *, n_side=12, pixel_arcsec=1.0, psf_sigma_arcsec=0.8, n_stars=100, distance=20.0,
                        pa=40.0, seed=0, stars_scale=5.0, outlier_fraction=0.05, truth=None):
    """Write ``maps.fits``, ``mge.ecsv`` and ``stars.ecsv`` of a mock into ``folder``; return :class:`MockFiles`.

    The map's pixel grid is aligned with north; the galaxy's major axis lies at ``pa``, so the
    spaxels are at ``pa`` to the galaxy's axes.
    """
    folder = Path(folder)
    truth = dict(MOCK_TRUTH if truth is None else truth)
    surf, sigma, q = MOCK_MGE
    tracer = MGE.from_observed(surf, sigma, q, distance)
    kpc = kpc_per_arcsec(distance)
    config = JointConfig(tracer=tracer, halo="nfw", discrete_tracer=plummer_mge(stars_scale), outlier_sigma=600.0)
    centre = (150.0, 2.0)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = list(centre)
    wcs.wcs.crpix = [(n_side + 1) / 2.0, (n_side + 1) / 2.0]
    wcs.wcs.cdelt = [-pixel_arcsec / 3600.0, pixel_arcsec / 3600.0]
    wcs.wcs.cunit = ["deg", "deg"]
    yy, xx = np.unravel_index(np.arange(n_side * n_side), (n_side, n_side))
    world = wcs.pixel_to_world(xx, yy)
    x, y = sky_to_galaxy(world.ra.deg, world.dec.deg, centre, pa, distance)
    k_ifu, k_stars = jax.random.split(jax.random.PRNGKey(seed))
    # mock_ifu lays a grid itself; here the spaxels are the WCS's, so pass them by rotating back
    ifu, (v_true, vrms_true) = _mock_at(k_ifu, truth, config, x, y, pixel_arcsec * kpc, psf_sigma_arcsec * kpc)
    v_err, s_err = np.full(x.size, 5.0), np.full(x.size, 6.0)
    sigma_obs = np.sqrt(np.maximum(ifu.vrms**2 - ifu.v**2, 1.0))
    maps = {"V": ifu.v.reshape(n_side, n_side), "V_ERR": v_err.reshape(n_side, n_side),
            "SIGMA": sigma_obs.reshape(n_side, n_side), "SIGMA_ERR": s_err.reshape(n_side, n_side),
            "BINID": np.arange(x.size).reshape(n_side, n_side), "FLAG": np.zeros((n_side, n_side), int)}
    km = KinematicMaps(maps=maps, units={}, wcs=wcs, meta={"psf_sigma_arcsec": psf_sigma_arcsec})
    write_maps(km, folder / "maps.fits", overwrite=True)
    Table(dict(surf=surf * u.Lsun / u.pc**2, sigma=sigma * u.arcsec, q=q)).write(folder / "mge.ecsv", overwrite=True)
    dm = mock_discrete(k_stars, truth, config, n=n_stars, a=stars_scale, r_max=4.0 * stars_scale,
                       outlier_fraction=outlier_fraction, outlier_sigma=600.0)
    ra, dec = _galaxy_to_sky(dm.data.x, dm.data.y, centre, pa, distance)
    Table(dict(ra=ra * u.deg, dec=dec * u.deg, v=dm.data.v * u.km / u.s, v_err=dm.data.v_err * u.km / u.s)).write(
        folder / "stars.ecsv", overwrite=True)
    return MockFiles(folder / "maps.fits", folder / "mge.ecsv", folder / "stars.ecsv", centre, pa, distance,
                     psf_sigma_arcsec, truth)


def _mock_at(key, truth, config, x, y, pixel, psf):
    """:func:`dynamics.joint_mocks.mock_ifu` at given spaxel centres (kpc, galaxy frame)."""
    data, (v, vrms) = mock_ifu(key, truth, config, n_side=1, pixel_size=pixel, psf_sigma=psf, v_err=5.0,
                               vrms_err=6.0, positions=(x, y))
    return data, (v, vrms)


def _galaxy_to_sky(x, y, centre, pa, distance):
    """Inverse of :func:`cube3d.dynamics_io.sky_to_galaxy` (degrees)."""
    from astropy.coordinates import SkyCoord

    t = np.radians(pa)
    scale = kpc_per_arcsec(distance)
    east = (x * np.sin(t) - y * np.cos(t)) / scale
    north = (x * np.cos(t) + y * np.sin(t)) / scale
    c = SkyCoord(centre[0] * u.deg, centre[1] * u.deg).spherical_offsets_by(east * u.arcsec, north * u.arcsec)
    return c.ra.deg, c.dec.deg
