"""`specforge-assets regenerate`: SpecForge's regenerate_train_data.py flags, exactly-once resume."""

from __future__ import annotations

import argparse
import json
import os
import sys

API_KEY_ENV = "SPECFORGE_REGEN_API_KEY"


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


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "regenerate",
        help="rewrite every assistant turn with the target model (SpecForge-compatible)",
        description="Regenerate assistant turns through OpenAI-compatible chat servers. Output files and "
        "row fields as SpecForge's scripts/regenerate_train_data.py; --resume is exactly-once. "
        f"An API key, if the servers need one, is read from ${API_KEY_ENV} only.",
    )
    g = p.add_argument_group("model")
    g.add_argument("--model", required=True, help="model name sent in each request")
    g.add_argument("--reasoning", choices=["none", "save", "disable"], default="none")
    g = p.add_argument_group("sampling")
    g.add_argument("--temperature", type=float, default=0.7)
    g.add_argument("--top-p", type=float, default=None)
    g.add_argument("--top-k", type=int, default=None)
    g.add_argument("--min-p", type=float, default=None)
    g.add_argument(
        "--repetition-penalty",
        type=float,
        default=None,
        help="a real repetition_penalty in the request body (not presence_penalty)",
    )
    g.add_argument("--max-tokens", type=int, default=4096)
    g.add_argument("--seed", type=int, default=None, help="base seed; each row/turn gets a derived seed")
    g.add_argument("--extra-body", default=None, help="JSON object merged into every request body")
    g.add_argument(
        "--dialect",
        choices=["openai", "transformers"],
        default="openai",
        help="'transformers' for `transformers serve` (top_k/min_p/repetition_penalty "
        "go into its generation_config field)",
    )
    g = p.add_argument_group("optimisation")
    g.add_argument("--concurrency", type=int, default=64, help="in-flight requests per server")
    g.add_argument("--request-timeout", type=float, default=600.0, help="seconds per request")
    g.add_argument("--connect-timeout", type=float, default=5.0)
    g.add_argument("--max-attempts", type=int, default=6, help="attempts per request (transient errors only)")
    # removed with the own HTTP client (aiohttp does every request): accepted for one release, ignored
    g.add_argument("--workers", default=None, help=argparse.SUPPRESS)
    g.add_argument("--transport", default=None, help=argparse.SUPPRESS)
    g = p.add_argument_group("data")
    g.add_argument("--input-file-path", required=True)
    g.add_argument("--output-file-path", required=True)
    g.add_argument("--num-samples", type=int, default=None, help="cap on submitted (valid) rows")
    g.add_argument(
        "--beyond-limit",
        choices=["skip", "passthrough"],
        default="skip",
        help="rows past --num-samples: to the _skipped file (default) or unchanged into OUT",
    )
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run exactly once, rows matched by id (appended or reordered "
        "input rows are fine; refused if settings changed)",
    )
    g = p.add_argument_group("server")
    g.add_argument(
        "--server-address",
        nargs="+",
        required=True,
        help="HOST:PORT (or URL) of each server; user:password@ in it is sent as HTTP Basic auth "
        "to that server and never written anywhere; a query string or fragment is refused "
        f"(an API key goes in ${API_KEY_ENV})",
    )
    p.add_argument("--progress-interval", type=float, default=5.0)
    p.add_argument(
        "--lock-wait",
        type=float,
        default=0.0,
        help="seconds to wait while another run writes the same output file (default 0: "
        "refuse at once with a message naming that run)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the command. Expected failures (`errors.UserError`: no server, missing input, changed
    settings, disk full, ...) and bad arguments print one ``error: ...`` line (secrets redacted)
    and return non-zero; paths are relative to the current directory."""
    from ..errors import UsageError, UserError
    from .client import check_addresses
    from .runner import OutputPaths, run_regeneration
    from .settings import RegenSettings, deprecation_message

    for flag in ("workers", "transport"):
        if getattr(args, flag) is not None:
            print("warning: " + deprecation_message(flag, f"--{flag}"), file=sys.stderr, flush=True)
    try:
        check_addresses(args.server_address, "--server-address")
        extra = parse_extra_body(args.extra_body)
        settings = RegenSettings(
            model=args.model,
            max_tokens=args.max_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k,
            min_p=args.min_p,
            repetition_penalty=args.repetition_penalty,
            seed=args.seed,
            reasoning=args.reasoning,
            extra_body=extra,
            dialect=args.dialect,
            num_samples=args.num_samples,
            beyond_limit=args.beyond_limit,
            concurrency=args.concurrency,
            request_timeout_s=args.request_timeout,
            connect_timeout_s=args.connect_timeout,
            max_attempts=args.max_attempts,
            progress_interval_s=args.progress_interval,
            lock_wait_s=args.lock_wait,
        )
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
