"""Connect the spatial stage to the per-spaxel fit and to the maps file."""

from __future__ import annotations

from ..errors import InputError
from ..maps import KinematicMaps
from .config import GPConfig, validate_gp_config
from .estimates import spaxel_estimates
from .joint import gp_joint_map
from .nuts import gp_nuts
from .twostep import GPResult, gp_two_step

__all__ = ["run_gp", "gp_maps", "spaxel_estimates", "TIER_FUNCTIONS"]


#: tier name -> function ``(prepared, fit_result, fit_config, gp_config, log=None) -> GPResult``
TIER_FUNCTIONS = {"two_step": gp_two_step, "joint_map": gp_joint_map, "nuts": gp_nuts}


def run_gp(prepared, fit_result, fit_config, gp_config: GPConfig = GPConfig(), log=None) -> GPResult:
    """GP posterior maps of the kinematic fields, by the tier ``gp_config.tier``.

    Every tier takes the same arguments (:data:`TIER_FUNCTIONS`) and sees the per-spaxel
    estimates of :func:`cube3d.spatial.estimates.gp_estimates` (spaxels not fitted, failed,
    on a fit bound or below ``gp_config.min_sn`` are unobserved).

    Parameters
    ----------
    prepared : cube3d.prepare.PreparedData
        Unbinned spectra (one per spaxel).
    fit_result : cube3d.fit.FitResult
        The per-spaxel fit (start point and tier-(a) data).
    fit_config : cube3d.fit.FitConfig
    gp_config : GPConfig
    log : callable, optional
        Receives progress lines.

    Returns
    -------
    GPResult
    """
    validate_gp_config(gp_config)
    return TIER_FUNCTIONS[gp_config.tier](prepared, fit_result, fit_config, gp_config, log=log)


def gp_maps(maps: KinematicMaps, gp: GPResult) -> KinematicMaps:
    """The maps file with GP posterior means and standard deviations as the main maps.

    For each field ``NAME`` the GP posterior mean becomes ``NAME`` and its standard
    deviation ``NAME_ERR``; the per-spaxel estimates move to ``NAME_SPAXEL`` and
    ``NAME_SPAXEL_ERR``.  The hyperparameters go to the header (``gp_*`` provenance).
    """
    out, units = {}, {}
    for name, arr in maps.maps.items():
        out[name], units[name] = arr, maps.units[name]
    for name, field in gp.fields.items():
        if name not in maps.maps:
            raise InputError(f"gp field {name}: not among the maps {list(maps.maps)}")
        unit = maps.units[name]
        for suffix in ("", "_ERR"):
            out[f"{name}_SPAXEL{suffix}"], units[f"{name}_SPAXEL{suffix}"] = maps.maps[f"{name}{suffix}"], unit
        out[name], out[f"{name}_ERR"] = field.mean, field.std
    meta = dict(maps.meta)
    meta.update(gp.header_meta())
    return KinematicMaps(maps=out, units=units, wcs=maps.wcs, meta=meta, spectra=maps.spectra)
