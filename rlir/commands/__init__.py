"""The command groups of ``rlir``: one module per group, each exposing ``register(subparsers)``.

Registration builds argparse parsers only; a handler imports the library it runs (so ``rlir --help`` does not load
torch). This package is the top floor: it may import every other package.
"""
