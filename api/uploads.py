"""A streaming multipart/form-data reader: the file part goes to an UploadSink chunk by chunk
(never the whole body in memory, never a temporary copy), counted against the size limit even
when the body is chunked and has no Content-Length."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import anyio
from fastapi import HTTPException, Request
from python_multipart.multipart import MultipartParser, parse_options_header

from jobs.uploads import UploadSink, UploadTooLarge

MAX_FIELD_BYTES = 16 * 1024
FORM_OVERHEAD = 256 * 1024  # headers and small fields on top of the file itself
FLUSH_BYTES = 1024 * 1024


@dataclass
class Form:
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    sink: UploadSink | None = None


class _Part:
    def __init__(self):
        self.headers: dict[str, str] = {}
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.name: str | None = None
        self.filename: str | None = None
        self.value = bytearray()


async def read_form(request: Request, open_sink: Callable[[], UploadSink], max_bytes: int) -> Form:
    """Parse the body; the caller must `abort()` form.sink on any error after this returns."""
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise HTTPException(422, "expected multipart/form-data with a boundary")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + FORM_OVERHEAD:
        raise HTTPException(413, f"upload is larger than the limit of {max_bytes} bytes")
    form, pending, errors = Form(), bytearray(), []
    part: _Part | None = None
    held = 0  # bytes of part headers and non-file fields kept in memory: at most FORM_OVERHEAD in all

    def hold(n: int) -> None:
        nonlocal held
        held += n
        if held > FORM_OVERHEAD and not errors:
            errors.append(f"the form's fields and part headers are larger than {FORM_OVERHEAD} bytes in all")

    def on_part_begin():
        nonlocal part
        part = _Part()

    def on_header_field(data, start, end):
        hold(end - start)
        part.header_field += data[start:end]

    def on_header_value(data, start, end):
        hold(end - start)
        part.header_value += data[start:end]

    def on_header_end():
        part.headers[bytes(part.header_field).decode("latin-1").lower()] = bytes(part.header_value).decode("latin-1")
        part.header_field, part.header_value = bytearray(), bytearray()

    def on_headers_finished():
        _, options = parse_options_header(part.headers.get("content-disposition", ""))
        part.name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        if filename is not None:
            if part.name != "file" or form.sink is not None:
                errors.append("send exactly one file, in the form field 'file'")
                return
            part.filename = filename.decode("utf-8", "replace")
            form.filename = part.filename
            form.sink = open_sink()

    def on_part_data(data, start, end):
        if part.filename is not None and form.sink is not None:
            pending.extend(data[start:end])
        else:
            hold(end - start)
            part.value += data[start:end]
            if len(part.value) > MAX_FIELD_BYTES:
                errors.append(f"form field {part.name!r} is too long")

    def on_part_end():
        if part.filename is None and part.name:
            form.fields[part.name] = bytes(part.value).decode("utf-8", "replace")

    parser = MultipartParser(boundary, {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
                                        "on_header_value": on_header_value, "on_header_end": on_header_end,
                                        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
                                        "on_part_end": on_part_end})
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_bytes + FORM_OVERHEAD:
                raise UploadTooLarge(f"upload is larger than the limit of {max_bytes} bytes")
            parser.write(chunk)
            if errors:
                raise HTTPException(422, errors[0])
            if len(pending) >= FLUSH_BYTES:
                data = bytes(pending)
                pending.clear()
                await anyio.to_thread.run_sync(form.sink.write, data)
        parser.finalize()
        if pending:
            await anyio.to_thread.run_sync(form.sink.write, bytes(pending))
    except UploadTooLarge as exc:
        if form.sink:
            form.sink.abort()
        raise HTTPException(413, str(exc))
    except HTTPException:
        if form.sink:
            form.sink.abort()
        raise
    except Exception as exc:  # a malformed body or a client that went away
        if form.sink:
            form.sink.abort()
        raise HTTPException(422, f"could not read the multipart body: {type(exc).__name__}: {exc}") from exc
    if form.sink is None:
        raise HTTPException(422, "no file: send the dataset in the form field 'file'")
    return form
