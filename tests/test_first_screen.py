"""What a newcomer sees: the app started with no options, from any folder, shows the bundled dataset, offers the
starter model (with examples from its test split) and a recorded comparison, before anyone trains."""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from pathlib import Path

import pytest
from conftest import CLIENT_TIMEOUT_S, app_client, launch_local

from pokedemo.app import sources, text  # no gradio: the tests not marked ``app`` run without it
from pokedemo.config import STARTER_COMPARISON, bundled_data_dir, starter_checkpoint

ENV_SWITCHES = ("POKEDEMO_DATA", "POKEDEMO_MODEL", "POKEDEMO_CHECKPOINTS")


@pytest.fixture(scope="module")
def first_screen(tmp_path_factory):
    """(url, demo) of ``build_demo()`` with no arguments, built and served from an unrelated working folder."""
    from pokedemo.app import layout

    elsewhere = tmp_path_factory.mktemp("elsewhere")
    saved_env = {name: os.environ.pop(name, None) for name in ENV_SWITCHES}
    saved_cwd = os.getcwd()
    os.chdir(elsewhere)
    demo = None
    try:
        demo = layout.build_demo()
        yield launch_local(demo, **layout.launch_options()), demo
    finally:
        if demo is not None:
            demo.close()
        os.chdir(saved_cwd)
        os.environ.update({k: v for k, v in saved_env.items() if v is not None})


def component(demo, elem_id: str) -> dict:
    return next(c["props"] for c in demo.config["components"] if c["props"].get("elem_id") == elem_id)


def component_id(demo, elem_id: str) -> int:
    return next(c["id"] for c in demo.config["components"] if c["props"].get("elem_id") == elem_id)


def starter_config() -> dict:
    return json.loads((starter_checkpoint() / "config.json").read_text())


def page_load(url: str) -> dict[int, object]:
    """What a browser tab does when it opens the app: every event the page's load triggers, then each event
    chained after one that ran (``.then``/``.success``), in order, sent through the queue as the page sends them
    (by ``fn_index``: these events are private, so gradio_client does not call them), each with its inputs'
    values as the page holds them at that moment. Returns every component's value afterwards, by id."""
    import httpx

    config = httpx.get(url + "config", timeout=CLIENT_TIMEOUT_S).json()
    values = {c["id"]: c["props"].get("value") for c in config["components"]}
    events = config["dependencies"]
    pending = [e for e in events if any(kind == "load" for _, kind in e["targets"])]
    session = uuid.uuid4().hex
    with httpx.Client(base_url=url, timeout=CLIENT_TIMEOUT_S) as http:
        while pending:
            event = pending.pop(0)
            outputs = _queued_event(http, session, event["id"], [values[i] for i in event["inputs"]])
            for component, output in zip(event["outputs"], outputs, strict=True):
                is_update = isinstance(output, dict) and output.get("__type__") == "update"
                values[component] = output.get("value", values[component]) if is_update else output
            pending += [e for e in events if e.get("trigger_after") == event["id"]]
    return values


def _queued_event(http, session: str, fn_index: int, inputs: list) -> list:
    """Join the queue with one event and read the session's event stream until that event completes."""
    joined = http.post("gradio_api/queue/join", json={"data": inputs, "fn_index": fn_index, "session_hash": session})
    joined.raise_for_status()
    event_id = joined.json()["event_id"]
    with http.stream("GET", "gradio_api/queue/data", params={"session_hash": session}) as stream:
        for line in stream.iter_lines():
            message = json.loads(line[len("data:"):]) if line.startswith("data:") else {}
            if message.get("msg") == "process_completed" and message.get("event_id") == event_id:
                assert message["success"], message
                return message["output"]["data"]
    raise AssertionError(f"the event stream ended before event {fn_index} completed")


