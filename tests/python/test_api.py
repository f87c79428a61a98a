"""The gRPC API as a client in another language sees it.

Starts a three-site cluster (sites a, b and c, one `geostore node` process each, every node a peer of the
other two and a member of the lock group) and drives it through Python stubs generated from
proto/geostore/v1 (tests/python/run generates them and puts them on PYTHONPATH). Every assertion is about
what a client receives on the wire: response fields, status codes, the `geostore-outcome` and
`geostore-reason` trailers, and the google.rpc.ErrorInfo in the status details.

The tests wait for state (a node's status, a read with a causal token), never for time. The one sleep
models an outage: the restart test keeps site b's node down for a while so that clients back off, as
they would in production.

Run through tests/python/run; arguments go to unittest (e.g. `-k lock`).
"""

import concurrent.futures
import ctypes
import os
import queue
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

# The nodes are started with fork and exec while gRPC calls are in flight; the child runs no gRPC code, so
# gRPC's fork handlers are not needed (and would only log that they were skipped).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import grpc  # noqa: E402 (after the environment it reads)
from google.rpc import error_details_pb2  # noqa: E402
from grpc_status import rpc_status  # noqa: E402

from geostore.v1 import cluster_pb2, cluster_pb2_grpc, kv_pb2, kv_pb2_grpc, lock_pb2, lock_pb2_grpc  # noqa: E402

SITES = ("a", "b", "c")
# Raft timing for loopback: elections within about a second (the Rust process tests use the same).
FAST_RAFT = ["--raft-heartbeat-ms", "100", "--raft-election-timeout-min-ms", "500",
             "--raft-election-timeout-max-ms", "1000"]
# How long a node may take to open its store and print its address.
NODE_START_TIMEOUT_S = 60
# How long the cluster may take to connect its peers and elect a lock-group leader.
CLUSTER_READY_TIMEOUT_S = 60
# The deadline of every call (docs/api.md: always set one).
CALL_TIMEOUT_S = 10
# How long a causal read waits for the write it names (the node caps it at causal_wait_max_ms, 5 s).
CAUSAL_WAIT_MS = 5000
# How often a wait polls.
POLL_INTERVAL_S = 0.05
# How far a server's wall-clock timestamp may be from this machine's clock (same machine: small).
CLOCK_SLACK_MS = 5000

# The channel settings docs/api.md recommends: reconnect to a restarted node within about a second
# (gRPC's default backoff grows to 120 s), notice a dead connection within 15 s, and let calls wait for a
# connection (wait_for_ready) until their deadline instead of failing at once.
RECOMMENDED_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 10000),
    ("grpc.keepalive_timeout_ms", 5000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]

# Ports for nodes are taken below Linux's ephemeral range (32768 and up by default): while a node is down
# for its restart, its port cannot then be taken as the local port of an outgoing connection (the Rust
# process tests met exactly that). Each candidate is checked free by binding it.
FIXED_PORTS = range(20000, 32000)


def now_ms():
    return int(time.time() * 1000)


def free_port(taken):
    """A port on 127.0.0.1 that was free a moment ago and is not in `taken`."""
    start = random.randrange(len(FIXED_PORTS))
    for offset in range(len(FIXED_PORTS)):
        port = FIXED_PORTS[(start + offset) % len(FIXED_PORTS)]
        if port in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port in {FIXED_PORTS}")


def wait_until(what, timeout_s, check):
    """Calls `check` every 50 ms until it returns (ok, value) with ok true, and returns value; fails
    naming `what` and the last value observed if `timeout_s` passes first."""
    deadline = time.monotonic() + timeout_s
    while True:
        ok, observed = check()
        if ok:
            return observed
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout_s} s for {what}; last observed: {observed!r}")
        time.sleep(POLL_INTERVAL_S)


