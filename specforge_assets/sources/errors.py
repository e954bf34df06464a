"""Errors of the sources layer. Every message names the source, file, row and field it is about."""

from __future__ import annotations

from ..errors import UserError


class SourceError(UserError):
    """A whole source cannot be prepared (unknown name, missing path, unreachable hub, ...)."""


class UnknownSourceError(SourceError, KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class UnsupportedPresetError(SourceError):
    """A SpecForge preset we deliberately do not support (the vision ones)."""


class HubUnavailableError(SourceError):
    """The HF hub could not be reached (offline mode or no network)."""


class RowError(ValueError):
    """One raw row cannot be converted or fails validation.

    `field` is a JSON-path-like pointer inside the row (``conversations[2].role``).
    The driver adds file and row; in quarantine mode the row is written to the quarantine
    file with this reason instead of failing the run.
    """

    def __init__(self, reason: str, field: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.field = field

    def located(self, file: str | None, row: int | None) -> str:
        where = f"{file}" if file else "<input>"
        if row is not None:
            where += f" row {row}"
        if self.field:
            where += f" field {self.field!r}"
        return f"{where}: {self.reason}"


class RowFailure(SourceError):
    """Raised in strict mode (the SpecForge-compatible CLI) for the first bad row."""
