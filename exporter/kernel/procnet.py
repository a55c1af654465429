"""`/proc/net/*` files as a named network namespace sees them.

`/proc/net` shows the namespace of the process reading it, whatever `--collector.kernel.netns`
says; `/proc/thread-self/net` shows the reading *thread's*. So a file of another namespace
is read by a short-lived thread that joins the namespace (setns moves only the calling
thread) and ends there: no thread of the daemon is ever left in the wrong namespace.
"""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path

from exporter.kernel.netlink import NETNS_DIR, NetnsGone

PROC_NET = Path("/proc/net")
CLONE_NEWNET = 0x40000000


def read_proc_net(name: str, netns: str | None = None) -> str:
    """The text of `/proc/net/<name>` in `netns` (None: ours); blocking (run it in a
    worker thread). `FileNotFoundError` when the file is missing there, `NetnsGone`
    when the namespace is."""
    if not netns:
        return (PROC_NET / name).read_text()
    try:
        fd = os.open(NETNS_DIR / netns, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetnsGone(netns) from None
    result: list[str] = []
    error: list[BaseException] = []

    def read() -> None:
        try:
            _setns(fd)
            result.append(Path(f"/proc/thread-self/net/{name}").read_text())
        except BaseException as err:  # handed to the caller's thread
            error.append(err)

    try:
        thread = threading.Thread(target=read, name=f"procnet-{netns}", daemon=True)
        thread.start()
        thread.join()
    finally:
        os.close(fd)
    if error:
        raise error[0]
    return result[0]


def _setns(fd: int) -> None:
    setns = getattr(os, "setns", None)  # Python 3.12+
    if setns is not None:
        setns(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns: {os.strerror(code)}")
