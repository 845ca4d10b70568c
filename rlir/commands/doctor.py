"""``rlir doctor`` (is this set-up ready, on one screen) and ``rlir list models|idms|suites`` (what is installed).

Both read the same inventory: every registered world model, IDM and suite with where its files live, whether they
are there and whether they match their sha256 pins. Files are hashed, never loaded, so the check takes seconds.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

KINDS = ("models", "idms", "suites")

OK, NOT_INSTALLED, BROKEN = "ok", "not installed", "broken"
"""``ok``: every required file present and matching its pin; ``not installed``: a downloadable file is absent (not an
error: rlir works without it); ``broken``: a file is present but does not match its pin, or a shipped file is gone."""


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    state: str
    detail: str
    """Short: ``sha256 ok`` or what is missing or wrong, relative to ``where``."""
    where: str
    """The directory its files are relative to."""
    hint: str = ""
    """How to fix a state other than ``ok`` (where to get the files)."""
    description: str = ""


def rlir_version() -> str:
    """The installed distribution's version (the source tree's when run from a checkout without installing)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rlir")
    except PackageNotFoundError:
        from worldmodels import __version__

        return __version__


def _file_state(base: Path, relative: str, pin: str | None, *, shipped: bool) -> tuple[str, str]:
    from worldmodels.registry import sha256_file

    path = base / relative
    if not path.is_file():
        return (BROKEN, f"{relative} missing (reinstall rlir)") if shipped else (NOT_INSTALLED, f"{relative} missing")
    if pin is None:
        return OK, f"{relative} (no pin)"
    if sha256_file(path) != pin.lower():
        return BROKEN, f"{relative} does not match its sha256 pin (corrupted or replaced: restore it)"
    return OK, "sha256 ok"


def _worst(states: list[tuple[str, str]]) -> tuple[str, str]:
    for wanted in (BROKEN, NOT_INSTALLED):
        bad = [detail for state, detail in states if state == wanted]
        if bad:
            return wanted, ", ".join(bad)
    return OK, ", ".join(sorted({detail for _, detail in states}))


def model_entries() -> list[Entry]:
    from worldmodels.registry import REGISTRY

    entries = []
    for name in sorted(REGISTRY):
        entry = REGISTRY[name]
        base, shipped = entry.base(), entry.root is not None
        states = [_file_state(base, f.path, f.sha256, shipped=shipped) for f in entry.files
                  if f.required or (base / f.path).is_file()]  # fmt: skip
        entries.append(Entry("models", name, *_worst(states), str(base), entry.source, entry.description))
    return entries


def idm_entries() -> list[Entry]:
    from evaluation.idm.registry import BUNDLED_IDMS, VPT_SOURCE
    from worldmodels.registry import rlir_home

    entries = []
    for name in sorted(BUNDLED_IDMS):
        path, pin = BUNDLED_IDMS[name]
        state = _file_state(path.parent, path.name, pin, shipped=True)
        entries.append(Entry("idms", name, *state, str(path.parent), "", "Crafter IDM shipped with rlir"))
    directory = rlir_home() / "idm"
    states = [_file_state(directory, file, None, shipped=False) for file in ("4x_idm.model", "4x_idm.weights")]
    entries.append(Entry("idms", "vpt-4x-idm", *_worst(states), str(directory), f"{VPT_SOURCE} into {directory}/",
                         "OpenAI VPT 4x inverse dynamics model (Minecraft)"))  # fmt: skip
    return entries


def suite_entries() -> list[Entry]:
    from evaluation.suites import REGISTERED_SUITES, load_suite
    from worldmodels.errors import RlirError

    entries = []
    for name in sorted(REGISTERED_SUITES):
        directory, _ = REGISTERED_SUITES[name]
        try:
            suite = load_suite(name)  # verifies the manifest pin and every array's sha256
        except RlirError as error:
            entries.append(Entry("suites", name, BROKEN, str(error).splitlines()[0], str(directory)))
            continue
        description = f"{suite.domain}, {len(suite)} clips of {suite.n_frames} frames"
        entries.append(Entry("suites", name, OK, "sha256 ok", str(directory), "", description))
    return entries


