"""Simulate and recover: a mock cube from real templates with known smooth V and sigma
fields at S/N 5 per pixel, fitted per spaxel, with Voronoi bins, and with the GP prior.

The fields are draws from a Matern-5/2 GP (so the true length scale is known); spectra
are built independently of the fitter (:mod:`cube3d.testing`: fine-grid real-space
LOSVD convolution, pixel integration, Gaussian noise of known variance).
"""

import warnings

import numpy as np
import pytest

from cube3d.fit import FitConfig, fit_spectra
from cube3d.testing import gp_field, make_mock_cube
from cube3d.prepare import prepare_cube
from cube3d.spatial import GPConfig, spaxel_estimates
from cube3d.spatial.joint import gp_joint_map
from cube3d.spatial.twostep import two_step_fields
from cube3d.templates import load_templates
from cube3d.datasets import demo_templates_dir

N = 28
SCALE = 5.0  # spaxels
V_AMP = 60.0  # km/s
LNS_AMP = 0.2
Z = 0.01


def _rms(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2)))


@pytest.fixture(scope="module")
def mock():
    v = gp_field((N, N), SCALE, V_AMP, "matern52", 11)
    sigma = np.exp(gp_field((N, N), SCALE, LNS_AMP, "matern52", 12, mean=np.log(150.0)))
    lib = load_templates(demo_templates_dir())
    cube, _ = make_mock_cube(v, sigma, templates_dir=lib, snr=5.0, redshift=Z, key=13,
                             wave_range=(4800.0, 5400.0))
    cfg = FitConfig(moments=2, degree=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prep = prepare_cube(cube, lib, Z)
        binned = prepare_cube(cube, lib, Z, target_sn=25.0)
    res = fit_spectra(prep, cfg)
    res_b = fit_spectra(binned, cfg)
    values, errors, ok = spaxel_estimates(prep, res, cfg)
    vor = {name: np.asarray(res_b.params[:, k])[binned.bin_id] for k, name in enumerate(res_b.param_names)}
    joint = gp_joint_map(prep, res, cfg, GPConfig(n_outer=3, n_inner=4))
    return dict(truth={"V": v, "SIGMA": sigma}, values=values, errors=errors, ok=ok, voronoi=vor, joint=joint,
                n_bins=binned.n_spec)


@pytest.mark.parametrize("name", ["V", "SIGMA"])
def test_joint_gp_beats_per_spaxel_and_voronoi(mock, name):
    truth = mock["truth"][name]
    gp = mock["joint"].fields[name].mean
    spaxel = np.where(mock["ok"], mock["values"][name], np.nan)
    rms_spaxel = float(np.sqrt(np.nanmean((spaxel - truth) ** 2)))  # usable spaxels only: kinder to it
    rms_gp, rms_vor = _rms(gp, truth), _rms(mock["voronoi"][name], truth)
    print(f"{name}: RMS per-spaxel {rms_spaxel:.1f}, Voronoi ({mock['n_bins']} bins) {rms_vor:.1f}, GP joint {rms_gp:.1f}")
    assert rms_gp <= 0.7 * rms_spaxel  # at least 30% lower
    assert rms_gp < rms_vor


@pytest.mark.parametrize("name", ["V", "SIGMA"])
def test_joint_gp_intervals_cover_the_truth(mock, name):
    f = mock["joint"].fields[name]
    cover = float(np.mean(np.abs(f.mean - mock["truth"][name]) < f.std))
    print(f"{name}: 68% coverage {cover:.3f}")
    # 784 spaxels but ~30 independent patches (scale 5 on 28 x 28): allow the goal's 60-76%
    assert 0.60 <= cover <= 0.76


@pytest.mark.parametrize("name", ["V", "SIGMA"])
def test_joint_gp_recovers_the_length_scale(mock, name):
    scale = float(mock["joint"].fields[name].hyper.scale[0])
    print(f"{name}: length scale {scale:.2f} (true {SCALE})")
    assert SCALE / 1.5 <= scale <= SCALE * 1.5


def test_two_step_velocity_beats_per_spaxel(mock):
    """The fast tier on the same data: the velocity field improves too (sigma at S/N 5 needs the joint tier,
    see the issue note: ln of noisy per-spaxel sigma is biased)."""
    res = two_step_fields(mock["values"], mock["errors"], mock["ok"], GPConfig(fields=("V",)))
    truth = mock["truth"]["V"]
    spaxel = np.where(mock["ok"], mock["values"]["V"], np.nan)
    assert _rms(res.fields["V"].mean, truth) <= 0.7 * float(np.sqrt(np.nanmean((spaxel - truth) ** 2)))
