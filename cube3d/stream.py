"""A cube prepared chunk by chunk, so that memory is set by the chunk, not the cube.

:func:`cube3d.prepare.prepare_cube` holds every spectrum of a cube at once.  Here the
same preparation is split in two:

1. :func:`plan_cube` makes one pass over the cube (:class:`cube3d.io.source.CubeSource`,
   blocks of :data:`READ_BLOCK` spaxels) for what needs every spaxel: median flux and
   S/N per spaxel, the selection (``--min-sn``), the Voronoi bins (``--target-sn``), the
   summed spectrum for ``--n-basis``; it prepares the templates once.  The result, a
   :class:`CubePlan`, has every attribute of :class:`~cube3d.prepare.PreparedData` but
   the spectra, and splits the spectra into chunks of at most ``chunk_spectra``.
2. :func:`prepare_chunk` reads the spaxels of one chunk again and returns its spectra
   ready for :func:`cube3d.fit.fit_spectra` (a :class:`~cube3d.fit.FitInput`).  A chunk
   is defined by (cube, plan, chunk index) alone, so any process can prepare and fit it.

Spaxels are read with the functions of :func:`~cube3d.io.read_cube` and rebinned,
normalised and selected with those of :func:`~cube3d.prepare.prepare_cube`, so without
binning every spectrum equals prepare_cube's to the last bit.  With binning the member
spectra are summed a block at a time (the sums agree with prepare_cube's to rounding)
and bins are numbered in raster order of their first spaxel, so that a chunk of bins
reads neighbouring rows.  ``--n-basis`` chooses the templates on the sum of the
selected spaxels (prepare_cube: of the spectra fitted, i.e. of the bins when binning).

Memory: one chunk's arrays, about ``chunk_spectra * (40 n_wave + 80 n_pix)`` bytes for
reading and rebinning (blocks of :data:`READ_BLOCK` spaxels when binning), plus a few
numbers per spaxel for the plan.
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from typing import Optional

import numpy as np
import scipy.sparse as sp

from .errors import InputError
from .fit import FitInput
from .io.fitsutil import where
from .io.reader import format_bytes
from .linemask import emission_line_mask
from .prepare import (
    PrepareConfig,
    SpaxelStats,
    broaden_templates,
    check_lsf_range,
    check_options,
    convert_convention,
    normalise_spectra,
    prepare_cube,
    rebin_spaxels,
    rebin_templates,
    resolve_lsf,
    rest_frame_edges,
    select_basis,
    select_spaxels,
    spectral_grid,
    voronoi_bins,
)
from .rebin import wave_edges

__all__ = ["CubePlan", "plan_cube", "prepare_chunk", "materialise", "chunk_bounds", "STREAM_SPECTRA", "READ_BLOCK"]

#: spectra per chunk (rounded up to a multiple of ``FitConfig.chunk_size``)
STREAM_SPECTRA = 256

#: spaxels read and rebinned at once (the first pass, and the members of binned chunks)
READ_BLOCK = 256

#: prepare_cube's settings that PrepareConfig does not carry (emission_width, margin_kms,
#: min_good_fraction), taken from its signature so that the two cannot drift apart
_DEFAULTS = {name: p.default for name, p in inspect.signature(prepare_cube).parameters.items()
             if p.kind is inspect.Parameter.KEYWORD_ONLY}


def chunk_bounds(n_spec: int, chunk_spectra: int, chunk_size: int) -> np.ndarray:
    """First spectrum of every chunk and the end, shape (n_chunks + 1,).

    ``chunk_spectra`` is rounded up to a multiple of ``chunk_size`` (the fit's compiled
    batch), so that only the last chunk has a partial batch.
    """
    per = max(int(chunk_size), int(np.ceil(chunk_spectra / chunk_size)) * int(chunk_size))
    return np.append(np.arange(0, n_spec, per), n_spec).astype(np.int64)


@dataclasses.dataclass(frozen=True, eq=False)
class CubePlan:
    """Everything of a prepared cube but its spectra (:func:`plan_cube`).

    Has the attributes of :class:`~cube3d.prepare.PreparedData` that the maps, the flags
    and the spatial priors read (``ln_wave``, ``velscale``, ``templates``,
    ``template_offset``, ``template_names``, ``snr``, ``bin_id``, ``scale``, ``redshift``,
    ``spatial_shape``, ``air``, ``n_spec``, ``n_pix``, ``wave``), plus what
    :func:`prepare_chunk` needs to make the spectra of a chunk.

    Attributes
    ----------
    members, member_ptr : ndarray of int
        The spaxels (flattened ``y * nx + x``) of spectrum ``s`` are
        ``members[member_ptr[s]:member_ptr[s + 1]]``, increasing.
    chunk_starts : ndarray of int, shape (n_chunks + 1,)
        Chunk ``k`` holds spectra ``chunk_starts[k]`` to ``chunk_starts[k + 1] - 1``.
    binned : bool
        Spectra are Voronoi bins (else one spaxel each).
    snr, scale : ndarray, shape (n_spec,)
        Median S/N per pixel and normalisation (cube flux units); for bins they are
        known only once their chunk is prepared (NaN until :meth:`with_stats`).
    ln_edges, edges_rest, line_mask : ndarray
        The galaxy grid's edges (ln Angstrom), the cube's rest-frame pixel edges
        (Angstrom), the emission- and sky-line mask on the grid.
    notes : tuple of (str, str)
        Warnings issued while planning (category name, message), repeated by a run
        that loads the plan from a journal.
    """

    ln_wave: np.ndarray
    ln_edges: np.ndarray
    edges_rest: np.ndarray
    line_mask: np.ndarray
    velscale: float
    templates: np.ndarray
    template_offset: int
    template_names: tuple
    snr: np.ndarray
    scale: np.ndarray
    bin_id: np.ndarray
    members: np.ndarray
    member_ptr: np.ndarray
    chunk_starts: np.ndarray
    binned: bool
    redshift: float
    spatial_shape: tuple
    air: bool
    notes: tuple = ()

    @property
    def n_spec(self) -> int:
        """Number of spectra (spaxels or bins)."""
        return int(self.member_ptr.size - 1)

    @property
    def n_pix(self) -> int:
        """Pixels per spectrum."""
        return int(self.ln_wave.size)

    @property
    def wave(self) -> np.ndarray:
        """Rest-frame wavelength at pixel centres, Angstrom."""
        return np.exp(self.ln_wave)

    @property
    def n_chunks(self) -> int:
        return int(self.chunk_starts.size - 1)

    def chunk_range(self, k: int) -> tuple[int, int]:
        """``(first, stop)`` spectrum indices of chunk ``k``."""
        if not 0 <= k < self.n_chunks:
            raise InputError(f"chunk {k}: the plan has chunks 0 to {self.n_chunks - 1}")
        return int(self.chunk_starts[k]), int(self.chunk_starts[k + 1])

    def with_stats(self, snr, scale) -> "CubePlan":
        """The plan with the S/N and normalisation of every spectrum (from its chunk)."""
        return dataclasses.replace(self, snr=np.asarray(snr, float), scale=np.asarray(scale, float))

    # --- storage (cube3d.journal keeps a plan next to the results) ------------------------

    _SCALARS = ("velscale", "template_offset", "binned", "redshift", "air")

    def to_arrays(self) -> tuple[dict, dict]:
        """``(arrays, meta)``: NumPy arrays and JSON-able values that :meth:`from_arrays` restores."""
        arrays = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name not in self._SCALARS + ("template_names", "spatial_shape", "notes")}
        meta = {name: getattr(self, name) for name in self._SCALARS}
        meta.update(template_names=list(self.template_names), spatial_shape=list(self.spatial_shape),
                    notes=[list(n) for n in self.notes])
        meta = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in meta.items()}
        return arrays, meta

    @classmethod
    def from_arrays(cls, arrays: dict, meta: dict) -> "CubePlan":
        kwargs = {name: np.asarray(arrays[name]) for name in arrays}
        kwargs.update({name: meta[name] for name in cls._SCALARS})
        kwargs.update(template_names=tuple(meta["template_names"]), spatial_shape=tuple(meta["spatial_shape"]),
                      notes=tuple(tuple(n) for n in meta["notes"]))
        return cls(**kwargs)

    def repeat_notes(self, stacklevel: int = 2) -> None:
        """Issue again the warnings recorded while planning."""
        from . import errors

        for category, message in self.notes:
            warnings.warn(message, getattr(errors, category, UserWarning), stacklevel=stacklevel + 1)


def plan_cube(source, templates, redshift: float, config: PrepareConfig = PrepareConfig(), *,
              chunk_spectra: int = STREAM_SPECTRA, chunk_size: int = 16, log=None) -> CubePlan:
    """The first pass over a cube: selection, bins, templates and chunks (no spectra kept).

    Parameters
    ----------
    source : cube3d.io.source.CubeSource
        The cube, on disk (:func:`cube3d.io.open_cube`).
    templates : cube3d.templates.TemplateLibrary
    redshift : float
    config : PrepareConfig
        As for :func:`cube3d.prepare.prepare_cube` (``layout`` was used to open ``source``).
    chunk_spectra, chunk_size : int
        Spectra per chunk, rounded up to a multiple of ``chunk_size`` (:func:`chunk_bounds`).
    log : callable, optional
        Receives one line when the pass is done.

    Returns
    -------
    CubePlan

    Raises
    ------
    InputError
        Every error of :func:`~cube3d.prepare.prepare_cube` (same messages), and that of
        :func:`~cube3d.io.read_cube` when no pixel of the cube has weight.

    Warns
    -----
    As :func:`~cube3d.prepare.prepare_cube`; each warning is also kept in ``CubePlan.notes``.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = _plan(source, templates, redshift, config, chunk_spectra, chunk_size, log)
    notes = []
    for w in caught:
        warnings.warn(w.message, w.category, stacklevel=2)
        notes.append((w.category.__name__, str(w.message)))
    return dataclasses.replace(plan, notes=tuple(notes))


