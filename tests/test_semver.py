"""Tests for modgate.semver against the answers of golang.org/x/mod itself.

The tables below were printed by a throwaway Go program built against
golang.org/x/mod v0.43.0 (the version vendored in Go 1.26): semver.IsValid,
Canonical, Major, MajorMinor, Prerelease, Build, Compare, Max and Sort, and
module.CanonicalVersion, IsPseudoVersion and PseudoVersionBase/Time/Rev, each
called on every input. Rows are Go's output pasted verbatim; the tests never run Go.
"""

import re
from datetime import UTC, datetime

import pytest

from modgate import semver

SEMVER_CASES = [
    # (v, is_valid, canonical, major, major_minor, prerelease, build)
    ("", False, "", "", "", "", ""),
    ("bad", False, "", "", "", "", ""),
    ("v", False, "", "", "", "", ""),
    ("1.2.3", False, "", "", "", "", ""),
    ("V1.2.3", False, "", "", "", "", ""),
    ("v1", True, "v1.0.0", "v1", "v1.0", "", ""),
    ("v1.0", True, "v1.0.0", "v1", "v1.0", "", ""),
    ("v1.2", True, "v1.2.0", "v1", "v1.2", "", ""),
    ("v1.0.0", True, "v1.0.0", "v1", "v1.0", "", ""),
    ("v1.2.0", True, "v1.2.0", "v1", "v1.2", "", ""),
    ("v1.2.3", True, "v1.2.3", "v1", "v1.2", "", ""),
    ("v01", False, "", "", "", "", ""),
    ("v1.01", False, "", "", "", "", ""),
    ("v1.2.03", False, "", "", "", "", ""),
    ("v0", True, "v0.0.0", "v0", "v0.0", "", ""),
    ("v0.0.0", True, "v0.0.0", "v0", "v0.0", "", ""),
    ("v1.", False, "", "", "", "", ""),
    ("v1.2.", False, "", "", "", "", ""),
    ("v.1", False, "", "", "", "", ""),
    ("v-1", False, "", "", "", "", ""),
    ("v1.2.3.4", False, "", "", "", "", ""),
    ("v1-alpha.beta.gamma", False, "", "", "", "", ""),
    ("v1-pre", False, "", "", "", "", ""),
    ("v1+meta", False, "", "", "", "", ""),
    ("v1-pre+meta", False, "", "", "", "", ""),
    ("v1.2-pre", False, "", "", "", "", ""),
    ("v1.2+meta", False, "", "", "", "", ""),
    ("v1.2-pre+meta", False, "", "", "", "", ""),
    ("v1.0.0-alpha", True, "v1.0.0-alpha", "v1", "v1.0", "-alpha", ""),
    ("v1.0.0-alpha.1", True, "v1.0.0-alpha.1", "v1", "v1.0", "-alpha.1", ""),
    ("v1.0.0-alpha.beta", True, "v1.0.0-alpha.beta", "v1", "v1.0", "-alpha.beta", ""),
    ("v1.0.0-beta", True, "v1.0.0-beta", "v1", "v1.0", "-beta", ""),
    ("v1.0.0-beta.2", True, "v1.0.0-beta.2", "v1", "v1.0", "-beta.2", ""),
    ("v1.0.0-beta.11", True, "v1.0.0-beta.11", "v1", "v1.0", "-beta.11", ""),
    ("v1.0.0-rc.1", True, "v1.0.0-rc.1", "v1", "v1.0", "-rc.1", ""),
    ("v1.2.3-456", True, "v1.2.3-456", "v1", "v1.2", "-456", ""),
    ("v1.2.3-456.789", True, "v1.2.3-456.789", "v1", "v1.2", "-456.789", ""),
    ("v1.2.3-456-789", True, "v1.2.3-456-789", "v1", "v1.2", "-456-789", ""),
    ("v1.2.3-456a", True, "v1.2.3-456a", "v1", "v1.2", "-456a", ""),
    ("v1.2.3-pre", True, "v1.2.3-pre", "v1", "v1.2", "-pre", ""),
    ("v1.2.3-pre+meta", True, "v1.2.3-pre", "v1", "v1.2", "-pre", "+meta"),
    ("v1.2.3-pre.1", True, "v1.2.3-pre.1", "v1", "v1.2", "-pre.1", ""),
    ("v1.2.3-zzz", True, "v1.2.3-zzz", "v1", "v1.2", "-zzz", ""),
    ("v1.2.3+meta", True, "v1.2.3", "v1", "v1.2", "", "+meta"),
    ("v1.2.3+meta-pre", True, "v1.2.3", "v1", "v1.2", "", "+meta-pre"),
    ("v1.2.3+meta-pre.sha.256a", True, "v1.2.3", "v1", "v1.2", "", "+meta-pre.sha.256a"),
    ("v1.2.3-01", False, "", "", "", "", ""),
    ("v1.2.3-0", True, "v1.2.3-0", "v1", "v1.2", "-0", ""),
    ("v1.2.3-00a", True, "v1.2.3-00a", "v1", "v1.2", "-00a", ""),
    ("v1.2.3-a.00", False, "", "", "", "", ""),
    ("v1.2.3-a.0", True, "v1.2.3-a.0", "v1", "v1.2", "-a.0", ""),
    ("v1.2.3-", False, "", "", "", "", ""),
    ("v1.2.3-.", False, "", "", "", "", ""),
    ("v1.2.3-a..b", False, "", "", "", "", ""),
    ("v1.2.3-a.", False, "", "", "", "", ""),
    ("v1.2.3+", False, "", "", "", "", ""),
    ("v1.2.3+a..b", False, "", "", "", "", ""),
    ("v1.2.3+01", True, "v1.2.3", "v1", "v1.2", "", "+01"),
    ("v1.2.3-a_b", False, "", "", "", "", ""),
    ("v1.2.3 ", False, "", "", "", "", ""),
    (" v1.2.3", False, "", "", "", "", ""),
    ("v1.2.3\n", False, "", "", "", "", ""),
    ("v1.2.3-alpha+", False, "", "", "", "", ""),
    ("v1.2.3--", True, "v1.2.3--", "v1", "v1.2", "--", ""),
    ("v1.2.3-x.7.z.92", True, "v1.2.3-x.7.z.92", "v1", "v1.2", "-x.7.z.92", ""),
    ("v1.2.3-ü", False, "", "", "", "", ""),
    (
        "v99999999999999999999.0.0",
        True,
        "v99999999999999999999.0.0",
        "v99999999999999999999",
        "v99999999999999999999.0",
        "",
        "",
    ),
    ("v1.2.3+incompatible", True, "v1.2.3", "v1", "v1.2", "", "+incompatible"),
    ("v2.0.0+incompatible", True, "v2.0.0", "v2", "v2.0", "", "+incompatible"),
    ("v2.0.0+incompatible.1", True, "v2.0.0", "v2", "v2.0", "", "+incompatible.1"),
    ("v2.0.0+Incompatible", True, "v2.0.0", "v2", "v2.0", "", "+Incompatible"),
    ("v2.0.0-rc.1+incompatible", True, "v2.0.0-rc.1", "v2", "v2.0", "-rc.1", "+incompatible"),
    ("v2+incompatible", False, "", "", "", "", ""),
    (
        "v0.0.0-20191109021931-daa7c04131f5",
        True,
        "v0.0.0-20191109021931-daa7c04131f5",
        "v0",
        "v0.0",
        "-20191109021931-daa7c04131f5",
        "",
    ),
    (
        "v1.0.0-20191109021931-daa7c04131f5",
        True,
        "v1.0.0-20191109021931-daa7c04131f5",
        "v1",
        "v1.0",
        "-20191109021931-daa7c04131f5",
        "",
    ),
    (
        "v2.0.0-20191109021931-daa7c04131f5",
        True,
        "v2.0.0-20191109021931-daa7c04131f5",
        "v2",
        "v2.0",
        "-20191109021931-daa7c04131f5",
        "",
    ),
    (
        "v1.2.4-0.20191109021931-daa7c04131f5",
        True,
        "v1.2.4-0.20191109021931-daa7c04131f5",
        "v1",
        "v1.2",
        "-0.20191109021931-daa7c04131f5",
        "",
    ),
    (
        "v1.2.3-pre.0.20191109021931-daa7c04131f5",
        True,
        "v1.2.3-pre.0.20191109021931-daa7c04131f5",
        "v1",
        "v1.2",
        "-pre.0.20191109021931-daa7c04131f5",
        "",
    ),
    (
        "v2.0.1-0.20191109021931-daa7c04131f5+incompatible",
        True,
        "v2.0.1-0.20191109021931-daa7c04131f5",
        "v2",
        "v2.0",
        "-0.20191109021931-daa7c04131f5",
        "+incompatible",
    ),
    (
        "v2.0.0-pre.0.20191109021931-daa7c04131f5+incompatible",
        True,
        "v2.0.0-pre.0.20191109021931-daa7c04131f5",
        "v2",
        "v2.0",
        "-pre.0.20191109021931-daa7c04131f5",
        "+incompatible",
    ),
    (
        "v2.0.0-20191109021931-daa7c04131f5+incompatible",
        True,
        "v2.0.0-20191109021931-daa7c04131f5",
        "v2",
        "v2.0",
        "-20191109021931-daa7c04131f5",
        "+incompatible",
    ),
    (
        "v1.0.0-0.20191109021931-daa7c04131f5",
        True,
        "v1.0.0-0.20191109021931-daa7c04131f5",
        "v1",
        "v1.0",
        "-0.20191109021931-daa7c04131f5",
        "",
    ),
    (
        "v1.2.10-0.20191109021931-daa7c04131f5",
        True,
        "v1.2.10-0.20191109021931-daa7c04131f5",
        "v1",
        "v1.2",
        "-0.20191109021931-daa7c04131f5",
        "",
    ),
    (
        "v1.2.100-0.20191109021931-daa7c04131f5",
        True,
        "v1.2.100-0.20191109021931-daa7c04131f5",
        "v1",
        "v1.2",
        "-0.20191109021931-daa7c04131f5",
        "",
    ),
    (
        "v1.2.3-0.20191309021931-daa7c04131f5",
        True,
        "v1.2.3-0.20191309021931-daa7c04131f5",
        "v1",
        "v1.2",
        "-0.20191309021931-daa7c04131f5",
        "",
    ),
    (
        "v1.2.3-0.20190229021931-daa7c04131f5",
        True,
        "v1.2.3-0.20190229021931-daa7c04131f5",
        "v1",
        "v1.2",
        "-0.20190229021931-daa7c04131f5",
        "",
    ),
    (
        "v1.2.3-0.20200229235959-daa7c04131f5",
        True,
        "v1.2.3-0.20200229235959-daa7c04131f5",
        "v1",
        "v1.2",
        "-0.20200229235959-daa7c04131f5",
        "",
    ),
    (
        "v1.2.3-0.20200101240000-daa7c04131f5",
        True,
        "v1.2.3-0.20200101240000-daa7c04131f5",
        "v1",
        "v1.2",
        "-0.20200101240000-daa7c04131f5",
        "",
    ),
    (
        "v1.2.3-0.2019110902193-daa7c04131f5",
        True,
        "v1.2.3-0.2019110902193-daa7c04131f5",
        "v1",
        "v1.2",
        "-0.2019110902193-daa7c04131f5",
        "",
    ),
    (
        "v1.2.3-pre.0.20191109021931-daa7c04131f5+build.1",
        True,
        "v1.2.3-pre.0.20191109021931-daa7c04131f5",
        "v1",
        "v1.2",
        "-pre.0.20191109021931-daa7c04131f5",
        "+build.1",
    ),
    (
        "v1.2.3-20191109021931-daa7c04131f5",
        True,
        "v1.2.3-20191109021931-daa7c04131f5",
        "v1",
        "v1.2",
        "-20191109021931-daa7c04131f5",
        "",
    ),
    (
        "v0.0.0-00010101000000-000000000000",
        True,
        "v0.0.0-00010101000000-000000000000",
        "v0",
        "v0.0",
        "-00010101000000-000000000000",
        "",
    ),
    (
        "v1.2.3-a.b.0.20191109021931-daa7c04131f5",
        True,
        "v1.2.3-a.b.0.20191109021931-daa7c04131f5",
        "v1",
        "v1.2",
        "-a.b.0.20191109021931-daa7c04131f5",
        "",
    ),
    (
        "v1.2.3-0.20191109021931-ABCdef",
        True,
        "v1.2.3-0.20191109021931-ABCdef",
        "v1",
        "v1.2",
        "-0.20191109021931-ABCdef",
        "",
    ),
    (
        "v1.2.3-0.20191109021931-abc-def",
        True,
        "v1.2.3-0.20191109021931-abc-def",
        "v1",
        "v1.2",
        "-0.20191109021931-abc-def",
        "",
    ),
    (
        "v1.2.3-0.0.20191109021931-daa7c04131f5",
        True,
        "v1.2.3-0.0.20191109021931-daa7c04131f5",
        "v1",
        "v1.2",
        "-0.0.20191109021931-daa7c04131f5",
        "",
    ),
    (
        "v1.2.3-rc.1.0.20191109021931-daa7c04131f5",
        True,
        "v1.2.3-rc.1.0.20191109021931-daa7c04131f5",
        "v1",
        "v1.2",
        "-rc.1.0.20191109021931-daa7c04131f5",
        "",
    ),
    (
        "v1.2.3-1.0.20191109021931-daa7c04131f5",
        True,
        "v1.2.3-1.0.20191109021931-daa7c04131f5",
        "v1",
        "v1.2",
        "-1.0.20191109021931-daa7c04131f5",
        "",
    ),
    (
        "v0.0.0-20191109021931-daa7c04131f5+meta",
        True,
        "v0.0.0-20191109021931-daa7c04131f5",
        "v0",
        "v0.0",
        "-20191109021931-daa7c04131f5",
        "+meta",
    ),
    (
        "v0.0.0-00000101000000-000000000000",
        True,
        "v0.0.0-00000101000000-000000000000",
        "v0",
        "v0.0",
        "-00000101000000-000000000000",
        "",
    ),
    (
        "v1.2.3-0.20191109021960-abc",
        True,
        "v1.2.3-0.20191109021960-abc",
        "v1",
        "v1.2",
        "-0.20191109021960-abc",
        "",
    ),
    (
        "v1.2.3-0.20191100021931-abc",
        True,
        "v1.2.3-0.20191100021931-abc",
        "v1",
        "v1.2",
        "-0.20191100021931-abc",
        "",
    ),
    (
        "v1.2.3-9.20191109021931-abc",
        True,
        "v1.2.3-9.20191109021931-abc",
        "v1",
        "v1.2",
        "-9.20191109021931-abc",
        "",
    ),
]

