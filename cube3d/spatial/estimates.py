"""The per-spaxel fit seen by the spatial stage: values, errors and a usable-mask on the grid."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import InputError
from ..flags import at_bound, unconstrained

__all__ = ["SpaxelEstimates", "spaxel_estimates", "gp_estimates"]


class SpaxelEstimates(NamedTuple):
    """Per-spaxel estimates on the (ny, nx) grid.

    values, errors : dict of str -> ndarray (ny, nx)
        Fitted parameters (``"V"``, ``"SIGMA"`` in km/s, ``"H3"``...) and 1-sigma errors;
        NaN where no spectrum was fitted.
    ok : ndarray of bool (ny, nx)
        Spaxels the GP may use as data (it still predicts everywhere).
    """

    values: dict
    errors: dict
    ok: np.ndarray


def spaxel_estimates(prepared, fit_result, fit_config=None) -> SpaxelEstimates:
    """Per-spaxel values, errors and a usable-mask on the grid from an unbinned fit.

    Spaxels that were not fitted, failed, sit on a fit bound or are unconstrained by their
    data (their Laplace error is meaningless there; both need ``fit_config``;
    :mod:`cube3d.flags`) are unobserved for the GP; it still predicts there.
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
        ok &= ~np.asarray(at_bound(fit_result, fit_config, prepared.velscale))[idx]
        ok &= ~np.asarray(unconstrained(fit_result, fit_config))[idx]
    return SpaxelEstimates(values, errors, ok)


def gp_estimates(prepared, fit_result, fit_config, gp_config) -> SpaxelEstimates:
    """:func:`spaxel_estimates` with spaxels below ``gp_config.min_sn`` unobserved: the data
    of every tier."""
    values, errors, ok = spaxel_estimates(prepared, fit_result, fit_config)
    snr = np.full(ok.shape, np.nan)
    bin_id = np.asarray(prepared.bin_id)
    snr[bin_id >= 0] = np.asarray(prepared.snr)[bin_id[bin_id >= 0]]
    ok &= ~(snr < gp_config.min_sn)
    return SpaxelEstimates(values, errors, ok)
