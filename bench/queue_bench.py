"""Queue benchmark: next-item and submit latency under concurrent annotators, over real HTTP.

What it does:

1. creates (or reuses) a dedicated PostgreSQL database (default ``annotate_bench``) and
   migrates it;
2. builds a project of ``--items`` items with COPY (every item points at one shared tiny
   PNG: the queue never opens the file), random priorities, ``--eval-fraction`` of them in
   the evaluation split;
3. starts the app under gunicorn on a free 127.0.0.1 port (ANNOTATE_ENV=dev, DEBUG off);
4. for each K in ``--annotators`` and each of ``--runs`` runs: resets the queue, lets K
   simulated annotators (threads, one keep-alive HTTP connection and one token each) loop
   ``GET next`` → ``POST annotations`` for ``--duration`` seconds, then verifies from the
   database that no item is over-assigned, no annotator got an item twice and the
   counters match the rows;
5. prints latency percentiles (client-side, and server-side from gunicorn's access log),
   throughput and error counts per run, and the median over runs.

Client and server share the machine, so client-side figures include the client's own CPU
time and queueing; the server-side column is gunicorn's request time.

    .venv/bin/python bench/queue_bench.py                          # 100k items, K = 1, 8, 32
    .venv/bin/python bench/queue_bench.py --items 1000000 --reuse  # 1M items
"""

from __future__ import annotations

import sys

