"""`modgate doctor`: what keeps go from using modgate, or makes it fail through it, and
the fix for each. Reads the client's settings (`go env`, the environment, the CA file go
would trust), judges them (doctor.py), then checks the running modgate and what it needs
(listening, a live request the way go would send it, cache directory, CA, rules file,
upstream, checksum database). Exit status 0 only when nothing is wrong."""

from __future__ import annotations

import argparse
import base64
import datetime
import functools
import json
import os
import re
import shutil
import socket
import ssl
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from modgate import __version__
from modgate.doctor import Bundle, Client, Finding, Findings, Gate, client_findings, exit_status
from modgate.errors import ModgateError

if TYPE_CHECKING:
    from modgate import dbroute
    from modgate.config import Hop

PROBE_MODULE = "golang.org/x/mod"
LOW_SPACE = 1 << 30  # below this much free space the cache directory is a problem
CA_MARGIN = datetime.timedelta(days=30)
_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----\s+(.*?)-----END CERTIFICATE-----", re.S)
# crypto/x509 root_linux.go: read (after SSL_CERT_FILE or the first of these files) too.
CERT_DIRS = ("/etc/ssl/certs", "/etc/pki/tls/certs")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from modgate.cli import DEFAULT_GOPROXY_PORT, where

    p = sub.add_parser(
        "doctor",
        help="find what keeps go from using modgate, and how to fix it",
        description=__doc__,
    )
    where(p)
    p.add_argument(
        "--goproxy-port",
        type=int,
        default=DEFAULT_GOPROXY_PORT,
        help="its GOPROXY endpoint's port, -1 for none (default: %(default)s)",
    )
    p.add_argument("--cache-dir", type=Path, default=None, help="default: CONFDIR/cache")
    p.add_argument(
        "--rules",
        type=Path,
        default=None,
        help="modgate's rules file (default: ./rules.yaml if it exists)",
    )
    p.add_argument(
        "--probe",
        default=PROBE_MODULE,
        metavar="MODULE",
        help="module whose version list the live probe asks for (default: %(default)s)",
    )
    p.add_argument("--timeout", type=float, default=5.0, help="per network check, seconds")
    p.add_argument(
        "--transparent",
        action="store_true",
        help="modgate runs in transparent mode: the network redirects go to it",
    )
    p.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    p.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    confdir: Path = args.confdir.expanduser()
    cache_dir: Path = (args.cache_dir or confdir / "cache").expanduser()
    rules = args.rules if args.rules is not None else Path("rules.yaml")
    here = "127.0.0.1" if args.listen_host in ("0.0.0.0", "::", "") else args.listen_host
    proxy = f"http://{_bracket(here)}:{args.listen_port}"
    items: list[Finding] = []
    goenv = read_goenv(items)
    client = Client.from_env(os.environ, goenv)
    config = _rules(items, rules, explicit=args.rules is not None)
    # With teams the endpoint serves HTTPS: go sends .netrc credentials over TLS only.
    scheme = "https" if getattr(config, "teams", None) is not None else "http"
    endpoint = f"{scheme}://{_bracket(here)}:{args.goproxy_port}" if args.goproxy_port >= 0 else ""
    gate = Gate(proxy, endpoint, _gated(config, client, endpoint), args.transparent)
    env_fix = _env_command(args, here)
    goproxy_fix = f"export GOPROXY={endpoint}" if endpoint else ""
    found = client_findings(client, gate, read_bundle(client, confdir), env_fix, goproxy_fix)
    items = found.items + items
    _listening(items, "proxy", proxy, args.timeout)
    if endpoint:
        _listening(items, "endpoint", endpoint, args.timeout)
    _live_probe(items, found, client, args.probe, args.timeout)
    _client_sumdb(items, found, client, args.timeout)
    _cache_dir(items, cache_dir)
    _ca(items, confdir)
    _upstreams(items, gate.gated, config, args.probe, args.timeout)
    _databases(items, config, client, gate, args.timeout)
    _print(found, items, args.json)
    return exit_status(items)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _env_command(args: argparse.Namespace, here: str) -> str:
    from modgate.cli import DEFAULT_PORT
    from modgate.home import default_home

    words = ["modgate", "env"]
    if here != "127.0.0.1":
        words += ["--listen-host", here]
    if args.listen_port != DEFAULT_PORT:
        words += ["--listen-port", str(args.listen_port)]
    if args.confdir.expanduser() != default_home():
        words += ["--confdir", str(args.confdir)]
    return " ".join(words)


# --- the client's settings ----------------------------------------------------------------


