"""Shared helpers of the benchmarks.

- thread/allocator setup and cached embeddings (the ML benchmarks);
- the HTTP benchmarks' world (bench/queue_bench.py, bench/load.py): a dedicated PostgreSQL
  database, a project built by COPY, annotators with tokens, the app under gunicorn, a
  keep-alive HTTP client, and the checks that count over-assigned and repeated items from
  the rows themselves.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

OUT = Path(__file__).resolve().parent / "out"
REPO = Path(__file__).resolve().parent.parent
PG = "postgres://postgres@127.0.0.1:5432"
# 1x1 grey PNG.
TINY_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010800000000"
    "3a7e9b550000000a4944415478da63f80f00010101001bb6ee560000000049454e44ae426082"
)


def cpu_setup(threads: int = 2) -> None:
    """Cap threads (shared 2-core box) before torch spins up its pools."""
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch

    torch.set_num_threads(threads)


def embed_cached(
    key: str,
    sources: Sequence[Any],
    *,
    backbone: str = "efficientnet_lite0",
    batch_size: int = 64,
    num_workers: int = 0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Embed ``sources`` with the product pipeline once; later calls read bench/out/emb-<key>-<hash>.npy."""
    from mltasks.core.backbones import load_backbone
    from mltasks.core.features import extract_features

    OUT.mkdir(parents=True, exist_ok=True)
    model, spec = load_backbone(backbone)
    tag = hashlib.sha1(json.dumps([key, spec.to_dict(), len(sources)]).encode()).hexdigest()[:10]  # noqa: S324
    path = OUT / f"emb-{key}-{tag}.npy"
    if path.exists():
        return np.load(path), {"cached": True, "path": str(path), "spec": spec.to_dict()}
    started = time.perf_counter()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        if time.perf_counter() - last[0] > 15 or done == total:
            last[0] = time.perf_counter()
            rate = done / (time.perf_counter() - started)
            print(f"  embedded {done}/{total} ({rate:.1f} img/s)", flush=True)

    feats = extract_features(sources, model, spec, batch_size=batch_size, num_workers=num_workers, progress=progress)
    seconds = time.perf_counter() - started
    np.save(path, feats)
    return feats, {"cached": False, "path": str(path), "seconds": seconds, "spec": spec.to_dict()}


# --- the HTTP benchmarks: database, project, annotators ----------------------------------


def ensure_database(name: str) -> str:
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    return f"{PG}/{name}"


def drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def prepare_app(database_url: str, var_dir: Path) -> dict[str, str]:
    """Migrate the database, put the shared tiny PNG in place, set up Django here; the server's env."""
    env = server_env(database_url, var_dir)
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=REPO, env=env, check=True)
    django_setup(env)
    media = var_dir / "media" / "bench"
    media.mkdir(parents=True, exist_ok=True)
    (media / "shared.png").write_bytes(TINY_PNG)
    return env


def server_env(database_url: str, var_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "ANNOTATE_ENV": "dev",
            "DJANGO_DEBUG": "0",
            "DATABASE_URL": database_url,
            "ANNOTATE_VAR_DIR": str(var_dir),
            "CELERY_BROKER_URL": "memory://",
            "LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(REPO),
        }
    )
    return env


def django_setup(env: dict[str, str]) -> None:
    os.environ.update({k: env[k] for k in ("ANNOTATE_ENV", "DJANGO_DEBUG", "DATABASE_URL", "ANNOTATE_VAR_DIR")})
    os.environ.update({"CELERY_BROKER_URL": "memory://", "LOG_LEVEL": "WARNING"})
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "annotate.settings")
    sys.path.insert(0, str(REPO))
    import django

    django.setup()