MODULE_CASES = [
    # (v, canonical_module_version, is_pseudo)
    ("", "", False),
    ("bad", "", False),
    ("v", "", False),
    ("1.2.3", "", False),
    ("V1.2.3", "", False),
    ("v1", "v1.0.0", False),
    ("v1.0", "v1.0.0", False),
    ("v1.2", "v1.2.0", False),
    ("v1.0.0", "v1.0.0", False),
    ("v1.2.0", "v1.2.0", False),
    ("v1.2.3", "v1.2.3", False),
    ("v01", "", False),
    ("v1.01", "", False),
    ("v1.2.03", "", False),
    ("v0", "v0.0.0", False),
    ("v0.0.0", "v0.0.0", False),
    ("v1.", "", False),
    ("v1.2.", "", False),
    ("v.1", "", False),
    ("v-1", "", False),
    ("v1.2.3.4", "", False),
    ("v1-alpha.beta.gamma", "", False),
    ("v1-pre", "", False),
    ("v1+meta", "", False),
    ("v1-pre+meta", "", False),
    ("v1.2-pre", "", False),
    ("v1.2+meta", "", False),
    ("v1.2-pre+meta", "", False),
    ("v1.0.0-alpha", "v1.0.0-alpha", False),
    ("v1.0.0-alpha.1", "v1.0.0-alpha.1", False),
    ("v1.0.0-alpha.beta", "v1.0.0-alpha.beta", False),
    ("v1.0.0-beta", "v1.0.0-beta", False),
    ("v1.0.0-beta.2", "v1.0.0-beta.2", False),
    ("v1.0.0-beta.11", "v1.0.0-beta.11", False),
    ("v1.0.0-rc.1", "v1.0.0-rc.1", False),
    ("v1.2.3-456", "v1.2.3-456", False),
    ("v1.2.3-456.789", "v1.2.3-456.789", False),
    ("v1.2.3-456-789", "v1.2.3-456-789", False),
    ("v1.2.3-456a", "v1.2.3-456a", False),
    ("v1.2.3-pre", "v1.2.3-pre", False),
    ("v1.2.3-pre+meta", "v1.2.3-pre", False),
    ("v1.2.3-pre.1", "v1.2.3-pre.1", False),
    ("v1.2.3-zzz", "v1.2.3-zzz", False),
    ("v1.2.3+meta", "v1.2.3", False),
    ("v1.2.3+meta-pre", "v1.2.3", False),
    ("v1.2.3+meta-pre.sha.256a", "v1.2.3", False),
    ("v1.2.3-01", "", False),
    ("v1.2.3-0", "v1.2.3-0", False),
    ("v1.2.3-00a", "v1.2.3-00a", False),
    ("v1.2.3-a.00", "", False),
    ("v1.2.3-a.0", "v1.2.3-a.0", False),
    ("v1.2.3-", "", False),
    ("v1.2.3-.", "", False),
    ("v1.2.3-a..b", "", False),
    ("v1.2.3-a.", "", False),
    ("v1.2.3+", "", False),
    ("v1.2.3+a..b", "", False),
    ("v1.2.3+01", "v1.2.3", False),
    ("v1.2.3-a_b", "", False),
    ("v1.2.3 ", "", False),
    (" v1.2.3", "", False),
    ("v1.2.3\n", "", False),
    ("v1.2.3-alpha+", "", False),
    ("v1.2.3--", "v1.2.3--", False),
    ("v1.2.3-x.7.z.92", "v1.2.3-x.7.z.92", False),
    ("v1.2.3-ü", "", False),
    ("v99999999999999999999.0.0", "v99999999999999999999.0.0", False),
    ("v1.2.3+incompatible", "v1.2.3+incompatible", False),
    ("v2.0.0+incompatible", "v2.0.0+incompatible", False),
    ("v2.0.0+incompatible.1", "v2.0.0", False),
    ("v2.0.0+Incompatible", "v2.0.0", False),
    ("v2.0.0-rc.1+incompatible", "v2.0.0-rc.1+incompatible", False),
    ("v2+incompatible", "", False),
    ("v0.0.0-20191109021931-daa7c04131f5", "v0.0.0-20191109021931-daa7c04131f5", True),
    ("v1.0.0-20191109021931-daa7c04131f5", "v1.0.0-20191109021931-daa7c04131f5", True),
    ("v2.0.0-20191109021931-daa7c04131f5", "v2.0.0-20191109021931-daa7c04131f5", True),
    ("v1.2.4-0.20191109021931-daa7c04131f5", "v1.2.4-0.20191109021931-daa7c04131f5", True),
    ("v1.2.3-pre.0.20191109021931-daa7c04131f5", "v1.2.3-pre.0.20191109021931-daa7c04131f5", True),
    (
        "v2.0.1-0.20191109021931-daa7c04131f5+incompatible",
        "v2.0.1-0.20191109021931-daa7c04131f5+incompatible",
        True,
    ),
    (
        "v2.0.0-pre.0.20191109021931-daa7c04131f5+incompatible",
        "v2.0.0-pre.0.20191109021931-daa7c04131f5+incompatible",
        True,
    ),
    (
        "v2.0.0-20191109021931-daa7c04131f5+incompatible",
        "v2.0.0-20191109021931-daa7c04131f5+incompatible",
        True,
    ),
    ("v1.0.0-0.20191109021931-daa7c04131f5", "v1.0.0-0.20191109021931-daa7c04131f5", True),
    ("v1.2.10-0.20191109021931-daa7c04131f5", "v1.2.10-0.20191109021931-daa7c04131f5", True),
    ("v1.2.100-0.20191109021931-daa7c04131f5", "v1.2.100-0.20191109021931-daa7c04131f5", True),
    ("v1.2.3-0.20191309021931-daa7c04131f5", "v1.2.3-0.20191309021931-daa7c04131f5", True),
    ("v1.2.3-0.20190229021931-daa7c04131f5", "v1.2.3-0.20190229021931-daa7c04131f5", True),
    ("v1.2.3-0.20200229235959-daa7c04131f5", "v1.2.3-0.20200229235959-daa7c04131f5", True),
    ("v1.2.3-0.20200101240000-daa7c04131f5", "v1.2.3-0.20200101240000-daa7c04131f5", True),
    ("v1.2.3-0.2019110902193-daa7c04131f5", "v1.2.3-0.2019110902193-daa7c04131f5", False),
    (
        "v1.2.3-pre.0.20191109021931-daa7c04131f5+build.1",
        "v1.2.3-pre.0.20191109021931-daa7c04131f5",
        True,
    ),
    ("v1.2.3-20191109021931-daa7c04131f5", "v1.2.3-20191109021931-daa7c04131f5", False),
    ("v0.0.0-00010101000000-000000000000", "v0.0.0-00010101000000-000000000000", True),
    ("v1.2.3-a.b.0.20191109021931-daa7c04131f5", "v1.2.3-a.b.0.20191109021931-daa7c04131f5", True),
    ("v1.2.3-0.20191109021931-ABCdef", "v1.2.3-0.20191109021931-ABCdef", True),
    ("v1.2.3-0.20191109021931-abc-def", "v1.2.3-0.20191109021931-abc-def", False),
    ("v1.2.3-0.0.20191109021931-daa7c04131f5", "v1.2.3-0.0.20191109021931-daa7c04131f5", True),
    (
        "v1.2.3-rc.1.0.20191109021931-daa7c04131f5",
        "v1.2.3-rc.1.0.20191109021931-daa7c04131f5",
        True,
    ),
    ("v1.2.3-1.0.20191109021931-daa7c04131f5", "v1.2.3-1.0.20191109021931-daa7c04131f5", True),
    ("v0.0.0-20191109021931-daa7c04131f5+meta", "v0.0.0-20191109021931-daa7c04131f5", True),
    ("v0.0.0-00000101000000-000000000000", "v0.0.0-00000101000000-000000000000", True),
    ("v1.2.3-0.20191109021960-abc", "v1.2.3-0.20191109021960-abc", True),
    ("v1.2.3-0.20191100021931-abc", "v1.2.3-0.20191100021931-abc", True),
    ("v1.2.3-9.20191109021931-abc", "v1.2.3-9.20191109021931-abc", False),
]

