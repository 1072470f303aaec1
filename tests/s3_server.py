"""A real S3-API server on loopback for the storage tests: moto's server in its own process.

It checks request signatures (IAM authentication on): the fixture's first three calls
create a user and its access key, and every later request must be signed with that key.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

#: unauthenticated calls moto allows before it checks signatures: the user, its key, its policy
_SETUP_CALLS = 3


class S3Server:
    """``moto_server`` on 127.0.0.1, started and stopped by the fixture that owns it."""

    def __init__(self) -> None:
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.access_key = ""
        self.secret_key = ""

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """What a process needs to reach the server (the AWS SDKs' standard variables)."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_REGION": "us-east-1",
                "AWS_EC2_METADATA_DISABLED": "true"}

    def s3a_conf(self) -> dict[str, str]:
        """The same, as Spark users set it: ``spark.hadoop.fs.s3a.*`` in the Spark conf."""
        return {"spark.hadoop.fs.s3a.endpoint": f"127.0.0.1:{self.port}",
                "spark.hadoop.fs.s3a.connection.ssl.enabled": "false",
                "spark.hadoop.fs.s3a.endpoint.region": "us-east-1",
                "spark.hadoop.fs.s3a.access.key": self.access_key, "spark.hadoop.fs.s3a.secret.key": self.secret_key}

    def start(self, port: int = 0) -> S3Server:
        if port == 0:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
        self.port = port
        # the one installed with this interpreter first: an older moto on PATH (5.2.1 broke
        # pyarrow's CompleteMultipartUpload) must not stand in for the test extra's
        beside = os.path.join(os.path.dirname(sys.executable), "moto_server")
        binary = beside if os.access(beside, os.X_OK) else shutil.which("moto_server") or beside
        self.proc = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(port)],
                                     env=dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT=str(_SETUP_CALLS)),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError("moto_server did not listen within 30 s")
        self._make_user()
        return self

    def _make_user(self) -> None:
        import json

        import boto3

        iam = boto3.client("iam", endpoint_url=self.endpoint, aws_access_key_id="setup",
                           aws_secret_access_key="setup", region_name="us-east-1")
        iam.create_user(UserName="tfos")
        key = iam.create_access_key(UserName="tfos")["AccessKey"]
        iam.put_user_policy(UserName="tfos", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        self.access_key, self.secret_key = key["AccessKeyId"], key["SecretAccessKey"]
    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def filesystem(self):
        import pyarrow.fs as pafs

        return pafs.S3FileSystem(access_key=self.access_key, secret_key=self.secret_key, endpoint_override=f"127.0.0.1:{self.port}",
                                 scheme="http", region="us-east-1", allow_bucket_creation=True,
                                 allow_bucket_deletion=True)

    def make_bucket(self, name: str) -> None:
        self.filesystem().create_dir(name)


def serve_bucket(bucket: str):
    """A fixture body: a started server with ``bucket`` made, stopped afterwards."""
    server = S3Server().start()
    try:
        server.make_bucket(bucket)
        yield server
    finally:
        server.stop()
