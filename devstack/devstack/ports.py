"""The API's listening socket, bound by the local stack itself: a busy port fails at once.

gunicorn binding the port itself retries for seconds when it is taken, while a health check
on that port reaches whatever holds it: the stack looked up, then the API died. Binding here
first, and handing gunicorn the socket (fd://), makes "port in use" an immediate error that
names the port and, where /proc tells, the process holding it.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from taskcore.errors import EmulatorError


class PortInUseError(EmulatorError):
    """Raised when the local stack's API port is taken by another process."""


def listening_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A socket listening on host:port, inheritable by a child; PortInUseError if taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # As gunicorn does: a port whose last connections linger in TIME_WAIT is free.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno != errno.EADDRINUSE:
            raise
        holder = port_holder(port)
        by = f" by {holder}" if holder else ""
        raise PortInUseError(
            f"port {port} is already in use{by}: stop it, or run the stack on another port "
            f"(PORT={port + 1} make run)"
        ) from None
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def port_holder(port: int) -> str | None:
    """'pid N (command)' of the process listening on port, where /proc says; else None."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local address is HEX_IP:HEX_PORT; state 0A is LISTEN.
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:
                inodes.add(fields[9])
    if not inodes:
        return None
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            links = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        except OSError:
            continue
        if any(f"socket:[{inode}]" in links for inode in inodes):
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                command = "?"
            return f"pid {pid} ({command.strip()[:80]})"
    return "another process"
