"""Go checksum-database verification without I/O: callers fetch, this package checks.

`SumdbVerifier` is golang.org/x/mod/sumdb/client.go's Client (vendored in Go's source
tree under src/cmd/vendor/golang.org/x/mod/sumdb/) with its network and files taken
out: it is given the bytes of ``/lookup/<module>@<version>`` answers and signed tree
heads, and a function that fetches tiles, and it answers with go.sum lines it has
proven to be in the log, or raises. It follows the "Checksum database" section of
the Go modules reference. Keys and notes are in `modgate.sumdb.note`, the Merkle
log and its tiles in `modgate.sumdb.tlog`.

Errors, all one line (a fork also carries the go command's full report):

    SumdbError (modgate.errors.ModgateError)
     ├── KeyFormatError         a verifier or signer key is malformed
     ├── NoteError              a signed note is malformed ("malformed note")
     │    ├── UnknownVerifierError  no signature by a known key
     │    └── BadSignatureError     a known key's signature does not verify
     ├── FormatError            a tree head, record, hash, tile path or tile is malformed
     ├── ProofError             data does not match the signed tree
     └── InconsistentTreeError  two signed tree heads contradict each other: a fork
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from modgate.sumdb.note import (
    BadSignatureError,
    KeyFormatError,
    NoteError,
    SumdbError,
    UnknownVerifierError,
    Verifier,
    open_note,
    parse_verifier_key,
)
from modgate.sumdb.tlog import (
    EMPTY_HASH,
    HASH_SIZE,
    FormatError,
    ProofError,
    Tile,
    TileHashReader,
    Tree,
    check_tree,
    format_hash,
    parse_record,
    parse_tree,
    prove_tree,
    record_hash,
    stored_hash_index,
    tree_hash,
)

__all__ = [
    "BadSignatureError",
    "FormatError",
    "InconsistentTreeError",
    "KeyFormatError",
    "NoteError",
    "ProofError",
    "SumdbError",
    "SumdbVerifier",
    "UnknownVerifierError",
]

TILE_HEIGHT = 8  # client.go's default, and what the public database serves
NOTES_MAX = 256  # signed tree heads remembered as verified (a few hundred bytes each)
TIMELINE_MAX = 1024  # trees remembered as proven prefixes of the newest verified one


class InconsistentTreeError(SumdbError):
    """Two signed tree heads are not on one timeline: the server forked its log.

    `report` is the go command's multi-line SECURITY ERROR text, with both notes and
    the proof of misbehaviour (client.go checkTrees).
    """

    def __init__(self, message: str, report: str = "") -> None:
        super().__init__(message)
        self.report = report


class SumdbVerifier:
    """client.go's Client without I/O: verifies lookups and tree heads of one database.

    `fetch_tile(path)` returns the bytes served at ``<database URL>/<path>`` for a tile
    path such as ``tile/8/0/x001/234.p/7`` and raises on any failure; what it raises
    passes through unchanged. `latest` is the newest signed tree head verified before
    (as the `latest` property gave it), or empty; it is checked like any other head.
    Verified tiles are kept in memory, at most `cached_tiles` of them.
    `prefetch_tiles(paths)`, if given, is told the tiles a proof is about to read, all at
    once, to fetch them in parallel; it may fail silently (each read then fails alone).
    """

    def __init__(
        self,
        verifier_key: str,
        fetch_tile: Callable[[str], bytes],
        latest: bytes = b"",
        *,
        tile_height: int = TILE_HEIGHT,
        cached_tiles: int = 256,
        prefetch_tiles: Callable[[list[str]], None] | None = None,
    ) -> None:
        self._verifier: Verifier = parse_verifier_key(verifier_key.strip())
        self._fetch_tile = fetch_tile
        self._prefetch_tiles = prefetch_tiles
        self._height = tile_height
        self._lock = threading.Lock()
        self._tree = Tree(0, EMPTY_HASH)
        self._tree_note = b""
        self._tiles: OrderedDict[Tile, bytes] = OrderedDict()
        self._max_tiles = cached_tiles
        self._authenticated: set[object] = set()  # see TileHashReader
        self._notes: OrderedDict[bytes, Tree] = OrderedDict()  # see _open_tree
        self._timeline: OrderedDict[Tree, None] = OrderedDict()  # see merge_latest
        self.merge_latest(latest)

    @property
    def name(self) -> str:
        """The database's name, as in its key (for example the host serving it)."""
        return self._verifier.name

    @property
    def tree(self) -> Tree:
        """The newest verified tree."""
        with self._lock:
            return self._tree

    @property
    def latest(self) -> bytes:
        """The signed note of the newest verified tree (empty before any): the state to keep."""
        with self._lock:
            return self._tree_note

    def lookup(self, path: str, version: str, response: bytes) -> list[str]:
        """The go.sum lines for path@version in a ``/lookup/`` response, once proven in the log.

        As client.go Lookup: `version` may end in "/go.mod"; the answer lists the
        record's lines that start with "<path> <version> " (empty if there are none:
        "checksum missing from sumdb response" is then the caller's to say).
        """
        return self.lookup_versions(path, (version,), response)

    def lookup_versions(self, path: str, versions: tuple[str, ...], response: bytes) -> list[str]:
        """`lookup` of several versions in one response (a version and its "/go.mod"),
        proven once: the proof is most of a lookup's cost."""
        try:
            record_id, text, tree_note = parse_record(response)
            self.merge_latest(tree_note)
            self._check_record(record_id, text)
        except SumdbError as e:
            raise e.within(f"{path}@{versions[0]}") from e
        return _lines_of(text, path, versions)

    def lookup_proven_before(
        self, path: str, versions: tuple[str, ...], response: bytes
    ) -> tuple[list[str], bytes] | None:
        """`lookup_versions`, without merging the response's tree head first when its
        record is already in the newest verified tree: the lines, proven there, and the
        head (its signature verified), for the caller to merge later; None when the
        head is not newer or the record not in that tree (`lookup_versions` then).

        What proves a record is its inclusion in a tree verified on the database's
        timeline: the newest one is such a tree, and holds the record. A newer head is
        news about the log's end, to be checked against the timeline (a fork raises
        there), but nothing this record needs: proving it against the newer head would
        first fetch the newer head's edge tiles, a round trip to the database on the
        answer's path for every lookup of a log that grows while go reads it."""
        try:
            record_id, text, tree_note = parse_record(response)
            tree = self._open_tree(tree_note)
            latest = self.tree
            if tree.n <= latest.n or record_id >= latest.n:
                return None
            self._check_record(record_id, text)
        except SumdbError as e:
            raise e.within(f"{path}@{versions[0]}") from e
        return _lines_of(text, path, versions), tree_note

    def merge_latest(self, note: bytes) -> Tree:
        """Verify a signed tree head and, if newer and consistent, adopt it; return its tree.

        As client.go mergeLatest: an older or equal tree must be a prefix of the newest
        verified tree, a newer one must contain it; anything else is a fork and raises
        InconsistentTreeError. An empty note stands for the empty tree and changes nothing.

        A tree once proven a prefix of the newest verified tree stays one: the newest
        only moves to trees proven to extend it, and "is a prefix of" is transitive. So
        such a tree (kept in `_timeline`, with every tree the newest moved on from) is
        not proven again: on the live database most lookups answer with a head a little
        older than the newest, and proving each again was most of a lookup's CPU.
        """
        if not note:
            return self.tree
        tree = self._open_tree(note)
        while True:
            with self._lock:
                latest, latest_note = self._tree, self._tree_note
                if tree == latest or tree in self._timeline:
                    # The newest verified tree itself, or one proven a prefix of it: checkTrees
                    # would rebuild a hash it rebuilt before, from tiles of the same tree.
                    return tree
            if tree.n <= latest.n:
                self._check_trees(tree, note, latest, latest_note)
                with self._lock:
                    self._on_timeline(tree)
                return tree
            self._check_trees(latest, latest_note, tree, note)
            with self._lock:
                if self._tree == latest:  # else another thread moved on: check again
                    self._tree, self._tree_note = tree, note
                    self._on_timeline(latest)
                    return tree

    def _on_timeline(self, tree: Tree) -> None:
        """Remember a tree proven a prefix of the newest verified tree (at most
        TIMELINE_MAX); the caller holds the lock."""
        self._timeline[tree] = None
        self._timeline.move_to_end(tree)
        while len(self._timeline) > TIMELINE_MAX:
            self._timeline.popitem(last=False)

    def _open_tree(self, note: bytes) -> Tree:
        """The tree a signed note names, once its signature by the database's key verifies.

        Remembered by the note's exact bytes (at most NOTES_MAX): a note is a pure
        function of its bytes and the key, and every lookup answer carries one, most of
        them the same few heads, each verified again in every round of a proof.
        Only notes that verified are remembered."""
        with self._lock:
            if (known := self._notes.get(note)) is not None:
                return known
        try:
            opened = open_note(note, [self._verifier])
        except SumdbError as e:
            raise e.within("reading tree note") from e
        try:
            tree = parse_tree(opened.text)
        except SumdbError as e:
            raise e.within("reading tree") from e
        with self._lock:
            self._notes[note] = tree
            while len(self._notes) > NOTES_MAX:
                self._notes.popitem(last=False)
        return tree

    def _check_trees(self, older: Tree, older_note: bytes, newer: Tree, newer_note: bytes) -> None:
        """client.go checkTrees: the newer tree's tiles must give the older tree's hash.

        Tiles are cached only once the trees agree, so a fork's tiles are never reused.
        """
        reader = self._reader(newer)
        try:
            h = tree_hash(older.n, reader)
        except SumdbError as e:
            against = "" if older.n == newer.n else f" against tree#{newer.n}"
            raise e.within(f"checking tree#{older.n}{against}") from e
        if h == older.hash:
            self._save_tiles(reader.verified)
            return
        raise InconsistentTreeError(
            "SECURITY ERROR: go.sum database server misbehavior detected: "
            f"tree#{older.n} {format_hash(older.hash)} is not a prefix of "
            f"tree#{newer.n} {format_hash(newer.hash)}",
            _fork_report(older, older_note, newer, newer_note, h, reader),
        )

    def _check_record(self, record_id: int, text: bytes) -> None:
        """client.go checkRecord: record_id's hash in the newest tree must be text's."""
        latest = self.tree
        if not 0 <= record_id < latest.n:
            raise ProofError(f"cannot validate record {record_id} in tree of size {latest.n}")
        reader = self._reader(latest)
        [h] = reader([stored_hash_index(0, record_id)])
        self._save_tiles(reader.verified)
        if h != record_hash(text):
            raise ProofError("cannot authenticate record data in server response")

    def _reader(self, tree: Tree) -> TileHashReader:
        prefetch = self._prefetch if self._prefetch_tiles is not None else None
        return TileHashReader(tree, self._height, self._read_tile, self._authenticated, prefetch)

    def _prefetch(self, tiles: list[Tile]) -> None:
        """Hand the tiles a proof will read, less those held in memory, to `prefetch_tiles`
        at once (client.go ReadTiles fetches them in parallel)."""
        assert self._prefetch_tiles is not None
        with self._lock:
            held = self._tiles
            missing = [t.path() for t in tiles if t not in held and t.full() not in held]
        if len(missing) > 1:
            self._prefetch_tiles(missing)

    def _read_tile(self, tile: Tile) -> bytes:
        """client.go readTile: a verified copy, else the tile, else a prefix of the full tile."""
        full = tile.full()
        with self._lock:
            if tile in self._tiles:
                return self._tiles[tile]
            if full in self._tiles:
                return self._tiles[full][: tile.width * HASH_SIZE]
        try:
            return self._fetch_tile(tile.path())
        except Exception as partial_error:
            # A partial tile may be gone because the tile is complete now.
            if tile == full:
                raise
            try:
                data = self._fetch_tile(full.path())
            except Exception:
                raise partial_error from None
            return data[: len(data) // full.width * tile.width]

    def _save_tiles(self, tiles: dict[Tile, bytes]) -> None:
        """Keep authenticated tiles, the most recently used last."""
        with self._lock:
            for tile, tile_data in tiles.items():
                self._tiles[tile] = tile_data
                self._tiles.move_to_end(tile)
            while len(self._tiles) > self._max_tiles:
                self._tiles.popitem(last=False)


def _lines_of(text: bytes, path: str, versions: tuple[str, ...]) -> list[str]:
    """The lines of a proven record's text that start with "<path> <version> "."""
    prefixes = tuple(f"{path} {version} " for version in versions)
    return [line for line in text.decode().split("\n") if line.startswith(prefixes)]


def _fork_report(
    older: Tree, older_note: bytes, newer: Tree, newer_note: bytes, h: bytes, reader: TileHashReader
) -> str:
    """The go command's SECURITY ERROR text for a fork, proof of misbehaviour included."""

    def indent(note: bytes) -> str:
        return note.decode(errors="replace").replace("\n", "\n\t")

    lines = [
        "SECURITY ERROR\ngo.sum database server misbehavior detected!\n\n",
        f"old database:\n\t{indent(older_note)}\n",
        f"new database:\n\t{indent(newer_note)}\n",
        f"proof of misbehavior:\n\t{format_hash(h)}",
    ]
    try:
        proof = prove_tree(newer.n, older.n, reader)
    except SumdbError as e:
        lines.append(f"\tinternal error: {e}\n")
    else:
        try:
            check_tree(proof, newer.n, newer.hash, older.n, h)
        except SumdbError:
            lines.append("\tinternal error: generated inconsistent proof\n")
        else:
            lines += [f"\n\t{format_hash(p)}" for p in proof]
    return "".join(lines)
