"""Run provenance: every setting goes to the maps header in a form FITS/JSON can hold."""

import json

import numpy as np

from cube3d.fit import FitConfig
from cube3d.pipeline import config_meta
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
