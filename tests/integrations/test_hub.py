"""Pushing to and loading from a Hub: the real huggingface_hub client against the loopback stub."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub import HfApi, ModelCard, hf_hub_download
from peft import PeftModel, get_peft_model
from torch import nn

from hf_plasticity import (
    HubAuthError,
    HubPushError,
    ModelCardError,
    PlasticityConfig,
    attach_report,
    export_merged,
    load_adapter,
    measure_plasticity,
    plasticity_lora_config,
    push_to_hub,
)
from hf_plasticity.integrations.cards.sources import report_of
from tests.conftest import HUB, TINY_MODELS, BlockedNetworkError, pixels

REPO = "someone/vit-plasticity"
EXPECTED_FILES = {
    "README.md",
    "adapter_config.json",
    "adapter_model.safetensors",
    "plasticity_report.json",
    "plasticity.png",
}


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(pixel_values=x).logits


def trained(**kwargs: object) -> nn.Module:
    """A plasticity model from a measured report, moved by one optimiser step (so it differs from its base)."""
    report = measure_plasticity(TINY_MODELS["vit"](), pixels(12, seed=1), progress=False)
    model = get_peft_model(TINY_MODELS["vit"](), PlasticityConfig.from_report(report, **kwargs))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
    model.train()
    model(pixel_values=pixels(4, seed=2)).logits.pow(2).mean().backward()
    opt.step()
    return model.eval()


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


# ------------------------------------------------------------------------------------------ no request leaves
def test_the_hub_endpoint_is_the_loopback_stub() -> None:
    assert HUB.endpoint == huggingface_hub.constants.ENDPOINT
    assert HfApi().endpoint == HUB.endpoint
    assert huggingface_hub.hf_api.api.endpoint == HUB.endpoint  # the client frozen at import time


@pytest.mark.parametrize(
    "attempt",
    [
        lambda: socket.create_connection(("huggingface.co", 443), timeout=1),
        lambda: socket.getaddrinfo("huggingface.co", 443),
        lambda: socket.socket().connect(("8.8.8.8", 53)),
        lambda: HfApi(endpoint="https://huggingface.co").model_info("google/vit-base-patch16-224"),
    ],
    ids=["create_connection", "getaddrinfo", "connect", "huggingface_hub"],
)
def test_a_request_beyond_loopback_fails_the_test(attempt, network_guard: list[str]) -> None:
    with pytest.raises(BlockedNetworkError, match=r"tests never leave 127\.0\.0\.1"):
        attempt()
    assert network_guard  # recorded: the guard's teardown would fail this test ...
    network_guard.clear()  # ... which is expected here


# ------------------------------------------------------------------------------------------ push, then download
def test_push_uploads_adapter_report_figure_and_our_card_in_one_commit(hub, tmp_path: Path) -> None:
    model = trained()
    info = push_to_hub(model, REPO, private=True, metrics={"accuracy": 0.5})
    assert set(hub.repos[REPO]) == EXPECTED_FILES
    assert [c["repo"] for c in hub.commits] == [REPO] and hub.private[REPO] is True
    assert info.oid == HfApi().model_info(REPO).sha
    card = ModelCard.load(REPO)  # downloaded through hf_hub_download
    local = tmp_path / "local"
    model.save_pretrained(local)
    assert card.data.plasticity == ModelCard.load(local / "README.md").data.plasticity
    assert card.data.eval_results[0].metric_value == 0.5
    assert f'PeftModel.from_pretrained(base, "{REPO}")' in card.text


def test_an_adapter_loads_from_the_repo_id(hub) -> None:
    model, x = trained(), pixels(3, seed=4)
    push_to_hub(model, REPO)
    peft_loaded = PeftModel.from_pretrained(TINY_MODELS["vit"](), REPO)
    ours = load_adapter(TINY_MODELS["vit"](), REPO)
    assert torch.equal(logits(peft_loaded, x), logits(model, x))
    assert torch.equal(logits(ours, x), logits(model, x))


def test_peft_push_to_hub_uploads_our_card_not_a_generic_one(hub) -> None:
    trained().push_to_hub(REPO, commit_message="plasticity adapter")
    card = ModelCard.load(REPO)
    assert card.data.library_name == "peft" and card.data.plasticity["trained"]["modules"]
    assert "[More Information Needed]" not in card.text
    assert set(hub.repos[REPO]) == EXPECTED_FILES
    assert [c["summary"] for c in hub.commits] == ["plasticity adapter"]


def test_push_a_saved_folder_to_a_branch_leaves_it_untouched(hub, tmp_path: Path) -> None:
    trained().save_pretrained(tmp_path)
    before = digest(tmp_path)
    push_to_hub(tmp_path, REPO, revision="dev")
    assert digest(tmp_path) == before
    assert hub.repos[REPO] == {} and set(hub.branches[REPO]["dev"]) == EXPECTED_FILES
    card = ModelCard.load(hf_hub_download(REPO, "README.md", revision="dev"))
    assert f'"{REPO}"' in card.text  # rebuilt for the repo it went to


EXPORT_LOADER = """
import sys, torch
from transformers import AutoModelForImageClassification
repo, x_path, out_path = sys.argv[1:]
model = AutoModelForImageClassification.from_pretrained(repo)
with torch.no_grad():
    torch.save(model.eval()(pixel_values=torch.load(x_path)).logits, out_path)
