"""Table definitions of the records database (one place, like huey's storage.py).

Times are UNIX seconds (REAL). Statuses:
- executions: running | succeeded | failed | preempted | aborted   (interrupted is derived)
- nodes:      running | succeeded | failed | preempted | aborted
- attempts:   running | succeeded | failed | recoverable | preempted | lost | aborted
"""

from __future__ import annotations

SCHEMA_VERSION = 2

CREATE_EXECUTIONS = """
CREATE TABLE IF NOT EXISTS executions (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    kind          TEXT NOT NULL,            -- 'workflow' | 'task'
    module        TEXT,                     -- module the target was imported as
    file          TEXT,                     -- its source file, to re-import it on resume
    qualname      TEXT NOT NULL,
    inputs        TEXT,                     -- bounded JSON preview of the inputs (display only)
    inputs_ref    TEXT,                     -- blob holding the pickled inputs, for resume
    storage       TEXT NOT NULL,            -- blob store URL of this execution
    status        TEXT NOT NULL,
    result_ref    TEXT,
    error_type    TEXT,
    error_message TEXT,
    traceback     TEXT,
    failed_node   TEXT,
    created       REAL NOT NULL,
    started       REAL,
    ended         REAL,
    driver_pid    INTEGER,
    driver_host   TEXT,
    driver_token  TEXT,                     -- process start time, so a reused pid is not "alive"
    result_preview TEXT                     -- bounded preview of the result (see preview.py)
)
"""

CREATE_NODES = """
CREATE TABLE IF NOT EXISTS nodes (
    execution_id  TEXT NOT NULL,
    key           TEXT NOT NULL,
    task          TEXT NOT NULL,
    status        TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    max_attempts  INTEGER,
    output        BLOB,                     -- pickled output when small (stored with the status)
    output_ref    TEXT,                     -- else the blob holding it
    error_type    TEXT,
    error_message TEXT,
    started       REAL,
    ended         REAL,
    output_preview TEXT,                    -- bounded preview of the output (see preview.py)
    PRIMARY KEY (execution_id, key)
)
"""

CREATE_ATTEMPTS = """
CREATE TABLE IF NOT EXISTS attempts (
    execution_id        TEXT NOT NULL,
    node_key            TEXT NOT NULL,
    n                   INTEGER NOT NULL,
    status              TEXT NOT NULL,
    error_type          TEXT,
    error_message       TEXT,
    traceback           TEXT,
    started             REAL NOT NULL,
    ended               REAL,
    pid                 INTEGER,
    checkpoint_at_start TEXT,
    checkpoint_at_end   TEXT,
    PRIMARY KEY (execution_id, node_key, n)
)
"""

CREATE_INDEXES = ("CREATE INDEX IF NOT EXISTS executions_created ON executions (created)",)

ALL = (CREATE_EXECUTIONS, CREATE_NODES, CREATE_ATTEMPTS, *CREATE_INDEXES)

# What brings a database written at version ``v - 1`` to version ``v``; a new database is created
# at SCHEMA_VERSION by ALL. Columns are only ever added (nullable, at the end), so a reader of an
# older database that it may not migrate (the web view opens it read-only) selects NULL in their
# place: see `columns_for`.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: (
        "ALTER TABLE executions ADD COLUMN result_preview TEXT",
        "ALTER TABLE nodes ADD COLUMN output_preview TEXT",
    ),
}
ADDED_IN = {"result_preview": 2, "output_preview": 2}  # column -> schema version

EXECUTION_COLUMNS = (
    "id, name, kind, module, file, qualname, inputs, inputs_ref, storage, status, result_ref, "
    "error_type, error_message, traceback, failed_node, created, started, ended, driver_pid, "
    "driver_host, driver_token, result_preview"
)
NODE_COLUMNS = (
    "execution_id, key, task, status, attempts, max_attempts, output, output_ref, error_type, "
    "error_message, started, ended, output_preview"
)
ATTEMPT_COLUMNS = (
    "execution_id, node_key, n, status, error_type, error_message, traceback, started, ended, "
    "pid, checkpoint_at_start, checkpoint_at_end"
)


def columns_for(columns: str, version: int) -> str:
    """``columns`` as a database at schema ``version`` can answer them: NULL for later ones."""
    names = [c.strip() for c in columns.split(",")]
    return ", ".join(
        f"NULL AS {name}" if ADDED_IN.get(name, 0) > version else name for name in names
    )
