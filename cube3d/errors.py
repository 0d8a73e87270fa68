"""Errors raised for bad user input.

Every user-facing failure (missing file, unknown layout, bad option value) raises
:class:`InputError` with a one-line message naming the file, HDU or option.  The
command line prints that line and exits with status 2, without a traceback.
"""


class InputError(ValueError):
    """Bad user input: the message names the file, HDU or option at fault."""


class ResultWarning(UserWarning):
    """A warning about the results themselves (e.g. many spectra clipped, no noise HDU):
    the command line prints it even with ``--quiet``; the FLAG map records it per spaxel."""
