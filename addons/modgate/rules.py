"""The policy half of rules.yaml: which hosts, modules and versions may pass, where each
module is fetched from, and why a refusal happened. Pure: no I/O, no mitmproxy.

    mode: enforce | audit      audit lets everything through and records would-be refusals
    hosts:                     other hosts clients may reach through the proxy
    routes:                    per module path pattern, the upstream chain that serves it
    modules:                   ordered allow/deny rules; the first that matches decides
    default:                   what happens to a module no rule matches
    owners:                    module path prefixes private to some teams

A decision is a value: `Allow(rule)` or `Deny(rule, reason)`.

Teams (modgate.teams): a module or host rule with `teams: [a, b]` applies only to
requests of those teams; others pass it by as if it were not there. An `owners` entry
makes its module paths private to its teams: for anyone else (no team included) every
request for them is refused before any other rule, cache or upstream is asked, with
403 or 404 (`answer:`), whether the module exists or not. Owner patterns match the path
case-insensitively: `!`-escaped upper case (`Team-A`) names another module to go, but
an upstream that folds case (a VCS host, a file system) would serve the same bytes.

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
    "Owner",
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

TOP_LEVEL_KEYS = frozenset(
    {"mode", "hosts", "routes", "modules", "default", "unrestricted", "owners"}
)
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
    teams: frozenset[str] | None = None  # None: applies to every request

    def applies_to(self, team: str | None) -> bool:
        return self.teams is None or team in self.teams

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
    teams: frozenset[str] | None = None  # None: applies to every request

    def matches(self, host: str, port: int, team: str | None = None) -> bool:
        if self.teams is not None and team not in self.teams:
            return False
        if self.port is not None and port != self.port:
            return False
        try:
            return path_match(self.host, host.lower())
        except ValueError:
            return False

    @property
    def label(self) -> str:
        return self.where


@dataclass(frozen=True)
class Owner:
    """An entry of `owners` ("owners[1]"): module paths only `teams` may see. `status` is
    what everyone else gets: 403 (refused, says so) or 404 (as if there were nothing)."""

    where: str
    patterns: tuple[Pattern, ...]
    teams: frozenset[str]
    status: int = 403

    def matches_path(self, module: str) -> bool:
        lowered = module.lower()
        return any(p.matches(lowered) for p in self.patterns)

    @property
    def label(self) -> str:
        return self.where


OWNED_REASON = "private to another team"

Rule = ModuleRule | HostRule | Owner


@dataclass(frozen=True)
class Allow:
    rule: Rule


@dataclass(frozen=True)
class Deny:
    rule: Rule
    reason: str

    @property
    def status(self) -> int:
        """The HTTP status a refusal is answered with."""
        return self.rule.status if isinstance(self.rule, Owner) else 403


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
    owners: tuple[Owner, ...] = ()
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
            "owners": bool(self.owners),
        }
        return [name for name, present in kinds.items() if present]

    def _chain(self, team: str | None) -> tuple[ModuleRule, ...]:
        return (*(r for r in self.modules if r.applies_to(team)), self.default)

    def owned(self, module: str, team: str | None) -> Deny | None:
        """The refusal of a module path private to teams `team` is not one of (any team
        when `team` is None), or None. Asked first, for every kind of request (list,
        @latest, .info, .mod, .zip, checksum-database lookups)."""
        if not self.owners:
            return None
        key = ("owned", module, team)
        if key in self._memo:
            return cast(Deny | None, self._memo[key])
        found = None
        for owner in self.owners:
            if owner.matches_path(module):
                if team in owner.teams:
                    break
                found = Deny(owner, OWNED_REASON)
                break
        return cast(Deny | None, self._remember(key, found))

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
        self,
        module: str,
        version: str,
        retractions: tuple[Retraction, ...] = (),
        team: str | None = None,
    ) -> Decision:
        """The first rule matching module@version decides (after `owned`). `retractions`
        are those of the module's latest go.mod (needed only when `needs_retractions`);
        `team` is the requester's (None: unauthenticated, or no teams)."""
        key = ("decide", module, version, retractions, team)
        if (known := self._memo.get(key)) is not None:
            return cast(Decision, known)
        decision = self.owned(module, team) or self._decide(module, version, retractions, team)
        return cast(Decision, self._remember(key, decision))

    def _decide(
        self, module: str, version: str, retractions: tuple[Retraction, ...], team: str | None
    ) -> Decision:
        for rule in self._chain(team):
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

    def decide_path(self, module: str, team: str | None = None) -> Decision:
        """For requests that name no version: denied by `owned`, or by an unconditional
        deny rule (or a deny default) that no allow rule before it can pre-empt."""
        key = ("path", module, team)
        if (known := self._memo.get(key)) is not None:
            return cast(Decision, known)
        decision = self.owned(module, team) or self._decide_path(module, team)
        return cast(Decision, self._remember(key, decision))

    def _decide_path(self, module: str, team: str | None) -> Decision:
        for rule in self._chain(team):
            if not rule.matches_path(module):
                continue
            if rule.action is Action.ALLOW:
                return Allow(rule)
            if not rule.conditional:
                return Deny(rule, rule.reason)
        raise AssertionError("the default rule matches everything")

    def may_deny_versions(self, module: str, team: str | None = None) -> bool:
        """Whether some version of `module` could be denied (so lists need filtering)."""
        for rule in self._chain(team):
            if rule.matches_path(module):
                return rule.action is Action.DENY or rule.conditional
        return False

    def needs_retractions(self, module: str, team: str | None = None) -> bool:
        for rule in self._chain(team):
            if rule.matches_path(module):
                if Refuse.RETRACTED in rule.refuse:
                    return True
                if not rule.conditional:
                    return False
        return False

    def allowed_versions(
        self,
        module: str,
        versions: Iterable[str],
        retractions: tuple[Retraction, ...] = (),
        team: str | None = None,
    ) -> list[str]:
        """The valid versions of `versions` this module may be downloaded at, in order."""
        return [
            v
            for v in versions
            if semver.is_valid(v) and isinstance(self.decide(module, v, retractions, team), Allow)
        ]

    def decide_host(
        self, host: str, port: int, gated: Collection[tuple[str, int]], team: str | None = None
    ) -> Decision:
        """May a client reach host:port through the proxy? Hosts modgate gates (module
        proxies, checksum databases) always; with no `hosts` section, every host; a
        `hosts.allow` entry with `teams` only for them."""
        if (host.lower(), port) in gated:
            return Allow(GATED)
        if self.hosts is None:
            return Allow(ANY_HOST)
        for rule in (*self.hosts.vcs, *self.hosts.allow, self.hosts.default):
            if rule.matches(host, port, team):
                if rule.action is Action.ALLOW:
                    return Allow(rule)
                return Deny(rule, rule.reason or HOSTS_REASON)
        raise AssertionError("the hosts default matches every host")

    def vcs_host(self, host: str, port: int, team: str | None = None) -> HostRule | None:
        """The `hosts.vcs` entry `host:port` matches, if any."""
        if self.hosts is None:
            return None
        return next((rule for rule in self.hosts.vcs if rule.matches(host, port, team)), None)


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


