"""Resolving a name the user typed: bundled names and local paths first, then the Hub, which must fail fast.

A typo of a bundled name or of a local path never goes to the network (it gets a "did you mean"), and a
Hub that cannot be reached is found out by one short probe, not by a minute of retries inside
``from_pretrained`` / ``load_dataset``.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from .errors import HubUnreachableError, MissingDataError

PROBE_TIMEOUT_S = 4.0
"""How long one Hub probe may take before the Hub counts as unreachable."""

OFFLINE_FIX = (
    "pass a local folder instead (a checkpoint saved with save_pretrained / a data set saved with "
    "save_to_disk), or set HF_HUB_OFFLINE=1 to use only what is already in the Hugging Face cache"
)


def reject_local_typo(name: str, known: Iterable[str], what: str) -> None:
    """Raise with a suggestion when ``name`` is surely meant as a known name or a local path, not a Hub id."""
    known = list(known)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.85)
    if close:
        raise MissingDataError(f"no {what} named {name!r}; did you mean {close[0]!r}? (known names: {known})")
    path = Path(name).expanduser()
    if name.startswith(("./", "../", "/", "~", ".\\", "..\\")) and not path.exists():
        raise MissingDataError(f"no {what} at {name!r}: the path does not exist; pass an existing local path")
    parts = path.parts
    parent = path.parent
    siblings = _entries(parent)
    near = difflib.get_close_matches(path.name, siblings, n=1, cutoff=0.8)
    local_parent = len(parts) > 1 and parent.is_dir()
    if near and (local_parent or len(parts) == 1):
        raise MissingDataError(
            f"no {what} at {name!r}; did you mean the local path {str(parent / near[0])!r}? (or one of {known})"
        )
    if local_parent or len(parts) > 2:  # "folder/typo" where folder is here; Hub ids have at most one "/"
        raise MissingDataError(
            f"no {what} at {name!r}: {str(parent)!r} exists here but holds no {path.name!r} "
            f"(it has: {sorted(siblings)[:10]}); pass an existing local path, a Hub id, or one of {known}"
        )


def check_hub(repo_id: str, repo_type: Literal["model", "dataset"]) -> bool:
    """Probe the Hub once, quickly. True: go ahead online; False: offline mode, use the cache only.

    Raises when the repository does not exist, or the Hub is unreachable (unless a model is in the cache).
    """
    from huggingface_hub import HfApi, constants, try_to_load_from_cache
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    what = "model" if repo_type == "model" else "data set"
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise MissingDataError(
            f"{what} {repo_id!r} is neither an existing local path nor a valid Hub id ({exc}); check the name"
        ) from exc
    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}:
        return False  # the loaders read only the cache then, and fail fast by themselves
    api = HfApi()
    try:
        if repo_type == "model":
            api.model_info(repo_id, timeout=PROBE_TIMEOUT_S)
        else:
            api.dataset_info(repo_id, timeout=PROBE_TIMEOUT_S)
    except RepositoryNotFoundError as exc:
        raise MissingDataError(
            f"{what} {repo_id!r} is not a local path and not on the Hugging Face Hub (or it is private: log in "
            f"with `hf auth login`); check the name, or pass a local folder"
        ) from exc
    except HfHubHTTPError:
        return True  # the Hub answered (e.g. rate limit, server error): let the loader deal with it
    except Exception as exc:  # connection refused, DNS, timeout: the network, not the name
        if repo_type == "model" and isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
            return False  # cached: load it with local_files_only, no retries
        raise HubUnreachableError(
            f"{what} {repo_id!r} is not a local path and the Hugging Face Hub ({api.endpoint}) cannot be reached "
            f"({type(exc).__name__}); {OFFLINE_FIX}"
        ) from exc
    return True


def _entries(folder: Path) -> list[str]:
    try:
        return [p.name for p in folder.iterdir()] if folder.is_dir() else []
    except OSError:
        return []
