"""Conversation → (input_ids, loss_mask), identical to SpecForge's `preprocess_conversations`,
computed faster.

SpecForge (a6b6b023) renders the conversation with the tokenizer's Jinja template, tokenizes the
whole string once (truncated at max_length), finds assistant spans with a regex over the rendered
text, and turns each span boundary `p` into a token position by re-encoding the prefix
`text[:p]` (position = its token count, clipped to max_length). That is two full re-encodes per
assistant turn.

`Tokenizer.count(p)` here gives the same number without re-encoding the prefix. A fast tokenizer
splits its input on added tokens (e.g. `<|im_start|>`) *before* normalising, pre-tokenising and
BPE, so the text up to and including an added token always tokenizes the same way, whatever
follows it. With one encoding of the full text (with offsets) we know where every added token
sits; then for a boundary `p`:

    len(encode(text[:p])) == (index of the last added token ending at or before p) + 1
                             + len(encode(text[anchor_end:p]))

The second term encodes only the few characters after the anchor (usually the rest of a header
such as "assistant\\n", or the "\\n" after `<|im_end|>`), and is memoised. Only added tokens
without lstrip/rstrip/single_word (and not normalised when the tokenizer has a normaliser) serve
as anchors; without one before `p` the whole prefix is encoded, exactly like SpecForge. Slow
(Python) tokenizers use the straightforward algorithm. The straightforward implementation is in
`tests/helpers/tokenize_reference.py`; tests and `bench/bench_tokenize.py` compare the two token for token.
"""

from __future__ import annotations

import bisect
import copy
import dataclasses
from typing import Any, Iterable, Sequence

from ..errors import UserError
from .messages import GENERAL_KEYS, THINKING_KEYS, build_messages, has_assistant_turn, loader_clean, parse_tools
from .settings import TokenizeFile
from .templates import AUTO, AutoTemplateError, ChatTemplate, derive_template


def slow_ids_and_counter(tokenizer, text: str, max_length: int):
    """For tokenizers without offsets (slow / non-HF): the ids of `text` (truncated at
    `max_length`) and a function counting the tokens of a prefix `text[:p]` by re-encoding it.
    The prefix re-encoding is SpecForge's own method, hence the slowness."""
    ids = tokenizer(text, max_length=max_length, truncation=True, add_special_tokens=False)["input_ids"]

    def count(p: int) -> int:
        return len(tokenizer.encode(text[:p], add_special_tokens=False, truncation=True, max_length=max_length))

    return list(ids), count


HARMONY_DEFAULT_SYSTEM = (
    "You are ChatGPT, a large language model trained by OpenAI.\nKnowledge cutoff: 2024-06\n"
    "Current date: 2025-06-28\n\nReasoning: {level}\n\n# Valid channels: analysis, commentary, final. "
    "Channel must be included for every message."
)


_FILE = TokenizeFile()  # configs/tokenize.yaml's defaults, declared once


@dataclasses.dataclass(frozen=True)
class TokenizeOptions:
    """Every option that changes the output (all of them go into the cache key).

    Parity with SpecForge is the default. The `corrected` options are off by default:
      inject_system_prompt=False  don't prepend the template's default system prompt;
      shift_mask_885=True         apply SpecForge#885's fix in the data: loss_mask[i] = mask[i+1]
                                  (the mask moves with the one-token input/target shift the
                                  trainer applies; only for trainers without PR #895);
      incremental_mask=True       template-agnostic spans: each assistant turn is the text by
                                  which the render with that turn extends the render without it
                                  (+ generation prompt); works for templates not in the registry.
    """

    max_length: int = _FILE.max_length
    is_preformatted: bool = _FILE.is_preformatted
    train_only_last_turn: bool = _FILE.train_only_last_turn
    inject_system_prompt: bool = not _FILE.corrected.no_system_prompt
    shift_mask_885: bool = _FILE.corrected.shift_mask_885
    incremental_mask: bool = _FILE.corrected.incremental_mask

    def __post_init__(self):
        if not isinstance(self.max_length, int) or self.max_length < 1:
            raise ValueError(f"max_length must be a positive integer, got {self.max_length!r}")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def parity(self) -> bool:
        return self.inject_system_prompt and not self.shift_mask_885 and not self.incremental_mask


