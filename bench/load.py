"""Load test: 64 concurrent annotators through the HTTP API, then the invariants checked in SQL.

What it does:

1. creates a dedicated PostgreSQL database (default ``annotate_load``), migrates it, and
   drops it at the end (``--keep`` keeps it);
2. builds a project of ``--items`` items (default 20k) wanting ``--overlap`` annotations
   each (default 3) by COPY, and ``--annotators`` members with a token each;
3. serves the app under gunicorn on a free 127.0.0.1 port (DEBUG off, consensus hook on);
4. for each of ``--runs`` runs (default 3) of ``--duration`` seconds (default 60): an
   untouched queue, then every annotator (a thread with one keep-alive connection) loops
   ``GET next`` → ``POST annotations``; with probability ``--skip-rate`` it skips the item
   instead, with ``--release-rate`` it releases it (gives it back unanswered);
5. after each run checks, from the rows and not from the counters the code maintains:
   - over-assigned items: annotations + live leases > wanted (must be 0),
   - repeated items: one annotator with two annotations on one item (must be 0),
   - re-shown after skip: an annotator leased an item again after skipping it (must be 0),
   - lost: annotations the server acknowledged (201) that are not in the database (must be 0),
   - counter mismatches: the items' annotation/lease counters against the rows (must be 0);
6. prints throughput, p50/p95/p99 latency of next and submit (client-side, and gunicorn's
   request time), errors by operation and status, per run and the median over runs.

The exit status is 1 when any invariant is violated.

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 .venv/bin/python bench/load.py
    .venv/bin/python bench/load.py --duration 20 --runs 1        # a quick look
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, bench/ comes first on sys.path, where a sibling module could shadow a
# library's; import the shared pieces as the bench package instead.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
sys.path.insert(0, str(_BENCH.parent))

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
from collections import Counter  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

from bench.common import (  # noqa: E402
    HttpClient,
    acknowledged_missing,
    build_project,
    drop_database,
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

INVARIANTS = ("over_assigned", "repeated", "reshown_after_skip", "lost", "counter_mismatch")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--annotators", type=int, default=64)
    p.add_argument("--duration", type=float, default=60.0, help="seconds per run")
    p.add_argument("--runs", type=int, default=3, help="runs (the median is reported)")
    p.add_argument("--items", type=int, default=20_000)
    p.add_argument("--overlap", type=int, default=3, help="annotations wanted per item")
    p.add_argument("--skip-rate", type=float, default=0.03, help="share of items skipped")
    p.add_argument("--release-rate", type=float, default=0.02, help="share of items released unanswered")
    p.add_argument("--think-ms", type=float, default=0.0, help="pause between next and submit")
    p.add_argument("--workers", type=int, default=4, help="gunicorn workers")
    p.add_argument("--threads", type=int, default=8, help="gunicorn threads per worker")
    p.add_argument("--db", default="annotate_load")
    p.add_argument("--keep", action="store_true", help="keep the database afterwards")
    return p.parse_args()


@dataclass
class Stats:
    next_ms: list[float] = field(default_factory=list)
    submit_ms: list[float] = field(default_factory=list)
    other_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    acknowledged: list[str] = field(default_factory=list)
    skips: int = 0
    releases: int = 0
    empty: int = 0
    samples: list[str] = field(default_factory=list)

    def error(self, op: str, status: int, data: bytes) -> None:
        self.errors[f"{op} {status}"] += 1
        if len(self.samples) < 3:
            self.samples.append(f"{op} {status} {data[:200]!r}")


def annotator(port: int, token: str, project_id: int, label_ids: list[int], stop_at: float, args, stats: Stats) -> None:  # type: ignore[no-untyped-def]
    client = HttpClient(port, token)
    rng = random.Random(token)
    think_s = args.think_ms / 1000
    while time.monotonic() < stop_at:
        status, data, ms = client.call("GET", f"/api/v1/projects/{project_id}/next/")
        if status == 204:
            stats.empty += 1
            time.sleep(0.5)  # nothing for me now; leases of others may come back
            continue
        if status != 200:
            stats.error("next", status, data)
            continue
        stats.next_ms.append(ms)
        lease_id = json.loads(data)["lease"]["id"]
        if think_s:
            time.sleep(think_s)
        dice = rng.random()
        if dice < args.skip_rate + args.release_rate:
            action = "skip" if dice < args.skip_rate else "release"
            status, data, ms = client.call("POST", f"/api/v1/leases/{lease_id}/{action}/")
            if status != 200:
                stats.error(action, status, data)
                continue
            stats.other_ms.append(ms)
            if action == "skip":
                stats.skips += 1
            else:
                stats.releases += 1
            continue
        client_id = str(uuid.uuid4())
        body = json.dumps(
            {"lease": lease_id, "label": rng.choice(label_ids), "client_id": client_id, "duration_ms": 900}
        ).encode()
        status, data, ms = client.call("POST", "/api/v1/annotations/", body)
        if status != 201:
            stats.error("submit", status, data)
            continue
        stats.submit_ms.append(ms)
        stats.acknowledged.append(client_id)
    client.close()


def run_once(
    *, port: int, tokens: list[str], project_id: int, label_ids: list[int], args, duration: float, access_log: Path
) -> dict:  # type: ignore[no-untyped-def, type-arg]
    reset_queue(project_id)
    offset = access_log.stat().st_size if access_log.exists() else 0
    load_before = os.getloadavg()[0]
    stats = [Stats() for _ in tokens]
    start = time.monotonic()
    stop_at = start + duration
    threads = [
        threading.Thread(target=annotator, args=(port, tokens[i], project_id, label_ids, stop_at, args, stats[i]))
        for i in range(len(tokens))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    load_after = os.getloadavg()[0]
    time.sleep(0.5)  # let gunicorn flush its access log
    srv_next, srv_submit = server_times(access_log, offset)
    next_ms = [x for s in stats for x in s.next_ms]
    submit_ms = [x for s in stats for x in s.submit_ms]
    acknowledged = [c for s in stats for c in s.acknowledged]
    checks = verify(project_id)
    checks["lost"] = acknowledged_missing(acknowledged)
    errors: Counter[str] = Counter()
    for s in stats:
        errors.update(s.errors)
    return {
        "ann_per_s": len(acknowledged) / elapsed,
        "req_per_s": (len(next_ms) + len(submit_ms) + sum(len(s.other_ms) for s in stats)) / elapsed,
        "next_p50": pct(next_ms, 50),
        "next_p95": pct(next_ms, 95),
        "next_p99": pct(next_ms, 99),
        "srv_next_p99": pct(srv_next, 99),
        "submit_p50": pct(submit_ms, 50),
        "submit_p95": pct(submit_ms, 95),
        "submit_p99": pct(submit_ms, 99),
        "srv_submit_p99": pct(srv_submit, 99),
        "errors": sum(errors.values()),
        "errors_by": dict(errors),
        "annotations": len(acknowledged),
        "db_annotations": checks["annotations"],
        "skips": sum(s.skips for s in stats),
        "releases": sum(s.releases for s in stats),
        "empty": sum(s.empty for s in stats),
        **{key: checks[key] for key in INVARIANTS},
        "load": f"{load_before:.1f}->{load_after:.1f}",
        "samples": [e for s in stats for e in s.samples][:3],
    }


COLUMNS = [
    ("ann_per_s", "ann/s", "{:>6.0f}"),
    ("req_per_s", "req/s", "{:>6.0f}"),
    ("next_p50", "next p50", "{:>8.1f}"),
    ("next_p95", "p95", "{:>6.1f}"),
    ("next_p99", "p99", "{:>6.1f}"),
    ("srv_next_p99", "srv p99", "{:>7.1f}"),
    ("submit_p50", "submit p50", "{:>10.1f}"),
    ("submit_p95", "p95", "{:>6.1f}"),
    ("submit_p99", "p99", "{:>6.1f}"),
    ("srv_submit_p99", "srv p99", "{:>7.1f}"),
    ("errors", "err", "{:>4}"),
    ("over_assigned", "over", "{:>4}"),
    ("repeated", "rep", "{:>4}"),
    ("reshown_after_skip", "skip", "{:>4}"),
    ("lost", "lost", "{:>4}"),
    ("counter_mismatch", "cnt", "{:>4}"),
    ("load", "load1", "{:>10}"),
]
SUMMED = ("errors", *INVARIANTS)


def header() -> str:
    return "       " + " ".join(
        f"{title:>{len(fmt.format(0 if key != 'load' else ''))}}" for key, title, fmt in COLUMNS
    )


def row(label: str, r: dict) -> str:  # type: ignore[type-arg]
    return f"{label:<7}" + " ".join(fmt.format(r[key]) for key, _, fmt in COLUMNS)


def median_row(rows: list[dict]) -> dict:  # type: ignore[type-arg]
    """Latencies and rates: the median over runs; errors and violations: the sum."""
    out = dict(rows[0])
    for key, _, _ in COLUMNS:
        if key == "load":
            continue
        vals = [r[key] for r in rows]
        out[key] = sum(vals) if key in SUMMED else statistics.median(vals)
    out["load"] = "-"
    return out


def main() -> int:
    args = parse_args()
    var_dir = Path(tempfile.mkdtemp(prefix="annotate-load-"))
    drop_database(args.db)  # a leftover of an interrupted run would skew the first run
    database_url = ensure_database(args.db)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks on kill
    server = None
    try:
        env = prepare_app(database_url, var_dir)
        from django.db import connections

        from labeling.models import LabelClass

        project = build_project(n_items=args.items, overlap=args.overlap, eval_fraction=0.1, eval_rate=0.1, reuse=False)
        tokens = ensure_annotators(project, args.annotators)
        label_ids = list(LabelClass.objects.filter(project=project).values_list("id", flat=True))
        port = free_port()
        access_log = var_dir / "access.log"
        print(
            f"annotators={args.annotators} items={args.items} overlap={args.overlap} duration={args.duration}s"
            f" runs={args.runs} skip={args.skip_rate} release={args.release_rate} think={args.think_ms}ms"
            f" gunicorn -w {args.workers} -k gthread --threads {args.threads} cpus={os.cpu_count()}"
            f" load1={os.getloadavg()[0]:.1f}",
            flush=True,
        )
        server = start_server(env, port, args.workers, args.threads, access_log)
        common = {"port": port, "tokens": tokens, "project_id": project.pk, "label_ids": label_ids, "args": args}
        run_once(**common, duration=5.0, access_log=access_log)  # warm-up: imports, connections
        print("latencies in ms (client-side; srv = gunicorn's request time); invariants counted in SQL")
        print(header())
        rows = []
        for i in range(args.runs):
            r = run_once(**common, duration=args.duration, access_log=access_log)
            rows.append(r)
            print(row(f"run{i + 1}", r), flush=True)
            print(
                f"       {r['annotations']} acknowledged, {r['db_annotations']} in the database,"
                f" {r['skips']} skips, {r['releases']} releases, {r['empty']} empty nexts;"
                f" errors by status: {r['errors_by'] or 'none'}",
                flush=True,
            )
            for sample in r["samples"]:
                print("       error:", sample)
        med = median_row(rows)
        print(row("MEDIAN", med), flush=True)
        violations = {key: med[key] for key in INVARIANTS if med[key]}
        print("invariants:", "all 0" if not violations else f"VIOLATED {violations}", flush=True)
        connections.close_all()
        return 1 if violations else 0
    finally:
        if server is not None:
            stop_server(server)
        if not args.keep:
            from django.db import connections

            connections.close_all()
            drop_database(args.db)


if __name__ == "__main__":
    sys.exit(main())
