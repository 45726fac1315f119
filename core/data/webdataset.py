"""WebDataset .tar shards streamed sample by sample (https://github.com/webdataset/webdataset
conventions: files sharing a key up to the first dot form one sample, e.g. 0001.png + 0001.cls).

Nothing is loaded whole: shards are read as streams, a seeded shuffle buffer mixes samples, and a
position is replayable from (seed, step), so a resumed run sees the batches an uninterrupted run
would have seen."""
from __future__ import annotations

import hashlib
import io
import random
import re
import tarfile
from typing import Callable, Iterator

import numpy as np
import torch

from core.data.archives import UnsafeArchive, member_path
from core.data.arrays import ArrayDataset, DatasetUnavailable
from core.data.images import IMAGE_SUFFIXES, MAX_SIDE, UnreadableImage, decode, resize_array
from core.seeds import step_seed

_BRACE = re.compile(r"\{([^{}]*)\}")
Opener = Callable[[str], io.BufferedIOBase]


def count_shards(spec: str | list[str]) -> int:
    """How many names `expand_shards` gives, counted without expanding (a service checks this
    against its limit first: `{0..99999}{0..99999}` is 10^10 names)."""
    total = 0
    for pattern in spec if isinstance(spec, list) else spec.split("::"):
        names = 1
        for match in _BRACE.finditer(pattern):
            body = match.group(1)
            lo, _, hi = body.partition("..")
            if hi and lo.isdigit() and hi.isdigit():
                names *= max(1, int(hi) - int(lo) + 1)
            else:
                names *= len(body.split(","))
        total += names
    return total


def expand_shards(spec: str | list[str]) -> list[str]:
    """`shard-{000..009}.tar`, `{a,b}.tar`, several patterns joined by `::`, or a list."""
    patterns = spec if isinstance(spec, list) else spec.split("::")
    out: list[str] = []
    for pattern in patterns:
        match = _BRACE.search(pattern)
        if match is None:
            out.append(pattern)
            continue
        body, head, tail = match.group(1), pattern[: match.start()], pattern[match.end():]
        if ".." in body:
            lo, hi = body.split("..", 1)
            if not (lo.isdigit() and hi.isdigit()) or int(hi) < int(lo) or int(hi) - int(lo) > 100_000:
                raise DatasetUnavailable(f"bad shard range {{{body}}}")
            options = [str(i).zfill(len(lo)) for i in range(int(lo), int(hi) + 1)]
        else:
            options = body.split(",")
        out.extend(expand_shards([head + o + tail for o in options]))
    return out


def local_opener(url: str):
    return open(url.removeprefix("file://"), "rb")


def fsspec_opener(storage_options: dict | None = None) -> Opener:
    def open_url(url: str):
        if "://" not in url or url.startswith("file://"):
            return local_opener(url)
        import fsspec

        return fsspec.open(url, "rb", **(storage_options or {})).open()

    return open_url


class HashingReader(io.RawIOBase):
    """Passes reads through and hashes what went by (the content hash of a streamed shard)."""

    def __init__(self, raw, digest):
        self.raw, self.digest = raw, digest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.raw.read(len(buffer))
        buffer[: len(data)] = data
        self.digest.update(data)
        return len(data)


def iter_samples(stream, max_member_bytes: int = 256 * 1024 * 1024) -> Iterator[dict]:
    """Group a tar stream's files into samples {'__key__': ..., ext: bytes}."""
    current: dict | None = None
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as archive:
            for info in archive:
                if info.issym() or info.islnk():
                    raise UnsafeArchive(f"shard member {info.name!r} is a link")
                if not info.isfile():
                    continue
                path = member_path(info.name)
                if info.size > max_member_bytes:
                    raise UnsafeArchive(f"shard member {path!r} is {info.size} bytes (limit {max_member_bytes})")
                folder, _, base = path.rpartition("/")
                stem, dot, ext = base.partition(".")
                if not dot or stem == "":
                    continue
                key = f"{folder}/{stem}" if folder else stem
                if current is not None and current["__key__"] != key:
                    yield current
                    current = None
                current = current or {"__key__": key}
                current[ext.lower()] = archive.extractfile(info).read()
    except tarfile.TarError as exc:
        raise DatasetUnavailable(f"shard is not a readable tar: {exc}") from exc
    if current is not None:
        yield current