PSEUDO_CASES = [
    # (v, pseudo_base, pseudo_time, pseudo_rev)
    (
        "v0.0.0-20191109021931-daa7c04131f5",
        "",
        datetime(2019, 11, 9, 2, 19, 31, tzinfo=UTC),
        "daa7c04131f5",
    ),
    (
        "v1.0.0-20191109021931-daa7c04131f5",
        "",
        datetime(2019, 11, 9, 2, 19, 31, tzinfo=UTC),
        "daa7c04131f5",
    ),
    (
        "v2.0.0-20191109021931-daa7c04131f5",
        "",
        datetime(2019, 11, 9, 2, 19, 31, tzinfo=UTC),
        "daa7c04131f5",
    ),
    (
        "v1.2.4-0.20191109021931-daa7c04131f5",
        "v1.2.3",
        datetime(2019, 11, 9, 2, 19, 31, tzinfo=UTC),
        "daa7c04131f5",
    ),
    (
        "v1.2.3-pre.0.20191109021931-daa7c04131f5",
        "v1.2.3-pre",
        datetime(2019, 11, 9, 2, 19, 31, tzinfo=UTC),
        "daa7c04131f5",
    ),
    (
        "v2.0.1-0.20191109021931-daa7c04131f5+incompatible",
        "v2.0.0+incompatible",
        datetime(2019, 11, 9, 2, 19, 31, tzinfo=UTC),
        "daa7c04131f5",
    ),
    (
        "v2.0.0-pre.0.20191109021931-daa7c04131f5+incompatible",
        "v2.0.0-pre+incompatible",
        datetime(2019, 11, 9, 2, 19, 31, tzinfo=UTC),
        "daa7c04131f5",
    ),
    (
        "v1.2.10-0.20191109021931-daa7c04131f5",
        "v1.2.9",
        datetime(2019, 11, 9, 2, 19, 31, tzinfo=UTC),
        "daa7c04131f5",
    ),
    (
        "v1.2.100-0.20191109021931-daa7c04131f5",
        "v1.2.99",
        datetime(2019, 11, 9, 2, 19, 31, tzinfo=UTC),
        "daa7c04131f5",
    ),
    (
        "v1.2.3-0.20200229235959-daa7c04131f5",
        "v1.2.2",
        datetime(2020, 2, 29, 23, 59, 59, tzinfo=UTC),
        "daa7c04131f5",
    ),
    (
        "v1.2.3-pre.0.20191109021931-daa7c04131f5+build.1",
        "v1.2.3-pre+build.1",
        datetime(2019, 11, 9, 2, 19, 31, tzinfo=UTC),
        "daa7c04131f5",
    ),
    (
        "v0.0.0-00010101000000-000000000000",
        "",
        datetime(1, 1, 1, 0, 0, 0, tzinfo=UTC),
        "000000000000",
    ),
    (
        "v1.2.3-a.b.0.20191109021931-daa7c04131f5",
        "v1.2.3-a.b",
        datetime(2019, 11, 9, 2, 19, 31, tzinfo=UTC),
        "daa7c04131f5",
    ),
    (
        "v1.2.3-0.20191109021931-ABCdef",
        "v1.2.2",
        datetime(2019, 11, 9, 2, 19, 31, tzinfo=UTC),
        "ABCdef",
    ),
    (
        "v1.2.3-0.0.20191109021931-daa7c04131f5",
        "v1.2.3-0",
        datetime(2019, 11, 9, 2, 19, 31, tzinfo=UTC),
        "daa7c04131f5",
    ),
    (
        "v1.2.3-rc.1.0.20191109021931-daa7c04131f5",
        "v1.2.3-rc.1",
        datetime(2019, 11, 9, 2, 19, 31, tzinfo=UTC),
        "daa7c04131f5",
    ),
    (
        "v1.2.3-1.0.20191109021931-daa7c04131f5",
        "v1.2.3-1",
        datetime(2019, 11, 9, 2, 19, 31, tzinfo=UTC),
        "daa7c04131f5",
    ),
]

