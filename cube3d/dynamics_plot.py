"""Figures of ``cube3d dynamics``: maps, discrete velocities, enclosed mass, corner plot.

Each function draws one PNG with matplotlib's object API (no pyplot state) and returns the path.
"""

from __future__ import annotations

import numpy as np

from .plot import new_figure

__all__ = ["plot_ifu_maps", "plot_discrete", "plot_enclosed_mass", "plot_corner"]


def _to_map(values_per_bin, info):
    img = np.full(info["shape"][0] * info["shape"][1], np.nan)
    img[info["index"]] = np.asarray(values_per_bin)[info["binid"]]
    return img.reshape(info["shape"])


def plot_ifu_maps(path, ifu, info, v_model, vrms_model, dpi=100):
    """Data, model and residual/error maps of V and V_rms (km/s) on the maps' pixel grid."""
    fig = new_figure((12, 7))
    rows = (("V", ifu.v, v_model, ifu.v_err, "RdBu_r"), ("V_rms", ifu.vrms, vrms_model, ifu.vrms_err, "viridis"))
    for r, (name, data, model, err, cmap) in enumerate(rows):
        d, m = _to_map(data, info), _to_map(model, info)
        res = _to_map((np.asarray(data) - np.asarray(model)) / np.asarray(err), info)
        if name == "V":
            lim = np.nanpercentile(np.abs(d), 98)
            lo, hi = -lim, lim
        else:
            lo, hi = np.nanpercentile(d, [2, 98])
        for c, (img, title, cm, vlim) in enumerate(((d, f"{name} data", cmap, (lo, hi)),
                                                    (m, f"{name} model", cmap, (lo, hi)),
                                                    (res, f"{name} (data - model) / error", "coolwarm", (-3, 3)))):
            ax = fig.add_subplot(2, 3, 3 * r + c + 1)
            im = ax.imshow(img, origin="lower", cmap=cm, vmin=vlim[0], vmax=vlim[1], interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="km/s" if c < 2 else "")
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path


def plot_discrete(path, discrete, vrms_draws, member_prob=None, dpi=100):
    """Discrete velocities against projected radius with the model's +-V_rms band (16-84%)."""
    fig = new_figure((7, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    R = np.hypot(discrete.x, discrete.y)
    order = np.argsort(R)
    band = np.percentile(np.asarray(vrms_draws), [16, 50, 84], axis=0)
    for sign in (1, -1):
        ax.fill_between(R[order], sign * band[0][order], sign * band[2][order], color="C0", alpha=0.3,
                        label="model V_rms (68%)" if sign == 1 else None)
        ax.plot(R[order], sign * band[1][order], color="C0", lw=1)
    c = None if member_prob is None else np.asarray(member_prob)
    sc = ax.scatter(R, discrete.v, c=c, s=10, cmap="viridis", vmin=0, vmax=1, zorder=3)
    if c is not None:
        fig.colorbar(sc, ax=ax, label="membership probability")
    ax.set(xlabel="projected radius R [kpc]", ylabel="v [km/s]", xscale="log")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path


def plot_enclosed_mass(path, radii, total, stars, dark=None, dpi=100):
    """Enclosed mass (Msun) within spheres: 16-84% bands of total, stellar and dark mass.

    ``total``, ``stars``, ``dark``: (draws, radii) arrays of log10 mass.
    """
    fig = new_figure((6.5, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    for name, vals, col in (("total", total, "k"), ("stars", stars, "C1"), ("dark", dark, "C0")):
        if vals is None:
            continue
        lo, mid, hi = np.percentile(10.0 ** np.asarray(vals), [16, 50, 84], axis=0)
        ax.fill_between(radii, lo, hi, color=col, alpha=0.25)
        ax.plot(radii, mid, color=col, label=name)
    ax.set(xscale="log", yscale="log", xlabel="r [kpc]", ylabel=r"$M(<r)$ [M$_\odot$]")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path


def plot_corner(path, samples, names, dpi=80):
    """Corner plot: 1-D histograms on the diagonal, 2-D scatter of the draws below it."""
    k = len(names)
    fig = new_figure((1.8 * k + 1, 1.8 * k + 1))
    draws = {n: np.asarray(samples[n]).reshape(-1) for n in names}
    for i, ni in enumerate(names):
        for j, nj in enumerate(names[: i + 1]):
            ax = fig.add_subplot(k, k, i * k + j + 1)
            if i == j:
                ax.hist(draws[ni], bins=30, color="C0", histtype="stepfilled", alpha=0.6)
                ax.set_yticks([])
            else:
                ax.plot(draws[nj], draws[ni], ",", color="C0", alpha=0.5)
            if i == k - 1:
                ax.set_xlabel(nj, fontsize=8)
            else:
                ax.set_xticks([])
            if j == 0 and i > 0:
                ax.set_ylabel(ni, fontsize=8)
            elif j > 0:
                ax.set_yticks([])
            ax.tick_params(labelsize=6)
    fig.subplots_adjust(hspace=0.05, wspace=0.05)
    fig.savefig(path, dpi=dpi)
    return path
