"""Cached small hits without the pipeline: a memo of the answers the whole pipeline gave,
replayed while nothing they depend on has changed. No mitmproxy here: the addon
(addons/fasthit.py) fills it from finished flows, and both front ends ask it first, the
GOPROXY endpoint before it builds an `HTTPFlow`, the HTTPS proxy in `requestheaders`.

What it holds is only ever what the pipeline itself answered, for that exact request:

- key: the front end, scheme, host, port and path *as the client sent them* (query,
  `%2F`, `..` and `!` escapes included: a spelling the pipeline never answered is never
  answered here), the `Accept-Encoding` value (gzip or not, cache.py) and the team (what
  the rules decide by);
- only a fresh hit (`X-Modgate-Cache: hit`) with status 200 of an immutable answer that
  is not a zip ("GOPROXY protocol": a canonical version's `.info` and `.mod` never change;
  "Checksum database": lookups and tiles are append-only), stored under its artifact key,
  held in the store's memory (its SHA-256 checked when it was read from disk), allowed
  by the rules (not an audit-mode "would refuse": that one is logged every time).

An answer is replayed only while (`get`):

- the generation is the same objects: the runtime (every rules reload makes a new one:
  rules, routes, proxies, store, gateway) and the teams in force (a teams file reloaded:
  a revoked token); a reload empties nothing, it just makes every answer miss;
- the store still holds the very entry it was served from (`held`): a `put`, `delete`
  (`modgate cache` admin, a body found damaged: `Gateway.forget`), or `remove` in another
  process (the eviction stamp) drops it, and with it the answer.

Rules are still asked on every request, in effect: a decision depends only on the rules
(the generation), the path and the team (the key). Authentication is the caller's, on
every request, before `get`. What the pipeline does besides answering is the caller's
too: the trace record (`record`: the one the pipeline wrote, with this request's time,
client and identity), metrics and audit (the Tracer's observers), read-ahead.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from modgate.store import Entry
from modgate.trace.record import Record

# Answers held at most, and their bodies' bytes in all: a build's module graph is a few
# thousand .info/.mod files of a few KiB (the 150-module benchmark: ~600 answers). Each
# also holds its record and metadata (~2 KiB), and shares its entry with the store's
# memory (store.HELD_TOTAL), so the bound stays a small part of the process.
MAX_ANSWERS = 8192
MAX_BYTES = 16 << 20

Key = tuple[str, str, str, int, str, str, str]
"""(front, scheme, host, port, path as sent, Accept-Encoding, team)."""


@dataclass(eq=False)
class Answer:
    """One answer the pipeline gave, ready to send again."""

    status: int
    reason: bytes
    fields: tuple[tuple[bytes, bytes], ...]  # the head's fields, Content-Length last
    body: bytes
    entry: Entry  # the store's entry it was served from (held in memory)
    generation: tuple[object, ...]  # (runtime, teams): identities, see the docstring
    record: Record  # the trace record the pipeline wrote for it
    meta: dict[str, Any]  # what the stages left in flow.metadata (observers, read-ahead)
    observed: bytes | None  # the body the observers were given (record_of)
    heads: dict[bool, bytes] = field(default_factory=dict)  # the endpoint's, by keep-alive


class FastHits:
    """A bounded least-recently-used memo of answers (see the module docstring)."""

    def __init__(self, max_answers: int = MAX_ANSWERS, max_bytes: int = MAX_BYTES) -> None:
        self.max_answers, self.max_bytes = max_answers, max_bytes
        self._answers: OrderedDict[Key, Answer] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # cleared from other threads (a reload, admin)
        self.hits = self.misses = 0

    def get(
        self, key: Key, generation: tuple[object, ...], held: Callable[[str], Entry | None]
    ) -> Answer | None:
        """The answer for `key`, if it is still the one the pipeline would give."""
        answer = self._answers.get(key)
        if answer is None:
            self.misses += 1
            return None
        if not _same(answer.generation, generation) or held(answer.entry.key) is not answer.entry:
            with self._lock:
                if self._answers.get(key) is answer:
                    self._drop(key)
            self.misses += 1
            return None
        self._answers.move_to_end(key)
        self.hits += 1
        return answer

    def put(self, key: Key, answer: Answer) -> None:
        size = len(answer.body)
        if size > self.max_bytes:
            return
        with self._lock:
            if key in self._answers:
                self._drop(key)
            self._answers[key] = answer
            self._bytes += size
            while len(self._answers) > self.max_answers or self._bytes > self.max_bytes:
                self._drop(next(iter(self._answers)))

    def clear(self) -> None:
        with self._lock:
            self._answers.clear()
            self._bytes = 0

    def _drop(self, key: Key) -> None:
        answer = self._answers.pop(key, None)
        if answer is not None:
            self._bytes -= len(answer.body)

    def __len__(self) -> int:
        return len(self._answers)


def _same(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def replayed(
    answer: Answer,
    *,
    start: float,
    end: float,
    client: str,
    client_port: int,
    bytes_in: int,
    origin: str,
    identity: str,
) -> Record:
    """The trace record of `answer` sent again: the pipeline's, with this request's own
    time, client, size and identity (the team is in the key)."""
    r = answer.record
    return Record(
        start, end, end - start, client, client_port, r.method, r.scheme, r.host, r.port,
        r.path, r.kind, r.module, r.version, r.status, bytes_in, r.bytes_out, r.cache,
        r.upstream, r.attempts, r.hash_verdict, r.hash_source, r.h1, r.rule_verdict, r.rule,
        r.rule_reason, r.error, 0, 0, origin, identity, r.team,
    )  # fmt: skip


def request_size(method: int, path: int, headers: list[tuple[bytes, bytes]], body: int) -> int:
    """The trace's `bytes_in` of a request (as trace.py's `_request_size` counts it), from
    the lengths of its method, path and body and its header fields."""
    return method + path + 12 + sum(len(k) + len(v) + 4 for k, v in headers) + 2 + body
