"""``pqx``: the command line. Thin by design: parse, call the library, print.

Each sub-command is one module in :mod:`explorer.commands` exposing ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``; adding a module adds a command.
User errors (any :class:`~explorer.errors.PQXError`, and argparse's own) print one line on
stderr and exit with code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from . import commands
from .errors import PQXError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump), so every bad input reads the same."""

    def error(self, message):
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="pqx", description="Train and inspect product quantizers.")
    parser.add_argument("--version", action="version", version=f"pqx {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        p = sub.add_parser(info.name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except PQXError as exc:
        sys.stderr.write(f"pqx {args.command}: error: {exc}\n")
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
