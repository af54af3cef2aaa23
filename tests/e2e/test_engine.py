"""End-to-end tests of the lock engine (src/lock) against a local DynamoDB
server: separate processes running tests/integration/lockholder.c (one
engine each, each with its own hostIdentifier), a boto3 peer that speaks
lynk's protocol (lynk_peer.py) and boto3 as the independent observer.

What is asserted is SPEC.md §1: mutual exclusion (a shared critical-section
log, appended with O_APPEND, must read enter/exit/enter/exit...), the
waiting rule (no take-over before a full lease after the waiter could first
have seen the last version), the holder's safety rule (a holder that cannot
refresh reports the lock lost before anybody may take it), prompt hand-off,
and lynk's item format.

Times are CLOCK_MONOTONIC milliseconds, the same clock in every process of
this host (lk_now_ms() in C, time.clock_gettime(CLOCK_MONOTONIC) here).
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import boto3
from botocore.config import Config

from lynktest import (BUILD_ROOT, ENDPOINT, SECRET, SERVER, SOURCE_ROOT,
                      clean_env, observer, require_endpoint, unique)

LOCKHOLDER = os.path.join(BUILD_ROOT, "tests", "lockholder")
PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lynk_peer.py")
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
LEASE = 2                 # seconds, written into every lock of these tests
LEASE_MS = LEASE * 1000
HEARTBEAT = 400           # ms
POLL_MAX_MS = 40          # the engine's default waiter poll ceiling
SLACK_MS = 750            # a loaded 2-core CI machine, sanitizers on


def now_ms():
    return int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1000)


MEASURED = []


def say(msg):
    """Note a measurement; printed after the class (unittest's verbose
    "name ... ok" lines stay whole for scripts/test)."""
    MEASURED.append("[%s] %s" % (SERVER, msg))


class Proc:
    """A child process whose stdout lines are harness events
    ("kind time ...") collected by a thread as they come."""

    def __init__(self, args, env=None):
        self.args = args
        self.p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env=env if env is not None else clean_env())
        self.events, self.stderr = [], []
        self.cv = threading.Condition()
        self.readers = [threading.Thread(target=self._read, daemon=True),
                        threading.Thread(target=self._read_err, daemon=True)]
        for t in self.readers:
            t.start()

    def _read(self):
        for line in self.p.stdout:
            with self.cv:
                self.events.append(line.split())
                self.cv.notify_all()
        with self.cv:
            self.events.append(["<eof>", "0"])
            self.cv.notify_all()

    def _read_err(self):
        for line in self.p.stderr:
            self.stderr.append(line)

    def wait_event(self, kind, timeout):
        """The first event of this kind (waiting up to timeout s), or None."""
        end = time.monotonic() + timeout
        with self.cv:
            while True:
                for e in self.events:
                    if e[0] == kind:
                        return e
                left = end - time.monotonic()
                if left <= 0 or (self.events and self.events[-1][0] == "<eof>"):
                    return None
                self.cv.wait(left)

    def of(self, kind):
        with self.cv:
            return [e for e in self.events if e[0] == kind]

    def finish(self, timeout=60):
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            rc = self.p.wait()
            rc = "timeout (killed)"
        for t in self.readers:
            t.join(5)
        self.close()
        return rc

    def close(self):
        for f in (self.p.stdout, self.p.stderr):
            try:
                f.close()
            except Exception:
                pass

    def describe(self):
        with self.cv:
            ev = "\n".join("      " + " ".join(e) for e in self.events)
        return "%s\n    events:\n%s\n    stderr:\n%s" % (
            " ".join(os.path.basename(a) for a in self.args[:1]) + " " +
            " ".join(self.args[1:]), ev, "".join(self.stderr[-20:]))

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        for t in self.readers:
            t.join(5)
        self.close()


class Observer:
    """Polls one lock with consistent GetItem in a thread and records every
    answer as (sent, received, version or None). From that, a rigorous lower
    bound of when a version was written: after the send time of the last
    answer that did not show it, before the first that did."""

    def __init__(self, endpoint, table, name, interval=0.015):
        self.ddb = boto3.client(
            "dynamodb", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key=SECRET,
            config=Config(retries={"total_max_attempts": 1}, connect_timeout=0.5,
                          read_timeout=0.5))
        self.table, self.name, self.interval = table, name, interval
        self.samples = []
        self.items = []
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.stop_ev.set()
        self.thread.join(5)

    def _run(self):
        while not self.stop_ev.is_set():
            sent = now_ms()
            try:
                item = self.ddb.get_item(TableName=self.table, ConsistentRead=True,
                                         Key={"lockKey": {"S": self.name}}).get("Item")
            except Exception:  # a stalled or busy server: no answer is no sample
                continue
            self.samples.append((sent, now_ms(),
                                 item["versionNumber"]["S"] if item else None))
            if item:
                self.items.append(item)
            self.stop_ev.wait(self.interval)

    def versions(self):
        out = []
        for _, _, v in self.samples:
            if v is not None and v not in out:
                out.append(v)
        return out

    def written_after(self, version):
        """Send time of the last answer before the first showing version
        that showed something else; None if version was never seen."""
        last_other = None
        for sent, _, v in self.samples:
            if v == version:
                return last_other
            last_other = sent
        return None


class EngineTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not ENDPOINT:
            return
        cls.ddb = observer()
        cls.table = unique("lynk-engine")
        create_table(cls.ddb, cls.table)

    @classmethod
    def tearDownClass(cls):
        if MEASURED:
            sys.stderr.write("\nmeasured:\n" + "".join("  %s\n" % m for m in MEASURED))
            del MEASURED[:]
        if ENDPOINT:
            try:
                cls.ddb.delete_table(TableName=cls.table)
            except Exception:
                pass

    def setUp(self):
        require_endpoint(self)
        if not os.access(LOCKHOLDER, os.X_OK):
            self.fail("%s is not built: run ninja -C %s" % (LOCKHOLDER, BUILD_ROOT))
        self.procs = []
        self.tmp = tempfile.mkdtemp(prefix="lynk-engine-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.log = os.path.join(self.tmp, "cs.log")

    def tearDown(self):
        for p in self.procs:
            p.kill()

    # ---- helpers ----

    def holder(self, name, host, *opts, table=None, endpoint=None, env=None):
        args = [LOCKHOLDER, "--table", table or self.table, "--name", name,
                "--host", host, "--lease", str(LEASE), "--heartbeat", str(HEARTBEAT)]
        args += [str(o) for o in opts]
        if endpoint:
            args += ["--endpoint", endpoint]
        p = Proc(args, env)
        self.procs.append(p)
        return p

    def peer(self, name, host, *opts):
        args = [sys.executable, PEER, "--table", self.table, "--name", name,
                "--host", host, "--lease", str(LEASE), "--heartbeat", str(HEARTBEAT)]
        p = Proc(args + [str(o) for o in opts])
        self.procs.append(p)
        return p

    def expect_event(self, proc, kind, timeout):
        e = proc.wait_event(kind, timeout)
        if e is None:
            self.fail("no '%s' within %.1f s from %s" % (kind, timeout, proc.describe()))
        return e

    def expect_exit(self, proc, code=0, timeout=60):
        rc = proc.finish(timeout)
        self.assertEqual(rc, code, "exit status %s, wanted %s: %s" % (rc, code, proc.describe()))

    def check_exclusion(self, lines):
        """Every enter is followed by the exit of the same holder before any
        other enter; times never go back; nobody exits as 'lost'."""
        holder, last_t = None, 0
        text = "".join("\n      " + l for l in lines)
        for i, line in enumerate(lines):
            f = line.split()
            self.assertIn(f[0], ("enter", "exit"), "line %d: %r" % (i + 1, line))
            who, t = tuple(f[1:4]), int(f[4])
            self.assertGreaterEqual(t, last_t, "line %d goes back in time:%s" % (i + 1, text))
            last_t = t
            if f[0] == "enter":
                self.assertIsNone(holder, "line %d: %s entered while %s was inside; log:%s"
                                  % (i + 1, who, holder, text))
                holder = who
            else:
                self.assertEqual(holder, who, "line %d: exit of %s, inside was %s; log:%s"
                                 % (i + 1, who, holder, text))
                self.assertEqual(len(f), 5, "line %d: %s lost the lock while inside; log:%s"
                                 % (i + 1, who, text))
                holder = None
        self.assertIsNone(holder, "the log ends inside the critical section")

    def read_log(self):
        with open(self.log) as f:
            return f.read().splitlines()

    # ---- 1. mutual exclusion between engines ----

    def test_engines_on_many_hosts_never_overlap(self):
        name, n, count = unique("excl"), 4, 6
        procs = [self.holder(name, "host-%d" % i, "--mode", "wait", "--count", count,
                             "--hold", "30,60,0", "--log", self.log)
                 for i in range(n)]
        for p in procs:
            self.expect_exit(p, 0, timeout=90)
        lines = self.read_log()
        self.check_exclusion(lines)
        enters = [l.split() for l in lines if l.startswith("enter")]
        self.assertEqual(len(enters), n * count)
        self.assertEqual(sorted({e[1] for e in enters}), ["host-%d" % i for i in range(n)])
        versions = [p.of("acquired")[i][2] for p in procs for i in range(count)]
        self.assertEqual(len(set(versions)), len(versions), "a version was reused")
        self.assertNotIn("Item", self.ddb.get_item(TableName=self.table, ConsistentRead=True,
                                                   Key={"lockKey": {"S": name}}))

    # ---- 2. take-over of a dead holder ----

    def test_killed_holder_is_taken_over_after_one_lease(self):
        name = unique("kill")
        obs = Observer(ENDPOINT, self.table, name).start()
        self.addCleanup(obs.stop)
        a = self.holder(name, "victim", "--hold", -1)
        self.expect_event(a, "acquired", 10)
        b = self.holder(name, "heir", "--mode", "wait", "--hold", 300)
        self.expect_event(b, "ready", 10)
        # While the victim refreshes, every refresh restarts the waiter's count.
        time.sleep((LEASE_MS + 1000) / 1000.0)
        self.assertEqual(b.of("acquired"), [],
                         "the waiter took over a lock its holder kept refreshing: "
                         + b.describe())
        a.p.send_signal(signal.SIGKILL)
        t_kill = now_ms()
        a.finish(10)
        got = self.expect_event(b, "acquired", LEASE + 5)
        t_b, v_b = int(got[1]), got[2]
        self.expect_exit(b, 0)
        obs.stop()
        vs = obs.versions()
        self.assertIn(v_b, vs, "the observer never saw the heir's version")
        v_last = vs[vs.index(v_b) - 1]
        w_low = obs.written_after(v_last)
        self.assertIsNotNone(w_low, "observer has no answer before %s" % v_last)
        claimed = [int(e[3]) for e in a.of("acquired") + a.of("version") if e[2] == v_last]
        say("take-over %d ms after the kill, %d ms after the last write "
            "could have happened (lease %d ms)" % (t_b - t_kill, t_b - w_low, LEASE_MS))
        # Safety: the heir cannot have seen v_last before it was written.
        self.assertGreaterEqual(t_b, w_low + LEASE_MS,
                                "taken over %d ms after the victim's last write at the "
                                "earliest, before the lease of %d ms: %s"
                                % (t_b - w_low, LEASE_MS, b.describe()))
        for w in claimed:
            self.assertGreaterEqual(t_b, w + LEASE_MS)
        # Liveness: the last write was before the kill; one poll to see it.
        self.assertLessEqual(t_b, t_kill + LEASE_MS + POLL_MAX_MS + SLACK_MS,
                             "take-over %d ms after the kill (lease %d ms)"
                             % (t_b - t_kill, LEASE_MS))

    # ---- 3. a stalled server: the holder gives up first ----

    def test_stalled_server_holder_reports_lost_before_anyone_takes_over(self):
        kind = SERVER if SERVER in ("dynalite", "moto") else "dynalite"
        state = tempfile.mkdtemp(prefix="lynk-stall-")
        self.addCleanup(shutil.rmtree, state, True)
        senv = dict(os.environ, LYNK_STATE_DIR=state)
        senv.pop("LOCAL_DDB_PORT", None)
        local_ddb = os.path.join(SOURCE_ROOT, "scripts", "local-ddb")
        r = subprocess.run([local_ddb, "start", kind], env=senv, capture_output=True,
                           text=True, timeout=120)
        self.assertEqual(r.returncode, 0, "cannot start a dedicated %s: %s" % (kind, r.stderr))
        url = r.stdout.strip()
        with open(os.path.join(state, kind + ".pid")) as f:
            spid = int(f.read())

        def stop_server():
            try:
                os.killpg(spid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            subprocess.run([local_ddb, "stop", kind], env=senv, timeout=60)
        self.addCleanup(stop_server)

        ddb = boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1",
                           aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key=SECRET)
        table, name = unique("lynk-stall"), unique("stall")
        create_table(ddb, table)
        env = clean_env(AWS_ENDPOINT_URL=url)
        obs = Observer(url, table, name).start()
        self.addCleanup(obs.stop)
        a = self.holder(name, "stalled", "--hold", -1, table=table, env=env)
        self.expect_event(a, "acquired", 10)
        b = self.holder(name, "patient", "--mode", "wait", "--hold", 300,
                        table=table, env=env)
        self.expect_event(b, "ready", 10)
        time.sleep(0.8)  # b polls and sees a's refreshes

        os.killpg(spid, signal.SIGSTOP)
        t_stop = now_ms()
        lost = a.wait_event("lost", LEASE + 3)
        t_after = now_ms()
        os.killpg(spid, signal.SIGCONT)
        t_cont = now_ms()
        if lost is None:
            self.fail("the holder never reported the lock lost while the server was "
                      "stopped for %d ms (lease %d ms): %s" % (t_after - t_stop, LEASE_MS,
                                                               a.describe()))
        t_lost, w_claim = int(lost[1]), int(lost[3])
        say("lost %d ms after SIGSTOP, %d ms after its last write (lease %d ms)"
            % (t_lost - t_stop, t_lost - w_claim, LEASE_MS))
        self.assertGreaterEqual(t_lost, t_stop, "lost while the server answered: "
                                + a.describe())
        # Its last successful write was sent before the stop, and by its own
        # account at w_claim: lost must come before either + lease.
        self.assertLess(t_lost, t_stop + LEASE_MS, a.describe())
        self.assertLess(t_lost, w_claim + LEASE_MS, a.describe())
        self.assertEqual(b.of("acquired"), [], "acquired during the stall: " + b.describe())
        self.expect_exit(a, 3, timeout=30)

        got = self.expect_event(b, "acquired", 2 * LEASE + 5)
        t_b, v_b = int(got[1]), got[2]
        self.expect_exit(b, 0)
        obs.stop()
        say("the waiter acquired %d ms after SIGCONT, %d ms after the holder's last write"
            % (t_b - t_cont, t_b - w_claim))
        self.assertGreater(t_b, t_lost)
        self.assertGreaterEqual(t_b, w_claim + LEASE_MS, b.describe())
        vs = obs.versions()
        late = {v for sent, _, v in obs.samples if sent >= t_cont} - set(
            v for sent, _, v in obs.samples if sent < t_stop) - {v_b, None}
        say("versions first seen after SIGCONT (late writes of the holder): %d" % len(late))
        self.assertIn(v_b, vs, "the observer never saw the waiter's version")
        self.assertGreater(vs.index(v_b), 0)
        w_low = obs.written_after(vs[vs.index(v_b) - 1])
        self.assertGreaterEqual(t_b, w_low + LEASE_MS,
                                "taken over %d ms after the last write could have "
                                "happened: %s" % (t_b - w_low, b.describe()))

    # ---- 4. a lynk client and the engine exclude each other ----

    def test_lynk_peer_and_engines_exclude_each_other(self):
        name = unique("peer")
        # Holds longer than a lease: the waiters must see refreshes and wait on.
        py = self.peer(name, "lynk-python", "--count", 3, "--hold", "2600,100",
                       "--gap", 100, "--log", self.log)
        self.expect_event(py, "acquired", 15)
        engines = [self.holder(name, "engine-%d" % i, "--mode", "wait", "--count", 2,
                               "--hold", "2600,100" if i == 0 else "100,2600",
                               "--gap", 200, "--log", self.log)
                   for i in range(2)]
        for p in engines + [py]:
            self.expect_exit(p, 0, timeout=120)
        lines = self.read_log()
        self.check_exclusion(lines)
        enters = [l.split()[1] for l in lines if l.startswith("enter")]
        self.assertEqual(enters.count("lynk-python"), 3)
        self.assertEqual(enters.count("engine-0") + enters.count("engine-1"), 4)
        pairs = set(zip(enters, enters[1:]))
        self.assertTrue(any(a == "lynk-python" and b != a for a, b in pairs),
                        "no engine ever followed the peer: %s" % enters)
        self.assertTrue(any(a != "lynk-python" and b == "lynk-python" for a, b in pairs),
                        "the peer never followed an engine: %s" % enters)

    def test_lynk_peer_takes_over_a_dead_engines_lock(self):
        name = unique("peer-heir")
        a = self.holder(name, "dead-engine", "--hold", -1)
        self.expect_event(a, "acquired", 10)
        time.sleep(0.5)
        py = self.peer(name, "lynk-python", "--hold", 50)
        self.expect_event(py, "ready", 15)
        time.sleep(0.3)
        a.p.send_signal(signal.SIGKILL)
        t_kill = now_ms()
        a.finish(10)
        got = self.expect_event(py, "acquired", 3 * LEASE + 5)
        # lynk sleeps a lease after each observation, and the engine's
        # refreshes may make it sleep more than once: between one and three.
        self.assertLess(int(got[1]) - t_kill, 3 * LEASE_MS + SLACK_MS)
        self.expect_exit(py, 0)

    # ---- 5. hand-off ----

    def test_waiter_in_another_process_takes_a_released_lock_at_once(self):
        name, count = unique("handoff"), 3
        # The gap (600 ms) is longer than the bound, so after a release only
        # the other process can take the lock within it; the hold (800 ms) is
        # longer than the gap, so that process is already waiting.
        first = self.holder(name, "hand-0", "--mode", "wait", "--count", count,
                            "--hold", 800, "--gap", 600, "--log", self.log)
        self.expect_event(first, "acquired", 10)
        procs = [first, self.holder(name, "hand-1", "--mode", "wait", "--count", count,
                                    "--hold", 800, "--gap", 600, "--log", self.log)]
        for p in procs:
            self.expect_exit(p, 0, timeout=60)
        self.check_exclusion(self.read_log())
        ev = sorted([(int(e[1]), e[0], i) for i, p in enumerate(procs)
                     for e in p.events if e[0] in ("acquiring", "acquired", "released")])
        text = "\n".join("  %d %s hand-%d" % x for x in ev)
        delays = []
        for k, (t, kind, who) in enumerate(ev):
            if kind != "released":
                continue
            # A hand-off: the other process was waiting when this one released.
            before = [x for x in ev[:k] if x[2] != who and x[1] != "released"]
            if not before or before[-1][1] != "acquiring":
                continue
            nxt = [x for x in ev[k + 1:] if x[1] == "acquired"]
            self.assertTrue(nxt, "the waiter never acquired:\n" + text)
            self.assertNotEqual(nxt[0][2], who,
                                "the releaser re-took the lock before the waiter:\n" + text)
            delays.append(nxt[0][0] - t)
        say("hand-off delays (ms): %s" % delays)
        self.assertGreaterEqual(len(delays), 3, "too few hand-offs to measure:\n" + text)
        self.assertLess(max(delays), 500, "hand-off took %s ms:\n%s" % (delays, text))

    # ---- 6. lynk's item format ----

    def test_items_are_lynks_as_boto3_sees_them(self):
        name = unique("format")
        obs = Observer(ENDPOINT, self.table, name).start()
        self.addCleanup(obs.stop)
        a = self.holder(name, "format-host", "--hold", 1500, "--heartbeat", 300)
        got = self.expect_event(a, "acquired", 10)
        self.expect_exit(a, 0, timeout=30)
        obs.stop()
        self.assertTrue(obs.items, "the observer never saw the item")
        versions = []
        for item in obs.items:
            self.assertEqual(set(item), {"lockKey", "leaseDuration", "versionNumber",
                                         "hostIdentifier"}, item)
            self.assertEqual(item["lockKey"], {"S": name})
            self.assertEqual(item["leaseDuration"], {"N": str(LEASE)})
            self.assertEqual(item["hostIdentifier"], {"S": "format-host"})
            self.assertEqual(list(item["versionNumber"]), ["S"])
            v = item["versionNumber"]["S"]
            self.assertRegex(v, UUID4)
            if v not in versions:
                versions.append(v)
        self.assertEqual(versions[0], got[2], "the first version is not the acquired one")
        self.assertGreaterEqual(len(versions), 3, "1.5 s at heartbeat 300 ms: %s" % versions)
        # Refreshes change versionNumber and keep leaseDuration.
        self.assertEqual(len(versions), len(set(versions)))
        from boto3.dynamodb.types import TypeDeserializer
        plain = {k: TypeDeserializer().deserialize(v) for k, v in obs.items[-1].items()}
        self.assertEqual(int(plain["leaseDuration"]), plain["leaseDuration"])
        self.assertEqual(plain["leaseDuration"], LEASE)
        self.assertNotIn("Item", self.ddb.get_item(TableName=self.table, ConsistentRead=True,
                                                   Key={"lockKey": {"S": name}}),
                         "release left the item")


def create_table(ddb, table):
    ddb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                     KeySchema=[{"AttributeName": "lockKey", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "lockKey",
                                            "AttributeType": "S"}])
    for _ in range(600):
        if ddb.describe_table(TableName=table)["Table"]["TableStatus"] == "ACTIVE":
            return
        time.sleep(0.1)
    raise AssertionError("table %s never became ACTIVE" % table)


if __name__ == "__main__":
    unittest.main()