@dataclasses.dataclass
class Tokenized:
    input_ids: list[int]
    loss_mask: list[int]
    text: str
    spans: list[tuple[int, int]]  # supervised character spans (before ignore tokens)
    warnings: list[str]
    fallback_render: bool = False
    full_length: int = 0  # tokens before truncation
    # what was cut or dropped from this row's conversation before rendering (messages.py keys:
    # cut_consecutive_assistant, cut_role_order, ... → number of messages dropped)
    dropped: dict = dataclasses.field(default_factory=dict)

    @property
    def truncated(self) -> bool:
        return self.full_length > len(self.input_ids)


class TokenizeError(ValueError, UserError):
    """A row (or, raised out of a run, the whole run) cannot be tokenized. `kind` is the short,
    countable reason (stats.json `rows_failed_by_reason`)."""

    def __init__(self, message: str, kind: str | None = None):
        super().__init__(message)
        self.kind = kind or "tokenize error"


NO_ASSISTANT_TURN = "no assistant turn"


def error_kind(e: BaseException) -> str:
    """The short countable reason of a per-row error."""
    kind = getattr(e, "kind", None)
    if kind:
        return str(kind)
    reason = getattr(e, "reason", None)  # jsonrows.RowDecodeError
    if isinstance(reason, str):
        return _re.split(r" at | \\u|: |\(", reason, maxsplit=1)[0].strip() or "unreadable row"
    return type(e).__name__


def _has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


