"""PostgreSQL restarted under load: a private cluster, the app served by gunicorn, annotators
hammering next/submit from threads.

While the database is down every request fails cleanly (503, ``database_unavailable``,
``Retry-After``; never a 500 or a traceback). When it is back, gunicorn's processes
reconnect by themselves (nobody restarts them). Clients retry an unacknowledged submit
with the same ``client_id``; afterwards every annotation acknowledged to a client (2xx)
is in the database, exactly once, and the items' counters agree with the rows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
import requests

from tests.faults.conftest import NO_PG_SERVER
from tests.faults.services import PrivatePostgres, free_port, pg_bin_dir

REPO = Path(__file__).resolve().parents[2]
N_CLIENTS = 6
N_ITEMS = 2000
OUTAGE_S = 3.0


@dataclass
class ClientLog:
    acked: dict[str, int] = field(default_factory=dict)  # client_id -> annotation id acknowledged
    statuses: Counter[int] = field(default_factory=Counter)
    bad: list[str] = field(default_factory=list)  # 5xx other than a clean 503, or a malformed 503
    transport_errors: int = 0
    ok_times: list[float] = field(default_factory=list)


def _env(pg: PrivatePostgres, tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "ANNOTATE_ENV": "test",
            "DATABASE_URL": pg.url,
            "CELERY_TASK_ALWAYS_EAGER": "false",
            "CELERY_BROKER_URL": "memory://",  # ML follow-ups are not the point here
            "MEDIA_ROOT": str(tmp_path / "media"),
            "ANNOTATE_VAR_DIR": str(tmp_path / "var"),
            "LOG_LEVEL": "WARNING",
        }
    )
    env.pop("TEST_DB_NAME", None)
    return env


def _annotator(base: str, token: str, project: int, labels: list[int], log: ClientLog, stop: threading.Event) -> None:
    """next + submit in a loop; a submit that got no 2xx is retried with the same client_id."""
    session = requests.Session()
    session.headers["Authorization"] = f"Token {token}"
    pending: dict | None = None  # type: ignore[type-arg]

    def call(method: str, path: str, **kw) -> requests.Response | None:  # type: ignore[no-untyped-def]
        try:
            res = session.request(method, base + path, timeout=10, **kw)
        except requests.RequestException:
            log.transport_errors += 1
            return None
        log.statuses[res.status_code] += 1
        if res.status_code >= 500:
            ok = (
                res.status_code == 503
                and res.headers.get("Content-Type", "").startswith("application/json")
                and res.json().get("code") == "database_unavailable"
                and res.headers.get("Retry-After")
            )
            if not ok:
                log.bad.append(f"{method} {path}: {res.status_code} {res.text[:300]}")
            time.sleep(0.05)
        return res

    while not stop.is_set():
        if pending is None:
            res = call("GET", f"/api/v1/projects/{project}/next/")
            if res is None or res.status_code != 200:
                continue
            lease = res.json()["lease"]["id"]
            pending = {"lease": lease, "label": labels[lease % len(labels)], "client_id": str(uuid.uuid4())}
            pending["duration_ms"] = 500
        res = call("POST", "/api/v1/annotations/", json=pending)
        if res is None or res.status_code >= 500:
            continue  # not acknowledged: retry the same answer
        assert res.status_code in (200, 201), res.text
        log.acked[pending["client_id"]] = res.json()["id"]
        log.ok_times.append(time.monotonic())
        pending = None
    # Finish an answer still in flight, as the workspace would, so nothing is left half-done.
    deadline = time.monotonic() + 20
    while pending is not None and time.monotonic() < deadline:
        res = call("POST", "/api/v1/annotations/", json=pending)
        if res is not None and res.status_code in (200, 201):
            log.acked[pending["client_id"]] = res.json()["id"]
            pending = None


@pytest.mark.slow
@pytest.mark.skipif(pg_bin_dir() is None, reason=NO_PG_SERVER)
def test_postgres_restart_under_load(tmp_path: Path) -> None:
    pg = PrivatePostgres(5441)
    gunicorn: subprocess.Popen[bytes] | None = None
    try:
        pg.init()
        env = _env(pg, tmp_path)
        py = sys.executable
        subprocess.run([py, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=REPO, env=env, check=True)
        seeded = subprocess.run(
            [py, "-m", "tests.faults.pg_seed", str(N_CLIENTS), str(N_ITEMS)],
            cwd=REPO,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        seed = json.loads(seeded.stdout.strip().splitlines()[-1])

        port = free_port(8791)
        gunicorn_log = tmp_path / "gunicorn.log"
        with open(gunicorn_log, "wb") as log_fh:
            gunicorn = subprocess.Popen(
                [
                    py,
                    "-m",
                    "gunicorn",
                    "annotate.wsgi:application",
                    "--bind",
                    f"127.0.0.1:{port}",
                    "--workers",
                    "2",
                    "--threads",
                    "4",
                    "--timeout",
                    "60",
                ],
                cwd=REPO,
                env=env,
                stdout=log_fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(base + "/api/v1/schema/", timeout=2).status_code < 500:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, gunicorn_log.read_text()[-3000:]
            time.sleep(0.2)

        logs = [ClientLog() for _ in range(N_CLIENTS)]
        stop = threading.Event()
        threads = [
            threading.Thread(
                target=_annotator, args=(base, token, seed["project"], seed["labels"], log, stop), daemon=True
            )
            for token, log in zip(seed["tokens"], logs, strict=True)
        ]
        for t in threads:
            t.start()
        time.sleep(2.0)
        acked_before = sum(len(log.acked) for log in logs)
        pg.stop()  # pg_ctl -m fast: open connections are cut, in-flight transactions roll back
        down_at = time.monotonic()
        time.sleep(OUTAGE_S)
        during = Counter[int]()
        for log in logs:
            during.update(log.statuses)
        pg.start()
        up_at = time.monotonic()
        time.sleep(3.0)
        stop.set()
        for t in threads:
            t.join(timeout=40)

        statuses = Counter[int]()
        for log in logs:
            statuses.update(log.statuses)
        bad = [line for log in logs for line in log.bad]
        acked = {cid: aid for log in logs for cid, aid in log.acked.items()}
        first_ok_after = min((t for log in logs for t in log.ok_times if t > up_at), default=None)
        print(
            f"\nPostgreSQL restart: {len(acked)} annotations acknowledged ({acked_before} before the stop), "
            f"statuses {dict(sorted(statuses.items()))}, transport errors {sum(log.transport_errors for log in logs)}, "
            f"first 2xx {first_ok_after - up_at:.2f} s after the restart"
            if first_ok_after
            else ""
        )

        assert not bad, "\n".join(bad[:10])
        assert statuses[503] > 0, "the outage was never seen by a client"
        assert during[503] > 0
        assert acked_before > 0 and first_ok_after is not None, "the app did not recover by itself"
        assert first_ok_after - up_at < 10
        assert all(not t.is_alive() for t in threads)
        assert gunicorn.poll() is None, "gunicorn must have stayed up"

        with psycopg.connect(pg.url.replace("postgres://", "postgresql://")) as conn:
            rows = conn.execute("SELECT client_id::text, id FROM labeling_annotation").fetchall()
            counters = conn.execute(
                "SELECT COALESCE(SUM(annotation_count), 0), COALESCE(SUM(lease_count), 0) FROM labeling_item"
            ).fetchone()
            active = conn.execute("SELECT COUNT(*) FROM labeling_lease WHERE state = 'active'").fetchone()
        stored = dict(rows)
        assert len(stored) == len(rows), "a client_id stored twice"
        missing = set(acked) - set(stored)
        assert not missing, f"{len(missing)} acknowledged annotations are missing"
        assert all(stored[cid] == aid for cid, aid in acked.items())
        assert set(stored) == set(acked), "an annotation nobody was told about"
        assert counters is not None and active is not None
        assert counters[0] == len(rows) and counters[1] == active[0], "item counters disagree with the rows"
        assert time.monotonic() - down_at < 60
    finally:
        if gunicorn is not None and gunicorn.poll() is None:
            os.killpg(gunicorn.pid, 15)
            gunicorn.wait(timeout=30)
        pg.close()