PSEUDO_ERRORS = [
    # (v, function, problem): Go's error reads 'pseudo-version "<v>" invalid: <problem>'
    ("", "pseudo_base", "syntax error"),
    ("bad", "pseudo_time", "syntax error"),
    ("v1.2.3-ü", "pseudo_rev", "syntax error"),
    (
        "v2.0.0-20191109021931-daa7c04131f5+incompatible",
        "pseudo_base",
        'lacks base version, but has build metadata "+incompatible"',
    ),
    (
        "v1.0.0-0.20191109021931-daa7c04131f5",
        "pseudo_base",
        "version before v1.0.0 would have negative patch number",
    ),
    ("v1.2.3-0.20191309021931-daa7c04131f5", "pseudo_time", 'malformed time "20191309021931"'),
    ("v1.2.3-0.20190229021931-daa7c04131f5", "pseudo_time", 'malformed time "20190229021931"'),
    ("v1.2.3-0.20200101240000-daa7c04131f5", "pseudo_time", 'malformed time "20200101240000"'),
    (
        "v0.0.0-20191109021931-daa7c04131f5+meta",
        "pseudo_base",
        'lacks base version, but has build metadata "+meta"',
    ),
    ("v1.2.3-0.20191109021960-abc", "pseudo_time", 'malformed time "20191109021960"'),
    ("v1.2.3-0.20191100021931-abc", "pseudo_time", 'malformed time "20191100021931"'),
    ("v1.2.3-456-789", "pseudo_rev", "syntax error"),
    ("v1.2.3--", "pseudo_rev", "syntax error"),
    ("v1.2.3-0.2019110902193-daa7c04131f5", "pseudo_rev", "syntax error"),
    ("v1.2.3-20191109021931-daa7c04131f5", "pseudo_rev", "syntax error"),
    ("v1.2.3-0.20191109021931-abc-def", "pseudo_rev", "syntax error"),
    ("v1.2.3-9.20191109021931-abc", "pseudo_rev", "syntax error"),
]

