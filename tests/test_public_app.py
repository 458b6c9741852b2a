"""Public mode end to end: the app launched as on a Space, used through gradio_client as outside visitors would.

No endpoint reveals anything about a folder or picture on the server (names, counts, existence, pictures);
an empty token box never lends the server's HF_TOKEN, for models and datasets alike; a Hub dataset over the
limit is refused before any byte is written; a visitor's Hub downloads go to their own folder, within what is
left of their disk share, and are fixed through a working copy, never in place; visitors never see each other's
runs or uploads; idle visitors' files are deleted; the caps hold.
"""

from __future__ import annotations

import json
import os
import time
import zipfile
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("gradio_client", reason="the app's tests need gradio (engine and CLI tests run without it)")

from conftest import app_client, launch_local, make_tiny_dataset, tiny_run, wait_for  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402
from gradio_client.utils import Status  # noqa: E402

from pokedemo.app import layout, sources, text  # noqa: E402
from pokedemo.app.handlers import DemoApp  # noqa: E402
from pokedemo.app.public import PublicPolicy, SessionFiles, session_key  # noqa: E402
from pokedemo.hub import push_checkpoint  # noqa: E402

pytestmark = pytest.mark.app

MAX_EPOCHS, MAX_SIZE = 2, 64
# backbone, pretrained, strategy, epochs, lr, batch size, image size, seed (the /train parameters after the data)
TINY = ["resnet18", False, "finetune", 1, 0.002, 8, 32, 0]
HELD = ["resnet18", False, "finetune", 2, 0.002, 8, 32, 0]  # held before epoch 2 by batch_gate(2, 0)
SECRET_NAMES = ("cls_a", "cls_b", "private", "photos")


@pytest.fixture(scope="module")
def public(tmp_path_factory):
    """The app in public mode, with its own dataset and model, and a private folder elsewhere on the server."""
    base = tmp_path_factory.mktemp("public-app")
    data = make_tiny_dataset(base / "space-data")
    root = base / "checkpoints"
    own = tiny_run(data, root)  # the Space's own model
    secret = make_tiny_dataset(base / "private" / "photos", classes=("cls_a", "cls_b"), per_class=4)
    for i, path in enumerate(sorted(secret.rglob("*.png"))):
        path.rename(path.with_name(f"private{i}.png"))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("POKEDEMO_PUBLIC_DIR", str(base / "sessions"))
        env.setenv("POKEDEMO_PUBLIC_MAX_EPOCHS", str(MAX_EPOCHS))
        env.setenv("POKEDEMO_PUBLIC_MAX_IMG_SIZE", str(MAX_SIZE))
        demo = layout.build_demo(checkpoint_root=root, data_dir=str(data), public=True)
    url = launch_local(demo, **layout.launch_options())
    try:
        yield SimpleNamespace(url=url, data=data, root=root, own=own, secret=secret, demo=demo, app=demo.pokedemo,
                              sessions=base / "sessions")
    finally:
        demo.close()


def visitor(public, tmp_path, name: str) -> Client:
    return app_client(public.url, tmp_path / name)


@pytest.fixture(scope="module")
def alice(public, tmp_path_factory):
    """A visitor who has trained one run."""
    client = visitor(public, tmp_path_factory.mktemp("alice"), "alice")
    outputs = client.predict(str(public.data), *TINY, api_name="/train")
    assert "Test accuracy" in outputs[4], outputs[4]
    return SimpleNamespace(client=client, run=Path(outputs[-3]["value"]))


def picker_values(client: Client) -> list[str]:
    first, *_ = client.predict(None, None, None, api_name="/refresh_checkpoints")
    return [value for _, value in first["choices"]]


def leaks(outputs, public) -> list[str]:
    """What of the private folder shows in an answer: its names, its path, its counts."""
    shown = json.dumps(outputs, default=str)
    found = [name for name in (*SECRET_NAMES, str(public.secret)) if name in shown]
    return found + [count for count in ("2 classes", "8 images") if count in shown]


