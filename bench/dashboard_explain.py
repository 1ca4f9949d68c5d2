"""What the dashboard's queries cost on a large project: EXPLAIN ANALYZE of every statement.

    psql -h 127.0.0.1 -U postgres -c 'create database annotate_dash_big'
    export DATABASE_URL=postgres://postgres@127.0.0.1:5432/annotate_dash_big
    .venv/bin/python manage.py migrate --noinput
    .venv/bin/python bench/dashboard_explain.py --generate --items 1000000
    .venv/bin/python bench/dashboard_explain.py            # measure again without regenerating

``--generate`` fills one project with INSERT ... SELECT generate_series (no Python loop):
N items (10 % evaluation; 33 % done with 3 live annotations each, 2 % reviewed, the rest open),
their leases and annotations spread over 30 days across 20 annotators, one consensus label per
done item, 1 % gold items, 10 000 reviews and 6 model versions. It then runs
``project_dashboard`` once to warm the cache, once under CaptureQueriesContext, and prints
each statement's EXPLAIN (ANALYZE, BUFFERS) execution time and top plan node.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# bench/queue_bench.py would shadow the standard library's queue module for a script run from bench/.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "annotate.settings")

import django  # noqa: E402

django.setup()

from django.core.cache import cache  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from labeling.models import Project  # noqa: E402
from labeling.selectors.dashboard import project_dashboard  # noqa: E402

NAME = "Dashboard scale test"

GENERATE_SQL = """
INSERT INTO labeling_project (name, instructions, task_type, overlap, max_overlap, consensus_threshold, lease_minutes,
    eval_fraction, eval_rate, gold_rate, show_suggestions, strategy, retrain_every, backbone, created_at)
