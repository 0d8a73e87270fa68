"""FITS cube in, kinematic maps out: the steps of ``cube3d fit`` as one function.

>>> from cube3d import datasets, pipeline
>>> maps = pipeline.run_fit(datasets.demo_cube_path(), datasets.demo_templates_dir(),
...                         redshift=0.0857, target_sn=15, moments=2)   # doctest: +SKIP
>>> maps.maps["V"].shape                                                 # doctest: +SKIP
(20, 20)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from . import __version__
from .errors import InputError
from .fit import FitConfig, FitResult, fit_spectra, validate_config
from .io import read_cube
from .losvd import sanders_evans_bounds
from .maps import (
    FLAG_AT_BOUND,
    FLAG_NONFINITE,
    FLAG_NOT_FITTED,
    FLAG_LOW_SNR,
    KinematicMaps,
)
from .precision import enable_x64
from .prepare import PreparedData, prepare_cube
from .templates import load_templates

__all__ = ["run_fit", "result_to_maps", "model_cube"]


def result_to_maps(prepared: PreparedData, result: FitResult, config: FitConfig, wcs, meta: dict,
                   min_sn: float = 0.0, keep_spectra: bool = True) -> KinematicMaps:
    """Scatter per-bin fit results onto the spaxel grid as a :class:`KinematicMaps`.

    Parameters
    ----------
    prepared : PreparedData
        Gives ``bin_id`` (ny, nx), S/N and the ln-wavelength grid.
    result : FitResult
        One row per prepared spectrum.
    config : FitConfig
        The settings of the fit (for the bounds flag).
    wcs : astropy.wcs.WCS
        2-D celestial WCS of the cube.
    meta : dict
        Provenance written to the primary header.
    min_sn : float
        Bins below this S/N get the low-S/N flag.
    keep_spectra : bool
        Store the per-bin spectra, models and weights for ``cube3d plot``.
    """
    bin_id = np.asarray(prepared.bin_id)
    fitted = bin_id >= 0
    idx = np.where(fitted, bin_id, 0)

    def scatter(values, fill=np.nan):
        out = np.asarray(values)[idx].astype(float)
        return np.where(fitted, out, fill)

    maps, units = {}, {}
    for k, name in enumerate(result.param_names):
        maps[name] = scatter(result.params[:, k])
        maps[f"{name}_ERR"] = scatter(result.errors[:, k])
        units[name] = units[f"{name}_ERR"] = "km/s" if name in ("V", "SIGMA") else ""
    maps["CHI2"] = scatter(result.chi2)
    maps["SNR"] = scatter(prepared.snr)
    maps["BINID"] = bin_id.astype(np.int32)

    flag_bin = np.zeros(prepared.n_spec, dtype=np.int32)
    flag_bin |= np.where(result.ok, 0, FLAG_NONFINITE)
    at_bound = _at_bound(result, config, prepared.velscale)
    flag_bin |= np.where(at_bound, FLAG_AT_BOUND, 0)
    flag_bin |= np.where(np.asarray(prepared.snr) < min_sn, FLAG_LOW_SNR, 0)
    maps["FLAG"] = np.where(fitted, flag_bin[idx], FLAG_NOT_FITTED).astype(np.int32)

    spectra = None
    if keep_spectra:
        spectra = {
            "LOGLAM": np.asarray(prepared.ln_wave),
            "SPEC": np.asarray(prepared.spectra, dtype=np.float32),
            "MODEL": np.nan_to_num(np.asarray(result.bestfit, dtype=np.float32)),
            "WEIGHT": np.asarray(result.weights_used, dtype=np.float32),
        }
    return KinematicMaps(maps=maps, units=units, wcs=wcs, meta=meta, spectra=spectra)


def _at_bound(result: FitResult, config: FitConfig, velscale: float):
    """Spectra with a kinematic parameter at its fit bound (sigma or |h_m|)."""
    k_sig = result.param_names.index("SIGMA")
    sig = result.params[:, k_sig]
    flags = (sig <= 0.1 * velscale * (1 + 1e-6)) | (sig >= config.sigma_max * (1 - 1e-6))
    if config.family == "gauss_hermite":
        h = result.params[:, 2:]
        flags |= np.any(np.abs(h) >= config.h_bound * (1 - 1e-6), axis=1)
    else:
        lo, hi = (np.asarray(b, float) for b in sanders_evans_bounds())
        shape = result.params[:, 2:]
        span = hi - lo
        low_edge = lo + 1e-6 * span
        low_edge[0] = -np.inf  # A = 0 is the Gaussian limit, a natural value, not a bound hit
        flags |= np.any((shape <= low_edge) | (shape >= hi - 1e-6 * span), axis=1)
    return flags & result.ok


def model_cube(prepared: PreparedData, result: FitResult) -> np.ndarray:
    """Best-fit model spectra on the rest-frame ln-lambda grid, (n_pix, ny, nx), cube flux units."""
    bin_id = np.asarray(prepared.bin_id)
    idx = np.where(bin_id >= 0, bin_id, 0)
    model = np.asarray(result.bestfit) * np.asarray(prepared.scale)[:, None]
    out = model[idx]  # (ny, nx, n_pix)
    out = np.where((bin_id >= 0)[..., None], out, np.nan)
    return np.moveaxis(out, -1, 0).astype(np.float32)


def run_fit(
    cube_path,
    templates,
    redshift: float,
    *,
    template_fwhm: float = 2.51,
    template_air: bool = True,
    lsf=None,
    velscale: Optional[float] = None,
    wave_range=None,
    target_sn: Optional[float] = None,
    min_sn: float = 0.0,
    mask_emission: bool = True,
    n_basis: Optional[int] = None,
    moments: int = 4,
    losvd: str = "gauss_hermite",
    degree: int = 4,
    mdegree: int = 0,
    clip_sigma: Optional[float] = None,
    sigma_start: float = 150.0,
    chunk_size: int = 16,
    layout: str = "auto",
    keep_spectra: bool = True,
    progress: Optional[Callable[[int, int], None]] = None,
    log: Optional[Callable[[str], None]] = None,
):
    """Read a cube, prepare it, fit every spaxel or bin, and return the maps.

    Parameters mirror the command line (``cube3d fit --help``).  Returns
    ``(maps, prepared, result)``: the :class:`~cube3d.maps.KinematicMaps`, the
    :class:`~cube3d.prepare.PreparedData` and the :class:`~cube3d.fit.FitResult`.
    """
    if not (isinstance(template_fwhm, (int, float, np.integer, np.floating)) and np.isfinite(template_fwhm)
            and template_fwhm > 0):
        raise InputError(f"--template-fwhm: must be a positive number of Angstrom, got {template_fwhm}")
    config = FitConfig(
        n_moments=moments, family=losvd, degree=degree, mdegree=mdegree, clip_sigma=clip_sigma,
        sigma_start=sigma_start, chunk_size=chunk_size,
    )
    validate_config(config)  # before any file is read
    enable_x64()
    say = log or (lambda msg: None)
    t0 = time.perf_counter()
    cube = read_cube(cube_path, layout=layout)
    ny, nx = cube.spatial_shape
    say(f"read {cube.layout} cube {cube_path}: {nx} x {ny} spaxels x {cube.n_wave} pixels")
    library = load_templates(templates, fwhm=template_fwhm, air=template_air)
    say(f"loaded {len(library.names)} templates from {templates}")
    prepared = prepare_cube(
        cube, library, redshift, velscale=velscale, wave_range=wave_range, target_sn=target_sn,
        min_sn=min_sn, mask_emission=mask_emission, lsf=lsf, n_basis=n_basis,
    )
    say(
        f"prepared {prepared.n_spec} spectra x {prepared.n_pix} pixels at {prepared.velscale:.1f} km/s "
        f"({np.exp(prepared.ln_wave[0]):.0f}-{np.exp(prepared.ln_wave[-1]):.0f} A rest), "
        f"median S/N {np.nanmedian(prepared.snr):.1f} [{time.perf_counter() - t0:.1f} s]"
    )
    result = fit_spectra(prepared.spectra, prepared.ivar, prepared.templates, prepared.template_offset,
                         prepared.velscale, config, progress=progress)
    say(f"fitted {int(result.ok.sum())}/{prepared.n_spec} spectra [{time.perf_counter() - t0:.1f} s]")
    meta = {
        "input": str(Path(cube_path).resolve()),
        "layout": cube.layout,
        "templates": str(templates),
        "template_names": list(prepared.template_names),
        "template_fwhm": template_fwhm,
        "redshift": float(redshift),
        "velscale": float(prepared.velscale),
        "wave_range": [float(np.exp(prepared.ln_wave[0])), float(np.exp(prepared.ln_wave[-1]))],
        "air": bool(prepared.air),
        "target_sn": target_sn,
        "losvd": losvd,
        "moments": moments,
        "degree": degree,
        "mdegree": mdegree,
        "clip_sigma": clip_sigma,
        "software": f"cube3d {__version__}",
    }
    maps = result_to_maps(prepared, result, config, cube.wcs, meta, min_sn=min_sn, keep_spectra=keep_spectra)
    return maps, prepared, result