def read_goenv(items: list[Finding]) -> Mapping[str, str]:
    """`go env -json`: the GO* settings as go resolves them (environment, go.env, defaults)."""
    from modgate import goenv

    try:
        return goenv.read()
    except goenv.GoEnvError as e:
        if e.missing:
            why, fix = "the settings below are read from the environment alone", "put go on PATH"
            items.append(Finding("go", "fail", f"{e}: {why}", fix))
        else:
            fix = "fix what go says (often GOFLAGS or the go.env file)"
            items.append(Finding("go", "fail", str(e), fix))
        return {}


def read_bundle(client: Client, confdir: Path) -> Bundle:
    """What go would trust (crypto/x509 on Unix): SSL_CERT_FILE, or the system's bundle
    file; plus every certificate in SSL_CERT_DIR's directories (or the system's)."""
    from modgate.cabundle import CA_CERT, SYSTEM_BUNDLES

    try:
        ours = set(_certs((confdir / CA_CERT).read_bytes()))
    except OSError:
        return Bundle(
            client.ssl_cert_file,
            error=f"modgate's CA {confdir / CA_CERT} is missing "
            "(modgate has not run with this confdir)",
        )
    found: set[bytes] = set()
    if client.ssl_cert_file:
        try:
            found |= set(_certs(Path(client.ssl_cert_file).read_bytes()))
        except OSError as e:
            return Bundle(client.ssl_cert_file, error=e.strerror or str(e))
    else:
        for candidate in SYSTEM_BUNDLES:
            try:
                found |= set(_certs(Path(candidate).read_bytes()))
                break
            except OSError:
                continue
    dirs = client.ssl_cert_dir.split(":") if client.ssl_cert_dir else CERT_DIRS
    for d in dirs:
        found |= _dir_certs(Path(d))
    return Bundle(client.ssl_cert_file, has_modgate_ca=bool(ours & found), others=len(found - ours))


def _certs(pem: bytes) -> list[bytes]:
    out = []
    for m in _PEM.finditer(pem):
        try:
            out.append(base64.b64decode(b"".join(m.group(1).split()), validate=True))
        except ValueError:
            continue
    return out


def _dir_certs(directory: Path) -> set[bytes]:
    found: set[bytes] = set()
    try:
        files = list(directory.iterdir())
    except OSError:
        return found
    for f in files:
        try:
            if f.is_file():
                found |= set(_certs(f.read_bytes()))
        except OSError:
            continue
    return found


# --- modgate's side -----------------------------------------------------------------------


def _rules(items: list[Finding], path: Path, explicit: bool) -> object | None:
    """The rules file, checked as `modgate run` checks it; None when there is none."""
    from modgate.rulesfile import load_checked

    if not path.is_file() and not explicit:
        items.append(
            Finding(
                "rules",
                "note",
                "no rules file here: modgate (started here) "
                "gates the proxies of `go env GOPROXY`, with no module rules",
            )
        )
        return None
    try:
        config = load_checked(path)
    except ModgateError as e:
        items.append(
            Finding("rules", "fail", str(e), f"fix {path}; `modgate rules check` shows more")
        )
        return None
    items.append(Finding("rules", "ok", f"{path} is valid"))
    return config


def _gated(config: object | None, client: Client, endpoint: str) -> tuple[str, ...]:
    from modgate.config import Config, proxies_from_goproxy
    from modgate.doctor import goproxy_entries

    if isinstance(config, Config) and config.proxies is not None:
        return tuple(p.url for p in config.proxies)
    # modgate's default: the proxies of its own `go env GOPROXY`, the client's here.
    urls = [e.value for e in goproxy_entries(client.goproxy) if e.value not in ("direct", "off")]
    try:
        proxies = proxies_from_goproxy(",".join(u for u in urls if not _is(u, endpoint)))
    except ValueError:
        return ()
    return tuple(p.url for p in proxies)


def _is(url: str, endpoint: str) -> bool:
    from modgate.doctor import Gate, paths

    return bool(endpoint) and paths(Client(goproxy=url), Gate("", endpoint))[0].way == "endpoint"


def _listening(items: list[Finding], what: str, url: str, timeout: float) -> None:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "", parts.port or 80), timeout=timeout):
            pass
    except OSError as e:
        items.append(
            Finding(
                f"{what}-listening",
                "fail",
                f"nothing answers at {url} ({e.strerror or e}): is modgate running?",
                "start it: modgate run (or scripts/run)",
            )
        )
        return
    items.append(Finding(f"{what}-listening", "ok", f"modgate's {what} listens at {url}"))


