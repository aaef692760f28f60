"""Suggested translations (`POST /suggest`), kept in SQLite (the standard library's sqlite3): every
suggestion is committed before the answer is sent, so a restart or a crash loses none. The API key that
sent it is stored as a SHA-256 digest, never in clear."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS suggestions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    q TEXT NOT NULL,
    s TEXT NOT NULL,
    source TEXT NOT NULL,
    target TEXT NOT NULL,
    api_key_sha256 TEXT,
    created REAL NOT NULL
)
"""


class SuggestionsUnavailable(RuntimeError):
    """The suggestions database cannot be opened; the message names the file."""


class SuggestionStore:
    """One connection, opened here and closed by close() (the app's shutdown) or on leaving a `with`."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.lock = threading.Lock()  # one user of the connection at a time: route threads share it
        connection = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=10, check_same_thread=False)
            connection.execute("PRAGMA synchronous=FULL")
            connection.execute("PRAGMA journal_mode=WAL")
            with connection:
                connection.execute(SCHEMA)
        except (OSError, sqlite3.Error) as error:
            if connection is not None:
                connection.close()
            raise SuggestionsUnavailable(f"suggestions database {self.path}: cannot be opened ({error})") from None
        self.connection = connection

    def __enter__(self) -> "SuggestionStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self.lock:
            self.connection.close()

    def add(self, q: str, s: str, source: str, target: str, api_key: str | None) -> int:
        digest = hashlib.sha256(api_key.encode("utf-8", "surrogatepass")).hexdigest() if api_key else None
        with self.lock, self.connection:  # commits, or rolls back on an error
            cursor = self.connection.execute(
                "INSERT INTO suggestions (q, s, source, target, api_key_sha256, created) VALUES (?, ?, ?, ?, ?, ?)",
                (q, s, source, target, digest, time.time()))
        return int(cursor.lastrowid)

    def all(self) -> list[dict]:
        with self.lock:
            cursor = self.connection.execute("SELECT * FROM suggestions ORDER BY id")
            names = [column[0] for column in cursor.description]
            return [dict(zip(names, row)) for row in cursor]
