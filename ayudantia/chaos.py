"""``ayudantia run --chaos N``: SIGKILL a random role mid-class, restart it, keep the count exact.

While the students ask, a thread kills the Docencio, the Tareo or the Profesor (chosen at
random) with SIGKILL, every N seconds on average, and starts it again with the same
arguments on the same port (the same gradebook, the same outbox). The students ride
through: they reconnect, ask again what went unanswered (same ids) and take error answers
(a Tareo or a Profesor that was down) as errors.

When: the first fault comes once the class has between 10 % and 40 % of its answers (or
after N seconds, whichever is first), so even a class shorter than N seconds sees one
mid-class; after that, the gaps are exponential with mean N seconds (at least
``MIN_GAP``), each counted from the moment the last killed role was ready again. No fault
is injected after the students are done, nor in the last stretch of their deadline (see
``Chaos._calm``: the re-asks a fault causes need time to be answered), and every killed
role is up again before the run reads the count.

The verdict under chaos: the Profesor's count equals the answers the students received,
no answer was misrouted or duplicated, and every question got an answer or an error
answer. Error answers are allowed (a role was down), silence is not.
"""

from __future__ import annotations

import math
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ayudantia import rules
from ayudantia.counting import count_matches

if TYPE_CHECKING:
    from ayudantia.config import Option

ROLES = ("docencio", "tareo", "profesor")
MIN_GAP = 0.2  # seconds between a role being ready again and the next fault


def _interval(raw: Any) -> float:
    value = rules._number(raw)
    if value != 0 and not 0.1 <= value <= 3600:
        raise rules.Invalid("")
    return value


INTERVAL = rules.Rule("seconds from 0.1 to 3600 between faults on average (0 = none)", _interval)


def option() -> Option:
    """``--chaos S`` for ``ayudantia run``."""
    from ayudantia.config import Option

    return Option(
        "chaos",
        0,
        "SIGKILL a random role (Docencio, Tareo, Profesor) every S seconds on average and "
        "restart it on its port; the first fault comes early in the class (0 = none)",
        INTERVAL,
        "S",
    )


class Restartable(Protocol):
    name: str
    proc: Any

    def respawn(self, address: str) -> Restartable: ...

    def wait_ready(self, timeout: float) -> str: ...


@dataclass
class Fault:
    role: str
    at: float  # seconds after the class started
    pid: int  # the process killed
    down_s: float  # from the kill until its replacement was ready


class Chaos:
    """The fault injector: :meth:`start` once the class is asking, :meth:`finish` after."""

    def __init__(
        self,
        mean: float,
        roles: list[Restartable],
        addresses: dict[str, str],
        progress: Callable[[], float],
        *,
        seed: int | None = None,
        startup_timeout: float = 30.0,
        calm_after: float = math.inf,
    ) -> None:
        if mean <= 0:
            raise ValueError(f"the chaos interval must be positive, not {mean}")
        self.mean = mean
        self.roles = roles  # replaced in place: whoever stops the roles stops the live ones
        self.addresses = addresses
        self.progress = progress  # the class's share of answers so far, 0..1
        self.rng = random.Random(seed)
        self.startup_timeout = startup_timeout
        self.calm_after = calm_after  # seconds after start() with no new fault (see _calm)
        self.faults: list[Fault] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._t0 = 0.0
        self._thread = threading.Thread(target=self._run, name="chaos", daemon=True)

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._thread.start()

    def finish(self) -> list[Fault]:
        """Stop injecting (a restart under way completes first); the faults injected."""
        self._stop.set()
        # --startup-timeout 0 means no limit (inf): join(inf) raised OverflowError.
        limit = self.startup_timeout + 10
        self._thread.join(None if math.isinf(limit) else limit)
        if self.error is not None:
            raise self.error
        return self.faults

    def _run(self) -> None:
        try:
            if self._wait_first() and not self._calm():
                self._inject()
                while not self._stop.wait(max(MIN_GAP, self.rng.expovariate(1 / self.mean))):
                    if self._calm():
                        return
                    self._inject()
        except BaseException as exc:  # the run reports it: a role that did not come back
            self.error = exc

    def _calm(self) -> bool:
        """Past ``calm_after``: the class needs its remaining time to recover.

        Why: a Docencio killed with answers committed (or sent) but not seen by their
        students counts them; the count is exact only once those students' re-asks are
        answered. A fault a few seconds before the students' deadline (a Profesor that takes
        6 s to come back) left re-asks unanswered at the deadline: counted 5785 for 5774.
        """
        return time.monotonic() - self._t0 > self.calm_after

    def _wait_first(self) -> bool:
        """Until the class is 10-40 % done or ``mean`` seconds passed; False if stopped first."""
        share = self.rng.uniform(0.1, 0.4)
        deadline = time.monotonic() + self.mean
        while not self._stop.wait(0.02):
            if self.progress() >= share or time.monotonic() >= deadline:
                return True
        return False

    def _inject(self) -> None:
        name = self.rng.choice(ROLES)
        index = next(i for i, r in enumerate(self.roles) if r.name.split("-")[0] == name)
        victim = self.roles[index]
        killed_at = time.monotonic()
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        replacement = victim.respawn(self.addresses[name])
        self.roles[index] = replacement
        replacement.wait_ready(self.startup_timeout)
        self.faults.append(
            Fault(name, killed_at - self._t0, victim.proc.pid, time.monotonic() - killed_at)
        )


def calm_after(settings: dict[str, Any]) -> float:
    """Seconds of --chaos before the faults stop (see :meth:`Chaos._calm`).

    Faults stop while the students have 20 s of their deadline left on average: their
    average asking time, plus the Docencio's timeout. An endless class (``--questions 0``)
    has no deadline: its faults used to stop for good after the first ``--timeout`` s.
    """
    if not settings["questions"]:
        return math.inf
    return settings["questions"] * settings["interval"] * 3.5 + settings["timeout"]


def verdict(summary: dict[str, Any]) -> bool:
    """Under chaos: count exact, nothing misrouted or doubled, every question answered or
    refused with an error (``unanswered`` in the summary counts error answers too).

    An endless class stopped by Ctrl+C (``--questions 0``) may end with questions in flight
    (``in_flight``), judged as :func:`ayudantia.counting.count_matches` judges them:
    they used to fail every such run.
    """
    in_flight = summary.get("in_flight", 0)
    silent = summary["unanswered"] - summary["errors"] - in_flight
    return (
        summary["reports"] == summary["students"]
        and silent == 0
        and summary["misrouted"] == 0
        and summary["duplicates"] == 0
        and count_matches(summary["profesor_count"], summary["answered"], in_flight)
    )


def describe(faults: list[Fault]) -> str:
    """The summary's lines about the faults injected."""
    if not faults:
        return "chaos         0 faults injected (the class ended before the first one)"
    by_role = ", ".join(
        f"{role} {sum(f.role == role for f in faults)}"
        for role in ROLES
        if any(f.role == role for f in faults)
    )
    lines = [f"chaos         {len(faults)} faults injected (SIGKILL + restart): {by_role}"]
    lines += [
        f"                {f.at:6.2f} s  {f.role:<9} pid {f.pid} killed, back in {f.down_s:.2f} s"
        for f in faults
    ]
    return "\n".join(lines)


def as_report(faults: list[Fault]) -> list[dict[str, Any]]:
    return [asdict(f) for f in faults]