def _opener(proxy: str = "", cafile: str = "") -> urllib.request.OpenerDirector:
    context = ssl.create_default_context(cafile=cafile or None)
    proxies = {"https": proxy, "http": proxy} if proxy else {}
    return urllib.request.build_opener(
        urllib.request.ProxyHandler(proxies), urllib.request.HTTPSHandler(context=context)
    )


def _get(
    opener: urllib.request.OpenerDirector, url: str, timeout: float, auth: str = ""
) -> tuple[int, str, bytes]:
    """(status, X-Modgate-Cache, first bytes of the body); raises OSError on no answer."""
    headers = {"User-Agent": f"modgate-doctor/{__version__}"}
    if auth:
        headers["Authorization"] = auth
    request = urllib.request.Request(url, headers=headers)
    try:
        with opener.open(request, timeout=timeout) as r:
            return r.status, r.headers.get("X-Modgate-Cache", ""), r.read(200)
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("X-Modgate-Cache", ""), e.read(200)


def _live_probe(
    items: list[Finding], found: Findings, client: Client, module: str, timeout: float
) -> None:
    """One module-proxy request the way go would send it; modgate traces it like any other
    (user agent modgate-doctor)."""
    from modgate.doctor import goproxy_entries
    from modgate.teams import netrc_credentials

    entries = [e.value for e in goproxy_entries(client.goproxy)]
    if found.route not in ("proxy", "endpoint", "transparent") or not entries:
        return
    url = f"{entries[0].rstrip('/')}/{module}/@v/list"
    how = {
        "proxy": "through the HTTPS proxy",
        "endpoint": "at the GOPROXY endpoint",
        "transparent": "redirected by the network",
    }[found.route]
    opener = _client_opener(client, url)
    auth = netrc_credentials(url) if found.route != "proxy" else ""
    try:
        status, cache, head = _get(opener, url, timeout, auth)
    except (OSError, ValueError) as e:
        reason = str(getattr(e, "reason", e)) or type(e).__name__
        items.append(
            Finding(
                "probe",
                "fail",
                f"GET {url} {how} got no answer: {reason}",
                TEAMS_FIX if " 407 " in f" {reason} " else
                "see the findings above; `modgate trace ls` on modgate's side",
            )
        )  # fmt: skip
        return
    if status in (401, 407):
        said = head.decode(errors="replace").strip()[:160]
        items.append(Finding("probe", "fail", f"GET {url} {how}: {status}: {said}", TEAMS_FIX))
        return
    if cache or head.startswith(b"modgate:"):
        said = f" ({cache})" if cache else f": {head.decode(errors='replace').strip()[:160]}"
        items.append(
            Finding(
                "probe",
                "ok",
                f"GET {url} {how}: {status}, answered by modgate"
                f"{said}; `modgate trace ls` shows it",
            )
        )
        return
    items.append(
        Finding(
            "probe",
            "fail",
            f"GET {url} {how}: {status}, but not from modgate "
            "(no X-Modgate-Cache): something else answered",
            "check that HTTPS_PROXY/GOPROXY name this modgate",
        )
    )


TEAMS_FIX = (
    "modgate asks who you are (rules.yaml teams): HTTPS_PROXY=http://USER:PASSWORD@HOST:PORT "
    "for the proxy; for the endpoint, ~/.netrc lines 'machine HOST:PORT login USER password "
    "…' and 'machine HOST …' (go 1.24+ matches the port, earlier go the host)"
)


