"""lynk_peer — owns a lock client written with boto3 that follows lynk's
protocol (SPEC.md §1) to the letter, as the Python library lynk does, so the
end-to-end tests can make it contend with lynkfs's engine on one table:

  acquire   PutItem {lockKey, leaseDuration N, versionNumber S uuid4,
            hostIdentifier} if attribute_not_exists(lockKey); when that
            fails, GetItem (consistent), sleep the observed leaseDuration,
            then PutItem if attribute_not_exists(lockKey) OR
            versionNumber = :observed; when that fails too, start again
  refresh   every heartbeat, UpdateItem SET versionNumber = :new,
            hostIdentifier = :host if versionNumber = :mine (a thread)
  release   DeleteItem if versionNumber = :mine

As a program it speaks the harness language of tests/integration/lockholder.c
(the same stdout events and critical-section log lines, monotonic times):

  python3 lynk_peer.py --table T --name N [--host H] [--lease S]
      [--heartbeat MS] [--hold MS[,MS...]] [--gap MS] [--count K]
      [--log FILE] [--endpoint URL]
"""
import argparse
import os
import sys
import threading
import time
import uuid

import boto3
from botocore.config import Config


def now_ms():
    """CLOCK_MONOTONIC in milliseconds, as lk_now_ms() in the C harness."""
    return int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1000)


def client(endpoint=None):
    return boto3.client(
        "dynamodb", endpoint_url=endpoint or os.environ.get("AWS_ENDPOINT_URL"),
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        config=Config(retries={"max_attempts": 3, "mode": "standard"},
                      connect_timeout=3, read_timeout=5))


class LockLost(Exception):
    pass


class LynkLock:
    """One lock of one table, held the way lynk holds it."""

    def __init__(self, ddb, table, name, host, lease_s, heartbeat_s,
                 on_lost=None, refresher_client=None):
        self.ddb, self.table, self.name, self.host = ddb, table, name, host
        self.lease_s, self.heartbeat_s = lease_s, heartbeat_s
        self.on_lost = on_lost
        self.refresher_ddb = refresher_client or ddb
        self.version = None
        self.lost = False
        self._mu = threading.Lock()
        self._stop = threading.Event()
        self._thread = None

    def _put(self, condition, values=None):
        version = str(uuid.uuid4())
        args = dict(TableName=self.table,
                    Item={"lockKey": {"S": self.name},
                          "leaseDuration": {"N": str(self.lease_s)},
                          "versionNumber": {"S": version},
                          "hostIdentifier": {"S": self.host}},
                    ConditionExpression=condition)
        if values:
            args["ExpressionAttributeValues"] = values
        self.ddb.put_item(**args)
        return version

    def acquire(self):
        cond_failed = self.ddb.exceptions.ConditionalCheckFailedException
        while True:
            try:
                self.version = self._put("attribute_not_exists(lockKey)")
                break
            except cond_failed:
                pass
            item = self.ddb.get_item(TableName=self.table, ConsistentRead=True,
                                     Key={"lockKey": {"S": self.name}}).get("Item")
            if item is None:
                continue
            observed = item["versionNumber"]["S"]
            time.sleep(int(item["leaseDuration"]["N"]))
            try:
                self.version = self._put(
                    "attribute_not_exists(lockKey) OR versionNumber = :observed",
                    {":observed": {"S": observed}})
                break
            except cond_failed:
                continue
        self._stop.clear()
        self._thread = threading.Thread(target=self._refresher, daemon=True)
        self._thread.start()
        return self.version

    def _refresher(self):
        cond_failed = self.refresher_ddb.exceptions.ConditionalCheckFailedException
        while not self._stop.wait(self.heartbeat_s):
            new = str(uuid.uuid4())
            with self._mu:
                if self._stop.is_set():
                    return
                try:
                    self.refresher_ddb.update_item(
                        TableName=self.table, Key={"lockKey": {"S": self.name}},
                        UpdateExpression="SET versionNumber = :new, hostIdentifier = :host",
                        ConditionExpression="versionNumber = :mine",
                        ExpressionAttributeValues={":new": {"S": new},
                                                   ":host": {"S": self.host},
                                                   ":mine": {"S": self.version}})
                    self.version = new
                except cond_failed:
                    self.lost = True
                    if self.on_lost:
                        self.on_lost(self)
                    return

    def release(self):
        with self._mu:
            self._stop.set()
        if self._thread:
            self._thread.join()
        if self.lost:
            raise LockLost(self.name)
        self.ddb.delete_item(TableName=self.table, Key={"lockKey": {"S": self.name}},
                             ConditionExpression="versionNumber = :mine",
                             ExpressionAttributeValues={":mine": {"S": self.version}})


def main(argv=None):
    p = argparse.ArgumentParser(description="a lynk-protocol lock client (boto3)")
    p.add_argument("--table", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--host", default=os.uname().nodename)
    p.add_argument("--lease", type=int, default=3)
    p.add_argument("--heartbeat", type=int, default=0, help="ms; default lease/4")
    p.add_argument("--hold", default="100")
    p.add_argument("--gap", type=int, default=0)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--log")
    p.add_argument("--endpoint")
    a = p.parse_args(argv)
    holds = [int(h) for h in a.hold.split(",")]
    heartbeat_s = (a.heartbeat or a.lease * 250) / 1000.0
    out_mu = threading.Lock()

    def event(line):
        with out_mu:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    log_fd = os.open(a.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if a.log else None

    def cs_log(what, seq, tag=""):
        if log_fd is not None:
            line = "%s %s %d %d %d%s\n" % (what, a.host, os.getpid(), seq, now_ms(),
                                          " " + tag if tag else "")
            os.write(log_fd, line.encode())

    lock = LynkLock(client(a.endpoint), a.table, a.name, a.host, a.lease, heartbeat_s,
                    on_lost=lambda l: event("lost %d %s 0" % (now_ms(), l.version)),
                    refresher_client=client(a.endpoint))
    event("ready %d" % now_ms())
    status = 0
    for seq in range(a.count):
        event("acquiring %d" % now_ms())
        version = lock.acquire()
        cs_log("enter", seq)
        event("acquired %d %s 0" % (now_ms(), version))
        end = now_ms() + holds[seq % len(holds)]
        while now_ms() < end and not lock.lost:
            time.sleep(0.01)
        cs_log("exit", seq, "lost" if lock.lost else "")
        try:
            lock.release()
            event("released %d" % now_ms())
        except LockLost:
            status = 3
            break
        if a.gap and seq + 1 < a.count:
            time.sleep(a.gap / 1000.0)
    event("done %d %d" % (now_ms(), status))
    return status


if __name__ == "__main__":
    sys.exit(main())
