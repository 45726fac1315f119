"""Validate and describe a dataset file: formats, magic numbers, counts, classes, sizes, modes,
channel mean/std and a content hash (sha256 of the bytes, so the same file always hashes alike)."""
from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from core.data.archives import ARCHIVE_FORMATS, Limits, UnsafeArchive, check_archive, check_zip_entries, iter_members
from core.data.arrays import ArrayDataset, split_by_fraction
from core.data.errors import DatasetUnavailable
from core.data.files import as_images
from core.data.idx import parse_idx
from core.data.audio import AUDIO_SUFFIXES, scan_audio
from core.data.images import MAX_UNREADABLE_LISTED, collect
from core.data.text import TEXT_FORMATS, describe_text, read_text
from core.modalities import AUDIO, IMAGE, TEXT

FILE_FORMATS = (*ARCHIVE_FORMATS, "npz", "idx", *TEXT_FORMATS)
FOLDER_FORMAT = "folder"  # a local directory of images (registered by path, never uploaded)
_SUFFIXES = ((".tar.gz", "tar.gz"), (".tgz", "tar.gz"), (".zip", "zip"), (".tar", "tar"), (".npz", "npz"),
             (".jsonl", "jsonl"), (".txt", "txt"), (".idx", "idx"), ("-ubyte", "idx"), ("-ubyte.gz", "idx"))


@dataclass
class ScanOptions:
    image_size: int | None = None  # resize every image to this side; default: the most common side
    short_side: int | None = None  # instead keep each image's aspect, its shorter side this long (core/data/canvas.py)
    # without either: keep the aspect, shorter side this long, where some image is not square (nothing to
    # squash otherwise); None: squash those too
    non_square_short_side: int | None = None
    test_fraction: float = 0.2  # used when the source has no test/ folder
    seed: int = 0
    limits: Limits = field(default_factory=Limits)


@dataclass
class ScanResult:
    n_items: int
    n_test: int
    n_classes: int
    content_hash: str
    stats: dict
    train: ArrayDataset | None = None  # None for text
    test: ArrayDataset | None = None
    arrays: dict | None = None  # what is stored as the prepared .npz when not the image arrays (audio)


def format_from_name(filename: str) -> str | None:
    lower = filename.lower()
    for suffix, fmt in _SUFFIXES:
        if lower.endswith(suffix):
            return fmt
    return None


def looks_like(fmt: str, head: bytes) -> bool:
    """Whether the first bytes of a file fit the format (checked before anything is parsed)."""
    if fmt in ("zip", "npz"):
        return head[:4] in (b"PK\x03\x04", b"PK\x05\x06")
    if fmt == "tar.gz":
        return head[:2] == b"\x1f\x8b"
    if fmt == "tar":
        return head[257:262] == b"ustar" or (len(head) >= 512 and not any(head[:512]))
    if fmt == "idx":
        return head[:2] == b"\x1f\x8b" or (len(head) >= 4 and head[:2] == b"\0\0" and head[2] in (8, 9, 11, 12, 13, 14))
    if fmt in TEXT_FORMATS:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as exc:
            return exc.start >= len(head) - 3  # a multi-byte character cut by the head's end
        return True
    return False


def _check_magic(path: str | Path, fmt: str) -> None:
    if fmt not in FILE_FORMATS:
        raise DatasetUnavailable(f"unknown format {fmt!r}; choose one of {', '.join(FILE_FORMATS)}")
    with open(path, "rb") as f:
        head = f.read(1024)
    if not looks_like(fmt, head):
        raise DatasetUnavailable(f"the file does not look like {fmt} (bad magic number)")


def check_file(path: str | Path, fmt: str, limits: Limits = Limits()) -> None:
    """The scan's check of a file: its format and magic number, and an archive's members (paths,
    links, sizes, bombs)."""
    _check_magic(path, fmt)
    if fmt in ARCHIVE_FORMATS or fmt == "npz":
        check_archive(path, "zip" if fmt == "npz" else fmt, limits)


def check_upload(path: str | Path, fmt: str, limits: Limits = Limits()) -> None:
    """What the upload endpoint checks in the API process, in time independent of the archive's
    contents: the format, the magic number, and a zip's entry count from its last record. Members
    are listed (paths, links, sizes, bombs) by the scan, in its capped child process."""
    _check_magic(path, fmt)
    if fmt in ("zip", "npz"):
        check_zip_entries(path, limits)


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _image_result(train: ArrayDataset, test: ArrayDataset, digest: str, facts: dict) -> ScanResult:
    from core.data.canvas import bytes_per_item, valid_channel_stats

    mean, std = train.channel_stats() if train.sizes is None else valid_channel_stats(train.images, train.sizes)
    n_classes = max(train.num_classes, test.num_classes)
    stats = {"modality": IMAGE, "mean": mean, "std": std, "channels": train.channels,
             "image_size": train.image_size, "labelled": bool((train.labels >= 0).any()),
             "bytes_per_item": bytes_per_item(train.channels, *train.images.shape[2:], train.sizes is not None),
             **facts}
    return ScanResult(len(train), len(test), n_classes, digest, stats, train, test)


