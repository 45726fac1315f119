"""A memory bank indexed by image: one slot per training image, found by a key computed from the
image's raw pixels, for methods whose official code indexes a bank by dataset index
(DeepCluster-v2, arXiv:2006.09882) while `training_step` receives only the uint8 batch."""
from __future__ import annotations

import torch
from torch import Tensor, nn

EMPTY = -1  # key of an unused slot; image keys are sums of non-negative terms, so never negative
_KEY_WEIGHTS: dict[tuple[int, str], Tensor] = {}


def _key_weights(numel: int, device: torch.device) -> Tensor:
    """(2, numel) fixed random integers in [0, 2^31), the same in every process and run."""
    cache = (numel, str(device))
    if cache not in _KEY_WEIGHTS:
        gen = torch.Generator().manual_seed(20_200_615)  # fixed: keys must agree across runs and resumes
        _KEY_WEIGHTS[cache] = torch.randint(0, 2**31, (2, numel), generator=gen, dtype=torch.long).to(device)
    return _KEY_WEIGHTS[cache]


@torch.no_grad()
def image_keys(images: Tensor, chunk: int = 32) -> Tensor:
    """(B, 2) int64 keys of uint8 images (B, ...): two random integer projections of the raw
    pixels. Equal images get equal keys, in any batch and any position; two different images
    share both keys with probability at most 2^-62 (for pixel vectors x != y, x.w = y.w holds
    for at most one value of a coordinate of w). Exact in int64: 255 * 2^31 * pixels < 2^63
    for up to 2^24 pixels per image. Images are processed `chunk` at a time to bound memory."""
    flat = images.flatten(1)
    if flat.shape[1] > 2**24:
        raise ValueError(f"images of {flat.shape[1]} values are too large to key exactly")
    weights = _key_weights(flat.shape[1], flat.device)
    return torch.cat([torch.stack([(part.long() * w).sum(1) for w in weights], 1) for part in flat.split(chunk)])


class KeyedMemoryBank(nn.Module):
    """`size` slots, each holding `views` embeddings (dim `dim`) of one image and that image's key.
    An image seen again overwrites its own slot; a new image takes a free slot, or, once the bank
    is full (more images than slots), the least recently written one. All state is in buffers,
    so resume is exact."""

    def __init__(self, size: int, views: int, dim: int):
        super().__init__()
        self.register_buffer("embeddings", torch.zeros(views, size, dim))
        self.register_buffer("keys", torch.full((size, 2), EMPTY, dtype=torch.long))
        self.register_buffer("written_at", torch.full((size,), -1, dtype=torch.long))

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    def occupied(self) -> Tensor:
        """(size,) bool: slots that hold an image."""
        return self.keys[:, 0] != EMPTY

    @torch.no_grad()
    def lookup(self, keys: Tensor) -> Tensor:
        """(B,) the slot of each key (B, 2), or -1 for an image not in the bank."""
        match = (self.keys[None] == keys[:, None]).all(-1)  # (B, size)
        return torch.where(match.any(1), match.long().argmax(1), -1)

    @torch.no_grad()
    def write(self, keys: Tensor, embeddings: Tensor, step: int) -> tuple[Tensor, Tensor, Tensor]:
        """Store embeddings (views, B, dim) of the images with `keys` (B, 2). Returns (slots (B,),
        new (B,) bool: the image took a slot it did not have, evicted: how many of those slots
        held another image). Fixed shapes throughout (no unique, no boolean indexing), so the host
        never waits for the device: rows that should write nothing write one slot past the end."""
        b = len(keys)
        if b > self.size:
            raise ValueError(f"a batch of {b} images does not fit the memory bank of {self.size}; "
                             "raise queue_size or lower batch_size")
        slots = self.lookup(keys)
        new = slots < 0
        past_end = torch.full_like(slots, self.size)
        written_at = torch.cat([self.written_at, self.written_at.new_zeros(1)])
        written_at[torch.where(new, past_end, slots)] = step  # refreshed first: the choice below never evicts them
        self.written_at.copy_(written_at[:-1])
        # a key twice in the batch takes one slot: its first new occurrence picks it
        same = (keys[:, None] == keys[None]).all(-1) & new[:, None] & new[None]
        first = same.long().argmax(1)
        position = torch.arange(b, device=keys.device)
        is_first = new & (first == position)
        rank = is_first.long().cumsum(0) - 1  # new images take slots in batch order
        free = torch.argsort(self.written_at, stable=True)[:b]  # unused (-1) first, then oldest
        taken = free[rank[first].clamp(min=0)]
        evicted = ((self.keys[free, 0] != EMPTY) & (position < is_first.sum())).sum()
        bank_keys = torch.cat([self.keys, self.keys.new_full((1, 2), EMPTY)])
        bank_keys[torch.where(is_first, taken, past_end)] = keys
        self.keys.copy_(bank_keys[:-1])
        slots = torch.where(new, taken, slots)
        self.written_at[slots] = step
        self.embeddings[:, slots] = embeddings.to(self.embeddings.dtype)
        return slots, new, evicted

    @torch.no_grad()
    def write_slots(self, slots: Tensor, embeddings: Tensor, step: int) -> None:
        """Store embeddings (views, B, dim) in the given slots, an image's slot being its dataset
        index (the official bank's layout); the key marks the slot occupied."""
        self.keys[slots] = torch.stack([slots, torch.zeros_like(slots)], 1)
        self.written_at[slots] = step
        self.embeddings[:, slots] = embeddings.to(self.embeddings.dtype)
