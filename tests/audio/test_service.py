"""Audio through the service on a real worker: wav2vec 2.0 pretrained on the built-in spoken-words,
scored against the random-init and MFCC baselines in the scores table, its checkpoint served by
/v1/embeddings exactly as the downloaded backbone computes, and bad audio refused with the reason."""
from __future__ import annotations

import base64
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from core.checkpoint import load_backbone
from core.data.audio import from_clips
from core.data.spoken_words import build_spoken_words, espeak_binary
from core.data.errors import DatasetUnavailable
from tests.conftest import TINY_PRETRAIN, make_settings, wait_for
from tests.e2e.test_text import wait_scanned

# a short CPU run: the small recipe's model without dropout, a smaller batch, a higher peak LR and a
# proportional warm-up
WAV2VEC2 = {"method": "wav2vec2", "dataset": "spoken-words", "scale": "small", "steps": 60, "batch_size": 16,
            "lr": 5e-3, "schedule_points": "proportional", "log_every": 20,
            "backbone_options": {"dropout": 0.0, "layerdrop": 0.0},
            "evaluations": [{"protocol": "knn", "options": {"k": [20]}}, {"protocol": "linear"}]}


@pytest.fixture
def service(tmp_path):
    """SQLite only: the audio path is the same on every backend (tests/e2e covers them)."""
    settings, _ = make_settings("sqlite", tmp_path / "home")
    from jobs.migrate import upgrade

    upgrade(settings.database_url)
    yield settings


@pytest.fixture
def spoken_words_home(service, monkeypatch):
    """The service's home holds spoken-words already synthesised (once per machine, in the user's
    cache), as after the first registration; the API process reads the same home."""
    try:
        espeak_binary()
    except DatasetUnavailable as exc:
        pytest.skip(str(exc))
    cache = Path(os.environ.get("DARKMATTER_TEST_CACHE", Path.home() / ".cache" / "darkmatter")) / "spoken-words"
    _, _, info = build_spoken_words(cache)
    folder = service.home / "spoken-words"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / Path(info["path"]).name).symlink_to(info["path"])
    monkeypatch.setenv("DARKMATTER_HOME", str(service.home))
    return service.home


def wav_base64(samples: np.ndarray, rate: int = 16_000) -> str:
    out = io.BytesIO()
    sf.write(out, samples, rate, format="WAV", subtype="PCM_16")
    return base64.b64encode(out.getvalue()).decode()


def wav_bytes(seconds: float, rate: int = 22_050, freq: float = 440.0) -> bytes:
    out = io.BytesIO()
    sf.write(out, 0.3 * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate), rate, format="WAV")
    return out.getvalue()


def scores_of(api, dataset_id: str, protocol: str) -> dict:
    rows = api.get("/v1/scores", params={"dataset": dataset_id, "protocol": protocol}).json()["data"]
    return {(r["checkpoint_id"] or r["baseline"], r["metric"]): r["value"] for r in rows}


