"""The policy half of rules.yaml: which hosts, modules and versions may pass, where each
module is fetched from, and why a refusal happened. Pure: no I/O, no mitmproxy.

    mode: enforce | audit      audit lets everything through and records would-be refusals
    hosts:                     other hosts clients may reach through the proxy
    routes:                    per module path pattern, the upstream chain that serves it
    modules:                   ordered allow/deny rules; the first that matches decides
    default:                   what happens to a module no rule matches

A decision is a value: `Allow(rule)` or `Deny(rule, reason)`.

    rules.decide("example.com/lib", "v1.3.0")
    -> Deny(rule=ModuleRule(where='modules[4]', ...), reason='...')

Module rules match a module path with `modgate.patterns` (GOPRIVATE-style prefix
globs, `**`, `re:`, `=exact`) and a version with `modgate.versionspec`. A rule
matches when its pattern matches the path and, if it has `versions`, the range holds
the version; then an `allow` rule allows, unless the version is of a kind it
`refuse`s (pseudo-versions, pre-releases, +incompatible, versions its own module
retracts), and a `deny` rule denies. Requests that name no version (`@v/list`,
`@latest`) are decided by path: denied only when no version could be allowed.

Parsing works on the YAML nodes of `modgate.config`, so every error names the file,
line, rule and field: `rules.yaml:14: modules[3].versions: '^v1.x' is not a version range: ...`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, assert_never, cast

import yaml

from modgate import semver
from modgate.config import Chain, _boolean, _Node, parse_chain
from modgate.gomod import Retraction, retracted_by
from modgate.patterns import Pattern, compile_pattern, path_match
from modgate.versionspec import VersionSpec, parse_spec

__all__ = [
    "Action",
    "Allow",
    "Decision",
    "Deny",
    "HostRule",
    "HostRules",
    "Mode",
    "ModuleRule",
    "Refuse",
    "Route",
    "Rules",
    "latest_of",
    "parse_rules",
    "refusal_message",
]

TOP_LEVEL_KEYS = frozenset({"mode", "hosts", "routes", "modules", "default", "unrestricted"})
# go prints at most 648 bytes of an error body; the rest of the line needs room too.
MAX_REASON = 300
MAX_NAME = 60


class Mode(enum.StrEnum):
    ENFORCE = "enforce"
    AUDIT = "audit"


class Action(enum.StrEnum):
    ALLOW = "allow"
    DENY = "deny"


class Refuse(enum.StrEnum):
    """Kinds of version an `allow` rule can still refuse."""

    PSEUDO = "pseudo"
    PRERELEASE = "prerelease"
    INCOMPATIBLE = "incompatible"
    RETRACTED = "retracted"


_REFUSALS = {
    Refuse.PSEUDO: "pseudo-versions are refused",
    Refuse.PRERELEASE: "pre-releases are refused",
    Refuse.INCOMPATIBLE: "+incompatible versions are refused",
}


@dataclass(frozen=True)
class ModuleRule:
    """One entry of `modules` (`where` is "modules[4]"), or the default ("default",
    no patterns: every module)."""

    where: str
    action: Action
    patterns: tuple[Pattern, ...] = ()
    versions: VersionSpec | None = None
    refuse: frozenset[Refuse] = frozenset()
    name: str = ""
    reason: str = ""

    def matches_path(self, module: str) -> bool:
        return not self.patterns or any(p.matches(module) for p in self.patterns)

    def matches(self, module: str, version: str) -> bool:
        if not self.matches_path(module):
            return False
        return self.versions is None or self.versions.matches(version)

    @property
    def conditional(self) -> bool:
        """Whether it may decide some versions of a module it matches and not others."""
        return self.versions is not None or bool(self.refuse)

    def refusal(self, version: str, retractions: tuple[Retraction, ...]) -> str:
        """Why this allow rule still refuses `version`, or "" if it does not."""
        kinds = [
            k
            for k, applies in (
                (Refuse.PSEUDO, semver.is_pseudo(version)),
                (
                    Refuse.PRERELEASE,
                    bool(semver.prerelease(version)) and not semver.is_pseudo(version),
                ),
                (Refuse.INCOMPATIBLE, semver.is_incompatible(version)),
            )
            if applies and k in self.refuse
        ]
        if kinds:
            return _with_reason(_REFUSALS[kinds[0]], self.reason)
        retraction = retracted_by(version, retractions) if Refuse.RETRACTED in self.refuse else None
        if retraction is not None:
            why = f": {retraction.rationale}" if retraction.rationale else ""
            return _with_reason(f"retracted by its author ({retraction}{why})", self.reason)
        return ""

    @property
    def label(self) -> str:
        return f'{self.where} "{self.name}"' if self.name else self.where


@dataclass(frozen=True)
class HostRule:
    """An entry of `hosts.allow` ("hosts.allow[2]"), the hosts default ("hosts.default"),
    a host modgate gates ("proxies"), or any host when there is no `hosts` section."""

    where: str
    action: Action
    host: str = "*"  # a path.Match glob on the host name
    port: int | None = None  # None: any port
    reason: str = ""

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and port != self.port:
            return False
        try:
            return path_match(self.host, host.lower())
        except ValueError:
            return False

    @property
    def label(self) -> str:
        return self.where


Rule = ModuleRule | HostRule


@dataclass(frozen=True)
class Allow:
    rule: Rule


@dataclass(frozen=True)
class Deny:
    rule: Rule
    reason: str


Decision = Allow | Deny


@dataclass(frozen=True)
class HostRules:
    allow: tuple[HostRule, ...] = ()
    default: HostRule = HostRule("hosts.default", Action.DENY)
    # Version-control hosts go fetches `direct` from: allowed, and intercepted so that
    # each discovery and git request is traced and held to the module rules (vcs.py).
    vcs: tuple[HostRule, ...] = ()


@dataclass(frozen=True)
class Route:
    where: str
    patterns: tuple[Pattern, ...]
    chain: Chain


ANY_HOST = HostRule("hosts", Action.ALLOW)
GATED = HostRule("proxies", Action.ALLOW)
DEFAULT_REASON = "no rule in modules allows it"
MEMO_MAX = 65536  # decisions remembered per Rules (see Rules._memo)
HOSTS_REASON = "only module proxies and the hosts in rules.yaml's hosts.allow may be reached"


@dataclass(frozen=True)
class Rules:
    mode: Mode = Mode.ENFORCE
    hosts: HostRules | None = None  # None: every host may be reached
    routes: tuple[Route, ...] = ()
    modules: tuple[ModuleRule, ...] = ()
    default: ModuleRule = field(
        default_factory=lambda: ModuleRule("default", Action.ALLOW, reason=DEFAULT_REASON)
    )
    # `unrestricted: true`: no host or module rule, on purpose. A hot reload refuses a file
    # that drops every rule in force without it (modgate.rulesfile.may_replace).
    unrestricted: bool = False
    # What was decided, per question, for as long as these rules are in force (a reload
    # builds new Rules): a build asks about the same modules again and again, and each
    # answer walks every rule's patterns. Bounded: emptied when full.
    _memo: dict[tuple[object, ...], object] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def _remember(self, key: tuple[object, ...], value: Any) -> Any:
        if len(self._memo) >= MEMO_MAX:
            self._memo.clear()
        self._memo[key] = value
        return value

    @property
    def restrictions(self) -> list[str]:
        """What in the policy limits or steers traffic: hosts, modules, routes, a deny
        default."""
        kinds = {
            "hosts": self.hosts is not None,
            "modules": bool(self.modules),
            "routes": bool(self.routes),
            "default: deny": self.default.action is Action.DENY,
        }
        return [name for name, present in kinds.items() if present]

    @property
    def _chain(self) -> tuple[ModuleRule, ...]:
        return (*self.modules, self.default)

    def route(self, module: str) -> Chain | None:
        """The upstream chain of the first route whose patterns match `module`."""
        if not self.routes:
            return None
        key = ("route", module)
        if key in self._memo:
            return cast(Chain | None, self._memo[key])
        return cast(Chain | None, self._remember(key, self._route(module)))

    def _route(self, module: str) -> Chain | None:
        for route in self.routes:
            if any(p.matches(module) for p in route.patterns):
                return route.chain
        return None

    def decide(
        self, module: str, version: str, retractions: tuple[Retraction, ...] = ()
    ) -> Decision:
        """The first rule matching module@version decides. `retractions` are those of the
        module's latest go.mod (needed only when `needs_retractions(module)`)."""
        key = ("decide", module, version, retractions)
        if (known := self._memo.get(key)) is not None:
            return cast(Decision, known)
        return cast(Decision, self._remember(key, self._decide(module, version, retractions)))

    def _decide(self, module: str, version: str, retractions: tuple[Retraction, ...]) -> Decision:
        for rule in self._chain:
            if not rule.matches(module, version):
                continue
            match rule.action:
                case Action.DENY:
                    return Deny(rule, rule.reason)
                case Action.ALLOW:
                    refused = rule.refusal(version, retractions)
                    return Deny(rule, refused) if refused else Allow(rule)
                case _:
                    assert_never(rule.action)
        raise AssertionError("the default rule matches everything")

    def decide_path(self, module: str) -> Decision:
        """For requests that name no version: denied only by an unconditional deny rule
        (or a deny default) that no allow rule before it can pre-empt."""
        key = ("path", module)
        if (known := self._memo.get(key)) is not None:
            return cast(Decision, known)
        return cast(Decision, self._remember(key, self._decide_path(module)))

    def _decide_path(self, module: str) -> Decision:
        for rule in self._chain:
            if not rule.matches_path(module):
                continue
            if rule.action is Action.ALLOW:
                return Allow(rule)
            if not rule.conditional:
                return Deny(rule, rule.reason)
        raise AssertionError("the default rule matches everything")

    def may_deny_versions(self, module: str) -> bool:
        """Whether some version of `module` could be denied (so lists need filtering)."""
        for rule in self._chain:
            if rule.matches_path(module):
                return rule.action is Action.DENY or rule.conditional
        return False

    def needs_retractions(self, module: str) -> bool:
        for rule in self._chain:
            if rule.matches_path(module):
                if Refuse.RETRACTED in rule.refuse:
                    return True
                if not rule.conditional:
                    return False
        return False

    def allowed_versions(
        self, module: str, versions: Iterable[str], retractions: tuple[Retraction, ...] = ()
    ) -> list[str]:
        """The valid versions of `versions` this module may be downloaded at, in order."""
        return [
            v
            for v in versions
            if semver.is_valid(v) and isinstance(self.decide(module, v, retractions), Allow)
        ]

    def decide_host(self, host: str, port: int, gated: Collection[tuple[str, int]]) -> Decision:
        """May a client reach host:port through the proxy? Hosts modgate gates (module
        proxies, checksum databases) always; with no `hosts` section, every host."""
        if (host.lower(), port) in gated:
            return Allow(GATED)
        if self.hosts is None:
            return Allow(ANY_HOST)
        for rule in (*self.hosts.vcs, *self.hosts.allow, self.hosts.default):
            if rule.matches(host, port):
                if rule.action is Action.ALLOW:
                    return Allow(rule)
                return Deny(rule, rule.reason or HOSTS_REASON)
        raise AssertionError("the hosts default matches every host")

    def vcs_host(self, host: str, port: int) -> HostRule | None:
        """The `hosts.vcs` entry `host:port` matches, if any."""
        if self.hosts is None:
            return None
        return next((rule for rule in self.hosts.vcs if rule.matches(host, port)), None)


