"""``rlir suite build-crafter|build-mineworld|build-vpt|info``: build evaluation suites and verify their identity."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("suite", help="build and inspect evaluation suites")
    sub = parser.add_subparsers(dest="suite_command", required=True)
    crafter = sub.add_parser("build-crafter", help="build a Crafter action-following suite from seeds")
    crafter.add_argument("out")
    crafter.add_argument("--name", default="crafter-af-v1")
    crafter.add_argument("--items", type=int, default=256)
    crafter.add_argument("--seed", type=int, default=33)
    crafter.set_defaults(func=_build_crafter)
    mineworld = sub.add_parser("build-mineworld", help="build a suite from MineWorld's validation layout")
    mineworld.add_argument("root", help="directory of clip_N.mp4 + clip_N.jsonl")
    mineworld.add_argument("out")
    mineworld.add_argument("--name", default="mineworld-val")
    mineworld.add_argument("--offset", type=int, default=0, help="condition on jsonl lines 1+offset..15+offset")
    mineworld.add_argument("--limit", type=int, default=500)
    mineworld.set_defaults(func=_build_mineworld)
    vpt = sub.add_parser("build-vpt", help="build a suite from VPT contractor recordings")
    vpt.add_argument("source", help="directory of recordings or an index json")
    vpt.add_argument("out")
    vpt.add_argument("--name", default="vpt-af")
    vpt.add_argument("--limit", type=int, default=500)
    vpt.set_defaults(func=_build_vpt)
    info = sub.add_parser("info", help="verify a suite and print its identity")
    info.add_argument("suite")
    info.set_defaults(func=_info)


def _report(suite, out: str | None) -> int:
    from rich.console import Console

    from evaluation.suites import save_suite

    if out is not None:
        save_suite(suite, out)
    Console().print(f"{suite.name} v{suite.version}: {len(suite)} items, sha256 {suite.sha256}" + (f" -> {out}" if out else ""))
    return 0


def _build_crafter(args: argparse.Namespace) -> int:
    from evaluation.suites import suite_from_crafter

    return _report(suite_from_crafter(name=args.name, n_items=args.items, seed=args.seed), args.out)


def _build_mineworld(args: argparse.Namespace) -> int:
    from evaluation.suites import suite_from_mineworld_validation

    suite = suite_from_mineworld_validation(args.root, name=args.name, offset=args.offset, limit=args.limit)
    return _report(suite, args.out)


def _build_vpt(args: argparse.Namespace) -> int:
    from evaluation.suites import suite_from_vpt_recordings

    return _report(suite_from_vpt_recordings(args.source, name=args.name, max_items=args.limit), args.out)


def _info(args: argparse.Namespace) -> int:
    from evaluation.suites import load_suite

    return _report(load_suite(args.suite), None)
