"""What `modgate run` keeps of mitmproxy's own features, driven with the real go command:
proxy authentication for a shared modgate, and a startup error that stops it.

modgate loads only the mitmproxy addons it uses (`cli.lean_master`); these are the ones
a user reaches for, so they must survive that trimming."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from world.gate import Gate, modgate_command
from world.gocmd import find_go, go_env
from world.modules import MainModule, World, write_main_module
from world.upstream import Upstream

pytestmark = pytest.mark.e2e

HOST = "proxy.modgate.test"


def with_userinfo(url: str, userinfo: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=f"{userinfo}@{parts.netloc}").geturl()


def test_proxyauth_lets_in_only_clients_with_the_password(world: World, tmp_path: Path) -> None:
    app: MainModule = write_main_module(world, tmp_path / "app")
    rules = (f"proxies:\n  - url: https://{HOST}\n    upstream: {{upstream}}\n"
             "checksum:\n  private: example.modgate.test\n")  # fmt: skip
    with Upstream(world) as upstream:
        gate = Gate(tmp_path / "gate", rules.format(upstream=upstream.url))
        gate.extra_args = ["--set", "proxyauth=ci:s3cret"]
        with gate:
            upstream.reset_counts()  # modgate's own start-up asks whether it serves the sumdb

            def tidy(tag: str, mode: str, userinfo: str = "") -> subprocess.CompletedProcess[str]:
                env = gate.client_env(go_env(tmp_path / tag, f"https://{HOST}"), mode)
                if userinfo:
                    env["HTTPS_PROXY"] = with_userinfo(env["HTTPS_PROXY"], userinfo)
                return subprocess.run([find_go(), "mod", "tidy"], env=env, cwd=app.dir,
                                      capture_output=True, text=True, timeout=120)  # fmt: skip

            refused = tidy("none", "proxy")
            assert refused.returncode != 0
            assert "Proxy Authentication Required" in refused.stderr, refused.stderr
            assert tidy("wrong", "proxy", "ci:guess").returncode != 0
            # The GOPROXY endpoint asks too (go sends no password over plain HTTP, so
            # a modgate with proxyauth is used as an HTTPS proxy; see the README).
            endpoint = tidy("endpoint", "goproxy")
            assert endpoint.returncode != 0
            assert "401 Unauthorized" in endpoint.stderr, endpoint.stderr
            assert upstream.count("*") == 0

            allowed = tidy("right", "proxy", "ci:s3cret")
            assert allowed.returncode == 0, allowed.stderr
            assert upstream.count("*.zip") > 0


def test_a_port_in_use_stops_modgate_saying_which(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"proxies:\n  - url: https://{HOST}\n    upstream: http://127.0.0.1:9\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            modgate_command("run", "--listen-host", "127.0.0.1", "--listen-port", str(port),
                            "--goproxy-port", "0", "--confdir", str(tmp_path / "conf"),
                            "--rules", str(rules)),
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert f"127.0.0.1:{port}" in out and "address already in use" in out, out
    assert "modgate: proxy on" not in out  # it never claimed to be ready