def test_wav2vec2_on_spoken_words_beats_random_init_and_serves_its_embeddings(api, worker, spoken_words_home,
                                                                              tmp_path):
    w = worker()
    wrong_method = api.post("/v1/jobs", json={**TINY_PRETRAIN, "dataset": "spoken-words"})
    assert wrong_method.status_code == 422 and "image method" in wrong_method.text and "audio" in wrong_method.text
    wrong_data = api.post("/v1/jobs", json={**WAV2VEC2, "dataset": "digits"})
    assert wrong_data.status_code == 422 and "audio method" in wrong_data.text and "images" in wrong_data.text
    unused = api.post("/v1/jobs", json={**WAV2VEC2, "image_size": 32})
    assert unused.status_code == 422 and "not used by audio methods" in unused.text

    job = api.post("/v1/jobs", json=WAV2VEC2)
    assert job.status_code == 201, job.text
    done = wait_for(api, job.json()["id"], timeout=400)
    assert done["state"] == "succeeded", (done, w.output()[-3000:])
    assert done["step"] == 60 and "contrastive" in done["metrics"]
    checkpoint_id, dataset_id = done["result"]["checkpoint"], done["spec"]["dataset"]
    dataset = api.get(f"/v1/datasets/{dataset_id}").json()
    assert dataset["stats"]["modality"] == "audio" and (dataset["n_items"], dataset["n_test"]) == (1200, 240)

    evaluation = api.post("/v1/jobs", json={"kind": "evaluate", "dataset": dataset_id,
                                            "checkpoints": [checkpoint_id, "random-init", "mfcc"],
                                            "protocols": WAV2VEC2["evaluations"]})
    assert evaluation.status_code == 201, evaluation.text
    refused = api.post("/v1/jobs", json={"kind": "evaluate", "dataset": dataset_id, "checkpoint": "raw-pixels"})
    assert refused.status_code == 422 and "not an audio baseline" in refused.text
    evaluated = wait_for(api, evaluation.json()["id"], timeout=300)
    assert evaluated["state"] == "succeeded", (evaluated, w.output()[-3000:])
    linear, knn = scores_of(api, dataset_id, "linear"), scores_of(api, dataset_id, "knn")
    print("linear top1", {who: linear[(who, "top1")] for who in (checkpoint_id, "random-init", "mfcc")},
          "knn top1@k20", {who: knn[(who, "top1@k20")] for who in (checkpoint_id, "random-init", "mfcc")})
    assert linear[(checkpoint_id, "top1")] > linear[("random-init", "top1")], linear
    assert knn[(checkpoint_id, "top1@k20")] > knn[("random-init", "top1@k20")], knn
    assert linear[("mfcc", "top1")] > 10 / 30 and knn[("mfcc", "top1@k20")] > 3 / 30  # 30 words

    # voice identification on words never heard in training: the same checkpoint, spoken-voices
    voices = api.post("/v1/jobs", json={"kind": "evaluate", "dataset": "spoken-voices",
                                        "checkpoints": [checkpoint_id, "random-init", "mfcc"],
                                        "protocols": WAV2VEC2["evaluations"]})
    assert voices.status_code == 201, voices.text
    voiced = wait_for(api, voices.json()["id"], timeout=300)
    assert voiced["state"] == "succeeded", (voiced, w.output()[-3000:])
    by_voice = {who: values["linear"]["top1"] for who, values in voiced["result"]["scores"].items()}
    print("voices: linear top1", by_voice, "knn", {who: values["knn"]["top1@k20"]
                                                    for who, values in voiced["result"]["scores"].items()})
    assert min(by_voice.values()) > 1 / 12 and by_voice["mfcc"] > 3 / 12  # 12 voices: chance 0.083

    # /v1/embeddings of a WAV equals the downloaded backbone's forward on that clip
    (tmp_path / "b.safetensors").write_bytes(api.get(f"/v1/checkpoints/{checkpoint_id}/download").content)
    model, manifest = load_backbone(tmp_path / "b.safetensors")
    assert manifest["modality"] == "audio" and manifest["sample_rate"] == 16_000
    _, test, _ = build_spoken_words(spoken_words_home / "spoken-words")
    clips = [test.clip(0).numpy(), test.clip(7).numpy()]
    out = api.post("/v1/embeddings", json={"model": checkpoint_id, "input": [wav_base64(c) for c in clips]})
    assert out.status_code == 200, out.text
    assert out.json()["dimensions"] == manifest["feature_dim"] and out.json()["usage"]["inputs"] == 2
    with torch.no_grad():
        expected = torch.cat([model(from_clips([c], [0], []).padded(len(c))) for c in clips])
    assert torch.allclose(torch.tensor([d["embedding"] for d in out.json()["data"]]), expected, atol=1e-4)

    # bad inputs: 413 past the duration limit, 422 for what is not audio, across modalities too
    too_long = api.post("/v1/embeddings", json={"model": checkpoint_id,
                                                "input": [base64.b64encode(wav_bytes(31)).decode()]})
    assert too_long.status_code == 413 and "at most 30 s" in too_long.text
    for bad in (["a dog"], [base64.b64encode(b"RIFF....not a wav").decode()], [[[0, 255]]]):
        response = api.post("/v1/embeddings", json={"model": checkpoint_id, "input": bad})
        assert response.status_code == 422 and "embeds audio" in response.text, response.text
    image_job = wait_for(api, api.post("/v1/jobs", json=TINY_PRETRAIN).json()["id"])
    into_image = api.post("/v1/embeddings", json={"model": image_job["result"]["checkpoint"],
                                                  "input": [wav_base64(clips[0])]})
    assert into_image.status_code == 422 and "embeds images" in into_image.text
    cross = api.post("/v1/jobs", json={"kind": "evaluate", "dataset": dataset_id,
                                       "checkpoint": image_job["result"]["checkpoint"]})
    assert cross.status_code == 422 and "image model" in cross.text

    # an index of the test clips and neighbours of a WAV query
    index = api.post("/v1/jobs", json={"kind": "embed-index", "checkpoint": checkpoint_id, "dataset": dataset_id,
                                       "split": "test"})
    assert index.status_code == 201, index.text
    indexed = wait_for(api, index.json()["id"])
    assert indexed["state"] == "succeeded", (indexed, w.output()[-3000:])
    found = api.post("/v1/neighbors", json={"index": indexed["id"], "query": [wav_base64(clips[0]), 0], "k": 3})
    assert found.status_code == 200, found.text
    data = found.json()["data"]
    assert data[0]["neighbors"][0]["item"] == 0 and data[1]["neighbors"][0]["item"] == 0
    assert data[0]["neighbors"][0]["class"] == "zero"


