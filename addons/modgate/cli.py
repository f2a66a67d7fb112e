"""The modgate command line.

    modgate run    start the gate: an HTTPS proxy for `go`, and a GOPROXY= endpoint
    modgate env    print the shell lines that point `go` at a running modgate
    modgate doctor find what keeps `go` from using modgate, and the fix
    modgate prefetch  fill the cache with what some builds need
    modgate audit  verify and export the audit log

Exit status: 0 success, 1 a check failed, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shlex
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from modgate import (
    __version__,
    admin_cli,
    audit_cli,
    cache_cli,
    doctor_cli,
    localcapture,
    prefetch_cli,
    rules_cli,
    teams_cli,
    trace_cli,
    transparent_rules,
)
from modgate.errors import ModgateError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from mitmproxy.master import Master
    from mitmproxy.options import Options

    from modgate.addons.settings import Settings

DEFAULT_PORT = 8080
DEFAULT_GOPROXY_PORT = 8081
DEFAULT_ADMIN_PORT = 8082
# What mitmproxy's reverse mode would forward the GOPROXY endpoint to, for the bench's
# bare mitmproxy (scripts/benchlib): never contacted, a name that cannot resolve. modgate
# itself serves the endpoint with its own server (modgate/endpoint.py).
REVERSE_TARGET = "http://goproxy.modgate.invalid"


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    if argv is None and args.func is cmd_run:
        _optimised()
    args.argv = sys.argv[1:] if argv is None else argv
    try:
        return int(args.func(args))
    except ModgateError as e:
        print(f"modgate: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _rules_path(text: str) -> Path | str:
    """A rules file, or "" for none (the defaults of `go env`, as with no file at all)."""
    return Path(text) if text else ""


def _workers(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n}: at least 1")
    return n


def _parser() -> argparse.ArgumentParser:

    parser = argparse.ArgumentParser(
        prog="modgate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"modgate {__version__}")
    sub = parser.add_subparsers(metavar="COMMAND")

    run = sub.add_parser("run", help="start modgate")
    where(run, None)
    run.add_argument(
        "--mode",
        choices=("regular", "transparent", "local"),
        default="regular",
        help="regular: an HTTPS proxy clients name in HTTPS_PROXY; transparent: the network "
        "redirects clients' TCP ports 80 and 443 to modgate (see `modgate transparent-rules`); "
        "local: capture the traffic of programs on this machine by name (--capture; Linux, "
        "root) (default: %(default)s)",
    )
    run.add_argument(
        "--capture",
        default=",".join(localcapture.DEFAULT_PROGRAMS),
        metavar="NAMES",
        help="with --mode local: the programs whose traffic is captured, machine-wide "
        "(default: %(default)s)",
    )
    run.add_argument(
        "--goproxy-port",
        type=int,
        default=DEFAULT_GOPROXY_PORT,
        help="port of the plain GOPROXY= endpoint, -1 for none (default: %(default)s)",
    )
    run.add_argument(
        "--admin-listen",
        default=f"127.0.0.1:{DEFAULT_ADMIN_PORT}",
        metavar="HOST:PORT",
        help="the signed admin API and dashboard, started when CONFDIR has admin keys "
        "(`modgate admin keygen`); 'off' for none (default: %(default)s)",
    )
    run.add_argument("--cache-dir", type=Path, default=None, help="default: CONFDIR/cache")
    run.add_argument(
        "--rules",
        type=_rules_path,
        default=None,
        help="rules file (default: ./rules.yaml if it exists; '' for none)",
    )
    run.add_argument(
        "--http2",
        action=argparse.BooleanOptionalAction,
        # Off: through mitmproxy, go's downloads over HTTP/2 were about 2.5x slower for
        # large bodies and about 20% slower for a whole warm `go mod download` than over
        # HTTP/1.1 keep-alive connections (scripts/bench, issue 6).
        default=False,
        help="offer HTTP/2 to clients (default: off, HTTP/1.1 is faster here)",
    )
    run.add_argument(
        "--upstream-ca",
        type=Path,
        metavar="FILE",
        help="PEM CAs to trust upstream besides the system's: a TLS-inspecting firewall's, "
        "an internal mirror's",
    )
    run.add_argument(
        "--workers",
        type=_workers,
        default=None,
        help="worker processes sharing the ports, cache and trace (default: one per usable "
        "core, on Linux; 1: a single process, no supervisor; local mode: always 1)",
    )
    run.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        default="",
        # Off by default: a port nobody asked for can collide with what runs there (9090
        # is Prometheus' own), and one that fails to bind stops modgate; who scrapes
        # says where. Loopback unless a host is given.
        help="serve Prometheus /metrics, /healthz and /readyz here (PORT alone: on "
        "127.0.0.1; default: off)",
    )
    run.add_argument("--quiet", "-q", action="store_true", help="log warnings and errors only")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="OPTION=VALUE",
        help="set a mitmproxy or modgate option, as mitmdump --set does (for example "
        "modgate_trace_retention=7d); repeatable",
    )
    run.set_defaults(func=cmd_run)

    env = sub.add_parser("env", help="print shell lines that send go through modgate")
    where(env)
    env.add_argument(
        "--session",
        metavar="NAME",
        help="trace this shell's go commands as one session named NAME (sent as the proxy "
        "URL's user; not with --set proxyauth)",
    )
    env.add_argument(
        "--transparent",
        action="store_true",
        help="modgate runs in transparent mode: print only the CA settings, no proxy",
    )
    env.add_argument(
        "--goproxy",
        metavar="URL",
        nargs="?",
        const=f"http://127.0.0.1:{DEFAULT_GOPROXY_PORT}",
        help="print GOPROXY=URL for the GOPROXY endpoint instead of proxy settings",
    )
    env.set_defaults(func=cmd_env)
    rules = sub.add_parser(
        "transparent-rules",
        help="print the nftables or iptables rules that redirect go's traffic to modgate",
        description=transparent_rules.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    transparent_rules.add_arguments(rules)
    rules.set_defaults(func=transparent_rules.cmd)
    trace_cli.add_parser(sub)
    rules_cli.add_parser(sub)
    teams_cli.add_parser(sub)
    cache_cli.add_parser(sub)
    doctor_cli.add_parser(sub)
    prefetch_cli.add_parser(sub)
    audit_cli.add_parser(sub)
    admin_cli.add_parser(sub)
    return parser


# --- modgate run ---------------------------------------------------------------------


def where(p: argparse.ArgumentParser, host: str | None = "127.0.0.1") -> None:
    """The options that say where a modgate listens and keeps its state (run, env, doctor)."""
    from modgate.home import default_home

    p.add_argument(
        "--listen-host", default=host,
        help=f"default: {host}" if host else "default: 127.0.0.1, 0.0.0.0 in transparent mode",
    )  # fmt: skip
    p.add_argument("--listen-port", type=int, default=DEFAULT_PORT, help="default: %(default)s")
    p.add_argument(
        "--confdir",
        type=Path,
        default=default_home(),
        help="modgate's CA and state (default: %(default)s, or $MODGATE_HOME)",
    )


def _optimised() -> None:
    """Start `modgate run` again under `python -O`, unless it already is, or
    MODGATE_PYTHON_CHECKS=1. mitmproxy type-checks every field of every HTTP message it
    builds unless Python runs optimised (`if __debug__`): about 35 µs for each request and
    each response, an eighth of a cached hit's CPU (scripts/bench, issue 6). modgate's
    own asserts only restate what the code around them already ensures."""
    import os

    if sys.flags.optimize or os.environ.get("MODGATE_PYTHON_CHECKS") == "1":
        return
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-O", "-m", "modgate", *sys.argv[1:]])


def cmd_run(args: argparse.Namespace) -> int:
    from modgate.rulesfile import load_checked

    rules = args.rules
    if rules is None and Path("rules.yaml").is_file():
        rules = Path("rules.yaml")
    if rules:
        load_checked(rules)  # refuse to start on a broken file, before anything listens
    import asyncio
    import os

    from modgate import memory, workers

    if args.listen_host is None:  # transparent mode listens where REDIRECT sends
        args.listen_host = "0.0.0.0" if args.mode == "transparent" else "127.0.0.1"
    worker = workers.this_worker()
    # Local capture has one redirector per machine: one process takes it.
    count = 1 if args.mode == "local" else args.workers or workers.default_workers()
    metrics = _metrics_listen(args.metrics_listen)
    if count > 1 and worker is None:
        ports = [args.listen_port, *([args.goproxy_port] if args.goproxy_port >= 0 else [])]
        # The workers' metrics add up through files in a directory of this modgate's own.
        multiproc = args.confdir.expanduser() / "metrics" if metrics else None
        return workers.supervise(args.argv, count, args.listen_host, ports, metrics, multiproc)
    memory.lean_malloc()  # before any thread starts
    memory.without_mitmproxy_addon_index()
    confdir: Path = args.confdir.expanduser()
    cache_dir: Path = (args.cache_dir or confdir / "cache").expanduser()
    # What modgate writes (CA key, cache, trace of who fetched what) is its user's alone.
    os.umask(0o077)
    loop = workers.ReusePortLoop if worker is not None else None
    return asyncio.run(_run(args, confdir, cache_dir, rules), loop_factory=loop)


async def _run(args: argparse.Namespace, confdir: Path, cache_dir: Path, rules: Path | None) -> int:
    from mitmproxy import exceptions, options

    from modgate.addons import all_addons
    from modgate.cabundle import write_bundle

    confdir.mkdir(parents=True, exist_ok=True)
    # mitmproxy's log handler sits on the root logger, which stays at WARNING: let
    # modgate's own INFO lines (what it gates, reloads, each request) through to it.
    logging.getLogger("modgate").setLevel(logging.INFO)
    modes = [f"{args.mode}@{args.listen_port}"]
    probe: _LocalProbe | None = None
    if args.mode == "local":
        programs = tuple(p.strip() for p in args.capture.split(",") if p.strip())
        modes = [localcapture.spec(programs)]
        localcapture.prepare(confdir)
        if running := localcapture.others():
            print(
                f"modgate: warning: another capturing mitmproxy runs here (pid "
                f"{', '.join(map(str, running))}): of two, the last started takes the traffic",
                file=sys.stderr,
            )
        probe = _LocalProbe(confdir)
    opts = options.Options(listen_host=args.listen_host, confdir=str(confdir), mode=modes)
    master = lean_master(opts)
    with _home(confdir):
        master.addons.add(
            *all_addons(),
            *_endpoint(args.listen_host, args.goproxy_port),
            *_admin(args.admin_listen, confdir),
            _Banner(confdir, probe),
        )
    # The first error of an update is the one to show: the rollback that follows applies
    # the defaults again, and may fail for reasons of its own.
    failures: list[Exception] = []
    opts.errored.connect(lambda exc: failures.append(exc))
    try:
        opts.update(
            # Connect upstream only when a request needs it, so cached answers are served
            # with the upstream unreachable (the default, eager, fails on CONNECT).
            connection_strategy="lazy",
            http2=args.http2,
            termlog_verbosity="warn" if args.quiet else "info",
            modgate_rules=str(rules or ""),
            modgate_metrics_listen=args.metrics_listen,
            modgate_cache_dir=str(cache_dir),
            modgate_upstream_ca=str(args.upstream_ca.expanduser().absolute())
            if args.upstream_ca
            else "",
        )
        opts.set(*args.set)
    except exceptions.OptionsError as e:
        print(f"modgate: {failures[0] if failures else e}", file=sys.stderr)
        return 2
    write_bundle(confdir)
    _stop_on_signals(master)
    await master.run()
    if probe is not None and probe.failed:
        print(f"modgate: --mode local: capture does not work here: {probe.failed}",
              file=sys.stderr)  # fmt: skip
        return 2
    return 0


def _metrics_listen(text: str) -> tuple[str, int] | None:
    from modgate.metrics import parse_listen

    if not text:
        return None
    try:
        return parse_listen(text)
    except ValueError as e:
        raise ModgateError(f"--metrics-listen {text}: not HOST:PORT or PORT ({e})") from e


def _endpoint(host: str, port: int) -> list[object]:
    """The GOPROXY endpoint's addon (modgate/endpoint.py, a lean server, not mitmproxy's
    reverse mode), its port bound now: in use, modgate stops before anything listens."""
    if port < 0:
        return []
    from modgate.addons.endpoint import Endpoint
    from modgate.endpoint import bind
    from modgate.workers import this_worker

    try:
        # A worker shares the port with the others (the supervisor claimed it).
        return [Endpoint(bind(host, port, reuse_port=this_worker() is not None))]
    except OSError as e:
        raise ModgateError(str(e.strerror or e)) from e


def _admin(listen: str, confdir: Path) -> list[object]:
    """The admin API's addon, its port bound now, in one process per modgate (the single
    one, or worker 0 of several), and only when there are admin keys to check requests
    against: without them every request would be refused."""
    from modgate import adminauth
    from modgate.workers import this_worker

    worker = this_worker()
    if listen == "off" or (worker is not None and worker.index != 0):
        return []
    if not adminauth.load_keys(adminauth.keys_path(confdir)):
        return []
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ModgateError(f"--admin-listen {listen}: give HOST:PORT, or off")
    from modgate.addons.admin import Admin

    try:
        sock = socket.create_server((host.strip("[]"), int(port)), backlog=128)
    except OSError as e:
        raise ModgateError(f"admin API {listen}: {e.strerror or e}") from e
    return [Admin(sock, confdir, workers=worker is not None)]


PROBE_PATIENCE = 15.0  # seconds local capture may take to start capturing


class _LocalProbe:
    """Checks that capture captures (localcapture.probe), before the banner says modgate
    is ready; else stops modgate, which exits 2: a gate that captures nothing fails open."""

    def __init__(self, confdir: Path) -> None:
        self.confdir = confdir
        self.failed = ""

    async def check(self) -> bool:
        import asyncio

        from mitmproxy import ctx

        # The redirector attaches its eBPF program a little after it starts (seconds, on
        # a busy machine): ask again for a while before calling capture broken.
        deadline = asyncio.get_running_loop().time() + PROBE_PATIENCE
        while True:
            self.failed = await asyncio.to_thread(localcapture.probe, self.confdir)
            if not self.failed or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.5)
        if self.failed:
            ctx.master.shutdown()
        return not self.failed


@contextlib.contextmanager
def _home(confdir: Path) -> Iterator[None]:
    """MODGATE_HOME is `confdir` while modgate's addons load, so the defaults of their
    options (cache, trace) lie in it. mitmproxy rolls options back to their defaults when
    an update fails, and applies them: a failed start would otherwise create ~/.modgate."""
    import os

    before = os.environ.get("MODGATE_HOME")
    os.environ["MODGATE_HOME"] = str(confdir.absolute())
    try:
        yield
    finally:
        if before is None:
            del os.environ["MODGATE_HOME"]
        else:
            os.environ["MODGATE_HOME"] = before


def _stop_on_signals(master: Master) -> None:
    """SIGINT (Ctrl-C) and SIGTERM (kill, docker stop, systemd) stop modgate cleanly: the
    trace writer commits what it holds and the store closes. Set here, on the event loop,
    because a shell that starts modgate in the background (`modgate run &`, a CI step)
    hands it SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    import asyncio
    import signal

    from modgate.workers import this_worker

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, master.shutdown)
    if (worker := this_worker()) is not None:
        worker.watch(master.shutdown)  # the supervisor is gone: stop too


