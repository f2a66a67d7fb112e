"""rules.yaml: read into frozen dataclasses by one pure function, `load_config`.

Every error names the file, the line, the field and what was expected:

    rules.yaml:7: proxies[0].upstream: 'ftp://mirror' is not an http(s) URL

The YAML is composed into nodes (so each value keeps its line) and only scalars
are constructed, with PyYAML's safe constructor: the same safety as yaml.safe_load.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import yaml

from modgate.errors import ConfigError

if TYPE_CHECKING:
    from modgate.rules import Rules
    from modgate.teams import Teams

T = TypeVar("T")

GIB = 1 << 30


@dataclass(frozen=True)
class Hop:
    """One upstream proxy in a chain. `any_error` is true when the separator after it is
    `|` (fall through on any error) rather than `,` (fall through on 404/410 only)."""

    url: str
    any_error: bool = False


@dataclass(frozen=True)
class Chain:
    """An upstream chain with GOPROXY semantics ("Environment variables", GOPROXY).
    `database` marks a checksum database's own URL, which serves `lookup/...` where a
    proxy serves `sumdb/<name>/lookup/...`."""

    hops: tuple[Hop, ...]
    database: bool = False

    def __str__(self) -> str:
        parts = []
        for hop in self.hops:
            parts += [hop.url, "|" if hop.any_error else ","]
        return "".join(parts[:-1])


def normal_host(host: str) -> str:
    """A host name as DNS compares it: case-insensitive, and `host.` (fully qualified) is
    `host`. Every spelling of a gated host must be gated."""
    return host.lower().removesuffix(".")


@dataclass(frozen=True)
class Endpoint:
    """A URL clients ask (a module proxy or a checksum database) that modgate answers for."""

    url: str

    @property
    def host(self) -> str:
        return normal_host(urlsplit(self.url).hostname or "")

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def base_path(self) -> str:
        """The path prefix of the URL, "" or like "/go"."""
        return urlsplit(self.url).path.rstrip("/")

    def relative(self, host: str, port: int, path: str) -> str | None:
        """The request path below this URL, or None if the request is not for it."""
        if normal_host(host) != self.host or port != self.port:
            return None
        prefix = self.base_path + "/"
        return path[len(prefix) :] if path.startswith(prefix) else None


@dataclass(frozen=True)
class Proxy(Endpoint):
    """A module proxy as clients name it in GOPROXY, and where modgate fetches from."""

    chain: Chain


@dataclass(frozen=True)
class CacheSettings:
    size_limit: int = 20 * GIB
    ttl: float = 600.0
    negative_ttl: float = 60.0
    readahead: bool = True  # fetch the .info and go.mod go is about to ask for (readahead.py)
    # and the zip of each version whose .info go asked for (with `readahead` only)
    readahead_zips: bool = True


# cmd/go/internal/modfetch/key.go: the database the go command trusts by default.
KNOWN_SUMDB_KEYS = {
    "sum.golang.org": "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8",
}
# cmd/go/internal/modfetch/sumdb.go (dbDial): an alias reachable inside mainland China.
SUMDB_ALIASES = {"sum.golang.google.cn": "sum.golang.org https://sum.golang.google.cn"}


@dataclass(frozen=True)
class SumdbConfig(Endpoint):
    """A checksum database: its name, verifier key, and the URL it is served at."""

    name: str
    key: str
    upstream: str = ""  # where modgate fetches from, when not `url` itself
    fallback: bool = False  # after `upstream` fails or says 404, `url` itself (dbroute)

    @property
    def chain(self) -> Chain:
        if self.fallback and self.upstream:
            return Chain((Hop(self.upstream, any_error=True), Hop(self.url)), database=True)
        return Chain((Hop(self.upstream or self.url),), database=True)


@dataclass(frozen=True)
class ChecksumSettings:
    """Where expected hashes come from. `databases` is None when the file names none:
    then `go env GOSUMDB` applies (see `parse_gosumdb`); an empty tuple means none."""

    databases: tuple[SumdbConfig, ...] | None = None
    go_sum: tuple[Path, ...] = ()
    pins: tuple[str, ...] = ()
    private: str = ""  # GONOSUMDB-style comma-separated patterns


@dataclass(frozen=True)
class S3Settings:
    """An S3-compatible bucket shared by replicas (objectstore.py). No secret here: the
    keys come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or `credentials_file`."""

    endpoint: str
    bucket: str
    region: str = "us-east-1"
    prefix: str = "modgate/"
    credentials_file: Path | None = None  # AWS shared-credentials format (INI)
    profile: str = "default"
    part_size: int = 16 << 20  # multipart above this; each part held once in memory
    timeout: float = 10.0


@dataclass(frozen=True)
class RedisSettings:
    """Where replicas coordinate (coordination.py). A password is never in rules.yaml: it
    comes from MODGATE_REDIS_PASSWORD or `password_file`."""

    url: str
    password_file: Path | None = None
    lock_ttl: float = 10.0  # a dead holder's lock frees after this; renewed while held


@dataclass(frozen=True)
class Config:
    """Everything rules.yaml says. `proxies` is None when the file names none: then the
    proxies of `go env GOPROXY` apply (see `proxies_from_goproxy`)."""

    source: str = "<defaults>"
    proxies: tuple[Proxy, ...] | None = None
    cache: CacheSettings = field(default_factory=CacheSettings)
    checksum: ChecksumSettings = field(default_factory=ChecksumSettings)
    rules: Rules = field(default_factory=lambda: _rules_module().Rules())
    # `teams:` (modgate.teams): who may authenticate, and as which team. None: no
    # authentication by modgate (anyone who reaches it is the same anonymous client).
    teams: Teams | None = None
    s3: S3Settings | None = None  # `store: {s3: …}`: the shared tier behind the local cache
    redis: RedisSettings | None = None  # `coordination: {redis: …}`


def _rules_module() -> Any:
    import modgate.rules  # imported late: it builds on this module's _Node

    return modgate.rules


def load_config(path: Path) -> Config:
    """Read and check a rules file. Raises ConfigError naming the place and the fix."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read rules file: {e.strerror or e}") from e
    return config_from_bytes(data, str(path))


