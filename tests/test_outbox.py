"""The Docencio's outbox on a real SQLite file: what a row means, and commit-before-answer."""

from __future__ import annotations

import asyncio
import logging
import socket
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from roles.outbox import Outbox, OutboxStore
from roles.profesor import ProfesorClient


def _nowhere() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _keys(path: Path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {row[0] for row in db.execute("SELECT key FROM outbox")}
    finally:
        db.close()


def test_only_delivered_keys_are_posted_and_dropped_ones_are_withdrawn(tmp_path):
    store = OutboxStore(tmp_path / "o.sqlite3")
    try:
        store.apply(["a", "b", "c"], [], [])
        assert store.ready(10) == []  # committed, not delivered yet: nothing to post
        store.apply([], ["a"], ["b"])
        assert store.ready(10) == ["a"]
        assert store.count() == 2  # b withdrawn (its student left), c still on its way
        # c re-asked on a new connection while its old answer is dropped: it stays
        store.apply(["c"], [], ["c"])
        assert store.count() == 2
        store.apply([], ["c"], [])
        assert sorted(store.ready(10)) == ["a", "c"]
        store.remove(["a", "c"])
        assert store.count() == 0
    finally:
        store.close()


def test_a_new_run_posts_every_key_a_crashed_one_left(tmp_path):
    path = tmp_path / "o.sqlite3"
    store = OutboxStore(path)
    store.apply(["sent-or-not", "delivered"], ["delivered"], [])
    store.close()  # as after a SIGKILL: which committed answers left is unknown
    again = OutboxStore(path)
    try:
        assert again.left_over == 2
        assert sorted(again.ready(10)) == ["delivered", "sent-or-not"]
    finally:
        again.close()


@pytest.mark.timeout(30)
def test_the_answer_waits_for_its_keys_commit(tmp_path):
    """``done`` runs on the loop, and by then the key is in the file (seen by another
    connection, as a process started after a crash would see it)."""
    path = tmp_path / "o.sqlite3"
    outbox = Outbox(ProfesorClient(_nowhere(), timeout=0.5), path)
    seen: dict[str, object] = {}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        outbox.bind(loop)
        finished = loop.create_future()

        def done(failed: str | None) -> None:
            seen["failed"] = failed
            seen["keys"] = _keys(path)
            seen["on_loop"] = asyncio.get_running_loop() is loop
            finished.set_result(None)

        outbox.commit("k1", done)
        await asyncio.wait_for(finished, 10)

    try:
        asyncio.run(main())
    finally:
        outbox.close(0.1)
    assert seen == {"failed": None, "keys": {"k1"}, "on_loop": True}
    assert outbox.committed == 1 and outbox.groups >= 1
    assert _keys(path) == {"k1"}  # the Profesor never acknowledged it: kept for the next run


@pytest.mark.parametrize(("sync", "pragma"), [(None, 1), ("normal", 1), ("full", 2)])
def test_outbox_sync_normal_by_default_full_on_request(tmp_path, sync, pragma):
    """``normal`` (survives any crash of the process, no fsync per commit) is the default of
    the store and of ``ayudantia docencio``; ``full`` (one fsync per group) is opted into."""
    from ayudantia.commands import docencio

    kwargs = {} if sync is None else {"sync": sync}
    store = OutboxStore(tmp_path / "o.sqlite3", **kwargs)
    try:
        with store._lock:
            assert store._db.execute("PRAGMA synchronous").fetchone()[0] == pragma
    finally:
        store.close()
    (option,) = [o for o in docencio.options() if o.name == "outbox_sync"]
    assert option.default == "normal"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sync", ["normal", "full"])
def test_under_normal_the_loop_commits_itself_and_the_wal_stays_bounded(tmp_path, sync):
    """Under ``normal`` a serial student's key is committed on the loop's own thread (no
    hand-off to the writer and back), still before its ``done``; the writer thread does the
    checkpoints, so the WAL is started over and stays small (without them it grew by 5 KB a
    commit). Under ``full`` every commit stays in the writer thread (its fsync never holds
    the loop)."""
    path = tmp_path / "o.sqlite3"
    outbox = Outbox(ProfesorClient(_nowhere(), timeout=0.5), path, sync=sync)
    commits = 4000 if sync == "normal" else 20
    failed: list[str | None] = []
    seen: dict[str, object] = {}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        outbox.bind(loop)
        while outbox.store is None:  # the writer opens the file
            await asyncio.sleep(0.01)
        for k in range(commits):
            done = loop.create_future()
            outbox.commit(f"k{k}", done.set_result)
            failed.append(await asyncio.wait_for(done, 10))
            if k == 0:
                seen["keys"] = _keys(path)  # by the time done ran, the key was in the file
            outbox.delivered(f"k{k}")

    try:
        asyncio.run(main())
        wal = Path(f"{path}-wal").stat().st_size
    finally:
        outbox.close(0.1)
    assert failed == [None] * commits
    assert seen["keys"] == {"k0"}
    if sync == "normal":
        assert outbox.loop_groups >= commits - 50, outbox.stats()
        assert wal < 10 * 2**20, wal  # no checkpoints: 4,000 commits were 19 MB
    else:
        assert outbox.loop_groups == 0 and outbox.groups >= commits, outbox.stats()
    assert _keys(path) == {f"k{k}" for k in range(commits)}


@pytest.mark.parametrize(
    ("question", "connection", "key"),
    [
        (
            {"id": "q1", "de": "Ana"},
            "",
            "0a956bfdf0d90b40111a9e05dc834aa1ae46398ca885773d93a4497bfee0c54b",
        ),
        (
            {"id": 7, "de": 'José "Pepe" Ñúñez'},
            "",
            "0aac05728c74b50adda4efff3520be9282cf729d718a23401e8cc5e38c7cc97a",
        ),
        (
            {"id": "7"},
            "ab12cd34:9",
            "25fca7f3b4caa68f3b01a2ca7c1794bd3d11a64d80107cdfa8c3ac1db4b7c190",
        ),
    ],
)
def test_count_keys_are_the_ones_earlier_versions_wrote(question, connection, key):
    """An outbox (and a gradebook) outlives a Docencio upgrade: a key re-asked after a crash
    must be the one the previous version committed, or the count doubles. Pinned from the
    version that built each key with json.dumps; count_key now reuses one encoder."""
    from roles.clase import count_key

    assert count_key(question, connection) == key


def _wal_header(path: Path) -> bytes:
    """The WAL header's checkpoint sequence and salts: they change when the WAL restarts."""
    with open(f"{path}-wal", "rb") as wal:
        return wal.read(32)[12:24]


@pytest.mark.timeout(30)
def test_the_checkpoint_restarts_the_wal_itself_so_the_loops_next_commit_never_fsyncs(tmp_path):
    """A WAL checkpointed whole is started over by the next commit, and that commit fsyncs
    the new WAL header (SQLite does so even under ``normal``). Under ``normal`` the next
    commit is usually the event loop's (Outbox._commit_on_loop), so ``checkpoint()`` (the
    writer thread's) must restart the WAL itself: the header changes in the checkpoint, and
    the commits after it leave the header as it is (they only append frames)."""
    path = tmp_path / "o.sqlite3"
    store = OutboxStore(path, sync="normal")
    try:
        for k in range(3):
            for i in range(20):
                store.apply([f"k{k}-{i}"], [], [])
            before = _wal_header(path)
            store.checkpoint()
            restarted = _wal_header(path)
            assert restarted != before, "the checkpoint left the WAL's restart to the next commit"
            store.apply([f"after-{k}"], [f"k{k}-0"], [])  # as the loop's next commit
            assert _wal_header(path) == restarted, "the commit after a checkpoint restarted the WAL"
        assert store.count() == 63 and sorted(store.ready(100)) == ["k0-0", "k1-0", "k2-0"]
    finally:
        store.close()


@pytest.mark.timeout(60)
def test_the_wal_stays_bounded_when_each_commit_carries_many_keys(tmp_path):
    """The checkpoint is due by the WAL pages written, not by commits: a group of 200 keys
    spread over the key index rewrites ~160 pages, so 500 commits of them (the old bound)
    were 332 MB of WAL for 100,000 answers. Here 150 loop iterations of 200 students each
    (30,000 answers): without the page count no checkpoint came at all (WAL 49-55 MB)."""
    path = tmp_path / "o.sqlite3"
    outbox = Outbox(ProfesorClient(_nowhere(), timeout=0.5), path, sync="normal")
    students, rounds = 200, 150
    failed: list[str | None] = []

    async def student(s: int) -> None:
        loop = asyncio.get_running_loop()
        for k in range(rounds):
            done = loop.create_future()
            outbox.commit(f"Alumno-{s}:{k}", done.set_result)
            failed.append(await asyncio.wait_for(done, 20))
            outbox.delivered(f"Alumno-{s}:{k}")

    async def main() -> None:
        outbox.bind(asyncio.get_running_loop())
        while outbox.store is None:  # the writer opens the file
            await asyncio.sleep(0.01)
        await asyncio.gather(*(student(s) for s in range(students)))

    try:
        asyncio.run(main())
        wal = Path(f"{path}-wal").stat().st_size
    finally:
        outbox.close(0.1)
    assert failed == [None] * (students * rounds)
    assert wal < 16 * 2**20, wal  # 1,000 pages is 4 MB; a commit or two more while it runs
    assert len(_keys(path)) == students * rounds


def test_a_withdrawn_answer_looks_its_key_up_instead_of_scanning_the_outbox(tmp_path):
    """Under ``normal`` the loop's own commit carries the withdrawals (a student left with
    answers on their way): deleting every row with nothing pending scanned the whole table,
    44 ms on the loop with 300,000 keys waiting for an absent Profesor. Counted in SQLite's
    virtual-machine steps (its progress handler), not in time: a lookup takes a few dozen
    whatever the size of the file, a scan of 20,000 rows takes hundreds of thousands."""
    store = OutboxStore(tmp_path / "o.sqlite3")
    try:
        store.apply([f"Alumno-{i % 50}:{i}" for i in range(20_000)], [], [])
        store.apply(["gone", "stays"], ["stays"], [])
        steps = [0]

        def step() -> int:
            steps[0] += 1
            return 0

        store._db.set_progress_handler(step, 10)
        store.apply([], [], ["gone", "stays"])
        store._db.set_progress_handler(None, 10)
        assert steps[0] < 500, steps[0]  # the scan: 6,008 (of 10 steps each)
        assert store.count() == 20_001  # gone deleted; stays was delivered: it stays
        assert store.ready(10) == ["stays"]
    finally:
        store.close()


@pytest.mark.timeout(60)
def test_answers_coming_while_the_profesor_is_down_do_not_cut_the_posters_backoff(tmp_path, caplog):
    """Every written delivery mark pokes the poster, and a poke used to end its backoff
    wait: with the Profesor down the Docencio posted (and logged) once per loop commit,
    506 attempts in 3 s. The backoff (50 ms doubling to 2 s) holds however many answers
    come: 200 answers 5 ms apart (a second or more) leave room for a handful of tries."""
    outbox = Outbox(ProfesorClient(_nowhere(), timeout=0.5), tmp_path / "o.sqlite3")
    answers = 200

    async def main() -> None:
        loop = asyncio.get_running_loop()
        outbox.bind(loop)
        while outbox.store is None:  # the writer opens the file
            await asyncio.sleep(0.01)
        for k in range(answers):
            done = loop.create_future()
            outbox.commit(f"k{k}", done.set_result)
            assert await asyncio.wait_for(done, 10) is None
            outbox.delivered(f"k{k}")
            await asyncio.sleep(0.005)

    caplog.set_level(logging.INFO, logger="ayudantia")
    try:
        asyncio.run(main())
    finally:
        outbox.close(0.1)
    tries = [r for r in caplog.records if "no disponible para contar" in r.getMessage()]
    assert 1 <= len(tries) <= 15, len(tries)  # without the whole wait: one per answer
    assert _keys(tmp_path / "o.sqlite3") == {f"k{k}" for k in range(answers)}  # all kept


_HOLD_THE_FILE = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("held", flush=True)
sys.stdin.readline()
db.execute("ROLLBACK")
"""


@pytest.mark.timeout(60)
def test_a_write_lock_held_by_another_process_never_makes_the_loops_commit_wait(tmp_path):
    """Someone's sqlite3 shell in a transaction on the outbox: SQLite's busy handler slept
    (up to 5 s) in whichever thread began, the event loop's too (a lock held 2 s stalled
    the loop 2 s). The loop's commit (``blocking`` False) now comes back at once having
    done nothing (its keys go to the writer); the writer's waits for the lock, as before."""
    path = tmp_path / "o.sqlite3"
    store = OutboxStore(path, sync="normal")
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_THE_FILE, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline() == "held\n"
        assert store.apply(["k1"], [], [], blocking=False) is False  # not waited, not done
        assert store.count() == 0
        release = threading.Timer(0.3, lambda: (holder.stdin.write("\n"), holder.stdin.flush()))
        release.start()
        try:
            assert store.apply(["k2"], [], []) is True  # the writer's: waits for the lock
        finally:
            release.join()
        assert holder.wait(10) == 0
        assert store.apply(["k3"], [], [], blocking=False) is True
        assert sorted(_keys(path)) == ["k2", "k3"]
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
        store.close()


