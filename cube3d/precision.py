"""float64 switch for the entry points (never flipped at import)."""

import jax


def enable_x64() -> None:
    """Enable float64 in JAX; called by the pipeline and the command line."""
    jax.config.update("jax_enable_x64", True)
