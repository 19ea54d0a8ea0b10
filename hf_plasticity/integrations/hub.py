"""Push a plasticity adapter to the Hub with its card, report and figure, in one commit.

``huggingface_hub`` does the work (``HF_ENDPOINT``, the token from the usual places, ``private``,
``revision``); this module decides what goes in the commit (the adapter, ``plasticity_report.json``,
``plasticity.png`` and *our* card, never a generic one) and turns every failure into a
:class:`HubPushError` that names the cause. Nothing is reported as pushed unless the commit was accepted,
and the local files are never changed by a push.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import HubAuthError, HubPushError, ModelCardError, PlasticityError
from .cards import CARD_NAME, FIGURE_NAME, REPORT_NAME, build_model_card, merge_model_card, save_card_files

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo

    from ..report.report import PlasticityReport


def push_to_hub(
    model_or_dir: Any,
    repo_id: str,
    *,
    commit_message: str | None = None,
    commit_description: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    metrics: Mapping[str, float] | str | os.PathLike[str] | None = None,
    endpoint: str | None = None,
    card: str | None = None,
    report: PlasticityReport | str | os.PathLike[str] | None = None,
) -> CommitInfo:
    """Upload a plasticity model (or a saved adapter folder) with its card, report and figure, in one commit.

    ``model_or_dir`` is a PEFT model with a plasticity adapter (saved to a temporary folder first) or a
    folder written by ``save_pretrained``. A PEFT model with a LoRA adapter (from
    :func:`hf_plasticity.plasticity_lora_config`) is pushed the same way given ``report`` (the report its ranks
    were allocated from, or its path; or one attached with :func:`hf_plasticity.attach_report`): the adapter
    as PEFT saves it, which ``peft`` alone loads, with a LoRA card. ``report`` also replaces a plasticity
    model's own report on the card. The card is rebuilt with ``repo_id`` in its loading snippet and
    merged with the folder's README; a folder's own files are uploaded as they are and never modified.
    Returns huggingface_hub's ``CommitInfo``; raises :class:`HubPushError` (:class:`HubAuthError` for
    token problems) when nothing was pushed. ``card`` (a card's text) is uploaded as it is instead of the
    card built here.
    """
    from huggingface_hub import CommitOperationAdd, HfApi, get_token

    api = HfApi(endpoint=endpoint, token=token)
    where = api.endpoint
    if not (token or get_token()):
        raise HubAuthError(
            f"no Hugging Face token found to push to {repo_id!r}: pass token=..., set HF_TOKEN, or run "
            "`hf auth login`; nothing was pushed"
        )
    with tempfile.TemporaryDirectory(prefix="hf-plasticity-push-") as staging:
        if isinstance(model_or_dir, str | os.PathLike):
            folder = Path(model_or_dir)
            if not folder.is_dir():
                raise HubPushError(f"nothing to push: {str(folder)!r} is not a folder")
            card_text = card if card is not None else _folder_card(folder, repo_id, metrics, report)
        else:
            folder = Path(staging)
            model_or_dir.save_pretrained(str(folder))  # our hook writes the card, else PEFT writes a generic one
            (folder / CARD_NAME).unlink(missing_ok=True)
            # ours, naming the repo in the loading snippet, with the report and figure beside it
            save_card_files(model_or_dir, folder, repo_id=repo_id, metrics=metrics, report=report)
            card_text = (folder / CARD_NAME).read_text(encoding="utf-8")
        top_card = folder / CARD_NAME
        operations = [
            CommitOperationAdd(path_in_repo=path.relative_to(folder).as_posix(), path_or_fileobj=str(path))
            for path in sorted(folder.rglob("*"))
            if path.is_file() and not (card_text is not None and path == top_card)
        ]
        if card_text is not None:
            operations.append(CommitOperationAdd(path_in_repo=CARD_NAME, path_or_fileobj=card_text.encode("utf-8")))
        if not operations:
            raise HubPushError(f"nothing to push: {str(folder)!r} is empty")
        try:
            repo = api.create_repo(repo_id, private=private, exist_ok=True)
            if revision is not None and not revision.startswith("refs/pr/"):
                api.create_branch(repo.repo_id, branch=revision, exist_ok=True)
            return api.create_commit(
                repo.repo_id,
                operations,
                commit_message=commit_message or "Upload plasticity adapter, report and model card",
                commit_description=commit_description,
                revision=revision,
                create_pr=create_pr,
            )
        except PlasticityError:
            raise
        except Exception as exc:
            raise _push_error(exc, repo_id, where) from exc


def push_card_files(
    card: str | os.PathLike[str],
    repo_id: str,
    *,
    adapter: str | os.PathLike[str] | None = None,
    report: PlasticityReport | None = None,
    figure: str | os.PathLike[str] | None = None,
    private: bool | None = None,
    revision: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
) -> CommitInfo:
    """Push a written card as it is, with the adapter folder, the report and the figure beside it, in one commit.

    What ``hf-plasticity card --push`` uploads: the files are staged in a temporary folder (the adapter
    copied, the report saved, the figure copied), so nothing local changes and the card on the Hub is the
    one just written, merged README included.
    """
    text = Path(card).read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="hf-plasticity-card-") as staging:
        stage = Path(staging)
        if adapter is not None:
            shutil.copytree(adapter, stage, dirs_exist_ok=True)
        if report is not None:
            report.save(stage / REPORT_NAME)
        if figure is not None and Path(figure).is_file():
            shutil.copy2(figure, stage / FIGURE_NAME)
        (stage / CARD_NAME).write_text(text, encoding="utf-8")
        return push_to_hub(
            stage, repo_id, private=private, revision=revision, token=token, endpoint=endpoint, card=text
        )


def _folder_card(folder: Path, repo_id: str, metrics: Any, report: Any) -> str | None:
    """The card to upload for a saved folder: ours (rebuilt for ``repo_id``) over its README, or its README."""
    from huggingface_hub import ModelCard

    if not (folder / "adapter_config.json").is_file() or '"PLASTICITY"' not in (
        folder / "adapter_config.json"
    ).read_text(encoding="utf-8"):
        if report is not None:
            raise ModelCardError(
                f"report= cannot card the folder {str(folder)!r}: it holds no plasticity adapter; for a LoRA adapter "
                "push the PEFT model itself: push_to_hub(model, repo_id, report=report)"
            )
        return None  # not a plasticity adapter (e.g. an export): its own README, if any, goes as it is
    existing = (folder / CARD_NAME).read_text(encoding="utf-8") if (folder / CARD_NAME).is_file() else None
    card: ModelCard = build_model_card(folder, report=report, repo_id=repo_id, metrics=metrics)
    return str(merge_model_card(card, existing))


def _push_error(exc: Exception, repo_id: str, endpoint: str) -> HubPushError:
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        status = exc.response.status_code
        if status in (401, 403):
            return HubAuthError(
                f"the Hub at {endpoint} refused the token ({status}) for {repo_id!r}: check that it is valid and "
                "has write access (token=..., HF_TOKEN or `hf auth login`); nothing was pushed"
            )
        return HubPushError(
            f"the Hub at {endpoint} answered {status} while pushing {repo_id!r} ({_first_line(exc)}); nothing was "
            "pushed: retry later or check the repo id and revision"
        )
    return HubPushError(
        f"could not reach the Hub at {endpoint} to push {repo_id!r} ({type(exc).__name__}: {_first_line(exc)}); "
        "check the network or HF_ENDPOINT; nothing was pushed"
    )


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
