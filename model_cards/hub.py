"""Upload a folder to the Hugging Face Hub: the one helper behind `train.py --push_to_hub` (a model folder) and
`datasets_scripts.export --push_to_hub` (a dataset folder). No library code imports it."""

from __future__ import annotations

import os
from collections.abc import Sequence

from huggingface_hub import HfApi

# What a trained model folder pushed to the Hub leaves out (training by-products, caches).
MODEL_FOLDER_IGNORE_PATTERNS = ("checkpoints/**", "stage1/**", "best/**", "logs/**", ".cache/**")


def push_folder(folder: str | os.PathLike, repo_id: str, *, repo_type: str = "model", private: bool = False,
                commit_message: str = "Upload with PIG-HF", ignore_patterns: Sequence[str] | None = None,
                token: str | None = None) -> str:
    """Create the Hub repository `repo_id` of `repo_type` ("model" or "dataset") if needed, upload `folder` to
    it (without the files matching `ignore_patterns`) and return the commit URL."""
    if repo_type not in ("model", "dataset"):
        raise ValueError(f"repo_type={repo_type!r}; expected 'model' or 'dataset'")
    api = HfApi(token=token)
    api.create_repo(repo_id=repo_id, repo_type=repo_type, private=private, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, repo_type=repo_type, folder_path=str(folder),
                             commit_message=commit_message,
                             ignore_patterns=list(ignore_patterns) if ignore_patterns is not None else None)
    return str(getattr(info, "commit_url", info))
