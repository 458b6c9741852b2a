"""Hub push/pull end to end: the real huggingface_hub client (and timm) against a local stand-in of the Hub.

Nothing of huggingface_hub is mocked. pokedemo.hub reads HF_ENDPOINT / HF_HOME / HF_HUB_OFFLINE / HF_TOKEN when
called, so each test points it at the stand-in (tests/hub_server.py) with monkeypatch; only timm, which calls
hf_hub_download without an endpoint, needs huggingface_hub's import-time constants re-pointed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import refused_port
from hub_server import FakeHub  # tests/ is on sys.path while pytest collects this module
from pokedemo import checkpoint as ckpt
from pokedemo import hub
from pokedemo.checkpoint import CheckpointError
from pokedemo.hub import HubError
from pokedemo.predict import Predictor

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("bulbasaur", "charmander", "pikachu")
HUB_FILES = {".gitattributes", "model.safetensors", "config.json", "history.json", "README.md",
             "timm_model.safetensors"}


# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tokens(fake_hub):
    return SimpleNamespace(
        alice=fake_hub.add_user("alice", orgs=("pokelab",)),
        bob=fake_hub.add_user("bob"),
        reader=fake_hub.add_user("carol", role="read"),
    )


def new_repo(owner: str = "alice") -> str:
    return f"{owner}/model-{uuid.uuid4().hex[:8]}"


def make_checkpoint(root: Path, backbone: str = "efficientnet_lite0", seed: int = 0, status: str = "complete",
                    size: int = 32) -> Path:
    """A complete checkpoint with random weights, written the way the engine writes one."""
    from pokedemo.models import build_classifier, get_backbone

    torch.manual_seed(seed)
    model = build_classifier(backbone, len(CLASSES), pretrained=False)
    with torch.no_grad():  # non-trivial BatchNorm statistics: a mixed-up tensor name would change the outputs
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    spec = get_backbone(backbone)
    run = root / f"{backbone}-{seed}-{status}"
    run.mkdir(parents=True)
    digest = ckpt.save_weights(run, model.state_dict())
    ckpt.write_config(run, {
        "architecture": "pokedemo.models.Classifier", "backbone": backbone, "pretrained": False,
        "num_classes": len(CLASSES), "class_names": list(CLASSES), "image_size": size, "mean": list(spec.mean),
        "std": list(spec.std), "feature_dim": spec.feature_dim, "weights_sha256": digest, "status": status,
        "train_config": {"backbone": backbone, "epochs": 1, "img_size": size, "weights_file": None},
        "dataset": {"root": str(root / "secret-user" / "pokemon"), "class_counts": {c: 8 for c in CLASSES}},
        "metrics": {"best_epoch": 1, "best_val_acc": 0.5, "seconds": 1.0, "test": {
            "accuracy": 2 / 3, "n": 3, "macro_f1": 0.5556, "classes": list(CLASSES),
            "confusion": [[1, 0, 0], [0, 1, 0], [1, 0, 0]],
            "per_class": {c: {"precision": 0.5, "recall": 1.0, "f1": 0.6667, "support": 1} for c in CLASSES}}},
    })
    ckpt.write_history(run, [{"epoch": 1, "train_loss": 1.2, "train_acc": 0.4, "val_loss": 1.1, "val_acc": 0.5}])
    return run


def write_images(root: Path, per_class: int = 2, seed: int = 0) -> Path:
    """ROOT/<class>/<n>.png: random colour-block images, no two alike."""
    rng = np.random.default_rng(seed)
    for name in CLASSES[:3]:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            blocks = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
            Image.fromarray(blocks).resize((40, 36), Image.Resampling.NEAREST).save(root / name / f"{i}.png")
    return root


def image_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.png"))


def uploaded(fake_hub: FakeHub, repo: str, revision: str = "main") -> dict[str, bytes]:
    return fake_hub.repos[repo].resolve(revision).files


def hub_error(action, match: str) -> str:
    """Run action, expect a HubError whose one-line message contains `match`; return the message."""
    with pytest.raises(HubError) as info:
        action()
    message = str(info.value)
    assert match in message, message
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------------------------- push → pull


def test_push_pull_predict_gives_the_same_probabilities(hub_env, tokens, tiny_checkpoint, tmp_path):
    repo = new_repo()
    url = hub.push_checkpoint(tiny_checkpoint, repo, token=tokens.alice)
    assert url == f"{hub_env.url}/{repo}"
    files = uploaded(hub_env, repo)
    assert set(files) == HUB_FILES
    assert files["model.safetensors"] == (tiny_checkpoint / "model.safetensors").read_bytes()

    pulled = hub.download_checkpoint(repo)
    cache = Path(os.environ["HF_HOME"]) / "hub" / f"models--{repo.replace('/', '--')}"
    assert pulled == cache / "snapshots" / hub_env.head(repo)
    assert {p.name for p in pulled.iterdir()} == {"model.safetensors", "config.json", "history.json", "README.md"}

    local, remote = Predictor.load(tiny_checkpoint), Predictor.load(repo)  # the repo id goes through resolve_model
    assert remote.checkpoint.path == pulled and remote.classes == local.classes
    for image in image_files(write_images(tmp_path / "images")):
        assert remote.predict_dict(image) == local.predict_dict(image)

    downloads = sum(r.method == "GET" and "/resolve/" in r.path for r in hub_env.requests)
    assert hub.download_checkpoint(repo) == pulled  # the normal Hub cache: nothing is fetched twice
    assert sum(r.method == "GET" and "/resolve/" in r.path for r in hub_env.requests) == downloads


def test_model_card_has_metadata_classes_metrics_and_usage(hub_env, tokens, tiny_checkpoint):
    from huggingface_hub import ModelCard

    repo = new_repo("pokelab")  # an organisation alice belongs to
    hub.push_checkpoint(tiny_checkpoint, repo, token=tokens.alice)
    text = uploaded(hub_env, repo)["README.md"].decode()
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    test = config["metrics"]["test"]

    meta = yaml.safe_load(text.split("---")[1])
    assert meta["pipeline_tag"] == "image-classification" and meta["library_name"] == "timm"
    assert {"image-classification", "pokedemo", config["backbone"]} <= set(meta["tags"])
    result = ModelCard(text).data.eval_results[0]  # huggingface_hub's own parser of the model-index
    assert (result.task_type, result.metric_type) == ("image-classification", "accuracy")
    assert result.metric_value == pytest.approx(test["accuracy"], abs=1e-4)

    for index, name in enumerate(config["class_names"]):
        assert f"| {index} | {name} |" in text
    for name, row in zip(test["classes"], test["confusion"]):
        assert f"| **{name}** | " + " | ".join(map(str, row)) + " |" in text
    assert f"| test accuracy | {test['accuracy']:.4f} |" in text
    calibration = config["metrics"]["calibration"]  # 24 images: too few validation images to fit T
    assert f"| probability temperature | 1 (not fitted) | {calibration['skipped']}: uncalibrated |" in text
    assert f"| epochs | {config['train_config']['epochs']} |" in text
    rule = config["open_set"]
    assert f"| \"none of these\" rule | {rule['score']} >= {rule['thresholds'][0]:.4f} |" in text
    assert f"threshold fitted on {rule['fitted']['val_images']} validation pictures, " \
           f"{rule['threshold_rule_words']}; statistics in model.safetensors" in text
    assert f"| known-class test images accepted | {test['open_set']['accepted']:.4f} |" in text
    assert f"--checkpoint {repo}" in text and f'Predictor.load("{repo}")' in text
    assert f'timm.create_model("hf-hub:{repo}", pretrained=True)' in text


def test_push_onnx_uploads_the_checked_model_and_shows_both_ways_on_the_card(hub_env, tokens, tiny_checkpoint,
                                                                              tmp_path, capsys):
    """``push --onnx`` through the CLI's main in this process (test_cli_push_then_predict_at_a_revision runs the
    push command as a process of its own)."""
    import onnxruntime as ort

    from pokedemo.cli import main

    repo = new_repo()
    code = main(["push", "--checkpoint", str(tiny_checkpoint), "--repo-id", repo, "--token", tokens.alice, "--onnx"])
    done = capsys.readouterr()
    assert code == 0, done.err
    assert done.out.strip() == f"{hub_env.url}/{repo}" and "top-1 agreement" in done.err
    files = uploaded(hub_env, repo)
    assert set(files) == HUB_FILES | {"model.onnx", "predict_onnx.py"}
    (tmp_path / "model.onnx").write_bytes(files["model.onnx"])
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    assert session.get_modelmeta().custom_metadata_map["weights_sha256"] == config["weights_sha256"]
    predictor = Predictor.load(tiny_checkpoint)
    for image in image_files(write_images(tmp_path / "images")):
        found = session.run(None, {"images": predictor.image_tensor(image).numpy()})[0][0]
        expected = predictor.predict_dict(image)
        assert np.abs(found - [expected[c] for c in predictor.classes]).max() <= 1e-4

    card = files["README.md"].decode()
    assert "Predictor.load" in card and "## Without pokedemo: ONNX" in card and "predict_onnx.py my_image.jpg" in card
    assert "| size | " in card and "onnxruntime" in card and "PyTorch (pokedemo)" in card
    assert "same top-1 class on" in card and "| model.onnx | " in card
    assert "onnx" in yaml.safe_load(card.split("---")[1])["tags"]


def test_an_onnx_export_of_other_weights_is_refused(hub_env, tokens, tiny_checkpoint, tmp_path):
    other = make_checkpoint(tmp_path / "runs", backbone="resnet18")
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"onnx")
    export = hub.OnnxExport({"metadata": {"weights_sha256": ckpt.read_config(other)["weights_sha256"]},
                             "runtime_files": ["model.onnx"], "onnx_file": "model.onnx"}, [onnx_file])
    repo = new_repo()
    with pytest.raises(CheckpointError, match="other weights"):
        hub.push_checkpoint(tiny_checkpoint, repo, token=tokens.alice, onnx=export)
    assert repo not in hub_env.repos  # refused before anything was created


def test_published_config_serves_pokedemo_and_timm_without_local_paths(hub_env, tokens, tmp_path):
    run = make_checkpoint(tmp_path)
    repo = new_repo()
    hub.push_checkpoint(run, repo, token=tokens.alice)
    files = uploaded(hub_env, repo)
    config = json.loads(files["config.json"])
    local = json.loads((run / "config.json").read_text())
    assert config["format"] == "pokedemo-checkpoint" and config["weights_sha256"] == local["weights_sha256"]
    assert config["architecture"] == "tf_efficientnet_lite0" and config["label_names"] == list(CLASSES)
    assert config["pretrained_cfg"]["input_size"] == [3, 32, 32] and config["pretrained_cfg"]["mean"] == local["mean"]
    assert config["dataset"]["root"] == "pokemon"  # the folder name, not the uploader's absolute path
    assert not any(str(tmp_path).encode() in data for data in files.values())


def test_published_config_keeps_only_the_name_of_a_local_weights_file(hub_env, tokens, tmp_path):
    run = make_checkpoint(tmp_path)
    local = json.loads((run / "config.json").read_text())
    weights_file = tmp_path / "home" / "secret-user" / "weights" / "lite0.safetensors"
    local["train_config"]["weights_file"] = str(weights_file)
    ckpt.write_config(run, local)
    repo = new_repo()
    hub.push_checkpoint(run, repo, token=tokens.alice)
    files = uploaded(hub_env, repo)
    assert json.loads(files["config.json"])["train_config"]["weights_file"] == "lite0.safetensors"
    assert not any(b"secret-user" in data for data in files.values())
    assert json.loads((run / "config.json").read_text())["train_config"]["weights_file"] == str(weights_file)


def test_unfinished_run_is_refused_before_anything_is_created(hub_env, tokens, tmp_path):
    run = make_checkpoint(tmp_path, status="training")
    repo = new_repo()
    with pytest.raises(CheckpointError, match="unfinished"):
        hub.push_checkpoint(run, repo, token=tokens.alice)
    assert repo not in hub_env.repos


# --------------------------------------------------------------------------------------------- timm


@pytest.mark.parametrize("backbone", ["resnet18", "efficientnet_lite0"])
def test_timm_loads_the_pushed_model_with_identical_outputs(hub_env, tokens, tmp_path, monkeypatch, backbone):
    import timm
    from huggingface_hub import constants

    run = make_checkpoint(tmp_path, backbone)
    repo = new_repo()
    pushed = hub.push_checkpoint_details(run, repo, token=tokens.alice)
    assert pushed.timm_compatible
    # timm calls hf_hub_download without an endpoint or cache: re-point huggingface_hub's frozen settings.
    monkeypatch.setattr(constants, "ENDPOINT", hub_env.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        hub_env.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "timm-cache"))
    spec = f"hf-hub:{repo}@{pushed.commit_oid}" if backbone == "resnet18" else f"hf-hub:{repo}"
    model = timm.create_model(spec, pretrained=True).eval()
    assert any(r.path.endswith("/timm_model.safetensors") and r.method == "GET" for r in hub_env.requests)
    assert model.pretrained_cfg["label_names"] == list(CLASSES)
    data_config = timm.data.resolve_data_config({}, model=model)
    predictor = Predictor.load(run, device=torch.device("cpu"))  # beside timm's model, in float32 on the CPU
    config = predictor.checkpoint.config
    assert tuple(data_config["input_size"]) == (3, 32, 32)
    assert list(data_config["mean"]) == config["mean"] and list(data_config["std"]) == config["std"]
    # The model card's timm recipe, on a square image: the same pixels as pokedemo's preprocessing.
    square = tmp_path / "square.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(square)
    transform = timm.data.create_transform(**data_config)
    with torch.no_grad():
        probs = model(transform(Image.open(square).convert("RGB")).unsqueeze(0)).softmax(-1)[0]
    expected = predictor.predict_dict(square)
    assert probs.tolist() == pytest.approx([expected[c] for c in CLASSES], abs=1e-5)

    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    x = images.float() / 255
    mean, std = (torch.tensor(config[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    with torch.no_grad():
        timm_logits = model((x - mean) / std)
        ours = predictor.model(x)  # pokedemo's Classifier normalises inside
    assert torch.allclose(timm_logits, ours, atol=1e-4), (timm_logits - ours).abs().max()
    assert torch.allclose(timm_logits.softmax(1), predictor.probabilities(images), atol=1e-4)


# --------------------------------------------------------------------------------------------- revisions, private


def test_revisions_pin_what_is_downloaded(hub_env, tokens, tmp_path):
    from huggingface_hub import HfApi

    repo = new_repo()
    v1, v2 = make_checkpoint(tmp_path, seed=1), make_checkpoint(tmp_path, seed=2)
    first = hub.push_checkpoint_details(v1, repo, token=tokens.alice)
    second = hub.push_checkpoint_details(v2, repo, token=tokens.alice, commit_message="second model")
    assert hub_env.repos[repo].commits[second.commit_oid].message == "second model"
    HfApi(endpoint=hub_env.url, token=tokens.alice).create_branch(repo, branch="stable", revision=first.commit_oid)

    def weights(spec: str) -> bytes:
        return (hub.download_checkpoint(spec) / "model.safetensors").read_bytes()

    assert weights(repo) == (v2 / "model.safetensors").read_bytes()
    assert weights(f"{repo}@{first.commit_oid}") == (v1 / "model.safetensors").read_bytes()
    assert weights(f"{repo}@stable") == (v1 / "model.safetensors").read_bytes()
    hub_error(lambda: hub.download_checkpoint(f"{repo}@nope"), "revision 'nope' not found")


def test_private_repo_needs_a_token_that_can_read_it(hub_env, tokens, tmp_path, monkeypatch):
    run = make_checkpoint(tmp_path)
    repo = new_repo()
    hub.push_checkpoint(run, repo, private=True, token=tokens.alice)
    assert hub_env.repos[repo].private
    run = make_checkpoint(tmp_path, seed=3)
    again = hub.push_checkpoint_details(run, repo, token=tokens.alice)
    assert again.private and hub_env.repos[repo].private  # pushing without --private keeps it private
    message = hub_error(lambda: hub.download_checkpoint(repo), "not found")
    assert "private" in message
    monkeypatch.setenv("HF_TOKEN", tokens.bob)  # someone else's token
    hub_error(lambda: hub.download_checkpoint(repo), "not found")
    monkeypatch.setenv("HF_TOKEN", tokens.alice)
    pulled = hub.download_checkpoint(repo)
    assert (pulled / "model.safetensors").read_bytes() == (run / "model.safetensors").read_bytes()


def test_private_push_never_lands_in_an_existing_public_repo(hub_env, tokens, tmp_path):
    run = make_checkpoint(tmp_path)
    repo = new_repo()
    hub.push_checkpoint(run, repo, token=tokens.alice)
    head = hub_env.head(repo)
    hub_error(lambda: hub.push_checkpoint(run, repo, private=True, token=tokens.alice), "already exists and is public")
    assert hub_env.head(repo) == head


# --------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("who, repo_owner, expected", [
    ("invalid", "alice", "rejected the token"),
    ("reader", "carol", "read-only"),
    ("bob", "alice", "may not write to"),
])
def test_push_errors_are_one_clear_line(hub_env, tokens, tmp_path, who, repo_owner, expected):
    run = make_checkpoint(tmp_path)
    token = "hf_NotARealTokenAtAll123" if who == "invalid" else getattr(tokens, who)
    repo = new_repo(repo_owner)
    message = hub_error(lambda: hub.push_checkpoint(run, repo, token=token), expected)
    assert token not in message
    assert repo not in hub_env.repos


def test_push_into_someone_elses_existing_repo_is_refused(hub_env, tokens, tmp_path):
    run = make_checkpoint(tmp_path)
    repo = new_repo()
    hub.push_checkpoint(run, repo, token=tokens.alice)
    head = hub_env.head(repo)
    hub_error(lambda: hub.push_checkpoint(run, repo, token=tokens.bob), "may not write to")
    assert hub_env.head(repo) == head


def test_push_without_any_token(hub_env, tmp_path):
    run = make_checkpoint(tmp_path)
    hub_error(lambda: hub.push_checkpoint(run, new_repo()), "no Hugging Face token")


def test_download_errors(hub_env, tokens, tmp_path):
    hub_error(lambda: hub.download_checkpoint("alice/does-not-exist"), "model repo alice/does-not-exist not found")
    hub_env.create_repo("alice/other-model", files={"config.json": b'{"architecture": "resnet50"}',
                                                    "model.safetensors": b"not ours"})
    hub_error(lambda: hub.download_checkpoint("alice/other-model"), "not a pokedemo model: its config.json has no")
    hub_env.create_repo("alice/just-a-readme", files={"README.md": b"# hello\n"})
    hub_error(lambda: hub.download_checkpoint("alice/just-a-readme"), "not a pokedemo model: the repo has no config")
    config = (make_checkpoint(tmp_path) / "config.json").read_bytes()
    hub_env.create_repo("alice/no-weights", files={"config.json": config})
    hub_error(lambda: hub.download_checkpoint("alice/no-weights"), "not a complete pokedemo model")


@pytest.mark.parametrize("spec", ["not-a-repo", "a/b/c", "alice/name@", "../x", "alice/na me", "alice/a--b",
                                  "alice/x.git", "alice/-x", "alice/" + "x" * 97])
def test_invalid_repo_ids(hub_env, spec):
    hub_error(lambda: hub.download_checkpoint(spec), "invalid Hub repo id")


def test_one_repo_id_parser_for_the_cli_the_app_and_predict(tmp_path, monkeypatch):
    from pokedemo.model_ref import resolve_model

    assert hub.parse_repo_ref(" alice/my_model.v2@v1 ") == hub.RepoRef("alice/my_model.v2", "v1")
    for spec in ("alice/model", "alice/model@main"):
        assert hub.looks_like_repo_id(spec)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "model").mkdir(parents=True)
    for spec in ("runs/model", "./alice/model", "~/alice", "alice\\model", "alice/a--b", "alice", "", None):
        assert not hub.looks_like_repo_id(spec)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        resolve_model("alice/a--b")  # not a repo id: never sent to the Hub


def test_push_to_a_revision_is_refused(hub_env, tokens, tmp_path):
    hub_error(lambda: hub.push_checkpoint(tmp_path, "alice/x@dev", token=tokens.alice), "main branch")


def test_offline_mode_uses_the_cache_and_explains_the_rest(hub_env, tokens, tmp_path, monkeypatch):
    run = make_checkpoint(tmp_path)
    repo = new_repo()
    hub.push_checkpoint(run, repo, token=tokens.alice)
    pulled = hub.download_checkpoint(repo)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    requests = len(hub_env.requests)
    assert hub.download_checkpoint(repo) == pulled  # cached: works without the network
    assert Predictor.load(repo).classes == list(CLASSES)
    hub_error(lambda: hub.download_checkpoint("alice/never-downloaded"), "offline mode is on (HF_HUB_OFFLINE=1)")
    hub_error(lambda: hub.push_checkpoint(run, repo, token=tokens.alice), "cannot push while offline mode is on")
    assert len(hub_env.requests) == requests


def test_unreachable_hub(hub_env, tokens, tmp_path, monkeypatch):
    run = make_checkpoint(tmp_path)
    with refused_port() as port:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
        hub_error(lambda: hub.download_checkpoint("alice/anything"), "cannot reach the Hugging Face Hub at 127.0.0.1")
        hub_error(lambda: hub.push_checkpoint(run, "alice/anything", token=tokens.alice),
                  "cannot reach the Hugging Face")


# --------------------------------------------------------------------------------------------- app helpers


@pytest.mark.app  # DemoApp imports gradio
def test_push_and_load_for_the_app(hub_env, tokens, tmp_path, monkeypatch):
    """The app's wording of hub.py's results and HubErrors (pokedemo.app.sources / text)."""
    from pokedemo.app import sources, text
    from pokedemo.app.handlers import DemoApp

    run = make_checkpoint(tmp_path)
    repo = new_repo()
    done = sources.push_run(str(run), repo, False, tokens.alice)
    assert done.startswith("✅") and f"[{repo}]({hub_env.url}/{repo})" in done and "hf-hub:" in done
    assert "public" in done
    monkeypatch.setenv("HF_TOKEN", tokens.alice)
    assert sources.push_run(str(run), repo, False, "").startswith("✅")  # empty field: HF_TOKEN
    refused = sources.push_run(str(run), repo, False, "hf_WrongWrongWrong1")
    assert refused.startswith("❌") and "rejected the token" in refused
    assert "hf_WrongWrongWrong1" not in refused and tokens.alice not in refused and "\n" not in refused
    app = DemoApp(tmp_path, "")
    assert app.push(str(run), " ", False, None) == text.PUSH_NO_REPO
    assert app.push(None, repo, False, None) == text.PUSH_NO_CHECKPOINT
    path = sources.fetch_hub_model(repo)
    assert (path / "config.json").is_file()
    message, picker, loaded = app.load_from_hub(repo)
    assert message.startswith("✅") and picker.value == str(path)
    assert [value for _, value in loaded] == [str(path)]  # this session's Hub models, for its gr.State
    with pytest.raises(sources.HubLoadError, match="not found"):
        sources.fetch_hub_model("alice/missing-model")
    message, *_ = app.load_from_hub("alice/missing-model")
    assert message.startswith("❌") and "not found" in message and "\n" not in message
    assert app.load_from_hub("  ")[0] == text.LOAD_NO_REPO


# --------------------------------------------------------------------------------------------- the token


def test_token_never_leaks(hub_env, tokens, tmp_path, monkeypatch, capfd):
    token = tokens.alice
    run = make_checkpoint(tmp_path)
    repo = new_repo()
    from pokedemo.app.sources import push_run

    messages = [push_run(str(run), repo, True, token)]
    monkeypatch.setenv("HF_TOKEN", token)
    hub.download_checkpoint(repo)
    # A server that echoes credentials in its errors: what reaches the user must still be clean.
    hub_env.echo_credentials_in_errors, hub_env.reject_commits = True, "commit refused"
    try:
        changed = make_checkpoint(tmp_path, seed=1)  # unchanged files would not even be committed
        messages.append(hub_error(lambda: hub.push_checkpoint(changed, repo, token=token), "HTTP 422"))
        messages.append(hub_error(lambda: hub.push_checkpoint(run, new_repo("bob"), token=token), "may not write"))
        messages.append(hub_error(lambda: hub.download_checkpoint(f"{repo}@nope"), "not found"))
        messages.append(push_run(str(run), repo, False, token))
    finally:
        hub_env.echo_credentials_in_errors, hub_env.reject_commits = False, None
    assert any("Bearer ***" in m for m in messages), messages  # the echo was there, and was scrubbed
    out, err = capfd.readouterr()
    assert token not in "\n".join(messages) + out + err
    files = [p for root in (run, Path(os.environ["HF_HOME"])) for p in root.rglob("*") if p.is_file()]
    assert len(files) > 5
    for path in files:
        assert token.encode() not in path.read_bytes(), path
    for name, data in uploaded(hub_env, repo).items():
        assert token.encode() not in data, name
    assert not any(token in r.path for r in hub_env.requests)


# --------------------------------------------------------------------------------------------- command line


def run_cli(*args, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    full_env = {**clean, "PYTHONPATH": str(ROOT), "HF_HUB_DISABLE_TELEMETRY": "1", **env}
    return subprocess.run([sys.executable, "-m", "pokedemo", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env=full_env, timeout=300)


def test_cli_push_then_predict_at_a_revision(hub_env, tokens, tmp_path, capsys):
    """push runs as a process of its own; predict downloads the pinned revision through the CLI's main in this
    process (its Hub cache is the test's fresh one, so the weights come from the stand-in)."""
    from pokedemo.cli import main

    run = make_checkpoint(tmp_path)
    repo = new_repo()
    env = {"HF_ENDPOINT": hub_env.url, "HF_HOME": str(tmp_path / "cli-home")}
    pushed = run_cli("push", "--checkpoint", run, "--repo-id", repo, "--token", tokens.alice,
                     "--commit-message", "from the CLI", env=env)
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.strip() == f"{hub_env.url}/{repo}"
    commit = hub_env.head(repo)
    assert hub_env.repos[repo].commits[commit].message == "from the CLI"

    image = image_files(write_images(tmp_path / "images", per_class=1))[0]
    def downloads() -> int:
        return sum(r.method == "GET" and "/resolve/" in r.path for r in hub_env.requests)

    before = downloads()
    code = main(["predict", "--checkpoint", f"{repo}@{commit}", "--json", "--top-k", "3", str(image)])
    predicted = capsys.readouterr()
    assert code == 0, predicted.err
    assert downloads() > before  # downloaded from the stand-in, not found in a cache
    expected = Predictor.load(run).predict(image, top_k=3)
    got = json.loads(predicted.out)[0]["top_k"]
    assert [t["label"] for t in got] == [label for label, _ in expected]
    assert [t["prob"] for t in got] == pytest.approx([p for _, p in expected], abs=1e-6)

    assert tokens.alice not in pushed.stdout + pushed.stderr + predicted.out + predicted.err


def test_cli_predict_from_a_missing_revision_exits_2(hub_env, tokens, tmp_path, capsys):
    from pokedemo.cli import main

    repo = new_repo()
    hub.push_checkpoint(make_checkpoint(tmp_path), repo, token=tokens.alice)
    image = image_files(write_images(tmp_path / "images", per_class=1))[0]
    assert main(["predict", "--checkpoint", f"{repo}@nope", str(image)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: revision 'nope' not found") and err.count("\n") == 1


@pytest.mark.parametrize("args, expected", [
    (["--token", "hf_BadBadBadToken42"], "rejected the token"),
    (["--repo-id", "alice/x@v1"], "main branch"),
    (["--repo-id", "bob/taken", "--token", "TOKEN"], "may not write to bob/taken"),
])
def test_cli_push_errors_exit_2_with_one_line(hub_env, tokens, tmp_path, capsys, args, expected):
    from pokedemo.cli import main

    run = make_checkpoint(tmp_path)
    argv = ["push", "--checkpoint", str(run), "--repo-id", new_repo(), "--token", tokens.alice]
    argv += [tokens.alice if a == "TOKEN" else a for a in args]  # later options win in argparse
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and expected in err and err.count("\n") == 1
    assert tokens.alice not in err and "hf_BadBadBadToken42" not in err


def test_cli_push_offline_exits_2(hub_env, tokens, tmp_path, monkeypatch, capsys):
    from pokedemo.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", tokens.alice)
    assert main(["push", "--checkpoint", str(make_checkpoint(tmp_path)), "--repo-id", new_repo()]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: cannot push while offline mode is on (HF_HUB_OFFLINE=1)")
    assert err.count("\n") == 1


def test_model_card_names_the_training_and_the_prediction_size():
    from pokedemo.hub.card import _card_intro

    config = {"backbone": "efficientnet_lite0", "num_classes": 5, "image_size": 176,
              "train_config": {"img_size": 128}, "status": "complete"}
    assert "at 128×128 px (predicting at 176×176)" in _card_intro(config, "me/poke")
    old = {**config, "image_size": 128}  # checkpoints from before eval_scale: one size
    assert "at 128×128 px with pokedemo" in _card_intro(old, "me/poke")
