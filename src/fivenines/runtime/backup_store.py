"""Where backups live: a local directory (owner-only) or S3 (boto3, the standard credential chain).

Both stores hold, per group, the backup objects (``ID.rdb``, ``ID.aof.tar``) and the
catalogue (``catalogue.json``) side by side: ``DIR/GROUP/...`` or
``s3://BUCKET/PREFIX/GROUP/...``. Every call blocks in a worker thread
(:func:`asyncio.to_thread`), never in the event loop that carries traffic.

* Local: directories fivenines creates are ``0700``, files ``0600``, each written to a
  temporary name and renamed into place, so a reader never sees half a file.
* S3: credentials come only from boto3's standard chain (environment, shared files,
  instance or task role): nothing in the spec holds a secret. ``server_side_encryption``
  (``AES256`` or ``aws:kms`` with an optional key) is sent with every object written.
  ``endpoint_url`` (spec) or ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` (boto3's own
  setting) points at an S3-compatible store.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Protocol

from fivenines.core.backup import BackupError
from fivenines.spec import BackupSpec

CHUNK = 1 << 20
CATALOGUE = "catalogue.json"
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _check_key(key: str) -> str:
    if not _KEY.fullmatch(key):
        raise BackupError(f"{key!r} is not a valid object name (letters, digits, . _ -)")
    return key


def private_dir(path: Path) -> Path:
    """Create ``path`` and any missing parents with mode 0700 (existing ones are left alone)."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(d, 0o700)  # the umask may have taken bits away; never added
    return path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _write_private(dest: Path, write: Any) -> None:
    """Write through ``write(fileobj)`` to a 0600 temporary file, fsync, rename onto ``dest``."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def copy_private(src: Path, dest: Path) -> None:
    def write(f: Any) -> None:
        with src.open("rb") as s:
            shutil.copyfileobj(s, f, CHUNK)

    _write_private(dest, write)


class ObjectStore(Protocol):
    """The few operations a backup needs from where it is kept."""

    where: str

    async def put_file(self, key: str, src: Path) -> None: ...

    async def get_file(self, key: str, dest: Path) -> None: ...

    async def sha256(self, key: str) -> str: ...

    async def delete(self, key: str) -> None: ...

    async def read_json(self, key: str) -> Any | None: ...

    async def write_json(self, key: str, data: Any) -> None: ...


class LocalStore:
    """A directory: ``DIR/GROUP``, 0700, files 0600."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.where = str(root)

    def __repr__(self) -> str:
        return f"<LocalStore {self.where}>"

    def path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def _ready(self) -> None:
        private_dir(self.root)

    def _missing(self, key: str) -> BackupError:
        return BackupError(f"{self.path(key)}: no such backup object")

    async def put_file(self, key: str, src: Path) -> None:
        def put() -> None:
            self._ready()
            copy_private(src, self.path(key))

        await self._io(key, put)

    async def get_file(self, key: str, dest: Path) -> None:
        def get() -> None:
            if not self.path(key).exists():
                raise self._missing(key)
            copy_private(self.path(key), dest)

        await self._io(key, get)

    async def sha256(self, key: str) -> str:
        def digest() -> str:
            if not self.path(key).exists():
                raise self._missing(key)
            return sha256_file(self.path(key))

        return str(await self._io(key, digest))

    async def delete(self, key: str) -> None:
        await self._io(key, lambda: self.path(key).unlink(missing_ok=True))

    async def read_json(self, key: str) -> Any | None:
        def read() -> Any | None:
            try:
                text = self.path(key).read_text(encoding="utf-8")
            except FileNotFoundError:
                return None
            try:
                return json.loads(text)
            except ValueError as exc:
                raise BackupError(f"{self.path(key)}: not JSON: {exc}") from None

        return await self._io(key, read)

    async def write_json(self, key: str, data: Any) -> None:
        body = json.dumps(data, indent=1).encode()

        def write() -> None:
            self._ready()
            _write_private(self.path(key), lambda f: f.write(body))

        await self._io(key, write)

    async def _io(self, key: str, fn: Any) -> Any:
        try:
            return await asyncio.to_thread(fn)
        except BackupError:
            raise
        except OSError as exc:
            raise BackupError(f"{self.root / key}: {exc.strerror or exc}") from None


