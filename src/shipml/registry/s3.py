"""A :class:`~shipml.registry.store.Store` on S3 or any S3-compatible object store (MinIO, Ceph, R2, GCS).

``s3://bucket/prefix`` names it. Credentials and the endpoint come from where boto3 finds them: the
environment (``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, ``AWS_ENDPOINT_URL``, ...), the AWS config files, an
instance role. ``?endpoint_url=http://host:9000`` (and ``region=``) in the URI override them, for MinIO and the
like.

Errors are translated here, at the boundary, into one line each (:class:`~shipml.errors.StorageError`): no
credentials, credentials refused, bucket missing, access denied, store unreachable. Transient failures
(connection errors, throttling, 5xx) are retried with exponential back-off by botocore's "standard" retry mode;
a refused conditional write (412) never is: it is :class:`~shipml.registry.store.PreconditionFailed`, and the
caller decides. A conditional write whose first attempt landed but whose answer was lost comes back as 412 on
the retry: callers that must tell "mine" from "someone else's" write a unique id into the object and read it
back (see objects.py).
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from shipml.errors import DependencyError, InvalidNameError, StorageError
from shipml.registry.store import Blob, PreconditionFailed, check_key

if TYPE_CHECKING:
    from botocore.client import BaseClient

__all__ = ["S3Location", "S3Store"]

T = TypeVar("T")
_BUCKET_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789.-")
MAX_ATTEMPTS = 5


class S3Location:
    """What an ``s3://bucket/prefix?endpoint_url=...&region=...`` URI says."""

    def __init__(self, uri: str) -> None:
        parts = urlsplit(uri)
        if parts.scheme != "s3":
            raise InvalidNameError(f"not an s3:// URI: {uri!r}")
        bucket = parts.netloc
        if not (3 <= len(bucket) <= 63 and set(bucket) <= _BUCKET_CHARS and bucket[0].isalnum()
                and bucket[-1].isalnum()):
            raise InvalidNameError(f"invalid bucket name {bucket!r} in {uri!r}: 3-63 lowercase letters, digits,"
                                   " '.' or '-'")
        prefix = parts.path.strip("/")
        if prefix:
            check_key(prefix)
        options = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        unknown = sorted(set(options) - {"endpoint_url", "region"})
        if unknown:
            raise InvalidNameError(f"unknown option(s) {', '.join(unknown)} in {uri!r}: endpoint_url, region")
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = options.get("endpoint_url") or None
        self.region = options.get("region") or None

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def _client(where: S3Location) -> BaseClient:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise DependencyError("an s3:// registry needs boto3: pip install 'shipml[s3]'") from None
    config = Config(retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS}, connect_timeout=5,
                    read_timeout=60)
    region = where.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=where.endpoint_url, region_name=region or session.region_name
                          or "us-east-1", config=config)