def config_from_bytes(data: bytes, source: str) -> Config:
    """`parse_config` of a rules file's bytes, read already (as the reload watcher does)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{source}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    return parse_config(text, source)


def parse_config(text: str, source: str = "rules.yaml") -> Config:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise ConfigError(f"{where}: not valid YAML: {e.problem}") from e
    except yaml.YAMLError as e:  # the reader's: a character YAML does not allow, unmarked
        raise ConfigError(f"{source}: not valid YAML: {' '.join(str(e).split())}") from e
    except RecursionError as e:  # PyYAML composes nested collections recursively
        raise ConfigError(f"{source}: lists or mappings nested too deeply to read") from e
    if root is None:
        return Config(source=source)
    rules = _rules_module()
    top = _Node(source, root, "").mapping(
        {"proxies", "cache", "checksum", "teams", "store", "coordination", *rules.TOP_LEVEL_KEYS}
    )
    proxies = None
    if "proxies" in top:
        proxies = tuple(_proxy(n) for n in top["proxies"].sequence())
        if not proxies:  # as `run` would find, once it had started
            raise top["proxies"].error(
                "no module proxy to gate; list them, or leave 'proxies' out to gate those of "
                "`go env GOPROXY`"
            )
        _check_unique_proxies(proxies, top["proxies"])
    cache = _cache(top["cache"]) if "cache" in top else CacheSettings()
    base = Path(source).parent
    checksum = _checksum(top["checksum"], base) if "checksum" in top else ChecksumSettings()
    teams = None
    if "teams" in top:
        from modgate.teams import parse_teams  # imported late: it builds on _Node

        teams = parse_teams(top["teams"], base)
    s3 = _store(top["store"], base) if "store" in top else None
    redis = _coordination(top["coordination"], base) if "coordination" in top else None
    return Config(source=source, proxies=proxies, cache=cache, checksum=checksum,
                  rules=rules.parse_rules(top, teams.names if teams else None),
                  teams=teams, s3=s3, redis=redis)  # fmt: skip


def _store(node: _Node, base: Path) -> S3Settings | None:
    s3 = node.mapping({"s3"}).get("s3")
    if s3 is None:
        return None
    fields = s3.mapping(
        {"endpoint", "bucket", "region", "prefix", "credentials_file", "profile", "part_size",
         "timeout"}, required={"endpoint", "bucket"},
    )  # fmt: skip
    endpoint = fields["endpoint"].convert(lambda v: _http_url(_text(v)))
    if urlsplit(endpoint).username or urlsplit(endpoint).password:
        raise fields["endpoint"].error(
            "credentials do not belong in rules.yaml: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or name a credentials_file"
        )
    default = S3Settings(endpoint, "")
    part_size = fields["part_size"].convert(parse_size) if "part_size" in fields else 0
    if part_size and part_size < 5 << 20:  # S3's own minimum for all parts but the last
        raise fields["part_size"].error(f"{part_size} bytes is below S3's minimum part (5MiB)")
    return S3Settings(
        endpoint=endpoint,
        bucket=fields["bucket"].convert(_text),
        region=fields["region"].convert(_text) if "region" in fields else default.region,
        prefix=fields["prefix"].convert(_text) if "prefix" in fields else default.prefix,
        credentials_file=base / fields["credentials_file"].convert(_text)
        if "credentials_file" in fields else None,
        profile=fields["profile"].convert(_text) if "profile" in fields else default.profile,
        part_size=part_size or default.part_size,
        timeout=fields["timeout"].convert(parse_duration) if "timeout" in fields
        else default.timeout,
    )  # fmt: skip


def _coordination(node: _Node, base: Path) -> RedisSettings | None:
    redis = node.mapping({"redis"}).get("redis")
    if redis is None:
        return None
    fields = redis.mapping({"url", "password_file", "lock_ttl"}, required={"url"})
    url = fields["url"].convert(_text)
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise fields["url"].error(f"{url!r} is not a Redis URL (redis://host:port/db)")
    if parts.password:
        raise fields["url"].error(
            "a password does not belong in rules.yaml: set MODGATE_REDIS_PASSWORD or name "
            "a password_file"
        )
    lock_ttl = fields["lock_ttl"].convert(parse_duration) if "lock_ttl" in fields else 10.0
    if lock_ttl < 1:
        raise fields["lock_ttl"].error("a lock must live at least 1s (it is renewed at a third)")
    return RedisSettings(
        url=url,
        password_file=base / fields["password_file"].convert(_text)
        if "password_file" in fields else None,
        lock_ttl=lock_ttl,
    )  # fmt: skip


def _proxy(node: _Node) -> Proxy:
    fields = node.mapping({"url", "upstream"}, required={"url"})
    url = fields["url"].convert(_proxy_url)
    chain = fields["upstream"].convert(parse_chain) if "upstream" in fields else None
    return Proxy(url=url, chain=chain or Chain((Hop(url),)))


def _check_unique_proxies(proxies: tuple[Proxy, ...], node: _Node) -> None:
    seen: dict[tuple[str, int, str], int] = {}
    for i, p in enumerate(proxies):
        key = (p.host, p.port, p.base_path)
        if key in seen:
            raise node.items[i].error(f"{p.url} is listed twice (also proxies[{seen[key]}])")
        seen[key] = i


def _cache(node: _Node) -> CacheSettings:
    fields = node.mapping({"size_limit", "ttl", "negative_ttl", "readahead", "readahead_zips"})
    default = CacheSettings()
    return CacheSettings(
        size_limit=fields["size_limit"].convert(parse_size) if "size_limit" in fields
        else default.size_limit,
        ttl=fields["ttl"].convert(parse_duration) if "ttl" in fields else default.ttl,
        negative_ttl=fields["negative_ttl"].convert(parse_duration)
        if "negative_ttl" in fields else default.negative_ttl,
        readahead=fields["readahead"].convert(_boolean) if "readahead" in fields
        else default.readahead,
        readahead_zips=fields["readahead_zips"].convert(_boolean) if "readahead_zips" in fields
        else default.readahead_zips,
    )  # fmt: skip


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{value!r} is not true or false")
    return value


def _database(node: _Node) -> SumdbConfig:
    """A GOSUMDB-style string, or {key, url, upstream} to fetch it from elsewhere."""
    if isinstance(node.node, yaml.MappingNode):
        fields = node.mapping({"key", "url", "upstream"}, required={"key"})
        db = fields["key"].convert(parse_gosumdb)
        if db is not None and "url" in fields:
            db = replace(db, url=fields["url"].convert(_proxy_url))
        if db is not None and "upstream" in fields:
            db = replace(db, upstream=fields["upstream"].convert(_proxy_url))
    else:
        db = node.convert(parse_gosumdb)
    if db is None:
        raise node.error("'off' is not a database; write databases: [] for none")
    return db


def _checksum(node: _Node, base: Path) -> ChecksumSettings:
    fields = node.mapping({"databases", "go_sum", "pins", "private"})
    databases = None
    if "databases" in fields:
        databases = tuple(_database(n) for n in fields["databases"].sequence())
    go_sum: tuple[Path, ...] = ()
    if "go_sum" in fields:
        go_sum = tuple(base / n.convert(_text) for n in fields["go_sum"].sequence())
    pins: tuple[str, ...] = ()
    if "pins" in fields:
        pins = tuple(n.convert(_go_sum_line) for n in fields["pins"].sequence())
    private = fields["private"].convert(_patterns) if "private" in fields else ""
    return ChecksumSettings(
        databases=databases,
        go_sum=go_sum,
        pins=pins,
        private=private,
    )


# --- value parsers: each raises ValueError with what was expected -----------------------


def parse_gosumdb(value: Any) -> SumdbConfig | None:
    """A GOSUMDB value ("Environment variables", GOSUMDB; modfetch dbDial): "off", a known
    database name, or "<verifier key> [<url>]". None for "off"."""
    from modgate.sumdb.note import SumdbError, parse_verifier_key

    text = SUMDB_ALIASES.get(str(value).strip(), str(value).strip())
    if text == "off":
        return None
    fields = text.split()
    if not 1 <= len(fields) <= 2:
        raise ValueError(f"{value!r} is not a checksum database: expected '<name or key> [<url>]'")
    key = KNOWN_SUMDB_KEYS.get(fields[0], fields[0])
    if "+" not in key:
        raise ValueError(
            f"{fields[0]!r} is not a known checksum database: give its verifier key "
            "'<name>+<hash>+<key>' (as in GOSUMDB)"
        )
    try:
        name = parse_verifier_key(key).name
    except SumdbError as e:
        raise ValueError(f"{fields[0]!r}: invalid verifier key: {e}") from e
    url = _http_url(fields[1]) if len(fields) == 2 else f"https://{name}"
    return SumdbConfig(name=name, key=key, url=url)


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{value!r} is not a file name")
    return value


def _go_sum_line(value: Any) -> str:
    """One go.sum line: "<module> <version>[/go.mod] h1:<base64>"."""
    parts = str(value).split()
    if len(parts) != 3 or not parts[2].startswith("h1:"):
        raise ValueError(f"{value!r} is not a go.sum line ('<module> <version>[/go.mod] h1:...')")
    return " ".join(parts)


def _patterns(value: Any) -> str:
    """GONOSUMDB-style patterns: a list, or a comma-separated string."""
    items = value if isinstance(value, list) else str(value).split(",")
    cleaned = [str(i).strip() for i in items if str(i).strip()]
    for pattern in cleaned:
        if any(c.isspace() for c in pattern):
            raise ValueError(f"{pattern!r} is not a module path pattern")
    return ",".join(cleaned)


def parse_chain(text: Any) -> Chain:
    """An upstream list in GOPROXY syntax: URLs separated by `,` or `|`."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{text!r} is not an upstream list (URLs separated by ',' or '|')")
    parts = re.split(r"([,|])", text.strip())
    hops = []
    for i in range(0, len(parts), 2):
        entry = parts[i].strip()
        if entry in ("direct", "off"):
            raise ValueError(
                f"{entry!r} is not supported as an upstream: modgate fetches from module "
                f"proxies only; put '{entry}' after modgate in the client's GOPROXY instead"
            )
        sep = parts[i + 1] if i + 1 < len(parts) else ","
        hops.append(Hop(_http_url(entry), any_error=sep == "|"))
    return Chain(tuple(hops))


