"""A small synthetic corpus for the word-vector tests: two topics whose words share contexts."""
from __future__ import annotations

import json
import random

ANIMALS = ["cat", "dog", "horse", "cow", "sheep", "goat"]
ANIMAL_CONTEXT = ["fur", "barn", "milk", "graze", "pet", "tail", "farm", "hay"]
TOOLS = ["hammer", "saw", "drill", "wrench", "chisel", "pliers"]
TOOL_CONTEXT = ["nail", "wood", "metal", "bolt", "workshop", "build", "repair", "steel"]
VEHICLES = ["car", "auto", "automobile", "motorcar", "machine"]  # WordNet synonyms (one synset): 10 pairs
VEHICLE_CONTEXT = ["road", "wheel", "drive", "engine", "garage", "fuel", "highway", "driver"]
FILLERS = ["the", "a", "with", "and", "of", "near"]
TOPICS = {"animal": (ANIMALS, ANIMAL_CONTEXT), "tool": (TOOLS, TOOL_CONTEXT), "vehicle": (VEHICLES, VEHICLE_CONTEXT)}


def topic_corpus(per_topic: int = 300, seed: int = 0, topics=("animal", "tool")) -> list[dict]:
    """Sentences of two topic words, three context words of the topic and two fillers, shuffled."""
    rng = random.Random(seed)
    records = []
    for _ in range(per_topic):
        for label in topics:
            words, context = TOPICS[label]
            tokens = rng.sample(words, 2) + rng.sample(context, 3) + rng.sample(FILLERS, 2)
            rng.shuffle(tokens)
            records.append({"text": " ".join(tokens), "label": label})
    return records


def jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()
