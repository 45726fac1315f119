"""Tiny real dataset files built from sklearn's digits: PNG archives, shards, bad archives."""
from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


def digits(n: int = 200, classes: int = 3):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    keep = np.nonzero(bunch.target < classes)[0][:n]
    images = np.round(bunch.images[keep] * (255 / 16)).astype(np.uint8)
    return images, bunch.target[keep]


def png(image: np.ndarray, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


def digits_zip(path: Path, n: int = 200, classes: int = 3, split_folders: bool = False, labelled: bool = True) -> Path:
    images, labels = digits(n, classes)
    with zipfile.ZipFile(path, "w") as archive:
        for i, (image, label) in enumerate(zip(images, labels)):
            folder = f"class_{label}/" if labelled else ""
            if split_folders:
                folder = ("test/" if i % 5 == 0 else "train/") + folder
            archive.writestr(f"{folder}{i:04d}.png", png(image))
    return path


def shards(folder: Path, n_shards: int = 3, per_shard: int = 40) -> list[Path]:
    images, labels = digits(n_shards * per_shard, 10)
    paths = []
    for s in range(n_shards):
        path = folder / f"shard-{s:03d}.tar"
        with tarfile.open(path, "w") as tar:
            for i in range(s * per_shard, (s + 1) * per_shard):
                for ext, data in (("png", png(images[i])), ("cls", str(int(labels[i])).encode())):
                    info = tarfile.TarInfo(f"{i:05d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        paths.append(path)
    return paths


def zip_with(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return path


def zip_symlink(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        info = zipfile.ZipInfo("cats/link.png")
        info.external_attr = (0o120777 << 16)
        archive.writestr(info, "/etc/passwd")
    return path


def tar_with_link(path: Path, hard: bool = False) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        data = png(np.zeros((8, 8), np.uint8))
        info = tarfile.TarInfo("cats/1.png")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("cats/2.png")
        link.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    return path


def zip_bomb(path: Path, megabytes: int = 20) -> Path:
    """A member of zeros that deflates ~1000x: refused by the ratio cap before it is expanded."""
    return zip_with(path, {"cats/0.png": png(np.zeros((8, 8), np.uint8)), "cats/big.png": bytes(megabytes << 20)})