def lean_master(opts: Options) -> Master:
    """A mitmproxy master with the addons modgate uses, and none of the rest.

    mitmproxy calls every addon on every event of every request, and a module proxy
    answers hundreds of small requests per build: `mitmdump`'s thirty-odd addons (flow
    playback, header rewriting, HAR export, the onboarding site...) cost a third of a
    cached answer's CPU time while doing nothing here (issue 6). What stays: the proxy
    itself (core, proxyserver, next_layer, tlsconfig), who may use it (proxyauth, and
    block, which refuses clients from public addresses unless told otherwise),
    disable_h2c, the terminal log, and errorcheck, which makes startup errors (a port
    in use) fatal. `mitmweb -s addons/modgate_addons.py` still loads everything.
    """
    from mitmproxy import master
    from mitmproxy.addons import (
        block,
        core,
        disable_h2c,
        errorcheck,
        next_layer,
        proxyauth,
        proxyserver,
        tlsconfig,
    )

    m = master.Master(opts, with_termlog=True)
    m.addons.add(
        core.Core(), block.Block(), disable_h2c.DisableH2C(), proxyauth.ProxyAuth(),
        proxyserver.Proxyserver(), next_layer.NextLayer(), tlsconfig.TlsConfig(),
        errorcheck.ErrorCheck(),
    )  # fmt: skip
    return m


