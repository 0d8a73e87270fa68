"""Tests of cube3d.rebin: flux conservation, line centroids, round trips, noise."""

import numpy as np
import pytest

from cube3d.constants import C_KMS
from cube3d.errors import InputError
from cube3d.rebin import log_grid, log_rebin, overlap_matrix, rebin, wave_edges


def _lin_edges(lo=4800.0, hi=5500.0, n=700):
    return np.linspace(lo, hi, n + 1)


def test_total_flux_conserved_exactly():
    rng = np.random.default_rng(1)
    edges = _lin_edges()
    flux = rng.uniform(0.5, 2.0, (3, edges.size - 1))
    # an ln grid spanning exactly the input range: every Angstrom is counted once
    ln_edges = np.linspace(np.log(edges[0]), np.log(edges[-1]), 523)
    out = log_rebin(edges, flux, ln_edges=ln_edges, conserve="flux")
    np.testing.assert_allclose(out.flux.sum(-1), (flux * np.diff(edges)).sum(-1), rtol=1e-12)
    dens = log_rebin(edges, flux, ln_edges=ln_edges)
    np.testing.assert_allclose((dens.flux * np.diff(np.exp(ln_edges))).sum(-1), out.flux.sum(-1), rtol=1e-12)


def test_constant_density_stays_constant_and_grid_is_uniform():
    edges = _lin_edges()
    out = log_rebin(edges, np.full(700, 3.0), velscale=40.0)
    np.testing.assert_allclose(out.flux, 3.0, rtol=1e-12)
    np.testing.assert_allclose(np.diff(out.ln_wave), 40.0 / C_KMS, rtol=1e-10)
    assert out.velscale == 40.0
    assert np.exp(out.ln_wave[0] - 20.0 / C_KMS) == pytest.approx(edges[0], rel=1e-12)


def test_default_velscale_keeps_pixel_count():
    edges = _lin_edges()
    out = log_rebin(edges, np.ones(700))
    assert out.velscale == pytest.approx(C_KMS * np.log(5500.0 / 4800.0) / 700)
    assert out.flux.shape[-1] in (699, 700)


@pytest.mark.parametrize("velscale", [15.0, 60.0, 150.0])
def test_gaussian_line_centroid_preserved(velscale):
    # a narrow line integrated exactly over each input pixel (erf), so the input
    # is the true pixelised line; its flux-weighted centroid must stay at lambda0
    from scipy.special import erf

    edges = _lin_edges(n=1400)
    lam0, sig = 5123.37, 2.2
    cdf = 0.5 * (1 + erf((edges - lam0) / (np.sqrt(2) * sig)))
    flux = np.diff(cdf) / np.diff(edges)
    out = log_rebin(edges, flux, velscale=velscale, conserve="flux")
    lam = np.exp(out.ln_wave)
    centroid = (out.flux * lam).sum() / out.flux.sum()
    pix_A = lam0 * velscale / C_KMS
    # piecewise-constant redistribution moves the centroid by far less than a pixel
    assert abs(centroid - lam0) < 0.01 * pix_A
    assert out.flux.sum() == pytest.approx(1.0, rel=1e-9)


def test_round_trip_smooth_spectrum():
    edges = _lin_edges(n=700)
    centres = 0.5 * (edges[1:] + edges[:-1])
    flux = 1.0 + 0.3 * np.sin(centres / 40.0) + 0.2 * np.exp(-0.5 * ((centres - 5100) / 8.0) ** 2)
    out = log_rebin(edges, flux, velscale=20.0)  # 2-3x oversampled
    ln_edges = np.log(edges[0]) + 20.0 / C_KMS * np.arange(out.flux.size + 1)
    back, *_ = rebin(np.exp(ln_edges), out.flux, edges)
    inside = edges[1:] < np.exp(ln_edges[-1])
    np.testing.assert_allclose(back[inside], flux[inside], rtol=2e-3)
    # back onto the input edges closed by the last ln edge: the integral is exact
    end = np.exp(ln_edges[-1])
    closed = np.concatenate([edges[edges < end], [end]])
    back2, *_ = rebin(np.exp(ln_edges), out.flux, closed, conserve="flux")
    assert back2.sum() == pytest.approx((flux * np.diff(edges))[inside].sum() + flux[inside.sum()] * (end - closed[-2]),
                                        rel=1e-12)


def test_batched_equals_single_and_axis():
    rng = np.random.default_rng(2)
    edges = _lin_edges()
    flux = rng.normal(size=(4, 3, 700))
    var = rng.uniform(0.1, 1.0, flux.shape)
    batched = log_rebin(edges, flux, 33.0, variance=var)
    for i in range(4):
        for j in range(3):
            single = log_rebin(edges, flux[i, j], 33.0, variance=var[i, j])
            np.testing.assert_allclose(batched.flux[i, j], single.flux, rtol=1e-13, atol=1e-15)
            np.testing.assert_allclose(batched.variance[i, j], single.variance, rtol=1e-13)
    first = log_rebin(edges, np.moveaxis(flux, -1, 0), 33.0, variance=np.moveaxis(var, -1, 0), axis=0)
    np.testing.assert_allclose(np.moveaxis(first.flux, 0, -1), batched.flux, rtol=1e-13, atol=1e-15)


