"""The one error type of the command line: an expected failure the user can fix.

The CLI prints such an error as one line and exits 1; anything else is a bug and keeps its
traceback, so that expected failures never hide real ones.
"""

from __future__ import annotations

__all__ = ["CliError"]


class CliError(Exception):
    """An expected failure (unreadable file, unusable option), printed as one line."""
