"""Checks forwarded requests' AWS SigV4 signatures with botocore (an implementation independent of portcullis').

Reads one JSON request per line on stdin: {method, target, headers: [[name, value], ...], body (base64),
keys: {access_key, secret_key, token}, placeholder: {access_key, token}}; writes one JSON verdict per line:
{ok, problems, kind, service, region, date, expires, body (base64, aws-chunked decoded), chunks}.
"""
import base64
import datetime
import hashlib
import json
import sys
import zlib
from urllib.parse import unquote

from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth, SigV4QueryAuth, EMPTY_SHA256_HASH
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"


def header_map(pairs):
    out = {}
    for name, value in pairs:
        out.setdefault(name.lower(), []).append(value)
    return out


def auth_params(value):
    algorithm, _, rest = value.partition(" ")
    params = {}
    for part in rest.split(","):
        key, _, val = part.strip().partition("=")
        params[key] = val
    return algorithm, params


def decode_chunks(body, problems):
    """aws-chunked → [(size line extension signature or None, data)], trailer lines."""
    chunks, at = [], 0
    while True:
        end = body.find(b"\r\n", at)
        if end < 0:
            problems.append("aws-chunked body: no chunk header line")
            return chunks, []
        line = body[at:end].decode("latin1")
        size_text, _, ext = line.partition(";")
        size = int(size_text, 16)
        signature = ext[len("chunk-signature="):] if ext.startswith("chunk-signature=") else None
        data = body[end + 2:end + 2 + size]
        at = end + 2 + size
        if size == 0:
            trailers = body[end + 2:].decode("latin1").split("\r\n")
            chunks.append((signature, b""))
            return chunks, [t for t in trailers if t]
        if body[at:at + 2] != b"\r\n":
            problems.append("aws-chunked body: chunk data not followed by CRLF")
            return chunks, []
        at += 2
        chunks.append((signature, data))


