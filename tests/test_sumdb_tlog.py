"""Tests for modgate.sumdb.tlog: hashes, tree heads, records, tiles and proofs.

Values marked "Go" were printed by a throwaway Go program calling
golang.org/x/mod/sumdb/tlog (v0.43.0) over the same test log: 300 records, record i
being the go.sum lines `record(i)` builds below.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modgate.sumdb import note
from modgate.sumdb.tlog import (
    EMPTY_HASH,
    FormatError,
    Hash,
    ProofError,
    Tile,
    TileHashReader,
    Tree,
    check_record,
    check_tree,
    format_hash,
    format_record,
    format_tree,
    hash_from_tile,
    hashes_reader,
    is_valid_record_text,
    new_tiles,
    node_hash,
    parse_hash,
    parse_record,
    parse_tile_path,
    parse_tree,
    prove_record,
    prove_tree,
    read_tile_data,
    record_hash,
    split_stored_hash_index,
    stored_hash_count,
    stored_hash_index,
    stored_hashes,
    tile_for_index,
    tree_hash,
)


def record(i: int) -> bytes:
    """Record i of the test log: the go.sum lines of example.com/m<i> v1.0.0."""
    z = base64.b64encode(hashlib.sha256(b"zip %d" % i).digest()).decode()
    m = base64.b64encode(hashlib.sha256(b"mod %d" % i).digest()).decode()
    return (f"example.com/m{i} v1.0.0 h1:{z}\nexample.com/m{i} v1.0.0/go.mod h1:{m}\n").encode()


def build_log(n: int) -> list[Hash]:
    """The stored hashes of the test log's first n records."""
    hashes: list[Hash] = []
    for i in range(n):
        hashes += stored_hashes(i, record(i), hashes_reader(hashes))
    return hashes


LOG = build_log(300)
READ = hashes_reader(LOG)


def h(text: str) -> Hash:
    return base64.b64decode(text)


# fmt: off
# Go: (level, n, StoredHashIndex(level, n))
STORED_HASH_INDEX = [
    (0, 0, 0), (0, 1, 1), (0, 2, 3), (0, 3, 4), (0, 4, 7), (0, 5, 8), (0, 6, 10), (0, 7, 11),
    (1, 0, 2), (1, 1, 5), (1, 2, 9), (1, 3, 12), (1, 4, 17), (1, 5, 20), (1, 6, 24), (1, 7, 27),
    (2, 0, 6), (2, 1, 13), (2, 2, 21), (2, 3, 28), (2, 4, 37), (2, 5, 44), (2, 6, 52),
    (2, 7, 59), (3, 0, 14), (3, 1, 29), (3, 2, 45), (3, 3, 60), (3, 4, 77), (3, 5, 92),
    (3, 6, 108), (3, 7, 123), (4, 0, 30), (4, 1, 61), (4, 2, 93), (4, 3, 124), (4, 4, 157),
    (4, 5, 188), (4, 6, 220), (4, 7, 251),
]

# Go: (index, SplitStoredHashIndex(index))
SPLIT_STORED_HASH_INDEX = [
    (0, (0, 0)), (1, (0, 1)), (2, (1, 0)), (3, (0, 2)), (4, (0, 3)), (5, (1, 1)), (6, (2, 0)),
    (7, (0, 4)), (8, (0, 5)), (9, (1, 2)), (10, (0, 6)), (11, (0, 7)), (12, (1, 3)),
    (13, (2, 1)), (14, (3, 0)), (15, (0, 8)), (16, (0, 9)), (17, (1, 4)), (18, (0, 10)),
    (19, (0, 11)), (20, (1, 5)), (21, (2, 2)), (22, (0, 12)), (23, (0, 13)), (24, (1, 6)),
    (25, (0, 14)), (26, (0, 15)), (27, (1, 7)), (28, (2, 3)), (29, (3, 1)), (30, (4, 0)),
    (31, (0, 16)), (32, (0, 17)), (33, (1, 8)), (34, (0, 18)), (35, (0, 19)), (36, (1, 9)),
    (37, (2, 4)), (38, (0, 20)), (39, (0, 21)),
]

# Go: (n, StoredHashCount(n))
STORED_HASH_COUNT = [
    (0, 0), (1, 1), (2, 3), (3, 4), (4, 7), (5, 8), (6, 10), (7, 11), (8, 15), (9, 16),
    (10, 18), (11, 19), (12, 22), (13, 23), (14, 25), (15, 26), (16, 31), (17, 32), (18, 34),
    (19, 35), (20, 38),
]

# Go: (n, TreeHash of records 0..n-1 of the test log)
TREE_HASH = [
    (1, "0TI2VZeq9oPieHNQl9dM+EvAxUH2mjOxxO0oh6sg6zQ="),
    (2, "2Efg5OFrSpPY1l4xjlpj494Je8bSmjOjgfcaSokCIdE="),
    (3, "KfJFmP0W+Y3r6L3RyXmbtqeU/VIN7M63QC9v57usKX8="),
    (4, "q1H8KoiSU5oaxNsz+e88FDW5AwYbKiWbL5yRMYgHSCg="),
    (5, "63mYQummOP8mU6vRK+/xJZujBsbfejKAkImeHUngJW0="),
    (7, "7Cokjdz2uIu5FC9+Y7BgIQgdhrqFEDPaxAzdA93EDCU="),
    (8, "vbfxe0cvMyjUSTZJ8R0m5o6do3BATDFXLK3482MRn2k="),
    (9, "G7ZihYmSfTlGjwuPKGK4Ln0tv5J/l3RIjUYjUy0Oy54="),
    (15, "nDosME3dgurvRr6n7gZQsIyRg88BQsrhAivga+1nVa4="),
    (16, "mWfg3LnDG2OM3umF/n6b2u/V/3dNl0AdXHRiPfHDnEk="),
    (17, "WU+EeXTLKsun2IDXCdr8e8eIozFwM6ZsIYZrJ50JJ+g="),
    (31, "qmCC0kfYiXY1hLLsim9qSNDHCdcUppDcFjOWBQnUtnw="),
    (32, "NIihdPRq8ojR6X6YziP67/lzbkt2tvu6Ew4AtnpzaVM="),
    (33, "bz2oF2yDmxHwg7mxyqZhCK5NgwFsWxENweh9tWQt6fg="),
    (63, "0glo8VzHa/VaZrI37/l4GjUmIMRp/w5cYz3/EvJgf0s="),
    (64, "qLLGQzRccJDRbvFhMZ943dg15saJ3RHKCCMXAk5AzbM="),
    (65, "74Mq9mkpuTy6xi2dJhA1JtVMb2ZadD6ZWTZloiOlEqM="),
    (127, "DwaLqvu0/jLOiseCQPxwlyLf6kLLsPwfryvfPYACSQ8="),
    (128, "31bG6R6Aa6IQF766rqr5biO9P8FZpK7x1Z9E+Euu0Yg="),
    (129, "aWWpoV1RQ48ah6tb4BJiZzgR/0T2RD6uaiNoJGqoYt8="),
    (255, "8CokaVfRZ3vQmz+IpqXnpX88XeK60+4ItkckhUX6uuE="),
    (256, "6SazpmzKnN/RCCyEEU7XZMycXorbM2x/2uoLwvYG0ik="),
    (257, "jLqScTfowRZdMeXRv+cwzcsqC3QFWgkrnk4kbyaMxMQ="),
    (299, "Mn0cPUM6UIolNeyyWHldoOzqwaUWaMUq0UDhJseCneo="),
    (300, "odRYz+zdY8WVezWaSA66rvXMtUbFK+tMeprw6FKeo7Q="),
]