def latest_of(versions: Iterable[str]) -> str | None:
    """The version the go command's `@latest` query picks from a list ("Version
    queries"): the highest release, else the highest pre-release; compatible versions
    before +incompatible ones."""
    ordered = semver.sort_versions(v for v in versions if semver.is_valid(v))
    if not ordered:
        return None
    # max keeps the first of equals: reversed, that is the highest version of the best rank.
    return max(
        reversed(ordered),
        key=lambda v: (not semver.prerelease(v), not semver.is_incompatible(v)),
    )


def refusal_message(what: str, deny: Deny) -> str:
    """The line a refused client sees: `modgate: refused M@V: rule modules[4] "name": why`."""
    return f"modgate: refused {what}: rule {deny.rule.label}: {deny.reason}"


def _with_reason(what: str, reason: str) -> str:
    return f"{what}: {reason}" if reason else what


# --- parsing -------------------------------------------------------------------------


def parse_rules(top: dict[str, _Node]) -> Rules:
    """The policy keys of a parsed rules.yaml top level (see `TOP_LEVEL_KEYS`)."""
    mode = top["mode"].convert(_mode) if "mode" in top else Mode.ENFORCE
    hosts = _hosts(top["hosts"]) if "hosts" in top else None
    routes = tuple(_route(n) for n in top["routes"].sequence()) if "routes" in top else ()
    modules = tuple(_module_rule(n) for n in top["modules"].sequence()) if "modules" in top else ()
    parsed = Rules(mode, hosts, routes, modules)
    if "default" in top:
        parsed = replace(parsed, default=_default(top["default"]))
    if "unrestricted" in top and top["unrestricted"].convert(_boolean):
        # Routes only steer: what the marker vouches for is that nothing is refused.
        refusing = [r for r in parsed.restrictions if r != "routes"]
        if refusing:
            raise top["unrestricted"].error(
                "true says there are no host or module rules, but the file has "
                f"{', '.join(refusing)}: remove one or the other"
            )
        parsed = replace(parsed, unrestricted=True)
    return parsed


