"""Settings, read once from environment variables.

Modes (ANNOTATE_ENV): ``dev`` (default; the embedded setup: SQLite, a local file broker
for Celery, files on local disk), ``test`` (the test suite) and ``prod`` (PostgreSQL +
Redis required, secrets required, secure defaults). The mode is decided here, once, and
logged by ``annotate.apps`` at start-up; nothing re-decides it per call.
"""

from __future__ import annotations

import logging
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()

ANNOTATE_ENV = env.str("ANNOTATE_ENV", default="dev")
if ANNOTATE_ENV not in {"dev", "test", "prod"}:
    raise ImproperlyConfigured(f"ANNOTATE_ENV must be dev, test or prod, not {ANNOTATE_ENV!r}")

VAR_DIR = Path(env.str("ANNOTATE_VAR_DIR", default=str(BASE_DIR / "var")))

DEBUG = env.bool("DJANGO_DEBUG", default=(ANNOTATE_ENV == "dev"))
if ANNOTATE_ENV == "prod" and DEBUG:
    # Debug pages print settings, SQL and stack frames to anyone who triggers an error.
    raise ImproperlyConfigured("DJANGO_DEBUG must be off when ANNOTATE_ENV=prod")

if ANNOTATE_ENV == "prod":
    SECRET_KEY = env.str("DJANGO_SECRET_KEY")  # no default: boot fails when unset
    ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS")
else:
    SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="dev-only-not-secret-" + "x" * 40)
    ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "labeling",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "labeling.middleware.DatabaseUnavailableMiddleware",  # a 503 JSON error while PostgreSQL is down
    "labeling.security_headers.ContentSecurityPolicyMiddleware",
]

if ANNOTATE_ENV == "prod":
    # Static files from the collected folder; dev's runserver serves them from static/.
    MIDDLEWARE.insert(1, "whitenoise.middleware.WhiteNoiseMiddleware")