def build_project(*, n_items: int, overlap: int, eval_fraction: float, eval_rate: float, reuse: bool):  # type: ignore[no-untyped-def]
    from django.db import connection

    from labeling.models import Item, LabelClass, Project

    name = f"bench-{n_items}-o{overlap}"
    project = Project.objects.filter(name=name).first()
    if project is not None and reuse and Item.objects.filter(project=project).count() == n_items:
        print(f"reusing project {project.pk} ({n_items} items)", flush=True)
        Project.objects.filter(pk=project.pk).update(eval_rate=eval_rate, show_suggestions=True)
        project.refresh_from_db()
        return project
    if project is not None:
        print(f"dropping old project {project.pk}", flush=True)
        with connection.cursor() as cursor:  # the ORM cascade would load every row
            cursor.execute(
                "DELETE FROM labeling_annotation WHERE item_id IN (SELECT id FROM labeling_item WHERE project_id = %s)",
                [project.pk],
            )
            cursor.execute("DELETE FROM labeling_lease WHERE project_id = %s", [project.pk])
            cursor.execute("DELETE FROM labeling_item WHERE project_id = %s", [project.pk])
        project.delete()
    project = Project.objects.create(
        name=name, overlap=overlap, max_overlap=overlap, eval_fraction=eval_fraction, eval_rate=eval_rate
    )
    for i, cls in enumerate(["normal", "benign", "malignant"]):
        LabelClass.objects.create(project=project, name=cls, shortcut=str(i + 1), order=i)

    t0 = time.perf_counter()
    rng = random.Random(0)
    connection.ensure_connection()
    raw = connection.connection  # the psycopg connection, autocommit: COPY commits on its own
    with (
        raw.cursor() as cur,
        cur.copy(
            "COPY labeling_item (project_id, file, thumbnail, original_name, sha256, width, height, mode, metadata,"
            " split, status, priority, wanted, annotation_count, lease_count, created_at) FROM STDIN"
        ) as copy,
    ):
        for i in range(n_items):
            split = "evaluation" if rng.random() < eval_fraction else "train"
            copy.write_row(
                (
                    project.pk,
                    "bench/shared.png",
                    "",
                    f"img{i:07d}.png",
                    f"{project.pk:08x}{i:056x}",
                    1,
                    1,
                    "L",
                    "{}",
                    split,
                    "open",
                    rng.random(),
                    overlap,
                    0,
                    0,
                    "2026-01-01T00:00:00Z",
                )
            )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE labeling_item")
    print(f"built project {project.pk}: {n_items} items by COPY in {time.perf_counter() - t0:.1f} s", flush=True)
    return project


def ensure_annotators(project, k: int) -> list[str]:  # type: ignore[no-untyped-def]
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from labeling.models import Membership

    tokens = []
    for i in range(k):
        user, created = get_user_model().objects.get_or_create(username=f"bench-annotator-{i}")
        if created:
            user.set_unusable_password()
            user.save()
        Membership.objects.get_or_create(user=user, project=project, defaults={"role": Membership.Role.ANNOTATOR})
        tokens.append(Token.objects.get_or_create(user=user)[0].key)
    return tokens


