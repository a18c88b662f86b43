"""The SDK's HTTP transport: httpcore's pool with an idle-socket check that never waits for the
gevent event loop, and httpcore's errors turned into the ones the SDK understands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from generation.llm.openai_client import OpenAIClient
from generation.llm.transport import socket_readable
from tests.generation.test_llm import REQUEST

ROOT = Path(__file__).resolve().parents[2]


def test_timeouts_and_dropped_connections_reach_the_sdk_as_its_own_errors(fake_openai):
    client = OpenAIClient(base_url=fake_openai.url, api_key="", timeout=0.5)
    for fault, reason in (("slow", "timed out"), ("drop", "connection error")):
        fake_openai.configure(script=[fault])
        try:
            client.complete(REQUEST)
        except Exception as exc:
            assert exc.reason.startswith(reason), exc.reason
        else:
            raise AssertionError(f"{fault} did not fail")
    fake_openai.configure(script=[])
    assert client.complete(REQUEST).finish_reason == "stop"  # the pool recovered


def test_the_idle_socket_check_sees_data_and_a_closed_peer():
    import socket

    a, b = socket.socketpair()
    assert not socket_readable(a)
    b.sendall(b"x")
    assert socket_readable(a)
    a.recv(1)
    b.close()
    assert socket_readable(a)  # the next read returns b"": the connection is unusable
    assert socket_readable(None)


_UNDER_GEVENT = """
from gevent import monkey
monkey.patch_all()
import socket
import greenlet
import django
django.setup()
from generation.llm.transport import socket_readable
switches = []
greenlet.settrace(lambda event, args: switches.append(event))
a, b = socket.socketpair()
for _ in range(100):
    socket_readable(a)
greenlet.settrace(None)
assert not switches, len(switches)
b.sendall(b"x")
assert socket_readable(a)
print("ok")
"""


def test_under_gevent_the_idle_socket_check_never_switches_to_the_event_loop():
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "synthreview.settings",
        "SECRET_KEY": os.environ.get("SECRET_KEY") or "test",
    }
    result = subprocess.run(
        [sys.executable, "-c", _UNDER_GEVENT], env=env, cwd=ROOT, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert result.stdout.strip() == "ok", result.stderr[-3000:]
