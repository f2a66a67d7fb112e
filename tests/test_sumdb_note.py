"""Tests for modgate.sumdb.note: keys, signing and opening notes as golang.org/x/mod/sumdb/note.

Expected values marked "Go" were printed by a throwaway Go program calling
golang.org/x/mod/sumdb/note (v0.43.0) on the same inputs; Ed25519 is deterministic,
so signatures must match byte for byte.
"""

from __future__ import annotations

import base64
import re

import pytest

from modgate.sumdb.note import (
    BadSignatureError,
    KeyFormatError,
    Note,
    NoteError,
    Signature,
    SumdbError,
    UnknownVerifierError,
    Verifier,
    decode_base64,
    generate_key,
    is_valid_name,
    key_hash,
    open_note,
    parse_signer_key,
    parse_verifier_key,
    sign,
    verifier_key,
)

# Go: (name, signer key, verifier key); seeds are SHA-256("modgate seed <i>").
KEYS = [
    (
        "sumdb.modgate.test",
        "PRIVATE+KEY+sumdb.modgate.test+396eab2b+ATUzcxZ62iBUMEtRFkY1Zs7Zmke4zHcGaAAJ2RjwEvzX",
        "sumdb.modgate.test+396eab2b+AcsntaASUGFYOi4MuUcxa1DnqElgik5jM2s6m00TaGkW",
    ),
    (
        "PeterNeumann",
        "PRIVATE+KEY+PeterNeumann+96155ad2+AanFjOJf+iFVmoQkt9/7cpbbnkYUjXu/2nNOlVR1i2tg",
        "PeterNeumann+96155ad2+AVOjzFIFKGSo6Zo3U9DwUD43Q3NVCxR8XCuBN9bPOHGR",
    ),
    (
        "example.com/db",
        "PRIVATE+KEY+example.com/db+09079219+AelG6nh7ymJvmC2EnDpOmLBGO1HlRc+8Hia00UT1OK7r",
        "example.com/db+09079219+Afom2W3sndiHq/FBp0UXbpNYgT8r/0NTYJmWBCEGTfFZ",
    ),
    (
        "ünïcode",
        "PRIVATE+KEY+ünïcode+1681d922+Abv3FXXqjDwctfz6UG/hTSrknXzWs53r2A4e92FlNvUA",
        "ünïcode+1681d922+AeSv+eBrc6yz0YxGkOCKZw0s2QaxUgqtoidEC+zsTEL1",
    ),
]
KEY0 = "AcsntaASUGFYOi4MuUcxa1DnqElgik5jM2s6m00TaGkW"  # keydata of KEYS[0]

