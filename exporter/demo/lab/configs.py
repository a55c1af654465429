"""strongswan.conf and swanctl.conf texts for the lab's server and clients.

The shapes follow LAB.md: an NYC-Mesh-like IKEv1 Main Mode PSK + XAuth remote-access
connection, an IKEv2 PSK one, and a site-to-site connection whose peer does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Kernel = Literal["kernel-libipsec", "kernel-netlink"]
ConnName = Literal["nycmesh", "ikev2-psk"]

# The public NYC Mesh endpoint's credentials: well known, yet the exporter must never show them.
PSK = "nycmeshnet"
XAUTH_USER = "nycmesh"
XAUTH_PASSWORD = "nycmeshnet"
# A second secret, only on the server, so tests can look for a leak of a value never sent.
SITE_B_PSK = "site-b-secret-0f3c"
SECRETS = (PSK, XAUTH_PASSWORD, SITE_B_PSK)

SERVER_ADDR = "10.99.0.1"
SUBNET_PREFIX = 24
CLIENT_BASE = 10  # clients are 10.99.0.10, .11, ...
SITE_B_PEER = "10.99.0.250"  # inside the lab subnet; nobody answers there unless a test
# adds the peer gateway (Lab.add_site_peer), which has SITE_B_SUBNET_HOST inside its site
SITE_B_SUBNET = "10.99.250.0/24"
SITE_B_SUBNET_HOST = "10.99.250.1"
TUNNEL_TARGET = "10.99.200.1"  # a /32 on the server's lo, the far end of every tunnel
POOLS = {"nycmesh-pool": "10.99.100.0/24", "ikev2-pool": "10.99.101.0/24"}

# No GCM and no curve25519 plugin file in Debian's base plugin set: aes-cbc, sha2 and the
# modp groups of the gmp plugin (modp2048 is what old phones propose for IKEv1).
IKE_PROPOSALS = "aes256-sha256-modp2048,aes128-sha256-modp3072"
ESP_PROPOSALS = "aes256-sha256,aes128-sha256"

# kernel-libipsec only does ESP; charon also needs kernel-netlink for addresses and routes
# ("unmet dependency: CUSTOM:kernel-net" without it). Listed first, libipsec's ESP wins.
PLUGINS = {
    "kernel-libipsec": "kernel-libipsec kernel-netlink",
    "kernel-netlink": "kernel-netlink",
}
BASE_PLUGINS = (
    "random nonce aes sha1 sha2 md5 hmac gmp kdf pem pkcs1 pubkey x509 "
    "{kernel} socket-default vici updown counters attr xauth-generic"
)

# Responder settings that keep many clients from tripping DoS protection (LAB.md "Scale").
SERVER_TUNING = """\
  ikesa_table_size = 1024
  init_limit_half_open = 0
  dos_protection = no
  cookie_threshold = 100000
  cookie_threshold_ip = 100000
  block_threshold = 100000
  retransmit_timeout = 1.0
  # A dead client is found by DPD within seconds (1 + 1.4 + 2 s of retransmits), so
  # tests of the "client died" case stay short.
  retransmit_tries = 2
  retransmit_base = 1.4
"""


def client_addr(index: int) -> str:
    return f"10.99.0.{CLIENT_BASE + index}"


def strongswan_conf(workdir: Path, *, kernel: Kernel, server: bool) -> str:
    """strongswan.conf for one charon whose files all live in ``workdir``."""
    tuning = SERVER_TUNING if server else ""
    # Clients give up quickly: a test waiting on a dead server should fail in seconds.
    retransmit = "" if server else "  retransmit_tries = 2\n  retransmit_timeout = 1.0\n"
    return f"""\
charon {{
  load_modular = no
  load = {BASE_PLUGINS.format(kernel=PLUGINS[kernel])}
  # Fewer threads made charon stop answering load-conn (LAB.md).
  threads = 16
  install_virtual_ip = yes
{tuning}{retransmit}  filelog {{
    lab {{
      path = {workdir}/charon.log
      time_format = %H:%M:%S
      ike_name = yes
      flush_line = yes
      default = 1
      ike = 2
      cfg = 2
      knl = 2
    }}
  }}
  syslog {{
    identifier = charon-lab
    daemon {{
      default = -1
    }}
  }}
  plugins {{
    vici {{
      socket = unix://{workdir}/charon.vici
    }}
  }}
}}
swanctl {{
  socket = unix://{workdir}/charon.vici
}}
"""


def server_swanctl_conf() -> str:
    """The server: ``nycmesh`` (IKEv1 PSK + XAuth), ``ikev2-psk``, ``site-b``, two pools."""
    pools = "".join(f"  {name} {{\n    addrs = {cidr}\n  }}\n" for name, cidr in POOLS.items())
    return f"""\
