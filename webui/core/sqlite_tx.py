"""One SQLite transaction under a store's lock, shared by the stores that keep a single connection."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def locked_transaction(
    lock: threading.Lock | threading.RLock,
    conn: sqlite3.Connection | None,
    begin: str,
    error: Callable[[str], Exception],
    name: str,
) -> Iterator[sqlite3.Connection]:
    """``begin`` (IMMEDIATE for writes, a plain BEGIN for a consistent read) … COMMIT on ``conn`` under
    ``lock``; rolled back on any error. A closed store, or a database that cannot be used (locked too long,
    disk full, a read-only file), raises ``error`` with a message naming ``name``."""
    with lock:
        if conn is None:
            raise error(f"The {name} is closed.")
        try:
            conn.execute(begin)
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            raise error(f"The {name} could not be used: {exc}") from exc
