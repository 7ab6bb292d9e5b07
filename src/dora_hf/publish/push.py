"""`dora-hf push DIR --repo-id ORG/NAME`: upload an exported model or a prepared dataset to the Hub.

Everything that can be checked locally is checked before the first network call, so a typo costs
no upload: the folder exists and is what `--repo-type` says (a `dora-hf export` model folder or a
`dora-hf prepare-data` dataset folder), its card's metadata parses, a dataset's shards match its
manifest (names, sizes, rows and sha256: nothing missing, extra, truncated or altered is
uploaded), the repo id is `ORG/NAME` and a token is available. `--dry-run` prints exactly the
files `upload_folder` would send, and how they go up, and contacts nobody. The upload itself is
`huggingface_hub`'s `create_repo` (+ `create_branch`) and `upload_folder`. With `hf_xet` (a
dependency of huggingface_hub >= 2.4, which has no separate `upload_large_folder`) `upload_folder`
streams the files and commits a large folder in several batches, and running the same push again
resumes an interrupted one; without it everything goes in one commit, which a large folder (see
`LARGE_FOLDER_BYTES`) should not risk, so the push says so before it starts.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import DatasetCard, HfApi, ModelCard, get_token
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
from huggingface_hub.utils import (
    DEFAULT_IGNORE_PATTERNS,
    filter_repo_objects,
    validate_repo_id,
)

from ..dataset.manifest import VerifyReport, verify_folder
from ..errors import DoraUserError
from ..folders.output_folder import MARKER_FILE

IGNORE_PATTERNS: tuple[str, ...] = ("__pycache__/*", "*/__pycache__/*", "*.pyc", ".DS_Store", "*/.DS_Store", MARKER_FILE)
"""Never uploaded (on top of huggingface_hub's own `.git` and `.cache/huggingface`); the dora-hf
marker only says which local command wrote the folder."""

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
MODEL_FILES = ("config.json", "preprocessor_config.json", "README.md")
DATASET_FILES = ("README.md", "prepare_info.json")

LARGE_FOLDER_BYTES = 1_000_000_000
"""A folder above this size (or :data:`LARGE_FOLDER_FILES`) is large: about 16 shards at the prepare-data
defaults, i.e. more than one hour-long tour, where an upload that must start over after a dropped
connection costs real time."""
LARGE_FOLDER_FILES = 100
"""Files above which a folder is large: huggingface_hub's own single-commit path warns from 200."""


@dataclass(frozen=True)
class UploadPlan:
    """What a push will do: which repo, and the files (path in repo, bytes) it uploads."""

    folder: Path
    repo_id: str
    repo_type: str
    files: tuple[tuple[str, int], ...]
    verified: VerifyReport | None = None
    """A dataset's shards as checked against its manifest."""

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)

    @property
    def large(self) -> bool:
        """Too big to entrust to a single, non-resumable commit (see :data:`LARGE_FOLDER_BYTES`)."""
        return self.total_bytes > LARGE_FOLDER_BYTES or len(self.files) > LARGE_FOLDER_FILES

    def method_line(self) -> str:
        """How `upload_folder` will send this folder, as the dry run and a risky push say it."""
        if xet_available():
            size = f"{len(self.files)} files, {format_bytes(self.total_bytes)}"
            batches = f", committed in batches (a large folder: {size})" if self.large else ""
            return f"upload: streamed with hf_xet{batches}; running the same push again resumes an interrupted one"
        if not self.large:
            return "upload: one commit (hf_xet is not installed)"
        return (
            f"upload: one commit of {len(self.files)} files ({format_bytes(self.total_bytes)}), as hf_xet is not "
            "installed: an interrupted push starts over and so large a commit may be refused; "
            "pip install hf_xet for a resumable push in several commits"
        )

    def describe(self, private: bool = False, revision: str | None = None) -> str:
        """The dry-run listing: one line of intent, one line per file, the manifest check, how it goes up."""
        visibility = "private " if private else ""
        head = (
            f"would upload {len(self.files)} files ({format_bytes(self.total_bytes)}) from {self.folder} "
            f"to the {visibility}{self.repo_type} repo {self.repo_id}, branch {revision or 'main'}:"
        )
        width = max(len(path) for path, _ in self.files)
        lines = [head] + [f"  {path:<{width}}  {format_bytes(size):>9}" for path, size in self.files]
        return "\n".join(lines + ([self.verified_line()] if self.verified else []) + [self.method_line()])

    def verified_line(self) -> str:
        """What the manifest check found, for a dataset."""
        report = self.verified
        if report is None:
            return ""
        checked = "names, sizes, rows and sha256" if report.hashed else "names, sizes and rows"
        return f"{report.shards} shard(s) ({report.rows} rows) match the manifest: {checked} checked in {report.seconds:.1f} s"


