"""modgate.verify: pins, the first-seen ledger, which modules skip the database, recheck."""

from __future__ import annotations

import asyncio
import hashlib
import urllib.error
from pathlib import Path

import pytest

from modgate.config import Chain, ChecksumSettings, SumdbConfig, parse_gosumdb
from modgate.dirhash import hash_gomod
from modgate.errors import ConfigError, UpstreamError
from modgate.goproxy import ModRequest, parse_request
from modgate.store import Body, Entry
from modgate.sumdb.tlog import format_record
from modgate.verify import Checker, IntegrityError, Ledger, Pins, recheck
from world.modules import ModuleVersion
from world.sumdb import Fault, TestSumdb

H1 = "h1:" + "A" * 43 + "="
H2 = "h1:" + "B" * 43 + "="


def test_pins_from_rules_and_go_sum_files(tmp_path: Path) -> None:
    gosum = tmp_path / "go.sum"
    gosum.write_text(f"example.com/a v1.0.0 {H1}\n\nexample.com/a v1.0.0/go.mod {H2}\n")
    pins = Pins(ChecksumSettings(pins=(f"example.com/b v2.0.0 {H2}",), go_sum=(gosum,)))
    assert pins.get("example.com/a", "v1.0.0") == (H1, f"{gosum}:1")
    assert pins.get("example.com/a", "v1.0.0/go.mod") == (H2, f"{gosum}:3")
    assert pins.get("example.com/b", "v2.0.0") == (H2, "pin in rules.yaml")
    assert pins.get("example.com/b", "v2.0.0/go.mod") is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("example.com/a v1.0.0\n", r"go.sum:1: not a go.sum line"),
        ("example.com/a v1.0.0 sha256:abc\n", r"go.sum:1: not a go.sum line"),
        (f"example.com/a v1.0.0 {H1}\nexample.com/a v1.0.0 {H2}\n",
         r"go.sum:2: example.com/a@v1.0.0 pinned to h1:B+=, but .*go.sum:1 pins h1:A+="),
    ],
)  # fmt: skip
def test_bad_pins_name_the_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    gosum = tmp_path / "go.sum"
    gosum.write_text(content)
    with pytest.raises(ConfigError, match=message):
        Pins(ChecksumSettings(go_sum=(gosum,)))


def test_a_missing_go_sum_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"nope.sum: cannot read go.sum file named in checksum.go_sum"
    ):
        Pins(ChecksumSettings(go_sum=(tmp_path / "nope.sum",)))


