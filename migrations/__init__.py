"""The ledger's schema: sqlite-utils migrations, applied only when the ledger is opened.

Append new migrations at the end; never edit one that has been released. (One exception,
issue 24: m003's own foreign-key check, which could only raise, now runs at the end of every
upgrade, in ledger/opening.py; no ledger it let through is upgraded any differently.)
"""

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("batchledger")


def migration_names() -> list[str]:
    """The names of the migrations this version defines, in the order they apply."""
    # sqlite-utils keeps its list of registered migrations private; its public `pending`
    # lists them all for a database that has none applied.
    db = Database(memory=True)
    try:
        return [migration.name for migration in migrations.pending(db)]
    finally:
        db.close()


@migrations()
def m001_create_batches(db: Database) -> None:
    # One row per batch this ledger knows. `origin` says how it got here: "create" (made
    # by batchledger), "lookup" (status of an id it did not know) or "sync" (found by
    # listing the account's batches). A create's row is written before the upload
    # (batch_id still NULL) so that an interrupted create leaves a trace to resume from;
    # `ref` is sent as the batch's metadata so that the batch can be found again, and
    # `claimed_by` (host:pid) marks the run that is submitting it right now.
    # `results_gone_at`: the API no longer has the batch's result files (they expire), so
    # sweeps stop trying to save them.
    db.execute(
        """
        CREATE TABLE batches (
            id INTEGER PRIMARY KEY,
            ref TEXT NOT NULL UNIQUE,
            batch_id TEXT UNIQUE,
            origin TEXT NOT NULL DEFAULT 'create',
            input_path TEXT,
            input_bytes INTEGER,
            input_sha256 TEXT,
            input_file_id TEXT,
            endpoint TEXT NOT NULL,
            completion_window TEXT NOT NULL,
            status TEXT,
            created_at TEXT,
            in_progress_at TEXT,
            finalizing_at TEXT,
            completed_at TEXT,
            failed_at TEXT,
            expired_at TEXT,
            cancelling_at TEXT,
            cancelled_at TEXT,
            expires_at TEXT,
            requests_total INTEGER,
            requests_completed INTEGER,
            requests_failed INTEGER,
            output_file_id TEXT,
            error_file_id TEXT,
            errors TEXT,
            usage TEXT,
            output_path TEXT,
            output_bytes INTEGER,
            output_sha256 TEXT,
            output_saved_at TEXT,
            error_path TEXT,
            error_bytes INTEGER,
            error_sha256 TEXT,
            error_saved_at TEXT,
            recorded_at TEXT NOT NULL,
            checked_at TEXT,
            claimed_by TEXT,
            claimed_at TEXT,
            results_gone_at TEXT
        )
        """
    )
    db.execute("CREATE INDEX idx_batches_recorded_at ON batches (recorded_at)")
    # `list` shows the newest first by when the batch was made (a synced batch may be old).
    db.execute("CREATE INDEX idx_batches_made_at ON batches (coalesce(created_at, recorded_at))")
    db.execute("CREATE INDEX idx_batches_status ON batches (status)")
    db.execute("CREATE INDEX idx_batches_input ON batches (input_sha256, endpoint)")
    db.execute("CREATE INDEX idx_batches_endpoint ON batches (endpoint)")


@migrations()
def m002_create_history(db: Database) -> None:
    # Append-only: what was done to each batch, when, and which log file tells more.
    db.execute(
        """
        CREATE TABLE history (
            id INTEGER PRIMARY KEY,
            batch INTEGER NOT NULL REFERENCES batches (id),
            at TEXT NOT NULL,
            action TEXT NOT NULL,
            detail TEXT,
            log_file TEXT
        )
        """
    )
    db.execute("CREATE INDEX idx_history_batch ON history (batch)")
    db.execute(
        """
        CREATE TRIGGER history_append_only_update BEFORE UPDATE ON history
        BEGIN SELECT RAISE(ABORT, 'history is append-only'); END
        """
    )
    db.execute(
        """
        CREATE TRIGGER history_append_only_delete BEFORE DELETE ON history
        BEGIN SELECT RAISE(ABORT, 'history is append-only'); END
        """
    )


