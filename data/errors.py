"""Errors a user can fix: the CLI prints them as one line and exits 2."""

from __future__ import annotations


class UserInputError(ValueError):
    """A bad file, argument or configuration. The message names the file/argument and what was expected."""
