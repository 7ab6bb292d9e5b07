"""A local HTTP server for the download tests: Range, If-Range, slow and cut bodies, content types."""

from __future__ import annotations

import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class VideoServer:
    """A local HTTP server for test files: honours Range requests, answers 404 for unknown paths,
    and can close the connection after a given number of bytes of a file (``cut``)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.content_type: dict[str, str] = {}
        """Path -> Content-Type header (none sent for a path not in it)."""
        self.etag: dict[str, str] = {}
        """Path -> ETag header; a Range request with an If-Range that does not match gets the whole file."""
        self.no_length: set[str] = set()
        """Paths sent without Content-Length (the end of the body is the end of the connection)."""
        self.delay: dict[str, tuple[int, float]] = {}
        """Path -> (bytes per write, seconds between writes): a slow server."""
        self.cut: dict[str, int] = {}
        """Path -> bytes of the body sent before the connection is closed (the headers promise all)."""
        self.ranges = True
        """False: ignore Range headers and always send the whole file (200), as some servers do."""
        self.requests: list[tuple[str, str | None]] = []
        """(path, Range header) of every GET, in order."""
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                range_header = self.headers.get("Range")
                server.requests.append((self.path, range_header))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
                if_range = self.headers.get("If-Range")
                if if_range is not None and if_range != server.etag.get(self.path):
                    match = None  # the file changed: RFC 9110 says send it whole
                if match and server.ranges:
                    start = int(match.group(1))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                if self.path not in server.no_length:
                    self.send_header("Content-Length", str(len(body) - start))
                if self.path in server.content_type:
                    self.send_header("Content-Type", server.content_type[self.path])
                if self.path in server.etag:
                    self.send_header("ETag", server.etag[self.path])
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                end = server.cut.get(self.path, len(body))
                step, pause = server.delay.get(self.path, (end - start, 0.0))
                try:
                    for at in range(start, end, max(step, 1)):
                        self.wfile.write(body[at : min(at + step, end)])
                        self.wfile.flush()
                        time.sleep(pause)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def serve(self, path: str, file: Path) -> str:
        """Serve ``file``'s bytes at ``path``; returns its URL."""
        self.files[path] = file.read_bytes()
        return self.url + path

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
