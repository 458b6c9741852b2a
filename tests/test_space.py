"""deploy-space against the local Hub stand-in, with the real client: the Space it makes, downloaded into an
empty folder, runs the same working demo (bundled data, starter model) with nothing configured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import app_client, start_app_process

from pokedemo.hub import HubError, space

REPO_ROOT = Path(__file__).resolve().parents[1]
# The tests that read the deployed Space run in one pytest-xdist worker, so it is deployed once per run.
pytestmark = pytest.mark.xdist_group("deployed-space")
ALLOWED_TOP = {"app.py", "requirements.txt", "README.md", ".gitattributes", "pokedemo", "data", "checkpoints"}


def tracked(*paths: str) -> set[str]:
    out = subprocess.run(["git", "ls-files", "--", *paths], cwd=REPO_ROOT, capture_output=True, text=True,
                         check=True).stdout
    return set(out.split("\n")) - {""}


@pytest.fixture(scope="module")
def deployed(fake_hub, tmp_path_factory):
    """(repo id, token, local snapshot folder) of the Space deployed from this checkout."""
    from huggingface_hub import snapshot_download

    token = fake_hub.add_user("carol")
    fake_hub.create_repo("carol/demo", kind="space", sdk="gradio",
                         files={"old-module.py": b"# left over from an earlier deploy\n"})
    base = tmp_path_factory.mktemp("space")
    env = {"HF_ENDPOINT": fake_hub.url, "HF_HOME": str(base / "hf-home"), "HF_HUB_OFFLINE": "0"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        url = space.deploy_space("carol/demo", token=token, hardware="cpu-upgrade")
        folder = Path(snapshot_download("carol/demo", repo_type="space", local_dir=base / "snapshot",
                                        endpoint=fake_hub.url, token=token))
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    assert url.endswith("/spaces/carol/demo")
    return "carol/demo", token, folder


def snapshot_files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")
            if p.is_file() and ".cache" not in p.relative_to(folder).parts}


def test_space_holds_exactly_what_the_app_needs(deployed, fake_hub):
    _, _, folder = deployed
    files = snapshot_files(folder)
    assert {f.split("/")[0] for f in files} == ALLOWED_TOP
    assert tracked("app.py", "requirements.txt", "pokedemo", "data/pokemon", "checkpoints/pokemon-starter") <= files
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc") or f.startswith("checkpoints/")
                and not f.startswith("checkpoints/pokemon-starter/")]
    assert "old-module.py" not in files  # what an earlier deploy left is removed in the same commit
    assert (folder / "data/pokemon/pikachu").is_dir()
    repo = fake_hub.spaces["carol/demo"]
    assert repo.sdk == "gradio" and repo.hardware == "cpu-upgrade"


def test_space_readme_front_matter_builds_a_gradio_space(deployed):
    import yaml

    _, _, folder = deployed
    text = (folder / "README.md").read_text(encoding="utf-8")
    meta = yaml.safe_load(text.split("---")[1])
    import gradio

    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["sdk_version"] == gradio.__version__
    assert meta["python_version"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert "POKEDEMO_MODEL" in text


def test_space_snapshot_runs_the_demo_with_the_starter(deployed, tmp_path):
    """The downloaded Space's own app.py, in its own folder, answers /predict with the starter's top 5."""
    _, _, folder = deployed
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POKEDEMO_", "HF_", "PYTHONPATH"))}
    env.update(GRADIO_ANALYTICS_ENABLED="False", HF_HOME=str(tmp_path / "hf-home"), HF_HUB_OFFLINE="1")
    command = lambda port: [sys.executable, "app.py", "--port", str(port)]  # noqa: E731
    process, url, _ = start_app_process(command, tmp_path / "logs", cwd=folder, env=env)
    try:
        answer_a_prediction(url, folder)
    finally:
        process.terminate()
        process.wait(timeout=30)


def answer_a_prediction(url: str, folder: Path) -> None:
    from gradio_client import handle_file

    client = app_client(url)
    image = folder / "data" / "pokemon" / "squirtle" / min(os.listdir(folder / "data/pokemon/squirtle"))
    starter = folder / "checkpoints" / "pokemon-starter"
    label, caption, _ = client.predict(handle_file(str(image)), str(starter), api_name="/predict")
    confidences = {c["label"]: c["confidence"] for c in label["confidences"]}
    assert len(confidences) == 5 and sum(confidences.values()) == pytest.approx(1, abs=1e-4)  # the top 5
    assert "pokemon-starter" in caption


def test_deploy_needs_a_token_and_refuses_to_go_public_over_a_private_wish(hub_env):
    with pytest.raises(HubError, match="no Hugging Face token"):
        space.deploy_space("dave/demo")
    token = hub_env.add_user("dave")
    hub_env.create_repo("dave/public", kind="space", sdk="gradio")
    with pytest.raises(HubError, match="already exists and is public"):
        space.deploy_space("dave/public", private=True, token=token)
    assert set(hub_env.spaces["dave/public"].resolve("main").files) == {".gitattributes"}


def test_deploy_space_cli_prints_the_url(hub_env, monkeypatch, capsys):
    from pokedemo.cli import main

    token = hub_env.add_user("erin")
    assert main(["deploy-space", "--repo-id", "erin/demo", "--private", "--token", token]) == 0
    assert capsys.readouterr().out.strip().endswith("/spaces/erin/demo")
    assert hub_env.spaces["erin/demo"].private
    assert "app.py" in hub_env.spaces["erin/demo"].resolve("main").files


def test_the_space_gets_no_developer_tools():
    files = space.space_files(REPO_ROOT)
    assert "pokedemo/hub/space.py" in files and (REPO_ROOT / "benchmarks" / "bench.py").is_file()
    tools = [f for f in files if f.split("/")[0] in ("benchmarks", "tests", "scripts", "docs") or "bench" in f]
    assert tools == []