def new_files(public) -> list[Path]:
    return sorted(p for p in public.sessions.rglob("*") if p.is_file())


# ------------------------------------------------------------------------ folders and pictures on the server


def server_paths(public) -> list[str]:
    """An existing private folder, a missing one, relative and system paths."""
    return [str(public.secret), str(public.secret.parent / "nothing-here"), "../private/photos", "/etc", "~"]


def endpoint_answers(client: Client, public, path: str) -> dict[str, object]:
    """Every folder-taking endpoint's answer for ``path``."""
    own, starter = str(public.own), str(public.app.default_model.path)
    return {
        "scan": client.predict(path, 0, 32, api_name="/scan"),
        "doctor": client.predict(path, api_name="/doctor")[:2],
        "train": client.predict(path, *TINY, api_name="/train")[4],
        "compare": client.predict(path, *TINY, api_name="/compare")[4],
        "inspect": client.predict(own, path, api_name="/inspect"),
        "compare_checkpoints": client.predict(own, starter, path, api_name="/compare_checkpoints")[0],
    }


def test_every_folder_taking_endpoint_refuses_a_server_path_and_says_the_same(public, tmp_path):
    client = visitor(public, tmp_path, "probe")
    before = new_files(public)
    answers = [endpoint_answers(client, public, path) for path in server_paths(public)]
    refusal = text.PUBLIC_DATA_REFUSED
    first = answers[0]
    assert refusal in first["scan"] and refusal in first["doctor"][0] and first["doctor"][1]["value"] == []
    assert refusal in first["train"] and refusal in first["compare"]
    assert refusal in first["inspect"][0] and first["inspect"][1] is None and first["inspect"][3] in (None, [])
    assert refusal in first["compare_checkpoints"]
    assert all(answer == first for answer in answers), "an existing and a missing folder must read the same"
    assert leaks(answers, public) == []
    assert new_files(public) == before  # nothing trained, nothing written


def test_a_picture_on_the_server_cannot_be_named_in_the_image_payload(public, tmp_path):
    client = visitor(public, tmp_path, "pictures")
    own = str(public.own)
    answers = []
    for path in (public.secret / "cls_a" / "private0.png", public.secret / "cls_a" / "nothing.png"):
        payload = {"path": str(path)}  # no upload: a bare path, as a hand-made request sends it
        answers.append((client.predict(payload, own, api_name="/predict")[:2],
                        client.predict(payload, own, "top class", api_name="/explain")[:2]))
    (label, caption), (overlay, cam_caption) = answers[0]
    assert not label and text.PUBLIC_IMAGE_REFUSED in caption
    assert overlay is None and text.PUBLIC_IMAGE_REFUSED in cam_caption  # no heatmap: it would be the picture
    assert answers[0] == answers[1] and leaks(answers, public) == []
    upload = client.predict(handle_file(str(public.data / "a" / "000.png")), own, api_name="/predict")
    assert upload[0]["label"] in ("a", "b", "c")  # a picture the visitor uploads is classified


def test_the_page_says_public_mode_is_on_and_shows_the_caps(public):
    config = public.demo.config
    values = [c.get("props", {}) for c in config["components"]]
    banner = next(p["value"] for p in values if p.get("elem_id") == "public-banner")
    assert banner == text.public_banner(public.app.policy.limits)
    assert f"{MAX_EPOCHS} epochs at {MAX_SIZE} px" in banner
    epochs = next(p for p in values if p.get("elem_id") == "epochs")
    assert epochs["maximum"] == MAX_EPOCHS
    assert any(p.get("label") == text.PUBLIC_DATA_LABEL for p in values)
    assert any(p.get("info") == text.PUBLIC_TOKEN_INFO for p in values)


# ------------------------------------------------------------------------ the server's Hub token