def xet_available() -> bool:
    """Whether `upload_folder` takes its streamed, multi-commit, resumable path (it needs hf_xet)."""
    try:
        from huggingface_hub.utils._runtime import is_xet_available
    except ImportError:
        return importlib.util.find_spec("hf_xet") is not None
    return bool(is_xet_available())


def format_bytes(size: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def folder_kind(folder: Path) -> str | None:
    """'model' for an exported DoRA model folder, 'dataset' for a prepared one, else None."""
    if (folder / "config.json").is_file():
        return "model"
    if (folder / "prepare_info.json").is_file() or any((folder / "data").glob("*.parquet")):
        return "dataset"
    return None


def check_model_folder(folder: Path) -> None:
    """Refuse a folder that `AutoModel.from_pretrained` could not load as a DoRA model with its card."""
    missing = [name for name in MODEL_FILES if not (folder / name).is_file()]
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES))
    if missing:
        raise DoraUserError(
            f"{folder} is not an exported DoRA model folder: missing {', '.join(missing)} "
            "(make one with `dora-hf export`)"
        )
    try:
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    except (ValueError, AttributeError) as err:
        raise DoraUserError(f"{folder / 'config.json'} is not a JSON object: {err}") from err
    if model_type != "dora":
        raise DoraUserError(f"{folder} holds a '{model_type}' model, not a DoRA model (config.json model_type)")
    _check_card(folder / "README.md", ModelCard)


def check_dataset_folder(folder: Path) -> VerifyReport:
    """Refuse a folder that is not a `dora-hf prepare-data` dataset with its card, or whose shards
    (those a push uploads) differ from its manifest."""
    missing = [name for name in DATASET_FILES if not (folder / name).is_file()]
    if not any((folder / "data").glob("*.parquet")):
        missing.append("data/*.parquet")
    if missing:
        raise DoraUserError(
            f"{folder} is not a prepared dataset folder: missing {', '.join(missing)} "
            "(make one with `dora-hf prepare-data`)"
        )
    _check_card(folder / "README.md", DatasetCard)
    shards = [name for name, _ in _listed_files(folder) if name.endswith(".parquet")]
    return verify_folder(folder, shards, checksums=True)


def _check_card(path: Path, card_class: type[ModelCard]) -> None:
    """The Hub rejects a README whose YAML metadata does not parse: find out before uploading."""
    try:
        card = card_class.load(path, ignore_metadata_errors=False)
    except Exception as err:
        raise DoraUserError(f"{path}: the card's metadata does not parse: {err}") from err
    if not card.data.to_dict():
        raise DoraUserError(f"{path} has no YAML metadata block; re-export or re-prepare the folder")


def check_repo_id(repo_id: str, flag: str = "--repo-id") -> None:
    """`repo_id` is a valid `ORG/NAME` Hub repo id (checked locally)."""
    if repo_id.count("/") != 1:
        raise DoraUserError(f"{flag} must be ORG/NAME (a user or organisation, then the repo name), got {repo_id!r}")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise DoraUserError(f"{flag} {repo_id!r} is not a valid Hub repo id: {err}") from err


def check_push_target(repo_id: str | None) -> None:
    """What a push at the end of a training run needs, checked before the run starts: a valid
    `--hub_model_id` and a token (no network call)."""
    if not repo_id:
        raise DoraUserError("--push_to_hub needs --hub_model_id ORG/NAME")
    check_repo_id(repo_id, "--hub_model_id")
    if not get_token():
        raise DoraUserError(
            "--push_to_hub needs a Hugging Face token with write access: set HF_TOKEN or run `hf auth login`"
        )


