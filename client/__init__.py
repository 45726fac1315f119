"""The Python client (sync and async) and the `darkmatter` command line. Needs httpx (and numpy
for embeddings as arrays), never torch or the server's packages."""
from client.aio import AsyncClient
from client.errors import (ApiError, ChecksumMismatch, Conflict, ConnectionFailed, DarkmatterError, Gone,
                           InvalidRequest, JobFailed, NotFound, RateLimited, ServerError, TooLarge, Unauthorized)
from client.sdk import Client

__all__ = ["ApiError", "AsyncClient", "ChecksumMismatch", "Client", "Conflict", "ConnectionFailed", "DarkmatterError",
           "Gone", "InvalidRequest", "JobFailed", "NotFound", "RateLimited", "ServerError", "TooLarge", "Unauthorized"]
