"""FITS cube in, kinematic maps out: the steps of ``cube3d fit`` as one function.

>>> from cube3d import datasets, pipeline
>>> maps = pipeline.run_fit(datasets.demo_cube_path(), datasets.demo_templates_dir(),
...                         redshift=0.0857, target_sn=15, moments=2)   # doctest: +SKIP
>>> maps.maps["V"].shape                                                 # doctest: +SKIP
(20, 20)

With a Gaussian-process spatial prior on the kinematic fields (:mod:`cube3d.spatial`),
every spaxel is fitted alone first and the GP posterior then replaces the main maps:

>>> from cube3d.spatial import GPConfig
>>> maps, prepared, result = pipeline.run_fit(datasets.demo_cube_path(), datasets.demo_templates_dir(),
...                                           redshift=0.0857, moments=2, gp=GPConfig())  # doctest: +SKIP
>>> sorted(n for n in maps.maps if n.startswith("V"))                                  # doctest: +SKIP
['V', 'V_ERR', 'V_SPAXEL', 'V_SPAXEL_ERR']
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

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

if TYPE_CHECKING:  # the spatial stage (and tinygp) is imported only when a GP is asked for
    from .spatial import GPConfig

__all__ = ["run_fit", "run_fit_gp", "result_to_maps", "model_cube", "check_gp_request"]


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
    """Spectra with a kinematic parameter at its fit bound (|V|, sigma or |h_m|)."""
    k_sig = result.param_names.index("SIGMA")
    sig = result.params[:, k_sig]
    flags = (sig <= 0.1 * velscale * (1 + 1e-6)) | (sig >= config.sigma_max * (1 - 1e-6))
    k_v = result.param_names.index("V")
    flags |= np.abs(result.params[:, k_v]) >= config.v_range * (1 - 1e-6)
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
    gp: Optional[GPConfig] = None,
    return_gp: bool = False,
    progress: Optional[Callable[[int, int], None]] = None,
    log: Optional[Callable[[str], None]] = None,
):
    """Read a cube, prepare it, fit every spaxel or bin, and return the maps.

    The parameters not listed below mirror the command line (``cube3d fit --help``).

    Parameters
    ----------
    gp : cube3d.spatial.GPConfig, optional
        Put a Gaussian-process spatial prior on the kinematic fields
        (:func:`cube3d.spatial.run_gp`): every spaxel is fitted alone (no Voronoi
        binning: ``target_sn`` must be None), then the GP posterior mean and standard
        deviation become ``V``, ``V_ERR``, ``SIGMA``, ... and the per-spaxel estimates
        move to ``V_SPAXEL``, ``V_SPAXEL_ERR``, ...; the hyperparameters go to
        ``maps.meta`` (``gp_*`` keys, :meth:`cube3d.spatial.GPResult.header_meta`).
        ``FLAG``, ``CHI2``, ``SNR`` and the spectra stay those of the per-spaxel fit.
    return_gp : bool
        Also return the :class:`cube3d.spatial.GPResult` (needs ``gp``).

    Returns
    -------
    maps : KinematicMaps
    prepared : PreparedData
    result : FitResult
        The per-spaxel (or per-bin) fit.
    gp_result : cube3d.spatial.GPResult
        Only with ``return_gp=True``.
    """
    if not (isinstance(template_fwhm, (int, float, np.integer, np.floating)) and np.isfinite(template_fwhm)
            and template_fwhm > 0):
        raise InputError(f"--template-fwhm: must be a positive number of Angstrom, got {template_fwhm}")
    config = FitConfig(
        n_moments=moments, family=losvd, degree=degree, mdegree=mdegree, clip_sigma=clip_sigma,
        sigma_start=sigma_start, chunk_size=chunk_size,
    )
    validate_config(config)  # before any file is read
    check_gp_request(gp, target_sn)
    if return_gp and gp is None:
        raise InputError("return_gp: needs gp (a cube3d.spatial.GPConfig)")
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
    if gp is None:
        return maps, prepared, result
    maps, gp_result = _apply_gp(maps, prepared, result, config, gp, say, t0)
    return (maps, prepared, result, gp_result) if return_gp else (maps, prepared, result)


def run_fit_gp(cube_path, templates, redshift, gp: Optional[GPConfig] = None, **options):
    """:func:`run_fit` with a GP spatial prior; returns ``(maps, prepared, result, gp_result)``.

    Parameters
    ----------
    cube_path, templates, redshift
        As for :func:`run_fit`.
    gp : cube3d.spatial.GPConfig, optional
        Settings of the spatial stage (default ``GPConfig()``: two-step tier,
        Matern-5/2 kernel, automatic solver).
    **options
        Any other keyword of :func:`run_fit` (``moments``, ``lsf``, ...).

    Returns
    -------
    maps, prepared, result
        As for :func:`run_fit` with ``gp``.
    gp_result : cube3d.spatial.GPResult
        Posterior fields and hyperparameters.
    """
    from .spatial import GPConfig

    options.pop("return_gp", None)
    return run_fit(cube_path, templates, redshift, gp=GPConfig() if gp is None else gp, return_gp=True, **options)


# tier -> module implementing it (the two-step tier ships with cube3d.spatial itself)
_GP_TIER_MODULES = {"joint_map": "cube3d.spatial.joint", "nuts": "cube3d.spatial.nuts"}


def check_gp_request(gp, target_sn=None):
    """Reject, before any file is read, a GP request the pipeline cannot serve.

    Parameters
    ----------
    gp : cube3d.spatial.GPConfig or None
        None: nothing to check.
    target_sn : float or None
        The GP needs one spectrum per spaxel, so Voronoi binning is refused.

    Raises
    ------
    InputError
        Binning requested, a bad setting (:func:`cube3d.spatial.validate_gp_config`),
        or a tier whose module is not installed.
    """
    if gp is None:
        return
    from importlib.util import find_spec

    from .spatial import validate_gp_config

    if target_sn is not None:
        raise InputError("gp: the spatial prior fits every spaxel; drop target_sn / --target-sn")
    validate_gp_config(gp)
    module = _GP_TIER_MODULES.get(gp.tier)
    if module is not None and find_spec(module) is None:
        raise InputError(f"gp tier {gp.tier!r}: not available in this installation ({module} is missing); "
                         "use tier 'two_step'")


def _apply_gp(maps, prepared, result, config, gp, say, t0):
    """Run the spatial stage on a per-spaxel fit and swap its posterior into the maps."""
    from .spatial import gp_maps, run_gp

    t_gp = time.perf_counter()
    gp_result = run_gp(prepared, result, config, gp, log=say)
    parts = []
    for name, f in gp_result.fields.items():
        amp = ", ".join(f"{a:.3g}" for a in f.hyper.amp)
        scale = ", ".join(f"{v:.3g}" for v in f.hyper.scale)
        bound = f"; at prior bound: {', '.join(f.hyper.at_bound)}" if f.hyper.at_bound else ""
        amp_unit = " km/s" if name == "V" else ""  # SIGMA's GP is over ln sigma (cube3d.spatial.twostep)
        parts.append(f"{name} {f.solver} on {f.n_obs} spaxels (amp {amp}{amp_unit}, scale {scale} spaxels{bound})")
    say(f"gp {gp_result.tier} ({gp.kernel}{', separable' if gp.separable else ''}): " + "; ".join(parts)
        + f" in {time.perf_counter() - t_gp:.1f} s [{time.perf_counter() - t0:.1f} s]")
    out = gp_maps(maps, gp_result)
    meta = dict(out.meta)
    meta.update({"gp_solver": gp.solver, "gp_v_mean": gp.v_mean, "gp_min_snr": float(gp.min_snr),
                 "gp_scale_range": None if gp.scale_range is None else [float(v) for v in gp.scale_range]})
    return KinematicMaps(maps=out.maps, units=out.units, wcs=out.wcs, meta=meta, spectra=out.spectra), gp_result
