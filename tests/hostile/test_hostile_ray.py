"""Issue 15 item 10: a local Ray start (``survsr.ray_utils.init_ray``) keeps its internal ports (GCS,
raylet, workers, dashboard and runtime-env agents) on 127.0.0.1. Before, with auth disabled, they listened
on all interfaces: GCS and raylet on ``*``, the dashboard agent on 0.0.0.0, the runtime-env agent on the
machine's LAN address (measured with Ray 2.60 on the 2-core box)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
def _listening(pids: set[int]) -> list[tuple[str, int, int]]:
    """(local address, port, pid) of every TCP socket in LISTEN state owned by ``pids`` (Linux /proc)."""
    import os

    inode_pid: dict[str, int] = {}
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inode_pid[link[8:-1]] = pid
        except OSError:
            continue
    out = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        with open(table) as f:
            for line in f.readlines()[1:]:
                parts = line.split()
                local, state, inode = parts[1], parts[3], parts[9]
                if state != "0A" or inode not in inode_pid:
                    continue
                addr_hex, port_hex = local.split(":")
                if width == 8:
                    addr = socket.inet_ntop(socket.AF_INET, bytes.fromhex(addr_hex)[::-1])
                else:
                    raw = b"".join(bytes.fromhex(addr_hex[i:i + 8])[::-1] for i in range(0, 32, 8))
                    addr = socket.inet_ntop(socket.AF_INET6, raw)
                out.append((addr, int(port_hex, 16), inode_pid[inode]))
    return out


def _tree(pid: int) -> set[int]:
    import os

    pids, todo = {pid}, [pid]
    while todo:
        p = todo.pop()
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    for c in f.read().split():
                        if int(c) not in pids:
                            pids.add(int(c))
                            todo.append(int(c))
        except OSError:
            continue
    return pids


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux /proc")
def test_local_ray_listens_on_loopback_only(ray_session):
    import os

    socks = _listening(_tree(os.getpid()))
    assert len(socks) >= 3  # GCS, raylet, agents: the test sees Ray's listeners at all
    loopback = ("127.0.0.1", "::ffff:127.0.0.1", "::1")
    # Known and documented (docs/security.md, "not promised"): a Ray Serve replica's inter-deployment gRPC
    # server is hard-coded to [::]:0 in Ray 2.60 (ray/serve/_private/replica.py); no setting moves it.
    exposed = [s for s in socks if s[0] not in loopback and not _is_serve_replica(s[2])]
    assert exposed == [], f"listening beyond loopback: {exposed}"


def _is_serve_replica(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"ServeReplica" in f.read()
    except OSError:
        return False
