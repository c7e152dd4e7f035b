"""The Docencio's durable outbox: a question's count key is on disk before its answer goes.

Why: the Docencio used to count an answer in memory once it was delivered and post the
keys to the Profesor in the background. A SIGKILL, an OOM kill or a power cut between the
delivery and the post lost those counts (13 of 98,792 in one try). Now:

1. before a counted answer is sent, its key is committed to a SQLite file (WAL;
   ``normal`` by default: the commit survives any crash of the process, SIGKILL or OOM,
   without an fsync; ``full`` fsyncs it and survives a power cut too, see SYNC_MODES);
2. commits are grouped: one writer thread takes every key queued while the previous
   commit ran (at most ``group_max``), so one fsync covers hundreds of answers under load
   and a lone question waits for one commit only. The answer waits for its group's commit,
   never for the Profesor, and the event loop never waits for the disk;
3. a poster thread (a :class:`~roles.profesor.Conteo` reading from this file) posts keys in
   batches and deletes what the Profesor acknowledged; the Profesor counts each key once,
   so posting again after a crash is harmless;
4. on start, every key a previous run left is posted.

What a row means. ``pending`` counts answers under that key committed but not yet out of
this process; ``ready`` says one of them left (was delivered). In a live Docencio only
ready keys are posted, and a key whose every answer was dropped with its student's
connection is deleted, so a student who leaves takes its uncounted answers with it (as
before). After a crash nobody knows which committed answers left, so a new run posts
every row: an answer committed but never delivered is counted, and the student, who saw
no answer, asks again with the same id on its new connection; the key (its name and that
id, :func:`~roles.clase.count_key`) is the same, so the count stays exact. That holds for
named students (``ayudantia run`` names them); a nameless one's key is its connection's,
which a crash changes.

A full or unwritable disk: the commit fails, the group's answers become error answers
(same id) and the Docencio keeps serving; one log line when writing starts failing, one
when it works again. It never answers without counting.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from roles.profesor import Conteo, ProfesorClient

log = logging.getLogger("ayudantia.docencio.outbox")

# A committed key's answer: called on the loop with None (committed) or why it was not.
Done = Callable[[str | None], None]

# WITHOUT ROWID: the rows live in the key's own b-tree, so a commit writes one page to the
# WAL, not two (a rowid table and its key's index): 4.8 KB a commit instead of 9, and 15 us
# instead of 20 (issue 23). A file made before keeps its table as it was: same rows, same SQL.
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS outbox ("
    " key TEXT PRIMARY KEY,"
    " pending INTEGER NOT NULL DEFAULT 0,"
    " ready INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID"
)


# normal (the default): written to the OS, fsynced at checkpoints (survives any crash of the
# process: SIGKILL, OOM; a power cut may lose the last groups); full: each group commit is
# fsynced (survives a power cut, one fsync per group). See docs/counting.md for what each costs.
SYNC_MODES = ("full", "normal")
# Keys waiting for the Profesor, at most (a row is ~100 bytes on disk: ~100 MB). See _full.
MAX_ROWS = 1_000_000
# Seconds the writer lets delivery marks gather before writing them alone: a mark moves only
# the count's post (never an answer), and one write (and one post) per mark cost a serial
# student a thread wake-up and an HTTP request per question (py-spy, issue 23).
MARK_DELAY = 0.05
# Seconds before marks the loop could not write (a failing disk) are tried again alone.
MARK_RETRY = 1.0
# A loop commit slower than SLOW_COMMIT seconds (a write() held by the disk: writeback
# throttling, a journal commit; 0.2-0.4% of serial commits took over 300 us and one in
# 20,000 up to 99 ms on the development VM, against 19 us at p50) sends the commits of the
# next SLOW_BACKOFF seconds to the writer thread: one stall of the loop, not one per commit
# while the disk is slow. The answers wait for the writer then, as they all used to. Not
# less than 20 ms: a loaded machine preempts the loop for a few ms at times, which at 2 ms
# sent half of a serial run's commits to the writer.
SLOW_COMMIT = 0.02
SLOW_BACKOFF = 1.0
# WAL pages between two checkpoints under normal (see OutboxStore.checkpoint), SQLite's own
# trigger: 1,000 pages (4 MB). Counted as :attr:`OutboxStore.pages`, an upper estimate, since
# SQLite does not tell Python how many frames a commit wrote: a serial commit writes one
# page (two in a file made before _SCHEMA's WITHOUT ROWID), but a group of 200 keys spread
# over the table rewrites ~160 pages, so a bound in commits (500) let the WAL reach 332 MB
# in 100,000 answers from 200 students.
CHECKPOINT_PAGES = 1000
# Seconds a write waits for another process's write lock on the file (someone's sqlite3 shell
# in a transaction): the writer's and the poster's; the loop's commit never waits for it.
BUSY_WAIT = 5.0
# Seconds the poster lets delivered keys gather before a post: one POST /preguntas (and one
# fsync'd commit at the Profesor) per answer took a serial student's CPU; a count that
# moves 50 ms later costs nobody an answer.
POST_GATHER = 0.05
# Seconds before keys the Profesor refused (a 4xx) are posted again (see _Poster._rejected).
REJECTED_RETRY = 5.0


def default_outbox_path(port: int) -> Path:
    """``docencio-PORT.outbox.sqlite3`` in our data directory: one file per Docencio port.

    ``port`` is the port the Docencio actually listens on, so a Docencio started with port
    0 gets the file of the port it was given, and a restart on that port finds it.
    """
    from platformdirs import user_data_dir

    home = Path(user_data_dir("ayudantia"))
    with contextlib.suppress(OSError):  # if it cannot be made, opening the file says why
        home.mkdir(parents=True, exist_ok=True)
    return home / f"docencio-{port}.outbox.sqlite3"


def _claim(path: str) -> int:
    """An exclusive lock on ``PATH-lock`` (held until closed, or the process dies).

    Why: two Docencios on one outbox (the same --outbox, or two runs on one --outbox-dir)
    would take each other's keys: a new one marks every row ready at start, so the other's
    answers still on their way, later withdrawn, would be counted. The second one is told.
    """
    try:
        fd = os.open(path + "-lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise sqlite3.OperationalError(f"cannot create {path}-lock: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise sqlite3.OperationalError(f"{path} is in use by another Docencio") from exc
    return fd


class OutboxBusy(sqlite3.OperationalError):
    """Another process holds the file's write lock (past the wait given)."""


