"""core.note: C2SP signed notes and checkpoints, against the Go sumdb/note vectors."""

from __future__ import annotations

import base64

import pytest

from gateway.core.merkle import EMPTY_ROOT
from gateway.core.note import Checkpoint, NoteSigner, NoteVerifier, key_id, split_note, split_notes
from gateway.errors import NoteError

# golang.org/x/mod/sumdb/note's test and example vectors (key, text and signature)
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = ("If you think cryptography is the answer to your problem,\n"
           "then you don't know what your problem is.\n")
GO_NOTE = GO_TEXT + ("\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1F"
                     "FYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n")


def _go_signer() -> NoteSigner:
    seed = base64.b64decode(GO_SKEY.split("+", 4)[4])[1:]  # type byte 0x01, then the seed
    return NoteSigner("PeterNeumann", seed)


def test_signing_reproduces_the_go_note_byte_for_byte() -> None:
    signer = _go_signer()
    assert signer.verifier_key() == GO_VKEY
    assert signer.key_id.hex() == "c74f20a3"
    assert signer.sign(GO_TEXT) == GO_NOTE


def test_the_go_note_verifies_and_an_edit_does_not() -> None:
    verifier = NoteVerifier.parse(GO_VKEY)
    assert verifier.signed(GO_NOTE)
    with pytest.raises(NoteError, match="does not verify"):
        verifier.signed(GO_NOTE.replace("cryptography", "cryptographY"))


def test_signatures_of_other_keys_are_ignored() -> None:
    other = NoteSigner("PeterNeumann", bytes(range(32)))  # same name, another key id
    assert not NoteVerifier.parse(GO_VKEY).signed(other.sign(GO_TEXT))
    both = GO_NOTE + other.signature_line(GO_TEXT)
    assert NoteVerifier.parse(GO_VKEY).signed(both)
    with pytest.raises(NoteError, match="no signature of PeterNeumann"):
        NoteVerifier.parse(GO_VKEY).open(other.sign(GO_TEXT))


@pytest.mark.parametrize("vkey", [
    GO_VKEY.replace("c74f20a3", "c74f20a4"),  # id that does not match
    GO_VKEY.replace("+ARpc", "+AhpC"),  # another type byte
    "PeterNeumann+c74f20a3",
    "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    "PeterNeumann+zz+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
])
def test_bad_verifier_keys_are_refused(vkey: str) -> None:
    with pytest.raises(NoteError):
        NoteVerifier.parse(vkey)


def test_key_id_is_the_spec_hash() -> None:
    signer = NoteSigner("example.org/audit", bytes(32))
    import hashlib
    assert key_id("example.org/audit", 1, signer.public_key) == hashlib.sha256(
        b"example.org/audit\n\x01" + signer.public_key).digest()[:4]


def test_a_checkpoint_round_trips_and_malformed_ones_are_refused() -> None:
    point = Checkpoint("example.org/audit", 12, b"\x07" * 32)
    assert point.text() == "example.org/audit\n12\n" + base64.b64encode(b"\x07" * 32).decode() + "\n"
    assert Checkpoint.parse(point.text()) == point
    for text in ("example.org/audit\n012\nAAAA\n", "example.org/audit\n1\nAAAA\n",
                 "example.org/audit\n1\n", "\n1\n" + base64.b64encode(EMPTY_ROOT).decode() + "\n"):
        with pytest.raises(NoteError):
            Checkpoint.parse(text)


def test_malformed_notes_are_refused() -> None:
    for note in (GO_TEXT, GO_TEXT + "\nPeterNeumann abc\n", GO_TEXT + "\n\u2014 P !!!\n",
                 GO_TEXT.replace("\n", "\r\n", 1) + GO_NOTE[len(GO_TEXT):]):
        with pytest.raises(NoteError):
            split_note(note)


def test_several_notes_in_one_file_are_told_apart() -> None:
    signer = NoteSigner("example.org/audit", bytes(32))
    notes = [signer.sign(Checkpoint("example.org/audit", n, EMPTY_ROOT).text()) for n in (1, 2)]
    witnessed = notes[1] + "\u2014 witness.example/w1 " + base64.b64encode(bytes(76)).decode() + "\n"
    assert split_notes(notes[0] + "\n" + witnessed + "\n") == [notes[0], witnessed]
    assert split_notes(notes[0]) == [notes[0]]
    with pytest.raises(NoteError):
        split_notes(notes[0] + "\nexample.org/audit\n3\n")


def test_a_verifier_key_whose_base64_holds_a_plus_parses() -> None:
    # transparency-dev/formats' note tests: the key material itself contains '+'
    verifier = NoteVerifier.parse("TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6")
    assert (verifier.name, verifier.key_id.hex()) == ("TEST", "7997405c")


def test_a_published_cosignature_key_parses_with_its_id() -> None:
    # transparency-dev/formats' note tests: an Ed25519 cosignature/v1 key (type 0x04)
    from gateway.core.note import CosignatureVerifier
    verifier = CosignatureVerifier.parse(
        "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2")
    assert (verifier.name, verifier.key_id.hex()) == ("remora.n621.de", "da77ade7")
    with pytest.raises(NoteError, match="type 0x04"):
        CosignatureVerifier.parse(GO_VKEY)  # a note key is not a cosignature key