@pytest.mark.timeout(30)
def test_a_slow_loop_commit_sends_the_next_ones_to_the_writer_for_a_while(tmp_path, monkeypatch):
    """A loop commit held by the disk (played by a trigger that sleeps 50 ms) stalls every
    student on the loop; the commits after it go to the writer thread for SLOW_BACKOFF, so
    a slow disk costs the loop one stall, not one per commit. Then the loop commits again."""
    import time

    from roles import outbox as outbox_module

    monkeypatch.setattr(outbox_module, "SLOW_BACKOFF", 0.3)
    path = tmp_path / "o.sqlite3"
    outbox = Outbox(ProfesorClient(_nowhere(), timeout=0.5), path)
    loop_groups: list[int] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        outbox.bind(loop)
        while outbox.store is None:
            await asyncio.sleep(0.01)
        store = outbox.store
        with store._lock:
            store._db.create_function("stall", 0, lambda: time.sleep(0.05))
            store._db.execute(
                "CREATE TEMP TRIGGER slow BEFORE INSERT ON outbox WHEN NEW.key = 'slow' "
                "BEGIN SELECT stall(); END"
            )
        for key in ["a", "slow", "b", "c", "pause", "d"]:
            if key == "pause":
                await asyncio.sleep(0.4)  # past SLOW_BACKOFF
                continue
            done = loop.create_future()
            outbox.commit(key, done.set_result)
            assert await asyncio.wait_for(done, 10) is None
            loop_groups.append(outbox.loop_groups)

    try:
        asyncio.run(main())
    finally:
        outbox.close(0.1)
    # a and slow on the loop; b and c by the writer (the loop's count stays); d on the loop
    assert loop_groups == [1, 2, 2, 2, 3], (loop_groups, outbox.stats())
    assert outbox.slow_commits == 1
    assert _keys(path) == {"a", "slow", "b", "c", "d"}
