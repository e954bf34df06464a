"""Generate the embedded default data (deterministic; run `python -m specforge_assets.sample.generate`).

Small raw samples in the original hub schemas of ultrachat, sharegpt, perfectblend, gsm8k and
opc, plus one custom conversation file and one pre-formatted file. The text is written by this
script: templated, with a small vocabulary (arithmetic word problems, simple facts, short code
snippets, recurring phrasing), multi-turn in places, so that the tiny demo target model can
learn it and a draft model can learn the target. `custom/conversations.jsonl` also carries a
few awkward rows that the sources layer quarantines with reasons.
"""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 20260801

NAMES = ["Tom", "Anna", "Ben", "Lily", "Sam", "Mia", "Max", "Zoe"]
ITEMS = ["apples", "pencils", "books", "marbles", "cookies", "stickers"]
CAPITALS = {
    "France": "Paris", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo", "Egypt": "Cairo",
    "Canada": "Ottawa", "Germany": "Berlin", "Kenya": "Nairobi", "Peru": "Lima", "Norway": "Oslo",
}
COLORS = {"the sky": "blue", "grass": "green", "snow": "white", "a banana": "yellow", "coal": "black", "a tomato": "red"}
LEGS = {"a dog": 4, "a cat": 4, "a bird": 2, "a spider": 8, "an ant": 6, "a horse": 4, "a duck": 2}
CODE = [
    ("adds two numbers", "add", "a, b", "return a + b"),
    ("subtracts b from a", "subtract", "a, b", "return a - b"),
    ("multiplies two numbers", "multiply", "a, b", "return a * b"),
    ("returns the square of a number", "square", "x", "return x * x"),
    ("checks if a number is even", "is_even", "n", "return n % 2 == 0"),
    ("reverses a string", "reverse", "s", "return s[::-1]"),
    ("returns the largest item of a list", "largest", "items", "return max(items)"),
    ("counts the vowels in a string", "count_vowels", "s", 'return sum(1 for c in s if c in "aeiou")'),
]


def _word_problem(rng: random.Random) -> tuple[str, str, int]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = rng.randint(2, 20), rng.randint(2, 20)
    kind = rng.choice(["buy", "give", "double"])
    if kind == "buy":
        q = f"{name} has {a} {item}. {name} buys {b} more {item}. How many {item} does {name} have now?"
        ans = a + b
        steps = f"{name} starts with {a} {item}. After buying {b} more, {name} has {a} + {b} = <<{a}+{b}={ans}>>{ans} {item}."
    elif kind == "give":
        a = a + b
        q = f"{name} has {a} {item}. {name} gives {b} {item} to a friend. How many {item} does {name} have left?"
        ans = a - b
        steps = f"{name} starts with {a} {item}. After giving away {b}, {name} has {a} - {b} = <<{a}-{b}={ans}>>{ans} {item} left."
    else:
        q = f"{name} has {a} {item}. {name} doubles the number of {item}. How many {item} does {name} have now?"
        ans = 2 * a
        steps = f"{name} starts with {a} {item}. Doubling gives 2 * {a} = <<2*{a}={ans}>>{ans} {item}."
    return q, steps, ans


def _fact_turns(rng: random.Random) -> list[tuple[str, str]]:
    kind = rng.choice(["capital", "color", "legs"])
    countries = rng.sample(list(CAPITALS), 2)
    if kind == "capital":
        c1, c2 = countries
        return [
            (f"What is the capital of {c1}?", f"The capital of {c1} is {CAPITALS[c1]}."),
            (f"And what is the capital of {c2}?", f"The capital of {c2} is {CAPITALS[c2]}."),
        ]
    if kind == "color":
        t1, t2 = rng.sample(list(COLORS), 2)
        return [
            (f"What color is {t1}?", f"{t1[0].upper() + t1[1:]} is {COLORS[t1]}."),
            (f"What color is {t2}?", f"{t2[0].upper() + t2[1:]} is {COLORS[t2]}."),
        ]
    a1, a2 = rng.sample(list(LEGS), 2)
    return [
        (f"How many legs does {a1} have?", f"{a1[0].upper() + a1[1:]} has {LEGS[a1]} legs."),
        (f"How many legs does {a2} have?", f"{a2[0].upper() + a2[1:]} has {LEGS[a2]} legs."),
    ]