def _plan(source, templates, redshift, config, chunk_spectra, chunk_size, log):
    emission_width = _DEFAULTS["emission_width"]
    margin_kms = _DEFAULTS["margin_kms"]
    min_good_fraction = _DEFAULTS["min_good_fraction"]
    check_options(redshift, config.velscale, config.target_sn, config.min_sn, emission_width, config.n_basis,
                   margin_kms, config.wave_range, min_good_fraction)
    redshift = float(redshift)
    n_wave = source.n_wave
    ny, nx = source.spatial_shape
    air = bool(source.air)

    # grids, masks and LSF: as prepare_cube
    edges_rest = rest_frame_edges(source, n_wave, air, redshift)
    tpl_edges = convert_convention(wave_edges(templates.wave, n_flux=templates.flux.shape[1]),
                                    bool(templates.air), air)
    wave_range = config.wave_range
    if wave_range is not None:
        wave_range = tuple(convert_convention(np.asarray(wave_range, float), bool(templates.air), air))
    grid = spectral_grid(edges_rest, tpl_edges, redshift, air, config.velscale, wave_range, margin_kms)
    line_mask = emission_line_mask(grid.ln_wave, redshift, emission_width, air=air) if config.mask_emission \
        else np.zeros(grid.ln_wave.size, dtype=bool)
    lsf_obj = resolve_lsf(config.lsf, source)
    if config.lsf is not None:
        check_lsf_range(lsf_obj, source, n_wave, edges_rest, grid)
    t_edges, t_flux = broaden_templates(templates, tpl_edges, grid, lsf_obj, redshift)
    names = tuple(templates.names)
    tpl = rebin_templates(t_edges, t_flux, grid.tpl_ln_edges, tpl_edges, names)

    # the pass: statistics of every spaxel, and the sum of the selected ones for --n-basis
    n_sp, n_pix = ny * nx, grid.ln_wave.size
    med, snr = np.empty(n_sp), np.empty(n_sp)
    n_good, representable = np.empty(n_sp, dtype=np.int64), np.empty(n_sp, dtype=bool)
    has_weight = False
    stack, stack_n = np.zeros(n_pix), np.zeros(n_pix, dtype=np.int64)
    for s0 in range(0, n_sp, READ_BLOCK):
        idx = np.arange(s0, min(s0 + READ_BLOCK, n_sp))
        flux, ivar = source.read(idx)
        has_weight = has_weight or bool(np.any(ivar > 0))
        spx = rebin_spaxels(flux, ivar, edges_rest, grid.ln_edges, line_mask)
        del flux, ivar
        med[idx], snr[idx], n_good[idx], representable[idx] = spx.med, spx.snr, spx.n_good, spx.representable
        chosen = _usable(spx, n_pix, min_good_fraction) & (spx.snr >= config.min_sn)
        ok = chosen[:, None] & ~spx.bad & ~line_mask[None, :] & (spx.var > 0)  # the fitted pixels
        stack += np.where(ok, spx.spec, 0.0).sum(0)
        stack_n += ok.sum(0)
    if not has_weight:
        raise InputError(f"{where(source.path, source._loc.flux_label)}: every pixel is masked, has no positive "
                         "variance or is non-finite")
    spaxels = SpaxelStats(spec=np.broadcast_to(np.float64(0.0), (n_sp, n_pix)), var=None, var_diag=None, bad=None,
                       med=med, snr=snr, n_good=n_good, representable=representable)  # only .spec.shape is read
    idx_sel = select_spaxels(spaxels, min_good_fraction, config.min_sn, source.path, grid.lo, grid.hi)

    # spectra: one per selected spaxel, or Voronoi bins numbered by their first spaxel
    if config.target_sn is None:
        group = np.arange(idx_sel.size)
        spec_snr, spec_scale = snr[idx_sel], med[idx_sel]
    else:
        yy, xx = np.divmod(idx_sel, nx)
        signal = med[idx_sel]
        group = _raster_order(voronoi_bins(xx, yy, signal, signal / snr[idx_sel], float(config.target_sn)), idx_sel)
        n_bin = int(group.max()) + 1
        spec_snr, spec_scale = np.full(n_bin, np.nan), np.full(n_bin, np.nan)
    order = np.lexsort((idx_sel, group))
    members = idx_sel[order]
    n_spec = int(group.max()) + 1
    member_ptr = np.searchsorted(group[order], np.arange(n_spec + 1)).astype(np.int64)
    bin_id = np.full(n_sp, -1, dtype=np.int64)
    bin_id[idx_sel] = group

    # templates: the basis from the summed spectrum of the selected spaxels
    if config.n_basis is not None and int(config.n_basis) < tpl.shape[0]:
        n_used = idx_sel.size
        total = stack * np.where(stack_n > 0, n_used / np.maximum(stack_n, 1), 0.0)
        chosen = select_basis(total / np.median(total[stack_n > 0]), stack_n * 2 >= n_used, tpl,
                              int(config.n_basis), template_offset=grid.n_ext, velscale=grid.velscale)
        tpl = tpl[chosen]
        names = tuple(names[i] for i in chosen)
    if log is not None:
        kind = f"{n_spec} Voronoi bins of {idx_sel.size} spaxels" if config.target_sn is not None else \
            f"{n_spec} spaxels"
        log(f"planned {kind} of {n_sp} x {grid.ln_wave.size} pixels at {grid.velscale:.1f} km/s "
            f"({np.exp(grid.ln_wave[0]):.0f}-{np.exp(grid.ln_wave[-1]):.0f} A rest), median S/N per spaxel "
            f"{np.nanmedian(snr[idx_sel]):.1f}, {len(names)} templates")
    return CubePlan(
        ln_wave=grid.ln_wave, ln_edges=grid.ln_edges, edges_rest=edges_rest, line_mask=line_mask,
        velscale=grid.velscale, templates=tpl, template_offset=int(grid.n_ext), template_names=names,
        snr=spec_snr, scale=spec_scale, bin_id=bin_id.reshape(ny, nx), members=members, member_ptr=member_ptr,
        chunk_starts=chunk_bounds(n_spec, chunk_spectra, chunk_size), binned=config.target_sn is not None,
        redshift=redshift, spatial_shape=(ny, nx), air=air,
    )