ROOT_URLCONF = "annotate.urls"
WSGI_APPLICATION = "annotate.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- database -------------------------------------------------------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'annotate.sqlite3'}"),
}
_db = DATABASES["default"]
if _db["ENGINE"].endswith("sqlite3"):
    Path(_db["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # The embedded default: the web server and the worker share one file. WAL lets the
    # worker write while pages are read; the timeout rides out short write locks.
    _db.setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
else:
    _db.setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
    _db.setdefault("CONN_HEALTH_CHECKS", True)
if env.str("TEST_DB_NAME", default=""):
    # Lets several test runs share one server without dropping each other's database.
    _db["TEST"] = {"NAME": env.str("TEST_DB_NAME")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- auth, i18n -----------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
if ANNOTATE_ENV == "test":
    # Real password hashing makes every test user cost ~100 ms of CPU.
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- static and uploaded files --------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(VAR_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"]
# Uploaded images are private: there is no MEDIA_URL route. They are served only by the
# membership-checked views in labeling.views.
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))
MEDIA_URL = "/media-not-served/"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if ANNOTATE_ENV == "prod"
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=10 * 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FILES = env.int("DATA_UPLOAD_MAX_NUMBER_FILES", default=1000)

# --- import limits --------------------------------------------------------------------
IMPORT_MAX_FILE_BYTES = env.int("IMPORT_MAX_FILE_BYTES", default=50 * 1024 * 1024)
IMPORT_MAX_PIXELS = env.int("IMPORT_MAX_PIXELS", default=100_000_000)
IMPORT_MAX_ZIP_BYTES = env.int("IMPORT_MAX_ZIP_BYTES", default=2 * 1024 * 1024 * 1024)
IMPORT_ROOTS = env.list("IMPORT_ROOTS", default=[])
THUMBNAIL_SIZE = env.int("THUMBNAIL_SIZE", default=256)
IMPORT_SYNC_MAX_FILES = env.int("IMPORT_SYNC_MAX_FILES", default=20)  # larger uploads become a background job
IMPORT_SYNC_MAX_BYTES = env.int("IMPORT_SYNC_MAX_BYTES", default=20 * 1024 * 1024)
IMPORT_MAX_ZIP_ENTRIES = env.int("IMPORT_MAX_ZIP_ENTRIES", default=100_000)
IMPORT_MAX_REFERENCES = env.int("IMPORT_MAX_REFERENCES", default=10_000)
# URL imports (labeling.services.fetch): only public addresses unless a CIDR here allows more
# (e.g. "10.20.0.0/16" for an internal image server). Never list the metadata range 169.254.0.0/16.
IMPORT_URL_ALLOWED_NETWORKS = env.list("IMPORT_URL_ALLOWED_NETWORKS", default=[])
IMPORT_URL_TIMEOUT_SECONDS = env.float("IMPORT_URL_TIMEOUT_SECONDS", default=10.0)  # per fetch, redirects included
IMPORT_URL_MAX_REDIRECTS = env.int("IMPORT_URL_MAX_REDIRECTS", default=3)
IMPORT_URL_SYNC_MAX = env.int("IMPORT_URL_SYNC_MAX", default=5)  # more URLs than this: a background import job
PROJECT_CREATE_REQUIRES_STAFF = env.bool("PROJECT_CREATE_REQUIRES_STAFF", default=False)

# Login throttle counters must be shared across web processes in production (e.g. redis://).
CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://")}
# Brute force (labeling.services.auth): after LOGIN_MAX_FAILURES failed sign-ins for one
# user name, or LOGIN_MAX_FAILURES_PER_IP from one address, sign-in is refused (HTML form
# error, API 429) until LOGIN_LOCKOUT_SECONDS after the first failure of the window.
LOGIN_MAX_FAILURES = env.int("LOGIN_MAX_FAILURES", default=5)
LOGIN_MAX_FAILURES_PER_IP = env.int("LOGIN_MAX_FAILURES_PER_IP", default=50)
LOGIN_LOCKOUT_SECONDS = env.int("LOGIN_LOCKOUT_SECONDS", default=900)
# Reverse proxies in front of the web server that append to X-Forwarded-For (nginx: 1).
# 0 takes REMOTE_ADDR; only set it when the web port is reachable by the proxy alone.
LOGIN_PROXY_COUNT = env.int("LOGIN_PROXY_COUNT", default=0)
if CACHES["default"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache":  # Redis down: degrade, never 500
    CACHES["default"]["BACKEND"] = "labeling.cache.FailSoftRedisCache"

# --- the annotator workspace and the queue --------------------------------------------
UNDO_WINDOW_SECONDS = env.int("UNDO_WINDOW_SECONDS", default=120)
WORKSPACE_IDLE_SECONDS = env.int("WORKSPACE_IDLE_SECONDS", default=30)  # idle gap after which the clock pauses
CONSENSUS_REFRESH_EVERY = env.int("CONSENSUS_REFRESH_EVERY", default=200)  # full Dawid-Skene every N annotations
# The submit path checks the consensus/retrain cadence at most this often per project.
CADENCE_DEBOUNCE_SECONDS = env.int("CADENCE_DEBOUNCE_SECONDS", default=10)

# --- the manager dashboard -------------------------------------------------------------
REVIEW_ASSUMED_SECONDS = env.int("REVIEW_ASSUMED_SECONDS", default=60)  # a review's cost at an hourly rate
DASHBOARD_DEFAULT_TARGET_ACCURACY = env.float("DASHBOARD_DEFAULT_TARGET_ACCURACY", default=0.9)
DASHBOARD_CACHE_SECONDS = env.int("DASHBOARD_CACHE_SECONDS", default=60)  # heavy aggregates, per project

# --- REST framework -------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "labeling.api.schema.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 100,
    "EXCEPTION_HANDLER": "labeling.api.exception_handler.api_exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "annotate API",
    "DESCRIPTION": "Human-in-the-loop annotation with active learning.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    # Swagger UI is served from the vendored sidecar package: no CDN at run time.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Celery ---------------------------------------------------------------------------
# Embedded default: kombu's filesystem transport, a real broker in a local folder, so a
# real worker runs the jobs with no Redis. Production: CELERY_BROKER_URL=redis://...
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="memory://" if ANNOTATE_ENV == "test" else "filesystem://")
CELERY_BROKER_DIR = Path(env.str("CELERY_BROKER_DIR", default=str(VAR_DIR / "broker")))
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_BROKER_DIR / "queue"),
        "data_folder_out": str(CELERY_BROKER_DIR / "queue"),
        "control_folder": str(CELERY_BROKER_DIR / "control"),
        "store_processed": False,
    }
