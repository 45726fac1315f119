"""Built-in audio datasets: `spoken-words`, synthesised by Debian's espeak-ng (core.data.spoken_words)
and cached under $DARKMATTER_HOME/spoken-words, so it is generated once per service home."""
from __future__ import annotations

from core.data.audio import AudioDataset
from core.data.errors import DatasetUnavailable
from core.modalities import AUDIO, builtin_names

NAMES = builtin_names(AUDIO)


def load_audio(name: str) -> tuple[AudioDataset, AudioDataset]:
    """(train, test) of a built-in audio set; DatasetUnavailable (with the install hint) when it
    cannot be made here."""
    if name == "spoken-words":
        from core.data.spoken_words import build_spoken_words

        train, test, _ = build_spoken_words()
        return train, test
    raise DatasetUnavailable(f"unknown built-in audio dataset {name!r}; choose one of {', '.join(NAMES)}")
