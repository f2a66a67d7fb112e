"""The checksum database's tamper-evident log: hashes, tree heads, records, tiles, proofs; no I/O.

Follows golang.org/x/mod/sumdb/tlog (tlog.go, tile.go, note.go; vendored in Go's
source tree under src/cmd/vendor/golang.org/x/mod/sumdb/tlog/), itself RFC 6962's
Merkle tree, and the "Checksum database" section of the Go modules reference:

- a record's hash is SHA-256(0x00 || data), an interior node's SHA-256(0x01 || left || right);
- hashes are stored in one dense sequence ("stored hash index", Crosby and Wallach §3.3);
- a signed tree head's text is "go.sum database tree\\n<N>\\n<base64 hash>\\n";
- the log is served as tiles: ``tile/H/L/NNN[.p/W]`` holds W hashes of level H*L
  starting at N*2**H; ``tile/H/data/NNN[.p/W]`` holds the record texts themselves.

`TileHashReader` reads hashes out of tiles fetched by the caller and authenticates
every tile against the signed tree hash before answering (tlog.TileHashReader).

Errors: `FormatError` (malformed tree, record, hash, tile path or tile) and
`ProofError` (data that does not match a signed tree), both `SumdbError`s.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from modgate.sumdb.note import SumdbError, decode_base64

HASH_SIZE = 32
EMPTY_HASH = hashlib.sha256(b"").digest()  # the empty tree's hash, RFC 6962 §2.1
_PATH_BASE = 1000  # tile numbers are written three digits per path element
_INT64_MAX = (1 << 63) - 1
_GO_INT = re.compile(r"[+-]?[0-9]+")  # what strconv.Atoi and ParseInt accept
_TREE_PREFIX = b"go.sum database tree\n"
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f]")  # below " ", but for "\n": not in a record

type Hash = bytes
# tlog.HashReader: the hashes at the given stored hash indexes, in order.
type HashReader = Callable[[Sequence[int]], Sequence[Hash]]


class FormatError(SumdbError):
    """A tree head, record, hash, tile path or tile is malformed."""


class ProofError(SumdbError):
    """Data does not match a signed tree: a tile, a record or a proof."""


def record_hash(data: bytes) -> Hash:
    """The leaf hash of a record: SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: Hash, right: Hash) -> Hash:
    """The hash of an interior node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def format_hash(h: Hash) -> str:
    """A hash as base64, as tlog.Hash.String prints it."""
    return base64.b64encode(h).decode()


def parse_hash(text: str) -> Hash:
    """tlog.ParseHash: a base64 hash of exactly 32 bytes."""
    h = decode_base64(text)
    if h is None or len(h) != HASH_SIZE:
        raise FormatError("malformed hash")
    return h


def hashes_reader(hashes: Sequence[Hash]) -> HashReader:
    """A HashReader over a list of stored hashes (as test.go's testHashes)."""
    return lambda indexes: [hashes[i] for i in indexes]


def _go_int(text: str) -> int | None:
    """strconv.ParseInt(text, 10, 64) (and Atoi on 64-bit): None if Go would fail."""
    if not _GO_INT.fullmatch(text):
        return None
    n = int(text)
    return n if -_INT64_MAX - 1 <= n <= _INT64_MAX else None


def _maxpow2(n: int) -> tuple[int, int]:
    """k, the largest power of two smaller than n (1 for n <= 2), and l = log2(k)."""
    level = max((n - 1).bit_length() - 1, 0)
    return 1 << level, level


def _trailing_zeros(n: int) -> int:
    return (n & -n).bit_length() - 1 if n else 64


# Stored hash indexes (tlog.go).


def stored_hash_index(level: int, n: int) -> int:
    """The position of hash (level, n) in the dense stored-hash sequence.

    tlog.go walks up to record m = (n+1)*2**level - 1, the last one under the hash, and
    sums m + m/2 + m/4 + ...: that sum is 2m - popcount(m). Closed form, since proofs on
    the live database compute these by the thousand (a tenth of a cold build's CPU)."""
    m = ((n + 1) << level) - 1
    return 2 * m - m.bit_count() + level


def split_stored_hash_index(index: int) -> tuple[int, int]:
    """The inverse of stored_hash_index: (level, n).

    As tlog.go: the hash was stored with the last record n whose own leaf hash is at or
    before `index` (stored_hash_index(0, n) = 2n - popcount(n), increasing in n), and
    sits `index - stored_hash_index(0, n)` levels above it. Since 2n - 64 < that <= 2n,
    n lies in [index/2, index/2 + 64): found by bisection rather than a step at a time."""
    lo, hi = index // 2, index // 2 + 64  # f(lo) <= index < f(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if 2 * mid - mid.bit_count() <= index:
            lo = mid
        else:
            hi = mid
    level = index - (2 * lo - lo.bit_count())
    return level, lo >> level


def stored_hash_count(n: int) -> int:
    """How many hashes a log of n records stores."""
    if n == 0:
        return 0
    count = stored_hash_index(0, n - 1) + 1
    i = n - 1
    while i & 1:
        count += 1
        i >>= 1
    return count


def stored_hashes_for_record_hash(n: int, h: Hash, reader: HashReader) -> list[Hash]:
    """The hashes to append when record n (with leaf hash h) is added to the log."""
    m = _trailing_zeros(n + 1)
    indexes = [stored_hash_index(i, (n >> i) - 1) for i in reversed(range(m))]
    old = list(reader(indexes))
    if len(old) != len(indexes):
        raise FormatError(f"tlog: ReadHashes({len(indexes)} indexes) = {len(old)} hashes")
    hashes = [h]
    for i in range(m):
        h = node_hash(old[m - 1 - i], h)
        hashes.append(h)
    return hashes


def stored_hashes(n: int, data: bytes, reader: HashReader) -> list[Hash]:
    """The hashes to append when record n with the given data is added to the log."""
    return stored_hashes_for_record_hash(n, record_hash(data), reader)


def _read(reader: HashReader, indexes: list[int]) -> list[Hash]:
    hashes = list(reader(indexes))
    if len(hashes) != len(indexes):
        raise FormatError(f"tlog: ReadHashes({len(indexes)} indexes) = {len(hashes)} hashes")
    return hashes


# Tree hashes and proofs (tlog.go; RFC 6962 §2.1).


def _sub_tree_index(lo: int, hi: int, need: list[int]) -> list[int]:
    """Append the stored indexes needed for the hash of records [lo, hi)."""
    while lo < hi:
        k, level = _maxpow2(hi - lo + 1)
        need.append(stored_hash_index(level, lo >> level))
        lo += k
    return need


def _sub_tree_hash(lo: int, hi: int, hashes: list[Hash]) -> tuple[Hash, list[Hash]]:
    """The hash of records [lo, hi) from the hashes _sub_tree_index named; and the rest."""
    num_tree = 0
    while lo < hi:
        k, _ = _maxpow2(hi - lo + 1)
        num_tree += 1
        lo += k
    h = hashes[num_tree - 1]
    for i in range(num_tree - 2, -1, -1):
        h = node_hash(hashes[i], h)
    return h, hashes[num_tree:]


def tree_hash(n: int, reader: HashReader) -> Hash:
    """The root hash of the tree of the first n records."""
    if n == 0:
        return EMPTY_HASH
    h, rest = _sub_tree_hash(0, n, _read(reader, _sub_tree_index(0, n, [])))
    assert not rest, "tlog: bad index math in TreeHash"
    return h


def _leaf_proof_index(lo: int, hi: int, n: int, need: list[int]) -> list[int]:
    if lo + 1 == hi:
        return need
    k, _ = _maxpow2(hi - lo)
    if n < lo + k:
        _leaf_proof_index(lo, lo + k, n, need)
        return _sub_tree_index(lo + k, hi, need)
    _sub_tree_index(lo, lo + k, need)
    return _leaf_proof_index(lo + k, hi, n, need)


def _leaf_proof(lo: int, hi: int, n: int, hashes: list[Hash]) -> tuple[list[Hash], list[Hash]]:
    """The audit path for leaf n in [lo, hi), leaf side first; and the unused hashes."""
    if lo + 1 == hi:
        return [], hashes
    k, _ = _maxpow2(hi - lo)
    if n < lo + k:
        p, hashes = _leaf_proof(lo, lo + k, n, hashes)
        th, hashes = _sub_tree_hash(lo + k, hi, hashes)
    else:
        th, hashes = _sub_tree_hash(lo, lo + k, hashes)
        p, hashes = _leaf_proof(lo + k, hi, n, hashes)
    return [*p, th], hashes


def prove_record(t: int, n: int, reader: HashReader) -> list[Hash]:
    """The proof that the tree of size t contains record n (RFC 6962's audit path)."""
    if t < 0 or n < 0 or n >= t:
        raise ProofError("tlog: invalid inputs in ProveRecord")
    indexes = _leaf_proof_index(0, t, n, [])
    if not indexes:
        return []
    p, rest = _leaf_proof(0, t, n, _read(reader, indexes))
    assert not rest, "tlog: bad index math in ProveRecord"
    return p


def _run_record_proof(p: Sequence[Hash], lo: int, hi: int, n: int, leaf: Hash) -> Hash:
    """The hash of [lo, hi) implied by proof p for leaf n, or ProofError."""
    if lo + 1 == hi:
        if p:
            raise ProofError("invalid transparency proof")
        return leaf
    if not p:
        raise ProofError("invalid transparency proof")
    k, _ = _maxpow2(hi - lo)
    if n < lo + k:
        return node_hash(_run_record_proof(p[:-1], lo, lo + k, n, leaf), p[-1])
    return node_hash(p[-1], _run_record_proof(p[:-1], lo + k, hi, n, leaf))


def check_record(p: Sequence[Hash], t: int, th: Hash, n: int, h: Hash) -> None:
    """Check that p proves the tree of size t and hash th has record n with hash h."""
    if t < 0 or n < 0 or n >= t:
        raise ProofError("tlog: invalid inputs in CheckRecord")
    if _run_record_proof(p, 0, t, n, h) != th:
        raise ProofError("invalid transparency proof")


def _tree_proof_index(lo: int, hi: int, n: int, need: list[int]) -> list[int]:
    if n == hi:
        return need if lo == 0 else _sub_tree_index(lo, hi, need)
    k, _ = _maxpow2(hi - lo)
    if n <= lo + k:
        _tree_proof_index(lo, lo + k, n, need)
        return _sub_tree_index(lo + k, hi, need)
    _sub_tree_index(lo, lo + k, need)
    return _tree_proof_index(lo + k, hi, n, need)


def _tree_proof(lo: int, hi: int, n: int, hashes: list[Hash]) -> tuple[list[Hash], list[Hash]]:
    """The consistency proof for [lo, hi) against the old size n; and the unused hashes."""
    if n == hi:
        if lo == 0:
            return [], hashes
        th, hashes = _sub_tree_hash(lo, hi, hashes)
        return [th], hashes
    k, _ = _maxpow2(hi - lo)
    if n <= lo + k:
        p, hashes = _tree_proof(lo, lo + k, n, hashes)
        th, hashes = _sub_tree_hash(lo + k, hi, hashes)
    else:
        th, hashes = _sub_tree_hash(lo, lo + k, hashes)
        p, hashes = _tree_proof(lo + k, hi, n, hashes)
    return [*p, th], hashes


def prove_tree(t: int, n: int, reader: HashReader) -> list[Hash]:
    """The proof that the tree of size t extends the tree of size n (RFC 6962 consistency)."""
    if t < 1 or n < 1 or n > t:
        raise ProofError("tlog: invalid inputs in ProveTree")
    indexes = _tree_proof_index(0, t, n, [])
    if not indexes:
        return []
    p, rest = _tree_proof(0, t, n, _read(reader, indexes))
    assert not rest, "tlog: bad index math in ProveTree"
    return p


def _run_tree_proof(p: Sequence[Hash], lo: int, hi: int, n: int, old: Hash) -> tuple[Hash, Hash]:
    """The hashes of [lo, hi) in the old tree (size n) and the new one implied by p."""
    if n == hi:
        if lo == 0:
            if p:
                raise ProofError("invalid transparency proof")
            return old, old
        if len(p) != 1:
            raise ProofError("invalid transparency proof")
        return p[0], p[0]
    if not p:
        raise ProofError("invalid transparency proof")
    k, _ = _maxpow2(hi - lo)
    if n <= lo + k:
        oh, th = _run_tree_proof(p[:-1], lo, lo + k, n, old)
        return oh, node_hash(th, p[-1])
    oh, th = _run_tree_proof(p[:-1], lo + k, hi, n, old)
    return node_hash(p[-1], oh), node_hash(p[-1], th)


def check_tree(p: Sequence[Hash], t: int, th: Hash, n: int, h: Hash) -> None:
    """Check that p proves the tree (t, th) contains the tree (n, h) as a prefix."""
    if t < 1 or n < 1 or n > t:
        raise ProofError("tlog: invalid inputs in CheckTree")
    if _run_tree_proof(p, 0, t, n, h) != (h, th):
        raise ProofError("invalid transparency proof")


# Tree heads and records (tlog/note.go).


@dataclass(frozen=True)
class Tree:
    """A tree head: its size (number of records) and root hash."""

    n: int
    hash: Hash


def format_tree(tree: Tree) -> bytes:
    """The tree head's note text: "go.sum database tree\\n<N>\\n<base64 hash>\\n"."""
    return b"%s%d\n%s\n" % (_TREE_PREFIX, tree.n, format_hash(tree.hash).encode())


def parse_tree(text: bytes | str) -> Tree:
    """tlog.ParseTree: the tree head in a note's text; later lines are ignored."""
    if isinstance(text, str):
        text = text.encode()
    if not text.startswith(_TREE_PREFIX) or text.count(b"\n") < 3 or len(text) > 1_000_000:
        raise FormatError("malformed tree note")
    lines = text.split(b"\n", 3)
    n = _go_int(lines[1].decode("latin-1"))
    if n is None or n < 0 or lines[1] != str(n).encode():
        raise FormatError("malformed tree note")
    h = decode_base64(lines[2].decode("latin-1"))
    if h is None or len(h) != HASH_SIZE:
        raise FormatError("malformed tree note")
    return Tree(n, h)


def is_valid_record_text(text: bytes) -> bool:
    """UTF-8 lines without control characters, ending in a newline, with no blank line."""
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return decoded.endswith("\n") and "\n\n" not in decoded and not _CONTROL.search(decoded)


def format_record(record_id: int, text: bytes) -> bytes:
    """tlog.FormatRecord: "<id>\\n<text>\\n", a record as a lookup answers it."""
    if not is_valid_record_text(text):
        raise FormatError("malformed record data")
    return b"%d\n%s\n" % (record_id, text)


def parse_record(msg: bytes) -> tuple[int, bytes, bytes]:
    """tlog.ParseRecord: the record id, its text, and what follows the blank line."""
    i = msg.find(b"\n")
    record_id = _go_int(msg[:i].decode("latin-1")) if i >= 0 else None
    if record_id is None:
        raise FormatError("malformed record data")
    msg = msg[i + 1 :]
    j = msg.find(b"\n\n")
    if j < 0 or not is_valid_record_text(msg[: j + 1]):
        raise FormatError("malformed record data")
    return record_id, msg[: j + 1], msg[j + 2 :]


# Tiles (tile.go).


@dataclass(frozen=True)
class Tile:
    """Tile(H, L, N, W): W hashes of level H*L from N*2**H on; level -1 holds record data."""

    height: int  # H, 1..30
    level: int  # L, -1 (data) .. 63
    n: int  # N, the tile's number within its level
    width: int  # W, 1..2**H; 2**H is a full tile

    def path(self) -> str:
        """tlog.Tile.Path: ``tile/H/L/NNN[.p/W]``; N in 3-digit elements, all but the last "x"ed."""
        n = self.n
        number = f"{n % _PATH_BASE:03d}"
        while n >= _PATH_BASE:
            n //= _PATH_BASE
            number = f"x{n % _PATH_BASE:03d}/{number}"
        partial = "" if self.width == 1 << self.height else f".p/{self.width}"
        level = "data" if self.level == -1 else str(self.level)
        return f"tile/{self.height}/{level}/{number}{partial}"

    def full(self) -> Tile:
        """The complete tile of which this one is a prefix."""
        return Tile(self.height, self.level, self.n, 1 << self.height)


def _bad_path(path: str) -> FormatError:
    return FormatError(f'malformed tile path "{path}"')


def parse_tile_path(path: str) -> Tile:
    """tlog.ParseTilePath: the inverse of Tile.path, accepting only its exact output."""
    f = path.split("/")
    if len(f) < 4 or f[0] != "tile":
        raise _bad_path(path)
    is_data = f[2] == "data"
    h, level = _go_int(f[1]), _go_int("0" if is_data else f[2])
    if h is None or level is None or not 1 <= h <= 30 or level < 0:
        raise _bad_path(path)
    w = 1 << h
    if f[-2].endswith(".p"):
        ww = _go_int(f[-1])
        if ww is None or not 0 < ww < w:
            raise _bad_path(path)
        w = ww
        f = [*f[:-2], f[-2].removesuffix(".p")]
    n = 0
    for element in f[3:]:
        nn = _go_int(element.removeprefix("x"))
        if nn is None or not 0 <= nn < _PATH_BASE:
            raise _bad_path(path)
        n = n * _PATH_BASE + nn
    tile = Tile(h, -1 if is_data else level, n, w)
    if n > _INT64_MAX or tile.path() != path:
        raise _bad_path(path)
    return tile


@functools.lru_cache(maxsize=4096)
def _tile_for_index(h: int, index: int) -> tuple[Tile, int, int]:
    """The least tile of height h holding a stored index, and the byte range deriving its hash.

    Remembered (a pure function of two ints, and Tile is frozen): every proof in a tree
    asks for the same indexes of its tree hash, in every round."""
    level, n = split_stored_hash_index(index)
    tile_level = level // h
    level -= tile_level * h  # now the level within the tile
    tile_n = n << level >> h
    n -= tile_n << h >> level  # now n within the tile at that level
    tile = Tile(h, tile_level, tile_n, (n + 1) << level)
    return tile, (n << level) * HASH_SIZE, ((n + 1) << level) * HASH_SIZE


def tile_for_index(h: int, index: int) -> Tile:
    """tlog.TileForIndex: the tile of height h and least width holding the stored index."""
    if h <= 0:
        raise ValueError(f"TileForIndex: invalid height {h}")
    return _tile_for_index(h, index)[0]


@functools.lru_cache(maxsize=1024)
def _tile_hash(data: bytes) -> Hash:
    """The subtree hash over the 2**k hashes in data.

    Remembered by the bytes (a pure function, so a remembered answer is the answer):
    every proof in a newer tree authenticates the same complete tiles again, and on a
    cold graph of the live database that hashing was most of the proofs' CPU. At most
    1024 of them (8 KiB each) are held."""
    return _subtree_hash(data)


_NODE_PREFIX = hashlib.sha256(b"\x01")  # node_hash's prefix, hashed once and copied


def _subtree_hash(data: bytes) -> Hash:
    """node_hash over the 2**k hashes in data, a level at a time: each level's hashes
    joined are the next level's pairs. A copy of a hash of the prefix and one update per
    node, with no recursion and no slices of slices: the same SHA-256 calls as node_hash
    on each pair (tests compare it with that), at about half the cost in Python."""
    copy = _NODE_PREFIX.copy
    while len(data) > HASH_SIZE:
        level = []
        for i in range(0, len(data), 2 * HASH_SIZE):
            h = copy()
            h.update(data[i : i + 2 * HASH_SIZE])
            level.append(h.digest())
        data = b"".join(level)
    return data


def hash_from_tile(t: Tile, data: bytes, index: int) -> Hash:
    """tlog.HashFromTile: the hash at a stored index, from tile t's data (t or a wider tile)."""
    if not (1 <= t.height <= 30 and 0 <= t.level < 64 and 1 <= t.width <= 1 << t.height):
        raise FormatError(f"invalid tile {t.path()}")
    if len(data) < t.width * HASH_SIZE:
        raise FormatError(f"data len {len(data)} too short for tile {t.path()}")
    t1, start, end = _tile_for_index(t.height, index)
    if t.level != t1.level or t.n != t1.n or t.width < t1.width:
        raise FormatError(f"index {index} is in {t1.path()} not {t.path()}")
    if end - start == HASH_SIZE:  # a hash as stored: nothing to hash, nor to remember
        return data[start:end]
    return _tile_hash(data[start:end])


def new_tiles(h: int, old_size: int, new_size: int) -> list[Tile]:
    """tlog.NewTiles: the hash tiles to publish when the log grows from old_size to new_size."""
    if h <= 0:
        raise ValueError(f"NewTiles: invalid height {h}")
    tiles = []
    level = 0
    while new_size >> (h * level) > 0:
        old_n, new_n = old_size >> (h * level), new_size >> (h * level)
        if old_n != new_n:
            tiles += [Tile(h, level, n, 1 << h) for n in range(old_n >> h, new_n >> h)]
            n = new_n >> h
            if w := new_n - (n << h):
                tiles.append(Tile(h, level, n, w))
        level += 1
    return tiles


def read_tile_data(t: Tile, reader: HashReader) -> bytes:
    """tlog.ReadTileData: the bytes of hash tile t, from a log's stored hashes."""
    start = t.n << t.height
    indexes = [stored_hash_index(t.height * t.level, start + i) for i in range(t.width)]
    return b"".join(_read(reader, indexes))


@functools.lru_cache(maxsize=4096)
def _tile_parent(t: Tile, k: int, n: int) -> Tile | None:
    """t's k'th parent tile in the tiling of a tree of size n, or None if there is none.
    Remembered, as _tile_for_index."""
    level, number = t.level + k, t.n >> (k * t.height)
    width = 1 << t.height
    limit = n >> (level * t.height)
    if (number << t.height) + width >= limit:
        if number << t.height >= limit:
            return None
        width = limit - (number << t.height)
    return Tile(t.height, level, number, width)


# Reading hashes out of authenticated tiles (tile.go: tileHashReader).


@dataclass
class _TilePlan:
    """Which tiles a read needs, in an order where parents come before children."""

    tiles: list[Tile]
    order: dict[Tile, int]  # tiles[order[t]] == t
    stx: list[int]  # the stored indexes of the tree hash's subtrees
    stx_tile: list[int]  # stx[i] is in tiles[stx_tile[i]]
    index_tile: list[int]  # indexes[i] is in tiles[index_tile[i]]

    def add(self, tile: Tile) -> int:
        self.order[tile] = len(self.tiles)
        self.tiles.append(tile)
        return self.order[tile]


@functools.lru_cache(maxsize=256)
def _tree_plan(
    n: int, h: int
) -> tuple[tuple[Tile, ...], dict[Tile, int], tuple[int, ...], tuple[int, ...]]:
    """The start of every read's plan in a tree of size n: the tiles holding the tree
    hash's subtrees, with their order, the subtrees' stored indexes, and which tile holds
    each (_TilePlan's fields). Remembered per tree size, as every read of the tree plans
    them first; the caller copies the dict."""
    plan = _TilePlan([], {}, _sub_tree_index(0, n, []), [], [])
    for x in plan.stx:
        tile = _tile_parent(_tile_for_index(h, x)[0], 0, n)
        assert tile is not None
        plan.stx_tile.append(plan.order[tile] if tile in plan.order else plan.add(tile))
    return tuple(plan.tiles), plan.order, tuple(plan.stx), tuple(plan.stx_tile)


# Proofs remembered by TileHashReader (each holds references to tiles kept anyway).
AUTHENTICATED_MAX = 1024


class TileHashReader:
    """tlog.TileHashReader: a HashReader over `tree` that reads tiles and trusts none unproven.

    Every tile read is authenticated, before any hash is returned, against the tree hash
    (the tiles holding the tree's subtree hashes) or against an authenticated parent tile.
    `read_tile(tile)` returns a tile's bytes. `verified` collects the tiles found valid,
    for the caller to keep (tlog.TileReader.SaveTiles's role). `prefetch(tiles)`, if
    given, is told every tile a read needs before it reads them one by one, so it can
    fetch them all at once.

    `authenticated`, shared between readers, remembers which tiles (with which bytes)
    were authenticated against which tree, so the same proof is not computed again: it
    is pure Python here (a tile's hash is 255 SHA-256 calls), and the records of one
    tile share it. Added to Go's design, which recomputes it cheaply.
    """

    def __init__(
        self,
        tree: Tree,
        height: int,
        read_tile: Callable[[Tile], bytes],
        authenticated: set[object] | None = None,
        prefetch: Callable[[list[Tile]], None] | None = None,
    ) -> None:
        self.tree, self.height = tree, height
        self._read_tile = read_tile
        self._authenticated = authenticated
        self._prefetch = prefetch
        self.verified: dict[Tile, bytes] = {}

    def __call__(self, indexes: Sequence[int]) -> list[Hash]:
        plan = self._plan(indexes)
        if self._prefetch is not None and len(plan.tiles) > 1:
            # tlog.TileReader.ReadTiles reads them all at once (client.go: in parallel):
            # one round trip for the proof, not one per tile.
            self._prefetch(plan.tiles)
        data = [self._read_checked(tile) for tile in plan.tiles]
        # The tree, the tiles and their bytes decide the outcome of _authenticate.
        proof = (self.tree, tuple(plan.tiles), tuple(data))
        if self._authenticated is None or proof not in self._authenticated:
            self._authenticate(plan, data)
            self._remember(proof)
        self.verified.update(zip(plan.tiles, data, strict=True))
        return [
            hash_from_tile(plan.tiles[j], data[j], x)
            for j, x in zip(plan.index_tile, indexes, strict=True)
        ]

    def tiles(self, indexes: Sequence[int]) -> list[Tile]:
        """The tiles a read of `indexes` fetches, exactly as tlog.TileHashReader asks for
        them (parents before children), without reading any."""
        return self._plan(indexes).tiles

    def _plan(self, indexes: Sequence[int]) -> _TilePlan:
        n, h = self.tree.n, self.height
        tiles, order, stx, stx_tile = _tree_plan(n, h)
        plan = _TilePlan(list(tiles), dict(order), list(stx), list(stx_tile), [])
        end = stored_hash_index(0, n)
        for x in indexes:
            if x >= end:
                raise ProofError("indexes not in tree")
            plan.index_tile.append(self._plan_index(plan, _tile_for_index(h, x)[0]))
        return plan

    def _plan_index(self, plan: _TilePlan, tile: Tile) -> int:
        """Plan the tile holding an index and any parents needed to authenticate it."""
        n = self.tree.n
        # Walk up parent tiles until one already planned (so authenticated) ...
        k = 0
        while (parent := _tile_parent(tile, k, n)) not in plan.order:
            if parent is None:
                raise ProofError("indexes not in tree")
            k += 1
        if k == 0:
            return plan.order[parent]
        # ... then back down, planning each child after its parent.
        for j in range(k - 1, -1, -1):
            child = _tile_parent(tile, j, n)
            if child is None or child.width != 1 << child.height:
                raise AssertionError(f"bad math in tileHashReader: {n} {child}")
            plan.add(child)
        return len(plan.tiles) - 1

    def _read_checked(self, tile: Tile) -> bytes:
        data = self._read_tile(tile)
        if len(data) != tile.width * HASH_SIZE:
            raise FormatError(
                f"malformed tile {tile.path()}: {len(data)} bytes, want {tile.width * HASH_SIZE}"
            )
        return data

    def _authenticate(self, plan: _TilePlan, data: list[bytes]) -> None:
        """Check the tiles of the tree hash against it, then every other tile against its parent.

        The first part is remembered apart too (in `authenticated`, by the tree and those
        tiles' bytes): it is the same in every read of a tree, while the rest differs
        from record to record."""
        first = plan.stx_tile[-1] + 1 if plan.stx_tile else 0  # the tree hash's tiles
        tree_tiles = ("tree hash", self.tree, tuple(plan.tiles[:first]), tuple(data[:first]))
        if self._authenticated is None or tree_tiles not in self._authenticated:
            self._authenticate_tree_hash(plan, data)
            self._remember(tree_tiles)
        for i in range(first, len(plan.tiles)):
            tile = plan.tiles[i]
            parent = _tile_parent(tile, 1, self.tree.n)
            assert parent is not None and parent in plan.order, "tileHashReader: lost parent"
            j = plan.order[parent]
            expected = hash_from_tile(
                parent, data[j], stored_hash_index(parent.level * parent.height, tile.n)
            )
            if expected != _tile_hash(data[i]):
                raise ProofError("downloaded inconsistent tile")

    def _authenticate_tree_hash(self, plan: _TilePlan, data: list[bytes]) -> None:
        th = b""  # never a hash: an empty tree has no tiles to authenticate
        for i in range(len(plan.stx) - 1, -1, -1):
            j = plan.stx_tile[i]
            h = hash_from_tile(plan.tiles[j], data[j], plan.stx[i])
            th = node_hash(h, th) if th else h
        if th != self.tree.hash:
            raise ProofError("downloaded inconsistent tile")

    def _remember(self, proof: object) -> None:
        if self._authenticated is not None:
            if len(self._authenticated) >= AUTHENTICATED_MAX:
                self._authenticated.clear()
            self._authenticated.add(proof)
