"""Sums of profiles (``stars + halo``)."""

import jax.numpy as jnp

from .base import Profile, check_radius

__all__ = ["Composite"]


class Composite(Profile):
    """Sum of profiles; every quantity is the sum of the components'.

    The components form a tuple, so the pytree structure is fixed by the component
    types: new parameter values reuse compiled code.  Build it with ``+``.

    Examples
    --------
    >>> from dynamics import Plummer, NFW
    >>> total = Plummer(1e7, 0.3) + NFW(1e7, 1.0)
    >>> m = total.enclosed_mass(1.0)
    """

    components: tuple

    def __check_init__(self):
        if len(self.components) == 0 or not all(isinstance(c, Profile) for c in self.components):
            raise ValueError("Composite: components must be a non-empty tuple of Profile")

    @property
    def closed_mass(self):
        return all(c.closed_mass for c in self.components)

    def density(self, r):
        r = check_radius(r)
        return sum(c.density(r) for c in self.components)

    def enclosed_mass(self, r):
        r = check_radius(r)
        return sum(c.enclosed_mass(r) for c in self.components)

    def potential(self, r):
        r = check_radius(r)
        return sum(c.potential(r) for c in self.components)

    def surface_density(self, R):
        R = check_radius(R, "R")
        return sum(c.surface_density(R) for c in self.components)

    def scale_radius(self):
        return jnp.max(jnp.stack([jnp.asarray(c.scale_radius()) for c in self.components]))
