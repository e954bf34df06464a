"""A small deterministic chat corpus for the models tests (no files needed)."""

from __future__ import annotations

import random

_NAMES = ["Ada", "Bo", "Cy", "Dee", "Eli", "Fay", "Gus", "Hal"]
_THINGS = ["apples", "books", "coins", "lamps", "maps", "pens", "rings", "shoes"]
_COLORS = ["red", "blue", "green", "gold", "gray", "pink"]


def conversations(n: int = 64, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        name, thing, color = rng.choice(_NAMES), rng.choice(_THINGS), rng.choice(_COLORS)
        kind = i % 3
        if kind == 0:
            q = f"{name} has {a} {thing} and finds {b} more. How many {thing} now?"
            r = f"{name} had {a} {thing}. Adding {b} gives {a + b}. The answer is {a + b} {thing}."
        elif kind == 1:
            q = f"What color are the {thing} of {name}?"
            r = f"The {thing} of {name} are {color}. {name} likes {color} {thing} a lot."
        else:
            q = f"Tell me about {name}."
            r = f"{name} is a friend who keeps {a} {color} {thing} at home and reads every day."
        conv = [{"role": "user", "content": q}, {"role": "assistant", "content": r}]
        if i % 5 == 0:
            conv += [
                {"role": "user", "content": "Thanks! Anything else?"},
                {"role": "assistant", "content": f"Yes: {name} also has {b} maps."},
            ]
        rows.append({"id": f"row-{i}", "conversations": conv})
    return rows
