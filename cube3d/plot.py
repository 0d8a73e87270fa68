"""Plots of kinematic maps and of one bin's spectrum with its best fit.

Figures are drawn on matplotlib's Agg canvas created inside each function (no
``pyplot``, no backend switch, nothing global at import), so the functions are safe in
scripts, servers and tests.

Colour scales:

* ``V``: diverging map (``RdBu_r``) centred on the reference velocity (0 = the fitted
  redshift, or the median V) with symmetric limits at the 98th percentile of ``|V - ref|``;
* ``SIGMA``, ``CHI2``, ``SNR``, errors: sequential maps between the 2nd and 98th percentiles
  (errors from 0);
* ``H3`` ... ``H6``: diverging (``PuOr_r``) centred on 0, symmetric limits at the 98th
  percentile of ``|h|``, kept within [0.02, 0.3];
* ``BINID``, ``FLAG``: categorical.

NaN spaxels (not fitted) are drawn light grey.

Maps files written with a Gaussian-process spatial prior (``cube3d fit --gp``: ``V`` is the
GP posterior mean, ``V_SPAXEL`` the per-spaxel fit) are drawn one row per quantity:
per-spaxel estimate | GP posterior mean | GP posterior standard deviation (with
``errors=True`` also the per-spaxel error before the GP one).  The two estimates of one
quantity, and the two errors, share one colour scale, computed from both maps together.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from cube3d.errors import InputError
from cube3d.maps import KinematicMaps

__all__ = ["plot_maps", "maps_figure", "plot_spectrum_fit", "map_limits", "default_quantities", "gp_quantities",
           "brightest_bin"]

_GH_RE = re.compile(r"^H(\d+)$")
_BAD_COLOUR = "0.85"


def default_quantities(maps, errors=False):
    """Names plotted by default: V, SIGMA, H3..H6 present in ``maps`` (and their errors)."""
    base = [n for n in ("V", "SIGMA", "H3", "H4", "H5", "H6") if n in maps.maps]
    if not base:
        base = [n for n in maps.maps if n not in ("BINID", "FLAG")][:4] or list(maps.maps)[:1]
    if errors:
        base += [n + "_ERR" for n in base if n + "_ERR" in maps.maps]
    return base


def gp_quantities(maps, errors=False):
    """Panel rows of a GP maps file: one ``[(map name, title), ...]`` per kinematic quantity.

    Returns an empty list when ``maps`` holds no ``<NAME>_SPAXEL`` map (not a GP file).
    Each row is ``NAME_SPAXEL`` (per-spaxel fit), ``NAME`` (GP posterior mean),
    [``NAME_SPAXEL_ERR``,] ``NAME_ERR`` (GP posterior standard deviation); maps absent
    from the file are left out of the row.
    """
    rows = []
    for name in ("V", "SIGMA", "H3", "H4", "H5", "H6"):
        if f"{name}_SPAXEL" not in maps.maps or name not in maps.maps:
            continue
        row = [(f"{name}_SPAXEL", f"{name} (per spaxel)"), (name, f"{name} (GP)")]
        if errors and f"{name}_SPAXEL_ERR" in maps.maps:
            row.append((f"{name}_SPAXEL_ERR", f"{name}_ERR (per spaxel)"))
        if f"{name}_ERR" in maps.maps:
            row.append((f"{name}_ERR", f"{name}_ERR (GP)"))
        rows.append(row)
    return rows


def _base_name(name):
    """Colour-scale family of a map name: ``V_SPAXEL`` -> ``V``, ``V_SPAXEL_ERR`` -> ``V_ERR``."""
    return name.replace("_SPAXEL", "")


def map_limits(name, values, v_reference=0.0):
    """Colour map, limits and centre for one map.

    Parameters
    ----------
    name : str
        Map name (``"V"``, ``"SIGMA"``, ``"H3"``, ``"V_ERR"``, ...).
    values : ndarray
        The map; non-finite values are ignored.
    v_reference : float, optional
        Centre of the V colour scale (km/s).

    Returns
    -------
    cmap : str
    vmin, vmax : float
        Finite limits with ``vmin < vmax`` (``(-1, 1)`` or around the one value when the
        map has fewer than two distinct finite values).
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if name == "V":
        half = np.percentile(np.abs(v - v_reference), 98) if v.size else 0.0
        half = half if half > 0 else 1.0
        return "RdBu_r", v_reference - half, v_reference + half
    if _GH_RE.match(name):
        half = np.percentile(np.abs(v), 98) if v.size else 0.1
        half = float(np.clip(half, 0.02, 0.3))
        return "PuOr_r", -half, half
    if name in ("BINID", "FLAG"):
        lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 1.0)
        return ("tab20" if name == "BINID" else "Reds"), lo - 0.5, max(hi, lo + 1) + 0.5
    cmap = "magma" if name.endswith("_ERR") else "viridis"
    if not v.size:
        return cmap, 0.0, 1.0
    lo = 0.0 if name.endswith("_ERR") else float(np.percentile(v, 2))
    hi = float(np.percentile(v, 98))
    if not hi > lo:
        lo, hi = lo - 0.5 * max(abs(lo), 1.0), hi + 0.5 * max(abs(hi), 1.0)
    return cmap, lo, hi