def _mode(value: object) -> Mode:
    try:
        return Mode(str(value))
    except ValueError:
        raise ValueError(f"{value!r} is not a mode (expected enforce or audit)") from None


def _action(value: object) -> Action:
    try:
        return Action(str(value))
    except ValueError:
        raise ValueError(f"{value!r} is not an action (expected allow or deny)") from None


def _module_rule(node: _Node) -> ModuleRule:
    fields = node.mapping({"allow", "deny", "versions", "refuse", "name", "reason"})
    given = [a for a in Action if a.value in fields]
    if len(given) != 1:
        raise node.error(
            "a rule has exactly one of 'allow: <module path pattern>' or 'deny: <pattern>'"
        )
    action = given[0]
    patterns = _patterns(fields[action.value])
    versions = _versions(fields["versions"]) if "versions" in fields else None
    refuse = _refuse(fields["refuse"]) if "refuse" in fields else frozenset()
    if refuse and action is Action.DENY:
        raise fields["refuse"].error(
            "a deny rule refuses every version it matches: put 'refuse' on an allow rule, "
            "or narrow the deny rule with 'versions'"
        )
    name = fields["name"].convert(_text("a rule name", MAX_NAME)) if "name" in fields else ""
    reason = fields["reason"].convert(_text("a reason", MAX_REASON)) if "reason" in fields else ""
    if action is Action.DENY and not reason:
        raise node.error("a deny rule needs a 'reason': it is what the refused developer reads")
    return ModuleRule(node.where, action, patterns, versions, refuse, name, reason)


