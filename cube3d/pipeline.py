"""FITS cube in, kinematic maps out: the steps of ``cube3d fit`` as one function.

The cube is read, prepared and fitted a chunk of spectra at a time, and finished chunks
are journalled (:mod:`cube3d.stream`, :mod:`cube3d.journal`), so that memory is set by the
chunk size and a run can resume.  Three small frozen configurations say what to do (the command line builds them from
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

import contextlib
import ctypes
import ctypes.util
import dataclasses
import hashlib
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional

import numpy as np

from . import __version__
from .cluster import check_cluster_request, dask_client, fit_chunks_on_cluster
from .compile_cache import CACHE_ENV, active_cache_dir, enable_compile_cache
from .constants import C_KMS
from .errors import InputError, ResultWarning
from .fit import FitConfig, FitResult, fit_spectra, losvd_family, validate_config
from .flags import (
    CLIP_FLAG_FRACTION,
    FLAG_BELOW_RELIABLE_SN,
    FLAG_CLIPPED,
    FLAG_NOT_FITTED,
    FLAG_UNCONSTRAINED,
    GP_TIERS_FITTING_SPECTRA,
    RELIABLE_SN,
    spectrum_flags,
    unconstrained,
)
from .io.reader import available_memory
from .io.source import open_cube
from .journal import (PER_PIXEL, SPECTRA_KEYS, Journal, JournalModel, JournalSpectra, MemoryJournal, gather_results,
                      spectra_in_memory, tree_digest)
from .maps import KinematicMaps, write_maps
from .precision import enable_x64
from .prepare import PrepareConfig, PreparedData, check_degrees, validate_prepare_config
from .stream import READ_BLOCK, STREAM_SPECTRA, CubePlan, materialise, plan_cube, prepare_chunk
from .templates import load_templates

if TYPE_CHECKING:  # the spatial stage (and tinygp) is imported only when a GP is asked for
    from .spatial import GPConfig

__all__ = ["FitRun", "run_fit", "write_run", "fit_chunk", "fit_journal_chunk", "run_key",
           "result_to_maps", "model_cube", "check_gp_request", "choose_gp_tier", "config_meta"]


class FitRun(NamedTuple):
    """Everything :func:`run_fit` produced, and the settings it used.

    Attributes
    ----------
    maps : KinematicMaps
        The maps (GP posterior maps when ``gp_config`` is set), ready for
        :func:`write_run` (or :func:`cube3d.maps.write_maps`).
    prepared : cube3d.stream.CubePlan
        The spectra as fitted, without the spectra themselves: grid, templates, S/N,
        normalisation, ``bin_id`` (the attributes of a PreparedData but ``spectra``
        and ``ivar``).
    result : FitResult
        The per-spectrum (spaxel or bin) fit; ``bestfit`` and ``weights_used`` are None.
    prepare_config : PrepareConfig
    fit_config : FitConfig
    gp_config : GPConfig or None
    gp : GPResult or None
        Posterior fields and hyperparameters of the spatial prior, when one was used.
    journal : cube3d.journal.Journal or None
        Where the chunks are (with the spectra, when kept), until :func:`write_run`
        removes it; None for a run without a journal.
    """

    maps: KinematicMaps
    prepared: Any
    result: FitResult
    prepare_config: PrepareConfig
    fit_config: FitConfig
    gp_config: Optional[Any]
    gp: Optional[Any]
    journal: Optional[Any] = None


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
    spectra (the FLAG map has the details per spaxel), at the line calling :func:`run_fit`."""
    n = int(result.ok.sum())
    clipped = int((np.asarray(result.clipped_fraction) > CLIP_FLAG_FRACTION).sum())
    if clipped:
        warnings.warn(f"--clip {fit.clip:g}: clipping rejected more than {CLIP_FLAG_FRACTION:.0%} of the pixels "
                      f"of {clipped} of {n} spectra (FLAG {FLAG_CLIPPED}); a threshold of 3 or more keeps noise",
                      ResultWarning, stacklevel=4)
    loose = int(unconstrained(result, fit).sum())
    if loose:
        warnings.warn(f"{loose} of {n} spectra do not constrain the LOSVD (errors wider than the parameter range "
                      f"or a degenerate chi2; FLAG {FLAG_UNCONSTRAINED}): featureless, noiseless or corrupt spectra",
                      ResultWarning, stacklevel=4)


