"""End-to-end tests of the `lynk` command against the local DynamoDB server:
lynk's messages, tagging as lynk does (checked with boto3), and one clear
line with a non-zero exit for every bad input."""
import os
import tempfile
import unittest

from lynktest import (FakeServer, SECRET, clean_env, drop_table, free_port, observer,
                      program, require_endpoint, run, unique)

LYNK = program("lynk")


class TableCommands(unittest.TestCase):
    def setUp(self):
        require_endpoint(self)
        self.ddb = observer()
        self.created = []

    def tearDown(self):
        for t in self.created:
            drop_table(self.ddb, t)

    def lynk(self, *args, env=None):
        return run([LYNK, *args], env=env)

    def test_create_list_delete_prints_lynks_messages(self):
        t = unique("lynk-quickstart")
        self.created.append(t)
        r = self.lynk("create-table", t)
        self.assertEqual((r.returncode, r.stdout, r.stderr),
                         (0, "Creating table %s\nCreated\n" % t, ""))
        desc = self.ddb.describe_table(TableName=t)["Table"]
        self.assertEqual(desc["TableStatus"], "ACTIVE")
        self.assertEqual(desc["KeySchema"], [{"AttributeName": "lockKey", "KeyType": "HASH"}])
        self.assertEqual(desc["AttributeDefinitions"],
                         [{"AttributeName": "lockKey", "AttributeType": "S"}])
        self.assertEqual(desc.get("BillingModeSummary", {}).get("BillingMode"), "PAY_PER_REQUEST")
        tags = self.ddb.list_tags_of_resource(ResourceArn=desc["TableArn"])["Tags"]
        self.assertIn({"Key": "lynk", "Value": "lock-table"}, tags)

        r = self.lynk("list-tables")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(t, r.stdout.splitlines())

        r = self.lynk("create-table", t)
        self.assertEqual((r.returncode, r.stdout), (0, "Table %s already exists.\n" % t))

        r = self.lynk("delete-table", t)
        self.assertEqual((r.returncode, r.stdout, r.stderr),
                         (0, "Deleting table %s\nDeleted\n" % t, ""))
        self.assertNotIn(t, self.ddb.list_tables()["TableNames"])
        r = self.lynk("delete-table", t)
        self.assertEqual((r.returncode, r.stdout), (0, "Table %s does not exist.\n" % t))
        self.assertNotIn(t, self.lynk("list-tables").stdout.splitlines())

    def test_provisioned_and_options_after_the_command(self):
        t = unique("lynk-prov")
        self.created.append(t)
        env = clean_env(AWS_ENDPOINT_URL=None, AWS_REGION=None)
        r = self.lynk("create-table", t, "--provisioned", "5,5",
                      "--endpoint", os.environ["LYNK_TEST_ENDPOINT"], "--region", "us-east-1", env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        tp = self.ddb.describe_table(TableName=t)["Table"]["ProvisionedThroughput"]
        self.assertEqual((tp["ReadCapacityUnits"], tp["WriteCapacityUnits"]), (5, 5))

    def test_list_tables_shows_only_tagged_tables_across_pages(self):
        # ListTables answers at most 100 names a page, in name order: the
        # tagged table sorts last, so it is on the second page.
        prefix = unique("lp")
        plain = ["%s-a%03d" % (prefix, i) for i in range(101)]
        for t in plain:
            self.ddb.create_table(TableName=t, BillingMode="PAY_PER_REQUEST",
                                  KeySchema=[{"AttributeName": "lockKey", "KeyType": "HASH"}],
                                  AttributeDefinitions=[{"AttributeName": "lockKey", "AttributeType": "S"}])
            self.created.append(t)
        tagged = prefix + "-zz"
        self.created.append(tagged)
        self.assertEqual(self.lynk("create-table", tagged).returncode, 0)
        r = self.lynk("list-tables")
        self.assertEqual(r.returncode, 0, r.stderr)
        listed = r.stdout.splitlines()
        self.assertIn(tagged, listed)
        self.assertFalse(set(plain) & set(listed))

    def test_refuses_a_table_that_is_not_a_lock_table(self):
        t = unique("other")
        self.created.append(t)
        self.ddb.create_table(TableName=t, BillingMode="PAY_PER_REQUEST",
                              KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                              AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}])
        r = self.lynk("create-table", t)
        self.assertEqual(r.returncode, 1)
        self.assertOneLine(r, "not a lock table")

    def test_debug_output_never_shows_the_secret(self):
        r = self.lynk("--debug", "list-tables")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn(SECRET, r.stderr + r.stdout)

    def assertOneLine(self, r, *words):
        self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)
        self.assertTrue(r.stderr.startswith("lynk: "), r.stderr)
        for w in words:
            self.assertIn(w, r.stderr)
        self.assertNotIn(SECRET, r.stderr)