class S3Store:
    """``s3://BUCKET/PREFIX/GROUP``: boto3, standard credential chain, SSE when asked."""

    def __init__(self, bucket: str, prefix: str, *, sse: str | None = None, kms_key_id: str | None = None,
                 region: str | None = None, endpoint_url: str | None = None) -> None:
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.where = f"s3://{bucket}/{self.prefix}"
        self.sse, self.kms_key_id = sse, kms_key_id
        self.region, self.endpoint_url = region, endpoint_url
        self._client: Any = None

    def __repr__(self) -> str:
        return f"<S3Store {self.where} sse={self.sse}>"

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{_check_key(key)}" if self.prefix else _check_key(key)

    def _extra(self) -> dict[str, str]:
        extra: dict[str, str] = {}
        if self.sse:
            extra["ServerSideEncryption"] = self.sse
            if self.kms_key_id:
                extra["SSEKMSKeyId"] = self.kms_key_id
        return extra

    def client(self) -> Any:
        if self._client is None:
            try:
                import boto3
            except ImportError:
                raise BackupError("backups to S3 need boto3: pip install 'fivenines[aws]'") from None
            session = boto3.session.Session(region_name=self.region)  # the standard credential chain
            self._client = session.client("s3", endpoint_url=self.endpoint_url)
        return self._client

    async def _call(self, what: str, key: str, fn: Any) -> Any:
        try:
            return await asyncio.to_thread(fn)
        except BackupError:
            raise
        except Exception as exc:  # botocore's errors: translated at the boundary
            code = getattr(exc, "response", {}).get("Error", {}).get("Code") if hasattr(exc, "response") else None
            raise BackupError(f"{self.where}/{key}: {what} failed: {code or type(exc).__name__}: {exc}") from exc

    async def put_file(self, key: str, src: Path) -> None:
        await self._call("upload", key, lambda: self.client().upload_file(
            str(src), self.bucket, self._key(key), ExtraArgs=self._extra() or None))

    async def get_file(self, key: str, dest: Path) -> None:
        def get() -> None:
            body = self.client().get_object(Bucket=self.bucket, Key=self._key(key))["Body"]

            def write(f: Any) -> None:
                while chunk := body.read(CHUNK):
                    f.write(chunk)

            _write_private(dest, write)

        await self._call("download", key, get)

    async def sha256(self, key: str) -> str:
        def digest() -> str:
            body = self.client().get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            h = hashlib.sha256()
            while chunk := body.read(CHUNK):
                h.update(chunk)
            return h.hexdigest()

        return str(await self._call("read back", key, digest))

    async def delete(self, key: str) -> None:
        await self._call("delete", key, lambda: self.client().delete_object(Bucket=self.bucket, Key=self._key(key)))

    async def read_json(self, key: str) -> Any | None:
        def read() -> Any | None:
            c = self.client()
            try:
                body = c.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
            except c.exceptions.NoSuchKey:
                return None
            try:
                return json.loads(body)
            except ValueError as exc:
                raise BackupError(f"{self.where}/{key}: not JSON: {exc}") from None

        return await self._call("read", key, read)

    async def write_json(self, key: str, data: Any) -> None:
        body = json.dumps(data, indent=1).encode()
        await self._call("write", key, lambda: self.client().put_object(
            Bucket=self.bucket, Key=self._key(key), Body=body, ContentType="application/json", **self._extra()))

    def head(self, key: str) -> dict[str, Any]:
        """The object's metadata (blocking; for status and tests: ServerSideEncryption, size)."""
        return dict(self.client().head_object(Bucket=self.bucket, Key=self._key(key)))


def open_store(spec: BackupSpec, group: str, base_dir: Path) -> LocalStore | S3Store:
    """The store of one group's backups: ``to`` plus the group's name."""
    _check_key(group)
    if spec.to.startswith("s3://"):
        bucket, _, prefix = spec.to[5:].partition("/")
        prefix = "/".join(p for p in (prefix.strip("/"), group) if p)
        return S3Store(bucket, prefix, sse=spec.server_side_encryption, kms_key_id=spec.kms_key_id,
                       region=spec.region, endpoint_url=spec.endpoint_url)
    return LocalStore((base_dir / spec.to).resolve() / group)
