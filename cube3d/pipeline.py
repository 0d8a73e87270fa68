"""FITS cube in, kinematic maps out: the steps of ``cube3d fit`` as one function.

Three small frozen configurations say what to do (the command line builds them from
its options and the maps header records them): :class:`~cube3d.prepare.PrepareConfig`
(reading, templates, preparation), :class:`~cube3d.fit.FitConfig` (the per-spectrum fit)
and, optionally, :class:`cube3d.spatial.GPConfig` (a Gaussian-process spatial prior).
:func:`run_fit` returns one :class:`FitRun`.

>>> from cube3d import datasets, pipeline, PrepareConfig, FitConfig
>>> run = pipeline.run_fit(datasets.demo_cube_path(), datasets.demo_templates_dir(), redshift=0.0857,
...                        prepare=PrepareConfig(target_sn=15), fit=FitConfig(moments=2))
>>> run.maps.maps["V"].shape
(20, 20)

With a Gaussian-process spatial prior on the kinematic fields (:mod:`cube3d.spatial`),
every spaxel is fitted alone first and the GP posterior then replaces the main maps:

>>> from cube3d.spatial import GPConfig
>>> run = pipeline.run_fit(datasets.demo_cube_path(), datasets.demo_templates_dir(), redshift=0.0857,
...                        fit=FitConfig(moments=2), gp=GPConfig())  # doctest: +SKIP
>>> sorted(n for n in run.maps.maps if n.startswith("V"))          # doctest: +SKIP
['V', 'V_ERR', 'V_SPAXEL', 'V_SPAXEL_ERR']
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional

import numpy as np

from . import __version__
from .errors import InputError, ResultWarning
from .fit import FitConfig, FitResult, fit_spectra, losvd_family, validate_config
from .flags import (
    CLIP_FLAG_FRACTION,
    FLAG_BELOW_RELIABLE_SN,
    FLAG_CLIPPED,
    FLAG_NOT_FITTED,
    FLAG_UNCONSTRAINED,
    RELIABLE_SN,
    spectrum_flags,
    unconstrained,
)
from .io import read_cube
from .maps import KinematicMaps
from .precision import enable_x64
from .prepare import PrepareConfig, PreparedData, check_degrees, prepare_cube, validate_prepare_config
from .templates import load_templates

if TYPE_CHECKING:  # the spatial stage (and tinygp) is imported only when a GP is asked for
    from .spatial import GPConfig

__all__ = ["FitRun", "run_fit", "result_to_maps", "model_cube", "check_gp_request", "choose_gp_tier", "config_meta"]


class FitRun(NamedTuple):
    """Everything :func:`run_fit` produced, and the settings it used.

    Attributes
    ----------
    maps : KinematicMaps
        The maps (GP posterior maps when ``gp_config`` is set), ready for
        :func:`cube3d.maps.write_maps`.
    prepared : PreparedData
        The spectra as fitted.
    result : FitResult
        The per-spectrum (spaxel or bin) fit.
    prepare_config : PrepareConfig
    fit_config : FitConfig
    gp_config : GPConfig or None
    gp : GPResult or None
        Posterior fields and hyperparameters of the spatial prior, when one was used.
    """

    maps: KinematicMaps
    prepared: PreparedData
    result: FitResult
    prepare_config: PrepareConfig
    fit_config: FitConfig
    gp_config: Optional[Any]
    gp: Optional[Any]


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
    flag_bin = spectrum_flags(result, config, prepared.velscale, prepared.snr, min_sn)
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


def model_cube(prepared: PreparedData, result: FitResult) -> np.ndarray:
    """Best-fit model spectra on the rest-frame ln-lambda grid, (n_pix, ny, nx), cube flux units."""
    bin_id = np.asarray(prepared.bin_id)
    idx = np.where(bin_id >= 0, bin_id, 0)
    model = np.asarray(result.bestfit) * np.asarray(prepared.scale)[:, None]
    out = model[idx]  # (ny, nx, n_pix)
    out = np.where((bin_id >= 0)[..., None], out, np.nan)
    return np.moveaxis(out, -1, 0).astype(np.float32)


def _warn_about_results(result, fit: FitConfig):
    """One :class:`~cube3d.errors.ResultWarning` per kind of problem that affects many
    spectra (the FLAG map has the details per spaxel)."""
    n = int(result.ok.sum())
    clipped = int((np.asarray(result.clipped_fraction) > CLIP_FLAG_FRACTION).sum())
    if clipped:
        warnings.warn(f"--clip {fit.clip:g}: clipping rejected more than {CLIP_FLAG_FRACTION:.0%} of the pixels "
                      f"of {clipped} of {n} spectra (FLAG {FLAG_CLIPPED}); a threshold of 3 or more keeps noise",
                      ResultWarning, stacklevel=3)
    loose = int(unconstrained(result, fit).sum())
    if loose:
        warnings.warn(f"{loose} of {n} spectra do not constrain the LOSVD (errors wider than the parameter range "
                      f"or a degenerate chi2; FLAG {FLAG_UNCONSTRAINED}): featureless, noiseless or corrupt spectra",
                      ResultWarning, stacklevel=3)


def config_meta(prepare: PrepareConfig, fit: FitConfig) -> dict:
    """The settings of a run as maps-header provenance: one key per config field, named
    as the field (and the command-line option): ``moments``, ``losvd``, ``clip``, ``min_sn``..."""
    meta = {}
    for name, value in list(prepare._asdict().items()) + list(fit._asdict().items()):
        if name == "n_threads":
            continue  # how, not what
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = [float(v) for v in value]
        meta[name] = value
    return meta


def run_fit(cube_path, templates, redshift: float, prepare: PrepareConfig = PrepareConfig(),
            fit: FitConfig = FitConfig(), gp: Optional[GPConfig] = None, *, auto_tier: bool = False,
            keep_spectra: bool = True,
            progress: Optional[Callable[[int, int], None]] = None,
            log: Optional[Callable[[str], None]] = None) -> FitRun:
    """Read a cube, prepare it, fit every spaxel or bin, and return the maps.

    Every setting is checked before any file is read.

    Parameters
    ----------
    cube_path : str or Path
        FITS cube (MUSE, MaNGA or a generic 3-D HDU; :func:`cube3d.io.read_cube`).
    templates : str or Path
        Folder (or FITS file) of template spectra (:func:`cube3d.templates.load_templates`).
    redshift : float
        Spectra are de-redshifted with it; V is relative to it (km/s).
    prepare : PrepareConfig
        Reading, templates and preparation (``cube3d fit`` options of those groups).
    fit : FitConfig
        The per-spectrum fit.
    gp : cube3d.spatial.GPConfig, optional
        Put a Gaussian-process spatial prior on the kinematic fields
        (:func:`cube3d.spatial.run_gp`): every spaxel is fitted alone (no Voronoi
        binning: ``prepare.target_sn`` must be None), then the GP posterior mean and
        standard deviation become ``V``, ``V_ERR``, ``SIGMA``, ... and the per-spaxel
        estimates move to ``V_SPAXEL``, ``V_SPAXEL_ERR``, ...; the hyperparameters go to
        ``maps.meta`` (``gp_*`` keys).  ``FLAG``, ``CHI2``, ``SNR`` and the spectra stay
        those of the per-spaxel fit.
    auto_tier : bool
        Replace ``gp.tier`` by :func:`choose_gp_tier`'s choice from the spectra's S/N
        (what ``cube3d fit --gp`` does without ``--gp-tier``); the log says which and why.
    keep_spectra : bool
        Keep the per-bin spectra and models in the maps (for ``cube3d plot``).
    progress : callable, optional
        ``progress(n_done, n_total)`` after every chunk of spectra.
    log : callable, optional
        Receives one line per step.

    Returns
    -------
    FitRun
    """
    if not isinstance(prepare, PrepareConfig):
        raise InputError(f"prepare: need a cube3d.PrepareConfig, got {type(prepare).__name__}")
    if not isinstance(fit, FitConfig):
        raise InputError(f"fit: need a cube3d.FitConfig, got {type(fit).__name__}")
    validate_prepare_config(prepare)
    validate_config(fit)  # before any file is read
    check_gp_request(gp, prepare.target_sn)
    enable_x64()
    say = log or (lambda msg: None)
    t0 = time.perf_counter()
    cube = read_cube(cube_path, layout=prepare.layout)
    ny, nx = cube.spatial_shape
    say(f"read {cube.layout} cube {cube_path}: {nx} x {ny} spaxels x {cube.n_wave} pixels")
    library = load_templates(templates, fwhm=prepare.template_fwhm, air=prepare.template_air)
    say(f"loaded {len(library.names)} templates from {templates}")
    prepared = prepare_cube(
        cube, library, redshift, velscale=prepare.velscale, wave_range=prepare.wave_range,
        target_sn=prepare.target_sn, min_sn=prepare.min_sn, mask_emission=prepare.mask_emission,
        emission_width=prepare.emission_width,
        lsf=prepare.lsf, n_basis=prepare.n_basis,
    )
    say(
        f"prepared {prepared.n_spec} spectra x {prepared.n_pix} pixels at {prepared.velscale:.1f} km/s "
        f"({np.exp(prepared.ln_wave[0]):.0f}-{np.exp(prepared.ln_wave[-1]):.0f} A rest), "
        f"median S/N {np.nanmedian(prepared.snr):.1f} [{time.perf_counter() - t0:.1f} s]"
    )
    check_degrees(prepared.n_pix, fit.degree, fit.mdegree, len(prepared.template_names),
                  losvd_family(fit).n_params)
    result = fit_spectra(prepared, fit, progress=progress)
    n_ok, n_conv = int(result.ok.sum()), int((result.converged & result.ok).sum())
    say(f"fitted {n_ok}/{prepared.n_spec} spectra, {n_conv} converged [{time.perf_counter() - t0:.1f} s]")
    if n_ok == 0:
        raise InputError(f"{cube_path}: none of the {prepared.n_spec} spectra could be fitted (too few usable "
                         f"pixels at --velscale {prepared.velscale:.4g} km/s over {prepared.n_pix} pixels, "
                         "or every pixel masked); nothing written")
    _warn_about_results(result, fit)
    meta = {
        **config_meta(prepare, fit),  # the settings asked for; below, what they resolved to
        "input": str(Path(cube_path).resolve()),
        "layout": cube.layout,
        "templates": str(templates),
        "template_names": list(prepared.template_names),
        "redshift": float(redshift),
        "velscale": float(prepared.velscale),
        "wave_range": [float(np.exp(prepared.ln_wave[0])), float(np.exp(prepared.ln_wave[-1]))],
        "air": bool(prepared.air),
        "software": f"cube3d {__version__}",
    }
    maps = result_to_maps(prepared, result, fit, cube.wcs, meta, min_sn=prepare.min_sn, keep_spectra=keep_spectra)
    n_low = int(np.sum(result.ok & (np.asarray(prepared.snr) < RELIABLE_SN)))
    if n_low and gp is None:
        say(f"{n_low} of {n_ok} spectra have S/N per pixel below {RELIABLE_SN:g} (FLAG {FLAG_BELOW_RELIABLE_SN}): "
            "one spectrum's sigma is biased there; do not average them: bin (--target-sn) or use --gp")
    gp_result = None
    if gp is not None:
        if auto_tier:
            tier, why = choose_gp_tier(prepared.snr[np.asarray(result.ok)])
            gp = gp._replace(tier=tier)
            say(f"gp tier {tier}: {why} (--gp-tier to choose)")
        maps, gp_result = _apply_gp(maps, prepared, result, fit, gp, say, t0)
    return FitRun(maps, prepared, result, prepare, fit, gp, gp_result)


#: median S/N per pixel below which the GP tier fits the spectra jointly with the prior
JOINT_TIER_BELOW_SN = 10.0


def choose_gp_tier(snr):
    """The GP tier the spectra's S/N calls for, and why (one line).

    Below a median S/N per pixel of :data:`JOINT_TIER_BELOW_SN` many single spectra
    land in noise minima or have biased sigma (:mod:`cube3d.flags`, FLAG 128), and the
    two-step tier, which takes the per-spaxel fits as its data, inherits them: on a
    24 x 24 mock of nearly flat fields at S/N 3.5 its V was off by 100-190 km/s RMS
    while ``joint_map``, which fits the spectra and the prior together, reached 14 km/s.
    Above it the two tiers agree and ``two_step`` is several times faster.

    Parameters
    ----------
    snr : array_like
        Median S/N per pixel of the fitted spectra.

    Returns
    -------
    tier : str
        ``"joint_map"`` or ``"two_step"``.
    why : str
    """
    med = float(np.nanmedian(np.asarray(snr, float))) if np.size(snr) else 0.0
    if med < JOINT_TIER_BELOW_SN:
        return "joint_map", (f"median S/N per pixel {med:.1f} < {JOINT_TIER_BELOW_SN:g}: single-spaxel fits are "
                             "too noisy to be the GP's data, so spectra and prior are fitted together")
    return "two_step", (f"median S/N per pixel {med:.1f} >= {JOINT_TIER_BELOW_SN:g}: per-spaxel fits are good "
                        "data for the GP (the faster tier)")


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
    meta.update({"gp_solver": gp.solver, "gp_v_mean": gp.v_mean, "gp_min_sn": float(gp.min_sn),
                 "gp_scale_range": None if gp.scale_range is None else [float(v) for v in gp.scale_range]})
    return KinematicMaps(maps=out.maps, units=out.units, wcs=out.wcs, meta=meta, spectra=out.spectra), gp_result
