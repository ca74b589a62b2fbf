"""The proof ledger: which rules are proved, as written, and in what scope.

Consumes rule records; produces the ledger's entries (``ledger.json`` next to this module,
committed) and :func:`holds`, the check that a rule's proof still applies to its current text.
This module imports no solver, so the optimizer can consult the ledger cheaply (the default
schedule uses only proved rules); :mod:`.rules` writes it. The :class:`Verdict` record, what
every prover returns and the ledger records, is defined here, below all the provers, so that
:mod:`.pyrules` need not import :mod:`.rules` (which dispatches to it).
"""

from __future__ import annotations

import hashlib
import inspect
import json
from dataclasses import dataclass
from pathlib import Path

from eqsat.errors import missing_data_file

LEDGER = Path(__file__).with_name("ledger.json")


@dataclass
class Verdict:
    """One rule's proof result, as a prover returns it."""

    name: str
    result: str  # proved | refuted | unknown | unsupported
    scope: str
    instances: int
    time_s: float
    detail: str = ""
    hash: str = ""
    generic: str = ""  # the shape-generic proof's scope, where one exists (see .generic)


def rule_hash(rule) -> str:
    """A hash of what the proof depends on: an egglog rule's printed form; for a Python-driven
    rule its pattern *and the source of the module that defines its code* (editing any helper
    there drops the proof: conservative, and re-proving takes seconds)."""
    text = rule.text()
    find = getattr(rule, "find", None)
    if find is not None:
        module = inspect.getmodule(find)
        text += "\n" + (inspect.getsource(module) if module else inspect.getsource(find))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_ledger(path: Path | None = None, missing_ok: bool = False) -> dict[str, dict]:
    """The ledger's entries (``path``: the package's :data:`LEDGER`). A missing file is an
    error (:class:`~eqsat.errors.DataFileError`): read as empty, it would leave every rule out
    as unproved and optimize nothing, silently; ``missing_ok`` is for a writer that starts a
    new ledger."""
    path = LEDGER if path is None else Path(path)
    if not path.is_file():
        if missing_ok:
            return {}
        raise missing_data_file(path, "the proof ledger")
    return json.loads(path.read_text())


def load_proofs(rules_file: str | Path | None = None) -> dict[str, dict]:
    """The committed ledger and, with ``rules_file`` (a file of ``eqsat rules discover -o``),
    the proofs that file carries, which take precedence for its rules (each is still checked
    against the rule's hash by :func:`holds`)."""
    ledger = load_ledger()
    if rules_file:
        from eqsat.rules.generated import rulefile

        ledger = {**ledger, **rulefile.proofs(Path(rules_file))}
    return ledger


def holds(rule, ledger: dict[str, dict]) -> bool:
    """Whether the ledger proves ``rule`` as it is now written."""
    e = ledger.get(rule.name)
    return bool(e) and e.get("result") == "proved" and e.get("hash") == rule_hash(rule)