VALUES (%(name)s, '', 'image_classification', 3, 3, 0, 10, 0.1, 0.1, 0.01, true, 'margin', 50, '', now())
RETURNING id;
"""


def generate(n_items: int) -> int:
    with connection.cursor() as cur:
        cur.execute(GENERATE_SQL, {"name": NAME})
        pid = cur.fetchone()[0]
        cur.execute(
            'INSERT INTO labeling_labelclass (project_id, name, shortcut, color, "order") '
            "SELECT %s, 'class' || g, g::text, '#4e79a7', g FROM generate_series(1, 3) g",
            [pid],
        )
        cur.execute("SELECT min(id) FROM labeling_labelclass WHERE project_id = %s", [pid])
        c0 = cur.fetchone()[0]
        cur.execute(
            "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email, is_staff, "
            "is_active, date_joined) SELECT '!', false, 'big-' || %s || '-' || g, '', '', '', false, true, now() "
            "FROM generate_series(1, 20) g",
            [pid],
        )
        cur.execute("SELECT array_agg(id ORDER BY id) FROM auth_user WHERE username LIKE %s", [f"big-{pid}-%"])
        users = cur.fetchone()[0]
        cur.execute(
            "INSERT INTO labeling_membership (user_id, project_id, role, hourly_rate, price_per_label, created_at) "
            "SELECT u, %s, 'annotator', 50 + (u %% 5) * 10, CASE WHEN u %% 7 = 0 THEN 0.5 END, now() "
            "FROM unnest(%s::bigint[]) u",
            [pid, users],
        )
        t = time.perf_counter()
        cur.execute(
            """
            INSERT INTO labeling_item (project_id, file, thumbnail, original_name, sha256, width, height, mode,
                metadata,
                split, status, priority, wanted, annotation_count, lease_count, gold_label_id, created_at)
            SELECT %(pid)s, 'x/' || g || '.png', '', g || '.png', md5(%(pid)s || '-' || g) || md5(g::text), 64, 64, 'L',
                '{}'::jsonb,
                CASE WHEN g %% 10 = 0 THEN 'evaluation' ELSE 'train' END,
                CASE WHEN g %% 100 < 2 THEN 'reviewed' WHEN g %% 100 < 33 THEN 'done' ELSE 'open' END,
                random(), 3,
                CASE WHEN g %% 100 < 33 THEN 3 ELSE 0 END, 0,
                CASE WHEN g %% 100 = 50 THEN %(c0)s + g %% 3 END,
                now()
            FROM generate_series(1, %(n)s) g
            """,
            {"pid": pid, "n": n_items, "c0": c0},
        )
        print(f"items: {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        # Three readers per done item: annotators (i + k * 7) mod 20, so never the same one twice.
        cur.execute(
            """
            INSERT INTO labeling_lease (item_id, annotator_id, project_id, state, created_at, expires_at, closed_at)
            SELECT i.id, (%(users)s::bigint[])[1 + ((i.id + k * 7) %% 20)], %(pid)s, 'submitted', now(), now(), now()
            FROM labeling_item i CROSS JOIN generate_series(0, 2) k
            WHERE i.project_id = %(pid)s AND i.annotation_count = 3
            """,
            {"pid": pid, "users": users},
        )
        cur.execute(
            """
            INSERT INTO labeling_annotation (item_id, annotator_id, lease_id, label_id, client_id, started_at,
                submitted_at, duration_ms, suggestion_accepted, retracted_at)
            SELECT l.item_id, l.annotator_id, l.id, %(c0)s + (l.id %% 3), gen_random_uuid(),
                now() - (l.id %% 43200) * interval '1 minute',
                now() - (l.id %% 43200) * interval '1 minute' + interval '20 seconds',
                5000 + (l.id %% 40000), false, NULL
            FROM labeling_lease l WHERE l.project_id = %(pid)s
            """,
            {"pid": pid, "c0": c0},
        )
        print(f"leases + annotations: {time.perf_counter() - t:.1f} s")
        cur.execute(
            """
            INSERT INTO labeling_consensuslabel (item_id, label_id, confidence, method, posterior, n_annotations,
                updated_at)
            SELECT i.id, %(c0)s + (i.id %% 3), 0.9, 'majority', '{}'::jsonb, 3, now()
            FROM labeling_item i WHERE i.project_id = %(pid)s AND i.annotation_count = 3
            """,
            {"pid": pid, "c0": c0},
        )
        cur.execute(
            """
            INSERT INTO labeling_review (item_id, reviewer_id, label_id, note, created_at)
            SELECT i.id, %(u)s, %(c0)s, '', now() - (i.id %% 30) * interval '1 day'
            FROM labeling_item i WHERE i.project_id = %(pid)s AND i.status = 'reviewed' LIMIT 10000
            """,
            {"pid": pid, "c0": c0, "u": users[0]},
        )
        cur.execute(
            """
            INSERT INTO labeling_modelversion (project_id, number, backbone, head, class_ids, artifact, n_train,
                cost_at_training, metrics, created_at)
            SELECT %(pid)s, g, 'b', 'linear', jsonb_build_array(%(c0)s, %(c0)s + 1, %(c0)s + 2), 'x', 1000 * 2 ^ g,
                2000 * 2 ^ g, jsonb_build_object('accuracy', 1 - (2 * (1000 * 2 ^ g) ^ -0.5 + 0.05),
                'confusion', jsonb_build_array(jsonb_build_array(90, 5, 5), jsonb_build_array(4, 92, 4),
                jsonb_build_array(6, 3, 91)), 'n', 300), now()
            FROM generate_series(1, 6) g
            """,
            {"pid": pid, "c0": c0},
        )
        cur.execute(
            "UPDATE labeling_project SET active_model_id = (SELECT max(id) FROM labeling_modelversion "
            "WHERE project_id = %s) WHERE id = %s",
            [pid, pid],
        )
    t = time.perf_counter()
    with connection.cursor() as cur:
        cur.execute("VACUUM ANALYZE")
    print(f"vacuum analyze: {time.perf_counter() - t:.1f} s")
    return pid


def measure(pid: int, repeat: int = 3) -> None:
    project = Project.objects.get(pk=pid)
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM labeling_item WHERE project_id = %s", [pid])
        n_items = cur.fetchone()[0]
        cur.execute(
            "SELECT count(*) FROM labeling_annotation a JOIN labeling_item i ON i.id = a.item_id "
            "WHERE i.project_id = %s",
            [pid],
        )
        n_ann = cur.fetchone()[0]
    print(f"project #{pid}: {n_items} items, {n_ann} annotations; {os.cpu_count()} CPUs")
    project_dashboard(project=project, target_accuracy=0.95)  # warm the buffer cache
    walls = []
    for _ in range(repeat):
        load = os.getloadavg()[0]
        t = time.perf_counter()
        with CaptureQueriesContext(connection) as ctx:
            project_dashboard(project=project, target_accuracy=0.95)
        walls.append(time.perf_counter() - t)
        print(f"project_dashboard(), uncached: {walls[-1] * 1000:.0f} ms wall (load average {load:.1f})")
    cache.delete(f"dashboard:stats:v2:{pid}")
    project_dashboard(project=project, target_accuracy=0.95, max_age_seconds=60)
    t = time.perf_counter()
    project_dashboard(project=project, target_accuracy=0.95, max_age_seconds=60)
    print(f"project_dashboard(), cached heavy rows: {(time.perf_counter() - t) * 1000:.0f} ms wall")
    print(f"{len(ctx.captured_queries)} statements; EXPLAIN ANALYZE of each (heavy ones as the selector runs them):")
    for q in ctx.captured_queries:
        sql = q["sql"]
        if not sql.lstrip().upper().startswith("SELECT"):
            continue
        with transaction.atomic(), connection.cursor() as cur:
            cur.execute("SET LOCAL jit = off")
            cur.execute("SET LOCAL work_mem = '64MB'")
            cur.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql)
            plan = cur.fetchone()[0][0]
        node = plan["Plan"]
        print(f"{plan['Execution Time']:9.1f} ms  {node['Node Type']:<18} {sql[:100]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--generate", action="store_true")
    parser.add_argument("--items", type=int, default=1_000_000)
    args = parser.parse_args()
    if args.generate:
        pid = generate(args.items)
    else:
        pid = Project.objects.filter(name=NAME).order_by("-id").values_list("id", flat=True).first()
        if pid is None:
            raise SystemExit("no generated project: run with --generate")
    measure(pid)


if __name__ == "__main__":
    main()