@migrations()
def m003_accounts_and_claim_leases(db: Database) -> None:
    # Batches are made on accounts (an OpenAI project, an Azure resource, another
    # provider), and a batch id is unique per account only: the key becomes
    # (account, batch_id). SQLite cannot drop a UNIQUE constraint in place, so the table
    # is rebuilt with the same ids (history rows keep pointing at their batches).
    # Rows from before: account 'default'; their base URL was never recorded (the logs
    # of that version do not show it either), so it stays NULL, meaning "the default
    # account's base URL", and is filled in the first time the API answers for the batch.
    # New columns:
    # - `base_url`: where the batch was made; a batch is only ever followed there.
    # - `not_found_at`: the account answered 404 for the batch; sweeps stop asking.
    # - `claim_expires_at`: a claim is a lease, so a claim from another host (a ledger
    #   shared over a network file system) or from a recycled pid cannot block for ever.
    old_columns = [row[1] for row in db.execute("PRAGMA table_info(batches)").fetchall()]
    db.execute(
        """
        CREATE TABLE batches_new (
            id INTEGER PRIMARY KEY,
            ref TEXT NOT NULL UNIQUE,
            account TEXT NOT NULL DEFAULT 'default',
            base_url TEXT,
            batch_id TEXT,
            origin TEXT NOT NULL DEFAULT 'create',
            input_path TEXT,
            input_bytes INTEGER,
            input_sha256 TEXT,
            input_file_id TEXT,
            endpoint TEXT NOT NULL,
            completion_window TEXT NOT NULL,
            status TEXT,
            created_at TEXT,
            in_progress_at TEXT,
            finalizing_at TEXT,
            completed_at TEXT,
            failed_at TEXT,
            expired_at TEXT,
            cancelling_at TEXT,
            cancelled_at TEXT,
            expires_at TEXT,
            requests_total INTEGER,
            requests_completed INTEGER,
            requests_failed INTEGER,
            output_file_id TEXT,
            error_file_id TEXT,
            errors TEXT,
            usage TEXT,
            output_path TEXT,
            output_bytes INTEGER,
            output_sha256 TEXT,
            output_saved_at TEXT,
            error_path TEXT,
            error_bytes INTEGER,
            error_sha256 TEXT,
            error_saved_at TEXT,
            recorded_at TEXT NOT NULL,
            checked_at TEXT,
            claimed_by TEXT,
            claimed_at TEXT,
            claim_expires_at TEXT,
            results_gone_at TEXT,
            not_found_at TEXT,
            UNIQUE (account, batch_id)
        )
        """
    )
    columns = ", ".join(old_columns)
    db.execute(f"INSERT INTO batches_new ({columns}) SELECT {columns} FROM batches")
    db.execute("DROP TABLE batches")
    db.execute("ALTER TABLE batches_new RENAME TO batches")
    db.execute("CREATE INDEX idx_batches_recorded_at ON batches (recorded_at)")
    db.execute("CREATE INDEX idx_batches_made_at ON batches (coalesce(created_at, recorded_at))")
    db.execute("CREATE INDEX idx_batches_status ON batches (status)")
    db.execute("CREATE INDEX idx_batches_input ON batches (input_sha256, endpoint)")
    db.execute("CREATE INDEX idx_batches_endpoint ON batches (endpoint)")
    db.execute("CREATE INDEX idx_batches_batch_id ON batches (batch_id)")
    # The rebuild keeps every id (tests/test_ledger_upgrade.py shows it on a ledger of the
    # first release). Foreign keys are checked once every pending migration has run
    # (ledger/opening.py): a history row whose batch was gone before (a row deleted by
    # hand) is set aside there, not taken for a row this rebuild lost.


@migrations()
def m004_batch_details(db: Database) -> None:
    # What users ask about a batch beyond its progress. `model`: the API's Batch.model,
    # filled in for older rows the next time their batch is looked up.
    db.execute("ALTER TABLE batches ADD COLUMN model TEXT")
    # `metadata`: the user's --metadata pairs (a JSON object), without the ledger's ref.
    db.execute("ALTER TABLE batches ADD COLUMN metadata TEXT")
    # Seconds after which the API deletes the uploaded input (`create --input-expires-after`)
    # and the result files (`--output-expires-after`); NULL: the API's default.
    db.execute("ALTER TABLE batches ADD COLUMN input_expires_after INTEGER")
    db.execute("ALTER TABLE batches ADD COLUMN output_expires_after INTEGER")
    # When `prune` deleted the batch's input, output or error file from the account (or found
    # it already gone), so that a second prune does not ask again.
    db.execute("ALTER TABLE batches ADD COLUMN input_file_gone_at TEXT")
    db.execute("ALTER TABLE batches ADD COLUMN output_file_gone_at TEXT")
    db.execute("ALTER TABLE batches ADD COLUMN error_file_gone_at TEXT")
    db.execute("CREATE INDEX idx_batches_model ON batches (model)")


