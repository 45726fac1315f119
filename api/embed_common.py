"""What the embedding inputs of every modality share: the error of one bad input and the size
check made before anything is decoded or loaded."""
from __future__ import annotations

from fastapi import HTTPException


class BadInput(ValueError):
    def __init__(self, index: int, message: str):
        super().__init__(f"input[{index}]: {message}")


def check_sizes(inputs: list, settings) -> None:
    """413 for an encoded input over max_embedding_input_bytes, before anything is decoded or loaded."""
    for i, item in enumerate(inputs):
        if isinstance(item, str) and len(item) > settings.max_embedding_input_bytes:
            raise HTTPException(413, f"input[{i}] is larger than {settings.max_embedding_input_bytes} bytes")
