"""Reading WAV/FLAC: mono, 16 kHz, int16, the right length; bad files listed with reasons."""
from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
import soundfile as sf

from core.data.arrays import DatasetUnavailable
from core.data.audio import PAD, scan_audio, waveforms
from core.data.spoken_words import build_spoken_words


def encoded(audio: np.ndarray, rate: int, fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format=fmt, subtype="PCM_16")
    return buffer.getvalue()


def test_stereo_files_at_other_rates_become_mono_16k_int16_of_the_right_length():
    files = []
    for rate in (8000, 22050, 44100):
        t = np.arange(rate // 2) / rate  # 0.5 s
        stereo = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.1 * np.sin(2 * np.pi * 440 * t)], axis=1)
        files.append((f"tone/{rate}.wav", encoded(stereo, rate)))
    files.append(("hum/a.flac", encoded(0.2 * np.ones(1600), 16000, "FLAC")))
    found = scan_audio(files)
    assert found.bad_files == [] and found.data.classes == ["hum", "tone"]
    assert found.data.lengths.tolist() == [8000, 8000, 8000, 1600]
    assert found.data.samples.dtype.is_floating_point is False and found.data.sample_rate == 16000
    assert found.stats["original_rates"] == [8000, 16000, 22050, 44100]
    assert found.stats["seconds"]["max"] == 0.5 and found.stats["seconds"]["min"] == 0.1
    clip = found.data.clip(1).numpy() / 32768  # the mean of the channels: amplitude 0.3 at 440 Hz
    assert abs(np.abs(clip[1000:7000]).max() - 0.3) < 0.01
    assert found.data.labels.tolist() == [1, 1, 1, 0]


def test_bad_files_are_listed_with_their_reasons():
    files = [("a/notes.wav", b"this is text, not audio"), ("a/empty.wav", encoded(np.zeros(0), 16000)),
             ("a/bat.wav", encoded(np.zeros(100), 2000)), ("a/long.wav", encoded(np.zeros(16000 * 3), 16000)),
             ("a/readme.txt", b"hello"), ("a/good.wav", encoded(np.zeros(1600), 16000))]
    found = scan_audio(files, max_seconds=2.0)
    reasons = {b["path"]: b["reason"] for b in found.bad_files}
    assert "not readable audio" in reasons["a/notes.wav"]
    assert reasons["a/empty.wav"] == "zero length"
    assert "2000 Hz is outside" in reasons["a/bat.wav"]
    assert "longer than the 2 s limit" in reasons["a/long.wav"]
    assert reasons["a/readme.txt"].startswith("not audio")
    assert len(found.data) == 1 and found.stats["n_bad_files"] == 5
    with pytest.raises(DatasetUnavailable, match="no usable audio"):
        scan_audio(files[:1])


def test_padded_batches_mark_padding_and_scale_to_unit_range():
    found = scan_audio([("x/a.wav", encoded(np.full(320, 0.5), 16000)), ("x/b.wav", encoded(np.full(640, -1.0), 16000))])
    batch = found.data.padded(10_000)
    assert batch.shape == (2, 640) and (batch[0, 320:] == PAD).all()
    wave, padding = waveforms(batch)
    assert padding[0, 320:].all() and not padding[1].any()
    assert wave[0, :320].allclose(wave.new_tensor(0.5), atol=1e-4) and (wave[0, 320:] == 0).all()


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_spoken_words_are_deterministic_and_split_by_voice(tmp_path):
    settings = dict(words=("yes", "no"), accents=("en", "en-us"), variants=("m3", "f3"),
                    test_voices=("en-us+f3",), speeds=(175,), pitches=(50,))
    train, test, info = build_spoken_words(tmp_path / "one", **settings)
    again, again_test, _ = build_spoken_words(tmp_path / "two", **settings)
    assert train.content_hash() == again.content_hash() and test.content_hash() == again_test.content_hash()
    assert (len(train), len(test)) == (6, 2) and set(info["test_voices"]) == {"en-us+f3"}
    assert "en-us+f3" not in info["train_voices"] and train.classes == ["yes", "no"]
    assert train.lengths.min() > 16000 * 0.2 and test.labels.tolist() == [0, 1]
