import re

import pytest

from exporter.config import (
    DEFAULT_PORT,
    ListenAddress,
    Settings,
    SettingsError,
    ViciAddress,
    parse_vici_socket,
)
from exporter.vici.address import ViciAddressError


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("unix:///var/run/charon.vici", ViciAddress("unix", path="/var/run/charon.vici")),
        ("tcp://127.0.0.1:4502", ViciAddress("tcp", host="127.0.0.1", port=4502)),
        ("tcp://[::1]:4502", ViciAddress("tcp", host="::1", port=4502)),
    ],
)
def test_vici_address_parses_and_prints_back(uri: str, expected: ViciAddress) -> None:
    address = ViciAddress.parse(uri)
    assert address == expected
    assert str(address) == uri


@pytest.mark.parametrize(
    "uri", ["ftp://x", "unix://", "tcp://host", "tcp://host:0", "tcp://host:99999", "/a/path"]
)
def test_bad_vici_address_names_the_flag(uri: str) -> None:
    with pytest.raises(SettingsError, match=rf"^--vici\.socket '{re.escape(uri)}': "):
        parse_vici_socket(uri)
    # The VICI package's own parser knows no flags: it names the URI only.
    with pytest.raises(ViciAddressError, match=rf"^'{re.escape(uri)}': "):
        ViciAddress.parse(uri)


def test_listen_address_forms() -> None:
    assert ListenAddress.parse(f":{DEFAULT_PORT}") == ListenAddress("0.0.0.0", DEFAULT_PORT)
    assert ListenAddress.parse("127.0.0.1:1") == ListenAddress("127.0.0.1", 1)
    assert ListenAddress.parse("[::1]:80") == ListenAddress("::1", 80)
    for bad in ("9945", "host:", "host:http", ":70000"):
        with pytest.raises(SettingsError, match=r"--web\.listen-address"):
            ListenAddress.parse(bad)


def test_settings_validate_paths_and_timeouts() -> None:
    with pytest.raises(SettingsError, match="telemetry-path"):
        Settings(telemetry_path="metrics")
    with pytest.raises(SettingsError, match="timeout"):
        Settings(vici_timeout=0)
