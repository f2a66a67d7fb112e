"""modgate.sumdb.offline: the tiles kept let a client prove every pair of heads served,
and every record served in every later head, from those tiles alone, whatever the order.

A client is simulated as client.go reads: tlog.TileHashReader over the kept tiles, a
partial tile falling back to a prefix of the full one (readTile), nothing else.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from modgate.sumdb.offline import OfflineTiles, TileRead, lookup_record
from modgate.sumdb.tlog import (
    HASH_SIZE,
    Tile,
    TileHashReader,
    Tree,
    format_record,
    format_tree,
    hashes_reader,
    read_tile_data,
    stored_hash_index,
    stored_hashes,
    tree_hash,
)


@dataclass
class Log:
    """An append-only log of records and what a mirror of it stored."""

    height: int
    hashes: list[bytes] = field(default_factory=list)
    size: int = 0
    stored: dict[Tile, bytes] = field(default_factory=dict)
    fetched: int = 0

    def grow(self, n: int) -> None:
        for _ in range(n):
            record = b"record %d\n" % self.size
            self.hashes += stored_hashes(self.size, record, hashes_reader(self.hashes))
            self.size += 1

    def tree(self, n: int) -> Tree:
        return Tree(n, tree_hash(n, hashes_reader(self.hashes)))

    def fetch(self, tile: Tile) -> bytes:
        """The database's answer, kept by the mirror (as the gateway stores it)."""
        if tile not in self.stored:
            self.fetched += 1
            self.stored[tile] = read_tile_data(tile, hashes_reader(self.hashes))
        return self.stored[tile]

    def keep(self, offline: OfflineTiles, reads: list[TileRead]) -> None:
        """What verify.Checker does with the reads: fetch, authenticate, mark kept."""
        for read in reads:
            tiles = {tile: self.fetch(tile) for tile in read.tiles}
            TileHashReader(read.tree, self.height, tiles.__getitem__)(read.indexes)
            offline.kept(read)

    def offline_tile(self, tile: Tile) -> bytes:
        """client.go readTile with the database gone: the tile, or a prefix of the full one."""
        if tile in self.stored:
            return self.stored[tile]
        full = self.stored.get(tile.full())
        if full is None:
            raise LookupError(f"not kept: {tile.path()}")
        return full[: tile.width * HASH_SIZE]


def serve(log: Log, steps: list[tuple[int, int | None]], offline: OfflineTiles) -> None:
    for size, record in steps:
        log.keep(offline, offline.served(log.tree(size), record))


def check_every_order(log: Log, heads: set[int], records: dict[int, int]) -> int:
    """Every check a client may make offline: each head against each newer head
    (checkTrees, the newer one the client's latest), each record in each head at least
    as new as the one it came with (checkRecord). Returns how many were made."""
    checks = 0
    for newer in sorted(heads):
        reader = TileHashReader(log.tree(newer), log.height, log.offline_tile)
        for older in sorted(h for h in heads if h <= newer):
            assert tree_hash(older, reader) == log.tree(older).hash
            checks += 1
        for record, head in records.items():
            if head <= newer:
                [h] = reader([stored_hash_index(0, record)])
                assert h == log.hashes[stored_hash_index(0, record)]
                checks += 1
    return checks


@pytest.mark.parametrize("height", [2, 3])
@pytest.mark.parametrize("seed", range(6))
def test_kept_tiles_prove_every_pair_in_any_order(height: int, seed: int) -> None:
    rng = random.Random(seed)
    log = Log(height)
    log.grow(rng.randint(1, 40))
    offline = OfflineTiles(height, Tree(0, b""))
    heads: set[int] = set()
    records: dict[int, int] = {}  # record id: the head its lookup carried
    for _ in range(25):
        log.grow(rng.randint(0, 60))
        # A lookup answered with a head that may lag behind the newest, as the real
        # database's frontends do; sometimes a tree head alone (a /latest).
        record = rng.randrange(log.size)
        head = rng.randint(max(record + 1, log.size - 80), log.size)
        lookup = rng.random() < 0.8
        serve(log, [(head, record if lookup else None)], offline)
        heads.add(head)
        if lookup:
            records[record] = min(head, records.get(record, head))
    assert check_every_order(log, heads, records) > 300


def test_the_tiles_a_client_needed_in_the_issue() -> None:
    """In the issue, go failed "checking tree#66385784 against tree#66393050: reading
    tile/8/1/x001/013.p/19": the head of size 66393050 was served when the mirror knew a newer one, and its own
    tiles were never read. Heads scaled down: levels 0 and 1 of a log of 9,000."""
    log = Log(8)
    log.grow(9_000)
    offline = OfflineTiles(8, Tree(0, b""))
    serve(log, [(8_990, 10), (8_700, 20)], offline)  # the smaller head arrives last
    assert Tile(8, 1, 0, 8_700 >> 8) in log.stored  # its own level-1 tile, cut at 8,700
    assert check_every_order(log, {8_990, 8_700}, {10: 8_990, 20: 8_700}) == 6


def test_positions_kept_across_a_restart_are_completed_when_the_log_grows() -> None:
    log = Log(2)
    log.grow(30)
    first = OfflineTiles(2, Tree(0, b""))
    serve(log, [(22, 17), (30, 5)], first)
    log.grow(40)
    restarted = OfflineTiles(2, log.tree(30), first.new_positions())
    serve(log, [(70, 60)], restarted)
    # Record 17's tile at level 1 (16..31) was cut at 30, and is complete in 70.
    assert check_every_order(log, {22, 30, 70}, {17: 22, 5: 30, 60: 70}) > 0


def test_reads_per_head_are_few_and_kept_tiles_are_not_read_again() -> None:
    log = Log(8)
    log.grow(20_000)
    offline = OfflineTiles(8, Tree(0, b""))
    serve(log, [(19_000, 100)], offline)
    before = log.fetched
    again = offline.served(log.tree(19_000), 100)
    assert again == []  # the same head and record: nothing to read
    rng = random.Random(1)
    for _ in range(50):
        head = rng.randint(18_000, 20_000)
        serve(log, [(head, rng.randrange(head))], offline)
    # Each head brings its own tiles (one per level), and each record's tile once.
    assert log.fetched - before <= 50 * 2 + 50 * 2


def test_reads_that_failed_are_tried_again_with_the_next() -> None:
    log = Log(2)
    log.grow(50)
    offline = OfflineTiles(2, Tree(0, b""))
    [*reads] = offline.served(log.tree(40), 3)
    for read in reads:
        offline.failed(read)  # the database did not answer
    later = offline.served(log.tree(45), 7)
    assert set(reads) <= set(later)
    log.keep(offline, later)
    assert check_every_order(log, {40, 45}, {3: 40, 7: 45}) > 0


def test_lookup_record_reads_the_id_and_the_head() -> None:
    tree = Tree(9, bytes(32))
    answer = format_record(7, b"example.com/m v1.0.0 h1:x\n") + format_tree(tree)
    assert lookup_record(answer + b"\n\xe2\x80\x94 sig\n") == (7, tree)
