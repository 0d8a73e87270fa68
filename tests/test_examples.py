"""Examples run as tests with tiny settings (numpyro's test_examples pattern)."""

import importlib.util
from pathlib import Path

import warnings

import numpy as np
import pytest

from dynamics.convergence import ConvergenceWarning, convergence_problems

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mock_dwarf(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    example = _load("mock_dwarf")
    out = tmp_path / "mock_dwarf.png"
    # far too short to converge: the fit warns, the script says so and marks its figure
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        result = example.main(["--n-stars", "150", "--num-warmup", "40", "--num-samples", "40",
                               "--num-chains", "1", "--n-draws", "8", "--halo", "nfw",
                               "--out", str(out)])
    assert result["converged"] is False and result["fit"].converged is False
    assert "*** NOT CONVERGED" in capsys.readouterr().out
    assert out.is_file() and out.stat().st_size > 10_000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the bands are ordered and finite, the truth curves are the model's
    for band in (result["sigma_band"], result["mass_band"]):
        assert np.all(np.isfinite(band)) and np.all(band[0] <= band[1]) and np.all(band[1] <= band[2])
    assert result["mock"].R.shape == (150,)
    assert set(result["fit"].samples) >= {"log10_m_ref", "u_s", "beta_ref", "v_sys", "f_fg"}
    # even a tiny fit pins the systemic velocity (truth 60 km/s) to a few km/s
    assert abs(float(np.median(result["fit"].samples["v_sys"])) - 60.0) < 5.0


def test_mock_dwarf_converges(tmp_path, monkeypatch):
    """The shipped model (NFW, u_s and beta_ref, 10% foreground) at reduced draws converges.

    1000 stars as shipped, 4 chains x (300 + 300) draws instead of 4 x (1000 + 1000). The
    strict limits of the example hold (R-hat <= 1.01, ESS >= 100, no warning); the
    assertion below allows R-hat up to 1.02 only for the sampling noise of the shorter
    chains (measured: R-hat 1.002, ESS 322, about 50 s on 2 cores).
    """
    monkeypatch.setenv("MPLBACKEND", "Agg")
    example = _load("mock_dwarf")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        result = example.main(["--num-warmup", "300", "--num-samples", "300", "--num-chains", "4",
                               "--n-draws", "100", "--seed", "0", "--out", str(tmp_path / "m.png")])
    fit = result["fit"]
    assert max(fit.r_hat.values()) < 1.02, fit.r_hat
    assert min(fit.n_eff.values()) > 100, fit.n_eff
    assert fit.num_divergences == 0
    # the warning is issued exactly when the strict limits fail, and says so
    problems = convergence_problems(fit.r_hat, fit.n_eff)
    assert result["converged"] == (problems == []) == (len(caught) == 0)
    # recovery: the foreground does not take over the members, v_sys and the mass within
    # r_ref are pinned, the 68% band of M(<r) covers the truth where the stars are
    truth = result["truth"]
    assert float(np.median(fit.samples["f_fg"])) < 0.2
    assert abs(float(np.median(fit.samples["v_sys"])) - 60.0) < 1.5
    m_ref = np.asarray(fit.samples["log10_m_ref"])
    assert abs(float(np.median(m_ref)) - truth["log10_m_ref"]) < 2.0 * float(np.std(m_ref))
    inside = (result["r"] > 0.05) & (result["r"] < 1.0)
    band, true = result["mass_band"][:, inside], result["mass_true"][inside]
    assert np.all((band[0] <= true) & (true <= band[2])), (band, true)


def test_mock_dwarf_rejects_bad_flags():
    example = _load("mock_dwarf")
    with pytest.raises(SystemExit):
        example.parse_args(["--halo", "burkert"])


def test_gp_mock(tmp_path, monkeypatch):
    """8 x 8 mock at S/N 5: the joint GP map beats the per-spaxel fits, the figure is written."""
    monkeypatch.setenv("MPLBACKEND", "Agg")
    example = _load("gp_mock")
    out = tmp_path / "gp_mock.png"
    result = example.main(["--size", "8", "--snr", "5", "--seed", "0", "--n-outer", "2", "--n-inner", "3",
                           "--output", str(out)])
    assert out.is_file() and out.stat().st_size > 10_000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = result["table"]
    assert set(table) == {"spaxel", "voronoi", "two_step", "joint_map"}
    for name, row in table.items():
        for q in ("V", "SIGMA"):
            assert np.isfinite(row[q]["rms"]) and row[q]["rms"] > 0, (name, q)
            assert 0.0 <= row[q]["cover"] <= 1.0, (name, q)
            assert 0 < row[q]["n"] <= 64, (name, q)
    # the GP predicts every spaxel; the joint map borrows strength and beats the single spaxels
    assert table["joint_map"]["V"]["n"] == table["two_step"]["V"]["n"] == 64
    for q in ("V", "SIGMA"):
        assert table["joint_map"][q]["rms"] < table["spaxel"][q]["rms"], q
    # a 150 km/s disk (|V| <= 100 km/s on the sky) recovered to a few tens of km/s
    assert table["joint_map"]["V"]["rms"] < 40.0
    v_joint = result["estimates"]["joint_map"][0]["V"]
    assert np.corrcoef(v_joint.ravel(), result["truth"]["V"].ravel())[0, 1] > 0.8


def test_gp_mock_rejects_bad_flags():
    example = _load("gp_mock")
    with pytest.raises(SystemExit):
        example.parse_args(["--tiers", "spaxel,nuts"])
    with pytest.raises(SystemExit):
        example.parse_args(["--size", "2"])
