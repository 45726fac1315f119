"""How an archive or folder is recognised as audio, and what the audio scan stores."""
from __future__ import annotations

import io
import zipfile

import numpy as np
import soundfile as sf
from PIL import Image

from core.data.archives import Limits
from core.data.scan import FOLDER_FORMAT, modality_of, scan_file


def wav(seconds: float, rate: int = 8_000, freq: float = 440.0) -> bytes:
    out = io.BytesIO()
    sf.write(out, 0.3 * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate), rate, format="WAV")
    return out.getvalue()


def png() -> bytes:
    out = io.BytesIO()
    Image.new("L", (8, 8)).save(out, format="PNG")
    return out.getvalue()


def zipped(tmp_path, members: dict[str, bytes]):
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_an_archive_of_mostly_wav_files_is_audio_and_of_images_is_images(tmp_path):
    assert modality_of(zipped(tmp_path, {"a/1.wav": wav(0.2), "a/2.FLAC": b"x", "a/3.png": png(),
                                         ".DS_Store": b"", "__MACOSX/a/._1.wav": b""}), "zip", Limits()) == "audio"
    assert modality_of(zipped(tmp_path, {"a/1.wav": wav(0.2), "a/3.png": png()}), "zip", Limits()) == "image"
    (tmp_path / "folder" / "yes").mkdir(parents=True)
    (tmp_path / "folder" / "yes" / "1.wav").write_bytes(wav(0.2))
    assert modality_of(tmp_path / "folder", FOLDER_FORMAT, Limits()) == "audio"


def test_audio_scan_splits_by_test_folder_and_stores_int16_clips_with_offsets(tmp_path):
    members = {f"{split}/{word}/{i}.wav": wav(0.1 * (i + 1), freq=f)
               for split in ("train", "test") for word, f in (("no", 300), ("yes", 900)) for i in range(2)}
    result = scan_file(zipped(tmp_path, {**members, "train/yes/bad.wav": b"nope"}), "zip")
    assert (result.n_items, result.n_test, result.n_classes) == (4, 4, 2) and result.stats["split"] == "source"
    assert result.stats["classes"] == ["no", "yes"] and result.stats["n_unreadable"] == 1
    arrays = result.arrays
    assert arrays["samples"].dtype == np.int16 and arrays["offsets"][-1] == len(arrays["samples"])
    lengths = np.diff(arrays["offsets"])
    assert sorted(lengths.tolist()) == [1600, 1600, 3200, 3200]  # 0.1 s and 0.2 s at 16 kHz, resampled from 8 kHz
    assert sorted(arrays["labels"].tolist()) == [0, 0, 1, 1]