def test_variance_whole_and_split_pixels():
    edges = np.arange(11.0) + 5000.0  # 10 pixels of 1 A
    var = np.arange(1.0, 11.0)
    # merge pairs: exact diagonal (v1 + v2) / 4, shared variance identical
    _, v, vd, _ = rebin(edges, np.ones(10), edges[::2], variance=var)
    np.testing.assert_allclose(vd, (var[::2] + var[1::2]) / 4)
    np.testing.assert_allclose(v, vd)
    # split each pixel in two: the diagonal is the input variance, the shared
    # variance is twice that (the two halves are fully correlated)
    fine = np.linspace(edges[0], edges[-1], 21)
    _, v, vd, _ = rebin(edges, np.ones(10), fine, variance=var)
    np.testing.assert_allclose(vd, np.repeat(var, 2))
    np.testing.assert_allclose(v, 2 * np.repeat(var, 2))


def test_shared_variance_gives_right_variance_of_sums_monte_carlo():
    rng = np.random.default_rng(3)
    edges = _lin_edges(n=300)
    sigma = rng.uniform(0.5, 1.5, 300)
    noise = rng.normal(size=(4000, 300)) * sigma
    out = log_rebin(edges, noise, velscale=25.0, variance=sigma**2)  # about 2x oversampled
    width = np.diff(np.exp(np.log(edges[0]) + 25.0 / C_KMS * np.arange(out.flux.shape[-1] + 1)))
    # per-pixel variance = exact diagonal
    emp = out.flux.var(0)
    np.testing.assert_allclose(emp, out.variance_diag[0], rtol=0.12)
    # integrated flux over blocks of 40 output pixels: the shared variance gets it right
    blocks = (out.flux * width)[:, : 40 * 10].reshape(4000, 10, 40).sum(-1)
    pred = (out.variance[0] * width**2)[: 400].reshape(10, 40).sum(-1)
    diag = (out.variance_diag[0] * width**2)[: 400].reshape(10, 40).sum(-1)
    ratio = blocks.var(0) / pred
    assert np.all(np.abs(ratio - 1) < 0.12)
    assert np.all(blocks.var(0) / diag > 1.5)  # the diagonal alone underestimates


def test_bad_pixels_propagate_to_every_touched_output_pixel():
    edges = _lin_edges(n=100, hi=4900.0)
    bad = np.zeros(100, bool)
    bad[40] = True
    flux = np.ones(100)
    flux[40] = np.nan  # must not leak into the result
    out = log_rebin(edges, flux, velscale=30.0, bad=bad)
    new = np.exp(np.log(edges[0]) + 30.0 / C_KMS * np.arange(out.flux.size + 1))
    touched = (new[1:] > edges[40]) & (new[:-1] < edges[41])
    np.testing.assert_array_equal(out.bad, touched)
    assert np.all(np.isfinite(out.flux))


def test_output_beyond_input_is_bad():
    edges = _lin_edges(n=100, hi=4900.0)
    ln_edges = np.log(4790.0) + 30.0 / C_KMS * np.arange(50)
    out = log_rebin(edges, np.ones(100), ln_edges=ln_edges, bad=np.zeros(100, bool))
    assert out.bad[0] and not out.bad[30]


def test_log_uniform_input_edges_are_geometric():
    ln = np.log(3600.0) + 1e-4 * np.arange(50)
    e = wave_edges(np.exp(ln))
    np.testing.assert_allclose(np.log(e[1:-1]), 0.5 * (ln[1:] + ln[:-1]), rtol=0, atol=1e-13)


def test_overlap_matrix_rows_sum_to_widths():
    old = np.sort(np.random.default_rng(4).uniform(5000, 5100, 60))
    new = np.linspace(old[3], old[-4], 37)
    w = overlap_matrix(old, new).toarray()
    np.testing.assert_allclose(w.sum(1), np.diff(new), rtol=1e-12)
    assert np.all(w >= 0)


def test_bad_input_raises():
    with pytest.raises(InputError, match="increasing"):
        log_rebin(np.array([3.0, 2.0, 1.0]), np.ones(3))
    with pytest.raises(InputError, match="length"):
        log_rebin(np.linspace(1, 2, 5), np.ones(7))
    with pytest.raises(InputError, match="conserve"):
        log_rebin(np.linspace(1, 2, 5), np.ones(5), conserve="counts")
    with pytest.raises(InputError, match="velscale"):
        log_rebin(np.linspace(4000, 4010, 5), np.ones(5), velscale=-3.0)
    with pytest.raises(InputError, match="velscale"):
        log_grid(4000.0, 4010.0, 5000.0)
    with pytest.raises(InputError, match="positive"):
        log_rebin(np.array([-1.0, 1.0, 2.0]), np.ones(3))


@pytest.mark.parametrize("velscale", [20.0, 40.0, 100.0])  # input pixels are ~57 km/s
def test_weighted_fit_errors_match_scatter(velscale):
    # the error of a template amplitude fitted with the rebinned (diagonal) weights
    # matches the scatter over noise draws with the shared variance, and is too
    # small with the exact per-pixel diagonal when the output pixels are finer
    rng = np.random.default_rng(7)
    edges = _lin_edges(5000.0, 5600.0, 600)
    centres = 0.5 * (edges[1:] + edges[:-1])
    shape = 1 + 0.5 * np.sin(2 * np.pi * centres / 8.0)
    sigma = 0.2
    draws = shape + rng.normal(size=(2000, 600)) * sigma
    out = log_rebin(edges, draws, velscale=velscale, variance=np.full(600, sigma**2))
    tmpl = log_rebin(edges, shape, velscale=velscale).flux

    def scatter_over_error(var):
        w = 1 / var
        amp = (out.flux * tmpl * w).sum(1) / (tmpl**2 * w).sum()
        return amp.std() / (tmpl**2 * w).sum() ** -0.5

    assert abs(scatter_over_error(out.variance[0]) - 1) < 0.05
    if velscale < 50.0:
        assert scatter_over_error(out.variance_diag[0]) > 1.3
