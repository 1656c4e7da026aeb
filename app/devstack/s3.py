"""An embedded S3 endpoint (moto server) only its owner can change, whose objects outlive it.

moto checks no credentials, so it listens on a Unix socket in a private folder and the gate
(`s3gate.py`) faces the TCP port: only requests signed with this stack's secret, form POSTs with
a signed policy, and anonymous reads of public objects get through.

moto keeps objects in memory only. `BucketMirror` copies the bucket through
the S3 API into a folder, every few seconds and once more at shutdown, and
puts the objects back when the stack starts again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

log = logging.getLogger(__name__)

ACCESS_KEY_ID = "monogram-local"
REGION = "us-east-1"
# Outside the service's prefixes (media/, sources/): the orphan sweep never sees it.
MIRROR_MARKER = ".monogram-mirror"


class EmbeddedS3:
    """moto on a private Unix socket, and the gate in front of it on `port`."""

    def __init__(self, port: int, secret_access_key: str | None = None) -> None:
        self.port = port
        self.endpoint_url = f"http://127.0.0.1:{port}"
        self.access_key_id = ACCESS_KEY_ID
        # Only this secret's holder may write, list or delete: a fresh one unless given.
        self.secret_access_key = secret_access_key or secrets.token_urlsafe(32)
        self._moto: subprocess.Popen[bytes] | None = None
        self._gate: subprocess.Popen[bytes] | None = None
        self._socket_dir: Path | None = None

    def start(self, timeout: float = 30.0) -> None:
        self._socket_dir = Path(tempfile.mkdtemp(prefix="monogram-s3-"))  # 0700
        moto_socket = self._socket_dir / "moto.sock"
        quiet: dict[str, Any] = {
            "stdin": subprocess.DEVNULL,
            "stdout": subprocess.DEVNULL,
            "stderr": subprocess.DEVNULL,
            # Their own session: Ctrl-C reaches only the runner, which stops them
            # after the last copy of the objects is taken.
            "start_new_session": True,
        }
        self._moto = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", f"unix://{moto_socket}"], **quiet
        )
        self._wait(lambda: _unix_answers(moto_socket), self._moto, "moto server", timeout)
        self._gate = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app.devstack.s3gate",
                "--port",
                str(self.port),
                "--upstream",
                str(moto_socket),
            ],
            env={
                **os.environ,
                "S3GATE_ACCESS_KEY_ID": self.access_key_id,
                "S3GATE_SECRET_ACCESS_KEY": self.secret_access_key,
            },
            **quiet,
        )
        self._wait(lambda: _tcp_answers(self.port), self._gate, "the S3 gate", timeout)
        log.info("s3 (moto behind its gate) running", extra={"endpoint": self.endpoint_url})

    def _wait(
        self, answers: Any, process: subprocess.Popen[bytes], name: str, timeout: float
    ) -> None:
        deadline = time.monotonic() + timeout
        while not answers():
            if process.poll() is not None:
                self.stop()
                raise RuntimeError(
                    f"{name} exited with {process.returncode}; is port {self.port} free?"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{name} did not answer within {timeout}s")
            time.sleep(0.05)

    @property
    def pid(self) -> int | None:
        """moto's process id, while it runs."""
        return None if self._moto is None else self._moto.pid

    @property
    def pids(self) -> tuple[int, ...]:
        """moto's and the gate's process ids, while they run: the S3 endpoint's CPU."""
        return tuple(p.pid for p in (self._moto, self._gate) if p is not None)

    def stop(self) -> None:
        if self._moto is None and self._gate is None:
            return
        for process in (self._gate, self._moto):
            if process is None:
                continue
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._moto = self._gate = None
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None
        log.info("s3 (moto) stopped")

    def client(self) -> Any:
        return s3_client(self.endpoint_url, self.secret_access_key)


def s3_client(endpoint_url: str, secret_access_key: str) -> Any:
    """A boto3 client holding the embedded stack's credentials."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=secret_access_key,
        config=Config(
            s3={"addressing_style": "path"}, retries={"max_attempts": 3}, signature_version="s3v4"
        ),
    )


def _unix_answers(path: Path) -> bool:
    """Whether an HTTP server answers on the Unix socket at `path`."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1)
            sock.connect(str(path))
            sock.sendall(b"GET /moto-api/ HTTP/1.0\r\nHost: s3\r\n\r\n")
            return sock.recv(12).startswith(b"HTTP/1.")
    except OSError:
        return False


def _tcp_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"HEAD / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            return sock.recv(12).startswith(b"HTTP/1.")
    except OSError:
        return False


@dataclass(frozen=True, slots=True)
class _Copy:
    etag: str
    content_type: str


