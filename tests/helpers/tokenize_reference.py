"""The straightforward SpecForge algorithm (render, tokenize, regex, prefix re-encode per
boundary), one row at a time: the baseline in bench/bench_tokenize.py and what the tests check
`Preprocessor.process_rows` (the fast path in specforge_assets/tokenize/core.py) against."""

from __future__ import annotations

from typing import Sequence

from specforge_assets.tokenize.core import Preprocessor, TokenizeError, Tokenized, slow_ids_and_counter


def straightforward_rows(pre: Preprocessor, rows: Sequence[dict]) -> list[Tokenized | TokenizeError]:
    """Same inputs/outputs as `Preprocessor.process_rows`, one row at a time, prefix re-encoding."""
    out: list = []
    for row in rows:
        try:
            text, messages, tools, warnings, fb = pre.prepare(row)
        except TokenizeError as e:
            out.append(e)
            continue
        ids, count = slow_ids_and_counter(pre.tokenizer, text, pre.options.max_length)
        full = (
            len(pre.tokenizer(text, add_special_tokens=False)["input_ids"])
            if len(ids) >= pre.options.max_length
            else len(ids)
        )
        out.append(pre._finish(text, ids, full, count, messages, tools, warnings, fb))
    return out
