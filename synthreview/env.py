"""Reading settings from the environment: typed values that fail at start-up with
ImproperlyConfigured naming the variable, and the local `.env` file `make demo` writes."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false, yes/no), got {raw!r}")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def env_float(
    name: str, default: float, *, minimum: float | None = None, maximum: float | None = None
) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise ImproperlyConfigured(f"{name} must be a finite number, got {raw!r}")
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name} must be at most {maximum}, got {value}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_url(name: str, schemes: set[str]) -> str:
    raw = env_str(name)
    if raw and urlsplit(raw).scheme not in schemes:
        allowed = ", ".join(sorted(schemes))
        raise ImproperlyConfigured(f"{name} must be a URL with scheme {allowed}, got {raw!r}")
    return raw


def env_model_prices(name: str) -> dict[str, tuple[float, float]]:
    """JSON {"model": [usd_per_1M_input, usd_per_1M_output], ...}, merged over the defaults."""
    prices = {
        "gpt-4o-mini": (0.15, 0.60),
        "gpt-4o": (2.50, 10.00),
        "gpt-4.1-mini": (0.40, 1.60),
        "gpt-4.1": (2.00, 8.00),
        "demo-scripted": (0.0, 0.0),
    }
    raw = env_str(name)
    if not raw:
        return prices
    try:
        parsed = json.loads(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise ImproperlyConfigured(f'{name} must be a JSON object like {{"model": [0.15, 0.6]}}')
    for model, pair in parsed.items():
        if (
            not isinstance(pair, list | tuple)
            or len(pair) != 2
            or not all(
                isinstance(p, int | float) and not isinstance(p, bool) and p >= 0 for p in pair
            )
        ):
            raise ImproperlyConfigured(
                f"{name}[{model!r}] must be [input, output] USD per 1M tokens (two numbers >= 0), "
                f"got {pair!r}"
            )
        prices[str(model)] = (float(pair[0]), float(pair[1]))
    return prices


def load_env_file(path: str) -> None:
    """Read NAME=value lines (blank lines, # comments and quotes allowed) into the environment.

    A variable set in the environment wins over the file. `make demo` writes BASE_DIR/.env
    (DEBUG, a generated SECRET_KEY, the SQLite path) so that manage.py commands work as the
    README prints them; it is never committed nor copied into the Docker image.
    """
    if not path or not os.path.isfile(path):
        return
    for number, raw in enumerate(Path(path).read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.removeprefix("export ").partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ImproperlyConfigured(f"{path}, line {number}: expected NAME=value, got {raw!r}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        os.environ.setdefault(name, value)