def proxies_from_goproxy(goproxy: str) -> tuple[Proxy, ...]:
    """The default proxies: each URL in a GOPROXY value, fetched from itself."""
    urls = [u.strip() for u in re.split(r"[,|]", goproxy) if u.strip()]
    return tuple(
        Proxy(url=_http_url(u), chain=Chain((Hop(_http_url(u)),)))
        for u in urls
        if u not in ("direct", "off")
    )


def _http_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{text!r} is not an http(s) URL")
    if parts.query or parts.fragment:
        raise ValueError(f"{text!r}: a proxy URL takes no query or fragment")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when it is read
    except ValueError:
        raise ValueError(f"{text!r}: the port is not a number from 0 to 65535") from None
    return text.rstrip("/")


def _proxy_url(text: Any) -> str:
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a URL")
    return _http_url(text)


_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3,
          "gb": 1000**3, "t": 1000**4, "tb": 1000**4, "p": 1000**5, "pb": 1000**5,
          "e": 1000**6, "eb": 1000**6, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30,
          "tib": 1 << 40, "pib": 1 << 50, "eib": 1 << 60}  # fmt: skip
# diskcache keeps size_limit in an SQLite INTEGER (a signed 64-bit number): a larger one
# fails at the first write to the cache database ("Python int too large to convert").
MAX_SIZE = 2**63 - 1


