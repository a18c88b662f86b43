"""synthreview settings: every value from the environment (read by `synthreview/env.py`).

Each service has an embedded default so `make demo` needs nothing installed: SQLite for the
database, no broker (Celery tasks run in-process) and the offline demo LLM provider. A bad value
fails at start-up with ImproperlyConfigured naming the variable.
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from synthreview.env import (
    env_bool,
    env_float,
    env_int,
    env_list,
    env_model_prices,
    env_str,
    env_url,
    load_env_file,
)

BASE_DIR = Path(__file__).resolve().parent.parent

# --- Core ---------------------------------------------------------------------------------------

# SYNTHREVIEW_ENV_FILE names another file; empty reads none (`make test` runs on the environment
# alone, whatever a local .env says).
load_env_file(env_str("SYNTHREVIEW_ENV_FILE", str(BASE_DIR / ".env")))

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is required when DEBUG is off: set SECRET_KEY to a long random string "
            "(python -c 'import secrets; print(secrets.token_urlsafe(50))'), or DEBUG=1 locally."
        )
    SECRET_KEY = "insecure-debug-only-key-do-not-use-in-production"  # noqa: S105

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "csp",
    "generation",
    "review",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "synthreview.middleware.PrivatePagesMiddleware",
    "synthreview.middleware.RejectMalformedInputMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "synthreview.urls"
WSGI_APPLICATION = "synthreview.wsgi.application"
ASGI_APPLICATION = "synthreview.asgi.application"

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
                "csp.context_processors.nonce",
                "generation.context_processors.llm_provider",
            ],
        },
    }
]

# --- Database -----------------------------------------------------------------------------------
# DATABASE_URL selects PostgreSQL (postgres://user:pass@host:5432/name); unset, a SQLite file.

DATABASE_URL = env_url("DATABASE_URL", {"postgres", "postgresql", "pgsql", "sqlite"})
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_health_checks=True)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env_str("SQLITE_PATH", str(BASE_DIR / "db.sqlite3")),
            # The demo runs tasks in-process next to web requests; wait for the writer lock
            # instead of failing with "database is locked".
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
        }
    }
IS_POSTGRES = DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
if IS_POSTGRES:
    # Worker threads hand their connection back to this pool while they wait on the LLM, so
    # hundreds of in-flight requests share a few PostgreSQL connections.
    DATABASE_POOL_MAX_SIZE = env_int("DATABASE_POOL_MAX_SIZE", 20, minimum=0)
    if DATABASE_POOL_MAX_SIZE:
        DATABASES["default"]["CONN_MAX_AGE"] = 0
        DATABASES["default"]["CONN_HEALTH_CHECKS"] = False
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": 1,
            "max_size": DATABASE_POOL_MAX_SIZE,
            "timeout": 60,
        }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth ---------------------------------------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "review:queue"
LOGOUT_REDIRECT_URL = "login"

# --- I18N, static -------------------------------------------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles"))
MEDIA_ROOT = env_str("MEDIA_ROOT", str(BASE_DIR / "media"))
MEDIA_URL = "media/"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# --- Security -----------------------------------------------------------------------------------

SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", not DEBUG)
# Pages hand the token to htmx in hx-headers and to forms in a hidden field; no script reads
# the cookie, so scripts may not.
CSRF_COOKIE_HTTPONLY = True
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
if env_bool("SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"

# Model output is rendered as sanitized HTML; scripts only ever come from our own static files.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    }
}

# --- Celery ---------------------------------------------------------------------------------------
# CELERY_BROKER_URL unset: tasks run eagerly in the calling process (demo, small installs).

CELERY_BROKER_URL = env_url("CELERY_BROKER_URL", {"redis", "rediss"})
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_RESULT_BACKEND = None
# No results are stored, so one (disabled) backend object serves every thread and greenlet;
# otherwise each gevent greenlet that enqueues a task builds its own.
CELERY_RESULT_BACKEND_THREAD_SAFE = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TIMEZONE = TIME_ZONE
# A dead worker's tasks come back instead of being lost, and each worker takes one message at a
# time so a crash strands as little as possible.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 1800, minimum=10)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 1860, minimum=10)
# Must exceed the hard time limit, plus the longest delay a launch gives a dialogue's start
# (generation.engine.dispatch.MAX_SPREAD_SECONDS, 600), or Redis hands a long task to a second
# worker.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": CELERY_TASK_TIME_LIMIT + 1200,
    # Redis connections per process for acks and publishes. A gevent worker's greenlets ack
    # at the same moment; past kombu's default of 10 an ack fails with "Too many connections"
    # and the message is delivered again later.
    "max_connections": 1000,
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_TASK_DEFAULT_QUEUE", "synthreview")

# --- LLM --------------------------------------------------------------------------------------------
# Any OpenAI-compatible server. Neither a base URL nor a key: the offline demo provider.

OPENAI_BASE_URL = env_url("OPENAI_BASE_URL", {"http", "https"})
OPENAI_API_KEY = env_str("OPENAI_API_KEY")
SYNTHREVIEW_LLM_MODEL = env_str("SYNTHREVIEW_LLM_MODEL", "gpt-4o-mini")
SYNTHREVIEW_LLM_PROVIDER = "openai" if (OPENAI_BASE_URL or OPENAI_API_KEY) else "demo"
SYNTHREVIEW_LLM_TIMEOUT = env_float("SYNTHREVIEW_LLM_TIMEOUT", 60.0, minimum=0.1)
SYNTHREVIEW_LLM_MAX_RETRIES = env_int("SYNTHREVIEW_LLM_MAX_RETRIES", 5, minimum=0)
# Backoff before retry n: uniform in [c/2, c] with c = min(MAX, BASE * 2**(n-1)); Retry-After wins.
SYNTHREVIEW_LLM_RETRY_BASE_SECONDS = env_float("SYNTHREVIEW_LLM_RETRY_BASE_SECONDS", 1.0, minimum=0)
SYNTHREVIEW_LLM_RETRY_MAX_SECONDS = env_float("SYNTHREVIEW_LLM_RETRY_MAX_SECONDS", 30.0, minimum=0)


SYNTHREVIEW_MODEL_PRICES = env_model_prices("SYNTHREVIEW_MODEL_PRICES")
# Worker recovery. A generating worker renews its dialogue leases every LEASE/4 seconds; a lease
# that expires means the worker died, and the sweep (every SWEEP seconds in every worker)
# re-enqueues the dialogue: a dead worker's dialogues resume within LEASE + SWEEP seconds.
# Host part of lease owners; set it when containers share a pid namespace (default: host name).
SYNTHREVIEW_WORKER_HOSTNAME = env_str("SYNTHREVIEW_WORKER_HOSTNAME")
SYNTHREVIEW_LEASE_SECONDS = env_int("SYNTHREVIEW_LEASE_SECONDS", 60, minimum=5)
SYNTHREVIEW_SWEEP_SECONDS = env_int("SYNTHREVIEW_SWEEP_SECONDS", 20, minimum=1)
# A dispatched dialogue whose task has not started after this long is enqueued again (its
# message may sit in a dead worker's prefetch until the broker's visibility timeout).
SYNTHREVIEW_DISPATCH_STALE_SECONDS = env_int("SYNTHREVIEW_DISPATCH_STALE_SECONDS", 300, minimum=10)
# A run's max_in_flight caps its LLM requests (a slot per call, shared by all workers through
# the broker's Redis); it keeps ceil(max_in_flight * HEADROOM) more dialogues open than that, so
# a dialogue saving a turn or starting up never leaves a slot idle. 0: one dialogue per slot.
SYNTHREVIEW_DIALOGUE_HEADROOM = env_float("SYNTHREVIEW_DIALOGUE_HEADROOM", 0.5, minimum=0)

# --- Review ----------------------------------------------------------------------------------------

SYNTHREVIEW_CLAIM_MINUTES = env_int("SYNTHREVIEW_CLAIM_MINUTES", 30, minimum=1)
SYNTHREVIEW_MAX_CORRECTION_CHARS = env_int("SYNTHREVIEW_MAX_CORRECTION_CHARS", 20_000, minimum=1)
# A completed dialogue whose estimated Jaccard similarity (MinHash of word shingles) to an
# earlier one reaches this is a near-duplicate, left out of exports by default. The LSH bands
# depend on it: after changing it, run `manage.py find_duplicates --rebuild`.
SYNTHREVIEW_NEAR_DUPLICATE_THRESHOLD = env_float(
    "SYNTHREVIEW_NEAR_DUPLICATE_THRESHOLD", 0.8, minimum=0.05, maximum=1
)

# --- Export ----------------------------------------------------------------------------------------
# Admin exports of more approved dialogues than this run in a Celery task (when a broker is
# configured) so they never tie up a web worker; smaller ones finish within the request.
SYNTHREVIEW_EXPORT_INLINE_MAX = env_int("SYNTHREVIEW_EXPORT_INLINE_MAX", 2000, minimum=0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO").upper()},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        # One line per LLM request is noise at a hundred requests a second; failures are
        # logged by generation itself.
        "httpx2": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
    },
}