@migrations()
def m005_jobs(db: Database) -> None:
    # A job: one input past a batch's limits, split at line boundaries into parts, each
    # part sent as its own batch. The input is never copied: a part is a byte range of it.
    # `max_in_flight`: parts submitted at once (NULL: all); the others wait `queued`.
    # `retry_of`: the job (or batch) whose failed lines this job sends again.
    # The merged results (`output_*`, `error_*`) are the parts' results in part order.
    db.execute(
        """
        CREATE TABLE jobs (
            id INTEGER PRIMARY KEY,
            job_id TEXT NOT NULL UNIQUE,
            account TEXT NOT NULL,
            base_url TEXT,
            input_path TEXT NOT NULL,
            input_bytes INTEGER NOT NULL,
            input_sha256 TEXT NOT NULL,
            input_requests INTEGER NOT NULL,
            endpoint TEXT NOT NULL,
            completion_window TEXT NOT NULL,
            max_requests INTEGER NOT NULL,
            max_bytes INTEGER NOT NULL,
            max_in_flight INTEGER,
            metadata TEXT,
            input_expires_after INTEGER,
            output_expires_after INTEGER,
            status TEXT NOT NULL,
            recorded_at TEXT NOT NULL,
            finished_at TEXT,
            output_path TEXT,
            output_bytes INTEGER,
            output_sha256 TEXT,
            error_path TEXT,
            error_bytes INTEGER,
            error_sha256 TEXT,
            merged_at TEXT,
            retry_of TEXT,
            claimed_by TEXT,
            claimed_at TEXT,
            claim_expires_at TEXT
        )
        """
    )
    db.execute("CREATE INDEX idx_jobs_input ON jobs (input_sha256, endpoint)")
    # A part: a byte range of the job's input (a retry's part: the `ranges` of the input's
    # lines it sends again, a JSON list, start_byte/end_byte spanning them). Its upload is
    # made once (named with `ref`) and reused by every attempt; each attempt is a batch row
    # pointing at the part; `upload_started_at` says an upload may have reached the API
    # without its answer (it is then looked for by its name before another is made).
    # `state`: queued (waiting to be sent), sent (an attempt is live or final), or
    # cancelled. A part bounced off the enqueued-token limit goes back to queued, with
    # `not_before` (a backoff) and `requeued_at` (a batch of the account that finishes
    # after it lets it go at once).
    db.execute(
        """
        CREATE TABLE parts (
            id INTEGER PRIMARY KEY,
            job INTEGER NOT NULL REFERENCES jobs (id),
            part_index INTEGER NOT NULL,
            start_byte INTEGER NOT NULL,
            end_byte INTEGER NOT NULL,
            ranges TEXT,
            requests INTEGER NOT NULL,
            ref TEXT NOT NULL UNIQUE,
            input_file_id TEXT,
            input_file_created_at INTEGER,
            upload_started_at TEXT,
            state TEXT NOT NULL DEFAULT 'queued',
            requeues INTEGER NOT NULL DEFAULT 0,
            requeued_at TEXT,
            not_before TEXT,
            UNIQUE (job, part_index)
        )
        """
    )
    db.execute("ALTER TABLE batches ADD COLUMN part INTEGER REFERENCES parts (id)")
    db.execute("CREATE INDEX idx_batches_part ON batches (part)")
    # What was done to each job as a whole (split, merge, cancel), as `history` is per batch.
    db.execute(
        """
        CREATE TABLE job_history (
            id INTEGER PRIMARY KEY,
            job INTEGER NOT NULL REFERENCES jobs (id),
            at TEXT NOT NULL,
            action TEXT NOT NULL,
            detail TEXT,
            log_file TEXT
        )
        """
    )
    db.execute("CREATE INDEX idx_job_history_job ON job_history (job)")
    db.execute(
        """
        CREATE TRIGGER job_history_append_only_update BEFORE UPDATE ON job_history
        BEGIN SELECT RAISE(ABORT, 'job_history is append-only'); END
        """
    )
    db.execute(
        """
        CREATE TRIGGER job_history_append_only_delete BEFORE DELETE ON job_history
        BEGIN SELECT RAISE(ABORT, 'job_history is append-only'); END
        """
    )