def config_meta(prepare: PrepareConfig, fit: FitConfig) -> dict:
    """The settings of a run as maps-header provenance: one key per config field, named
    as the field (and the command-line option): ``moments``, ``losvd``, ``clip``, ``min_sn``..."""
    meta = {}
    for name, value in list(prepare._asdict().items()) + list(fit._asdict().items()):
        if name == "n_threads":
            continue  # how, not what
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple) and all(np.ndim(v) == 0 for v in value):
            value = [float(v) for v in value]
        elif not (value is None or isinstance(value, (str, bool, int, float, np.integer, np.floating))):
            value = _describe_setting(value)  # an LSF table or object given in Python, not on the command line
        meta[name] = value
    return meta


def _describe_setting(value) -> str:
    """A short text for a setting that is an array table or an object (its digest is in :func:`run_key`)."""
    if isinstance(value, tuple) and len(value) == 2:
        wave, width = (np.asarray(v, dtype=float) for v in value)
        if wave.ndim == 1 and wave.shape == width.shape and wave.size:
            return (f"table of {wave.size} points, {np.nanmin(wave):.6g}-{np.nanmax(wave):.6g} A, "
                    f"FWHM {np.nanmin(width):.4g}-{np.nanmax(width):.4g} A")
    return f"{type(value).__name__} given in Python"


def run_key(source, templates, redshift: float, prepare: PrepareConfig, fit: FitConfig,
            chunk_spectra: int = STREAM_SPECTRA) -> dict:
    """What the results of a run depend on, for its journal (:mod:`cube3d.journal`).

    The cube's identity (:meth:`cube3d.io.source.CubeSource.identity`), a hash of the
    template files and of an LSF table file, every preparation and fit setting (as in
    the maps header, :func:`config_meta`), the redshift, the chunk size and the version.
    """
    settings = config_meta(prepare, fit)
    lsf = settings.pop("lsf", None)
    if isinstance(prepare.lsf, (str, os.PathLike)) and Path(prepare.lsf).is_file():
        lsf = {"file": str(Path(prepare.lsf).resolve()), "sha256": tree_digest(prepare.lsf)}
    elif prepare.lsf is not None and not isinstance(prepare.lsf, str):
        lsf = {"sha256": hashlib.sha256(np.asarray(prepare.lsf, dtype=np.float64).tobytes()).hexdigest()}
    settings.update(redshift=float(redshift), chunk_spectra=int(chunk_spectra))
    return {"cube": source.identity(), "templates": tree_digest(templates), "lsf": lsf, "settings": settings,
            "version": __version__}


