"""mountfix — the mount fixture of the end-to-end tests of lynkfs: a fresh
lock table per test, lynkfs mounts of it in temporary directories (always
unmounted and their daemons ended at cleanup, even after a failure), shell
holders that keep a lock file open, and a boto3 watcher of one item."""
import os
import re
import select
import signal
import subprocess
import tempfile
import threading
import time
import unittest

from lynktest import clean_env, observer, program, require_endpoint, unique

LYNKFS = program("lynkfs")
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def mounted(path):
    path = os.path.realpath(path)
    with open("/proc/mounts") as f:
        return any(line.split()[1] == path for line in f)


def daemon_pids(mountpoint):
    """Pids of the lynkfs processes whose command line names mountpoint."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        # mount(8) runs the daemon as mount.lynkfs
        if argv and os.path.basename(argv[0]) in (b"lynkfs", b"mount.lynkfs") and \
                os.fsencode(mountpoint) in argv:
            pids.append(int(d))
    return pids


def threads_of(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return -1


class Mount:
    """One lynkfs mount: dir (the mount point), pid (its daemon), log."""

    def __init__(self, table, host, opts=(), foreground=True, env=None):
        self.table, self.host = table, host
        self.dir = tempfile.mkdtemp(prefix="lynkfs-mnt-")
        self.log = tempfile.NamedTemporaryFile(prefix="lynkfs-log-", delete=False)
        self.proc = None
        o = ["host=%s" % host] + list(opts)
        args = [LYNKFS, table, self.dir, "-o", ",".join(o)]
        env = env or clean_env()
        if foreground:
            self.proc = subprocess.Popen(args + ["-f"], env=env, stdin=subprocess.DEVNULL,
                                         stdout=self.log, stderr=self.log)
        else:
            r = subprocess.run(args, env=env, stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=30)
            if r.returncode != 0:
                raise AssertionError("lynkfs %s failed (%d): %s" % (args, r.returncode, r.stderr))
        deadline = time.monotonic() + 15
        while not mounted(self.dir):
            if self.proc and self.proc.poll() is not None:
                raise AssertionError("lynkfs exited %d before mounting: %s"
                                     % (self.proc.returncode, self.logtext()))
            if time.monotonic() > deadline:
                raise AssertionError("lynkfs did not mount %s: %s" % (self.dir, self.logtext()))
            time.sleep(0.02)
        pids = [self.proc.pid] if self.proc else daemon_pids(self.dir)
        if len(pids) != 1:
            raise AssertionError("expected one lynkfs daemon for %s, found %r" % (self.dir, pids))
        self.pid = pids[0]

    def path(self, name):
        return os.path.join(self.dir, name)

    def logtext(self):
        try:
            with open(self.log.name, errors="replace") as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def alive(self):
        if self.proc:
            return self.proc.poll() is None
        try:
            os.kill(self.pid, 0)
            with open("/proc/%d/stat" % self.pid) as f:
                return f.read().split(") ")[1][0] != "Z"
        except (OSError, IndexError):
            return False

    def wait_exit(self, timeout):
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        return not self.alive()

    def unmount(self, lazy=False):
        return subprocess.run(["fusermount3", "-uz" if lazy else "-u", self.dir],
                              capture_output=True, text=True, timeout=30)

    def cleanup(self):
        if mounted(self.dir):
            if self.unmount().returncode != 0:
                self.unmount(lazy=True)
        if not self.wait_exit(5):
            try:
                os.kill(self.pid, signal.SIGTERM)
            except OSError:
                pass
            if not self.wait_exit(5):
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except OSError:
                    pass
                self.wait_exit(5)
        if self.proc:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.rmdir(self.dir)
        except OSError:
            pass
        try:
            os.unlink(self.log.name)
        except OSError:
            pass


class Proc:
    """A background bash script whose stdout lines are read with a timeout,
    each with the monotonic time it was seen."""

    def __init__(self, script, env=None, cwd=None):
        self.p = subprocess.Popen(["bash", "-c", script], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env=env or clean_env(), cwd=cwd)
        self.buf = b""
        self.lines = []

    def line(self, timeout):
        """The next stdout line (str), or None at timeout or end of file."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([self.p.stdout], [], [], left)
            if not r:
                return None
            chunk = os.read(self.p.stdout.fileno(), 4096)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        t = time.monotonic()
        self.lines.append((t, line.decode()))
        return line.decode()

    def finish(self, timeout=10):
        """Close stdin (a `read` in the script returns), wait; (rc, stderr)."""
        try:
            self.p.stdin.close()
        except OSError:
            pass
        try:
            self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        return self.p.returncode, self.p.stderr.read().decode(errors="replace")

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
        try:
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.p.stdin, self.p.stdout, self.p.stderr):
            try:
                f.close()
            except OSError:
                pass


