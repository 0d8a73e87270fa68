"""Connect the spatial stage to the per-spaxel fit and to the maps file."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..maps import KinematicMaps
from .config import GPConfig, validate_gp_config
from .twostep import GPResult, gp_two_step

__all__ = ["run_gp", "gp_maps", "spaxel_estimates"]


def spaxel_estimates(prepared, fit_result, fit_config=None):
    """Per-spaxel values, errors and a usable-mask on the grid from an unbinned fit.

    Spaxels that were not fitted, failed, or sit on a fit bound (their Laplace error is
    meaningless there) are unobserved for the GP; it still predicts there.
    """
    bin_id = np.asarray(prepared.bin_id)
    fitted = bin_id >= 0
    if np.any(np.bincount(bin_id[fitted]) > 1):
        raise InputError("gp: the spatial prior needs one spectrum per spaxel; fit without Voronoi binning (no target_sn)")
    idx = np.where(fitted, bin_id, 0)
    values, errors = {}, {}
    for k, name in enumerate(fit_result.param_names):
        values[name] = np.where(fitted, np.asarray(fit_result.params)[idx, k], np.nan)
        errors[name] = np.where(fitted, np.asarray(fit_result.errors)[idx, k], np.nan)
    ok = np.asarray(fit_result.ok)[idx] & fitted
    if fit_config is not None:
        from ..pipeline import _at_bound

        ok &= ~np.asarray(_at_bound(fit_result, fit_config, prepared.velscale))[idx]
    return values, errors, ok


def run_gp(prepared, fit_result, fit_config, gp_config: GPConfig = GPConfig(), log=None):
    """GP posterior maps of the kinematic fields, by the tier ``gp_config.tier``.

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
    values, errors, ok = spaxel_estimates(prepared, fit_result, fit_config)
    snr = np.full(ok.shape, np.nan)
    bin_id = np.asarray(prepared.bin_id)
    snr[bin_id >= 0] = np.asarray(prepared.snr)[bin_id[bin_id >= 0]]
    ok &= ~(snr < gp_config.min_snr)
    if gp_config.tier == "two_step":
        return gp_two_step(values, errors, ok, gp_config)
    if gp_config.tier == "joint_map":
        from .joint import gp_joint_map

        return gp_joint_map(prepared, fit_result, fit_config, gp_config, values, errors, ok, log=log)
    from .nuts import gp_nuts

    return gp_nuts(values, errors, ok, gp_config)


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