def run_fit(cube_path, templates, redshift: float, prepare: PrepareConfig = PrepareConfig(),
            fit: FitConfig = FitConfig(), gp: Optional[GPConfig] = None, *, auto_tier: bool = False,
            keep_spectra: bool = False, journal=None, overwrite: bool = False,
            chunk_spectra: int = STREAM_SPECTRA, workers: int = 0, scheduler: Optional[str] = None,
            progress: Optional[Callable[[int, int], None]] = None,
            log: Optional[Callable[[str], None]] = None) -> FitRun:
    """Read a cube, prepare it, fit every spaxel or bin, and return the maps.

    Every setting is checked before any file is read.  The cube stays on disk
    (:func:`cube3d.io.open_cube`): a first pass plans the spectra
    (:func:`cube3d.stream.plan_cube`), then chunks of ``chunk_spectra`` spectra are read,
    prepared, fitted and journalled one after the other (:func:`fit_chunk`), so that
    memory is set by the chunk, not the cube (README, "Speed").  The spectra are the
    same as :func:`~cube3d.prepare.prepare_cube`'s (module :mod:`cube3d.stream` says
    where binning differs by rounding).

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
        those of the per-spaxel fit.  The ``joint_map`` tier fits all spectra at once:
        they are held in memory (an :class:`InputError` when they would not fit).
    auto_tier : bool
        Replace ``gp.tier`` by :func:`choose_gp_tier`'s choice from the spectra's S/N
        (what ``cube3d fit --gp`` does without ``--gp-tier``); the log says which and why.
    keep_spectra : bool
        Keep the per-bin spectra, models and weights (for ``cube3d plot``): in
        ``maps.spectra`` without a ``journal``, else in the journal's chunk files, from
        which :func:`write_run` writes them a chunk at a time.
    journal : str or Path, optional
        Directory journalling the finished chunks (:mod:`cube3d.journal`; the command
        line uses ``MAPS.fits.partial``).  A journal of this run (same cube, templates,
        settings) is resumed: only its missing chunks are fitted.  Left in place for
        :func:`write_run`, which removes it once the maps are written.  None: chunks are
        kept in memory.
    overwrite : bool
        Remove a journal of another run instead of refusing it.
    chunk_spectra : int
        Spectra per chunk (rounded up to a multiple of ``fit.chunk_size``).
    workers : int
        Fit the chunks on a Dask ``LocalCluster`` of this many worker processes
        (:mod:`cube3d.cluster`; 0: one after the other in this process).  The workers
        write the chunks into the journal; without a ``journal``, a temporary one is used
        and removed before returning.  The maps are those of a serial run.
    scheduler : str, optional
        Fit the chunks on the Dask cluster of the scheduler at this address
        (``tcp://host:8786``; e.g. started by ``dask-jobqueue``).  Needs a ``journal`` on a
        filesystem that the workers share (they read the cube and write the chunks at
        the same paths).
    progress : callable, optional
        ``progress(n_done, n_total)`` after every batch of spectra (with Dask: after every
        chunk).
    log : callable, optional
        Receives one line per step.

    Returns
    -------
    FitRun
        ``prepared`` is the :class:`cube3d.stream.CubePlan` (no spectra), and
        ``result.bestfit`` and ``result.weights_used`` are None (the models stay in
        the journal, or in ``maps.spectra``).

    Raises
    ------
    InputError
        Bad settings or input (one line naming the file or option), a journal of
        another run (without ``overwrite``), and a journal that cannot be written (a
        full disk: the chunks already journalled are kept for the next run); a
        ``scheduler`` that does not answer, or without a ``journal``.
    """
    if not isinstance(prepare, PrepareConfig):
        raise InputError(f"prepare: need a cube3d.PrepareConfig, got {type(prepare).__name__}")
    if not isinstance(fit, FitConfig):
        raise InputError(f"fit: need a cube3d.FitConfig, got {type(fit).__name__}")
    validate_prepare_config(prepare)
    validate_config(fit)  # before any file is read
    check_gp_request(gp, prepare.target_sn)
    if not (isinstance(chunk_spectra, (int, np.integer)) and chunk_spectra >= 1):
        raise InputError(f"--chunk-spectra: must be a positive integer, got {chunk_spectra!r}")
    check_cluster_request(workers, scheduler)
    if scheduler is not None and journal is None:
        raise InputError(f"scheduler {scheduler}: the Dask workers write the chunks into the journal: pass "
                         "journal=, a directory on a filesystem that they share")
    enable_x64()
    say = log or (lambda msg: None)
    with contextlib.ExitStack() as scratch, contextlib.ExitStack() as cluster:
        client = None
        if workers or scheduler is not None:  # first, so that a scheduler that does not answer fails at once
            client = cluster.enter_context(dask_client(workers, scheduler, say))
        in_memory = journal is None
        if in_memory and client is not None:  # the workers need a directory
            journal = Path(scratch.enter_context(tempfile.TemporaryDirectory(prefix="cube3d-journal-",
                                                                           ignore_cleanup_errors=True))) / "journal"
        return _fit_and_map(cube_path, templates, redshift, prepare, fit, gp, auto_tier, keep_spectra, journal,
                            in_memory, overwrite, chunk_spectra, client, cluster.close, progress, say)


