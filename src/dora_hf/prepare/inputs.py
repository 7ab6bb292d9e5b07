"""Where `prepare-data` gets its videos: local paths, http(s) URLs, and list files of either.

A list file (``--source-list``) holds one path or URL per line; blank lines and ``#`` comments
are skipped (the form of the Walking Tours ``WTour.txt``). URLs are downloaded once into a cache
folder and decoded from there, because decoding needs a seekable local file (mp4 indexes are
often at the end); `download` keeps one writer per cached file and calls a file complete only once
it is verified. Links to video sites (YouTube, Vimeo, ...) serve a web page, not a file: they go
through ``yt-dlp`` (the ``download`` extra). Every video keeps its file name stem as ``video_id``; two inputs with the
same stem are refused before anything is downloaded.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from ..errors import DoraUserError
from .download import download, url_file_name

VIDEO_SITES = (
    "youtube.com",
    "youtu.be",
    "youtube-nocookie.com",
    "vimeo.com",
    "dailymotion.com",
    "twitch.tv",
    "bilibili.com",
)
"""Hosts (and their subdomains) whose links are web pages, downloaded with yt-dlp."""



@dataclass(frozen=True)
class Source:
    """One input as given: a local path or a URL."""

    spec: str
    """The path or URL exactly as given (for messages)."""

    @property
    def is_url(self) -> bool:
        return is_url(self.spec)

    @property
    def needs_site_downloader(self) -> bool:
        """True for links to video sites, whose file name is only known after yt-dlp resolves them."""
        return self.is_url and is_video_site(self.spec)

    @property
    def video_id(self) -> str | None:
        """The stem of the file name (of the URL path for a URL); None where it is not known up front."""
        if self.needs_site_downloader:
            return None
        if self.is_url:
            return PurePosixPath(url_file_name(self.spec)).stem
        return Path(self.spec).stem


def is_url(spec: str) -> bool:
    """http and https URLs are downloaded; everything else is a local path."""
    return urlsplit(spec).scheme.lower() in ("http", "https")


def is_video_site(url: str) -> bool:
    """True when the URL's host is one of :data:`VIDEO_SITES` or a subdomain of one."""
    host = (urlsplit(url).hostname or "").lower()
    return any(host == site or host.endswith("." + site) for site in VIDEO_SITES)


def default_download_dir() -> Path:
    """``$XDG_CACHE_HOME/dora-hf/videos``, i.e. ``~/.cache/dora-hf/videos`` by default."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "dora-hf" / "videos"


def read_source_list(path: str | Path) -> list[str]:
    """The paths or URLs of a list file: one per line, blank lines and ``#`` comments skipped.

    Relative paths are taken relative to the list file's folder, so a list travels with its videos.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DoraUserError(f"--source-list {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DoraUserError(f"--source-list {path}: cannot be read ({err})") from err
    specs = []
    for line in text.splitlines():
        spec = _strip_comment(line)
        if not spec:
            continue
        if not is_url(spec) and not Path(spec).expanduser().is_absolute():
            spec = str(path.parent / spec)
        specs.append(spec)
    if not specs:
        raise DoraUserError(f"--source-list {path}: lists no video (only blank lines or comments)")
    return specs


def _strip_comment(line: str) -> str:
    """A line without its ``#`` comment: a whole-line one, or a trailing one after whitespace (so a
    ``#`` inside a URL or a file name is kept)."""
    line = line.strip()
    if line.startswith("#"):
        return ""
    return re.split(r"\s+#", line, maxsplit=1)[0].strip()


@dataclass(frozen=True)
class ResolvedVideo:
    """A local video file to decode, and the URL it was downloaded from (None for a local input)."""

    path: Path
    url: str | None = None


def resolve_sources(
    inputs: Sequence[str | Path],
    source_lists: Sequence[str | Path] = (),
    *,
    download_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Local video paths for the inputs (then the list files' entries), downloading URLs first.

    Clashing video_ids (as far as the names tell) and missing local files are refused before any download.
    """
    return [video.path for video in resolve_videos(inputs, source_lists, download_dir=download_dir, log=log)]


def resolve_videos(
    inputs: Sequence[str | Path],
    source_lists: Sequence[str | Path] = (),
    *,
    download_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
    progress: bool = False,
) -> list[ResolvedVideo]:
    """:func:`resolve_sources`, keeping each video's URL, which the dataset records as its source."""
    specs = [str(spec) for spec in inputs] + [spec for listed in source_lists for spec in read_source_list(listed)]
    if not specs:
        raise DoraUserError("no VIDEO given: pass video files or URLs, or --source-list FILE")
    sources = [Source(spec) for spec in specs]
    check_unique_video_ids(sources)
    for source in sources:  # a typo in a local path should not wait for the downloads
        if not source.is_url and not Path(source.spec).expanduser().exists():
            raise DoraUserError(f"{source.spec}: no such file")
    folder = Path(download_dir).expanduser() if download_dir is not None else default_download_dir()
    videos = []
    for source in sources:
        if source.needs_site_downloader:
            videos.append(ResolvedVideo(download_with_yt_dlp(source.spec, folder, log=log), source.spec))
        elif source.is_url:
            videos.append(ResolvedVideo(download(source.spec, folder, log=log, progress=progress), source.spec))
        else:
            videos.append(ResolvedVideo(Path(source.spec).expanduser()))
    return videos


def check_unique_video_ids(sources: Sequence[Source]) -> None:
    """Readers key clips on video_id (the file name stem): refuse two inputs that would share one."""
    seen: dict[str, Source] = {}
    for source in sources:
        video_id = source.video_id
        if video_id is None:
            continue
        previous = seen.setdefault(video_id, source)
        if previous is source:
            continue
        if previous.spec == source.spec:
            raise DoraUserError(f"{source.spec}: given twice")
        raise DoraUserError(
            f"{source.spec}: its video_id {video_id!r} (the file name stem) is also that of {previous.spec}; "
            "every video needs its own file name"
        )


def download_with_yt_dlp(url: str, download_dir: str | Path, *, log: Callable[[str], None] = print) -> Path:
    """Download a video-site link with yt-dlp (resumable; it keeps its own ``.part`` files) as ``ID.EXT``."""
    try:
        yt_dlp = importlib.import_module("yt_dlp")
    except ImportError:
        raise DoraUserError(
            f"{url}: links to video sites need yt-dlp to download: pip install yt-dlp "
            "(or pip install 'dora-hf[download]'), or download the file yourself and pass its path"
        ) from None
    folder = Path(download_dir).expanduser() / "yt-dlp"
    folder.mkdir(parents=True, exist_ok=True)
    options = {
        "outtmpl": str(folder / "%(id)s.%(ext)s"),
        "format": "bestvideo[ext=mp4]/bestvideo/best",
        "noplaylist": True,
        "continuedl": True,
        "quiet": True,
        "noprogress": True,
    }
    log(f"{url}: downloading with yt-dlp to {folder}")
    try:
        with yt_dlp.YoutubeDL(options) as ydl:
            info = ydl.extract_info(url, download=True)
            path = Path(ydl.prepare_filename(info))
    except yt_dlp.utils.DownloadError as err:
        raise DoraUserError(f"{url}: yt-dlp download failed: {err}") from None
    if not path.is_file():
        raise DoraUserError(f"{url}: yt-dlp reported {path}, which does not exist")
    return path
