"""``rlir leaderboard show|export|serve|submit|add|token create|list|revoke|suite add``: the verifying leaderboard."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from worldmodels.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "leaderboard",
        help="rank result bundles (verified from their per-item records), serve and submit them",
        description="A leaderboard that recomputes every number it shows. The database lives at "
        "$RLIR_HOME/leaderboard.db unless --db says otherwise.",
    )
    sub = parser.add_subparsers(dest="leaderboard_command", required=True)

    def command(name: str, help: str, func) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--db", help="leaderboard database (default: $RLIR_HOME/leaderboard.db)")
        p.set_defaults(func=func)
        return p

    show = command("show", "print the leaderboard as terminal tables", _show)
    _filters(show)

    export = command("export", "write the leaderboard as Markdown, JSON or a self-contained HTML page", _export)
    export.add_argument("--format", choices=("md", "json", "html"), required=True)
    export.add_argument("--out", help="output file (default: stdout)")
    _filters(export)

    serve = command("serve", "run the HTTP server (HTML page, JSON API, authenticated submissions)", _serve)
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    serve.add_argument("--port", type=int, default=8123)
    serve.add_argument("--max-body-mb", type=float, default=64.0,
                       help="request size limit in MiB (default 64: a full crafter-af-v1 bundle with videos is ~38 MB)")
    serve.add_argument("--rate-limit", type=int, default=10, help="submissions per token per minute (default 10)")
    serve.add_argument("--max-connections", type=int, default=64,
                       help="open connections at most; more are closed at once (default 64)")
    serve.add_argument("--header-timeout", type=float, default=10.0,
                       help="seconds a connection has to send a request's headers before it is closed (default 10)")

    submit = command(
        "submit", "submit a result bundle to a server (--server) or validate and store it locally", _submit
    )
    submit.add_argument("bundle", help="bundle directory written by `rlir eval --out DIR` (or its bundle.json)")
    submit.add_argument("--server", help="leaderboard URL, e.g. http://127.0.0.1:8123 (default: the local database)")
    submit.add_argument("--token", help="API token (default: $RLIR_LEADERBOARD_TOKEN)")
    submit.add_argument("--no-videos", action="store_true", help="submit bundle.json alone (self-reported tier)")
    submit.add_argument("--submitter", default=None, help="local submissions: the submitter name (default: $USER)")

    add = command(
        "add", "operator: validate and store a bundle locally, optionally re-generating it (--reproduce)", _add
    )
    add.add_argument("bundle", help="bundle directory (videos/ in it are verified) or bundle.json")
    add.add_argument("--reproduce", action="store_true", help="re-generate the suite from the checkpoint and compare")
    add.add_argument("--checkpoint", help="with --reproduce: registered model name or checkpoint path")
    add.add_argument("--config", help="with --reproduce: official MineWorld yaml (for .ckpt files)")
    add.add_argument("--vae-config", help="with --reproduce: official VQ config.json")
    add.add_argument("--device", default="cpu", help="with --reproduce: the device the submitter generated on")
    add.add_argument("--no-videos", action="store_true", help="ignore videos/ (self-reported tier)")
    add.add_argument("--submitter", default="rlir", help="submitter recorded (default: rlir)")

    token = sub.add_parser("token", help="API tokens for submitting to the server")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="create a token for NAME and print it once")
    create.add_argument("name", help="the submitter's name (unique; recorded with every submission made with the token; "
                        "ASCII letters, digits, space and . _ - + ( ))")
    create.add_argument("--expires", help="expiry date, ISO 8601 (e.g. 2027-06-30); default: no expiry")
    create.add_argument("--db", help="leaderboard database (default: $RLIR_HOME/leaderboard.db)")
    create.set_defaults(func=_token_create)
    listing = token_sub.add_parser("list", help="list tokens (id, name, created, expires, revoked); never the secrets")
    listing.add_argument("--db", help="leaderboard database (default: $RLIR_HOME/leaderboard.db)")
    listing.set_defaults(func=_token_list)
    revoke = token_sub.add_parser("revoke", help="revoke a token by its id (see `token list`)")
    revoke.add_argument("id", type=int, help="token id (the number in rlir_<id>_...)")
    revoke.add_argument("--db", help="leaderboard database (default: $RLIR_HOME/leaderboard.db)")
    revoke.set_defaults(func=_token_revoke)

    suite = sub.add_parser("suite", help="suites submissions may target")
    suite_sub = suite.add_subparsers(dest="suite_command", required=True)
    suite_add = suite_sub.add_parser("add", help="register a suite bound to its official IDM")
    suite_add.add_argument("suite", help="registered suite name or suite directory")
    suite_add.add_argument("--idm", required=True, help="official IDM: name (vpt-4x-idm, crafter-idm-heldout) or file")
    suite_add.add_argument("--db", help="leaderboard database (default: $RLIR_HOME/leaderboard.db)")
    suite_add.set_defaults(func=_suite_add)


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", help="only this suite (name)")
    parser.add_argument("--suite-version", type=int, help="only this suite version")
    parser.add_argument("--evaluator-version", type=int, help="only bundles of this evaluator version")


def _store(args: argparse.Namespace, *, seed: bool = False):
    from leaderboard.store import Store

    store = Store(args.db)
    if seed:
        from rich.console import Console

        from leaderboard.seed import seed_if_empty

        report = seed_if_empty(store)
        for note in report.notes if report is not None else ():
            Console(stderr=True).print(f"note: {note}", highlight=False, markup=False, style="dim")
    return store


def _boards(args: argparse.Namespace):
    from leaderboard.ranking import leaderboards

    store = _store(args, seed=True)
    return leaderboards(store, suite=args.suite, version=args.suite_version, evaluator_version=args.evaluator_version)


def _show(args: argparse.Namespace) -> int:
    from leaderboard.render import print_terminal

    print_terminal(_boards(args))
    return 0


def _export(args: argparse.Namespace) -> int:
    from leaderboard.render import render_html, render_json, render_markdown

    render = {"md": render_markdown, "json": render_json, "html": render_html}[args.format]
    text = render(_boards(args))
    if args.out is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        Path(args.out).write_text(text, encoding="utf-8")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from rich.console import Console

    from leaderboard.server import serve

    if args.max_body_mb <= 0 or args.rate_limit < 1 or args.max_connections < 1 or not args.header_timeout > 0:
        raise ConfigError(f"--max-body-mb {args.max_body_mb} and --header-timeout {args.header_timeout} must be > 0, "
                          f"--rate-limit {args.rate_limit} and --max-connections {args.max_connections} >= 1")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        Console(stderr=True).print(f"warning: serving plain HTTP on {args.host}; put a TLS proxy in front of it",
                                   highlight=False, markup=False)  # fmt: skip
    Console(stderr=True).print(f"leaderboard at http://{args.host}:{args.port}/", highlight=False, markup=False)
    serve(args.db, host=args.host, port=args.port, max_body_bytes=int(args.max_body_mb * 1024 * 1024),
          rate_limit=args.rate_limit, max_connections=args.max_connections, header_timeout=args.header_timeout)  # fmt: skip
    return 0


def _print_stored(record) -> None:
    from rich.console import Console

    from leaderboard.names import printable

    Console().print(
        f"stored submission #{record['id']}: {printable(record['model']['name'])} on {printable(record['suite']['name'])} "
        f"v{record['suite']['version']}, tier {record['tier']}, mean macro-F1 {record['metrics']['primary']['value']:.3f}",
        highlight=False, markup=False,
    )  # fmt: skip


def _submit(args: argparse.Namespace) -> int:
    if args.server is not None:
        from leaderboard.client import TOKEN_ENV, submit_remote

        token = args.token or os.environ.get(TOKEN_ENV, "")
        _print_stored(submit_remote(args.bundle, args.server, token, include_videos=not args.no_videos))
        return 0
    from leaderboard.validate import submit_local

    store = _store(args)
    submitter = args.submitter or os.environ.get("USER") or "local"
    bundle = Path(args.bundle)
    videos_dir = None if args.no_videos or not (bundle / "videos").is_dir() else bundle
    source = bundle / "bundle.json" if args.no_videos and bundle.is_dir() else bundle
    record = submit_local(source, store, submitter=submitter, videos_dir=videos_dir)
    _keep_previews(store, record.id, bundle)
    _print_stored(record.to_json())
    return 0


def _keep_previews(store, submission_id: int, bundle: Path) -> None:
    """Copy a bundle directory's ``previews/*.mp4`` next to the database, where the HTML page links them (they are for
    people to watch; nothing is verified from them)."""
    import shutil

    from leaderboard.ranking import PREVIEWS_DIRNAME

    folder = bundle if bundle.is_dir() else bundle.parent  # the directory, or the bundle.json in it
    sources = sorted((folder / "previews").glob("*.mp4"))
    if sources:
        target = store.artifacts_dir / PREVIEWS_DIRNAME / str(submission_id)
        target.mkdir(parents=True, exist_ok=True)
        for path in sources:
            shutil.copyfile(path, target / path.name)


def _add(args: argparse.Namespace) -> int:
    from leaderboard.validate import Reproduction, submit_local

    if args.reproduce and not args.checkpoint:
        raise ConfigError("--reproduce needs --checkpoint NAME_OR_PATH (the checkpoint named in the bundle)")
    reproduce = None
    if args.reproduce:
        reproduce = Reproduction(checkpoint=args.checkpoint, config=args.config, vae_config=args.vae_config,
                                 device=args.device)  # fmt: skip
    store = _store(args)
    bundle = Path(args.bundle)
    videos_dir = None if args.no_videos or not (bundle / "videos").is_dir() else bundle
    source = bundle / "bundle.json" if args.no_videos and bundle.is_dir() else bundle
    record = submit_local(source, store, submitter=args.submitter, videos_dir=videos_dir, allow_reference=True,
                          reproduce=reproduce)  # fmt: skip
    _keep_previews(store, record.id, bundle)
    _print_stored(record.to_json())
    return 0


def _token_create(args: argparse.Namespace) -> int:
    token = _store(args).create_token(args.name, expires_at=args.expires)
    print(token)
    print(f"(token for {args.name!r}; it is shown only now, store it safely)", file=sys.stderr)
    return 0


def _token_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from leaderboard.names import printable

    table = Table("id", "name", "created", "expires", "revoked")
    for record in _store(args).tokens():
        table.add_row(*(Text(printable(str(v))) for v in (record.id, record.name, record.created_at,
                                                            record.expires_at or "-", record.revoked_at or "-")))  # fmt: skip
    Console().print(table)
    return 0


def _token_revoke(args: argparse.Namespace) -> int:
    _store(args).revoke_token(args.id)
    print(f"token {args.id} revoked", file=sys.stderr)
    return 0


def _suite_add(args: argparse.Namespace) -> int:
    from rich.console import Console

    from leaderboard.validate import register_suite

    record = register_suite(_store(args), args.suite, args.idm)
    message = (f"suite {record.name} v{record.version} (sha256 {record.sha256}, {len(record.item_ids)} items) bound "
               f"to IDM {record.idm_name} (sha256 {record.idm_sha256})")  # fmt: skip
    Console().print(message, highlight=False, markup=False)
    return 0
