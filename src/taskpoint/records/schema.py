"""Table definitions of the records database (one place, like huey's storage.py).

Times are UNIX seconds (REAL). Statuses:
- executions: running | succeeded | failed | preempted | aborted   (interrupted is derived)
- nodes:      running | succeeded | failed | preempted | aborted
- attempts:   running | succeeded | failed | recoverable | preempted | lost | aborted
"""

from __future__ import annotations

SCHEMA_VERSION = 5

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
    result_preview TEXT,                    -- bounded preview of the result (see preview.py)
    runs          INTEGER,                  -- driver runs so far (1 + resumes); NULL = 1
    ran_before_s  REAL,                     -- seconds the earlier driver runs ran; NULL = 0
    last_run_end  REAL,                     -- when the previous driver run ended (last sign)
    last_seen     REAL                      -- the running driver's last heartbeat
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
    retries       INTEGER,                  -- the task's retry budgets (retries=, system_retries=)
    system_retries INTEGER,
    budget_from   INTEGER,                  -- first attempt the current budgets count from
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
    run                 INTEGER,            -- the driver run (executions.runs) it ran in
    budget              TEXT,               -- the budget its retry spent: retries | system_retries
    last_commit         REAL,               -- when it committed checkpoint_at_end, if its own
    step_at_start       INTEGER,            -- the steps of checkpoint_at_start / _at_end, kept
    step_at_end         INTEGER,            -- after retention prunes those versions
    loaded_version      TEXT,               -- the newest version its loads returned
    loaded_step         INTEGER,            -- and its step
    resume_warning      TEXT,               -- why it restarted from scratch (resume guard)
    start_s             REAL,               -- what the attempt measured (engine/meter.py):
    restore_s           REAL,               --   NULL when it could not report (it died)
    first_step_s        REAL,
    stall_s             REAL,
    work_lost_s         REAL,
    PRIMARY KEY (execution_id, node_key, n)
)
"""

# By status, newest first: `list --status`, the web view's status filter and its per-status
# counts read only the matching entries (a count reads this index, not every row's columns).
STATUS_INDEX = "CREATE INDEX IF NOT EXISTS executions_status ON executions (status, created)"
CREATE_INDEXES = (
    "CREATE INDEX IF NOT EXISTS executions_created ON executions (created)",
    STATUS_INDEX,
)

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
    3: (
        "ALTER TABLE executions ADD COLUMN runs INTEGER",
        "ALTER TABLE executions ADD COLUMN ran_before_s REAL",
        "ALTER TABLE executions ADD COLUMN last_run_end REAL",
        "ALTER TABLE executions ADD COLUMN last_seen REAL",
        "ALTER TABLE nodes ADD COLUMN retries INTEGER",
        "ALTER TABLE nodes ADD COLUMN system_retries INTEGER",
        "ALTER TABLE nodes ADD COLUMN budget_from INTEGER",
        "ALTER TABLE attempts ADD COLUMN run INTEGER",
        "ALTER TABLE attempts ADD COLUMN budget TEXT",
        "ALTER TABLE attempts ADD COLUMN last_commit REAL",
        "ALTER TABLE attempts ADD COLUMN step_at_start INTEGER",
        "ALTER TABLE attempts ADD COLUMN step_at_end INTEGER",
    ),
    4: (
        "ALTER TABLE attempts ADD COLUMN loaded_version TEXT",
        "ALTER TABLE attempts ADD COLUMN loaded_step INTEGER",
        "ALTER TABLE attempts ADD COLUMN resume_warning TEXT",
        "ALTER TABLE attempts ADD COLUMN start_s REAL",
        "ALTER TABLE attempts ADD COLUMN restore_s REAL",
        "ALTER TABLE attempts ADD COLUMN first_step_s REAL",
        "ALTER TABLE attempts ADD COLUMN stall_s REAL",
        "ALTER TABLE attempts ADD COLUMN work_lost_s REAL",
    ),
    5: (STATUS_INDEX,),
}
# The attempt columns schema 4 added: what an attempt measured of itself (engine/meter.py,
# ``Outcome.ledger``), written with its end.
LEDGER_COLUMNS = (
    "loaded_version",
    "loaded_step",
    "resume_warning",
    "start_s",
    "restore_s",
    "first_step_s",
    "stall_s",
    "work_lost_s",
)
ADDED_IN = {  # column -> schema version (names are unique across the tables)
    "result_preview": 2,
    "output_preview": 2,
    **dict.fromkeys(("runs", "ran_before_s", "last_run_end", "last_seen"), 3),
    **dict.fromkeys(("retries", "system_retries", "budget_from"), 3),
    **dict.fromkeys(("run", "budget", "last_commit", "step_at_start", "step_at_end"), 3),
    **dict.fromkeys(LEDGER_COLUMNS, 4),
}

EXECUTION_COLUMNS = (
    "id, name, kind, module, file, qualname, inputs, inputs_ref, storage, status, result_ref, "
    "error_type, error_message, traceback, failed_node, created, started, ended, driver_pid, "
    "driver_host, driver_token, result_preview, runs, ran_before_s, last_run_end, "
    "last_seen"
)
NODE_COLUMNS = (
    "execution_id, key, task, status, attempts, max_attempts, output, output_ref, error_type, "
    "error_message, started, ended, output_preview, retries, system_retries, budget_from"
)
ATTEMPT_COLUMNS = (
    "execution_id, node_key, n, status, error_type, error_message, traceback, started, ended, "
    "pid, checkpoint_at_start, checkpoint_at_end, run, budget, last_commit, step_at_start, "
    "step_at_end, " + ", ".join(LEDGER_COLUMNS)
)


def columns_for(columns: str, version: int) -> str:
    """``columns`` as a database at schema ``version`` can answer them: NULL for later ones."""
    names = [c.strip() for c in columns.split(",")]
    return ", ".join(
        f"NULL AS {name}" if ADDED_IN.get(name, 0) > version else name for name in names
    )