def parse_size(value: Any) -> int:
    """A byte count: 1073741824, "500MB", "20GiB"; at most MAX_SIZE."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(value))
    if isinstance(value, bool) or not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"{value!r} is not a size (for example 500MB or 20GiB)")
    # Decimal, not float: exact for every digit given, and no overflow on long numbers.
    size = int(Decimal(m.group(1)) * _UNITS[m.group(2).lower()])
    if size > MAX_SIZE:
        raise ValueError(
            f"{value!r} is more than a cache can hold (at most 8EiB - 1 byte, {MAX_SIZE} bytes)"
        )
    return size


_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> float:
    """Seconds: 30, "30s", "10m", "1h30m", "7d"."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        if math.isinf(value):
            raise ValueError(f"{value!r} is not a duration (for example 30s, 10m, 1h30m)")
        return float(value)
    text = str(value).strip()
    terms = re.findall(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)", text)
    if not text or "".join(n + u for n, u in terms) != text:
        raise ValueError(f"{value!r} is not a duration (for example 30s, 10m, 1h30m)")
    seconds = sum(float(n) * _SECONDS[u] for n, u in terms)
    if math.isinf(seconds):  # too many digits for a float
        raise ValueError(f"{value!r} is not a duration (for example 30s, 10m, 1h30m)")
    return seconds