# Go: (t, n, ProveRecord(t, n)): record n is in the tree of size t
RECORD_PROOFS = [
    (1, 0, []),
    (2, 0, [
        "L/PVrQU9NrmRzcKLsf9S/p3pLzZtq2EujF4mtn8N/BA=",
    ]),
    (2, 1, [
        "0TI2VZeq9oPieHNQl9dM+EvAxUH2mjOxxO0oh6sg6zQ=",
    ]),
    (3, 2, [
        "2Efg5OFrSpPY1l4xjlpj494Je8bSmjOjgfcaSokCIdE=",
    ]),
    (7, 3, [
        "pdsIwNgpdeDQztVrqP1tFtYBAL3R4Ysog+9nC4vImpY=",
        "2Efg5OFrSpPY1l4xjlpj494Je8bSmjOjgfcaSokCIdE=",
        "AYYVEdOav4aAa9Z/yAcdsCEYIvC6vuzFpTQ5+pt72VE=",
    ]),
    (8, 7, [
        "FHrzFR1JA2GEj2yTr5+bocBRi+ojdRcsoSgEaHpmBK8=",
        "3oc+HcVGZ/vsaAjMUaRPBZm8QhyEZQ3RF4eGWEKgMWU=",
        "q1H8KoiSU5oaxNsz+e88FDW5AwYbKiWbL5yRMYgHSCg=",
    ]),
    (9, 8, [
        "vbfxe0cvMyjUSTZJ8R0m5o6do3BATDFXLK3482MRn2k=",
    ]),
    (256, 0, [
        "L/PVrQU9NrmRzcKLsf9S/p3pLzZtq2EujF4mtn8N/BA=",
        "LzV/S50ZmBIuGNhVZ2HVGMn371iIaK9Ko6ZsG9W0Izw=",
        "+g5I+VGvtMcULBLFWwjjwf8HO+AC5U1+qOGLS9TWSbk=",
        "F0bHfo30df3UonH3uit/evwnjtNke8dVOpG/59ad5EQ=",
        "bq4kWijrAEPFmB7Fp61SQQzAtlJbhuwz+qxy7dpTbL4=",
        "8bSOLCIGpBp0fkTIh6vKaVHCG0jOWWIe/fOQrMYEos0=",
        "iOiOIot0ldRZu7UbndhYdgwEz2RN4t7lGMh4AkAYdQI=",
        "AQZ0y1okMmEOYaKB6vL4AS0xDFeT/hwOQ/5obscvYks=",
    ]),
    (257, 256, [
        "6SazpmzKnN/RCCyEEU7XZMycXorbM2x/2uoLwvYG0ik=",
    ]),
    (300, 150, [
        "PcDB2MYRFVxbbFeoLBPkTA2tyTt7872RJ+mPw46IBMU=",
        "v4lOrYkUB/i3wMA/A+BDfqB1csLaCSmN/F/A6c6WKAc=",
        "cVEI61/9WUsCRztAStBM4cbfV7h4u2gp3IaUrIxoLX8=",
        "q4d1YVn429S8E7uVkLiikNkfLjfv/hGuWAqCACS+RL0=",
        "UOUoCPsuBC1B73mcHiiXhUua8AWp5BZ3ryX6hLyuQ1o=",
        "dzdShgB0JKWJi4LGumgtvxwFC4pFVfylzA8VUVoLp04=",
        "fAubDBsAp2zeJ8VHG1VTETKJIARYKYwE+J+Aj2h6CAs=",
        "31bG6R6Aa6IQF766rqr5biO9P8FZpK7x1Z9E+Euu0Yg=",
        "083l89piOUAJiQuLXq/m3P/90zelq65Qv87ZJAMXbEQ=",
    ]),
    (300, 299, [
        "OsW50IorJor/ZHzYMgAFXkj+GsLl+7RJsaS599244N4=",
        "0hbIPyBCB/ZT3pDvSh497p95+SVc2gZU92TaSfz3d24=",
        "igWpA+2seGpbEuZXYFS4jjWJJjh0DwDjds7sLHlc9pA=",
        "q57/+hidhNVChLs1z1NLunZsEm/96q7laU2+TBXVYDs=",
        "6SazpmzKnN/RCCyEEU7XZMycXorbM2x/2uoLwvYG0ik=",
    ]),
]

