#!/bin/sh
# One image, several roles. The first argument picks one:
#   web         gunicorn on :8000 (threads: a streamed export does not block the worker's heartbeat)
#   migrate     apply database migrations and exit (compose runs it once, before the others)
#   worker-cpu  Celery worker for the "cpu" queue (and "gpu" too when no GPU worker runs)
#   worker-gpu  Celery worker for the "gpu" queue: one job at a time, recycled every 50 tasks
#   beat        Celery beat (periodic jobs, e.g. reclaiming expired leases); run exactly one
#   healthcheck exit 0 when /healthz answers 200 (web up, database reachable)
# Anything else is executed as given (e.g. `python manage.py createsuperuser`).
set -eu

role="${1:-web}"
[ "$#" -gt 0 ] && shift

case "$role" in
  web)
    exec gunicorn annotate.wsgi:application \
      --bind "0.0.0.0:${PORT:-8000}" \
      --workers "${WEB_CONCURRENCY:-3}" \
      --worker-class gthread \
      --threads "${GUNICORN_THREADS:-4}" \
      --timeout "${GUNICORN_TIMEOUT:-120}" \
      --access-logfile - \
      "$@"
    ;;
  migrate)
    exec python manage.py migrate --noinput "$@"
    ;;
  worker-cpu)
    # Without a GPU worker the CPU worker also takes the "gpu" queue: every job still runs
    # (on CPU). With the gpu profile, set WORKER_CPU_QUEUES=cpu.
    exec celery -A annotate worker \
      -Q "${WORKER_CPU_QUEUES:-cpu,gpu}" \
      -c "${WORKER_CPU_CONCURRENCY:-4}" \
      -n "cpu@%h" \
      --max-tasks-per-child 200 \
      -l "${LOG_LEVEL:-INFO}" \
      "$@"
    ;;
  worker-gpu)
    # One process per GPU, one prefetched job: a second job must not queue behind a long
    # training run on a worker that already holds the GPU's memory.
    exec celery -A annotate worker \
      -Q gpu \
      -c 1 \
      --prefetch-multiplier 1 \
      --max-tasks-per-child 50 \
      -n "gpu@%h" \
      -l "${LOG_LEVEL:-INFO}" \
      "$@"
    ;;
  beat)
    exec celery -A annotate beat \
      --schedule "${ANNOTATE_VAR_DIR:-/data/var}/celerybeat-schedule" \
      -l "${LOG_LEVEL:-INFO}" \
      "$@"
    ;;
  healthcheck)
    # /healthz answers 200 while Django is up and the database answers (503 otherwise). The
    # Host header is the first allowed host and the request claims HTTPS, so neither
    # ALLOWED_HOSTS nor the HTTPS redirect turns a healthy server into a failed check.
    exec python - <<'EOF'
import http.client, os, sys
host = os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost").split(",")[0].strip().lstrip(".") or "localhost"
conn = http.client.HTTPConnection("127.0.0.1", int(os.environ.get("PORT", "8000")), timeout=5)
conn.request("GET", "/healthz", headers={"Host": host, "X-Forwarded-Proto": "https"})
sys.exit(0 if conn.getresponse().status == 200 else 1)
EOF
    ;;
  *)
    exec "$role" "$@"
    ;;
esac