class OutboxStore:
    """The SQLite file. One connection, shared by the writer and the poster under a lock."""

    def __init__(self, path: str | Path, sync: str = "normal") -> None:
        if sync not in SYNC_MODES:
            raise ValueError(f"unknown outbox sync mode {sync!r}; choose from {SYNC_MODES}")
        self.path = str(path)
        self._lock = threading.Lock()
        self.checkpoints_elsewhere = sync == "normal"
        self.commits = 0  # transactions committed
        self.pages = 0  # WAL pages written, at most (one per row changed; see checkpoint())
        self._claim = _claim(self.path)
        try:
            self._db = sqlite3.connect(
                self.path, timeout=BUSY_WAIT, isolation_level=None, check_same_thread=False
            )
        except BaseException:
            os.close(self._claim)
            raise
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={sync.upper()}")
            if self.checkpoints_elsewhere:
                # SQLite's auto-checkpoint would fsync in whichever thread commits, and under
                # normal that is the event loop's (Outbox._commit_on_loop): the writer thread
                # checkpoints instead (checkpoint()).
                self._db.execute("PRAGMA wal_autocheckpoint=0")
            with self._transaction() as db:
                db.execute(_SCHEMA)
                # A previous run's rows: which of their answers left is unknown, post them all.
                self.left_over = db.execute("UPDATE outbox SET ready = 1, pending = 0").rowcount
            # From here SQLite's busy handler is off: it slept up to BUSY_WAIT in whichever
            # thread began, the event loop's too (a 2 s lock held elsewhere stalled the loop
            # 2 s); _begun waits in the threads that may (a pragma pair per loop commit cost
            # 6 us, a third of a serial commit).
            self._db.execute("PRAGMA busy_timeout = 0")
        except BaseException:
            self._db.close()
            os.close(self._claim)
            raise

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._begun() as db:
            yield db

    @contextlib.contextmanager
    def _begun(self, wait: float = BUSY_WAIT) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (the caller holds the lock); waiting up to
        ``wait`` s for another process's write lock, then :class:`OutboxBusy`."""
        db = self._db
        deadline, pause = time.monotonic() + wait, 0.001
        while True:
            try:
                db.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                # The extended codes too (SQLITE_BUSY_RECOVERY: another process recovering).
                if getattr(exc, "sqlite_errorcode", 0) & 0xFF != sqlite3.SQLITE_BUSY:
                    raise
                if time.monotonic() + pause > deadline:
                    raise OutboxBusy(f"{self.path} is locked by another process: {exc}") from exc
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
        try:
            yield db
            db.execute("COMMIT")
            self.commits += 1
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise

    def apply(
        self,
        new: list[str],
        delivered: list[str],
        undelivered: list[str],
        *,
        blocking: bool = True,
    ) -> bool:
        """One transaction: keys about to be answered, answers that left, answers dropped.

        Applied in that order, whatever order they came in: it deletes the fewest rows (a
        key re-asked on a new connection while its old answer is dropped stays). With
        ``blocking`` False (the event loop's commit) it returns False, having done nothing,
        when another thread (the poster) holds the connection or another process the file:
        the loop never waits for either.
        An empty list costs no statement (three ``executemany`` of nothing were a third of
        a serial student's commit).
        """
        if not self._lock.acquire(blocking):
            return False
        try:
            self._apply(new, delivered, undelivered, BUSY_WAIT if blocking else 0.0)
        except OutboxBusy:
            if blocking:
                raise
            return False
        finally:
            self._lock.release()
        return True

    def _apply(
        self, new: list[str], delivered: list[str], undelivered: list[str], wait: float
    ) -> None:
        # A changed row dirties the leaf it lives in: at most one page a row (one a commit
        # at least); a group of 10 keys and 10 marks measured 14 pages in a rowid table.
        self.pages += max(1, len(new) + len(delivered) + len(undelivered))
        with self._begun(wait) as db:
            if new:
                db.executemany(
                    "INSERT INTO outbox (key, pending) VALUES (?, 1) "
                    "ON CONFLICT (key) DO UPDATE SET pending = pending + 1",
                    [(k,) for k in new],
                )
            if delivered:
                db.executemany(
                    "INSERT INTO outbox (key, ready) VALUES (?, 1) "
                    "ON CONFLICT (key) DO UPDATE SET ready = 1, pending = max(pending - 1, 0)",
                    [(k,) for k in delivered],
                )
            if undelivered:
                rows = [(k,) for k in undelivered]
                db.executemany("UPDATE outbox SET pending = pending - 1 WHERE key = ?", rows)
                # Only these keys can have come to nothing: a key is looked up, not the table
                # scanned (44 ms for 300,000 rows waiting for an absent Profesor, on the loop).
                db.executemany(
                    "DELETE FROM outbox WHERE key = ? AND pending <= 0 AND ready = 0", rows
                )

    def checkpoint(self) -> None:
        """Copy the WAL into the database file, in the calling thread (the outbox's writer),
        so that its fsyncs never happen in the event loop's commit.

        Under the lock, and the caller holds the outbox's write lock too: no frame is added
        meanwhile, so the checkpoint copies the whole WAL and the next commit starts the WAL
        over from its beginning. A checkpoint run beside the loop's commits (from another
        connection) never caught up with them: the WAL grew by 9 KB a commit, 179 MB after
        20,000. Due every CHECKPOINT_PAGES pages (:attr:`pages`). Only under ``normal``
        (:attr:`checkpoints_elsewhere`); ``full`` keeps SQLite's auto-checkpoint in the
        writer thread, which commits there anyway.

        A WAL checkpointed whole is started over by the next commit, and that commit's first
        frame fsyncs the WAL's new header (even under ``normal``: SQLite's guard against
        reordered writes after a restart). Left to the loop, its first commit after a quiet
        checkpoint waited for that fsync (strace: the loop's thread, one fdatasync every
        checkpoint). So a commit of nothing (page 1 rewritten as it is)
        restarts the WAL here, and the loop's next commit only appends.
        """
        with self._lock:
            busy, frames, copied = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if busy or frames <= 0 or copied != frames:
                return  # not copied whole (a reader elsewhere): no restart to take over
            with self._begun() as db:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                db.execute(f"PRAGMA user_version = {int(version)}")

    def ready(self, limit: int) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT key FROM outbox WHERE ready = 1 LIMIT ?", (limit,)
            ).fetchall()
        return [r[0] for r in rows]

    def remove(self, keys: list[str]) -> None:
        self.pages += len(keys)
        with self._transaction() as db:
            db.executemany("DELETE FROM outbox WHERE key = ?", [(k,) for k in keys])

    def count(self, wait: float = 1.0) -> int:
        """Rows in the file; an error if a write holds the file longer than ``wait`` s."""
        with self._held(wait):
            return int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def close(self, wait: float = 1.0) -> None:
        """Close, unless a write is stuck (a hung fsync) for ``wait`` s: then leave it to
        the process's exit, rather than hang the Docencio's stop on it."""
        with contextlib.suppress(sqlite3.Error), self._held(wait):
            self._db.close()
            os.close(self._claim)  # another Docencio may take the file now

    @contextlib.contextmanager
    def _held(self, wait: float) -> Iterator[None]:
        if not self._lock.acquire(timeout=wait):
            raise sqlite3.OperationalError(f"the outbox is busy: a write has held it {wait:g} s")
        try:
            yield
        finally:
            self._lock.release()


