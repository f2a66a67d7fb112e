"""The exception tree of modgate, converted only at the edges.

    ModgateError
     ├── ConfigError        rules.yaml (or an option) is invalid: names file, line, field
     ├── ProtocolError      a request is not a valid GOPROXY/sumdb request (answered 400/404)
     ├── UpstreamError      no upstream gave a usable answer (answered 502)
     ├── CacheError         the cache directory cannot be opened or written
     ├── ObjectStoreError   the shared S3 tier cannot be reached or used (objectstore.py)
     ├── ZipError           a module zip breaks the module zip rules (modgate.dirhash)
     ├── GoModError         a go.mod or go.sum line cannot be read (modgate.gomod)
     ├── PatternError       a module path pattern or glob is malformed (modgate.patterns)
     ├── VersionRangeError  a version range is malformed (modgate.versionspec)
     ├── PseudoVersionError a pseudo-version is not one (modgate.semver)
     └── SumdbError         a checksum-database note, record, tree or tile is bad (modgate.sumdb)

Addons turn these into HTTP answers the go command prints (text/plain, one line),
the CLI into `modgate: message` and an exit status.
"""


class ModgateError(Exception):
    """Base of every error modgate raises on purpose."""


class ConfigError(ModgateError):
    """A configuration file or option is invalid."""


class ProtocolError(ModgateError):
    """A request does not follow the GOPROXY or checksum-database protocol.

    `status` is the HTTP status to answer with.
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class UpstreamError(ModgateError):
    """No upstream in a chain produced a usable answer."""


class CacheError(ModgateError):
    """The cache cannot be opened, read or written."""


class ObjectStoreError(ModgateError):
    """The shared object store (S3) cannot be reached, read or written: replicas go on
    with their local tier and the upstream."""