def reset_queue(project_id: int) -> None:
    """Back to an untouched queue: no leases, no annotations, counters zero (touched rows only)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM labeling_annotation WHERE lease_id IN (SELECT id FROM labeling_lease WHERE project_id = %s)",
            [project_id],
        )
        cursor.execute(
            "UPDATE labeling_item SET status = 'open', annotation_count = 0, lease_count = 0"
            " WHERE id IN (SELECT item_id FROM labeling_lease WHERE project_id = %s)",
            [project_id],
        )
        cursor.execute("DELETE FROM labeling_lease WHERE project_id = %s", [project_id])
        # Dead index entries at the head of item_queue_open would slow the next run's first pulls.
        cursor.execute("VACUUM ANALYZE labeling_item")
        cursor.execute("VACUUM ANALYZE labeling_lease")
        cursor.execute("VACUUM ANALYZE labeling_annotation")


def verify(project_id: int) -> dict[str, int]:
    """Counted from rows, not from the counters the code under test maintains."""
    from django.db import connection

    queries = {
        "over_assigned": """
            SELECT count(*) FROM labeling_item i JOIN (
                SELECT item_id, sum(n) AS n FROM (
                    SELECT a.item_id, count(*) AS n FROM labeling_annotation a
                    JOIN labeling_lease l ON l.id = a.lease_id
                    WHERE l.project_id = %(p)s AND a.retracted_at IS NULL GROUP BY a.item_id
                    UNION ALL
                    SELECT item_id, count(*) FROM labeling_lease
                    WHERE project_id = %(p)s AND state = 'active' GROUP BY item_id
                ) u GROUP BY item_id
            ) t ON t.item_id = i.id WHERE t.n > i.wanted""",
        "repeated": """
            SELECT count(*) FROM (
                SELECT a.item_id, a.annotator_id FROM labeling_annotation a
                JOIN labeling_lease l ON l.id = a.lease_id
                WHERE l.project_id = %(p)s GROUP BY 1, 2 HAVING count(*) > 1
            ) r""",
        "counter_mismatch": """
            SELECT count(*) FROM labeling_item i
            WHERE i.id IN (SELECT item_id FROM labeling_lease WHERE project_id = %(p)s)
              AND (i.annotation_count <> (SELECT count(*) FROM labeling_annotation a
                                          WHERE a.item_id = i.id AND a.retracted_at IS NULL)
                OR i.lease_count <> (SELECT count(*) FROM labeling_lease l
                                     WHERE l.item_id = i.id AND l.state = 'active'))""",
        "reshown_after_skip": """
            SELECT count(*) FROM labeling_lease s JOIN labeling_lease l
              ON l.item_id = s.item_id AND l.annotator_id = s.annotator_id AND l.created_at > s.created_at
            WHERE s.project_id = %(p)s AND s.state = 'skipped'""",
        "annotations": """
            SELECT count(*) FROM labeling_annotation a JOIN labeling_lease l ON l.id = a.lease_id
            WHERE l.project_id = %(p)s""",
    }
    out = {}
    with connection.cursor() as cursor:
        for key, sql in queries.items():
            cursor.execute(sql, {"p": project_id})
            out[key] = int(cursor.fetchone()[0])
    return out


# --- the server ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    env: dict[str, str], port: int, workers: int, threads: int, access_log: Path, *, app: str = "annotate.wsgi"
) -> subprocess.Popen:  # type: ignore[type-arg]
    """gunicorn (gthread) on 127.0.0.1:``port`` in its own session: stop it with ``stop_server``."""
    cmd = [
        sys.executable,
        "-m",
        "gunicorn",
        app,
        "-w",
        str(workers),
        "-k",
        "gthread",
        "--threads",
        str(threads),
        "-b",
        f"127.0.0.1:{port}",
        "--preload",  # import Django once, before forking: no cold first request per worker
        "--keep-alive",
        "30",
        "--access-logfile",
        str(access_log),
        "--access-logformat",
        "%(U)s %(s)s %(D)s",
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return proc
        if proc.poll() is not None:
            raise RuntimeError("gunicorn exited")
        time.sleep(0.2)
    raise RuntimeError("gunicorn did not start")


def stop_server(proc: subprocess.Popen) -> None:  # type: ignore[type-arg]
    os.killpg(proc.pid, 15)
    proc.wait(timeout=30)


# --- the client side ----------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q / 100 * len(s)))]


def server_times(access_log: Path, offset: int) -> tuple[list[float], list[float]]:
    next_ms, submit_ms = [], []
    with open(access_log, "rb") as f:
        f.seek(offset)
        for line in f.read().decode(errors="replace").splitlines():
            parts = line.split()
            if len(parts) != 3:
                continue
            path, status, micros = parts
            ms = int(micros) / 1000 if micros.isdigit() else float("nan")
            if path.endswith("/next/") and status == "200":
                next_ms.append(ms)
            elif path == "/api/v1/annotations/" and status == "201":
                submit_ms.append(ms)
    return next_ms, submit_ms


def acknowledged_missing(client_ids: list[str]) -> int:
    """How many annotations the server acknowledged (201/200) are not in the database."""
    from django.db import connection

    if not client_ids:
        return 0
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(DISTINCT client_id) FROM labeling_annotation WHERE client_id = ANY(%s::uuid[])", [client_ids]
        )
        return len(set(client_ids)) - int(cursor.fetchone()[0])


class HttpClient:
    """One keep-alive connection with a token; reconnects after a transport error (status 0)."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes, float]:
        """(status, body, milliseconds)."""
        t0 = time.perf_counter()
        try:
            self.conn.request(method, path, body=body, headers=self.headers)
            res = self.conn.getresponse()
            data = res.read()
            return res.status, data, (time.perf_counter() - t0) * 1000
        except (OSError, http.client.HTTPException) as exc:
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            return 0, str(exc).encode(), (time.perf_counter() - t0) * 1000

    def close(self) -> None:
        self.conn.close()
