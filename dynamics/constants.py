"""Physical constants and unit conversions for :mod:`dynamics`.

Units throughout the package: lengths in kpc, velocities in km/s, masses in Msun,
densities in Msun / kpc^3.  ``G`` is defined here once and nowhere else.

The values follow astropy 6 (CODATA 2018 G, IAU 2015 nominal solar mass, IAU 2012
astronomical unit based parsec).
"""

#: Newton's constant in kpc (km/s)^2 / Msun.
G = 4.300917270036279e-6

#: One kiloparsec in cm.
KPC_CM = 3.0856775814913673e21

#: One solar mass in kg.
MSUN_KG = 1.988409870698051e30

#: One GeV / c^2 in kg (1e9 eV * e / c^2, exact in SI 2019).
GEV_KG = 1.602176634e-10 / 299792458.0**2

#: One solar mass in GeV / c^2.
MSUN_GEV = MSUN_KG / GEV_KG

#: Msun^2 / kpc^5 expressed in GeV^2 / cm^5 (J-factor unit conversion).
J_UNIT = MSUN_GEV**2 / KPC_CM**5

#: Msun / kpc^2 expressed in GeV / cm^2 (D-factor unit conversion).
D_UNIT = MSUN_GEV / KPC_CM**2

#: Degrees to radians.
DEG = 3.141592653589793 / 180.0

__all__ = ["G", "KPC_CM", "MSUN_KG", "GEV_KG", "MSUN_GEV", "J_UNIT", "D_UNIT", "DEG"]
