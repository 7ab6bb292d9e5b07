"""Run olah with HTTP range requests answered for its local-mirror files.

olah (a self-hosted Hub mirror) serves a git repository's files from a local folder, but answers a
ranged GET with the whole file and status 200. `huggingface_hub.HfFileSystem` trusts the range it
asked for, so parquet readers (`load_dataset(..., streaming=True)`) that read a shard's footer first
would get the start of the file instead. This wrapper slices such responses into the 206 reply the
Hub gives. Requests without a Range header (ordinary downloads) stream through untouched.

Runs inside olah's own virtual environment, so it imports nothing from the project:

    python olah_with_ranges.py -c olah.toml --log-path LOGS
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
ASGIApp = Callable[[Message, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single-range header within `size` bytes; None if not satisfiable."""
    match = _RANGE.fullmatch(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":  # suffix range: the last N bytes
        return (max(size - int(last), 0), size - 1) if int(last) > 0 and size else None
    start, end = int(first), min(int(last), size - 1) if last else size - 1
    return (start, end) if start < size and start <= end else None


class RangeRequests:
    """ASGI middleware: turn a whole-file 200 answer to a ranged GET into a 206 with that range."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(
        self, scope: Message, receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Awaitable[None]]
    ) -> None:
        headers = dict(scope.get("headers") or []) if scope["type"] == "http" else {}
        requested = headers.get(b"range") if scope.get("method") == "GET" else None
        if requested is None:
            await self.app(scope, receive, send)
            return
        start: Message = {}
        body = bytearray()

        async def collect(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                body.extend(message.get("body", b""))

        await self.app(scope, receive, collect)
        if start.get("status") != 200 or not _RANGE.fullmatch(requested.decode("latin-1").strip()):
            await send(start)
            await send({"type": "http.response.body", "body": bytes(body)})
            return
        kept = [(k, v) for k, v in start.get("headers", []) if k.lower() not in (b"content-length", b"transfer-encoding")]
        span = byte_range(requested.decode("latin-1"), len(body))
        if span is None:
            await send({"type": "http.response.start", "status": 416,
                        "headers": kept + [(b"content-range", f"bytes */{len(body)}".encode()), (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        part = bytes(body[span[0] : span[1] + 1])
        kept += [
            (b"content-range", f"bytes {span[0]}-{span[1]}/{len(body)}".encode()),
            (b"content-length", str(len(part)).encode()),
        ]
        await send({"type": "http.response.start", "status": 206, "headers": kept})
        await send({"type": "http.response.body", "body": part})


def main() -> None:
    from olah import server

    server.app.add_middleware(RangeRequests)
    server.cli()


if __name__ == "__main__":
    main()