def sample_image(sample: dict) -> bytes | None:
    for ext in (s.lstrip(".") for s in IMAGE_SUFFIXES):
        if ext in sample:
            return sample[ext]
    return None


def sample_label(sample: dict) -> int:
    raw = sample.get("cls", sample.get("label"))
    if raw is None:
        return -1
    try:
        return int(raw.decode().strip())
    except ValueError:
        return -1


def to_chw(image: np.ndarray, size: int, channels: int) -> np.ndarray:
    image = resize_array(image, size)
    if image.shape[2] != channels:
        image = np.repeat(image, channels, axis=2) if channels == 3 else image.mean(2, keepdims=True).round().astype(np.uint8)
    return image.transpose(2, 0, 1)


class WebDatasetStream:
    """An endless, seeded stream of uint8 batches (B, C, size, size) over a list of shards.

    Each sample with an image has a dataset index, the same in every epoch: its position in the
    shard listing (the samples of the shards before it, then its place in its shard). `shard_items`
    (the scan's count per shard) gives the offsets; without it they are counted on first use."""

    def __init__(self, shards: list[str], image_size: int, channels: int, opener: Opener = local_opener,
                 shuffle_buffer: int = 1000, max_pixels: int = 40_000_000, shard_items: list[int] | None = None):
        if not shards:
            raise DatasetUnavailable("no shards")
        if shard_items is not None and len(shard_items) != len(shards):
            raise ValueError(f"{len(shard_items)} shard counts for {len(shards)} shards")
        self.shards, self.image_size, self.channels = shards, image_size, channels
        self.opener, self.shuffle_buffer, self.max_pixels = opener, shuffle_buffer, max_pixels
        self.shard_items = shard_items
        self.first_index: list[int] | None = None  # each shard's first dataset index (a rank's share: global ones)
        self.total: int | None = None

    def _offsets(self) -> list[int]:
        if self.first_index is None:
            if self.shard_items is None:
                self.shard_items = [count_items(self.opener, shard) for shard in self.shards]
            self.first_index = [sum(self.shard_items[:i]) for i in range(len(self.shards))]
            self.total = sum(self.shard_items)
        return self.first_index

    @property
    def n_items(self) -> int:
        """Samples with an image in all the shards (unreadable ones included: they keep an index)."""
        self._offsets()
        return self.total

    def raw_samples(self, seed: int, indexed: bool = False) -> Iterator[tuple[bytes, int, int]]:
        """(image bytes, label, dataset index) forever: epoch e reads the shards in a seeded order
        through a seeded shuffle buffer; samples without an image are skipped. The index is -1
        unless `indexed` (which counts the shards once, when the scan has not)."""
        first = self._offsets() if indexed else [-1] * len(self.shards)
        epoch = 0
        while True:
            rng = random.Random(step_seed(seed, epoch, stream=2))
            order = list(range(len(self.shards)))
            rng.shuffle(order)
            buffer: list[tuple[bytes, int, int]] = []
            produced = False
            for shard_index in order:
                position = first[shard_index]
                with self.opener(self.shards[shard_index]) as stream:
                    for sample in iter_samples(stream):
                        image = sample_image(sample)
                        if image is None:
                            continue
                        buffer.append((image, sample_label(sample), position))
                        position += 1 if indexed else 0
                        if len(buffer) >= self.shuffle_buffer:
                            produced = True
                            yield buffer.pop(rng.randrange(len(buffer)))
            rng.shuffle(buffer)
            produced = produced or bool(buffer)
            yield from buffer
            if not produced:
                raise DatasetUnavailable("the shards hold no images")
            epoch += 1

    def batches(self, batch_size: int, seed: int, start_step: int = 0, rank: int = 0,
                world: int = 1, with_indices: bool = False) -> Iterator[torch.Tensor]:
        """Batches from step `start_step` on; earlier samples are skipped without decoding. With
        `with_indices`, (batch, (B,) int64 dataset indices) pairs.

        With world > 1, this rank's batches of `batch_size` (its share of the global batch): the
        shards are split by rank (rank r reads shards r, r + world, ..., each shard read by one
        rank, with its own seeded shuffle) when there are at least `world` of them; with fewer,
        every rank reads the global stream and decodes only its own slice of each batch. Resume is
        exact at the same world size; another world size re-splits the shards."""
        if world > 1 and len(self.shards) >= world:
            mine = WebDatasetStream(self.shards[rank::world], self.image_size, self.channels, self.opener,
                                    self.shuffle_buffer, self.max_pixels)
            if with_indices:  # indices of the whole listing, not of this rank's share
                mine.first_index, mine.total = self._offsets()[rank::world], self.total
            yield from mine.batches(batch_size, step_seed(seed, rank, stream=6), start_step, with_indices=with_indices)
            return
        if world > 1:
            yield from self._sliced(batch_size, seed, start_step, rank, world, with_indices)
            return
        samples = self.raw_samples(seed, with_indices)
        for _ in range(start_step * batch_size):
            next(samples)
        while True:
            batch = np.empty((batch_size, self.channels, self.image_size, self.image_size), dtype=np.uint8)
            indices = np.empty(batch_size, dtype=np.int64)
            filled = 0
            while filled < batch_size:
                data, _, index = next(samples)
                try:
                    image, _ = decode(data, self.max_pixels)
                except UnreadableImage:
                    continue  # reported by the scan; skipped in training
                batch[filled], indices[filled] = to_chw(image, self.image_size, self.channels), index
                filled += 1
            yield (torch.from_numpy(batch), torch.from_numpy(indices)) if with_indices else torch.from_numpy(batch)


    def _sliced(self, batch_size: int, seed: int, start_step: int, rank: int, world: int,
                with_indices: bool = False) -> Iterator[torch.Tensor]:
        """This rank's rows rank*batch_size.. of each global batch, decoding no other rank's
        samples. An unreadable sample (reported by the scan) repeats the rank's previous image
        (and index), so that every rank stays aligned on the global stream."""
        samples = self.raw_samples(seed, with_indices)
        for _ in range(start_step * batch_size * world):
            next(samples)
        previous = np.zeros((self.channels, self.image_size, self.image_size), dtype=np.uint8)
        previous_index = 0
        while True:
            raw = [next(samples) for _ in range(batch_size * world)][rank * batch_size:(rank + 1) * batch_size]
            batch = np.empty((batch_size, self.channels, self.image_size, self.image_size), dtype=np.uint8)
            indices = np.empty(batch_size, dtype=np.int64)
            for i, (data, _, index) in enumerate(raw):
                try:
                    image, _ = decode(data, self.max_pixels)
                    previous, previous_index = to_chw(image, self.image_size, self.channels), index
                except UnreadableImage:
                    pass
                batch[i], indices[i] = previous, previous_index
            yield (torch.from_numpy(batch), torch.from_numpy(indices)) if with_indices else torch.from_numpy(batch)


