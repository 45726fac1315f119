"""The Python client and the `darkmatter` command line."""
from client.sdk import Client, ApiError

__all__ = ["ApiError", "Client"]