class Preprocessor:
    """Tokenize rows with one tokenizer, template and option set."""

    def __init__(
        self,
        tokenizer,
        template: ChatTemplate,
        options: TokenizeOptions | None = None,
        verify_every: int = _FILE.verify_every,
    ):
        """`verify_every=N`: every N-th row is also computed with the straightforward algorithm
        (prefix re-encoding); on a difference that row gets the straightforward result and a
        warning (a run-time guard of the fast path's exactness, ~1/N of its cost)."""
        self.verify_every = int(verify_every or 0)
        self._rows_seen = 0
        self.tokenizer = tokenizer
        # `auto`: the tokenizer's own template gives the spans (incremental rendering) and no
        # system prompt is injected; registry templates are untouched (SpecForge parity)
        self.auto = template.name == AUTO
        if self.auto:
            try:
                template = derive_template(tokenizer)
            except AutoTemplateError as e:
                raise TokenizeError(str(e)) from e
        self.template = template
        self.options = options or TokenizeOptions()
        self.incremental = self.options.incremental_mask or self.auto
        self.keys = THINKING_KEYS if template.parser_type == "thinking" else GENERAL_KEYS
        if self.auto and "reasoning_content" in str(getattr(tokenizer, "chat_template", "")):
            self.keys = THINKING_KEYS  # the template renders reasoning: keep it in the messages
        self.harmony = template.parser_type == "openai-harmony"
        self.pattern = None
        if not self.harmony and not self.incremental:
            try:
                self.pattern = template.assistant_regex()
            except ValueError as e:
                raise TokenizeError(str(e)) from e
        self.render_kwargs: dict[str, Any] = {}
        if template.parser_type == "thinking":
            self.render_kwargs["add_special_tokens"] = False
            if template.enable_thinking:
                self.render_kwargs["enable_thinking"] = True
        elif template.parser_type == "glm":
            self.render_kwargs["enable_thinking"] = False
        self.has_template = _has_chat_template(tokenizer)
        backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
        if getattr(tokenizer, "split_special_tokens", False):
            backend = None  # the wrapper changes special-token handling; use the straightforward path
        self.backend = None
        if backend is not None:
            self.backend = copy.deepcopy(backend)
            self.backend.no_truncation()
            self.backend.no_padding()
            norm = self.backend.normalizer
            # an empty normalizer Sequence is a no-op (normalised added tokens match the raw text)
            has_norm = norm is not None and str(norm).replace(" ", "") != "Sequence(normalizers=[])"
            self.anchor_ids = frozenset(
                i
                for i, t in self.backend.get_added_tokens_decoder().items()
                if not (t.lstrip or t.rstrip or t.single_word or (t.normalized and has_norm))
            )
        self._memo: dict[str, int] = {}

    # ------------------------------------------------------------------ rendering
    def _render_messages(self, messages: list[dict], tools, add_generation_prompt: bool = False) -> str:
        return self.tokenizer.apply_chat_template(
            messages,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            tools=tools,
            **self.render_kwargs,
        )

    def _fallback(self, messages: list[dict]) -> str:
        t = self.template
        parts = []
        bos = getattr(self.tokenizer, "bos_token", None)
        if bos:
            parts.append(bos)
        for m in messages:
            if m["role"] == "system":
                parts.append(m["content"])
            elif m["role"] == "user":
                parts.append(f"{t.user_header or ''}{m['content']}")
            elif m["role"] == "assistant":
                parts.append(f"{t.assistant_header or ''}{m['content']}{t.end_of_turn_token or ''}")
        return "".join(parts)

    def _harmony_text(self, conversation: list[dict]) -> str:
        text = ""
        for j, m in enumerate(conversation):
            role, content = m.get("role"), m.get("content")
            if j == 0 and role not in ("system", "assistant_reasoning_effort"):
                text = "<|start|>system<|message|>" + HARMONY_DEFAULT_SYSTEM.format(level="low") + "<|end|>"
            if role == "system":
                text = f"<|start|>system<|message|>{content}<|end|>"
            elif role == "assistant_reasoning_effort":
                text = (
                    "<|start|>system<|message|>" + HARMONY_DEFAULT_SYSTEM.format(level=str(content).lower()) + "<|end|>"
                )
            elif role == "user":
                text += f"<|start|>user<|message|>{content}<|end|>"
            elif role in ("assistant_analysis", "assistant_commentary", "assistant_final"):
                ch = role.split("_", 1)[1]
                text += f"<|start|>assistant<|channel|>{ch}<|message|>{content}<|end|>"
            else:
                raise TokenizeError(
                    f"gpt-oss (harmony) rows need roles system, user, assistant_analysis, assistant_commentary, "
                    f"assistant_final or assistant_reasoning_effort; message {j} has role {role!r}"
                )
        return text

    def prepare(self, row: dict) -> tuple[str, list[dict] | None, Any, list[str], bool]:
        """Row → (rendered text, messages, tools, warnings, used fallback rendering)."""
        warnings: list[str] = []
        self._dropped: dict = {}
        if self.options.is_preformatted:
            text = row.get("text")
            if not isinstance(text, str):
                raise TokenizeError(f"pre-formatted row needs a string 'text' field, got {type(text).__name__}")
            return text, None, None, warnings, False
        if "conversations" not in row and isinstance(row.get("text"), str):
            # a pre-formatted row inside a conversation dataset (e.g. a pre-formatted source in
            # the mix): its text is used verbatim, as with --is-preformatted
            warnings.append("pre-formatted row ('text' without 'conversations'): text used verbatim")
            return row["text"], None, None, warnings, False
        try:
            conv = loader_clean(row.get("conversations"), warnings, dropped=self._dropped)
        except ValueError as e:
            raise TokenizeError(str(e), "invalid conversations") from e
        if not conv:
            raise TokenizeError("empty conversation (SpecForge skips such rows)", "empty conversation")
        if not has_assistant_turn(conv):
            raise TokenizeError(
                f"{NO_ASSISTANT_TURN}: a prompt-only row (user turns only); regenerate this source "
                "first (specforge-assets regenerate), then mix and tokenize its output",
                NO_ASSISTANT_TURN,
            )
        if self.harmony:
            return self._harmony_text(conv), None, None, warnings, False
        tools = parse_tools(row.get("tools"), warnings)
        messages = build_messages(
            conv,
            self.template.system_prompt,
            self.keys,
            warnings,
            self.options.inject_system_prompt,
            dropped=self._dropped,
        )
        if not self.has_template:
            warnings.append("tokenizer has no chat template; used SpecForge's fallback rendering")
            return self._fallback(messages), messages, tools, warnings, True
        try:
            text = self._render_messages(messages, tools)
        except (ValueError, TypeError) as e:
            warnings.append(f"chat template failed ({type(e).__name__}: {e}); used SpecForge's fallback rendering")
            return self._fallback(messages), messages, tools, warnings, True
        return text, messages, tools, warnings, False

    # ------------------------------------------------------------------ spans
    def spans(
        self, text: str, messages: list[dict] | None, tools, warnings: list[str], fallback: bool
    ) -> list[tuple[int, int]]:
        if self.harmony:
            pat = _HARMONY_RE
        elif self.incremental and messages is not None and not fallback:
            sp = None
            if self.auto and not self.options.incremental_mask:
                sp = self._auto_spans(text, messages, tools, warnings)
            if sp is None:
                sp = self._incremental_spans(text, messages, tools, warnings)
            return sp[-1:] if (self.options.train_only_last_turn and sp) else sp
        elif self.pattern is None:
            pat = self.template.assistant_regex()
        else:
            pat = self.pattern
        matches = [(m.start(1), m.end(1)) for m in pat.finditer(text)]
        if self.options.train_only_last_turn and matches:
            matches = matches[-1:]
        return matches

    def _auto_spans(self, text, messages, tools, warnings):
        """`auto` spans: each assistant message's content plus the template's end-of-turn string
        that follows it (and whatever the template renders in between, e.g. tool calls), found by
        rendering the conversation once more with every string content replaced by a sentinel:
        the text around the sentinels is exactly what the template adds. Template text before
        the content (headers, an empty think block) is not supervised. None when the sentinel
        render cannot be aligned with the real one (the caller then renders incrementally)."""
        nonce = "SFSPAN7f3a"
        skel_msgs = []
        for i, m in enumerate(messages):
            if isinstance(m.get("content"), str):
                m = {**m, "content": f"{nonce}{i}{nonce}"}
            skel_msgs.append(m)
        try:
            skel = self._render_messages(skel_msgs, tools)
        except Exception:  # noqa: BLE001 - fall back to incremental rendering
            return None
        parts = _re.split(f"{nonce}(\\d+){nonce}", skel)
        eot = self.template.end_of_turn_token
        eots = [e for e in dict.fromkeys([eot, eot.strip() if eot else None]) if e]
        pos = 0
        found: list[tuple[int, int, int]] = []  # (message index, content start, content end)
        for k in range(0, len(parts) - 1, 2):
            seg, idx = parts[k], int(parts[k + 1])
            nxt = parts[k + 2]
            if not text.startswith(seg, pos):
                return None
            pos += len(seg)
            content = messages[idx]["content"]
            for variant in dict.fromkeys([content, content.strip(), content.lstrip("\n"), content.rstrip()]):
                if text.startswith(variant + nxt, pos):  # the template may trim the content
                    break
            else:
                return None
            found.append((idx, pos, pos + len(variant)))
            pos += len(variant)
        if text[pos:] != parts[-1]:
            return None
        spans = []
        ends = [s for _, s, _ in found[1:]] + [len(text)]
        for (idx, s, e), limit in zip(found, ends):
            if messages[idx].get("role") != "assistant":
                continue
            end = e
            between = text[e:limit]
            for t in eots:
                j = between.find(t)
                if j >= 0:
                    end = e + j + len(t)
                    break
            if end > s:
                spans.append((s, end))
        return spans

    def _incremental_spans(self, text, messages, tools, warnings):
        out = []
        for i, m in enumerate(messages):
            if m.get("role") != "assistant":
                continue
            try:
                pre = self._render_messages(messages[:i], tools, add_generation_prompt=True) if i else ""
                upto = self._render_messages(messages[: i + 1], tools)
            except (ValueError, TypeError) as e:
                warnings.append(f"incremental mask: turn {i} failed to render ({e}); not supervised")
                continue
            if not (upto.startswith(pre) and text.startswith(upto)):
                # templates that rewrite history (e.g. drop earlier reasoning) break the prefix
                # property; supervise what the final render shares with this turn's render
                k = 0
                n = min(len(upto), len(text))
                while k < n and upto[k] == text[k]:
                    k += 1
                if not upto.startswith(pre) or k <= len(pre):
                    warnings.append(
                        f"incremental mask: turn {i} is not a prefix-extension of the render; not supervised"
                    )
                    continue
                out.append((len(pre), k))
                warnings.append(
                    f"incremental mask: turn {i} rendered differently in the full text; span cut at char {k}"
                )
                continue
            if len(upto) > len(pre):
                out.append((len(pre), len(upto)))
        return out

    # ------------------------------------------------------------------ token positions
    def _seg_len(self, seg: str) -> int:
        n = self._memo.get(seg)
        if n is None:
            n = len(self.backend.encode(seg, add_special_tokens=False).ids)
            if len(seg) <= 256:
                if len(self._memo) > 200_000:
                    self._memo.clear()
                self._memo[seg] = n
        return n

    def _tokenize_fast(self, texts: Sequence[str]):
        encs = self.backend.encode_batch(list(texts), add_special_tokens=False)
        out = []
        aids = self.anchor_ids
        for text, enc in zip(texts, encs):
            ids = enc.ids
            if aids:
                offs = enc.offsets
                apos = [i for i, t in enumerate(ids) if t in aids]
                # anchors: (char end, tokens up to and including it); verified against the text
                ends = []
                counts = []
                for i in apos:
                    s, e = offs[i]
                    ends.append(e)
                    counts.append(i + 1)
            else:
                ends, counts = [], []
            out.append((ids, ends, counts))
        return out

    def _count(self, text: str, p: int, ends: list[int], counts: list[int]) -> int:
        """len(encode(text[:p])) without encoding the whole prefix (see module docstring)."""
        if p <= 0:
            return 0
        k = bisect.bisect_right(ends, p) - 1
        if k < 0:
            return self._seg_len(text[:p])
        a = ends[k]
        return counts[k] + (self._seg_len(text[a:p]) if a < p else 0)

    # ------------------------------------------------------------------ main entry points
    def process_rows(self, rows: Sequence[dict]) -> list[Tokenized | TokenizeError]:
        """Tokenize a batch; each element is a Tokenized or the TokenizeError for that row.

        Whatever one row makes the tokenizer library raise (e.g. `TypeError: TextEncodeInput must
        be Union[...]` for a string it cannot encode) is that row's error: a run never aborts for
        one row."""
        prepared: list = []
        dropped: list[dict] = []
        for row in rows:
            try:
                prepared.append(self.prepare(row))
            except TokenizeError as e:
                prepared.append(e)
            except Exception as e:  # noqa: BLE001 - the chat template / tokenizer library failed on this row
                prepared.append(_library_error("chat template", e))
            dropped.append(getattr(self, "_dropped", {}))
        ok = [i for i, p in enumerate(prepared) if not isinstance(p, Exception)]
        texts = [prepared[i][0] for i in ok]
        results: list = list(prepared)
        if self.backend is None:
            for i in ok:
                text, messages, tools, warnings, fb = prepared[i]
                try:
                    ids, counter = slow_ids_and_counter(self.tokenizer, text, self.options.max_length)
                    results[i] = self._finish(text, ids, len(ids), counter, messages, tools, warnings, fb)
                except Exception as e:  # noqa: BLE001 - per-row tokenizer failure
                    results[i] = _library_error("tokenizer", e)
                else:
                    results[i].dropped = dropped[i]
            return results
        encoded = self._encode_rows(texts) if texts else []
        L = self.options.max_length
        for i, enc in zip(ok, encoded):
            if isinstance(enc, Exception):
                results[i] = enc
                continue
            ids, ends, counts = enc
            text, messages, tools, warnings, fb = prepared[i]
            try:
                results[i] = self._finish(
                    text,
                    ids[:L],
                    len(ids),
                    lambda p, t=text, e=ends, c=counts: self._count(t, p, e, c),
                    messages,
                    tools,
                    warnings,
                    fb,
                )
            except TokenizeError as e:
                results[i] = e
                continue
            except ValueError as e:  # e.g. a pre-formatted row under a template without span markers
                results[i] = TokenizeError(str(e))
                continue
            except Exception as e:  # noqa: BLE001 - per-row tokenizer failure
                results[i] = _library_error("tokenizer", e)
                continue
            results[i].dropped = dropped[i]
            self._rows_seen += 1
            if self.verify_every and self._rows_seen % self.verify_every == 0:
                try:
                    results[i] = self._verify(results[i], prepared[i])
                except Exception as e:  # noqa: BLE001 - per-row tokenizer failure
                    results[i] = _library_error("tokenizer", e)
                else:
                    results[i].dropped = dropped[i]
        return results

    def _encode_rows(self, texts: Sequence[str]) -> list:
        """`_tokenize_fast` for the batch; if the library refuses the batch, row by row, so that
        only the rows it refuses become errors."""
        try:
            return self._tokenize_fast(texts)
        except Exception:  # noqa: BLE001 - find the row(s) the library refuses
            out: list = []
            for t in texts:
                try:
                    out.extend(self._tokenize_fast([t]))
                except Exception as e:  # noqa: BLE001
                    out.append(_library_error("tokenizer", e))
            return out

    def _verify(self, fast: "Tokenized", prepared) -> "Tokenized":

        text, messages, tools, warnings, fb = prepared
        ids, counter = slow_ids_and_counter(self.tokenizer, text, self.options.max_length)
        slow = self._finish(text, ids, fast.full_length, counter, messages, tools, list(warnings), fb)
        if (slow.input_ids, slow.loss_mask) != (fast.input_ids, fast.loss_mask):
            slow.warnings.append("fast path differed from the straightforward SpecForge algorithm; used the latter")
            return slow
        return fast

    def _finish(self, text, ids, full_len, counter, messages, tools, warnings, fb) -> Tokenized:
        n = len(ids)
        L = self.options.max_length
        mask = [0] * n
        spans = self.spans(text, messages, tools, warnings, fb)
        if self.harmony:
            # SpecForge's harmony parser uses offset mapping: a token is masked when it lies
            # fully inside a span.
            offs = self._offsets(text)[:n]
            for s, e in spans:
                for j, (ts, te) in enumerate(offs):
                    if ts >= s and te <= e:
                        mask[j] = 1
        else:
            for s, e in spans:
                a = min(counter(s), L, n)
                b = min(counter(e), L, n)
                if a < b:
                    mask[a:b] = [1] * (b - a)
            for tok in self.template.ignore_token or ():
                start = 0
                while True:
                    idx = text.find(tok, start)
                    if idx == -1:
                        break
                    end = idx + len(tok)
                    a = min(counter(idx), L, n)
                    b = min(counter(end), L, n)
                    if a < b:
                        mask[a:b] = [0] * (b - a)
                    start = end
        if self.options.shift_mask_885 and n:
            mask = mask[1:] + [0]
        return Tokenized(list(ids), mask, text, spans, warnings, fb, full_len)

    def _offsets(self, text: str) -> list[tuple[int, int]]:
        if self.backend is not None:
            return self.backend.encode(text, add_special_tokens=False).offsets
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return enc["offset_mapping"]

    def process(self, row: dict) -> Tokenized:
        r = self.process_rows([row])[0]
        if isinstance(r, Exception):
            raise r
        return r


import re as _re  # noqa: E402


def _library_error(what: str, e: BaseException) -> TokenizeError:
    """One row's failure inside the tokenizer library / chat template, as that row's error."""
    msg = str(e).splitlines()[0] if str(e) else ""
    err = TokenizeError(f"{what} failed on this row ({type(e).__name__}: {msg[:300]})", f"{what} error")
    err.__cause__ = e
    return err


_HARMONY_RE = _re.compile(r"<\|start\|>assistant([\s\S]*?)(?=<\|start\|>user<\|message\|>|$)")


def iter_batches(rows: Iterable[Any], size: int) -> Iterable[list]:
    batch = []
    for r in rows:
        batch.append(r)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
