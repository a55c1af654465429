"""A real strongSwan lab: charon server and clients in network namespaces.

Used by the integration tests and the ``demo`` command; needs root and the Debian packages
named by :func:`exporter.demo.lab.requirements.problems`. Nothing here imports pytest.

    with Lab(["nycmesh"] * 3 + ["ikev2-psk"]) as lab:
        run_exporter(vici_socket=lab.server_uri)
"""

from exporter.demo.lab.charon import Charon, CharonError
from exporter.demo.lab.requirements import problems
from exporter.demo.lab.topology import Client, Lab

__all__ = ["Charon", "CharonError", "Client", "Lab", "problems"]
