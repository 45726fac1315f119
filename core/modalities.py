"""The modalities: their names, and which built-in datasets hold each. Methods name theirs on
their registry entry (core.methods.registry); a scanned dataset records its own in its stats, a
checkpoint in its manifest (image checkpoints predate the field: none means image).

Each room dispatches on these names through one table: core.data.sources (built-in datasets),
core.data.scan (file formats), jobs/modalities.py (registration and submit checks),
workers/modalities.py (train, evaluate, index) and api/modalities.py (embedding inputs). A new
modality is a name here, its built-ins in BUILTINS, its own modules in each room
and one entry in each of those tables; the modules of one modality never import another's."""
from __future__ import annotations

IMAGE, TEXT, AUDIO = "image", "text", "audio"
MODALITIES = (IMAGE, TEXT, AUDIO)

# how a method of a modality is trained, when it is not the modality itself: word vectors are text
# methods whose words are counted (no subword tokenizer), trained by gensim or on co-occurrences
WORDS = "words"

# every built-in dataset, by name, with its modality
BUILTINS: dict[str, str] = {"digits": IMAGE, "fashion-mnist": IMAGE, "wordnet-glosses": TEXT, "spoken-words": AUDIO,
                             "spoken-voices": AUDIO}


def builtin_names(modality: str | None = None) -> tuple[str, ...]:
    """The built-in datasets (of one modality, or all)."""
    return tuple(name for name, of in BUILTINS.items() if modality in (None, of))


def of_stats(stats: dict | None) -> str:
    """A dataset's modality from its row's stats (a dataset not scanned yet counts as image)."""
    return (stats or {}).get("modality") or IMAGE


def of_manifest(manifest: dict | None) -> str:
    """A checkpoint's modality from its manifest."""
    return (manifest or {}).get("modality") or IMAGE