def test_an_empty_token_never_lends_the_servers_hub_token(public, hub_env, monkeypatch, tmp_path):
    owner = hub_env.add_user("owner")
    monkeypatch.setenv("HF_TOKEN", owner)  # the Space's secret
    push_checkpoint(public.own, "owner/secret-model", private=True, token=owner)
    client = visitor(public, tmp_path, "hub")
    start = len(hub_env.requests)
    message, _ = client.predict("owner/secret-model", "", api_name="/load_from_hub")
    assert message.startswith("❌") and "not found" in message
    picture = handle_file(str(public.data / "a" / "000.png"))
    _, caption, _ = client.predict(picture, "owner/secret-model", api_name="/predict")  # typed into the picker
    assert "not found" in caption
    assert client.predict(str(public.own), "owner/pushed", False, "", api_name="/push_to_hub") == \
        text.PUBLIC_PUSH_TOKEN_NEEDED
    assert hub_env.requests[start:] and not any(r.authorized for r in hub_env.requests[start:])
    assert "owner/pushed" not in hub_env.repos and owner not in json.dumps([message, caption])
    # The visitor's own token reaches the visitor's own private model.
    mine = hub_env.add_user("visitor")
    push_checkpoint(public.own, "visitor/mine", private=True, token=mine)
    message, _ = client.predict("visitor/mine", mine, api_name="/load_from_hub")
    assert message.startswith("✅") and mine not in message


def test_a_hub_dataset_over_the_limit_is_refused_before_any_byte(public, hub_env, tmp_path):
    hub_env.create_repo("owner/huge", kind="dataset", files={"a/0.png": b"x"},
                        listed={"data/train-00000-of-00001.parquet": 3_000_000_000})
    client = visitor(public, tmp_path, "huge")
    started = time.monotonic()
    summary = client.predict("hf://datasets/owner/huge", 0, 32, api_name="/scan")
    seconds = time.monotonic() - started
    assert summary.startswith("⚠️") and "holds 3.0 GB" in summary and "nothing was downloaded" in summary
    assert not [r for r in hub_env.requests if "/resolve/" in r.path and "owner/huge" in r.path]
    assert not (Path(os.environ["HF_HOME"]) / "hub" / "datasets--owner--huge").exists()
    print(f"refused in {seconds:.2f} s")  # the figure BENCHMARKS.md quotes


# ------------------------------------------------------------------------ a visitor's Hub downloads


def dataset_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def hub_folder(public, client: Client) -> Path:
    """The visitor's own Hub cache folder on the server."""
    return public.sessions / session_key(client.session_hash) / "hub"


def test_a_visitors_hub_downloads_land_in_their_own_folder(public, hub_env, monkeypatch, tmp_path):
    """A Hub dataset and a Hub model a visitor names go to their session's folder, never the server's Hub cache,
    with no token sent although the server has one; another visitor cannot name the downloaded model."""
    monkeypatch.setenv("HF_TOKEN", hub_env.add_user("owner"))  # the Space's secret
    hub_env.create_repo("owner/pets", kind="dataset", files=dataset_files(public.data))
    push_checkpoint(public.own, "owner/model", token=os.environ["HF_TOKEN"])
    client = visitor(public, tmp_path, "downloader")
    start = len(hub_env.requests)
    assert "3 classes · 24 images" in client.predict("hf://datasets/owner/pets", 0, 32, api_name="/scan")
    message, picker = client.predict("owner/model", "", api_name="/load_from_hub")
    assert message.startswith("✅") and Path(picker["value"]).is_relative_to(hub_folder(public, client))
    assert not any(r.authorized for r in hub_env.requests[start:])
    mine = sorted(p.name for p in hub_folder(public, client).iterdir())
    assert "datasets--owner--pets" in mine and "models--owner--model" in mine
    normal_cache = Path(os.environ["HF_HOME"]) / "hub"
    assert not any(normal_cache.glob("*--owner--*"))
    picture = handle_file(str(public.data / "a" / "000.png"))
    assert client.predict(picture, picker["value"], api_name="/predict")[0]["label"] in ("a", "b", "c")
    other = visitor(public, tmp_path, "neighbour")
    assert other.predict(picture, picker["value"], api_name="/predict")[1] == f"⚠️ {text.PUBLIC_MODEL_REFUSED}"