# Go: (verifier key, note.NewVerifier's error or None). Bytes, as Go strings may
# hold invalid UTF-8; the test decodes them with surrogateescape.
VERIFIER_KEYS = [
    (b"sumdb.modgate.test+396eab2b+" + KEY0.encode(), None),
    (b"sumdb.modgate.test+396EAB2B+" + KEY0.encode(), None),
    (b"", "malformed verifier id"),
    (b"sumdb.modgate.test", "malformed verifier id"),
    (b"sumdb.modgate.test+396eab2b", "malformed verifier id"),
    (b"sumdb.modgate.test+396eab2b+", "malformed verifier id"),
    (b"sumdb.modgate.test+396eab2+" + KEY0.encode(), "malformed verifier id"),
    (b"sumdb.modgate.test+0396eab2b+" + KEY0.encode(), "malformed verifier id"),
    (b"sumdb.modgate.test+0x6eab2b+" + KEY0.encode(), "malformed verifier id"),
    (b"sumdb.modgate.test+396eab2b+" + KEY0[:-1].encode(), "malformed verifier id"),
    (b"sumdb.modgate.test+396eab2b+" + KEY0.encode() + b"+extra", "malformed verifier id"),
    (b"other.name+396eab2b+" + KEY0.encode(), "invalid verifier hash"),
    (b"sumdb.modgate.test+00000000+" + KEY0.encode(), "invalid verifier hash"),
    (b"bad name+5739307a+" + KEY0.encode(), "malformed verifier id"),
    (b"bad+name+575e2060+" + KEY0.encode(), "malformed verifier id"),
    (b"x+bd94bfa1+" + KEY0.encode(), None),
    (b"x+ec675f6c+AssntaASUGFYOi4MuUcxa1DnqElgik5jM2s6m00TaGkW", "unknown verifier algorithm"),
    (b"x+ff59262d+AcsntaASUGFYOi4MuUcxa1DnqElgik5jM2s6m00TaGk=", "malformed verifier id"),
    (b"x+7d58e04c+AcsntaASUGFYOi4MuUcxa1DnqElgik5jM2s6m00TaGkWAA==", "malformed verifier id"),
    (b"x+bfab3167+AQ==", "malformed verifier id"),
    (b"tab\tname+d8283522+" + KEY0.encode(), "malformed verifier id"),
    (b"nbsp\xc2\xa0name+9c317cf4+" + KEY0.encode(), "malformed verifier id"),
    (b"fs\x1cname+1c4bf697+" + KEY0.encode(), None),  # U+001C is no space to Go
    (b"bad\xffutf8+c8aeda85+" + KEY0.encode(), "malformed verifier id"),
]

SEED0 = "ATUzcxZ62iBUMEtRFkY1Zs7Zmke4zHcGaAAJ2RjwEvzX"  # keydata of KEYS[0]'s signer key

# Go: (signer key, note.NewSigner's error or None).
SIGNER_KEYS = [
    (f"PRIVATE+KEY+sumdb.modgate.test+396eab2b+{SEED0}", None),
    ("PRIVATE+KEY+sumdb.modgate.test+396eab2b", "malformed verifier id"),
    (f"PRIVATE+key+sumdb.modgate.test+396eab2b+{SEED0}", "malformed verifier id"),
    (f"private+KEY+sumdb.modgate.test+396eab2b+{SEED0}", "malformed verifier id"),
    (f"PRIVATE+KEY+sumdb.modgate.test+396eab2b+{SEED0[:-2]}", "malformed verifier id"),
    (f"PRIVATE+KEY+sumdb.modgate.test+00000000+{SEED0}", "invalid verifier hash"),
    (f"PRIVATE+KEY+other+396eab2b+{SEED0}", "invalid verifier hash"),
    (f"sumdb.modgate.test+396eab2b+{KEY0}", "malformed verifier id"),
]

TREE_TEXT = "go.sum database tree\n300\nnND/nri/U0xuHUrYSy0HtMeal2vzD9V4k/BO79C+QeI=\n"
NEUMANN = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)

# Go: (text, index into KEYS of the signer, the signature line note.Sign appends).
SIGNATURES = [
    (
        TREE_TEXT,
        0,
        "— sumdb.modgate.test OW6rKxjHuZ9b9U60nAZQCOvqDHkvNctz3DnYfYXClx1rkrP/4hDti2jKN+SoL8E9ViK/"
        "7f2URVvgNQI4P52QUb/7EAg=\n",
    ),
    (
        NEUMANN,
        1,
        "— PeterNeumann lhVa0lmHMSZb0WFp5b4t9/EbY0HkEa4217YQFGhOxL/6vMDaLQjreUSuKN3LDxeWOKmP5Rs"
        "iVPuPNOWh6pnGcr3ehAI=\n",
    ),
    (
        "\n",
        2,
        "— example.com/db CQeSGUXILopGYrsyb8lO6+s3gnYtWZg24QvbPjCIBse3K2IfL/36MBXiG5Eov0w4RYrqKaO3"
        "Mj4/bRUgrXJynZpi0gM=\n",
    ),
    (
        "unicode — text ✓\n",
        3,
        "— ünïcode FoHZIuoXfqV7diDUJejN82PS4jKe4qI+iEpkMVKPOPd6eWsNJ0N0Q6bvLsMstg46HvKPUfenGhxOkJq"
        "RSO4BqEAtMgQ=\n",
    ),
]
# Go: note.Sign(TREE_TEXT, KEYS[0], KEYS[2]) appends these two lines.
TWO_SIGNATURES = (
    "— sumdb.modgate.test OW6rKxjHuZ9b9U60nAZQCOvqDHkvNctz3DnYfYXClx1rkrP/4hDti2jKN+SoL8E9ViK/"
    "7f2URVvgNQI4P52QUb/7EAg=\n"
    "— example.com/db CQeSGdOAF1gjvlUQ4RIRb9f9TgvdboRk/PuQ/oO67fTWcz0VBHWry8PpJvl+mY5P0DI50mLt"
    "0kk0EARxObZtT6vhigA=\n"
)

