"""The CA bundle a client trusts: the system's CAs plus modgate's own CA.

On Linux, Go's SSL_CERT_FILE *replaces* its root store, so a file holding modgate's CA
alone would break every host modgate does not intercept; this bundle holds both.
"""

from __future__ import annotations

import os
from pathlib import Path

from modgate.errors import ModgateError

BUNDLE = "ca-bundle.pem"
CA_CERT = "mitmproxy-ca-cert.pem"

# Where distributions keep their CA bundle (Debian/Ubuntu, Fedora/RHEL, openSUSE, Alpine/macOS).
SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
)


def ensure_ca(confdir: Path) -> Path:
    """modgate's CA certificate, created (as mitmproxy does on first start) if missing."""
    from mitmproxy import certs
    from mitmproxy.options import CONF_BASENAME, KEY_SIZE

    confdir.mkdir(parents=True, exist_ok=True)
    certs.CertStore.from_store(confdir, CONF_BASENAME, KEY_SIZE)
    return confdir / CA_CERT


def system_bundle(confdir: Path) -> Path:
    """The system's CA bundle: $SSL_CERT_FILE (unless it is our own bundle), the
    distribution's file, or certifi's as the last resort."""
    ours = (confdir / BUNDLE).resolve()
    env = os.environ.get("SSL_CERT_FILE")
    candidates = [env] if env else []
    candidates += SYSTEM_BUNDLES
    for c in candidates:
        p = Path(c)
        if p.is_file() and p.resolve() != ours:
            return p
    try:
        import certifi
    except ImportError as e:
        raise ModgateError(
            "found no system CA bundle; set SSL_CERT_FILE to your system's CA file"
        ) from e
    return Path(certifi.where())


def write_bundle(confdir: Path) -> Path:
    """Write CONFDIR/ca-bundle.pem (system CAs + modgate's CA) when it changed."""
    ca = ensure_ca(confdir)
    content = system_bundle(confdir).read_bytes().rstrip(b"\n") + b"\n\n" + ca.read_bytes()
    out = confdir / BUNDLE
    if not out.is_file() or out.read_bytes() != content:
        tmp = out.with_suffix(".tmp")
        tmp.write_bytes(content)
        tmp.replace(out)
    return out
