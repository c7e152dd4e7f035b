"""Captures without root: what a proxy forwards, written as a pcap of synthesized TCP.

Capturing loopback traffic needs root (or ``CAP_NET_RAW``) and a capture tool; a student
in a lab often has neither. The proxy already sees every byte it forwards, in order, per
direction, so it can write them as a capture Wireshark and tshark read like a real one:
each connection becomes a TCP flow with its three-way handshake, data segments whose
sequence and acknowledgment numbers are those a real stack would use, and FIN or RST at
the end. Ethernet and IP are synthesized around it (MAC addresses zero; the addresses and
ports are the real client's and the real server's, so a dissector registered on the
server's port finds it).

The file format and the headers are dpkt's (``dpkt.pcap.Writer``, ``dpkt.tcp.TCP``, ...),
which computes lengths and checksums. Packets are built and written on a thread of their
own: the proxy's event loop only appends a tuple to a queue, and never waits on a disk.
"""

from __future__ import annotations

import contextlib
import ipaddress
import queue
import random
import threading
import time
from pathlib import Path
from typing import Final

import dpkt

SNAPLEN: Final = 262_144  # tcpdump's default: no segment below is ever cut
MSS: Final = 65_483  # Linux loopback's (MTU 65536): what a real capture of lo would show
_WINDOW: Final = 65_535
_SEQ: Final = 1 << 32

_SYN, _ACK, _PSH, _FIN, _RST = (
    dpkt.tcp.TH_SYN,
    dpkt.tcp.TH_ACK,
    dpkt.tcp.TH_PUSH,
    dpkt.tcp.TH_FIN,
    dpkt.tcp.TH_RST,
)

# (time, src address bytes, dst address bytes, src port, dst port, seq, ack, tcp flags, payload)
_Packet = tuple[float, bytes, bytes, int, int, int, int, int, bytes | memoryview]


