"""`dora-hf push DIR --repo-id ORG/NAME`: upload an exported model, a prepared dataset or a Space to the Hub.

Everything that can be checked locally is checked before the first network call, so a typo costs
no upload: the folder exists and is what `--repo-type` says (a `dora-hf export` model folder, a
`dora-hf prepare-data` dataset folder or a Space folder such as `spaces/dora-tracks`), its card's
metadata parses, a dataset's shards match its manifest (names, sizes, rows and sha256: nothing
missing, extra, truncated or altered is uploaded), a Space's `app_file` is there and its
requirements install dora-hf (pinned to the pushing version), the repo id is `ORG/NAME` and a token
is available. Secrets (`.env`, keys), links out of the folder and editor leftovers are left out
with a line each (`upload_files`). `--dry-run` prints exactly the files the push sends, and how
they go up, and contacts nobody. The upload itself is
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
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import DatasetCard, HfApi, ModelCard, get_token
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
from huggingface_hub.utils import validate_repo_id

from ..dataset.manifest import VerifyReport, verify_folder
from ..errors import DoraUserError
from ..folders.output_folder import MARKER_FILE
from .space_folder import REQUIREMENTS, PinnedRequirements, check_space_folder, looks_like_space
from .upload_files import FolderFiles, LeftOut, list_upload_files

IGNORE_PATTERNS: tuple[str, ...] = ("__pycache__/*", "*/__pycache__/*", "*.pyc", ".DS_Store", "*/.DS_Store", MARKER_FILE)
"""Never uploaded (on top of huggingface_hub's own `.git` and `.cache/huggingface`); the dora-hf
marker only says which local command wrote the folder."""

REPO_TYPES = ("model", "dataset", "space")
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
    left_out: tuple[LeftOut, ...] = ()
    """Files of the folder not uploaded (secrets, links out of it, leftovers), each with why."""
    pinned: PinnedRequirements | None = None
    """A Space's requirements.txt as pushed (dora-hf pinned), in place of the folder's."""
    rewrites: dict[str, bytes] = field(default_factory=dict)
    """Files sent with other contents than the folder's (path in repo -> bytes)."""

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
        notes = [item.line() for item in self.left_out] + ([self.pinned.line()] if self.pinned else [])
        return "\n".join(lines + notes + ([self.verified_line()] if self.verified else []) + [self.method_line()])

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
    """'model' for an exported DoRA model folder, 'dataset' for a prepared one, 'space' for a Space, else None."""
    if (folder / "config.json").is_file():
        return "model"
    if (folder / "prepare_info.json").is_file() or any((folder / "data").glob("*.parquet")):
        return "dataset"
    if looks_like_space(folder):
        return "space"
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
    shards = [name for name, _ in list_upload_files(folder, IGNORE_PATTERNS).files if name.endswith(".parquet")]
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
    if repo_type not in REPO_TYPES:
        raise DoraUserError(f"--repo-type must be one of {', '.join(REPO_TYPES)}, got {repo_type!r}")
    check_repo_id(repo_id)
    kind = folder_kind(folder)
    if kind is not None and kind != repo_type:
        flag = f"--repo-type {kind}" if kind != "model" else "no --repo-type (models are the default)"
        raise DoraUserError(f"{folder} is a {kind} folder, not a {repo_type} folder: pass {flag}")
    verified, pinned = None, None
    if repo_type == "model":
        check_model_folder(folder)
    elif repo_type == "dataset":
        verified = check_dataset_folder(folder)
    else:
        pinned = check_space_folder(folder)
    listing = list_upload_files(folder, IGNORE_PATTERNS)
    rewrites = {REQUIREMENTS: pinned.text.encode()} if pinned else {}
    files = tuple((name, len(rewrites[name]) if name in rewrites else size) for name, size in listing.files)
    if not files:
        raise DoraUserError(f"{folder}: nothing to upload ({len(listing.left_out)} file(s) left out)")
    return UploadPlan(
        folder=folder, repo_id=repo_id, repo_type=repo_type, files=files, verified=verified,
        left_out=listing.left_out, pinned=pinned, rewrites=rewrites,
    )


def _staged_copy(plan: UploadPlan, staging: Path) -> Path:
    """The planned files copied into ``staging`` (links followed), with the plan's rewrites applied."""
    for name, _ in plan.files:
        target = staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if name in plan.rewrites:
            target.write_bytes(plan.rewrites[name])
        else:
            shutil.copyfile(plan.folder / name, target)
    return staging


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
    for item in plan.left_out:
        print(f"warning: {item.line()}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="dora-hf-push-") as staging:
        # A folder whose files go up changed (a Space's pinned requirements) is sent from a copy.
        source = _staged_copy(plan, Path(staging)) if plan.rewrites else plan.folder
        try:
            api.create_repo(plan.repo_id, repo_type=plan.repo_type, private=private, exist_ok=True, **_space_sdk(plan))
            if revision and revision != "main":
                api.create_branch(plan.repo_id, branch=revision, repo_type=plan.repo_type, exist_ok=True)
            commit = api.upload_folder(
                repo_id=plan.repo_id,
                folder_path=source,
                repo_type=plan.repo_type,
                revision=revision,
                commit_message=message,
                allow_patterns=FolderFiles(plan.files, plan.left_out).allow_patterns(),
                ignore_patterns=list(IGNORE_PATTERNS),
            )
        except HfHubHTTPError as err:
            raise DoraUserError(f"pushing {plan.folder} to {plan.repo_type} repo {plan.repo_id} failed: {err}") from err
    return str(commit.commit_url)


def _space_sdk(plan: UploadPlan) -> dict[str, str]:
    """`create_repo` needs a new Space's SDK: the one its README names."""
    if plan.repo_type != "space":
        return {}
    from huggingface_hub import SpaceCard

    return {"space_sdk": str(SpaceCard.load(plan.folder / "README.md").data.to_dict()["sdk"])}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "folder", metavar="DIR",
        help="a `dora-hf export` model folder, a `dora-hf prepare-data` dataset folder or a Space folder (spaces/dora-tracks)",
    )
    parser.add_argument("--repo-id", required=True, metavar="ORG/NAME", help="the Hub repo to push to (created if missing)")
    parser.add_argument("--repo-type", choices=REPO_TYPES, default="model", help="model (default), dataset or space")
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
