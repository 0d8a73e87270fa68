"""The GP tier ``cube3d fit --gp`` picks when ``--gp-tier`` is not given."""

import numpy as np

from cube3d.pipeline import JOINT_TIER_BELOW_SN, choose_gp_tier


def test_low_sn_chooses_the_joint_tier_and_says_why():
    tier, why = choose_gp_tier(np.array([2.0, 3.0, 2.6, 40.0]))
    assert tier == "joint_map"
    assert "median S/N per pixel 2.8" in why and f"< {JOINT_TIER_BELOW_SN:g}" in why


def test_high_sn_chooses_the_two_step_tier():
    tier, why = choose_gp_tier(np.full(10, JOINT_TIER_BELOW_SN))
    assert tier == "two_step" and ">=" in why


def test_no_spectra_is_low_sn():
    assert choose_gp_tier(np.array([]))[0] == "joint_map"
