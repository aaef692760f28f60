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
    def __init__(self, path: Path):
        self.path = Path(path)
        self.lock = threading.Lock()  # one writer at a time; sqlite3 connections are not shared across threads
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.connect() as connection:
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute(SCHEMA)
        except (OSError, sqlite3.Error) as error:
            raise SuggestionsUnavailable(f"suggestions database {self.path}: cannot be opened ({error})") from None

    def connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=10)
        connection.execute("PRAGMA synchronous=FULL")
        return connection

    def add(self, q: str, s: str, source: str, target: str, api_key: str | None) -> int:
        digest = hashlib.sha256(api_key.encode("utf-8", "surrogatepass")).hexdigest() if api_key else None
        with self.lock:
            connection = self.connect()
            try:
                with connection:  # commits, or rolls back on an error
                    cursor = connection.execute(
                        "INSERT INTO suggestions (q, s, source, target, api_key_sha256, created) VALUES (?, ?, ?, ?, ?, ?)",
                        (q, s, source, target, digest, time.time()))
                return int(cursor.lastrowid)
            finally:
                connection.close()

    def all(self) -> list[dict]:
        connection = self.connect()
        try:
            connection.row_factory = sqlite3.Row
            return [dict(row) for row in connection.execute("SELECT * FROM suggestions ORDER BY id")]
        finally:
            connection.close()
