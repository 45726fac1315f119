"""Images kept at their aspect ratio at ingest (core/data/canvas.py) and crops cut inside each
item's valid region (core/augment/stored_crops.py): never squashed, never reading padding."""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from core.augment import ViewConfig, ViewMaker
from core.augment import stored_crops
from core.augment.ops import resized_crop_flip
from core.data.canvas import fit_short_side, training_side, valid_channel_stats
from core.data.files import load_npz
from core.data.scan import ScanOptions, scan_file
from tests.datasets.make import png
from workers.scan import run_scan

SHAPES = {"wide.png": (100, 120), "tall.png": (120, 100), "square.png": (90, 90), "long.png": (50, 150)}


def photo(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth RGB image with values in 20..200 (so a sentinel of 255 cannot hide among them)."""
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(0.02, 0.1, 2)
    base = 110 + 90 * np.sin(a * x + b * y)[..., None] * np.array([1.0, -0.5, 0.7])
    return base.clip(20, 200).astype(np.uint8)


def zipped(tmp_path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i, (name, (h, w)) in enumerate(SHAPES.items()):
            archive.writestr(f"train/c{i % 2}/{name}", png(photo(h, w, i), "RGB"))
    return buffer.getvalue()


def pil_keep_aspect(image: np.ndarray, short: int) -> np.ndarray:
    """The independent reference: PIL resize of the original keeping its aspect."""
    h, w = image.shape[:2]
    scale = short / min(h, w)
    size = (round(w * scale), round(h * scale))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR, reducing_gap=None))


def test_folder_of_mixed_aspects_is_stored_unsquashed(tmp_path):
    path = tmp_path / "m.zip"
    path.write_bytes(zipped(tmp_path))
    result = scan_file(path, "zip", ScanOptions(short_side=60))
    assert result.train.sizes is not None and result.test.sizes is not None
    data = type(result.train)(torch.cat([result.train.images, result.test.images]),
                              torch.cat([result.train.labels, result.test.labels]),
                              torch.cat([result.train.sizes, result.test.sizes]))
    stored = {tuple(s.tolist()) for s in data.sizes}
    # 100x120 -> 60x72, 120x100 -> 72x60, 90x90 -> 60x60; 50x150 keeps its central 4:3, 50x66 (never enlarged)
    assert stored == {(60, 72), (72, 60), (60, 60), (50, 66)}
    assert list(data.images.shape[2:]) == [72, 72] == result.stats["canvas"]
    assert result.stats["stored_short_side"] == 60 and result.stats["image_size"] == training_side(60) == 52
    assert result.stats["bytes_per_item"] == 3 * 72 * 72 + 4
    for i, (name, (h, w)) in enumerate(SHAPES.items()):
        if name == "long.png":
            continue
        expected = pil_keep_aspect(photo(h, w, i), 60)
        match = [k for k in range(len(data)) if tuple(data.sizes[k].tolist()) == expected.shape[:2]]
        assert len(match) == 1, name
        k = match[0]
        sh, sw = expected.shape[:2]
        np.testing.assert_array_equal(data.images[k, :, :sh, :sw].permute(1, 2, 0).numpy(), expected)
        assert int(data.images[k, :, sh:, :].sum() + data.images[k, :, :, sw:].sum()) == 0  # padding is empty
    mean, _ = valid_channel_stats(result.train.images, result.train.sizes)
    assert result.stats["mean"] == pytest.approx(mean)
    assert mean[0] > 0.3  # the padding's zeros are not counted


def test_wide_images_keep_their_central_four_to_three():
    image = photo(50, 150, 3)
    kept = fit_short_side(image, 60)
    assert kept.shape == (50, 66, 3)
    np.testing.assert_array_equal(kept, image[:, 42:108])


def test_upload_keeps_aspect_and_training_reads_the_sizes(client, small_service):
    response = client.post("/v1/datasets", files={"file": ("m.zip", zipped(None), "application/octet-stream")},
                           data={"short_side": "60", "test_fraction": "0.25"})
    assert response.status_code == 201, response.text
    assert run_scan(response.json()["id"], small_service) == "ready"
    ready = client.get(f"/v1/datasets/{response.json()['id']}").json()
    assert ready["stats"]["stored_short_side"] == 60 and ready["stats"]["image_size"] == 52
    assert ready["stats"]["bytes_per_item"] == 3 * 72 * 72 + 4
    from jobs.storage import store_for

    train, test = load_npz(str(store_for(small_service).local_path(ready["stats"]["prepared"])))
    assert train.sizes is not None and test.sizes is not None and len(train) + len(test) == 4
    both = torch.cat([train.sizes, test.sizes]).tolist()
    assert sorted(map(tuple, both)) == sorted([(60, 72), (72, 60), (60, 60), (50, 66)])


def test_image_size_and_short_side_together_are_refused(client):
    response = client.post("/v1/datasets", files={"file": ("m.zip", zipped(None), "application/octet-stream")},
                           data={"short_side": "60", "image_size": "32"})
    assert response.status_code == 422 and "not both" in response.text


def canvas_batch(pad_value: int) -> tuple[torch.Tensor, torch.Tensor]:
    shapes = [(40, 64), (64, 30), (48, 48)]
    canvas = torch.full((3, 3, 64, 64), pad_value, dtype=torch.uint8)
    for i, (h, w) in enumerate(shapes):
        canvas[i, :, :h, :w] = torch.from_numpy(photo(h, w, i)).permute(2, 0, 1)
    return canvas, torch.tensor(shapes)


def test_crop_of_the_whole_valid_region_is_the_resized_image():
    canvas, sizes = canvas_batch(255)
    x = canvas.float() / 255
    # area 1 and the region's own aspect: the crop is the whole valid region, squashed to 32 x 32
    out = stored_crops.region_resized_crop_flip(x, sizes, 32, (1.0, 1.0), (0.1, 10.0), 0.0, torch.Generator())
    for i, (h, w) in enumerate(sizes.tolist()):
        expected = F.interpolate(x[i : i + 1, :, :h, :w], size=(32, 32), mode="bilinear", align_corners=False)
        torch.testing.assert_close(out[i : i + 1], expected, atol=1e-5, rtol=0)


def test_square_regions_draw_as_the_square_crop():
    x = torch.rand(6, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    sizes = torch.full((6, 2), 24)
    a = stored_crops.region_resized_crop_flip(x, sizes, 16, (0.3, 1.0), (3 / 4, 4 / 3), 0.5,
                                              torch.Generator().manual_seed(3), trace=(ta := {}))
    b = resized_crop_flip(x, 16, (0.3, 1.0), (3 / 4, 4 / 3), 0.5, torch.Generator().manual_seed(3), trace=(tb := {}))
    for key in ("area", "aspect", "flip"):
        torch.testing.assert_close(ta[key], tb[key])
    # the same boxes; only the edge handling differs (border inside the region, reflection on the square)
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    assert (a[inner] - b[inner]).abs().mean() < 0.02


def test_views_never_read_the_padding():
    views = ViewMaker(ViewConfig.from_dict({"crops": [{"count": 4, "scale": [0.05, 1.0]}], "jitter_p": 0.0,
                                            "grayscale_p": 0.0}), [0.5] * 3, [0.25] * 3)
    outs = []
    for pad in (0, 255):
        canvas, sizes = canvas_batch(pad)
        with stored_crops.regions(sizes, 32):
            outs.append(views(canvas, torch.Generator().manual_seed(7)))
    for a, b in zip(*outs):
        assert a.shape == (3, 3, 32, 32)  # the training side, not the canvas's
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    assert max(float(v.max()) for v in outs[1]) < (200 / 255 - 0.5) / 0.25 + 1e-3  # nothing of the 255 sentinel


def test_eval_center_crops_come_from_the_valid_region():
    canvas, sizes = canvas_batch(255)
    crops = stored_crops.center_crops(canvas, sizes, 20, fraction=0.875)
    assert crops.shape == (3, 3, 20, 20) and int(crops.max()) <= 200
    h, w = 40, 64  # item 0: central 35 x 35 of a 40 x 64 image
    side = 40 * 0.875
    top, left = (h - side) / 2, (w - side) / 2
    x = canvas[:1].float()
    expected = F.interpolate(x[..., int(top) : int(top) + 35, int(left) : int(left) + 35], size=(20, 20),
                             mode="bilinear", align_corners=False)
    # the box starts half a pixel off the integer grid, so the reference is close, not exact
    assert (crops[:1].float() - expected).abs().mean() < 6


class Losses:
    def __init__(self):
        self.losses = {}

    def on_log(self, step, logs):
        self.losses[step] = logs["loss"]

    def should_stop(self, step):
        return None

    def on_checkpoint(self, step, state, final):
        pass


def test_training_on_a_canvas_never_sees_the_padding():
    """The loop cuts each step's crops inside the items' regions: the padding's value changes no loss."""
    from core.train import TrainConfig, train
    from tests.core.tiny import build_tiny

    rng = np.random.default_rng(0)
    shapes = [(20, 26), (26, 20), (20, 20), (22, 29)] * 8
    runs = []
    for pad in (0, 255):
        canvas = torch.full((len(shapes), 1, 29, 29), pad, dtype=torch.uint8)
        for i, (h, w) in enumerate(shapes):
            canvas[i, :, :h, :w] = torch.from_numpy(rng.integers(20, 200, (h, w), dtype=np.uint8)) if pad == 0 \
                else runs[0][1][i, :, :h, :w]
        method, recorder = build_tiny("simclr"), Losses()
        method.views.trace = []
        result = train(method, canvas, TrainConfig(steps=3, batch_size=16, log_every=1, seed=2), callbacks=recorder,
                       canvas=(torch.tensor(shapes), 16))
        assert result.reason == "completed"
        assert {record["size"] for record in method.views.trace} == {16}  # the training side, not the canvas's 29
        runs.append((recorder.losses, canvas))
    assert runs[0][0] == pytest.approx(runs[1][0], rel=1e-5)


def test_training_larger_than_the_stored_side_is_refused(client, small_service):
    response = client.post("/v1/datasets", files={"file": ("m.zip", zipped(None), "application/octet-stream")},
                           data={"short_side": "60", "test_fraction": "0.25"})
    assert run_scan(response.json()["id"], small_service) == "ready"
    job = client.post("/v1/jobs", json={"method": "simclr", "backbone": "small_cnn", "dataset": response.json()["id"],
                                        "image_size": 64, "steps": 2, "batch_size": 2})
    assert job.status_code == 422 and "stored images (shorter side 60 px)" in job.text


def test_aspect_dataset_pretrains_and_evaluates_on_a_worker(client, small_service):
    """Scan, pretrain with crops from the canvas, auto-eval on centre crops; items served unpadded."""
    from tests.conftest import TINY_PRETRAIN, WorkerProcess, wait_for

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(48):
            h, w = [(30, 40), (40, 30), (32, 32)][i % 3]
            image = photo(h, w, i) if i % 2 else 255 - photo(h, w, i)
            archive.writestr(f"c{i % 2}/{i}.png", png(image, "RGB"))
    dataset = client.post("/v1/datasets", files={"file": ("a.zip", buffer.getvalue(), "application/octet-stream")},
                          data={"short_side": "20"}).json()
    worker = WorkerProcess(small_service, name="aspect").start()
    try:
        from tests.datasets.test_training import wait_scanned

        ready = wait_scanned(client, dataset["id"])  # the worker scans it
        assert ready["stats"]["image_size"] == 18 and ready["stats"]["canvas"] == [27, 27]
        item = client.get(f"/v1/datasets/{dataset['id']}/items/0")
        assert item.status_code == 200
        assert min(Image.open(io.BytesIO(item.content)).size) == 20  # its valid region, not the 27 x 27 canvas
        job = client.post("/v1/jobs", json={**TINY_PRETRAIN, "dataset": dataset["id"], "batch_size": 16, "steps": 4})
        assert job.status_code == 201, job.text
        done = wait_for(client, job.json()["id"], timeout=180)
        assert done["state"] == "succeeded", (done, worker.output()[-3000:])
        checkpoint = client.get(f"/v1/checkpoints/{done['result']['checkpoint']}").json()
        assert checkpoint["manifest"]["input_size"] == [3, 18, 18]
        scores = client.get("/v1/scores", params={"dataset": dataset["id"]}).json()["data"]
        assert any(s["protocol"] == "knn" and s["checkpoint_id"] == checkpoint["id"] for s in scores)
    finally:
        worker.stop()


def test_images_smaller_than_the_short_side_are_not_enlarged(tmp_path):
    path = tmp_path / "small.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for i, (h, w) in enumerate([(16, 20), (20, 16), (16, 16)]):
            archive.writestr(f"{i}.png", png(photo(h, w, i), "RGB"))
    result = scan_file(path, "zip", ScanOptions(short_side=256, test_fraction=0.34))
    sizes = torch.cat([result.train.sizes, result.test.sizes]).tolist()
    assert sorted(map(tuple, sizes)) == [(16, 16), (16, 20), (20, 16)]
    assert result.stats["stored_short_side"] == 16 and result.stats["image_size"] == 14


def test_an_upload_of_non_square_images_keeps_their_aspect_by_default(client, small_service):
    """No image_size or short_side: the service's default short side (DARKMATTER_STORE_SHORT_SIDE, 256)
    applies because some images are not square; none is enlarged, so they keep their own sides."""
    assert small_service.store_short_side == 256
    response = client.post("/v1/datasets", files={"file": ("m.zip", zipped(None), "application/octet-stream")},
                           data={"test_fraction": "0.25"})
    assert response.status_code == 201, response.text
    assert run_scan(response.json()["id"], small_service) == "ready"
    stats = client.get(f"/v1/datasets/{response.json()['id']}").json()["stats"]
    # the median shorter side (100, 100, 90, 50), as no image reaches 256
    assert stats["stored_short_side"] == 95 and stats["image_size"] == training_side(95) == 83
    from jobs.storage import store_for

    train, test = load_npz(str(store_for(small_service).local_path(stats["prepared"])))
    both = torch.cat([train.sizes, test.sizes]).tolist()
    # 100x120 and 120x100 as they are, 90x90, and 50x150's central 4:3 (50x66)
    assert sorted(map(tuple, both)) == sorted([(100, 120), (120, 100), (90, 90), (50, 66)])


def square_zip(path, sides=(20, 20, 24)):
    with zipfile.ZipFile(path, "w") as archive:
        for i, side in enumerate(sides):
            archive.writestr(f"c{i % 2}/{i}.png", png(photo(side, side, i), "RGB"))


def test_square_images_and_declared_sizes_are_stored_square(tmp_path):
    path = tmp_path / "square.zip"
    square_zip(path)
    result = scan_file(path, "zip", ScanOptions(non_square_short_side=256, test_fraction=0.34))
    assert result.train.sizes is None and "stored_short_side" not in result.stats
    assert list(result.train.images.shape[2:]) == [20, 20]  # the most common side, as before
    mixed = tmp_path / "mixed.zip"
    mixed.write_bytes(zipped(None))
    declared = scan_file(mixed, "zip", ScanOptions(image_size=32, non_square_short_side=256, test_fraction=0.25))
    assert declared.train.sizes is None and list(declared.train.images.shape[2:]) == [32, 32]
    off = scan_file(mixed, "zip", ScanOptions(non_square_short_side=None, test_fraction=0.25))
    assert off.train.sizes is None and "stored_short_side" not in off.stats
