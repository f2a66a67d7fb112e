"""`modgate doctor`'s judgement of a go client's settings: which way its module traffic
takes (through modgate as an HTTPS proxy, at modgate's GOPROXY endpoint, or around it),
and every setting that sends some of it around modgate or weakens a check. Pure: it
decides over values; `doctor_cli` reads them (`go env`, the environment, files) and runs
the live probes.

go's rules followed here:
  - GOPROXY ("Environment variables"; cmd/go/internal/modfetch/proxy.go proxyList): a
    list of URLs, `direct` and `off`, split by `,` (next on 404/410) or `|` (next on any
    error); an entry with no scheme gets `https://`. The first entry gets every request.
  - Proxies from the environment (net/http ProxyFromEnvironment, x/net/http/httpproxy):
    HTTPS_PROXY (else https_proxy) for https URLs, HTTP_PROXY for http; NO_PROXY (else
    no_proxy) excludes hosts; `localhost` and loopback addresses never use a proxy.
  - GOPRIVATE sets the defaults of GONOPROXY and GONOSUMDB ("Private modules").
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from modgate.config import normal_host

Status = Literal["ok", "note", "warn", "fail"]
PROBLEMS = ("warn", "fail")  # what makes `modgate doctor` exit 1


@dataclass(frozen=True)
class Finding:
    """One thing checked: `ok`, `note` (a setting doing what it says, worth knowing),
    `warn` or `fail` (wrong: `fix` says what to do)."""

    check: str
    status: Status
    message: str
    fix: str = ""


@dataclass(frozen=True)
class Client:
    """The settings go would use. Proxy variables come from the process environment only;
    the GO* ones as `go env` resolves them (environment, go.env file, defaults)."""

    goproxy: str = ""
    https_proxy: str = ""
    http_proxy: str = ""
    no_proxy: str = ""
    ssl_cert_file: str = ""
    ssl_cert_dir: str = ""
    goprivate: str = ""
    gonoproxy: str = ""
    gonosumdb: str = ""
    gosumdb: str = ""
    goinsecure: str = ""
    goflags: str = ""
    gotoolchain: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str], goenv: Mapping[str, str]) -> Client:
        def either(upper: str) -> str:
            return environ.get(upper) or environ.get(upper.lower()) or ""

        def go(name: str) -> str:
            return goenv.get(name, environ.get(name, ""))

        return cls(
            goproxy=go("GOPROXY"),
            https_proxy=either("HTTPS_PROXY"),
            http_proxy=either("HTTP_PROXY"),
            no_proxy=either("NO_PROXY"),
            ssl_cert_file=environ.get("SSL_CERT_FILE", ""),
            ssl_cert_dir=environ.get("SSL_CERT_DIR", ""),
            goprivate=go("GOPRIVATE"),
            gonoproxy=go("GONOPROXY") or go("GOPRIVATE"),
            gonosumdb=go("GONOSUMDB") or go("GOPRIVATE"),
            gosumdb=go("GOSUMDB"),
            goinsecure=go("GOINSECURE"),
            goflags=go("GOFLAGS"),
            gotoolchain=go("GOTOOLCHAIN"),
        )


@dataclass(frozen=True)
class Gate:
    """Where modgate listens and which module proxies it gates (their URLs)."""

    proxy: str
    endpoint: str = ""
    gated: tuple[str, ...] = ()
    transparent: bool = False  # the network redirects clients' ports 80/443 to it


@dataclass(frozen=True)
class Bundle:
    """What the CA file go would trust holds: `path` ("" when go uses the system's
    store), whether modgate's CA is in it, how many other CAs, or why it was unreadable."""

    path: str
    has_modgate_ca: bool = False
    others: int = 0
    error: str = ""


@dataclass(frozen=True)
class Entry:
    """One GOPROXY entry: a URL, `direct` or `off`; `any_error` when `|` follows it."""

    value: str
    any_error: bool = False


