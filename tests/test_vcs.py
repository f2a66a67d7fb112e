"""vcs.py: which module a direct fetch is for; and the interception pattern of a
`hosts.vcs` glob, which must catch every host the glob's rule matches."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modgate.addons.settings import glob_regex
from modgate.rules import Action, HostRule
from modgate.vcs import VcsRequest, classify


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/corp/lib?go-get=1", VcsRequest("discovery", "git.example/corp/lib")),
        ("GET", "/corp/lib/sub/pkg?go-get=1", VcsRequest("discovery", "git.example/corp/lib/sub/pkg")),
        ("GET", "/corp/lib.git/info/refs?service=git-upload-pack", VcsRequest("vcs-refs", "git.example/corp/lib")),
        ("GET", "/corp/lib/info/refs?service=git-upload-pack", VcsRequest("vcs-refs", "git.example/corp/lib")),
        ("POST", "/corp/lib.git/git-upload-pack", VcsRequest("vcs-fetch", "git.example/corp/lib")),
        ("POST", "/corp//lib.git/git-upload-pack", VcsRequest("vcs-fetch", "git.example/corp/lib")),
        ("POST", "/corp/%6cib.git/git-upload-pack", VcsRequest("vcs-fetch", "git.example/corp/lib")),
        ("GET", "/corp/lib.git/info/refs?service=git-receive-pack", VcsRequest("vcs-other", "git.example/corp/lib")),
        ("POST", "/corp/lib.git/git-receive-pack", VcsRequest("vcs-other", "git.example/corp/lib")),
        ("GET", "/?go-get=1", VcsRequest("discovery", "")),
    ],
)  # fmt: skip
def test_classify(method: str, path: str, expected: VcsRequest) -> None:
    assert classify(method, "GIT.example.", path) == expected


@pytest.mark.parametrize(
    "path",
    ["/corp/lib/../secret.git/info/refs?service=git-upload-pack",
     "/corp/%2e%2e/secret.git/git-upload-pack", "/corp/./secret?go-get=1",
     "/corp\\secret.git/git-upload-pack"],
)  # fmt: skip
def test_paths_a_server_may_resolve_elsewhere_are_refused(path: str) -> None:
    assert classify("POST" if path.endswith("pack") else "GET", "git.example", path).error


_label = st.text(alphabet="abcxyz-0", min_size=1, max_size=5)
_host = st.lists(_label, min_size=1, max_size=4).map(".".join)
_glob_part = st.one_of(_label, st.just("*"), st.just("?"), st.just("[a-c]"), st.just("[^x]"))
_glob = st.lists(st.lists(_glob_part, min_size=1, max_size=3).map("".join), min_size=1,
                 max_size=4).map(".".join)  # fmt: skip


@given(glob=_glob, host=_host, port=st.sampled_from([None, 443, 8443]),
       asked=st.sampled_from([443, 8443]))  # fmt: skip
def test_the_interception_pattern_matches_what_the_rule_matches(
    glob: str, host: str, port: int | None, asked: int
) -> None:
    rule = HostRule("hosts.vcs[0]", Action.ALLOW, glob, port)
    intercepted = re.search(glob_regex(glob, port), f"{host}:{asked}", re.IGNORECASE) is not None
    assert intercepted == rule.matches(host, asked)
