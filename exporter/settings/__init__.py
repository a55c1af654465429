"""Settings: one schema (flags, YAML keys, defaults, help, reload rules), the one YAML
reader and the one duration grammar."""