# The pieces of the notes below, all over OPEN_TEXT: signature lines by KEYS[0]
# (known to the opener), by KEYS[1] (unknown), KEYS[0]'s with one bit of the
# signature flipped, and KEYS[0]'s with its key hash changed.
OPEN_TEXT = b"go.sum database tree\n5\nnND/nri/U0xuHUrYSy0HtMeal2vzD9V4k/BO79C+QeI=\n"
SIG0 = (
    "— sumdb.modgate.test OW6rK9Di4B2zdLfSee6IfuScJjxgl3C7RWWXPl1dAu1Y/liWyF0FAB1xyKftecGfyAK6W"
    "zh45RJrrMGPdagHYQJNZQs=\n"
).encode()
SIG1 = (
    "— PeterNeumann lhVa0h1pfqXChl2BVOGynlF/tCbdpGnQDULlGqS6hHE1q/Drr/fvLhYOeBvnV8lxtjjiz9h7D/"
    "hDB41JYlYHaLg7vwY=\n"
).encode()
SIG0_FLIPPED = SIG0.replace(b"agHYQ", b"agIYQ")
SIG0_REHASHED = SIG0.replace(b" OW6rK", b" AW6rK")
SIG0_B64 = SIG0.split(b" ")[2].rstrip(b"\n")

MALFORMED, NO_KNOWN, INVALID = (
    "malformed note",
    "note has no verifiable signatures",
    ("invalid signature for key sumdb.modgate.test+396eab2b"),
)

