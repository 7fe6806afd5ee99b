"""Local servers for object-storage tests and benchmarks: an S3-compatible one (moto's standalone server) and an
HTTP server that honours byte ranges (RangeHTTPServer), both on 127.0.0.1, started and stopped here."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

BIN = Path(sys.executable).parent
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, proc: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {seconds} s")


@contextlib.contextmanager
def serve(cmd: list[str], port: int, cwd: Path | None = None, log: Path | None = None) -> Iterator[str]:
    out = open(log, "w") if log else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_listening(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        if log:
            out.close()


@contextlib.contextmanager
def s3_server(log: Path | None = None) -> Iterator[str]:
    """Yields the endpoint URL; credentials and region for it are in S3_ENV."""
    port = free_port()
    with serve([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], port, log=log) as url:
        yield url


@contextlib.contextmanager
def range_http_server(root: Path, log: Path | None = None) -> Iterator[str]:
    port = free_port()
    with serve([sys.executable, "-m", "RangeHTTPServer", str(port), "--bind", "127.0.0.1"], port, cwd=root,
               log=log) as url:
        yield url


def upload(endpoint: str, folder: Path, bucket: str, prefix: str) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, **_boto_credentials())
    s3.create_bucket(Bucket=bucket)
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.startswith("."):
            s3.upload_file(str(p), bucket, f"{prefix}/{p.name}")


def _boto_credentials() -> dict:
    return {"aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"],
            "region_name": S3_ENV["AWS_DEFAULT_REGION"]}


def s3_env(endpoint: str) -> dict:
    """Environment under which a new process's fsspec s3 filesystem talks to `endpoint`."""
    return {**S3_ENV, "FSSPEC_S3_ENDPOINT_URL": endpoint}


@contextlib.contextmanager
def s3_configured(endpoint: str) -> Iterator[None]:
    """The same for this process (fsspec reads FSSPEC_* variables once, at import)."""
    import fsspec.config

    old_env = {k: os.environ.get(k) for k in S3_ENV}
    old_conf = fsspec.config.conf.get("s3")
    os.environ.update(S3_ENV)
    # credentials in the filesystem's own options too: they travel with it to loader worker processes
    fsspec.config.conf["s3"] = {**(old_conf or {}), "endpoint_url": endpoint, "key": S3_ENV["AWS_ACCESS_KEY_ID"],
                                "secret": S3_ENV["AWS_SECRET_ACCESS_KEY"]}
    try:
        yield
    finally:
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if old_conf is None:
            fsspec.config.conf.pop("s3", None)
        else:
            fsspec.config.conf["s3"] = old_conf