PSEUDO_ERROR_QUOTING = [
    # (v, function, Go's whole message), where %q escapes the version
    ("v1.2.3\n", "pseudo_base", 'pseudo-version "v1.2.3\\n" invalid: syntax error'),
]

COMPARE_CASES = [
    # (a, b, compare(a, b), max_version(a, b))
    ("v1", "v1.0.0", 0, "v1.0.0"),
    ("v1.2", "v1.2.0", 0, "v1.2.0"),
    ("v1.2.3+meta", "v1.2.3", 0, "v1.2.3"),
    ("v1.2.3+a", "v1.2.3+b", 0, "v1.2.3"),
    ("v2.0.0+incompatible", "v2.0.0", 0, "v2.0.0"),
    ("v1.0.0-alpha", "v1.0.0-alpha.1", -1, "v1.0.0-alpha.1"),
    ("v1.0.0-alpha.1", "v1.0.0-alpha.beta", -1, "v1.0.0-alpha.beta"),
    ("v1.0.0-alpha.beta", "v1.0.0-beta", -1, "v1.0.0-beta"),
    ("v1.0.0-beta", "v1.0.0-beta.2", -1, "v1.0.0-beta.2"),
    ("v1.0.0-beta.2", "v1.0.0-beta.11", -1, "v1.0.0-beta.11"),
    ("v1.0.0-beta.11", "v1.0.0-rc.1", -1, "v1.0.0-rc.1"),
    ("v1.0.0-rc.1", "v1.0.0", -1, "v1.0.0"),
    ("v1.9.0", "v1.10.0", -1, "v1.10.0"),
    ("v1.2.3-9", "v1.2.3-10", -1, "v1.2.3-10"),
    ("v1.2.3-10", "v1.2.3-9a", -1, "v1.2.3-9a"),
    ("v1.2.3-a", "v1.2.3-B", 1, "v1.2.3-a"),
    ("v1.2.3-a-b", "v1.2.3-a.b", 1, "v1.2.3-a-b"),
    ("bad", "v0.0.0", -1, "v0.0.0"),
    ("bad", "worse", 0, ""),
    ("", "bad", 0, ""),
    ("v1.2.3", "bad", 1, "v1.2.3"),
    ("v0.0.0-20191109021931-daa7c04131f5", "v0.0.0", -1, "v0.0.0"),
    ("v1.2.4-0.20191109021931-daa7c04131f5", "v1.2.3", 1, "v1.2.4-0.20191109021931-daa7c04131f5"),
    ("v1.2.4-0.20191109021931-daa7c04131f5", "v1.2.4-rc.1", -1, "v1.2.4-rc.1"),
    ("v1.2.4-0.20191109021931-daa7c04131f5", "v1.2.4-0", 1, "v1.2.4-0.20191109021931-daa7c04131f5"),
    (
        "v1.2.3-pre.0.20191109021931-daa7c04131f5",
        "v1.2.3-pre",
        1,
        "v1.2.3-pre.0.20191109021931-daa7c04131f5",
    ),
    ("v1.2.3-pre.0.20191109021931-daa7c04131f5", "v1.2.3-pre.1", -1, "v1.2.3-pre.1"),
    ("v99999999999999999999.0.0", "v99999999999999999998.0.0", 1, "v99999999999999999999.0.0"),
    (
        "v1.2.3-99999999999999999999",
        "v1.2.3-99999999999999999998",
        1,
        "v1.2.3-99999999999999999999",
    ),
    ("v1.2", "v1.2.0-rc.1", 1, "v1.2.0"),
    ("v2", "v1.99.99", 1, "v2.0.0"),
    ("v1.2.3-0.a", "v1.2.3-0.0", 1, "v1.2.3-0.a"),
    ("v1.2.3-x", "v1.2.3-x.0", -1, "v1.2.3-x.0"),
]

