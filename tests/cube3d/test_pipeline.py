"""The pipeline: run provenance (every setting goes to the maps header in a form FITS/JSON
can hold), and the fit compiled while the cube is planned."""

import json
import threading
import warnings

import numpy as np
import pytest

from cube3d import datasets
from cube3d import fit as fitmod
from cube3d.fit import FitConfig
from cube3d.pipeline import config_meta, run_fit
from cube3d.prepare import PrepareConfig


def test_settings_of_every_kind_become_header_values():
    table = (np.linspace(4500.0, 9300.0, 50), np.linspace(2.9, 2.4, 50))  # an LSF table given in Python
    meta = config_meta(PrepareConfig(lsf=table, wave_range=(4800, 5500), velscale=60), FitConfig(moments=4))
    json.dumps(meta)  # every value serialisable (the maps header stores them)
    assert meta["lsf"] == "table of 50 points, 4500-9300 A, FWHM 2.4-2.9 A"
    assert meta["wave_range"] == [4800.0, 5500.0] and meta["velscale"] == 60 and meta["moments"] == 4
    assert "n_threads" not in meta
    assert config_meta(PrepareConfig(lsf="MUSE"), FitConfig())["lsf"] == "MUSE"
    assert config_meta(PrepareConfig(lsf=2.5), FitConfig())["lsf"] == 2.5
    assert config_meta(PrepareConfig(lsf=object()), FitConfig())["lsf"] == "object given in Python"


@pytest.mark.timeout(300)
def test_fit_compiles_on_its_own_thread_while_the_cube_is_planned(monkeypatch):
    """run_fit traces the chunks' program once, on the thread that plan_cube starts once it
    knows the templates; the chunks then run that program (no second trace)."""
    threads = []
    real_fit_one = fitmod._fit_one

    def counting_fit_one(*args, **kwargs):  # runs once per trace
        threads.append(threading.current_thread().name)
        return real_fit_one(*args, **kwargs)

    monkeypatch.setattr(fitmod, "_fit_one", counting_fit_one)
    fitmod._fit_chunk.clear_cache()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = run_fit(datasets.demo_cube_path(), datasets.demo_templates_dir(), datasets.DEMO_REDSHIFT,
                      PrepareConfig(target_sn=15.0), FitConfig(moments=2, chunk_size=8))
    assert threads == ["cube3d-compile-fit"]
    assert run.result.ok.all() and np.all(np.isfinite(run.result.params))
    assert not any(t.name == "cube3d-compile-fit" for t in threading.enumerate())  # joined
