"""`eval "$(modgate env)"` leaves go working: for the proxies modgate gates, and for
every other HTTPS host, which modgate tunnels untouched."""

from __future__ import annotations

import datetime
import hashlib
import http.client
import shlex
import ssl
import subprocess
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from world.gate import Gate, modgate_command
from world.gocmd import find_go, go_env
from world.modules import MainModule, World, write_main_module
from world.upstream import Upstream

pytestmark = pytest.mark.e2e

HOST = "proxy.modgate.test"


WORLD_MODULES = 6  # the shared `world` fixture (conftest.py), this small


def env_script(gate: Gate, then: str) -> str:
    port = str(urlsplit(gate.proxy_url).port)
    env_cmd = shlex.join(
        modgate_command("env", "--confdir", str(gate.confdir), "--listen-port", port)
    )
    return f'set -e; eval "$({env_cmd})"; {then}'


def test_eval_env_sends_go_through_modgate(world: World, tmp_path: Path) -> None:
    app: MainModule = write_main_module(world, tmp_path / "app")
    with (
        Upstream(world) as upstream,
        Gate(
            tmp_path / "gate",
            f"proxies:\n  - url: https://{HOST}\n    upstream: {upstream.url}\nchecksum:\n  private: example.modgate.test\n",
        ) as gate,
    ):
        env = go_env(tmp_path / "c", f"https://{HOST}")
        done = subprocess.run(["bash", "-c", env_script(gate, f"{shlex.quote(find_go())} mod tidy")],
                              env=env, cwd=app.dir, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert upstream.count("*.zip") > 0


def self_signed(tmp_path: Path) -> tuple[Path, Path, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "origin.modgate.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("origin.modgate.test")]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_file, key_file = tmp_path / "origin.pem", tmp_path / "origin.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert_file, key_file, cert.public_bytes(serialization.Encoding.DER)


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "6")
        self.end_headers()
        self.wfile.write(b"origin")

    def log_message(self, *args: object) -> None:
        pass


def test_other_https_hosts_are_tunnelled_untouched(tmp_path: Path) -> None:
    cert_file, key_file, der = self_signed(tmp_path)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert_file, key_file)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with Gate(tmp_path / "gate", f"proxies:\n  - url: https://{HOST}\n") as gate:
            proxy = urlsplit(gate.proxy_url)
            trust_origin_only = ssl.create_default_context(cafile=str(cert_file))
            trust_origin_only.check_hostname = False
            conn = http.client.HTTPSConnection(
                proxy.hostname or "", proxy.port, context=trust_origin_only
            )
            conn.set_tunnel("127.0.0.1", server.server_address[1])
            conn.request("GET", "/")
            assert conn.sock is not None
            seen = conn.sock.getpeercert(binary_form=True)
            answer = conn.getresponse().read()
            conn.close()
    finally:
        server.shutdown()
    assert answer == b"origin"
    # The origin's own certificate reached the client: modgate did not intercept.
    assert hashlib.sha256(seen or b"").digest() == hashlib.sha256(der).digest()


def live_goproxy() -> str | None:
    """The first proxy of the machine's own `go env GOPROXY`, if it answers."""
    out = subprocess.run([find_go(), "env", "GOPROXY"], capture_output=True, text=True, timeout=30)
    url = next(
        (u for u in out.stdout.strip().replace("|", ",").split(",") if u.startswith("https://")),
        None,
    )
    if url is None:
        return None
    try:
        with urllib.request.urlopen(f"{url}/golang.org/x/mod/@v/list", timeout=5) as r:
            return url if r.status == 200 else None
    except OSError:
        return None


@pytest.mark.live
def test_eval_env_leaves_the_live_registry_working(world: World, tmp_path: Path) -> None:
    live = live_goproxy()
    if live is None:
        pytest.skip("the registry of `go env GOPROXY` is not reachable from here")
    app = write_main_module(world, tmp_path / "app")
    with (
        Upstream(world) as upstream,
        Gate(
            tmp_path / "gate",
            f"proxies:\n  - url: https://{HOST}\n    upstream: {upstream.url}\nchecksum:\n  private: example.modgate.test\n",
        ) as gate,
    ):
        # The fixture modules through modgate (intercepted), then a real module from the
        # live registry, which modgate does not gate here: its TLS passes untouched, and
        # go must trust it with modgate's bundle as its only SSL_CERT_FILE.
        go = shlex.quote(find_go())
        script = env_script(
            gate,
            f"{go} mod tidy && GOPROXY={shlex.quote(live)} {go} list -m -versions golang.org/x/mod",
        )
        env = {**go_env(tmp_path / "c", f"https://{HOST}"), "SSL_CERT_DIR": "/nonexistent"}
        done = subprocess.run(
            ["bash", "-c", script],
            env=env,
            cwd=app.dir,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("golang.org/x/mod v0.")
        assert upstream.count("*.zip") > 0
