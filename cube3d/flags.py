"""The FLAG bitmask of the maps: what each bit means, and the one place that sets them.

FLAG 0 means: the spectrum was fitted, its moments, errors and chi^2 are finite, the
iteration converged (:attr:`cube3d.fit.FitResult.converged`), the data constrain the
LOSVD (every error below the range its parameter may take, and a chi^2 that is not
degenerate, i.e. not ~0 as for a featureless or noiseless spectrum), no kinematic
parameter sits on a fit bound, the S/N is above the requested minimum and above the
floor where a single spectrum's moments are unbiased, and outlier clipping kept most
pixels.  Every other case sets the bit below (several may be set at
once); :func:`spectrum_flags` is the only place that sets them.

====  =====  =====================================================================
bit   value  meaning
====  =====  =====================================================================
0     1      not fitted (no usable pixels, outside the S/N cut or the bins; BINID -1)
1     2      the fit did not converge within its iterations
2     4      non-finite moments, errors or chi2 returned
3     8      a kinematic parameter sits at its bound (e.g. sigma at its limit)
4     16     low S/N: below the requested minimum S/N
5     32     outlier clipping rejected more than ``CLIP_FLAG_FRACTION`` of the pixels
6     64     unconstrained: an error exceeds its parameter's range (V_ERR > v_range,
             SIGMA_ERR > sigma_max, h_m errors > h_bound) or reduced chi^2 < 1e-6
7     128    below the reliable S/N: median S/N per pixel under ``reliable_sn``
             (default :data:`RELIABLE_SN`), where one spectrum's fit falls into noise
             minima and its sigma is biased (table below): do not average such values;
             bin (``--target-sn``) or use the spatial prior (``--gp``) instead
====  =====  =====================================================================

Why an S/N floor and not a cut on the fit's own errors: at low S/N the error of sigma
scales with the fitted sigma, so keeping the spectra with small relative errors keeps
the ones whose sigma came out high and biases the average the other way (measured on
the mocks below).  The S/N is measured from the data, independently of the fit.

Bias of per-spectrum sigma (median fitted / true) against S/N per pixel, 50 mock
spectra per entry (8 MILES-HC stars, random mixes, 4750-5500 Angstrom, 1.25 Angstrom
pixels, ``python tests/benchmarks/bench_low_sn.py``)::

    S/N per pixel     2     3     5     7    10    15    25
    sigma  80 km/s  0.93  1.20  1.17  1.05  0.92  1.00  1.02
    sigma 150 km/s  0.66  1.14  0.92  1.01  1.02  0.97  1.00
    sigma 250 km/s  0.48  0.94  0.74  0.98  1.01  1.02  0.98
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "FLAG_NOT_FITTED",
    "FLAG_NOT_CONVERGED",
    "FLAG_NONFINITE",
    "FLAG_AT_BOUND",
    "FLAG_LOW_SNR",
    "FLAG_CLIPPED",
    "FLAG_UNCONSTRAINED",
    "FLAG_BELOW_RELIABLE_SN",
    "FLAG_BITS",
    "RELIABLE_SN",
    "CLIP_FLAG_FRACTION",
    "at_bound",
    "unconstrained",
    "spectrum_flags",
    "GP_TIERS_FITTING_SPECTRA",
    "flags_in_use",
]

FLAG_NOT_FITTED = 1
FLAG_NOT_CONVERGED = 2
FLAG_NONFINITE = 4
FLAG_AT_BOUND = 8
FLAG_LOW_SNR = 16
FLAG_CLIPPED = 32
FLAG_UNCONSTRAINED = 64
FLAG_BELOW_RELIABLE_SN = 128
#: median S/N per pixel below which one spectrum's moments are not to be trusted (table above)
RELIABLE_SN = 7.0
#: reduced chi^2 below this is degenerate (the model reproduces the data exactly)
DEGENERATE_CHI2 = 1e-6
#: fraction of a spectrum's usable pixels that clipping may reject before FLAG_CLIPPED is set
CLIP_FLAG_FRACTION = 0.1
#: value -> meaning of every FLAG bit (also written to the FLAG HDU header).
FLAG_BITS = {
    FLAG_NOT_FITTED: "not fitted (no usable pixels or not binned)",
    FLAG_NOT_CONVERGED: "fit did not converge",
    FLAG_NONFINITE: "non-finite moments, errors or chi2",
    FLAG_AT_BOUND: "kinematic parameter at its bound",
    FLAG_LOW_SNR: "S/N below the requested minimum",
    FLAG_CLIPPED: "many pixels rejected by clipping",
    FLAG_UNCONSTRAINED: "unconstrained (huge errors or degenerate chi2)",
    FLAG_BELOW_RELIABLE_SN: "S/N below the floor of unbiased moments",
}


def at_bound(result, config, velscale):
    """Spectra with a kinematic parameter at its fit bound (|V|, sigma or a shape parameter).

    Parameters
    ----------
    result : cube3d.fit.FitResult
    config : cube3d.fit.FitConfig
        Gives the bounds (``v_range``, ``sigma_max``, ``h_bound``, ``losvd``).
    velscale : float
        km/s per pixel (sigma's lower bound is 0.1 pixel).

    Returns
    -------
    numpy.ndarray of bool, (n_spec,)
        False for spectra whose fit failed (they are flagged as non-finite instead).
    """
    k_sig = result.param_names.index("SIGMA")
    sig = result.params[:, k_sig]
    flags = (sig <= 0.1 * velscale * (1 + 1e-6)) | (sig >= config.sigma_max * (1 - 1e-6))
    k_v = result.param_names.index("V")
    flags |= np.abs(result.params[:, k_v]) >= config.v_range * (1 - 1e-6)
    if config.losvd == "gauss_hermite":
        h = result.params[:, 2:]
        flags |= np.any(np.abs(h) >= config.h_bound * (1 - 1e-6), axis=1)
    else:
        from .losvd import sanders_evans_bounds  # JAX: only when needed

        lo, hi = (np.asarray(b, float) for b in sanders_evans_bounds())
        shape = result.params[:, 2:]
        span = hi - lo
        low_edge = lo + 1e-6 * span
        low_edge[0] = -np.inf  # A = 0 is the Gaussian limit, a natural value, not a bound hit
        flags |= np.any((shape <= low_edge) | (shape >= hi - 1e-6 * span), axis=1)
    return flags & result.ok


def unconstrained(result, config):
    """Spectra whose data do not constrain the LOSVD: an error wider than the range its
    parameter may take, or a degenerate (~0) reduced chi^2.

    Parameters
    ----------
    result : cube3d.fit.FitResult
    config : cube3d.fit.FitConfig

    Returns
    -------
    numpy.ndarray of bool, (n_spec,)
        False for failed fits (flagged as non-finite instead).
    """
    err = np.asarray(result.errors)
    ranges = np.full(err.shape[1], np.inf)
    ranges[0], ranges[1] = config.v_range, config.sigma_max
    if config.losvd == "gauss_hermite":
        ranges[2:] = config.h_bound
    else:
        from .losvd import sanders_evans_bounds  # JAX: only when needed

        lo, hi = (np.asarray(b, float) for b in sanders_evans_bounds())
        ranges[2:] = hi - lo
    with np.errstate(invalid="ignore"):
        wide = np.any(err > ranges[None, :], axis=1)
        degenerate = np.asarray(result.chi2) < DEGENERATE_CHI2
    return (wide | degenerate) & np.asarray(result.ok)


def spectrum_flags(result, config, velscale, snr, min_sn=0.0, reliable_sn=RELIABLE_SN):
    """The FLAG bits of every fitted spectrum (the rule of the module docstring).

    Parameters
    ----------
    result : cube3d.fit.FitResult
    config : cube3d.fit.FitConfig
    velscale : float
        km/s per pixel.
    snr : array (n_spec,)
        Median S/N per pixel of each spectrum.
    min_sn : float
        Spectra below this S/N get FLAG_LOW_SNR.
    reliable_sn : float
        Spectra below this S/N get FLAG_BELOW_RELIABLE_SN (0 sets it nowhere).

    Returns
    -------
    numpy.ndarray of int32, (n_spec,)
    """
    ok = np.asarray(result.ok)
    flags = np.zeros(ok.shape, dtype=np.int32)
    flags |= np.where(ok, 0, FLAG_NONFINITE).astype(np.int32)
    flags |= np.where(ok & ~np.asarray(result.converged), FLAG_NOT_CONVERGED, 0).astype(np.int32)
    flags |= np.where(at_bound(result, config, velscale), FLAG_AT_BOUND, 0).astype(np.int32)
    flags |= np.where(np.asarray(snr) < min_sn, FLAG_LOW_SNR, 0).astype(np.int32)
    flags |= np.where(ok & (np.asarray(snr) < reliable_sn), FLAG_BELOW_RELIABLE_SN, 0).astype(np.int32)
    flags |= np.where(np.asarray(result.clipped_fraction) > CLIP_FLAG_FRACTION, FLAG_CLIPPED, 0).astype(np.int32)
    flags |= np.where(unconstrained(result, config), FLAG_UNCONSTRAINED, 0).astype(np.int32)
    return flags


#: GP tiers whose values come from fitting the spectra together with the prior
#: (:mod:`cube3d.spatial.joint`), not from the per-spaxel fits: the S/N floor of one
#: spectrum's fit (FLAG 128) does not apply to them.  ``two_step`` and ``nuts`` take the
#: per-spaxel estimates as their data and inherit their bias below the floor (README,
#: "GP tiers at low S/N": two_step's SIGMA coverage 0.00 at S/N 2-5 on mocks).
GP_TIERS_FITTING_SPECTRA = ("joint_map",)


def flags_in_use(flag, gp_tier=None):
    """The FLAG bits that apply to a maps file's values: ``flag`` with
    :data:`FLAG_BELOW_RELIABLE_SN` cleared in maps from a GP tier that fits the spectra
    themselves (:data:`GP_TIERS_FITTING_SPECTRA`, named by the header's ``gp_tier``).

    Parameters
    ----------
    flag : array_like of int
        The FLAG map.
    gp_tier : str or None
        The maps' GP tier (``maps.meta.get("gp_tier")``); None for per-spaxel maps.

    Returns
    -------
    numpy.ndarray of int
    """
    flag = np.asarray(flag)
    if gp_tier in GP_TIERS_FITTING_SPECTRA:
        return flag & ~FLAG_BELOW_RELIABLE_SN
    return flag