class _Poster(Conteo):
    """The Conteo's retrying poster, reading ready keys from the outbox instead of memory."""

    def __init__(self, outbox: Outbox, client: ProfesorClient, batch: int) -> None:
        self.outbox = outbox
        self._wake = True  # look at once: a previous run may have left keys
        self._more = True  # the last batch was full: post the next at once, no gathering
        self._gathering = False  # in the POST_GATHER wait: a poke need not wake it
        super().__init__(client, batch=batch)

    def add(self, key: str) -> None:
        raise TypeError("the outbox's keys come from Outbox.commit, not Conteo.add")

    def poke(self) -> None:
        """Look at the outbox again. While the poster gathers (POST_GATHER) it looks again
        anyway, so it is not woken then: a wake-up per written delivery mark was a thread
        switch per serial student (37 -> 18 us of CPU per connect-ask-close, issue 23)."""
        with self._cond:
            self._wake = True
            if not self._gathering:
                self._cond.notify_all()

    @property
    def backlog(self) -> int:
        return self.outbox.rows()

    def _next_batch(self) -> list[str] | None:
        while True:
            with self._cond:
                while not self._wake and not self._closing:
                    self._cond.wait()
                if self._closing and time.monotonic() > self._flush_until:
                    return None
                self._wake = False
                until = time.monotonic() + (0.0 if self._more else POST_GATHER)
                self._gathering = True
                while not self._closing and (left := until - time.monotonic()) > 0:
                    self._cond.wait(left)  # let keys gather into one post (POST_GATHER)
                self._gathering = False
            ids = self.outbox.ready_keys(self.batch)
            self._more = bool(ids) and len(ids) >= self.batch
            if ids:
                self._wake = True  # after this batch, look again: more may be waiting
                return ids
            if self._closing:
                return None
            if ids is None:  # the file cannot be read now: look again in a while
                with self._cond:
                    self._cond.wait(1.0)
                    self._wake = True

    def _put_back(self, ids: list[str]) -> None:
        """Nothing to put back: the keys stay in the outbox until acknowledged."""

    def _acknowledged(self, ids: list[str]) -> None:
        self.outbox.acknowledged(ids)

    def _rejected(self, ids: list[str]) -> None:
        """A 4xx (a wrong --profesor URL, another codec): our keys are well formed, so the
        fault is the setup's and someone will fix it. They stay in the file (they used to
        be deleted: counts lost for good); look again in a while, not in a tight loop."""
        with self._cond:
            if not self._closing:
                self._cond.wait(REJECTED_RETRY)
            self._wake = True


