"""`specforge-assets` command line: SpecForge-compatible commands on the assets' code paths.

Each domain package registers its own subcommands (`register(subparsers)` in its `cli.py`),
so this file only dispatches.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from .errors import redact, user_message

# (module, description) — each module defines register(subparsers).
_COMMAND_MODULES = (
    "specforge_assets.sources.cli",
    "specforge_assets.regenerate.cli",
    "specforge_assets.tokenize.cli",
    "specforge_assets.train.cli",
    "specforge_assets.demo",
    "specforge_assets.target_cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="specforge-assets", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the Python traceback for expected errors too (or set SPECFORGE_DEBUG=1)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # layer not built yet
                continue
            raise
        mod.register(sub)
    for sp in sub.choices.values():  # `specforge-assets tokenize ... --debug` works as well as before it
        sp.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show the Python traceback for expected errors too",
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    debug = args.debug or os.environ.get("SPECFORGE_DEBUG", "").strip().lower() in {"1", "true", "yes", "on"}
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the one place expected failures become one line
        msg = user_message(e)
        if msg is None:  # a bug: keep the traceback (secrets redacted)
            print(redact("".join(traceback.format_exception(e))), file=sys.stderr, end="")
            return 1
        if debug:
            print(redact("".join(traceback.format_exception(e))), file=sys.stderr, end="")
        print(f"error: {msg}", file=sys.stderr)
        return int(getattr(e, "exit_code", 1))
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
