"""Inputs of ``cube3d dynamics``: maps, MGE and star tables, sky positions in the galaxy frame.

Sky offsets from the galaxy centre (east, north; astropy's ``spherical_offsets_to``) are
rotated by the position angle ``PA`` of the projected major axis (degrees east of north,
towards the receding side) into ``x`` along the major axis and ``y`` along the minor axis::

    x = east sin(PA) + north cos(PA),     y = -east cos(PA) + north sin(PA),

and converted to kpc with the distance (1 arcsec = ``D[Mpc] pi / 0.648`` pc).  The MGE
follows jampy's interchange convention: ``surf`` (Lsun/pc^2), ``sigma`` (arcsec), ``q``
(observed axis ratio).  Every problem with an input raises :class:`cube3d.errors.InputError`
with one line naming the file, the HDU or column, or the option.
"""

from __future__ import annotations

from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.table import Table
from astropy.wcs.utils import proj_plane_pixel_scales

from dynamics.joint_model import DiscreteData, IfuData
from dynamics.mge import ARCSEC_PC_PER_MPC, MGE

from .errors import InputError
from .flags import flags_in_use
from .maps import read_maps

__all__ = ["kpc_per_arcsec", "check_frame", "sky_to_galaxy", "read_table", "read_mge", "read_stars",
           "read_ifu", "MAPS_REQUIRED"]

#: Maps that ``cube3d dynamics`` needs in a maps file.
MAPS_REQUIRED = ("V", "V_ERR", "SIGMA", "SIGMA_ERR", "BINID", "FLAG")


def kpc_per_arcsec(distance_mpc):
    """kpc per arcsec at ``distance_mpc``."""
    return distance_mpc * ARCSEC_PC_PER_MPC * 1e-3


def check_frame(centre, pa, distance):
    """Validate ``--centre RA DEC``, ``--pa`` and ``--distance``; return floats."""
    ra, dec = (float(c) for c in centre)
    if not (np.isfinite(ra) and np.isfinite(dec) and 0.0 <= ra < 360.0 and -90.0 <= dec <= 90.0):
        raise InputError(f"--centre: RA must lie in [0, 360) and Dec in [-90, 90] degrees, got {ra} {dec}")
    pa = float(pa)
    if not (np.isfinite(pa) and -360.0 <= pa <= 360.0):
        raise InputError(f"--pa: position angle must be finite and within [-360, 360] degrees, got {pa}")
    distance = float(distance)
    if not (np.isfinite(distance) and distance > 0):
        raise InputError(f"--distance: must be a finite distance > 0 Mpc, got {distance}")
    return ra, dec, pa, distance


def sky_to_galaxy(ra, dec, centre, pa, distance):
    """Galaxy-frame positions (kpc) of sky positions ``ra, dec`` (degrees); see the module notes."""
    c0 = SkyCoord(centre[0] * u.deg, centre[1] * u.deg)
    east, north = c0.spherical_offsets_to(SkyCoord(np.asarray(ra) * u.deg, np.asarray(dec) * u.deg))
    e, n = east.to_value(u.arcsec), north.to_value(u.arcsec)
    t = np.radians(pa)
    scale = kpc_per_arcsec(distance)
    return (e * np.sin(t) + n * np.cos(t)) * scale, (-e * np.cos(t) + n * np.sin(t)) * scale