def _die_with_parent():
    """Runs in the child before exec: the kernel kills the node if this test process dies, even by
    SIGKILL, so that no node outlives a run (Linux only; elsewhere the finally blocks must do)."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Node:
    """One `geostore node` process, restartable at the same address on the same data directory."""

    def __init__(self, binary, site, directory, port, args):
        self.binary = binary
        self.site = site
        self.data_dir = os.path.join(directory, site)
        self.address = f"127.0.0.1:{port}"
        self.args = args
        self.log_path = os.path.join(directory, f"{site}.log")
        self.process = None

    def start(self):
        """Starts the node and returns once it has printed the address it listens on."""
        command = [self.binary, "node", "--data-dir", self.data_dir, "--listen", self.address, *self.args]
        env = dict(os.environ, GEOSTORE_LOG="warn,openraft=off")
        with open(self.log_path, "ab") as log:
            log.write(f"--- {' '.join(command)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, env=env,
                                            preexec_fn=_die_with_parent)
        lines = queue.Queue()
        # Read the announced address, then keep draining stdout so that the node never blocks on it.
        threading.Thread(target=self._drain, args=(self.process.stdout, lines), daemon=True).start()
        deadline = time.monotonic() + NODE_START_TIMEOUT_S
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise AssertionError(f"node {self.site} did not announce its address within "
                                     f"{NODE_START_TIMEOUT_S} s\n{self.log_tail()}")
            if line is None:
                self.process.wait()
                raise AssertionError(f"node {self.site} exited with {self.process.returncode} before "
                                     f"announcing its address\n{self.log_tail()}")
            if line.startswith("geostore node listening on "):
                announced = line.removeprefix("geostore node listening on ").strip()
                assert announced == self.address, (announced, self.address)
                return

    @staticmethod
    def _drain(stdout, lines):
        with stdout:
            for raw in stdout:
                lines.put(raw.decode(errors="replace"))
        lines.put(None)

    def kill(self):
        """SIGKILL: no shutdown, no flush."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait()

    def log_tail(self, lines=40):
        try:
            with open(self.log_path, errors="replace") as log:
                return "".join(log.readlines()[-lines:])
        except OSError:
            return ""


class Cluster:
    """Three sites, one node each: every node pulls from the other two and is a lock-group voter
    (lock-group id = position + 1), as crates/node/src/topology.rs wires a cluster."""

    def __init__(self, binary, directory):
        ports = []
        for _ in SITES:
            ports.append(free_port(ports))
        urls = {site: f"http://127.0.0.1:{port}" for site, port in zip(SITES, ports)}
        self.nodes = {}
        for i, site in enumerate(SITES):
            args = ["--site", site]
            for other in SITES:
                if other != site:
                    args += ["--peer", f"{other}={urls[other]}"]
            args += ["--node-id", str(i + 1)]
            for j, member in enumerate(SITES):
                args += ["--lock-member", f"{j + 1}={member}={urls[member]}"]
            self.nodes[site] = Node(binary, site, directory, ports[i], args + FAST_RAFT)
        self.channels = {}

    def start(self):
        for node in self.nodes.values():
            node.start()
        for site, node in self.nodes.items():
            self.channels[site] = grpc.insecure_channel(node.address, options=RECOMMENDED_CHANNEL_OPTIONS)

    def kv(self, site):
        return kv_pb2_grpc.KVStub(self.channels[site])

    def lock(self, site):
        return lock_pb2_grpc.LockStub(self.channels[site])

    def cluster(self, site):
        return cluster_pb2_grpc.ClusterStub(self.channels[site])

    def wait_ready(self):
        """Waits until every node has its pull stream from each peer up and all of them know the same
        lock-group leader."""
        def check():
            views = {}
            for site in SITES:
                try:
                    status = self.cluster(site).Status(cluster_pb2.StatusRequest(), timeout=2)
                except grpc.RpcError as error:
                    views[site] = f"{error.code().name}: {error.details()}"
                    continue
                peers = {peer.site: peer.connected for peer in status.peers}
                leader = status.lock_group.leader if status.HasField("lock_group") else None
                views[site] = (status.site, peers, leader)
            ready = all(
                isinstance(view, tuple) and view[0] == site and len(view[1]) == len(SITES) - 1
                and all(view[1].values()) and view[2]
                for site, view in views.items())
            leaders = {view[2] for view in views.values() if isinstance(view, tuple)}
            return ready and len(leaders) == 1, views
        started = time.monotonic()
        views = wait_until("every peer connected and one lock-group leader, as (site, peers, leader) per node",
                           CLUSTER_READY_TIMEOUT_S, check)
        print(f"cluster ready in {time.monotonic() - started:.2f} s; lock-group leader: node "
              f"{views['a'][2]}", flush=True)

    def stop(self):
        for channel in self.channels.values():
            channel.close()
        for node in self.nodes.values():
            node.kill()

    def print_logs(self):
        for node in self.nodes.values():
            print(f"--- last lines of node {node.site}'s log ({node.log_path}):\n{node.log_tail()}",
                  file=sys.stderr)


