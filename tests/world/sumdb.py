"""A checksum database for tests: a real HTTP server on 127.0.0.1 that the go command trusts.

`TestSumdb` serves ``/latest``, ``/lookup/<module>@<version>`` (escaped as the go
command escapes them) and ``/tile/H/L/NNN[.p/W]`` (hash tiles and ``data`` tiles) as
golang.org/x/mod/sumdb/server.go and test.go do, from go.sum records given with
`add`, and signs its tree heads with a key made for it. Give the go command
``GOSUMDB=<db.gosumdb>``. The proxy's ``/sumdb/<name>/supported`` is not the
database's and is not served here; `world.upstream.Upstream(..., sumdb=db)` serves the
database through a proxy's ``/sumdb/<name>/`` paths (then this server need not run).

It can misbehave on demand: set `fault` to a `Fault`, or call `fork()` to rewrite
its history so that every tree head signed from then on contradicts the earlier ones.

It grows as the real one does: `grow(n)` logs n records of other modules, and with
`grow_per_lookup` set, every lookup first logs that many, so each answer carries a
tree head of its own size (as the real database's frontends answer with trees of
different sizes). With `lag` set, a lookup is answered with a tree head up to that
many records older than the newest (but holding the record), picked at random: heads
then arrive out of order, as from frontends that have not all caught up.

    with TestSumdb() as db:
        db.add("example.com/m", "v1.0.0", zip_h1, mod_h1)
        env["GOSUMDB"] = db.gosumdb

It needs nothing from the test world but modgate.sumdb's key, note and tile code.
"""

from __future__ import annotations

import base64
import collections
import enum
import hashlib
import random
import re
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from modgate.sumdb import note, tlog

# server.go's modVerRE: what a /lookup/ path must look like.
_MOD_VER = re.compile(r"[^@]+@v[0-9]+\.[0-9]+\.[0-9]+(-[^@]*)?(\+incompatible)?")


class Fault(enum.Enum):
    """Ways the database can misbehave."""

    NONE = "behave"
    WRONG_RECORD = "answer a lookup with another module's record (lacking the version)"
    TAMPERED_RECORD = "answer a lookup with record text that is not in the log"
    BAD_SIGNATURE = "sign tree heads with a signature that does not verify"
    UNKNOWN_KEY = "sign tree heads with a key the client does not know"
    BAD_TILES = "serve hash tiles that do not match the signed tree"


class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def unescape(escaped: str) -> str:
    """module.UnescapePath/UnescapeVersion: "!x" is "X"; an unescaped capital is an error."""
    if re.search(r"[A-Z]|![^a-z]|!$", escaped):
        raise _HTTPError(400, f"invalid escaped path {escaped!r}")
    return re.sub(r"!([a-z])", lambda m: m.group(1).upper(), escaped)