def verify(job):
    problems = []
    keys = job["keys"]
    creds = Credentials(keys["access_key"], keys["secret_key"], keys.get("token"))
    headers = header_map(job["headers"])
    body = base64.b64decode(job["body"])
    target = job["target"]
    path, _, query = target.partition("?")
    host = headers["host"][0]
    verdict = {"ok": False, "problems": problems, "body": job["body"], "chunks": 0}

    wire = json.dumps(job["headers"]) + target
    placeholder = job["placeholder"]
    for value in (placeholder.get("access_key"), placeholder.get("token")):
        if value and value in wire:
            problems.append(f"the sandbox's placeholder {value!r} was forwarded")

    if "authorization" in headers:
        verdict["kind"] = "header"
        algorithm, params = auth_params(headers["authorization"][0])
        if algorithm != "AWS4-HMAC-SHA256":
            problems.append(f"algorithm {algorithm}")
        akid, date, region, service, terminator = params["Credential"].split("/")
        signed = params["SignedHeaders"].split(";")
        timestamp = headers.get("x-amz-date", [""])[0]
        sent_signature = params["Signature"]
        request = AWSRequest(method=job["method"], url=f"https://{host}{target}",
                             headers={name: ",".join(headers[name]) for name in signed if name in headers}, data=body)
        missing = [name for name in signed if name not in headers]
        if missing:
            problems.append(f"signed headers not sent: {missing}")
        auth = (S3SigV4Auth if service == "s3" else SigV4Auth)(creds, service, region)
    else:
        verdict["kind"] = "query"
        pairs = [pair.partition("=") for pair in query.split("&") if pair]
        params = {unquote(k): unquote(v) for k, _, v in pairs}
        if "X-Amz-Signature" not in params:
            problems.append("no signature: neither Authorization nor X-Amz-Signature")
            return verdict
        akid, date, region, service, terminator = params["X-Amz-Credential"].split("/")
        signed = params["X-Amz-SignedHeaders"].split(";")
        timestamp = params["X-Amz-Date"]
        sent_signature = params["X-Amz-Signature"]
        verdict["expires"] = int(params["X-Amz-Expires"])
        unsigned_query = "&".join(f"{k}={v}" for k, _, v in pairs if k != "X-Amz-Signature")
        request = AWSRequest(method=job["method"], url=f"https://{host}{path}?{unsigned_query}",
                             headers={name: ",".join(headers[name]) for name in signed if name in headers}, data=body)
        auth = (S3SigV4QueryAuth if service == "s3" else SigV4QueryAuth)(creds, service, region, expires=verdict["expires"])
        token = params.get("X-Amz-Security-Token")
        if keys.get("token") and token != keys["token"]:
            problems.append("the real session token is not in the query")
        if not keys.get("token") and token is not None:
            problems.append("a session token was sent though the real credential has none")

    verdict.update(service=service, region=region, date=timestamp)
    if akid != keys["access_key"]:
        problems.append(f"signed with access key {akid!r}, not the real one")
    if terminator != "aws4_request" or date != timestamp[:8]:
        problems.append("malformed credential scope")
    request.context["timestamp"] = timestamp
    if verdict["kind"] == "header":
        signed_time = datetime.datetime.strptime(timestamp, "%Y%m%dT%H%M%SZ")
        if abs((datetime.datetime.utcnow() - signed_time).total_seconds()) > 300:
            problems.append(f"X-Amz-Date {timestamp} is not now")
        token = headers.get("x-amz-security-token")
        if keys.get("token"):
            if token != [keys["token"]]:
                problems.append("the real session token is not in X-Amz-Security-Token")
            if "x-amz-security-token" not in signed:
                problems.append("X-Amz-Security-Token is not signed")
        elif token is not None:
            problems.append("X-Amz-Security-Token sent though the real credential has none")
        if auth.signed_headers(auth.headers_to_sign(request)) != params["SignedHeaders"]:
            problems.append("SignedHeaders does not list what botocore would sign")
    canonical = auth.canonical_request(request)
    expected = auth.signature(auth.string_to_sign(request, canonical), request)
    if expected != sent_signature:
        problems.append(f"signature mismatch; botocore's canonical request:\n{canonical}")

    content_sha = headers.get("x-amz-content-sha256", [None])[0]
    if verdict["kind"] == "header" and service == "s3" and content_sha is None:
        problems.append("S3 request without X-Amz-Content-Sha256")
    if content_sha and content_sha not in ("UNSIGNED-PAYLOAD", STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER):
        if content_sha != hashlib.sha256(body).hexdigest():
            problems.append("X-Amz-Content-Sha256 is not the hash of the body")
    if content_sha in (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER):
        chunks, trailers = decode_chunks(body, problems)
        verdict["chunks"] = len(chunks)
        verdict["trailers"] = trailers
        data = b"".join(chunk for _, chunk in chunks)
        verdict["body"] = base64.b64encode(data).decode()
        declared = headers.get("x-amz-decoded-content-length", [None])[0]
        if declared is not None and int(declared) != len(data):
            problems.append("x-amz-decoded-content-length does not match the chunks")
        for line in trailers:
            name, _, value = line.partition(":")
            if name == "x-amz-checksum-crc32" and value != base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode():
                problems.append("the CRC32 trailer does not match the data")
        if content_sha in (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER):
            prior = sent_signature
            scope = auth.credential_scope(request)
            for index, (signature, chunk) in enumerate(chunks):
                string_to_sign = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", timestamp, scope, prior, EMPTY_SHA256_HASH, hashlib.sha256(chunk).hexdigest()])
                want = auth.signature(string_to_sign, request)
                if signature != want:
                    problems.append(f"chunk {index} signature does not chain from the request's with the real key")
                    break
                prior = want
            if content_sha == STREAMING_SIGNED_TRAILER:
                signed_trailers = [line for line in trailers if not line.startswith("x-amz-trailer-signature:")]
                canonical = "".join(f"{line.partition(':')[0].lower()}:{line.partition(':')[2].strip()}\n" for line in signed_trailers)
                string_to_sign = "\n".join(["AWS4-HMAC-SHA256-TRAILER", timestamp, scope, prior, hashlib.sha256(canonical.encode()).hexdigest()])
                sent = [line.partition(":")[2] for line in trailers if line.startswith("x-amz-trailer-signature:")]
                if sent != [auth.signature(string_to_sign, request)]:
                    problems.append("the trailer signature does not chain from the final chunk's with the real key")
    verdict["ok"] = not problems
    return verdict


for line in sys.stdin:
    try:
        result = verify(json.loads(line))
    except Exception as error:  # a verdict for every line, whatever it held
        result = {"ok": False, "problems": [f"verifier error: {error!r}"]}
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
