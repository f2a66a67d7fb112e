"""`modgate admin …`: keys for administrators, and a client that signs its requests to a
running modgate's admin API (modgate/admin.py; the signature: modgate/adminauth.py).

    modgate admin keygen NAME --scope read [--scope cache ...]   a key (server and client copy)
    modgate admin revoke NAME                                    remove an administrator's key
    modgate admin keys                                           administrators and scopes
    modgate admin whoami
    modgate admin cache stats | ls [PATTERN] | evict MOD[@VER] | purge GLOB | verify [--remove]
    modgate admin rules show | reload
    modgate admin trace ls | show ID
    modgate admin call METHOD PATH [JSON]                        any endpoint, signed
    modgate admin dashboard                                      a one-time browser login link

The client's key: --key-file FILE, else $MODGATE_ADMIN_KEY (NAME:KEY), else the one key
file in CONFDIR/admin/. Exit status: 0 the API did it, 1 it answered with an error
(401 included), 2 bad usage, no key, or no answer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from modgate import adminauth
from modgate.adminauth import AdminKey
from modgate.errors import ConfigError, ModgateError

DEFAULT_URL = "http://127.0.0.1:8082"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from modgate.home import default_home

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--confdir", type=Path, default=default_home(),
                        help="modgate's state directory (default: %(default)s)")  # fmt: skip
    client = argparse.ArgumentParser(add_help=False, parents=[common])
    client.add_argument(
        "--url",
        default=os.environ.get("MODGATE_ADMIN_URL", DEFAULT_URL),
        help="the admin API (default: $MODGATE_ADMIN_URL or %(default)s)",
    )
    client.add_argument(
        "--key-file",
        type=Path,
        metavar="FILE",
        help=f"NAME:KEY (default: ${adminauth.ENV}, or CONFDIR/admin/*.key)",
    )
    client.add_argument("--json", action="store_true", help="print the whole JSON answer")

    admin = sub.add_parser("admin", help="administer a running modgate (signed requests)",
                           description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    commands = admin.add_subparsers(metavar="COMMAND", required=True)

    p = commands.add_parser("keygen", parents=[common], help="make an administrator's key")
    p.add_argument("name")
    p.add_argument("--scope", action="append", required=True, choices=adminauth.SCOPES,
                   help="what the key may do; repeat for several")  # fmt: skip
    p.add_argument("--replace", action="store_true", help="give NAME a new key (rotation)")
    p.add_argument("-o", "--output", type=Path, metavar="FILE",
                   help="the administrator's copy (default: CONFDIR/admin/NAME.key)")  # fmt: skip
    p.set_defaults(func=cmd_keygen)
    p = commands.add_parser("revoke", parents=[common], help="remove an administrator's key")
    p.add_argument("name")
    p.set_defaults(func=cmd_revoke)
    p = commands.add_parser("keys", parents=[common], help="list administrators and scopes")
    p.set_defaults(func=cmd_keys)

    def request(name: str, help: str, method: str, path: str, body: Any = None) -> Any:
        q = commands.add_parser(name, parents=[client], help=help)
        q.set_defaults(func=cmd_call, method=method, path=path, body=body)
        return q

    request("whoami", "who the key is, and its scopes", "GET", "/v1/whoami")
    cache = commands.add_parser("cache", help="the cache").add_subparsers(
        metavar="ACTION", required=True
    )
    for name, help, method, path in [
        ("stats", "entries and bytes by kind, hit ratio", "GET", "/v1/cache/stats"),
        ("ls", "what is stored", "GET", "/v1/cache/items"),
        ("evict", "remove a module's or a version's answers", "POST", "/v1/cache/evict"),
        ("purge", "remove every module answer matching a glob", "POST", "/v1/cache/purge"),
        ("verify", "re-hash everything stored", "POST", "/v1/cache/verify"),
    ]:
        q = cache.add_parser(name, parents=[client], help=help)
        q.set_defaults(func=cmd_call, method=method, path=path, body=None, action=name)
        if name == "ls":
            q.add_argument("pattern", nargs="?", default="")
        elif name == "evict":
            q.add_argument("target", metavar="MODULE[@VERSION]")
        elif name == "purge":
            q.add_argument("pattern", metavar="GLOB", help="'*' for every module")
        elif name == "verify":
            q.add_argument("--remove", action="store_true", help="remove what is bad")
    rules = commands.add_parser("rules", help="the rules file").add_subparsers(
        metavar="ACTION", required=True
    )
    for name, help, method, path in [
        ("show", "the rules file in force", "GET", "/v1/rules"),
        ("reload", "apply the rules file now", "POST", "/v1/rules/reload"),
    ]:
        q = rules.add_parser(name, parents=[client], help=help)
        q.set_defaults(func=cmd_call, method=method, path=path, body=None)
    trace = commands.add_parser("trace", help="traced sessions").add_subparsers(
        metavar="ACTION", required=True
    )
    q = trace.add_parser("ls", parents=[client], help="sessions")
    q.add_argument("-n", "--limit", type=int, default=20)
    q.set_defaults(func=cmd_call, method="GET", path="/v1/trace/sessions", body=None, action="ls")
    q = trace.add_parser("show", parents=[client], help="a session's requests")
    q.add_argument("session", metavar="ID")
    q.set_defaults(func=cmd_call, method="GET", path="/v1/trace/sessions", body=None, action="show")

    q = commands.add_parser("call", parents=[client], help="any endpoint, signed")
    q.add_argument("method")
    q.add_argument("path", help="path and query, e.g. /v1/cache/items?pattern=x.org/*")
    q.add_argument("body", nargs="?", default=None, help="a JSON body")
    q.set_defaults(func=cmd_call)

    q = commands.add_parser(
        "dashboard", parents=[client], help="print a one-time link that logs a browser in"
    )
    q.set_defaults(func=cmd_dashboard)


# --- keys ------------------------------------------------------------------------------------


def cmd_keygen(args: argparse.Namespace) -> int:
    confdir: Path = args.confdir.expanduser()
    key = adminauth.add_key(adminauth.keys_path(confdir), args.name, args.scope, args.replace)
    out: Path = args.output or confdir / "admin" / f"{key.name}.key"
    adminauth.write_private(out, f"{key.name}:{key.secret}\n")
    print(
        f"admin {key.name} ({', '.join(sorted(key.scopes))}): key written to {out} (mode 600); "
        "a modgate serving the admin API accepts it at once; one started without keys "
        "serves the API after a restart"
    )
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    path = adminauth.keys_path(args.confdir.expanduser())
    if not adminauth.remove_key(path, args.name):
        print(f"no admin {args.name} in {path}", file=sys.stderr)
        return 1
    print(f"revoked {args.name}: its requests are refused from now on")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    for key in sorted(adminauth.load_keys(adminauth.keys_path(args.confdir.expanduser())).values(),
                      key=lambda k: k.name):  # fmt: skip
        print(f"{key.name}  {', '.join(sorted(key.scopes))}")
    return 0


def client_key(args: argparse.Namespace) -> AdminKey:
    if args.key_file is not None:
        try:
            return adminauth.client_key(args.key_file.read_text(), str(args.key_file))
        except OSError as e:
            raise ConfigError(f"{args.key_file}: {e.strerror or e}") from e
    if text := os.environ.get(adminauth.ENV):
        return adminauth.client_key(text, adminauth.ENV)
    found = sorted((args.confdir.expanduser() / "admin").glob("*.key"))
    if len(found) == 1:
        return adminauth.client_key(found[0].read_text(), str(found[0]))
    raise ConfigError(
        f"which admin key? give --key-file FILE or {adminauth.ENV}=NAME:KEY "
        f"({len(found)} key files in {args.confdir / 'admin'})"
    )


# --- requests --------------------------------------------------------------------------------


def send(url: str, key: AdminKey, method: str, target: str, body: Any = None) -> tuple[int, Any]:
    """Sign and send one request: (HTTP status, the decoded envelope)."""
    data = b"" if body is None else json.dumps(body).encode()
    headers = adminauth.signed_headers(key, method, target, data)
    if data:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url.rstrip("/") + target, data=data or None, method=method,
                                 headers=headers)  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=600) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        raise ModgateError(f"{url}: no answer from the admin API: {getattr(e, 'reason', e)}") from e
    try:
        return status, json.loads(raw)
    except ValueError as e:
        raise ModgateError(f"{url}: not an admin API answer ({status})") from e


def _request(args: argparse.Namespace) -> tuple[str, str, Any]:
    from urllib.parse import quote, urlencode

    action = getattr(args, "action", "")
    method, path, body = args.method.upper(), args.path, args.body
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError as e:
            raise ConfigError(f"the body is not JSON: {e}") from e
    if action == "ls" and path == "/v1/cache/items" and args.pattern:
        path += "?" + urlencode({"pattern": args.pattern})
    elif action == "ls":
        path += f"?limit={args.limit}" if path == "/v1/trace/sessions" else ""
    elif action == "show":
        path += "/" + quote(args.session, safe="")
    elif action == "evict":
        body = {"target": args.target}
    elif action == "purge":
        body = {"pattern": args.pattern}
    elif action == "verify":
        body = {"remove": args.remove}
    return method, path, body


def cmd_call(args: argparse.Namespace) -> int:
    method, path, body = _request(args)
    status, answer = send(args.url, client_key(args), method, path, body)
    if args.json:
        print(json.dumps(answer, indent=2, sort_keys=True))
    else:
        if answer.get("data") not in (None, [], {}) and method == "GET":
            print(json.dumps(answer["data"], indent=2, sort_keys=True))
        print(f"{status} {answer.get('message', '')}", file=sys.stderr if method == "GET" else None)
    return 0 if status < 400 else 1


def cmd_dashboard(args: argparse.Namespace) -> int:
    from modgate.dashboard import LOGIN_WINDOW, login_link

    print(login_link(args.url, client_key(args)))
    print(f"open it within {LOGIN_WINDOW}s; it works once", file=sys.stderr)
    return 0
