"""Which session a request belongs to: one session is one `go` invocation as a person
sees it.

The rule, in order:

1. A labelled session (`modgate trace start NAME` ... `modgate trace stop`) takes every
   request, from any client, that starts while it is open.
2. Otherwise a request joins the latest session of its client's IP address when it
   starts at most `gap` seconds (default 10 s) after that session's last request ended,
   or while one of its requests is still running: `go` keeps asking while it works.
3. Otherwise it begins a new session.

So a `go mod download` is one session, and a second `go` command started more than
`gap` seconds after the first has finished is another. Two `go` commands that run at
once on one machine share a session; label them to tell them apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_GAP = 10.0


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
        if current is not None and start <= current.last_end + self.gap:
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
