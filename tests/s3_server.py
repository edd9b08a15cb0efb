"""An S3-compatible server on 127.0.0.1 for tests: moto's server application behind two fix-ups.

Two fix-ups, both for the AWS C++ SDK that pyarrow uses. (1) Its part uploads come as HTTP
`Transfer-Encoding: chunked` with no Content-Length; moto reads Content-Length bytes and stores the
part empty. The wrapper hands moto the whole (still aws-chunked) body with its length. (2)
moto's CompleteMultipartUpload answer is rooted at `CompleteMultipartUploadResponse`; real S3 (and
the API reference) roots it at `CompleteMultipartUploadResult`, and Arrow's S3 file system reads any
other root as an error embedded in a 200 answer (it retries, then fails every upload: all pyarrow
writes are multipart uploads). The wrapper renames that root element. Nothing else is touched.
The server is moto's own WSGI application, served the way `moto.server.ThreadedMotoServer`
serves it (werkzeug, one thread per request).

Clients reach it through pyarrow's S3 file system with an endpoint override: `S3Server.env()` gives the
environment (`AWS_ENDPOINT_URL` and dummy credentials) that every process of a test cluster inherits,
so plain `s3://bucket/...` URIs work in Ray Train, Ray Tune and tkre alike.
"""

from __future__ import annotations

import io
import threading

_WRONG, _RIGHT = b"CompleteMultipartUploadResponse", b"CompleteMultipartUploadResult"


def _s3_fixups(app, requests: list):
    def wrapped(environ, start_response):
        requests.append((environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")))
        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():  # werkzeug de-chunks the stream;
            body_in = environ["wsgi.input"].read()                           # moto decodes the aws-chunked body
            environ.pop("HTTP_TRANSFER_ENCODING")
            environ["CONTENT_LENGTH"], environ["wsgi.input"] = str(len(body_in)), io.BytesIO(body_in)
        captured: dict = {}

        def capture(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        body = b"".join(app(environ, capture))
        headers = captured["headers"]
        if _WRONG in body:  # (a HEAD answer's Content-Length is the object's: left alone)
            body = body.replace(_WRONG, _RIGHT)
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            headers.append(("Content-Length", str(len(body))))
        start_response(captured["status"], headers)
        return [body]

    return wrapped


class S3Server:
    """moto's S3 on 127.0.0.1 (a free port), in a thread of this process; `with S3Server() as s3:`."""

    def __init__(self) -> None:
        from moto.server import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import make_server

        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, in order
        app = _s3_fixups(DomainDispatcherApplication(create_backend_app), self.requests)
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.endpoint = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="s3-server")

    def __enter__(self) -> "S3Server":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()

    def env(self) -> dict[str, str]:
        """What a process needs to reach this server through pyarrow's `s3://` URIs."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}

    def create_bucket(self, name: str) -> None:
        import pyarrow.fs as pafs

        pafs.S3FileSystem(endpoint_override=self.endpoint, access_key="testing", secret_key="testing",
                          region="us-east-1", allow_bucket_creation=True).create_dir(name)
