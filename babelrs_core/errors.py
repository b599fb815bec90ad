"""The base of the errors babelrs raises for bad input or a broken state a user can fix.

The CLI prints these as one line (``error: ...``) with exit status 1, without a traceback; every
message names the file or setting at fault and what to do.
"""

from __future__ import annotations


class BabelrsError(Exception):
    """A problem the user can fix (corrupted checkpoint, unreachable registry, ...).

    ``transient``: a retry may succeed (a server or network hiccup); the Prefect flow retries
    only those (and unknown errors), never a damaged file or bad input.
    """

    transient: bool = False