def count_items(opener: Opener, shard: str) -> int:
    """Samples with an image in one shard (a read of the tar stream, no decoding)."""
    with opener(shard) as stream:
        return sum(sample_image(sample) is not None for sample in iter_samples(stream))


def head_sample(stream: WebDatasetStream, n: int) -> ArrayDataset:
    """The first n readable samples in shard order (no shuffle): a bounded, labelled sample that
    evaluation can hold in memory."""
    images, labels = [], []
    for shard in stream.shards:
        with stream.opener(shard) as raw:
            for sample in iter_samples(raw):
                data = sample_image(sample)
                if data is None:
                    continue
                try:
                    image, _ = decode(data, stream.max_pixels)
                except UnreadableImage:
                    continue
                images.append(to_chw(image, stream.image_size, stream.channels))
                labels.append(sample_label(sample))
                if len(images) == n:
                    break
        if len(images) == n:
            break
    if not images:
        raise DatasetUnavailable("the shards hold no readable images")
    return ArrayDataset(torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.int64))


def scan_shards(shards: list[str], opener: Opener, image_size: int | None, max_pixels: int) -> dict:
    """One streaming pass: counts, classes, sizes, modes, channel mean/std, content hash."""
    from collections import Counter

    digest = hashlib.sha256()
    sizes, modes, labels = Counter(), Counter(), Counter()
    unreadable, n_unreadable, n = [], 0, 0
    shard_items = []  # samples with an image per shard, unreadable ones included (the stream's dataset indices)
    sums = {1: np.zeros(1), 3: np.zeros(3)}
    squares = {1: np.zeros(1), 3: np.zeros(3)}
    pixels = {1: 0, 3: 0}
    for shard in shards:
        digest.update(shard.rsplit("/", 1)[-1].encode() + b"\0")
        shard_items.append(0)
        with opener(shard) as raw:
            stream = io.BufferedReader(HashingReader(raw, digest))
            for sample in iter_samples(stream):
                data = sample_image(sample)
                if data is None:
                    continue
                shard_items[-1] += 1
                try:
                    image, mode = decode(data, max_pixels)
                except UnreadableImage as exc:
                    n_unreadable += 1
                    if len(unreadable) < 100:
                        unreadable.append({"path": f"{shard}#{sample['__key__']}", "reason": str(exc)})
                    continue
                n += 1
                labels[sample_label(sample)] += 1
                sizes[f"{image.shape[1]}x{image.shape[0]}"] += 1
                modes[mode] += 1
                c = image.shape[2]
                flat = image.reshape(-1, c) / 255.0
                sums[c] += flat.sum(0)
                squares[c] += (flat**2).sum(0)
                pixels[c] += len(flat)
            stream.read()  # hash the tail (tar padding) too
    if n == 0:
        raise DatasetUnavailable("the shards hold no readable images"
                                 + (f" ({n_unreadable} unreadable)" if n_unreadable else ""))
    channels = 3 if pixels[3] else 1
    total = pixels[1] + pixels[3]
    s = sums[3] + sums[1] if channels == 3 else sums[1]
    q = squares[3] + squares[1] if channels == 3 else squares[1]
    mean = s / total
    std = np.sqrt(np.maximum(q / total - mean**2, 1e-6))
    if image_size is None:
        (w, h) = max(sizes.items(), key=lambda kv: kv[1])[0].split("x")
        image_size = min(max(int(w), int(h)), MAX_SIDE)
    classes = sorted(k for k in labels if k >= 0)
    return {"n_items": n, "n_classes": (max(classes) + 1) if classes else 0, "content_hash": digest.hexdigest(),
            "stats": {"mean": mean.tolist(), "std": std.tolist(), "channels": channels, "image_size": image_size,
                      "labelled": bool(classes), "classes": [str(c) for c in classes], "sizes": dict(sizes),
                      "modes": dict(modes), "unreadable": unreadable, "n_unreadable": n_unreadable,
                      "shards": shards, "shard_items": shard_items, "streamed": True, "split": "none (all shards train)"}}


def write_shards(images: np.ndarray, folder, per_shard: int, labels: np.ndarray | None = None,
                 prefix: str = "shard") -> list[str]:
    """Write uint8 images (N, H, W) or (N, H, W, C) as WebDataset shards of PNGs, `prefix-000.tar`,
    ...; with `labels`, each sample also gets a `.cls`; without, the shards hold images only (an
    uncurated, unlabelled collection). Returns the shard paths."""
    from pathlib import Path

    from PIL import Image

    folder = Path(folder)
    paths = []
    for start in range(0, len(images), per_shard):
        path = folder / f"{prefix}-{start // per_shard:03d}.tar"
        with tarfile.open(path, "w") as tar:
            for i in range(start, min(start + per_shard, len(images))):
                buffer = io.BytesIO()
                Image.fromarray(images[i]).save(buffer, format="PNG")
                members = [("png", buffer.getvalue())]
                if labels is not None:
                    members.append(("cls", str(int(labels[i])).encode()))
                for ext, data in members:
                    info = tarfile.TarInfo(f"{i:06d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        paths.append(str(path))
    return paths
