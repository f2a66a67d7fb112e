"""Which tiles a checksum-database mirror keeps so that clients verify offline, in any order.

A go client (golang.org/x/mod/sumdb/client.go) proves each lookup answer's signed tree
head against the newest head it holds (mergeLatest, checkTrees: the older tree's hash
rebuilt from tiles of the newer) and the record in its newest tree (checkRecord), and
reads those tiles through tlog.TileHashReader. The head it holds comes from its own
GOPATH/pkg/sumdb and from the order of its lookups, so any head a mirror served may be
any client's newest, and any older head or record may be proven in it.

What such reads fetch, for a tree of size N (tile.go; tiles of height H, here 8):

- N's own tiles, holding the hashes of its subtrees: at each level its rightmost
  tile, cut at N (``.p/W``): different for every size. Proving anything in N reads them.
- for a record R < N (or the older head M, whose hashes lie in the tiles of its last
  record M-1, or in N's own tiles): at each level L the tile number R >> H*(L+1),
  complete in N, else it is one of N's own tiles.

So, when every head served has had its own tiles kept, and every position served (a
record, or a head's last record) its complete tiles in the newest tree, the tiles of
every pair (older head or record, newer head) are kept: the work is per head and per
position, never per pair, and a head adds at most one tile per level.

`OfflineTiles` is told what was served and answers with `TileRead`s: tiles to fetch
(and store) and to authenticate against a tree; no I/O.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass

from modgate.sumdb.tlog import (
    Tile,
    TileHashReader,
    Tree,
    parse_record,
    parse_tree,
    stored_hash_index,
)

PENDING_MAX = 256  # failed reads kept for another try (the oldest are dropped)
KEPT_MAX = 1 << 20  # tiles remembered as kept, so they are not read again


@dataclass(frozen=True)
class TileRead:
    """Fetch `tiles` (what tlog.TileHashReader reads from `tree` to prove `indexes`) and
    check them against `tree`: against its own hash alone when `indexes` is empty."""

    tree: Tree
    indexes: tuple[int, ...]
    tiles: tuple[Tile, ...]


def lookup_record(response: bytes) -> tuple[int, Tree]:
    """The record id and tree head of a ``/lookup/`` answer already verified (no
    signature is checked here)."""
    record_id, _, tree_note = parse_record(response)
    return record_id, parse_tree(tree_note)


class OfflineTiles:
    """The tiles of one database to keep for clients in any order (see module docstring).

    `newest` is the newest tree verified so far; `positions` the level-0 tile numbers of
    the positions served before (as `new_positions` gave them, to keep across restarts).
    """

    def __init__(self, height: int, newest: Tree, positions: Iterable[int] = ()) -> None:
        self._height = height
        self._newest = newest
        self._positions = sorted(set(positions))  # level-0 tile numbers, each once
        self._new_positions: list[int] = []
        self._kept: set[Tile] = set()
        self._pending: list[TileRead] = []

    def served(self, tree: Tree, record_id: int | None = None) -> list[TileRead]:
        """The reads that keep what a client may need since `tree` (and `record_id` in
        it) was served, and the reads that failed before, to try again. Reads of one
        tree are made one: its own tiles are authenticated once."""
        reads, self._pending = self._pending, []
        if tree.n == 0:
            return reads
        records: set[int] = set()
        if tree.n > self._newest.n:
            older, self._newest = self._newest, tree
            records |= self._completed(older.n)
        elif tree.n < self._newest.n:  # (the newest's own tiles are in its read below)
            reads.append(self._read(tree, ()))
        positions = [tree.n - 1] if record_id is None else [tree.n - 1, record_id]
        records |= {p for p in positions if self._add(p >> self._height)}
        reads.append(self._read(self._newest, tuple(sorted(records))))
        return [read for read in reads if read.tiles]

    def kept(self, read: TileRead) -> None:
        """`read` succeeded: its tiles are stored and need not be read again."""
        if len(self._kept) + len(read.tiles) > KEPT_MAX:
            self._kept.clear()  # reading a kept tile again costs a cache hit, not a fetch
        self._kept.update(read.tiles)

    def failed(self, read: TileRead) -> None:
        """`read` failed (the database did not answer): try it again with the next one."""
        self._pending = [*self._pending, read][-PENDING_MAX:]

    def new_positions(self) -> list[int]:
        """The positions (level-0 tile numbers) added since the last call, to persist."""
        added, self._new_positions = self._new_positions, []
        return added

    def _add(self, position: int) -> bool:
        i = bisect.bisect_left(self._positions, position)
        if i < len(self._positions) and self._positions[i] == position:
            return False
        self._positions.insert(i, position)
        self._new_positions.append(position)
        return True

    def _read(self, tree: Tree, records: tuple[int, ...]) -> TileRead:
        """What proving `records` in `tree` reads, less the tiles kept already; empty
        when nothing is left (a proof needs all its tiles, so then none is read)."""
        indexes = tuple(stored_hash_index(0, r) for r in records if r < tree.n)
        tiles = TileHashReader(tree, self._height, _no_tile).tiles(indexes)
        if all(tile in self._kept for tile in tiles):
            return TileRead(tree, indexes, ())
        return TileRead(tree, indexes, tuple(tiles))

    def _completed(self, older: int) -> set[int]:
        """The records to prove in the newest tree for the tiles it completed since a
        tree of size `older`: one record of each such tile that holds a position served."""
        h, newest = self._height, self._newest.n
        records: set[int] = set()
        level = 0
        while newest >> (h * level) > 0:
            # Tiles of this level complete now but not in `older`; in level-0 tile numbers:
            first = (older >> (h * (level + 1))) << (h * level)
            end = (newest >> (h * (level + 1))) << (h * level)
            i = bisect.bisect_left(self._positions, first)
            while i < len(self._positions) and self._positions[i] < end:
                position = self._positions[i]
                records.add(position << h)
                # One record per tile of this level: on to the next tile.
                following = ((position >> (h * level)) + 1) << (h * level)
                i = bisect.bisect_left(self._positions, following)
            level += 1
        return records


def _no_tile(tile: Tile) -> bytes:
    raise AssertionError(f"planning reads no tile ({tile.path()})")
