"""Names read from a run directory or an export, checked before they become paths.

uids (``01-0014``), genome keys (hex), checkpoint folders (``gen-0003-<token>``) and file
names (``masks.npz``) are plain names: one path component of letters, digits, ``.``, ``_``
and ``-``, starting with a letter or digit, at most 200 characters. Anything else (``..``,
an absolute path, a separator, NUL, an empty string, a non-string) raises
``UnsafeNameError``, so that a rewritten run directory cannot make the search, resume,
export or ``load_exported`` read or write outside its folder (issue 27, D3).
"""

from __future__ import annotations

import re

_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


class UnsafeNameError(ValueError):
    """A name read from a file is not a plain name inside its folder; the message names the file."""


def plain_name(name, what: str, source=None) -> str:
    """``name`` if it is a plain name (see the module docstring), else raises
    UnsafeNameError naming ``what`` (e.g. 'uid') and ``source`` (the file it was read from)."""
    if isinstance(name, str) and _PLAIN.fullmatch(name) and ".." not in name:
        return name
    where = f" in {source}" if source is not None else ""
    raise UnsafeNameError(f"{what} {name!r}{where} is not a plain name (letters, digits, '.', '_', '-'; no '..', "
                          "separators or absolute paths); the file has been altered: restore it or start a new run")