class _Banner:
    """Says, once everything listens (and local capture captures), where and how to
    point go at it."""

    def __init__(self, confdir: Path, probe: _LocalProbe | None = None) -> None:
        self.confdir = confdir
        self.probe = probe

    async def running(self) -> None:
        from mitmproxy import ctx
        from mitmproxy.proxy import mode_specs

        from modgate.addons.settings import Settings
        from modgate.workers import this_worker

        if self.probe is not None and not await self.probe.check():
            return

        settings = ctx.master.addons.get("modgate").stage(Settings)
        proxy = ""
        transparent = False
        captured = ""
        for server in ctx.master.addons.get("proxyserver").servers:
            if isinstance(server.mode, mode_specs.LocalMode):
                captured = server.mode.data.removesuffix(f",{localcapture.PROBE}")
                transparent = True
            for host, port, *_ in server.listen_addrs:
                proxy = f"http://{host}:{port}"
                transparent = transparent or isinstance(server.mode, mode_specs.TransparentMode)
        endpoint = ctx.master.addons.get("modgate_endpoint")
        goproxy = endpoint.url if endpoint is not None else ""
        gated = ", ".join(p.url for p in settings.runtime.proxies) if settings.runtime else "?"
        env = _env_command(proxy, self.confdir, transparent)
        line = f'modgate: proxy on {proxy}, for go: eval "$({env})"'
        if captured:
            line = (
                f"modgate: capturing {captured.replace(',', ', ')} (local mode), for go: "
                f'eval "$({_env_command("", self.confdir, transparent)})"'
            )
        elif transparent:
            line = (
                f"modgate: proxy on {proxy}, transparent: redirect TCP ports 80 and 443 to it "
                f'(modgate transparent-rules); for go: eval "$({env})"'
            )
        if goproxy:
            line += f"; GOPROXY endpoint {goproxy}"
        if (admin := ctx.master.addons.get("modgate_admin")) is not None:
            line += f"; admin API {admin.url}"
        line = f"{line}; gating {gated}; {_verifies(settings)}"
        teams = settings.runtime.config.teams if settings.runtime else None
        if teams is not None:
            line += f"; {len(teams.teams)} teams: every client authenticates"
        if (worker := this_worker()) is not None:
            worker.ready(line)  # the supervisor prints it, once for all workers
        else:
            print(line, flush=True)
        # Its work is done: mitmproxy would otherwise offer it every event of every request.
        ctx.master.addons.remove(self)