SHUFFLED = [
    "v1.2.3",
    "v2.0.0+incompatible",
    "v1.0.0-rc.1",
    "v1.2",
    "v1.2.4-0.20191109021931-daa7c04131f5",
    "bad",
    "v1.0.0",
    "v1.0.0-alpha.beta",
    "v1",
    "v1.2.3+meta",
    "v1.2.0",
    "v0.0.0-20191109021931-daa7c04131f5",
    "v1.0.0-beta.11",
    "v1.2.3-pre.0.20191109021931-daa7c04131f5",
    "v1.0.0-alpha",
    "v2.0.1-0.20191109021931-daa7c04131f5+incompatible",
    "v1.2.3-pre",
    "v0.0.0",
    "v1.0.0-beta.2",
    "v1.0.0-alpha.1",
    "v2.0.0",
    "v1.2.3+build.2",
    "v1.0.0-beta",
    "v1.2.4",
    "v1.2.3-pre.1",
    "",
    "v1.0",
    "v2.0.0-20191109021931-daa7c04131f5",
    "v1.2.4-0.20200101000000-abcdefabcdef",
    "v0.0.0-20180101000000-abcdefabcdef",
    "v10.0.0",
    "v2.0.0-rc.1",
    "v1.10.0",
    "v1.9.0",
    "v2.0.0-pre.0.20191109021931-daa7c04131f5+incompatible",
    "v1.2.3-pre+meta",
    "1.2.3",
]
GO_SORTED = [
    "",
    "1.2.3",
    "bad",
    "v0.0.0-20180101000000-abcdefabcdef",
    "v0.0.0-20191109021931-daa7c04131f5",
    "v0.0.0",
    "v1.0.0-alpha",
    "v1.0.0-alpha.1",
    "v1.0.0-alpha.beta",
    "v1.0.0-beta",
    "v1.0.0-beta.2",
    "v1.0.0-beta.11",
    "v1.0.0-rc.1",
    "v1",
    "v1.0",
    "v1.0.0",
    "v1.2",
    "v1.2.0",
    "v1.2.3-pre",
    "v1.2.3-pre+meta",
    "v1.2.3-pre.0.20191109021931-daa7c04131f5",
    "v1.2.3-pre.1",
    "v1.2.3",
    "v1.2.3+build.2",
    "v1.2.3+meta",
    "v1.2.4-0.20191109021931-daa7c04131f5",
    "v1.2.4-0.20200101000000-abcdefabcdef",
    "v1.2.4",
    "v1.9.0",
    "v1.10.0",
    "v2.0.0-20191109021931-daa7c04131f5",
    "v2.0.0-pre.0.20191109021931-daa7c04131f5+incompatible",
    "v2.0.0-rc.1",
    "v2.0.0",
    "v2.0.0+incompatible",
    "v2.0.1-0.20191109021931-daa7c04131f5+incompatible",
    "v10.0.0",
]


