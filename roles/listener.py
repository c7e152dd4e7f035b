"""A server's listening sockets, accepted by hand so that a burst never outruns the cap.

``loop.create_server`` accepts every connection the kernel has queued (asyncio up to the
backlog per wake-up, uvloop until ``EAGAIN``) and hands each to the role a loop iteration
or two later. Between the two the sockets are open and nobody has counted them: a flood of
60 connects against ``--max-clients 4`` once held 28 in the server, past the bound of cap
plus the busy refusals draining (issue 24), and a bigger one runs the process out of file
descriptors, where asyncio stops accepting for a second.

A :class:`Listener` asks its owner before each connection is handed on (:attr:`room`, the
sockets it may still hold, less those the listener has accepted and not yet handed over).
With room for it, the connection goes to the role, which serves it or refuses it as busy.
Without, it is reset the instant it is accepted and never reaches the loop: the server's
last descriptor of the bound is kept for that, so a flood never holds more than the bound,
and a client past it learns at once (a reset) rather than waiting in the kernel's queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct
from collections.abc import Callable

__all__ = ["Listener", "bind_listeners"]

# Connections taken per wake-up of a listening socket at most: other peers' reads run
# between two batches, as with asyncio's own accept loop.
ACCEPT_BATCH = 128
# Out of descriptors or buffers: stop accepting this long (asyncio's ACCEPT_RETRY_DELAY).
RETRY_AFTER = 1.0
_OUT_OF = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_GONE = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM}  # gone before we took it: next
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close sends a reset, keeps nothing

log = logging.getLogger("ayudantia.listener")


async def bind_listeners(host: str, port: int, backlog: int) -> list[socket.socket]:
    """Listening sockets for every address ``host`` names (as ``create_server`` would bind).

    With port 0 the first address picks the port and the others take the same one, so a
    name with two addresses (``localhost``: 127.0.0.1 and ::1) is one port, not two.
    An address that cannot be bound raises the ``OSError`` with its errno, as asyncio does.
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    seen: set[tuple[int, tuple]] = set()
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _name, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            if socks and port == 0:
                address = (address[0], socks[0].getsockname()[1], *address[2:])
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise OSError(
                    exc.errno,
                    f"error while attempting to bind on address {address!r}: "
                    f"{(exc.strerror or str(exc)).lower()}",
                ) from None
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    if not socks:
        raise OSError(errno.EADDRNOTAVAIL, f"no address to listen on for {host!r}")
    return socks


