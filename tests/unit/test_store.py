"""The Store contract, run over both stores: a local directory and S3 (a real moto server on 127.0.0.1)."""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipml.errors import InvalidNameError, RegistryCorrupt, StorageError
from shipml.registry.s3 import S3Store
from shipml.registry.store import LocalStore, PreconditionFailed, Store
from tests.s3_support import S3Server, free_port, moto_server
from tests.unit.registry_support import one_line


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    s3: S3Server = request.getfixturevalue("s3")
    return S3Store(f"s3://{s3.new_bucket()}/some/prefix")


def test_create_is_refused_when_the_key_exists(store: Store) -> None:
    assert store.get("a/b.json") is None
    token = store.create("a/b.json", b"one")
    found = store.get("a/b.json")
    assert found is not None and found.data == b"one" and found.token == token
    with pytest.raises(PreconditionFailed):
        store.create("a/b.json", b"two")
    assert store.get("a/b.json").data == b"one"  # type: ignore[union-attr]


def test_replace_is_compare_and_set(store: Store) -> None:
    first = store.create("k", b"1")
    second = store.replace("k", b"2", first)
    assert second != first
    with pytest.raises(PreconditionFailed):
        store.replace("k", b"3", first)  # a stale token
    assert store.get("k").data == b"2"  # type: ignore[union-attr]
    with pytest.raises(PreconditionFailed):
        store.replace("missing", b"x", first)
    assert store.get("missing") is None


def test_list_put_delete_upload_download(store: Store, tmp_path: Path) -> None:
    for key in ("m/a/2", "m/a/1", "m/b", "n/x"):
        store.put(key, key.encode())
    assert store.keys("m/") == ["m/a/1", "m/a/2", "m/b"]
    assert store.keys("m/a") == ["m/a/1", "m/a/2"]
    assert store.keys("zz/") == []
    assert store.children("") == ["m", "n"] and store.children("m/") == ["a"]
    store.delete("m/a/1")
    store.delete("m/a/1")  # missing: nothing to do
    assert store.keys("m/") == ["m/a/2", "m/b"]
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 << 20))
    store.upload("files/big.bin", big)
    out = tmp_path / "out.bin"
    assert store.download("files/big.bin", out) and out.read_bytes() == big.read_bytes()
    assert not store.download("files/none", tmp_path / "none")


def test_concurrent_creates_one_wins(store: Store) -> None:
    winners: list[int] = []
    barrier = threading.Barrier(6)

    def claim(i: int) -> None:
        barrier.wait(timeout=30)
        try:
            store.create("claims/1.0.0", str(i).encode())
        except PreconditionFailed:
            return
        winners.append(i)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(winners) == 1
    assert store.get("claims/1.0.0").data == str(winners[0]).encode()  # type: ignore[union-attr]


def test_concurrent_compare_and_set_loses_no_update(store: Store) -> None:
    store.create("counter", b"0")
    threads_n, each = 4, 5
    barrier = threading.Barrier(threads_n)

    def bump() -> None:
        barrier.wait(timeout=30)
        deadline = time.monotonic() + 60
        for _ in range(each):
            while True:
                assert time.monotonic() < deadline
                found = store.get("counter")
                assert found is not None
                try:
                    store.replace("counter", str(int(found.data) + 1).encode(), found.token)
                    break
                except PreconditionFailed:
                    continue

    threads = [threading.Thread(target=bump) for _ in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert store.get("counter").data == str(threads_n * each).encode()  # type: ignore[union-attr]


_SEGMENT = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,20}", fullmatch=True).filter(lambda s: ".." not in s)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(_SEGMENT, min_size=1, max_size=4), data=st.binary(max_size=64))
def test_any_valid_key_round_trips(store: Store, parts: list[str], data: bytes) -> None:
    # a fresh prefix per example: a local store cannot hold a file where an earlier example left a directory
    # ("h/l" after "h/l/x"), and the registry never lays keys out that way
    prefix = f"h/{uuid.uuid4().hex}"
    key = "/".join([prefix, *parts])
    store.put(key, data)
    assert store.get(key).data == data  # type: ignore[union-attr]
    assert key in store.keys(prefix + "/")
    store.delete(key)
    assert store.get(key) is None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.text(max_size=30))
def test_any_other_key_is_refused_before_it_reaches_the_store(store: Store, key: str) -> None:
    parts = key.split("/")
    valid = all(p and p[0] != "." and ".." not in p
                and all(c.isascii() and (c.isalnum() or c in "._-") for c in p) for p in parts)
    if valid:
        return
    with pytest.raises(InvalidNameError):
        store.put(key, b"x")
    with pytest.raises(InvalidNameError):
        store.get(key)


def test_local_store_follows_no_symbolic_link(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    store.put("a/x", b"1")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    os.symlink(outside, tmp_path / "store" / "b")
    os.symlink(outside / "secret", tmp_path / "store" / "a" / "link")
    for act in (lambda: store.get("b/secret"), lambda: store.put("b/new", b"x"), lambda: store.get("a/link"),
                lambda: store.create("b/new", b"x"), lambda: store.replace("a/link", b"x", "t")):
        with pytest.raises(RegistryCorrupt, match="symbolic link"):
            act()
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert (outside / "secret").read_bytes() == b"secret"


def test_a_missing_bucket_is_one_line(s3: S3Server) -> None:
    store = S3Store("s3://no-such-bucket-here/p")
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-here' does not exist") as info:
        store.get("k")
    one_line(info.value)


def test_no_credentials_is_one_line(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(StorageError, match="no credentials") as info:
        S3Store(f"s3://{s3.new_bucket()}").get("k")
    one_line(info.value)


def test_an_unreachable_store_is_one_line_after_retries(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(StorageError, match="cannot reach the object store") as info:
        S3Store("s3://some-bucket").get("k")
    one_line(info.value)


@pytest.mark.parametrize("uri", ["s3://", "s3://A_B", "s3://b/../x", "s3://bkt/p?colour=red", "s3://bkt/.x"])
def test_bad_s3_uris_are_refused(uri: str) -> None:
    with pytest.raises(InvalidNameError):
        S3Store(uri)


def test_access_denied_and_refused_credentials_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server checking IAM (moto with its checks on after three set-up calls): a user without a policy is
    denied; an unknown key is refused."""
    import boto3

    with moto_server(tmp_path / "moto.log", {"INITIAL_NO_AUTH_ACTION_COUNT": "3"}) as server:
        bucket = server.new_bucket()  # 1
        iam = boto3.client("iam", endpoint_url=server.url, region_name="us-east-1", aws_access_key_id="testing",
                           aws_secret_access_key="testing")
        iam.create_user(UserName="reader")  # 2
        key = iam.create_access_key(UserName="reader")["AccessKey"]  # 3
        monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        with pytest.raises(StorageError, match=f"access denied: reading s3://{bucket}/p/k") as info:
            S3Store(f"s3://{bucket}/p").get("k")
        one_line(info.value)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOTAKEY000000000")
        with pytest.raises(StorageError, match="refused the credentials") as info:
            S3Store(f"s3://{bucket}/p").put("k", b"x")
        one_line(info.value)