def goproxy_entries(goproxy: str) -> tuple[Entry, ...]:
    """proxyList: the entries in order, with `https://` added where go adds it."""
    out: list[Entry] = []
    for m in re.finditer(r"([^,|]*)([,|]?)", goproxy):
        text = m.group(1).strip()
        if not text:
            continue
        if text not in ("direct", "off") and re.search(r"[.:/]", text) and ":/" not in text:
            text = "https://" + text
        out.append(Entry(text, any_error=m.group(2) == "|"))
    return tuple(out)


# --- which way a request goes ---------------------------------------------------------

Way = Literal["endpoint", "proxy", "transparent", "tunnel", "around", "direct", "off"]


@dataclass(frozen=True)
class Path:
    """Which way go sends requests for one GOPROXY entry, and why."""

    entry: str
    way: Way
    why: str


_LOCAL_NAMES = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "::"}


def _same_server(a: str, b: str) -> bool:
    """Two URLs of one listener: same port, and the same host or both on this machine."""
    pa, pb = urlsplit(a), urlsplit(b)
    if not a or not b or pa.scheme != pb.scheme:
        return False
    try:
        if (pa.port or _default(pa.scheme)) != (pb.port or _default(pb.scheme)):
            return False
    except ValueError:
        return False
    ha, hb = normal_host(pa.hostname or ""), normal_host(pb.hostname or "")
    return ha == hb or (is_loopback(ha) and is_loopback(hb))


