"""A bucket on S3 or any S3-compatible endpoint, through boto3.

Objects are written once: small entries with a conditional ``put_object`` and larger ones with a
multipart upload driven by hand, both with ``If-None-Match: *``, so an existing archive is never
replaced. A multipart upload that fails for any reason is aborted, leaving no object behind.
Each carries its SHA-256 in its metadata. An object written elsewhere without one is checked
by its ETag where that is its MD5: uploaded in one part, and not with SSE-KMS or SSE-C.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import boto3
import botocore.loaders
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, DataNotFoundError

from archiver.core.encryption import Keyring
from archiver.core.integrity import Recorded
from archiver.errors import (
    EntryChanged,
    SinkError,
    SinkUnusable,
    WriteOnceUnsupported,
    WriteUnderWay,
)
from archiver.sinks.base import (
    DELETE_BATCH,
    Digests,
    Download,
    Source,
    StoredObject,
    Writable,
    WriteOutcome,
    WriteResult,
    hashing,
)
from archiver.sinks.urls import (
    CONNECT_TIMEOUT,
    MAX_ATTEMPTS,
    READ_TIMEOUT,
    S3Location,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

log = logging.getLogger(__name__)

_PRECONDITION_FAILED = {"PreconditionFailed", "412"}
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
# Answers that will not change by trying again: the bucket is gone, or this host may not use it.
# A bare 403 is left out: HEAD answers carry no code, and a clock skew or an expiring token
# gives one too.
_REFUSED_FOR_GOOD = {
    "404",
    "AccessDenied",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "InvalidBucketName",
    "NoSuchBucket",
    "SignatureDoesNotMatch",
}
# Object metadata key of the SHA-256 of an archive's bytes (x-amz-meta-sha256).
CHECKSUM_METADATA = "sha256"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MD5 = re.compile(r"[0-9a-f]{32}")
# Server-side encryption whose ETags are not the MD5 of the object.
_ETAG_NOT_MD5 = {"aws:kms": "SSE-KMS", "aws:kms:dsse": "DSSE-KMS"}
# Where ``probe`` writes: a name no storage, partition or archive can have.
PROBE_PREFIX = ".archiver-probe/"

# Every call has a deadline: a black-holed endpoint becomes a failed attempt, never a hang.
# Entries smaller than one part go up in a single request.
CLIENT_CONFIG = Config(
    connect_timeout=CONNECT_TIMEOUT,
    read_timeout=READ_TIMEOUT,
    retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
    # Recent boto3 sends checksums some S3-compatible servers reject.
    request_checksum_calculation="when_required",
    response_checksum_validation="when_required",
    # A threads pool shares one client between its uploads (botocore's default is 10
    # connections); connections are opened only as they are needed.
    max_pool_connections=128,
)


# The S3 model and endpoint rules, read once per process instead of once per client. A worker
# host reads them before its pool forks (``preload``), so each worker process starts with them.
_LOADER = botocore.loaders.create_loader()


def preload() -> None:
    """Read what every S3 client needs now: a client made after this takes a fraction of the
    time (about 50 ms instead of 100 ms, plus the imports)."""
    try:
        for model in ("service-2", "endpoint-rule-set-1"):
            _LOADER.load_service_model("s3", model)
        for data in ("partitions", "sdk-default-configuration", "_retry", "endpoints"):
            _LOADER.load_data(data)
    except DataNotFoundError:  # another botocore release: its clients load what they need
        log.debug("S3 client data not preloaded", exc_info=True)


def _session() -> boto3.session.Session:
    """A session of its own (sessions are not thread-safe), reading through the shared loader."""
    core = botocore.session.Session()
    core.register_component("data_loader", _LOADER)
    return boto3.session.Session(botocore_session=core)


def _send_body_at_once(request: Any, **_: Any) -> None:
    """A single-part upload sends its body without waiting for ``100 Continue`` first, which
    botocore asks for by default: that wait is a round trip per entry, the larger part of a
    small entry's time when the store is far away. The body is below the part size, so little
    is sent in vain when the store refuses it (412 for an existing object). Parts of
    multipart uploads keep the wait."""
    if "Expect" in request.headers:
        del request.headers["Expect"]


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3Sink:
    def __init__(
        self, client: S3Client, location: S3Location, keyring: Keyring | None = None
    ) -> None:
        self.client = client
        self.keyring = keyring or Keyring()
        self.bucket = location.bucket
        self.prefix = location.prefix + "/" if location.prefix else ""
        self.part_size = location.part_size
        self.etag_is_md5 = location.etag_is_md5
        # Server-side encryption arguments passed with every upload.
        self.encryption_args: dict[str, Any] = {}
        if location.encryption:
            self.encryption_args["ServerSideEncryption"] = location.encryption
        if location.kms_key_id:
            self.encryption_args["SSEKMSKeyId"] = location.kms_key_id
        client.meta.events.register_first("before-sign.s3.PutObject", _send_body_at_once)

    @classmethod
    def at(cls, location: S3Location, keyring: Keyring | None = None) -> S3Sink:
        """Credentials come from boto3's usual chain."""
        overrides = Config(
            s3=cast(Any, {"addressing_style": location.addressing_style}),
            connect_timeout=location.connect_timeout,
            read_timeout=location.read_timeout,
            retries={"max_attempts": location.max_attempts, "mode": "standard"},
        )
        client = _session().client(
            "s3",
            endpoint_url=location.endpoint_url,
            region_name=location.region,
            config=CLIENT_CONFIG.merge(overrides),
        )
        return cls(client, location, keyring)

    def describe(self) -> str:
        endpoint = self.client.meta.endpoint_url
        return f"s3://{self.bucket}/{self.prefix} at {endpoint}"

    def _key(self, key: str) -> str:
        return self.prefix + key

    def exists(self, key: str) -> bool:
        with _failures(f"checking {key}"):
            try:
                self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as exc:
                if _error_code(exc) in _NOT_FOUND:
                    return False
                raise
        return True

    def write(
        self, key: str, source: Source, metadata: Mapping[str, str] | None = None
    ) -> WriteResult:
        stream = source()
        first = _take(stream, self.part_size)
        sha256 = None
        try:
            if len(first) < self.part_size:
                sha256 = hashlib.sha256(first).hexdigest()
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=self._key(key),
                    Body=first,
                    IfNoneMatch="*",
                    Metadata={**(metadata or {}), CHECKSUM_METADATA: sha256},
                    **self.encryption_args,
                )
                return WriteResult(WriteOutcome.CREATED, len(first), sha256)
            # The checksum goes into the object's metadata, which S3 takes when the upload
            # starts: hash a first pass, then upload a second one and check it matched.
            digest = hashlib.sha256(first)
            for chunk in stream:
                digest.update(chunk)
            sha256 = digest.hexdigest()
            # Not worth uploading a large object only to be refused at the end.
            if self.exists(key):
                return WriteResult(WriteOutcome.ALREADY_EXISTS, None, sha256)
            return self._write_multipart(key, source, sha256, metadata or {})
        except ClientError as exc:
            if _error_code(exc) in _PRECONDITION_FAILED and sha256 is not None:
                return WriteResult(WriteOutcome.ALREADY_EXISTS, None, sha256)
            if _error_code(exc) == "ConditionalRequestConflict":
                # Another conditional write of this key is under way (a duplicate delivery):
                # not the store failing, so no reason for the fleet to back off.
                raise WriteUnderWay(f"writing {key}: {exc}") from exc
            raise _translated(f"writing {key}", exc) from exc
        except BotoCoreError as exc:
            raise _translated(f"writing {key}", exc) from exc

    def _write_multipart(
        self, key: str, source: Source, sha256: str, metadata: Mapping[str, str]
    ) -> WriteResult:
        s3_key = self._key(key)
        upload_id = self.client.create_multipart_upload(
            Bucket=self.bucket,
            Key=s3_key,
            Metadata={**metadata, CHECKSUM_METADATA: sha256},
            **self.encryption_args,
        )["UploadId"]
        completed = False
        try:
            parts: list[CompletedPartTypeDef] = []
            size = 0
            digest = hashlib.sha256()
            stream = hashing(source(), digest)
            while body := _take(stream, self.part_size):
                number = len(parts) + 1
                response = self.client.upload_part(
                    Bucket=self.bucket, Key=s3_key, UploadId=upload_id, PartNumber=number, Body=body
                )
                parts.append({"ETag": response["ETag"], "PartNumber": number})
                size += len(body)
            if digest.hexdigest() != sha256:
                raise EntryChanged(f"{key}: the entry changed while it was being uploaded")
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=s3_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                IfNoneMatch="*",
            )
            completed = True
            return WriteResult(WriteOutcome.CREATED, size, sha256)
        finally:
            if not completed:
                self._abort(s3_key, upload_id)

    def _abort(self, s3_key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=s3_key, UploadId=upload_id)
        except (ClientError, BotoCoreError):
            # The bucket's lifecycle rule for incomplete uploads is the backstop.
            log.warning("could not abort multipart upload %s of %s", upload_id, s3_key)

    def list(self, prefix: str) -> Iterator[StoredObject]:
        paginator = self.client.get_paginator("list_objects_v2")
        with _failures(f"listing {prefix}"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                for item in page.get("Contents", []):
                    yield StoredObject(item["Key"][len(self.prefix) :], item["Size"])

    def list_directories(self, prefix: str) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        start = len(self._key(prefix))
        with _failures(f"listing {prefix}"):
            for page in paginator.paginate(
                Bucket=self.bucket, Prefix=self._key(prefix), Delimiter="/"
            ):
                for common in page.get("CommonPrefixes", []):
                    yield common["Prefix"][start:].rstrip("/")

    def leftovers(self, prefix: str) -> Sequence[str]:
        paginator = self.client.get_paginator("list_multipart_uploads")
        found = []
        with _failures(f"listing uploads under {prefix}"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                for upload in page.get("Uploads", []):
                    key = upload["Key"][len(self.prefix) :]
                    found.append(f"{key} (incomplete multipart upload {upload['UploadId']})")
        return found

    def download(self, key: str, out: Writable) -> Download:
        size = 0
        with _failures(f"reading {key}"):
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            recorded = recorded_by_s3(response, self.etag_is_md5)
            digests = Digests(md5=recorded.needs_md5)
            for chunk in response["Body"].iter_chunks(1024 * 1024):
                digests.update(chunk)
                out.write(chunk)
                size += len(chunk)
        return Download(size, digests.sha256, digests.md5, recorded, response.get("Metadata", {}))

    def metadata(self, key: str) -> Mapping[str, str]:
        with _failures(f"checking {key}"):
            response = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        return dict(response.get("Metadata", {}))

    def pending_metadata(self, key: str) -> Mapping[str, str] | None:
        """An S3 upload leaves nothing behind until it completes."""
        return None

    def replace_metadata(self, key: str, updates: Mapping[str, str]) -> None:
        """A copy of the object onto itself, made by S3 (objects up to 5 GiB), only if it is
        still the object whose metadata was read."""
        s3_key = self._key(key)
        with _failures(f"updating the metadata of {key}"):
            head = self.client.head_object(Bucket=self.bucket, Key=s3_key)
            metadata = {**head.get("Metadata", {}), **updates}
            if CHECKSUM_METADATA in head.get("Metadata", {}):
                metadata[CHECKSUM_METADATA] = head["Metadata"][CHECKSUM_METADATA]
            extra: dict[str, Any] = dict(self.encryption_args)
            for field in ("ContentType", "StorageClass", "ServerSideEncryption", "SSEKMSKeyId"):
                if head.get(field) and not (field == "StorageClass" and head[field] == "STANDARD"):
                    extra[field] = head[field]
            self.client.copy_object(
                Bucket=self.bucket,
                Key=s3_key,
                CopySource={"Bucket": self.bucket, "Key": s3_key},
                CopySourceIfMatch=head["ETag"],
                Metadata=metadata,
                MetadataDirective="REPLACE",
                **extra,
            )

    def recorded(self, key: str) -> Recorded:
        with _failures(f"checking {key}"):
            response = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        return recorded_by_s3(response, self.etag_is_md5)

    def confirm_archived(self, key: str, download: Download | None) -> None:
        """An object S3 has listed is durable, and every object this sink writes carries its
        checksum from the start; one from elsewhere keeps what it has, since adding metadata
        would mean rewriting it."""

    def delete(self, keys: Sequence[str]) -> None:
        if len(keys) > DELETE_BATCH:
            raise ValueError(f"at most {DELETE_BATCH} keys per delete")
        if not keys:
            return
        with _failures(f"deleting {len(keys)} objects"):
            response = self.client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": self._key(k)} for k in keys], "Quiet": True},
            )
        errors = response.get("Errors", [])
        if errors:
            raise SinkError(f"deleting objects failed for {len(errors)} keys: {errors[:3]}")

    def probe(self) -> None:
        """Also proves the store honours ``If-None-Match: *``, on which write-once rests:
        a store that ignores it would let a late writer replace an archive."""
        key = self._key(f"{PROBE_PREFIX}{uuid.uuid4().hex}")
        where = f"s3://{self.bucket}/{key}"
        with _failures(f"cannot write to s3://{self.bucket}/{self.prefix}", for_good=True):
            self.client.head_bucket(Bucket=self.bucket)
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=b"1", IfNoneMatch="*", **self.encryption_args
            )
        try:
            with _failures(f"probing create-once writes at {where}", for_good=True):
                try:
                    self.client.put_object(
                        Bucket=self.bucket,
                        Key=key,
                        Body=b"2",
                        IfNoneMatch="*",
                        **self.encryption_args,
                    )
                except ClientError as exc:
                    if _error_code(exc) in _PRECONDITION_FAILED:
                        return  # refused, as it must be
                    raise
            raise WriteOnceUnsupported(
                f"the S3 store at s3://{self.bucket}/ ignores If-None-Match: a second create "
                f"of {key} replaced the first, so an archive could be overwritten; refusing "
                "to archive into it"
            )
        finally:
            try:
                self.client.delete_object(Bucket=self.bucket, Key=key)
            except (ClientError, BotoCoreError):
                log.warning("could not delete the probe object %s", where)

    def read(self, key: str) -> bytes:
        with _failures(f"reading {key}"):
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            data: bytes = response["Body"].read()
        return data


