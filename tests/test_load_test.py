"""The public load test (``benchmarks/load_test.py --public``) in small: three visitors at once against a
public-mode app in this process, each in its own session. Every request succeeds and no visitor sees or uses
another's run; against the same app in local mode, where runs are shared, the isolation count says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("gradio_client", reason="the app's tests need gradio (engine and CLI tests run without it)")

from conftest import launch_local, make_tiny_dataset  # noqa: E402

from pokedemo.app import layout  # noqa: E402

from benchmarks import load_test  # noqa: E402

pytestmark = pytest.mark.app

VISITORS, PREDICTIONS = 3, 2
TINY = ("resnet18", False, "finetune", 1, 0.002, 8, 32, 0)  # a run of seconds: the test is about sessions
HANG_GUARD_S = 600  # never a pace: the visitors wait on each other (a barrier) and on their answers


def visit(tmp_path: Path, monkeypatch, public: bool, visitors: int = VISITORS,
          predictions: int = PREDICTIONS) -> load_test.PublicResults:
    data = make_tiny_dataset(tmp_path / "data")
    monkeypatch.setenv("POKEDEMO_PUBLIC_DIR", str(tmp_path / "sessions"))
    # The starter is listed, as on a Space: /train's model picker (its "continue from" source) has a value.
    demo = layout.build_demo(checkpoint_root=tmp_path / "checkpoints", data_dir=str(data), public=public)
    url = launch_local(demo, **layout.launch_options())
    try:
        images = sorted(data.rglob("*.png"))
        return load_test.drive_public(url, visitors, str(data), images, predictions=predictions, recipe=TINY,
                                      workdir=tmp_path / "visitors", timeout=HANG_GUARD_S)
    finally:
        demo.close()


def test_public_visitors_at_once_each_see_only_their_own_runs(tmp_path, monkeypatch, capsys):
    results = visit(tmp_path, monkeypatch, public=True)
    capsys.readouterr()  # what the app printed while it served
    load_test.report(results.summary())
    printed = json.loads(capsys.readouterr().out)
    assert printed["isolation_breaches"] == 0 and printed["success_rate"] == 1.0, printed["failures"]
    # Each visitor: one training, its pickers, the neighbour's run, its own predictions.
    assert printed["requests"] == VISITORS * (3 + PREDICTIONS)
    assert printed["runs_trained"] == printed["own_run_listed"] == VISITORS
    assert len(set(results.runs.values())) == VISITORS
    assert all(Path(run).is_relative_to(tmp_path / "sessions") for run in results.runs.values())
    assert 0 < printed["latency_p50_s"] <= printed["latency_p95_s"] <= printed["latency_max_s"]


def test_the_isolation_count_sees_shared_runs(tmp_path, monkeypatch):
    """Locally every run is in the one checkpoints folder: every visitor sees the others' (the count can fail)."""
    summary = visit(tmp_path, monkeypatch, public=False, visitors=2, predictions=0).summary()
    assert summary["runs_trained"] == 2 and summary["isolation_breaches"] == 2
