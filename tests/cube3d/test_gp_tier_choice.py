"""The GP tier ``cube3d fit --gp`` picks when ``--gp-tier`` is not given."""

import warnings

import numpy as np
import pytest

from cube3d.errors import ResultWarning
from cube3d.flags import FLAG_BELOW_RELIABLE_SN, flags_in_use
from cube3d.pipeline import JOINT_TIER_BELOW_SN, _warn_about_gp_tier, choose_gp_tier


def test_low_sn_chooses_the_joint_tier_and_says_why():
    tier, why = choose_gp_tier(np.array([2.0, 3.0, 2.6, 40.0]))
    assert tier == "joint_map"
    assert "median S/N per pixel 2.8" in why and f"< {JOINT_TIER_BELOW_SN:g}" in why


def test_high_sn_chooses_the_two_step_tier():
    tier, why = choose_gp_tier(np.full(10, JOINT_TIER_BELOW_SN))
    assert tier == "two_step" and ">=" in why


def test_no_spectra_is_low_sn():
    assert choose_gp_tier(np.array([]))[0] == "joint_map"


@pytest.mark.parametrize("tier", ["two_step", "nuts"])
def test_a_tier_on_per_spaxel_fits_asked_for_at_low_sn_warns(tier):
    with pytest.warns(ResultWarning, match=rf"--gp-tier {tier} at a median S/N per pixel of 2.8 .*joint_map"):
        _warn_about_gp_tier(tier, np.array([2.0, 3.0, 2.6, 40.0]))


@pytest.mark.parametrize("tier, snr", [("two_step", JOINT_TIER_BELOW_SN), ("joint_map", 2.0), ("nuts", 25.0)])
def test_no_warning_where_the_tier_suits_the_sn(tier, snr):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_about_gp_tier(tier, np.full(5, snr))


def test_reliable_sn_bit_is_cleared_for_joint_map_maps_only():
    flag = np.array([0, FLAG_BELOW_RELIABLE_SN, FLAG_BELOW_RELIABLE_SN | 2])
    np.testing.assert_array_equal(flags_in_use(flag, "joint_map"), [0, 0, 2])
    for tier in (None, "two_step", "nuts"):
        np.testing.assert_array_equal(flags_in_use(flag, tier), flag)