# Go: (t, n, ProveTree(t, n)): the tree of size t extends that of size n
TREE_PROOFS = [
    (1, 1, []),
    (2, 1, [
        "L/PVrQU9NrmRzcKLsf9S/p3pLzZtq2EujF4mtn8N/BA=",
    ]),
    (3, 2, [
        "pdsIwNgpdeDQztVrqP1tFtYBAL3R4Ysog+9nC4vImpY=",
    ]),
    (7, 3, [
        "pdsIwNgpdeDQztVrqP1tFtYBAL3R4Ysog+9nC4vImpY=",
        "yVplF/etiai7b12+jWycAHxADwPCA/MdXvCokJRftJ8=",
        "2Efg5OFrSpPY1l4xjlpj494Je8bSmjOjgfcaSokCIdE=",
        "AYYVEdOav4aAa9Z/yAcdsCEYIvC6vuzFpTQ5+pt72VE=",
    ]),
    (8, 4, [
        "+g5I+VGvtMcULBLFWwjjwf8HO+AC5U1+qOGLS9TWSbk=",
    ]),
    (9, 8, [
        "APZWKDql9Qpfuiox3IlhWocZi+jKj2iOWBWiDj0x594=",
    ]),
    (256, 255, [
        "qGwPfhVAwM1uHaL88YJCvU6uFAjdMwz1TszqnDK0ke4=",
        "YuUxFSV01mv7zOTW6cvzfvjPxadsKTGpSXD9Z5Z0TQg=",
        "t5bIQZHij0Ojzj0PFLfVIIcxElHAkNSzZTgV+k8GeNU=",
        "KqKHQtp8r7MFcczTC32b4ce8IELZtcpUQoW4DyDfps8=",
        "Sq1n7NSeZ36p7ITdb8coyAnGDcYg2FNT6JZoi9w0KYc=",
        "CobD1kbXBa0eISxTx33ukJLmVp8EBJVQPP+UFqFOuZk=",
        "qsQvqC5BbfcAIQkZlbI0RXWCeERFquxZUjSygk/VVfk=",
        "XomNA/5b0+Z2f/7oA5+thJXLcgxXBJn4qrXrjk3+aBU=",
        "31bG6R6Aa6IQF766rqr5biO9P8FZpK7x1Z9E+Euu0Yg=",
    ]),
    (257, 256, [
        "K/MjGx9e8a0PBEFnAtnkGyHcA3sbpHKMWyn+lEcyixU=",
    ]),
    (300, 1, [
        "L/PVrQU9NrmRzcKLsf9S/p3pLzZtq2EujF4mtn8N/BA=",
        "LzV/S50ZmBIuGNhVZ2HVGMn371iIaK9Ko6ZsG9W0Izw=",
        "+g5I+VGvtMcULBLFWwjjwf8HO+AC5U1+qOGLS9TWSbk=",
        "F0bHfo30df3UonH3uit/evwnjtNke8dVOpG/59ad5EQ=",
        "bq4kWijrAEPFmB7Fp61SQQzAtlJbhuwz+qxy7dpTbL4=",
        "8bSOLCIGpBp0fkTIh6vKaVHCG0jOWWIe/fOQrMYEos0=",
        "iOiOIot0ldRZu7UbndhYdgwEz2RN4t7lGMh4AkAYdQI=",
        "AQZ0y1okMmEOYaKB6vL4AS0xDFeT/hwOQ/5obscvYks=",
        "083l89piOUAJiQuLXq/m3P/90zelq65Qv87ZJAMXbEQ=",
    ]),
    (300, 150, [
        "v4lOrYkUB/i3wMA/A+BDfqB1csLaCSmN/F/A6c6WKAc=",
        "YFkauEyDEU7vjcbLcyDVuoe5d9vB8onOozx2hzATC7Q=",
        "cVEI61/9WUsCRztAStBM4cbfV7h4u2gp3IaUrIxoLX8=",
        "q4d1YVn429S8E7uVkLiikNkfLjfv/hGuWAqCACS+RL0=",
        "UOUoCPsuBC1B73mcHiiXhUua8AWp5BZ3ryX6hLyuQ1o=",
        "dzdShgB0JKWJi4LGumgtvxwFC4pFVfylzA8VUVoLp04=",
        "fAubDBsAp2zeJ8VHG1VTETKJIARYKYwE+J+Aj2h6CAs=",
        "31bG6R6Aa6IQF766rqr5biO9P8FZpK7x1Z9E+Euu0Yg=",
        "083l89piOUAJiQuLXq/m3P/90zelq65Qv87ZJAMXbEQ=",
    ]),
    (300, 256, [
        "083l89piOUAJiQuLXq/m3P/90zelq65Qv87ZJAMXbEQ=",
    ]),
    (300, 300, []),
]

# Go: ((H, L, N, W), Tile.Path())
TILE_PATHS = [
    ((3, 4, 1234067, 1), "tile/3/4/x001/x234/067.p/1"),
    ((3, 4, 1234067, 8), "tile/3/4/x001/x234/067"),
    ((8, 0, 0, 256), "tile/8/0/000"),
    ((8, 0, 0, 1), "tile/8/0/000.p/1"),
    ((8, 1, 1, 255), "tile/8/1/001.p/255"),
    ((8, -1, 0, 3), "tile/8/data/000.p/3"),
    ((8, -1, 1234, 256), "tile/8/data/x001/234"),
    ((1, 0, 1000, 2), "tile/1/0/x001/000"),
    ((2, 0, 999999, 3), "tile/2/0/x999/999.p/3"),
    ((8, 2, 1000000, 10), "tile/8/2/x001/x000/000.p/10"),
    ((30, 63, 123456789012, 1073741824), "tile/30/63/x123/x456/x789/012"),
]

# Go: (path, ParseTilePath(path) as (H, L, N, W), or None for "malformed tile path "<path>"")
PARSE_TILE_PATHS = [
    ("tile/8/0/000", (8, 0, 0, 256)),
    ("tile/8/0/001.p/5", (8, 0, 1, 5)),
    ("tile/3/4/x001/x234/067.p/1", (3, 4, 1234067, 1)),
    ("tile/8/data/000.p/3", (8, -1, 0, 3)),
    ("tile/8/data/x001/234", (8, -1, 1234, 256)),
    ("tile/30/63/x123/x456/x789/012", (30, 63, 123456789012, 1073741824)),
    ("tile/8/64/000", (8, 64, 0, 256)),
    ("tile/8/0/000.p/256", None),
    ("tile/8/0/000.p/0", None),
    ("tile/8/0/000.p/", None),
    ("tile/8/0/000.p", None),
    ("tile/8/0/000.p/05", None),
    ("tile/8/0/0", None),
    ("tile/8/0/01", None),
    ("tile/8/0/x000/001", None),
    ("tile/8/0/1000", None),
    ("tile/8/0/x1000/000", None),
    ("tile/0/0/000", None),
    ("tile/31/0/000", None),
    ("tile/8/-1/000", None),
    ("tile/08/0/000", None),
    ("tile/+8/0/000", None),
    ("tile/8/0", None),
    ("tile/8", None),
    ("tiles/8/0/000", None),
    ("/tile/8/0/000", None),
    ("tile/8/0/000/", None),
    ("tile/8/0/-01", None),
    ("tile/8/0/+01", None),
    ("tile/8/0/ 01", None),
    ("tile/8/0/0_1", None),
    ("tile/8/x/000", None),
    ("tile/8/0/x001/234.p/5", (8, 0, 1234, 5)),
    ("tile/8/0/001.p/x5", None),
    ("tile/8/0/abc", None),
    ("tile/8/0/x001/x002", None),
]

# Go: {h: [(index, TileForIndex(h, index) as (H, L, N, W))]}
TILE_FOR_INDEX = {
    1: [
        (0, (1, 0, 0, 1)), (1, (1, 0, 0, 2)), (2, (1, 1, 0, 1)), (3, (1, 0, 1, 1)),
        (4, (1, 0, 1, 2)), (5, (1, 1, 0, 2)), (6, (1, 2, 0, 1)), (7, (1, 0, 2, 1)),
        (10, (1, 0, 3, 1)), (17, (1, 1, 2, 1)), (100, (1, 2, 6, 1)), (510, (1, 8, 0, 1)),
        (511, (1, 0, 128, 1)), (1000, (1, 2, 62, 2)), (123456, (1, 2, 7716, 1)),
    ],
    2: [
        (0, (2, 0, 0, 1)), (1, (2, 0, 0, 2)), (2, (2, 0, 0, 2)), (3, (2, 0, 0, 3)),
        (4, (2, 0, 0, 4)), (5, (2, 0, 0, 4)), (6, (2, 1, 0, 1)), (7, (2, 0, 1, 1)),
        (10, (2, 0, 1, 3)), (17, (2, 0, 2, 2)), (100, (2, 1, 3, 1)), (510, (2, 4, 0, 1)),
        (511, (2, 0, 64, 1)), (1000, (2, 1, 31, 2)), (123456, (2, 1, 3858, 1)),
    ],
    8: [
        (0, (8, 0, 0, 1)), (1, (8, 0, 0, 2)), (2, (8, 0, 0, 2)), (3, (8, 0, 0, 3)),
        (4, (8, 0, 0, 4)), (5, (8, 0, 0, 4)), (6, (8, 0, 0, 4)), (7, (8, 0, 0, 5)),
        (10, (8, 0, 0, 7)), (17, (8, 0, 0, 10)), (100, (8, 0, 0, 52)), (510, (8, 1, 0, 1)),
        (511, (8, 0, 1, 1)), (1000, (8, 0, 1, 248)), (123456, (8, 0, 241, 36)),
    ],
}