# Go: (label, message, note.Open's error with KEYS[0] known, and else the numbers
# of verified and unverified signatures).
OPEN_CASES = [
    ("signed by the known key", OPEN_TEXT + b"\n" + SIG0, None, 1, 0),
    ("known and unknown key", OPEN_TEXT + b"\n" + SIG0 + SIG1, None, 1, 1),
    ("unknown key first", OPEN_TEXT + b"\n" + SIG1 + SIG0, None, 1, 1),
    ("duplicate known signature", OPEN_TEXT + b"\n" + SIG0 + SIG0, None, 1, 0),
    ("duplicate unknown signature", OPEN_TEXT + b"\n" + SIG1 + SIG1 + SIG0, None, 1, 1),
    ("100 unknown signatures", OPEN_TEXT + b"\n" + SIG1 * 100, NO_KNOWN, 0, 0),
    ("only an unknown key", OPEN_TEXT + b"\n" + SIG1, NO_KNOWN, 0, 0),
    ("key hash changed", OPEN_TEXT + b"\n" + SIG0_REHASHED, NO_KNOWN, 0, 0),
    ("101 signatures", OPEN_TEXT + b"\n" + SIG1 * 101, MALFORMED, 0, 0),
    ("bad signature", OPEN_TEXT + b"\n" + SIG0_FLIPPED, INVALID, 0, 0),
    ("bad after unknown", OPEN_TEXT + b"\n" + SIG1 + SIG0_FLIPPED, INVALID, 0, 0),
    ("blank line between signatures", OPEN_TEXT + b"\n" + SIG0 + b"\n" + SIG0, INVALID, 0, 0),
    ("no blank line", OPEN_TEXT + SIG0, MALFORMED, 0, 0),
    ("no signature lines", OPEN_TEXT + b"\n", MALFORMED, 0, 0),
    ("missing final newline", OPEN_TEXT + b"\n" + SIG0[:-1], MALFORMED, 0, 0),
    ("empty", b"", MALFORMED, 0, 0),
    ("text without final newline", b"abc\n" + SIG0, MALFORMED, 0, 0),
    ("no em dash", OPEN_TEXT + b"\n" + SIG0.removeprefix("— ".encode()), MALFORMED, 0, 0),
    ("hyphen for em dash", OPEN_TEXT + b"\n- " + SIG0.removeprefix("— ".encode()), MALFORMED, 0, 0),
    ("no space after name", OPEN_TEXT + "\n— sumdb.modgate.test\n".encode(), MALFORMED, 0, 0),
    ("empty base64", OPEN_TEXT + "\n— sumdb.modgate.test \n".encode(), MALFORMED, 0, 0),
    ("bad base64", OPEN_TEXT + "\n— sumdb.modgate.test !!!!\n".encode(), MALFORMED, 0, 0),
    ("unpadded base64", OPEN_TEXT + b"\n" + SIG0.replace(b"=\n", b"\n"), MALFORMED, 0, 0),
    ("4-byte signature", OPEN_TEXT + "\n— sumdb.modgate.test OW6rKw==\n".encode(), MALFORMED, 0, 0),
    ("name with plus", OPEN_TEXT + "\n— a+b ".encode() + SIG0_B64 + b"\n", MALFORMED, 0, 0),
    ("tab in text", b"a\tb\n\n" + SIG0, MALFORMED, 0, 0),
    ("carriage return", OPEN_TEXT + b"\n" + SIG0[:-1] + b"\r\n", MALFORMED, 0, 0),
    ("invalid utf-8", b"a\xffb\n\n" + SIG0, MALFORMED, 0, 0),
    ("surrogate encoded", b"a\xed\xa0\x80b\n\n" + SIG0, MALFORMED, 0, 0),
    ("nul byte", b"a\x00b\n\n" + SIG0, MALFORMED, 0, 0),
    ("text after signatures", OPEN_TEXT + b"\n" + SIG0 + b"trailer\n", MALFORMED, 0, 0),
]
ERROR_TYPES = {MALFORMED: NoteError, NO_KNOWN: UnknownVerifierError, INVALID: BadSignatureError}


def go_string(raw: bytes) -> str:
    """A Go string of arbitrary bytes as Python text (invalid UTF-8 becomes lone surrogates)."""
    return raw.decode("utf-8", "surrogateescape")


@pytest.mark.parametrize(("name", "signer_text", "verifier_text"), KEYS)
def test_signer_key_gives_go_verifier_key(name: str, signer_text: str, verifier_text: str) -> None:
    signer = parse_signer_key(signer_text)
    assert (signer.name, f"{signer.key_hash:08x}") == (name, verifier_text.split("+")[1])
    assert signer.verifier.key_text == verifier_text
    assert parse_verifier_key(verifier_text) == signer.verifier


@pytest.mark.parametrize(("text", "error"), VERIFIER_KEYS)
def test_parse_verifier_key_as_go(text: bytes, error: str | None) -> None:
    if error is None:
        verifier = parse_verifier_key(go_string(text))
        assert verifier.key_hash == int(text.split(b"+")[1], 16)
        assert len(verifier.public_key) == 32
    else:
        with pytest.raises(KeyFormatError, match=f"^{re.escape(error)}$"):
            parse_verifier_key(go_string(text))


