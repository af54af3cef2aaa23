"""End-to-end tests of lynkfs on a real FUSE mount against the local DynamoDB
server (SPEC §3-§5): the shell idioms driven by real programs (touch, rm,
cat, bash `exec 9>`, `set -C`, `.`, flock(1)) on two mounts of one table
acting as two hosts, the errors of §5, the file text, stat and xattrs,
expiry and take-over timing after a close or a daemon kill, unmount, a
lynk-protocol peer written with boto3, 1,000 waiters, and mount failures.
boto3 is the independent observer of what is really in the table."""
import ctypes
import errno
import fcntl
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time

from botocore.exceptions import ClientError

from lynktest import SERVER, clean_env, free_port, program, run, unique
from mountfix import (LYNKFS, UUID4, MountCase, daemon_pids, mounted, parse_text,
                      sh_quote, threads_of)

LEASE = 3          # short lease where a test waits for expiry
HB = "0.5"         # heartbeat with it: several refreshes per lease
TOL = 0.35         # timing tolerance (poll intervals, process start)


def q(path):
    return sh_quote(path)


class ShellIdioms(MountCase):
    """SPEC §5's shell block, across two mounts ("hosts") of one table."""

    def setUp(self):
        super().setUp()
        self.t = self.make_table()
        self.a = self.mount(self.t, "host-a", "lease=%d" % LEASE, "heartbeat=" + HB)
        self.b = self.mount(self.t, "host-b", "lease=%d" % LEASE, "heartbeat=" + HB)

    def test_touch_is_a_try_lock_and_rm_releases(self):
        r = self.bash("touch %s || exit 1; echo ok" % q(self.a.path("report")))
        self.assertEqual((r.returncode, r.stdout), (0, "ok\n"), r.stderr)
        it = self.item(self.t, "report")
        self.assertEqual(it["hostIdentifier"]["S"], "host-a")

        t0 = time.monotonic()
        r = self.bash("touch %s || exit 1; echo ok" % q(self.b.path("report")))
        took = time.monotonic() - t0
        self.assertEqual(r.returncode, 1, "touch of a lock held on the other host succeeded")
        self.assertEqual(r.stdout, "")
        self.assertLess(took, 1.5, "touch of a held lock must fail at once")
        self.assertEqual(self.item(self.t, "report")["hostIdentifier"]["S"], "host-a")

        r = self.bash("rm %s" % q(self.a.path("report")))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIsNone(self.item(self.t, "report"), "rm did not delete the item")
        self.assertNotIn("report", os.listdir(self.a.dir))

        r = self.bash("touch %s || exit 1; echo ok" % q(self.b.path("report")))
        self.assertEqual((r.returncode, r.stdout), (0, "ok\n"), r.stderr)
        self.assertEqual(self.item(self.t, "report")["hostIdentifier"]["S"], "host-b")
        self.assertEqual(self.bash("rm %s" % q(self.b.path("report"))).returncode, 0)
        self.assertIsNone(self.item(self.t, "report"))

    def test_exec_waits_until_the_other_host_releases(self):
        h = self.holder(self.a.path("deploy"))
        w = self.proc('exec 9>%s || exit 3; echo acquired; read -r _ || :' % q(self.b.path("deploy")))
        self.assertIsNone(w.line(1.5), "exec 9> acquired a lock held on the other host")
        self.assertEqual(self.item(self.t, "deploy")["hostIdentifier"]["S"], "host-a")
        t0 = time.monotonic()
        r = self.bash("rm %s" % q(self.a.path("deploy")))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(w.line(3), "acquired", "the waiter did not take the released lock")
        self.assertLess(time.monotonic() - t0, 1.0, "a waiter takes a released lock within a poll")
        self.assertEqual(self.item(self.t, "deploy")["hostIdentifier"]["S"], "host-b")
        # the first holder's descriptor stays valid and reads as released
        h.finish()
        rc, err = w.finish()
        self.assertEqual(rc, 0, err)

    def test_a_waiting_open_does_not_stall_the_mount(self):
        # host-b saw "deploy" absent a moment ago (a listing within cache=);
        # then host-a took it. host-b's exec 9> must wait for it without
        # holding up other creates and unlinks on host-b's mount.
        self.assertNotIn("deploy", os.listdir(self.b.dir))
        h = self.holder(self.a.path("deploy"))
        w = self.proc('exec 9>%s || exit 3; echo acquired; read -r _ || :' % q(self.b.path("deploy")))
        self.assertIsNone(w.line(0.5), "exec 9> acquired a lock held on the other host")
        t0 = time.monotonic()
        r = self.bash("touch %s && rm %s" % (q(self.b.path("other")), q(self.b.path("other"))),
                      timeout=20)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertLess(time.monotonic() - t0, 3.0, "a waiting open stalled the mount")
        self.assertEqual(self.bash("rm %s" % q(self.a.path("deploy"))).returncode, 0)
        self.assertEqual(w.line(3), "acquired", "the waiter did not take the released lock")
        h.finish()
        rc, err = w.finish()
        self.assertEqual(rc, 0, err)

    def test_held_while_fd_open_and_refreshed_every_heartbeat(self):
        h = self.holder(self.a.path("deploy"))
        w = self.watch(self.t, "deploy")
        time.sleep(2.2)
        versions = w.versions_of("host-a")
        # heartbeat 0.5 s over 2.2 s: about 4 refreshes; allow slack
        self.assertGreaterEqual(len(set(versions)), 3, "item not refreshed while fd 9 is open: %r"
                                % w.changes)
        self.assertNotIn(None, [c[1] for c in w.changes], "item vanished while held")
        for v in versions:
            self.assertRegex(v, UUID4)
        it = self.item(self.t, "deploy")
        self.assertEqual(it["leaseDuration"]["N"], str(LEASE))
        # still held: the other host cannot take it
        r = self.bash("touch %s" % q(self.b.path("deploy")))
        self.assertNotEqual(r.returncode, 0)
        h.finish()

    def test_flock_options_across_hosts(self):
        h = self.holder(self.a.path("job"))
        bjob = q(self.b.path("job"))
        t0 = time.monotonic()
        r = self.bash("flock -n %s -c 'echo ran'" % bjob)
        self.assertEqual((r.returncode, r.stdout), (1, ""), r.stderr)
        self.assertLess(time.monotonic() - t0, 1.5)
        r = self.bash("flock -n -E 42 %s true" % bjob)
        self.assertEqual(r.returncode, 42, r.stderr)
        t0 = time.monotonic()
        r = self.bash("flock -w 1 %s -c 'echo ran'" % bjob)
        took = time.monotonic() - t0
        self.assertEqual((r.returncode, r.stdout), (1, ""), r.stderr)
        self.assertGreater(took, 0.9, "flock -w 1 gave up before 1 s")
        self.assertLess(took, 3.0, "flock -w 1 waited far more than 1 s")
        self.assertEqual(self.item(self.t, "job")["hostIdentifier"]["S"], "host-a")
        # -w with a release meanwhile: runs the command once acquired
        w = self.proc("flock -w 10 %s -c 'echo ran; sleep 0.3'; echo rc=$?" % bjob)
        self.assertIsNone(w.line(0.8))
        self.assertEqual(self.bash("rm %s" % q(self.a.path("job"))).returncode, 0)
        self.assertEqual(w.line(3), "ran")
        it = self.item(self.t, "job")
        self.assertIsNotNone(it, "flock's lock is not in the table while its command runs")
        self.assertEqual(it["hostIdentifier"]["S"], "host-b")
        self.assertEqual(w.line(5), "rc=0")
        # flock's close released it
        self.assertTrue(self.wait_for(lambda: self.item(self.t, "job") is None, 2),
                        "flock(1) did not release at exit: %r" % self.item(self.t, "job"))
        h.finish()

    def test_flock_opens_a_name_the_other_host_just_took(self):
        # flock(1) opens O_RDONLY|O_CREAT, then flock(2)s. When the name was
        # seen absent (stat) and the other host takes it right before the
        # open, the open must still succeed (never acquire, never fail) and
        # flock must then wait or report the conflict, not "cannot open".
        r = self.bash("stat %s; touch %s || exit 9; flock -w 1 %s true; echo rc=$?"
                      % (q(self.b.path("z")), q(self.a.path("z")), q(self.b.path("z"))))
        self.assertEqual(r.stdout.strip().splitlines()[-1:], ["rc=1"],
                         "flock -w 1 of a lock just taken elsewhere: %r" % r.stderr)
        self.assertNotIn("cannot open lock file", r.stderr)
        self.assertEqual(self.item(self.t, "z")["hostIdentifier"]["S"], "host-a")

    def test_flock_mutual_exclusion_between_two_mounts(self):
        d = tempfile.mkdtemp(prefix="lynk-log-")
        self.addCleanup(shutil.rmtree, d, True)
        log = os.path.join(d, "log")
        n = 8
        body = ('for i in $(seq %d); do flock %%s -c "echo start %%s$i >> %s; sleep 0.05; '
                'echo end %%s$i >> %s" || echo fail; done; echo done' % (n, log, log))
        pa = self.proc(body % (q(self.a.path("g")), "A", "A"))
        pb = self.proc(body % (q(self.b.path("g")), "B", "B"))
        for p in (pa, pb):
            out = p.line(60)
            if out != "done":
                p.line(30)
                rc, err = p.finish()
                self.fail("flock(1) failed: %r, stderr %r" % (out, err))
        with open(log) as f:
            lines = f.read().split()
        self.assertEqual(len(lines), 4 * 2 * n, lines)
        pairs = list(zip(lines[0::4], lines[1::4], lines[2::4], lines[3::4]))
        for s, who, e, who2 in pairs:
            self.assertEqual((s, e, who), ("start", "end", who2), "overlap in %r" % lines)
        self.assertEqual(sorted(p[1] for p in pairs),
                         sorted(["A%d" % i for i in range(1, n + 1)] + ["B%d" % i for i in range(1, n + 1)]))
        self.assertIsNone(self.item(self.t, "g"))

    def test_set_C_classic_lockfile(self):
        self.holder(self.a.path("job"))
        for m in (self.b, self.a):  # held elsewhere, and held on this very mount
            r = self.bash("set -C; echo $$ > %s && echo took" % q(m.path("job")))
            self.assertNotEqual(r.returncode, 0, "set -C wrote into a held lock on %s" % m.host)
            self.assertEqual(r.stdout, "")
        self.assertEqual(self.item(self.t, "job")["hostIdentifier"]["S"], "host-a")
        # the kernel's answer itself: EEXIST
        with self.assertRaises(FileExistsError):
            os.open(self.b.path("job"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        # a free name: acquired, with the pid as the note
        r = self.bash("set -C; echo $$ > %s && echo took $$" % q(self.b.path("free")))
        self.assertEqual(r.returncode, 0, r.stderr)
        pid = r.stdout.split()[1]
        it = self.item(self.t, "free")
        self.assertEqual(it["hostIdentifier"]["S"], "host-b")
        self.assertEqual(it.get("note", {}).get("S"), pid)
        self.assertEqual(self.bash("rm %s" % q(self.b.path("free"))).returncode, 0)
        self.assertIsNone(self.item(self.t, "free"))

    def test_sourcing_tells_who_holds_it(self):
        self.holder(self.a.path("deploy"), note="deploying 1.4.2")
        it = self.item(self.t, "deploy")
        r = self.bash('. %s; echo "$host|$owner|$state|$lease|$name|$note|$version"'
                      % q(self.b.path("deploy")))
        self.assertEqual(r.returncode, 0, r.stderr)
        host, owner, state, lease, name, note, version = r.stdout.rstrip("\n").split("|")
        self.assertEqual((host, owner, state, lease, name, note),
                         ("host-a", "other", "held", str(LEASE), "deploy", "deploying 1.4.2"))
        # the version is the one in the table, or a later refresh of it
        self.assertRegex(version, UUID4)
        r = self.bash('. %s; echo "$host|$owner|$pid"' % q(self.a.path("deploy")))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.split("|")[:2], ["host-a", "self"])
        self.assertTrue(r.stdout.split("|")[2].strip().isdigit(), r.stdout)
        self.assertEqual(it["note"]["S"], "deploying 1.4.2")


class ItemsAndText(MountCase):
    """What lynkfs writes (lynk-compatible, seen by boto3) and what it shows."""

    def setUp(self):
        super().setUp()
        self.t = self.make_table()
        self.a = self.mount(self.t, "web-1", "lease=7")
        self.b = self.mount(self.t, "web-2", "lease=7")

    def test_item_is_lynk_compatible(self):
        h = self.holder(self.a.path("deploy"), note="deploying 1.4.2")
        it = self.item(self.t, "deploy")
        self.assertIsNotNone(it)
        self.assertEqual(it["lockKey"], {"S": "deploy"})
        self.assertEqual(it["leaseDuration"], {"N": "7"})
        self.assertEqual(set(it["versionNumber"]), {"S"})
        self.assertRegex(it["versionNumber"]["S"], UUID4)
        self.assertEqual(it["hostIdentifier"], {"S": "web-1"})
        self.assertEqual(it["note"], {"S": "deploying 1.4.2"})
        h.finish()
        # a holder's write sets the note, truncate clears it
        fd = os.open(self.a.path("n"), os.O_WRONLY | os.O_CREAT)
        try:
            os.write(fd, b"hello world\n")
            self.assertEqual(self.item(self.t, "n")["note"], {"S": "hello world"})
            os.ftruncate(fd, 0)
            self.assertNotEqual(self.item(self.t, "n").get("note", {}).get("S", ""), "hello world")
            self.assertEqual(self.bash("cat %s" % q(self.a.path("n"))).stdout.splitlines()[-1], "note=")
        finally:
            os.close(fd)

    def test_text_stat_modes_and_xattrs(self):
        h = self.holder(self.a.path("deploy"), note="deploying 1.4.2")
        it = self.item(self.t, "deploy")
        mine = self.bash("cat %s" % q(self.a.path("deploy")))
        self.assertEqual(mine.returncode, 0, mine.stderr)
        f = parse_text(mine.stdout)
        self.assertEqual(list(f), ["name", "host", "version", "lease", "owner", "state", "pid", "note"])
        self.assertEqual((f["name"], f["host"], f["lease"], f["owner"], f["state"], f["pid"], f["note"]),
                         ("deploy", "web-1", "7", "self", "held", str(h.pid), "deploying 1.4.2"))
        self.assertEqual(f["version"], it["versionNumber"]["S"])
        self.assertIn('note="deploying 1.4.2"\n', mine.stdout)
        st = os.stat(self.a.path("deploy"))
        self.assertEqual(st.st_size, len(mine.stdout.encode()))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o644)
        self.assertTrue(stat.S_ISREG(st.st_mode))

        other = self.bash("cat %s" % q(self.b.path("deploy")))
        self.assertEqual(other.returncode, 0, other.stderr)
        g = parse_text(other.stdout)
        self.assertEqual(list(g), ["name", "host", "version", "lease", "owner", "state", "note"])
        self.assertEqual((g["name"], g["host"], g["owner"], g["state"], g["note"]),
                         ("deploy", "web-1", "other", "held", "deploying 1.4.2"))
        st = os.stat(self.b.path("deploy"))
        self.assertEqual(st.st_size, len(other.stdout.encode()))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o444)

        for m in (self.a, self.b):
            self.assertEqual(stat.S_IMODE(os.stat(m.dir).st_mode), 0o1777)
            self.assertTrue(stat.S_ISDIR(os.stat(m.dir).st_mode))
        x = {k: os.getxattr(self.a.path("deploy"), "user.lynk." + k).decode()
             for k in ("host", "version", "lease", "state", "owner")}
        self.assertEqual((x["host"], x["lease"], x["state"], x["owner"]), ("web-1", "7", "held", "self"))
        self.assertRegex(x["version"], UUID4)
        self.assertEqual(os.getxattr(self.b.path("deploy"), "user.lynk.owner"), b"other")
        self.assertEqual(os.getxattr(self.b.path("deploy"), "user.lynk.host"), b"web-1")
        names = set(os.listxattr(self.b.path("deploy")))
        self.assertTrue({"user.lynk.host", "user.lynk.version", "user.lynk.lease",
                         "user.lynk.state", "user.lynk.owner"} <= names, names)
        # released: the holder's descriptor stays valid and reads "released"
        self.assertEqual(self.bash("rm %s" % q(self.a.path("deploy"))).returncode, 0)
        h.finish()

    def test_listing_shows_every_item_with_encoded_names(self):
        self.holder(self.a.path("mine"))
        for key in ("a/b%c", "plain", "100%"):
            self.ddb.put_item(TableName=self.t, Item={
                "lockKey": {"S": key}, "leaseDuration": {"N": "20"},
                "versionNumber": {"S": "2f1d4b1e-8a4c-4c55-9d1e-6b0f3f1c2a7e"},
                "hostIdentifier": {"S": "lynk-peer"}},
                ConditionExpression="attribute_not_exists(lockKey)")
        time.sleep(1.2)  # cache=1: a listing may be one second stale
        want = {"mine", "a%2Fb%25c", "plain", "100%25"}
        for m in (self.a, self.b):
            self.assertEqual(set(os.listdir(m.dir)), want)
            r = self.bash("ls %s" % q(m.dir))
            self.assertEqual(set(r.stdout.split()), want)
        r = self.bash("cat %s" % q(self.b.path("a%2Fb%25c")))
        self.assertEqual(r.returncode, 0, r.stderr)
        f = parse_text(r.stdout)
        self.assertEqual((f["name"], f["host"], f["lease"], f["owner"]), ("a/b%c", "lynk-peer", "20", "other"))
        r = self.bash("touch %s" % q(self.b.path("a%2Fb%25c")))
        self.assertNotEqual(r.returncode, 0)
        # a name made through the mount with %2F is the key with a slash
        r = self.bash("touch %s" % q(self.b.path("x%2Fy")))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIsNotNone(self.item(self.t, "x/y"))