# Run as a script, this file's folder comes first on sys.path, and its name shadows the
# standard library's ``queue`` (which psycopg and others import). Drop that entry.
if __name__ == "__main__" and sys.path and sys.path[0].rstrip("/").endswith("bench"):
    sys.path.pop(0)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (  # noqa: E402
    HttpClient,
    build_project,
    ensure_annotators,
    ensure_database,
    free_port,
    pct,
    prepare_app,
    reset_queue,
    server_times,
    start_server,
    stop_server,
    verify,
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--annotators", default="1,8,32", help="comma-separated K values")
    p.add_argument("--duration", type=float, default=20.0, help="seconds per run")
    p.add_argument("--runs", type=int, default=3, help="runs per K (the median is reported)")
    p.add_argument("--overlap", type=int, default=1, help="annotations wanted per item")
    p.add_argument("--eval-fraction", type=float, default=0.1)
    p.add_argument("--eval-rate", type=float, default=0.1)
    p.add_argument("--think-ms", type=float, default=0.0, help="pause between items per annotator")
    p.add_argument("--workers", type=int, default=4, help="gunicorn workers")
    p.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker")
    p.add_argument("--db", default="annotate_bench")
    p.add_argument("--reuse", action="store_true", help="reuse a bench project of the same size if present")
    p.add_argument(
        "--no-consensus-hook",
        action="store_true",
        help="serve with the after-submit consensus hook disabled: the queue's own cost only",
    )
    return p.parse_args()


# --- setup ------------------------------------------------------------------------------


def explain_pick(project, user_id: int) -> str:  # type: ignore[no-untyped-def]
    """EXPLAIN ANALYZE of the pick-and-lease statement, rolled back."""
    from django.db import connection, transaction
    from django.utils import timezone

    from labeling.services.queue import pick_sql

    now = timezone.now()
    params = {"project_id": project.pk, "split": "train", "user_id": user_id, "now": now, "expires_at": now}
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + pick_sql(), params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        transaction.set_rollback(True)
    return plan


# --- the server ---------------------------------------------------------------------------


def wsgi_without_consensus():  # type: ignore[no-untyped-def]
    """gunicorn app factory (``bench.queue_bench:wsgi_without_consensus()``): the app, consensus hook off."""
    from annotate.wsgi import application
    from labeling.services import queue

    queue._after_submit = lambda item_ids: None  # type: ignore[assignment]
    return application


# --- the annotators -----------------------------------------------------------------------


@dataclass
class Stats:
    next_ms: list[float] = field(default_factory=list)
    submit_ms: list[float] = field(default_factory=list)
    errors: int = 0
    empty: int = 0
    error_samples: list[str] = field(default_factory=list)


def annotator(
    port: int, token: str, project_id: int, label_ids: list[int], stop_at: float, think_s: float, stats: Stats
) -> None:
    client = HttpClient(port, token)
    call = client.call
    rng = random.Random(token)

    while time.monotonic() < stop_at:
        status, data, ms = call("GET", f"/api/v1/projects/{project_id}/next/")
        if status == 204:
            stats.empty += 1
            break
        if status != 200:
            stats.errors += 1
            if len(stats.error_samples) < 3:
                stats.error_samples.append(f"next {status} {data[:200]!r}")
            continue
        stats.next_ms.append(ms)
        lease_id = json.loads(data)["lease"]["id"]
        if think_s:
            time.sleep(think_s)
        body = json.dumps(
            {"lease": lease_id, "label": rng.choice(label_ids), "client_id": str(uuid.uuid4()), "duration_ms": 900}
        ).encode()
        status, data, ms = call("POST", "/api/v1/annotations/", body)
        if status != 201:
            stats.errors += 1
            if len(stats.error_samples) < 3:
                stats.error_samples.append(f"submit {status} {data[:200]!r}")
            continue
        stats.submit_ms.append(ms)
    client.close()


def run_once(*, k: int, port: int, tokens: list[str], project, label_ids: list[int], args, access_log: Path) -> dict:  # type: ignore[no-untyped-def]
    reset_queue(project.pk)
    offset = access_log.stat().st_size if access_log.exists() else 0
    load_before = os.getloadavg()[0]
    stats = [Stats() for _ in range(k)]
    start = time.monotonic()
    stop_at = start + args.duration
    threads = [
        threading.Thread(
            target=annotator,
            args=(port, tokens[i], project.pk, label_ids, stop_at, args.think_ms / 1000, stats[i]),
        )
        for i in range(k)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    time.sleep(0.5)  # let gunicorn flush the access log
    srv_next, srv_submit = server_times(access_log, offset)
    next_ms = [x for s in stats for x in s.next_ms]
    submit_ms = [x for s in stats for x in s.submit_ms]
    checks = verify(project.pk)
    samples = [e for s in stats for e in s.error_samples][:3]
    return {
        "k": k,
        "next_p50": pct(next_ms, 50),
        "next_p95": pct(next_ms, 95),
        "next_p99": pct(next_ms, 99),
        "srv_next_p50": pct(srv_next, 50),
        "srv_next_p99": pct(srv_next, 99),
        "submit_p50": pct(submit_ms, 50),
        "submit_p99": pct(submit_ms, 99),
        "srv_submit_p99": pct(srv_submit, 99),
        "ann_per_s": checks["annotations"] / elapsed,
        "errors": sum(s.errors for s in stats),
        "over_assigned": checks["over_assigned"],
        "repeated": checks["repeated"],
        "counter_mismatch": checks["counter_mismatch"],
        "load": f"{load_before:.1f}->{os.getloadavg()[0]:.1f}",
        "error_samples": samples,
    }


COLUMNS = [
    ("k", "K", "{:>3}"),
    ("next_p50", "next p50", "{:>8.1f}"),
    ("next_p95", "p95", "{:>6.1f}"),
    ("next_p99", "p99", "{:>6.1f}"),
    ("srv_next_p50", "srv p50", "{:>7.1f}"),
    ("srv_next_p99", "srv p99", "{:>7.1f}"),
    ("submit_p50", "submit p50", "{:>10.1f}"),
    ("submit_p99", "p99", "{:>6.1f}"),
    ("srv_submit_p99", "srv p99", "{:>7.1f}"),
    ("ann_per_s", "ann/s", "{:>6.0f}"),
    ("errors", "err", "{:>4}"),
    ("over_assigned", "over", "{:>4}"),
    ("repeated", "rep", "{:>4}"),
    ("counter_mismatch", "cnt", "{:>4}"),
    ("load", "load1", "{:>10}"),
]


def header() -> str:
    return "      " + " ".join(f"{title:>{len(fmt.format(0 if key != 'load' else ''))}}" for key, title, fmt in COLUMNS)


def row(label: str, r: dict) -> str:  # type: ignore[type-arg]
    return f"{label:<6}" + " ".join(fmt.format(r[key]) for key, _, fmt in COLUMNS)


def median_row(rows: list[dict]) -> dict:  # type: ignore[type-arg]
    out = dict(rows[0])
    for key, _, _ in COLUMNS:
        if key in ("k", "load"):
            continue
        vals = [r[key] for r in rows]
        out[key] = (
            statistics.median(vals)
            if key not in ("errors", "over_assigned", "repeated", "counter_mismatch")
            else max(vals)
        )
    out["load"] = "-"
    return out


def main() -> int:
    args = parse_args()
    levels = [int(x) for x in args.annotators.split(",")]
    var_dir = Path(tempfile.mkdtemp(prefix="annotate-bench-"))
    database_url = ensure_database(args.db)
    env = prepare_app(database_url, var_dir)
    from labeling.models import LabelClass

    project = build_project(
        n_items=args.items,
        overlap=args.overlap,
        eval_fraction=args.eval_fraction,
        eval_rate=args.eval_rate,
        reuse=args.reuse,
    )
    tokens = ensure_annotators(project, max(levels))
    label_ids = list(LabelClass.objects.filter(project=project).values_list("id", flat=True))
    from django.contrib.auth import get_user_model

    bench_user = get_user_model().objects.get(username="bench-annotator-0")
    print("EXPLAIN ANALYZE of the pick-and-lease statement:\n" + explain_pick(project, bench_user.pk), flush=True)

    port = free_port()
    access_log = var_dir / "access.log"
    print(
        f"items={args.items} overlap={args.overlap} eval_rate={args.eval_rate}"
        f" duration={args.duration}s runs={args.runs}"
        f" think={args.think_ms}ms gunicorn -w {args.workers} -k gthread --threads {args.threads}"
        f" cpus={os.cpu_count()} consensus_hook={'off' if args.no_consensus_hook else 'on'}",
        flush=True,
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally below on kill
    app = "bench.queue_bench:wsgi_without_consensus()" if args.no_consensus_hook else "annotate.wsgi"
    server = start_server(env, port, args.workers, args.threads, access_log, app=app)
    try:
        # Warm-up: import everything in every worker, open their DB connections.
        run_once(
            k=min(16, len(tokens)),
            port=port,
            tokens=tokens,
            project=project,
            label_ids=label_ids,
            args=argparse.Namespace(**{**vars(args), "duration": 5.0}),
            access_log=access_log,
        )
        print("latencies in ms; srv = gunicorn request time; over/rep/cnt verified from the database")
        print(header())
        for k in levels:
            rows = []
            for i in range(args.runs):
                r = run_once(
                    k=k,
                    port=port,
                    tokens=tokens,
                    project=project,
                    label_ids=label_ids,
                    args=args,
                    access_log=access_log,
                )
                rows.append(r)
                print(row(f"run{i + 1}", r), flush=True)
                for sample in r["error_samples"]:
                    print("      error:", sample)
            print(row("MEDIAN", median_row(rows)), flush=True)
    finally:
        stop_server(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
