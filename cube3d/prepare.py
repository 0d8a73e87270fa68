"""Prepare a cube and a template library for the per-spectrum LOSVD fit.

:func:`prepare_cube` turns a :class:`cube3d.io.Cube` and a
:class:`cube3d.templates.TemplateLibrary` into :class:`PreparedData`: rest-frame
spectra on one uniform ln(lambda) grid (spaxels or Voronoi bins), their inverse
variances with masks as zero weights, and LSF-matched templates on the same grid
extended on both sides, ready to be Fourier-transformed once by the fitter.

Conventions
-----------
* Wavelengths are rest-frame Angstrom in the *cube's* air/vacuum convention; the
  templates' wavelengths are converted when the conventions differ (they are
  rebinned from their own pixels anyway).  Converting the cube instead would make a
  cube that is uniform in ln(lambda) in its own convention (a MaNGA LOGCUBE, vacuum)
  non-uniform by ~2.5e-4 of a pixel per pixel, so it would be rebinned and broadened
  by the pixel box, which the templates do not get: +3% in sigma at 55 km/s.
  ``--wave-range`` stays in the templates' convention (converted here).
* Galaxy pixel ``j`` has ln(lambda) = ``ln_wave[j]`` and sits at template pixel
  ``j + template_offset``.  A velocity ``v`` (km/s, relative to ``redshift``) is
  a shift of ``v / velscale`` pixels (Cappellari 2017, MNRAS 466, 798, Sec. 2).
* Every spectrum and template is divided by its median, so the fitted template
  weights are of order one; ``scale`` keeps the cube's flux units.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp

from .constants import C_KMS
from .basis import fit_stack, select_basis
from .errors import InputError, ResultWarning
from .linemask import EMISSION_LINES_AIR, SKY_LINES_AIR, emission_line_mask
from .lsf import LineSpreadFunction, as_lsf, check_lsf_coverage, match_resolution
from .rebin import log_grid, log_rebin, wave_edges
from .templates import TemplateLibrary

__all__ = [
    "PrepareConfig",
    "validate_prepare_config",
    "PreparedData",
    "prepare_cube",
    "EMISSION_LINES_AIR",
    "SKY_LINES_AIR",
    "emission_line_mask",
    "voronoi_bins",
    "check_degrees",
    "MAX_OVERSAMPLING",
    "MIN_PIXELS",
    "MAX_DEGREE",
    "select_basis",
    "fit_stack",
]

#: ``--velscale`` may be at most this many times finer than the cube's smallest pixel
MAX_OVERSAMPLING = 5.0

#: fewest ln-lambda pixels a ``--velscale`` may leave in the fitted range
MIN_PIXELS = 10

#: highest ``--degree`` / ``--mdegree`` accepted (see :func:`check_degrees`)
MAX_DEGREE = 50

#: largest float32, the precision of the maps and of the WEIGHT spectra written
_F32_MAX = float(np.finfo(np.float32).max)


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


class _Grid(NamedTuple):
    """The rest-frame ln(lambda) grids of the fit (see :func:`_spectral_grid`)."""

    ln_edges: np.ndarray  # galaxy pixel edges, ln(Angstrom), shape (n_pix + 1,)
    ln_wave: np.ndarray  # galaxy pixel centres, ln(Angstrom), shape (n_pix,)
    tpl_ln_edges: np.ndarray  # template pixel edges, ln(Angstrom), shape (n_pix + 2 n_ext + 1,)
    velscale: float  # km/s per pixel
    n_ext: int  # template pixels beyond the galaxy range on each side
    lo: float  # first galaxy edge, Angstrom
    hi: float  # requested upper end of the galaxy range, Angstrom
    need_lo: float  # template range needed, Angstrom
    need_hi: float


class _Spaxels(NamedTuple):
    """Log-rebinned spaxels and their statistics (see :func:`_rebin_spaxels`)."""

    spec: np.ndarray  # (n_sp, n_pix), cube flux units
    var: np.ndarray  # (n_sp, n_pix), overlap-shared variance
    var_diag: np.ndarray  # (n_sp, n_pix), exact diagonal of the rebinned covariance
    bad: np.ndarray  # (n_sp, n_pix) bool
    med: np.ndarray  # (n_sp,), median flux over the fitted pixels
    snr: np.ndarray  # (n_sp,), median S/N per pixel over the fitted pixels
    n_good: np.ndarray  # (n_sp,) int, number of fitted pixels
    representable: np.ndarray  # (n_sp,) bool, normalised spectrum and ivar finite and within float32


class _Spectra(NamedTuple):
    """The spectra to fit, one per selected spaxel or Voronoi bin, not yet normalised."""

    spec: np.ndarray  # (n_spec, n_pix), cube flux units
    var: np.ndarray  # (n_spec, n_pix)
    var_diag: np.ndarray  # (n_spec, n_pix)
    bad: np.ndarray  # (n_spec, n_pix) bool
    scale: np.ndarray  # (n_spec,), median flux over the fitted pixels
    snr: np.ndarray  # (n_spec,), median S/N per pixel


def _convert_convention(wave: np.ndarray, from_air: bool, to_air: bool) -> np.ndarray:
    """Convert wavelengths (Angstrom) between air and vacuum; unchanged when the conventions agree."""
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

    Parameters
    ----------
    x, y : array_like, shape (n,)
        Spaxel coordinates, pixels.
    signal, noise : array_like, shape (n,)
        Signal and noise per spaxel, any one flux unit.
    target_sn : float
        Target S/N per bin (``--target-sn``).

    Returns
    -------
    ndarray of int, shape (n,)
        Bin number per spaxel, numbered consecutively from 0.
    """
    signal = np.asarray(signal, dtype=np.float64)
    noise = np.asarray(noise, dtype=np.float64)
    n = signal.size
    if n == 1 or np.all(signal / noise >= target_sn):
        return np.arange(n)
    if signal.sum() / np.sqrt(np.sum(noise**2)) < target_sn:
        warnings.warn(
            f"--target-sn: all {n} fitted spaxels together reach only S/N "
            f"{signal.sum() / np.sqrt(np.sum(noise**2)):.1f}, below the target {target_sn:g}, "
            "so they are co-added into a single Voronoi bin",
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
    """Median of each row of ``values`` over the ``good`` entries; NaN for a row with none."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-masked rows give NaN
        return np.nanmedian(np.where(good, values, np.nan), axis=1)


def _check_options(
    redshift, velscale, target_sn, min_sn, emission_width, n_basis, margin_kms, wave_range, min_good_fraction
):
    """Reject invalid option values with an :class:`InputError` naming the option (outside any jit)."""
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
    if not (0.0 <= min_good_fraction <= 1.0):
        raise InputError(f"min_good_fraction: must lie in [0, 1], got {min_good_fraction}")


def check_degrees(n_pix: int, degree: int, mdegree: int, n_templates: int, moments: int) -> None:
    """Reject polynomial degrees that the fitted pixels cannot support (``InputError``).

    Call it after preparation, when the number of pixels and templates is known.

    Parameters
    ----------
    n_pix : int
        Pixels per prepared spectrum (:attr:`PreparedData.n_pix`).
    degree : int
        Additive polynomial degree (``--degree``; -1 = none, i.e. 0 coefficients).
    mdegree : int
        Multiplicative polynomial degree (``--mdegree``; 0 = none).
    n_templates : int
        Templates fitted (their weights are free parameters).
    moments : int
        LOSVD parameters (``--moments``).

    Raises
    ------
    InputError
        Naming ``--degree`` or ``--mdegree``: when either exceeds :data:`MAX_DEGREE`
        (50), or when the free parameters ``degree + 1 + mdegree + n_templates +
        moments`` exceed ``n_pix / 4``.

    Notes
    -----
    A Legendre polynomial of degree ``d`` over ``n_pix`` pixels has features about
    ``n_pix / d`` pixels wide.  Above degree 50 on a typical optical range
    (~1000-4000 A) that is a few tens of Angstrom, the width of the stronger absorption
    lines, so the polynomial absorbs the line profiles and with them the LOSVD (and
    the linear solve becomes ill-conditioned and slow).  Four pixels per free
    parameter keeps the fit well over-determined after masking and clipping.

    Examples
    --------
    >>> check_degrees(2000, 4, 0, 10, 2)
    >>> check_degrees(2000, 1000, 0, 10, 2)
    Traceback (most recent call last):
    ...
    cube3d.errors.InputError: --degree: at most 50, got 1000 (a polynomial of higher degree varies on the scale of the absorption lines and absorbs the LOSVD)
    """
    for option, value in (("--degree", degree), ("--mdegree", mdegree)):
        if value > MAX_DEGREE:
            raise InputError(
                f"{option}: at most {MAX_DEGREE}, got {value} (a polynomial of higher degree varies on the "
                "scale of the absorption lines and absorbs the LOSVD)"
            )
    n_add = degree + 1 if degree >= 0 else 0
    n_free = n_add + max(mdegree, 0) + n_templates + moments
    if n_free > n_pix / 4:
        option = "--degree" if n_add >= mdegree else "--mdegree"
        raise InputError(
            f"{option}: --degree {degree} and --mdegree {mdegree} with {n_templates} templates and "
            f"{moments} LOSVD moments make {n_free} free parameters, more than a quarter of the {n_pix} "
            f"fitted pixels ({n_pix / 4:g}); lower {option}"
        )


class PrepareConfig(NamedTuple):
    """How a cube is read and prepared for the fit (the ``data``, ``templates and
    resolution`` and ``preparation`` options of ``cube3d fit``; hashable, immutable).

    Parameters
    ----------
    layout : str
        ``"auto"`` (from the HDU names), ``"MUSE"``, ``"MANGA"`` or ``"GENERIC"`` (``--layout``).
    template_fwhm : float
        FWHM of the templates, Angstrom (``--template-fwhm``; MILES 2.51).
    template_air : bool
        Template wavelengths in air (True, as MILES) or vacuum (``--template-vacuum``).
    lsf : str, Path or None
        Instrumental line-spread function: a two-column table (wavelength, FWHM in
        Angstrom), ``"MUSE"``, or None for the cube's own (``--lsf``).
    velscale : float or None
        Pixel size of the ln-lambda grid, km/s (``--velscale``; default the cube's).
    wave_range : (float, float) or None
        Rest-frame range fitted, Angstrom (``--wave-range``).
    target_sn : float or None
        Voronoi-bin to this S/N per pixel (``--target-sn``; None: every spaxel).
    min_sn : float
        Skip spaxels below this median S/N per pixel (``--min-sn``); bins below it are flagged.
    mask_emission : bool
        Mask the standard emission and sky lines (``--no-emission-mask`` turns it off).
    emission_width : float
        Full width of each masked line window, km/s (``--emission-width``; 800; the
        MaNGA DAP uses 1500, wider for gas with broad wings: README, Accuracy).
    n_basis : int or None
        Keep this many templates, chosen by NNLS on the summed spectrum (``--n-basis``).
    """

    layout: str = "auto"
    template_fwhm: float = 2.51
    template_air: bool = True
    lsf: Any = None
    velscale: float | None = None
    wave_range: tuple[float, float] | None = None
    target_sn: float | None = None
    min_sn: float = 0.0
    mask_emission: bool = True
    n_basis: int | None = None
    emission_width: float = 800.0


#: cube layouts understood by :func:`cube3d.io.read_cube`
LAYOUTS = ("auto", "MUSE", "MANGA", "GENERIC")


def validate_prepare_config(config: PrepareConfig) -> None:
    """Reject, before any file is read, settings that cannot be used (``InputError``
    naming the option).  The redshift and data-dependent checks happen in
    :func:`prepare_cube`."""
    fwhm = config.template_fwhm
    if not (isinstance(fwhm, (int, float, np.integer, np.floating)) and np.isfinite(fwhm) and fwhm > 0):
        raise InputError(f"--template-fwhm: must be a positive number of Angstrom, got {fwhm}")
    if config.layout not in LAYOUTS:
        raise InputError(f"--layout: must be one of {', '.join(LAYOUTS)}, got {config.layout!r}")
    _check_options(0.0, config.velscale, config.target_sn, config.min_sn, config.emission_width, config.n_basis,
                   0.0, config.wave_range, 0.0)


# ----------------------------------------------------------------------------- steps of prepare_cube


def _cube_arrays(cube) -> tuple[np.ndarray, np.ndarray]:
    """The cube's flux and inverse variance as float64 arrays, checked.

    Returns
    -------
    flux, ivar : ndarray, shape (n_wave, ny, nx)
        Cube flux units and their inverse square.

    Raises
    ------
    InputError
        When they are not 3-D arrays of one shape (naming the cube's file).
    """
    flux = np.asarray(cube.flux, dtype=np.float64)
    ivar = np.asarray(cube.ivar, dtype=np.float64)
    if flux.ndim != 3 or ivar.shape != flux.shape:
        raise InputError(f"{cube.path}: flux and ivar must be (n_wave, ny, nx) arrays of one shape")
    return flux, ivar


def _rest_frame_edges(cube, n_wave: int, air: bool, redshift: float) -> np.ndarray:
    """Edges of the cube's pixels in the rest frame, in the convention ``air``.

    Parameters
    ----------
    cube : cube3d.io.Cube
        Uses ``wave`` (observed pixel centres or edges, Angstrom) and ``air``.
    n_wave : int
        Spectral pixels of the cube.
    air : bool
        The working convention (True = air; the cube's own, see the module docstring).
    redshift : float
        Galaxy redshift z; rest = observed / (1 + z).

    Returns
    -------
    ndarray, shape (n_wave + 1,)
        Rest-frame pixel edges, Angstrom.
    """
    wave_obs = _convert_convention(np.asarray(cube.wave, dtype=np.float64), bool(cube.air), air)
    return wave_edges(wave_obs, n_flux=n_wave) / (1.0 + redshift)


def _fit_range(edges_rest, tpl_edges, wave_range, redshift, frame):
    """Rest-frame range to fit before the template margin, Angstrom.

    ``wave_range`` clipped to the cube when given, else the overlap of cube and
    templates (later shrunk by the margin in :func:`_shrink_by_margin`).

    Parameters
    ----------
    edges_rest, tpl_edges : ndarray
        Rest-frame pixel edges of cube and templates, Angstrom.
    wave_range : (float, float) or None
        ``--wave-range``, Angstrom.
    redshift : float
        Galaxy redshift (error messages only).
    frame : str
        "air" or "vacuum" (error messages only).

    Returns
    -------
    lo, hi : float
        Angstrom.

    Raises
    ------
    InputError
        When the range is empty (naming ``--wave-range`` or ``--templates``).
    """
    c_lo, c_hi = edges_rest[0], edges_rest[-1]
    t_lo, t_hi = tpl_edges[0], tpl_edges[-1]
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
    return lo, hi


def _native_velscale(edges_rest: np.ndarray, lo: float, hi: float) -> float:
    """The cube's smallest pixel within ``lo``-``hi`` (Angstrom), in km/s.

    Sampling at this pixel size loses no spectral information.
    """
    inside = (edges_rest[1:] > lo) & (edges_rest[:-1] < hi)
    return float(C_KMS * np.min(np.log(edges_rest[1:] / edges_rest[:-1])[inside]))


def _check_velscale(velscale: float, native: float, lo: float, hi: float, margin_kms: float, shrink: bool):
    """Reject a ``--velscale`` (km/s) far finer than the cube's pixels or too coarse for the range.

    Finer than ``native / MAX_OVERSAMPLING`` (``native``: the cube's smallest pixel
    in km/s) only costs memory; coarser than leaves fewer than :data:`MIN_PIXELS`
    pixels in ``lo``-``hi`` (rest-frame Angstrom; less the ``margin_kms`` template
    margin on each side when ``shrink``).  Raises :class:`InputError` naming
    ``--velscale``, before anything is allocated on the grid.
    """
    finest = native / MAX_OVERSAMPLING
    if velscale < finest:
        raise InputError(
            f"--velscale: {velscale:g} km/s is more than {MAX_OVERSAMPLING:g} times finer than the cube's "
            f"smallest pixel ({native:.2f} km/s in the fitted range), which adds no information and only "
            f"costs memory; use at least {finest:.3g} km/s (or leave it out to use the cube's own)"
        )
    n_pix = np.log(hi / lo) / (velscale / C_KMS)
    note = ""
    if shrink:
        n_pix -= 2 * int(np.ceil(margin_kms / velscale - 1e-9))
        note = f", less the {margin_kms:g} km/s template margin on each side"
    if n_pix < MIN_PIXELS:
        raise InputError(
            f"--velscale: a step of {velscale:g} km/s leaves {max(int(np.floor(n_pix)), 0)} pixels in the "
            f"fitted range {lo:.1f}-{hi:.1f} A (rest frame{note}), fewer than {MIN_PIXELS}; use a smaller "
            f"--velscale (the cube's pixels are {native:.2f} km/s)"
        )


def _shrink_by_margin(lo, hi, n_ext: int, step: float, margin_kms: float):
    """Shrink the cube-template overlap ``lo``-``hi`` (Angstrom) by ``n_ext`` pixels of ln-step ``step`` each side.

    The templates then cover the galaxy range plus the ``margin_kms`` (km/s)
    margin.  Raises :class:`InputError` when nothing is left.
    """
    ov_lo, ov_hi = lo, hi
    lo, hi = lo * np.exp(n_ext * step), hi * np.exp(-n_ext * step)
    if lo >= hi:
        raise InputError(
            f"--wave-range: the overlap of cube and templates ({ov_lo:.1f}-{ov_hi:.1f} A rest frame) is "
            f"narrower than twice the {margin_kms:g} km/s template margin"
        )
    return lo, hi


def _check_template_coverage(lo, hi, need_lo, need_hi, tpl_edges, margin_kms, redshift, frame):
    """Raise :class:`InputError` (naming ``--templates``) unless the templates cover ``need_lo``-``need_hi``.

    All wavelengths rest-frame Angstrom; ``lo``-``hi`` is the galaxy range and
    ``need_lo``-``need_hi`` the same extended by the ``margin_kms`` (km/s) margin.
    """
    t_lo, t_hi = tpl_edges[0], tpl_edges[-1]
    tol = 1e-9 * need_hi
    if need_lo < t_lo - tol or need_hi > t_hi + tol:
        raise InputError(
            f"--templates: templates cover {t_lo:.1f}-{t_hi:.1f} A but fitting {lo:.1f}-{hi:.1f} A "
            f"(rest frame, {frame}, z = {redshift}) needs {need_lo:.1f}-{need_hi:.1f} A including the "
            f"{margin_kms:g} km/s margin; narrow --wave-range or use other templates"
        )


def _snap_to_input_grid(edges_rest: np.ndarray, step: float, velscale: float, lo: float):
    """Align the grid with an input already uniform in ln(lambda) at this ``velscale``.

    For such a cube (e.g. a MaNGA LOGCUBE) the grid starts on an input edge and
    takes the input's own step, so that rebinning is the identity (no smoothing,
    no correlated noise).  Otherwise the arguments come back unchanged.

    Parameters
    ----------
    edges_rest : ndarray, shape (n_wave + 1,)
        Rest-frame pixel edges of the cube, Angstrom.
    step : float
        ln(lambda) step, ``velscale / c``.
    velscale : float
        km/s per pixel.
    lo : float
        Start of the galaxy range, Angstrom.

    Returns
    -------
    step, velscale, lo : float
    """
    ln_in = np.log(edges_rest)
    if np.allclose(np.diff(ln_in), step, rtol=1e-6, atol=0):
        step = (ln_in[-1] - ln_in[0]) / (ln_in.size - 1)  # the input's own step, free of round-off
        velscale = float(step * C_KMS)
        k = int(np.searchsorted(ln_in, np.log(lo) - 1e-6 * step))
        lo = float(np.exp(ln_in[k]))
    return step, velscale, lo


def _spectral_grid(edges_rest, tpl_edges, redshift, air, velscale, wave_range, margin_kms) -> _Grid:
    """Choose the wavelength range and velscale; build the galaxy and template ln(lambda) grids.

    Parameters
    ----------
    edges_rest, tpl_edges : ndarray
        Rest-frame pixel edges of cube and templates, Angstrom, one convention.
    redshift : float
        Galaxy redshift (error messages only).
    air : bool
        The convention of both (error messages only).
    velscale : float or None
        ``--velscale``, km/s; None = :func:`_native_velscale`.
    wave_range : (float, float) or None
        ``--wave-range``, rest-frame Angstrom.
    margin_kms : float
        Template margin beyond the galaxy range on each side, km/s.

    Returns
    -------
    _Grid
    """
    frame = "air" if air else "vacuum"
    lo, hi = _fit_range(edges_rest, tpl_edges, wave_range, redshift, frame)
    native = _native_velscale(edges_rest, lo, hi)
    if velscale is None:
        velscale = native
    else:
        _check_velscale(float(velscale), native, lo, hi, margin_kms, wave_range is None)
    velscale = float(velscale)
    step = velscale / C_KMS
    n_ext = int(np.ceil(margin_kms / velscale - 1e-9))
    if wave_range is None:
        lo, hi = _shrink_by_margin(lo, hi, n_ext, step, margin_kms)
    need_lo, need_hi = lo * np.exp(-n_ext * step), hi * np.exp(n_ext * step)
    _check_template_coverage(lo, hi, need_lo, need_hi, tpl_edges, margin_kms, redshift, frame)
    step, velscale, lo = _snap_to_input_grid(edges_rest, step, velscale, lo)
    ln_edges = log_grid(lo, hi, velscale)
    n_pix = ln_edges.size - 1
    return _Grid(
        ln_edges=ln_edges,
        ln_wave=0.5 * (ln_edges[1:] + ln_edges[:-1]),
        tpl_ln_edges=ln_edges[0] + step * np.arange(-n_ext, n_pix + n_ext + 1),
        velscale=velscale,
        n_ext=n_ext,
        lo=lo,
        hi=hi,
        need_lo=need_lo,
        need_hi=need_hi,
    )


def _line_mask(ln_wave: np.ndarray, redshift: float, emission_width: float, air: bool, mask_emission: bool):
    """Pixels masked for emission and sky lines (True = masked), shape (n_pix,).

    ``ln_wave`` is ln(rest-frame Angstrom); ``emission_width`` the full window
    width in km/s.  All False when ``mask_emission`` is off.
    """
    if mask_emission:
        return emission_line_mask(ln_wave, redshift, emission_width, air=air)
    return np.zeros(ln_wave.size, dtype=bool)


def _rebin_spaxels(flux, ivar, edges_rest, ln_edges, line_mask, block=1024) -> _Spaxels:
    """Log-rebin every spaxel; its median flux and S/N over the fitted pixels.

    Spaxels are processed in blocks of ``block`` (each vectorised) to bound the
    temporaries; only the input channels that overlap the grid are used.

    Parameters
    ----------
    flux, ivar : ndarray, shape (n_wave, n_sp)
        Cube flux units and their inverse square; ``ivar <= 0`` or non-finite = bad.
    edges_rest : ndarray, shape (n_wave + 1,)
        Rest-frame pixel edges, Angstrom.
    ln_edges : ndarray, shape (n_pix + 1,)
        Output grid, ln(Angstrom).
    line_mask : ndarray of bool, shape (n_pix,)
        Pixels left out of the medians.
    block : int
        Spaxels per block.

    Returns
    -------
    _Spaxels
        ``spec, var, var_diag, bad`` (each (n_sp, n_pix)) and ``med, snr,
        n_good`` (each (n_sp,)) over the pixels that are neither bad nor in
        ``line_mask``.
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
    representable = np.empty(n_sp, dtype=bool)
    for s0 in range(0, n_sp, block):  # blocks of spaxels, each vectorised
        sl = slice(s0, min(s0 + block, n_sp))
        f = flux[i0:i1, sl]
        iv = ivar[i0:i1, sl]
        # extreme values (1e38, denormal ivar) may overflow here: such spaxels are
        # rejected below (``representable``), so the overflow is expected and handled
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            bad_in = ~(iv > 0) | ~np.isfinite(iv) | ~np.isfinite(f)
            var_in = 1.0 / np.where(bad_in, 1.0, iv)
            var_in[bad_in] = 0.0
            reb = log_rebin(edges, f, ln_edges=ln_edges, variance=var_in, bad=bad_in, axis=0)
            spec[sl], var[sl], var_diag[sl], bad[sl] = reb.flux.T, reb.variance.T, reb.variance_diag.T, reb.bad.T
            good = ~bad[sl] & ~line_mask[None, :]
            n_good[sl] = good.sum(1)
            med[sl] = _nanmedian(spec[sl], good)
            snr[sl] = _nanmedian(spec[sl] / np.sqrt(var_diag[sl]), good & (var_diag[sl] > 0))
            representable[sl] = _representable(spec[sl], var[sl], bad[sl], good, med[sl])
    return _Spaxels(spec, var, var_diag, bad, med, snr, n_good, representable)


def _representable(spec, var, bad, good, med):
    """Whether each spectrum, once normalised by ``med``, fits in float32 (shape (n,)).

    The normalised spectrum ``spec / med`` on the unmasked pixels and the inverse
    variance ``med**2 / var`` on the fitted ones must be finite and at most the largest
    float32 (the maps and WEIGHT spectra are float32); ``med`` must be finite.  A
    spaxel at 1e38 with an ordinary variance fails (its inverse variance is ~1e76).
    """
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        x = spec / med[:, None]
        ok_x = np.all(bad | (np.abs(x) <= _F32_MAX), axis=1)
        iv = med[:, None] ** 2 / var
        ok_iv = np.all(~(good & (var > 0)) | (iv <= _F32_MAX), axis=1)
    return np.isfinite(med) & ok_x & ok_iv


def _select_spaxels(spx: _Spaxels, min_good_fraction: float, min_sn: float, path, lo: float, hi: float):
    """Indices (into the flattened ny * nx spaxels) of the spaxels to fit.

    A spaxel is fitted when at least ``min_good_fraction`` of its pixels are
    unmasked, its median flux is positive, its S/N finite and at least
    ``min_sn`` (``--min-sn``).  ``path`` and the range ``lo``-``hi`` (rest-frame
    Angstrom) appear in the :class:`InputError` raised when none is.
    """
    n_pix = spx.spec.shape[1]
    usable = (spx.n_good >= max(1, min_good_fraction * n_pix)) & (spx.med > 0) & np.isfinite(spx.snr)
    extreme = usable & ~spx.representable
    if np.any(extreme):
        warnings.warn(
            f"{path}: {int(extreme.sum())} spaxel(s) not fitted (BINID -1, FLAG 1): their flux or variance is "
            "so extreme (e.g. 1e38) that the normalised spectrum or its inverse variance cannot be represented "
            "in float32",
            ResultWarning,
            stacklevel=4,
        )
        usable &= spx.representable
    if not np.any(usable):
        raise InputError(
            f"{path}: no spaxel has usable pixels (positive median, >= {min_good_fraction:.0%} unmasked) "
            f"in the rest-frame range {lo:.1f}-{hi:.1f} A (--wave-range)"
        )
    selected = usable & (spx.snr >= min_sn)
    if not np.any(selected):
        raise InputError(
            f"--min-sn: no spaxel reaches S/N {min_sn} (the best has {np.nanmax(spx.snr[usable]):.2f})"
        )
    return np.flatnonzero(selected)


def _take_spaxels(spx: _Spaxels, idx_sel: np.ndarray) -> _Spectra:
    """One spectrum per selected spaxel (no binning); no copy when every spaxel is selected."""
    spec, var, var_diag, bad = spx.spec, spx.var, spx.var_diag, spx.bad
    if idx_sel.size < spec.shape[0]:
        spec, var, var_diag, bad = spec[idx_sel], var[idx_sel], var_diag[idx_sel], bad[idx_sel]
    return _Spectra(spec, var, var_diag, bad, spx.med[idx_sel], spx.snr[idx_sel])


def _coadd_bins(spx: _Spaxels, idx_sel: np.ndarray, group: np.ndarray, line_mask: np.ndarray) -> _Spectra:
    """Co-add the selected spaxels into their Voronoi bins.

    At a pixel where some members are bad the sum over the good ones is scaled by
    ``n_members / n_good`` (variance by its square); the pixel is bad when fewer
    than half the members are good.  ``scale`` and ``snr`` are the medians over
    the good pixels outside ``line_mask``.

    Parameters
    ----------
    spx : _Spaxels
        All rebinned spaxels.
    idx_sel : ndarray of int, shape (n_sel,)
        The selected spaxels.
    group : ndarray of int, shape (n_sel,)
        Bin of each selected spaxel, 0 .. n_bin - 1.
    line_mask : ndarray of bool, shape (n_pix,)

    Returns
    -------
    _Spectra
        One row per bin, in the cube's flux units.
    """
    n_bin = int(group.max()) + 1
    member = sp.csr_matrix((np.ones(idx_sel.size), (group, np.arange(idx_sel.size))), shape=(n_bin, idx_sel.size))
    ok = ~spx.bad[idx_sel]
    n_mem = np.asarray(member.sum(1)).ravel()[:, None]
    n_ok = member @ ok.astype(np.float64)
    factor = np.where(n_ok > 0, n_mem / np.maximum(n_ok, 1), 0.0)
    spec = (member @ np.where(ok, spx.spec[idx_sel], 0.0)) * factor
    var = (member @ np.where(ok, spx.var[idx_sel], 0.0)) * factor**2
    var_diag = (member @ np.where(ok, spx.var_diag[idx_sel], 0.0)) * factor**2
    bad = 2 * n_ok < n_mem
    good = ~bad & ~line_mask[None, :] & (var_diag > 0)
    scale = _nanmedian(spec, good)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        snr = _nanmedian(spec / np.sqrt(var_diag), good)
    return _Spectra(spec, var, var_diag, bad, scale, snr)


def _normalise(spec, var, bad, scale, line_mask):
    """Divide each spectrum by its ``scale``; inverse variance with masks as zero weights.

    Works in place: ``spec`` becomes the normalised spectra (1 at bad pixels)
    and ``var`` the inverse variance ``scale**2 / var`` in the normalised units
    (0 at bad, line-masked or zero-variance pixels).

    Parameters
    ----------
    spec, var : ndarray, shape (n_spec, n_pix)
        Cube flux units and their square; overwritten.
    bad : ndarray of bool, shape (n_spec, n_pix)
    scale : ndarray, shape (n_spec,)
        Cube flux units.
    line_mask : ndarray of bool, shape (n_pix,)

    Returns
    -------
    spectra, ivar : ndarray, shape (n_spec, n_pix)
        The arrays ``spec`` and ``var``, overwritten.
    """
    good = ~bad & ~line_mask[None, :] & (var > 0)
    spectra = spec
    spectra /= scale[:, None]
    spectra[bad] = 1.0
    ivar = var
    with np.errstate(over="ignore"):  # spaxels that would overflow were not selected (``_representable``)
        np.divide(scale[:, None] ** 2, var, out=ivar, where=good)
    ivar[~good] = 0.0
    return spectra, ivar


def _bin_map(idx_sel: np.ndarray, group: np.ndarray, spatial_shape: tuple) -> np.ndarray:
    """Spectrum index per spaxel, shape ``spatial_shape`` (ny, nx); -1 = not fitted."""
    ny, nx = spatial_shape
    bin_id = np.full(ny * nx, -1, dtype=int)
    bin_id[idx_sel] = group
    return bin_id.reshape(ny, nx)


def _resolve_lsf(lsf: Any, cube) -> LineSpreadFunction | None:
    """The instrumental line-spread function: ``lsf`` (``--lsf``), else the cube's own, else MUSE's, else None.

    Warns when none is known.  Call it from :func:`prepare_cube` itself so that
    the warning points at the caller of :func:`prepare_cube`.
    """
    if lsf is not None:
        return as_lsf(lsf)
    lsf_fwhm = getattr(cube, "lsf_fwhm", None)
    if lsf_fwhm is not None:
        return as_lsf((np.asarray(cube.wave, dtype=np.float64), np.asarray(lsf_fwhm, dtype=np.float64)))
    if str(getattr(cube, "layout", "")).upper() == "MUSE":
        return as_lsf("MUSE")
    warnings.warn(
        f"{getattr(cube, 'path', 'cube')}: no line-spread function is known for this cube (no LSF in the file "
        "and not a MUSE cube), so the templates are not broadened to the instrument's resolution; "
        "give one with --lsf",
        stacklevel=3,
    )
    return None


def _check_lsf_range(lsf_obj: LineSpreadFunction, cube, n_wave: int, edges_rest, grid: _Grid) -> None:
    """Raise :class:`InputError` naming ``--lsf`` unless it covers the fitted range in the observed frame.

    The galaxy range ``grid.lo``-``grid.hi`` (rest frame) is mapped back onto the
    cube's own observed wavelengths; an extrapolation of up to two of the cube's
    pixels at each end is allowed.
    """
    obs_edges = wave_edges(np.asarray(cube.wave, dtype=np.float64), n_flux=n_wave)
    lo, hi = np.interp([grid.lo, grid.hi], edges_rest, obs_edges)
    check_lsf_coverage(lsf_obj, float(lo), float(hi), 2.0 * float(np.max(np.diff(obs_edges))), name="--lsf")


def _broaden_templates(templates: TemplateLibrary, tpl_edges, grid: _Grid, lsf_obj, redshift: float):
    """Crop the templates to the needed range and match them to the instrument's LSF on their native grid.

    Parameters
    ----------
    templates : TemplateLibrary
    tpl_edges : ndarray, shape (n_tpl_wave + 1,)
        The templates' pixel edges, Angstrom.
    grid : _Grid
        Uses ``need_lo, need_hi`` (Angstrom); 60 A are kept beyond them for the
        convolution kernel.
    lsf_obj : LineSpreadFunction or None
        None = no broadening.
    redshift : float
        Galaxy redshift (the LSF is given in the observed frame).

    Returns
    -------
    t_edges : ndarray, shape (n_keep + 1,)
        Edges of the kept template pixels, Angstrom.
    t_flux : ndarray, shape (n_tpl, n_keep)
        Broadened template flux.
    """
    pad = 60.0  # Angstrom kept beyond the needed range for the convolution kernel
    keep = (templates.wave > grid.need_lo - pad) & (templates.wave < grid.need_hi + pad)
    t_wave = templates.wave[keep]
    t_flux = np.asarray(templates.flux, dtype=np.float64)[:, keep]
    if lsf_obj is not None:
        fwhm_t = templates.fwhm if np.ndim(templates.fwhm) == 0 else np.asarray(templates.fwhm)[keep]
        t_flux = match_resolution(t_wave, t_flux, fwhm_t, lsf_obj, redshift, name="--templates")
    kept = np.flatnonzero(keep)
    return tpl_edges[kept[0] : kept[-1] + 2], t_flux


def _rebin_templates(t_edges, t_flux, tpl_ln_edges, tpl_edges, names: tuple) -> np.ndarray:
    """Log-rebin the templates onto the extended grid and divide each by its median.

    Parameters
    ----------
    t_edges : ndarray, shape (n_keep + 1,)
        Template pixel edges, Angstrom.
    t_flux : ndarray, shape (n_tpl, n_keep)
    tpl_ln_edges : ndarray, shape (n_tpl_pix + 1,)
        Target grid, ln(Angstrom); clipped to the library's full range ``tpl_edges``.
    tpl_edges : ndarray
        The library's pixel edges, Angstrom.
    names : tuple of str
        Template names (error message only).

    Returns
    -------
    ndarray, shape (n_tpl, n_tpl_pix)
        Templates of median 1.

    Raises
    ------
    InputError
        When a template has a non-positive median on the grid (naming it and ``--templates``).
    """
    t_lo, t_hi = tpl_edges[0], tpl_edges[-1]
    tpl = log_rebin(t_edges, t_flux, ln_edges=np.clip(tpl_ln_edges, np.log(t_lo), np.log(t_hi))).flux
    t_med = np.median(tpl, axis=1)
    if np.any(~(t_med > 0)):
        raise InputError(f"--templates: template {names[int(np.argmin(t_med))]} has a non-positive median flux")
    return tpl / t_med[:, None]


def _summed_spectrum(spectra, ivar, scale):
    """Sum of every fitted spectrum, in the cube's flux units, and where it is usable.

    A pixel masked (``ivar == 0``) in some spectra is scaled up by
    ``n_spec / n_unmasked``.

    Returns
    -------
    stack : ndarray, shape (n_pix,)
        Cube flux units.
    n_ok : ndarray of int, shape (n_pix,)
        Spectra unmasked at each pixel.
    """
    ok_all = ivar > 0
    n_ok = ok_all.sum(0)
    stack = (np.where(ok_all, spectra, 0.0) * scale[:, None]).sum(0)
    stack *= np.where(n_ok > 0, ok_all.shape[0] / np.maximum(n_ok, 1), 0.0)
    return stack, n_ok


def _choose_basis(spectra, ivar, scale, tpl, n_basis: int, template_offset: int, velscale: float) -> np.ndarray:
    """Indices of the ``n_basis`` templates (``--n-basis``) that best fit the summed spectrum.

    :func:`select_basis` on the median-normalised sum of every fitted spectrum,
    using the pixels unmasked in at least half of them; ``velscale`` in km/s.
    """
    stack, n_ok = _summed_spectrum(spectra, ivar, scale)
    n_spec = ivar.shape[0]
    return select_basis(
        stack / np.median(stack[n_ok > 0]),
        n_ok * 2 >= n_spec,
        tpl,
        int(n_basis),
        template_offset=template_offset,
        velscale=velscale,
    )


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
        the fitted range (no spectral information is lost).  At most
        :data:`MAX_OVERSAMPLING` = 5 times finer than that pixel (finer steps add
        no information, only memory), and coarse enough to leave at least
        :data:`MIN_PIXELS` = 10 pixels in the range.
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
        spaxel with usable pixels; invalid option values; a ``velscale`` more
        than :data:`MAX_OVERSAMPLING` (5) times finer than the cube's smallest
        pixel in the fitted range, or so coarse that fewer than
        :data:`MIN_PIXELS` (10) pixels remain (naming ``--velscale``); an
        ``lsf`` table that does not cover the fitted range in the observed frame
        (naming ``--lsf`` and both ranges; two cube pixels of extrapolation are
        allowed).

    Warns
    -----
    cube3d.errors.ResultWarning
        When spaxels are dropped because their normalised spectrum or inverse
        variance cannot be represented in float32 (flux or variance so extreme,
        e.g. 1e38, that the fit would overflow): they are not fitted (``bin_id``
        -1, FLAG 1 in the maps).

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
    _check_options(
        redshift, velscale, target_sn, min_sn, emission_width, n_basis, margin_kms, wave_range, min_good_fraction
    )
    redshift = float(redshift)
    flux, ivar = _cube_arrays(cube)
    n_wave, ny, nx = flux.shape
    air = bool(cube.air)  # the working convention: the cube's (module docstring)

    # wavelength range and velscale; the galaxy and template ln(lambda) grids
    edges_rest = _rest_frame_edges(cube, n_wave, air, redshift)
    tpl_edges = _convert_convention(wave_edges(templates.wave, n_flux=templates.flux.shape[1]),
                                    bool(templates.air), air)
    if wave_range is not None:
        wave_range = tuple(_convert_convention(np.asarray(wave_range, float), bool(templates.air), air))
    grid = _spectral_grid(edges_rest, tpl_edges, redshift, air, velscale, wave_range, margin_kms)
    line_mask = _line_mask(grid.ln_wave, redshift, emission_width, air, mask_emission)
    lsf_obj = _resolve_lsf(lsf, cube)
    if lsf is not None:  # a user's table must cover the fitted range (checked before the rebinning)
        _check_lsf_range(lsf_obj, cube, n_wave, edges_rest, grid)

    # spaxels: log-rebin, median flux and S/N, selection
    spx = _rebin_spaxels(
        flux.reshape(n_wave, ny * nx), ivar.reshape(n_wave, ny * nx), edges_rest, grid.ln_edges, line_mask
    )
    idx_sel = _select_spaxels(spx, min_good_fraction, min_sn, cube.path, grid.lo, grid.hi)

    # spectra: one per selected spaxel or one per Voronoi bin
    if target_sn is None:
        group = np.arange(idx_sel.size)
        chosen_spectra = _take_spaxels(spx, idx_sel)
    else:
        yy, xx = np.divmod(idx_sel, nx)
        signal = spx.med[idx_sel]
        group = voronoi_bins(xx, yy, signal, signal / spx.snr[idx_sel], float(target_sn))
        chosen_spectra = _coadd_bins(spx, idx_sel, group, line_mask)
    del spx
    spec, var, var_diag, bad, scale, snr = chosen_spectra
    del chosen_spectra, var_diag
    spectra, ivar_out = _normalise(spec, var, bad, scale, line_mask)
    del spec, var, bad
    bin_id = _bin_map(idx_sel, group, (ny, nx))

    # templates: LSF match on their native grid, log-rebin on the extended grid, basis
    t_edges, t_flux = _broaden_templates(templates, tpl_edges, grid, lsf_obj, redshift)
    names = tuple(templates.names)
    tpl = _rebin_templates(t_edges, t_flux, grid.tpl_ln_edges, tpl_edges, names)
    if n_basis is not None and int(n_basis) < tpl.shape[0]:
        chosen = _choose_basis(spectra, ivar_out, scale, tpl, n_basis, grid.n_ext, grid.velscale)
        tpl = tpl[chosen]
        names = tuple(names[i] for i in chosen)

    return PreparedData(
        spectra=spectra,
        ivar=ivar_out,
        ln_wave=grid.ln_wave,
        velscale=grid.velscale,
        templates=tpl,
        template_offset=grid.n_ext,
        template_names=names,
        snr=snr,
        bin_id=bin_id,
        scale=scale,
        redshift=redshift,
        spatial_shape=(ny, nx),
        air=air,
    )


# ----------------------------------------------------------------------------- steps shared with cube3d.stream

# The steps of prepare_cube under public names for cube3d.stream, which runs them a block of
# spaxels at a time (one implementation, two drivers: the spectra agree to the last bit).
check_options = _check_options
rest_frame_edges = _rest_frame_edges
convert_convention = _convert_convention
spectral_grid = _spectral_grid
resolve_lsf = _resolve_lsf
check_lsf_range = _check_lsf_range
broaden_templates = _broaden_templates
rebin_templates = _rebin_templates
rebin_spaxels = _rebin_spaxels
select_spaxels = _select_spaxels
normalise_spectra = _normalise
SpaxelStats = _Spaxels