def _default(node: _Node) -> ModuleRule:
    if isinstance(node.node, yaml.ScalarNode):
        return ModuleRule("default", node.convert(_action), reason=DEFAULT_REASON)
    fields = node.mapping({"action", "reason"}, required={"action"})
    action = fields["action"].convert(_action)
    reason = fields["reason"].convert(_text("a reason", MAX_REASON)) if "reason" in fields else ""
    return ModuleRule("default", action, reason=reason or DEFAULT_REASON)


def _patterns(node: _Node) -> tuple[Pattern, ...]:
    """One module path pattern, or a list of them (any may match)."""
    nodes = node.sequence() if isinstance(node.node, yaml.SequenceNode) else [node]
    if not nodes:
        raise node.error("expected a module path pattern or a list of them, not an empty list")
    return tuple(_pattern(n) for n in nodes)


def _pattern(node: _Node) -> Pattern:
    expected = "a module path pattern such as github.com/org or *.corp.example"
    return _parsed(node, expected, compile_pattern)


_PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float")}


def _raw(node: _Node, expected: str) -> str:
    """A scalar's text exactly as written (YAML would read `versions: 1.10` as 1.1),
    refusing what YAML took for something else (`!=1.2` is a tag: quote it)."""
    n = node.node
    if not isinstance(n, yaml.ScalarNode) or n.tag not in _PLAIN_TAGS or not n.value.strip():
        shown = f"{n.tag.rsplit(':', 1)[-1]} {n.value!r}" if isinstance(n, yaml.ScalarNode) else ""
        raise node.error(
            f"expected {expected}{f', got {shown}' if shown else ''} "
            "(write it in quotes when it starts with one of > ! * & ~ | [ {)"
        )
    return str(n.value)


