"""Exceptions that carry the CLI's exit codes: a user sees one line, never a traceback."""

from __future__ import annotations


class EqsatError(Exception):
    """Base class; ``exit_code`` is what the CLI exits with."""

    exit_code = 2


class InputError(EqsatError):
    """Bad input or usage: unreadable/corrupt model, cycles, unknown ops without shapes..."""

    exit_code = 2


class UntypedValueError(InputError):
    """A value whose type no source gives (op table, the file, onnx's inference, subgraphs):
    the model cannot be imported, though the file is well formed (``eqsat info`` still shows
    what the file declares)."""


class VerificationError(EqsatError):
    """The optimized model does not match the original within tolerance."""

    exit_code = 1


class DataFileError(EqsatError):
    """A data file the package ships (the proof ledger, the generated rules, the roofline
    constants) is missing or unreadable: the installation is broken. Running on without it would
    optimize nothing and exit 0 (issue 22), so it is an error, reported in one line."""

    exit_code = 3


def missing_data_file(path, what: str) -> DataFileError:
    """The error for a package data file that is not there."""
    return DataFileError(
        f"{what} is missing: no file {path} (the installation is incomplete; reinstall eqsat)"
    )
