"""Dataset files are validated and described: formats, labels, splits, sizes, hashes, streams."""
from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import torch

from core.data import DatasetUnavailable
from core.data.archives import UnsafeArchive, check_archive, member_path
from core.data.scan import ScanOptions, check_file, format_from_name, scan_file
from core.data.webdataset import WebDatasetStream, expand_shards, local_opener, scan_shards
from tests.datasets.make import digits, digits_zip, png, shards, tar_with_link, zip_bomb, zip_symlink, zip_with


def test_class_folders_become_labels_and_a_seeded_split(tmp_path):
    result = scan_file(digits_zip(tmp_path / "d.zip", n=60), "zip")
    assert (result.n_items, result.n_test, result.n_classes) == (48, 12, 3)
    assert result.stats["classes"] == ["class_0", "class_1", "class_2"]
    assert result.stats["labelled"] and result.stats["image_size"] == 8 and result.stats["channels"] == 1
    images, labels = digits(60, 3)
    # the arrays are the PNGs' pixels, labels follow the folder names
    pixels = torch.cat([result.train.images, result.test.images]).flatten(1).numpy()
    assert sorted(map(bytes, pixels)) == sorted(map(bytes, images.reshape(60, -1)))
    assert sorted(torch.cat([result.train.labels, result.test.labels]).tolist()) == sorted(labels.tolist())
    train_pixels = result.train.images.double() / 255
    assert result.stats["mean"][0] == pytest.approx(float(train_pixels.mean()), rel=1e-5)
    assert result.stats["std"][0] == pytest.approx(float(train_pixels.std()), rel=1e-4)


def test_train_and_test_folders_are_the_split(tmp_path):
    result = scan_file(digits_zip(tmp_path / "d.zip", n=50, split_folders=True), "zip")
    assert (result.n_items, result.n_test) == (40, 10) and result.stats["split"] == "source"


def test_no_sub_folders_means_unlabelled_and_the_hash_is_stable(tmp_path):
    first = scan_file(digits_zip(tmp_path / "a.zip", n=20, labelled=False), "zip")
    again = scan_file(tmp_path / "a.zip", "zip")
    assert not first.stats["labelled"] and first.n_classes == 0
    assert first.content_hash == again.content_hash and len(first.content_hash) == 64


def test_tar_gz_rgb_and_mixed_sizes_are_resized(tmp_path):
    path = tmp_path / "m.tar.gz"
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        for i, (h, w) in enumerate([(8, 8), (8, 8), (12, 10), (16, 16)]):
            data = png(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), "RGB")
            info = tarfile.TarInfo(f"dogs/{i}.png")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    result = scan_file(path, "tar.gz", ScanOptions(image_size=12, test_fraction=0.25))
    assert result.train.images.shape[1:] == (3, 12, 12) and result.stats["resized"] == 4
    assert result.stats["sizes"] == {"8x8": 2, "10x12": 1, "16x16": 1} and result.stats["modes"] == {"RGB": 4}
    assert scan_file(path, "tar.gz").stats["image_size"] == 8  # default: the most common side


def test_non_images_are_listed_as_unreadable(tmp_path):
    path = zip_with(tmp_path / "u.zip", {"cats/0.png": png(np.zeros((8, 8), np.uint8)), "cats/notes.txt": b"hello"})
    result = scan_file(path, "zip", ScanOptions(test_fraction=0.5))
    assert result.stats["n_unreadable"] == 1 and result.stats["unreadable"][0]["path"] == "cats/notes.txt"
    with pytest.raises(DatasetUnavailable, match="no readable images"):
        scan_file(zip_with(tmp_path / "t.zip", {"a.txt": b"x"}), "zip")


@pytest.mark.parametrize("name", ["../evil.png", "a/../../evil.png", "/etc/evil.png", "C:/evil.png", "a\\..\\b.png"])
def test_member_paths_that_escape_are_refused(name):
    with pytest.raises(UnsafeArchive):
        member_path(name)


def test_links_and_bombs_are_refused(tmp_path):
    with pytest.raises(UnsafeArchive, match="symlink"):
        check_archive(zip_symlink(tmp_path / "s.zip"), "zip")
    with pytest.raises(UnsafeArchive, match="symlink"):
        check_archive(tar_with_link(tmp_path / "s.tar.gz"), "tar.gz")
    with pytest.raises(UnsafeArchive, match="hardlink"):
        check_archive(tar_with_link(tmp_path / "h.tar.gz", hard=True), "tar.gz")
    with pytest.raises(UnsafeArchive, match="bomb"):
        check_archive(zip_bomb(tmp_path / "b.zip"), "zip")