def _read_idx_capped(path: Path, limits: Limits) -> np.ndarray:
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    opener = gzip.open if gz else open
    with opener(path, "rb") as f:
        raw = f.read(limits.max_member_bytes + 1)
    if len(raw) > limits.max_member_bytes:
        raise DatasetUnavailable(f"IDX file expands past {limits.max_member_bytes} bytes")
    try:
        return parse_idx(raw).copy()  # writable, owned by the array
    except ValueError as exc:
        raise DatasetUnavailable(str(exc)) from exc


def _scan_idx(path: Path, options: ScanOptions) -> tuple[ArrayDataset, ArrayDataset, dict]:
    """A single images IDX file (unlabelled), or a folder of MNIST-style *images*/*labels* pairs."""
    def part(images_file: Path) -> ArrayDataset:
        images = _read_idx_capped(images_file, options.limits)
        labels_file = images_file.with_name(images_file.name.replace("images", "labels").replace("idx3", "idx1"))
        labels = np.full(len(images), -1, dtype=np.int64)
        if labels_file != images_file and labels_file.exists():
            labels = _read_idx_capped(labels_file, options.limits).astype(np.int64)
            if len(labels) != len(images):
                raise DatasetUnavailable(f"{labels_file.name} has {len(labels)} labels for {len(images)} images")
        return ArrayDataset(as_images(images), torch.from_numpy(labels))

    if path.is_dir():
        files = sorted(p for p in path.iterdir() if "images" in p.name and "idx" in p.name)
        train_files = [p for p in files if not p.name.startswith(("t10k", "test"))]
        test_files = [p for p in files if p.name.startswith(("t10k", "test"))]
        if len(train_files) != 1:
            raise DatasetUnavailable("an IDX folder needs one *images-idx* training file (and optionally t10k-/test-)")
        train = part(train_files[0])
        if test_files:
            return train, part(test_files[0]), {"split": "source"}
    else:
        train = part(path)
    train, test = split_by_fraction(train, options.test_fraction, options.seed)
    return train, test, {"split": f"seeded fraction {options.test_fraction} (seed {options.seed})"}


def _folder_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(item.relative_to(path)).encode() + b"\0" + bytes.fromhex(file_sha256(item)))
    return digest.hexdigest()


def iter_folder(root: Path, limits: Limits):
    """(relative path, bytes) for the files under root, in sorted order; links are refused."""
    total = 0
    for item in sorted(root.rglob("*")):
        if item.is_symlink():
            raise UnsafeArchive(f"{item.relative_to(root)} is a symlink")
        if not item.is_file():
            continue
        size = item.stat().st_size
        total += size
        if size > limits.max_member_bytes or total > limits.max_total_bytes:
            raise UnsafeArchive(f"the folder is larger than the limits ({item.relative_to(root)})")
        yield item.relative_to(root).as_posix(), item.read_bytes()


def scan_file(path: str | Path, fmt: str, options: ScanOptions = ScanOptions()) -> ScanResult:
    """Read and describe a local dataset file (or an IDX folder) with its modality's scanner;
    raises DatasetUnavailable with the reason when it is not a usable dataset."""
    path = Path(path)
    if not path.exists():
        raise DatasetUnavailable(f"no such file: {path}")
    return SCANNERS[modality_of(path, fmt, options.limits)](path, fmt, options)


def modality_of(path: Path, fmt: str, limits: Limits) -> str:
    """A file format's modality (FORMAT_MODALITIES); an archive or folder holds audio when most of
    its files (OS metadata aside) are .wav/.flac, images otherwise. Archive headers only are read."""
    if fmt in FORMAT_MODALITIES:
        return FORMAT_MODALITIES[fmt]
    if fmt in ARCHIVE_FORMATS:
        _check_magic(path, fmt)  # then only the headers: links, sizes and counts are checked as they are listed
        names = [name for name, _ in iter_members(path, fmt, limits, read=False)]
    elif fmt == FOLDER_FORMAT and path.is_dir():
        names = [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file() and not p.is_symlink()]
    else:
        return IMAGE
    names = [n for n in names if not (n.rsplit("/", 1)[-1].startswith(".") or "__MACOSX/" in n)]
    audio = sum(n.lower().endswith(AUDIO_SUFFIXES) for n in names)
    return AUDIO if names and 2 * audio > len(names) else IMAGE