# Go: (h, old size, new size, NewTiles(h, old, new) paths)
NEW_TILES = [
    (8, 0, 1, ["tile/8/0/000.p/1"]),
    (8, 0, 300, ["tile/8/0/000", "tile/8/0/001.p/44", "tile/8/1/000.p/1"]),
    (8, 256, 300, ["tile/8/0/001.p/44"]),
    (8, 300, 300, []),
    (2, 0, 13, [
        "tile/2/0/000",
        "tile/2/0/001",
        "tile/2/0/002",
        "tile/2/0/003.p/1",
        "tile/2/1/000.p/3",
    ]),
    (2, 5, 13, ["tile/2/0/001", "tile/2/0/002", "tile/2/0/003.p/1", "tile/2/1/000.p/3"]),
    (1, 3, 6, [
        "tile/1/0/001",
        "tile/1/0/002",
        "tile/1/1/000",
        "tile/1/1/001.p/1",
        "tile/1/2/000.p/1",
    ]),
]

# Go: (tile path, SHA-256 of ReadTileData over the test log of 300 records)
TILE_DATA_SHA256 = [
    ("tile/8/0/000", "9fd7c852abe1b2144aabafdd161b6c33a2b0811c0e6b5d45ab0fc2ae13c43224"),
    ("tile/8/0/001.p/44", "d99cdb1ef85fb2b6422b0599fcc16fdcc0ca86f9cc3d074e6d809a2e95d90670"),
    ("tile/8/1/000.p/1", "c07e4d32b774794e2a89a62c7196d0f0b676a48b8dbf4ec01c9616a66ec765bb"),
    ("tile/2/0/000", "34629d67e0105bbecb16ff40782018d102e6937e35fcd70d25c52aeaca326adf"),
    ("tile/2/0/001", "579827c744c3fa0958e09e10b4839847ac80c137077a966adc3436ceccebb5b1"),
    ("tile/2/0/002", "ffb10b0986e92bf05c193b6e72456c58abf7fd9a1e8bc06646f4b63d3761844e"),
    ("tile/2/0/003.p/1", "4f60ef562f06a030009f16bc208846dc1cd6dc0081e0c69b97a94542be0dd87a"),
    ("tile/2/1/000.p/3", "98a2468cde2717e4ac189f46d828c0f53bafb97f5c156b249c5c515eed37c02e"),
    ("tile/8/0/001.p/10", "fb068b2ad5230e50c580d8eb94a7fd8d1e7cf44e282690c935ad744645e497d6"),
]

# Go: (tile, stored index, HashFromTile"s error), with zero data of the right size
HASH_FROM_TILE_ERRORS = [
    ((8, 0, 0, 256), 511, "index 511 is in tile/8/0/001.p/1 not tile/8/0/000"),
    ((8, 0, 0, 3), 8, "index 8 is in tile/8/0/000.p/6 not tile/8/0/000.p/3"),
    ((8, 1, 0, 2), 1, "index 1 is in tile/8/0/000.p/2 not tile/8/1/000.p/2"),
    ((0, 0, 0, 1), 0, "invalid tile tile/0/0/000"),
    ((8, -1, 0, 1), 0, "invalid tile tile/8/data/000.p/1"),
    ((8, 0, 0, 0), 0, "invalid tile tile/8/0/000.p/0"),
    ((2, 0, 0, 5), 0, "invalid tile tile/2/0/000.p/5"),
]

# Go: (tree size, tile height, stored indexes, tiles TileHashReader.ReadHashes reads, in order)
TILE_READS = [
    (300, 8, [8], ["tile/8/1/000.p/1", "tile/8/0/001.p/44", "tile/8/0/000"]),
    (300, 8, [593], ["tile/8/1/000.p/1", "tile/8/0/001.p/44"]),
    (300, 8, [], ["tile/8/1/000.p/1", "tile/8/0/001.p/44"]),
    (256, 8, [502], ["tile/8/1/000.p/1", "tile/8/0/000"]),
    (13, 2, [1], ["tile/2/1/000.p/3", "tile/2/0/003.p/1", "tile/2/0/000"]),
    (
        300,
        2,
        [1, 150, 332],
        [
            "tile/2/4/000.p/1", "tile/2/2/004.p/2", "tile/2/1/018.p/3", "tile/2/3/000",
            "tile/2/2/000", "tile/2/1/000", "tile/2/0/000", "tile/2/2/001", "tile/2/1/004",
            "tile/2/0/019", "tile/2/2/002", "tile/2/1/010",
        ],
    ),
]
# fmt: on

# Go: (data, RecordHash(data)).
RECORD_HASH = [
    (b"", "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0="),
    (b"a", "Aippeebat6pa5MPl5F9+l3ESp+Y1k4INvsHsc4ok+Tw="),
    (record(0), "0TI2VZeq9oPieHNQl9dM+EvAxUH2mjOxxO0oh6sg6zQ="),
]
NODE_HASH_0_1 = "2Efg5OFrSpPY1l4xjlpj494Je8bSmjOjgfcaSokCIdE="  # Go: NodeHash(record 0, record 1)
EMPTY_TREE_HASH = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="  # Go: TreeHash(0)

HASH_300 = "odRYz+zdY8WVezWaSA66rvXMtUbFK+tMeprw6FKeo7Q="
TREE_TEXT_300 = f"go.sum database tree\n300\n{HASH_300}\n".encode()  # Go: FormatTree
# Go: note.Sign(FormatTree(tree 300), TREE_SIGNER) appends this line.
TREE_SIGNER = "PRIVATE+KEY+sumdb.modgate.test+396eab2b+ATUzcxZ62iBUMEtRFkY1Zs7Zmke4zHcGaAAJ2RjwEvzX"
TREE_SIGNATURE_300 = (
    "— sumdb.modgate.test OW6rK54qBL/xf2NbWUTJ4+Go2VUyGTNNU3iZEiHjF4rAnapZrJWX5CwkdeX6yMV6cOSWEX"
    "t9dBczlQEUU/6VddYrrw4=\n"
)