assert "hf_plasticity" not in sys.modules, "the export needed hf_plasticity"
print(type(model).__name__)
"""


@pytest.mark.parametrize(
    "kwargs",
    [{"components": ["mha", "ffn_fc1"]}, {"components": ["mha", "ffn_norm"], "keep_original": True}],
    ids=["in-place-merged", "keep-original-merged"],
)
def test_merged_export_loads_from_the_hub_without_hf_plasticity(hub, tmp_path: Path, kwargs: dict) -> None:
    model, x = trained(**kwargs), pixels(3, seed=6)
    push_to_hub(export_merged(model, tmp_path / "export"), "someone/merged")
    torch.save(x, tmp_path / "x.pt")
    env = {**os.environ, "PYTHONPATH": ""}  # this checkout is not importable there
    argv = ["someone/merged", str(tmp_path / "x.pt"), str(tmp_path / "y.pt")]
    done = subprocess.run(
        [sys.executable, "-c", EXPORT_LOADER, *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ViTForImageClassification")
    torch.testing.assert_close(torch.load(tmp_path / "y.pt"), logits(model, x), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------ failures
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


FAILURES = {
    "server-error": ({"fail": {"*": 500}}, HubPushError, "answered 500"),
    "commit-500": ({"fail": {"commit": 500}}, HubPushError, "answered 500"),
    "commit-dropped": ({"fail": {"commit": "drop"}}, HubPushError, "could not reach"),
    "unreachable": ({"endpoint": "closed"}, HubPushError, "could not reach the Hub at http://127.0.0.1"),
    "no-token": ({"token": None}, HubAuthError, "no Hugging Face token found"),
    "invalid-token": ({"hub_token": "the-right-one"}, HubAuthError, r"refused the token \(401\)"),
}


@pytest.mark.parametrize("case", sorted(FAILURES), ids=sorted(FAILURES))
def test_failed_pushes_say_why_and_push_nothing(hub, tmp_path: Path, monkeypatch, case: str) -> None:
    setup, error, match = FAILURES[case]
    trained().save_pretrained(tmp_path)
    before = digest(tmp_path)
    hub.fail.update(setup.get("fail", {}))
    hub.token = setup.get("hub_token")
    if "token" in setup:
        monkeypatch.delenv("HF_TOKEN")
    endpoint = f"http://127.0.0.1:{_closed_port()}" if setup.get("endpoint") else None
    with pytest.raises(error, match=match) as caught:
        push_to_hub(tmp_path, REPO, endpoint=endpoint)
    assert "nothing was pushed" in str(caught.value)
    assert hub.commits == [] and not any(hub.repos.values())
    assert digest(tmp_path) == before
    assert json.loads((tmp_path / "adapter_config.json").read_text())["peft_type"] == "PLASTICITY"


def test_cli_card_push(hub, tmp_path: Path) -> None:
    from hf_plasticity.cli import main

    model = trained()
    model.save_pretrained(tmp_path / "adapter")
    report = report_of(None, model).save(tmp_path / "r.json")
    assert main(["card", "--report", str(report), "--adapter", str(tmp_path / "adapter"), "--push", REPO]) == 0
    assert set(hub.repos[REPO]) == EXPECTED_FILES
    card = ModelCard.load(REPO)
    assert card.data.plasticity["trained"]["modules"] and f'"{REPO}"' in card.text


# ------------------------------------------------------------------------------------------ plasticity LoRA adapters
def lora_trained() -> tuple[nn.Module, object]:
    """A PEFT LoRA model from plasticity_lora_config, its B factors random (B = 0 would make any loader look right)."""
    report = measure_plasticity(TINY_MODELS["vit"](), pixels(12, seed=1), progress=False)
    config = plasticity_lora_config(report, budget=0.2, model=TINY_MODELS["vit"]())
    model = get_peft_model(TINY_MODELS["vit"](), config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(generator=torch.Generator().manual_seed(len(name)))
    return model.eval(), report


@pytest.mark.parametrize("how", ["report-keyword", "attached-report"], ids=["push_to_hub-report", "peft-push_to_hub"])
def test_lora_push_uploads_adapter_card_report_and_figure_in_one_commit(hub, how: str) -> None:
    model, report = lora_trained()
    if how == "report-keyword":
        push_to_hub(model, REPO, report=report)
    else:
        attach_report(model, report)
        model.push_to_hub(REPO)  # PEFT's method, through our hook once a report is attached
    assert set(hub.repos[REPO]) == EXPECTED_FILES and len(hub.commits) == 1
    card = ModelCard.load(REPO)
    assert card.data.plasticity["selection"]["rule"] == "plasticity_lora_config"
    assert f'PeftModel.from_pretrained(base, "{REPO}")' in card.text
    assert json.loads(hub.repos[REPO]["adapter_config.json"])["peft_type"] == "LORA"


def test_lora_push_without_report_names_the_fix_and_pushes_nothing(hub) -> None:
    model, _ = lora_trained()
    with pytest.raises(ModelCardError, match="pass report="):
        push_to_hub(model, REPO)
    assert hub.commits == [] and not any(hub.repos.values())


LORA_LOADER = """
import json, sys, torch
from peft import PeftModel
from transformers import ViTConfig, ViTForImageClassification
repo, config_json, x_path, out_path = sys.argv[1:]
torch.manual_seed(0)
base = ViTForImageClassification(ViTConfig(**json.loads(config_json))).eval()
model = PeftModel.from_pretrained(base, repo).eval()
with torch.no_grad():
    torch.save(model(pixel_values=torch.load(x_path)).logits, out_path)
assert not any(m.startswith("hf_plasticity") for m in sys.modules), "the adapter needed hf_plasticity"
print(type(model).__name__)
"""


def test_pushed_lora_adapter_loads_with_plain_peft_in_a_fresh_process(hub, tmp_path: Path) -> None:
    from tests.conftest import TINY

    model, report = lora_trained()
    x = pixels(3, seed=6)
    push_to_hub(model, REPO, report=report)
    torch.save(x, tmp_path / "x.pt")
    env = {**os.environ, "PYTHONPATH": ""}  # this checkout is not importable there
    argv = [REPO, json.dumps(TINY), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")]
    done = subprocess.run(
        [sys.executable, "-c", LORA_LOADER, *argv], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("PeftModel")
    torch.testing.assert_close(torch.load(tmp_path / "y.pt"), logits(model, x), rtol=1e-5, atol=1e-6)
