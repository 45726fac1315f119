"""A small synthetic corpus for the word-vector tests: two topics whose words share contexts."""
from __future__ import annotations

import json
import random

ANIMALS = ["cat", "dog", "horse", "cow", "sheep", "goat"]
ANIMAL_CONTEXT = ["fur", "barn", "milk", "graze", "pet", "tail", "farm", "hay"]
TOOLS = ["hammer", "saw", "drill", "wrench", "chisel", "pliers"]
TOOL_CONTEXT = ["nail", "wood", "metal", "bolt", "workshop", "build", "repair", "steel"]
FILLERS = ["the", "a", "with", "and", "of", "near"]


def topic_corpus(per_topic: int = 300, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    records = []
    for _ in range(per_topic):
        for label, (words, context) in (("animal", (ANIMALS, ANIMAL_CONTEXT)), ("tool", (TOOLS, TOOL_CONTEXT))):
            tokens = rng.sample(words, 2) + rng.sample(context, 3) + rng.sample(FILLERS, 2)
            rng.shuffle(tokens)
            records.append({"text": " ".join(tokens), "label": label})
    return records


def jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()