def test_a_hub_download_counts_against_the_visitors_disk_share(public, hub_env, tmp_path):
    """What a visitor's share has left is the download's budget: a dataset bigger than that is refused from its
    listing before any byte is written, though it is well within the Space's download limits."""
    hub_env.create_repo("owner/photos", kind="dataset", files={"a/0.png": b"x"},
                        listed={"b/big.png": 3_000_000})
    hub_env.create_repo("owner/photos-model", files={"config.json": b"{}"}, listed={"model.safetensors": 3_000_000})
    client = visitor(public, tmp_path, "thrifty")
    sessions = public.app.policy.sessions
    limits = sessions.limits
    sessions.limits = replace(limits, session_mb=2)
    try:
        summary = client.predict("hf://datasets/owner/photos", 0, 32, api_name="/scan")
        message, _ = client.predict("owner/photos-model", "", api_name="/load_from_hub")
    finally:
        sessions.limits = limits
    assert summary.startswith("⚠️") and "needs 3.0 MB of disk space, more than the 2.0 MB left" in summary
    assert "nothing was downloaded" in summary
    assert message.startswith("❌") and "needs 3.0 MB of disk space, more than the 2.0 MB left" in message
    assert not [r for r in hub_env.requests if "/resolve/" in r.path and "owner/photos" in r.path]
    assert not list(hub_folder(public, client).glob("*--owner--photos*"))


def test_a_private_hub_dataset_is_not_reached_with_the_servers_token(public, hub_env, monkeypatch, tmp_path):
    owner = hub_env.add_user("owner")
    monkeypatch.setenv("HF_TOKEN", owner)  # the Space's secret could read it
    hub_env.create_repo("owner/secret-set", private=True, kind="dataset", files=dataset_files(public.data))
    client = visitor(public, tmp_path, "curious")
    start = len(hub_env.requests)
    spec = "hf://datasets/owner/secret-set"
    answers = [client.predict(spec, 0, 32, api_name="/scan"), client.predict(spec, api_name="/doctor")[0],
               client.predict(spec, *TINY, api_name="/train")[4],
               client.predict("a/000.png", spec, api_name="/set_aside")[0]]
    assert all("dataset repo owner/secret-set not found" in answer for answer in answers), answers
    assert hub_env.requests[start:] and not any(r.authorized for r in hub_env.requests[start:])
    assert owner not in json.dumps(answers) and not list(hub_folder(public, client).glob("datasets--*"))


def test_fixing_a_hub_dataset_changes_a_working_copy_never_the_download(public, hub_env, tmp_path):
    hub_env.create_repo("owner/to-fix", kind="dataset", files=dataset_files(public.data))
    client = visitor(public, tmp_path, "fixer")
    spec = "hf://datasets/owner/to-fix"
    assert "24 images" in client.predict(spec, 0, 32, api_name="/scan")
    download = next(hub_folder(public, client).glob("datasets--owner--to-fix/snapshots/*"))
    before = {p: p.read_bytes() for p in download.rglob("*.png")}
    message, folder = client.predict("a/000.png", spec, api_name="/set_aside")
    assert message.startswith("✅ Set aside `a/000.png`") and "working copy was made" in message
    assert folder == "uploads/datasets/" + download.name  # the visitor's own copy, named without a server path
    assert str(public.sessions) not in message
    assert {p: p.read_bytes() for p in download.rglob("*.png")} == before
    assert "23 images" in client.predict(folder, 0, 32, api_name="/scan")
    assert client.predict(folder, api_name="/undo")[0].startswith("↩️ Undone")


