"""A secure deployment in one folder: ``mailpulse collector init``, ``add-node``, ``remove-node``.

:func:`init_deployment` writes everything a broker, the collector and Prometheus need, and
:meth:`Deployment.add_node` everything one node needs (what ``image flash`` puts on its card)::

    DIR/deployment.toml        what init was given, the nodes and users, revoked certificates (no secrets)
    DIR/ca.crt                 the deployment's CA certificate (public: every client verifies with it)
    DIR/ca/ca.key              the CA's key (mode 0600, folder 0700): only init/add-node/remove-node use it
    DIR/broker/                mosquitto.conf, passwd (PBKDF2 hashes), acl, server.crt/.key, crl.pem, data/
    DIR/collector/             collector.toml, secrets.toml (0600), mqtt.crt/.key (its MQTT client
                               certificate), web.crt/.key (the dashboard's HTTPS), prometheus.yml and
                               prometheus.password (the read-only scrape credential)
    DIR/clients/<user>/        further MQTT consumers (a second collector, a recorder): client.crt/.key, secrets.toml
    DIR/nodes/<site>/<node>/   node.toml, secrets.toml (0600), ca.crt, node.crt, node.key (0600)
    DIR/archive/               the collector's archive

The broker (:func:`mosquitto_conf`) has one TLS listener that requires a client certificate signed
by the CA *and* a user's password; the ACL (:mod:`mailpulse.topics`) lets a node write only its own
topics; no anonymous access; a plaintext listener only with ``plaintext_port`` (said explicitly).
After ``add-node``/``remove-node``, ``kill -HUP`` Mosquitto: it re-reads the password file, the ACL
and the CRL, so a removed node is locked out at once (its password is gone and its certificate is
revoked).

Passwords are random (192 bits), stored only in the secrets files and, as Mosquitto's PBKDF2-SHA512
hashes (``$7$``, what ``mosquitto_passwd`` writes), in ``broker/passwd``.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import os
import pwd
import secrets
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailpulse import topics as T
from mailpulse.errors import UserError, missing_package

from .pki import CertificateAuthority, serial_of, write_private, write_public

__all__ = ["COLLECTOR_USER", "Client", "Deployment", "NodeBundle", "hash_password", "init_deployment",
           "mosquitto_conf", "open_deployment"]

#: The collector's MQTT user.
COLLECTOR_USER = "collector"
#: Layout version of ``deployment.toml``.
LAYOUT_VERSION = 1
_PBKDF2_ITERATIONS = 1000


def hash_password(password: str, salt: bytes | None = None, iterations: int = _PBKDF2_ITERATIONS) -> str:
    """Mosquitto's password-file hash (``$7$``: PBKDF2-HMAC-SHA512, 12-byte salt), as
    ``mosquitto_passwd`` writes it."""
    salt = salt if salt is not None else os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def _new_password() -> str:
    return secrets.token_urlsafe(24)


def _dump_toml(doc: dict[str, Any]) -> str:
    try:
        import tomli_w
    except ImportError as e:
        raise missing_package(e, "mailpulse collector init") from None
    return tomli_w.dumps(doc)


def _check_user(user: str) -> str:
    if not user or not all(c.isascii() and (c.isalnum() or c in "._-") for c in user) or len(user) > 64:
        raise UserError(f"MQTT user name {user!r} must be 1-64 letters, digits, '.', '_' or '-'")
    return user


@dataclass(frozen=True)
class Client:
    """An MQTT identity as a client uses it: user, password and the TLS files."""

    user: str
    password: str
    ca_file: Path
    cert_file: Path
    key_file: Path

    def mqtt_doc(self, url: str) -> dict[str, Any]:
        """The ``[mqtt]`` keys of a config that connects as this client (without the password)."""
        return {"url": url, "ca_file": str(self.ca_file), "cert_file": str(self.cert_file),
                "key_file": str(self.key_file), "username": self.user}


@dataclass(frozen=True)
class NodeBundle:
    """What ``add-node`` wrote for one node: a folder with its config, secrets and TLS files."""

    site: str
    node: str
    dir: Path
    client: Client        # with the paths in ``dir`` (on this machine)

    @property
    def config(self) -> Path:
        return self.dir / "node.toml"

    @property
    def secrets(self) -> Path:
        return self.dir / "secrets.toml"

    @property
    def user(self) -> str:
        return self.client.user


class Deployment:
    """An initialised deployment folder (see the module docstring); :func:`open_deployment` opens one."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.state_file = self.root / "deployment.toml"
        try:
            self.state = tomllib.loads(self.state_file.read_text())
        except FileNotFoundError:
            raise UserError(f"{self.root} is not a mailpulse deployment (no deployment.toml): "
                            "run 'mailpulse collector init' first") from None
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise UserError(f"cannot read {self.state_file}: {e}") from None
        if self.state.get("version") != LAYOUT_VERSION:
            raise UserError(f"{self.state_file} has layout version {self.state.get('version')!r}; this mailpulse "
                            f"knows {LAYOUT_VERSION}")

    # -- paths ------------------------------------------------------------------------------------

    @property
    def ca_file(self) -> Path:
        return self.root / "ca.crt"

    @property
    def broker_dir(self) -> Path:
        return self.root / "broker"

    @property
    def mosquitto_conf(self) -> Path:
        return self.broker_dir / "mosquitto.conf"

    @property
    def broker_log(self) -> Path:
        return self.broker_dir / "mosquitto.log"

    @property
    def collector_dir(self) -> Path:
        return self.root / "collector"

    @property
    def collector_config(self) -> Path:
        return self.collector_dir / "collector.toml"

    @property
    def collector_secrets(self) -> Path:
        return self.collector_dir / "secrets.toml"

    def node_dir(self, site: str, node: str) -> Path:
        return self.root / "nodes" / site / node

    # -- settings ---------------------------------------------------------------------------------

    @property
    def hosts(self) -> list[str]:
        return list(self.state["broker_hosts"])

    @property
    def port(self) -> int:
        return int(self.state["broker_port"])

    @property
    def plaintext_port(self) -> int:
        return int(self.state.get("plaintext_port", 0))

    @property
    def url(self) -> str:
        """The broker URL every client uses (``mqtts://<first host>:<port>``)."""
        host = self.hosts[0]
        return f"mqtts://{'[' + host + ']' if ':' in host else host}:{self.port}"

    @property
    def nodes(self) -> list[dict[str, str]]:
        return list(self.state.get("nodes", []))

    @property
    def consumers(self) -> list[dict[str, Any]]:
        return list(self.state.get("consumers", []))

    def _ca(self) -> CertificateAuthority:
        return CertificateAuthority.load(self.ca_file, self.root / "ca" / "ca.key")

    # -- identities -------------------------------------------------------------------------------

    def client(self, user: str) -> Client:
        """The MQTT identity of a consumer user (``collector`` or one of ``add_consumer``)."""
        if user == COLLECTOR_USER:
            d, secrets_file, cert, key = (self.collector_dir, self.collector_secrets, "mqtt.crt", "mqtt.key")
        elif any(c["user"] == user for c in self.consumers):
            d = self.root / "clients" / user
            secrets_file, cert, key = d / "secrets.toml", "client.crt", "client.key"
        else:
            raise UserError(f"{user!r} is not a consumer user of the deployment {self.root}")
        password = tomllib.loads(secrets_file.read_text())["mqtt_password"]
        return Client(user, password, self.ca_file, d / cert, d / key)

    def bundle(self, site: str, node: str) -> NodeBundle:
        """The bundle ``add_node`` wrote for a node (paths on this machine)."""
        d = self.node_dir(site, node)
        if not (d / "node.toml").is_file():
            raise UserError(f"node {site}/{node} is not in the deployment {self.root} (run add-node)")
        password = tomllib.loads((d / "secrets.toml").read_text())["mqtt_password"]
        return NodeBundle(site, node, d, Client(T.node_user(site, node), password, d / "ca.crt", d / "node.crt",
                                                d / "node.key"))

    def add_node(self, site: str, node: str) -> NodeBundle:
        """Enrol a node: its user, password, client certificate, ACL and bundle folder."""
        try:
            user = T.node_user(site, node)
        except ValueError as e:
            raise UserError(str(e)) from None
        with self._locked():
            if any(n["user"] == user for n in self.nodes):
                raise UserError(f"node {site}/{node} is already in the deployment (remove-node first to re-key it)")
            d = self.node_dir(site, node)
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o700)
            password = _new_password()
            issued = self._ca().issue_client(user)
            issued.save(d / "node.crt", d / "node.key")
            write_public(d / "ca.crt", self.ca_file.read_bytes())
            on_node = self.state.get("node_dir") or str(d)
            doc = {"node": {"id": node, "site": site, "secrets_file": f"{on_node}/secrets.toml"},
                   "mqtt": {"url": self.url, "ca_file": f"{on_node}/ca.crt", "cert_file": f"{on_node}/node.crt",
                            "key_file": f"{on_node}/node.key", "username": user}}
            head = (f"# node {site}/{node}, written by 'mailpulse collector add-node'. Files named here are in this\n"
                    f"# folder; they go to {on_node}/ on the node ('mailpulse image flash --bundle' does that).\n")
            write_public(d / "node.toml", (head + _dump_toml(doc)).encode())
            write_private(d / "secrets.toml", _dump_toml({"mqtt_password": password}).encode())
            self.state.setdefault("nodes", []).append({"site": site, "node": node, "user": user,
                                                       "serial": str(issued.serial)})
            self._add_password(user, password)
            self._save()
        return self.bundle(site, node)

    def remove_node(self, site: str, node: str) -> None:
        """Lock a node out: its password and ACL go, its certificate is revoked; its bundle is deleted."""
        user = T.node_user(site, node)
        with self._locked():
            entry = next((n for n in self.nodes if n["user"] == user), None)
            if entry is None:
                raise UserError(f"node {site}/{node} is not in the deployment {self.root}")
            self.state["nodes"] = [n for n in self.nodes if n["user"] != user]
            self.state.setdefault("revoked", []).append({"user": user, "serial": entry["serial"]})
            self._remove_password(user)
            self._save()
            d = self.node_dir(site, node)
            for f in d.glob("*"):
                f.unlink()
            with contextlib.suppress(OSError):
                d.rmdir()

    def add_consumer(self, user: str, topics: Sequence[str] = ()) -> Client:
        """A further consumer user (reads every mailpulse topic, may publish models): a second
        collector of a share group, a recorder.  ``topics`` (``topic read|write|readwrite T``
        lines) replaces that ACL (a benchmark's publisher that plays many nodes)."""
        _check_user(user)
        with self._locked():
            taken = {COLLECTOR_USER} | {c["user"] for c in self.consumers} | {n["user"] for n in self.nodes}
            if user in taken:
                raise UserError(f"MQTT user {user!r} already exists in the deployment")
            d = self.root / "clients" / user
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o700)
            password = _new_password()
            issued = self._ca().issue_client(user)
            issued.save(d / "client.crt", d / "client.key")
            write_private(d / "secrets.toml", _dump_toml({"mqtt_password": password}).encode())
            entry: dict[str, Any] = {"user": user, "serial": str(issued.serial)}
            if topics:
                entry["acl"] = list(topics)
            self.state.setdefault("consumers", []).append(entry)
            self._add_password(user, password)
            self._save()
        return self.client(user)

    # -- broker files -----------------------------------------------------------------------------

    def acl_lines(self) -> list[str]:
        lines = ["# written by mailpulse (collector init / add-node / remove-node): do not edit", ""]
        lines += [*T.collector_acl(COLLECTOR_USER), ""]
        for c in self.consumers:
            lines += [f"user {c['user']}", *c["acl"], ""] if c.get("acl") else [*T.collector_acl(c["user"]), ""]
        for n in self.nodes:
            lines += [*T.node_acl(n["site"], n["node"], n["user"]), ""]
        return lines

    def _passwd(self) -> Path:
        return self.broker_dir / "passwd"

    def _read_passwd(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for line in self._passwd().read_text().splitlines():
            user, sep, h = line.partition(":")
            if sep:
                out[user] = h
        return out

    def _write_passwd(self, entries: dict[str, str]) -> None:
        self._broker_secret(self._passwd(), "".join(f"{u}:{h}\n" for u, h in entries.items()).encode())

    def _add_password(self, user: str, password: str) -> None:
        entries = self._read_passwd()
        entries[user] = hash_password(password)
        self._write_passwd(entries)

    def _remove_password(self, user: str) -> None:
        entries = self._read_passwd()
        entries.pop(user, None)
        self._write_passwd(entries)

    def _broker_secret(self, path: Path, data: bytes) -> None:
        """A file only the broker reads: 0600, owned by the broker's user when we are root."""
        write_private(path, data)
        user = self.state.get("broker_user") or "mosquitto"
        if os.geteuid() == 0 and user != "root":
            with contextlib.suppress(KeyError):
                pw = pwd.getpwnam(user)
                os.chown(path, pw.pw_uid, pw.pw_gid)

    def _save(self) -> None:
        """Write deployment.toml and everything derived from it (ACL, CRL)."""
        write_public(self.state_file, _dump_toml(self.state).encode())
        self._broker_secret(self.broker_dir / "acl", ("\n".join(self.acl_lines()) + "\n").encode())
        crl = self._ca().crl(int(r["serial"]) for r in self.state.get("revoked", []))
        write_public(self.broker_dir / "crl.pem", crl)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                self.state = tomllib.loads(self.state_file.read_text())
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def open_deployment(root: str | os.PathLike[str]) -> Deployment:
    return Deployment(Path(root))


def mosquitto_conf(dep: Deployment) -> str:
    """The broker's configuration (see the module docstring)."""
    b = dep.broker_dir
    s = dep.state
    listen = s.get("listen", "")
    lines = [
        "# Mosquitto for a mailpulse deployment, written by 'mailpulse collector init'.",
        f"# Run: mosquitto -c {dep.mosquitto_conf}   (kill -HUP after add-node/remove-node)",
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {b / 'passwd'}",
        f"acl_file {b / 'acl'}",
        "persistence true",
        f"persistence_location {b / 'data'}/",
        f"autosave_interval {int(s.get('autosave_s', 60))}",
        f"log_dest file {dep.broker_log}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
        # the collector's persistent session holds the fleet's events while the collector is away
        f"max_queued_messages {int(s.get('max_queued_messages', 1_000_000))}",
        "",
        "# TLS: a client certificate from the deployment's CA and a user's password, both required",
        f"listener {dep.port}{' ' + listen if listen else ''}",
        f"cafile {dep.ca_file}",
        f"certfile {b / 'server.crt'}",
        f"keyfile {b / 'server.key'}",
        f"crlfile {b / 'crl.pem'}",
        "require_certificate true",
        "use_identity_as_username false",
        "tls_version tlsv1.2",
    ]
    if s.get("broker_user"):
        lines.insert(2, f"user {s['broker_user']}")
    if dep.plaintext_port:
        lines += ["", "# PLAINTEXT, asked for with --plaintext-port: passwords and events cross the network in clear",
                  f"listener {dep.plaintext_port}{' ' + listen if listen else ''}"]
    return "\n".join(lines) + "\n"


def init_deployment(root: str | os.PathLike[str], *, hosts: Sequence[str] = ("localhost", "127.0.0.1"),
                    port: int = 8883, plaintext_port: int = 0, listen: str = "", web_host: str = "127.0.0.1",
                    web_port: int = 8443, web_hosts: Sequence[str] = (), node_dir: str = "/etc/mailpulse",
                    broker_user: str = "", autosave_s: int = 60, ca_name: str = "mailpulse deployment CA",
                    nodes: Sequence[tuple[str, str]] = ()) -> Deployment:
    """Create a deployment in ``root`` (see the module docstring) and return it.

    Parameters
    ----------
    hosts : names and addresses of the broker as clients reach it (the first is in the URL)
    port, plaintext_port, listen : the TLS listener, an optional plaintext one (0: none), bind address
    web_host, web_port, web_hosts : the dashboard's listen address and port, names in its certificate
    node_dir : where a node keeps its config and TLS files (``""``: the bundle folder itself)
    broker_user : ``user`` line of mosquitto.conf (empty: Mosquitto's default, ``mosquitto``)
    autosave_s : Mosquitto's ``autosave_interval``
    nodes : (site, node) pairs to enrol right away
    """
    base = Path(root).resolve()
    if (base / "deployment.toml").exists():
        raise UserError(f"{base} already holds a deployment: use add-node, or choose an empty folder")
    if not hosts:
        raise UserError("the broker needs at least one host name or address (--host)")
    for p in (port, *((plaintext_port,) if plaintext_port else ())):
        if not 0 < p < 65536:
            raise UserError(f"port {p} is not a TCP port (1-65535)")
    if not 0 <= web_port < 65536:
        raise UserError(f"web port {web_port} is not a TCP port (1-65535, or 0 for any free port)")
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)
    for sub, mode in (("ca", 0o700), ("broker", 0o755), ("broker/data", 0o755), ("collector", 0o700),
                      ("nodes", 0o700), ("clients", 0o700), ("archive", 0o700)):
        (base / sub).mkdir(parents=True, exist_ok=True)
        (base / sub).chmod(mode)
    state: dict[str, Any] = {"version": LAYOUT_VERSION, "broker_hosts": list(hosts), "broker_port": port,
                             "plaintext_port": plaintext_port, "listen": listen, "web_host": web_host,
                             "web_port": web_port, "node_dir": node_dir, "broker_user": broker_user,
                             "autosave_s": autosave_s, "nodes": [], "consumers": [], "revoked": []}
    ca = CertificateAuthority.create(ca_name)
    ca.save(base / "ca.crt", base / "ca" / "ca.key")
    write_public(base / "deployment.toml", _dump_toml(state).encode())
    dep = Deployment(base)

    server = ca.issue_server(list(hosts))
    dep._broker_secret(dep.broker_dir / "server.key", server.key_pem)
    write_public(dep.broker_dir / "server.crt", server.cert_pem)
    write_public(dep.mosquitto_conf, mosquitto_conf(dep).encode())

    c = dep.collector_dir
    coll_pw, web_pw, metrics_pw = _new_password(), _new_password(), _new_password()
    ca.issue_client(COLLECTOR_USER).save(c / "mqtt.crt", c / "mqtt.key")
    names = list(dict.fromkeys([*web_hosts, *([web_host] if web_host not in ("0.0.0.0", "::") else []),
                                *hosts, "localhost", "127.0.0.1"]))
    ca.issue_server(names).save(c / "web.crt", c / "web.key")
    write_private(dep.collector_secrets, _dump_toml({"mqtt_password": coll_pw, "web_password": web_pw,
                                                     "web_metrics_password": metrics_pw}).encode())
    write_private(c / "prometheus.password", metrics_pw.encode())
    write_public(dep.collector_config, ("# the collector of this deployment, written by 'mailpulse collector init'\n"
                                        + _dump_toml(collector_doc(dep))).encode())
    write_public(c / "prometheus.yml", _prometheus_yml(dep, names[0]).encode())
    dep._write_passwd({COLLECTOR_USER: hash_password(coll_pw)})
    with dep._locked():
        dep._save()
    for site, node in nodes:
        dep.add_node(site, node)
    return dep