class Listener:
    """Accept on ``socks``; hand each connection to ``factory``'s protocol (through
    ``loop.connect_accepted_socket``) while ``room()`` leaves a socket for it, else reset it.

    ``room`` is the owner's count of sockets it may still hold; the listener subtracts
    those it has accepted and not yet handed over (:attr:`pending`), and keeps the last one
    for the connection it accepts only to reset.
    """

    def __init__(
        self,
        socks: list[socket.socket],
        factory: Callable[[], asyncio.BaseProtocol],
        room: Callable[[], int],
    ) -> None:
        self.socks = socks
        self.factory = factory
        self.room = room
        self.pending = 0  # accepted, not yet counted by the owner (no connection_made yet)
        self.reset = 0  # accepted with no room: reset at once
        self.paused = True
        self.closed = False
        self._tasks: dict[asyncio.Task, _Arriving] = {}  # hand-overs under way
        self._retry: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._families = {sock.fileno(): int(sock.family) for sock in socks}

    def start(self) -> None:
        """Begin accepting."""
        if self.paused and not self.closed and self._retry is None:
            self.paused = False
            for sock in self.socks:
                self._loop.add_reader(sock.fileno(), self._accept, sock)

    def _pause(self) -> None:
        if not self.paused:
            self.paused = True
            for sock in self.socks:
                self._loop.remove_reader(sock.fileno())

    def _accept(self, sock: socket.socket) -> None:
        family = self._families[sock.fileno()]
        for _ in range(ACCEPT_BATCH):
            try:  # the raw accept: socket.accept() converts family and type to enums each time
                fd, _address = sock._accept()  # type: ignore[attr-defined]
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _GONE:
                    continue
                if exc.errno in _OUT_OF:
                    self._back_off(exc)
                    return
                raise
            conn = socket.socket(family, socket.SOCK_STREAM, 0, fd)
            if self.room() - self.pending > 1:
                conn.setblocking(False)
                self._connect(conn)
            else:  # this one is the bound's last socket: it never stays
                self.reset += 1
                with contextlib.suppress(OSError):
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
                conn.close()

    def _connect(self, conn: socket.socket) -> None:
        self.pending += 1
        arriving = _Arriving(self, conn)
        task = self._loop.create_task(self._hand_over(conn, arriving))
        self._tasks[task] = arriving
        task.add_done_callback(self._handed_over)

    def _handed_over(self, task: asyncio.Task) -> None:
        self._tasks.pop(task, None)

    async def _hand_over(self, conn: socket.socket, arriving: _Arriving) -> None:
        arriving.started = True
        try:
            await self._loop.connect_accepted_socket(arriving.stand_in, conn)
        except BaseException as exc:
            with contextlib.suppress(OSError):  # the loop may have closed it with its transport
                conn.close()
            if not isinstance(exc, OSError):  # an OSError: reset before it could be served
                if not isinstance(exc, Exception):
                    raise
                log.error("a connection could not be set up: %r", exc, exc_info=exc)
        finally:
            arriving.settle()

    def _back_off(self, exc: OSError) -> None:
        log.error("cannot accept more connections (%s): retrying in %g s", exc, RETRY_AFTER)
        self._pause()
        self._retry = self._loop.call_later(RETRY_AFTER, self._retried)

    def _retried(self) -> None:
        self._retry = None
        self.start()

    def close(self) -> None:
        """Stop accepting and close the listening sockets; hand-overs under way are
        cancelled (their sockets closed), the connections already made are the owner's."""
        self._pause()
        self.closed = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        for sock in self.socks:
            sock.close()
        for task, arriving in list(self._tasks.items()):
            task.cancel()
            if not arriving.started:  # cancelled before its first step, it never runs:
                arriving.abandon()  # nobody else has the socket (it was left to the GC)

    @property
    def sockname(self) -> tuple[str, int]:
        """Where the first listening socket is bound: (host, port)."""
        with contextlib.suppress(OSError):
            return self.socks[0].getsockname()[:2]
        return "", 0


class _Arriving(asyncio.Protocol):
    """The role's protocol's stand-in until the loop calls ``connection_made``.

    That call is where the owner counts the connection (a client, a busy refusal, a
    handshake), so it is where the listener stops counting it (:attr:`Listener.pending`).
    The hand-over's own end comes later (an iteration later on uvloop), and an accept in
    between counted the connection twice: a burst right behind another was reset with room
    to spare. The stand-in hands the transport to the role's protocol at once.
    """

    __slots__ = ("conn", "counted", "listener", "protocol", "started")

    def __init__(self, listener: Listener, conn: socket.socket) -> None:
        self.listener = listener
        self.conn = conn
        self.protocol: asyncio.BaseProtocol | None = None
        self.counted = True  # in the listener's pending
        self.started = False  # its hand-over has begun: the socket is the loop's to close

    def stand_in(self) -> _Arriving:
        """The protocol factory ``connect_accepted_socket`` is given: the role's protocol
        is made here, inside the hand-over, so that a factory's failure is logged there."""
        self.protocol = self.listener.factory()
        return self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert self.protocol is not None
        self.settle()
        transport.set_protocol(self.protocol)
        self.protocol.connection_made(transport)

    def abandon(self) -> None:
        """A hand-over that never began (the listener closed first): close its socket."""
        with contextlib.suppress(OSError):
            self.conn.close()
        self.settle()

    def settle(self) -> None:
        """Out of the listener's count (made, or never to be): exactly once."""
        if self.counted:
            self.counted = False
            self.listener.pending -= 1
