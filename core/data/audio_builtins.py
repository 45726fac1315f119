"""Built-in audio datasets, synthesised by Debian's espeak-ng (core.data.spoken_words) and cached
under $DARKMATTER_HOME/spoken-words, so they are generated once per service home:
`spoken-words` (label: the word; test voices never heard in training) and `spoken-voices` (the same
clips, label: the voice; test words never heard in training)."""
from __future__ import annotations

import torch

from core.data.audio import AudioDataset, from_clips
from core.data.errors import DatasetUnavailable
from core.modalities import AUDIO, builtin_names

NAMES = builtin_names(AUDIO)
VOICE_TEST_EVERY = 5  # spoken-voices holds out every 5th word of core.data.spoken_words.WORDS (6 of 30)


def load_audio(name: str) -> tuple[AudioDataset, AudioDataset]:
    """(train, test) of a built-in audio set; DatasetUnavailable (with the install hint) when it
    cannot be made here."""
    if name == "spoken-words":
        from core.data.spoken_words import build_spoken_words

        train, test, _ = build_spoken_words()
        return train, test
    if name == "spoken-voices":
        return spoken_voices()
    raise DatasetUnavailable(f"unknown built-in audio dataset {name!r}; choose one of {', '.join(NAMES)}")


def spoken_voices() -> tuple[AudioDataset, AudioDataset]:
    """spoken-words relabelled by voice (12 classes) and split by word: speaker identity on words
    the training split never says."""
    from core.data.spoken_words import build_spoken_words

    train, test, info = build_spoken_words()
    clips = [train.clip(i) for i in range(len(train))] + [test.clip(i) for i in range(len(test))]
    voices = torch.tensor([info["voices"].index(v) for v in info["train_voices"] + info["test_voices"]])
    words = torch.cat([train.labels, test.labels])
    held_out = words % VOICE_TEST_EVERY == 0
    return tuple(from_clips([clips[i] for i in index.tolist()], voices[index], info["voices"])
                 for index in ((~held_out).nonzero().squeeze(1), held_out.nonzero().squeeze(1)))
