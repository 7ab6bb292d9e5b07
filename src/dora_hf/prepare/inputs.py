"""Where `prepare-data` gets its videos: local paths, http(s) URLs, and list files of either.

A list file (``--source-list``: a local file, a hub file ``hf://datasets/ORG/NAME/FILE``, or an
http(s) URL) holds one video per line, in the forms of the Walking Tours ``WTour.txt``: a path or
URL alone, or followed by the video's name, after a comma (``URL, Amsterdam``) or, for a URL,
after a space (``URL Amsterdam``). Blank lines and ``#`` comments are skipped: a ``#`` starts a
comment at the start of a line or after a space, except where the line cut there names no local
file and the line cut at a later `` #``, or not at all, does (``walk #2.mp4``). A named video takes
a slug of its name as ``video_id`` (``São Paulo`` -> ``sao-paulo``: lower-case ascii letters and
digits joined by ``-``), the same on every machine and in every part of a split; others keep their
file name stem. Two inputs with one video_id are refused before anything is downloaded, naming
the list file and line.

URLs are downloaded once into a cache folder and decoded from there, because decoding needs a
seekable local file (mp4 indexes are often at the end); `download` keeps one writer per cached
file and calls a file complete only once it is verified. Links to video sites (YouTube, Vimeo,
...) serve a web page, not a file: they go through ``yt-dlp`` (the ``download`` extra).

``--part I/N`` prepares one part of the inputs, so that N machines each prepare one: entry ``k``
(0-based, the command line's videos then the lists' entries, in order) goes to part ``k % N + 1``.
Dealing the entries out in turn gives parts whose video counts differ by one at most, and it is
known before anything is downloaded (a hash of video ids would need the ids of video-site links,
which only the download tells, and leaves parts of a short list uneven or empty). Each part records
the whole split (`dataset.split_parts`), which the readers use to take the parts back as one.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
import shutil
import tempfile
import unicodedata
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from ..dataset.split_parts import SplitEntry, SplitRecord
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

SPLIT_RULE = "entry k (0-based: the command line's videos, then the lists' entries, in order) goes to part k % N + 1"
"""How ``--part I/N`` deals the inputs out (recorded in each part's prepare_info.json)."""

_HUB_REPO_TYPES = {"datasets": "dataset", "spaces": "space", "models": "model"}

_LIST_DOWNLOAD_TIMEOUT = 60.0
"""Seconds without an answer before an http(s) list download fails."""


@dataclass(frozen=True)
class Source:
    """One input as given: a local path or a URL, and what its list line says about it."""

    spec: str
    """The path or URL to read (a list's relative paths made absolute)."""
    name: str | None = None
    """The video's name as the list gives it (``São Paulo``); None when it gives none."""
    named_id: str | None = None
    """The video_id the name makes (``sao-paulo``)."""
    origin: str | None = None
    """Where it was given, for messages: ``WTour.txt line 3``; None for a command-line video."""
    written: str | None = None
    """The path or URL as written in the list (relative paths unresolved): the same on every machine."""
    entry: int | None = None
    """Position in the whole input sequence (command-line videos, then the lists' entries)."""
    comment: str | None = None
    """The rest of the list line read as a comment (``#2.mp4``), for a path that is no file."""

    @property
    def is_url(self) -> bool:
        return is_url(self.spec)

    @property
    def needs_site_downloader(self) -> bool:
        """True for links to video sites, whose file name is only known after yt-dlp resolves them."""
        return self.is_url and is_video_site(self.spec)

    @property
    def video_id(self) -> str | None:
        """The list's name as a slug, else the stem of the file name (of the URL path for a URL);
        None where neither is known up front (an unnamed video-site link)."""
        if self.named_id is not None:
            return self.named_id
        if self.needs_site_downloader:
            return None
        if self.is_url:
            return PurePosixPath(url_file_name(self.spec)).stem
        return Path(self.spec).stem

    @property
    def where(self) -> str:
        """``WTour.txt line 3: URL`` for a list entry, the path or URL alone for a command-line one."""
        return f"{self.origin}: {self.spec}" if self.origin else self.spec

    def id_origin(self) -> str:
        """How the video_id was made, for messages."""
        return f"from the name {self.name!r}" if self.named_id is not None else "the file name stem"


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


def video_id_from_name(name: str) -> str:
    """A list name as a video_id: ascii letters and digits, lower-case, runs of anything else as one ``-``.

    Accents are dropped (``São Paulo`` -> ``sao-paulo``); the result depends on the name alone, so
    it is the same on every machine and in every part of a split. Empty when nothing is left.
    """
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    return "-".join(re.findall(r"[a-z0-9]+", ascii_name.lower()))


def read_source_list(path: str | Path) -> list[str]:
    """The paths or URLs of a list file (see :func:`read_list_entries`), without their names."""
    return [source.spec for source in read_list_entries(path)]


def read_list_entries(list_spec: str | Path) -> list[Source]:
    """The videos of a list: a local file, a hub file (``hf://datasets/ORG/NAME/FILE``) or an http(s) URL.

    One video per line: ``PATH_OR_URL``, ``PATH_OR_URL, NAME``, or ``URL NAME``; blank lines and
    ``#`` comments are skipped. A local list's relative paths are relative to its folder, so a
    list travels with its videos; a list read from the hub or a URL has no folder, so its paths
    must be absolute. A malformed line is one error naming the list and the line number.
    """
    label = str(list_spec)
    text, folder = _list_text(list_spec)
    sources = []
    for number, line in enumerate(text.splitlines(), start=1):
        body = _strip_comment(line)
        if not body:
            continue
        origin = f"{label} line {number}"
        written, name = _split_line(body, origin)
        spec = _list_path(written, folder, origin)
        comment = line.strip()[len(body) :].strip() or None
        if comment is not None and not is_url(spec) and not Path(spec).expanduser().exists():
            written, name, spec, comment = _path_with_hash(line.strip(), folder, origin) or (written, name, spec, comment)
        named_id = None
        if name is not None:
            named_id = video_id_from_name(name)
            if not named_id:
                raise DoraUserError(
                    f"{origin}: the name {name!r} has no ascii letter or digit to make a video_id of; "
                    "give the video a name in Latin letters or digits"
                )
        sources.append(Source(spec, name=name, named_id=named_id, origin=origin, written=written, comment=comment))
    if not sources:
        raise DoraUserError(f"--source-list {label}: lists no video (only blank lines or comments)")
    return sources


def _list_path(written: str, folder: Path | None, origin: str) -> str:
    """A list's path or URL to read: a relative path made relative to the list's folder."""
    if is_url(written) or Path(written).expanduser().is_absolute():
        return written
    if folder is None:
        raise DoraUserError(
            f"{origin}: {written!r} is a relative path, but a list read from the hub or a URL has no folder it "
            "could be relative to: give a URL or an absolute path"
        )
    return str(folder / written)


def _path_with_hash(line: str, folder: Path | None, origin: str) -> tuple[str, str | None, str, str | None] | None:
    """A list line whose ``#`` after a space was read as a comment, leaving a path that is no file:
    (written, name, path, comment) cut at a later `` #`` or not at all, the first whose path is a
    file (``walk #2.mp4  # note``); None where none is."""
    cuts = [match.start() for match in re.finditer(r"\s+#", line)][1:] + [len(line)]
    for cut in cuts:
        try:
            written, name = _split_line(line[:cut].strip(), origin)
            spec = _list_path(written, folder, origin)
        except DoraUserError:
            continue
        if not is_url(spec) and Path(spec).expanduser().exists():
            return written, name, spec, line[cut:].strip() or None
    return None


def _split_line(body: str, origin: str) -> tuple[str, str | None]:
    """A list line as (path or URL, name or None); see :func:`read_list_entries` for the forms."""
    if body.startswith(","):
        raise DoraUserError(f"{origin}: the line starts with a comma: a path or URL must come before the name")
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", body)
    if scheme is not None:
        if scheme.group(1).lower() not in ("http", "https"):
            raise DoraUserError(
                f"{origin}: {scheme.group(1)}:// is not a source prepare-data reads: give an http(s) URL or a local path"
            )
        spec = re.match(r"[^\s,]+", body).group(0)  # type: ignore[union-attr]  # a URL ends at a space or a comma
        rest = body[len(spec) :].strip()
    elif "," in body:  # a path may hold spaces: only a comma ends it
        spec, _, rest = body.partition(",")
        spec, rest = spec.strip(), "," + rest
    else:
        return body, None
    if not rest:
        return spec, None
    name = rest[1:].strip() if rest.startswith(",") else rest
    if not name:
        raise DoraUserError(f"{origin}: empty name after the comma: give the video a name, or drop the comma")
    if "://" in name:
        raise DoraUserError(f"{origin}: two sources on one line ({spec} and {name.split()[0]}): give one per line")
    return spec, name


def _list_text(list_spec: str | Path) -> tuple[str, Path | None]:
    """A list's text and the folder its relative paths are relative to (None for a hub or URL list)."""
    if isinstance(list_spec, str) and list_spec.startswith("hf://"):
        path = _hub_list_file(list_spec)
        return _read_list_file(path, list_spec), None
    if isinstance(list_spec, str) and is_url(list_spec):
        return _download_list(list_spec), None
    path = Path(list_spec).expanduser()
    return _read_list_file(path, str(list_spec)), path.parent


def _read_list_file(path: Path, label: str) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # a byte-order mark, as some editors write, is not a path
    except FileNotFoundError:
        raise DoraUserError(f"--source-list {label}: no such file") from None
    except IsADirectoryError:
        raise DoraUserError(f"--source-list {label}: is a folder, not a list file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DoraUserError(f"--source-list {label}: cannot be read ({err})") from err


def _hub_list_file(spec: str) -> Path:
    """A hub-hosted list through ``hf_hub_download``: kept in the Hugging Face cache, read from it offline."""
    parts = spec[len("hf://") :].split("/")
    repo_type = _HUB_REPO_TYPES.get(parts[0], None)
    if repo_type is not None:
        parts = parts[1:]
    if len(parts) < 3 or not all(parts):
        raise DoraUserError(
            f"--source-list {spec}: a list on the hub is hf://datasets/ORG/NAME/FILE "
            "(or hf://datasets/ORG/NAME@REVISION/FILE)"
        )
    name, _, revision = parts[1].partition("@")
    from huggingface_hub import hf_hub_download

    try:
        return Path(
            hf_hub_download(
                f"{parts[0]}/{name}", "/".join(parts[2:]), repo_type=repo_type or "model", revision=unquote(revision) or None
            )
        )
    except Exception as err:  # the hub client raises many kinds: not found, offline and not cached, HTTP
        first_line = (str(err).strip().splitlines() or [""])[0]
        raise DoraUserError(f"--source-list {spec}: cannot get it from the hub ({type(err).__name__}: {first_line})") from err


def _download_list(url: str) -> str:
    """An http(s) list, downloaded to a temporary file (removed once read)."""
    handle, temporary = tempfile.mkstemp(prefix="dora-hf-list-", suffix=".txt")
    try:
        with os.fdopen(handle, "wb") as file, urllib.request.urlopen(url, timeout=_LIST_DOWNLOAD_TIMEOUT) as response:
            kind = response.headers.get("Content-Type") or ""
            if kind.lower().startswith("text/html"):
                raise DoraUserError(
                    f"--source-list {url}: the server sends a web page ({kind}), not a list: give the raw file's URL"
                )
            shutil.copyfileobj(response, file)
        return _read_list_file(Path(temporary), url)
    except urllib.error.HTTPError as err:
        raise DoraUserError(f"--source-list {url}: download failed: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DoraUserError(f"--source-list {url}: download failed: {reason}") from None
    finally:
        os.unlink(temporary)


def _strip_comment(line: str) -> str:
    """A line without its ``#`` comment: a whole-line one, or a trailing one after whitespace (so a
    ``#`` inside a URL or a file name is kept; a local file named ``walk #2.mp4`` is found by
    :func:`_path_with_hash`)."""
    line = line.strip()
    if line.startswith("#"):
        return ""
    return re.split(r"\s+#", line, maxsplit=1)[0].strip()


def gather_sources(inputs: Sequence[str | Path | Source], source_lists: Sequence[str | Path] = ()) -> list[Source]:
    """The command line's videos, then the lists' entries, numbered in that order and checked for clashing video_ids."""
    sources = [s if isinstance(s, Source) else Source(str(s)) for s in inputs]
    sources += [source for listed in source_lists for source in read_list_entries(listed)]
    if not sources:
        raise DoraUserError("no VIDEO given: pass video files or URLs, or --source-list FILE")
    sources = [s if s.entry is not None else dataclasses.replace(s, entry=k) for k, s in enumerate(sources)]
    check_unique_video_ids(sources)
    return sources


@dataclass(frozen=True)
class PartNumber:
    """``--part I/N``: the I-th of N parts (1-based)."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> PartNumber:
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if match is None:
            raise DoraUserError(f"--part must be I/N, the I-th of N parts, e.g. --part 2/3 (got {text!r})")
        index, count = int(match.group(1)), int(match.group(2))
        if count < 1:
            raise DoraUserError(f"--part {text}: the number of parts must be at least 1")
        if not 1 <= index <= count:
            raise DoraUserError(f"--part {text}: the part must be 1 to {count} (parts are numbered from 1)")
        return cls(index, count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def part_of_entry(entry: int, count: int) -> int:
    """The part (1-based) entry ``entry`` goes to: :data:`SPLIT_RULE`."""
    return entry % count + 1


def split_sources(
    sources: Sequence[Source], part: PartNumber, source_lists: Sequence[str | Path]
) -> tuple[list[Source], SplitRecord]:
    """The sources of ``part`` and the record of the whole split that the part carries."""
    if part.count > len(sources):
        raise DoraUserError(
            f"--part {part}: the inputs hold {len(sources)} video(s), too few for {part.count} parts (a part holds "
            f"one video at least): use at most {len(sources)} parts"
        )
    entries = [
        SplitEntry(
            entry=s.entry if s.entry is not None else k,
            source=s.written or s.spec,
            name=s.name,
            video_id=s.named_id,
            part=part_of_entry(s.entry if s.entry is not None else k, part.count),
        )
        for k, s in enumerate(sources)
    ]
    record = SplitRecord.build(part.index, part.count, [str(x) for x in source_lists], entries, SPLIT_RULE)
    chosen = {e.entry for e in record.entries_of(part.index)}
    return [s for k, s in enumerate(sources) if (s.entry if s.entry is not None else k) in chosen], record


@dataclass(frozen=True)
class ResolvedVideo:
    """A local video file to decode, and the URL it was downloaded from (None for a local input)."""

    path: Path
    url: str | None = None
    source: Source | None = None
    """The input it came from (its list name and entry number)."""


def resolve_sources(
    inputs: Sequence[str | Path | Source],
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
    inputs: Sequence[str | Path | Source],
    source_lists: Sequence[str | Path] = (),
    *,
    download_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
    progress: bool = False,
) -> list[ResolvedVideo]:
    """:func:`resolve_sources`, keeping each video's URL, which the dataset records as its source, and its input."""
    sources = gather_sources(inputs, source_lists)
    for source in sources:  # a typo in a local path should not wait for the downloads
        scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", source.spec)
        if not source.is_url and scheme is not None:
            raise DoraUserError(
                f"{source.where}: {scheme.group(1)}:// is not a source prepare-data reads: give an http(s) URL or a local path"
            )
        if not source.is_url and not Path(source.spec).expanduser().exists():
            cut = (
                f" (the rest of the line, {source.comment!r}, was read as a comment: "
                "a '#' at the start of a line or after a space starts one)"
            )
            raise DoraUserError(f"{source.where}: no such file{cut if source.comment else ''}")
    folder = Path(download_dir).expanduser() if download_dir is not None else default_download_dir()
    videos = []
    for source in sources:
        if source.needs_site_downloader:
            videos.append(ResolvedVideo(download_with_yt_dlp(source.spec, folder, log=log), source.spec, source))
        elif source.is_url:
            videos.append(ResolvedVideo(download(source.spec, folder, log=log, progress=progress), source.spec, source))
        else:
            videos.append(ResolvedVideo(Path(source.spec).expanduser(), source=source))
    return videos


def check_unique_video_ids(sources: Sequence[Source]) -> None:
    """Readers key clips on video_id (the list's name, else the file name stem): refuse two inputs
    that would share one, and one input given twice (under two names it would be drawn twice as often)."""
    given: dict[str, Source] = {}
    seen: dict[str, Source] = {}
    for source in sources:
        key = source.spec if source.is_url else os.path.abspath(os.path.expanduser(source.spec))
        previous = given.setdefault(key, source)
        if previous is not source:
            also = f" (also {previous.origin})" if previous.origin else ""
            raise DoraUserError(f"{source.where}: given twice{also}")
        video_id = source.video_id
        if video_id is None:
            continue
        previous = seen.setdefault(video_id, source)
        if previous is source:
            continue
        if source.named_id is not None and previous.named_id is not None:
            raise DoraUserError(
                f"{source.origin}: the name {source.name!r} makes the video_id {video_id!r}, as {previous.origin}'s "
                f"{previous.name!r} does: every video needs its own name"
            )
        if source.named_id is None and previous.named_id is None and source.origin is None and previous.origin is None:
            raise DoraUserError(
                f"{source.spec}: its video_id {video_id!r} (the file name stem) is also that of {previous.spec}; "
                "every video needs its own file name"
            )
        raise DoraUserError(
            f"{source.where}: its video_id {video_id!r} ({source.id_origin()}) is also that of {previous.where} "
            f"({previous.id_origin()}); every video needs its own name"
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