def scan_image_file(path: Path, fmt: str, options: ScanOptions) -> ScanResult:
    if fmt == "idx":
        train, test, facts = _scan_idx(path, options)
        digest = _folder_sha256(path) if path.is_dir() else file_sha256(path)
        train, test = _resized(train, options), _resized(test, options)
        return _image_result(train, test, digest, facts)
    if fmt == FOLDER_FORMAT:
        if not path.is_dir():
            raise DatasetUnavailable(f"not a folder: {path}")
        found = collect(iter_folder(path, options.limits), options.limits.max_pixels)
        train, test, facts = found.build(options.image_size, options.test_fraction, options.seed, options.short_side,
                                      options.non_square_short_side)
        return _image_result(train, test, _folder_sha256(path), facts)
    check_file(path, fmt, options.limits)
    digest = file_sha256(path)
    if fmt == "npz":
        from core.data.files import load_npz

        train, test = load_npz(str(path))
        train, test = _resized(train, options), _resized(test, options)
        return _image_result(train, test, digest, {"split": "source" if len(test) else "seeded fraction 0.2 (seed 0)"})
    found = collect(iter_members(path, fmt, options.limits), options.limits.max_pixels)
    train, test, facts = found.build(options.image_size, options.test_fraction, options.seed, options.short_side,
                                      options.non_square_short_side)
    return _image_result(train, test, digest, facts)


def scan_text_file(path: Path, fmt: str, options: ScanOptions) -> ScanResult:
    check_file(path, fmt, options.limits)
    digest = file_sha256(path)
    data = read_text(path, fmt)
    facts = describe_text(data, options.test_fraction, options.seed)
    counts = {k: facts.pop(k) for k in ("n_items", "n_test", "n_classes")}
    return ScanResult(counts["n_items"], counts["n_test"], counts["n_classes"], digest, facts)


def scan_audio_file(path: Path, fmt: str, options: ScanOptions) -> ScanResult:
    """A folder or archive of WAV/FLAC clips, labelled by their folder (core.data.audio.scan_audio):
    split by train/ and test/ folders when there are, else by a seeded stratified fraction;
    unreadable files are listed with their reason and skipped."""
    if fmt == FOLDER_FORMAT:
        files, digest = iter_folder(path, options.limits), _folder_sha256(path)
    else:
        check_file(path, fmt, options.limits)
        files, digest = iter_members(path, fmt, options.limits), file_sha256(path)
    kept = ((name, data) for name, data in files
            if not (name.rsplit("/", 1)[-1].startswith(".") or "__MACOSX/" in name))
    found = scan_audio(kept)
    is_test = torch.tensor([name.split("/", 1)[0].lower() == "test" for name in found.paths])
    data = found.data
    if bool(is_test.any()) and not bool(is_test.all()):
        train, test = data.subset((~is_test).nonzero().squeeze(1)), data.subset(is_test.nonzero().squeeze(1))
        split = "source"
    elif len(data) >= 2:
        train, test = split_by_fraction(data, options.test_fraction, options.seed)
        split = f"seeded fraction {options.test_fraction} (seed {options.seed})"
    else:
        train, test, split = data, data.subset([]), "none (one clip)"
    train.classes = test.classes = data.classes
    stats = {**found.stats, "split": split, "unreadable": found.bad_files[:MAX_UNREADABLE_LISTED],
             "n_unreadable": len(found.bad_files)}
    arrays = {}
    for prefix, part in (("", train), ("test_", test)):
        arrays.update({f"{prefix}samples": part.samples.numpy(), f"{prefix}offsets": part.offsets.numpy(),
                       f"{prefix}labels": part.labels.numpy()})
    return ScanResult(len(train), len(test), len(data.classes), digest, stats, arrays=arrays)


# a file format's modality (archives and folders: modality_of; any other holds images), and each
# modality's scanner
FORMAT_MODALITIES = {fmt: TEXT for fmt in TEXT_FORMATS}
SCANNERS = {IMAGE: scan_image_file, TEXT: scan_text_file, AUDIO: scan_audio_file}


def _resized(data: ArrayDataset, options: ScanOptions) -> ArrayDataset:
    from core.data.transforms import resize

    return resize(data, options.image_size) if options.image_size else data