def new_figure(figsize):
    """A matplotlib Figure with an Agg canvas (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _check_out(path):
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"{path.parent}: output directory does not exist")
    if path.is_dir():
        raise InputError(f"{path}: is a directory")
    return path


def _label(name, unit):
    return f"{name} [{unit}]" if unit else name


def plot_maps(maps, path, quantities=None, errors=False, sky_axes=True, v_reference=0.0, dpi=110):
    """Draw a grid of kinematic maps to an image file.

    Parameters
    ----------
    maps : KinematicMaps
        The maps (e.g. from :func:`cube3d.maps.read_maps`).
    path : str or os.PathLike
        Output image; the format follows the suffix (``.png``, ``.pdf``, ...).
    quantities : sequence of str, optional
        Map names to draw, in order; default V, SIGMA, H3, H4 (H5, H6) present, or for
        a GP maps file the per-spaxel | GP | GP error rows (:func:`gp_quantities`).
    errors : bool, optional
        With the default quantities, add their ``_ERR`` maps (GP files: the per-spaxel
        errors next to the GP ones).
    sky_axes : bool, optional
        RA/Dec axes from the maps' WCS (matplotlib WCSAxes); pixel axes when False.
    v_reference : float or "median", optional
        Centre of the V colour scale in km/s (default 0, the fitted redshift).
    dpi : int, optional
        Resolution of raster output.

    Returns
    -------
    pathlib.Path
        The file written.

    Examples
    --------
    >>> plot_maps(read_maps("maps.fits"), "maps.png")  # doctest: +SKIP
    """
    path = _check_out(path) if isinstance(maps, KinematicMaps) else path
    fig = maps_figure(maps, quantities=quantities, errors=errors, sky_axes=sky_axes, v_reference=v_reference)
    fig.savefig(path, dpi=dpi)
    return path


def maps_figure(maps, quantities=None, errors=False, sky_axes=True, v_reference=0.0):
    """The figure :func:`plot_maps` saves (a matplotlib ``Figure`` on an Agg canvas).

    Parameters are those of :func:`plot_maps`.  Panels are titled with their map name
    (``"V"``), or for a GP file ``"V (per spaxel)"``, ``"V (GP)"``, ``"V_ERR (GP)"``.
    """
    if not isinstance(maps, KinematicMaps):
        raise InputError("plot_maps: 'maps' must be a KinematicMaps")
    if v_reference == "median":
        v = maps.maps.get("V", np.array([np.nan]))
        v_reference = float(np.nanmedian(v)) if np.isfinite(v).any() else 0.0
    elif not isinstance(v_reference, (int, float)) or not math.isfinite(v_reference):
        raise InputError(f"plot_maps: 'v_reference' must be a finite number or 'median', got {v_reference!r}")
    rows = gp_quantities(maps, errors) if quantities is None else []
    if rows:  # GP file: one row per quantity, shared colour scales within a row
        ncols = max(len(r) for r in rows)
        panels = []
        for r, row in enumerate(rows):
            family = {}
            for name, _ in row:
                family.setdefault(_base_name(name), []).append(np.asarray(maps.maps[name], float).ravel())
            limits = {b: map_limits(b, np.concatenate(arrs), v_reference) for b, arrs in family.items()}
            panels += [(r * ncols + c, name, title, limits[_base_name(name)]) for c, (name, title) in enumerate(row)]
        nrows = len(rows)
    else:
        names = list(quantities) if quantities is not None else default_quantities(maps, errors)
        unknown = [n for n in names if n not in maps.maps]
        if unknown or not names:
            raise InputError(f"plot_maps: quantities {unknown or names} not in the maps (have {list(maps.maps)})")
        ncols = min(4, len(names))
        nrows = math.ceil(len(names) / ncols)
        panels = [(i, n, n, map_limits(n, np.asarray(maps.maps[n], float), v_reference)) for i, n in enumerate(names)]

    import matplotlib

    fig = new_figure((3.9 * ncols, 3.5 * nrows + 0.4))
    title = "cube3d kinematic maps"
    if rows:
        title += (f": per-spaxel fit vs Gaussian-process prior ({maps.meta.get('gp_tier', '?')}, "
                  f"{maps.meta.get('gp_kernel', '?')})")
    if "redshift" in maps.meta:
        title += f" (V relative to z = {maps.meta['redshift']})"
    if v_reference != 0:
        title += f"; V colours centred on {v_reference:.0f} km/s"
    fig.suptitle(title, fontsize=10)
    for i, name, panel_title, (cmap_name, vmin, vmax) in panels:
        kw = {"projection": maps.wcs} if sky_axes else {}
        ax = fig.add_subplot(nrows, ncols, i + 1, **kw)
        data = np.asarray(maps.maps[name], dtype=np.float64)
        cmap = matplotlib.colormaps[cmap_name].with_extremes(bad=_BAD_COLOUR)
        im = ax.imshow(np.ma.masked_invalid(data), origin="lower", cmap=cmap, vmin=vmin, vmax=vmax,
                       interpolation="nearest")
        cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
        cb.set_label(_label(_base_name(name), maps.units.get(name, "")), fontsize=9)
        cb.ax.tick_params(labelsize=8)
        ax.set_title(panel_title, fontsize=10)
        if not np.isfinite(data).any():
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", fontsize=11)
        if sky_axes:
            ra, dec = ax.coords[0], ax.coords[1]
            ra.set_axislabel("RA", fontsize=8)
            ra.set_ticklabel(size=7, exclude_overlapping=True)
            ra.set_ticks(number=3)
            dec.set_ticks(number=4)
            if i % ncols == 0:  # all panels share one WCS: label Dec on the first column only
                dec.set_axislabel("Dec", fontsize=8)
                dec.set_ticklabel(size=7, exclude_overlapping=True)
            else:
                dec.set_ticklabel_visible(False)
        else:
            ax.set_xlabel("x [pixel]", fontsize=8)
            if i % ncols == 0:
                ax.set_ylabel("y [pixel]", fontsize=8)
            ax.tick_params(labelsize=7)
    right = min(0.95, 1 - 0.6 / (3.9 * ncols))  # keep ~0.6 inch for the last colour-bar label
    left = max(0.08, 1.2 / (3.9 * ncols))  # ~1.2 inch for the Dec tick labels and axis label
    fig.subplots_adjust(left=left, right=right, bottom=0.1, top=0.88 if nrows == 1 else 0.92,
                        wspace=0.45, hspace=0.35)
    return fig


def brightest_bin(maps):
    """Index of the bin with the highest S/N.

    Uses the ``SNR`` and ``BINID`` maps when present, else the per-bin spectra:
    median over weighted pixels of ``SPEC / rms(SPEC - MODEL)``.
    """
    spectra = maps.spectra
    n_bin = spectra["SPEC"].shape[0]
    if "SNR" in maps.maps and "BINID" in maps.maps:
        snr = np.asarray(maps.maps["SNR"], dtype=np.float64)
        binid = np.asarray(maps.maps["BINID"])
        ok = np.isfinite(snr) & (binid >= 0) & (binid < n_bin)
        if ok.any():
            return int(binid[ok][np.argmax(snr[ok])])
    w = spectra["WEIGHT"] > 0
    resid = np.where(w, spectra["SPEC"] - spectra["MODEL"], 0.0)
    npix = np.maximum(w.sum(axis=1), 1)
    rms = np.sqrt((resid**2).sum(axis=1) / npix)
    signal = np.where(w, spectra["SPEC"], 0.0).sum(axis=1) / npix
    sn = np.where((rms > 0) & np.isfinite(rms), signal / np.where(rms > 0, rms, 1.0), -np.inf)
    return int(np.argmax(sn))


def _runs(mask):
    """(start, stop) index pairs of the True runs of a 1-D boolean array."""
    m = np.concatenate([[False], np.asarray(mask, bool), [False]])
    edges = np.flatnonzero(np.diff(m.astype(np.int8)))
    return edges.reshape(-1, 2)


def plot_spectrum_fit(maps, path, bin_index=None, dpi=110):
    """Draw one bin's spectrum, best-fit model and residuals to an image file.

    Parameters
    ----------
    maps : KinematicMaps
        Maps carrying ``spectra`` (``LOGLAM``, ``SPEC``, ``MODEL``, ``WEIGHT``).
    path : str or os.PathLike
        Output image.
    bin_index : int, optional
        Row of the spectra (= BINID); default the highest-S/N bin (:func:`brightest_bin`).
    dpi : int, optional
        Resolution of raster output.

    Returns
    -------
    pathlib.Path
        The file written.

    Notes
    -----
    The x axis is the rest-frame wavelength ``exp(LOGLAM)`` in Angstrom; pixels with
    ``WEIGHT == 0`` (masked or clipped) are shaded and drawn grey.
    """
    if not isinstance(maps, KinematicMaps):
        raise InputError("plot_spectrum_fit: 'maps' must be a KinematicMaps")
    if maps.spectra is None:
        raise InputError("plot_spectrum_fit: the maps carry no spectra (LOGLAM/SPEC/MODEL/WEIGHT HDUs)")
    path = _check_out(path)
    sp = maps.spectra
    n_bin = sp["SPEC"].shape[0]
    if bin_index is None:
        bin_index = brightest_bin(maps)
    if isinstance(bin_index, bool) or not isinstance(bin_index, (int, np.integer)) or not 0 <= bin_index < n_bin:
        raise InputError(f"plot_spectrum_fit: 'bin_index' must be an integer in [0, {n_bin}), got {bin_index!r}")
    bin_index = int(bin_index)

    lam = np.exp(sp["LOGLAM"])
    spec = sp["SPEC"][bin_index]
    model = sp["MODEL"][bin_index]
    masked = ~(sp["WEIGHT"][bin_index] > 0)
    good = ~masked & np.isfinite(spec) & np.isfinite(model)
    resid = spec - model

    fig = new_figure((10, 5.2))
    gs = fig.add_gridspec(2, 1, height_ratios=[3, 1], hspace=0.05)
    ax = fig.add_subplot(gs[0])
    axr = fig.add_subplot(gs[1], sharex=ax)
    for a, b in _runs(masked):
        lo = lam[a] - 0.5 * (lam[min(a + 1, lam.size - 1)] - lam[a])
        hi = lam[b - 1] + 0.5 * (lam[b - 1] - lam[max(b - 2, 0)])
        for axis in (ax, axr):
            axis.axvspan(lo, hi, color="0.9", lw=0, zorder=0)
    ax.plot(lam, spec, color="0.6", lw=0.7, label="masked", zorder=1)
    ax.plot(lam, np.where(good, spec, np.nan), color="k", lw=0.8, label="data", zorder=2)
    ax.plot(lam, np.where(np.isfinite(model), model, np.nan), color="C3", lw=1.0, label="model", zorder=3)
    axr.plot(lam, np.where(masked, resid, np.nan), color="0.6", lw=0.6, zorder=1)
    axr.plot(lam, np.where(good, resid, np.nan), color="C2", lw=0.7, zorder=2)
    axr.axhline(0.0, color="k", lw=0.6)

    if good.any():
        rms = float(np.sqrt(np.mean(resid[good] ** 2)))
        lo, hi = np.percentile(spec[good], [0.5, 99.5])
        lo, hi = min(lo, float(model[good].min())), max(hi, float(model[good].max()))
        pad = 0.08 * (hi - lo) if hi > lo else 1.0
        ax.set_ylim(lo - pad, hi + pad)
        r = 5 * rms if rms > 0 else 1.0
        axr.set_ylim(-r, r)
    else:
        rms = float("nan")
        ax.text(0.5, 0.5, "no unmasked pixels", transform=ax.transAxes, ha="center", va="center")
    ax.set_xlim(lam[0], lam[-1])

    info = [f"bin {bin_index}"]
    if "BINID" in maps.maps:
        sel = np.asarray(maps.maps["BINID"]) == bin_index
        info.append(f"{int(sel.sum())} spaxel(s)")
        for name, fmt in (("V", "V = {:.0f}"), ("SIGMA", "sigma = {:.0f}"), ("CHI2", "chi2/dof = {:.2f}"),
                          ("SNR", "S/N = {:.1f}")):
            if f"{name}_SPAXEL" in maps.maps:  # GP file: the fit drawn here is the per-spaxel one
                name = f"{name}_SPAXEL"
            if name in maps.maps and sel.any():
                val = float(np.asarray(maps.maps[name])[sel][0])
                if math.isfinite(val):
                    unit = maps.units.get(name, "")
                    info.append(fmt.format(val) + (f" {unit}" if unit else ""))
    info.append(f"rms resid = {rms:.3g}")
    ax.set_title(", ".join(info), fontsize=9)
    ax.set_ylabel("flux", fontsize=9)
    ax.legend(loc="best", fontsize=8, frameon=False)
    ax.tick_params(labelbottom=False, labelsize=8)
    axr.set_ylabel("data - model", fontsize=9)
    axr.set_xlabel(r"rest-frame wavelength [$\AA$]", fontsize=9)
    axr.tick_params(labelsize=8)
    fig.subplots_adjust(left=0.08, right=0.98, top=0.93, bottom=0.11)
    fig.savefig(path, dpi=dpi)
    return path