def test_magic_numbers_must_fit_the_format(tmp_path):
    path = tmp_path / "fake.zip"
    path.write_bytes(b"not a zip at all")
    with pytest.raises(DatasetUnavailable, match="bad magic"):
        check_file(path, "zip")
    assert format_from_name("x.tar.gz") == "tar.gz" and format_from_name("x.rar") is None


def test_npz_and_idx(tmp_path):
    images, labels = digits(30, 3)
    np.savez(tmp_path / "d.npz", x=images, y=labels)
    result = scan_file(tmp_path / "d.npz", "npz")
    assert result.n_items + result.n_test == 30 and result.n_classes == 3
    header = bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in images.shape)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(header + images.tobytes())
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + (30).to_bytes(4, "big")
                                                       + labels.astype(np.uint8).tobytes())
    result = scan_file(tmp_path / "train-images-idx3-ubyte", "idx")
    assert result.n_items + result.n_test == 30 and result.n_classes == 3


def test_text_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("first doc\n\nsecond doc here\nthird\n")
    result = scan_file(tmp_path / "a.txt", "txt")
    assert (result.n_items, result.n_test, result.stats["modality"]) == (2, 1, "text") and result.train is None
    lines = [json.dumps({"text": f"doc {i}", "label": ["pos", "neg"][i % 2]}) for i in range(10)]
    (tmp_path / "b.jsonl").write_text("\n".join(lines))
    result = scan_file(tmp_path / "b.jsonl", "jsonl")
    assert result.n_classes == 2 and result.stats["classes"] == ["neg", "pos"] and result.stats["labelled"]
    (tmp_path / "c.jsonl").write_text('{"text": "ok"}\n{"nope": 1}\n')
    with pytest.raises(DatasetUnavailable, match="line 2"):
        scan_file(tmp_path / "c.jsonl", "jsonl")
    (tmp_path / "e.txt").write_text("")
    with pytest.raises(DatasetUnavailable, match="empty"):
        scan_file(tmp_path / "e.txt", "txt")


def test_brace_patterns_expand():
    assert expand_shards("s-{000..002}.tar") == ["s-000.tar", "s-001.tar", "s-002.tar"]
    assert expand_shards("{a,b}/x-{1..2}.tar::c.tar") == ["a/x-1.tar", "a/x-2.tar", "b/x-1.tar", "b/x-2.tar", "c.tar"]


def test_webdataset_scan_and_stream_resume_exactly(tmp_path):
    paths = [str(p) for p in shards(tmp_path, n_shards=3, per_shard=20)]
    facts = scan_shards(paths, local_opener, None, 10**6)
    assert facts["n_items"] == 60 and facts["stats"]["image_size"] == 8 and facts["stats"]["labelled"]
    images, _ = digits(60, 10)
    assert facts["stats"]["mean"][0] == pytest.approx(images.mean() / 255, rel=1e-6)
    stream = WebDatasetStream(paths, 8, 1, shuffle_buffer=8)
    run = stream.batches(16, seed=3)
    batches = [next(run) for _ in range(8)]  # 128 samples: crosses two epoch boundaries
    resumed = next(stream.batches(16, seed=3, start_step=5))
    assert torch.equal(batches[5], resumed)
    first_epoch = torch.cat(batches[:3]).flatten(1)[:60]  # 48 + 12 samples of epoch 0 ...
    seen = {bytes(row.numpy()) for row in torch.cat(batches[:4]).flatten(1)[:60]}
    assert seen == {bytes(row) for row in images.reshape(60, -1)}  # ... are every sample exactly once
    assert not torch.equal(first_epoch, torch.from_numpy(images.reshape(60, -1)))  # and shuffled
    other = next(WebDatasetStream(paths, 8, 1, shuffle_buffer=8).batches(16, seed=4))
    assert not torch.equal(other, batches[0])


def test_a_local_folder_of_class_folders(tmp_path):
    images, labels = digits(20, 2)
    for i, (image, label) in enumerate(zip(images, labels)):
        (tmp_path / "pets" / f"c{label}").mkdir(parents=True, exist_ok=True)
        (tmp_path / "pets" / f"c{label}" / f"{i}.png").write_bytes(png(image))
    (tmp_path / "pets" / "c0" / "drawing.eps").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n")
    result = scan_file(tmp_path / "pets", "folder", ScanOptions(test_fraction=0.25))
    assert (result.n_items, result.n_test, result.n_classes) == (15, 5, 2)
    assert [u["path"] for u in result.stats["unreadable"]] == ["c0/drawing.eps"]  # never handed to Ghostscript
    assert result.content_hash == scan_file(tmp_path / "pets", "folder").content_hash
    (tmp_path / "pets" / "c1" / "escape.png").symlink_to("/etc/passwd")
    with pytest.raises(UnsafeArchive, match="symlink"):
        scan_file(tmp_path / "pets", "folder")
