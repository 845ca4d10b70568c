"""Names shown on the leaderboard (model names, token/submitter names): what is allowed, and which names collide.

A name is stored exactly as submitted, so it must already be what a reader sees:

* **Character set** (:data:`NAME_CHARACTERS`): ASCII letters and digits, then letters, digits, space and ``. _ - +
  ( )``; it starts with a letter or digit, ends with anything but a space, has no two spaces in a row, and is at most
  :data:`MAX_NAME_LENGTH` characters. So no control or format characters (terminal escapes, zero-width joiners,
  bidi overrides), no Unicode confusables (``U+2010`` for ``-``, Cyrillic ``а`` for ``a``), and no ``@`` (the views
  print ``name @version``).
* **NFKC**: a name that Unicode NFKC normalisation would change is refused with its normalised form as the fix
  (full-width ``ｔｉｎｙ`` -> ``tiny``).
* **Look-alikes**: two names collide when their :func:`skeleton` is equal: case-folded, separators dropped, and the
  ASCII confusables ``0``/``o`` and ``1``/``l``/``i`` identified. A name that collides with another owner's name, or
  that starts like a reserved name (``ground-truth``), is refused.
"""

from __future__ import annotations

import re
import unicodedata

from worldmodels.errors import ConfigError

MAX_NAME_LENGTH = 64
NAME_CHARACTERS = "ASCII letters and digits, space and . _ - + ( ) (starting with a letter or digit)"
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9 ._+()-]*[A-Za-z0-9._+()-])?")
_CONFUSABLE = str.maketrans({"0": "o", "1": "l", "i": "l"})
RESERVED_PREFIXES = ("ground-truth",)


def name_problem(name: str, what: str = "model name") -> str | None:
    """Why ``name`` is not an acceptable name (one sentence naming the fix), or None when it is."""
    shown = ascii(name[:80]) + ("..." if len(name) > 80 else "")
    normalized = unicodedata.normalize("NFKC", name)
    if normalized != name:
        return f"{what} {shown} is not NFKC-normalised; use {ascii(normalized[:80])}"
    if len(name) > MAX_NAME_LENGTH:
        return f"{what} {shown} has {len(name)} characters (at most {MAX_NAME_LENGTH})"
    if not _NAME.fullmatch(name) or "  " in name:
        return (f"{what} {shown} may only use {NAME_CHARACTERS}, end with a non-space and hold no double spaces; "
                "pick a plain ASCII name")  # fmt: skip
    return None


def check_name(name: str, what: str = "name") -> str:
    """``name`` if acceptable, else :class:`ConfigError` (for names typed by the operator, e.g. token names)."""
    problem = name_problem(name, what)
    if problem is not None:
        raise ConfigError(problem)
    return name


def skeleton(name: str) -> str:
    """What a name looks like: NFKC, case-folded, only letters and digits, with ``0->o`` and ``1, i -> l``."""
    folded = unicodedata.normalize("NFKC", name).casefold().translate(_CONFUSABLE)
    return "".join(c for c in folded if c.isalnum())


def reserved_lookalike(name: str) -> str | None:
    """The reserved prefix ``name`` imitates (``Ground_Truth``, ``gr0und-truth``), or None."""
    shape = skeleton(name)
    return next((p for p in RESERVED_PREFIXES if shape.startswith(skeleton(p))), None)


def printable(text: str) -> str:
    """``text`` with control and format characters shown as escapes (``\\x1b``, ``\\u200b``), for output: what
    was stored before names were checked, or any other submitted string, never reaches a terminal raw."""
    return "".join(
        c if unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") else ascii(c)[1:-1] for c in text
    )