def test_the_spaces_own_model_loads_with_the_servers_token_into_the_normal_cache(public, hub_env, monkeypatch,
                                                                                  tmp_path):
    owner = hub_env.add_user("owner")
    monkeypatch.setenv("HF_TOKEN", owner)
    push_checkpoint(public.own, "owner/space-model", private=True, token=owner)
    monkeypatch.setenv("POKEDEMO_MODEL", "owner/space-model")
    default = sources.load_default_model()
    assert default is not None and default.path.is_relative_to(Path(os.environ["HF_HOME"]) / "hub")
    app = DemoApp(public.root, str(public.data), default, PublicPolicy.create(True, str(public.data),
                                                                                tmp_path / "sessions"))
    assert app._model_path(str(default.path), None) == default.path  # every visitor may use it


# ------------------------------------------------------------------------ one visitor's files


def test_two_visitors_never_see_each_others_runs(public, alice, tmp_path, hub_env):
    bob = visitor(public, tmp_path, "bob")
    assert alice.run.is_relative_to(public.sessions) and not alice.run.is_relative_to(public.root)
    assert str(alice.run) in picker_values(alice.client)
    bobs = picker_values(bob)
    assert str(alice.run) not in bobs
    assert set(bobs) == {str(public.own), str(public.app.default_model.path)}  # the Space's models only
    picture = handle_file(str(public.data / "a" / "000.png"))
    label, caption, _ = bob.predict(picture, str(alice.run), api_name="/predict")
    assert not label and "not one of this app's checkpoints" in caption
    assert "⚠️" in bob.predict(str(alice.run), str(public.data), api_name="/inspect")[0]
    token = hub_env.add_user("bob")
    assert "Only runs trained here" in bob.predict(str(alice.run), "bob/stolen", False, token,
                                                   api_name="/push_to_hub")
    assert "bob/stolen" not in hub_env.repos
    pushed = alice.client.predict(str(alice.run), "bob/alices", False, token, api_name="/push_to_hub")
    assert pushed.startswith("✅")  # her own run, with a token she typed


def test_an_upload_belongs_to_its_visitor(public, alice, tmp_path):
    archive = tmp_path / "mine.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(public.data.rglob("*.png")):
            zf.write(path, f"mine/{path.relative_to(public.data).as_posix()}")
    shown, summary = alice.client.predict(handle_file(str(archive)), 0, 32, api_name="/upload_zip")
    assert shown.startswith("uploads/") and shown.endswith("/mine") and "3 classes · 24 images" in summary
    assert "3 classes · 24 images" in alice.client.predict(shown, 0, 32, api_name="/scan")
    bob = visitor(public, tmp_path, "bob")
    assert bob.predict(shown, 0, 32, api_name="/scan") == f"⚠️ {text.PUBLIC_DATA_REFUSED}"


def test_the_disk_share_of_a_visitor(public, alice, tmp_path):
    sessions = public.app.policy.sessions
    limits = sessions.limits
    sessions.limits = replace(limits, session_mb=1)  # alice's run alone is over 1 MB
    try:
        results = alice.client.predict(str(public.data), *TINY, api_name="/train")[4]
        assert "Your files in this public demo take" in results and "of the 1.0 MB" in results
        archive = tmp_path / "one.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.write(public.data / "a" / "000.png", "x/a/000.png")
        _, summary = alice.client.predict(handle_file(str(archive)), 0, 32, api_name="/upload_zip")
        assert "Your files in this public demo take" in summary
        carol = visitor(public, tmp_path, "carol")  # another visitor's share is her own
        shown, summary = carol.predict(handle_file(str(archive)), 0, 32, api_name="/upload_zip")
        assert summary == f"⚠️ {shown} needs at least 2 class folders (one per class), found 1"  # no server path
    finally:
        sessions.limits = limits


# ------------------------------------------------------------------------ fair use of the training slot