def _verifies(settings: Settings) -> str:
    """Which way modgate checks public modules: the database it asks, and where."""
    runtime = settings.runtime
    if runtime is None or not runtime.databases:
        # GOSUMDB=off, or `databases: []`: every module is checked as a private one.
        return "verifies with no checksum database: pins, go.sum files, first-seen hashes"
    db = runtime.databases[0]
    return f"verifies with checksum database {db.name} through {db.chain}"


def _default_confdir() -> Path:
    from modgate.home import default_home

    return default_home()


def _env_command(proxy: str, confdir: Path, transparent: bool = False) -> str:
    """The `modgate env` command for the proxy at `proxy`, whole: this Python's absolute
    path (`modgate` may not be on the PATH of the shell that runs it; `python -m
    modgate` works wherever this one runs), and every option that differs from env's
    defaults, so go is pointed at this port and this CA."""
    host, _, port = proxy.removeprefix("http://").rpartition(":")
    words = [sys.executable, "-m", "modgate", "env"]
    if host.strip("[]") not in ("127.0.0.1", "0.0.0.0", "::", "") and not transparent:
        words += ["--listen-host", host.strip("[]")]  # wildcards: loopback works
    if port != str(DEFAULT_PORT) and not transparent:
        words += ["--listen-port", port]
    if confdir != _default_confdir():
        words += ["--confdir", str(confdir)]
    if transparent:
        words.append("--transparent")
    return shlex.join(words)


# --- modgate env ---------------------------------------------------------------------


def cmd_env(args: argparse.Namespace) -> int:
    from modgate.cabundle import write_bundle

    if args.goproxy:
        print(f"export GOPROXY={shlex.quote(args.goproxy)}")
        if args.goproxy.startswith("https://"):  # teams: the endpoint serves TLS, by modgate's CA
            print(
                f"export SSL_CERT_FILE={shlex.quote(str(write_bundle(args.confdir.expanduser())))}"
            )
        return 0
    bundle = write_bundle(args.confdir.expanduser())
    from urllib.parse import quote

    user = f"{quote(args.session, safe='')}@" if args.session else ""
    proxy = f"http://{user}{args.listen_host}:{args.listen_port}"
    lines = {} if args.transparent else {
        "HTTPS_PROXY": proxy,
        "https_proxy": proxy,  # git and curl read the lowercase one
    }  # fmt: skip
    # Go reads this file instead of the system's bundle: it holds the system's CAs too.
    lines |= {"SSL_CERT_FILE": str(bundle), "GIT_SSL_CAINFO": str(bundle)}
    for name, value in lines.items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
