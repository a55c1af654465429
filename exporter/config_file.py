"""The YAML configuration file (`--config.file`): everything the flags set, and more.

`examples/config.yml` holds every setting at its default, with its help (generated from
the schema by scripts/flag-table), and the privacy and probe sections, commented:

```yaml
collectors:
  strongswan: {sa_details: true, refresh_interval: 10s}
  kernel: {netns: vpn}
privacy:
  users: keep          # keep | drop | hash
  hash_key_file: /etc/l2tp-ipsec-exporter/hash.key
  families:
    strongswan_ike_sa_info: {users: hash, addresses: drop}
probe: {max_concurrent: 4}
modules: {...}         # probe modules, see docs/probes.md
```

Every key but `privacy`, `probe` and `modules` is a setting of the schema
(`exporter.config.SETTINGS`): its YAML key, type and default are declared there once.
Every error is `FILE:LINE: KEY: message`. Flags given on the command line win over the
file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exporter.config import SETTINGS, Settings
from exporter.privacy import LABEL_KINDS, PrivacyOptions, Treatment
from exporter.settings.errors import ConfigFileError as ConfigFileError
from exporter.settings.errors import SettingsError
from exporter.settings.schema import replace_path
from exporter.settings.yaml_file import KeyPath, Section, YamlFile, choice, read_yaml, text

#: The configuration file as read (kept under its old name for its users).
Document = YamlFile
#: Top-level sections read by others: the probe package validates `probe` and `modules`.
FOREIGN_SECTIONS = ("probe", "modules")


def read_document(path: str | Path) -> YamlFile:
    doc = read_yaml(path)
    if not isinstance(doc.data, dict):
        raise doc.error((), "expected a mapping of sections (web, vici, collectors, …)")
    return doc


def _treatment(value: Any) -> Treatment:
    return choice("keep", "drop", "hash")(value)  # type: ignore[return-value]


def _privacy(reader: Section, base_dir: Path) -> PrivacyOptions:
    keep: Treatment = "keep"
    defaults: dict[str, Treatment] = {
        kind: reader.value(kind, keep, _treatment) for kind in LABEL_KINDS
    }
    key_file = reader.value("hash_key_file", "", text)
    key = b""
    if key_file:
        path = (base_dir / key_file).resolve()
        try:
            key = path.read_bytes().strip()
        except OSError as err:
            raise reader.error(
                "hash_key_file", f"cannot read {path}: {err.strerror or err}"
            ) from None
        if len(key) < 16:
            raise reader.error("hash_key_file", "the key must be at least 16 bytes")
    families_reader = reader.section("families")
    families: dict[str, dict[str, Treatment]] = {}
    for family in list(families_reader.data):
        fam = families_reader.section(family)
        families[family] = {
            kind: fam.value(kind, defaults[kind], _treatment) for kind in LABEL_KINDS
        }
        fam.finish()
    families_reader.finish()
    reader.finish()
    options = PrivacyOptions(defaults=defaults, families=families, hash_key=key)
    if options.uses_hash() and not key:
        raise reader.error(
            "hash_key_file",
            "`hash` needs a secret key: name a file with at least 16 random bytes",
        )
    return options


def settings_from_document(doc: YamlFile, base: Settings | None = None) -> Settings:
    """The settings the file describes (starting from `base`, default: built-in)."""
    settings = base or Settings()
    top = doc.top()
    sections: dict[KeyPath, Section] = {(): top}

    def section(at: KeyPath) -> Section:
        if at not in sections:
            sections[at] = section(at[:-1]).section(at[-1])
        return sections[at]

    for entry in SETTINGS:
        *parents, name = entry.spec.yaml
        where = section(tuple(parents))
        value = where.value(name, entry.get(settings), entry.spec.kind.from_yaml)
        settings = replace_path(settings, entry.path, value)
    privacy = _privacy(top.section("privacy"), Path(doc.path).resolve().parent)
    top.known.update(FOREIGN_SECTIONS)
    # Deepest first, so the first unknown key reported is the innermost one.
    for at in sorted(sections, key=len, reverse=True):
        sections[at].finish()
    try:
        settings = replace_path(settings, ("privacy",), privacy)
        return replace_path(settings, ("config_file",), doc.path)
    except SettingsError as err:
        raise ConfigFileError(f"{doc.path}: {err}") from None