def inventory(kind: str) -> list[Entry]:
    return {"models": model_entries, "idms": idm_entries, "suites": suite_entries}[kind]()


def _optional(module: str) -> str:
    from importlib.util import find_spec

    return "installed" if find_spec(module) is not None else "absent"


def register(subparsers: argparse._SubParsersAction) -> None:
    doctor = subparsers.add_parser(
        "doctor", help="check the set-up: python, torch, devices, RLIR_HOME and every registered file",
        description="One screen: versions, devices, $RLIR_HOME, optional extras, and for every registered model, "
        "IDM and suite whether its files are there and match their sha256 pins. Exit status 1 if a file is broken.",
    )  # fmt: skip
    doctor.set_defaults(func=_doctor)
    listing = subparsers.add_parser("list", help="list registered models, IDMs or suites and whether their files are here")
    listing.add_argument("kind", choices=KINDS, help="what to list")
    listing.set_defaults(func=_list)


_STYLE = {OK: "green", NOT_INSTALLED: "yellow", BROKEN: "bold red"}


def _table(entries: list[Entry], title: str, *, wide: bool):
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    table.add_column("name", no_wrap=True)
    table.add_column("state", no_wrap=True)
    if wide:
        table.add_column("description")
    table.add_column("files")
    table.add_column("in", overflow="fold")
    for e in entries:
        cells = [e.name, f"[{_STYLE[e.state]}]{e.state}[/]"] + ([e.description] if wide else []) + [e.detail, e.where]
        table.add_row(*cells)
    return table


def _print_hints(entries: list[Entry], console) -> None:
    # one line per distinct source, not per model: the five official MineWorld models share one
    for hint in dict.fromkeys(e.hint for e in entries if e.state != OK and e.hint):
        console.print(f"  to install: {hint}", style="dim", highlight=False, markup=False)


def _doctor(args: argparse.Namespace) -> int:
    from rich.console import Console

    from worldmodels.device import describe_torch
    from worldmodels.registry import rlir_home

    console = Console()
    torch_info = describe_torch()
    home = rlir_home()
    env_home = "$RLIR_HOME" if "RLIR_HOME" in os.environ else "default, set $RLIR_HOME to change"
    lines = [
        f"rlir {rlir_version()}  python {platform.python_version()} ({sys.executable})  {platform.platform(terse=True)}",
        f"torch {torch_info['torch']}  CUDA {torch_info['cuda']}  GPUs: {torch_info['gpus']}  "
        f"threads {torch_info['threads']} (of {os.cpu_count()} CPUs)",
        f"RLIR_HOME {home} ({env_home}{'' if home.is_dir() else '; does not exist yet'})",
        "extras: " + ", ".join(f"{name} {_optional(module)}" for name, module in (
            ("stable-baselines3", "stable_baselines3"), ("tensorboard", "tensorboard"), ("wandb", "wandb"),
            ("scipy", "scipy"), ("fastapi", "fastapi"))),  # fmt: skip
    ]
    for line in lines:
        console.print(line, highlight=False, markup=False)
    entries = [e for kind in KINDS for e in inventory(kind)]
    for kind in KINDS:
        of_kind = [e for e in entries if e.kind == kind]
        console.print(_table(of_kind, kind, wide=False))
        _print_hints(of_kind, console)
    broken = [e.name for e in entries if e.state == BROKEN]
    if broken:
        console.print(f"[bold red]broken:[/] {', '.join(broken)}", highlight=False)
        return 1
    console.print("everything rlir ships is present and verified", highlight=False)
    return 0


def _list(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console()
    entries = inventory(args.kind)
    console.print(_table(entries, args.kind, wide=True))
    _print_hints(entries, console)
    return 0
