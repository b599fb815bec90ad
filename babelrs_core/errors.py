"""The one root of the errors babelrs raises for bad input or a broken state a user can fix.

The CLI prints these as one line (``error: ...``) without a traceback and exits with the error's
``exit_code``; the Prefect flow retries an error only when it is ``transient``. Every message names
the file or setting at fault and what to do.
"""

from __future__ import annotations


class BabelrsError(Exception):
    """A problem the user can fix (corrupted checkpoint, unreachable registry, ...).

    ``transient``: a retry may succeed (a server or network hiccup); the Prefect flow retries
    only those (and unknown errors), never a damaged file or bad input. ``exit_code``: the CLI's
    exit status for it.
    """

    transient: bool = False
    exit_code: int = 1


class BadInputError(BabelrsError, ValueError):
    """Bad data, params or arguments (never transient; the CLI exits with status 2)."""

    exit_code = 2