# --- YAML nodes that remember where they stand ------------------------------------------


class _Node:
    """A composed YAML node with its place in the document, for error messages."""

    def __init__(self, source: str, node: yaml.Node, where: str) -> None:
        self.source, self.node, self.where = source, node, where
        self.items: list[_Node] = []

    def error(self, message: str) -> ConfigError:
        line = self.node.start_mark.line + 1
        return ConfigError(f"{self.source}:{line}: {self.where or '(top level)'}: {message}")

    def mapping(self, allowed: set[str], required: frozenset[str] | set[str] = frozenset(),
                ) -> dict[str, _Node]:  # fmt: skip
        if not isinstance(self.node, yaml.MappingNode):
            raise self.error(f"expected a mapping with keys {', '.join(sorted(allowed))}")
        out: dict[str, _Node] = {}
        for key_node, value_node in self.node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise _Node(self.source, key_node, self.where).error(
                    "a key must be a plain name, not a list or mapping"
                )
            key = key_node.value
            where = f"{self.where}.{key}" if self.where else str(key)
            if key not in allowed:
                raise _Node(self.source, key_node, where).error(
                    f"unknown field (expected one of: {', '.join(sorted(allowed))})"
                )
            out[key] = _Node(self.source, value_node, where)
        missing = sorted(set(required) - out.keys())
        if missing:
            raise self.error(f"missing field {missing[0]!r}")
        return out

    def sequence(self) -> list[_Node]:
        if not isinstance(self.node, yaml.SequenceNode):
            raise self.error("expected a list")
        self.items = [
            _Node(self.source, n, f"{self.where}[{i}]") for i, n in enumerate(self.node.value)
        ]
        return self.items

    def value(self) -> Any:
        if not isinstance(self.node, yaml.ScalarNode):
            raise self.error("expected a single value")
        try:
            return yaml.SafeLoader("").construct_object(self.node)
        except yaml.YAMLError as e:  # a tag safe_load does not know: "!x", "!!python/…"
            raise self.error(f"cannot read this value: {getattr(e, 'problem', e)}") from e
        except ValueError as e:  # a known tag on a value it cannot hold: "!!int x"
            raise self.error(f"cannot read this value: {e}") from e

    def convert(self, parse: Callable[[Any], T]) -> T:
        try:
            return parse(self.value())
        except ValueError as e:
            raise self.error(str(e)) from e
