"""Project-level checks: settings read from the environment, deploy checks, docker-compose."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_SOURCE = (ROOT / "synthreview" / "settings.py").read_text()
# Every variable settings.py reads, through its env_* helpers or os.environ.
SETTINGS_VARS = set(re.findall(r'env_\w+\(\s*"([A-Z0-9_]+)"', SETTINGS_SOURCE)) | set(
    re.findall(r'os\.environ(?:\.get)?[\[(]"([A-Z0-9_]+)"', SETTINGS_SOURCE)
)
PRODUCTION_ENV = {
    "SECRET_KEY": "p" * 20 + "r0duct10n-l1ke-k3y-w1th-enough-entr0py-XYZ",
    "ALLOWED_HOSTS": "synthreview.example.org",
    "SECURE_SSL_REDIRECT": "1",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_PRELOAD": "1",
}


def run_django(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """manage.py with only `env` set of the variables settings reads (no local .env either)."""
    clean = {k: v for k, v in os.environ.items() if k not in SETTINGS_VARS}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, "SYNTHREVIEW_ENV_FILE": "", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "SECRET_KEY is required when DEBUG is off"),
        ({"DEBUG": "maybe"}, "DEBUG must be a boolean"),
        ({"DEBUG": "1", "DATABASE_URL": "mysql://x/y"}, "DATABASE_URL must be a URL with scheme"),
        ({"DEBUG": "1", "CELERY_BROKER_URL": "amqp://x"}, "CELERY_BROKER_URL must be a URL"),
        ({"DEBUG": "1", "OPENAI_BASE_URL": "localhost:8000"}, "OPENAI_BASE_URL must be a URL"),
        ({"DEBUG": "1", "SYNTHREVIEW_LLM_TIMEOUT": "soon"}, "SYNTHREVIEW_LLM_TIMEOUT must be"),
        ({"DEBUG": "1", "SYNTHREVIEW_CLAIM_MINUTES": "0"}, "SYNTHREVIEW_CLAIM_MINUTES must be at"),
        (
            {"DEBUG": "1", "SYNTHREVIEW_DIALOGUE_HEADROOM": "-0.5"},
            "SYNTHREVIEW_DIALOGUE_HEADROOM must be at least 0",
        ),
        (
            {"DEBUG": "1", "SYNTHREVIEW_DIALOGUE_HEADROOM": "inf"},
            "SYNTHREVIEW_DIALOGUE_HEADROOM must be a finite number",
        ),
        ({"DEBUG": "1", "SYNTHREVIEW_MODEL_PRICES": '{"m": [1]}'}, "SYNTHREVIEW_MODEL_PRICES['m']"),
        (
            {"DEBUG": "1", "SYNTHREVIEW_MODEL_PRICES": "cheap"},
            "SYNTHREVIEW_MODEL_PRICES must be JSON",
        ),
    ],
)
def test_bad_settings_fail_at_startup_naming_the_variable(env, message):
    result = run_django(env, "check")
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


def test_deploy_check_passes_with_production_like_environment():
    result = run_django(PRODUCTION_ENV, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr


def test_migrations_are_committed():
    result = run_django({"DEBUG": "1"}, "makemigrations", "--check", "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_services_use_only_variables_settings_reads():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "web", "worker"} <= set(services)
    for name in ("web", "worker"):
        service = services[name]
        assert service["build"] == "."
        unknown = set(service["environment"]) - SETTINGS_VARS
        assert not unknown, f"{name} sets variables settings.py never reads: {unknown}"
        assert service["environment"]["DATABASE_URL"].startswith("postgres://")
        assert service["environment"]["CELERY_BROKER_URL"].startswith("redis://")
    assert "migrate" in services["web"]["command"]
    assert "celery -A synthreview worker" in services["worker"]["command"]


def test_readme_documents_every_setting():
    readme = (ROOT / "README.md").read_text()
    missing = sorted(var for var in SETTINGS_VARS if f"`{var}`" not in readme)
    assert not missing, f"README does not document: {missing}"


def test_a_local_env_file_makes_every_command_work_without_exports(tmp_path):
    """What `make demo` leaves behind: manage.py commands then need no variables at all."""
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# written by make demo\n\nDEBUG=1\nSECRET_KEY='a-generated-key-for-this-checkout'\n"
        f"SQLITE_PATH={tmp_path / 'db.sqlite3'}\n"
    )
    result = run_django({"SYNTHREVIEW_ENV_FILE": str(env_file)}, "check")
    assert result.returncode == 0, result.stderr
    result = run_django({"SYNTHREVIEW_ENV_FILE": str(env_file)}, "export_dataset", "--help")
    assert result.returncode == 0 and "--format" in result.stdout, result.stderr
    # The environment wins over the file.
    result = run_django({"SYNTHREVIEW_ENV_FILE": str(env_file), "DEBUG": "maybe"}, "check")
    assert "DEBUG must be a boolean" in result.stderr


def test_a_malformed_env_file_names_the_line(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("DEBUG=1\nthis is not a setting\n")
    result = run_django({"SYNTHREVIEW_ENV_FILE": str(env_file)}, "check")
    assert result.returncode != 0
    assert f"{env_file}, line 2: expected NAME=value" in result.stderr


def test_make_demo_writes_a_local_env_that_git_and_docker_ignore(tmp_path):
    makefile = (ROOT / "Makefile").read_text()
    assert "demo: $(STAMP) .env" in makefile and "SECRET_KEY=" in makefile
    assert "/.env" in (ROOT / ".gitignore").read_text().split()
    assert ".env" in (ROOT / ".dockerignore").read_text().split()
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    result = subprocess.run(
        ["make", "-s", ".env", f"PYTHON={sys.executable}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    written = (tmp_path / ".env").read_text()
    assert "DEBUG=1" in written and f"SQLITE_PATH={tmp_path / 'db.sqlite3'}" in written
    key = re.search(r"^SECRET_KEY=(\S+)$", written, re.MULTILINE).group(1)
    assert len(key) >= 50
