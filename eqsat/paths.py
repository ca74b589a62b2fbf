"""The user's folders for what eqsat writes outside the package: one helper, used by every
cache (compiled objects and models, calibrated and measured cost constants, rule verdicts,
discovered rules, the printed text of rule terms), and :func:`write_atomic`, the write they
share. The package's own files (the committed proof ledger, the packaged rules
file, the default roofline constants) are read-only in normal use.

``$EQSAT_CACHE_DIR`` overrides the folder (the tests point it at a temporary one); otherwise it
is ``$XDG_CACHE_HOME/eqsat`` or ``~/.cache/eqsat``.
"""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir() -> Path:
    """The folder eqsat's per-user files go to (not created here)."""
    env = os.environ.get("EQSAT_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "eqsat"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file of this process beside it, so that a
    reader (another eqsat process, an interrupted write) never sees half a file. Creates the
    folder; raises OSError (a read-only cache folder: each caller decides whether it matters)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