def collector_doc(dep: Deployment) -> dict[str, Any]:
    """The collector's config of the deployment (as a TOML document)."""
    c = dep.collector_dir
    coll = Client(COLLECTOR_USER, "", dep.ca_file, c / "mqtt.crt", c / "mqtt.key")
    return {"collector": {"secrets_file": str(dep.collector_secrets)},
            "mqtt": coll.mqtt_doc(dep.url),
            "archive": {"dir": str(dep.root / "archive")},
            "web": {"host": dep.state["web_host"], "port": int(dep.state["web_port"]),
                    "cert_file": str(c / "web.crt"), "key_file": str(c / "web.key")}}


def _prometheus_yml(dep: Deployment, host: str) -> str:
    port = int(dep.state["web_port"])
    return "\n".join([
        "# Prometheus scrape job for the mailpulse collector: put it under scrape_configs:",
        "# (copy prometheus.password where Prometheus can read it, mode 0600, owned by its user)",
        "- job_name: mailpulse",
        "  scheme: https",
        "  tls_config:",
        f"    ca_file: {dep.ca_file}",
        "  basic_auth:",
        "    username: prometheus",
        f"    password_file: {dep.collector_dir / 'prometheus.password'}",
        "  static_configs:",
        f"    - targets: [\"{host}:{port}\"]",
        "",
    ])


def revoked_serials(dep: Deployment) -> set[int]:
    """Serials in the CRL (for checks)."""
    return {int(r["serial"]) for r in dep.state.get("revoked", [])}


def certificate_serial(path: Path) -> int:
    return serial_of(path.read_bytes())
