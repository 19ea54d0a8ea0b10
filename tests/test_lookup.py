"""Resolving a typed name: typos of bundled names and local paths fail at once, never going to the network."""

from __future__ import annotations

from pathlib import Path

import pytest

from hf_plasticity.errors import MissingDataError
from hf_plasticity.lookup import check_hub, reject_local_typo

KNOWN = ["digits", "fashion-mnist", "mnist5k"]


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("fashion-mnistt", "did you mean 'fashion-mnist'"),
        ("./nowhere", "the path does not exist"),
        ("/definitely/not/here", "the path does not exist"),
    ],
    ids=["bundled-typo", "relative-path", "absolute-path"],
)
def test_typos_are_refused_with_a_suggestion(name: str, match: str) -> None:
    with pytest.raises(MissingDataError, match=match):
        reject_local_typo(name, KNOWN, "data set")


def test_a_near_miss_of_a_local_folder_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my-images").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingDataError, match=r"did you mean the local path '.*my-images'"):
        reject_local_typo("my-imagez", KNOWN, "data set")


def test_a_missing_entry_in_a_local_folder_lists_what_is_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.png").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingDataError, match=r"holds no 'elsewhere'.*a\.png"):
        reject_local_typo("sub/elsewhere", KNOWN, "model")


def test_a_hub_id_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert reject_local_typo("google/vit-base-patch16-224", KNOWN, "model") is None


def test_an_invalid_hub_id_is_a_missing_name() -> None:
    with pytest.raises(MissingDataError, match="neither an existing local path nor a valid Hub id"):
        check_hub("not//valid", "model")


def test_offline_mode_skips_the_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert check_hub("owner/name", "dataset") is False
