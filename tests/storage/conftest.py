"""A real S3 API for the object-store data root tests: moto's server mode on 127.0.0.1."""

from __future__ import annotations

import logging
import socket

import pytest


@pytest.fixture
def s3_env(monkeypatch):
    """A fresh bucket on a local moto S3 server; the AWS_* variables (dummy credentials, the
    endpoint) are set in the environment, the way a user sets them. Yields the bucket name."""
    pytest.importorskip("s3fs", reason="the object-store data root over s3:// needs s3fs (pip install s3fs)")
    moto_server = pytest.importorskip(
        "moto.server", reason="the S3 tests need moto's server mode (pip install 'moto[server]')"
    )
    import boto3

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one request line per call otherwise
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        for k, v in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        }.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
        # the server keeps moto's in-process state across tests: start from an empty account
        import urllib.request

        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/moto-api/reset", method="POST"))
        boto3.client("s3").create_bucket(Bucket="specforge-test")
        yield "specforge-test"
    finally:
        server.stop()
