"""`specforge-assets` command line: SpecForge-compatible commands on the assets' code paths.

Each domain package registers its own subcommands (`register(subparsers)` in its `cli.py`),
so this file only dispatches.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# (module, description) — each module defines register(subparsers).
_COMMAND_MODULES = (
    "specforge_assets.sources.cli",
    "specforge_assets.regenerate.cli",
    "specforge_assets.tokenize.cli",
    "specforge_assets.train.cli",
    "specforge_assets.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="specforge-assets", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # layer not built yet
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
