"""Exceptions raised by the FHIR mapping layer."""

from pydantic import ValidationError


class MappingError(Exception):
    """Base class for every error raised by fhir_mappings."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InstrumentError(MappingError):
    """A Questionnaire cannot be used as an Alliance Check instrument."""


class ScoringError(MappingError):
    """Answers cannot be scored against their instrument."""


class BundleError(MappingError):
    """A transaction Bundle failed validation before it was sent."""


def describe_validation_error(exc: ValidationError) -> str:
    """Summarise a pydantic error by location and type, never by value."""
    # The input may hold a client's free text, so only paths and error kinds leave here.
    parts = [
        f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['type']}"
        for err in exc.errors(include_input=False, include_url=False)
    ]
    return "; ".join(parts)