def _fit_and_map(cube_path, templates, redshift, prepare, fit, gp, auto_tier, keep_spectra, journal, in_memory,
                 overwrite, chunk_spectra, client, release_client, progress, say) -> FitRun:
    """:func:`run_fit` once its settings are checked (``client``: a Dask client or None,
    closed by ``release_client`` once the chunks are fitted; ``in_memory``: the journal, if
    any, is removed before returning and the spectra are kept in the maps)."""
    t0 = time.perf_counter()
    source = open_cube(cube_path, layout=prepare.layout)
    ny, nx = source.spatial_shape
    say(f"read {source.layout} cube {cube_path}: {nx} x {ny} spaxels x {source.n_wave} pixels "
        f"({'a block of spaxels at a time' if source.streamed else 'compressed: loaded whole'})")
    library = load_templates(templates, fwhm=prepare.template_fwhm, air=prepare.template_air)
    say(f"loaded {len(library.names)} templates from {templates}")
    if journal is None:
        jr = MemoryJournal()
    else:
        jr = Journal(journal, run_key(source, templates, redshift, prepare, fit, chunk_spectra))
        jr.check(overwrite, say)
    if jr.has_plan():
        plan = CubePlan.from_arrays(*jr.load_plan())
        plan.repeat_notes(stacklevel=3)  # run_fit's caller
    else:
        plan = plan_cube(source, library, redshift, prepare, chunk_spectra=chunk_spectra,
                         chunk_size=fit.chunk_size)
    say(
        f"prepared {plan.n_spec} spectra x {plan.n_pix} pixels at {plan.velscale:.1f} km/s "
        f"({np.exp(plan.ln_wave[0]):.0f}-{np.exp(plan.ln_wave[-1]):.0f} A rest) in {plan.n_chunks} chunks"
        + ("" if plan.binned else f", median S/N {np.nanmedian(plan.snr):.1f}")
        + f" [{time.perf_counter() - t0:.1f} s]"
    )
    check_degrees(plan.n_pix, fit.degree, fit.mdegree, len(plan.template_names), losvd_family(fit).n_params)
    if client is None:
        _fit_missing_chunks(source, plan, fit, jr, keep_spectra, progress, say)
    else:
        _fit_missing_chunks_on_cluster(plan, jr, keep_spectra, client, progress, say)
    release_client()
    result, plan = gather_results(jr, plan)
    n_ok, n_conv = int(result.ok.sum()), int((result.converged & result.ok).sum())
    say(f"fitted {n_ok}/{plan.n_spec} spectra, {n_conv} converged [{time.perf_counter() - t0:.1f} s]")
    if n_ok == 0:
        jr.remove()  # nothing to resume: the same inputs fail the same way
        raise InputError(f"{cube_path}: none of the {plan.n_spec} spectra could be fitted (too few usable "
                         f"pixels at --velscale {plan.velscale:.4g} km/s over {plan.n_pix} pixels, "
                         "or every pixel masked); nothing written")
    _warn_about_results(result, fit)
    meta = {
        **config_meta(prepare, fit),  # the settings asked for; below, what they resolved to
        "input": str(Path(cube_path).resolve()),
        "layout": source.layout,
        "templates": str(templates),
        "template_names": list(plan.template_names),
        "redshift": float(redshift),
        "velscale": float(plan.velscale),
        "wave_range": [float(np.exp(plan.ln_wave[0])), float(np.exp(plan.ln_wave[-1]))],
        "air": bool(plan.air),
        "software": f"cube3d {__version__}",
    }
    maps = result_to_maps(plan, result, fit, source.wcs, meta, min_sn=prepare.min_sn, keep_spectra=False)
    if keep_spectra and in_memory:
        maps = dataclasses.replace(maps, spectra=spectra_in_memory(jr, plan))
    n_low = int(np.sum(result.ok & (np.asarray(plan.snr) < RELIABLE_SN)))
    if n_low and gp is None:
        say(f"{n_low} of {n_ok} spectra have S/N per pixel below {RELIABLE_SN:g} (FLAG {FLAG_BELOW_RELIABLE_SN}): "
            "one spectrum's sigma is biased there; do not average them: bin (--target-sn) or use --gp")
    gp_result = None
    if gp is not None:
        if auto_tier:
            tier, why = choose_gp_tier(plan.snr[np.asarray(result.ok)])
            gp = gp._replace(tier=tier)
            say(f"gp tier {tier}: {why} (--gp-tier to choose)")
        else:
            _warn_about_gp_tier(gp.tier, plan.snr[np.asarray(result.ok)])
        spectra = plan
        if gp.tier == "joint_map":  # fits every spectrum with the prior: all of them in memory
            try:
                spectra = materialise(source, plan, available_memory())
            except InputError as exc:
                raise InputError(f"--gp-tier joint_map: {exc}; use --gp-tier two_step, which needs the "
                                 "per-spaxel results only") from None
        maps, gp_result = _apply_gp(maps, spectra, result, fit, gp, say, t0)
    return FitRun(maps, plan, result, prepare, fit, gp, gp_result, None if in_memory else jr)


