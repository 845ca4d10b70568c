"""Files shipped inside the package (the embedded Crafter world: world model, IDMs, start scenes) and their pins.

The weight directories (``worldmodels/bundled``, ``evaluation/idm/bundled``) hold a ``SHA256SUMS`` in the format of
coreutils' ``sha256sum`` (so ``sha256sum -c SHA256SUMS`` verifies a checkout by hand); ``scripts/build_embedded.sh``
writes it together with the files. Loaders check a bundled file against its pin before reading it, so a tampered or
truncated weight file is refused with :class:`~worldmodels.errors.IntegrityError` instead of producing silently
different numbers. (The start scenes and the dream env's reward heads are not pinned yet.)
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from worldmodels.errors import DataError

__all__ = ["SUMS_NAME", "bundled_dir", "read_pins", "pin_of"]

SUMS_NAME = "SHA256SUMS"


def bundled_dir() -> Path:
    """``worldmodels/bundled``: the bundled Crafter world model and its model card."""
    return Path(str(resources.files("worldmodels") / "bundled"))


def read_pins(directory: str | Path) -> dict[str, str]:
    """File name -> pinned hex sha256 from ``directory/SHA256SUMS`` (empty when there is no such file)."""
    path = Path(directory) / SUMS_NAME
    if not path.is_file():
        return {}
    pins: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        digest, _, name = line.partition(" ")
        name = name[1:] if name[:1] in (" ", "*") else name  # text mode '<hash>  <name>', binary '<hash> *<name>'
        if len(digest) != 64 or not name or any(c not in "0123456789abcdef" for c in digest):
            raise DataError(
                f"{path}:{number} is not a sha256sum line ('<64 hex digits>  <file name>'): {line!r}; "
                "regenerate it with `sha256sum <files> > SHA256SUMS`"
            )
        pins[name] = digest
    return pins


def pin_of(path: str | Path) -> str | None:
    """The pinned sha256 of a bundled file (from ``SHA256SUMS`` next to it), or ``None`` if it has no pin."""
    path = Path(path)
    return read_pins(path.parent).get(path.name)