def test_ledger_keeps_the_first_hash(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger")
    assert ledger.first_seen("m@v1", H1) == H1
    assert ledger.first_seen("m@v1", H2) == H1
    ledger.close()
    assert Ledger(tmp_path / "ledger").first_seen("m@v1", H2) == H1  # it survives a restart


class NoDatabase:
    """A Source that must not be asked: the module is private or pinned."""

    async def fetch_body(self, chain: Chain, req: ModRequest) -> tuple[int, bytes]:
        raise AssertionError(f"asked the database for {req}")

    def forget(self, chain: Chain, req: ModRequest) -> None:
        raise AssertionError("nothing to forget")


def checker(tmp_path: Path, private: str = "", pins: tuple[str, ...] = ()) -> Checker:
    settings = ChecksumSettings(private=private, pins=pins)
    db = parse_gosumdb("sum.golang.org")
    assert isinstance(db, SumdbConfig)
    return Checker(settings, Pins(settings), (db,), tmp_path / "state", NoDatabase())


def check(c: Checker, path: str, body: bytes, tmp_path: Path) -> dict[str, str]:
    f = tmp_path / "body"
    f.write_bytes(body)
    verdict = asyncio.run(c.validate(parse_request(path), f))
    assert verdict is not None
    return verdict.as_dict()


def test_private_modules_keep_their_first_hash(tmp_path: Path) -> None:
    c = checker(tmp_path, private="*.corp.example")
    first = check(c, "git.corp.example/x/@v/v1.0.0.mod", b"module git.corp.example/x\n", tmp_path)
    assert first == {"verdict": "unverified", "source": "first seen (private module, no pin)",
                     "h1": hash_gomod(b"module git.corp.example/x\n")}  # fmt: skip
    with pytest.raises(
        IntegrityError, match=r"SECURITY: git.corp.example/x@v1.0.0/go.mod: .* was seen first"
    ):
        check(
            c,
            "git.corp.example/x/@v/v1.0.0.mod",
            b"module git.corp.example/x\n// changed\n",
            tmp_path,
        )


def test_the_toolchain_is_always_checked_against_the_database(tmp_path: Path) -> None:
    c = checker(tmp_path, private="golang.org/*")
    with pytest.raises(AssertionError, match="asked the database for golang.org/toolchain@"):
        check(
            c,
            "golang.org/toolchain/@v/v0.0.1-go1.26.0.linux-amd64.mod",
            b"module golang.org/toolchain\n",
            tmp_path,
        )


def test_a_pinned_artifact_does_not_need_the_database(tmp_path: Path) -> None:
    mod = b"module example.com/m\n"
    c = checker(tmp_path, pins=(f"example.com/m v1.0.0/go.mod {hash_gomod(mod)}",))
    assert check(c, "example.com/m/@v/v1.0.0.mod", mod, tmp_path)["source"] == "pin in rules.yaml"
    with pytest.raises(IntegrityError, match=r"upstream sent h1:.*but pin in rules.yaml says"):
        check(c, "example.com/m/@v/v1.0.0.mod", mod + b"// x\n", tmp_path)


def test_a_private_zip_whose_go_mod_disagrees_with_the_mod_seen_first(tmp_path: Path) -> None:
    c = checker(tmp_path, private="example.com")
    mv = ModuleVersion("example.com/m", "v1.0.0")
    check(c, "example.com/m/@v/v1.0.0.mod", mv.gomod + b"// not the zip's\n", tmp_path)
    with pytest.raises(
        IntegrityError, match=r"the zip's go.mod is h1:.*but the .mod first seen says"
    ):
        check(c, "example.com/m/@v/v1.0.0.zip", mv.zip_bytes(), tmp_path)


def test_a_proven_zip_is_served_though_its_go_mod_differs_from_the_mod(tmp_path: Path) -> None:
    """go checks each artifact against its own go.sum line, never one against the other
    (cmd/go's rsc.io/badsum fixture is such a module): when both hashes are proven, the
    zip's go.mod differing from the .mod is no reason to refuse what go accepts."""
    mv = ModuleVersion("example.com/m", "v1.0.0")
    mod = mv.gomod + b"// not the zip's\n"
    c = checker(tmp_path, pins=(f"example.com/m v1.0.0 {mv.zip_hash}",
                                f"example.com/m v1.0.0/go.mod {hash_gomod(mod)}"))  # fmt: skip
    assert check(c, "example.com/m/@v/v1.0.0.mod", mod, tmp_path)["verdict"] == "verified"
    assert check(c, "example.com/m/@v/v1.0.0.zip", mv.zip_bytes(), tmp_path) == {
        "verdict": "verified", "source": "pin in rules.yaml", "h1": mv.zip_hash,
    }  # fmt: skip


class RecordingDatabase(NoDatabase):
    """A Source that notes the lookups asked of it and has none of them."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def fetch_body(self, chain: Chain, req: ModRequest) -> tuple[int, bytes]:
        self.asked.append(req.path)
        return 404, b"not found\n"


@pytest.mark.parametrize(
    ("path", "lookup"),
    [("example.com/m/@v/v1.0.0.mod", "sumdb/sum.golang.org/lookup/example.com/m@v1.0.0"),
     ("example.com/m/@v/v1.0.0.zip", "sumdb/sum.golang.org/lookup/example.com/m@v1.0.0"),
     # go asks for it before the .mod and .zip, which are checked against the record
     ("example.com/m/@v/v1.0.0.info", "sumdb/sum.golang.org/lookup/example.com/m@v1.0.0"),
     ("example.com/m/@v/master.info", None),  # a query, not a version
     ("example.com/m/@v/list", None),
     ("git.corp.example/x/@v/v1.0.0.mod", None),  # private
     ("example.com/pinned/@v/v1.0.0.mod", None)],
)  # fmt: skip
def test_prefetch_starts_the_lookup_a_check_will_need(
    tmp_path: Path, path: str, lookup: str | None
) -> None:
    settings = ChecksumSettings(
        private="*.corp.example", pins=(f"example.com/pinned v1.0.0/go.mod {H1}",)
    )
    db = parse_gosumdb("sum.golang.org")
    assert isinstance(db, SumdbConfig)
    source = RecordingDatabase()
    c = Checker(settings, Pins(settings), (db,), tmp_path / "state", source)

    async def prefetch() -> None:
        c.prefetch(parse_request(path))
        await asyncio.sleep(0)  # the lookup runs in the background; its 404 is not raised

    asyncio.run(prefetch())
    assert source.asked == ([lookup] if lookup else [])


def entry(path: str, body: bytes, h1: str = "") -> Entry:
    return Entry(key=f"v1 chain {path}", status=200, content_type="", size=len(body),
                 sha256=hashlib.sha256(body).hexdigest(), stored_at=0, expires_at=None,
                 upstream="", h1=h1)  # fmt: skip


def test_recheck() -> None:
    mv = ModuleVersion("example.com/m", "v1.0.0")
    zip_path, data = "example.com/m/@v/v1.0.0.zip", mv.zip_bytes()
    assert recheck(entry(zip_path, data, mv.zip_hash), Body(data=data)) == ""
    assert "bytes on disk" in recheck(entry(zip_path, data), Body(data=data[:-1]))
    flipped = data[:10] + bytes([data[10] ^ 1]) + data[11:]
    assert "content changed on disk" in recheck(entry(zip_path, data), Body(data=flipped))
    # The body is what was stored, but not what was verified (stored by a buggy version).
    assert "but it was verified as h1:AAAA" in recheck(entry(zip_path, data, H1), Body(data=data))


class Unreachable(NoDatabase):
    async def fetch_body(self, chain: Chain, req: ModRequest) -> tuple[int, bytes]:
        raise UpstreamError(
            f"{req}: no upstream answered: https://sum.golang.org: Name or service not known"
        )


def test_an_unreachable_database_fails_closed_and_says_what_to_do(tmp_path: Path) -> None:
    settings = ChecksumSettings()
    db = parse_gosumdb("sum.golang.org")
    assert isinstance(db, SumdbConfig)
    c = Checker(settings, Pins(settings), (db,), tmp_path / "state", Unreachable())
    with pytest.raises(
        IntegrityError,
        match=r"cannot verify example.com/m@v1.0.0: checksum database sum.golang.org did not answer .*Name or service not known.*not served. Let modgate reach it, or pin the module or list it under checksum.private",
    ):
        check(c, "example.com/m/@v/v1.0.0.mod", b"module example.com/m\n", tmp_path)


def test_a_lookup_is_proven_once_for_the_same_bytes(tmp_path: Path) -> None:
    # The gateway proves a lookup when it stores it, and the artifact check reads the
    # same bytes right after: the second time must not ask the verifier again.
    c = checker(tmp_path)
    calls: list[str] = []

    class CountingVerifier:
        def lookup_proven_before(self, *_: object) -> None:
            return None  # not answered before a merge: lookup_versions

        def lookup_versions(self, module: str, versions: tuple[str, ...], _: bytes) -> list[str]:
            calls.append(versions)
            return [f"{module} {version} {H1}" for version in versions]

        latest = b""

    c._verifiers["sum.golang.org"] = CountingVerifier()  # type: ignore[assignment]

    async def twice() -> tuple[list[str], list[str], list[str]]:
        first = await c._lookup_lines("sum.golang.org", "example.com/m", "v1.0.0", b"record")
        again = await c._lookup_lines("sum.golang.org", "example.com/m", "v1.0.0", b"record")
        other = await c._lookup_lines("sum.golang.org", "example.com/m", "v1.0.0", b"other")
        return first, again, other

    first, again, other = asyncio.run(twice())
    assert first == again == other
    assert calls == [("v1.0.0", "v1.0.0/go.mod")] * 2  # one proof per distinct answer


class DatabaseThroughAStore:
    """A Source as the gateway is one: answers of a TestSumdb, stored once fetched;
    while `down`, what is not stored fails as an unreachable database does."""

    def __init__(self, db: TestSumdb) -> None:
        self.db, self.down = db, False
        self.stored: dict[str, bytes] = {}

    async def fetch_body(self, chain: Chain, req: ModRequest) -> tuple[int, bytes]:
        if req.path not in self.stored:
            if self.down:
                raise UpstreamError(f"{req}: no upstream answered: connection refused")
            path = req.path.removeprefix(f"sumdb/{self.db.signer.name}/")
            try:
                self.stored[req.path] = await asyncio.to_thread(self.db.get, path)
            except urllib.error.HTTPError as e:
                return e.code, b""
        return 200, self.stored[req.path]

    def forget(self, chain: Chain, req: ModRequest) -> None:
        self.stored.pop(req.path, None)


def test_tiles_for_offline_clients_are_kept_and_a_failure_is_tried_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with TestSumdb("sumdb.modgate.test") as db:
        db.grow(600)
        for module in ("example.com/a", "example.com/b", "example.com/c"):
            db.add(module, "v1.0.0", H1, H2)
        db.grow(398)  # 1001 records
        settings = ChecksumSettings()
        config = parse_gosumdb(f"{db.verifier_key} {db.url}")
        assert isinstance(config, SumdbConfig)
        source = DatabaseThroughAStore(db)
        c = Checker(settings, Pins(settings), (config,), tmp_path / "state", source)

        def lookup(module: str, record_id: int, head: int) -> None:
            text = f"{module} v1.0.0 {H1}\n{module} v1.0.0/go.mod {H2}\n".encode()
            body = tmp_path / "lookup"
            body.write_bytes(format_record(record_id, text) + db.signed_tree(head))
            req = parse_request(f"sumdb/{config.name}/lookup/{module}@v1.0.0")

            async def validate_and_keep() -> None:
                await c.validate(req, body)
                await c.idle()  # the tiles are kept after the answer

            asyncio.run(validate_and_keep())

        own = f"sumdb/{config.name}/tile/8/0/003.p/32"  # tree#800's own tile at level 0
        lookup("example.com/a", 600, 1001)
        source.down = True
        # A lagging head: modgate proves it in tree#1001 (stored), but a client whose
        # newest is tree#800 reads tree#800's own tiles. Not fetched, and not fatal.
        lookup("example.com/b", 601, 800)
        assert own not in source.stored
        assert "could not keep tiles of tree#800 for offline clients" in caplog.text
        source.down = False
        lookup("example.com/c", 602, 1001)  # the next one tries again
        assert own in source.stored


def checker_of(db: TestSumdb, tmp_path: Path, source: DatabaseThroughAStore) -> Checker:
    settings = ChecksumSettings()
    config = parse_gosumdb(f"{db.verifier_key} {db.url}")
    assert isinstance(config, SumdbConfig)
    return Checker(settings, Pins(settings), (config,), tmp_path / "state", source)


class Rounds(DatabaseThroughAStore):
    """Counts the tiles asked for at once (a proof's round) and may alter one tile."""

    def __init__(self, db: TestSumdb) -> None:
        super().__init__(db)
        self.batches: list[int] = []
        self.tamper = ""  # a tile path whose bytes are altered, once
        self.forgotten: list[str] = []
        self._batch = 0

    async def fetch_body(self, chain: Chain, req: ModRequest) -> tuple[int, bytes]:
        if "/tile/" in req.path:
            if self._batch == 0:
                asyncio.get_running_loop().call_soon(self._close_batch)
            self._batch += 1
        status, data = await super().fetch_body(chain, req)
        if self.tamper and req.path.endswith(self.tamper):
            self.tamper = ""
            self.stored.pop(req.path)
            data = bytes([data[0] ^ 1]) + data[1:]
        return status, data

    def _close_batch(self) -> None:
        self.batches.append(self._batch)
        self._batch = 0

    def forget(self, chain: Chain, req: ModRequest) -> None:
        self.forgotten.append(req.path)
        super().forget(chain, req)


def lookup_request(
    db: TestSumdb, tmp_path: Path, record_id: int, head: int, module: str = "example.com/a"
) -> tuple[ModRequest, Path]:
    text = f"{module} v1.0.0 {H1}\n{module} v1.0.0/go.mod {H2}\n".encode()
    body = tmp_path / f"lookup-{record_id}-{head}-{module.replace('/', '_')}"
    body.write_bytes(format_record(record_id, text) + db.signed_tree(head))
    return parse_request(f"sumdb/{db.signer.name}/lookup/{module}@v1.0.0"), body


def eighty_thousand(db: TestSumdb, tmp_path: Path) -> tuple[Rounds, Checker]:
    """`db` grown to 80,000 records, example.com/a's at 70000, and a checker of it."""
    db.grow(70_000)
    db.add("example.com/a", "v1.0.0", H1, H2)  # record 70000
    db.grow(9_999)
    source = Rounds(db)
    return source, checker_of(db, tmp_path, source)


def test_a_proof_fetches_its_tiles_at_once_a_round_per_phase(tmp_path: Path) -> None:
    """On the event loop, no worker thread: the verifier stops at the tiles it lacks,
    they are fetched all at once, and it starts again (client.go: checkTrees, then
    checkRecord), so a lookup costs a round trip to the database per phase."""
    with TestSumdb("sumdb.modgate.test") as db:
        db.grow(70_000)
        db.add("example.com/a", "v1.0.0", H1, H2)  # record 70000
        db.grow(8_999)
        db.add("example.com/b", "v1.0.0", H1, H2)  # record 79000: not in tree 75,000
        db.grow(999)
        source = Rounds(db)
        c = checker_of(db, tmp_path, source)
        first = lookup_request(db, tmp_path, 70_000, 75_000)
        later = lookup_request(db, tmp_path, 79_000, 80_000, "example.com/b")

        async def run() -> None:
            await c.validate(*first)
            proven = len(source.batches)
            await c.idle()
            source.batches.clear()
            await c.validate(*later)  # a newer head: checkTrees, then the record in it
            assert len(source.batches) <= 2 and max(source.batches) > 1, source.batches
            assert proven <= 2

        asyncio.run(run())


def test_a_newer_head_waits_until_after_the_answer_when_the_record_is_proven_already(
    tmp_path: Path,
) -> None:
    """The record is in the newest verified tree: proven there, with the tiles in hand,
    no round trip to the database; the newer head is merged after the answer."""
    with TestSumdb("sumdb.modgate.test") as db:
        source, c = eighty_thousand(db, tmp_path)

        async def run() -> None:
            await c.validate(*lookup_request(db, tmp_path, 70_000, 75_000))
            await c.idle()
            verifier = c._verifiers[db.signer.name]
            source.batches.clear()
            await c.validate(*lookup_request(db, tmp_path, 70_000, 80_000))
            assert source.batches == [] and verifier.tree.n == 75_000
            await c.idle()
            assert verifier.tree.n == 80_000 and source.batches  # merged, after
            assert (tmp_path / "state").rglob("*")  # and saved

        asyncio.run(run())


def test_a_fork_in_a_head_merged_after_an_answer_refuses_every_later_lookup(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The answer was proven in the timeline verified before the fork; the fork is found
    when its head is merged, and from then on nothing of that database is trusted."""
    with TestSumdb("sumdb.modgate.test") as db:
        source, c = eighty_thousand(db, tmp_path)

        async def run() -> None:
            await c.validate(*lookup_request(db, tmp_path, 70_000, 75_000))
            await c.idle()
            db.fork(74_990)  # in tree 75,000: every later head contradicts it
            await c.validate(*lookup_request(db, tmp_path, 70_000, 80_000))
            await c.idle()
            assert c._verifiers[db.signer.name].tree.n == 75_000  # never adopted
            with pytest.raises(IntegrityError, match="SECURITY ERROR"):
                await c.validate(*lookup_request(db, tmp_path, 70_000, 75_000))

        asyncio.run(run())
    assert "SECURITY ERROR" in caplog.text


def test_a_record_text_not_in_the_verified_tree_is_refused_under_a_newer_head(
    tmp_path: Path,
) -> None:
    """The answer from the verified tree is only as good as its proof: a lookup whose
    text is not the record logged at its id (another hash for the module) is refused, and
    its newer head, though signed, is not adopted on its say."""
    with TestSumdb("sumdb.modgate.test") as db:
        _, c = eighty_thousand(db, tmp_path)

        async def run() -> None:
            await c.validate(*lookup_request(db, tmp_path, 70_000, 75_000))
            await c.idle()
            module = "example.com/a"
            forged = f"{module} v1.0.0 {H2}\n{module} v1.0.0/go.mod {H2}\n".encode()
            body = tmp_path / "forged"
            body.write_bytes(format_record(70_000, forged) + db.signed_tree(80_000))
            req = parse_request(f"sumdb/{db.signer.name}/lookup/{module}@v1.0.0")
            with pytest.raises(IntegrityError, match="cannot authenticate record data"):
                await c.validate(req, body)
            await c.idle()
            assert c._verifiers[db.signer.name].tree.n == 75_000

        asyncio.run(run())


def test_a_newer_head_not_signed_by_the_database_is_refused_before_any_answer(
    tmp_path: Path,
) -> None:
    with TestSumdb("sumdb.modgate.test") as db:
        _, c = eighty_thousand(db, tmp_path)

        async def run() -> None:
            await c.validate(*lookup_request(db, tmp_path, 70_000, 75_000))
            db.fault = Fault.BAD_SIGNATURE
            with pytest.raises(IntegrityError, match="checksum database"):
                await c.validate(*lookup_request(db, tmp_path, 70_000, 80_000))
            db.fault = Fault.NONE

        asyncio.run(run())


def test_a_tampered_tile_fails_the_proof_and_is_dropped_for_the_next_try(tmp_path: Path) -> None:
    with TestSumdb("sumdb.modgate.test") as db:
        source, c = eighty_thousand(db, tmp_path)
        req, body = lookup_request(db, tmp_path, 70_000, 80_000)
        source.tamper = "tile/8/0/273"  # the record's own tile at level 0

        async def run() -> None:
            with pytest.raises(IntegrityError, match="checksum database"):
                await c.validate(req, body)
            assert any(p.endswith("tile/8/0/273") for p in source.forgotten)
            await c.validate(req, body)  # fetched anew, untouched: proven

        asyncio.run(run())


def test_waiting_for_the_kept_tiles_ends_when_they_are_kept(tmp_path: Path) -> None:
    """A keep that ended in the very turn idle() is called (its done-callback not run
    yet) must not make idle() spin: awaiting a gather of done tasks never yields."""
    import threading

    with TestSumdb("sumdb.modgate.test") as db:
        source = DatabaseThroughAStore(db)
        c = checker_of(db, tmp_path, source)

        async def nothing(*args: object) -> None:
            pass

        c._keep_tiles = nothing  # type: ignore[method-assign]

        async def run() -> None:
            c._keep_later(db.signer.name, None, None)  # type: ignore[arg-type]
            await asyncio.sleep(0)  # the keep runs and ends; its callback is not run yet
            await c.idle()

        done = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
        done.start()
        done.join(10)
        assert not done.is_alive(), "idle() never returned"