class Errors(MountCase):
    """SPEC §5's table of errors."""

    def setUp(self):
        super().setUp()
        self.t = self.make_table()
        self.a = self.mount(self.t, "host-a", "lease=%d" % LEASE, "heartbeat=" + HB)
        self.b = self.mount(self.t, "host-b", "lease=%d" % LEASE, "heartbeat=" + HB)

    def err(self, fn, *args):
        try:
            fn(*args)
        except OSError as e:
            return e.errno
        return 0

    def test_excl_busy_and_eperm_operations(self):
        h = self.holder(self.a.path("f"))
        for m in (self.a, self.b):
            self.assertEqual(self.err(os.open, m.path("f"), os.O_WRONLY | os.O_CREAT | os.O_EXCL), errno.EEXIST)
        self.assertEqual(self.err(os.unlink, self.b.path("f")), errno.EBUSY)
        self.assertEqual(self.item(self.t, "f")["hostIdentifier"]["S"], "host-a")
        r = self.bash("rm %s" % q(self.b.path("f")))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("busy", r.stderr.lower())
        p = self.a.path
        self.assertEqual(self.err(os.rename, p("f"), p("g")), errno.EPERM)
        self.assertEqual(self.err(os.link, p("f"), p("g")), errno.EPERM)
        self.assertEqual(self.err(os.symlink, "f", p("s")), errno.EPERM)
        self.assertEqual(self.err(os.mknod, p("n"), stat.S_IFIFO | 0o644), errno.EPERM)
        self.assertEqual(self.err(os.mkdir, p("d")), errno.EPERM)
        self.assertEqual(sorted(i["lockKey"]["S"] for i in self.items(self.t)), ["f"])
        h.finish()

    def test_shared_and_byte_range_locks_are_refused(self):
        h = self.holder(self.a.path("f"))
        fd = os.open(self.a.path("f"), os.O_RDONLY)
        try:
            self.assertEqual(self.err(fcntl.flock, fd, fcntl.LOCK_SH), errno.EOPNOTSUPP)
            self.assertEqual(self.err(fcntl.flock, fd, fcntl.LOCK_SH | fcntl.LOCK_NB), errno.EOPNOTSUPP)
            self.assertEqual(self.err(fcntl.lockf, fd, fcntl.LOCK_SH), errno.EOPNOTSUPP,
                             "an fcntl read lock was granted: silently local only")
        finally:
            os.close(fd)
        fd = os.open(self.b.path("other"), os.O_RDWR | os.O_CREAT | os.O_NONBLOCK)
        try:
            self.assertEqual(self.err(fcntl.lockf, fd, fcntl.LOCK_EX | fcntl.LOCK_NB), errno.EOPNOTSUPP,
                             "an fcntl write lock was granted: silently local only")
            self.assertEqual(self.err(fcntl.lockf, fd, fcntl.LOCK_EX), errno.EOPNOTSUPP)
        finally:
            os.close(fd)
        h.finish()

    def test_nonblocking_open_fails_at_once(self):
        self.holder(self.a.path("f"))
        t0 = time.monotonic()
        e = self.err(os.open, self.b.path("f"), os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK)
        self.assertEqual(e, errno.EWOULDBLOCK)
        self.assertLess(time.monotonic() - t0, 1.0)
        # also a read-write open of the existing name on the holder's own mount
        e = self.err(os.open, self.a.path("f"), os.O_RDWR | os.O_NONBLOCK)
        self.assertEqual(e, errno.EWOULDBLOCK)
        self.assertEqual(self.item(self.t, "f")["hostIdentifier"]["S"], "host-a")

    def test_wait_limit(self):
        c = self.mount(self.t, "host-c", "lease=%d" % LEASE, "heartbeat=" + HB, "wait=1")
        self.holder(self.a.path("f"))
        t0 = time.monotonic()
        e = self.err(os.open, c.path("f"), os.O_WRONLY | os.O_CREAT)
        took = time.monotonic() - t0
        self.assertEqual(e, errno.EWOULDBLOCK)
        self.assertGreater(took, 0.9)
        self.assertLess(took, 3.0)
        t0 = time.monotonic()
        r = self.bash("exec 9>%s || exit 7; echo acquired" % q(c.path("f")))
        self.assertEqual((r.returncode, r.stdout), (7, ""), r.stderr)
        self.assertIn("Resource temporarily unavailable", r.stderr)
        self.assertEqual(self.item(self.t, "f")["hostIdentifier"]["S"], "host-a")

    def test_signal_interrupts_a_waiting_exec(self):
        h = self.holder(self.a.path("f"))
        # bash retries an open that a trapped signal interrupted; an untrapped
        # SIGINT ends it while it waits in exec 9>
        w = self.proc("echo waiting; exec 9>%s; echo acquired; read -r _ || :" % q(self.b.path("f")))
        self.assertEqual(w.line(5), "waiting")
        time.sleep(0.8)
        self.assertIsNone(w.p.poll(), "the waiter did not wait")
        t0 = time.monotonic()
        w.p.send_signal(signal.SIGINT)
        try:
            rc = w.p.wait(timeout=3)
        except subprocess.TimeoutExpired:
            rc = None
        self.assertEqual(rc, -signal.SIGINT, "bash waiting in exec 9> did not end on SIGINT")
        self.assertLess(time.monotonic() - t0, 1.5)
        self.assertIsNone(w.line(0.1))
        # precise errno with a raw open(2)
        libc = ctypes.CDLL(None, use_errno=True)
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGALRM, lambda *a: None)
            signal.setitimer(signal.ITIMER_REAL, 0.7)
            fd = libc.open(self.b.path("f").encode(), os.O_WRONLY | os.O_CREAT, 0o644)
            os._exit(100 if fd >= 0 else min(ctypes.get_errno(), 99))
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), errno.EINTR)
        # nothing acquired by the interrupted waiters, now or after the release
        self.assertEqual(self.item(self.t, "f")["hostIdentifier"]["S"], "host-a")
        self.assertEqual(self.bash("rm %s" % q(self.a.path("f"))).returncode, 0)
        time.sleep(1.0)
        self.assertIsNone(self.item(self.t, "f"), "an interrupted waiter acquired the lock later")
        h.finish()

    def test_invalid_utf8_name(self):
        bad = os.fsencode(self.a.dir) + b"/bad\xff\xfename"
        self.assertEqual(self.err(os.open, bad, os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK), errno.EILSEQ)
        self.assertEqual(self.items(self.t), [])

    def test_read_only_open_never_acquires_or_waits(self):
        self.holder(self.a.path("f"))
        v0 = self.item(self.t, "f")
        t0 = time.monotonic()
        r = self.bash("cat %s" % q(self.b.path("f")))
        self.assertLess(time.monotonic() - t0, 1.5)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(parse_text(r.stdout)["host"], "host-a")
        self.assertEqual(self.item(self.t, "f")["hostIdentifier"], v0["hostIdentifier"])
        r = self.bash("cat %s" % q(self.b.path("absent")))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("No such file", r.stderr)
        self.assertIsNone(self.item(self.t, "absent"), "cat of an absent name created a lock")

    def test_ro_mount_refuses_to_acquire(self):
        ro = self.mount(self.t, "host-ro", "ro")
        self.holder(self.a.path("f"))
        r = self.bash("touch %s" % q(ro.path("new")))
        self.assertNotEqual(r.returncode, 0)
        r = self.bash("exec 9>%s" % q(ro.path("new2")))
        self.assertNotEqual(r.returncode, 0)
        self.assertIsNone(self.item(self.t, "new"))
        self.assertIsNone(self.item(self.t, "new2"))
        self.assertEqual(self.err(os.open, ro.path("f"), os.O_WRONLY | os.O_NONBLOCK), errno.EROFS)
        self.assertEqual(self.err(os.unlink, ro.path("f")), errno.EROFS)
        time.sleep(1.1)
        self.assertEqual(os.listdir(ro.dir), ["f"])
        r = self.bash("cat %s" % q(ro.path("f")))
        self.assertEqual(parse_text(r.stdout)["host"], "host-a")