class Outbox:
    """Count keys committed in groups off the loop, then posted to the Profesor.

    From the event loop: :meth:`commit` (the answer goes in ``done``, once committed),
    :meth:`delivered` and :meth:`undelivered` (what became of it). ``path`` may come later
    (:meth:`open`), once the Docencio knows its port: keys wait for it.
    """

    def __init__(
        self,
        client: ProfesorClient,
        path: str | Path | None = None,
        *,
        group_max: int = 500,
        batch: int = 500,
        sync: str = "normal",
        max_rows: int = MAX_ROWS,
    ) -> None:
        self.path = str(path) if path is not None else None
        self.max_rows = max_rows
        self.full = False  # at max_rows: new keys refused until the Profesor takes some
        self._rows_seen = 0  # rows at the last count (see _full)
        self._added = 0  # keys committed since then
        self.sync = sync
        self.group_max = group_max
        self.store: OutboxStore | None = None
        self.failing: str | None = None  # why the last write failed (None: writing works)
        self.committed = 0
        self.refused = 0
        self.groups = 0
        self.left_over = 0
        self._cond = threading.Condition()
        self._new: list[tuple[str, Done]] = []
        self._staged: list[tuple[str, Done]] = []  # on the loop, handed off once per iteration
        self._loop_thread: int | None = None
        self._delivered: list[str] = []
        self._undelivered: list[str] = []
        self._write_lock = threading.Lock()  # one _write at a time: the writer's or the loop's
        self._marks_to_writer = False  # the marks are the writer's to write (see _work)
        self._mark_timer: asyncio.TimerHandle | None = None  # the loop's marks flush
        self._checkpoint_due = False  # the writer thread is to checkpoint the WAL
        self._checkpointed_at = 0  # the store's pages at the last checkpoint
        self._idle_waiters = 0  # threads in wait_idle (the loop's commit wakes them)
        self.loop_groups = 0  # groups committed on the loop's thread (the rest: the writer's)
        self.slow_commits = 0  # loop commits past SLOW_COMMIT (each: SLOW_BACKOFF off the loop)
        self._loop_commits_from = 0.0  # perf_counter() before which the writer commits
        self._busy = False
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.poster = _Poster(self, client, batch)
        self._writer = threading.Thread(target=self._write_loop, name="outbox", daemon=True)
        self._writer.start()

    # -- from the loop ------------------------------------------------------------------

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop where ``done`` callbacks run (and :meth:`commit` is called from)."""
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._mark_timer = None  # one left by a previous loop never fires

    def open(self, path: str | Path) -> None:
        """Where the outbox lives, if it was not given at construction."""
        with self._cond:
            if self.path is None:
                self.path = str(path)
            self._cond.notify_all()

    def commit(self, key: str, done: Done) -> None:
        """Queue ``key``; ``done`` runs on the loop once its group is committed.

        On the loop, keys are staged and committed once per loop iteration (one transaction
        for every question that iteration read): on the loop's own thread under ``normal``
        (:meth:`_commit_on_loop`), else handed to the writer thread. Nothing changes for
        the answer: it still waits for its key's commit.
        """
        staged = self._staged
        staged.append((key, done))
        if len(staged) > 1:
            return  # a flush is already scheduled
        if self._on_loop():
            self._loop.call_soon(self._flush)  # type: ignore[union-attr]
        else:
            self._hand_off()

    def _on_loop(self) -> bool:
        """Called from the bound loop, running (not from another thread, nor after it)."""
        loop = self._loop
        return loop is not None and threading.get_ident() == self._loop_thread and loop.is_running()

    def _hand_off(self) -> None:
        """The staged keys (and the marks, which the writer takes with them) to the writer."""
        with self._cond:
            self._new.extend(self._staged)
            self._staged.clear()
            self._marks_to_writer = True
            self._cond.notify_all()

    def _flush(self) -> None:
        """On the loop: this iteration's keys and the marks so far, committed here if the
        loop may (:meth:`_commit_on_loop`), else handed to the writer thread."""
        if not self._commit_on_loop():
            self._hand_off()

    def _commit_on_loop(self) -> bool:
        """Commit the staged keys and the marks on the loop's thread, then answer at once.

        Why: under ``normal`` a commit is a write() of a few pages into the WAL, with no
        fsync (the checkpoints' fsyncs are the writer thread's, OutboxStore.checkpoint), and
        it survives any crash of the process as well from this thread as from another. The
        hand-off to the writer thread and the answer's way back onto the loop were two
        thread wake-ups per answer, most of a serial student's cycle (issue 23).

        False (nothing done) when the writer must do it: under ``full`` (the fsync must not
        hold the loop), before the file is open, near ``max_rows`` (the count that decides
        reads the whole file), while the writer has keys queued before these (their order
        is kept), while another thread holds the file (the poster; the loop never waits
        for a lock), or for SLOW_BACKOFF after a loop commit slower than SLOW_COMMIT (the
        disk is slow now). The answer never leaves before its key is committed, either way.
        """
        store = self.store
        staged = self._staged
        if (
            store is None
            or self.sync != "normal"
            or self.full
            or self._rows_seen + self._added + len(staged) > self.max_rows
        ):
            return False
        started = time.perf_counter()
        if started < self._loop_commits_from:
            return False
        if not self._write_lock.acquire(blocking=False):
            return False
        try:
            with self._cond:
                if self._new or self._busy:
                    return False
                delivered, self._delivered = self._delivered, []
                undelivered, self._undelivered = self._undelivered, []
                self._marks_to_writer = False
            if not staged and not delivered and not undelivered:
                return True
            self._staged = []  # keys committed from here on wait for the next flush
            written = self._write(staged, delivered, undelivered, blocking=False)
            if written is None:  # the poster has the file: the writer will do it
                self._staged[:0] = staged
        finally:
            self._write_lock.release()
        if (now := time.perf_counter()) - started > SLOW_COMMIT:
            self.slow_commits += 1
            self._loop_commits_from = now + SLOW_BACKOFF
        if written is None or not written[1]:  # the marks are retried
            with self._cond:
                self._delivered[:0] = delivered
                self._undelivered[:0] = undelivered
        if written is None:
            return False
        reason, marked = written
        if reason is None and marked:
            self.loop_groups += 1
        if staged:
            _call_all([done for _, done in staged], reason)
        if marked and delivered:
            self.poster.poke()
        elif not marked and self._mark_timer is None and self._loop is not None:
            self._mark_timer = self._loop.call_later(MARK_RETRY, self._flush_marks)
        self._after_write(store)
        return True

    def _flush_marks(self) -> None:
        """On the loop, MARK_DELAY after a mark found no commit to ride with."""
        self._mark_timer = None
        if self._delivered or self._undelivered:
            self._flush()

    def _after_write(self, store: OutboxStore) -> None:
        """After a commit: wake wait_idle's threads, and the writer when a checkpoint is due."""
        due = (
            store.checkpoints_elsewhere
            and store.pages - self._checkpointed_at >= CHECKPOINT_PAGES
            and not self._checkpoint_due
        )
        if due or self._idle_waiters:
            with self._cond:
                if due:
                    self._checkpointed_at = store.pages
                    self._checkpoint_due = True
                self._cond.notify_all()

    def delivered(self, key: str) -> None:
        self._mark(key, delivered=True)

    def undelivered(self, key: str) -> None:
        self._mark(key, delivered=False)

    def _mark(self, key: str, *, delivered: bool) -> None:
        """A mark; the writer is woken for the first of a batch only (see MARK_DELAY).

        On the loop under ``normal``, the writer is not woken: the mark rides with the next
        commit of the loop, or is written MARK_DELAY later by itself (:meth:`_flush_marks`).

        The list is looked up under the lock: the writer swaps both lists for new ones
        when it takes a batch, and a mark appended to a list already taken would be lost
        (its key never posted: the count one short).
        """
        on_loop = self.sync == "normal" and self.store is not None and self._on_loop()
        with self._cond:
            (self._delivered if delivered else self._undelivered).append(key)
            first = len(self._delivered) + len(self._undelivered) == 1
            if not on_loop:
                self._marks_to_writer = True
                if first:
                    self._cond.notify_all()
        if first and on_loop and self._mark_timer is None:
            self._mark_timer = self._loop.call_later(MARK_DELAY, self._flush_marks)  # type: ignore[union-attr]

    # -- the writer thread --------------------------------------------------------------

    def _write_loop(self) -> None:
        with self._cond:  # open as soon as we know where: a previous run's keys go now
            while self.path is None and not self._stopping:
                self._cond.wait()
        if self.path is not None:
            self._open()
        while True:
            with self._cond:
                while not self._work() and not self._checkpoint_due and not self._stopping:
                    self._cond.wait()
                checkpoint, self._checkpoint_due = self._checkpoint_due, False
            if checkpoint:
                self._checkpoint()
                continue
            with self._cond:
                if not self._new and not self._stopping:  # marks alone: let more gather
                    self._cond.wait(MARK_DELAY)  # a commit wakes us at once
                if not self._work():
                    if self._stopping:
                        return
                    continue  # the loop took them meanwhile
                new = self._new[: self.group_max]
                del self._new[: len(new)]
                delivered, self._delivered = self._delivered, []
                undelivered, self._undelivered = self._undelivered, []
                self._marks_to_writer = False
                self._busy = True
            with self._write_lock:
                written = self._write(new, delivered, undelivered)
            assert written is not None  # blocking: never None
            reason, marked = written
            with self._cond:
                self._busy = False
                if not marked:  # the marks are retried; the new keys were refused
                    self._delivered[:0] = delivered
                    self._undelivered[:0] = undelivered
                    self._marks_to_writer = True
                self._cond.notify_all()
            if new:
                self._answer([done for _, done in new], reason)
            if marked and delivered:
                self.poster.poke()
            elif not marked and not new:
                if self._stopping:  # nothing more will come: the marks are the next run's
                    return
                with self._cond:  # only marks to retry: not in a tight loop
                    self._cond.wait(MARK_RETRY)
            if self.store is not None:
                self._after_write(self.store)

    def _checkpoint(self) -> None:
        """A checkpoint of the WAL, here in the writer thread (its fsyncs too).

        With the write lock held: meanwhile the loop hands its keys to this thread, which
        commits them after, so those answers wait for the checkpoint as every answer did
        when SQLite checkpointed in the committing writer; the loop itself never waits.
        """
        store = self.store
        if store is None:
            return
        try:
            with self._write_lock:
                store.checkpoint()
        except sqlite3.Error as exc:  # the WAL only grows until the next one: no answer waits
            log.debug("el outbox %s no pudo hacer checkpoint: %s", self.path, exc)

    def _work(self) -> bool:
        """Something for the writer to write, and somewhere to write it (with the lock held):
        new keys, or marks given to it. Marks made on the loop under ``normal`` are the
        loop's to write (:meth:`_mark`), unless it hands them over or the Outbox stops: a
        writer that took them too woke every MARK_DELAY and made the loop hand off."""
        marks = (self._delivered or self._undelivered) and (self._marks_to_writer or self._stopping)
        return self.path is not None and bool(self._new or marks)

    def _write(
        self,
        new: list[tuple[str, Done]],
        delivered: list[str],
        undelivered: list[str],
        *,
        blocking: bool = True,
    ) -> tuple[str | None, bool] | None:
        """Commit one group: why its new keys were refused (None: committed), and whether
        the marks were written (if not, they are retried with the next group). With the
        write lock held. Not ``blocking`` (the loop's): None, nothing done, when another
        thread holds the file."""
        reason = self._open() if self.store is None else None
        if self.store is not None:
            keys = [k for k, _ in new]
            full = None
            try:
                full = self._full(len(keys))
                if not self.store.apply(
                    [] if full else keys, delivered, undelivered, blocking=blocking
                ):
                    return None
            except Exception as exc:  # not only sqlite3.Error: a dead writer would hang them all
                reason = self._failed(exc)
            else:
                if full is not None:  # the marks went; the new keys wait for room
                    self.refused += len(new)
                    return full, True
        if reason is not None:
            self.refused += len(new)
            return reason, False
        if self.failing is not None:
            log.warning("el outbox %s se puede escribir otra vez", self.path)
            self.failing = None
        self.groups += 1
        self.committed += len(new)
        self._added += len(new)
        return None, True

    def _full(self, adding: int) -> str | None:
        """Why ``adding`` more keys would pass ``max_rows`` (None: there is room).

        Why a bound: with the Profesor away for long, every answer adds a row. At the
        bound the Docencio refuses new questions with an error answer, as with a full disk,
        rather than answer without counting. The file is counted again only when the keys
        added since the last count could reach the bound, so this costs nothing under it.
        """
        if not adding or self._rows_seen + self._added + adding <= self.max_rows:
            return None
        assert self.store is not None
        self._rows_seen, self._added = self.store.count(), 0
        if self._rows_seen + adding <= self.max_rows:
            if self.full:
                log.warning("el outbox %s tiene sitio otra vez", self.path)
                self.full = False
            return None
        if not self.full:
            log.error(
                "el outbox %s está lleno (%d claves sin confirmar por el Profesor): las "
                "preguntas nuevas reciben un error hasta que el Profesor las cuente",
                self.path,
                self._rows_seen,
            )
            self.full = True
        return f"outbox lleno: {self._rows_seen} claves esperan al Profesor"

    def _open(self) -> str | None:
        """Open the file (posting what a previous run left); None, or why it failed."""
        assert self.path is not None
        try:
            self.store = OutboxStore(self.path, self.sync)
        except sqlite3.Error as exc:
            return self._failed(exc)
        self.left_over = self.store.left_over
        self._rows_seen, self._added = self.left_over, 0
        if self.left_over:
            log.warning(
                "el outbox %s trae %d claves de una ejecución anterior; se envían al Profesor",
                self.path,
                self.left_over,
            )
            self.poster.poke()
        return None

    def _failed(self, exc: Exception) -> str:
        """Why writing failed; the one log line when it starts failing."""
        reason = f"{type(exc).__name__}: {exc}"
        if self.failing is None:
            log.error(
                "el outbox %s no se puede escribir (%s): las preguntas nuevas reciben un "
                "error en vez de una respuesta sin contar, hasta que se pueda escribir",
                self.path,
                reason,
            )
        self.failing = reason
        return reason

    def _answer(self, callbacks: list[Done], reason: str | None) -> None:
        """Run the group's ``done`` callbacks on the loop, in one wake-up."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody to answer
            loop.call_soon_threadsafe(_call_all, callbacks, reason)

    # -- for the poster -----------------------------------------------------------------

    def ready_keys(self, limit: int) -> list[str] | None:
        """Delivered keys to post; None when the file cannot be read."""
        store = self.store
        if store is None:
            return []
        try:
            return store.ready(limit)
        except sqlite3.Error as exc:
            log.warning("el outbox %s no se puede leer: %s", self.path, exc)
            return None

    def acknowledged(self, keys: list[str]) -> None:
        store = self.store
        if store is None:
            return
        try:
            store.remove(keys)
        except sqlite3.Error as exc:  # they stay: posted again later, which is harmless
            log.warning("el outbox %s no pudo borrar %d claves: %s", self.path, len(keys), exc)

    def rows(self) -> int:
        """Keys in the outbox (committed, not yet acknowledged by the Profesor)."""
        store = self.store
        if store is None:
            return 0
        try:
            return store.count()
        except sqlite3.Error:
            return 0

    # -- the end ------------------------------------------------------------------------

    def wait_idle(self, timeout: float) -> bool:
        """Block until every queued key was written (or ``timeout``); whether it was."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._idle_waiters += 1
            try:
                while self._busy or (self.path is not None and (self._new or self._staged)):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._cond.wait(left)
            finally:
                self._idle_waiters -= 1
        return True

    def close(self, flush: float = 5.0) -> None:
        """Write what is queued, post for up to ``flush`` seconds, close. What the Profesor
        did not acknowledge stays in the file for the next run."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._writer.join(flush)
        self.poster.close(flush)
        left = self.rows()
        if left:
            log.warning(
                "%d claves quedan en el outbox %s para la próxima ejecución", left, self.path
            )
        if self.store is not None:
            self.store.close()

    def stats(self) -> dict[str, object]:
        return {
            "outbox": self.path,
            "outbox_committed": self.committed,
            "outbox_groups": self.groups,
            "outbox_loop_groups": self.loop_groups,
            "outbox_slow_commits": self.slow_commits,
            "outbox_refused": self.refused,
            "outbox_left_over": self.left_over,
            "outbox_failing": self.failing,
        }


def _call_all(callbacks: list[Done], reason: str | None) -> None:
    for done in callbacks:
        try:
            done(reason)
        except Exception:  # one answer's bug must not cost the others theirs
            log.exception("error answering after the outbox commit")
