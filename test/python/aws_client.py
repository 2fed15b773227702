"""A sandbox's AWS client: botocore with a placeholder key, through portcullis (HTTPS proxy, its CA as the bundle).

aws_client.py OPERATION, with JSON on stdin: {proxy, ca, endpoint, region, access_key, secret_key, token, bucket, key, body};
prints one JSON line with what the operation returned.
"""
import base64
import hashlib
import json
import sys

import botocore.session
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.httpsession import URLLib3Session

job = json.load(sys.stdin)
operation = sys.argv[1]
session = botocore.session.get_session()
session.set_credentials(job["access_key"], job["secret_key"], job.get("token"))


def client(service, **s3):
    config = Config(proxies={"https": job["proxy"]}, retries={"max_attempts": 1}, s3={"addressing_style": "path", **s3},
                    signature_version="s3v4" if service == "s3" else None)
    return session.create_client(service, region_name=job["region"], endpoint_url=job["endpoint"], verify=job["ca"], config=config)


def http():
    return URLLib3Session(verify=job["ca"], proxies={"https": job["proxy"]})


def body():
    return base64.b64decode(job.get("body", ""))


def signed_streaming_put():
    """An S3 PUT with STREAMING-AWS4-HMAC-SHA256-PAYLOAD: the request signed by botocore, each chunk chained from it."""
    data, chunk_size = body(), 64 * 1024

    class StreamingAuth(S3SigV4Auth):
        def payload(self, request):
            return "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"

    credentials = session.get_credentials()
    auth = StreamingAuth(credentials, "s3", job["region"])
    pieces = [data[i:i + chunk_size] for i in range(0, len(data), chunk_size)] + [b""]
    framed_length = sum(len(f"{len(p):x};chunk-signature=") + 64 + 2 + len(p) + 2 for p in pieces)
    request = AWSRequest(method="PUT", url=f"{job['endpoint']}/{job['bucket']}/{job['key']}", headers={
        "Content-Encoding": "aws-chunked",
        "X-Amz-Decoded-Content-Length": str(len(data)),
        "Content-Length": str(framed_length),
        "Content-Type": "application/octet-stream",
    })
    auth.add_auth(request)
    prior = request.headers["Authorization"].rsplit("Signature=", 1)[1]
    scope = auth.credential_scope(request)
    framed = b""
    for piece in pieces:
        string_to_sign = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", request.context["timestamp"], scope, prior,
                                    hashlib.sha256(b"").hexdigest(), hashlib.sha256(piece).hexdigest()])
        prior = auth.signature(string_to_sign, request)
        framed += f"{len(piece):x};chunk-signature={prior}\r\n".encode() + piece + b"\r\n"
    assert len(framed) == framed_length
    request.data = framed
    response = http().send(request.prepare())
    return {"status": response.status_code, "text": response.text}


if operation == "get":
    answer = client("s3").get_object(Bucket=job["bucket"], Key=job["key"])
    print(json.dumps({"body": answer["Body"].read().decode()}))
elif operation == "put":
    # botocore sends Content-MD5 and leaves the payload unsigned over https unless told to sign it.
    answer = client("s3", payload_signing_enabled=True).put_object(Bucket=job["bucket"], Key=job["key"], Body=body())
    print(json.dumps({"etag": answer["ETag"]}))
elif operation == "put-unsigned":
    answer = client("s3", payload_signing_enabled=False).put_object(Bucket=job["bucket"], Key=job["key"], Body=body())
    print(json.dumps({"etag": answer["ETag"]}))
elif operation == "put-trailer":
    # botocore's own streaming upload: aws-chunked with a CRC32 trailer, STREAMING-UNSIGNED-PAYLOAD-TRAILER.
    answer = client("s3").put_object(Bucket=job["bucket"], Key=job["key"], Body=body(), ChecksumAlgorithm="CRC32")
    print(json.dumps({"etag": answer["ETag"]}))
elif operation == "put-streaming-signed":
    print(json.dumps(signed_streaming_put()))
elif operation == "presign-get":
    url = client("s3").generate_presigned_url("get_object", Params={"Bucket": job["bucket"], "Key": job["key"]}, ExpiresIn=job.get("expires", 600))
    response = http().send(AWSRequest(method="GET", url=url).prepare())
    print(json.dumps({"url": url, "status": response.status_code, "text": response.text}))
elif operation == "sts":
    answer = client("sts").get_caller_identity()
    print(json.dumps({"account": answer["Account"]}))
else:
    sys.exit(f"unknown operation {operation}")
