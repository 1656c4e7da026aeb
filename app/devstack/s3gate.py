"""The embedded S3 endpoint's front door: moto answers only requests the bucket's owner signed.

moto runs without authentication: any local process, or a web page in the developer's browser,
could list every key, write objects, or call `/moto-api/reset`. So moto listens on a Unix socket
in a private folder, and this gate, on the TCP port, passes a request on only if it is
- signed with the stack's credentials (AWS Signature Version 4, in the Authorization header or a
  presigned URL's query), and within its time window: S3 calls, and SQS calls (the media job
  queue), which moto serves on the same endpoint;
- a browser form POST whose policy carries a valid signature, is not expired, and whose
  conditions the form meets (moto stores a form POST without checking any of this);
- an anonymous GET or HEAD of an object the bucket's policy makes public (`media/*`), or a CORS
  preflight.
Everything else, `/moto-api` included, is refused with S3's own error shape.

Run by `EmbeddedS3`: `python -m app.devstack.s3gate --port P --upstream SOCKET`, with the
credentials in S3GATE_ACCESS_KEY_ID and S3GATE_SECRET_ACCESS_KEY.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import fnmatch
import hashlib
import hmac
import json
import os
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

import aiohttp
from aiohttp import web
from aiohttp.helpers import parse_mimetype
from aiohttp.multipart import parse_content_disposition
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict
from yarl import URL

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_CLOCK_SKEW = dt.timedelta(minutes=15)
MAX_BODY = 64 * 1024 * 1024
UNSIGNED_PAYLOADS = {"UNSIGNED-PAYLOAD", "STREAMING-UNSIGNED-PAYLOAD-TRAILER"}
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "upgrade",
    "expect",
    "proxy-authorization",
    "proxy-authenticate",
    "content-length",
}
POLICY_CACHE_SECONDS = 1.0


class Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key_id: str
    secret_access_key: str


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = f"AWS4{secret}".encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _sign(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def _uri_encode(text: str) -> str:
    return quote(text, safe="-_.~")


def canonical_query(raw_query: str, drop: str | None = None) -> str:
    pairs = [
        (_uri_encode(k), _uri_encode(v))
        for k, v in parse_qsl(raw_query, keep_blank_values=True)
        if k != drop
    ]
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def _amz_time(text: str) -> dt.datetime:
    try:
        return dt.datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        raise Refused("AccessDenied", "X-Amz-Date is not a date") from None


def _scope(credential: str, credentials: Credentials) -> tuple[str, str, str, str]:
    """(date, region, service, scope) of a `AKID/date/region/service/aws4_request` credential."""
    parts = credential.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        raise Refused("AuthorizationQueryParametersError", "the credential scope is malformed")
    if not hmac.compare_digest(parts[0], credentials.access_key_id):
        raise Refused("InvalidAccessKeyId", "the access key id is not this stack's")
    return parts[1], parts[2], parts[3], "/".join(parts[1:])


@dataclass(frozen=True, slots=True)
class SignedRequest:
    method: str
    raw_path: str  # as sent, already URI-encoded: S3 signs it without encoding it again
    raw_query: str
    headers: CIMultiDictProxy[str]
    body: bytes


def verify_signature(request: SignedRequest, credentials: Credentials, now: dt.datetime) -> None:
    """Raises Refused unless the request carries a valid SigV4 signature, header or presigned."""
    query = MultiDict(parse_qsl(request.raw_query, keep_blank_values=True))
    if "X-Amz-Signature" in query:
        if query.get("X-Amz-Algorithm") != ALGORITHM:
            raise Refused("AuthorizationQueryParametersError", "only AWS4-HMAC-SHA256 is accepted")
        credential = query.get("X-Amz-Credential", "")
        signed_headers = query.get("X-Amz-SignedHeaders", "")
        signature = query["X-Amz-Signature"]
        amz_date = query.get("X-Amz-Date", "")
        try:
            expires = int(query.get("X-Amz-Expires", ""))
        except ValueError:
            raise Refused("AuthorizationQueryParametersError", "X-Amz-Expires is missing") from None
        signed_at = _amz_time(amz_date)
        if not 0 < expires <= 7 * 24 * 3600 or now > signed_at + dt.timedelta(seconds=expires):
            raise Refused("AccessDenied", "Request has expired")
        payload_hash = "UNSIGNED-PAYLOAD"
        canonical_qs = canonical_query(request.raw_query, drop="X-Amz-Signature")
    else:
        authorization = request.headers.get("Authorization", "")
        match = re.fullmatch(
            ALGORITHM + r" Credential=([^,]+), ?SignedHeaders=([^,]+), ?Signature=([0-9a-f]{64})",
            authorization.strip(),
        )
        if match is None:
            raise Refused("AccessDenied", "Access Denied: the request is not signed")
        credential, signed_headers, signature = match.groups()
        amz_date = request.headers.get("X-Amz-Date", "")
        signed_at = _amz_time(amz_date)
        if abs(now - signed_at) > MAX_CLOCK_SKEW:
            raise Refused("RequestTimeTooSkewed", "the request's time is too far from now")
        body_hash = hashlib.sha256(request.body).hexdigest()
        # S3 names the body's hash in a header; other services (SQS, the media job queue, on
        # the same endpoint) sign the body's hash without one.
        payload_hash = request.headers.get("X-Amz-Content-Sha256", body_hash)
        hashed = payload_hash not in UNSIGNED_PAYLOADS and not payload_hash.startswith("STREAMING-")
        if hashed and payload_hash != body_hash:
            raise Refused("XAmzContentSHA256Mismatch", "the body is not the one signed")
        canonical_qs = canonical_query(request.raw_query)

    date, region, service, scope = _scope(credential, credentials)
    if not amz_date.startswith(date):
        raise Refused("AccessDenied", "the credential's date is not the request's")
    names = signed_headers.split(";")
    if "host" not in names:
        raise Refused("AccessDenied", "the Host header must be signed")
    canonical_headers = "".join(
        f"{name}:{' '.join(','.join(request.headers.getall(name, [])).split())}\n" for name in names
    )
    canonical_request = "\n".join(
        [
            request.method,
            request.raw_path or "/",
            canonical_qs,
            canonical_headers,
            signed_headers,
            payload_hash,
        ]
    )
    string_to_sign = "\n".join(
        [ALGORITHM, amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    expected = _sign(
        signing_key(credentials.secret_access_key, date, region, service), string_to_sign
    )
    if not hmac.compare_digest(expected, signature):
        raise Refused("SignatureDoesNotMatch", "the signature does not match")


# Form fields that a POST policy need not name (AWS's rules).
_FIELDS_WITHOUT_CONDITIONS = {"policy", "x-amz-signature", "signature", "awsaccesskeyid", "file"}


def verify_post_policy(
    fields: dict[str, str],
    file_size: int,
    bucket: str,
    credentials: Credentials,
    now: dt.datetime,
) -> None:
    """Raises Refused unless a browser form POST meets the signed policy it carries."""
    lowered = {k.lower(): v for k, v in fields.items()}
    policy_b64 = lowered.get("policy")
    if not policy_b64:
        raise Refused("AccessDenied", "a form POST needs a signed policy")
    if "awsaccesskeyid" in lowered:  # Signature Version 2, boto3's default for form POSTs
        if not hmac.compare_digest(lowered["awsaccesskeyid"], credentials.access_key_id):
            raise Refused("InvalidAccessKeyId", "the access key id is not this stack's")
        digest = hmac.new(
            credentials.secret_access_key.encode(), policy_b64.encode(), hashlib.sha1
        ).digest()
        expected, given = base64.b64encode(digest).decode(), lowered.get("signature", "")
    elif lowered.get("x-amz-algorithm") == ALGORITHM:
        date, region, service, _ = _scope(lowered.get("x-amz-credential", ""), credentials)
        key = signing_key(credentials.secret_access_key, date, region, service)
        expected, given = _sign(key, policy_b64), lowered.get("x-amz-signature", "")
    else:
        raise Refused("InvalidArgument", "the form names no signature algorithm")
    if not hmac.compare_digest(expected, given):
        raise Refused("SignatureDoesNotMatch", "the policy's signature does not match")
    try:
        policy = json.loads(base64.b64decode(policy_b64, validate=True))
        expiration = dt.datetime.fromisoformat(policy["expiration"].replace("Z", "+00:00"))
        conditions = policy["conditions"]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise Refused("InvalidPolicyDocument", "the policy is not a policy document") from None
    if now > expiration:
        raise Refused("AccessDenied", "Invalid according to Policy: Policy expired")
    values = {**lowered, "bucket": bucket}
    named: set[str] = set()
    for condition in conditions:
        name = _check_condition(condition, values, file_size)
        if name:
            named.add(name)
    unnamed = set(lowered) - named - _FIELDS_WITHOUT_CONDITIONS
    unnamed = {f for f in unnamed if not f.startswith("x-ignore-")}
    if unnamed:
        raise Refused(
            "AccessDenied",
            f"Invalid according to Policy: Extra input fields: {', '.join(sorted(unnamed))}",
        )


def _check_condition(condition: Any, values: dict[str, str], file_size: int) -> str | None:
    """Checks one condition; returns the field it names, if any."""
    violated = Refused("AccessDenied", f"Invalid according to Policy: {condition} failed")
    if isinstance(condition, dict) and len(condition) == 1:
        ((name, expected),) = condition.items()
        field = str(name).lower()
        if values.get(field) != expected:
            raise violated
        return field
    if isinstance(condition, list) and len(condition) == 3:
        operator, field, expected = condition
        if operator == "content-length-range":
            if not int(field) <= file_size <= int(expected):
                raise violated
            return None
        if not isinstance(field, str) or not field.startswith("$"):
            raise violated
        field = field[1:].lower()
        actual = values.get(field)
        if actual is None:
            raise violated
        if operator == "eq" and actual != expected:
            raise violated
        if operator == "starts-with" and not actual.startswith(expected):
            raise violated
        if operator not in {"eq", "starts-with"}:
            raise violated
        return field
    raise Refused("InvalidPolicyDocument", f"unknown policy condition: {condition}")


class PublicReads:
    """Which keys anyone may GET: the Allow statements of each bucket's policy, as moto holds it."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session
        self._patterns: dict[str, tuple[float, list[str]]] = {}

    async def allows(self, bucket: str, key: str) -> bool:
        cached = self._patterns.get(bucket)
        if cached is None or time.monotonic() - cached[0] > POLICY_CACHE_SECONDS:
            cached = (time.monotonic(), await self._read(bucket))
            self._patterns[bucket] = cached
        resource = f"arn:aws:s3:::{bucket}/{key}"
        return any(fnmatch.fnmatchcase(resource, pattern) for pattern in cached[1])

    async def _read(self, bucket: str) -> list[str]:
        async with self._session.get(f"http://s3/{quote(bucket)}?policy") as response:
            if response.status != 200:
                return []
            try:
                policy = json.loads(await response.read())
            except ValueError:
                return []
        patterns: list[str] = []
        for statement in policy.get("Statement", []):
            actions = statement.get("Action", [])
            actions = [actions] if isinstance(actions, str) else actions
            resources = statement.get("Resource", [])
            resources = [resources] if isinstance(resources, str) else resources
            if (
                statement.get("Effect") == "Allow"
                and statement.get("Principal") in ("*", {"AWS": "*"})
                and ("s3:GetObject" in actions or "s3:*" in actions)
            ):
                patterns += resources
        return patterns


