"""``--emission-width`` (PrepareConfig.emission_width): the masked windows' width, checked before any work."""

import numpy as np
import pytest

from cube3d import datasets
from cube3d.errors import InputError
from cube3d.io import read_cube
from cube3d.prepare import PrepareConfig, prepare_cube, validate_prepare_config
from cube3d.templates import load_templates
from tests.cube3d.test_cli import assert_user_error, fit_args


def test_wider_windows_mask_more_pixels():
    cube = read_cube(datasets.demo_cube_path())
    lib = load_templates(datasets.demo_templates_dir())
    masked = []
    for width in (800.0, 1500.0):
        prep = prepare_cube(cube, lib, datasets.DEMO_REDSHIFT, target_sn=30, emission_width=width)
        masked.append(int(np.sum(prep.ivar[0] == 0)))
    assert masked[1] > masked[0] > 0


@pytest.mark.parametrize("width", [-1.0, float("nan")])
def test_bad_width_is_refused_before_reading(width):
    with pytest.raises(InputError, match="--emission-width"):
        validate_prepare_config(PrepareConfig(emission_width=width))


def test_cli_bad_width_is_one_line(tmp_path, capsys):
    out = tmp_path / "maps.fits"
    assert_user_error(capsys, fit_args(datasets.demo_cube_path(), out, "--emission-width", "-5"), "--emission-width",
                      output=out)