class BucketMirror:
    """Keeps `folder` a copy of the bucket: one file per object, plus a manifest.

    A copy is only ever dropped when the object was deleted from the bucket the mirror restored
    into. If that bucket vanished, was made again, or lists empty while the manifest does not,
    nothing is deleted: the objects are put back instead.
    """

    def __init__(self, client: Any, bucket: str, folder: Path) -> None:
        self.client = client
        self.bucket = bucket
        self.folder = folder
        self._manifest_path = folder / "manifest.json"
        self._objects = folder / "objects"
        self._copies: dict[str, _Copy] = {}
        # A tag the mirror puts on the bucket it restored into: a bucket made again lacks it.
        self._bucket_id = secrets.token_hex(8)
        self._lock = threading.Lock()

    def restore(self) -> int:
        """Upload every saved object into the (empty) bucket; return how many."""
        with self._lock:
            _private_dir(self.folder)
            _private_dir(self._objects)
            restored = self._put_back(self._read_manifest())
            self._tag_bucket()
            self._write_manifest()
            return restored

    def _put_back(self, manifest: dict[str, _Copy]) -> int:
        for key, copy in manifest.items():
            path = self._existing_path(key)
            if path is None:
                log.warning("s3 mirror: %s is in the manifest but not on disk", key)
                continue
            response = self.client.put_object(
                Bucket=self.bucket, Key=key, Body=path.read_bytes(), ContentType=copy.content_type
            )
            self._copies[key] = _Copy(response["ETag"], copy.content_type)
        return len(self._copies)

    def sync(self) -> None:
        """Copy new objects to disk and drop the files of deleted ones."""
        with self._lock:
            _private_dir(self._objects)
            found = self._bucket_tag()
            if found is None:
                log.error("s3 mirror: bucket %s is gone; keeping every local copy", self.bucket)
                return
            if found != self._bucket_id:
                log.error(
                    "s3 mirror: bucket %s was made again; putting back %d objects",
                    self.bucket,
                    len(self._copies),
                )
                self._put_back(dict(self._copies))
                self._tag_bucket()
            seen: set[str] = set()
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket):
                for item in page.get("Contents", []):
                    key, etag = item["Key"], item["ETag"]
                    if key == MIRROR_MARKER:
                        continue
                    seen.add(key)
                    known = self._copies.get(key)
                    if known is None or known.etag != etag:
                        self._save_alone(key)
            gone = set(self._copies) - seen
            if gone and not seen:
                log.error(
                    "s3 mirror: bucket %s lists empty but %d objects were copied; keeping them",
                    self.bucket,
                    len(gone),
                )
            else:
                for key in gone:
                    self._path(key).unlink(missing_ok=True)
                    del self._copies[key]
            self._write_manifest()

    def _tag_bucket(self) -> None:
        self.client.put_object(Bucket=self.bucket, Key=MIRROR_MARKER, Body=self._bucket_id.encode())

    def _bucket_tag(self) -> str | None:
        """The mirror's marker in the bucket; "" if absent, None if there is no bucket.

        An object, not a bucket tag: moto keeps a deleted bucket's tags for a new one of its name.
        """
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=MIRROR_MARKER)["Body"].read()
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code")
            if code == "NoSuchBucket":
                return None
            if code == "NoSuchKey":
                return ""
            raise
        return str(body.decode(errors="replace"))

    def _save_alone(self, key: str) -> None:
        """Copies one object; a failure is logged for that key and tried again next time."""
        try:
            self._save(key)
        except Exception as error:
            log.warning("s3 mirror: could not copy %s (%s); will try again", key, error)

    def _save(self, key: str) -> None:
        response = self.client.get_object(Bucket=self.bucket, Key=key)
        body = response["Body"].read()
        path = self._path(key)
        _write_private(path, body)
        self._copies[key] = _Copy(
            response["ETag"], response.get("ContentType", "application/octet-stream")
        )

    def _path(self, key: str) -> Path:
        # A digest of the key: any legal key (up to 1,024 bytes) makes a short, safe file name.
        return self._objects / hashlib.sha256(key.encode()).hexdigest()

    def _existing_path(self, key: str) -> Path | None:
        path = self._path(key)
        if path.exists():
            return path
        # Mirrors written before file names were digests used the quoted key.
        legacy = quote(key, safe="")
        legacy = "%2E" + legacy[1:] if legacy.startswith(".") else legacy
        try:
            old = self._objects / legacy
            if old.exists():
                os.replace(old, path)
                return path
        except OSError:
            pass
        return None

    def _read_manifest(self) -> dict[str, _Copy]:
        if not self._manifest_path.exists():
            return {}
        raw = json.loads(self._manifest_path.read_text())
        return {key: _Copy(**value) for key, value in raw.items()}

    def _write_manifest(self) -> None:
        data = {
            key: {"etag": c.etag, "content_type": c.content_type} for key, c in self._copies.items()
        }
        _write_private(self._manifest_path, json.dumps(data).encode())


def _private_dir(path: Path) -> None:
    """Makes `path` and any missing parents 0700 from the start (private sources carry GPS)."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
    path.chmod(0o700)


def _write_private(path: Path, data: bytes) -> None:
    """Writes `data` to `path` atomically, the file 0600 from its creation."""
    tmp = path.with_name(path.name + ".partial")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.replace(tmp, path)
