"""Two teams against one `modgate run`, with the real go command, in both client modes:
each sees exactly its own private modules; wrong, missing and revoked credentials fail
with go's error showing modgate's one-line reason; and the ways an attacker might
spell a request to get around that."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from modgate.teams import hash_password
from world.gate import Gate, modgate_command
from world.gocmd import find_go, go_env
from world.modules import ModuleVersion, World
from world.upstream import Upstream

pytestmark = pytest.mark.e2e

HOST = "proxy.modgate.test"
A_LIB = "corp.modgate.test/team-a/lib"
B_LIB = "corp.modgate.test/team-b/lib"
PUB = "example.modgate.test/pub"
ALICE_PW = "alice-s3cret-Pw"  # .netrc takes no spaces
ALICE_HASH = hash_password(ALICE_PW)

RULES = f"""
proxies:
  - url: https://{HOST}
    upstream: {{upstream}}
checksum:
  private: "*.modgate.test"
teams: teams.yaml
owners:
  - modules: corp.modgate.test/team-a
    teams: [team-a]
  - modules: corp.modgate.test/team-b
    teams: [team-b]
    answer: 404
"""
TEAMS = f"""
teams:
  team-a:
    members:
      alice: {{password: "{ALICE_HASH}"}}
  team-b:
    members:
      bob: {{}}