def plan_upload(folder: str | Path, repo_id: str, repo_type: str = "model") -> UploadPlan:
    """Check the folder and the repo id, and list the files `upload_folder` will send."""
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise DoraUserError(f"folder not found: {folder}")
    if not folder.is_dir():
        raise DoraUserError(f"{folder} is not a folder: pass a `dora-hf export` or `dora-hf prepare-data` output")
    if repo_type not in ("model", "dataset"):
        raise DoraUserError(f"--repo-type must be model or dataset, got {repo_type!r}")
    check_repo_id(repo_id)
    kind = folder_kind(folder)
    if kind is not None and kind != repo_type:
        flag = "--repo-type dataset" if kind == "dataset" else "no --repo-type (models are the default)"
        raise DoraUserError(f"{folder} is a {kind} folder, not a {repo_type} folder: pass {flag}")
    verified = None
    if repo_type == "model":
        check_model_folder(folder)
    else:
        verified = check_dataset_folder(folder)
    return UploadPlan(
        folder=folder, repo_id=repo_id, repo_type=repo_type, files=tuple(_listed_files(folder)), verified=verified
    )


def _listed_files(folder: Path) -> list[tuple[str, int]]:
    """The files of `folder` that `upload_folder(ignore_patterns=IGNORE_PATTERNS)` selects, in its order."""
    paths = {path.relative_to(folder).as_posix(): path for path in sorted(folder.glob("**/*")) if path.is_file()}
    kept = filter_repo_objects(paths, ignore_patterns=list(IGNORE_PATTERNS) + DEFAULT_IGNORE_PATTERNS)
    return [(name, paths[name].stat().st_size) for name in kept]


def push(
    plan: UploadPlan,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
) -> str:
    """Create the repo (and branch) if missing and upload the planned files; returns the commit URL."""
    token = token or get_token()
    if not token:
        raise DoraUserError(
            "no Hugging Face token: set HF_TOKEN to a token with write access or run `hf auth login` "
            "(or pass --dry-run to see what would be uploaded)"
        )
    api = HfApi(token=token)
    message = commit_message or f"Upload {plan.folder.name} with dora-hf push"
    if plan.large and not xet_available():
        print(f"warning: {plan.method_line()}", file=sys.stderr)
    try:
        api.create_repo(plan.repo_id, repo_type=plan.repo_type, private=private, exist_ok=True)
        if revision and revision != "main":
            api.create_branch(plan.repo_id, branch=revision, repo_type=plan.repo_type, exist_ok=True)
        commit = api.upload_folder(
            repo_id=plan.repo_id,
            folder_path=plan.folder,
            repo_type=plan.repo_type,
            revision=revision,
            commit_message=message,
            ignore_patterns=list(IGNORE_PATTERNS),
        )
    except HfHubHTTPError as err:
        raise DoraUserError(f"pushing {plan.folder} to {plan.repo_type} repo {plan.repo_id} failed: {err}") from err
    return str(commit.commit_url)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "folder", metavar="DIR", help="a `dora-hf export` model folder or a `dora-hf prepare-data` dataset folder"
    )
    parser.add_argument("--repo-id", required=True, metavar="ORG/NAME", help="the Hub repo to push to (created if missing)")
    parser.add_argument("--repo-type", choices=("model", "dataset"), default="model", help="model (default) or dataset")
    parser.add_argument("--private", action="store_true", help="create the repo private (an existing repo keeps its visibility)")
    parser.add_argument("--revision", metavar="BRANCH", default=None, help="branch to commit to (created from main if missing)")
    parser.add_argument("--commit-message", default=None, help="message of the upload commit")
    parser.add_argument("--dry-run", action="store_true", help="list the files that would be uploaded, and how, and stop")


def run(args: argparse.Namespace) -> int:
    plan = plan_upload(args.folder, args.repo_id, args.repo_type)
    if args.dry_run:
        print(plan.describe(private=args.private, revision=args.revision))
        return 0
    url = push(plan, private=args.private, revision=args.revision, commit_message=args.commit_message)
    if plan.verified:
        print(plan.verified_line())
    print(f"pushed {len(plan.files)} files ({format_bytes(plan.total_bytes)}) to {plan.repo_id}: {url}")
    return 0
