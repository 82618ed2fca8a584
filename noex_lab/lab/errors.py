"""Errors of the Jupyter layer (all `NoexError`s, raised in the cell that ran the magic)."""

from __future__ import annotations

from IPython.core.error import UsageError

from ..core.errors import NoexError


class LabError(NoexError):
    """A `%noex` command could not do what it was asked; the message says why and what to do."""


class MagicUsageError(LabError, UsageError):
    """A `%noex` command line could not be parsed (see `%noex help`)."""
