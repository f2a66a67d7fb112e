"""The audit log: an append-only, hash-chained record of the decisions that matter
(artifacts served, refusals, rules reloads, admin actions, start and stop), whose edits,
deletions, insertions, reorderings and truncations `modgate audit verify` detects.

    chain.py   one entry as bytes, its hash, and `verify` over a whole log (pure)
    keys.py    the Ed25519 key that signs checkpoints and the head (confdir, 0600)
    log.py     appending to the file: one flock for every process, the torn tail
    writer.py  the thread that batches entries off the answer's path, and its journal

Errors: AuditError (a ModgateError) for a log or key modgate cannot use; what verify
finds is a value (chain.Report), not an exception.
"""

from modgate.errors import ModgateError


class AuditError(ModgateError):
    """The audit log or its key cannot be read or written."""
