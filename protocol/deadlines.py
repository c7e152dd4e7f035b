"""One connection's deadlines, on one loop timer re-armed lazily.

Timeouts mirror the blocking front-end: ``idle_timeout`` between messages, ``read_timeout``
between reads inside a message, ``message_timeout`` for a whole message, and
``send_timeout`` for a peer that does not drain what we send. Only the nearest deadline
is on the loop, and it moves only when a nearer one appears: 10,000 idle peers cost
10,000 timer entries and nothing per byte. A paused peer is not timed for silence (the
pause is ours), nor one whose work we still owe.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

    from protocol.flow import FlowControl
    from protocol.options import Limits


class Deadlines:
    """When one peer has taken too long, and the timer that notices."""

    __slots__ = (
        "_expire",
        "_flow",
        "_limits",
        "_loop",
        "_timer",
        "last_rx",
        "msg_start",
        "write_paused_at",
    )

    def __init__(self, limits: Limits, flow: FlowControl, expire: Callable[[str], None]) -> None:
        self._limits = limits
        self._flow = flow
        self._expire = expire  # called with the reason once a deadline passed
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.last_rx = 0.0
        self.msg_start: float | None = None  # when the message being read began
        self.write_paused_at: float | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> float:
        """Begin timing on ``loop`` (the peer just connected); returns the loop's time."""
        self._loop = loop
        self.last_rx = now = loop.time()
        self.arm(now)
        return now

    def arm(self, now: float) -> None:
        """Make sure the timer fires no later than the nearest deadline from ``now``."""
        assert self._loop is not None
        when = self.next_deadline(now)
        timer = self._timer
        if timer is not None:
            if timer.when() <= when:
                return
            timer.cancel()
        self._timer = self._loop.call_at(when, self._on_timer)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def message_started(self, in_message: bool) -> None:
        """The decoder is (or is not) inside a message: the per-read deadlines apply."""
        if in_message:
            if self.msg_start is None:
                self.msg_start = self.last_rx
                self.arm(self.last_rx)
        else:
            self.msg_start = None

    def next_deadline(self, now: float) -> float:
        lim = self._limits
        candidates = []
        if self.write_paused_at is not None and lim.send_timeout is not None:
            candidates.append(self.write_paused_at + lim.send_timeout)
        if not self._flow.read_paused:
            if self.msg_start is not None:
                if lim.read_timeout is not None:
                    candidates.append(self.last_rx + lim.read_timeout)
                if lim.message_timeout is not None:
                    candidates.append(self.msg_start + lim.message_timeout)
            elif lim.idle_timeout is not None and not self._flow.held:
                candidates.append(self.last_rx + lim.idle_timeout)
        # Nothing applies now (paused, or waiting on our own work): look again later.
        return min(candidates) if candidates else now + 1.0

    def expired(self, now: float) -> str | None:
        """Why this peer is out of time at ``now``, or None."""
        lim = self._limits
        if (
            self.write_paused_at is not None
            and lim.send_timeout is not None
            and now - self.write_paused_at >= lim.send_timeout
        ):
            return f"peer did not read for send_timeout={lim.send_timeout:g}s"
        if self._flow.read_paused:
            return None
        if self.msg_start is not None:
            if lim.read_timeout is not None and now - self.last_rx >= lim.read_timeout:
                return f"receive timed out in the middle of a message ({lim.read_timeout:g}s)"
            if lim.message_timeout is not None and now - self.msg_start >= lim.message_timeout:
                return f"message not complete within message_timeout={lim.message_timeout:g}s"
        elif (
            lim.idle_timeout is not None
            and not self._flow.held
            and now - self.last_rx >= lim.idle_timeout
        ):
            return f"no message for idle_timeout={lim.idle_timeout:g}s"
        return None

    def _on_timer(self) -> None:
        self._timer = None
        assert self._loop is not None
        now = self._loop.time()
        reason = self.expired(now)
        if reason is not None:
            self._expire(reason)
            return
        self.arm(now)
