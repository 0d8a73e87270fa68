"""Prepare a cube and a template library for the per-spectrum LOSVD fit.

:func:`prepare_cube` turns a :class:`cube3d.io.Cube` and a
:class:`cube3d.templates.TemplateLibrary` into :class:`PreparedData`: rest-frame
spectra on one uniform ln(lambda) grid (spaxels or Voronoi bins), their inverse
variances with masks as zero weights, and LSF-matched templates on the same grid
extended on both sides, ready to be Fourier-transformed once by the fitter.

Conventions
-----------
* Wavelengths are rest-frame Angstrom in the *templates'* air/vacuum convention;
  the cube's wavelengths are converted when the conventions differ.
* Galaxy pixel ``j`` has ln(lambda) = ``ln_wave[j]`` and sits at template pixel
  ``j + template_offset``.  A velocity ``v`` (km/s, relative to ``redshift``) is
  a shift of ``v / velscale`` pixels (Cappellari 2017, MNRAS 466, 798, Sec. 2).
* Every spectrum and template is divided by its median, so the fitted template
  weights are of order one; ``scale`` keeps the cube's flux units.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from .constants import C_KMS
from .basis import fit_stack, select_basis
from .errors import InputError
from .linemask import EMISSION_LINES_AIR, SKY_LINES_AIR, emission_line_mask
from .lsf import LineSpreadFunction, as_lsf, match_resolution
from .rebin import log_grid, log_rebin, wave_edges
from .templates import TemplateLibrary

__all__ = [
    "PreparedData",
    "prepare_cube",
    "EMISSION_LINES_AIR",
    "SKY_LINES_AIR",
    "emission_line_mask",
    "voronoi_bins",
    "select_basis",
    "fit_stack",
]

@dataclass(frozen=True)
class PreparedData:
    """Spectra and templates ready for the fit (see the module docstring).

    Attributes
    ----------
    spectra : ndarray, shape (n_spec, n_pix)
        Rest-frame log-rebinned spectra (spaxels or Voronoi bins), each divided by
        its median over the fitted pixels.  Values where ``ivar == 0`` are finite
        (data where they exist, 1 where they do not).
    ivar : ndarray, shape (n_spec, n_pix)
        Inverse variance in the normalised units; 0 = masked (bad pixel,
        emission-line mask).  See :func:`cube3d.rebin.log_rebin` for how the
        correlated rebinned noise is represented.
    ln_wave : ndarray, shape (n_pix,)
        ln(rest-frame wavelength / Angstrom) at pixel centres, step ``velscale / c``.
    velscale : float
        km/s per pixel.
    templates : ndarray, shape (n_tpl, n_tpl_pix)
        LSF-matched templates on the same ln grid extended on both sides, each
        normalised to median 1.
    template_offset : int
        Galaxy pixel ``j`` is template pixel ``j + template_offset``.
    template_names : tuple of str
    snr : ndarray, shape (n_spec,)
        Median S/N per pixel over the fitted pixels (from the diagonal of the
        rebinned covariance, i.e. about the S/N per input pixel).
    bin_id : ndarray of int, shape (ny, nx)
        Index into ``spectra`` for each spaxel; -1 = not fitted.
    scale : ndarray, shape (n_spec,)
        Normalisation divided out, in the cube's flux units.
    redshift : float
    spatial_shape : tuple of int
        (ny, nx).
    air : bool
        True when the rest-frame wavelengths are in air.
    """

    spectra: np.ndarray
    ivar: np.ndarray
    ln_wave: np.ndarray
    velscale: float
    templates: np.ndarray
    template_offset: int
    template_names: tuple
    snr: np.ndarray
    bin_id: np.ndarray
    scale: np.ndarray
    redshift: float
    spatial_shape: tuple
    air: bool

    @property
    def n_spec(self) -> int:
        """Number of spectra (spaxels or bins)."""
        return int(self.spectra.shape[0])

    @property
    def n_pix(self) -> int:
        """Pixels per spectrum."""
        return int(self.spectra.shape[1])

    @property
    def wave(self) -> np.ndarray:
        """Rest-frame wavelength at pixel centres, Angstrom."""
        return np.exp(self.ln_wave)


# ----------------------------------------------------------------------------- helpers


def _convert_convention(wave: np.ndarray, from_air: bool, to_air: bool) -> np.ndarray:
    if from_air == to_air:
        return wave
    from .io import air_to_vacuum, vacuum_to_air  # the conversions live with the reader

    return air_to_vacuum(wave) if from_air else vacuum_to_air(wave)


def voronoi_bins(x, y, signal, noise, target_sn: float) -> np.ndarray:
    """Voronoi bin number per spaxel (Cappellari & Copin 2003, MNRAS 342, 345).

    Thin wrapper on ``vorbin.voronoi_2d_binning`` (``plot=False, quiet=True``,
    ``pixelsize=1``) that also covers its two refusals: when every spaxel already
    reaches ``target_sn`` each is its own bin; when all of them together do not,
    they form one bin (with a warning).
    """
    signal = np.asarray(signal, dtype=np.float64)
    noise = np.asarray(noise, dtype=np.float64)
    n = signal.size
    if n == 1 or np.all(signal / noise >= target_sn):
        return np.arange(n)
    if signal.sum() / np.sqrt(np.sum(noise**2)) < target_sn:
        warnings.warn(
            f"--target-sn: all {n} spaxels together reach S/N "
            f"{signal.sum() / np.sqrt(np.sum(noise**2)):.1f} < {target_sn}; using one bin",
            stacklevel=3,
        )
        return np.zeros(n, dtype=int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # vorbin warns about its own deprecation at import
        from vorbin.voronoi_2d_binning import voronoi_2d_binning

        out = voronoi_2d_binning(
            np.asarray(x, dtype=np.float64),
            np.asarray(y, dtype=np.float64),
            signal,
            noise,
            target_sn,
            pixelsize=1.0,
            plot=False,
            quiet=True,
        )
    bin_num = np.asarray(out[0], dtype=int)
    # renumber consecutively (vorbin already does; keep it robust)
    _, bin_num = np.unique(bin_num, return_inverse=True)
    return bin_num.ravel()


def _nanmedian(values: np.ndarray, good: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-masked rows give NaN
        return np.nanmedian(np.where(good, values, np.nan), axis=1)


def _rebin_spaxels(flux, ivar, edges_rest, ln_edges, line_mask, block=1024):
    """Log-rebin (n_wave, n_sp) spaxels in blocks; medians and S/N per spaxel.

    Returns ``spec, var, var_diag, bad`` (each (n_sp, n_pix)) and ``med, snr,
    n_good`` (each (n_sp,)) over the pixels that are neither bad nor in
    ``line_mask``.  Only the input channels that overlap the grid are used.
    """
    n_wave, n_sp = flux.shape
    n_pix = ln_edges.size - 1
    lo, hi = np.exp(ln_edges[0]), np.exp(ln_edges[-1])
    i0 = max(int(np.searchsorted(edges_rest, lo, side="right")) - 1, 0)
    i1 = min(int(np.searchsorted(edges_rest, hi, side="left")), n_wave)
    edges = edges_rest[i0 : i1 + 1]
    spec = np.empty((n_sp, n_pix))
    var = np.empty((n_sp, n_pix))
    var_diag = np.empty((n_sp, n_pix))
    bad = np.empty((n_sp, n_pix), dtype=bool)
    med = np.empty(n_sp)
    snr = np.empty(n_sp)
    n_good = np.empty(n_sp, dtype=int)
    for s0 in range(0, n_sp, block):  # blocks of spaxels, each vectorised
        sl = slice(s0, min(s0 + block, n_sp))
        f = flux[i0:i1, sl]
        iv = ivar[i0:i1, sl]
        bad_in = ~(iv > 0) | ~np.isfinite(iv) | ~np.isfinite(f)
        var_in = 1.0 / np.where(bad_in, 1.0, iv)
        var_in[bad_in] = 0.0
        reb = log_rebin(edges, f, ln_edges=ln_edges, variance=var_in, bad=bad_in, axis=0)
        spec[sl], var[sl], var_diag[sl], bad[sl] = reb.flux.T, reb.variance.T, reb.variance_diag.T, reb.bad.T
        good = ~bad[sl] & ~line_mask[None, :]
        n_good[sl] = good.sum(1)
        med[sl] = _nanmedian(spec[sl], good)
        with np.errstate(divide="ignore", invalid="ignore"):
            snr[sl] = _nanmedian(spec[sl] / np.sqrt(var_diag[sl]), good & (var_diag[sl] > 0))
    return spec, var, var_diag, bad, med, snr, n_good


def _resolve_lsf(lsf: Any, cube) -> LineSpreadFunction | None:
    if lsf is not None:
        return as_lsf(lsf)
    lsf_fwhm = getattr(cube, "lsf_fwhm", None)
    if lsf_fwhm is not None:
        return as_lsf((np.asarray(cube.wave, dtype=np.float64), np.asarray(lsf_fwhm, dtype=np.float64)))
    if str(getattr(cube, "layout", "")).upper() == "MUSE":
        return as_lsf("MUSE")
    warnings.warn(
        f"{getattr(cube, 'path', 'cube')}: no line-spread function known; templates are not "
        "broadened to the instrument's resolution (give --lsf)",
        stacklevel=3,
    )
    return None


def _check_options(redshift, velscale, target_sn, min_sn, emission_width, n_basis, margin_kms, wave_range):
    try:
        z = float(redshift)
    except (TypeError, ValueError):
        raise InputError(f"--redshift: must be a finite number > -1, got {redshift!r}") from None
    if not (np.isfinite(z) and z > -1):
        raise InputError(f"--redshift: must be a finite number > -1, got {redshift}")
    if velscale is not None and not (np.isfinite(velscale) and velscale > 0):
        raise InputError(f"--velscale: must be a positive number of km/s, got {velscale}")
    if target_sn is not None and not (np.isfinite(target_sn) and target_sn > 0):
        raise InputError(f"--target-sn: must be a positive number, got {target_sn}")
    if not np.isfinite(min_sn):
        raise InputError(f"--min-sn: must be a finite number, got {min_sn}")
    if not (np.isfinite(emission_width) and emission_width >= 0):
        raise InputError(f"--emission-width: must be a non-negative number of km/s, got {emission_width}")
    if n_basis is not None and (int(n_basis) != n_basis or n_basis < 1):
        raise InputError(f"--n-basis: must be a positive integer, got {n_basis}")
    if not (np.isfinite(margin_kms) and margin_kms >= 0):
        raise InputError(f"margin_kms: must be a non-negative number of km/s, got {margin_kms}")
    if wave_range is not None:
        try:
            lo, hi = (float(v) for v in wave_range)
        except (TypeError, ValueError):
            raise InputError(f"--wave-range: need two wavelengths in Angstrom, got {wave_range!r}") from None
        if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo < hi):
            raise InputError(f"--wave-range: need 0 < min < max (Angstrom), got {lo}-{hi}")


# ----------------------------------------------------------------------------- main entry


def prepare_cube(
    cube,
    templates: TemplateLibrary,
    redshift: float,
    *,
    velscale: float | None = None,
    wave_range: tuple[float, float] | None = None,
    target_sn: float | None = None,
    min_sn: float = 0.0,
    mask_emission: bool = True,
    emission_width: float = 800.0,
    lsf: Any = None,
    n_basis: int | None = None,
    margin_kms: float = 2000.0,
    min_good_fraction: float = 0.25,
) -> PreparedData:
    """Log-rebin, de-redshift, mask, bin and normalise a cube; prepare templates.

    Parameters
    ----------
    cube : cube3d.io.Cube
        The data: ``flux`` and ``ivar`` (n_wave, ny, nx), ``wave`` (Angstrom),
        ``air``, ``lsf_fwhm`` (or None), ``layout``, ``path``.
    templates : TemplateLibrary
        Rest-frame templates with their FWHM and air/vacuum convention.
    redshift : float
        Galaxy redshift z (``--redshift``); velocities are relative to it.
    velscale : float, optional
        Pixel size in km/s.  Default: the cube's smallest pixel in km/s within
        the fitted range (no spectral information is lost).
    wave_range : (float, float), optional
        Rest-frame range to fit, Angstrom, in the templates' convention
        (``--wave-range``).  Default: the overlap of cube and templates shrunk
        by ``margin_kms`` on both sides.
    target_sn : float, optional
        Voronoi-bin the spaxels to this S/N per pixel (``--target-sn``; vorbin,
        Cappellari & Copin 2003).  Default: no binning.
    min_sn : float
        Spaxels with a median S/N below this are not fitted (``--min-sn``).
    mask_emission : bool
        Mask :data:`EMISSION_LINES_AIR` and :data:`SKY_LINES_AIR`.
    emission_width : float
        Full width of each masked window, km/s (``--emission-width``).
    lsf : optional
        Instrumental FWHM (anything :func:`cube3d.lsf.as_lsf` accepts).  Default:
        the cube's own LSF, else the MUSE WFM formula for MUSE cubes, else none
        (with a warning).
    n_basis : int, optional
        Keep only this many templates, chosen by :func:`select_basis` on the
        summed spectrum (``--n-basis``).
    margin_kms : float
        Velocity margin of the templates beyond the galaxy range on each side.
    min_good_fraction : float
        A spectrum needs at least this fraction of unmasked pixels to be fitted.

    Returns
    -------
    PreparedData

    Raises
    ------
    InputError
        Non-finite redshift or z <= -1; templates not covering the range
        (naming ``--templates`` and both ranges); an empty ``--wave-range``; no
        spaxel with usable pixels; invalid option values.

    Notes
    -----
    Noise: rebinning correlates neighbouring pixels.  ``ivar`` uses the
    overlap-shared variance of :func:`cube3d.rebin.log_rebin` (exact for sums
    over whole input pixels, so parameter errors from a diagonal fit are right to
    first order); ``snr`` uses the exact diagonal.  A rebinned pixel is masked
    when any input pixel it touches is bad.

    Voronoi bins co-add the member spectra and variances; at a pixel where some
    members are bad the sum over the good ones is scaled by
    ``n_members / n_good`` (variance by its square) and the pixel is masked when
    fewer than half the members are good.

    Examples
    --------
    >>> from cube3d.io import read_cube
    >>> from cube3d.templates import load_templates
    >>> cube = read_cube("muse_abell478_minicube.fits")  # doctest: +SKIP
    >>> lib = load_templates("templates/mileshc_v2")  # doctest: +SKIP
    >>> prep = prepare_cube(cube, lib, 0.0856, target_sn=20, n_basis=10)  # doctest: +SKIP
    >>> prep.spectra.shape, prep.templates.shape  # doctest: +SKIP
    ((27, 3305), (10, 3391))
    """
    _check_options(redshift, velscale, target_sn, min_sn, emission_width, n_basis, margin_kms, wave_range)
    if not (0.0 <= min_good_fraction <= 1.0):
        raise InputError(f"min_good_fraction: must lie in [0, 1], got {min_good_fraction}")
    redshift = float(redshift)
    zp1 = 1.0 + redshift
    flux = np.asarray(cube.flux, dtype=np.float64)
    ivar = np.asarray(cube.ivar, dtype=np.float64)
    if flux.ndim != 3 or ivar.shape != flux.shape:
        raise InputError(f"{cube.path}: flux and ivar must be (n_wave, ny, nx) arrays of one shape")
    n_wave, ny, nx = flux.shape
    tpl_air = bool(templates.air)

    # wavelengths: templates' convention, rest frame
    wave_obs = _convert_convention(np.asarray(cube.wave, dtype=np.float64), bool(cube.air), tpl_air)
    edges_rest = wave_edges(wave_obs, n_flux=n_wave) / zp1
    tpl_edges = wave_edges(templates.wave, n_flux=templates.flux.shape[1])
    c_lo, c_hi = edges_rest[0], edges_rest[-1]
    t_lo, t_hi = tpl_edges[0], tpl_edges[-1]
    frame = "air" if tpl_air else "vacuum"
    if wave_range is not None:
        lo, hi = max(float(wave_range[0]), c_lo), min(float(wave_range[1]), c_hi)
        if lo >= hi:
            raise InputError(
                f"--wave-range: {wave_range[0]:.1f}-{wave_range[1]:.1f} A does not overlap the cube's "
                f"rest-frame range {c_lo:.1f}-{c_hi:.1f} A ({frame}, z = {redshift})"
            )
    else:
        lo, hi = max(c_lo, t_lo), min(c_hi, t_hi)
        if lo >= hi:
            raise InputError(
                f"--templates: templates cover {t_lo:.1f}-{t_hi:.1f} A but the cube covers "
                f"{c_lo:.1f}-{c_hi:.1f} A in the rest frame ({frame}, z = {redshift}): no overlap"
            )

    # pixel size: the cube's smallest pixel in km/s over the range
    if velscale is None:
        inside = (edges_rest[1:] > lo) & (edges_rest[:-1] < hi)
        velscale = float(C_KMS * np.min(np.log(edges_rest[1:] / edges_rest[:-1])[inside]))
    velscale = float(velscale)
    step = velscale / C_KMS
    n_ext = int(np.ceil(margin_kms / velscale - 1e-9))
    if wave_range is None:
        ov_lo, ov_hi = lo, hi
        lo, hi = lo * np.exp(n_ext * step), hi * np.exp(-n_ext * step)
        if lo >= hi:
            raise InputError(
                f"--wave-range: the overlap of cube and templates ({ov_lo:.1f}-{ov_hi:.1f} A rest frame) is "
                f"narrower than twice the {margin_kms:g} km/s template margin"
            )
    need_lo, need_hi = lo * np.exp(-n_ext * step), hi * np.exp(n_ext * step)
    tol = 1e-9 * need_hi
    if need_lo < t_lo - tol or need_hi > t_hi + tol:
        raise InputError(
            f"--templates: templates cover {t_lo:.1f}-{t_hi:.1f} A but fitting {lo:.1f}-{hi:.1f} A "
            f"(rest frame, {frame}, z = {redshift}) needs {need_lo:.1f}-{need_hi:.1f} A including the "
            f"{margin_kms:g} km/s margin; narrow --wave-range or use other templates"
        )
    # an input already uniform in ln(lambda) at this velscale (MaNGA LOGCUBE): start
    # the grid on an input edge so that rebinning is the identity (no smoothing, no
    # correlated noise)
    ln_in = np.log(edges_rest)
    if np.allclose(np.diff(ln_in), step, rtol=1e-6, atol=0):
        step = (ln_in[-1] - ln_in[0]) / n_wave  # the input's own step, free of round-off
        velscale = float(step * C_KMS)
        k = int(np.searchsorted(ln_in, np.log(lo) - 1e-6 * step))
        lo = float(np.exp(ln_in[k]))
    ln_edges = log_grid(lo, hi, velscale)
    n_pix = ln_edges.size - 1

    ln_wave = 0.5 * (ln_edges[1:] + ln_edges[:-1])
    line_mask = (
        emission_line_mask(ln_wave, redshift, emission_width, air=tpl_air)
        if mask_emission
        else np.zeros(n_pix, dtype=bool)
    )
    # rebin every spaxel (in blocks of spaxels to bound the temporaries), with the
    # per-spaxel median flux and S/N over the fitted pixels
    n_sp = ny * nx
    spec, var, var_diag, bad, med, snr_sp, n_good = _rebin_spaxels(
        flux.reshape(n_wave, n_sp), ivar.reshape(n_wave, n_sp), edges_rest, ln_edges, line_mask
    )
    usable = (n_good >= max(1, min_good_fraction * n_pix)) & (med > 0) & np.isfinite(snr_sp)
    if not np.any(usable):
        raise InputError(
            f"{cube.path}: no spaxel has usable pixels (positive median, >= {min_good_fraction:.0%} unmasked) "
            f"in the rest-frame range {lo:.1f}-{hi:.1f} A (--wave-range)"
        )
    selected = usable & (snr_sp >= min_sn)
    if not np.any(selected):
        raise InputError(
            f"--min-sn: no spaxel reaches S/N {min_sn} (the best has {np.nanmax(snr_sp[usable]):.2f})"
        )
    idx_sel = np.flatnonzero(selected)

    # spectra: one per selected spaxel or one per Voronoi bin
    if target_sn is None:
        group = np.arange(idx_sel.size)
        if idx_sel.size < n_sp:
            spec, var, var_diag, bad = spec[idx_sel], var[idx_sel], var_diag[idx_sel], bad[idx_sel]
        scale, snr = med[idx_sel], snr_sp[idx_sel]
    else:
        yy, xx = np.divmod(idx_sel, nx)
        group = voronoi_bins(xx, yy, med[idx_sel], med[idx_sel] / snr_sp[idx_sel], float(target_sn))
        n_bin = int(group.max()) + 1
        member = sp.csr_matrix(
            (np.ones(idx_sel.size), (group, np.arange(idx_sel.size))), shape=(n_bin, idx_sel.size)
        )
        ok = ~bad[idx_sel]
        n_mem = np.asarray(member.sum(1)).ravel()[:, None]
        n_ok = member @ ok.astype(np.float64)
        factor = np.where(n_ok > 0, n_mem / np.maximum(n_ok, 1), 0.0)
        spec = (member @ np.where(ok, spec[idx_sel], 0.0)) * factor
        var = (member @ np.where(ok, var[idx_sel], 0.0)) * factor**2
        var_diag = (member @ np.where(ok, var_diag[idx_sel], 0.0)) * factor**2
        bad = 2 * n_ok < n_mem
        good = ~bad & ~line_mask[None, :] & (var_diag > 0)
        scale = _nanmedian(spec, good)
        with np.errstate(divide="ignore", invalid="ignore"):
            snr = _nanmedian(spec / np.sqrt(var_diag), good)
    del var_diag

    # normalise in place: spectra / scale, ivar = scale^2 / var on good pixels, 0 elsewhere
    good = ~bad & ~line_mask[None, :] & (var > 0)
    spectra = spec
    spectra /= scale[:, None]
    spectra[bad] = 1.0
    ivar_out = var
    np.divide(scale[:, None] ** 2, var, out=ivar_out, where=good)
    ivar_out[~good] = 0.0
    del good, bad

    bin_id = np.full(n_sp, -1, dtype=int)
    bin_id[idx_sel] = group
    bin_id = bin_id.reshape(ny, nx)

    # templates: LSF match on their native grid, then log-rebin on the extended grid
    tpl_ln_edges = ln_edges[0] + step * np.arange(-n_ext, n_pix + n_ext + 1)
    lsf_obj = _resolve_lsf(lsf, cube)
    pad = 60.0  # Angstrom kept beyond the needed range for the convolution kernel
    keep = (templates.wave > need_lo - pad) & (templates.wave < need_hi + pad)
    t_wave = templates.wave[keep]
    t_flux = np.asarray(templates.flux, dtype=np.float64)[:, keep]
    if lsf_obj is not None:
        fwhm_t = templates.fwhm if np.ndim(templates.fwhm) == 0 else np.asarray(templates.fwhm)[keep]
        t_flux = match_resolution(t_wave, t_flux, fwhm_t, lsf_obj, redshift, name="--templates")
    kept = np.flatnonzero(keep)
    t_edges = tpl_edges[kept[0] : kept[-1] + 2]
    tpl = log_rebin(t_edges, t_flux, ln_edges=np.clip(tpl_ln_edges, np.log(t_lo), np.log(t_hi))).flux
    t_med = np.median(tpl, axis=1)
    names = tuple(templates.names)
    if np.any(~(t_med > 0)):
        raise InputError(f"--templates: template {names[int(np.argmin(t_med))]} has a non-positive median flux")
    tpl = tpl / t_med[:, None]

    if n_basis is not None and int(n_basis) < tpl.shape[0]:
        # summed spectrum of everything fitted, in the cube's flux units; a pixel
        # masked in some spectra is scaled up by n_spec / n_unmasked
        ok_all = ivar_out > 0
        n_ok = ok_all.sum(0)
        stack = (np.where(ok_all, spectra, 0.0) * scale[:, None]).sum(0)
        stack *= np.where(n_ok > 0, ok_all.shape[0] / np.maximum(n_ok, 1), 0.0)
        chosen = select_basis(
            stack / np.median(stack[n_ok > 0]),
            n_ok * 2 >= ok_all.shape[0],
            tpl,
            int(n_basis),
            template_offset=n_ext,
            velscale=velscale,
        )
        tpl = tpl[chosen]
        names = tuple(names[i] for i in chosen)

    return PreparedData(
        spectra=spectra,
        ivar=ivar_out,
        ln_wave=ln_wave,
        velscale=velscale,
        templates=tpl,
        template_offset=n_ext,
        template_names=names,
        snr=snr,
        bin_id=bin_id,
        scale=scale,
        redshift=redshift,
        spatial_shape=(ny, nx),
        air=tpl_air,
    )