def recorded_by_s3(response: Any, etag_is_md5: bool = True) -> Recorded:
    """What a GET or HEAD answer says of the object's bytes: the SHA-256 in its metadata, or
    else the ETag, where that is the MD5 (and the store's ETags are MD5s at all)."""
    sha256 = response.get("Metadata", {}).get(CHECKSUM_METADATA)
    if sha256 is not None:
        if not _SHA256.fullmatch(sha256):
            return Recorded(damaged=f"its x-amz-meta-{CHECKSUM_METADATA} is not a SHA-256")
        return Recorded(sha256=sha256)
    etag = str(response.get("ETag", "")).strip('"').lower()
    encryption = _ETAG_NOT_MD5.get(str(response.get("ServerSideEncryption", "")))
    if response.get("SSECustomerAlgorithm"):
        encryption = "SSE-C"
    if not etag_is_md5:
        why = "this store's ETags are not taken as MD5s (etag_is_md5=false)"
    elif encryption is not None:
        why = f"it is stored with {encryption}, so its ETag is not its MD5"
    elif "-" in etag:
        parts = etag.rpartition("-")[2]
        why = f"it was uploaded in {parts} parts, so its ETag is not its MD5"
    elif _MD5.fullmatch(etag):
        return Recorded(md5=etag)
    else:
        why = f"its ETag ({etag or 'none'}) is not an MD5"
    return Recorded(missing=f"no SHA-256 was recorded for it, and {why}")


def _translated(doing: str, exc: ClientError | BotoCoreError, for_good: bool = False) -> SinkError:
    """The one translation of the S3 client's errors: a SinkError naming what was being done;
    with ``for_good``, a SinkUnusable where the code says the store refuses us for good (the
    bucket deleted, access denied) rather than failing for now."""
    refused = isinstance(exc, ClientError) and _error_code(exc) in _REFUSED_FOR_GOOD
    kind = SinkUnusable if for_good and refused else SinkError
    return kind(f"{doing}: {exc}")


@contextlib.contextmanager
def _failures(doing: str, for_good: bool = False) -> Iterator[None]:
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise _translated(doing, exc, for_good) from exc


def _take(stream: Iterator[bytes], size: int) -> bytes:
    """Up to ``size`` bytes from ``stream`` (a chunk may overshoot); fewer only at its end."""
    buffer = bytearray()
    for chunk in stream:
        buffer += chunk
        if len(buffer) >= size:
            break
    return bytes(buffer)
