"""`cube3d dynamics` end to end on a small mock: outputs, their contents, exit statuses."""

import numpy as np
import pytest
from astropy.table import Table

from cube3d.cli import main
from cube3d.dynamics_cli import OUTPUT_FILES
from cube3d.testing.dynamics_files import write_dynamics_mock
from dynamics import joint_fit


@pytest.fixture(scope="module")
def mock(tmp_path_factory):
    return write_dynamics_mock(tmp_path_factory.mktemp("dyn"), n_side=6, n_stars=40, pixel_arcsec=1.5)


def _args(m, out, *extra):
    return ["dynamics", "--maps", str(m.maps), "--mge", str(m.mge), "--stars", str(m.stars), "--distance",
            str(m.distance), "--centre", str(m.centre[0]), str(m.centre[1]), "--pa", str(m.pa), "--halo", "none",
            "-o", str(out), *extra]


def test_laplace_writes_every_output(mock, tmp_path, capsys):
    az = pytest.importorskip("arviz")
    out = tmp_path / "out"
    assert main(_args(mock, out, "--method", "laplace", "--mass-radii", "1", "5")) == 0
    captured = capsys.readouterr()
    assert "laplace converged" in captured.out
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    table = Table.read(out / "summary.ecsv")
    assert table.colnames == ["name", "mean", "sd", "p16", "p50", "p84", "r_hat", "ess"]
    names = list(table["name"])
    assert names[:6] == ["ml", "inclination", "beta_z", "kappa", "beta_z_discrete", "f_out"]
    assert {"log10_mass_total_1kpc", "log10_mass_stars_5kpc"} <= set(names)
    assert table.meta["method"] == "laplace" and table.meta["converged"] is True
    row = table[names.index("ml")]
    assert row["p16"] < row["p50"] < row["p84"]
    # the mock's truth lies within a generous interval (coverage is checked in the benchmarks)
    assert abs(row["p50"] - mock.truth["ml"]) < 4 * (row["p84"] - row["p16"])
    idata = az.from_netcdf(out / "posterior.nc")
    assert {"posterior", "observed_data", "constant_data", "predictions"} <= set(idata.groups())
    assert idata.posterior["ml"].shape[0] == 1
    assert idata.observed_data["v"].shape == (36,) and idata.observed_data["v_discrete"].shape == (40,)
    for png in ("ifu_maps.png", "discrete.png", "enclosed_mass.png", "corner.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a second run refuses to replace the outputs, leaving them as they were
    before = (out / "summary.ecsv").read_bytes()
    assert main(_args(mock, out, "--method", "laplace")) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "summary.ecsv").read_bytes() == before


def test_nuts_that_did_not_converge_exits_3(mock, tmp_path, capsys, monkeypatch):
    traces = []
    real_parts = joint_fit.log_likelihood_parts

    def counting_parts(*args, **kwargs):  # runs once per trace of the JAM likelihood
        traces.append(1)
        return real_parts(*args, **kwargs)

    monkeypatch.setattr(joint_fit, "log_likelihood_parts", counting_parts)
    out = tmp_path / "nuts"
    status = main(_args(mock, out, "--maps", str(mock.maps), "--method", "nuts", "--num-warmup", "10",
                        "--num-samples", "10", "--max-tree-depth", "3", "--no-plots", "-q"))
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 3
    # the Laplace start's compiled potential is NUTS's too: the likelihood is traced once
    assert len(traces) == 1
    assert len(err) == 1 and err[0].startswith("cube3d: error: nuts did not converge")
    assert "ESS" in err[0]
    table = Table.read(out / "summary.ecsv")
    assert table.meta["converged"] is False and np.all(np.isfinite(table["r_hat"][:4]))
