"""The printed form of egglog terms, exactly as ``str(term)`` prints it, with the slow step kept
in a per-user cache on disk.

Consumes egglog terms and facts (the sides and guards of :class:`eqsat.rules.base.Rule`);
produces their text, which the proof ledger hashes (:func:`eqsat.verify.ledger.rule_hash`) and
:func:`eqsat.rules.schedule.relevant` reads. egglog prints a term in three steps
(``egglog.pretty.pretty_decl``): it renders the declaration tree to Python source, normalises
that with ``ast.parse``/``ast.unparse``, then formats it with black. The first step took 0.01 s
for the 126 sides of the 63 default rules; black took 0.75-1.0 s of them (6-8 ms a term), on
every ``eqsat optimize`` — the largest fixed cost of the command after the imports.

The last two steps are a pure function of the rendered source, Python's ``ast`` and black's
version and mode, so their result is cached under that source's sha256 in
``<user cache>/egglog-printed-*.json``, one file per (egglog, black, Python) version; a term
whose rendering changed (an edited rule, an edited constructor) simply misses and is printed
anew. What is cached never decides anything by itself: the key is the full rendering, so a hit
returns what black would have returned. A damaged or unreadable file is ignored and rewritten;
a read-only cache folder only costs the time. This module mirrors ``pretty_decl`` of the pinned
egglog (a private API, as EGGLOG_NOTES warns); a test compares it with ``str()`` on every rule.
"""

from __future__ import annotations

import ast
import hashlib
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from importlib.metadata import version
from pathlib import Path

import black
from egglog.pretty import BLACK_MODE, TraverseContext

from eqsat.paths import user_cache_dir, write_atomic

MAX_ENTRIES = 20_000  # past this many (years of edited rules), the file starts again empty


def cache_file() -> Path:
    """The cache of this egglog, black and Python (each can change the printed text)."""
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    name = f"egglog-printed-{version('egglog')}-black{black.__version__}-py{py}.json"
    return user_cache_dir() / name


class _Cache:
    """Rendered source's sha256 → printed text: loaded once per process, written back when a
    term missed (at once, or at the end of a :func:`batch`)."""

    def __init__(self) -> None:
        self.path = cache_file()
        self.table = _read(self.path)
        self.dirty = False
        self.batching = 0
        self.hits = self.misses = 0  # for the tests and the curious

    def save(self) -> None:
        if not self.dirty:
            return
        # another process may have added entries since we read the file: keep them too
        table = {**_read(self.path), **self.table}
        if len(table) > MAX_ENTRIES:
            table = self.table
        try:
            write_atomic(self.path, json.dumps(table, sort_keys=True))
        except OSError:
            pass  # a read-only cache folder: the text is still right, only slower next time
        self.dirty = False


def _read(path: Path) -> dict[str, str]:
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # missing or damaged: rebuilt, not trusted
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        return {}
    return table


@cache
def _cache() -> _Cache:
    return _Cache()


def reset() -> None:
    """Forget the loaded cache (the tests point ``$EQSAT_CACHE_DIR`` elsewhere)."""
    _cache.cache_clear()


def stats() -> tuple[int, int]:
    """(hits, misses) of this process's cache so far."""
    c = _cache()
    return c.hits, c.misses


@contextmanager
def batch() -> Iterator[None]:
    """Print many terms, writing the cache once at the end rather than after each miss."""
    c = _cache()
    c.batching += 1
    try:
        yield
    finally:
        c.batching -= 1
        if not c.batching:
            c.save()


def pretty(term) -> str:
    """``str(term)`` for an egglog term (``RuntimeExpr``) or fact, black's step cached."""
    decl = getattr(term, "fact", None)
    if decl is None:
        decl = term.__egg_typed_expr__
    traverse = TraverseContext(term.__egg_decls__)
    traverse(decl, toplevel=True)
    printer = traverse.pretty()
    source = "\n".join([*printer.statements, printer(decl)])
    key = hashlib.sha256(source.encode()).hexdigest()
    c = _cache()
    text = c.table.get(key)
    if text is not None:
        c.hits += 1
        return text
    c.misses += 1
    text = c.table[key] = _format(source)
    c.dirty = True
    if not c.batching:
        c.save()
    return text


def _format(program: str) -> str:
    """The rest of ``egglog.pretty.pretty_decl``: normalise with ``ast``, then black."""
    try:
        program = ast.unparse(ast.parse(program, mode="exec"))
    except SyntaxError:
        return program
    try:
        return black.format_str(program, mode=BLACK_MODE).strip()
    except black.parsing.InvalidInput:
        return program
