"""dynamics: differentiable spherical mass models, Jeans equations and J-factors in JAX.

Units: kpc, km/s, Msun (``G`` in :mod:`dynamics.constants`).  See ``CONVENTIONS.md``.
Independent of ``cube3d``.  Enable float64 (``jax.config.update("jax_enable_x64", True)``)
at your entry point for the documented accuracy.
"""

from .anisotropy import Anisotropy, BaesVanHese, ConstantBeta, Isotropic, OsipkovMerritt
from .constants import G
from .jeans import sigma_los, sigma_r
from .mge import MGE, fit_mge, fit_mge_weights
from .jam import JamSettings, bin_average, jam_velocity, jam_vrms, rotate_sky
from .jfactor import d_factor, j_factor
from .virial import kurtosis_los, sigma_los4, virial_shape_parameters
from .profiles import (
    NFW,
    Burkert,
    Composite,
    CoreNFW,
    Einasto,
    Hernquist,
    Plummer,
    Profile,
    Zhao,
)

__all__ = [
    "G",
    "Profile",
    "Plummer",
    "Hernquist",
    "NFW",
    "Zhao",
    "Burkert",
    "Einasto",
    "CoreNFW",
    "Composite",
    "Anisotropy",
    "Isotropic",
    "ConstantBeta",
    "OsipkovMerritt",
    "BaesVanHese",
    "sigma_r",
    "sigma_los",
    "sigma_los4",
    "kurtosis_los",
    "virial_shape_parameters",
    "j_factor",
    "d_factor",
    "MGE",
    "fit_mge",
    "fit_mge_weights",
    "jam_vrms",
    "jam_velocity",
    "JamSettings",
    "rotate_sky",
    "bin_average",
]
