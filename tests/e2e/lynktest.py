"""lynktest — shared helpers of the end-to-end tests: where the built
programs are, the local DynamoDB endpoint (scripts/test starts it), a clean
AWS environment, and a boto3 client as the independent observer."""
import os
import socket
import subprocess
import tempfile
import threading
import uuid
import http.server

import boto3

SOURCE_ROOT = os.environ.get("LYNK_SOURCE_ROOT") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD_ROOT = os.environ.get("LYNK_BUILD_ROOT") or os.path.join(SOURCE_ROOT, "build")
ENDPOINT = os.environ.get("LYNK_TEST_ENDPOINT")
SERVER = os.environ.get("LYNK_TEST_SERVER", "unknown")
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def program(name):
    return os.path.join(BUILD_ROOT, "src", name)


def require_endpoint(testcase):
    if not ENDPOINT:
        testcase.fail("LYNK_TEST_ENDPOINT is not set: run the tests with scripts/test")


def clean_env(home=None, **extra):
    """An environment with fake credentials and nothing from the real ~/.aws."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["HOME"] = home or tempfile.mkdtemp(prefix="lynk-home-")
    env["AWS_ACCESS_KEY_ID"] = "AKIDEXAMPLE"
    env["AWS_SECRET_ACCESS_KEY"] = SECRET
    env["AWS_REGION"] = "us-east-1"
    if ENDPOINT:
        env["AWS_ENDPOINT_URL"] = ENDPOINT
    for k, v in extra.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def run(args, env=None, timeout=120):
    return subprocess.run(args, env=env if env is not None else clean_env(),
                          capture_output=True, text=True, timeout=timeout)


def observer():
    return boto3.client("dynamodb", endpoint_url=ENDPOINT, region_name="us-east-1",
                        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key=SECRET)


def unique(prefix="e2e"):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:12])


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class FakeServer:
    """An HTTP server on loopback that answers every POST with a canned
    status, headers and body: for answers no real DynamoDB gives."""

    def __init__(self, status=200, body=b"", headers=None, truncate=False):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(outer.status)
                for k, v in (outer.headers or {}).items():
                    self.send_header(k, v)
                length = len(outer.body) + (1000 if outer.truncate else 0)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(outer.body)
                if outer.truncate:
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)

            def log_message(self, *args):
                pass

        self.status, self.body, self.headers, self.truncate = status, body, headers, truncate
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def drop_table(ddb, name, timeout=30.0):
    """Delete a table, waiting out CREATING (dynalite refuses to delete a
    table being created); a table already gone is fine."""
    import time
    end = time.monotonic() + timeout
    while True:
        try:
            ddb.delete_table(TableName=name)
            return
        except ddb.exceptions.ResourceNotFoundException:
            return
        except ddb.exceptions.ResourceInUseException:
            if time.monotonic() > end:
                raise
            time.sleep(0.1)
