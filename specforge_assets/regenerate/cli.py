"""`specforge-assets regenerate`: SpecForge's regenerate_train_data.py flags, exactly-once resume."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .config import API_KEY_ENV


def _one_line(e: BaseException) -> str:
    from ..errors import redact

    return redact(" ".join(str(e).split()) or type(e).__name__)


def parse_extra_body(text: str | None) -> dict:
    """--extra-body: a JSON object (``'{"top_k": 20}'``). Raises ValueError naming the flag."""
    if not text:
        return {}
    from ..jsonrows import RowDecodeError, loads_row

    try:
        value = loads_row(text)  # the one JSON rule: no lone surrogate reaches a request or the state file
    except RowDecodeError as e:
        what = "is not valid JSON" if e.reason.startswith("malformed") else "cannot be sent or recorded"
        raise ValueError(
            f"--extra-body {what} ({e}); give a JSON object, e.g. --extra-body '{{\"top_k\": 20}}'"
        ) from None
    if not isinstance(value, dict):
        raise ValueError(f"--extra-body must be a JSON object, got {type(value).__name__}")
    return value


# Flags that are SpecForge's regenerate_train_data.py contract, declared here; every other
# setting flag comes from `settings.RequestSettings` (name, type, choices, help, default).
_SERVER_HELP = (
    "HOST:PORT (or URL) of each server; user:password@ in it is sent as HTTP Basic auth "
    "to that server and never written anywhere; a query string or fragment is refused "
    f"(an API key goes in ${API_KEY_ENV})"
)
# The settings flags, grouped as in SpecForge's --help; the rest go under "optimisation".
_GROUPS = {
    "sampling": (
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "repetition_penalty",
        "max_tokens",
        "seed",
        "extra_body",
    ),
    "data": ("num_samples", "beyond_limit"),
    "options": ("progress_interval_s", "lock_wait_s"),
}


def flag_of(field: str) -> str:
    """The CLI flag of a `RequestSettings` field: ``request_timeout_s`` -> ``--request-timeout``."""
    return "--" + field.removesuffix("_s").replace("_", "-")


def _add_setting(group, field: str) -> None:
    """One `RegenSettings` field as a flag. The flag's default is None ("the model's default"),
    so the default is declared once, on the field, and shown in --help from there."""
    import typing

    from .settings import RegenSettings

    info = RegenSettings.model_fields[field]
    default = info.get_default(call_default_factory=True)
    kw: dict = {"default": None, "dest": field, "required": info.is_required()}
    ann = info.annotation
    args = [a for a in typing.get_args(ann) if a is not type(None)] or [ann]
    if typing.get_origin(ann) is typing.Literal:
        kw["choices"] = list(typing.get_args(ann))
    elif field == "extra_body":
        kw["metavar"] = "JSON"  # parsed by parse_extra_body (one JSON rule for every row and setting)
    elif args[0] in (int, float):
        kw["type"] = args[0]
        kw["metavar"] = field.removesuffix("_s").upper()
    help_text = info.description or ""
    if not info.is_required():
        help_text += f" (default: {default if default not in (None, {}) else 'none'})"
    kw["help"] = help_text.strip()
    group.add_argument(flag_of(field), **kw)


def register(subparsers) -> None:
    from .settings import SETTINGS_KEYS

    p = subparsers.add_parser(
        "regenerate",
        help="rewrite every assistant turn with the target model (SpecForge-compatible)",
        description="Regenerate assistant turns through OpenAI-compatible chat servers. Output files and "
        "row fields as SpecForge's scripts/regenerate_train_data.py; --resume is exactly-once. "
        f"An API key, if the servers need one, is read from ${API_KEY_ENV} only.",
    )
    g = p.add_argument_group("model")
    for field in ("model", "reasoning", "dialect"):
        _add_setting(g, field)
    groups = {name: p.add_argument_group(name) for name in ("sampling", "optimisation", "data")}
    grouped = {f: name for name, fields in _GROUPS.items() for f in fields}
    for field in SETTINGS_KEYS:
        if field == "reasoning":
            continue
        name = grouped.get(field, "optimisation")
        _add_setting(p if name == "options" else groups[name], field)
    # removed with the own HTTP client (aiohttp does every request): accepted for one release, ignored
    groups["optimisation"].add_argument("--workers", default=None, help=argparse.SUPPRESS)
    groups["optimisation"].add_argument("--transport", default=None, help=argparse.SUPPRESS)
    g = groups["data"]
    g.add_argument("--input-file-path", required=True)
    g.add_argument("--output-file-path", required=True)
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run exactly once, rows matched by id (appended or reordered "
        "input rows are fine; refused if settings changed)",
    )
    g = p.add_argument_group("server")
    g.add_argument("--server-address", nargs="+", required=True, help=_SERVER_HELP)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the command. Expected failures (`errors.UserError`: no server, missing input, changed
    settings, disk full, ...) and bad arguments print one ``error: ...`` line (secrets redacted)
    and return non-zero; paths are relative to the current directory."""
    from ..errors import UsageError, UserError
    from .client import check_addresses
    from .runner import OutputPaths, run_regeneration
    from pydantic import ValidationError

    from ..configmodel import describe
    from .settings import SETTINGS_KEYS, RegenSettings, deprecation_message

    for flag in ("workers", "transport"):
        if getattr(args, flag) is not None:
            print("warning: " + deprecation_message(flag, f"--{flag}"), file=sys.stderr, flush=True)
    try:
        check_addresses(args.server_address, "--server-address")
        extra = parse_extra_body(args.extra_body)
        given = {k: getattr(args, k) for k in (*SETTINGS_KEYS, "dialect") if getattr(args, k) is not None}
        given["extra_body"] = extra
        settings = RegenSettings(model=args.model, **given)
    except ValidationError as e:  # a value out of bounds: the flag, what is wrong, the value given
        names = {k: flag_of(k) for k in RegenSettings.model_fields}
        raise UsageError(_one_line(ValueError(describe(e, RegenSettings, "setting", names)))) from None
    except (ValueError, TypeError) as e:  # a bad flag or setting: exit 2 through the one CLI error path
        raise UsageError(_one_line(e)) from e
    outputs = OutputPaths.specforge(args.output_file_path)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    try:
        stats = run_regeneration(
            args.input_file_path,
            outputs,
            settings,
            args.server_address,
            api_key=os.environ.get(API_KEY_ENV) or None,
            resume=args.resume,
            log=log,
        )
    except ValueError as e:  # refused input values; UserErrors go to the one CLI error path as they are
        if isinstance(e, UserError):
            raise
        raise UserError(_one_line(e)) from e
    c = stats.get("counts", {})
    print(
        json.dumps(
            {
                "success": c.get("success", 0),
                "error": c.get("error", 0),
                "skipped": c.get("skipped", 0),
                "passthrough": c.get("passthrough", 0),
                "input_rows": stats.get("input_rows"),
                "rows_per_s": stats.get("rows_per_s"),
                "outputs": stats.get("outputs"),
            }
        )
    )
    return 0
