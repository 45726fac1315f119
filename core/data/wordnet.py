"""WordNet glosses as a labelled text set that needs no download (Debian's `wordnet-base`):
each noun and verb synset's definition, labelled with its lexicographer file (noun.animal,
noun.artifact, verb.motion, ...; 41 classes), with a fixed train/test split."""
from __future__ import annotations

import os
from pathlib import Path

from core.data.errors import DatasetUnavailable
from core.data.text import TextDataset, split_text

WORDNET_DIRS = ("/usr/share/wordnet",)
POS_FILES = ("data.noun", "data.verb")
TEST_FRACTION, SPLIT_SEED = 0.1, 0
# lexnames(5WN): the lexicographer files by number (the package ships the man page, not the file)
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body noun.cognition "
    "noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive noun.object "
    "noun.person noun.phenomenon noun.plant noun.possession noun.process noun.quantity noun.relation noun.shape "
    "noun.state noun.substance noun.time verb.body verb.change verb.cognition verb.communication verb.competition "
    "verb.consumption verb.contact verb.creation verb.emotion verb.motion verb.perception verb.possession "
    "verb.social verb.stative verb.weather adj.ppl").split()


def wordnet_dir() -> Path:
    for folder in filter(None, [os.environ.get("DARKMATTER_WORDNET_DIR", ""), *WORDNET_DIRS]):
        if all((Path(folder) / name).exists() for name in POS_FILES):
            return Path(folder)
    raise DatasetUnavailable("wordnet-glosses needs WordNet: run `apt-get install wordnet-base` "
                             "or set DARKMATTER_WORDNET_DIR to a folder with data.noun and data.verb")


def parse_line(line: str) -> tuple[str, str] | None:
    """(definition, lexname) of one data.* line (wndb(5WN)), or None for the licence header. The
    definition is the gloss up to its first quoted example."""
    if line.startswith("  ") or "|" not in line:
        return None
    fields, gloss = line.split("|", 1)
    definition = gloss.split('"', 1)[0].strip().rstrip(";").strip()
    return (definition, LEXNAMES[int(fields.split()[1])]) if definition else None


def wordnet_glosses() -> tuple[TextDataset, TextDataset]:
    """(train, test): 90/10, a permutation with seed 0 of the synsets in file order."""
    folder = wordnet_dir()
    texts, names = [], []
    for name in POS_FILES:
        with open(folder / name, encoding="utf-8") as f:
            for line in f:
                parsed = parse_line(line)
                if parsed:
                    texts.append(parsed[0])
                    names.append(parsed[1])
    classes = sorted(set(names))
    index = {c: i for i, c in enumerate(classes)}
    data = TextDataset(texts, [index[n] for n in names], classes)
    return split_text(data, TEST_FRACTION, SPLIT_SEED)