@pytest.mark.parametrize(
    ("v", "valid", "canonical", "major", "major_minor", "prerelease", "build"), SEMVER_CASES
)
def test_parts_match_go(
    v: str, valid: bool, canonical: str, major: str, major_minor: str, prerelease: str, build: str
) -> None:
    assert semver.is_valid(v) is valid
    assert semver.canonical(v) == canonical
    assert semver.major(v) == major
    assert semver.major_minor(v) == major_minor
    assert semver.prerelease(v) == prerelease
    assert semver.build(v) == build
    assert (semver.parse(v) is not None) is valid


@pytest.mark.parametrize(("v", "module_canonical", "pseudo"), MODULE_CASES)
def test_module_version_matches_go(v: str, module_canonical: str, pseudo: bool) -> None:
    assert semver.canonical_module_version(v) == module_canonical
    assert semver.is_pseudo(v) is pseudo


@pytest.mark.parametrize(("v", "base", "time", "rev"), PSEUDO_CASES)
def test_pseudo_parts_match_go(v: str, base: str, time: datetime, rev: str) -> None:
    assert semver.pseudo_base(v) == base
    assert semver.pseudo_time(v) == time
    assert semver.pseudo_rev(v) == rev


@pytest.mark.parametrize(("v", "function", "problem"), PSEUDO_ERRORS)
def test_pseudo_errors_match_go(v: str, function: str, problem: str) -> None:
    message = f'pseudo-version "{v}" invalid: {problem}'
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        getattr(semver, function)(v)