class BadInput(unittest.TestCase):
    """Each failure: exit status non-zero, exactly one line on stderr that
    names the cause, nothing on stdout, no secret."""

    def fails(self, args, env=None, status=1, words=()):
        r = run([LYNK, *args], env=env if env is not None else clean_env())
        self.assertEqual(r.returncode, status, r.stdout + r.stderr)
        self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)
        self.assertTrue(r.stderr.startswith("lynk: "), r.stderr)
        for w in words:
            self.assertIn(w, r.stderr)
        self.assertNotIn(SECRET, r.stderr)
        return r

    def test_usage_errors_exit_2(self):
        self.fails(["frobnicate"], status=2, words=["unknown command"])
        self.fails(["create-table"], status=2, words=["usage"])
        self.fails(["create-table", "abc", "--provisioned", "five"], status=2, words=["--provisioned"])
        self.fails(["list-tables", "--provisioned", "5,5"], status=2, words=["create-table"])
        self.fails(["--bogus", "list-tables"], status=2, words=["--bogus"])
        self.fails(["list-tables", "--region"], status=2, words=["--region"])

    def test_help_and_version(self):
        r = run([LYNK, "--help"])
        self.assertEqual(r.returncode, 0)
        for cmd in ("create-table", "list-tables", "delete-table", "--provisioned", "Exit status"):
            self.assertIn(cmd, r.stdout)
        r = run([LYNK, "--version"])
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^lynk \(lynkfs\) \d+\.\d+\.\d+\n$")

    def test_no_region(self):
        self.fails(["list-tables"], env=clean_env(AWS_REGION=None, AWS_DEFAULT_REGION=None),
                   words=["region"])

    def test_no_credentials(self):
        env = clean_env(AWS_ACCESS_KEY_ID=None, AWS_SECRET_ACCESS_KEY=None)
        # keep the chain from reaching instance metadata on a real network
        env["AWS_EC2_METADATA_DISABLED"] = "true"
        self.fails(["list-tables"], env=env, words=["credentials"])

    def test_unknown_profile(self):
        self.fails(["list-tables", "--profile", "nosuchprofile"], words=["nosuchprofile"])

    def test_malformed_credentials_file(self):
        home = tempfile.mkdtemp(prefix="lynk-home-")
        os.makedirs(os.path.join(home, ".aws"))
        with open(os.path.join(home, ".aws", "credentials"), "w") as f:
            f.write("[default]\naws_access_key_id = AKID\nthis line is " + SECRET + "\n")
        env = clean_env(home=home, AWS_ACCESS_KEY_ID=None, AWS_SECRET_ACCESS_KEY=None)
        self.fails(["list-tables"], env=env, words=["credentials", "line 3"])

    def test_bad_endpoint(self):
        self.fails(["list-tables", "--endpoint", "ftp://example"], words=["ftp://example"])

    def test_endpoint_that_refuses_connections(self):
        url = "http://127.0.0.1:%d" % free_port()
        self.fails(["list-tables", "--endpoint", url], words=[url])

    def test_server_answering_html(self):
        with FakeServer(200, b"<html>hello</html>", {"Content-Type": "text/html"}) as s:
            self.fails(["list-tables", "--endpoint", s.url], words=[s.url])

    def test_server_answering_an_error_page(self):
        with FakeServer(502, b"Bad Gateway", {"Content-Type": "text/plain"}) as s:
            self.fails(["create-table", "abc", "--endpoint", s.url], words=[s.url])

    def test_truncated_answer(self):
        with FakeServer(200, b'{"TableNames": ["a", "b"', {"Content-Type": "application/x-amz-json-1.0"},
                        truncate=True) as s:
            self.fails(["list-tables", "--endpoint", s.url])

    def test_huge_answer(self):
        body = b'{"TableNames": ["' + b"x" * (20 << 20) + b'"]}'
        with FakeServer(200, body, {"Content-Type": "application/x-amz-json-1.0"}) as s:
            self.fails(["list-tables", "--endpoint", s.url], words=["large"])

    def test_access_denied_answer(self):
        body = (b'{"__type":"com.amazonaws.dynamodb.v20120810#UnrecognizedClientException",'
                b'"message":"The security token included in the request is invalid."}')
        with FakeServer(400, body, {"Content-Type": "application/x-amz-json-1.0"}) as s:
            self.fails(["list-tables", "--endpoint", s.url], words=["UnrecognizedClient"])


if __name__ == "__main__":
    unittest.main()
