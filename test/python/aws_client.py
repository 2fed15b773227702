"""A sandbox's AWS client: botocore with a placeholder key, through portcullis (HTTPS proxy, its CA as the bundle).

Reads one JSON job per line on stdin: {operation, proxy, ca, endpoint, region, access_key, secret_key, token, bucket,
key, body}; writes one JSON line per job: {result} with what the operation returned, or {error}.
"""
import base64
import hashlib
import json
import sys
import zlib

import botocore.session
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.httpsession import URLLib3Session

session = botocore.session.get_session()
job = {}


def client(service, **s3):
    config = Config(proxies={"https": job["proxy"]}, retries={"max_attempts": 1}, s3={"addressing_style": "path", **s3},
                    signature_version="s3v4" if service == "s3" else None)
    return session.create_client(service, region_name=job["region"], endpoint_url=job["endpoint"], verify=job["ca"], config=config,
                                 aws_access_key_id=job["access_key"], aws_secret_access_key=job["secret_key"], aws_session_token=job.get("token"))


def http():
    return URLLib3Session(verify=job["ca"], proxies={"https": job["proxy"]})


def body():
    return base64.b64decode(job.get("body", ""))


def signed_streaming_put(trailer):
    """An S3 PUT with STREAMING-AWS4-HMAC-SHA256-PAYLOAD(-TRAILER): the request signed by botocore, each chunk
    (and the CRC32 trailer) signed as AWS documents, chained from the request's signature."""
    data, chunk_size = body(), 64 * 1024
    payload = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" + ("-TRAILER" if trailer else "")

    class StreamingAuth(S3SigV4Auth):
        def payload(self, request):
            return payload

    auth = StreamingAuth(Credentials(job["access_key"], job["secret_key"], job.get("token")), "s3", job["region"])
    pieces = [data[i:i + chunk_size] for i in range(0, len(data), chunk_size)] + [b""]
    checksum = "x-amz-checksum-crc32:" + base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()

    def frame(sign_chunk, sign_trailer):
        framed, prior = b"", None
        for piece in pieces:
            prior = sign_chunk(prior, piece)
            framed += f"{len(piece):x};chunk-signature={prior}\r\n".encode() + piece
            if piece or not trailer:
                framed += b"\r\n"
        if trailer:
            framed += f"{checksum}\r\nx-amz-trailer-signature:{sign_trailer(prior)}\r\n\r\n".encode()
        return framed

    headers = {"Content-Encoding": "aws-chunked", "X-Amz-Decoded-Content-Length": str(len(data)), "Content-Type": "application/octet-stream",
               "Content-Length": str(len(frame(lambda p, c: "0" * 64, lambda p: "0" * 64)))}
    if trailer:
        headers["X-Amz-Trailer"] = "x-amz-checksum-crc32"
    request = AWSRequest(method="PUT", url=f"{job['endpoint']}/{job['bucket']}/{job['key']}", headers=headers)
    auth.add_auth(request)
    seed = request.headers["Authorization"].rsplit("Signature=", 1)[1]
    scope, timestamp = auth.credential_scope(request), request.context["timestamp"]

    def sign_chunk(prior, piece):
        return auth.signature("\n".join(["AWS4-HMAC-SHA256-PAYLOAD", timestamp, scope, prior or seed,
                                         hashlib.sha256(b"").hexdigest(), hashlib.sha256(piece).hexdigest()]), request)

    def sign_trailer(prior):
        return auth.signature("\n".join(["AWS4-HMAC-SHA256-TRAILER", timestamp, scope, prior,
                                         hashlib.sha256(f"{checksum}\n".encode()).hexdigest()]), request)

    request.data = frame(sign_chunk, sign_trailer)
    response = http().send(request.prepare())
    return {"status": response.status_code, "text": response.text}


def run(operation):
    if operation == "get":
        answer = client("s3").get_object(Bucket=job["bucket"], Key=job["key"])
        return {"body": answer["Body"].read().decode()}
    if operation == "put":
        # botocore sends Content-MD5 and leaves the payload unsigned over https unless told to sign it.
        answer = client("s3", payload_signing_enabled=True).put_object(Bucket=job["bucket"], Key=job["key"], Body=body())
        return {"etag": answer["ETag"]}
    if operation == "put-unsigned":
        answer = client("s3", payload_signing_enabled=False).put_object(Bucket=job["bucket"], Key=job["key"], Body=body())
        return {"etag": answer["ETag"]}
    if operation == "put-trailer":
        # botocore's own streaming upload: aws-chunked with a CRC32 trailer, STREAMING-UNSIGNED-PAYLOAD-TRAILER.
        answer = client("s3").put_object(Bucket=job["bucket"], Key=job["key"], Body=body(), ChecksumAlgorithm="CRC32")
        return {"etag": answer["ETag"]}
    if operation == "put-streaming-signed":
        return signed_streaming_put(trailer=False)
    if operation == "put-streaming-signed-trailer":
        return signed_streaming_put(trailer=True)
    if operation == "presign-get":
        url = client("s3").generate_presigned_url("get_object", Params={"Bucket": job["bucket"], "Key": job["key"]}, ExpiresIn=job.get("expires", 600))
        response = http().send(AWSRequest(method="GET", url=url).prepare())
        return {"url": url, "status": response.status_code, "text": response.text}
    if operation == "sts":
        return {"account": client("sts").get_caller_identity()["Account"]}
    raise ValueError(f"unknown operation {operation}")


for line in sys.stdin:
    job = json.loads(line)
    try:
        reply = {"result": run(job["operation"])}
    except Exception as error:  # the test reads the failure
        reply = {"error": f"{type(error).__name__}: {error}"}
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