def _refusal(error: Refused, status: int = 403) -> web.Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{error.code}</Code><Message>{_xml_escape(error.message)}</Message></Error>"
    )
    return web.Response(status=status, body=body.encode(), content_type="application/xml")


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _form_fields(content_type: str, body: bytes) -> tuple[dict[str, str], int]:
    """The text fields of a multipart form before its file, and the file's size.

    Read with bytes.find over the body, which the gate holds whole: the email parser this
    replaced took 60 ms of CPU per 2 MB form, the embedded S3's bottleneck under load.
    """
    boundary = parse_mimetype(content_type).parameters.get("boundary", "")
    if not boundary:
        raise Refused("MalformedPOSTRequest", "the body is not a multipart form")
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    position = body.find(delimiter[2:])
    if position < 0:
        raise Refused("MalformedPOSTRequest", "the body is not a multipart form")
    position += len(delimiter) - 2
    fields: dict[str, str] = {}
    while not body.startswith(b"--", position):
        headers_start = body.find(b"\r\n", position) + 2
        headers_end = body.find(b"\r\n\r\n", headers_start - 2)
        end = body.find(delimiter, headers_end + 4)
        if headers_start < 2 or headers_end < 0 or end < 0:
            raise Refused("MalformedPOSTRequest", "a form part is broken")
        name = _part_name(body[headers_start:headers_end].decode("latin-1"))
        if name.lower() == "file":
            return fields, end - (headers_end + 4)  # S3 ignores fields after the file
        fields[name] = body[headers_end + 4 : end].decode("utf-8", errors="replace")
        position = end + len(delimiter)
    raise Refused("InvalidArgument", "the form has no file")