CODE_TEMPLATES = [
    ("adds {k} to a number", "add_{k}", "x", "return x + {k}"),
    ("multiplies a number by {k}", "times_{k}", "x", "return x * {k}"),
    ("checks if a number is greater than {k}", "greater_than_{k}", "x", "return x > {k}"),
]


def _code_turn(rng: random.Random) -> tuple[str, str]:
    if rng.random() < 0.4:
        what, name, args, body = rng.choice(CODE)
    else:
        k = rng.randint(2, 20)
        what, name, args, body = (t.format(k=k) for t in rng.choice(CODE_TEMPLATES))
    q = f"Write a Python function that {what}."
    a = f"Here is a function that {what}:\n\n```python\ndef {name}({args}):\n    {body}\n```"
    return q, a


def _opc_fact(rng: random.Random) -> tuple[str, str]:
    """Single-turn fact or arithmetic instruction (opc's non-code subsets)."""
    if rng.random() < 0.5:
        return _fact_turns(rng)[0]
    a, b = rng.randint(2, 30), rng.randint(2, 30)
    return f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."


def _conversation(rng: random.Random, max_pairs: int = 3) -> list[tuple[str, str]]:
    """One to `max_pairs` user/assistant pairs mixing the three topics."""
    pairs: list[tuple[str, str]] = []
    topic = rng.choice(["math", "fact", "code"])
    if topic == "math":
        q, steps, ans = _word_problem(rng)
        pairs.append((q, f"{steps} The answer is {ans}."))
    elif topic == "fact":
        pairs.extend(_fact_turns(rng))
    else:
        pairs.append(_code_turn(rng))
    if len(pairs) < max_pairs and rng.random() < 0.4:
        pairs.append(("Thank you!", "You are welcome. Ask me anything else."))
    return pairs[:max_pairs]


def _unique(seen: set, make):
    """Call `make()` until it returns something not seen before (the sample has no duplicate
    conversations, so the duplicate-content check stays green)."""
    for _ in range(1000):
        value = make()
        key = json.dumps(value)
        if key not in seen:
            seen.add(key)
            return value
    raise RuntimeError("sample generator ran out of distinct rows")


def _write_parquet(path: Path, rows: list[dict], schema=None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=schema)
    pq.write_table(table, path, compression="snappy")


