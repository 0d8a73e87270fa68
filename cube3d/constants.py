"""Physical constants used by cube3d, defined once.

Units: velocities in km/s, wavelengths in Angstrom.
"""

#: Speed of light in vacuum, km/s (exact, SI definition).
C_KMS = 299792.458