@pytest.mark.parametrize(("v", "function", "message"), PSEUDO_ERROR_QUOTING)
def test_pseudo_error_quotes_like_go(v: str, function: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        getattr(semver, function)(v)


def test_pseudo_time_in_year_zero_is_refused() -> None:
    # Go returns 0000-01-01T00:00:00Z here; datetime has no year 0.
    with pytest.raises(ValueError, match=r'"00000101000000" is in year 0'):
        semver.pseudo_time("v0.0.0-00000101000000-000000000000")
    assert semver.pseudo_rev("v0.0.0-00000101000000-000000000000") == "000000000000"


@pytest.mark.parametrize(("a", "b", "cmp", "maximum"), COMPARE_CASES)
def test_compare_and_max_match_go(a: str, b: str, cmp: int, maximum: str) -> None:
    assert semver.compare(a, b) == cmp
    assert semver.compare(b, a) == -cmp
    assert semver.max_version(a, b) == maximum


def test_sort_matches_go() -> None:
    assert semver.sort_versions(SHUFFLED) == GO_SORTED


def test_sort_does_not_depend_on_input_order() -> None:
    assert semver.sort_versions(reversed(GO_SORTED)) == GO_SORTED
    assert semver.sort_versions(sorted(SHUFFLED)) == GO_SORTED


@pytest.mark.parametrize(
    ("v", "canonical", "module_canonical"),
    [
        ("v1.2.3", True, True),
        ("v1.2.3-pre", True, True),
        ("v1.2", False, False),
        ("v1", False, False),
        ("v1.2.3+meta", False, False),
        ("v2.0.0+incompatible", False, True),
        ("v2.0.0-rc.1+incompatible", False, True),
        ("v2.0.1-0.20191109021931-daa7c04131f5+incompatible", False, True),
        ("v2.0.0+incompatible.1", False, False),
        ("v0.0.0-20191109021931-daa7c04131f5", True, True),
        ("", False, False),
        ("bad", False, False),
        ("1.2.3", False, False),
    ],
)
def test_is_canonical(v: str, canonical: bool, module_canonical: bool) -> None:
    assert semver.is_canonical(v) is canonical
    assert semver.is_canonical_module_version(v) is module_canonical


@pytest.mark.parametrize(
    ("v", "incompatible"),
    [
        ("v2.0.0+incompatible", True),
        ("v2.0.1-0.20191109021931-daa7c04131f5+incompatible", True),
        ("v2.0.0", False),
        ("v2.0.0+incompatible.1", False),
        ("v2.0.0+Incompatible", False),
        ("v2+incompatible", False),  # invalid: a shorthand takes no build metadata
        ("+incompatible", False),
    ],
)
def test_is_incompatible(v: str, incompatible: bool) -> None:
    assert semver.is_incompatible(v) is incompatible


def test_parse_exposes_go_parts() -> None:
    assert semver.parse("v1.2.3-rc.1+meta") == semver.Parsed(
        "1", "2", "3", prerelease="-rc.1", build="+meta"
    )
    assert semver.parse("v1") == semver.Parsed("1", "0", "0", short=".0.0")
    assert semver.parse("v1.2") == semver.Parsed("1", "2", "0", short=".0")
    assert semver.parse("v1.2.3-") is None


def test_compare_orders_incompatible_as_its_major() -> None:
    assert semver.compare("v2.0.0+incompatible", "v1.99.0") == 1
    assert semver.compare("v2.0.0+incompatible", "v2.0.1") == -1
