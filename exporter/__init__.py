"""l2tp-ipsec-exporter: Prometheus exporter for L2TP/IPsec VPN servers."""

__version__ = "0.1.0"