connections {{
  nycmesh {{
    version = 1
    proposals = {IKE_PROPOSALS}
    pools = nycmesh-pool
    send_certreq = no
    # Everyone shares one XAuth user (as on NYC Mesh): without "never" each client's
    # INITIAL_CONTACT would replace the SAs of all the others.
    unique = never
    dpd_delay = 2s
    local {{
      auth = psk
      id = {SERVER_ADDR}
    }}
    remote {{
      auth = psk
    }}
    remote-xauth {{
      auth = xauth
    }}
    children {{
      nycmesh {{
        local_ts = {TUNNEL_TARGET}/32
        esp_proposals = {ESP_PROPOSALS}
        mode = tunnel
      }}
    }}
  }}
  ikev2-psk {{
    version = 2
    proposals = {IKE_PROPOSALS}
    pools = ikev2-pool
    send_certreq = no
    dpd_delay = 2s
    local {{
      auth = psk
      id = {SERVER_ADDR}
    }}
    remote {{
      auth = psk
    }}
    children {{
      ikev2-psk {{
        local_ts = {TUNNEL_TARGET}/32
        esp_proposals = {ESP_PROPOSALS}
        mode = tunnel
      }}
    }}
  }}
  site-b {{
    version = 2
    local_addrs = {SERVER_ADDR}
    remote_addrs = {SITE_B_PEER}
    proposals = {IKE_PROPOSALS}
    local {{
      auth = psk
      id = {SERVER_ADDR}
    }}
    remote {{
      auth = psk
      id = {SITE_B_PEER}
    }}
    children {{
      site-b {{
        local_ts = {TUNNEL_TARGET}/32
        remote_ts = {SITE_B_SUBNET}
        esp_proposals = {ESP_PROPOSALS}
        start_action = none
      }}
    }}
  }}
}}
pools {{
{pools}}}
secrets {{
  ike-site-b {{
    id = {SITE_B_PEER}
    secret = {SITE_B_PSK}
  }}
  ike-any {{
    secret = {PSK}
  }}
  xauth-nycmesh {{
    id = {XAUTH_USER}
    secret = {XAUTH_PASSWORD}
  }}
}}
"""


@dataclass(frozen=True)
class ClientShape:
    """What one client charon connects with."""

    conn: ConnName
    index: int

    @property
    def address(self) -> str:
        return client_addr(self.index)


def client_swanctl_conf(shape: ClientShape) -> str:
    """A client that initiates ``shape.conn`` towards the server (started by the lab)."""
    xauth = ""
    version = 2
    if shape.conn == "nycmesh":
        version = 1
        xauth = f"""\
    local-xauth {{
      auth = xauth
      xauth_id = {XAUTH_USER}
    }}
"""
    return f"""\
connections {{
  {shape.conn} {{
    version = {version}
    remote_addrs = {SERVER_ADDR}
    vips = 0.0.0.0
    proposals = {IKE_PROPOSALS}
    local {{
      auth = psk
      id = {shape.address}
    }}
{xauth}    remote {{
      auth = psk
      id = {SERVER_ADDR}
    }}
    children {{
      {shape.conn} {{
        remote_ts = {TUNNEL_TARGET}/32
        esp_proposals = {ESP_PROPOSALS}
        start_action = none
      }}
    }}
  }}
}}
secrets {{
  ike-server {{
    id = {SERVER_ADDR}
    secret = {PSK}
  }}
  xauth-self {{
    id = {XAUTH_USER}
    secret = {XAUTH_PASSWORD}
  }}
}}
"""


def site_peer_swanctl_conf() -> str:
    """The far end of ``site-b`` (on SITE_B_PEER): a gateway that initiates the
    site-to-site connection with its own PSK (lab.add_site_peer)."""
    return f"""\
connections {{
  site-b {{
    version = 2
    local_addrs = {SITE_B_PEER}
    remote_addrs = {SERVER_ADDR}
    proposals = {IKE_PROPOSALS}
    local {{
      auth = psk
      id = {SITE_B_PEER}
    }}
    remote {{
      auth = psk
      id = {SERVER_ADDR}
    }}
    children {{
      site-b {{
        local_ts = {SITE_B_SUBNET}
        remote_ts = {TUNNEL_TARGET}/32
        esp_proposals = {ESP_PROPOSALS}
        start_action = none
      }}
    }}
  }}
}}
secrets {{
  ike-site-b {{
    id = {SERVER_ADDR}
    secret = {SITE_B_PSK}
  }}
}}
"""
