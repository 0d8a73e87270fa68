"""A persistent cache of compiled XLA programs, so that a run compiles only what no earlier
run with the same shapes and settings has compiled.

A fit's compiled program depends on the chunk shape, the template library's size and the
fit settings, not on the data; a survey that fits hundreds of cubes with one setup
compiles once.  JAX's persistent compilation cache (``jax_compilation_cache_dir``) keeps
the programs on disk, keyed by the program, the compile options, the JAX version and the
device; an entry that cannot be read is compiled again, never trusted.  On the real MUSE
minicube with the 63 MILES-HC templates, ``cube3d fit`` takes 18.3-18.5 s in a fresh
process and 14.0-14.7 s when the cache holds its programs (``tests/benchmarks/README.md``).

The command line turns the cache on (:func:`enable_compile_cache`), in the folder
``$CUBE3D_CACHE_DIR``, else ``$XDG_CACHE_HOME/cube3d/xla``, else ``~/.cache/cube3d/xla``;
``CUBE3D_CACHE_DIR=off`` turns it off.  Library users call :func:`enable_compile_cache`
themselves (it changes a process-wide JAX setting, so it is never done at import).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional

__all__ = ["CACHE_ENV", "CACHE_MAX_BYTES", "active_cache_dir", "cache_dir_from_env", "enable_compile_cache"]

#: environment variable naming the cache folder (``off`` disables the cache)
CACHE_ENV = "CUBE3D_CACHE_DIR"
#: the cache's size limit: least recently used programs are evicted beyond it
CACHE_MAX_BYTES = 1 << 30
#: programs that compile faster than this are not worth a file (seconds)
MIN_COMPILE_SECONDS = 0.3

_active: Optional[Path] = None


def cache_dir_from_env(environ=None) -> Optional[Path]:
    """The cache folder the environment asks for, or None when ``CUBE3D_CACHE_DIR=off``.

    ``$CUBE3D_CACHE_DIR``, else ``$XDG_CACHE_HOME/cube3d/xla``, else
    ``~/.cache/cube3d/xla`` (the XDG base-directory convention).
    """
    env = os.environ if environ is None else environ
    chosen = env.get(CACHE_ENV, "").strip()
    if chosen.lower() in ("off", "none", "0", "false", "no"):
        return None
    if chosen:
        return Path(chosen).expanduser()
    base = env.get("XDG_CACHE_HOME", "").strip()
    return (Path(base) if base else Path.home() / ".cache") / "cube3d" / "xla"


def enable_compile_cache(path=None) -> Optional[Path]:
    """Keep compiled programs in ``path`` (default :func:`cache_dir_from_env`) across runs.

    Parameters
    ----------
    path : str or os.PathLike, optional
        The cache folder; created when missing.

    Returns
    -------
    pathlib.Path or None
        The folder in use; None when the cache is off or the folder cannot be created or
        written (a warning says why; the run goes on, compiling as usual).

    Notes
    -----
    JAX reads the setting at its first compilation in a process: call this before any.
    """
    folder = cache_dir_from_env() if path is None else Path(path).expanduser()
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError("not writable")
    except OSError as exc:
        warnings.warn(f"compile cache {folder}: unusable ({getattr(exc, 'strerror', None) or exc}); compiling "
                      f"without it (set {CACHE_ENV}=off to silence this)", stacklevel=2)
        return None
    import jax

    global _active
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    if "jax_compilation_cache_max_size" in jax.config.values:  # not in every JAX the project accepts
        jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)
    _active = folder
    return folder


def active_cache_dir() -> Optional[Path]:
    """The folder :func:`enable_compile_cache` set in this process, or None."""
    return _active