def _part_name(headers: str) -> str:
    for line in headers.split("\r\n"):
        header, _, value = line.partition(":")
        if header.strip().lower() == "content-disposition":
            _, params = parse_content_disposition(value.strip())
            if params.get("name"):
                return params["name"]
    raise Refused("MalformedPOSTRequest", "a form part has no name")


CREDENTIALS = web.AppKey("credentials", Credentials)
UPSTREAM = web.AppKey("upstream", aiohttp.ClientSession)
PUBLIC = web.AppKey("public", PublicReads)


async def admit(request: web.Request, body: bytes) -> None:
    """Raises Refused unless the request may reach moto."""
    raw_path, _, raw_query = request.raw_path.partition("?")
    path = unquote(raw_path)
    if path.startswith("/moto-api"):
        raise Refused("NoSuchKey", "not found")
    if request.method == "OPTIONS":
        return  # CORS preflight: moto answers it from the bucket's CORS rules
    credentials = request.app[CREDENTIALS]
    now = dt.datetime.now(dt.UTC)
    signed = "Authorization" in request.headers or "X-Amz-Signature" in raw_query
    if signed:
        verify_signature(
            SignedRequest(request.method, raw_path, raw_query, request.headers, body),
            credentials,
            now,
        )
        return
    bucket, _, key = path.lstrip("/").partition("/")
    if request.method == "POST" and bucket and not key and not raw_query:
        if not request.content_type.startswith("multipart/form-data"):
            raise Refused("AccessDenied", "Access Denied: the request is not signed")
        fields, file_size = _form_fields(request.headers["Content-Type"], body)
        verify_post_policy(fields, file_size, bucket, credentials, now)
        return
    public_read = request.method in {"GET", "HEAD"} and bucket and key and not raw_query
    if public_read and await request.app[PUBLIC].allows(bucket, key):
        return
    raise Refused("AccessDenied", "Access Denied")


