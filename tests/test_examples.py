"""Examples run as tests with tiny settings (numpyro's test_examples pattern)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mock_dwarf(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    example = _load("mock_dwarf")
    out = tmp_path / "mock_dwarf.png"
    result = example.main(["--n-stars", "150", "--num-warmup", "40", "--num-samples", "40",
                           "--num-chains", "1", "--n-draws", "8", "--halo", "nfw",
                           "--out", str(out)])
    assert out.is_file() and out.stat().st_size > 10_000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the bands are ordered and finite, the truth curves are the model's
    for band in (result["sigma_band"], result["mass_band"]):
        assert np.all(np.isfinite(band)) and np.all(band[0] <= band[1]) and np.all(band[1] <= band[2])
    assert result["mock"].R.shape == (150,)
    assert set(result["fit"].samples) >= {"log10_m_ref", "log10_r_s", "log10_r_a", "v_sys", "f_fg"}
    # even a tiny fit pins the systemic velocity (truth 60 km/s) to a few km/s
    assert abs(float(np.median(result["fit"].samples["v_sys"])) - 60.0) < 5.0


def test_mock_dwarf_rejects_bad_flags():
    example = _load("mock_dwarf")
    with pytest.raises(SystemExit):
        example.parse_args(["--halo", "burkert"])
