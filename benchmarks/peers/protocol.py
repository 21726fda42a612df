"""The line protocol between the peer benchmark's coordinator (``run.py``) and its workers (stdlib only).

A worker writes one message per line on stdout, prefixed with :data:`TAG` so that whatever a library prints
there (TensorFlow, XLA) cannot be mistaken for one, and waits for a line on stdin before each epoch.
"""

from __future__ import annotations

import json
import sys
from typing import Any

TAG = "@@trainwell-peers "


def send(**message: Any) -> None:
    """One message to the coordinator."""
    sys.stdout.write(TAG + json.dumps(message) + "\n")
    sys.stdout.flush()


def wait_turn() -> None:
    """Block until the coordinator gives this worker the turn (one line on stdin); exit when it has gone."""
    if not sys.stdin.readline():
        sys.exit(0)


def parse(line: str) -> dict[str, Any] | None:
    """The message in a worker's output line, or None for a line some library printed."""
    return json.loads(line[len(TAG) :]) if line.startswith(TAG) else None
