"""`modgate transparent-rules`: what it prints is what nft accepts, and says what it should."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from modgate.cli import main
from modgate.transparent_rules import gateway_rules, host_rules


def test_the_rules_name_the_interface_the_ports_and_the_exception() -> None:
    nft = gateway_rules("eth1", ["80", "443"], 8080, iptables=False)
    assert 'iifname "eth1" tcp dport { 80, 443 } redirect to :8080' in nft
    assert "type nat hook prerouting priority dstnat" in nft
    assert "meta skuid != 999 tcp dport { 443 } redirect to :9090" in host_rules(
        ["443"], 9090, 999, False
    )
    ipt = gateway_rules("eth1", ["80", "443"], 8080, iptables=True).splitlines()
    assert ipt[0] == ("iptables -t nat -A PREROUTING -p tcp -i eth1 -m multiport --dports 80,443 "
                      "-j REDIRECT --to-ports 8080")  # fmt: skip
    assert ipt[1].startswith("ip6tables ")
    owner = host_rules(["80"], 8080, 999, iptables=True)
    assert "-A OUTPUT -p tcp -m owner ! --uid-owner 999 " in owner


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft") is None,
                    reason="nft -c needs root and nftables")  # fmt: skip
@pytest.mark.parametrize("rules", [gateway_rules("eth1", ["80", "443"], 8080, False),
                                   host_rules(["80", "443"], 8080, 0, False)])  # fmt: skip
def test_nft_accepts_them(rules: str) -> None:
    done = subprocess.run(["nft", "-c", "-f", "-"], input=rules, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(("args", "error"), [(["--gateway", "eth1", "--ports", "80,x"], "--ports"),
                                              (["--gateway", "a b"], "not an interface name"),
                                              (["--host", "--user", "no-such-user-x"], "no such user")])  # fmt: skip
def test_bad_input_is_refused_with_the_reason(
    args: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["transparent-rules", *args]) == 2
    assert error in capsys.readouterr().err