def _chunks_to_fit(plan, jr, keep_spectra, say):
    """The chunks that the journal does not hold (with spectra if asked), and the spectra done."""
    done = jr.done()
    need = set(SPECTRA_KEYS) if keep_spectra else set()
    complete = {k for k in done if k < plan.n_chunks and (need | {"params"}) <= jr.chunk_names(k)}
    todo = [k for k in range(plan.n_chunks) if k not in complete]
    n_done = int(sum(np.diff(plan.chunk_range(k))[0] for k in complete))
    if complete and jr.path is not None:
        say(f"resuming from {jr.path}: {len(complete)} of {plan.n_chunks} chunks done; fitting the other {len(todo)}")
    return todo, n_done


def _journal_error(jr, exc):
    kept = len(jr.done())
    return InputError(f"{jr.path}: cannot write the journal ({exc.strerror or exc}); the {kept} chunks "
                      "journalled so far are kept: make room and run the same command again to resume")


def _fit_missing_chunks_on_cluster(plan, jr, keep_spectra, client, progress, say):
    """:func:`_fit_missing_chunks` as Dask tasks (:mod:`cube3d.cluster`): the workers write the journal."""
    try:
        jr.create(*plan.to_arrays())  # the workers read the plan from it
    except OSError as exc:
        raise _journal_error(jr, exc) from None
    todo, n_done = _chunks_to_fit(plan, jr, keep_spectra, say)
    if todo:
        say(f"fitting {len(todo)} chunks as Dask tasks")
    if progress is not None:
        progress(n_done, plan.n_spec)
    if not todo:
        return
    count = {"done": n_done}

    def finished(n):
        count["done"] += n
        progress(count["done"], plan.n_spec)

    sizes = [int(np.diff(plan.chunk_range(k))[0]) for k in todo]
    fit_chunks_on_cluster(client, fit_journal_chunk, jr.path, todo, sizes, keep_spectra=keep_spectra,
                          progress=None if progress is None else finished)