def _median_over(values, good):
    """Median of each row of ``values`` over its ``good`` entries; NaN for a row with none."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(np.where(good, values, np.nan), axis=1)


def _usable(spx, n_pix, min_good_fraction):
    """The usable spaxels of a block, as :func:`cube3d.prepare.select_spaxels` decides."""
    return ((spx.n_good >= max(1, min_good_fraction * n_pix)) & (spx.med > 0) & np.isfinite(spx.snr)
            & spx.representable)


def _raster_order(group, idx_sel):
    """Renumber bins in raster order of their first spaxel (chunks of bins read neighbouring rows)."""
    n_bin = int(group.max()) + 1
    first = np.full(n_bin, np.iinfo(np.int64).max)
    np.minimum.at(first, group, idx_sel)
    new = np.empty(n_bin, dtype=np.int64)
    new[np.argsort(first, kind="stable")] = np.arange(n_bin)
    return new[group]


def prepare_chunk(source, plan: CubePlan, k: int) -> tuple[FitInput, np.ndarray, np.ndarray]:
    """The spectra of chunk ``k``, ready for :func:`cube3d.fit.fit_spectra`.

    Parameters
    ----------
    source : cube3d.io.source.CubeSource
        The cube the plan was made from.
    plan : CubePlan
    k : int
        Chunk index, 0 to ``plan.n_chunks - 1``.

    Returns
    -------
    data : cube3d.fit.FitInput
        Spectra and inverse variances (float64, normalised as by prepare_cube) of
        spectra ``plan.chunk_range(k)``, with the plan's templates.
    scale, snr : ndarray, shape (n,)
        Normalisation (cube flux units) and median S/N per pixel of each spectrum.
    """
    s0, s1 = plan.chunk_range(k)
    ptr = plan.member_ptr[s0 : s1 + 1]
    members = plan.members[ptr[0] : ptr[-1]]
    if not plan.binned:
        flux, ivar = source.read(members)
        spx = rebin_spaxels(flux, ivar, plan.edges_rest, plan.ln_edges, plan.line_mask)
        del flux, ivar
        spec, var, bad, scale, snr = spx.spec, spx.var, spx.bad, spx.med, spx.snr
    else:
        spec, var, bad, scale, snr = _coadd_chunk(source, plan, members, np.repeat(np.arange(s1 - s0), np.diff(ptr)))
    spectra, ivar = normalise_spectra(spec, var, bad, scale, plan.line_mask)
    return FitInput(spectra, ivar, plan.templates, plan.template_offset, plan.velscale), scale, snr


def _coadd_chunk(source, plan, members, group):
    """Sum the members of a chunk's bins, :data:`READ_BLOCK` spaxels at a time.

    The same sums and rules as :func:`cube3d.prepare.prepare_cube` (``_coadd_bins``): at a pixel where some
    members are bad the sum of the good ones is scaled by ``n_members / n_good``
    (variance by its square), and the pixel is bad when fewer than half are good.
    """
    n_bin, n_pix = int(group.max()) + 1, plan.n_pix
    spec, var, var_diag = np.zeros((n_bin, n_pix)), np.zeros((n_bin, n_pix)), np.zeros((n_bin, n_pix))
    n_ok = np.zeros((n_bin, n_pix))
    for b0 in range(0, members.size, READ_BLOCK):
        sl = slice(b0, min(b0 + READ_BLOCK, members.size))
        flux, ivar = source.read(members[sl])
        spx = rebin_spaxels(flux, ivar, plan.edges_rest, plan.ln_edges, plan.line_mask)
        del flux, ivar
        g = group[sl]
        member = sp.csr_matrix((np.ones(g.size), (g, np.arange(g.size))), shape=(n_bin, g.size))
        ok = ~spx.bad
        n_ok += member @ ok.astype(np.float64)
        spec += member @ np.where(ok, spx.spec, 0.0)
        var += member @ np.where(ok, spx.var, 0.0)
        var_diag += member @ np.where(ok, spx.var_diag, 0.0)
    n_mem = np.bincount(group, minlength=n_bin).astype(np.float64)[:, None]
    factor = np.where(n_ok > 0, n_mem / np.maximum(n_ok, 1), 0.0)
    spec *= factor
    var *= factor**2
    var_diag *= factor**2
    bad = 2 * n_ok < n_mem
    good = ~bad & ~plan.line_mask[None, :] & (var_diag > 0)
    scale = _median_over(spec, good)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        snr = _median_over(spec / np.sqrt(var_diag), good)
    return spec, var, bad, scale, snr


def materialise(source, plan: CubePlan, free_bytes: Optional[int] = None):
    """Every spectrum of the plan at once, as :class:`~cube3d.prepare.PreparedData`
    (for the spatial tier that fits all spectra together); InputError when they would
    not fit in ``free_bytes``."""
    from .prepare import PreparedData

    need = 2 * 8 * plan.n_spec * plan.n_pix
    if free_bytes is not None and need > free_bytes:
        raise InputError(f"the spectra of all {plan.n_spec} spaxels need {format_bytes(need)} in memory, more than "
                         f"the {format_bytes(free_bytes)} available")
    spectra, ivar = np.empty((plan.n_spec, plan.n_pix)), np.empty((plan.n_spec, plan.n_pix))
    scale, snr = np.empty(plan.n_spec), np.empty(plan.n_spec)
    for k in range(plan.n_chunks):
        s0, s1 = plan.chunk_range(k)
        data, scale[s0:s1], snr[s0:s1] = prepare_chunk(source, plan, k)
        spectra[s0:s1], ivar[s0:s1] = data.spectra, data.ivar
    return PreparedData(spectra=spectra, ivar=ivar, ln_wave=plan.ln_wave, velscale=plan.velscale,
                        templates=plan.templates, template_offset=plan.template_offset,
                        template_names=plan.template_names, snr=snr, bin_id=plan.bin_id, scale=scale,
                        redshift=plan.redshift, spatial_shape=plan.spatial_shape, air=plan.air)
