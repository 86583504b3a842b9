"""Errors the converter raises for the user to read.

Every message is written for a person: what is wrong and what to do. They become a one-line
`error: ...` with exit code 2 only at the edge (converter.cli); library callers catch them.
"""


class ConverterError(Exception):
    """A problem with the user's input or environment that the user can fix."""


class SourceError(ConverterError):
    """The source checkpoint is missing, incomplete, unreadable or unsupported."""


class OutputError(ConverterError):
    """The output path cannot be written."""


class QuantizationError(ConverterError):
    """llama.cpp's quantizer refused or failed."""