"""


class Setup:
    def __init__(self, gate: Gate, upstream: Upstream, bob_token: str, tmp: Path) -> None:
        self.gate, self.upstream, self.bob_token, self.tmp = gate, upstream, bob_token, tmp
        self.runs = 0

    def go(self, mode: str, user: str, secret: str, *args: str) -> subprocess.CompletedProcess[str]:
        """`go mod download -json ARGS` as USER:SECRET ("" for none), with a fresh
        module cache, through the HTTPS proxy ("proxy") or at the endpoint ("goproxy")."""
        self.runs += 1
        home = self.tmp / f"client{self.runs}"
        (home / "home").mkdir(parents=True)
        env = go_env(home, f"https://{HOST}", GOFLAGS="-modcacherw")
        if mode == "proxy":
            env = self.gate.client_env(env, "proxy")
            if user:
                parts = urlsplit(env["HTTPS_PROXY"])
                userinfo = f"{quote(user, safe='')}:{quote(secret, safe='')}"
                env["HTTPS_PROXY"] = parts._replace(netloc=f"{userinfo}@{parts.netloc}").geturl()
        else:
            env = {**self.gate.client_env(env, "goproxy"), "SSL_CERT_FILE": str(self.gate.bundle)}
            if user:
                # Go 1.24 and later (GOAUTH) match the machine with its port; earlier ones
                # the host name alone: a line for each.
                url = urlsplit(self.gate.goproxy_url)
                (home / "home" / ".netrc").write_text(
                    f"machine {url.netloc} login {user} password {secret}\n"
                    f"machine {url.hostname} login {user} password {secret}\n"
                )
        return subprocess.run([find_go(), "mod", "download", "-json", *args], env=env, cwd=home,
                              capture_output=True, text=True, timeout=120)  # fmt: skip


def downloaded(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """module -> "ok" or its error, from `go mod download -json`."""
    out: dict[str, str] = {}
    decoder = json.JSONDecoder()
    text = done.stdout.strip()
    while text:
        item, end = decoder.raw_decode(text)
        out[item["Path"]] = item.get("Error", "ok")
        text = text[end:].strip()
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("teams")
    world = World([ModuleVersion(m, "v1.0.0") for m in (A_LIB, B_LIB, PUB)], workdir=tmp / "world")
    with world, Upstream(world) as upstream:
        gate = Gate(tmp / "gate", RULES.format(upstream=upstream.url))
        gate.home.mkdir(parents=True)
        (gate.home / "teams.yaml").write_text(TEAMS)
        gate.rules.write_text(gate.rules_text or "")
        token = subprocess.run(
            modgate_command("teams", "token", "create", "--rules", str(gate.rules), "team-b", "bob"),
            capture_output=True, text=True, timeout=60, cwd=gate.home,
        )  # fmt: skip
        with gate:
            yield Setup(gate, upstream, token.stdout.strip(), tmp)


def token_for(setup: Setup, member: str) -> str:
    """A new token for `member` of team-b, once modgate has reloaded the teams file."""
    reloads = setup.gate.output().count("reloaded")
    done = subprocess.run(
        modgate_command("teams", "token", "create", "--rules", str(setup.gate.rules), "team-b", member),
        capture_output=True, text=True, timeout=60, cwd=setup.gate.home,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    wait_for_reload(setup, reloads)
    return done.stdout.strip()


def wait_for_reload(setup: Setup, seen: int) -> None:
    deadline = time.monotonic() + 10
    while setup.gate.output().count("reloaded") == seen:
        assert time.monotonic() < deadline, setup.gate.output()
        time.sleep(0.05)


ALL = (f"{A_LIB}@v1.0.0", f"{B_LIB}@v1.0.0", f"{PUB}@v1.0.0")
NOT_FOUND = f"404 Not Found\n\tserver response: modgate: {B_LIB}: not found"
PRIVATE = f"403 Forbidden\n\tserver response: modgate: refused {A_LIB}: rule owners[0]: private to another team"


def test_the_banner_says_clients_authenticate_and_the_endpoint_is_https(setup: Setup) -> None:
    assert "; 2 teams: every client authenticates" in setup.gate.output()
    assert setup.gate.goproxy_url.startswith("https://127.0.0.1:")


@pytest.mark.parametrize("mode", ["proxy", "goproxy"])
def test_each_team_sees_exactly_its_own_modules(setup: Setup, mode: str) -> None:
    setup.upstream.reset_counts()
    alice = downloaded(setup.go(mode, "alice", ALICE_PW, *ALL))
    assert alice[A_LIB] == alice[PUB] == "ok"
    assert alice[B_LIB].endswith(NOT_FOUND), alice  # team-b's answer: as if there were nothing
    # Refused by its path alone: the upstream was never asked about it.
    assert setup.upstream.count(f"/{B_LIB}/*") == 0

    setup.upstream.reset_counts()
    bob = downloaded(setup.go(mode, "bob", setup.bob_token, *ALL))  # a token
    assert bob[B_LIB] == bob[PUB] == "ok"
    assert bob[A_LIB].endswith(PRIVATE), bob
    assert setup.upstream.count(f"/{A_LIB}/*") == 0


@pytest.mark.parametrize(
    ("mode", "user", "secret", "reason"),
    [
        (
            "proxy",
            "",
            "",
            'Get "https://proxy.modgate.test/example.modgate.test/pub/@v/v1.0.0.info": '
            "modgate: authentication required: give HTTPS_PROXY=http://USER:PASSWORD@HOST:PORT",
        ),
        ("proxy", "alice", "wrong", ": modgate: wrong user name or password: not served"),
        ("proxy", "mallory", ALICE_PW, ": modgate: wrong user name or password: not served"),
        (
            "proxy",
            "bob",
            "mgt_0123456789ab_" + "x" * 43,
            ": modgate: unknown or revoked token: not served",
        ),
        (
            "goproxy",
            "",
            "",
            "401 Unauthorized\n\tserver response: modgate: authentication required: "
            "give credentials for this host in ~/.netrc, or GOAUTH",
        ),
        (
            "goproxy",
            "alice",
            "wrong",
            "401 Unauthorized\n\tserver response: modgate: wrong user name or password",
        ),
        (
            "goproxy",
            "bob",
            "mgt_0123456789ab_" + "x" * 43,
            "401 Unauthorized\n\tserver response: modgate: unknown or revoked token",
        ),
    ],
)
def test_wrong_and_missing_credentials_fail_with_modgates_reason_and_reach_nothing(
    setup: Setup, mode: str, user: str, secret: str, reason: str
) -> None:
    setup.upstream.reset_counts()
    done = setup.go(mode, user, secret, f"{PUB}@v1.0.0")
    assert done.returncode != 0
    assert reason in downloaded(done)[PUB]
    assert setup.upstream.counts() == {}  # not even the public module was fetched


@pytest.mark.parametrize("mode", ["proxy", "goproxy"])
def test_a_revoked_token_stops_working_within_seconds(setup: Setup, mode: str) -> None:
    member = f"carol-{mode}"
    token = token_for(setup, member)
    assert downloaded(setup.go(mode, member, token, f"{B_LIB}@v1.0.0"))[B_LIB] == "ok"
    reloads = setup.gate.output().count("reloaded")
    done = subprocess.run(
        modgate_command("teams", "token", "revoke", "--rules", str(setup.gate.rules), token[4:16]),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    wait_for_reload(setup, reloads)
    refused = downloaded(setup.go(mode, member, token, f"{B_LIB}@v1.0.0"))
    assert "modgate: unknown or revoked token" in refused[B_LIB]


# --- attacks, with a raw client ----------------------------------------------------------


def basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


def tunnel(setup: Setup, *headers: tuple[str, str]) -> tuple[int, str, ssl.SSLSocket | None]:
    """CONNECT to the gated proxy through modgate with exactly these header lines; the
    status, status text, and (on 200) the TLS connection inside the tunnel."""
    proxy = urlsplit(setup.gate.proxy_url)
    sock = socket.create_connection((proxy.hostname, proxy.port), timeout=30)
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers)
    sock.sendall(f"CONNECT {HOST}:443 HTTP/1.1\r\nHost: {HOST}:443\r\n{lines}\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    _, code, text = status_line.split(" ", 2)
    if code != "200":
        sock.close()
        return int(code), text, None
    context = ssl.create_default_context(cafile=str(setup.gate.bundle))
    return 200, text, context.wrap_socket(sock, server_hostname=HOST)


def get(conn: ssl.SSLSocket, path: str, *headers: tuple[str, str]) -> tuple[int, bytes]:
    """One HTTP/1.1 GET on a kept-alive connection; (status, body)."""
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers)
    conn.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n{lines}\r\n".encode())
    response = http.client.HTTPResponse(conn)  # type: ignore[arg-type]
    response.begin()
    body = response.read()
    return response.status, body


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ((("proxy-authorization", basic("alice", ALICE_PW)),), 200),  # names are case-insensitive
        ((("PROXY-AUTHORIZATION", basic("alice", ALICE_PW).replace("Basic", "bAsIc")),), 200),
        ((("Proxy_Authorization", basic("alice", ALICE_PW)),), 407),  # not the header
        ((("Authorization", basic("alice", ALICE_PW)),), 407),  # a server's, not a proxy's
        (
            (
                ("Proxy-Authorization", basic("alice", ALICE_PW)),
                ("Proxy-Authorization", basic("alice", ALICE_PW)),
            ),
            407,
        ),
        ((("Proxy-Authorization", basic("alice", ALICE_PW) + ", " + basic("bob", "x")),), 407),
        (
            (
                (
                    "Proxy-Authorization",
                    "Basic " + base64.b64encode(f"alice:{ALICE_PW}\x00".encode()).decode(),
                ),
            ),
            407,
        ),
        ((("Proxy-Authorization", f"Bearer {'x' * 5000}"),), 407),
    ],
)
def test_header_spelling_variants(
    setup: Setup, headers: tuple[tuple[str, str], ...], status: int
) -> None:
    got, text, conn = tunnel(setup, *headers)
    assert got == status, text
    if conn is not None:
        conn.close()
    else:
        assert text.startswith("modgate: ")


def test_a_second_credentials_header_is_refused_whoever_it_names(setup: Setup) -> None:
    got, text, _ = tunnel(
        setup, ("Proxy-Authorization", f"Bearer {setup.bob_token}"),
        ("Proxy-Authorization", basic("alice", ALICE_PW)),
    )  # fmt: skip
    assert (got, text) == (407, "modgate: more than one credentials header: not served")


@pytest.mark.parametrize(
    ("path", "status"),
    [
        (f"/{A_LIB}/@v/list", 403),
        (f"/{A_LIB}/@latest", 403),
        (f"/{A_LIB}/@v/v1.0.0.info", 403),
        (f"/{A_LIB}/@v/v1.0.0.mod", 403),
        (f"/{A_LIB}/@v/v1.0.0.zip", 403),
        ("/corp.modgate.test/!team-!a/lib/@v/v1.0.0.zip", 403),  # Team-A: another module to go
        ("/corp.modgate.test/!t!e!a!m-a/lib/@v/list", 403),
        ("/corp.modgate.test/team-b/../team-a/lib/@v/v1.0.0.zip", 400),
        ("/corp.modgate.test/team-b/%2e%2e/team-a/lib/@v/list", 400),
        ("/corp.modgate.test/team-%61/lib/@v/list", 403),
        (f"/{A_LIB}/@v/v1.0.0.zip?team=team-a", 403),
        ("/sumdb/sum.golang.org/lookup/corp.modgate.test/team-a/lib@v1.0.0", 403),
        ("/sumdb/sum.golang.org/lookup/corp.modgate.test/!team-!a/lib@v1.0.0", 403),
    ],
)
def test_another_teams_private_path_in_any_spelling_gets_no_bytes(
    setup: Setup, path: str, status: int
) -> None:
    """Asked by bob (team-b) in his tunnel, with alice's credentials and a team header
    inside it for good measure: neither counts."""
    setup.upstream.reset_counts()
    got, _, conn = tunnel(setup, ("Proxy-Authorization", f"Bearer {setup.bob_token}"))
    assert got == 200 and conn is not None
    with conn:
        got_status, body = get(
            conn,
            path,
            ("X-Modgate-Team", "team-a"),
            ("Proxy-Authorization", basic("alice", ALICE_PW)),
        )
    assert got_status == status, body
    assert body.startswith(b"modgate: ") and b"PK" not in body
    assert setup.upstream.count("*team-a*") + setup.upstream.count("*!team-!a*") == 0


def test_a_kept_alive_tunnel_is_checked_again_after_its_token_is_revoked(setup: Setup) -> None:
    token = token_for(setup, "dave")
    got, _, conn = tunnel(setup, ("Proxy-Authorization", f"Bearer {token}"))
    assert got == 200 and conn is not None
    with conn:
        assert get(conn, f"/{B_LIB}/@v/list")[0] == 200
        reloads = setup.gate.output().count("reloaded")
        subprocess.run(
            modgate_command("teams", "token", "revoke", "--rules", str(setup.gate.rules), token[4:16]),
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        wait_for_reload(setup, reloads)
        status, body = get(conn, f"/{B_LIB}/@v/list")
    assert status == 407 and body == b"modgate: unknown or revoked token: not served\n"


def test_the_endpoint_takes_authorization_not_proxy_authorization(setup: Setup) -> None:
    url = urlsplit(setup.gate.goproxy_url)
    context = ssl.create_default_context(cafile=str(setup.gate.bundle))
    for headers, expected in (
        ({"Proxy-Authorization": basic("alice", ALICE_PW)}, 401),
        ({"Authorization": basic("alice", ALICE_PW)}, 200),
        ({"Authorization": f"Bearer {setup.bob_token}"}, 200),
    ):
        conn = http.client.HTTPSConnection(url.hostname, url.port, context=context, timeout=30)
        conn.request("GET", f"/{PUB}/@v/list", headers=headers)
        response = conn.getresponse()
        assert response.status == expected, response.read()
        if expected == 401:
            assert response.headers["WWW-Authenticate"].startswith('Basic realm="modgate"')
        conn.close()


def test_proxyauth_and_teams_together_stop_modgate_saying_which(tmp_path: Path) -> None:
    gate = Gate(tmp_path / "gate", RULES.format(upstream="http://127.0.0.1:9"))
    gate.home.mkdir(parents=True)
    (gate.home / "teams.yaml").write_text(TEAMS)
    gate.extra_args = ["--set", "proxyauth=ci:s3cret"]
    with pytest.raises(
        RuntimeError, match="proxyauth and rules.yaml's teams both ask for credentials"
    ):
        gate.start(timeout=30)


def test_the_trace_says_who_asked(setup: Setup) -> None:
    done = setup.go("proxy", "alice", ALICE_PW, f"{PUB}@v1.0.0")
    assert done.returncode == 0, done.stderr
    done = setup.go("goproxy", "bob", setup.bob_token, f"{B_LIB}@v1.0.0")
    assert done.returncode == 0, done.stderr
    where = ["--cache-dir", str(setup.gate.cache_dir)]

    def sessions(team: str) -> list[dict[str, object]]:
        out = subprocess.run(modgate_command("trace", "ls", "--all", "--team", team, "--json", *where),
                             capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
        found: list[dict[str, object]] = json.loads(out.stdout)
        return found

    deadline = time.monotonic() + 15
    while not (sessions("team-a") and sessions("team-b")) and time.monotonic() < deadline:
        time.sleep(0.2)
    for team, member in (("team-a", "alice"), ("team-b", "bob")):
        found = sessions(team)
        # (This test's own raw clients asked as both teams from one process: one session.)
        assert found and all(team in s["teams"] for s in found), found  # type: ignore[operator]
        assert any(member in s["identities"] for s in found)  # type: ignore[operator]
    session = next(s["id"] for s in sessions("team-a") if s["identities"] == ["alice"])
    show = subprocess.run(modgate_command("trace", "show", str(session), *where),
                          capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    assert "· team team-a (alice)" in show.stdout.splitlines()[0]
    records = json.loads(subprocess.run(
        modgate_command("trace", "show", str(session), "--json", *where),
        capture_output=True, text=True, timeout=60, check=True).stdout)["requests"]  # fmt: skip
    # "tag alice" (the proxy URL's user) also holds the refused runs with a wrong password:
    # refused before anyone was known, they are no one's.
    who = {(r["identity"], r["team"], r["status"] == 407) for r in records}
    assert who <= {("alice", "team-a", False), ("", "", True)} and ("alice", "team-a", False) in who
    # A refused, unauthenticated request is traced too, as no one's.
    setup.go("proxy", "", "", f"{PUB}@v1.0.0")
    ls = subprocess.run(modgate_command("trace", "ls", "--all", *where),
                        capture_output=True, text=True, timeout=60, check=True).stdout  # fmt: skip
    assert ls.splitlines()[0].split()[:4] == ["ID", "STARTED", "CLIENT", "TEAM"]


def test_every_worker_forgets_a_revoked_token(tmp_path: Path) -> None:
    world = World([ModuleVersion(B_LIB, "v1.0.0")], workdir=tmp_path / "world")
    with world, Upstream(world) as upstream:
        gate = Gate(tmp_path / "gate", RULES.format(upstream=upstream.url), workers=2)
        gate.home.mkdir(parents=True)
        (gate.home / "teams.yaml").write_text(TEAMS)
        gate.rules.write_text(gate.rules_text or "")
        with gate:
            setup = Setup(gate, upstream, "", tmp_path)
            token = token_for(setup, "erin")  # waits for one worker's reload
            deadline = time.monotonic() + 10
            while gate.output().count("reloaded") < 2:  # and the other's
                assert time.monotonic() < deadline, gate.output()
                time.sleep(0.05)
            for _ in range(3):  # new connections, spread over the workers by the kernel
                assert (
                    downloaded(setup.go("proxy", "erin", token, f"{B_LIB}@v1.0.0"))[B_LIB] == "ok"
                )
            subprocess.run(
                modgate_command("teams", "token", "revoke", "--rules", str(gate.rules), token[4:16]),
                check=True, capture_output=True, timeout=60,
            )  # fmt: skip
            while gate.output().count("reloaded") < 4:
                assert time.monotonic() < deadline + 10, gate.output()
                time.sleep(0.05)
            for _ in range(3):
                refused = downloaded(setup.go("proxy", "erin", token, f"{B_LIB}@v1.0.0"))
                assert "modgate: unknown or revoked token" in refused[B_LIB]


def test_doctor_finds_the_tls_endpoint_and_uses_or_asks_for_netrc(setup: Setup) -> None:
    gate = setup.gate

    def doctor(netrc: str) -> dict[str, dict[str, str]]:
        home = setup.tmp / f"doctor{len(netrc)}"
        (home / "home").mkdir(parents=True)
        env = {**go_env(home, gate.goproxy_url), "SSL_CERT_FILE": str(gate.bundle)}
        if netrc:
            (home / "home" / ".netrc").write_text(netrc)
        done = subprocess.run(
            modgate_command("doctor", "--json", "--listen-port", str(urlsplit(gate.proxy_url).port),
                            "--goproxy-port", str(urlsplit(gate.goproxy_url).port),
                            "--confdir", str(gate.confdir), "--cache-dir", str(gate.cache_dir),
                            "--rules", str(gate.rules), "--probe", PUB),
            env=env, capture_output=True, text=True, timeout=120, cwd=gate.home,
        )  # fmt: skip
        assert done.stdout, done.stderr
        return {f["check"]: f for f in json.loads(done.stdout)["findings"]}

    found = doctor(f"machine {urlsplit(gate.goproxy_url).netloc} login alice password {ALICE_PW}\n")
    assert (
        found["route"]["status"] == "ok"
        and "GOPROXY endpoint https://" in found["route"]["message"]
    )
    assert found["probe"]["status"] == "ok", found["probe"]
    found = doctor("")
    assert found["probe"]["status"] == "fail"
    assert "401: modgate: authentication required" in found["probe"]["message"]
    assert "~/.netrc" in found["probe"]["fix"]


def test_prefetch_standalone_runs_its_own_modgate_without_asking_itself_who_it_is(
    setup: Setup, tmp_path: Path
) -> None:
    """`prefetch --cache-dir` (and `cache import`, on the same helper) start a modgate of
    their own with the user's rules: teams there must not lock their own client out."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(upstream=setup.upstream.url))
    (tmp_path / "teams.yaml").write_text(TEAMS)
    done = subprocess.run(
        modgate_command("prefetch", "-", "--cache-dir", str(tmp_path / "cache"), "--rules", str(rules)),
        input=f"{A_LIB}@v1.0.0\n{PUB}@v1.0.0\n", env=go_env(tmp_path / "p", "off"),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 refused, 0 failed" in done.stdout


def test_prefetch_through_a_modgate_with_teams_signs_in_with_netrc(
    setup: Setup, tmp_path: Path
) -> None:
    url = urlsplit(setup.gate.goproxy_url)
    env = {**go_env(tmp_path / "p", "off"), "SSL_CERT_FILE": str(setup.gate.bundle)}
    Path(env["HOME"]).mkdir(parents=True)

    def prefetch() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            modgate_command("prefetch", "-", "--goproxy", setup.gate.goproxy_url),
            input=f"{A_LIB}@v1.0.0\n{B_LIB}@v1.0.0\n", env=env, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip

    anonymous = prefetch()
    assert anonymous.returncode == 1
    assert "2 failed" in anonymous.stdout and "modgate: authentication required" in anonymous.stdout
    (Path(env["HOME"]) / ".netrc").write_text(
        f"machine {url.netloc} login alice password {ALICE_PW}\n"
    )
    alice = prefetch()
    assert alice.returncode == 1, alice.stdout + alice.stderr
    problems = [line.strip() for line in alice.stdout.splitlines()[1:]]
    # Signed in as alice: her module comes, team-b's is as absent as ever.
    assert problems == [
        f"failed {B_LIB}@v1.0.0: {B_LIB}/@v/v1.0.0.info: modgate: {B_LIB}: not found"
    ]


def _outside_address() -> str:
    """An IPv4 address of this machine that is not loopback, or "" when it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: it picks the route's source
            address = str(s.getsockname()[0])
        except OSError:
            return ""
    return "" if address.startswith("127.") else address


@pytest.mark.parametrize("listen", ["address", "0.0.0.0"])
def test_an_endpoint_for_other_machines_has_a_certificate_for_its_address(
    setup: Setup, tmp_path: Path, listen: str
) -> None:
    """One modgate for many teams listens where other machines reach it (one address, or
    all of them): the endpoint's certificate must name the address they use, not only
    127.0.0.1."""
    address = _outside_address()
    if not address:
        pytest.skip("no address but loopback here")
    gate = Gate(tmp_path / "gate", RULES.format(upstream=setup.upstream.url))
    gate.home.mkdir(parents=True)
    (gate.home / "teams.yaml").write_text(TEAMS)
    gate.extra_args = ["--listen-host", address if listen == "address" else listen]
    with gate:
        assert gate.goproxy_url.startswith("https://")
        gate.goproxy_url = f"https://{address}:{urlsplit(gate.goproxy_url).port}"
        remote = Setup(gate, setup.upstream, "", tmp_path)
        done = remote.go("goproxy", "alice", ALICE_PW, f"{A_LIB}@v1.0.0")
        assert downloaded(done)[A_LIB] == "ok", done.stderr
