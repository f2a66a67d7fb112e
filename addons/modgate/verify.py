"""Verify before passing: what an upstream sent is checked before it is stored or served.

    .zip, .mod        h1: computed (zip validated as the go command would) and compared
                      with the expected hash, from the first source that has one:
                        1. pins in rules.yaml, then go.sum files it names
                        2. the checksum database (a verified record, proven in the log)
                        3. private modules only (checksum.private, like GONOSUMDB): the
                           hash first seen, kept in a ledger; a later different one is refused
    sumdb lookup      verified against the log before it is stored (a client asked for it)
    sumdb latest      verified and merged: a tree inconsistent with an older one is a fork
    sumdb tiles       for each head and record verified, the tiles any client may read to
                      check them, in any order, are fetched and stored (sumdb/offline.py)

"Checksum database" and "Module zip files" in the Go modules reference, and
cmd/go/internal/modfetch/fetch.go (checkModSum, useSumDB: golang.org/toolchain is always
checked against the database), are what this follows. A mismatch raises IntegrityError,
whose one-line message the client sees after "server response:".
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import diskcache

from modgate.config import Chain, ChecksumSettings, SumdbConfig
from modgate.dirhash import ZipError, check_zip, hash_gomod, hash_zip
from modgate.errors import ConfigError, ModgateError, UpstreamError
from modgate.gateway import VERIFIED
from modgate.goproxy import Kind, ModRequest, escape, parse_request
from modgate.patterns import match_prefix_patterns
from modgate.store import Body, Entry
from modgate.sumdb import TILE_HEIGHT, InconsistentTreeError, SumdbError, SumdbVerifier
from modgate.sumdb.offline import OfflineTiles, TileRead, lookup_record
from modgate.sumdb.tlog import HASH_SIZE, Tile, TileHashReader, Tree

log = logging.getLogger(__name__)

TOOLCHAIN = "golang.org/toolchain"
# Lookup answers already proven in the log, kept so a miss does not prove the same bytes
# twice (once when the gateway stores the lookup, once when an artifact uses it).
PROVEN_MAX = 4096
# Rounds of tile fetches one verifier call may take (`_with_tiles`): two phases of a
# proof, a partial tile's full one, with room to spare.
PROOF_ROUNDS = 8
# A go.mod up to this size is hashed on the event loop: a worker thread's wake-up on a
# busy cold graph took ~5 ms, hashing one takes microseconds.
INLINE_HASH_MAX = 64 << 10


class _NeedTiles(BaseException):  # noqa: N818 (a signal, not an error)
    """A proof's round stops: these tiles are not fetched yet (Checker._with_tiles). A
    BaseException, so that no `except Exception` on the way (the verifier's fallback
    from a partial tile to its full one) takes it for a failed read."""

    def __init__(self, paths: list[str]) -> None:
        super().__init__(paths)
        self.paths = paths


@dataclass
class _Reading:
    """The tiles of one verifier call: fetched (answer or error) by path, and read."""

    fetched: dict[str, tuple[int, bytes] | Exception] = field(default_factory=dict)
    read: list[str] = field(default_factory=list)


class IntegrityError(ModgateError):
    """An answer failed verification: it is neither stored nor served."""


@dataclass(frozen=True)
class Verdict:
    """How an artifact was checked. `status`: "verified" (matched a pin or the database)
    or "unverified" (a private module with no pin: its first-seen hash was recorded)."""

    h1: str
    status: str
    source: str

    def as_dict(self) -> dict[str, str]:
        return {"verdict": self.status, "source": self.source, "h1": self.h1}


class Source(Protocol):
    """Where the checker reads the database: the gateway, so lookups and tiles are cached
    (and available offline) like every other answer."""

    async def fetch_body(self, chain: Chain, req: ModRequest) -> tuple[int, bytes]: ...

    def forget(self, chain: Chain, req: ModRequest) -> None: ...


class Pins:
    """Expected hashes from rules.yaml `checksum.pins` and the go.sum files it names."""

    def __init__(self, settings: ChecksumSettings, source: str = "rules.yaml") -> None:
        self._pins: dict[str, tuple[str, str]] = {}
        for line in settings.pins:
            self._add(line, f"pin in {source}")
        for path in settings.go_sum:
            self._read(path)

    def _read(self, path: Path) -> None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(
                f"{path}: cannot read go.sum file named in checksum.go_sum: {e}"
            ) from e
        for number, line in enumerate(lines, 1):
            if line.strip():
                self._add(line, f"{path}:{number}")

    def _add(self, line: str, where: str) -> None:
        parts = line.split()
        if len(parts) != 3 or not parts[2].startswith("h1:"):
            raise ConfigError(f"{where}: not a go.sum line: {line!r}")
        key = f"{parts[0]}@{parts[1]}"
        known = self._pins.get(key)
        if known is not None and known[0] != parts[2]:
            raise ConfigError(
                f"{where}: {key} pinned to {parts[2]}, but {known[1]} pins {known[0]}"
            )
        self._pins.setdefault(key, (parts[2], where))

    def get(self, module: str, version: str) -> tuple[str, str] | None:
        """(h1, where it was pinned) for "module@version" or "module@version/go.mod"."""
        return self._pins.get(f"{module}@{version}")

    def __len__(self) -> int:
        return len(self._pins)


class Ledger:
    """Hashes seen per artifact, never evicted: first-seen hashes of private modules."""

    def __init__(self, directory: Path) -> None:
        self._cache = diskcache.Cache(str(directory), eviction_policy="none", size_limit=1 << 40)

    def first_seen(self, key: str, h1: str) -> str:
        """Record `h1` for `key` unless a hash is recorded already; return the recorded one."""
        self._cache.add(key, h1)
        recorded = self._cache.get(key)
        return str(recorded) if recorded is not None else h1

    def close(self) -> None:
        self._cache.close()


class Heads(Protocol):
    """The newest verified tree head of each database, shared by replicas
    (coordination.SharedHeads): a fork one replica would miss alone, having never seen
    the tree another verified, is detected across them."""

    async def get(self, name: str) -> bytes: ...

    async def put(self, name: str, note: bytes, size: int) -> None: ...


class Checker:
    """Validates answers for the gateway before they are stored (see module docstring)."""

    def __init__(
        self,
        settings: ChecksumSettings,
        pins: Pins,
        databases: tuple[SumdbConfig, ...],
        state_dir: Path,
        source: Source,
    ) -> None:
        self.settings = settings
        self.pins = pins
        self.databases = {db.name: db for db in databases}
        self.primary = databases[0] if databases else None
        self.state_dir = state_dir
        self.ledger = Ledger(state_dir / "ledger")
        self.source = source
        self._verifiers: dict[str, SumdbVerifier] = {}
        self._offline: dict[str, OfflineTiles] = {}
        self._prefetches: set[asyncio.Future[tuple[int, bytes]]] = set()  # kept alive
        self._keeping: set[asyncio.Task[None]] = set()  # tiles kept for offline clients
        self._reading: _Reading | None = None  # the tiles of the proof running now
        self._proven: dict[tuple[str, str, str, bytes], list[str]] = {}
        self._merging: set[bytes] = set()  # newer tree heads being merged (`_merge_after`)
        self._forked: dict[str, str] = {}  # database -> the fork a merge found
        self.heads: Heads | None = None

    def close(self) -> None:
        self.ledger.close()

    async def validate(self, req: ModRequest, body: Path) -> Verdict | None:
        """Raise IntegrityError unless `body` (a 200 answer to `req`) may be stored."""
        match req.kind:
            case Kind.ZIP | Kind.MOD:
                return await self._check_artifact(req, body)
            case Kind.SUMDB_LOOKUP if req.sumdb in self.databases:
                await self._lookup_lines(req.sumdb, req.module, req.version, body.read_bytes())
            case Kind.SUMDB_LATEST if req.sumdb in self.databases:
                await self._merge_latest(req.sumdb, body.read_bytes())
            case _:
                pass
        return None

    # --- .zip and .mod -------------------------------------------------------------------

    async def _check_artifact(self, req: ModRequest, body: Path) -> Verdict:
        if req.kind is Kind.MOD and body.stat().st_size <= INLINE_HASH_MAX:
            got, zip_gomod = _hash_artifact(req, body)  # microseconds: no thread to wake
        else:
            got, zip_gomod = await asyncio.to_thread(_hash_artifact, req, body)
        private = self._private(req.module)
        expected = await self._expected(req.module, req.version, req.sum_version, private)
        want = expected.get(req.sum_version)
        if want is None:
            if not private:  # never fall back to trusting a public module's first answer
                raise IntegrityError(
                    f"{req.module}@{req.sum_version}: no expected hash (checksum missing "
                    "from sumdb response); not served"
                )
            return self._first_seen(req, got, zip_gomod)
        h1, source = want
        if got != h1:
            raise IntegrityError(
                f"SECURITY: {req.module}@{req.sum_version}: upstream sent {got}, "
                f"but {source} says {h1}; not served, not cached"
            )
        # No cross-check of the zip's own go.mod against the .mod hash here: the hash
        # just proven covers the zip whole, and go checks each artifact against its own
        # go.sum line only (modfetch checkModSum), so it downloads a module whose zip
        # holds another go.mod (cmd/go's rsc.io/badsum is one). Refusing it would refuse
        # what go and the checksum database accept, and protect nothing.
        return Verdict(got, VERIFIED, source)

    def prefetch(self, req: ModRequest) -> None:
        """Start fetching (and proving) the database record `req` will be checked against
        while its body downloads: `_expected` then joins that fetch (the gateway's single
        flight) or finds it stored, instead of adding a round trip to the database after
        the download. Started by a version's `.info` too, which go asks for before its
        `.mod` and `.zip`: the record is proven by the time they arrive."""
        if req.kind not in (Kind.ZIP, Kind.MOD, Kind.INFO) or self._private(req.module):
            return
        if req.kind is Kind.INFO and not req.immutable:
            return  # a query (`master`, a branch): not a version the database records
        if self.pins.get(req.module, req.sum_version) or self.primary is None:
            return
        lookup = _lookup_request(self.primary, req.module, req.version)
        task = asyncio.ensure_future(self.source.fetch_body(self.primary.chain, lookup))
        self._prefetches.add(task)
        task.add_done_callback(self._prefetched)

    def _prefetched(self, task: asyncio.Future[tuple[int, bytes]]) -> None:
        self._prefetches.discard(task)
        if not task.cancelled():
            task.exception()  # a failure is reported by the check itself, which asks again

    def _private(self, module: str) -> bool:
        """No checksum database for this module: checksum.private, or no database at all.
        golang.org/toolchain is always checked against the database (modfetch useSumDB)."""
        if self.primary is None:
            return True
        return module != TOOLCHAIN and match_prefix_patterns(self.settings.private, module)

    async def _expected(
        self, module: str, version: str, wanted: str, private: bool
    ) -> dict[str, tuple[str, str]]:
        """{version and version/go.mod: (h1, source)}: pins, and the database's record unless
        `wanted` is pinned or the module is private."""
        pinned = {
            v: pin for v in (version, version + "/go.mod") if (pin := self.pins.get(module, v))
        }
        if wanted in pinned or private:
            return pinned
        assert self.primary is not None
        db = self.primary
        try:
            status, data = await self.source.fetch_body(
                db.chain, _lookup_request(db, module, version)
            )
        except UpstreamError as e:
            raise IntegrityError(
                f"cannot verify {module}@{version}: checksum database {db.name} did not answer "
                f"({e}); not served. Let modgate reach it, or pin the module or list it under "
                "checksum.private in rules.yaml"
            ) from e
        if status != 200:
            raise IntegrityError(
                f"{module}@{version}: not in checksum database {db.name} ({status}); "
                "if it is a private module, add it to checksum.private in rules.yaml"
            )
        lines = await self._lookup_lines(db.name, module, version, data)
        found = {
            fields[1]: (fields[2], f"checksum database {db.name}")
            for fields in (line.split() for line in lines)
        }
        return found | pinned

    def _first_seen(self, req: ModRequest, got: str, zip_gomod: bytes | None) -> Verdict:
        """No pin and no database for this module: keep the first hash seen."""
        key = f"{req.module}@{req.sum_version}"
        first = self.ledger.first_seen(key, got)
        if first != got:
            raise IntegrityError(
                f"SECURITY: {key}: upstream sent {got}, but {first} was seen first; "
                "not served, not cached (private module: pin it in rules.yaml to settle it)"
            )
        # Here, and only here, the zip's go.mod must match the .mod: no authority vouches
        # for either, so two artifacts of one version that agree are the only evidence
        # that the first answers were not mixed from two different uploads, and it pins
        # the go.mod go builds with to the one it resolved the module graph with.
        if zip_gomod is not None:
            mod = self.ledger.first_seen(
                f"{req.module}@{req.version}/go.mod", hash_gomod(zip_gomod)
            )
            _check_zip_gomod(req, zip_gomod, mod, "the .mod first seen")
        return Verdict(got, "unverified", "first seen (private module, no pin)")

    # --- the checksum database ---------------------------------------------------------

    async def _lookup_lines(self, name: str, module: str, version: str, data: bytes) -> list[str]:
        """The record's go.sum lines for module@version and its go.mod, proven in the log.

        The same bytes proven once stay proven: their tree was merged into the verifier's
        newest tree, which only moves forward along a consistent log."""
        if (fork := self._forked.get(name)) is not None:
            raise IntegrityError(fork)
        key = (name, module, version, hashlib.sha256(data).digest())
        if (proven := self._proven.get(key)) is not None:
            return proven
        verifier = self._verifier(name)
        versions = (version, version + "/go.mod")

        def before() -> tuple[list[str], bytes] | None:
            return verifier.lookup_proven_before(module, versions, data)

        def both() -> list[str]:
            return verifier.lookup_versions(module, versions, data)

        try:
            early = await self._with_tiles(name, before)
            lines = early[0] if early is not None else await self._with_tiles(name, both)
        except InconsistentTreeError as e:
            raise IntegrityError(f"SECURITY ERROR: checksum database {name}: {e}") from e
        except SumdbError as e:
            raise IntegrityError(f"checksum database {name}: {module}@{version}: {e}") from e
        if len(lines) < 2:
            raise IntegrityError(
                f"checksum database {name}: {module}@{version}: "
                "checksum missing from sumdb response"
            )
        if early is not None:  # proven in the newest verified tree: its head merged after
            self._merge_after(name, early[1], data)
        else:
            self._save_latest(name, verifier)
            await self._share_latest(name, verifier)
            if name in self._offline:
                record_id, tree = lookup_record(data)
                self._keep_later(name, tree, record_id)
        if len(self._proven) >= PROVEN_MAX:
            self._proven.pop(next(iter(self._proven)))
        self._proven[key] = lines
        return lines

    def _merge_after(self, name: str, note: bytes, lookup: bytes) -> None:
        """Merge a lookup's newer tree head after its answer (`lookup_proven_before`),
        once per head, as `_merge_latest` does (saved, shared, its tiles kept for offline
        clients, with the record's). A fork found there is a SECURITY ERROR in the log,
        and every later lookup of this database is refused with it (`_forked`): what
        was answered before was proven in the timeline verified before the fork."""
        if note in self._merging:
            return

        async def merge() -> None:
            try:
                await self._merge_latest(name, note)
                if name in self._offline:
                    record_id, tree = lookup_record(lookup)
                    await self._keep_tiles(name, tree, record_id)
            except IntegrityError as e:
                if isinstance(e.__cause__, InconsistentTreeError):  # (_merge_latest)
                    self._forked[name] = str(e)
                    log.error("modgate: %s: every lookup of it is refused from now on", e)
                else:  # a head not signed by the database, or malformed: never adopted
                    log.error("modgate: %s", e)
            except ModgateError as e:  # the database did not answer: the next head tries
                log.warning("modgate: checksum database %s: merging a newer tree head: %s",
                            name, e)  # fmt: skip
            finally:
                self._merging.discard(note)

        self._merging.add(note)
        task = asyncio.ensure_future(merge())
        self._keeping.add(task)
        task.add_done_callback(self._kept)

    async def _merge_latest(self, name: str, data: bytes) -> None:
        verifier = self._verifier(name)
        try:
            tree = await self._with_tiles(name, verifier.merge_latest, data)
        except InconsistentTreeError as e:
            raise IntegrityError(f"SECURITY ERROR: checksum database {name}: {e}") from e
        except SumdbError as e:
            raise IntegrityError(f"checksum database {name}: latest: {e}") from e
        self._save_latest(name, verifier)
        await self._share_latest(name, verifier)
        self._keep_later(name, tree)

    def _keep_later(self, name: str, tree: Tree, record_id: int | None = None) -> None:
        """Keep the tiles for offline clients (`_keep_tiles`) after this answer, not before
        it: they check nothing this answer needs (its proof read its own tiles), and
        waiting for them added a round trip to the database to every cold .mod and lookup
        (~10-15 ms of 20-60 ms on the live registry). `idle` waits for them."""
        task = asyncio.ensure_future(self._keep_tiles(name, tree, record_id))
        self._keeping.add(task)
        task.add_done_callback(self._kept)

    def _kept(self, task: asyncio.Task[None]) -> None:
        self._keeping.discard(task)
        if not task.cancelled() and (e := task.exception()) is not None:
            log.error("checksum database: keeping tiles for offline clients failed", exc_info=e)

    async def idle(self) -> None:
        """Wait until the tiles being kept for offline clients are stored."""
        # Only those not done: awaiting a gather of done tasks does not yield, so the
        # callbacks that take them out of the set would never run (a busy loop).
        while pending := [task for task in self._keeping if not task.done()]:
            await asyncio.wait(pending)

    async def _share_latest(self, name: str, verifier: SumdbVerifier) -> None:
        """Merge the newest tree another replica verified (a fork between it and ours is
        a SECURITY ERROR, as between two of our own), then offer ours as the newest."""
        if self.heads is None:
            return
        shared = await self.heads.get(name)
        if shared and shared != verifier.latest:
            try:
                await self._with_tiles(name, verifier.merge_latest, shared)
            except InconsistentTreeError as e:
                raise IntegrityError(
                    f"SECURITY ERROR: checksum database {name}: the tree another replica "
                    f"verified and this one contradict each other: {e}"
                ) from e
            except SumdbError as e:  # not signed by the database: not a head to adopt
                log.error("modgate: checksum database %s: shared tree head refused: %s", name, e)
                return
            self._save_latest(name, verifier)
        if verifier.latest:
            await self.heads.put(name, verifier.latest, verifier.tree.n)

    async def _keep_tiles(self, name: str, tree: Tree, record_id: int | None = None) -> None:
        """Fetch (so store) the tiles any client may read to check `tree` and `record_id`
        against any other head served, in any order, offline (sumdb/offline.py). Only
        while the database answers: a failure is logged and tried again next time."""
        offline = self._offline.get(name)
        if offline is None:
            return
        reads = offline.served(tree, record_id)
        if added := offline.new_positions():
            await asyncio.to_thread(self._save_positions, name, added)
        await asyncio.gather(*(self._keep(self.databases[name], offline, r) for r in reads))

    async def _keep(self, db: SumdbConfig, offline: OfflineTiles, read: TileRead) -> None:
        try:
            await self._read_tiles(db, read)
        except ModgateError as e:
            offline.failed(read)
            log.warning(
                "checksum database %s: could not keep tiles of tree#%d for offline "
                "clients (will try again): %s", db.name, read.tree.n, e,
            )  # fmt: skip
        else:
            offline.kept(read)

    async def _read_tiles(self, db: SumdbConfig, read: TileRead) -> None:
        """Fetch a read's tiles through the gateway, all at once, and authenticate them
        against its tree; tiles that do not match are dropped from the store."""
        data = await asyncio.gather(*(self._fetch_tile(db, tile) for tile in read.tiles))
        tiles = dict(zip(read.tiles, data, strict=True))
        reader = TileHashReader(read.tree, TILE_HEIGHT, tiles.__getitem__)
        try:
            await asyncio.to_thread(reader, read.indexes)
        except SumdbError:
            for tile in read.tiles:
                self._drop_tile(db.name, _sumdb_request(db.name, tile.path()))
            raise

    async def _fetch_tile(self, db: SumdbConfig, tile: Tile) -> bytes:
        """A tile as client.go readTile gets it: the tile, else (a partial tile the
        database no longer serves) a prefix of the full one, which go then asks for too."""
        status, data = await self.source.fetch_body(db.chain, _sumdb_request(db.name, tile.path()))
        if status != 200 and tile.width != 1 << tile.height:
            status, data = await self.source.fetch_body(
                db.chain, _sumdb_request(db.name, tile.full().path())
            )
            data = data[: tile.width * HASH_SIZE]
        if status != 200:
            raise UpstreamError(f"checksum database {db.name}: {tile.path()}: {status}")
        return data

    async def _with_tiles[T](self, name: str, call: Callable[..., T], *args: object) -> T:
        """Run a verifier call on the event loop, in rounds: a round that needs tiles not
        fetched yet stops at the first read that lacks one (`_NeedTiles`, the whole of
        a proof's tiles at once when the verifier says which), they are fetched through
        the gateway all at once, and the call starts again, the tiles in hand. The call
        changes nothing until a check has passed (client.go's Client), so starting again
        is safe; a proof costs a round trip to the database per phase (checkTrees, then
        checkRecord), as client.go's. When it fails on bad data, drop the tiles it read,
        so the next attempt fetches them anew.

        On the loop, not in a worker thread as before: the proof is a few hashes and a
        signature (well under a millisecond), while a thread that waited for its tiles
        waited as long again for the GIL to wake up (~5-10 ms per proof on a busy cold
        graph), and ten proofs at once held every thread of asyncio's default pool, so
        the getaddrinfo of new upstream connections queued behind them (~350 ms)."""
        db = self.databases[name]
        reading = _Reading()
        try:
            for _ in range(PROOF_ROUNDS):
                self._reading = reading
                try:
                    return call(*args)
                except _NeedTiles as need:
                    missing = need.paths
                finally:
                    self._reading = None
                got = await asyncio.gather(
                    *(self.source.fetch_body(db.chain, _sumdb_request(name, p)) for p in missing),
                    return_exceptions=True,
                )
                for path, answer in zip(missing, got, strict=True):
                    if isinstance(answer, BaseException) and not isinstance(answer, Exception):
                        raise answer  # cancelled: not an answer to keep
                    reading.fetched[path] = answer
            raise UpstreamError(
                f"checksum database {name}: a proof still lacked tiles after {PROOF_ROUNDS} rounds"
            )
        except SumdbError as e:
            if not isinstance(e, InconsistentTreeError):
                for path in reading.read:
                    self._drop_tile(name, _sumdb_request(name, path))
            raise

    def _verifier(self, name: str) -> SumdbVerifier:
        verifier = self._verifiers.get(name)
        if verifier is None:
            db = self.databases[name]
            latest_file = self._latest_file(name)
            latest = latest_file.read_bytes() if latest_file.is_file() else b""
            verifier = SumdbVerifier(
                db.key, lambda path: self._read_tile(db, path), latest,
                prefetch_tiles=self._prefetch_tiles,
            )  # fmt: skip
            self._verifiers[name] = verifier
            self._offline[name] = OfflineTiles(TILE_HEIGHT, verifier.tree, self._positions(name))
        return verifier

    def _read_tile(self, db: SumdbConfig, path: str) -> bytes:
        """The verifier's tile reader, within `_with_tiles`: the tile fetched through the
        gateway (so cached, and served offline, like everything else), or `_NeedTiles`."""
        reading = self._reading
        if reading is None:
            raise UpstreamError(f"checksum database {db.name}: {path}: read outside a proof")
        if path not in reading.fetched:
            raise _NeedTiles([path])
        reading.read.append(path)
        answer = reading.fetched[path]
        if isinstance(answer, BaseException):
            raise answer
        status, data = answer
        if status != 200:
            raise UpstreamError(f"checksum database {db.name}: {path}: {status}")
        return data

    def _prefetch_tiles(self, paths: list[str]) -> None:
        """The verifier is about to read these tiles: when some are not fetched yet, stop
        the round here and fetch them all at once (client.go ReadTiles), so a proof costs
        one round trip to the database, not one per tile. Concurrent proofs share each
        tile's fetch (the gateway's single flight)."""
        reading = self._reading
        if reading is not None and (missing := [p for p in paths if p not in reading.fetched]):
            raise _NeedTiles(missing)

    def _drop_tile(self, name: str, tile: ModRequest) -> None:
        self.source.forget(self.databases[name].chain, tile)

    def _latest_file(self, name: str) -> Path:
        return self.state_dir / "sumdb" / f"{escape(name).replace('/', '_')}.latest"

    def _positions_file(self, name: str) -> Path:
        return self.state_dir / "sumdb" / f"{escape(name).replace('/', '_')}.positions"

    def _positions(self, name: str) -> list[int]:
        """The positions OfflineTiles was told of before a restart: their tiles are kept
        as the log grows past them."""
        path = self._positions_file(name)
        if not path.is_file():
            return []
        return [int(word) for word in path.read_text().split() if word.isdigit()]

    def _save_positions(self, name: str, added: list[int]) -> None:
        path = self._positions_file(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write("".join(f"{position}\n" for position in added))

    def _save_latest(self, name: str, verifier: SumdbVerifier) -> None:
        """Keep the newest verified tree across restarts: fork detection outlives a restart."""
        path = self._latest_file(name)
        latest = verifier.latest
        if latest and (not path.is_file() or path.read_bytes() != latest):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(latest)
            tmp.replace(path)


def _lookup_request(db: SumdbConfig, module: str, version: str) -> ModRequest:
    return _sumdb_request(db.name, f"lookup/{escape(module)}@{escape(version)}")


def _sumdb_request(name: str, path: str) -> ModRequest:
    """The request for `path` (lookup/…, tile/…) of database `name`, parsed against that
    name: it may hold a `/`, and only the known name tells where it ends."""
    return parse_request(f"sumdb/{name}/{path}", (name,))


def _hash_artifact(req: ModRequest, body: Path) -> tuple[str, bytes | None]:
    """h1 of a .mod, or of a zip validated as the go command would ("Module zip files"),
    with the zip's own go.mod."""
    if req.kind is Kind.MOD:
        return hash_gomod(body.read_bytes()), None
    try:
        found = check_zip(body, req.module, req.version)
        return hash_zip(body, f"{req.module}@{req.version}/"), found.gomod
    except ZipError as e:
        raise IntegrityError(f"{req.module}@{req.version}: invalid module zip: {e}") from e


def _check_zip_gomod(req: ModRequest, zip_gomod: bytes, want: str, source: str) -> None:
    got = hash_gomod(zip_gomod)
    if got != want:
        raise IntegrityError(
            f"SECURITY: {req.module}@{req.version}: the zip's go.mod is {got}, but {source} "
            f"says the go.mod is {want}; not served, not cached"
        )


def recheck(entry: Entry, body: Body) -> str:
    """Why a stored answer is no longer what was stored and verified; "" when it is."""
    digest, size = hashlib.sha256(), 0
    if body.data is not None:
        digest.update(body.data)
        size = len(body.data)
    else:
        assert body.file is not None
        body.file.seek(0)
        while chunk := body.file.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    if size != entry.size:
        return f"{size} bytes on disk, {entry.size} stored"
    if digest.hexdigest() != entry.sha256:
        return "content changed on disk (SHA-256 differs from the one stored)"
    if not entry.h1:
        return ""
    req = parse_request(entry.key.rsplit(" ", 1)[1])
    if req.kind is Kind.MOD:
        got = hash_gomod(body.data if body.data is not None else _read_all(body))
    else:
        source = io.BytesIO(body.data) if body.data is not None else body.file
        assert source is not None
        source.seek(0)
        got = hash_zip(source, f"{req.module}@{req.version}/")
    return "" if got == entry.h1 else f"{got}, but it was verified as {entry.h1}"


def _read_all(body: Body) -> bytes:
    assert body.file is not None
    body.file.seek(0)
    return body.file.read()
