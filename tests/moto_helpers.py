"""The moto server (AWS in server mode on 127.0.0.1, port 0) shared by the AWS and backup tests.

Real boto3 clients talk to it over HTTP; nothing is patched. The credentials are dummies set in
the environment, so the boto3 chain finds them and nothing on the machine is read.
"""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Iterator

import pytest

from tests.helpers import require_module

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    """A moto server for the module (skipped where moto[server] is missing, failed under CI)."""
    server_mod = require_module("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def empty_account(url: str, monkeypatch: pytest.MonkeyPatch, region: str | None = None) -> str:
    """Reset the moto server to an empty account and point the boto3 chain at dummy credentials
    (``region`` as AWS_DEFAULT_REGION when given, none otherwise); returns ``url``."""
    for k, v in AWS_ENV.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION",
              "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(k, raising=False)
    if region is not None:
        monkeypatch.setenv("AWS_DEFAULT_REGION", region)
    with urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=10) as resp:
        assert resp.status == 200
    return url
