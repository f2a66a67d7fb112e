"""`modgate transparent-rules`: the firewall rules that send go's traffic to a modgate
running with `--mode transparent`, printed for you to review and load (modgate never
changes the firewall itself).

  on a gateway (`--gateway IFACE`): connections arriving on IFACE to TCP ports 80 and
  443 are redirected to modgate's port. REDIRECT rewrites the destination to IFACE's
  own address, so modgate must listen there or on 0.0.0.0 (the default in transparent
  mode), not on 127.0.0.1.

  on a single host (`--host`): connections this machine's processes open to ports 80
  and 443 are redirected to modgate on 127.0.0.1, except those of modgate's own user
  (`--user`, default: the current one): modgate's fetches from its upstreams must not
  come back to it. Run modgate as a dedicated user, so the exception covers nothing else.

nftables (`nft -f FILE`, or `| nft -f -`) by default; `--iptables` for the iptables
commands. Remove them with `nft delete table inet modgate` (or the `-D` forms).
"""

from __future__ import annotations

import argparse
import getpass
import pwd
import re


def add_arguments(p: argparse.ArgumentParser) -> None:
    from modgate.cli import DEFAULT_PORT

    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--gateway",
        metavar="IFACE",
        help="redirect what arrives on this interface (a router, a gateway)",
    )
    where.add_argument(
        "--host", action="store_true", help="redirect what this machine's own processes send"
    )
    p.add_argument(
        "--listen-port",
        type=int,
        default=DEFAULT_PORT,
        help="modgate's port (default: %(default)s)",
    )
    p.add_argument(
        "--user",
        default=None,
        help="with --host: the user modgate runs as (default: the current user)",
    )
    p.add_argument("--ports", default="80,443", help="TCP ports to redirect (default: %(default)s)")
    p.add_argument("--iptables", action="store_true", help="iptables commands, not nftables")


def cmd(args: argparse.Namespace) -> int:
    from modgate.errors import ModgateError

    ports = [p.strip() for p in args.ports.split(",") if p.strip()]
    if not ports or not all(re.fullmatch(r"\d{1,5}", p) and 0 < int(p) < 65536 for p in ports):
        raise ModgateError(f"--ports {args.ports!r}: give TCP port numbers, such as 80,443")
    if args.gateway is not None and not re.fullmatch(r"[A-Za-z0-9_.:@-]{1,15}", args.gateway):
        raise ModgateError(f"--gateway {args.gateway!r} is not an interface name")
    user = args.user or getpass.getuser()
    if args.host:
        try:
            uid = pwd.getpwnam(user).pw_uid
        except KeyError as e:
            raise ModgateError(f"--user {user!r}: no such user on this machine") from e
        text = host_rules(ports, args.listen_port, uid, args.iptables)
    else:
        text = gateway_rules(args.gateway, ports, args.listen_port, args.iptables)
    print(text, end="")
    return 0


def gateway_rules(iface: str, ports: list[str], port: int, iptables: bool) -> str:
    return _redirect(ports, port, iptables, "prerouting", "priority dstnat",
                     f'iifname "{iface}"', ("PREROUTING", f"-i {iface}"))  # fmt: skip


def host_rules(ports: list[str], port: int, uid: int, iptables: bool) -> str:
    return _redirect(ports, port, iptables, "output", "priority -100", f"meta skuid != {uid}",
                     ("OUTPUT", f"-m owner ! --uid-owner {uid}"))  # fmt: skip


def _redirect(
    ports: list[str], port: int, iptables: bool, hook: str, priority: str, match: str,
    ipt: tuple[str, str],
) -> str:  # fmt: skip
    """A REDIRECT of TCP `ports` to `port` at nat `hook`, for the packets `match` takes."""
    if iptables:
        chain, rule = ipt
        return "".join(
            f"{tool} -t nat -A {chain} -p tcp {rule} -m multiport --dports {','.join(ports)} "
            f"-j REDIRECT --to-ports {port}\n"
            for tool in ("iptables", "ip6tables")
        )
    return (
        "table inet modgate {\n"
        f"  chain {hook} {{\n"
        f"    type nat hook {hook} {priority}; policy accept;\n"
        f"    {match} tcp dport {{ {', '.join(ports)} }} redirect to :{port}\n"
        "  }\n"
        "}\n"
    )