@pytest.mark.app
def test_train_tab_is_prefilled_with_the_bundled_data_and_summarised_on_load(first_screen):
    url, demo = first_screen
    assert Path(demo.pokedemo.data_dir) == bundled_data_dir()
    assert component(demo, "data-dir")["value"] == str(bundled_data_dir())
    summary = page_load(url)[component_id(demo, "dataset-summary")]  # what a new tab shows
    n_images = sum(1 for p in bundled_data_dir().rglob("*.jpg"))
    assert f"5 classes · {n_images} images" in summary


@pytest.mark.app
def test_starter_is_listed_preselected_and_answers_with_a_top_5(first_screen, tmp_path):
    from gradio_client import handle_file

    url, demo = first_screen
    picker = next(c["props"] for c in demo.config["components"] if c["props"].get("label") == "Model")
    assert picker["value"] == str(starter_checkpoint()) and "pokemon-starter" in picker["choices"][0][0]
    client = app_client(url, tmp_path)
    image = next(bundled_data_dir().glob("charmander/*.jpg"))
    label, caption, _ = client.predict(handle_file(str(image)), picker["value"], api_name="/predict")
    probs = [c["confidence"] for c in label["confidences"]]
    assert len(probs) == 5 and sum(probs) == pytest.approx(1.0, abs=1e-4)
    assert "pokemon-starter" in caption


@pytest.mark.app
def test_examples_come_from_the_starters_test_split(first_screen):
    _, demo = first_screen
    examples = component(demo, "predict-examples")
    files = [Path(sample[0]["path"]).name for sample in examples["samples"]]
    tests = {(e["label"], Path(e["path"]).name) for e in starter_config()["split"] if e["split"] == "test"}
    classes = starter_config()["class_names"]
    assert len(files) == len(classes) * sources.EXAMPLES_PER_CLASS
    assert all((name.split("-", 1)[0], name.split("-", 1)[1]) in tests for name in files)  # "<class>-<file>"


@pytest.mark.app
def test_compare_tab_shows_the_recorded_comparison(first_screen):
    _, demo = first_screen
    record = json.loads((starter_checkpoint() / STARTER_COMPARISON).read_text())
    summary = component(demo, "compare-summary")["value"]
    assert summary.startswith("### Recorded result: pretrained") and "_Recorded, not run now_" in summary
    assert "Train both and compare" in summary
    table = component(demo, "compare-table")["value"]
    assert [row[0] for row in table["data"]] == ["pretrained", "scratch"]
    assert table["data"][0][1] == text.percent(record["results"]["pretrained"]["test_acc"])


def test_test_split_examples_are_fresh_copies_of_test_images(tiny_checkpoint):
    first = sources.test_split_examples(tiny_checkpoint, per_class=2)
    second = sources.test_split_examples(tiny_checkpoint, per_class=2)
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    tests = {f"{e['label']}-{Path(e['path']).name}" for e in config["split"] if e["split"] == "test"}
    assert first and {Path(p).name for p in first} <= tests
    assert len(first) <= 2 * len(config["class_names"])
    assert Path(first[0]).parent != Path(second[0]).parent  # a new folder per app, never stale copies
    assert all(Path(p).is_relative_to(Path(tempfile.gettempdir())) for p in first)
    assert sources.test_split_examples(None) == [] and sources.test_split_examples(tiny_checkpoint.parent) == []


def test_pokedemo_model_replaces_the_starter_and_a_bad_one_falls_back(hub_env, tiny_checkpoint, monkeypatch):
    from pokedemo.hub import push_checkpoint

    token = hub_env.add_user("frank")
    push_checkpoint(tiny_checkpoint, "frank/tiny", token=token)
    monkeypatch.setenv("POKEDEMO_MODEL", "frank/tiny")
    model = sources.load_default_model()
    assert model.label.startswith("frank/tiny (from the Hub)") and (model.path / "config.json").is_file()
    monkeypatch.setenv("POKEDEMO_MODEL", "frank/missing")
    assert sources.load_default_model().path == starter_checkpoint().resolve()
    monkeypatch.delenv("POKEDEMO_MODEL")
    assert sources.load_default_model().path == starter_checkpoint().resolve()