else:
    # With acks_late a job that outlives the visibility timeout is redelivered to a second
    # worker; keep the timeout well above the longest task time limit (1 h).
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3 * 3600}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_IGNORE_RESULT = True  # job state lives in our own tables, not a result backend
CELERY_TASK_DEFAULT_QUEUE = "cpu"
CELERY_TASK_ROUTES = {
    "mltasks.embed_items": {"queue": "gpu"},
    "mltasks.train_model": {"queue": "gpu"},
    "mltasks.score_pool": {"queue": "gpu"},
}
# Eager execution is for unit tests only; flows that cross a worker use a real one (tests/conftest.py).
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=(ANNOTATE_ENV == "test"))
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_BEAT_SCHEDULE = {
    "reclaim-expired-leases": {"task": "labeling.reclaim_expired_leases", "schedule": 60.0},
    # Jobs the broker could not take (Redis down) and jobs whose worker died: enqueue them again.
    "ml-jobs-reconcile": {"task": "mltasks.reconcile_jobs", "schedule": 60.0},
    # The trailing edge of the consensus/retrain cadence (the submit path debounces it).
    "cadence-check": {"task": "labeling.cadence_check", "schedule": 60.0},
}

# --- ML -------------------------------------------------------------------------------
ML_ARTIFACT_ROOT = Path(env.str("ML_ARTIFACT_ROOT", default=str(VAR_DIR / "ml")))
ML_DEFAULT_BACKBONE = env.str("ML_DEFAULT_BACKBONE", default="efficientnet_lite0")
ML_BATCH_SIZE = env.int("ML_BATCH_SIZE", default=64)
ML_DEVICE = env.str("ML_DEVICE", default="auto")  # auto | cpu | cuda
ML_ALLOW_HUB_DOWNLOAD = env.bool("ML_ALLOW_HUB_DOWNLOAD", default=False)
# Torch threads per worker process; 0 keeps torch's choice. On a small shared CPU 1 is fastest.
ML_TORCH_THREADS = env.int("ML_TORCH_THREADS", default=0)
ML_JOB_STALE_AFTER_S = env.int("ML_JOB_STALE_AFTER_S", default=600)  # no heartbeat this long: the worker died
ML_JOB_MAX_ATTEMPTS = env.int("ML_JOB_MAX_ATTEMPTS", default=5)
ML_JOB_ENQUEUE_GRACE_S = env.int("ML_JOB_ENQUEUE_GRACE_S", default=60)
ML_JOB_REQUEUE_AFTER_S = env.int("ML_JOB_REQUEUE_AFTER_S", default=3600)
# Embed new items right after an import (the cold-start order needs embeddings). Off in unit tests.
ML_AUTO_EMBED = env.bool("ML_AUTO_EMBED", default=(ANNOTATE_ENV != "test"))

# --- security -------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # the workspace JS reads it to send X-CSRFToken
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
# Content-Security-Policy, set by labeling.security_headers on every answer. Pages load
# scripts only from our static files (data for them comes in json_script blocks, which are
# not executed); style attributes stay allowed (progress bars, class colors).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# Third-party pages with inline scripts of their own (the Swagger UI) keep their own rules.
CONTENT_SECURITY_POLICY_EXEMPT_PREFIXES = ["/api/v1/docs/", "/admin/"]
if ANNOTATE_ENV == "prod":
    if _db["ENGINE"].endswith("sqlite3") or not CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
        raise ImproperlyConfigured("prod needs DATABASE_URL=postgres://... and CELERY_BROKER_URL=redis://...")
    SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
logging.captureWarnings(True)