def _versions(node: _Node) -> VersionSpec:
    return _parsed(node, 'a version range such as ">=1.2.0 <2.0.0"', parse_spec)


def _parsed[T](node: _Node, expected: str, parse: Callable[[str], T]) -> T:
    """`_raw`, then `parse`: as `_Node.convert`, on the text exactly as written."""
    text = _raw(node, expected)
    try:
        return parse(text)
    except ValueError as e:
        raise node.error(str(e)) from e


def _refuse(node: _Node) -> frozenset[Refuse]:
    nodes = node.sequence() if isinstance(node.node, yaml.SequenceNode) else [node]
    return frozenset(n.convert(_refusal) for n in nodes)


def _refusal(value: object) -> Refuse:
    try:
        return Refuse(str(value))
    except ValueError:
        kinds = ", ".join(sorted(r.value for r in Refuse))
        raise ValueError(
            f"{value!r} is not something a rule refuses (expected one of: {kinds})"
        ) from None


def _text(what: str, limit: int) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"expected {what} (text)")
        text = " ".join(value.split())
        if len(text) > limit:
            raise ValueError(
                f"{what} is {len(text)} characters; keep it under {limit} (go shows one short line)"
            )
        return text

    return parse


def _route(node: _Node) -> Route:
    fields = node.mapping({"modules", "upstream"}, required={"modules", "upstream"})
    return Route(node.where, _patterns(fields["modules"]), fields["upstream"].convert(parse_chain))


def _hosts(node: _Node) -> HostRules:
    fields = node.mapping({"allow", "default", "reason", "vcs"})
    allow = tuple(_host_rule(n) for n in fields["allow"].sequence()) if "allow" in fields else ()
    vcs = tuple(_host_rule(n) for n in fields["vcs"].sequence()) if "vcs" in fields else ()
    action = fields["default"].convert(_action) if "default" in fields else Action.DENY
    reason = fields["reason"].convert(_text("a reason", MAX_REASON)) if "reason" in fields else ""
    default = HostRule("hosts.default", action, reason=reason or HOSTS_REASON)
    return HostRules(allow, default, vcs)


def _host_rule(node: _Node) -> HostRule:
    text = _raw(node, "a host name, a glob such as *.corp.example, or host:port")
    if "/" in text or any(c.isspace() for c in text):
        raise node.error(f"{text!r} is not a host name (write github.com, not a URL)")
    host, port = text.lower(), None
    name, colon, digits = text.rpartition(":")
    if colon and ":" not in name:
        if not digits.isdigit() or not 0 < int(digits) < 65536:
            raise node.error(f"{text!r}: {digits!r} is not a port number")
        host, port = name.lower(), int(digits)
    if not host:
        raise node.error(f"{text!r} is not a host name (write github.com, not a URL)")
    try:
        path_match(host, "")
    except ValueError:
        raise node.error(f"{text!r} is not a host glob: check '[...]' classes") from None
    return HostRule(node.where, Action.ALLOW, host, port)
