"""Hugging Face Hub downloads (normal HF cache) and silencing of HF-library progress bars.

Only the files a causal LM needs are fetched: ``*.safetensors``, ``*.json``, tokenizer files,
``*.model``, ``*.txt`` and ``*.jinja`` chat templates. Pickle weights (``*.bin``) are fetched
only with ``allow_pickle`` and only when the repository has no safetensors weights.
"""

from __future__ import annotations

import contextlib
import fnmatch
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

from caa_bake.core import CaaBakeError, is_quiet

__all__ = [
    "PICKLE_PATTERNS",
    "SAFE_PATTERNS",
    "download_snapshot",
    "looks_like_hub_id",
    "quiet_hf_progress",
    "weights_kind",
]

SAFE_PATTERNS: tuple[str, ...] = (
    "*.safetensors",
    "*.json",
    "tokenizer*",
    "*.model",
    "*.txt",
    "*.jinja",
    "*.tiktoken",
)
PICKLE_PATTERNS: tuple[str, ...] = ("pytorch_model*.bin", "*.pt", "*.pth", "model*.bin")

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def looks_like_hub_id(spec: str) -> bool:
    """True for ``name`` or ``owner/name`` made of the characters the Hub allows."""
    return bool(_HUB_ID.match(spec)) and ".." not in spec and not spec.endswith(".git")


def weights_kind(names: Iterable[str]) -> Literal["safetensors", "pickle", "none"]:
    """Classify a checkpoint by its file names (basenames or repo paths)."""
    base = [n.rsplit("/", 1)[-1] for n in names]
    if any(n.endswith(".safetensors") for n in base):
        return "safetensors"
    if any(fnmatch.fnmatch(n, pat) for n in base for pat in PICKLE_PATTERNS):
        return "pickle"
    return "none"


@contextlib.contextmanager
def quiet_hf_progress() -> Iterator[None]:
    """While quiet (``caa_bake.core.progress.is_quiet``), hide transformers/huggingface_hub bars."""
    if not is_quiet():
        yield
        return
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )
    from transformers.utils import logging as tf_logging

    hub_was_disabled = are_progress_bars_disabled()
    tf_was_enabled = tf_logging.is_progress_bar_enabled()
    tf_logging.disable_progress_bar()
    disable_progress_bars()
    try:
        yield
    finally:
        if tf_was_enabled:
            tf_logging.enable_progress_bar()
        if not hub_was_disabled:
            enable_progress_bars()


def _snapshot(repo_id: str, revision: str | None, patterns: list[str]) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        with quiet_hf_progress():
            return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except GatedRepoError as err:
        raise CaaBakeError(
            f"'{repo_id}' is gated on the Hugging Face Hub: accept its license on the model page "
            "and log in (`hf auth login` or HF_TOKEN)"
        ) from err
    except RevisionNotFoundError as err:
        raise CaaBakeError(f"revision '{revision}' of '{repo_id}' not found on the Hub") from err
    except RepositoryNotFoundError as err:
        raise CaaBakeError(
            f"'{repo_id}' is not a local folder and was not found on the Hugging Face Hub "
            "(check the name; private repos need `hf auth login` or HF_TOKEN)"
        ) from err
    except LocalEntryNotFoundError as err:
        why = "offline mode is on" if constants.HF_HUB_OFFLINE else "the Hub is not reachable"
        raise CaaBakeError(
            f"cannot download '{repo_id}': {why} and it is not in the local Hugging Face cache; "
            "set HF_HUB_OFFLINE=0 / check network, or pass a local model folder"
        ) from err
    except HfHubHTTPError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CaaBakeError(f"downloading '{repo_id}' from the Hub failed: {first}") from err


def _remote_names(repo_id: str, commit: str) -> list[str] | None:
    """File names of the repo at ``commit`` from the tree listing snapshot_download cached."""
    try:
        from huggingface_hub import get_cached_repo_tree
    except ImportError:  # older huggingface_hub
        return None
    try:
        return [f.path for f in get_cached_repo_tree(repo_id, revision=commit)]
    except Exception:  # no cached listing: we simply cannot tell
        return None


def download_snapshot(
    repo_id: str, *, revision: str | None = None, allow_pickle: bool = False
) -> tuple[Path, str | None]:
    """Download (or reuse from the HF cache) a model repo; return (folder, commit sha).

    Raises CaaBakeError when the Hub cannot be reached and nothing is cached, when the repo
    or revision does not exist, or when it has no safetensors weights (unless
    ``allow_pickle`` and it has ``*.bin`` weights).
    """
    folder = _snapshot(repo_id, revision, list(SAFE_PATTERNS))
    commit = folder.name if _COMMIT.match(folder.name) else None
    local = weights_kind(p.name for p in folder.iterdir())
    if local == "safetensors":
        return folder, commit
    if allow_pickle:
        if not is_quiet():
            print(
                f"'{repo_id}' has no safetensors weights; downloading its pickle weights",
                file=sys.stderr,
                flush=True,
            )
        folder = _snapshot(repo_id, revision, [*SAFE_PATTERNS, *PICKLE_PATTERNS])
        if weights_kind(p.name for p in folder.iterdir()) == "pickle":
            return folder, commit
        raise CaaBakeError(f"'{repo_id}' has no model weights (*.safetensors or *.bin)")
    remote = _remote_names(repo_id, commit) if commit else None
    if remote is not None and weights_kind(remote) == "pickle":
        raise CaaBakeError(
            f"'{repo_id}' has only pickle weights; rerun with --allow-pickle to load them "
            "(pickle can run code)"
        )
    if remote is not None:
        raise CaaBakeError(f"'{repo_id}' has no model weights (*.safetensors or *.bin)")
    raise CaaBakeError(
        f"'{repo_id}' has no *.safetensors weights; if it has pickle weights, rerun with "
        "--allow-pickle to load them (pickle can run code)"
    )
