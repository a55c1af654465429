"""TLS and basic auth from a Prometheus exporter-toolkit web configuration file.

The file format is the one every Go exporter reads with ``--web.config.file``, so an
operator reuses what they already have::

    tls_server_config:
      cert_file: server.crt          # relative paths are relative to this file
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert
      client_ca_file: clients-ca.crt
      client_allowed_sans: [prometheus.example.net]
      min_version: TLS12
      max_version: TLS13
      cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]
    http_server_config:
      headers:
        Strict-Transport-Security: max-age=31536000
    basic_auth_users:
      prometheus: $2y$10$...         # bcrypt hash, e.g. from `htpasswd -nBC 10 prometheus`

What Python's TLS cannot do is refused with a message, never silently dropped (see
`parse`). The daemon wires it as::

    live = LiveWebConfig(load_web_config(path))  # WebConfigError: FILE:LINE: KEY: message
    app.middlewares.append(live.middleware())    # before the runner's setup
    web.TCPSite(runner, host, port, ssl_context=live.ssl_context())
    ...
    pending = live.replace(load_web_config(path))  # on SIGHUP; log `pending` as restart-only

One job per module: `parse` reads and validates the file (with the exporter's one YAML
reader, `exporter.settings.yaml_file`: every error is `FILE:LINE: KEY: message`), `tls`
builds the server context, `basic_auth` checks passwords (bcrypt, verdict cache, bound on
waiting checks), `middleware` puts auth, SANs and headers in front of every endpoint,
`config` is the validated result and `live` the copy a running daemon swaps on reload.
Nothing here imports the daemon, the CLI or the HTTP server.
"""

from exporter.web_config.basic_auth import BasicAuth, Verdict, parse_basic_authorization
from exporter.web_config.config import WebConfig
from exporter.web_config.errors import WebConfigError
from exporter.web_config.live import LiveWebConfig
from exporter.web_config.parse import load_web_config, parse_web_config
from exporter.web_config.tls import TlsServerConfig

__all__ = [
    "BasicAuth",
    "LiveWebConfig",
    "TlsServerConfig",
    "Verdict",
    "WebConfig",
    "WebConfigError",
    "load_web_config",
    "parse_basic_authorization",
    "parse_web_config",
]