def test_bad_audio_files_are_listed_and_an_upload_of_none_is_invalid(api, worker):
    worker()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for word, freq in (("low", 300), ("high", 900)):
            for i in range(5):
                zf.writestr(f"{word}/{i}.wav", wav_bytes(0.3 + 0.05 * i, freq=freq))
        zf.writestr("low/notes.wav", b"these are notes, not audio")
        zf.writestr("high/empty.wav", wav_bytes(0))
    uploaded = api.post("/v1/datasets", files={"file": ("clips.zip", archive.getvalue())})
    assert uploaded.status_code == 201, uploaded.text
    dataset = wait_scanned(api, uploaded.json()["id"])
    assert dataset["state"] == "ready", dataset
    stats = dataset["stats"]
    assert stats["modality"] == "audio" and stats["classes"] == ["high", "low"] and stats["original_rates"] == [22050]
    assert (dataset["n_items"], dataset["n_test"], dataset["n_classes"]) == (8, 2, 2)
    reasons = {bad["path"]: bad["reason"] for bad in stats["unreadable"]}
    assert reasons["high/empty.wav"] == "zero length" and "not readable audio" in reasons["low/notes.wav"]
    listed = {d["id"]: d for d in api.get("/v1/datasets").json()["data"]}
    assert listed[dataset["id"]]["stats"]["modality"] == "audio"
    picture = api.get(f"/v1/datasets/{dataset['id']}/items/0")
    assert picture.status_code == 422 and "holds audio" in picture.text

    job = api.post("/v1/jobs", json={**WAV2VEC2, "dataset": dataset["id"], "steps": 2, "batch_size": 4,
                                     "evaluations": [{"protocol": "knn", "options": {"k": [3]}}]})
    assert job.status_code == 201, job.text
    done = wait_for(api, job.json()["id"])
    assert done["state"] == "succeeded" and "knn" in done["result"]["scores"], done

    nothing = io.BytesIO()
    with zipfile.ZipFile(nothing, "w") as zf:
        zf.writestr("a/notes.wav", b"not audio")
        zf.writestr("a/empty.wav", wav_bytes(0))
    uploaded = api.post("/v1/datasets", files={"file": ("bad.zip", nothing.getvalue())})
    assert uploaded.status_code == 201, uploaded.text
    dataset = wait_scanned(api, uploaded.json()["id"])
    assert dataset["state"] == "invalid" and "no usable audio clip" in dataset["error"]
    assert "zero length" in dataset["error"]