TREE = b"go.sum database tree\n"
# Go: (text, ParseTree(text) as (N, base64 hash), or None for "malformed tree note").
PARSE_TREE = [
    (TREE + f"300\n{HASH_300}\n".encode(), (300, HASH_300)),
    (TREE + f"300\n{HASH_300}\nextra line\n".encode(), (300, HASH_300)),
    (TREE + f"0\n{EMPTY_TREE_HASH}\n".encode(), (0, EMPTY_TREE_HASH)),
    (TREE + f"300\n{HASH_300}".encode(), None),
    (f"go.sum database tree v2\n300\n{HASH_300}\n".encode(), None),
    (TREE + f"0300\n{HASH_300}\n".encode(), None),
    (TREE + f"-1\n{HASH_300}\n".encode(), None),
    (TREE + f"+300\n{HASH_300}\n".encode(), None),
    (TREE + f" 300\n{HASH_300}\n".encode(), None),
    (TREE + f"300\n{HASH_300[:-1]}\n".encode(), None),
    (TREE + f"300\n{HASH_300[:40]}\n".encode(), None),
    (TREE + f"9223372036854775808\n{HASH_300}\n".encode(), None),
    (TREE + b"300\n\n", None),
    (b"", None),
]

R5 = record(5)
# Go: (message, ParseRecord(message) as (id, text, rest), or None for "malformed record data").
PARSE_RECORD = [
    (b"5\n" + R5 + b"\nrest\n", (5, R5, b"rest\n")),
    (b"5\n" + R5 + b"\n", (5, R5, b"")),
    (b"0\na\n\n", (0, b"a\n", b"")),
    (b"5\n" + R5, None),
    (b"x\n" + R5 + b"\n", None),
    (b"5" + R5 + b"\n", None),
    (b"-5\na\n\n", (-5, b"a\n", b"")),
    (b"+5\na\n\n", (5, b"a\n", b"")),
    (b"5\n\n\n", (5, b"\n", b"")),
    (b"5\na\tb\n\n", None),
    (b"5\na\xffb\n\n", None),
    (b"", None),
    (b"9223372036854775807\na\n\n", (9223372036854775807, b"a\n", b"")),
    (b"9223372036854775808\na\n\n", None),
]
# Go: (id, text, FormatRecord(id, text), or None for "malformed record data").
FORMAT_RECORD = [
    (5, R5, b"5\n" + R5 + b"\n"),
    (0, b"a\n", b"0\na\n\n"),
    (1, b"a", None),
    (2, b"a\n\nb\n", None),
    (3, b"", None),
    (4, b"\n", b"4\n\n\n"),
    (5, b"a\x01\n", None),
    (6, "ü\n".encode(), "6\nü\n\n".encode()),
]


# Stored hash indexes.


@pytest.mark.parametrize(("level", "n", "index"), STORED_HASH_INDEX)
def test_stored_hash_index(level: int, n: int, index: int) -> None:
    assert stored_hash_index(level, n) == index


@pytest.mark.parametrize(("index", "level_n"), SPLIT_STORED_HASH_INDEX)
def test_split_stored_hash_index(index: int, level_n: tuple[int, int]) -> None:
    assert split_stored_hash_index(index) == level_n


def test_split_inverts_stored_hash_index() -> None:
    for index in range(5000):
        assert stored_hash_index(*split_stored_hash_index(index)) == index


def _go_stored_hash_index(level: int, n: int) -> int:
    """tlog.go's StoredHashIndex, step by step: the reference for the closed form."""
    for _ in range(level):
        n = 2 * n + 1
    i = 0
    while n > 0:
        i += n
        n >>= 1
    return i + level


def _go_split_stored_hash_index(index: int) -> tuple[int, int]:
    """tlog.go's SplitStoredHashIndex, a record at a time: the reference for bisection."""
    n = index // 2
    index_n = _go_stored_hash_index(0, n)
    while (x := index_n + 1 + ((n + 1) & -(n + 1)).bit_length() - 1) <= index:
        n, index_n = n + 1, x
    level = index - index_n
    return level, n >> level


@given(st.integers(0, 40), st.integers(0, 1 << 44))
def test_stored_hash_index_is_go_s_at_any_size(level: int, n: int) -> None:
    # The live database holds tens of millions of records: far past the tables above.
    assert stored_hash_index(level, n) == _go_stored_hash_index(level, n)


@given(st.integers(0, 1 << 50) | st.integers(0, 70_000))
def test_split_stored_hash_index_is_go_s_at_any_size(index: int) -> None:
    assert split_stored_hash_index(index) == _go_split_stored_hash_index(index)


@pytest.mark.parametrize(("n", "count"), STORED_HASH_COUNT)
def test_stored_hash_count(n: int, count: int) -> None:
    assert stored_hash_count(n) == count
    assert len(build_log(n)) == count


def test_stored_hash_count_of_test_log() -> None:
    assert len(LOG) == stored_hash_count(300)


# Hashes and tree heads.


@pytest.mark.parametrize(("data", "expected"), RECORD_HASH)
def test_record_hash(data: bytes, expected: str) -> None:
    assert format_hash(record_hash(data)) == expected


def test_node_hash_and_empty_tree() -> None:
    assert format_hash(node_hash(record_hash(record(0)), record_hash(record(1)))) == NODE_HASH_0_1
    assert format_hash(EMPTY_HASH) == EMPTY_TREE_HASH
    assert tree_hash(0, READ) == EMPTY_HASH


@pytest.mark.parametrize(("n", "expected"), TREE_HASH)
def test_tree_hash(n: int, expected: str) -> None:
    assert format_hash(tree_hash(n, READ)) == expected


def test_parse_hash() -> None:
    assert parse_hash(HASH_300) == h(HASH_300)
    for bad in (HASH_300[:-1], HASH_300 + "AAAA", "", "not base64!"):
        with pytest.raises(FormatError, match="^malformed hash$"):
            parse_hash(bad)


def test_format_tree_and_sign_as_go() -> None:
    tree = Tree(300, tree_hash(300, READ))
    assert format_tree(tree) == TREE_TEXT_300
    signed = note.sign(format_tree(tree).decode(), note.parse_signer_key(TREE_SIGNER))
    assert signed == TREE_TEXT_300 + b"\n" + TREE_SIGNATURE_300.encode()


@pytest.mark.parametrize(("text", "expected"), PARSE_TREE)
def test_parse_tree(text: bytes, expected: tuple[int, str] | None) -> None:
    if expected is None:
        with pytest.raises(FormatError, match="^malformed tree note$"):
            parse_tree(text)
    else:
        assert parse_tree(text) == Tree(expected[0], h(expected[1]))
        assert parse_tree(text.decode()) == parse_tree(text)


def test_parse_tree_limits_size() -> None:
    with pytest.raises(FormatError, match="^malformed tree note$"):
        parse_tree(TREE_TEXT_300 + b"x" * 1_000_000)


@given(
    (st.text(max_size=12) | st.text(st.characters(max_codepoint=0x7F))).map(lambda t: t + "\n")
    | st.text()
)
def test_record_text_is_valid_as_go_checks_it(text: str) -> None:
    """tlog.go isValidRecordText, a character at a time, for the search that replaced it."""
    data = text.encode("utf-8", "surrogatepass")
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError:
        valid = False
    else:
        valid = (
            decoded.endswith("\n")
            and "\n\n" not in decoded
            and not any(c < " " and c != "\n" for c in decoded)
        )
    assert is_valid_record_text(data) == valid


