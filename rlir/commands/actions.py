"""``rlir actions encode|decode|from-vpt``: convert Minecraft actions between their forms (jsonl in, jsonl out)."""

from __future__ import annotations

import argparse
import sys

from rlir.commands.common import iter_input_jsonl, write_jsonl_line
from worldmodels.actions import minecraft
from worldmodels.errors import ActionError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("actions", help="convert Minecraft actions (env dicts, compact, MineWorld tokens)")
    sub = parser.add_subparsers(dest="actions_command", required=True)

    encode = sub.add_parser("encode", help="env-action jsonl -> MineWorld token ids (or compact arrays)")
    encode.add_argument("input", nargs="?", default="-", help="jsonl file of MineRL env actions (default: stdin)")
    encode.add_argument("--to", choices=("tokens", "compact"), default="tokens")
    encode.set_defaults(func=_encode)

    decode = sub.add_parser("decode", help="MineWorld token ids or compact arrays -> env-action jsonl")
    decode.add_argument("input", nargs="?", default="-", help="jsonl file, one list per line (default: stdin)")
    decode.add_argument("--from", dest="source", choices=("tokens", "compact"), default="tokens")
    decode.set_defaults(func=_decode)

    vpt = sub.add_parser("from-vpt", help="raw VPT contractor jsonl -> env-action jsonl")
    vpt.add_argument("input", nargs="?", default="-", help="VPT contractor jsonl (default: stdin)")
    vpt.add_argument("--legacy-int-camera", action="store_true", help="truncate camera to whole degrees as VPT does")
    vpt.add_argument("--mineworld-conflicts", action="store_true", help="clear conflicting key pairs as MineWorld does")
    vpt.add_argument("--with-null-flag", action="store_true", help='write {"action": ..., "null": bool} objects')
    vpt.set_defaults(func=_from_vpt)


def _each(args: argparse.Namespace, convert) -> int:
    name = "<stdin>" if args.input == "-" else args.input
    converted = []
    for number, value in iter_input_jsonl(args.input):
        try:
            converted.append(convert(value))
        except ActionError as error:
            raise ActionError(f"{name}:{number}: {error}") from None
    for value in converted:  # only once every line is valid: a failed run prints nothing
        write_jsonl_line(value, sys.stdout)
    return 0


def _encode(args: argparse.Namespace) -> int:
    def convert(value):
        action = minecraft.validate_env_action(value)
        return minecraft.to_mineworld_tokens(action) if args.to == "tokens" else minecraft.to_compact(action)

    return _each(args, convert)


def _decode(args: argparse.Namespace) -> int:
    def convert(value):
        compact = minecraft.from_mineworld_tokens(value) if args.source == "tokens" else minecraft.to_compact(value)
        return minecraft.from_compact(compact)

    return _each(args, convert)


def _from_vpt(args: argparse.Namespace) -> int:
    def convert(value):
        action = minecraft.from_vpt_jsonl(
            value, legacy_int_camera=args.legacy_int_camera, mineworld_conflicts=args.mineworld_conflicts
        )
        if args.with_null_flag:
            return {"action": action, "null": minecraft.is_null_vpt_line(value)}
        return action

    return _each(args, convert)