class TestSumdb:
    """A checksum database server on 127.0.0.1, in a background thread."""

    __test__ = False  # not a pytest test class

    def __init__(self, name: str = "sumdb.modgate.test", signer_key: str | None = None) -> None:
        """A database called `name` with a fresh key, or with `signer_key` (to share a key)."""
        self.signer_key = signer_key or note.generate_key(name)[0]
        self.signer = note.parse_signer_key(self.signer_key)
        self.verifier_key = self.signer.verifier.key_text
        # Same name, another key: its signatures are by a key the client does not know.
        self.stranger = note.parse_signer_key(note.generate_key(self.signer.name)[0])
        self.fault = Fault.NONE
        self.grow_per_lookup = 0
        self.lag = 0
        self._random = random.Random(0)
        self.counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._records: list[bytes] = []
        self._hashes: list[bytes] = []
        self._ids: dict[str, int] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        """The database's name (the first field of its keys), as GOSUMDB and paths name it."""
        return str(self.signer.name)

    # The log.

    def add_world(self, world: Iterable[Any]) -> TestSumdb:
        """Log every module version of a test world (world.modules.World); self."""
        for mv in world:
            self.add(mv.path, mv.version, mv.zip_hash, mv.gomod_hash)
        return self

    def add(self, module: str, version: str, zip_h1: str, mod_h1: str) -> int:
        """Log module@version's go.sum lines as a new record; return its id."""
        text = f"{module} {version} {zip_h1}\n{module} {version}/go.mod {mod_h1}\n"
        with self._lock:
            record_id = len(self._records)
            self._append(text.encode())
            self._ids[f"{module}@{version}"] = record_id
        return record_id

    def _append(self, text: bytes) -> None:
        reader = tlog.hashes_reader(self._hashes)
        self._hashes += tlog.stored_hashes(len(self._records), text, reader)
        self._records.append(text)

    def grow(self, n: int) -> None:
        """Log n records of filler modules (nobody downloads them): the tree moves on."""
        with self._lock:
            self._grow(n)

    def _grow(self, n: int) -> None:
        for _ in range(n):
            i = len(self._records)
            h1 = "h1:" + base64.b64encode(hashlib.sha256(b"filler %d" % i).digest()).decode()
            module = f"filler.modgate.test/m{i}"
            self._append(f"{module} v0.0.1 {h1}\n{module} v0.0.1/go.mod {h1}\n".encode())

    def fork(self, record_id: int = 0) -> None:
        """Rewrite a record: tree heads signed from now on contradict every earlier one holding it.

        A client that cached the tiles covering the record (the go command does, on disk)
        sees the tiles as inconsistent rather than the fork: rewrite a record in the
        newest, partial tile to show the go command the fork itself.
        """
        with self._lock:
            records = self._records
            self._records, self._hashes = [], []
            zero = base64.b64encode(bytes(32)).decode()
            records[record_id] += f"fork.modgate.test v0.0.0 h1:{zero}\n".encode()
            for text in records:
                self._append(text)

    @property
    def size(self) -> int:
        """The number of records logged."""
        with self._lock:
            return len(self._records)

    def tree(self, size: int | None = None) -> tlog.Tree:
        """The current tree head, or the head it had at `size` records."""
        with self._lock:
            n = len(self._records) if size is None else size
            return tlog.Tree(n, tlog.tree_hash(n, tlog.hashes_reader(self._hashes)))

    def signed_tree(self, size: int | None = None) -> bytes:
        """The current tree head (or the one at `size` records) as a signed note, as
        /latest serves it, faults included."""
        text = tlog.format_tree(self.tree(size)).decode()
        match self.fault:
            case Fault.UNKNOWN_KEY:
                return note.sign(text, self.stranger)
            case Fault.BAD_SIGNATURE:
                return _break_signature(note.sign(text, self.signer))
            case _:
                return note.sign(text, self.signer)

    # HTTP.

    @property
    def url(self) -> str:
        """The database's base URL."""
        assert self._server is not None, "TestSumdb is not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def gosumdb(self) -> str:
        """The GOSUMDB value that sends the go command here: "<verifier key> <url>"."""
        return f"{self.verifier_key} {self.url}"

    def start(self) -> TestSumdb:
        """Start serving on a free port of 127.0.0.1."""
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the port, and answer nothing more on connections kept open."""
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> TestSumdb:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def get(self, path: str) -> bytes:
        """GET <url>/<path> and return the body; raise urllib's HTTPError unless 200."""
        with urllib.request.urlopen(f"{self.url}/{path.lstrip('/')}", timeout=10) as response:
            body: bytes = response.read()
            return body

    def respond(self, path: str) -> tuple[str, bytes]:
        """The content type and body for a request path; raises _HTTPError."""
        with self._lock:
            self.counts[path] += 1
        if path == "/latest":
            return "text/plain; charset=UTF-8", self.signed_tree()
        if path.startswith("/lookup/"):
            return "text/plain; charset=UTF-8", self._lookup(path.removeprefix("/lookup/"))
        if path.startswith("/tile/"):
            return self._tile(path.removeprefix("/"))
        raise _HTTPError(404, "404 page not found")

    def _lookup(self, mod: str) -> bytes:
        if not _MOD_VER.fullmatch(mod):
            raise _HTTPError(400, "invalid module@version syntax")
        path, version = (unescape(part) for part in mod.split("@"))
        with self._lock:
            self._grow(self.grow_per_lookup)
            record_id = self._ids.get(f"{path}@{version}")
            if record_id is None:
                raise _HTTPError(404, f"not found: {path}@{version}")
            if self.fault is Fault.WRONG_RECORD:
                record_id = (record_id + 1) % len(self._records)
            text = self._records[record_id]
            size = len(self._records)
            if self.lag:
                size = self._random.randint(max(record_id + 1, size - self.lag), size)
        if self.fault is Fault.TAMPERED_RECORD:
            text = text.replace(b" h1:", b" h1:X", 1)
        return tlog.format_record(record_id, text) + self.signed_tree(size)

    def _tile(self, tile_path: str) -> tuple[str, bytes]:
        try:
            tile = tlog.parse_tile_path(tile_path)
        except tlog.FormatError:
            raise _HTTPError(400, "invalid tile syntax") from None
        with self._lock:
            if tile.level == -1:
                return "text/plain; charset=UTF-8", self._data_tile(tile)
            try:
                data = tlog.read_tile_data(tile, tlog.hashes_reader(self._hashes))
            except IndexError:
                raise _HTTPError(404, f"not found: {tile_path}") from None
        if self.fault is Fault.BAD_TILES:
            data = bytes([data[0] ^ 1]) + data[1:]
        return "application/octet-stream", data

    def _data_tile(self, tile: tlog.Tile) -> bytes:
        """Records N*2**H.. as server.go serves them: formatted, each without its id line."""
        start = tile.n << tile.height
        if start + tile.width > len(self._records):
            raise _HTTPError(404, f"not found: {tile.path()}")
        records = self._records[start : start + tile.width]
        return b"".join(text + b"\n" for text in records)


def _break_signature(msg: bytes) -> bytes:
    """msg with one bit of its (last) Ed25519 signature flipped."""
    text, _, line = msg.decode().rstrip("\n").rpartition("\n")
    prefix, name, b64 = line.split(" ")
    raw = bytearray(base64.b64decode(b64))
    raw[-1] ^= 1
    return f"{text}\n{prefix} {name} {base64.b64encode(raw).decode()}\n".encode()


def _handler(db: TestSumdb) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # Headers and body go out in separate writes: without TCP_NODELAY, Nagle and
        # delayed ACKs add 40 ms to every answer, which no real database has.
        disable_nagle_algorithm = True

        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
            if db._server is None:
                # Stopped: a connection kept alive from before gets no answer, or a
                # "stopped" database would go on answering whoever connected first.
                self.close_connection = True
                return
            path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
            try:
                content_type, body = db.respond(path)
                status = 200
            except _HTTPError as e:
                content_type, body, status = (
                    "text/plain; charset=utf-8",
                    f"{e}\n".encode(),
                    e.status,
                )
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep test output quiet; `counts` records what was asked

    return Handler