@migrations()
def m007_job_request_counts(db: Database) -> None:
    # A job's requests with a successful result and with a failure, as its merged results
    # hold them: set when the job is merged, and again when a retry's answers are merged into
    # it (NULL while it runs: then its parts' attempts are counted).
    db.execute("ALTER TABLE jobs ADD COLUMN requests_completed INTEGER")
    db.execute("ALTER TABLE jobs ADD COLUMN requests_failed INTEGER")


@migrations()
def m008_record_estimates(db: Database) -> None:
    # What a create estimated before sending (`create --max-cost`): the input tokens counted
    # offline and the cost range in USD at batch prices (the input alone; with every output
    # token the requests allow). NULL where no estimate was made, as for every older row.
    for table in ("batches", "jobs"):
        db.execute(f"ALTER TABLE {table} ADD COLUMN estimated_input_tokens INTEGER")
        db.execute(f"ALTER TABLE {table} ADD COLUMN estimated_cost_min REAL")
        db.execute(f"ALTER TABLE {table} ADD COLUMN estimated_cost_max REAL")


@migrations()
def m009_actual_costs_and_part_tokens(db: Database) -> None:
    # Issue 22. `actual_cost`: what a batch cost in USD, priced from the usage the API
    # reported once it is final (at genai-prices' batch price of its model); a job's, the sum
    # of its attempts', once it is over. NULL: not final yet, no usage, no price, or older.
    for table in ("batches", "jobs"):
        db.execute(f"ALTER TABLE {table} ADD COLUMN actual_cost REAL")
    # A part's input tokens per model, counted offline at create (a JSON object, model:
    # tokens) when the account holds a token budget (`enqueued_tokens`) or the parts were cut
    # by tokens (`--max-tokens`); a part waits queued until its tokens fit. NULL: not counted.
    db.execute("ALTER TABLE parts ADD COLUMN input_tokens TEXT")


@migrations()
def m010_result_counts(db: Database) -> None:
    # Issue 21. A provider's own request counts where they say more than completed and
    # failed: Anthropic's Message Batches count succeeded, errored, canceled, expired and
    # processing (a JSON object, name: count), mapped onto requests_completed (succeeded)
    # and requests_failed (the other three) as before. NULL for every other batch.
    db.execute("ALTER TABLE batches ADD COLUMN result_counts TEXT")


@migrations()
def m011_estimate_basis_and_price_quotes(db: Database) -> None:
    # Issue 22: every create records an estimate now, made one of two ways: "tokens" (each
    # line parsed and its tokens counted offline: with a budget, --max-cost, a token budget)
    # or "bytes" (a plain create: the input scanned beside the upload, not parsed, its input
    # tokens taken as bytes / 4). NULL where no estimate was made; the estimates older rows
    # hold were all counted, so they are marked "tokens".
    for table in ("batches", "jobs"):
        db.execute(f"ALTER TABLE {table} ADD COLUMN estimated_from TEXT")
        db.execute(
            f"UPDATE {table} SET estimated_from = 'tokens' WHERE estimated_input_tokens IS NOT NULL"
        )
    # The price library's batch price of a model (USD per million tokens), as the
    # library of that version gave it on that UTC day, kept so that a plain create prices its
    # estimate without loading the library's data again (~50 ms of CPU). NULL prices: the
    # library has none for the model. A cache: any row may be deleted.
    db.execute(
        "CREATE TABLE price_quotes (model TEXT NOT NULL, library TEXT NOT NULL, "
        "day TEXT NOT NULL, input REAL, cached_input REAL, output REAL, source TEXT, "
        "PRIMARY KEY (model, library, day))"
    )


@migrations()
def m012_orphan_history(db: Database) -> None:
    # Issue 24. Where the history rows of a batch (a job) go when the batch (the job) is not
    # in the ledger: deleted by hand, with foreign keys off as the sqlite3 shell has them.
    # History is append-only, so they outlived it; left in place, they would be taken for
    # the history of the next batch given that id. An upgrade moves them here
    # (ledger/opening.py), keeping each as it was. `source`: "history" or "job_history";
    # `source_id`: its id there (not unique here: a later upgrade may set aside a row given
    # the same id since); `owner`: the id of the batch (job) it was about.
    db.execute(
        """
        CREATE TABLE orphan_history (
            id INTEGER PRIMARY KEY,
            source TEXT NOT NULL,
            source_id INTEGER NOT NULL,
            owner INTEGER NOT NULL,
            at TEXT NOT NULL,
            action TEXT NOT NULL,
            detail TEXT,
            log_file TEXT,
            set_aside_at TEXT NOT NULL
        )
        """
    )