def _fit_missing_chunks(source, plan, fit, jr, keep_spectra, progress, say):
    """Fit and journal the chunks that the journal does not hold (with spectra if asked)."""
    todo, n_done = _chunks_to_fit(plan, jr, keep_spectra, say)
    if progress is not None:
        progress(n_done, plan.n_spec)
    for k in todo:
        s0, s1 = plan.chunk_range(k)
        sub = None
        if progress is not None:
            base = int(n_done)
            sub = lambda done, total, base=base, n=s1 - s0: progress(base + min(done, n), plan.n_spec)  # noqa: E731
        record = fit_chunk(source, plan, k, fit, keep_spectra=keep_spectra, progress=sub)
        try:
            if not jr.has_plan():
                jr.create(*plan.to_arrays())
            jr.write_chunk(k, record)
        except OSError as exc:
            raise _journal_error(jr, exc) from None
        n_done += s1 - s0
        _release_free_memory()


def _release_free_memory():
    """Give the memory freed by a chunk back to the system (glibc ``malloc_trim``; nothing elsewhere).

    A chunk's arrays of a few MiB each are freed in other orders and sizes than they were
    allocated (and on other threads), and glibc keeps the holes: resident memory crept up
    by ~1 MiB per chunk (+35 MiB over 57 chunks of a 120 x 120 cube, flat with this).
    """
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            _MALLOC_TRIM = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM = None


def fit_chunk(source, plan: CubePlan, k: int, fit: FitConfig, *, keep_spectra: bool = False,
              progress: Optional[Callable[[int, int], None]] = None) -> dict:
    """Prepare and fit chunk ``k`` of a plan: the record a journal stores for it.

    Any process can do this with the cube, the plan and the fit settings
    (:func:`fit_journal_chunk` takes them from a journal).

    Returns
    -------
    dict of str -> ndarray
        Every per-spectrum field of :class:`~cube3d.fit.FitResult` but ``bestfit`` and
        ``weights_used``, ``param_names``, ``scale`` and ``snr`` of the chunk's spectra;
        with ``keep_spectra``, ``spec``, ``model`` (the best fit, NaN where not fitted)
        and ``weight`` as float32 (n, n_pix).
    """
    data, scale, snr = prepare_chunk(source, plan, k)
    n = data.spectra.shape[0]
    if n < fit.chunk_size:  # pad to one compiled batch: no second compilation for a short chunk
        pad = np.zeros((fit.chunk_size - n, data.spectra.shape[1]))
        data = data._replace(spectra=np.vstack([data.spectra, pad]), ivar=np.vstack([data.ivar, pad]))
    result = fit_spectra(data, fit, progress=progress)
    record = {name: np.asarray(value)[:n] for name, value in result._asdict().items()
              if name not in PER_PIXEL + ("param_names",)}
    record.update(param_names=np.asarray(result.param_names, dtype=str), scale=np.asarray(scale),
                  snr=np.asarray(snr))
    if keep_spectra:
        record.update(spec=data.spectra[:n].astype(np.float32), model=np.asarray(result.bestfit[:n], np.float32),
                      weight=np.asarray(result.weights_used[:n], np.float32))
    return record


def fit_journal_chunk(journal, k: int, *, keep_spectra: bool = False) -> None:
    """Fit chunk ``k`` of an existing journal and store its record there (atomically).

    Everything comes from the journal: the cube's path and identity, the plan and the
    fit settings; a cube that changed since is refused (:class:`InputError`).  This is
    the unit of work a scheduler (Dask) can hand to any process.
    """
    enable_x64()
    if os.environ.get(CACHE_ENV) and active_cache_dir() is None:
        enable_compile_cache()  # once per worker of cube3d's LocalCluster (or one told where the cache is)
    key = Journal(journal, {}).stored_key()
    settings = key["settings"]
    source = open_cube(key["cube"]["path"], layout=settings.get("layout", "auto"))
    if source.identity() != key["cube"]:
        raise InputError(f"{journal}: the input cube {key['cube']['path']} changed since the journal was made")
    jr = Journal(journal, key)
    plan = CubePlan.from_arrays(*jr.load_plan())
    fit = FitConfig(**{name: settings[name] for name in FitConfig._fields if name in settings})
    jr.write_chunk(k, fit_chunk(source, plan, k, fit, keep_spectra=keep_spectra))
    _release_free_memory()  # a worker process fits many chunks


