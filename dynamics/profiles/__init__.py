"""Spherical density profiles (one per module) and their composite."""

from .base import Profile
from .burkert import Burkert
from .composite import Composite
from .corenfw import CoreNFW
from .einasto import Einasto
from .hernquist import Hernquist
from .nfw import NFW
from .plummer import Plummer
from .zhao import Zhao

__all__ = ["Profile", "Plummer", "Hernquist", "NFW", "Zhao", "Burkert", "Einasto", "CoreNFW",
           "Composite"]