def _write_jsonl(path: Path, rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for r in rows:
            f.write(r if isinstance(r, bytes) else json.dumps(r, ensure_ascii=False).encode("utf-8"))
            f.write(b"\n")


def ultrachat(rng: random.Random, n: int = 80) -> list[dict]:
    rows, seen = [], set()
    for _ in range(n):
        pairs = _unique(seen, lambda: _conversation(rng))
        prompt = pairs[0][0]
        msgs = []
        for u, a in pairs:
            msgs += [{"content": u, "role": "user"}, {"content": a, "role": "assistant"}]
        rows.append({"prompt": prompt, "prompt_id": hashlib.sha256(f"{len(rows)}:{prompt}".encode()).hexdigest(), "messages": msgs})
    return rows


def sharegpt(rng: random.Random, n: int = 80) -> list[dict]:
    rows, seen = [], set()
    for i in range(n):
        conv = []
        if i % 10 == 3:  # ShareGPT system sender: SpecForge's preset rule drops (and counts) it
            conv.append({"from": "system", "value": "You are a helpful assistant."})
        for u, a in _unique(seen, lambda: _conversation(rng)):
            conv += [{"from": "human", "value": u}, {"from": "gpt", "value": a}]
        rows.append({"id": f"sg{i:04d}_0", "conversations": conv})
    return rows


def perfectblend(rng: random.Random, n: int = 80) -> list[dict]:
    rows, seen = [], set()
    for _ in range(n):
        pairs = _unique(seen, lambda: _conversation(rng))
        conv = []
        for u, a in pairs:
            conv += [{"from": "human", "value": u}, {"from": "gpt", "value": a}]
        src = "code" if "Python" in pairs[0][0] else "math" if "How many" in pairs[0][0] and "legs" not in pairs[0][0] else "chat"
        rows.append({"conversations": conv, "source": src})
    return rows


def gsm8k(rng: random.Random, n: int = 80) -> list[dict]:
    rows, seen = [], set()
    for _ in range(n):
        q, steps, ans = _unique(seen, lambda: _word_problem(rng))
        rows.append({"question": q, "answer": f"{steps}\n#### {ans}"})
    return rows


def opc(rng: random.Random, n: int = 27) -> dict[str, list[dict]]:
    out, seen = {}, set()
    tags = {"largescale_diverse_instruct": "code", "filtered_infinity_instruct": "general", "realuser_instruct": "chat"}
    for config, tag in tags.items():
        rows = []
        for _ in range(n):
            q, a = _unique(seen, lambda: _code_turn(rng) if tag == "code" or rng.random() < 0.3 else _opc_fact(rng))
            rows.append({"instruction": q, "output": a, "tag": tag})
        out[config] = rows
    return out


def custom(rng: random.Random, n: int = 61) -> list:
    """Conversation rows (some without id, some ShareGPT-style, some with a system prompt) plus
    nine awkward rows, each quarantined with a reason."""
    rows: list = []
    seen: set = set()
    for i in range(n):
        pairs = _unique(seen, lambda: _conversation(rng))
        if i % 7 == 5:  # ShareGPT from/value, no id → content-hash id
            conv = []
            for u, a in pairs:
                conv += [{"from": "human", "value": u}, {"from": "gpt", "value": a}]
            rows.append({"conversations": conv})
            continue
        conv = [{"role": "system", "content": "You are a helpful assistant."}] if i % 5 == 0 else []
        for u, a in pairs:
            conv += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
        row = {"id": f"custom-{i:03d}", "conversations": conv} if i % 4 else {"conversations": conv}
        rows.append(row)
    awkward = [
        b'{"id": "bad-json", "conversations": [{"role": "user", "content": "What is 2 + 2?"}',  # truncated line
        {"id": "bad-role", "conversations": [{"role": "user", "content": "What is 3 + 3?"}, {"role": "tool", "content": "6"}]},
        {"id": "bad-leading-assistant", "conversations": [{"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Hi."}]},
        {"id": "bad-empty", "conversations": [{"role": "user", "content": "What color is snow?"}, {"role": "assistant", "content": "   "}]},
        {"id": "bad-missing"},
        {"id": "bad-order", "conversations": [{"role": "user", "content": "Hi."}, {"role": "user", "content": "Hello?"}]},
        {"id": "bad-type", "conversations": [{"role": "user", "content": "What is 1 + 1?"}, {"role": "assistant", "content": 2}]},
        b'{"id": "bad-utf8", "conversations": [{"role": "user", "content": "caf\xe9"}]}',  # latin-1 byte
        rows[1],  # exact duplicate of an earlier row (same id)
    ]
    # spread the awkward rows through the file
    for k, bad in enumerate(awkward):
        rows.insert(6 + k * 7, bad)
    return rows


def preformatted(rng: random.Random, n: int = 40) -> list[dict]:
    rows, seen = [], set()
    for i in range(n):
        text = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        for u, a in _unique(seen, lambda: _conversation(rng)):
            text += f"<|im_start|>user\n{u}<|im_end|>\n<|im_start|>assistant\n{a}<|im_end|>\n"
        rows.append({"id": f"pre-{i:03d}", "text": text})
    return rows


def generate(out: Path = HERE) -> dict[str, int]:
    rng = random.Random(SEED)
    counts = {}
    u = ultrachat(rng)
    _write_parquet(out / "ultrachat" / "train_sft-00000-of-00001.parquet", u)
    s = sharegpt(rng)
    (out / "sharegpt").mkdir(parents=True, exist_ok=True)
    (out / "sharegpt" / "sharegpt_sample.json").write_text(json.dumps(s, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    p = perfectblend(rng)
    _write_parquet(out / "perfectblend" / "train-00000-of-00001.parquet", p)
    g = gsm8k(rng)
    _write_parquet(out / "gsm8k" / "main" / "train-00000-of-00001.parquet", g)
    o = opc(rng)
    for config, rows in o.items():
        _write_parquet(out / "opc" / config / "train-00000-of-00001.parquet", rows)
    c = custom(rng)
    _write_jsonl(out / "custom" / "conversations.jsonl", c)
    f = preformatted(rng)
    _write_jsonl(out / "preformatted" / "preformatted.jsonl", f)
    counts.update(ultrachat=len(u), sharegpt=len(s), perfectblend=len(p), gsm8k=len(g),
                  opc=sum(len(r) for r in o.values()), custom=len(c), preformatted=len(f))
    return counts


if __name__ == "__main__":
    counts = generate()
    print(json.dumps(counts), "total", sum(counts.values()))
