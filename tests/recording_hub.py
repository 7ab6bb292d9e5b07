"""A recording stand-in for the Hub's write API, for push tests (olah, the test hub server, has none)."""

from __future__ import annotations

from pathlib import Path

import pytest


class RecordingHub:
    """Stands in for the Hub's write API (olah has none): records calls, lists what upload_folder would send."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from huggingface_hub import HfApi

        self.calls: list[tuple[str, dict]] = []
        self.contents: dict[str, bytes] = {}
        real_prepare = HfApi._prepare_upload_folder_additions
        monkeypatch.setattr(HfApi, "_validate_yaml", lambda self, **kwargs: None)

        def create_repo(api, repo_id, **kwargs):
            self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

        def create_branch(api, repo_id, **kwargs):
            self.calls.append(("create_branch", {"repo_id": repo_id, **kwargs}))

        def upload_folder(api, *, repo_id, folder_path, allow_patterns=None, ignore_patterns=None, **kwargs):
            from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS

            patterns = list(ignore_patterns or []) + DEFAULT_IGNORE_PATTERNS  # what upload_folder adds itself
            operations = real_prepare(
                api, folder_path, "", allow_patterns=allow_patterns, ignore_patterns=patterns, repo_type=kwargs.get("repo_type")
            )
            self.calls.append(("upload_folder", {"repo_id": repo_id, **kwargs, "files": [op.path_in_repo for op in operations]}))
            for op in operations:  # what each file holds as sent (a push may send a staged copy, removed after)
                self.contents[op.path_in_repo] = Path(op.path_or_fileobj).read_bytes()

            class Commit:
                commit_url = f"https://hub.invalid/{repo_id}/commit/0"

            return Commit()

        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "create_branch", create_branch)
        monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