def _default(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def is_loopback(host: str) -> bool:
    """httpproxy's useProxy: `localhost` and loopback addresses never go through a proxy."""
    host = normal_host(host).strip("[]")
    if host in _LOCAL_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def no_proxy_excludes(no_proxy: str, host: str, port: int) -> bool:
    """Whether NO_PROXY keeps requests to host:port off the proxy (x/net/http/httpproxy:
    `*` all; an IP or CIDR; `example.com` the name and its subdomains; `.example.com` and
    `*.example.com` subdomains only; an optional `:port` on each)."""
    host = normal_host(host).strip("[]")
    for raw in no_proxy.split(","):
        item = raw.strip().lower()
        if not item:
            continue
        if item == "*":
            return True
        try:
            net = ipaddress.ip_network(item, strict=False)
        except ValueError:
            pass
        else:
            try:
                if ipaddress.ip_address(host) in net:
                    return True
            except ValueError:
                pass
            continue
        name, _, want_port = item.rpartition(":") if _has_port(item) else (item, "", "")
        if want_port and want_port != str(port):
            continue
        name = name.removeprefix("*").removesuffix(".")
        try:
            if ipaddress.ip_address(name.strip("[]")) == ipaddress.ip_address(host):
                return True
            continue
        except ValueError:
            pass
        exact = not name.startswith(".")
        suffix = name if name.startswith(".") else "." + name
        if host.endswith(suffix) or (exact and host == suffix[1:]):
            return True
    return False


def _has_port(item: str) -> bool:
    head, sep, tail = item.rpartition(":")
    return bool(sep) and tail.isdigit() and not head.endswith(":") and "]" not in tail


def paths(client: Client, gate: Gate) -> tuple[Path, ...]:
    """Which way each GOPROXY entry's requests take."""
    return tuple(_path(e.value, client, gate) for e in goproxy_entries(client.goproxy))


def _path(entry: str, client: Client, gate: Gate) -> Path:
    if entry == "direct":
        return Path(entry, "direct", "")
    if entry == "off":
        return Path(entry, "off", "")
    if gate.endpoint and _same_server(entry, gate.endpoint):
        return Path(entry, "endpoint", "modgate's GOPROXY endpoint")
    parts = urlsplit(entry)
    host = parts.hostname or ""
    proxy_var, proxy = (
        ("HTTPS_PROXY", client.https_proxy)
        if parts.scheme == "https"
        else ("HTTP_PROXY", client.http_proxy)
    )
    gated = any(_same_server(entry.rstrip("/"), g.rstrip("/")) for g in gate.gated)
    if gate.transparent and not proxy:
        if is_loopback(host):
            return Path(entry, "around", f"{host} is on this machine: never redirected")
        if gated:
            return Path(entry, "transparent", "redirected to modgate by the network")
        return Path(entry, "tunnel", "modgate does not gate it: passed through or refused")
    if not proxy:
        return Path(entry, "around", f"{proxy_var} is not set")
    if not _same_server(_proxy_url(proxy), gate.proxy):
        return Path(entry, "around", f"{proxy_var}={proxy} is not modgate ({gate.proxy})")
    if is_loopback(host):
        return Path(entry, "around", f"{host} is on this machine: go never proxies it")
    try:
        port = parts.port or _default(parts.scheme)
    except ValueError:
        return Path(entry, "around", "not a URL go can use")
    if no_proxy_excludes(client.no_proxy, host, port):
        return Path(entry, "around", f"NO_PROXY={client.no_proxy} excludes {host}")
    if not gated:
        return Path(entry, "tunnel", "modgate does not gate it: passed through untouched")
    return Path(entry, "proxy", f"through modgate's HTTPS proxy {gate.proxy}")


def _proxy_url(value: str) -> str:
    """A proxy setting as net/http reads it: no scheme means http://."""
    return value if "://" in value else "http://" + value


# --- the findings -----------------------------------------------------------------------


@dataclass(frozen=True)
class Findings:
    route: Way | Literal["none"]
    items: list[Finding] = field(default_factory=list)

    def add(self, check: str, status: Status, message: str, fix: str = "") -> None:
        self.items.append(Finding(check, status, message, fix))


def client_findings(
    client: Client, gate: Gate, bundle: Bundle, env_fix: str, goproxy_fix: str
) -> Findings:
    """Everything wrong (or worth knowing) about `client`'s settings. `env_fix` and
    `goproxy_fix` are the commands that point go at modgate either way."""
    ways = paths(client, gate)
    first = ways[0].way if ways else "none"
    found = Findings(route="none" if first in ("around", "tunnel") else first)
    _route(found, ways, client, gate, env_fix, goproxy_fix)
    if any(p.way in ("proxy", "transparent") for p in ways):
        _ca(found, bundle, env_fix)
    _proxy_settings(found, client, gate, ways)
    _go_settings(found, client, first)
    return found


def _route(
    found: Findings,
    ways: Sequence[Path],
    client: Client,
    gate: Gate,
    env_fix: str,
    goproxy_fix: str,
) -> None:
    either = f'eval "$({env_fix})"' + (f", or {goproxy_fix}" if gate.endpoint else "")
    if not ways:
        found.add(
            "route", "fail", "GOPROXY is empty: go uses its default proxy, not modgate", either
        )
        return
    first, rest = ways[0], ways[1:]
    match first.way:
        case "off":
            found.add("route", "fail", "GOPROXY=off: go downloads no module at all", either)
            return
        case "direct":
            found.add(
                "route",
                "fail",
                "GOPROXY starts with 'direct': go fetches every module from its version "
                "control host, around modgate's cache, checks and module rules",
                either,
            )
            return
        case "around":
            found.add("route", "fail", f"go asks {first.entry} around modgate: {first.why}", either)
            return
        case "tunnel":
            found.add(
                "route",
                "fail",
                f"go asks {first.entry} through modgate, which does not gate it: its answers "
                "pass through unchecked and uncached",
                f"add {first.entry} to proxies: in modgate's rules file, or point GOPROXY at "
                "a proxy modgate gates",
            )
            return
        case "endpoint":
            found.add("route", "ok", f"go asks modgate's GOPROXY endpoint {first.entry}")
        case "proxy" | "transparent":
            found.add("route", "ok", f"go asks {first.entry} {first.why}")
    for p in rest:
        if p.way in ("endpoint", "proxy", "transparent"):
            continue
        what = {
            "direct": "fetched direct from version control, around modgate",
            "off": "not fetched (off)",
        }.get(p.way, f"fetched from {p.entry} around modgate ({p.why})")
        found.add(
            "goproxy-fallback",
            "note" if p.way == "off" else "warn",
            f"modules the entries before it do not have (404/410; any error after '|') are {what}",
            "" if p.way == "off" else f"remove {p.entry} from GOPROXY, or end it with ',off'",
        )


def _ca(found: Findings, bundle: Bundle, env_fix: str) -> None:
    where = f"SSL_CERT_FILE={bundle.path}" if bundle.path else "the system's CA store"
    if bundle.error:
        found.add(
            "ca-bundle", "fail", f"go cannot read {where}: {bundle.error}", f'eval "$({env_fix})"'
        )
    elif not bundle.has_modgate_ca:
        found.add(
            "ca-bundle",
            "fail",
            f"{where} does not hold modgate's CA: go refuses modgate's certificates "
            "(x509: certificate signed by unknown authority)",
            f'eval "$({env_fix})" (SSL_CERT_FILE: the system CAs and modgate\'s)',
        )
    elif bundle.path and bundle.others == 0:
        found.add(
            "ca-bundle",
            "warn",
            f"{where} holds modgate's CA alone: go replaces its whole root store with it, "
            "so every host modgate passes through untouched fails its TLS check",
            f'eval "$({env_fix})" (its bundle holds the system CAs too)',
        )
    else:
        found.add("ca-bundle", "ok", f"{where} holds modgate's CA and {bundle.others} others")


def _proxy_settings(found: Findings, client: Client, gate: Gate, ways: Sequence[Path]) -> None:
    if client.https_proxy and not _same_server(_proxy_url(client.https_proxy), gate.proxy):
        found.add(
            "https-proxy",
            "note",
            f"HTTPS_PROXY={client.https_proxy}: go sends HTTPS through it, not through modgate",
        )
    for p in ways:
        if p.way == "around" and "NO_PROXY" in p.why:
            found.add(
                "no-proxy",
                "fail",
                p.why + ": go sends its requests around modgate",
                "remove that entry from NO_PROXY and no_proxy",
            )
        elif p.way == "around" and "never proxies" in p.why and client.https_proxy:
            found.add(
                "loopback",
                "warn",
                f"GOPROXY entry {p.entry}: {p.why}, even with HTTPS_PROXY",
                "give that proxy a name that is not loopback, or use modgate's GOPROXY endpoint",
            )


def _go_settings(found: Findings, client: Client, first: str) -> None:
    if client.gonoproxy:
        how = (
            "their version-control traffic goes through modgate's host rules only: not "
            "cached, not checked against a module proxy"
            if first == "proxy"
            else "entirely around modgate"
        )
        found.add(
            "gonoproxy",
            "note",
            f"GONOPROXY/GOPRIVATE={client.gonoproxy}: go fetches these modules direct; {how}",
        )
    if client.gonosumdb:
        found.add(
            "gonosumdb",
            "note",
            f"GONOSUMDB/GOPRIVATE={client.gonosumdb}: go does not look these modules up "
            "in the checksum database (modgate checks them against pins, go.sum files "
            "and first-seen hashes)",
        )
    if client.gosumdb.strip() == "off":
        found.add(
            "gosumdb",
            "warn",
            "GOSUMDB=off: go itself verifies no module against the checksum database; only "
            "modgate's checks stand between a tampered module and the build",
            "unset GOSUMDB (go env -u GOSUMDB)",
        )
    if client.goinsecure:
        found.add(
            "goinsecure",
            "warn",
            f"GOINSECURE={client.goinsecure}: go fetches these over plain HTTP and accepts "
            "any certificate for them",
            "unset GOINSECURE (go env -u GOINSECURE)",
        )
    if re.search(r"(^|\s)-{1,2}insecure(=\S*)?(\s|$)", client.goflags):
        found.add(
            "goflags",
            "warn",
            f"GOFLAGS={client.goflags}: -insecure turns off certificate checks",
            "remove -insecure from GOFLAGS",
        )
    toolchain = client.gotoolchain.strip()
    if toolchain and not toolchain.startswith("local") and "+path" not in toolchain:
        found.add(
            "gotoolchain",
            "note",
            f"GOTOOLCHAIN={toolchain}: go may download a Go toolchain (tens of MB, module "
            "golang.org/toolchain) through GOPROXY when a go.mod asks for a newer Go",
        )


def exit_status(findings: Sequence[Finding]) -> int:
    """0 only when nothing is wrong."""
    return 1 if any(f.status in PROBLEMS for f in findings) else 0
