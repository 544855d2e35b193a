"""The payload codec: AES-GCM with key ids, plain payloads passed through, rotation, keys."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.common import RawValue

from vigil.schema.names import UNDECRYPTABLE_ENCODING, UNDECRYPTABLE_REASON
from vigil.schema.payloads import MessageInput
from vigil.workers.codec import (
    ENCODING,
    META_KEY_ID,
    EncryptionCodec,
    KeyRing,
    PayloadKeyError,
    codec_token,
    ensure_key_file,
    load_keyring,
    payload_codec,
    rotate_key_file,
    undecryptable,
)
from vigil.workers.settings import PAYLOAD_KEY_FILE, Settings
from vigil.workers.temporal import DATA_CONVERTER, data_converter

K1 = bytes(range(32))
K2 = bytes(range(32, 64))


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def plain(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(text).encode())


async def test_round_trip_hides_data_and_names_the_key() -> None:
    codec = EncryptionCodec(KeyRing({"k1": K1}, "k1"))
    original = plain("the secret goal")
    [sealed] = await codec.encode([original])
    assert sealed.metadata["encoding"] == ENCODING
    assert sealed.metadata[META_KEY_ID] == b"k1"
    assert b"secret" not in sealed.SerializeToString()
    assert b"json/plain" not in sealed.SerializeToString()  # metadata is sealed too
    [opened] = await codec.decode([sealed])
    assert opened == original
    # Fresh nonce each time: equal inputs never give equal outputs.
    [again] = await codec.encode([original])
    assert again.data != sealed.data


async def test_plain_payloads_decode_as_they_are_and_are_never_sealed_twice() -> None:
    codec = EncryptionCodec(KeyRing({"k1": K1}, "k1"))
    old = plain("written before encryption")
    assert await codec.decode([old]) == [old]
    [sealed] = await codec.encode([old])
    assert await codec.encode([sealed]) == [sealed]


async def test_off_switch_writes_plain_and_still_reads_sealed() -> None:
    ring = KeyRing({"k1": K1}, "k1")
    [sealed] = await EncryptionCodec(ring).encode([plain("x")])
    off = EncryptionCodec(ring, encrypt=False)
    assert await off.encode([plain("x")]) == [plain("x")]
    assert await off.decode([sealed]) == [plain("x")]


async def test_rotation_keeps_old_payloads_readable() -> None:
    [old] = await EncryptionCodec(KeyRing({"k1": K1}, "k1")).encode([plain("old")])
    rotated = EncryptionCodec(KeyRing({"k1": K1, "k2": K2}, "k2"))
    [new] = await rotated.encode([plain("new")])
    assert new.metadata[META_KEY_ID] == b"k2"
    assert await rotated.decode([old, new]) == [plain("old"), plain("new")]
    # A reader that dropped k1 says so instead of returning garbage.
    with pytest.raises(PayloadKeyError, match="'k1', which is not configured"):
        await EncryptionCodec(KeyRing({"k2": K2}, "k2")).decode([old])


async def test_wrong_key_relabelled_or_altered_payloads_are_refused() -> None:
    [sealed] = await EncryptionCodec(KeyRing({"k1": K1}, "k1")).encode([plain("x")])
    with pytest.raises(PayloadKeyError, match="wrong key or altered"):
        await EncryptionCodec(KeyRing({"k1": K2}, "k1")).decode([sealed])
    relabelled = Payload()
    relabelled.CopyFrom(sealed)
    relabelled.metadata[META_KEY_ID] = b"k2"
    both = EncryptionCodec(KeyRing({"k1": K1, "k2": K1}, "k1"))
    with pytest.raises(PayloadKeyError, match="wrong key or altered"):
        await both.decode([relabelled])
    altered = Payload()
    altered.CopyFrom(sealed)
    altered.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    with pytest.raises(PayloadKeyError):
        await both.decode([altered])


def test_keys_from_settings(tmp_path: Path) -> None:
    keys = f"k1:{_b64(K1)}, k2:{_b64(K2)}"
    ring = load_keyring(Settings(state_dir=tmp_path, payload_keys=keys, payload_key_id="k2"))
    assert ring is not None and ring.current == "k2" and set(ring.keys) == {"k1", "k2"}
    with pytest.raises(PayloadKeyError, match="which is current"):
        load_keyring(Settings(state_dir=tmp_path, payload_keys=keys))
    with pytest.raises(PayloadKeyError, match="'k3' is not among"):
        load_keyring(Settings(state_dir=tmp_path, payload_keys=keys, payload_key_id="k3"))
    # No keys anywhere: no codec, payloads stay plain.
    assert payload_codec(Settings(state_dir=tmp_path)) is None


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("k1", "not `id:base64key`"),
        ("bad id:" + _b64(K1), "not `id:base64key`"),
        ("k1:not base64!", "not valid base64"),
        ("k1:" + _b64(b"short"), "has 5 bytes"),
        (f"k1:{_b64(K1)},k1:{_b64(K2)}", "twice"),
    ],
)
def test_bad_key_settings_are_refused_without_echoing_the_key(value: str, error: str) -> None:
    with pytest.raises(ValueError, match=error) as caught:
        Settings(payload_keys=value)
    assert _b64(K1) not in str(caught.value)


def test_stack_key_file_is_private_and_rotates(tmp_path: Path) -> None:
    path = ensure_key_file(tmp_path)
    assert path == tmp_path / PAYLOAD_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = load_keyring(Settings(state_dir=tmp_path))
    assert first is not None and len(first.keys[first.current]) == 32
    assert ensure_key_file(tmp_path).read_text() == path.read_text()  # never regenerated

    new_id = rotate_key_file(tmp_path)
    after = load_keyring(Settings(state_dir=tmp_path))
    assert after is not None and after.current == new_id != first.current
    assert after.keys[first.current] == first.keys[first.current]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_a_reader_picks_up_a_key_rotated_after_it_started(tmp_path: Path) -> None:
    ensure_key_file(tmp_path)
    reader = payload_codec(Settings(state_dir=tmp_path))
    assert reader is not None
    rotate_key_file(tmp_path)
    writer = payload_codec(Settings(state_dir=tmp_path))
    assert writer is not None
    [sealed] = await writer.encode([plain("after rotation")])
    assert await reader.decode([sealed]) == [plain("after rotation")]


def test_codec_token_is_generated_once_and_private(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    assert codec_token(settings) is None
    token = codec_token(settings, create=True)
    assert token and len(token) >= 32
    assert codec_token(settings, create=True) == token
    assert stat.S_IMODE((tmp_path / "codec-token").stat().st_mode) == 0o600
    assert codec_token(Settings(state_dir=tmp_path, codec_token="given")) == "given"


def _bad_payloads(sealed: Payload) -> dict[str, Payload]:
    """Payloads that say they are encrypted and cannot be decrypted, by what is wrong."""
    no_key_id = Payload(metadata={"encoding": ENCODING}, data=b'{"text": "hi", "by": "x"}')
    unknown = Payload()
    unknown.CopyFrom(sealed)
    unknown.metadata[META_KEY_ID] = b"k-nobody-has"
    garbage = Payload()
    garbage.CopyFrom(sealed)
    garbage.data = bytes(12) + b"not what k1 sealed, just bytes of the right length"
    too_short = Payload()
    too_short.CopyFrom(sealed)
    too_short.data = b"abc"
    long_id = Payload()
    long_id.CopyFrom(sealed)
    long_id.metadata[META_KEY_ID] = b"x" * 5000
    return {
        "no key id": no_key_id,
        "unknown key id": unknown,
        "garbage under the right key id": garbage,
        "too short": too_short,
        "a 5000-character key id": long_id,
    }


async def test_undecryptable_payloads_are_refused_or_marked_never_read() -> None:
    ring = KeyRing({"k1": K1}, "k1")
    [sealed] = await EncryptionCodec(ring).encode([plain("x")])
    # Sealed by the key but holding no payload: read as garbage, refused too.
    not_a_payload = Payload()
    not_a_payload.CopyFrom(sealed)
    nonce = bytes(12)
    not_a_payload.data = nonce + AESGCM(K1).encrypt(nonce, b"\xff\xff", b"vigil/payload/v1|k1")
    bad = {**_bad_payloads(sealed), "not a payload inside": not_a_payload}
    strict = EncryptionCodec(ring)
    marking = EncryptionCodec(ring, mark_undecryptable=True)
    for what, payload in bad.items():
        with pytest.raises(PayloadKeyError) as refused:
            await strict.decode([payload])
        assert len(str(refused.value)) < 300, what
        # The marking codec hands on a stand-in with the reason and none of the payload,
        # and reads the good payloads beside it as usual.
        [ok, marked, also_ok] = await marking.decode([sealed, payload, sealed])
        assert ok == also_ok == plain("x")
        assert marked.metadata["encoding"] == UNDECRYPTABLE_ENCODING, what
        assert marked.metadata[UNDECRYPTABLE_REASON].decode() == str(refused.value), what
        assert marked.data == b"", what
    no_key = await marking.decode([bad["no key id"]])
    assert b"key '', which is not configured" in no_key[0].metadata[UNDECRYPTABLE_REASON]
    wrong = await marking.decode([bad["garbage under the right key id"]])
    assert b"wrong key or altered" in wrong[0].metadata[UNDECRYPTABLE_REASON]


def test_no_converter_reads_the_stand_in_as_a_value() -> None:
    stand_in = undecryptable("payload encrypted with key 'k9', which is not configured")
    converter = DATA_CONVERTER.payload_converter
    for hint in (None, dict, str, bytes, MessageInput, RawValue):
        if hint is RawValue:  # handed on as it is: vigil's handlers convert it themselves
            [raw] = converter.from_payloads([stand_in], [hint])
            assert raw.payload == stand_in
            continue
        with pytest.raises(ValueError, match="could not be decrypted: payload encrypted with"):
            converter.from_payloads([stand_in], [hint] if hint else None)
    # Nothing is ever written as one.
    for value in (None, "text", b"bytes", {"a": 1}, MessageInput(text="x")):
        [written] = converter.to_payloads([value])
        assert written.metadata["encoding"] != UNDECRYPTABLE_ENCODING


def test_the_workers_and_clients_converter_marks_the_codec_server_refuses(
    tmp_path: Path,
) -> None:
    settings = Settings(state_dir=tmp_path, payload_keys=f"k1:{_b64(K1)}")
    codec = data_converter(settings).payload_codec
    assert isinstance(codec, EncryptionCodec) and codec.mark_undecryptable
    served = payload_codec(settings)  # what `vigil codec-server` serves
    assert served is not None and not served.mark_undecryptable
