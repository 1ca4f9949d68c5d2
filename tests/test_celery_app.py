"""The embedded file broker works from any process, even before its folders exist."""

from __future__ import annotations

from pathlib import Path

import pytest

from annotate.celery import app


def test_first_publish_creates_the_file_broker_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broker = tmp_path / "fresh-clone" / "var" / "broker"
    monkeypatch.setitem(app.conf, "broker_url", "filesystem://")
    monkeypatch.setitem(app.conf, "task_always_eager", False)  # a real publish, as seed_demo does
    monkeypatch.setitem(
        app.conf,
        "broker_transport_options",
        {
            "data_folder_in": str(broker / "queue"),
            "data_folder_out": str(broker / "queue"),
            "control_folder": str(broker / "control"),
            "store_processed": False,
        },
    )
    assert not broker.exists()
    with app.connection_for_write() as conn, conn.Producer() as producer:
        app.send_task("mltasks.tasks.embed_items", args=[0], producer=producer)
    messages = list((broker / "queue").iterdir())
    assert len(messages) == 1
    assert b"mltasks.tasks.embed_items" in messages[0].read_bytes()
