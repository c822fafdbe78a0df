"""Errors a user can act on: what was wrong, where, and how to fix it.

The CLI turns every ``ModalrecError`` into one line and exit code 2; anything else is a bug.
"""

from __future__ import annotations


class ModalrecError(Exception):
    """Bad input or an impossible request, reported without a traceback."""

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None) -> None:
        self.message = message
        self.where = where
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        return f"{text} (hint: {self.hint})" if self.hint else text


class DataError(ModalrecError):
    """Malformed or inconsistent data: files, rows, columns, ids."""


class ConfigError(ModalrecError):
    """A bad option, parameter or config key."""


class ModelError(ModalrecError):
    """A model cannot be built or used as asked (missing features, unfitted, ...)."""


class FeatureError(ModalrecError):
    """Features cannot be extracted, found or aligned."""


class DependencyError(ModalrecError):
    """An optional package or model weights are not installed."""
