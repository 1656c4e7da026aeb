"""An embedded S3 endpoint (moto server) whose objects outlive it.

moto keeps objects in memory only. `BucketMirror` copies the bucket through
the S3 API into a folder, every few seconds and once more at shutdown, and
puts the objects back when the stack starts again.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
from botocore.config import Config

log = logging.getLogger(__name__)

# moto accepts any credentials; these only satisfy the signing code.
ACCESS_KEY_ID = "monogram-local"
SECRET_ACCESS_KEY = "monogram-local-secret"  # noqa: S105
REGION = "us-east-1"


class EmbeddedS3:
    def __init__(self, port: int) -> None:
        self.port = port
        self.endpoint_url = f"http://127.0.0.1:{port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own session: Ctrl-C reaches only the runner, which stops moto
            # after the last copy of the objects is taken.
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"moto server exited with {self._process.returncode}; is port {self.port} free?"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"moto server did not answer on port {self.port} within {timeout}s"
                )
            time.sleep(0.05)
        log.info("s3 (moto) running", extra={"endpoint": self.endpoint_url})

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None
        log.info("s3 (moto) stopped")

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=1) as response:  # noqa: S310
                return bool(response.status == 200)
        except OSError:
            return False

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
        )


@dataclass(frozen=True, slots=True)
class _Copy:
    etag: str
    content_type: str


class BucketMirror:
    """Keeps `folder` equal to the bucket: one file per object, plus a manifest."""

    def __init__(self, client: Any, bucket: str, folder: Path) -> None:
        self.client = client
        self.bucket = bucket
        self.folder = folder
        self._manifest_path = folder / "manifest.json"
        self._objects = folder / "objects"
        self._copies: dict[str, _Copy] = {}
        self._lock = threading.Lock()

    def restore(self) -> int:
        """Upload every saved object into the (empty) bucket; return how many."""
        self._objects.mkdir(parents=True, exist_ok=True)
        manifest = self._read_manifest()
        for key, copy in manifest.items():
            path = self._path(key)
            if not path.exists():
                log.warning("s3 mirror: %s is in the manifest but not on disk", key)
                continue
            response = self.client.put_object(
                Bucket=self.bucket, Key=key, Body=path.read_bytes(), ContentType=copy.content_type
            )
            self._copies[key] = _Copy(response["ETag"], copy.content_type)
        self._write_manifest()
        return len(self._copies)

    def sync(self) -> None:
        """Copy new objects to disk and drop the files of deleted ones."""
        with self._lock:
            self._objects.mkdir(parents=True, exist_ok=True)
            seen: set[str] = set()
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket):
                for item in page.get("Contents", []):
                    key, etag = item["Key"], item["ETag"]
                    seen.add(key)
                    known = self._copies.get(key)
                    if known is None or known.etag != etag:
                        self._save(key)
            for key in set(self._copies) - seen:
                self._path(key).unlink(missing_ok=True)
                del self._copies[key]
            self._write_manifest()

    def _save(self, key: str) -> None:
        response = self.client.get_object(Bucket=self.bucket, Key=key)
        body = response["Body"].read()
        path = self._path(key)
        tmp = path.with_name(path.name + ".partial")
        tmp.write_bytes(body)
        os.replace(tmp, path)
        self._copies[key] = _Copy(
            response["ETag"], response.get("ContentType", "application/octet-stream")
        )

    def _path(self, key: str) -> Path:
        # One flat folder; every "/" and a leading "." are escaped, so no key
        # can name a path outside it.
        name = quote(key, safe="")
        if name.startswith("."):
            name = "%2E" + name[1:]
        return self._objects / name

    def _read_manifest(self) -> dict[str, _Copy]:
        if not self._manifest_path.exists():
            return {}
        raw = json.loads(self._manifest_path.read_text())
        return {key: _Copy(**value) for key, value in raw.items()}

    def _write_manifest(self) -> None:
        data = {
            key: {"etag": c.etag, "content_type": c.content_type} for key, c in self._copies.items()
        }
        tmp = self._manifest_path.with_suffix(".partial")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self._manifest_path)
