"""Typed errors of the client: one class per way a call can fail, each with a one-line message."""
from __future__ import annotations


class DarkmatterError(Exception):
    """Base of every error the client raises."""

    hint = ""


class ConnectionFailed(DarkmatterError):
    """The server could not be reached (not running, wrong URL, network down)."""

    def __init__(self, url: str, reason: str):
        super().__init__(f"cannot reach the darkmatter API at {url} ({reason})")
        self.url = url
        self.hint = "start it with `darkmatter up`, or point --url / DARKMATTER_URL at a running server"


class ServerTimeout(ConnectionFailed):
    """The server took the connection but did not answer in time: busy, not dead."""

    def __init__(self, url: str, reason: str, seconds: float | None):
        DarkmatterError.__init__(self, f"the darkmatter API at {url} accepted the connection but did not answer"
                                 + (f" within {seconds:g} s" if seconds else "") + f" ({reason})")
        self.url = url
        self.hint = "the server is running but busy: retry in a moment, or see its log for what it is doing"


def transport_failure(url: str, exc: Exception, seconds: float | None, prefix: str = "") -> ConnectionFailed:
    """A dead server (refused, unresolvable, connect timeout) or a slow one (read/write/pool timeout)."""
    import httpx

    reason = f"{prefix}{type(exc).__name__}"
    if isinstance(exc, (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout)):
        return ServerTimeout(url, reason, seconds)
    return ConnectionFailed(url, reason)


class ChecksumMismatch(DarkmatterError):
    """A downloaded file does not match the sha256 the server announced."""

    def __init__(self, path, expected: str, actual: str):
        super().__init__(f"{path}: sha256 {actual[:16]}… does not match the server's {expected[:16]}…")
        self.expected, self.actual = expected, actual
        self.hint = "download it again (the partial file was removed)"


class JobFailed(DarkmatterError):
    """A waited-for job ended failed or cancelled."""

    def __init__(self, job: dict):
        super().__init__(f"job {job['id']} ended {job['state']}: {job.get('error') or 'no error recorded'}")
        self.job = job


class ApiError(DarkmatterError):
    """The server answered with an error status; `detail` is its JSON detail."""

    def __init__(self, status: int, detail, hint: str = ""):
        super().__init__(f"HTTP {status}: {describe(detail)}")
        self.status, self.detail, self.hint = status, detail, hint


class BadRequest(ApiError):
    pass


class Unauthorized(ApiError):
    pass


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    pass


class Gone(ApiError):
    pass


class TooLarge(ApiError):
    pass


class InvalidRequest(ApiError):
    pass


class RateLimited(ApiError):
    def __init__(self, status: int, detail, hint: str = "", retry_after: float | None = None):
        super().__init__(status, detail, hint)
        self.retry_after = retry_after


class ServerError(ApiError):
    pass


CLASSES = {400: BadRequest, 401: Unauthorized, 403: Unauthorized, 404: NotFound, 409: Conflict, 410: Gone,
           413: TooLarge, 422: InvalidRequest, 429: RateLimited}
HINTS = {401: "pass --api-key or set DARKMATTER_API_KEY (create one with `darkmatter create-key`)",
         403: "this key may not do that; check its project",
         404: "check the id (list them with the matching `ls` command)",
         409: "it is not in a state that allows this now; look at it with the matching `show` command",
         410: "its file is gone from the server's artifact store",
         413: "send less per request",
         422: "check the request against /docs",
         429: "slow down and retry in a moment",
         500: "the server logged the cause; see its log"}


def describe(detail) -> str:
    """A FastAPI detail (a string, or a list of validation errors) as one line."""
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                where = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                parts.append(f"{where}: {item.get('msg', '')}" if where else str(item.get("msg", "")))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return " ".join(str(detail).split())


def error_for(status: int, detail, headers=None, docs: str = "/docs") -> ApiError:
    """`docs`: where the server's API reference is (e.g. http://127.0.0.1:8000/docs)."""
    hint = HINTS.get(status, HINTS[500] if status >= 500 else "check the request against /docs")
    hint = hint.replace("/docs", f"the API reference at {docs}")
    if status == 429:
        retry = (headers or {}).get("retry-after")
        return RateLimited(status, detail, hint, float(retry) if retry and retry.replace(".", "").isdigit() else None)
    return CLASSES.get(status, ServerError if status >= 500 else ApiError)(status, detail, hint)
