"""Typed errors. Every error a user can cause is one of these and prints as one line.

This module is imported by the torch-free runtime too, so it uses the standard library only.
"""

from __future__ import annotations


class HfExportError(Exception):
    """Base class: a known failure with a message fit for a one-line CLI error."""


class ConfigError(HfExportError):
    """A target profile or recipe file is missing, malformed or has a bad field."""


class PlanError(HfExportError):
    """The recipe's pass chain cannot run on the target (checked before any work starts)."""


class ModelLoadError(HfExportError):
    """The model could not be found, downloaded or loaded, or its task is unsupported."""


class DataError(HfExportError):
    """Calibration or evaluation data is unreadable or empty."""


class ExportError(HfExportError):
    """A pass failed while transforming the model."""


class FidelityError(HfExportError):
    """The built artifact misses a fidelity gate; carries the failed gate values."""

    def __init__(self, message: str, failures: list[dict] | None = None, report_dir: str | None = None):
        super().__init__(message)
        self.failures = failures or []
        self.report_dir = report_dir


class BundleIntegrityError(HfExportError):
    """A bundle's manifest is missing or a file does not match its recorded checksum."""


class SignatureError(BundleIntegrityError):
    """A bundle's signature is missing, made with another key, altered, or its files changed after signing."""


class OutputExistsError(HfExportError):
    """The output folder exists and --force was not given."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first meaningful line of an exception's message, for a one-line error built around it.

    A first line that only leads in to what follows ("... from one of:", "Error in execution:") is joined
    with the lines after it, so a message never ends cut at a colon; the type's name when the message is empty.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    text, rest = lines[0], iter(lines[1:])
    while text.endswith(":"):
        following = next(rest, None)
        if following is None:
            text = text.rstrip(":").rstrip() or type(exc).__name__
            break
        text = f"{text} {following}"
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."
