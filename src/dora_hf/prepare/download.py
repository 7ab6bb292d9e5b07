"""Downloads into the shared cache: one writer per file, verified before it is called complete.

A URL is cached at ``DIR/KEY/NAME`` (``KEY`` from the URL, so equal names from different hosts
never mix). While a download runs its folder is claimed (an exclusive ``flock`` that the kernel
drops when the process ends), so two `prepare-data` runs sharing ``--download-dir`` never write
one file at once: the second waits, then finds the file complete. Bytes go to ``NAME.part``,
with ``NAME.part.json`` recording the server's validators (ETag, Last-Modified, total size);
an interrupted download resumes with a range request that is honoured only if the server's file
is still the one the ``.part`` holds (``If-Range``, and the total size), else it starts again. A
finished download is renamed ``NAME`` only after its size matches ``Content-Length`` and PyAV
opens it as a video with a duration, so a web page served as ``.mp4``, a cut body or a stray
``.part`` is never cached as complete. A server that trickles (under ``MIN_RATE_BYTES_S`` over
``RATE_WINDOW_S``) is given up on, resumably.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import json
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from tqdm.auto import tqdm

from ..errors import DoraUserError
from .video_decode import probe_video

CHUNK_BYTES = 1 << 20
"""Bytes read and written at a time while downloading (at most: whatever has arrived is taken)."""

TIMEOUT_S = 60.0
"""Seconds without any data after which a download counts as failed (and can be resumed)."""

MIN_RATE_BYTES_S = 8 * 1024
"""A download slower than this over a whole ``RATE_WINDOW_S`` is given up on (resumably): a server
that sends a byte every few seconds never trips the per-read timeout."""

RATE_WINDOW_S = 60.0

USER_AGENT = "dora-hf prepare-data"

_NOT_VIDEO_TYPES = ("text/", "application/json", "application/xml", "application/xhtml")
"""Content-Types that are never a video file (a web page, an error document)."""


def url_file_name(url: str) -> str:
    """The last segment of the URL's path, which becomes the cached file's name (and the video_id's stem)."""
    name = unquote(PurePosixPath(urlsplit(url).path).name)
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise DoraUserError(f"{url}: the URL names no file (its path must end in a file name such as venice.mp4)")
    return name


def cache_path(url: str, download_dir: Path) -> Path:
    """Where ``url`` is cached: a folder per URL (so equal names from different hosts never mix), its file name."""
    key = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    return download_dir / key / url_file_name(url)


def download(url: str, download_dir: str | Path, *, log: Callable[[str], None] = print, progress: bool = False) -> Path:
    """Download ``url`` into the cache (resuming a ``.part`` left by an earlier run); return the complete file."""
    target = cache_path(url, Path(download_dir))
    while True:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _claimed(target.parent, url, log) as held:
            if not held:
                continue  # the folder was removed while we waited for it: make it again
            if target.is_file():
                log(f"{url}: cached at {target}")
                return target
            part = target.with_name(target.name + ".part")
            try:
                _fetch_into(url, part, log, progress)
                _check_is_video(url, part)
            except DoraUserError:
                _remove_if_empty(part)
                raise
            os.replace(part, target)
            _validators_path(part).unlink(missing_ok=True)
            return target


@contextlib.contextmanager
def _claimed(folder: Path, url: str, log: Callable[[str], None]) -> Iterator[bool]:
    """Hold the URL's cache folder exclusively; yields False if it vanished while we waited."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"{url}: another process is downloading it into {folder}; waiting for it to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.stat(folder).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        yield same
    finally:
        os.close(fd)  # releases the lock


def _validators_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _read_validators(part: Path) -> dict | None:
    try:
        record = json.loads(_validators_path(part).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _fetch_into(url: str, part: Path, log: Callable[[str], None], progress: bool) -> None:
    """Append the rest of ``url`` to ``part`` and check the total size; raise a DoraUserError naming the URL."""
    offset = part.stat().st_size if part.is_file() else 0
    recorded = _read_validators(part) if offset else None
    if offset and (recorded is None or recorded.get("url") != url):
        log(f"{url}: {part} was not left by a download of this URL; downloading it again from the start")
        part.unlink()
        offset = 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        validator = recorded.get("etag") or recorded.get("last_modified")
        if validator:
            headers["If-Range"] = validator  # the server sends the whole file if it changed
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset and _range_total(err.headers.get("Content-Range")) == offset == recorded.get("total"):
            return  # the .part already holds the whole file
        raise DoraUserError(f"{url}: download failed: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", err)
        raise DoraUserError(f"{url}: download failed: {reason}") from None
    with response:
        content_type = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type.startswith(_NOT_VIDEO_TYPES):
            raise DoraUserError(
                f"{url}: the server sent {content_type}, not a video file (a web page or an error document); "
                "check the link (links to video sites' pages need the 'download' extra)"
            )
        length = response.headers.get("Content-Length")
        total = None
        if offset and response.status == 206:
            start = _range_start(response.headers.get("Content-Range"))
            if start != offset:
                raise DoraUserError(f"{url}: download failed: asked to resume at byte {offset}, the server sent byte {start}")
            total = _range_total(response.headers.get("Content-Range"))
            if recorded.get("total") is not None and total != recorded["total"]:
                response.close()
                log(f"{url}: the file on the server changed since {part} was started; downloading it again")
                part.unlink()
                _validators_path(part).unlink(missing_ok=True)
                return _fetch_into(url, part, log, progress)
            mode, done = "ab", offset
            log(f"{url}: resuming at {offset} bytes")
        else:
            mode, done = "wb", 0  # a server without range support (or a changed file) sends the whole file
        expected = done + int(length) if length is not None else None
        total = total if total is not None else expected
        _validators_path(part).write_text(json.dumps({
            "url": url, "etag": response.headers.get("ETag"), "last_modified": response.headers.get("Last-Modified"),
            "total": total,
        }))
        log(f"{url}: downloading to {part.parent}" + (f" ({expected} bytes)" if expected is not None else ""))
        bar = tqdm(
            total=expected, initial=done, unit="B", unit_scale=True, unit_divisor=1024, desc=part.name.removesuffix(".part"),
            disable=not progress, file=sys.stderr, dynamic_ncols=True, mininterval=0.5,
        )
        window_start, window_bytes = time.monotonic(), done
        try:
            with bar, part.open(mode) as sink:
                while chunk := response.read1(CHUNK_BYTES):
                    sink.write(chunk)
                    done += len(chunk)
                    bar.update(len(chunk))
                    elapsed = time.monotonic() - window_start
                    if elapsed >= RATE_WINDOW_S:
                        rate = (done - window_bytes) / elapsed
                        if rate < MIN_RATE_BYTES_S:
                            raise DoraUserError(
                                f"{url}: download too slow: {rate:.0f} bytes/s over the last {elapsed:.0f} s "
                                f"({done} of {expected if expected is not None else '?'} bytes); run again to resume it"
                            )
                        window_start, window_bytes = time.monotonic(), done
        except (OSError, http.client.HTTPException, socket.timeout) as err:
            raise DoraUserError(
                f"{url}: download failed after {done} of {expected if expected is not None else '?'} bytes "
                f"({type(err).__name__}: {err}); run again to resume it"
            ) from None
    if expected is not None and done != expected:
        raise DoraUserError(
            f"{url}: download incomplete: {done} of {expected} bytes (the connection closed early); run again to resume it"
        )


def _check_is_video(url: str, part: Path) -> None:
    """A finished download must open as a video with a duration; otherwise nothing is kept."""
    try:
        info = probe_video(part)
        if not info.duration_s:
            raise DoraUserError(f"{part}: states no duration")
    except DoraUserError as err:
        reason = str(err).removeprefix(f"{part}: ")
        part.unlink(missing_ok=True)
        _validators_path(part).unlink(missing_ok=True)
        raise DoraUserError(f"{url}: the download is not a readable video ({reason}); nothing was kept in the cache") from None


def _range_start(content_range: str | None) -> int | None:
    """The first byte of a ``Content-Range: bytes START-END/TOTAL`` header."""
    match = re.match(r"bytes (\d+)-", content_range or "")
    return int(match.group(1)) if match else None


def _range_total(content_range: str | None) -> int | None:
    """The TOTAL of a ``Content-Range`` header (a 416 answer carries ``bytes */TOTAL``)."""
    match = re.search(r"/(\d+)$", content_range or "")
    return int(match.group(1)) if match else None


def _remove_if_empty(part: Path) -> None:
    """Drop a ``.part`` that holds nothing (and its validators, and its URL's folder if empty): only
    real progress is kept for resuming."""
    if not part.is_file() or part.stat().st_size == 0:
        part.unlink(missing_ok=True)
        _validators_path(part).unlink(missing_ok=True)
    folder = part.parent
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