class Watch:
    """Polls one item with consistent reads (boto3) in a thread and records
    every change of (versionNumber, hostIdentifier), with the monotonic time
    it was first seen."""

    def __init__(self, table, key, interval=0.05):
        self.ddb = observer()
        self.table, self.key, self.interval = table, key, interval
        self.changes = []  # (t, version or None, host or None)
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        last = ()
        while not self.stop_ev.is_set():
            it = self.ddb.get_item(TableName=self.table, Key={"lockKey": {"S": self.key}},
                                   ConsistentRead=True).get("Item")
            cur = (it["versionNumber"]["S"], it["hostIdentifier"]["S"]) if it else (None, None)
            if cur != last:
                self.changes.append((time.monotonic(),) + cur)
                last = cur
            self.stop_ev.wait(self.interval)

    def stop(self):
        self.stop_ev.set()
        self.t.join(10)

    def versions_of(self, host):
        return [c[1] for c in self.changes if c[2] == host]

    def last_change_of(self, host):
        ts = [c[0] for c in self.changes if c[2] == host]
        return ts[-1] if ts else None

    def first_change_to(self, host, after=0):
        ts = [c[0] for c in self.changes if c[2] == host and c[0] >= after]
        return ts[0] if ts else None


class MountCase(unittest.TestCase):
    """Base: a table per test (deleted at the end), mounts of it, helpers."""

    def setUp(self):
        require_endpoint(self)
        self.ddb = observer()
        self.env = clean_env()

    def make_table(self, key="lockKey", key_type="S"):
        name = unique("mnt")
        self.ddb.create_table(TableName=name,
                              KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
                              AttributeDefinitions=[{"AttributeName": key, "AttributeType": key_type}],
                              BillingMode="PAY_PER_REQUEST")
        self.addCleanup(self.drop_table, name)
        self.ddb.get_waiter("table_exists").wait(TableName=name,
                                                 WaiterConfig={"Delay": 0.2, "MaxAttempts": 100})
        return name

    def drop_table(self, name):
        try:
            self.ddb.delete_table(TableName=name)
        except self.ddb.exceptions.ResourceNotFoundException:
            pass

    def mount(self, table, host, *opts, foreground=True):
        m = Mount(table, host, opts, foreground=foreground, env=self.env)
        self.addCleanup(m.cleanup)
        self.addCleanup(self.dump_log_on_failure, m)
        return m

    def dump_log_on_failure(self, m):
        outcome = getattr(self, "_outcome", None)
        result = getattr(outcome, "result", None)
        bad = result and any(t is self for t, _ in result.failures + result.errors)
        if bad or os.environ.get("LYNK_TEST_VERBOSE"):
            print("\n--- lynkfs log of %s (host %s) ---\n%s" % (m.dir, m.host, m.logtext()))

    def bash(self, script, timeout=60, cwd=None):
        return subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                              env=self.env, timeout=timeout, cwd=cwd)

    def proc(self, script, cwd=None):
        p = Proc(script, env=self.env, cwd=cwd)
        self.addCleanup(p.kill)
        return p

    def holder(self, path, note=None, timeout=10):
        """bash holding `path` open on fd 9 (exec 9>) until finish()."""
        script = 'exec 9>"$1" || exit 3; echo acquired $$; '
        if note is not None:
            script += 'printf %s "$2" >&9 || exit 4; echo written; '
        script += 'read -r _ || :'
        p = Proc("set -- %s %s; %s" % (sh_quote(path), sh_quote(note or ""), script), env=self.env)
        self.addCleanup(p.kill)
        line = p.line(timeout)
        self.assertIsNotNone(line, "exec 9>%s did not acquire within %ss: %s"
                             % (path, timeout, p.p.poll()))
        self.assertTrue(line.startswith("acquired"), line)
        p.pid = int(line.split()[1])
        if note is not None:
            self.assertEqual(p.line(10), "written")
        return p

    def item(self, table, key):
        return self.ddb.get_item(TableName=table, Key={"lockKey": {"S": key}},
                                 ConsistentRead=True).get("Item")

    def items(self, table):
        return self.ddb.scan(TableName=table, ConsistentRead=True)["Items"]

    def watch(self, table, key, interval=0.05):
        w = Watch(table, key, interval)
        self.addCleanup(w.stop)
        return w

    def wait_for(self, pred, timeout, step=0.05):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = pred()
            if v:
                return v
            time.sleep(step)
        return pred()


def sh_quote(s):
    return "'" + s.replace("'", "'\\''") + "'"


def parse_text(text):
    """key=value lines of a lock file, as a shell would read them."""
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition("=")
        if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
            v = re.sub(r'\\(.)', r'\1', v[1:-1])
        out[k] = v
    return out
