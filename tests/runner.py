"""`make test`: find the real services, say loudly what is missing, then run pytest.

PostgreSQL and Redis are used when DATABASE_URL / CELERY_BROKER_URL are set, or when
they answer at their usual local ports (127.0.0.1:5432, database ``test``, user
``postgres``; 127.0.0.1:6379). Otherwise the suite runs on SQLite and the tests that
need the real services are skipped, and listed as such.
"""

from __future__ import annotations

import os
import socket
import sys

PG_DEFAULT = "postgres://postgres@127.0.0.1:5432/test"
REDIS_DEFAULT = "redis://127.0.0.1:6379/15"


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def main() -> int:
    env = os.environ
    env.setdefault("ANNOTATE_ENV", "test")
    if "DATABASE_URL" not in env and _port_open("127.0.0.1", 5432):
        env["DATABASE_URL"] = PG_DEFAULT
    if "TEST_REDIS_URL" not in env:
        broker = env.get("CELERY_BROKER_URL", "")
        if broker.startswith("redis"):
            env["TEST_REDIS_URL"] = broker
        elif _port_open("127.0.0.1", 6379):
            env["TEST_REDIS_URL"] = REDIS_DEFAULT
    missing = []
    if not env.get("DATABASE_URL", "").startswith("postgres"):
        missing.append("PostgreSQL (tests marked 'postgres' are SKIPPED; the suite runs on SQLite)")
    if not env.get("TEST_REDIS_URL"):
        missing.append("Redis (tests marked 'redis' are SKIPPED)")
    if missing:
        bar = "!" * 78
        print(f"{bar}\n!! NOT TESTED: " + "\n!! NOT TESTED: ".join(missing) + f"\n{bar}", flush=True)
    else:
        print(f"make test: PostgreSQL at {env['DATABASE_URL']}, Redis at {env['TEST_REDIS_URL']}", flush=True)
    args = [sys.executable, "-m", "pytest", *sys.argv[1:]]
    os.execv(sys.executable, args)
    return 0  # unreachable


if __name__ == "__main__":
    sys.exit(main())