async def forward(request: web.Request) -> web.StreamResponse:
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _refusal(Refused("EntityTooLarge", "the body is too large for this gate"), 400)
    try:
        await admit(request, body)
    except Refused as refused:
        return _refusal(refused, 404 if refused.code == "NoSuchKey" else 403)
    headers = CIMultiDict(
        (name, value) for name, value in request.headers.items() if name.lower() not in HOP_BY_HOP
    )
    async with request.app[UPSTREAM].request(
        request.method,
        # As sent: a key such as `../x` must reach moto unnormalised, and encoded only once.
        URL(f"http://s3{request.raw_path}", encoded=True),
        headers=headers,
        data=body if body else None,
        allow_redirects=False,
        skip_auto_headers={"Content-Type", "Accept-Encoding", "User-Agent"},
    ) as upstream:
        payload = await upstream.read()
        answer = CIMultiDict(
            (name, value)
            for name, value in upstream.headers.items()
            if name.lower() not in HOP_BY_HOP
        )
        if request.method != "HEAD":
            return web.Response(status=upstream.status, headers=answer, body=payload)
        # A HEAD answer carries the object's length and no body: stream just the headers.
        head = web.StreamResponse(status=upstream.status, headers=answer)
        if "Content-Length" in upstream.headers:
            head.content_length = int(upstream.headers["Content-Length"])
        await head.prepare(request)
        await head.write_eof()
        return head


def make_gate(upstream_socket: str, credentials: Credentials) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app[CREDENTIALS] = credentials

    async def upstream_session(app: web.Application) -> Any:
        session = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=upstream_socket),
            timeout=aiohttp.ClientTimeout(total=60),
            auto_decompress=False,
        )
        app[UPSTREAM] = session
        app[PUBLIC] = PublicReads(session)
        yield
        await session.close()

    app.cleanup_ctx.append(upstream_session)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="moto's Unix socket")
    args = parser.parse_args()
    credentials = Credentials(
        os.environ["S3GATE_ACCESS_KEY_ID"], os.environ["S3GATE_SECRET_ACCESS_KEY"]
    )
    web.run_app(
        make_gate(args.upstream, credentials),
        host="127.0.0.1",
        port=args.port,
        print=None,
        access_log=None,
        handle_signals=True,
    )


if __name__ == "__main__":
    main()