@pytest.mark.parametrize(("text", "error"), SIGNER_KEYS)
def test_parse_signer_key_as_go(text: str, error: str | None) -> None:
    if error is None:
        assert parse_signer_key(text).verifier.key_text == KEYS[0][2]
    else:
        with pytest.raises(KeyFormatError, match=f"^{re.escape(error)}$"):
            parse_signer_key(text)


def test_signer_key_with_other_algorithm() -> None:
    text = f"PRIVATE+KEY+sumdb.modgate.test+396eab2b+A{'j' + SEED0[2:]}"  # algorithm byte 2
    with pytest.raises(KeyFormatError, match="^unknown verifier algorithm$"):
        parse_signer_key(text)


def test_key_hash_is_sha256_prefix_of_name_and_key() -> None:
    keydata = decode_base64(KEY0)
    assert keydata is not None
    assert key_hash("sumdb.modgate.test", keydata) == 0x396EAB2B


def test_verifier_key_from_public_key() -> None:
    verifier = parse_verifier_key(KEYS[2][2])
    assert verifier_key(verifier.name, verifier.public_key) == KEYS[2][2]
    with pytest.raises(KeyFormatError, match="^invalid public key size 31, expected 32$"):
        verifier_key("x", verifier.public_key[:31])


@pytest.mark.parametrize(("text", "key", "line"), SIGNATURES)
def test_sign_matches_go(text: str, key: int, line: str) -> None:
    signer = parse_signer_key(KEYS[key][1])
    msg = sign(text, signer)
    assert msg == (text + "\n" + line).encode()
    opened = open_note(msg, [signer.verifier])
    assert opened.text == text
    assert opened.sigs == (Signature(signer.name, signer.key_hash, line.split(" ")[2][:-1]),)


def test_sign_with_two_keys_matches_go() -> None:
    signers = [parse_signer_key(KEYS[0][1]), parse_signer_key(KEYS[2][1])]
    msg = sign(TREE_TEXT, *signers)
    assert msg == (TREE_TEXT + "\n" + TWO_SIGNATURES).encode()
    both = open_note(msg, [s.verifier for s in signers])
    assert [s.name for s in both.sigs] == ["sumdb.modgate.test", "example.com/db"]
    second = open_note(msg, [signers[1].verifier])
    assert [s.name for s in second.sigs] == ["example.com/db"]
    assert [s.name for s in second.unverified_sigs] == ["sumdb.modgate.test"]


def test_note_go_documentation_example() -> None:
    """The example in note.go's package documentation, verbatim."""
    skey = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
    vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    msg = (
        NEUMANN
        + "\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgK"
        "vqfqdngotpRZb6KE6RyyBwJnAM=\n"
    ).encode()
    assert sign(NEUMANN, parse_signer_key(skey)) == msg
    opened = open_note(msg, [parse_verifier_key(vkey)])
    assert (opened.text, opened.sigs[0].name, opened.sigs[0].key_hash) == (
        NEUMANN,
        "PeterNeumann",
        0xC74F20A3,
    )


def test_sign_requires_final_newline() -> None:
    with pytest.raises(NoteError, match="^malformed note$"):
        sign("no newline", parse_signer_key(KEYS[0][1]))


@pytest.mark.parametrize(("label", "msg", "error", "verified", "unverified"), OPEN_CASES)
def test_open_note_as_go(
    label: str, msg: bytes, error: str | None, verified: int, unverified: int
) -> None:
    known = [parse_verifier_key(KEYS[0][2])]
    if error is None:
        opened = open_note(msg, known)
        assert (opened.text.encode(), len(opened.sigs), len(opened.unverified_sigs)) == (
            OPEN_TEXT,
            verified,
            unverified,
        )
    else:
        with pytest.raises(NoteError, match=f"^{re.escape(error)}$") as caught:
            open_note(msg, known)
        assert type(caught.value) is ERROR_TYPES[error]


def test_open_note_with_no_verifiers() -> None:
    with pytest.raises(UnknownVerifierError, match="^note has no verifiable signatures$"):
        open_note(OPEN_TEXT + b"\n" + SIG0, [])