class Expiry(MountCase):
    """Closing the holder, keep, daemon death, unmount."""

    def test_closed_holder_expires_then_other_host_takes_over(self):
        t = self.make_table()
        a = self.mount(t, "host-a", "lease=%d" % LEASE, "heartbeat=" + HB)
        b = self.mount(t, "host-b", "lease=%d" % LEASE, "heartbeat=" + HB)
        w = self.watch(t, "job")
        h = self.holder(a.path("job"))
        time.sleep(1.2)
        self.assertGreaterEqual(len(set(w.versions_of("host-a"))), 2, w.changes)
        rc, _ = h.finish()
        closed = time.monotonic()
        f = parse_text(self.bash("cat %s" % q(a.path("job"))).stdout)
        self.assertEqual((f.get("state"), f.get("owner")), ("expiring", "self"))
        waiter = self.proc("exec 9>%s || exit 3; echo acquired; read -r _ || :" % q(b.path("job")))
        got = waiter.line(LEASE + 4)
        self.assertEqual(got, "acquired", "no take-over after the lease")
        took_at = waiter.lines[-1][0]
        time.sleep(0.2)
        last_a = w.last_change_of("host-a")
        self.assertIsNotNone(last_a)
        self.assertLess(last_a, closed + 0.6, "refreshes went on after the holder closed: %r" % w.changes)
        seen = [c[1] for c in w.changes]
        self.assertNotIn(None, seen[seen.index(next(v for v in seen if v)):],
                         "the item vanished before the take-over: %r" % w.changes)
        self.assertGreaterEqual(took_at, last_a + LEASE - TOL,
                                "taken over %.2f s after the last refresh (lease %d)"
                                % (took_at - last_a, LEASE))
        self.assertLess(took_at, last_a + LEASE + 2.5)
        self.assertEqual(self.item(t, "job")["hostIdentifier"]["S"], "host-b")
        # the first mount now sees it held by the other host
        f = parse_text(self.bash("cat %s" % q(a.path("job"))).stdout)
        self.assertEqual((f["host"], f["owner"]), ("host-b", "other"))
        waiter.finish()

    def test_keep_refreshes_after_close_until_rm(self):
        t = self.make_table()
        k = self.mount(t, "host-k", "keep", "lease=2", "heartbeat=0.5")
        b = self.mount(t, "host-b", "lease=2")
        w = self.watch(t, "kept")
        self.assertEqual(self.bash("touch %s" % q(k.path("kept"))).returncode, 0)
        time.sleep(3.5)  # past the lease
        self.assertGreaterEqual(len(set(w.versions_of("host-k"))), 4, w.changes)
        self.assertGreater(w.last_change_of("host-k"), time.monotonic() - 1.2, w.changes)
        r = self.bash("touch %s" % q(b.path("kept")))
        self.assertNotEqual(r.returncode, 0, "a kept lock was taken over")
        self.assertEqual(self.bash("rm %s" % q(k.path("kept"))).returncode, 0)
        self.assertIsNone(self.item(t, "kept"))
        time.sleep(0.8)
        self.assertIsNone(self.item(t, "kept"), "refreshed after rm")

    def test_killed_daemon_locks_taken_over_after_lease(self):
        t = self.make_table()
        a = self.mount(t, "host-a", "lease=%d" % LEASE, "heartbeat=" + HB, foreground=False)
        b = self.mount(t, "host-b", "lease=%d" % LEASE, "heartbeat=" + HB)
        self.assertEqual(daemon_pids(a.dir), [a.pid])
        w = self.watch(t, "k2")
        touched = time.monotonic()
        self.assertEqual(self.bash("touch %s" % q(a.path("k1"))).returncode, 0)
        h = self.holder(a.path("k2"))
        time.sleep(1.2)
        self.assertGreaterEqual(len(set(w.versions_of("host-a"))), 2)
        os.kill(a.pid, signal.SIGKILL)
        killed = time.monotonic()
        self.assertTrue(a.wait_exit(5))
        w1 = self.proc("exec 9>%s || exit 3; echo acquired; read -r _ || :" % q(b.path("k2")))
        w0 = self.proc("exec 9>%s || exit 3; echo acquired; read -r _ || :" % q(b.path("k1")))
        self.assertEqual(w1.line(LEASE + 4), "acquired")
        took_at = w1.lines[-1][0]
        last_a = w.last_change_of("host-a")
        self.assertLess(last_a, killed + 0.3)
        self.assertGreaterEqual(took_at, last_a + LEASE - TOL,
                                "taken over %.2f s after the dead daemon's last refresh"
                                % (took_at - last_a))
        self.assertEqual(self.item(t, "k2")["hostIdentifier"]["S"], "host-b")
        self.assertEqual(w0.line(LEASE + 4), "acquired")
        self.assertGreaterEqual(w0.lines[-1][0], touched + LEASE - TOL,
                                "k1 taken over %.2f s after its only write"
                                % (w0.lines[-1][0] - touched))
        self.assertEqual(self.item(t, "k1")["hostIdentifier"]["S"], "host-b")
        w0.finish()
        h.kill()
        self.assertEqual(a.unmount(lazy=True).returncode, 0)
        self.assertFalse(mounted(a.dir))
        w1.finish()

    def test_unmount_releases_every_lock(self):
        t = self.make_table()
        a = self.mount(t, "host-a", "lease=20")
        k = self.mount(t, "host-k", "keep", "lease=20")
        s = self.mount(t, "host-s", "lease=20")
        for m in (a, k, s):
            r = self.bash("touch %s %s %s" % (q(m.path(m.host + "-1")), q(m.path(m.host + "-2")),
                                             q(m.path(m.host + "-3"))))
            self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(self.items(t)), 9)
        for m in (a, k):
            r = m.unmount()
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertTrue(m.wait_exit(10), "daemon still running after unmount")
            self.assertFalse(mounted(m.dir))
        os.kill(s.pid, signal.SIGTERM)
        self.assertTrue(s.wait_exit(10), "daemon still running after SIGTERM")
        self.assertFalse(mounted(s.dir), "SIGTERM left the mount behind")
        left = [(i["lockKey"]["S"], i["hostIdentifier"]["S"]) for i in self.items(t)]
        self.assertEqual(left, [], "locks left in the table after unmount/SIGTERM")