@pytest.mark.parametrize(("msg", "expected"), PARSE_RECORD)
def test_parse_record(msg: bytes, expected: tuple[int, bytes, bytes] | None) -> None:
    if expected is None:
        with pytest.raises(FormatError, match="^malformed record data$"):
            parse_record(msg)
    else:
        assert parse_record(msg) == expected


@pytest.mark.parametrize(("record_id", "text", "expected"), FORMAT_RECORD)
def test_format_record(record_id: int, text: bytes, expected: bytes | None) -> None:
    if expected is None:
        with pytest.raises(FormatError, match="^malformed record data$"):
            format_record(record_id, text)
    else:
        assert format_record(record_id, text) == expected
        assert parse_record(expected) == (record_id, text, b"")


# Proofs.


@pytest.mark.parametrize(("t", "n", "proof"), RECORD_PROOFS)
def test_prove_and_check_record(t: int, n: int, proof: list[str]) -> None:
    p = prove_record(t, n, READ)
    assert [format_hash(x) for x in p] == proof
    check_record(p, t, tree_hash(t, READ), n, record_hash(record(n)))


@pytest.mark.parametrize(("t", "n", "proof"), TREE_PROOFS)
def test_prove_and_check_tree(t: int, n: int, proof: list[str]) -> None:
    p = prove_tree(t, n, READ)
    assert [format_hash(x) for x in p] == proof
    check_tree(p, t, tree_hash(t, READ), n, tree_hash(n, READ))


def test_every_proof_up_to_40_records_checks() -> None:
    for t in range(1, 41):
        th = tree_hash(t, READ)
        for n in range(t):
            check_record(prove_record(t, n, READ), t, th, n, record_hash(record(n)))
            check_tree(prove_tree(t, n + 1, READ), t, th, n + 1, tree_hash(n + 1, READ))


def _bad_record_proofs() -> list[tuple[str, list[Hash], int, Hash, int, Hash]]:
    """(label, proof, t, tree hash, n, record hash) of record proofs that must fail."""
    t, n = 300, 150
    p, th, rh = prove_record(t, n, READ), tree_hash(t, READ), record_hash(record(n))
    flipped = [bytes([p[0][0] ^ 1]) + p[0][1:], *p[1:]]
    return [
        ("record not in tree", p, t, th, n, record_hash(b"not logged\n")),
        ("wrong position", p, t, th, n + 1, rh),
        ("other tree", p, t, tree_hash(299, READ), n, rh),
        ("smaller tree", p, 299, tree_hash(299, READ), n, rh),
        ("proof hash changed", flipped, t, th, n, rh),
        ("proof cut short", p[:-1], t, th, n, rh),
        ("proof too long", [*p, p[0]], t, th, n, rh),
        ("empty proof", [], t, th, n, rh),
        ("proof for a one-record tree", [p[0]], 1, tree_hash(1, READ), 0, record_hash(record(0))),
    ]


@pytest.mark.parametrize(("label", "p", "t", "th", "n", "rh"), _bad_record_proofs())
def test_check_record_rejects(
    label: str, p: list[Hash], t: int, th: Hash, n: int, rh: Hash
) -> None:
    with pytest.raises(ProofError, match="^invalid transparency proof$"):
        check_record(p, t, th, n, rh)


def _bad_tree_proofs() -> list[tuple[str, list[Hash], int, Hash, int, Hash]]:
    """(label, proof, t, tree hash, n, old tree hash) of tree proofs that must fail."""
    t, n = 300, 150
    p, th, oh = prove_tree(t, n, READ), tree_hash(t, READ), tree_hash(n, READ)
    forked = build_log(149)
    forked += stored_hashes(149, b"forked\n", hashes_reader(forked))
    flipped = [*p[:-1], bytes([p[-1][0] ^ 1]) + p[-1][1:]]
    return [
        ("inconsistent old tree", p, t, th, n, tree_hash(150, hashes_reader(forked))),
        ("old tree of other size", p, t, th, n - 1, tree_hash(n - 1, READ)),
        ("other new tree", p, t, tree_hash(299, READ), n, oh),
        ("proof hash changed", flipped, t, th, n, oh),
        ("proof cut short", p[:-1], t, th, n, oh),
        ("proof too long", [p[0], *p], t, th, n, oh),
        ("equal trees, extra hash", [oh], t, th, t, th),
        ("equal trees, other hash", [], t, th, t, oh),
    ]


@pytest.mark.parametrize(("label", "p", "t", "th", "n", "oh"), _bad_tree_proofs())
def test_check_tree_rejects(label: str, p: list[Hash], t: int, th: Hash, n: int, oh: Hash) -> None:
    with pytest.raises(ProofError, match="^invalid transparency proof$"):
        check_tree(p, t, th, n, oh)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: prove_record(5, 5, READ), "tlog: invalid inputs in ProveRecord"),
        (lambda: prove_record(5, -1, READ), "tlog: invalid inputs in ProveRecord"),
        (
            lambda: check_record([], 0, EMPTY_HASH, 0, EMPTY_HASH),
            "tlog: invalid inputs in CheckRecord",
        ),
        (lambda: prove_tree(5, 6, READ), "tlog: invalid inputs in ProveTree"),
        (lambda: prove_tree(5, 0, READ), "tlog: invalid inputs in ProveTree"),
        (lambda: check_tree([], 1, EMPTY_HASH, 2, EMPTY_HASH), "tlog: invalid inputs in CheckTree"),
    ],
)
def test_proofs_reject_invalid_inputs(call: object, message: str) -> None:
    assert callable(call)
    with pytest.raises(ProofError, match=f"^{re.escape(message)}$"):
        call()


def test_short_hash_reader_is_an_error() -> None:
    with pytest.raises(FormatError, match=r"^tlog: ReadHashes\(2 indexes\) = 1 hashes$"):
        tree_hash(3, lambda indexes: [LOG[0]])


# Tiles.


@pytest.mark.parametrize(("tile", "path"), TILE_PATHS)
def test_tile_path(tile: tuple[int, int, int, int], path: str) -> None:
    assert Tile(*tile).path() == path


@pytest.mark.parametrize(("path", "tile"), PARSE_TILE_PATHS)
def test_parse_tile_path(path: str, tile: tuple[int, int, int, int] | None) -> None:
    if tile is None:
        with pytest.raises(FormatError, match=f"^{re.escape(f'malformed tile path "{path}"')}$"):
            parse_tile_path(path)
    else:
        assert parse_tile_path(path) == Tile(*tile)


def test_parse_tile_path_rejects_numbers_go_cannot_hold() -> None:
    path = "tile/8/0/" + "x999/" * 7 + "999"  # 10**24 - 1 overflows an int64
    with pytest.raises(FormatError, match="^malformed tile path"):
        parse_tile_path(path)


@pytest.mark.parametrize(
    ("h", "index", "tile"),
    [(h, index, tile) for h, rows in TILE_FOR_INDEX.items() for index, tile in rows],
)
def test_tile_for_index(h: int, index: int, tile: tuple[int, int, int, int]) -> None:
    assert tile_for_index(h, index) == Tile(*tile)