def read_table(path, what):
    """An astropy Table from an ECSV or CSV file (by suffix; ECSV otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} {path}: no such file")
    fmt = "ascii.csv" if path.suffix.lower() == ".csv" else "ascii.ecsv"
    try:
        return Table.read(path, format=fmt)
    except Exception as exc:  # astropy raises many types for malformed tables
        text = " ".join(str(exc).split())
        raise InputError(f"{what} {path}: not a readable {fmt[6:].upper()} table ({type(exc).__name__}: "
                         f"{text[:200]})") from None


def _column(table, name, path, unit=None):
    """A float column, converted to ``unit`` when the table gives one; checked finite."""
    if name not in table.colnames:
        raise InputError(f"{path}: missing column {name!r} (columns: {', '.join(table.colnames)})")
    col = table[name]
    blank = np.ma.getmaskarray(col) if getattr(col, "mask", None) is not None else np.zeros(len(col), bool)
    if blank.any():
        raise InputError(f"{path}: column {name!r} has {int(blank.sum())} blank value(s) "
                         f"(first at row {int(np.flatnonzero(blank)[0])})")
    if unit is not None and getattr(col, "unit", None) is not None:
        try:
            values = (col.data * u.Unit(col.unit)).to_value(unit)
        except (ValueError, u.UnitsError, TypeError) as exc:
            raise InputError(f"{path}: column {name!r} has unit {col.unit!s} that does not convert to {unit} "
                             f"({exc})") from None
    else:
        try:
            values = np.asarray(col, dtype=float)
        except (TypeError, ValueError):
            raise InputError(f"{path}: column {name!r} is not numeric") from None
    values = np.ma.filled(np.ma.asarray(values, dtype=float), np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        raise InputError(f"{path}: column {name!r} has {int(bad.sum())} non-finite value(s) "
                         f"(first at row {int(np.flatnonzero(bad)[0])})")
    return values


def read_mge(path, distance):
    """The tracer MGE (kpc units) from a table with columns ``surf`` (Lsun/pc^2), ``sigma`` (arcsec), ``q``."""
    table = read_table(path, "--mge")
    surf = _column(table, "surf", path, u.Lsun / u.pc**2)
    sigma = _column(table, "sigma", path, u.arcsec)
    q = _column(table, "q", path)
    if surf.size == 0:
        raise InputError(f"{path}: the MGE table has no rows")
    for name, values, ok, what in (("surf", surf, surf > 0, "> 0"), ("sigma", sigma, sigma > 0, "> 0"),
                                   ("q", q, (q > 0) & (q <= 1), "in (0, 1]")):
        if not np.all(ok):
            raise InputError(f"{path}: column {name!r} must be {what}, got {values[~ok][0]:g} "
                             f"at row {int(np.flatnonzero(~ok)[0])}")
    return MGE.from_observed(surf, sigma, q, distance)


def read_stars(path, centre, pa, distance):
    """Discrete tracers (:class:`dynamics.joint_model.DiscreteData`, kpc and km/s) from a table
    with columns ``ra``, ``dec`` (deg), ``v``, ``v_err`` (km/s) and optionally ``p_member``."""
    table = read_table(path, "--stars")
    ra = _column(table, "ra", path, u.deg)
    dec = _column(table, "dec", path, u.deg)
    v = _column(table, "v", path, u.km / u.s)
    v_err = _column(table, "v_err", path, u.km / u.s)
    if v.size < 3:
        raise InputError(f"{path}: need at least 3 stars, got {v.size}")
    if np.any(v_err <= 0):
        raise InputError(f"{path}: column 'v_err' must be > 0 km/s, got {v_err[v_err <= 0][0]:g} "
                         f"at row {int(np.flatnonzero(v_err <= 0)[0])}")
    if np.any((ra < 0) | (ra >= 360)):
        raise InputError(f"{path}: column 'ra' must lie in [0, 360) degrees")
    if np.any((dec < -90) | (dec > 90)):
        raise InputError(f"{path}: column 'dec' must lie in [-90, 90] degrees")
    if "p_member" in table.colnames:
        p = _column(table, "p_member", path)
        if np.any((p <= 0) | (p > 1)):
            raise InputError(f"{path}: column 'p_member' must lie in (0, 1]")
    else:
        p = np.ones_like(v)
    x, y = sky_to_galaxy(ra, dec, centre, pa, distance)
    if np.any(np.hypot(x, y) == 0):
        raise InputError(f"{path}: a star lies exactly at the centre (the Plummer fit needs R > 0)")
    return DiscreteData(x=x, y=y, v=v, v_err=v_err, p_member=p)


def _psf_from_meta(meta):
    for key in ("psf_sigma_arcsec", "psf_sigma"):
        if key in meta:
            return float(meta[key])
    if "psf_fwhm_arcsec" in meta:
        return float(meta["psf_fwhm_arcsec"]) / 2.354820045030949
    return None


def read_ifu(path, centre, pa, distance, psf_sigma=None, tracer=None):
    """IFU data (:class:`dynamics.joint_model.IfuData`) from a cube3d maps file.

    Spaxels with ``FLAG != 0``, ``BINID < 0`` or non-finite values are dropped (in maps
    from the ``joint_map`` spatial prior, ``FLAG_BELOW_RELIABLE_SN`` is ignored: it concerns
    the per-spaxel fits, not values fitted to the spectra with the prior; the ``two_step``
    and ``nuts`` tiers take the per-spaxel fits as data and keep it,
    :func:`cube3d.flags.flags_in_use`); bins are renumbered.  Weights within bins: the ``FLUX`` map when present, else the tracer MGE.
    ``psf_sigma`` (arcsec) defaults to the header's ``psf_sigma_arcsec`` (or ``psf_fwhm_arcsec``).

    Returns
    -------
    data : IfuData
    info : dict
        ``shape``, ``index`` (flat spaxel indices used), ``binid`` (renumbered, per used spaxel),
        ``pixel_arcsec``, ``psf_sigma_arcsec``, ``n_dropped``.
    """
    maps = read_maps(path)
    missing = [m for m in MAPS_REQUIRED if m not in maps.maps]
    if missing:
        raise InputError(f"{path}: missing map HDU(s) {', '.join(missing)} (a cube3d maps file has "
                         f"{', '.join(MAPS_REQUIRED)})")
    if psf_sigma is None:
        psf_sigma = _psf_from_meta(maps.meta)
        if psf_sigma is None:
            raise InputError(f"{path}: the header gives no PSF (HIERARCH CUBE3D PSF_SIGMA_ARCSEC); "
                             "pass --psf-sigma ARCSEC (0 for none)")
    if not (np.isfinite(psf_sigma) and psf_sigma >= 0):
        raise InputError(f"--psf-sigma: must be a finite dispersion >= 0 arcsec, got {psf_sigma}")
    ny, nx = maps.shape
    scales = proj_plane_pixel_scales(maps.wcs) * 3600.0
    if not np.all(np.isfinite(scales)) or scales.min() <= 0:
        raise InputError(f"{path}[V]: the WCS gives no pixel scale")
    pixel = float(np.sqrt(scales[0] * scales[1]))
    m = maps.maps
    flag, binid = m["FLAG"].reshape(-1), m["BINID"].reshape(-1)
    V, Ve, S, Se = (m[k].reshape(-1) for k in ("V", "V_ERR", "SIGMA", "SIGMA_ERR"))
    # joint_map's V, SIGMA are not one spectrum's, so its S/N floor does not apply; two_step's and
    # nuts's take the per-spaxel fits as data and keep it (cube3d.flags.flags_in_use)
    flag = flags_in_use(flag, maps.meta.get("gp_tier"))
    good = (flag == 0) & (binid >= 0) & np.isfinite(V) & np.isfinite(S) & np.isfinite(Ve) & np.isfinite(Se)
    good &= (Ve > 0) & (Se > 0)
    if not good.any():
        raise InputError(f"{path}: no spaxel has FLAG == 0, BINID >= 0 and finite V, SIGMA with errors > 0")
    yy, xx = np.unravel_index(np.arange(ny * nx), (ny, nx))
    world = maps.wcs.pixel_to_world(xx, yy)
    ra, dec = world.ra.deg, world.dec.deg
    cpix = maps.wcs.world_to_pixel(SkyCoord(centre[0] * u.deg, centre[1] * u.deg))
    if not (-0.5 <= float(cpix[0]) <= nx - 0.5 and -0.5 <= float(cpix[1]) <= ny - 0.5):
        raise InputError(f"--centre {centre[0]} {centre[1]}: outside the map of {path} "
                         f"(pixel {float(cpix[0]):.1f}, {float(cpix[1]):.1f} of {nx} x {ny})")
    x, y = sky_to_galaxy(ra, dec, centre, pa, distance)
    idx = np.flatnonzero(good)
    used_bins, new_bin = np.unique(binid[idx], return_inverse=True)
    first = np.array([idx[np.flatnonzero(new_bin == b)[0]] for b in range(used_bins.size)])
    vrms = np.hypot(V[first], S[first])
    vrms_err = np.sqrt((V[first] * Ve[first]) ** 2 + (S[first] * Se[first]) ** 2) / vrms
    if "FLUX" in m:
        weight = np.asarray(m["FLUX"], dtype=float).reshape(-1)[idx]
        if not (np.all(np.isfinite(weight)) and np.all(weight > 0)):
            raise InputError(f"{path}[FLUX]: bin weights must be finite and > 0 on the used spaxels")
    elif tracer is not None:
        weight = np.asarray(tracer.projected(x[idx], y[idx]))
    else:
        weight = np.ones(idx.size)
    kpc = kpc_per_arcsec(distance)
    data = IfuData(x=x[idx], y=y[idx], binid=new_bin.astype(int), weight=weight, v=V[first], v_err=Ve[first],
                   vrms=vrms, vrms_err=vrms_err, psf_sigma=(float(psf_sigma) * kpc,), psf_weight=(1.0,),
                   pixel_size=pixel * kpc)
    info = dict(shape=(ny, nx), index=idx, binid=new_bin, pixel_arcsec=pixel, psf_sigma_arcsec=float(psf_sigma),
                n_dropped=int((~good).sum()))
    return data, info
