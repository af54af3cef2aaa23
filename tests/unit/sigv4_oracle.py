#!/usr/bin/env python3
"""tests/unit/sigv4_oracle.py — the SigV4 oracle of the 'sigv4' unit test.

Reads one raw HTTP request as captured on the wire (request line, headers,
body), re-signs it with botocore's SigV4Auth at the request's own X-Amz-Date
and prints botocore's Authorization header value on stdout. Only the headers
the captured request lists in its SignedHeaders are handed to botocore (plus
the body, method and URL), so the two signatures must agree byte for byte.

usage: sigv4_oracle.py REQFILE REGION SERVICE ACCESS_KEY SECRET_KEY [TOKEN]
Exit status 2 with one line on stderr on bad input or missing botocore.
"""
import datetime
import sys
from unittest import mock


def die(msg):
    sys.stderr.write("sigv4_oracle: %s\n" % msg)
    sys.exit(2)


try:
    import botocore.auth
    import botocore.awsrequest
    import botocore.credentials
except ImportError as e:  # the C test turns this into a failure
    die("botocore is not importable (%s): pip install botocore" % e)


def parse(raw):
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        die("no end of headers in the captured request")
    lines = head.decode("utf-8").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            die("malformed header line %r" % line)
        headers.append((name.strip(), value.strip()))
    return method, target, headers, body


def header(headers, name):
    vals = [v for n, v in headers if n.lower() == name]
    if len(vals) != 1:
        die("expected exactly one %s header, got %d" % (name, len(vals)))
    return vals[0]


def main(argv):
    if len(argv) not in (6, 7):
        die("usage: sigv4_oracle.py REQFILE REGION SERVICE AK SK [TOKEN]")
    reqfile, region, service, ak, sk = argv[1:6]
    token = argv[6] if len(argv) == 7 else None
    with open(reqfile, "rb") as f:
        method, target, headers, body = parse(f.read())

    auth = header(headers, "authorization")
    try:
        signed = auth.split("SignedHeaders=", 1)[1].split(",", 1)[0]
    except IndexError:
        die("no SignedHeaders in Authorization")
    names = signed.split(";")
    amz_date = header(headers, "x-amz-date")
    when = datetime.datetime.strptime(amz_date, botocore.auth.SIGV4_TIMESTAMP)

    req_headers = {}
    for name in names:
        req_headers[name] = header(headers, name)
    url = "http://%s%s" % (header(headers, "host"), target)
    req = botocore.awsrequest.AWSRequest(method=method, url=url,
                                         headers=req_headers, data=body)
    creds = botocore.credentials.Credentials(ak, sk, token)
    signer = botocore.auth.SigV4Auth(creds, service, region)
    # botocore stamps requests with get_current_datetime(); sign at the
    # captured instant instead.
    with mock.patch.object(botocore.auth, "get_current_datetime",
                           return_value=when):
        signer.add_auth(req)
    if req.context["timestamp"] != amz_date:
        die("botocore signed at %s, not %s" % (req.context["timestamp"],
                                               amz_date))
    value = req.headers["Authorization"]
    del req.headers["Authorization"]
    sys.stderr.write("botocore canonical request:\n%s\n"
                     % signer.canonical_request(req))
    sys.stdout.write(value + "\n")


if __name__ == "__main__":
    main(sys.argv)