def _client_sumdb(items: list[Finding], found: Findings, client: Client, timeout: float) -> None:
    """The checksum database the way go reaches it (modfetch/sumdb.go initBase): through
    the first GOPROXY entries that serve <entry>/sumdb/<name>/supported, else directly."""
    from modgate import dbroute
    from modgate.config import Hop, parse_gosumdb
    from modgate.doctor import goproxy_entries

    if found.route not in ("proxy", "endpoint", "transparent") or client.gosumdb.strip() in (
        "",
        "off",
    ):
        return
    try:
        db = parse_gosumdb(client.gosumdb)
    except ValueError as e:
        items.append(Finding("client-sumdb", "fail", f"GOSUMDB={client.gosumdb}: {e}",
                             "unset GOSUMDB, or give '<name>+<hash>+<key> [<url>]'"))  # fmt: skip
        return
    if db is None:
        return
    base = db.url
    if dbroute.proxied(client.gosumdb):
        hops = []
        for entry in goproxy_entries(client.goproxy):
            if entry.value in ("direct", "off"):
                break
            hops.append(Hop(entry.value.rstrip("/"), entry.any_error))

        def ask(hop: Hop) -> dbroute.Probe:
            url = f"{hop.url}/sumdb/{db.name}/supported"
            try:
                status, _, _ = _get(_client_opener(client, url), url, timeout)
            except (OSError, ValueError) as e:
                return dbroute.Failed(str(getattr(e, "reason", e)) or type(e).__name__)
            if status in (404, 410):
                return dbroute.NotHere(status)
            return dbroute.Supported() if status == 200 else dbroute.Failed(str(status))

        match dbroute.decide(db.name, hops, ask):
            case dbroute.ThroughProxy(through):
                base = through
            case dbroute.Unavailable(hop, reason):
                items.append(Finding(
                    "client-sumdb", "fail",
                    f"go cannot reach checksum database {db.name}: {hop} failed ({reason})",
                    "see the findings above",
                ))  # fmt: skip
                return
    url = f"{base.rstrip('/')}/latest"
    try:
        status, _, _ = _get(_client_opener(client, url), url, timeout)
        why = "" if status == 200 else f"{status}"
    except (OSError, ValueError) as e:
        why = str(getattr(e, "reason", e)) or type(e).__name__
    if not why:
        items.append(
            Finding("client-sumdb", "ok", f"go reaches checksum database {db.name} at {base}")
        )
        return
    items.append(Finding(
        "client-sumdb", "fail",
        f"go cannot reach checksum database {db.name} at {base} ({why}): every module "
        "missing from go.sum fails with 'verifying module'",
        "list the database under checksum.databases in modgate's rules (modgate then serves "
        "it), or set GONOSUMDB for private modules",
    ))  # fmt: skip


def _client_opener(client: Client, url: str) -> urllib.request.OpenerDirector:
    """An opener that goes where go would send `url`: through its environment proxy
    unless NO_PROXY or loopback keep it off, trusting what go trusts."""
    from modgate.doctor import is_loopback, no_proxy_excludes

    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    direct = is_loopback(host) or no_proxy_excludes(client.no_proxy, host, port)
    proxy = "" if direct else _proxy_of(client, url)
    return _opener(proxy if proxy != "http://" else "", client.ssl_cert_file)


def _proxy_of(client: Client, url: str) -> str:
    proxy = client.https_proxy if url.startswith("https:") else client.http_proxy
    return proxy if "://" in proxy else f"http://{proxy}"


def _cache_dir(items: list[Finding], cache_dir: Path) -> None:
    existing = cache_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".doctor-"):
            pass
    except OSError as e:
        items.append(
            Finding(
                "cache-dir",
                "fail",
                f"cannot write in {existing}: {e.strerror or e}",
                f"make {cache_dir} writable by modgate's user, or pass --cache-dir",
            )
        )
        return
    free = shutil.disk_usage(existing).free
    if free < LOW_SPACE:
        items.append(
            Finding(
                "cache-dir",
                "warn",
                f"{cache_dir}: only {free >> 20} MiB free",
                "free space, or lower cache.size_limit in the rules file",
            )
        )
        return
    items.append(Finding("cache-dir", "ok", f"{cache_dir} is writable, {free >> 30} GiB free"))


def _ca(items: list[Finding], confdir: Path) -> None:
    from cryptography import x509

    from modgate.cabundle import CA_CERT

    path = confdir / CA_CERT
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as e:
        items.append(
            Finding(
                "ca",
                "warn",
                f"modgate's CA {path} is missing or unreadable ({e})",
                "start modgate once with this --confdir: it creates its CA",
            )
        )
        return
    now = datetime.datetime.now(datetime.UTC)
    ends = cert.not_valid_after_utc
    renew = f"move {confdir}/mitmproxy-ca* away and restart modgate; then `modgate env` again"
    if ends <= now:
        items.append(Finding("ca", "fail", f"modgate's CA expired on {ends:%Y-%m-%d}", renew))
    elif ends - now < CA_MARGIN:
        items.append(Finding("ca", "warn", f"modgate's CA expires on {ends:%Y-%m-%d}", renew))
    else:
        items.append(Finding("ca", "ok", f"modgate's CA is valid until {ends:%Y-%m-%d}"))