def test_open_note_keeps_unknown_signatures() -> None:
    opened = open_note(OPEN_TEXT + b"\n" + SIG1 + SIG0, [parse_verifier_key(KEYS[0][2])])
    assert opened == Note(
        OPEN_TEXT.decode(),
        (Signature("sumdb.modgate.test", 0x396EAB2B, SIG0_B64.decode()),),
        (Signature("PeterNeumann", 0x96155AD2, SIG1.split(b" ")[2].rstrip(b"\n").decode()),),
    )


def test_open_note_with_ambiguous_keys() -> None:
    real = parse_verifier_key(KEYS[0][2])
    impostor = Verifier(real.name, real.key_hash, bytes(32))
    with pytest.raises(NoteError, match=r"^ambiguous key sumdb\.modgate\.test\+396eab2b$"):
        open_note(OPEN_TEXT + b"\n" + SIG0, [real, impostor])
    assert open_note(OPEN_TEXT + b"\n" + SIG0, [real, real]).sigs[0].name == real.name


def test_generate_key_round_trip() -> None:
    signer_text, verifier_text = generate_key("sumdb.modgate.test")
    signer, verifier = parse_signer_key(signer_text), parse_verifier_key(verifier_text)
    assert signer.verifier == verifier
    assert open_note(sign("hello\n", signer), [verifier]).text == "hello\n"
    assert generate_key("sumdb.modgate.test") != (signer_text, verifier_text)
    with pytest.raises(KeyFormatError, match="^invalid key name 'a b'$"):
        generate_key("a b")


def test_open_note_rejects_other_key_under_known_hash() -> None:
    """A signature by another key, labelled with the known key's name and hash."""
    known = parse_verifier_key(KEYS[0][2])
    other = parse_signer_key(generate_key(known.name)[0])
    text, _, line = sign("hello\n", other).decode().rpartition("\n\n")
    raw = decode_base64(line.split(" ")[2])
    assert raw is not None
    relabelled = base64.b64encode(known.key_hash.to_bytes(4, "big") + raw[4:]).decode()
    forged = f"{text}\n\n— {known.name} {relabelled}\n".encode()
    with pytest.raises(
        BadSignatureError, match=r"^invalid signature for key sumdb\.modgate\.test\+396eab2b$"
    ):
        open_note(forged, [known])


@pytest.mark.parametrize(
    ("text", "decoded"),
    [  # Go: base64.StdEncoding.DecodeString
        ("QUJD", b"ABC"),
        ("QR==", b"A"),
        ("", b""),
        ("QQ==\n", b"A"),
        ("Q\nQ==", b"A"),
        ("QQ=\n=", b"A"),
        ("QQ", None),
        ("QQ=", None),
        ("QQ==QQ==", None),
        ("=QQ=", None),
        ("Q UJD", None),
        ("QUJDé", None),
    ],
)
def test_decode_base64_as_go(text: str, decoded: bytes | None) -> None:
    assert decode_base64(text) == decoded


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("sumdb.modgate.test", True),
        ("example.com/path", True),
        ("ünïcode", True),
        ("fs\x1cname", True),
        ("", False),
        ("a b", False),
        ("a+b", False),
        ("a\u2003b", False),
        ("a\u3000b", False),
        ("a\x85b", False),
        ("a\udcffb", False),
    ],
)
def test_is_valid_name(name: str, valid: bool) -> None:
    assert is_valid_name(name) is valid


def test_within_keeps_type_and_adds_context() -> None:
    err = BadSignatureError("invalid signature for key x+00000001")
    wrapped = err.within("reading tree note")
    assert type(wrapped) is BadSignatureError
    assert str(wrapped) == "reading tree note: invalid signature for key x+00000001"
    assert str(err) == "invalid signature for key x+00000001"
    assert isinstance(wrapped, SumdbError)
