#!/bin/sh
# Runs as PID 1 in the vmlab guest (exec'd by the image's /sbin/vmlab-init once the
# src and pydeps shares are mounted). Loads the modules the L2TP/IPsec stack needs,
# then hands over to the control server, which sets up the server, the client
# namespaces and answers the host. Lives in the checkout: changing it needs no rebuild.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
echo "vmlab: guest init $(cut -d' ' -f1 /proc/uptime)s" > /dev/console
# One modprobe for all: every fork is slow under emulation.
modprobe -a drbg jitterentropy_rng esp4 xfrm_user af_key l2tp_ppp l2tp_netlink \
    ppp_generic pppox ppp_async tun veth bridge authenc echainiv seqiv cbc hmac \
    sha1_generic sha256_generic aes_generic virtio_net > /dev/console 2>&1
# The NAT router's masquerade (iptables-nft), loaded only when a client is behind it.
if grep -q 'vmlab.natted=[1-9]' /proc/cmdline; then
    modprobe -a nf_tables nft_chain_nat nft_masq nft_compat xt_MASQUERADE nf_nat \
        nf_conntrack > /dev/console 2>&1
fi
echo "vmlab: modules loaded $(cut -d' ' -f1 /proc/uptime)s" > /dev/console
exec /usr/bin/python3 -u /mnt/src/tests/vmlab/guest/ctl.py > /dev/console 2>&1