def _upstreams(
    items: list[Finding],
    gated: tuple[str, ...],
    config: object | None,
    module: str,
    timeout: float,
) -> None:
    from modgate.config import Config

    hops: dict[str, None] = {}
    if isinstance(config, Config) and config.proxies is not None:
        for proxy in config.proxies:
            hops.update(dict.fromkeys(h.url for h in proxy.chain.hops))
    else:
        hops.update(dict.fromkeys(gated))
    for hop in hops:
        url = f"{hop.rstrip('/')}/{module}/@v/list"
        try:
            status, _, _ = _get(_opener(), url, timeout)
        except (OSError, ValueError) as e:
            reason = str(getattr(e, "reason", e)) or type(e).__name__
            items.append(
                Finding(
                    "upstream",
                    "warn",
                    f"upstream {hop} unreachable from here "
                    f"({reason}): modgate serves only what it has cached",
                    "check the network, or the upstream URL in the rules file",
                )
            )
            continue
        items.append(Finding("upstream", "ok", f"upstream {hop} answers ({status})"))


def _databases(
    items: list[Finding], config: object | None, client: Client, gate: Gate, timeout: float
) -> None:
    from modgate import dbroute
    from modgate.config import Chain, Config, Hop, Proxy, parse_gosumdb

    configured = isinstance(config, Config) and config.checksum.databases is not None
    if isinstance(config, Config) and config.checksum.databases is not None:
        databases = config.checksum.databases
    elif not client.gosumdb:
        return  # no go to say which (reported above)
    else:
        try:
            db = parse_gosumdb(client.gosumdb)
        except ValueError as e:
            items.append(
                Finding(
                    "sumdb",
                    "fail",
                    f"GOSUMDB={client.gosumdb}: {e}",
                    "unset GOSUMDB, or give '<name>+<hash>+<key> [<url>]'",
                )
            )
            return
        databases = (db,) if db else ()
    if isinstance(config, Config) and config.proxies is not None:
        proxies = config.proxies
    else:
        proxies = tuple(Proxy(url=u, chain=Chain((Hop(u),))) for u in gate.gated)
    for db in databases:
        base = db.upstream or db.url
        if not configured and dbroute.proxied(client.gosumdb):  # go's own way to it
            route = dbroute.decide(
                db.name, dbroute.candidates(proxies), functools.partial(_ask, db.name, timeout)
            )
            match route:
                case dbroute.ThroughProxy(through):
                    base = through
                case dbroute.Unavailable(hop, reason):
                    items.append(
                        Finding(
                            "sumdb",
                            "warn",
                            f"checksum database {db.name}: {hop} "
                            f"failed ({reason}); modgate verifies only what it has "
                            "cached",
                            "check the upstream",
                        )
                    )
                    continue
        try:
            status, _, _ = _get(_opener(), f"{base.rstrip('/')}/latest", timeout)
        except (OSError, ValueError) as e:
            reason = str(getattr(e, "reason", e)) or type(e).__name__
            items.append(
                Finding(
                    "sumdb",
                    "warn",
                    f"checksum database {db.name} at {base}: no "
                    f"answer ({reason}); modgate verifies only what it has cached",
                    "make it reachable, or its proxy's /sumdb/ path",
                )
            )
            continue
        said = f"checksum database {db.name} at {base}: {status}"
        items.append(
            Finding("sumdb", "ok", said) if status == 200 else Finding("sumdb", "warn", said)
        )


def _ask(name: str, timeout: float, hop: Hop) -> dbroute.Probe:
    from modgate import dbroute

    return dbroute.probe(hop, name, timeout)


# --- output -------------------------------------------------------------------------------

_WAYS = {
    "proxy": "go reaches modgate as an HTTPS proxy",
    "transparent": "go reaches modgate through the network's redirect (transparent mode)",
    "endpoint": "go reaches modgate at its GOPROXY endpoint",
    "none": "go does not reach modgate",
    "direct": "go does not reach modgate",
    "off": "go downloads nothing",
}


def _print(found: Findings, items: list[Finding], as_json: bool) -> None:
    if as_json:
        out = {
            "route": found.route,
            "ok": exit_status(items) == 0,
            "findings": [asdict(f) for f in items],
        }
        print(json.dumps(out, indent=1))
        return
    problems = sum(f.status in ("warn", "fail") for f in items)
    print(
        f"modgate doctor: {_WAYS.get(found.route, found.route)}; "
        f"{problems or 'no'} problem{'' if problems == 1 else 's'}"
    )
    width = max((len(f.check) for f in items), default=0)
    for f in items:
        label = f.status.upper() if f.status in ("warn", "fail") else f.status
        print(f"  {label:<4}  {f.check:<{width}}  {f.message}")
        if f.fix and f.status in ("warn", "fail"):
            print(f"  {'':<4}  {'':<{width}}  fix: {f.fix}")
    sys.stdout.flush()