def test_tile_for_index_needs_positive_height() -> None:
    with pytest.raises(ValueError, match="^TileForIndex: invalid height 0$"):
        tile_for_index(0, 5)
    with pytest.raises(ValueError, match="^NewTiles: invalid height -1$"):
        new_tiles(-1, 0, 5)


@pytest.mark.parametrize(("h", "old", "new", "paths"), NEW_TILES)
def test_new_tiles(h: int, old: int, new: int, paths: list[str]) -> None:
    assert [t.path() for t in new_tiles(h, old, new)] == paths


@pytest.mark.parametrize(("path", "digest"), TILE_DATA_SHA256)
def test_read_tile_data(path: str, digest: str) -> None:
    data = read_tile_data(parse_tile_path(path), READ)
    assert hashlib.sha256(data).hexdigest() == digest


@pytest.mark.parametrize("height", [1, 2, 3, 8])
def test_hash_from_tile_gives_every_stored_hash(height: int) -> None:
    for index in range(len(LOG)):
        tile = tile_for_index(height, index)
        assert hash_from_tile(tile, read_tile_data(tile, READ), index) == LOG[index]


@pytest.mark.parametrize(("tile", "index", "error"), HASH_FROM_TILE_ERRORS)
def test_hash_from_tile_errors(tile: tuple[int, int, int, int], index: int, error: str) -> None:
    t = Tile(*tile)
    with pytest.raises(FormatError, match=f"^{re.escape(error)}$"):
        hash_from_tile(t, bytes(max(t.width, 0) * 32), index)


def test_hash_from_tile_short_data() -> None:
    with pytest.raises(FormatError, match="^data len 96 too short for tile tile/8/0/000.p/4$"):
        hash_from_tile(Tile(8, 0, 0, 4), bytes(96), 0)


# Reading hashes out of tiles (TileHashReader).


class Tiles:
    """Tiles of the test log's first `size` records as a server would serve them."""

    def __init__(self, size: int = 300, corrupt: str = "") -> None:
        self.hashes = LOG[: stored_hash_count(size)]
        self.corrupt = corrupt
        self.read: list[str] = []

    def __call__(self, tile: Tile) -> bytes:
        self.read.append(tile.path())
        data = read_tile_data(tile, hashes_reader(self.hashes))
        if tile.path() == self.corrupt:
            data = bytes([data[0] ^ 1]) + data[1:]
        return data


def tile_reader(size: int, height: int, tiles: Tiles) -> TileHashReader:
    return TileHashReader(Tree(size, tree_hash(size, READ)), height, tiles)


@pytest.mark.parametrize(("size", "height", "indexes", "paths"), TILE_READS)
def test_tile_hash_reader_reads_tiles_as_go(
    size: int, height: int, indexes: list[int], paths: list[str]
) -> None:
    tiles = Tiles(size)
    reader = tile_reader(size, height, tiles)
    assert reader(indexes) == [LOG[i] for i in indexes]
    assert tiles.read == paths
    assert sorted(t.path() for t in reader.verified) == sorted(paths)


@pytest.mark.parametrize(("size", "height", "indexes", "paths"), TILE_READS)
def test_every_tile_a_read_needs_is_told_at_once_before_it_is_read(
    size: int, height: int, indexes: list[int], paths: list[str]
) -> None:
    tiles, told = Tiles(size), list[list[str]]()

    def prefetch(planned: list[Tile]) -> None:
        assert tiles.read == []  # before any read: to fetch them all at once
        told.append([t.path() for t in planned])

    reader = TileHashReader(Tree(size, tree_hash(size, READ)), height, tiles, prefetch=prefetch)
    assert reader(indexes) == [LOG[i] for i in indexes]
    assert told == ([paths] if len(paths) > 1 else [])  # one tile: read it, no batch
    assert tiles.read == paths


@pytest.mark.parametrize(("height", "size"), [(8, 300), (2, 300), (2, 13), (1, 40), (8, 256)])
def test_proofs_from_tiles_match_proofs_from_hashes(height: int, size: int) -> None:
    reader = tile_reader(size, height, Tiles(size))
    th = tree_hash(size, READ)
    assert tree_hash(size, reader) == th
    for n in range(0, size, 7):
        assert prove_record(size, n, reader) == prove_record(size, n, READ)
        check_record(prove_record(size, n, reader), size, th, n, record_hash(record(n)))
        assert prove_tree(size, n + 1, reader) == prove_tree(size, n + 1, READ)
        check_tree(prove_tree(size, n + 1, reader), size, th, n + 1, tree_hash(n + 1, READ))


@pytest.mark.parametrize(
    ("corrupt", "index"),
    [
        ("tile/8/1/000.p/1", stored_hash_index(0, 5)),  # holds a subtree hash of the tree
        ("tile/8/0/001.p/44", stored_hash_index(0, 299)),  # the partial tile at the right edge
        ("tile/8/0/000", stored_hash_index(0, 5)),  # authenticated through its parent only
    ],
)
def test_tile_hash_reader_rejects_tile_not_matching_tree(corrupt: str, index: int) -> None:
    tiles = Tiles(300, corrupt=corrupt)
    reader = tile_reader(300, 8, tiles)
    with pytest.raises(ProofError, match="^downloaded inconsistent tile$"):
        reader([index])
    assert corrupt in tiles.read
    assert reader.verified == {}


