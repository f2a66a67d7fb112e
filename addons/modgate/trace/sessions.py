"""Which session a request belongs to: one session is one `go` invocation as a person
sees it.

The rule, in order:

1. A labelled session (`modgate trace start NAME` ... `modgate trace stop`) takes every
   request, from any client, that starts while it is open.
2. Otherwise a request joins the latest session of its client and origin (`key`): the
   client's IP address, and who asked there when modgate can tell (Record.origin):
     - "go[1234]": a go command on modgate's machine, known by its process id (peers.py;
       a git it starts counts as the go command's). Its requests are its session,
       however long it pauses: one go invocation, one session; the next go command,
       started a millisecond later, is another; two at once from two shells are two.
     - "tag NAME" (`modgate env --session NAME`): a shell's requests, every command in
       it, for up to TAG_GAP between them.
   With no origin (a client on another machine), the request joins when it starts at
   most `gap` seconds (default 10 s) after that session's last request ended, or while
   one is still running: `go` keeps asking while it works.
3. Otherwise it begins a new session.

Label or tag commands from other machines to tell apart two that run at once there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_GAP = 10.0
PROCESS_GAP = 3600.0  # a process id is one go command; reused by another much later
TAG_GAP = 12 * 3600.0


def session_key(client: str, origin: str) -> str:
    """What sessions are kept apart by: the client's address and, when known, its origin."""
    return f"{client} {origin}" if origin else client


def _gap(key: str, default: float) -> float:
    origin = key.partition(" ")[2]
    if origin.startswith("tag "):
        return TAG_GAP
    return PROCESS_GAP if origin.endswith("]") else default


@dataclass(frozen=True)
class Label:
    """An explicitly labelled session, open from `started` until `stopped` (None: open)."""

    session: int
    name: str
    started: float
    stopped: float | None = None

    def covers(self, moment: float) -> bool:
        return self.started <= moment and (self.stopped is None or moment < self.stopped)


@dataclass(frozen=True)
class Join:
    session: int
    labelled: bool = False


@dataclass(frozen=True)
class Begin:
    client: str


@dataclass
class _Open:
    session: int
    last_end: float


class Sessionizer:
    """Applies the rule to records as they finish (so in order of their ends)."""

    def __init__(self, gap: float = DEFAULT_GAP) -> None:
        self.gap = gap
        self._open: dict[str, _Open] = {}

    def place(self, client: str, start: float, labels: Sequence[Label] = ()) -> Join | Begin:
        for label in sorted(labels, key=lambda lb: lb.started, reverse=True):
            if label.covers(start):
                return Join(label.session, labelled=True)
        current = self._open.get(client)
        if current is not None and start <= current.last_end + _gap(client, self.gap):
            return Join(current.session)
        return Begin(client)

    def resume(self, client: str, session: int, last_end: float) -> None:
        """Carry on from a session recorded before (modgate restarted within the gap)."""
        self._open[client] = _Open(session, last_end)

    def labelled(self, client: str) -> None:
        """Note that `client`'s latest request went into a labelled session: after the
        label stops, its next request begins a fresh session."""
        self._open.pop(client, None)

    def joined(self, client: str, decision: Join | Begin, session: int, end: float) -> None:
        """Note that a record of `client` ending at `end` went into `session`."""
        if isinstance(decision, Join) and decision.labelled:
            self.labelled(client)
            return
        current = self._open.get(client)
        if current is not None and current.session == session:
            current.last_end = max(current.last_end, end)
        else:
            self._open[client] = _Open(session, end)