class LostLock(MountCase):
    """A lock broken from outside (lynk break) is lost for its holder: the
    state says so, writes fail with EIO, the log names the lock, and it is
    never silently re-acquired."""

    def setUp(self):
        super().setUp()
        self.t = self.make_table()
        self.a = self.mount(self.t, "host-a", "lease=%d" % LEASE, "heartbeat=" + HB)

    def test_broken_lock_is_lost_not_reacquired(self):
        fd = os.open(self.a.path("deploy"), os.O_RDWR | os.O_CREAT, 0o644)
        self.addCleanup(os.close, fd)
        self.assertEqual(self.item(self.t, "deploy")["hostIdentifier"]["S"], "host-a")
        r = run([program("lynk"), "break", self.t, "deploy"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"^Broke lock deploy \(held by host-a, version [0-9a-f-]{36}\)\n$")
        self.assertIsNone(self.item(self.t, "deploy"))
        # the next refresh (heartbeat 0.5 s) finds another version: lost
        deadline = time.monotonic() + 3 * LEASE
        text = ""
        while time.monotonic() < deadline:
            text = os.pread(fd, 4096, 0).decode()   # the holder's descriptor
            if "state=lost" in text:
                break
            time.sleep(0.1)
        self.assertIn("state=lost", text)
        self.assertFalse(os.path.exists(self.a.path("deploy")), "the name shows the table: free")
        with self.assertRaises(OSError) as cm:
            os.write(fd, b"still mine?")
        self.assertEqual(cm.exception.errno, errno.EIO)
        self.assertIn("deploy", self.a.logtext())
        self.assertIn("lost", self.a.logtext())
        time.sleep(1.0)
        self.assertIsNone(self.item(self.t, "deploy"), "a lost lock was re-acquired")
        r = run([program("lynk"), "break", self.t, "deploy"])
        self.assertEqual((r.returncode, r.stdout), (0, "Lock deploy is not held.\n"))

class MountHelper(MountCase):
    """mount(8) runs /sbin/mount.lynkfs TABLE DIR -o OPTS: `mount -t lynkfs`
    and an fstab line work, fstab-only options are dropped, umount
    releases. The test links /sbin/mount.lynkfs to the built lynkfs for its
    duration (as `ninja install` would install it)."""

    HELPER = "/sbin/mount.lynkfs"

    def setUp(self):
        super().setUp()
        if os.path.lexists(self.HELPER):
            self.fail("%s already exists: this test would replace it; remove it first"
                      % self.HELPER)
        os.symlink(LYNKFS, self.HELPER)
        self.addCleanup(os.unlink, self.HELPER)
        self.t = self.make_table()
        self.dir = tempfile.mkdtemp(prefix="lynkfs-mnt-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.addCleanup(self.umount)

    def umount(self):
        if mounted(self.dir):
            subprocess.run(["umount", self.dir], capture_output=True)
        if mounted(self.dir):
            subprocess.run(["umount", "-l", self.dir], capture_output=True)
        for pid in daemon_pids(self.dir):
            os.kill(pid, signal.SIGKILL)

    def check_mount(self, lease, host):
        self.assertTrue(mounted(self.dir))
        r = self.bash("touch %s" % q(os.path.join(self.dir, "job")))
        self.assertEqual(r.returncode, 0, r.stderr)
        it = self.item(self.t, "job")
        self.assertEqual((it["leaseDuration"]["N"], it["hostIdentifier"]["S"]), (str(lease), host))
        r = subprocess.run(["umount", self.dir], capture_output=True, text=True, env=self.env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertFalse(mounted(self.dir))
        # the daemon releases what it holds, then exits
        deadline = time.monotonic() + 15
        while daemon_pids(self.dir) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(daemon_pids(self.dir), [], "the daemon did not exit after umount")
        self.assertIsNone(self.item(self.t, "job"), "umount did not release the lock")

    def test_mount_t_lynkfs(self):
        r = subprocess.run(["mount", "-t", "lynkfs", "-o", "_netdev,lease=30,host=via-mount",
                            self.t, self.dir], capture_output=True, text=True, env=self.env,
                           timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open("/proc/mounts") as f:
            line = [l for l in f if l.split()[1] == os.path.realpath(self.dir)]
        self.assertEqual(line[0].split()[:3], [self.t, os.path.realpath(self.dir), "fuse.lynkfs"])
        self.check_mount(30, "via-mount")

    def test_fstab_line(self):
        fstab = os.path.join(self.dir + ".fstab")
        self.addCleanup(os.unlink, fstab)
        with open(fstab, "w") as f:
            f.write("%s %s lynkfs _netdev,nofail,noauto,lease=25,host=via-fstab 0 0\n"
                    % (self.t, self.dir))
        r = subprocess.run(["mount", "--fstab", fstab, self.dir], capture_output=True,
                           text=True, env=self.env, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.check_mount(25, "via-fstab")

    def test_mount_failure_is_one_line_and_nothing_mounted(self):
        r = subprocess.run(["mount", "-t", "lynkfs", "no-such-table", self.dir],
                           capture_output=True, text=True, env=self.env, timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("no-such-table does not exist", r.stderr)
        self.assertEqual(len([l for l in r.stderr.splitlines() if "lynkfs" in l]), 1, r.stderr)
        self.assertFalse(mounted(self.dir))


class LynkPeer:
    """A lynk-protocol client written with boto3 (SPEC §1)."""

    def __init__(self, ddb, table, host="lynk-peer", lease=LEASE):
        self.ddb, self.table, self.host, self.lease = ddb, table, host, lease
        self.version = None

    def _new(self):
        import uuid
        return str(uuid.uuid4())

    def _item(self, key, v):
        return {"lockKey": {"S": key}, "leaseDuration": {"N": str(self.lease)},
                "versionNumber": {"S": v}, "hostIdentifier": {"S": self.host}}

    def try_acquire(self, key, observed=None):
        v = self._new()
        kw = {"ConditionExpression": "attribute_not_exists(lockKey)"}
        if observed:
            kw = {"ConditionExpression": "attribute_not_exists(lockKey) OR versionNumber = :o",
                  "ExpressionAttributeValues": {":o": {"S": observed}}}
        try:
            self.ddb.put_item(TableName=self.table, Item=self._item(key, v), **kw)
        except ClientError as e:
            if e.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        self.version = v
        return True

    def acquire_waiting(self, key, timeout):
        """lynk's waiter: take over only a version unchanged for its lease."""
        deadline = time.monotonic() + timeout
        seen, since, lease = None, None, None
        while time.monotonic() < deadline:
            it = self.ddb.get_item(TableName=self.table, Key={"lockKey": {"S": key}},
                                   ConsistentRead=True).get("Item")
            now = time.monotonic()
            if not it:
                if self.try_acquire(key):
                    return True
                continue
            v = it["versionNumber"]["S"]
            if v != seen:
                seen, since, lease = v, now, int(it["leaseDuration"]["N"])
            elif now - since >= lease and self.try_acquire(key, observed=v):
                return True
            time.sleep(0.1)
        return False

    def refresh(self, key):
        v = self._new()
        self.ddb.update_item(TableName=self.table, Key={"lockKey": {"S": key}},
                             UpdateExpression="SET versionNumber = :n, hostIdentifier = :h",
                             ConditionExpression="versionNumber = :m",
                             ExpressionAttributeValues={":n": {"S": v}, ":h": {"S": self.host},
                                                        ":m": {"S": self.version}})
        self.version = v

    def release(self, key):
        self.ddb.delete_item(TableName=self.table, Key={"lockKey": {"S": key}},
                             ConditionExpression="versionNumber = :m",
                             ExpressionAttributeValues={":m": {"S": self.version}})


class LynkProtocolPeer(MountCase):
    def setUp(self):
        super().setUp()
        self.t = self.make_table()
        self.a = self.mount(self.t, "host-a", "lease=%d" % LEASE, "heartbeat=" + HB)
        self.peer = LynkPeer(self.ddb, self.t)

    def test_peer_holds_mount_excluded_then_waits_for_release(self):
        self.assertTrue(self.peer.try_acquire("p"))
        r = self.bash("touch %s" % q(self.a.path("p")))
        self.assertNotEqual(r.returncode, 0, "touch took a lock a lynk peer holds")
        f = parse_text(self.bash("cat %s" % q(self.a.path("p"))).stdout)
        self.assertEqual((f["host"], f["owner"], f["lease"]), ("lynk-peer", "other", str(LEASE)))
        w = self.proc("exec 9>%s || exit 3; echo acquired; read -r _ || :" % q(self.a.path("p")))
        # the peer refreshes within its lease for longer than a lease: no take-over
        for _ in range(5):
            self.assertIsNone(w.line(1.0), "the mount took over a lock its peer keeps refreshing")
            self.peer.refresh("p")
        self.assertEqual(self.item(self.t, "p")["hostIdentifier"]["S"], "lynk-peer")
        self.peer.release("p")
        self.assertEqual(w.line(2), "acquired")
        self.assertEqual(self.item(self.t, "p")["hostIdentifier"]["S"], "host-a")
        w.finish()

    def test_mount_holds_peer_excluded_then_takes_over_after_lease(self):
        h = self.holder(self.a.path("q"))
        self.assertFalse(self.peer.try_acquire("q"), "peer's conditional put succeeded on a held lock")
        seen = self.item(self.t, "q")["versionNumber"]["S"]
        time.sleep(1.0)  # a heartbeat or two later the observed version is stale
        self.assertFalse(self.peer.try_acquire("q", observed=seen),
                         "peer took over a lock that was being refreshed")
        self.assertFalse(self.peer.acquire_waiting("q", timeout=LEASE + 1.5),
                         "lynk's waiter took over a lock whose holder is open")
        self.assertEqual(self.item(self.t, "q")["hostIdentifier"]["S"], "host-a")
        h.finish()  # closed: expires after the lease
        t0 = time.monotonic()
        self.assertTrue(self.peer.acquire_waiting("q", timeout=LEASE + 5))
        self.assertGreater(time.monotonic() - t0, LEASE - 1.0)
        self.assertEqual(self.item(self.t, "q")["hostIdentifier"]["S"], "lynk-peer")
        r = self.bash("touch %s" % q(self.a.path("q")))
        self.assertNotEqual(r.returncode, 0)
        self.peer.release("q")
        self.assertIsNone(self.item(self.t, "q"))


class ManyWaiters(MountCase):
    def test_thousand_flock_processes_on_one_lock(self):
        n = int(os.environ.get("LYNK_TEST_WAITERS", "1000"))
        t = self.make_table()
        m = self.mount(t, "host-a")
        d = tempfile.mkdtemp(prefix="lynk-many-")
        self.addCleanup(shutil.rmtree, d, True)
        log = os.path.join(d, "log")
        # hold it while all of them start, so that they all wait
        h = self.holder(m.path("x"))
        procs = []
        errlog = open(os.path.join(d, "stderr"), "w+")
        self.addCleanup(errlog.close)
        t0 = time.monotonic()
        for i in range(n):
            procs.append(subprocess.Popen(
                ["flock", m.path("x"), "-c",
                 "echo start $$ >> %s; sleep 0.01; echo end $$ >> %s" % (log, log)],
                env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=errlog))
        self.addCleanup(lambda: [p.kill() for p in procs if p.poll() is None])
        started = time.monotonic() - t0
        time.sleep(1.0)
        threads = threads_of(m.pid)
        self.assertFalse(os.path.exists(log), "a flock ran while the lock was held")
        self.assertLess(threads, 100, "%d threads for %d waiting opens" % (threads, n))
        t1 = time.monotonic()
        self.assertEqual(self.bash("rm %s" % q(m.path("x"))).returncode, 0)
        h.finish()
        max_threads = threads
        deadline = time.monotonic() + 180
        for p in procs:
            while p.poll() is None and time.monotonic() < deadline:
                max_threads = max(max_threads, threads_of(m.pid))
                time.sleep(0.05)
        ran = time.monotonic() - t1
        rcs = [p.poll() for p in procs]
        errlog.seek(0)
        errs = errlog.read()
        print("\n[%s] %d flock processes: started in %.1f s, all ran in %.1f s (%.1f ms each), "
              "daemon threads <= %d" % (SERVER, n, started, ran, 1000 * ran / n, max_threads))
        self.assertEqual(rcs.count(0), n, "failed: %s" % errs[:2000])
        self.assertLess(max_threads, 100)
        with open(log) as f:
            lines = f.read().split("\n")[:-1]
        self.assertEqual(len(lines), 2 * n)
        pids = []
        for s, e in zip(lines[0::2], lines[1::2]):
            k1, p1 = s.split()
            k2, p2 = e.split()
            self.assertEqual((k1, k2, p1), ("start", "end", p2), "overlap at %s / %s" % (s, e))
            pids.append(p1)
        self.assertEqual(len(set(pids)), n, "some ran twice")
        self.assertIsNone(self.item(t, "x"))


class MountFailures(MountCase):
    """SPEC §3: one line on stderr naming the cause, non-zero exit, nothing
    mounted."""

    def attempt(self, table, *opts, env=None, timeout=30):
        d = tempfile.mkdtemp(prefix="lynkfs-fail-")
        self.addCleanup(lambda: (mounted(d) and subprocess.run(["fusermount3", "-uz", d]),
                                 os.rmdir(d)))
        args = [LYNKFS, table, d] + (["-o", ",".join(opts)] if opts else [])
        t0 = time.monotonic()
        r = subprocess.run(args, env=env or self.env, capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
        took = time.monotonic() - t0
        self.assertNotEqual(r.returncode, 0, "mount succeeded: %s" % (args,))
        self.assertFalse(mounted(d), "left mounted after a failure")
        self.assertEqual(daemon_pids(d), [], "a daemon is left running")
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        self.assertEqual(len(lines), 1, "want one line on stderr, got %r" % r.stderr)
        self.assertEqual(r.stdout, "")
        return lines[0], took

    def test_missing_table(self):
        name = unique("missing")
        line, _ = self.attempt(name)
        self.assertIn(name, line)
        self.assertIn("does not exist", line)

    def test_wrong_key(self):
        name = self.make_table(key="id")
        line, _ = self.attempt(name)
        self.assertIn("lockKey", line)
        name = self.make_table(key="lockKey", key_type="N")
        line, _ = self.attempt(name)
        self.assertIn("lockKey", line)

    def test_no_region(self):
        t = self.make_table()
        env = clean_env(AWS_REGION=None, AWS_DEFAULT_REGION=None)
        line, _ = self.attempt(t, env=env)
        self.assertIn("region", line)

    def test_endpoint_refusing_connections(self):
        t = self.make_table()
        url = "http://127.0.0.1:%d" % free_port()
        line, took = self.attempt(t, "endpoint=" + url)
        self.assertIn("127.0.0.1:", line)
        self.assertLess(took, 20)

    def test_bad_option_values(self):
        t = self.make_table()
        line, _ = self.attempt(t, "lease=0")
        self.assertIn("lease", line)
        line, _ = self.attempt(t, "lease=abc")
        self.assertIn("lease", line)
        line, _ = self.attempt(t, "lease=4", "heartbeat=3")
        self.assertIn("heartbeat", line)
        line, _ = self.attempt(t, "wait=-1")
        self.assertIn("wait", line)
        line, _ = self.attempt(t, "bogus=1")
        self.assertIn("bogus", line)


if __name__ == "__main__":
    import unittest
    unittest.main()