CLUSTER = None


def unique(name):
    """A key or lock name no other test (or earlier run on the same data) uses."""
    return f"{name}-{secrets.token_hex(4)}"


def token_text(token):
    """A causal token in its text form, SITE:PARTITION:SEQUENCE (proto/geostore/v1/kv.proto)."""
    return f"{token.site}:{token.partition}:{token.sequence}"


def error_info(error):
    """The geostore ErrorInfo in a failed call's status details (grpc-status-details-bin)."""
    status = rpc_status.from_call(error)
    assert status is not None, f"no status details in {error.code().name}: {error.details()}"
    infos = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            infos.append(info)
    geostore = [info for info in infos if info.domain == "geostore"]
    assert len(geostore) == 1, f"expected one ErrorInfo with domain geostore, got {infos}"
    return geostore[0]


def text_trailers(error):
    """A failed call's trailing metadata, the text entries only."""
    return {key: value for key, value in (error.trailing_metadata() or ()) if not key.endswith("-bin")}


class ApiTest(unittest.TestCase):
    """The cases run in name order; the restart comes last because it takes a node down."""

    maxDiff = None

    def setUp(self):
        self.a, self.b, self.c = (CLUSTER.kv(site) for site in SITES)

    def assertCloseToNow(self, unix_ms, what):
        self.assertLess(abs(unix_ms - now_ms()), CLOCK_SLACK_MS, f"{what} = {unix_ms}, now = {now_ms()}")

    def assertRefused(self, call, request, code, reason, fields, outcome="failed"):
        """Makes the call and checks that it failed with `code`, the outcome and reason trailers, and an
        ErrorInfo holding exactly `fields` plus the outcome. Returns the error."""
        with self.assertRaises(grpc.RpcError) as caught:
            call(request, timeout=CALL_TIMEOUT_S)
        error = caught.exception
        self.assertEqual(error.code(), code, error.details())
        trailers = text_trailers(error)
        self.assertEqual(trailers.get("geostore-outcome"), outcome, trailers)
        self.assertEqual(trailers.get("geostore-reason"), reason, trailers)
        info = error_info(error)
        self.assertEqual(info.reason, reason)
        self.assertEqual(dict(info.metadata), dict(fields, outcome=outcome))
        return error

    def get(self, kv, key, after=None):
        request = kv_pb2.GetRequest(key=key)
        if after is not None:
            request.after.CopyFrom(after)
            request.wait_ms = CAUSAL_WAIT_MS
        return kv.Get(request, timeout=CALL_TIMEOUT_S)

    def test_01_a_put_in_one_site_is_read_in_another_with_its_causal_token(self):
        key = unique("register").encode()
        put = self.a.Put(kv_pb2.PutRequest(key=key, value=b"v1"), timeout=CALL_TIMEOUT_S)
        self.assertEqual(put.token.site, "a")
        self.assertGreaterEqual(put.token.sequence, 1)
        self.assertFalse(put.existed)

        got = self.get(self.b, key, after=put.token)
        self.assertTrue(got.found)
        self.assertEqual(got.type, kv_pb2.VALUE_TYPE_REGISTER)
        self.assertEqual(got.WhichOneof("value"), "register")
        self.assertEqual(got.register, b"v1")
        # The writer's site record is in the key's partition, ahead of the write: the causal read that
        # waited for the write has it too (docs/api.md).
        self.assertEqual(got.last_write_site, "a")
        self.assertEqual(got.last_write_hlc, put.hlc)
        self.assertCloseToNow(got.last_write_unix_ms, "last_write_unix_ms")
        self.assertEqual(got.absence, kv_pb2.ABSENCE_UNSPECIFIED)
        self.assertFalse(got.HasField("last_write_fence"))
        self.assertFalse(got.HasField("expires_at_unix_ms"))

        ttl = self.a.Put(kv_pb2.PutRequest(key=key, value=b"v2", ttl_ms=600_000), timeout=CALL_TIMEOUT_S)
        self.assertTrue(ttl.existed)
        got = self.get(self.b, key, after=ttl.token)
        self.assertEqual(got.register, b"v2")
        self.assertTrue(got.HasField("expires_at_unix_ms"))
        self.assertCloseToNow(got.expires_at_unix_ms - 600_000, "expires_at_unix_ms - ttl")

    def test_02_an_absent_key_says_why(self):
        never = self.get(self.b, unique("never-written").encode())
        self.assertFalse(never.found)
        self.assertEqual(never.absence, kv_pb2.ABSENCE_NO_RECORD)
        self.assertFalse(never.HasField("absent_since_unix_ms"))
        self.assertIsNone(never.WhichOneof("value"))

        key = unique("deleted").encode()
        self.a.Put(kv_pb2.PutRequest(key=key, value=b"short-lived"), timeout=CALL_TIMEOUT_S)
        deleted = self.a.Delete(kv_pb2.DeleteRequest(key=key), timeout=CALL_TIMEOUT_S)
        self.assertTrue(deleted.existed)
        for kv in (self.a, self.b):
            got = self.get(kv, key, after=deleted.token)
            self.assertFalse(got.found)
            self.assertEqual(got.absence, kv_pb2.ABSENCE_DELETED)
            self.assertTrue(got.HasField("absent_since_unix_ms"))
            self.assertCloseToNow(got.absent_since_unix_ms, "absent_since_unix_ms")

    def test_03_increments_from_two_sites_add_up(self):
        key = unique("counter").encode()
        in_a = self.a.Increment(kv_pb2.IncrementRequest(key=key, delta=5), timeout=CALL_TIMEOUT_S)
        self.assertTrue(in_a.HasField("counter"))
        self.assertEqual(in_a.counter, 5)
        in_b = self.b.Increment(kv_pb2.IncrementRequest(key=key, delta=7), timeout=CALL_TIMEOUT_S)
        # Site b may or may not have merged a's increment yet: its reply counts what it has seen.
        self.assertIn(in_b.counter, (7, 12))
        for kv, after in ((self.a, in_b.token), (self.b, in_a.token)):
            got = self.get(kv, key, after=after)
            self.assertEqual((got.found, got.type, got.WhichOneof("value")),
                             (True, kv_pb2.VALUE_TYPE_COUNTER, "counter"))
            self.assertEqual(got.counter, 12)

    def test_04_set_add_remove_and_members(self):
        key = unique("set").encode()
        added = self.a.SetAdd(kv_pb2.SetAddRequest(key=key, members=[b"pear", b"apple", b"fig"]),
                              timeout=CALL_TIMEOUT_S)
        members = self.b.SetMembers(kv_pb2.SetMembersRequest(key=key, after=added.token, wait_ms=CAUSAL_WAIT_MS),
                                    timeout=CALL_TIMEOUT_S)
        self.assertTrue(members.found)
        self.assertEqual(list(members.members), [b"apple", b"fig", b"pear"])
        # Site b has seen the add (it read after its token), so its remove takes pear away everywhere.
        removed = self.b.SetRemove(kv_pb2.SetRemoveRequest(key=key, members=[b"pear", b"not-there"]),
                                   timeout=CALL_TIMEOUT_S)
        self.assertTrue(removed.existed)
        members = self.a.SetMembers(kv_pb2.SetMembersRequest(key=key, after=removed.token,
                                                             wait_ms=CAUSAL_WAIT_MS), timeout=CALL_TIMEOUT_S)
        self.assertEqual(list(members.members), [b"apple", b"fig"])
        got = self.get(self.a, key)
        self.assertEqual((got.type, got.WhichOneof("value")), (kv_pb2.VALUE_TYPE_SET, "set"))
        self.assertEqual(list(got.set.members), [b"apple", b"fig"])
        absent = self.c.SetMembers(kv_pb2.SetMembersRequest(key=unique("no-set").encode()),
                                   timeout=CALL_TIMEOUT_S)
        self.assertEqual((absent.found, list(absent.members)), (False, []))

    def test_05_a_type_mismatch_is_refused_with_its_reason_and_fields(self):
        key = unique("set-not-counter").encode()
        self.a.SetAdd(kv_pb2.SetAddRequest(key=key, members=[b"x"]), timeout=CALL_TIMEOUT_S)
        self.assertRefused(self.a.Increment, kv_pb2.IncrementRequest(key=key, delta=1),
                           grpc.StatusCode.FAILED_PRECONDITION, "TYPE_MISMATCH", {"holds": "set", "needs": "counter"})
        self.assertEqual(list(self.get(self.a, key).set.members), [b"x"], "the refused write changed nothing")

    def test_06_a_lock_hands_over_its_holders_writes_and_fences_out_the_stale_holder(self):
        name = unique("report")
        key = unique("report:latest").encode()
        locks_a, locks_b = CLUSTER.lock("a"), CLUSTER.lock("b")

        # The first holder, in site a.
        first = lock_pb2.RequestId(client=secrets.token_hex(8), request=1)
        acquire = lock_pb2.AcquireRequest(name=name, id=first, ttl_ms=5000, wait_ms=10000, label="first")
        grant1 = locks_a.Acquire(acquire, timeout=15).grant
        self.assertEqual((grant1.name, grant1.lease, grant1.label), (name, grant1.token, "first"))
        self.assertGreater(grant1.token, 0)
        self.assertEqual((grant1.holder.client, grant1.holder.request), (first.client, first.request))
        self.assertEqual(grant1.previous_note, "")
        self.assertFalse(grant1.HasField("previous_after"))
        # A retry with the same request id is answered with the first attempt's result.
        self.assertEqual(locks_a.Acquire(acquire, timeout=15).grant.token, grant1.token)

        put1 = self.a.Put(kv_pb2.PutRequest(key=key, value=b"one", fence=kv_pb2.Fence(lock=name, token=grant1.token)),
                          timeout=CALL_TIMEOUT_S)
        got = self.get(self.a, key)
        self.assertEqual((got.last_write_fence.lock, got.last_write_fence.token), (name, grant1.token))

        release = lock_pb2.ReleaseRequest(name=name, token=grant1.token,
                                          id=lock_pb2.RequestId(client=first.client, request=2), after=put1.token)
        locks_a.Release(release, timeout=CALL_TIMEOUT_S)
        # Applied at most once: the retry is answered as the first attempt was (OK), not NOT_HOLDER.
        locks_a.Release(release, timeout=CALL_TIMEOUT_S)

        # The second holder, in site b, learns where to read the first holder's last write.
        second = lock_pb2.RequestId(client=secrets.token_hex(8), request=1)
        # A longer lease: it must outlast the rest of this test, which releases it at the end (no keep-alive).
        grant2 = locks_b.Acquire(lock_pb2.AcquireRequest(name=name, id=second, ttl_ms=30000, wait_ms=10000),
                                 timeout=15).grant
        self.assertGreater(grant2.token, grant1.token)
        self.assertTrue(grant2.HasField("previous_after"))
        self.assertEqual(grant2.previous_after, put1.token)
        self.assertEqual(grant2.previous_note, token_text(put1.token))
        handed_over = self.get(self.b, key, after=grant2.previous_after)
        self.assertEqual(handed_over.register, b"one")
        self.assertEqual(handed_over.last_write_fence.token, grant1.token)

        fence2 = kv_pb2.Fence(lock=name, token=grant2.token)
        put2 = self.b.Put(kv_pb2.PutRequest(key=key, value=b"two", fence=fence2), timeout=CALL_TIMEOUT_S)
        got = self.get(self.b, key, after=put2.token)
        self.assertEqual((got.register, got.last_write_fence.lock, got.last_write_fence.token),
                         (b"two", name, grant2.token))

        # The first holder, woken up late, writes under its old token: refused, saying what is known now.
        stale = kv_pb2.Fence(lock=name, token=grant1.token)
        stale_fields = {"lock": name, "token": str(grant1.token), "known_token": str(grant2.token)}
        self.assertRefused(self.b.Put, kv_pb2.PutRequest(key=key, value=b"stale", fence=stale),
                           grpc.StatusCode.FAILED_PRECONDITION, "STALE_FENCE", stale_fields)
        self.assertEqual(self.get(self.b, key).register, b"two")

        # A batch: each write succeeds or fails on its own, and a failed one says why, as a call would.
        good_key = unique("batch-good").encode()
        batch = self.b.Batch(kv_pb2.BatchRequest(ops=[
            kv_pb2.WriteOp(put=kv_pb2.PutRequest(key=good_key, value=b"fresh", fence=fence2)),
            kv_pb2.WriteOp(put=kv_pb2.PutRequest(key=key, value=b"stale", fence=stale)),
        ]), timeout=CALL_TIMEOUT_S)
        self.assertEqual(len(batch.results), 2)
        good, refused = batch.results
        self.assertEqual((good.code, good.outcome, good.reason, dict(good.fields)), (0, "", "", {}))
        self.assertTrue(good.HasField("response"))
        self.assertGreaterEqual(good.response.token.sequence, 1)
        self.assertEqual(refused.code, grpc.StatusCode.FAILED_PRECONDITION.value[0])
        self.assertEqual((refused.outcome, refused.reason), ("failed", "STALE_FENCE"))
        self.assertEqual(dict(refused.fields), stale_fields)
        self.assertFalse(refused.HasField("response"))
        self.assertEqual(self.get(self.b, good_key).register, b"fresh")
        self.assertEqual(self.get(self.b, key).register, b"two")

        locks_b.Release(lock_pb2.ReleaseRequest(name=name, token=grant2.token,
                                                id=lock_pb2.RequestId(client=second.client, request=2)),
                        timeout=CALL_TIMEOUT_S)

    def test_07_a_malformed_causal_token_is_refused(self):
        locks = CLUSTER.lock("c")
        name = unique("malformed")
        client = secrets.token_hex(8)
        grant = locks.Acquire(lock_pb2.AcquireRequest(name=name, id=lock_pb2.RequestId(client=client, request=1),
                                                      ttl_ms=5000, wait_ms=10000), timeout=15).grant
        bad_tokens = [kv_pb2.CausalToken(site="", partition=0, sequence=1),
                      kv_pb2.CausalToken(site="a", partition=0, sequence=0)]
        for number, bad in enumerate(bad_tokens, start=2):
            release = lock_pb2.ReleaseRequest(name=name, token=grant.token,
                                              id=lock_pb2.RequestId(client=client, request=number), after=bad)
            self.assertRefused(locks.Release, release, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST",
                               {"field": "after"})
        both = lock_pb2.ReleaseRequest(name=name, token=grant.token, id=lock_pb2.RequestId(client=client, request=9),
                                       note="text", after=kv_pb2.CausalToken(site="a", partition=0, sequence=1))
        self.assertRefused(locks.Release, both, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST",
                           {"field": "after"})
        # The refusals changed nothing: the lock is still held under the grant's token, so this release
        # succeeds (it would fail with NOT_HOLDER had one of them released it).
        locks.Release(lock_pb2.ReleaseRequest(name=name, token=grant.token,
                                              id=lock_pb2.RequestId(client=client, request=10)),
                      timeout=CALL_TIMEOUT_S)

        for bad in bad_tokens + [kv_pb2.CausalToken(site="a", partition=65536, sequence=1)]:
            request = kv_pb2.GetRequest(key=b"any", after=bad, wait_ms=10)
            self.assertRefused(self.c.Get, request, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST",
                               {"field": "after"})

    def test_08_the_other_refusals_a_client_can_provoke_carry_their_fields(self):
        # The rest of the reasons table in docs/api.md, as far as a healthy cluster can show it.
        invalid = grpc.StatusCode.INVALID_ARGUMENT
        precondition = grpc.StatusCode.FAILED_PRECONDITION
        self.assertRefused(self.a.Put, kv_pb2.PutRequest(key=b"", value=b"v"), invalid, "INVALID_REQUEST",
                           {"field": "key"})
        self.assertRefused(self.a.Put, kv_pb2.PutRequest(key=b"k", value=b"v", ttl_ms=-1), invalid,
                           "INVALID_REQUEST", {"field": "ttl_ms"})
        self.assertRefused(self.a.Get, kv_pb2.GetRequest(key=b"k", after=kv_pb2.CausalToken(site="a", sequence=1),
                                                         wait_ms=-1), invalid, "INVALID_REQUEST", {"field": "wait_ms"})
        too_many = kv_pb2.BatchRequest(ops=[kv_pb2.WriteOp(delete=kv_pb2.DeleteRequest(key=b"k"))] * 10_001)
        self.assertRefused(self.a.Batch, too_many, invalid, "INVALID_REQUEST", {"field": "ops"})

        self.assertRefused(self.a.Expire, kv_pb2.ExpireRequest(key=unique("absent").encode(), ttl_ms=1000),
                           precondition, "KEY_NOT_FOUND", {})
        counter = unique("near-max").encode()
        self.a.Increment(kv_pb2.IncrementRequest(key=counter, delta=2**63 - 1), timeout=CALL_TIMEOUT_S)
        self.assertRefused(self.a.Increment, kv_pb2.IncrementRequest(key=counter, delta=1), precondition,
                           "COUNTER_OVERFLOW", {"current": str(2**63 - 1), "delta": "1"})

        locks = CLUSTER.lock("a")
        name = unique("contended")
        holder = lock_pb2.RequestId(client=secrets.token_hex(8), request=1)
        grant = locks.Acquire(lock_pb2.AcquireRequest(name=name, id=holder, ttl_ms=30000, wait_ms=10000),
                              timeout=15).grant
        other = secrets.token_hex(8)
        busy = lock_pb2.AcquireRequest(name=name, id=lock_pb2.RequestId(client=other, request=1), ttl_ms=5000,
                                       no_wait=True)
        self.assertRefused(locks.Acquire, busy, precondition, "LOCK_BUSY",
                           {"lock": name, "holder_token": str(grant.token)})
        # The wait runs out on the server (well within the call's deadline): certainly not granted.
        waited = lock_pb2.AcquireRequest(name=name, id=lock_pb2.RequestId(client=other, request=2), ttl_ms=5000,
                                         wait_ms=300)
        self.assertRefused(locks.Acquire, waited, grpc.StatusCode.DEADLINE_EXCEEDED, "NOT_GRANTED", {"lock": name})
        # The acquire's request id, reused for a release.
        self.assertRefused(locks.Release, lock_pb2.ReleaseRequest(name=name, token=grant.token, id=holder), invalid,
                           "REQUEST_ID_REUSED", {})
        wrong_token = grant.token + 1_000_000
        not_holder = lock_pb2.ReleaseRequest(name=name, token=wrong_token,
                                             id=lock_pb2.RequestId(client=other, request=3))
        self.assertRefused(locks.Release, not_holder, precondition, "NOT_HOLDER",
                           {"lock": name, "token": str(wrong_token), "current_token": str(grant.token)})

        # KeepAlive: the holder's renewal is answered; a stranger's token ends the stream.
        renewed = list(locks.KeepAlive(iter([lock_pb2.KeepAliveRequest(name=name, token=grant.token)]),
                                       timeout=CALL_TIMEOUT_S))
        self.assertEqual([(r.name, r.token) for r in renewed], [(name, grant.token)])
        self.assertGreater(renewed[0].expires_unix_ms, 0)
        with self.assertRaises(grpc.RpcError) as caught:
            list(locks.KeepAlive(iter([lock_pb2.KeepAliveRequest(name=name, token=wrong_token)]),
                                 timeout=CALL_TIMEOUT_S))
        error = caught.exception
        self.assertEqual(error.code(), grpc.StatusCode.NOT_FOUND, error.details())
        self.assertEqual(text_trailers(error).get("geostore-reason"), "NOT_HOLDER")
        info = error_info(error)
        self.assertEqual((info.reason, info.metadata["lock"], info.metadata["token"], info.metadata["outcome"]),
                         ("NOT_HOLDER", name, str(wrong_token), "failed"))

        locks.Release(lock_pb2.ReleaseRequest(name=name, token=grant.token,
                                              id=lock_pb2.RequestId(client=holder.client, request=2)),
                      timeout=CALL_TIMEOUT_S)

    # An Acquire of another lock under a request id that an Acquire was granted with is refused (found by
    # this test: the server used to answer with the first grant, naming the first lock).
    def test_09_a_request_id_reused_for_another_lock_is_refused(self):
        locks = CLUSTER.lock("a")
        holder = lock_pb2.RequestId(client=secrets.token_hex(8), request=1)
        first = lock_pb2.AcquireRequest(name=unique("first-lock"), id=holder, ttl_ms=30000, wait_ms=10000)
        grant = locks.Acquire(first, timeout=15).grant
        self.addCleanup(locks.Release, lock_pb2.ReleaseRequest(
            name=first.name, token=grant.token, id=lock_pb2.RequestId(client=holder.client, request=2)),
            timeout=CALL_TIMEOUT_S)
        other_lock = lock_pb2.AcquireRequest(name=unique("other-lock"), id=holder, ttl_ms=30000, wait_ms=10000)
        self.assertRefused(locks.Acquire, other_lock, grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_REUSED", {})

    def test_99_a_client_reaches_a_restarted_node_again_within_seconds(self):
        key = unique("survives-restart").encode()
        self.b.Put(kv_pb2.PutRequest(key=key, value=b"durable"), timeout=CALL_TIMEOUT_S)
        from_a = unique("from-a").encode()
        put_a = self.a.Put(kv_pb2.PutRequest(key=from_a, value=b"replicated"), timeout=CALL_TIMEOUT_S)
        self.assertEqual(self.get(self.b, from_a, after=put_a.token).register, b"replicated")
        # For comparison only (not asserted): a channel with gRPC's default settings, connected before the
        # kill like the recommended one.
        node_b = CLUSTER.nodes["b"]
        default_channel = grpc.insecure_channel(node_b.address)
        self.addCleanup(default_channel.close)
        default_b = kv_pb2_grpc.KVStub(default_channel)
        default_b.Get(kv_pb2.GetRequest(key=key), timeout=CALL_TIMEOUT_S)

        killed_at = time.monotonic()
        node_b.kill()
        # Clients keep calling while the node is down: each waits for a connection (wait_for_ready) until
        # its deadline, and the channels try to reconnect, backing off.
        served_at = {}

        def read(name, stub):
            reply = stub.Get(kv_pb2.GetRequest(key=key), timeout=30, wait_for_ready=True)
            served_at[name] = time.monotonic()
            return reply

        pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
        # Not `with`: on a failure, do not wait here for the reads' deadlines; stopping the cluster closes
        # the channels, which ends them.
        self.addCleanup(pool.shutdown, wait=False, cancel_futures=True)
        recommended = pool.submit(read, "recommended", self.b)
        default = pool.submit(read, "default", default_b)
        # Models an outage of a few seconds (time passing, not synchronisation): long enough for the
        # channels' reconnect backoff to grow past its first steps.
        time.sleep(3)
        self.assertFalse(recommended.done(), "a read finished while the node was down")
        node_b.start()
        listening_at = time.monotonic()
        self.assertEqual(recommended.result(timeout=30).register, b"durable")
        reconnect_s = served_at["recommended"] - listening_at
        print(f"\nsite b restarted {listening_at - killed_at:.2f} s after the kill; the recommended channel "
              f"served a Get {reconnect_s:.2f} s after the node was listening again", flush=True)
        try:
            default.result(timeout=30)
            print(f"(a channel with gRPC's default settings: {served_at['default'] - listening_at:.2f} s)",
                  flush=True)
        except (grpc.RpcError, concurrent.futures.TimeoutError) as error:
            print(f"(a channel with gRPC's default settings: not served within its deadline: {error})",
                  flush=True)
        self.assertLess(reconnect_s, 3.0, "the recommended channel took too long to reconnect")
        self.assertEqual(self.get(self.b, from_a).register, b"replicated")


def main():
    binary = os.environ.get("GEOSTORE_BIN")
    if not binary:
        sys.exit("GEOSTORE_BIN must name the geostore binary (tests/python/run sets it)")
    # A SIGTERM (a CI timeout) unwinds like Ctrl-C: unittest lets KeyboardInterrupt through (it would
    # record SystemExit as one test's error and go on), and the cluster is stopped below.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    global CLUSTER
    directory = tempfile.mkdtemp(prefix="geostore-pytest-")
    cluster = Cluster(binary, directory)
    succeeded = False
    try:
        cluster.start()
        cluster.wait_ready()
        CLUSTER = cluster
        program = unittest.main(argv=[sys.argv[0], *sys.argv[1:]], exit=False, verbosity=2)
        succeeded = program.result.wasSuccessful()
    finally:
        try:
            if not succeeded:
                cluster.print_logs()
        finally:
            # Even if printing fails (a closed pipe), no node outlives the run.
            cluster.stop()
            shutil.rmtree(directory, ignore_errors=True)
    sys.exit(0 if succeeded else 1)


if __name__ == "__main__":
    main()
