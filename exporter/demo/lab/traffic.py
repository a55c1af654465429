"""Traffic through a tunnel: ICMP echo from inside a namespace, without needing iputils.

Debian's minimal images lack ``ping``; a raw ICMP socket in a child Python does the same.
"""

from __future__ import annotations

import sys

from exporter.demo.lab import netns

# Runs inside the namespace: send COUNT echo requests to DST, print how many came back.
_PING = r"""
import os, socket, struct, sys, time
dst, count, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF); s += s >> 16
    return ~s & 0xFFFF
ident = os.getpid() & 0xFFFF
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
got = 0
for seq in range(count):
    body = b"l2tp-ipsec-exporter lab " * 2
    hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    sock.sendto(struct.pack("!BBHHH", 8, 0, csum(hdr + body), ident, seq) + body, (dst, 0))
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            pkt, _ = sock.recvfrom(2048)
        except socket.timeout:
            break
        ihl = (pkt[0] & 0x0F) * 4
        typ, _, _, rid, rseq = struct.unpack("!BBHHH", pkt[ihl:ihl + 8])
        if typ == 0 and rid == ident and rseq == seq:
            got += 1
            break
print(got)
"""


def ping(netns_name: str, destination: str, count: int = 3, timeout: float = 1.0) -> int:
    """Send ``count`` ICMP echo requests from ``netns_name``; return the number of replies."""
    out = netns.run_in(
        netns_name,
        [sys.executable, "-c", _PING, destination, str(count), str(timeout)],
        timeout=count * timeout + 10,
    )
    return int(out.strip() or 0)
