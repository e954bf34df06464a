"""`specforge-assets tokenize` and `specforge-assets vocab-mapping` (same code as the assets)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from .settings import TokenizeFile, TokenizeVocab

    def default(model, name: str):  # the defaults are configs/tokenize.yaml's model's
        return model.model_fields[name].default

    p = sub.add_parser(
        "tokenize",
        help="conversations JSONL → pre-tokenized JSONL {id, input_ids, loss_mask} (SpecForge-exact)",
        description="Render with the tokenizer's chat template and compute SpecForge's assistant loss mask "
        "(identical to specforge.data.preprocess_conversations), faster.",
    )
    p.add_argument(
        "--input", required=True, help="JSONL with {id, conversations} (or {id, text} with --is-preformatted)"
    )
    p.add_argument("--tokenizer", required=True, help="tokenizer folder (or hub id when the hub is reachable)")
    p.add_argument("--chat-template", required=True, help="registry template name, e.g. qwen, llama3, deepseek-v3")
    p.add_argument("--max-length", type=int, default=default(TokenizeFile, "max_length"))
    p.add_argument("--is-preformatted", action="store_true", help="rows carry rendered 'text' used verbatim")
    p.add_argument("--train-only-last-turn", action="store_true")
    p.add_argument("--output", required=True, help="output JSONL, one {id, input_ids, loss_mask} per row")
    workers = default(TokenizeFile, "workers")
    p.add_argument("--workers", type=int, default=workers, help=f"processes (default {workers})")
    p.add_argument("--templates-config", help="YAML with extra templates (same form as configs/tokenize.yaml)")
    p.add_argument(
        "--no-system-prompt", action="store_true", help="corrected: don't inject the template's default system prompt"
    )
    p.add_argument(
        "--shift-mask-885", action="store_true", help="corrected: shift the mask left by one (SpecForge#885)"
    )
    p.add_argument(
        "--incremental-mask", action="store_true", help="corrected: template-agnostic spans from incremental rendering"
    )
    p.add_argument("--trust-remote-code", action="store_true")
    p.set_defaults(func=run_tokenize)

    v = sub.add_parser(
        "vocab-mapping",
        help="pre-tokenized JSONL → SpecForge d2t/t2d vocab mapping (.pt)",
        description="Top-N loss-bearing target tokens → {'d2t': LongTensor, 't2d': BoolTensor} (torch.save).",
    )
    v.add_argument("--input", required=True, help="JSONL with input_ids and loss_mask per row (tokenize's output)")
    v.add_argument("--target-vocab-size", type=int, required=True)
    v.add_argument("--draft-vocab-size", type=int, default=default(TokenizeVocab, "draft_vocab_size"))
    v.add_argument("--output", required=True, help="output .pt file")
    v.set_defaults(func=run_vocab_mapping)


def run_tokenize(args) -> int:
    from ..errors import UserError
    from ..paths import load_yaml
    from .core import TokenizeOptions
    from .dataset import InputNotFoundError, NothingToTrainOnError, summary_line, tokenize_jsonl
    from .templates import get_template

    # every path typed here is relative to the current directory
    inp = Path(args.input).expanduser()
    if not inp.is_file():
        raise InputNotFoundError(f"input not found: {inp} (command-line paths are relative to the current directory)")
    tok = Path(args.tokenizer).expanduser()
    if not tok.exists() and (args.tokenizer.startswith((".", "/", "~")) or args.tokenizer.count("/") >= 2):
        raise InputNotFoundError(
            f"--tokenizer {args.tokenizer}: no such folder (command-line paths are relative to "
            "the current directory); give a tokenizer folder or a hub id org/name"
        )
    tokenizer = str(tok.resolve()) if tok.exists() else args.tokenizer
    extra = {}
    if args.templates_config:
        tc = Path(args.templates_config).expanduser()
        if not tc.is_file():
            raise InputNotFoundError(f"--templates-config {tc}: file not found")
        try:
            extra = (load_yaml(tc) or {}).get("templates") or {}
        except ValueError as e:
            raise UserError(f"--templates-config {tc}: {e}") from e
    try:
        template = get_template(args.chat_template, extra)
    except ValueError as e:  # a bad user template entry
        raise UserError(f"--templates-config {args.templates_config}: {e}") from e
    if args.max_length < 1:
        raise UserError(f"--max-length must be a positive integer, got {args.max_length}")
    opts = TokenizeOptions(
        max_length=args.max_length,
        is_preformatted=args.is_preformatted,
        train_only_last_turn=args.train_only_last_turn,
        inject_system_prompt=not args.no_system_prompt,
        shift_mask_885=args.shift_mask_885,
        incremental_mask=args.incremental_mask,
    )
    out = Path(args.output).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    # Beside OUT: OUT's stem + .errors.jsonl (every skipped line with its reason) and + .stats.json
    # (every count), so nothing the summary points at is lost when the command ends.
    errors_path = out.with_name(out.stem + ".errors.jsonl")
    stats_path = out.with_name(out.stem + ".stats.json")
    with tempfile.TemporaryDirectory(prefix=".tokenize.", dir=out.parent) as td:
        stage = Path(td) / "out"
        try:
            stats = tokenize_jsonl(
                inp,
                tokenizer,
                template,
                stage,
                opts,
                workers=args.workers,
                trust_remote_code=args.trust_remote_code,
                write_parquet=False,
                export_jsonl="train.jsonl",
            )
        except NothingToTrainOnError as e:  # show which lines were skipped before the one error line
            for s in getattr(e, "skipped", [])[:10]:
                print(f"skipped line {s['line']} (id {s['id']!r}): {s['reason']}", file=sys.stderr)
            raise
        (stage / "train.jsonl").replace(out)
        errors = [json.loads(l) for l in open(stage / "errors.jsonl", encoding="utf-8")]
        if errors:
            (stage / "errors.jsonl").replace(errors_path)
        elif errors_path.exists():
            errors_path.unlink()  # a stale list from an earlier run of the same output
        (stage / "stats.json").replace(stats_path)
    for e in errors[:10]:
        print(f"skipped line {e['line']} (id {e['id']!r}): {e['reason']}", file=sys.stderr)
    if len(errors) > 10:
        print(f"... and {len(errors) - 10} more skipped lines (all in {errors_path})", file=sys.stderr)
    summary = {
        k: stats[k]
        for k in (
            "rows_in",
            "rows",
            "rows_failed",
            "tokens",
            "supervised_tokens",
            "zero_supervised_rows",
            "truncated_rows",
            "fallback_render_rows",
            "rows_cut_consecutive_assistant",
            "messages_dropped",
            "rows_failed_by_reason",
            "seconds",
        )
    }
    print(json.dumps(summary))
    line = summary_line(stats)
    if line:
        print(
            line.replace(
                "see errors.jsonl / stats.json",
                f"see {errors_path.name if errors else 'no skipped line'} / {stats_path.name}",
            ),
            file=sys.stderr,
        )
    if stats["fallback_render_rows"]:
        print(
            "warning: the tokenizer has no usable chat template; SpecForge's fallback rendering was used",
            file=sys.stderr,
        )
    return 0


def run_vocab_mapping(args) -> int:
    from .dataset import InputNotFoundError
    from .vocab import VocabError, build_mapping, clamp_warning, fill_warning, iter_jsonl_batches, save_mapping

    inp = Path(args.input).expanduser()
    if not inp.is_file():
        raise InputNotFoundError(f"input not found: {inp} (command-line paths are relative to the current directory)")
    if args.target_vocab_size < 1 or args.draft_vocab_size < 1:
        raise VocabError("--target-vocab-size and --draft-vocab-size must be positive integers")
    res = build_mapping(iter_jsonl_batches(inp), args.target_vocab_size, args.draft_vocab_size, source=str(inp))
    save_mapping(res, Path(args.output).expanduser())
    info = {k: v for k, v in res.items() if k not in ("d2t", "t2d")}
    for warning in (clamp_warning(res), fill_warning(res)):
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
    print(json.dumps(info))
    return 0