def parse_rules(top: dict[str, _Node], teams: frozenset[str] | None = None) -> Rules:
    """The policy keys of a parsed rules.yaml top level (see `TOP_LEVEL_KEYS`). `teams`:
    the team names `teams:` defines (None: no such section), which rules may name."""
    known = _TeamNames(teams)
    mode = top["mode"].convert(_mode) if "mode" in top else Mode.ENFORCE
    hosts = _hosts(top["hosts"], known) if "hosts" in top else None
    routes = tuple(_route(n) for n in top["routes"].sequence()) if "routes" in top else ()
    modules: tuple[ModuleRule, ...] = ()
    if "modules" in top:
        modules = tuple(_module_rule(n, known) for n in top["modules"].sequence())
    owners = tuple(_owner(n, known) for n in top["owners"].sequence()) if "owners" in top else ()
    parsed = Rules(mode, hosts, routes, modules, owners=owners)
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


@dataclass(frozen=True)
class _TeamNames:
    names: frozenset[str] | None

    def parse(self, node: _Node) -> frozenset[str]:
        """A rule's `teams: [a, b]` (or one name), each defined in `teams:`."""
        nodes = node.sequence() if isinstance(node.node, yaml.SequenceNode) else [node]
        if not nodes:
            raise node.error("expected a team name or a list of them, not an empty list")
        out = set()
        for n in nodes:
            name = str(n.value())
            if self.names is None:
                raise n.error(
                    f"team {name!r}: no team is defined; add a 'teams:' section (or a file "
                    "it names) before rules name teams"
                )
            if name not in self.names:
                raise n.error(
                    f"no team {name!r} in teams: (defined: {', '.join(sorted(self.names))})"
                )
            out.add(name)
        return frozenset(out)


def _owner(node: _Node, known: _TeamNames) -> Owner:
    fields = node.mapping({"modules", "teams", "answer"}, required={"modules", "teams"})
    patterns = []
    for n in (
        fields["modules"].sequence()
        if isinstance(fields["modules"].node, yaml.SequenceNode)
        else [fields["modules"]]
    ):
        text = _raw(n, "a module path pattern such as *.corp.example/team-a")
        if text.startswith("re:"):
            raise n.error("owners match paths case-insensitively: write a glob, not 're:'")
        try:
            patterns.append(compile_pattern(text.lower()))
        except ValueError as e:
            raise n.error(str(e)) from e
    status = 403
    if "answer" in fields:
        status = fields["answer"].convert(_answer)
    return Owner(node.where, tuple(patterns), known.parse(fields["teams"]), status)


def _answer(value: object) -> int:
    if value not in (403, 404):
        raise ValueError(
            f"{value!r}: others get 403 (refused, and go says so) or 404 (as if absent)"
        )
    return value if isinstance(value, int) else 403


def _module_rule(node: _Node, known: _TeamNames) -> ModuleRule:
    fields = node.mapping({"allow", "deny", "versions", "refuse", "name", "reason", "teams"})
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
    teams = known.parse(fields["teams"]) if "teams" in fields else None
    return ModuleRule(node.where, action, patterns, versions, refuse, name, reason, teams)


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


def _hosts(node: _Node, known: _TeamNames) -> HostRules:
    fields = node.mapping({"allow", "default", "reason", "vcs"})
    allow: tuple[HostRule, ...] = ()
    if "allow" in fields:
        allow = tuple(_host_rule(n, known) for n in fields["allow"].sequence())
    vcs = tuple(_host_rule(n, known) for n in fields["vcs"].sequence()) if "vcs" in fields else ()
    action = fields["default"].convert(_action) if "default" in fields else Action.DENY
    reason = fields["reason"].convert(_text("a reason", MAX_REASON)) if "reason" in fields else ""
    default = HostRule("hosts.default", action, reason=reason or HOSTS_REASON)
    return HostRules(allow, default, vcs)


def _host_rule(node: _Node, known: _TeamNames) -> HostRule:
    """A host (glob, host:port), or {host: ..., teams: [...]} for some teams only."""
    if isinstance(node.node, yaml.MappingNode):
        fields = node.mapping({"host", "teams"}, required={"host", "teams"})
        rule = _host_rule(fields["host"], known)
        return replace(rule, where=node.where, teams=known.parse(fields["teams"]))
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
