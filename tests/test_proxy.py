"""``ayudantia proxy``: units, accuracy of delay and rate, flow control, faults, CLI."""

from __future__ import annotations

import json
import signal
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator

import psutil
import pytest

from ayudantia.netem import Link, Proxy, parse_bytes, parse_duration, parse_rate
from protocol.errors import ConnectionClosed, TransportError, Truncated
from protocol.transport import Connection
from roles.eco import Eco
from roles.wire import WireSettings
from tests.procs import ayudantia_cmd, running, stop_run

# --- a plain TCP server: echoes messages that start with E, acks bulk ending in "!" ------


@pytest.fixture(scope="module")
def echo() -> Iterator[tuple[str, int]]:
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.2)
    stop = threading.Event()
    workers: list[threading.Thread] = []

    def handle(conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(30)
        with conn:
            while not stop.is_set():
                try:
                    data = conn.recv(1 << 20)
                except OSError:
                    return
                if not data:
                    return
                if data[:1] == b"E":
                    conn.sendall(data)
                elif data.endswith(b"!"):
                    conn.sendall(b"k")

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            worker = threading.Thread(target=handle, args=(conn,), daemon=True)
            worker.start()
            workers.append(worker)

    acceptor = threading.Thread(target=serve, daemon=True)
    acceptor.start()
    try:
        yield srv.getsockname()[:2]
    finally:
        stop.set()
        acceptor.join(5)
        srv.close()


def proxy_process(to: tuple[str, int], *flags: str):
    return running("proxy", "--to", f"{to[0]}:{to[1]}", *flags)


def connect(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=20)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def round_trip(sock: socket.socket, size: int = 100) -> float:
    start = time.perf_counter()
    sock.sendall(b"E" * size)
    got = 0
    while got < size:
        got += len(sock.recv(size))
    return time.perf_counter() - start


def bulk(sock: socket.socket, size: int) -> float:
    start = time.perf_counter()
    sock.sendall(b"x" * (size - 1) + b"!")
    assert sock.recv(1) == b"k"
    return time.perf_counter() - start


# --- units -------------------------------------------------------------------------------


def test_units() -> None:
    assert parse_duration("20ms") == pytest.approx(0.02)
    assert parse_duration("1.5s") == 1.5 and parse_duration("500us") == pytest.approx(5e-4)
    assert parse_rate("100mbit") == 12.5e6 and parse_rate("1gbit") == 125e6
    assert parse_rate("500kbit") == 62_500 and parse_rate("12MB/s") == 12e6
    assert parse_rate("64KB/s") == 64_000 and parse_bytes("64K") == 65_536
    for bad in ("20", "ms", "-1ms", "fast", "9" * 400 + "s"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    for bad in ("100", "0mbit", "100mbps", "9" * 400 + "gbit"):
        with pytest.raises(ValueError):
            parse_rate(bad)


def test_link_spec_and_description() -> None:
    link = Link.parse("delay=5ms, rate=100mbit,down-rate=10mbit,reset_after=64K")
    assert (link.delay, link.up_rate, link.down_rate) == (0.005, 12.5e6, 1.25e6)
    assert link.reset_after == 65_536
    assert link.describe() == (
        "delay 5 ms, up 100 Mbit/s, down 10 Mbit/s, reset after 65,536 bytes (up + down)"
    )
    with pytest.raises(ValueError, match="KEY=VALUE"):
        Link.parse("latency=5ms")
    with pytest.raises(ValueError, match="jitter"):
        Link(delay=0.001, jitter=0.002)
    with pytest.raises(ValueError, match="stall"):
        Link(stall_every=1.0, stall_for=2.0)


# --- accuracy: the feature's promise -----------------------------------------------------


@pytest.mark.timeout(60)
def test_a_10ms_delay_makes_a_20ms_round_trip_within_10_percent(echo) -> None:
    """The delay the proxy adds, measured against the same hop through a proxy without one.

    Round trips alternate between the two proxy processes, so a busy machine slows both
    alike; the minimum of each is the round trip with the least scheduling noise in it.
    """
    with (
        proxy_process(echo, "--delay", "10ms") as slow,
        proxy_process(echo) as plain,
        connect(slow.host, slow.port) as s,
        connect(plain.host, plain.port) as p,
    ):
        round_trip(s), round_trip(p)  # the first ones also pay for the connection onward
        pairs = [(round_trip(s), round_trip(p)) for _ in range(25)]
    rtts, base = [a for a, _ in pairs], [b for _, b in pairs]
    assert min(rtts) >= 0.020 * 0.95, rtts  # never faster than the link: latency is per byte
    added = min(rtts) - min(base)
    assert 0.018 <= added <= 0.022, f"added {added * 1e3:.2f} ms: {pairs}"
    # most round trips, not only the luckiest, carry the 20 ms and little more
    added_median = statistics.median(a - b for a, b in pairs)
    assert 0.018 <= added_median <= 0.022 * 1.5, f"median added {added_median * 1e3:.2f} ms"


@pytest.mark.timeout(60)
def test_a_bulk_transfer_at_100mbit_takes_size_over_rate_within_10_percent(echo) -> None:
    """size / rate within 10%, on top of what the same transfer costs through a plain proxy."""
    size, rate = 2_500_000, 100e6 / 8  # 0.2 s each
    with (
        proxy_process(echo, "--rate", "100mbit") as shaped,
        proxy_process(echo) as plain,
        connect(shaped.host, shaped.port) as s,
        connect(plain.host, plain.port) as p,
    ):
        pairs = [(bulk(s, size), bulk(p, size)) for _ in range(4)]
    times, base = [a for a, _ in pairs], [b for _, b in pairs]
    expected = size / rate
    assert min(times) >= 0.97 * expected, times  # one 2 ms burst is all it may gain
    assert min(times) <= 1.10 * expected + min(base), f"{pairs} against {expected:.3f} s"


@pytest.mark.timeout(60)
def test_delay_and_rate_add_up_a_delay_never_prepays_the_rate(echo) -> None:
    link = Link(delay=0.02, up_rate=parse_rate("10mbit"), down_rate=parse_rate("10mbit"))
    with Proxy(("127.0.0.1", 0), echo, link) as proxy, connect(*proxy.address) as sock:
        times = [bulk(sock, 250_000) for _ in range(2)]
    floor = 250_000 / link.up_rate + 2 * 0.02  # the bytes at 10 Mbit/s, the ack's way back
    assert min(times) >= 0.97 * floor, (times, floor)


# --- the protocol through it -------------------------------------------------------------


@pytest.mark.timeout(60)
def test_frames_keep_their_order_through_jitter() -> None:
    eco = Eco("127.0.0.1", 0, wire=WireSettings(read_timeout=5.0))
    link = Link(delay=0.004, jitter=0.004, up_rate=2e6, down_rate=1e6)
    with (
        eco,
        Proxy(("127.0.0.1", 0), eco.address, link) as proxy,
        Connection.connect(*proxy.address, codec="msgpack", read_timeout=10) as conn,
    ):
        for i in range(40):
            conn.send({"n": i, "texto": "x" * (i * 97)}, chunk_size=500)
        assert [conn.recv()["n"] for _ in range(40)] == list(range(40))
    assert proxy.stats.connections == 1 and proxy.stats.up_bytes == proxy.stats.down_bytes > 0


@pytest.mark.timeout(60)
def test_memory_per_connection_is_bounded_by_flow_control(echo) -> None:
    link = Link(up_rate=parse_rate("1mbit"), down_rate=parse_rate("1mbit"), delay=0.05)
    with Proxy(("127.0.0.1", 0), echo, link) as proxy, connect(*proxy.address) as sock:
        sock.setblocking(False)
        pushed, deadline = 0, time.monotonic() + 1.5
        block = b"x" * 65536
        while time.monotonic() < deadline:
            try:
                pushed += sock.send(block)
            except BlockingIOError:
                time.sleep(0.01)
        (session,) = proxy.sessions
        held = session.up.queued
    assert pushed > 1_000_000  # the sender filled every buffer on its way
    bdp = link.up_rate * link.delay  # bytes the link itself holds
    assert session.up.high == int(256 * 1024 + 2 * bdp)
    assert held <= session.up.high + 1024 * 1024  # the bound, plus one read in flight
    assert proxy.stats.up_bytes < 400_000  # while the link passed ~190 KB in 1.5 s


@pytest.mark.timeout(30)
def test_reset_after_counts_both_directions_together(echo) -> None:
    """600 bytes up, then their echo: the reset at 1,000 falls 400 bytes into the echo."""
    with (
        Proxy(("127.0.0.1", 0), echo, Link(reset_after=1000)) as proxy,
        connect(*proxy.address) as sock,
    ):
        sock.sendall(b"E" * 600)
        got = b""
        with pytest.raises(ConnectionResetError):
            while chunk := sock.recv(4096):
                got += chunk
        assert got == b"E" * 400
        assert (proxy.stats.up_bytes, proxy.stats.down_bytes, proxy.stats.resets) == (600, 400, 1)


@pytest.mark.timeout(60)
def test_reset_after_cuts_mid_message_and_the_server_keeps_serving() -> None:
    eco = Eco("127.0.0.1", 0, wire=WireSettings(read_timeout=5.0))
    with eco, Proxy(("127.0.0.1", 0), eco.address, Link(reset_after=100_000)) as proxy:
        with (
            Connection.connect(*proxy.address, codec="raw", read_timeout=5) as conn,
            pytest.raises((ConnectionClosed, Truncated, TransportError)),
        ):
            conn.send(b"y" * 1_000_000)
            conn.recv()
        assert proxy.stats.resets == 1 and proxy.stats.up_bytes <= 100_000
        with Connection.connect(*eco.address, read_timeout=5) as direct:
            direct.send({"sigue": True})
            assert direct.recv() == {"sigue": True}


@pytest.mark.timeout(60)
def test_stalls_hold_forwarding_for_a_while(echo) -> None:
    link = Link(stall_every=0.4, stall_for=0.25)
    with Proxy(("127.0.0.1", 0), echo, link) as proxy, connect(*proxy.address) as sock:
        rtts = [round_trip(sock) for _ in range(60) if not time.sleep(0.02)]
    assert max(rtts) >= 0.1, rtts  # some round trip met a stall
    assert statistics.median(rtts) < 0.1, rtts  # most did not


# --- the command --------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_proxy_prints_its_link_and_exits_0_on_sigint_with_counts(echo) -> None:
    with proxy_process(echo, "--delay", "1ms", "--up-rate", "10mbit", "--reset-after", "1M") as p:
        with connect(p.host, p.port) as sock:
            round_trip(sock, 300)
        time.sleep(0.1)
        status = p.stop(signal.SIGINT)
    out = "".join(p.output)
    assert status == 0, out
    assert (
        "link: delay 1 ms, up 10 Mbit/s, down unlimited, reset after 1,048,576 bytes (up + down)"
        in out
    )
    assert "1 connections; up (client->server) 300 bytes, down (server->client) 300 bytes" in out


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        ((), "--to HOST:PORT is required"),
        (("--to", "127.0.0.1:9", "--rate", "fast"), "--rate fast"),
        (("--to", "127.0.0.1:9", "--stall-every", "1s"), "go together"),
        (("--to", "127.0.0.1:9", "--delay", "1ms", "--jitter", "5ms"), "jitter"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(flags: tuple[str, ...], words: str) -> None:
    done = subprocess.run(
        ayudantia_cmd("proxy", *flags), capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2 and words in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.timeout(90)
def test_run_network_puts_a_proxy_on_each_hop_and_reports_it(tmp_path) -> None:
    report, keep = tmp_path / "summary.json", tmp_path / "logs"
    cmd = ayudantia_cmd(
        "run",
        *("--students", "2", "--questions", "6", "--interval", "0", "--codec", "msgpack"),
        *("--compress", "lz4", "--network", "delay=5ms,rate=100mbit"),
        *("--report", str(report), "--keep", str(keep)),
    )
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as run:
        try:
            stdout, stderr = run.communicate(timeout=80)
        finally:  # a hung class: SIGTERM lets the run reap its roles, SIGKILL only after
            stop_run(run, grace=20)
    done = subprocess.CompletedProcess(cmd, run.returncode, stdout, stderr)
    assert not [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if str(keep) in " ".join(p.info["cmdline"] or [])
    ]
    assert done.returncode == 0, done.stdout + done.stderr
    assert "network       delay 5 ms, up 100 Mbit/s, down 100 Mbit/s, on each hop" in done.stdout
    summary = json.loads(report.read_text())
    hops = summary["network_hops"]
    assert set(hops) == {"students->Docencio", "Docencio->Tareo"}
    assert hops["students->Docencio"]["connections"] == 2
    assert hops["students->Docencio"]["up_bytes"] == summary["students_bytes_sent"]
    assert all(h["up_bytes"] > 0 and h["down_bytes"] > 0 for h in hops.values())


def test_a_busy_listen_port_is_one_line_and_exit_1() -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        done = subprocess.run(
            ayudantia_cmd("proxy", "--listen", f"127.0.0.1:{port}", "--to", "127.0.0.1:9"),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.timeout(120)
def test_run_chaos_with_network_restarts_a_role_on_its_own_port_not_its_proxy(tmp_path) -> None:
    """--chaos restarted a killed role on the --network proxy's port (taken: the proxy stays
    up), so the restart died with 'Address already in use' and the run failed."""
    report = tmp_path / "summary.json"
    cmd = ayudantia_cmd(
        "run",
        *("--chaos", "1", "--network", "delay=2ms", "--students", "3"),
        # Paced (100 x 10 ms): a class over before its first fault would test nothing.
        *("--questions", "100", "--interval", "0.01", "--report", str(report)),
    )
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(report.read_text())
    assert summary["faults"], summary
    assert summary["profesor_count"] == summary["answered"] > 0, summary
    assert set(summary["network_hops"]) == {"students->Docencio", "Docencio->Tareo"}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("loop_kind", ["uvloop", "asyncio"])
def test_the_delay_is_a_minimum_for_every_chunk_of_close_messages(echo, loop_kind) -> None:
    """By the shaper's own clock no chunk leaves before arrival + delay, both ways.

    Messages follow each other a fraction of a millisecond apart, so many chunks come due
    between two of the timers' millisecond ticks: the case that let bytes out up to 0.4 ms
    early, and that uvloop's early timers make likely. The timers fire a bounded number
    of times per chunk: a timer that re-arms for the same instant would spin.
    """
    delay, messages, size = 0.010, 300, 40
    link = Link(delay=delay)
    with (
        Proxy(("127.0.0.1", 0), echo, link, loop_kind=loop_kind, record=10_000) as proxy,
        connect(*proxy.address) as sock,
    ):
        assert proxy.loop_name == loop_kind
        sent = got = 0
        for i in range(messages):
            sock.sendall(b"E" * size)
            sent += size
            if i % 3 == 0:
                time.sleep(0.0003)  # closely, but not all in one segment
        while got < sent:
            chunk = sock.recv(1 << 16)
            assert chunk, "the proxy closed before echoing everything"
            got += len(chunk)
        deliveries = list(proxy.deliveries or ())
        timers = proxy.timer_wakeups
    assert got == sent
    up = [d for d in deliveries if d[0]]
    down = [d for d in deliveries if not d[0]]
    assert sum(d[3] for d in up) == sent and sum(d[3] for d in down) == sent
    early = [(leave - came) * 1e3 for _, came, leave, _ in deliveries if leave - came < delay]
    assert not early, f"{len(early)} of {len(deliveries)} chunks left early, ms after: {early}"
    assert timers <= 4 * len(deliveries) + 10, f"{timers} timer wake-ups, {len(deliveries)}"
