"""Public mode's policy (pokedemo.app.public), without Gradio: when it is on, THE data gate, per-session
folders with their cleanup and disk cap, the training caps and time limit, the visitor's Hub token."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from conftest import make_tiny_dataset

from pokedemo.app import text
from pokedemo.app.public import (
    PublicLimits, PublicPolicy, PublicRefusal, SessionFiles, public_mode, session_key, time_limit,
)
from pokedemo.config import BUNDLED_DATA, bundled_data_dir

ALICE, BOB = "alice-session", "bob-session"


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("POKEDEMO_PUBLIC", "SPACE_ID", "SYSTEM", "GRADIO_SERVER_NAME", "POKEDEMO_PUBLIC_DIR",
                 *(f"POKEDEMO_PUBLIC_{f.upper()}" for f in PublicLimits.__dataclass_fields__)):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def policy(tmp_path, clean_env) -> PublicPolicy:
    return PublicPolicy.create(True, data_dir=str(bundled_data_dir()), root=tmp_path / "public")


def upload(policy: PublicPolicy, session: str, name: str = "upload-1") -> Path:
    """A dataset as an upload of ``session`` would leave it."""
    return make_tiny_dataset(policy.sessions.uploads(session) / name / "pokemon")


# ------------------------------------------------------------------------------------------- detection


@pytest.mark.parametrize("host, share, expected", [
    ("127.0.0.1", False, False), ("localhost", False, False), ("::1", False, False), ("127.0.0.2", False, False),
    ("0.0.0.0", False, True), ("192.168.1.20", False, True), ("::", False, True), ("my-host", False, True),
    ("127.0.0.1", True, True),
])
def test_public_when_reachable_by_others(clean_env, host, share, expected):
    assert public_mode(host, share) is expected


def test_public_on_a_space_and_forced_by_the_environment(clean_env):
    assert public_mode() is False  # python app.py: Gradio's default host, loopback
    clean_env.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    assert public_mode() is True
    clean_env.delenv("GRADIO_SERVER_NAME")
    clean_env.setenv("SPACE_ID", "alice/pokedemo")
    assert public_mode("127.0.0.1") is True
    clean_env.setenv("POKEDEMO_PUBLIC", "0")
    assert public_mode("127.0.0.1") is False and public_mode("0.0.0.0", share=True) is False
    clean_env.setenv("POKEDEMO_PUBLIC", "yes")
    clean_env.delenv("SPACE_ID")
    assert public_mode("127.0.0.1") is True


# ------------------------------------------------------------------------------------------- the gate


def test_server_folders_are_refused_with_the_same_words_whether_they_exist_or_not(policy, tmp_path):
    private = make_tiny_dataset(tmp_path / "private" / "photos")
    asked = [str(private), str(private.parent), str(tmp_path / "does-not-exist"), "/etc", "/", "~", "~/photos",
             "../../etc", "checkpoints", "data", "data/pokemon/../..", "uploads", "uploads/../..",
             f"uploads/../../{session_key(BOB)}/uploads", "x\x00y", "a" * 5000]
    for spec in asked:
        with pytest.raises(PublicRefusal) as err:
            policy.data_spec(spec, ALICE)
        assert str(err.value) == text.PUBLIC_DATA_REFUSED, spec
    assert "private" not in text.PUBLIC_DATA_REFUSED and "photos" not in text.PUBLIC_DATA_REFUSED


def test_a_refused_path_is_never_looked_at_on_disk(policy, monkeypatch):
    looked = []
    for name in ("stat", "lstat", "listdir", "scandir", "open"):
        real = getattr(os, name)

        def spy(path, *args, _real=real, **kwargs):
            looked.append(str(path))
            return _real(path, *args, **kwargs)

        monkeypatch.setattr(os, name, spy)
    for spec in ("/srv/secret-folder", "../secret-folder", "secret-folder/x"):
        with pytest.raises(PublicRefusal):
            policy.data_spec(spec, ALICE)
    assert not [path for path in looked if "secret" in path]


def test_the_gate_lets_through_the_shared_data_own_uploads_and_hub_datasets(policy):
    bundled = str(bundled_data_dir())
    assert policy.data_spec(BUNDLED_DATA, ALICE) == bundled
    assert policy.data_spec(f" ./{BUNDLED_DATA}/ ", ALICE) == bundled
    assert policy.data_spec(bundled, ALICE) == bundled
    assert policy.data_spec("hf://datasets/alice/pets@v1", ALICE) == "hf://datasets/alice/pets@v1"
    assert policy.data_spec("  ", ALICE) == ""
    mine = upload(policy, ALICE)
    shown = policy.shown_upload(mine, ALICE)
    assert shown == "uploads/upload-1/pokemon"
    assert policy.data_spec(shown, ALICE) == str(mine) == policy.data_spec(str(mine), ALICE)
    with pytest.raises(PublicRefusal):  # the same words in another visitor's session
        policy.data_spec(shown, BOB)
    with pytest.raises(PublicRefusal):
        policy.data_spec(str(mine), BOB)


def test_the_apps_own_dataset_is_shared(tmp_path, clean_env):
    own = make_tiny_dataset(tmp_path / "space-data")
    policy = PublicPolicy.create(True, data_dir=str(own), root=tmp_path / "public")
    assert policy.data_spec(str(own), ALICE) == str(own)
    assert policy.shown_data_dir(str(own)) == str(own)
    assert policy.shown_data_dir(str(bundled_data_dir())) == BUNDLED_DATA


def test_a_link_out_of_the_uploads_is_refused(policy, tmp_path):
    outside = make_tiny_dataset(tmp_path / "outside")
    link = policy.sessions.uploads(ALICE) / "upload-2"
    link.symlink_to(outside, target_is_directory=True)
    for spec in ("uploads/upload-2", str(link)):
        with pytest.raises(PublicRefusal, match="folders on the server are not available"):
            policy.data_spec(spec, ALICE)


def test_image_paths_only_from_the_upload_folders(policy, tmp_path):
    uploads, examples = tmp_path / "gradio", tmp_path / "examples"
    for folder in (uploads, examples):
        make_tiny_dataset(folder, classes=("x",), per_class=1)
    mine, example = uploads / "x" / "000.png", examples / "x" / "000.png"
    server = make_tiny_dataset(tmp_path / "server", classes=("x",), per_class=1) / "x" / "000.png"
    assert policy.image_path(str(mine), [uploads, examples]) == str(mine)
    assert policy.image_path(str(example), [uploads, examples]) == str(example)
    (uploads / "link.png").symlink_to(server)
    for path in (server, tmp_path / "server" / "x" / "nothere.png", uploads / "x", uploads / "link.png",
                 f"{uploads}/../server/x/000.png", "x/000.png", "/etc/hostname", "a\x00b"):
        with pytest.raises(PublicRefusal) as err:
            policy.image_path(str(path), [uploads, examples])
        assert str(err.value) == text.PUBLIC_IMAGE_REFUSED, path
    assert PublicPolicy.create(False, root=tmp_path / "p").image_path(str(server), [uploads]) == str(server)


def test_models_by_repo_id_or_inside_the_apps_folders(policy, tmp_path):
    root, own = tmp_path / "checkpoints", tmp_path / "own-runs"
    for folder in (root / "run-1", own / "run-2"):
        folder.mkdir(parents=True)
    assert policy.model_reference("alice/model@v1", [root, own], root) == ("alice/model@v1", True)
    assert policy.model_reference(str(own / "run-2"), [root, own], root) == (str(own / "run-2"), False)
    assert policy.model_reference("run-1", [root, own], root) == (str(root / "run-1"), False)
    for reference in (str(tmp_path), "/etc", "../x", "./alice/model", "~/x", f"{root}/../own-runs/run-2/../..",
                      "a\x00b"):
        with pytest.raises(PublicRefusal) as err:
            policy.model_reference(reference, [root, own], root)
        assert str(err.value) == text.PUBLIC_MODEL_REFUSED, reference
    local = PublicPolicy.create(False, root=tmp_path / "p")
    assert local.model_reference(" /etc ", [root], root) == ("/etc", False)


def test_locally_every_folder_passes_as_typed(tmp_path, clean_env):
    policy = PublicPolicy.create(False, data_dir=str(bundled_data_dir()), root=tmp_path / "public")
    for spec in ("/etc", "../x", str(tmp_path)):
        assert policy.data_spec(f" {spec} ", ALICE) == spec
    assert policy.shown_data_dir(str(bundled_data_dir())) == str(bundled_data_dir())
    assert policy.upload_dir(ALICE) is None and policy.upload_budget(ALICE) is None
    assert policy.runs_root(ALICE, tmp_path / "checkpoints") == tmp_path / "checkpoints"
    policy.check_training(1000, 1000, ALICE)
    assert policy.run_seconds is None
    assert not (tmp_path / "public").exists()  # nothing per session is made locally


# ------------------------------------------------------------------------------------------- sessions


def test_each_session_has_its_own_runs_and_uploads(policy):
    alice, bob = policy.runs_root(ALICE, "unused"), policy.runs_root(BOB, "unused")
    assert alice != bob and alice.is_dir() and bob.is_dir()
    assert policy.upload_dir(ALICE) != policy.upload_dir(BOB)
    assert alice.parent.parent == bob.parent.parent == policy.sessions.root


def test_a_session_hash_never_becomes_part_of_a_path(policy):
    folder = policy.sessions.folder("../../../etc")
    assert folder.parent == policy.sessions.root and "etc" not in folder.name


def test_idle_sessions_are_deleted_after_the_stated_time(tmp_path):
    sessions = SessionFiles(tmp_path, PublicLimits(session_hours=1.0))
    old, recent = sessions.runs(ALICE), sessions.runs(BOB)
    (old / "model.safetensors").write_bytes(b"x")
    hour_ago = time.time() - 3601
    os.utime(old.parent, (hour_ago, hour_ago))
    assert sessions.sweep() == [old.parent]
    assert not old.parent.exists() and recent.is_dir()
    assert sessions.sweep(now=time.time() + 3601) == [recent.parent]


def test_sessions_are_swept_as_visitors_come(tmp_path, monkeypatch):
    sessions = SessionFiles(tmp_path, PublicLimits(session_hours=1.0))
    monkeypatch.setattr(SessionFiles, "SWEEP_EVERY_S", 0.0)
    idle = sessions.folder(ALICE)
    hour_ago = time.time() - 3601
    os.utime(idle, (hour_ago, hour_ago))
    sessions.folder(BOB)
    assert not idle.exists()


def test_an_active_session_is_kept(tmp_path):
    sessions = SessionFiles(tmp_path, PublicLimits(session_hours=1.0))
    folder = sessions.folder(ALICE)
    hour_ago = time.time() - 3601
    os.utime(folder, (hour_ago, hour_ago))
    sessions.uploads(ALICE)  # any use marks it active
    assert sessions.sweep() == [] and folder.is_dir()


def test_disk_share_per_session(tmp_path):
    sessions = SessionFiles(tmp_path, PublicLimits(session_mb=1))
    (sessions.runs(ALICE) / "weights").write_bytes(b"x" * 400_000)
    assert sessions.space_left(ALICE) == 600_000
    (sessions.uploads(ALICE) / "big").write_bytes(b"x" * 700_000)
    with pytest.raises(PublicRefusal) as err:
        sessions.space_left(ALICE)
    assert str(err.value) == text.public_space_full(1_100_000, 1_000_000)
    assert "1.1 MB of the 1.0 MB" in str(err.value)
    assert sessions.space_left(BOB) == 1_000_000


# ------------------------------------------------------------------------------------------- fair use


def test_training_caps(policy):
    limits = policy.limits
    policy.check_training(limits.max_epochs, limits.max_img_size, ALICE)
    for epochs, size in ((limits.max_epochs + 1, 64), (1, limits.max_img_size + 16)):
        with pytest.raises(PublicRefusal) as err:
            policy.check_training(epochs, size, ALICE)
        assert str(err.value) == text.public_caps_refused(limits)
    assert f"{limits.max_epochs} epochs at {limits.max_img_size} px" in text.public_caps_refused(limits)
    assert policy.run_seconds == limits.max_run_minutes * 60


def test_limits_from_the_environment(clean_env):
    assert PublicLimits.from_env() == PublicLimits()
    clean_env.setenv("POKEDEMO_PUBLIC_MAX_EPOCHS", "3")
    clean_env.setenv("POKEDEMO_PUBLIC_SESSION_HOURS", "0.5")
    assert PublicLimits.from_env() == PublicLimits(max_epochs=3, session_hours=0.5)
    clean_env.setenv("POKEDEMO_PUBLIC_MAX_RUN_MINUTES", "45")
    with pytest.raises(ValueError, match="SESSION_HOURS must be longer"):
        PublicLimits.from_env()
    clean_env.setenv("POKEDEMO_PUBLIC_MAX_EPOCHS", "many")
    with pytest.raises(ValueError, match="POKEDEMO_PUBLIC_MAX_EPOCHS='many' is not a number"):
        PublicLimits.from_env()


def test_time_limit_sets_the_stop_flag():
    stop = threading.Event()
    with time_limit(stop, 0.05) as expired:
        assert stop.wait(60)  # a safety net only: the timer fires after 50 ms
    assert expired.is_set()


def test_a_run_that_ends_in_time_is_left_alone():
    stop = threading.Event()
    with time_limit(stop, 3600) as expired:
        pass
    with time_limit(stop, None) as unlimited:
        pass
    assert not stop.is_set() and not expired.is_set() and not unlimited.is_set()
    assert not [t for t in threading.enumerate() if isinstance(t, threading.Timer) and t.is_alive()]


def test_the_banner_states_the_limits():
    banner = text.public_banner(PublicLimits())
    for figure in ("10 epochs", "224 px", "10 minutes", "500 MB", "1 hour", "own token", "queue"):
        assert figure in banner, figure


# ------------------------------------------------------------------------------------------- Hub token


def test_public_mode_uses_the_visitors_token_only(policy, tmp_path, clean_env):
    assert policy.hub_token(" hf_visitor ") == "hf_visitor"
    assert policy.hub_token("") is False and policy.hub_token(None) is False  # False: send no token at all
    assert policy.push_refusal("") == text.PUBLIC_PUSH_TOKEN_NEEDED and policy.push_refusal("hf_x") is None
    local = PublicPolicy.create(False, root=tmp_path / "local")
    assert local.hub_token("") is None and local.push_refusal("") is None  # None: HF_TOKEN, then the login