def write_run(run: FitRun, path, *, overwrite: bool = False, spectra: bool = False, model_cube: bool = False):
    """Write a run's maps (and model cube) atomically, then remove its journal.

    Parameters
    ----------
    run : FitRun
        From :func:`run_fit`; with ``spectra`` or ``model_cube`` it must have been run
        with ``keep_spectra=True``.
    path : str or Path
        The maps file (:func:`cube3d.maps.write_maps`).
    overwrite : bool
        Replace existing files.
    spectra : bool
        Write the per-bin spectra (``LOGLAM``, ``SPEC``, ``MODEL``, ``WEIGHT``), from the
        journal a chunk at a time.
    model_cube : bool
        Write ``<stem>_model.fits``, from the journal a chunk at a time.

    Returns
    -------
    pathlib.Path
        The maps file.
    """
    plan, jr = run.prepared, run.journal
    stream = jr is not None and (spectra or model_cube)
    if stream and run.maps.spectra is None and plan.n_chunks and not set(SPECTRA_KEYS) <= jr.chunk_names(0):
        raise InputError("write_run: the run kept no spectra; call run_fit with keep_spectra=True")
    maps = run.maps if spectra else dataclasses.replace(run.maps, spectra=None)
    blocks = JournalSpectra(jr, plan) if stream and spectra and maps.spectra is None else None
    model, header = None, None
    if model_cube:
        model = JournalModel(jr, plan, READ_BLOCK) if jr is not None else model_cube_from_spectra(run)
        header = run.maps.wcs.to_header()
        header["WCSAXES"] = 3
        header["CTYPE3"] = "WAVE-LOG" if not plan.air else "AWAV-LOG"
        header["CUNIT3"] = "Angstrom"
        header["CRPIX3"] = 1.0
        header["CRVAL3"] = float(plan.wave[0])
        header["CDELT3"] = float(plan.velscale / C_KMS * plan.wave[0])
        header["SPECSYS"] = "SOURCE"
    written = write_maps(maps, path, overwrite=overwrite, model_cube=model, cube_header=header, spectra=blocks)
    if jr is not None:
        jr.remove()
    return written


def model_cube_from_spectra(run: FitRun) -> np.ndarray:
    """The model cube of a run whose spectra are in ``run.maps.spectra`` (no journal)."""
    if run.maps.spectra is None:
        raise InputError("model cube: the run kept no spectra; call run_fit with keep_spectra=True")
    plan = run.prepared
    model = np.where(np.asarray(run.result.ok)[:, None], run.maps.spectra["MODEL"], np.nan)
    bestfit_run = run.result._replace(bestfit=model)
    return model_cube(plan, bestfit_run)


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


def _warn_about_gp_tier(tier, snr):
    """A :class:`~cube3d.errors.ResultWarning` when a tier that takes the per-spaxel fits as
    its data was asked for below :data:`JOINT_TIER_BELOW_SN`, at the line calling :func:`run_fit`."""
    med = float(np.nanmedian(np.asarray(snr, float))) if np.size(snr) else 0.0
    if tier in GP_TIERS_FITTING_SPECTRA or med >= JOINT_TIER_BELOW_SN:
        return
    warnings.warn(f"--gp-tier {tier} at a median S/N per pixel of {med:.1f} (< {JOINT_TIER_BELOW_SN:g}): its data are "
                  "the per-spaxel fits, whose sigma is biased there, and its errors do not cover the truth (two_step's "
                  f"SIGMA coverage 0.00 on mocks at S/N 2-5); spaxels below S/N {RELIABLE_SN:g} keep FLAG "
                  f"{FLAG_BELOW_RELIABLE_SN}; --gp-tier joint_map fits the spectra with the prior",
                  ResultWarning, stacklevel=4)


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