@pytest.mark.parametrize("corrupt", ["tile/8/0/000", "tile/8/1/000.p/1"])
def test_a_remembered_proof_never_vouches_for_other_bytes(
    corrupt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    proofs = 0
    authenticate = TileHashReader._authenticate

    def counting(self: TileHashReader, *args: Any) -> None:
        nonlocal proofs
        proofs += 1
        authenticate(self, *args)

    monkeypatch.setattr(TileHashReader, "_authenticate", counting)
    tree, remembered = Tree(300, tree_hash(300, READ)), set[object]()
    for i in (5, 6, 5):  # records of one tile: the same tiles, proven once
        assert TileHashReader(tree, 8, Tiles(300), remembered)([stored_hash_index(0, i)]) == [
            LOG[stored_hash_index(0, i)]
        ]
    assert proofs == 1
    tampered = TileHashReader(tree, 8, Tiles(300, corrupt=corrupt), remembered)
    with pytest.raises(ProofError, match="^downloaded inconsistent tile$"):
        tampered([stored_hash_index(0, 5)])
    other_tree = TileHashReader(Tree(300, tree_hash(299, READ)), 8, Tiles(300), remembered)
    with pytest.raises(ProofError, match="^downloaded inconsistent tile$"):
        other_tree([stored_hash_index(0, 5)])


def test_tile_hash_reader_rejects_other_tree_hash() -> None:
    reader = TileHashReader(Tree(300, tree_hash(299, READ)), 8, Tiles(300))
    with pytest.raises(ProofError, match="^downloaded inconsistent tile$"):
        reader([0])


def test_tile_hash_reader_rejects_tiles_of_a_fork() -> None:
    forked = build_log(10)
    forked += stored_hashes(10, b"forked\n", hashes_reader(forked))
    for i in range(11, 300):
        forked += stored_hashes(i, record(i), hashes_reader(forked))
    tiles = Tiles(300)
    tiles.hashes = forked
    with pytest.raises(ProofError, match="^downloaded inconsistent tile$"):
        tile_reader(300, 8, tiles)([stored_hash_index(0, 10)])


def test_tile_hash_reader_rejects_index_not_in_tree() -> None:
    with pytest.raises(ProofError, match="^indexes not in tree$"):
        tile_reader(100, 8, Tiles(300))([stored_hash_index(0, 100)])


@pytest.mark.parametrize("cut", [1, 32, 8191])
def test_tile_hash_reader_rejects_tile_of_wrong_size(cut: int) -> None:
    def short(tile: Tile) -> bytes:
        return Tiles(300)(tile)[:-cut]

    reader = TileHashReader(Tree(300, tree_hash(300, READ)), 8, short)
    with pytest.raises(
        FormatError, match=r"^malformed tile tile/8/1/000\.p/1: \d+ bytes, want 32$"
    ):
        reader([0])


# The shortcuts TileHashReader takes, against the straightforward versions of tlog.go
# they replace (kept here, not in the product).


def _mth(hashes: list[Hash]) -> Hash:
    """RFC 6962's Merkle tree hash over 2**k hashes, one node_hash at a time."""
    if len(hashes) == 1:
        return hashes[0]
    half = len(hashes) // 2
    return node_hash(_mth(hashes[:half]), _mth(hashes[half:]))


@given(
    st.integers(0, 8).flatmap(
        lambda k: st.lists(st.binary(min_size=32, max_size=32), min_size=1 << k, max_size=1 << k)
    )
)
def test_hash_from_tile_is_the_merkle_tree_hash(hashes: list[Hash]) -> None:
    """hash_from_tile hashes a tile's level a time, not node by node: the same hash."""
    level = len(hashes).bit_length() - 1  # the subtree over all of them ...
    height = level + 1  # ... within one tile
    tile = Tile(height, 0, 0, 1 << height)
    data = b"".join(hashes) + bytes(32 * ((1 << height) - len(hashes)))
    assert hash_from_tile(tile, data, stored_hash_index(level, 0)) == _mth(hashes)


def _go_tile_for_index(h: int, index: int) -> Tile:
    """tlog.go tileForIndex, step by step."""
    level, n = _go_split_stored_hash_index(index)
    tile_level = level // h
    level -= tile_level * h
    tile_n = n << level >> h
    n -= tile_n << h >> level
    return Tile(h, tile_level, tile_n, (n + 1) << level)


def _go_tile_parent(t: Tile, k: int, n: int) -> Tile | None:
    """tile.go tileParent."""
    level, number, width = t.level + k, t.n >> (k * t.height), 1 << t.height
    limit = n >> (level * t.height)
    if (number << t.height) + width >= limit:
        if number << t.height >= limit:
            return None
        width = limit - (number << t.height)
    return Tile(t.height, level, number, width)


def _go_plan(n: int, h: int, indexes: list[int]) -> tuple[list[Tile], list[int], list[int]]:
    """tile.go tileHashReader.ReadHashes's plan: (tiles, the tile of each subtree of the
    tree hash, the tile of each index), rebuilt for every read."""
    tiles: list[Tile] = []
    order: dict[Tile, int] = {}
    stx, lo = [], 0
    while lo < n:  # tlog.go subTreeIndex
        level = (n - lo).bit_length() - 1  # maxpow2(hi - lo + 1): below it
        stx.append(_go_stored_hash_index(level, lo >> level))
        lo += 1 << level
    stx_tile = []
    for x in stx:
        tile = _go_tile_parent(_go_tile_for_index(h, x), 0, n)
        assert tile is not None
        if tile not in order:
            order[tile] = len(tiles)
            tiles.append(tile)
        stx_tile.append(order[tile])
    index_tile = []
    for x in indexes:
        if x >= _go_stored_hash_index(0, n):
            raise ProofError("indexes not in tree")
        tile, k = _go_tile_for_index(h, x), 0
        while (parent := _go_tile_parent(tile, k, n)) not in order:
            if parent is None:
                raise ProofError("indexes not in tree")
            k += 1
        for j in range(k - 1, -1, -1):
            child = _go_tile_parent(tile, j, n)
            assert child is not None and child.width == 1 << child.height
            order[child] = len(tiles)
            tiles.append(child)
        index_tile.append(order[_go_tile_parent(tile, 0, n)] if k == 0 else len(tiles) - 1)
    return tiles, stx_tile, index_tile


@given(
    st.integers(1, 1 << 40) | st.integers(1, 3000),
    st.integers(1, 10) | st.just(8),
    st.lists(st.integers(0, 1 << 41) | st.integers(0, 6000), max_size=6),
)
def test_tile_hash_reader_plans_reads_as_go(n: int, height: int, indexes: list[int]) -> None:
    """The plan, with its remembered parts (per tree, per index), is tlog.go's, tile for
    tile and in the same order, at the live database's sizes too."""
    reader = TileHashReader(Tree(n, EMPTY_HASH), height, Tiles())
    try:
        want = _go_plan(n, height, indexes)
    except ProofError as e:
        with pytest.raises(ProofError, match=f"^{e}$"):
            reader.tiles(indexes)
        return
    for _ in range(2):  # again, from what it remembered
        plan = reader._plan(indexes)
        assert (plan.tiles, plan.stx_tile, plan.index_tile) == want
        assert plan.order == {tile: i for i, tile in enumerate(plan.tiles)}


_SHARED = set[object]()  # one memory of proofs across every example below


@given(
    st.integers(1, 300),
    st.integers(1, 8),
    st.lists(st.integers(0, stored_hash_count(300) - 1), max_size=4),
    st.sampled_from(["", "tile/8/0/000", "tile/8/1/000.p/1", "tile/2/0/001"]),
)
def test_remembered_proofs_answer_as_a_fresh_reader(
    size: int, height: int, indexes: list[int], corrupt: str
) -> None:
    """Readers of trees of every size share one memory of proofs, some reading a
    tampered tile: each answers as a reader that remembers nothing would."""
    tree = Tree(size, tree_hash(size, READ))
    indexes = [x for x in indexes if x < stored_hash_index(0, size)]
    fresh = TileHashReader(tree, height, Tiles(size, corrupt))
    remembering = TileHashReader(tree, height, Tiles(size, corrupt), _SHARED)
    try:
        want: list[Hash] | str = fresh(indexes)
    except ProofError as e:
        want = str(e)
    try:
        got: list[Hash] | str = remembering(indexes)
    except ProofError as e:
        got = str(e)
    assert got == want
    assert want == [LOG[x] for x in indexes] or corrupt


def test_tile_hash_reader_of_empty_tree_proves_nothing() -> None:
    reader = TileHashReader(Tree(0, EMPTY_HASH), 8, Tiles(300))
    with pytest.raises(ProofError, match="^downloaded inconsistent tile$"):
        reader([])
    assert tree_hash(0, reader) == EMPTY_HASH  # needs no tile at all
