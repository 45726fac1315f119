"""`spoken-words`: real speech with no download, synthesised by Debian's espeak-ng: the ten digits
and twenty command words (the Speech Commands vocabulary, arXiv:1804.03209), each said by several
voices at several speeds and pitches; test voices are never heard in training. Cached as int16
at 16 kHz under a folder, named by the hash of everything that made it."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from core.data.arrays import DatasetUnavailable
from core.data.audio import SAMPLE_RATE, AudioDataset, decode, from_clips

log = logging.getLogger(__name__)

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
         "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
         "bed", "bird", "cat", "dog", "happy", "house", "tree", "wow", "forward", "follow")
# espeak-ng accents (`espeak-ng --voices=en`) and voice variants (`--voices=variant`)
ACCENTS = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan")
VARIANTS = ("m3", "f3")
TEST_VOICES = ("en-029+m3", "en-gb-x-gbclan+f3")  # held out: one male, one female voice, unseen accents
SPEEDS = (130, 175)  # words per minute (espeak-ng -s; its default is 175)
PITCHES = (35, 65)  # 0-99 (espeak-ng -p; its default is 50)


def espeak_binary() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise DatasetUnavailable("spoken-words needs espeak-ng: run `apt-get install espeak-ng` (or `make espeak`)")
    return path


def voices(accents=ACCENTS, variants=VARIANTS) -> list[str]:
    return [f"{accent}+{variant}" for accent in accents for variant in variants]


def synthesise(word: str, voice: str, speed: int, pitch: int, binary: str | None = None) -> np.ndarray:
    """One word said by espeak-ng -> int16 mono at 16 kHz (espeak-ng writes 22,050 Hz WAV)."""
    binary = binary or espeak_binary()
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "word.wav"
        try:
            subprocess.run([binary, "-w", str(out), "-v", voice, "-s", str(speed), "-p", str(pitch), word],
                           check=True, capture_output=True, timeout=30)
            clip, _ = decode(out.read_bytes(), SAMPLE_RATE)
        except (OSError, subprocess.SubprocessError, ValueError) as exc:  # a 4xx naming the cause, not a 500
            stderr = getattr(exc, "stderr", None) or b""
            raise DatasetUnavailable(f"espeak-ng could not say {word!r} in voice {voice}: "
                                     f"{stderr.decode(errors='replace').strip() or exc}") from exc
    return clip


def _version(binary: str) -> str:
    return subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()


def build_spoken_words(folder: str | Path | None = None, words=WORDS, accents=ACCENTS, variants=VARIANTS,
                       test_voices=TEST_VOICES, speeds=SPEEDS, pitches=PITCHES,
                       workers: int = 2) -> tuple[AudioDataset, AudioDataset, dict]:
    """(train, test, info): every (word, voice, speed, pitch), split by voice (`test_voices`).
    Labels index `words`; info holds each clip's voice (`train_voices`, `test_voices`: voice
    names per clip), the espeak-ng version and the cache key. Cached as an .npz under `folder`
    ($DARKMATTER_HOME/spoken-words, else ~/.cache/darkmatter/spoken-words), keyed by a hash of
    the settings and espeak-ng's version: the same inputs give the same bytes."""
    binary = espeak_binary()
    all_voices = voices(accents, variants)
    unknown = set(test_voices) - set(all_voices)
    if unknown or len(set(test_voices)) >= len(all_voices):
        raise ValueError(f"test_voices must be some, not all, of {all_voices}; got {sorted(test_voices)}")
    settings = {"words": list(words), "voices": all_voices, "test_voices": sorted(test_voices),
                "speeds": list(speeds), "pitches": list(pitches), "rate": SAMPLE_RATE, "espeak": _version(binary)}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(folder or Path(os.environ.get("DARKMATTER_HOME", Path.home() / ".cache" / "darkmatter"))
                  / "spoken-words")
    cached = folder / f"spoken-words-{key}.npz"
    if not cached.exists():
        jobs = [(w, v, s, p) for v in all_voices for w in words for s in speeds for p in pitches]
        with ThreadPoolExecutor(max(1, workers)) as pool:  # each job waits on its own espeak-ng process
            clips = list(pool.map(lambda job: synthesise(*job, binary=binary), jobs))
        lengths = np.array([len(c) for c in clips], dtype=np.int64)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp.npz")
        np.savez(tmp, samples=np.concatenate(clips), lengths=lengths,
                 labels=np.array([words.index(j[0]) for j in jobs], dtype=np.int64),
                 voices=np.array([all_voices.index(j[1]) for j in jobs], dtype=np.int64),
                 settings=np.frombuffer(json.dumps(settings, sort_keys=True).encode(), dtype=np.uint8))
        os.replace(tmp, cached)
        log.info("spoken-words: %d clips synthesised into %s", len(jobs), cached)
    with np.load(cached) as stored:
        samples, lengths, labels, voice_ids = (stored[k] for k in ("samples", "lengths", "labels", "voices"))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    clips = [samples[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
    held_out = np.isin(voice_ids, [all_voices.index(v) for v in test_voices])
    parts = []
    for keep in (~held_out, held_out):
        index = np.flatnonzero(keep)
        parts.append(from_clips([clips[i] for i in index], torch.from_numpy(labels[index]), list(words)))
    info = {"key": key, "path": str(cached), "espeak": settings["espeak"], "voices": all_voices,
            "train_voices": [all_voices[i] for i in voice_ids[~held_out]],
            "test_voices": [all_voices[i] for i in voice_ids[held_out]]}
    return parts[0], parts[1], info