class PcapWriter:
    """One pcap file fed from an event loop; :meth:`close` writes what is queued and ends.

    :meth:`flow` gives one :class:`TcpFlow` per proxied connection. The loop's side costs a
    queue append per segment; the thread builds and writes the packets, and flushes the file
    whenever it has caught up, so a capture read while the proxy runs is whole up to there.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = self.path.open("wb")
        self._writer = dpkt.pcap.Writer(self._file, snaplen=SNAPLEN, linktype=dpkt.pcap.DLT_EN10MB)
        self._queue: queue.SimpleQueue[_Packet | None] = queue.SimpleQueue()
        self.packets = 0
        self.error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="pcap-writer", daemon=True)
        self._thread.start()

    def flow(self, client: tuple[str, int], server: tuple[str, int]) -> TcpFlow:
        """A new connection from ``client`` to ``server`` (its handshake is written now)."""
        return TcpFlow(self, client, server)

    def put(self, packet: _Packet) -> None:
        if not self._closed:
            self._queue.put(packet)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then close the file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout)
        with contextlib.suppress(OSError):
            self._file.close()

    def _run(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    break
                self._write(item)
                if self._queue.empty():
                    self._file.flush()
            self._file.flush()
        except BaseException as exc:  # a full disk must not take the proxy down with it
            self.error = exc
            self._closed = True

    def _write(self, item: _Packet) -> None:
        ts, src, dst, sport, dport, seq, ack, flags, data = item
        tcp = dpkt.tcp.TCP(
            sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, win=_WINDOW, data=bytes(data)
        )
        tcp.sum = _tcp_checksum(src, dst, bytes(tcp))  # dpkt's own sum is 30 times slower
        if len(src) == 16:
            ip: dpkt.Packet = dpkt.ip6.IP6(
                src=src,
                dst=dst,
                nxt=dpkt.ip.IP_PROTO_TCP,
                hlim=64,
                plen=len(tcp),
                data=tcp,
            )
            ethertype = dpkt.ethernet.ETH_TYPE_IP6
        else:
            ip = dpkt.ip.IP(
                src=src,
                dst=dst,
                p=dpkt.ip.IP_PROTO_TCP,
                ttl=64,
                data=tcp,
            )
            ethertype = dpkt.ethernet.ETH_TYPE_IP
        frame = dpkt.ethernet.Ethernet(src=b"\0" * 6, dst=b"\0" * 6, type=ethertype, data=ip)
        self._writer.writepkt(bytes(frame), ts=ts)
        self.packets += 1

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _tcp_checksum(src: bytes, dst: bytes, segment: bytes) -> int:
    """RFC 793's checksum of a segment (its checksum field 0), over the pseudo-header.

    The ones' complement sum of 16-bit words is the big-endian number they form modulo
    0xFFFF (2**16 is 1 modulo 0xFFFF), which Python computes in C: a 64 KB segment in
    microseconds, where summing word by word takes a millisecond and holds the GIL the
    proxy's loop needs. A 0 from the modulo is the sum 0xFFFF for any data that is not all
    zeros (a pseudo-header never is).
    """
    length, tcp = len(segment), dpkt.ip.IP_PROTO_TCP
    if len(src) == 4:  # RFC 793: zero, protocol, TCP length
        pseudo = src + dst + tcp.to_bytes(2, "big") + length.to_bytes(2, "big")
    else:  # RFC 8200: upper-layer length, three zeros, next header
        pseudo = src + dst + length.to_bytes(4, "big") + tcp.to_bytes(4, "big")
    words = pseudo + segment + (b"\0" if length % 2 else b"")
    total = int.from_bytes(words, "big") % 0xFFFF or 0xFFFF
    return ~total & 0xFFFF or 0xFFFF  # 0 would make dpkt sum it again; 0xFFFF is 0 in ones'


def _addresses(client: str, server: str) -> tuple[bytes, bytes]:
    """Both ends' address bytes, of one family: IPv4 beside IPv6 becomes ``::ffff:a.b.c.d``
    (a proxy may listen on IPv6 and connect over IPv4; a TCP flow has one family)."""
    ends = [ipaddress.ip_address(host.split("%")[0]) for host in (client, server)]
    if any(a.version == 6 for a in ends):
        ends = [ipaddress.IPv6Address(f"::ffff:{a}") if a.version == 4 else a for a in ends]
    return ends[0].packed, ends[1].packed


class TcpFlow:
    """One TCP connection's packets: sequence numbers kept per direction as a stack would.

    ``up`` is client to server. Each side's initial sequence number is random; a data
    segment carries the sender's next sequence number and acknowledges everything the
    other side has sent so far, which is what a receiver that keeps up would have acked.
    """

    def __init__(self, writer: PcapWriter, client: tuple[str, int], server: tuple[str, int]):
        self.writer = writer
        src, dst = _addresses(client[0], server[0])
        self.ends = {True: (src, client[1]), False: (dst, server[1])}
        isn_client, isn_server = random.getrandbits(32), random.getrandbits(32)
        self.next = {True: isn_client, False: isn_server}
        self.finished = {True: False, False: False}
        self.closed = False
        self._emit(True, _SYN, b"", ack=0)
        self.next[True] = (isn_client + 1) % _SEQ
        self._emit(False, _SYN | _ACK, b"")
        self.next[False] = (isn_server + 1) % _SEQ
        self._emit(True, _ACK, b"")

    def data(self, up: bool, data: bytes | memoryview) -> None:
        """Bytes one side sent: segments of at most :data:`MSS` bytes."""
        if self.closed or self.finished[up]:
            return
        view = memoryview(data)
        if view.readonly is False:  # the caller may reuse its buffer: the queue keeps a copy
            view = memoryview(bytes(view))
        # else immutable (a transport's bytes): the writer thread copies it, not the loop
        for start in range(0, len(view), MSS):
            segment = view[start : start + MSS]
            self._emit(up, _PSH | _ACK, segment)
            self.next[up] = (self.next[up] + len(segment)) % _SEQ

    def fin(self, up: bool) -> None:
        """One side closed its sending half; the other acknowledges the FIN."""
        if self.closed or self.finished[up]:
            return
        self.finished[up] = True
        self._emit(up, _FIN | _ACK, b"")
        self.next[up] = (self.next[up] + 1) % _SEQ
        self._emit(not up, _ACK, b"")
        self.closed = all(self.finished.values())

    def reset(self, up: bool = False) -> None:
        """The connection was cut with a reset, sent by ``up``'s side."""
        if self.closed:
            return
        self.closed = True
        self._emit(up, _RST | _ACK, b"")

    def close(self) -> None:
        """The connection is over: a FIN for each side that has not sent one."""
        for up in (True, False):
            self.fin(up)

    def _emit(self, up: bool, flags: int, data: bytes | memoryview, ack: int | None = None) -> None:
        (src, sport), (dst, dport) = self.ends[up], self.ends[not up]
        seq = self.next[up]
        if ack is None:
            ack = self.next[not up]
        self.writer.put((time.time(), src, dst, sport, dport, seq, ack, flags, data))