def test_caps_on_epochs_and_image_size(public, tmp_path):
    """The sliders end at the caps, so Gradio itself refuses more; the handlers check again behind them."""
    client = visitor(public, tmp_path, "greedy")
    before = new_files(public)
    for epochs, size, limit in ((MAX_EPOCHS + 1, 32, MAX_EPOCHS), (1, MAX_SIZE + 16, MAX_SIZE)):
        with pytest.raises(AppError, match=f"greater than maximum value {limit}"):
            client.predict(str(public.data), *TINY[:3], epochs, *TINY[4:6], size, 0, api_name="/train")
    with pytest.warns(UserWarning, match="limited to"):  # the toast
        outputs = list(public.app.train(str(public.data), request=None, backbone="resnet18", pretrained=False,
                                        strategy="finetune", epochs=MAX_EPOCHS + 1, lr=0.002, batch_size=8,
                                        img_size=32, seed=0))
    assert text.public_caps_refused(public.app.policy.limits) in outputs[-1][4]
    assert new_files(public) == before


def test_a_run_is_stopped_at_the_time_limit(public, tmp_path, batch_gate):
    sessions = public.app.policy.sessions
    limits = sessions.limits
    sessions.limits = replace(limits, max_run_minutes=0.001)
    gate = batch_gate(1, 0)
    client = visitor(public, tmp_path, "slow")
    try:
        job = client.submit(str(public.data), *HELD, api_name="/train")
        # The limit stops the run at its first batch or before: either way it never trains on.
        assert wait_for(lambda: job.done() or gate.reached.is_set(), timeout=600)
    finally:
        gate.release()
        sessions.limits = limits
    assert wait_for(job.done, timeout=600)
    results = job.outputs()[-1][4]
    assert "Stopped" in results and "the time limit of a run in this public demo" in results


def test_a_waiting_visitor_sees_the_queue_position(public, alice, tmp_path, batch_gate):
    gate = batch_gate(2, 0)
    first = alice.client.submit(str(public.data), *HELD, api_name="/train")
    second = None
    try:
        gate.wait_reached()
        second = visitor(public, tmp_path, "waiting").submit(str(public.data), *TINY, api_name="/train")
        assert wait_for(lambda: second.status().code == Status.IN_QUEUE, timeout=600)
        assert second.status().rank == 0 and second.status().queue_size >= 1
    finally:
        if not first.done():
            alice.client.predict(api_name="/stop")
        gate.release()
    assert wait_for(first.done, timeout=600) and wait_for(second.done, timeout=600)
    assert second.outputs(), second.exception()
    assert "Test accuracy" in second.outputs()[-1][4]


def test_an_idle_visitors_files_are_deleted_after_the_stated_time(public, tmp_path, monkeypatch):
    dana = visitor(public, tmp_path, "dana")
    run = Path(dana.predict(str(public.data), *TINY, api_name="/train")[-3]["value"])
    session = run.parents[1]
    assert str(run) in picker_values(dana)
    idle = time.time() - public.app.policy.limits.session_hours * 3600 - 1
    os.utime(session, (idle, idle))
    monkeypatch.setattr(SessionFiles, "SWEEP_EVERY_S", 0.0)
    picker_values(visitor(public, tmp_path, "erin"))  # any visitor's next action sweeps
    assert not session.exists() and str(run) not in picker_values(dana)


def test_a_model_named_by_a_server_path_is_refused_alike(public, hub_env, tmp_path):
    client = visitor(public, tmp_path, "models")
    picture = handle_file(str(public.data / "a" / "000.png"))
    refused = f"⚠️ {text.PUBLIC_MODEL_REFUSED}"
    for reference in (str(public.secret), str(public.secret / "nothing"), "../private/photos", "../nothing"):
        assert client.predict(picture, reference, api_name="/predict")[1] == refused, reference
        assert client.predict(reference, str(public.data), api_name="/inspect")[0] == refused
        files, message = client.predict(reference, api_name="/download_model")
        assert not files and text.PUBLIC_MODEL_REFUSED in message and "photos" not in message
    # Written as a repo id, a name is looked up on the Hub only, whether or not a folder of that name exists here.
    existing, missing = "tests/data", "tests/nothing-here"
    assert Path(existing).is_dir()
    answers = [client.predict(picture, name, api_name="/predict")[1] for name in (existing, missing)]
    assert all("not found" in answer for answer in answers)
    assert answers[0].replace(existing, missing) == answers[1]