class S3Store:
    """A store in ``bucket`` under ``prefix`` (see the module's docstring)."""

    def __init__(self, uri: str, client: BaseClient | None = None) -> None:
        self.location = S3Location(uri)
        self._client = client or _client(self.location)

    def describe(self) -> str:
        return str(self.location)

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.location.prefix}/{key}" if self.location.prefix else key

    def _call(self, what: str, key: str, fn: Callable[[], T]) -> T:
        from botocore import exceptions as bx

        try:
            return fn()
        except bx.ClientError as exc:
            raise self._translate(exc, what, key) from None
        except (bx.NoCredentialsError, bx.PartialCredentialsError):
            raise StorageError(f"no credentials for {self.describe()}: set AWS_ACCESS_KEY_ID and"
                               " AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or give the machine a role") from None
        except (bx.EndpointConnectionError, bx.ConnectionClosedError, bx.ConnectTimeoutError,
                bx.ReadTimeoutError, bx.ProxyConnectionError) as exc:
            raise StorageError(f"cannot reach the object store of {self.describe()} at"
                               f" {self._client.meta.endpoint_url} after {MAX_ATTEMPTS} attempts (network down?):"
                               f" {type(exc).__name__}") from None
        except bx.BotoCoreError as exc:
            raise StorageError(f"{what} {self._where(key)} failed: {str(exc).splitlines()[0][:200]}") from None

    def _where(self, key: str) -> str:
        return f"{self.describe().rstrip('/')}/{key}"

    def _translate(self, exc: Any, what: str, key: str) -> Exception:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "PreconditionFailed" or status == 412:
            return PreconditionFailed(f"{self._where(key)} was written by someone else meanwhile")
        if code == "NoSuchBucket":
            return StorageError(f"the bucket {self.location.bucket!r} does not exist (at"
                                f" {self._client.meta.endpoint_url}); create it or fix the registry URI")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"):
            return StorageError(f"the object store refused the credentials for {self.describe()} ({code})")
        if code == "AccessDenied" or status == 403:
            return StorageError(f"access denied: {what} {self._where(key)} (check the credentials' permissions)")
        message = str(error.get("Message", "")).splitlines()[0][:200] if error.get("Message") else ""
        return StorageError(f"{what} {self._where(key)} failed: {code or status} {message}".rstrip())

    @staticmethod
    def _missing(exc: Any) -> bool:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        return code in ("NoSuchKey", "404", "NotFound")

    # -- the Store protocol -------------------------------------------------------------------------------
    def get(self, key: str) -> Blob | None:
        from botocore.exceptions import ClientError

        def read() -> Blob | None:
            try:
                found = self._client.get_object(Bucket=self.location.bucket, Key=self._key(key))
            except ClientError as exc:
                if self._missing(exc):
                    return None
                raise
            return Blob(found["Body"].read(), found["ETag"])

        return self._call("reading", key, read)

    def create(self, key: str, data: bytes) -> str:
        found = self._call("creating", key, lambda: self._client.put_object(
            Bucket=self.location.bucket, Key=self._key(key), Body=data, IfNoneMatch="*",
            ChecksumSHA256=_sha256_b64(data)))
        return str(found["ETag"])

    def replace(self, key: str, data: bytes, token: str) -> str:
        from botocore.exceptions import ClientError

        def write() -> str:
            try:
                found = self._client.put_object(Bucket=self.location.bucket, Key=self._key(key), Body=data,
                                                IfMatch=token, ChecksumSHA256=_sha256_b64(data))
            except ClientError as exc:
                if self._missing(exc):  # If-Match on a key that is gone
                    raise PreconditionFailed(f"{self._where(key)} was removed meanwhile") from None
                raise
            return str(found["ETag"])

        return self._call("replacing", key, write)

    def put(self, key: str, data: bytes) -> None:
        self._call("writing", key, lambda: self._client.put_object(
            Bucket=self.location.bucket, Key=self._key(key), Body=data, ChecksumSHA256=_sha256_b64(data)))

    def upload(self, key: str, path: Path) -> None:
        # the store verifies the SHA-256 of what arrives (of every part, for a multipart upload)
        self._call("uploading", key, lambda: self._client.upload_file(
            str(path), self.location.bucket, self._key(key), ExtraArgs={"ChecksumAlgorithm": "SHA256"}))

    def download(self, key: str, path: Path) -> bool:
        from botocore.exceptions import ClientError

        def fetch() -> bool:
            try:
                found = self._client.get_object(Bucket=self.location.bucket, Key=self._key(key))
            except ClientError as exc:
                if self._missing(exc):
                    return False
                raise
            with open(path, "xb") as out:
                for chunk in found["Body"].iter_chunks(1 << 20):
                    out.write(chunk)
            return True

        return self._call("downloading", key, fetch)

    def keys(self, prefix: str) -> list[str]:
        full = self._key(prefix.rstrip("/")) + "/" if prefix.strip("/") else (
            f"{self.location.prefix}/" if self.location.prefix else "")
        strip = len(f"{self.location.prefix}/") if self.location.prefix else 0

        def walk() -> list[str]:
            pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.location.bucket,
                                                                            Prefix=full)
            return sorted(item["Key"][strip:] for page in pages for item in page.get("Contents", []))

        return self._call("listing", prefix, walk)

    def children(self, prefix: str) -> list[str]:
        full = self._key(prefix.rstrip("/")) + "/" if prefix.strip("/") else (
            f"{self.location.prefix}/" if self.location.prefix else "")

        def walk() -> list[str]:
            pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.location.bucket,
                                                                            Prefix=full, Delimiter="/")
            return sorted(p["Prefix"][len(full):].rstrip("/") for page in pages
                          for p in page.get("CommonPrefixes", []))

        return self._call("listing", prefix, walk)

    def delete(self, key: str) -> None:
        self._call("deleting", key, lambda: self._client.delete_object(Bucket=self.location.bucket,
                                                                         Key=self._key(key)))


def _sha256_b64(data: bytes) -> str:
    """The checksum S3 verifies on arrival: a body damaged on the way is refused, never stored."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode()
