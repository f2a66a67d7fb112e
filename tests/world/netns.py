"""A client machine whose traffic the network redirects to modgate, for transparent mode.

`ClientNamespace` makes a network namespace joined to this one (the gateway) by a veth
pair: the client's only route goes through the gateway, whose nftables table sends the
client's TCP ports 80 and 443 to modgate's port (REDIRECT: to the gateway's own veth
address, so modgate listens on 0.0.0.0). Names resolve from the namespace's own hosts
file (`ip netns exec` mounts /etc/netns/NAME/hosts over /etc/hosts). Extra gateway
addresses (`extra`) give test servers distinct addresses on port 443. Everything is
removed on close, also when the test failed.

`TlsServer` is an HTTPS server with its own self-signed certificate, on one such address.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509

from world.certs import self_signed
from world.resolve import resolving


def missing() -> str:
    """Why transparent-mode tests cannot run here, or ""."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, nftables)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"needs `{tool}` (scripts/setup installs it when run as root)"
    return ""


def _run(*args: str, input: str | None = None) -> None:
    subprocess.run(args, check=True, capture_output=True, text=True, input=input, timeout=30)


class ClientNamespace:
    def __init__(self, hosts: dict[str, str], extra: int = 1) -> None:
        n = os.getpid() % 250 + 1
        self.name = f"mgt{os.getpid()}"[:15]
        self.gw_if, self.client_if = f"mgh{os.getpid()}"[:15], f"mgc{os.getpid()}"[:15]
        self.gateway, self.client = f"10.213.{n}.1", f"10.213.{n}.2"
        self.extra = [f"10.214.{n}.{i + 1}" for i in range(extra)]
        self.table = f"modgate_test_{os.getpid()}"
        self.hosts = hosts
        self._made: list[str] = []

    def start(self, port: int, ports: tuple[int, ...] = (80, 443)) -> ClientNamespace:
        try:
            _run("ip", "netns", "add", self.name)
            self._made.append("netns")
            _run("ip", "link", "add", self.gw_if, "type", "veth", "peer", "name", self.client_if)
            self._made.append("link")
            _run("ip", "link", "set", self.client_if, "netns", self.name)
            _run("ip", "addr", "add", f"{self.gateway}/30", "dev", self.gw_if)
            for address in self.extra:
                _run("ip", "addr", "add", f"{address}/32", "dev", self.gw_if)
            _run("ip", "link", "set", self.gw_if, "up")
            ns = ("ip", "-n", self.name)
            _run(*ns, "addr", "add", f"{self.client}/30", "dev", self.client_if)
            _run(*ns, "link", "set", self.client_if, "up")
            _run(*ns, "link", "set", "lo", "up")
            _run(*ns, "route", "add", "default", "via", self.gateway)
            etc = Path("/etc/netns") / self.name
            etc.mkdir(parents=True, exist_ok=True)
            self._made.append("etc")
            lines = [f"{address} {name}" for name, address in self.hosts.items()]
            (etc / "hosts").write_text("127.0.0.1 localhost\n" + "\n".join(lines) + "\n")
            rules = (
                f"table inet {self.table} {{\n chain prerouting {{\n"
                "  type nat hook prerouting priority dstnat; policy accept;\n"
                f'  iifname "{self.gw_if}" tcp dport {{ {", ".join(map(str, ports))} }} '
                f"redirect to :{port}\n"
                " }\n}\n"
            )
            _run("nft", "-f", "-", input=rules)
            self._made.append("nft")
        except BaseException:
            self.close()
            raise
        return self

    def command(self, args: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *args]

    def sitecustomize(self, directory: Path) -> Path:
        """A sitecustomize.py for a process on the gateway that resolves this namespace's
        names as its clients do (PYTHONPATH=directory)."""
        return resolving(directory, {name: (ip, None) for name, ip in self.hosts.items()})

    def close(self) -> None:
        if "nft" in self._made:
            subprocess.run(["nft", "delete", "table", "inet", self.table], capture_output=True)
        if "link" in self._made:  # gone with the namespace if it moved there; not if not
            subprocess.run(["ip", "link", "del", self.gw_if], capture_output=True)
        if "netns" in self._made:
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        if "etc" in self._made:
            shutil.rmtree(Path("/etc/netns") / self.name, ignore_errors=True)
        self._made.clear()


class TlsServer:
    """HTTPS on address:443 with a self-signed certificate of `name`; counts requests."""

    def __init__(self, workdir: Path, address: str, name: str, body: bytes) -> None:
        context, self.cert_pem = self_signed(workdir, name, x509.DNSName(name))
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer((address, 443), Handler)
        self._http.daemon_threads = True
        self._http.socket = context.wrap_socket(self._http.socket, server_side=True)
        threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()  # fmt: skip

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()


def fetch_script(url: str, cafile: str, connect_to: str = "") -> list[str]:
    """A python command that GETs `url` trusting only `cafile` (optionally connecting to
    another address than the name resolves to) and prints the body, or the error."""
    code = f"""
import http.client, ssl, sys
from urllib.parse import urlsplit
u = urlsplit({url!r})
ctx = ssl.create_default_context(cafile={cafile!r})
sock_host = {connect_to!r} or u.hostname
try:
    c = http.client.HTTPSConnection(sock_host, u.port or 443, context=ctx, timeout=10)
    if {connect_to!r}:
        import socket
        raw = socket.create_connection((sock_host, u.port or 443), timeout=10)
        c.sock = ctx.wrap_socket(raw, server_hostname=u.hostname)
    c.request("GET", u.path or "/", headers={{"Host": u.hostname}})
    r = c.getresponse()
    sys.stdout.write(f"{{r.status}} " + r.read().decode(errors="replace"))
except Exception as e:
    sys.stdout.write(f"ERROR {{type(e).__name__}}: {{e}}")
"""
    return [shutil.which("python3") or "python3", "-c", code]
