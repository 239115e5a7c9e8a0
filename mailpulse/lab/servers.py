"""Real mail and MQTT servers on loopback, under a temporary directory, for tests and the demo.

Each server class writes its own configuration under a root directory, starts the real daemon in
the foreground in its own process group, waits until its port accepts connections, and kills the
whole process group on :meth:`stop` (also from ``__exit__`` and at interpreter exit), so a failing
test never leaves a daemon behind.

- :class:`Mosquitto`: the broker exactly as ``mailpulse collector init`` configures it (TLS with
  client certificates, per-user passwords, the per-node ACL, persistence on disk, so a restart
  keeps persistent sessions).
- :class:`Postfix`: one Postfix instance (``postfix -c DIR start-fg``) with its own queue,
  ``maillog_file`` under ``maillog_file_prefixes``, no DNS, large messages allowed.
- :class:`Dovecot`: IMAP with a ``passwd-file`` and Maildir, plain text login on loopback.
- :class:`MailChain`: the chain ``SMTP -> Postfix "edge" -> Postfix "mx" -> Maildir <- Dovecot``,
  optionally with an extra relay (any SMTP server, e.g. the recompressing one in
  :mod:`mailpulse.lab.relays`) for a second domain.

Postfix and Dovecot need root (they switch to their own users); :func:`missing_tools` tells a test
what is absent so it can skip with the reason.  Nothing here uses systemd or the system's own
configuration of these daemons.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from mailpulse.collector import pki
from mailpulse.collector.provision import Client, Deployment, NodeBundle, init_deployment

__all__ = [
    "CertificateAuthority",
    "Dovecot",
    "MailChain",
    "Mosquitto",
    "Postfix",
    "ServerError",
    "free_port",
    "make_root",
    "missing_tools",
    "wait_port",
]

POSTFIX_DAEMON_DIR = "/usr/lib/postfix/sbin"

#: Every live server process group, killed at interpreter exit as a last resort.
_LIVE: set[int] = set()


class ServerError(RuntimeError):
    """A test server did not start or stop; the message names the server and quotes its log."""


def _kill_all_at_exit() -> None:
    for pgid in list(_LIVE):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


atexit.register(_kill_all_at_exit)


def missing_tools(*names: str, root: bool = False) -> list[str]:
    """Return what is missing to run the named servers (``"mosquitto"``, ``"postfix"``, ``"dovecot"``,
    or any command) as human-readable reasons; an empty list means all is there."""
    out = []
    paths = {"mosquitto": "mosquitto", "postfix": "postfix", "dovecot": "dovecot"}
    for n in names:
        exe = paths.get(n, n)
        if shutil.which(exe) is None and not Path("/usr/sbin", exe).exists():
            out.append(f"{n} is not installed")
    if root and os.geteuid() != 0:
        out.append("Postfix and Dovecot test instances need root")
    return out


#: Ports :func:`free_port` has handed out in this process: the servers bind them later, so the kernel
#: may offer one again in between (a demo once gave Dovecot the edge Postfix's port).
_HANDED_OUT: set[int] = set()
_HANDED_OUT_LOCK = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free now on ``host`` (picked by the kernel), never one this process was
    given before."""
    with _HANDED_OUT_LOCK:
        for _ in range(1000):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port = int(s.getsockname()[1])
            if port not in _HANDED_OUT:
                _HANDED_OUT.add(port)
                return port
    raise OSError(f"no free TCP port on {host} that this process has not handed out already")


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 10.0, proc: subprocess.Popen | None = None) -> bool:
    """Wait until ``host:port`` accepts a TCP connection; False on timeout or if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def make_root(prefix: str = "mailpulse-srv-") -> Path:
    """A fresh temporary directory that the daemons' unprivileged users can traverse (mode 0755).

    pytest's own ``tmp_path`` lives under a 0700 directory, which Postfix and Dovecot children
    (running as ``postfix``, ``dovecot``, ``nobody``) cannot enter, so servers get their own root.
    """
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    return root


def _tail(path: Path, n: int = 20) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


class _Daemon:
    """A foreground daemon in its own process group."""

    name = "daemon"

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> None:
        with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env=dict(env) if env is not None else None,
            )
        _LIVE.add(self.proc.pid)

    def _kill(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> None:
        p = self.proc
        if p is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, sig)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=5)
        # children that outlived the leader (Postfix/Dovecot workers) share the group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        _LIVE.discard(p.pid)
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def stop(self) -> None:
        self._kill()

    def __enter__(self) -> _Daemon:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA and one server certificate for ``localhost`` / ``127.0.0.1`` (EC P-256, two days),
    made like the deployment's own (:mod:`mailpulse.collector.pki`), for the mail servers' TLS."""

    ca_cert: Path
    server_cert: Path
    server_key: Path

    @classmethod
    def create(cls, directory: Path) -> CertificateAuthority:
        """Make the CA and the server certificate in ``directory`` (readable by the daemons' users)."""
        d = Path(directory)
        ca = pki.CertificateAuthority.create("mailpulse test CA", days=2)
        ca.save(d / "ca.crt", d / "ca.key")
        ca.issue_server(["localhost", "127.0.0.1"], days=2).save(d / "server.crt", d / "server.key", key_mode=0o644)
        return cls(d / "ca.crt", d / "server.crt", d / "server.key")


# --------------------------------------------------------------------------------------------
# Mosquitto
# --------------------------------------------------------------------------------------------


class Mosquitto(_Daemon):
    """Mosquitto 2.x run from the configuration ``mailpulse collector init`` writes: one TLS
    listener requiring a client certificate of the deployment's CA and a user's password, the
    per-node ACL, persistence on disk (a restart keeps persistent sessions).

    Build one with :meth:`lab` (a fresh deployment under ``root``) or from an existing
    :class:`~mailpulse.collector.provision.Deployment`.  ``netns`` runs the broker inside that
    network namespace (``ip netns exec``).
    """

    name = "mosquitto"

    def __init__(self, deployment: Deployment, netns: str | None = None) -> None:
        super().__init__()
        self.deployment = deployment
        self.netns = netns
        self.root = deployment.broker_dir
        self.host = deployment.hosts[0]
        self.port = deployment.port
        self.plaintext_port = deployment.plaintext_port
        self.log_path = deployment.broker_log
        self.conf_path = deployment.mosquitto_conf

    @classmethod
    def lab(cls, root: Path, nodes: Sequence[tuple[str, str]] = (), consumers: Sequence[str] = (),
            hosts: Sequence[str] = ("127.0.0.1", "localhost"), plaintext: bool = False,
            netns: str | None = None) -> Mosquitto:
        """A new deployment in ``root`` (free ports, Mosquitto as root when we are, autosave every
        second, node bundles that name their own folder) and its broker, not started."""
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o755)
        dep = init_deployment(root, hosts=hosts, port=free_port(), plaintext_port=free_port() if plaintext else 0,
                              web_port=0, node_dir="", broker_user="root" if os.geteuid() == 0 else "",
                              autosave_s=1, nodes=nodes)
        for user in consumers:
            dep.add_consumer(user)
        return cls(dep, netns)

    @property
    def ca_file(self) -> Path:
        return self.deployment.ca_file

    @property
    def url(self) -> str:
        return self.deployment.url

    def client(self, user: str) -> Client:
        """A consumer's MQTT identity (``collector`` or one added with ``add_consumer``)."""
        return self.deployment.client(user)

    def node(self, site: str, node: str) -> NodeBundle:
        """A node's bundle (its MQTT identity is ``.client``)."""
        return self.deployment.bundle(site, node)

    def _ready(self) -> bool:
        if self.netns is None:
            return wait_port(self.port, self.host, proc=self.proc) and (
                not self.plaintext_port or wait_port(self.plaintext_port, self.host, proc=self.proc))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.running:
            if f"Opening ipv4 listen socket on port {self.port}" in _tail(self.log_path, 40) and \
                    "running" in _tail(self.log_path, 40):
                return True
            time.sleep(0.05)
        return False

    def start(self) -> None:
        """Start the broker and wait until its listeners accept connections."""
        if self.running:
            return
        argv = ["mosquitto", "-c", str(self.conf_path)]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
            with contextlib.suppress(OSError):
                self.log_path.write_text("")   # _ready reads the log of this start only
        self._spawn(argv, self.root / "mosquitto.stdout")
        if not self._ready():
            self.stop()
            raise ServerError(f"mosquitto did not start: {_tail(self.log_path)} "
                              f"{_tail(self.root / 'mosquitto.stdout')}")

    def reload(self) -> None:
        """Re-read the password file and the ACL (SIGHUP), as after ``add-node``/``remove-node``."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        """Stop gracefully (SIGTERM saves the persistence file) and wait for the port to close."""
        self._kill(signal.SIGTERM)

    def kill(self) -> None:
        """Stop abruptly (SIGKILL): in-flight state since the last autosave is lost."""
        self._kill(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()


# --------------------------------------------------------------------------------------------
# Postfix
# --------------------------------------------------------------------------------------------

_MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class Postfix(_Daemon):
    """One Postfix instance with its own config directory, queue and log file, on loopback.

    Parameters
    ----------
    root : Path
        Instance directory (``etc/``, ``queue/``, ``data/``, ``log/maillog``).
    hostname : str
        ``myhostname`` (appears in ``Received:`` headers and the log).
    main : mapping
        Extra ``main.cf`` settings, overriding the defaults (e.g. ``transport_maps``,
        ``virtual_mailbox_maps``).
    port : int
        SMTP port (free one picked if 0).
    syslog_name : str
        Log tag (``postfix-edge/smtp[..]``), so the logs of two instances stay distinguishable.
    """

    name = "postfix"

    def __init__(self, root: Path, hostname: str, main: Mapping[str, str] | None = None, port: int = 0,
                 syslog_name: str = "postfix") -> None:
        super().__init__()
        self.root = Path(root)
        self.hostname = hostname
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.etc = self.root / "etc"
        self.queue = self.root / "queue"
        self.log_dir = self.root / "log"
        self.maillog = self.log_dir / "maillog"
        for d in (self.root, self.etc, self.queue, self.root / "data", self.log_dir):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)
        if os.geteuid() == 0:
            pf = pwd.getpwnam("postfix")
            os.chown(self.root / "data", pf.pw_uid, pf.pw_gid)
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue),
            "data_directory": str(self.root / "data"),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "syslog_name": syslog_name,
            "myhostname": hostname,
            "mydomain": "mailpulse.test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtp_host_lookup": "native",
            "lmtp_host_lookup": "native",
            "smtp_dns_support_level": "disabled",
            "smtpd_peername_lookup": "no",
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.log_dir),
            "message_size_limit": "209715200",
            "mailbox_size_limit": "0",
            "virtual_mailbox_limit": "0",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "smtpd_recipient_restrictions": "permit_mynetworks, reject",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "biff": "no",
            "append_dot_mydomain": "no",
            "smtputf8_enable": "no",
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "smtp_connect_timeout": "2s",
            "delay_warning_time": "0",
            "smtpd_tls_security_level": "none",
            "smtp_tls_security_level": "none",
            "in_flow_delay": "0",
        }
        settings.update(main or {})
        self.settings = settings
        (self.etc / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
        (self.etc / "master.cf").write_text(_MASTER_CF.format(listen=f"{self.host}:{self.port}"))

    def postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``postfix -c ETC ARGS`` (e.g. ``flush``, ``reload``)."""
        r = subprocess.run(["postfix", "-c", str(self.etc), *args], capture_output=True, text=True)
        if check and r.returncode != 0:
            raise ServerError(f"postfix {' '.join(args)} failed for {self.hostname}: {r.stderr.strip()} "
                              f"{_tail(self.maillog)}")
        return r

    def start(self) -> None:
        """Start ``master`` in the foreground (``start-fg``) and wait for the SMTP port."""
        if self.running:
            return
        env = dict(os.environ, MAIL_CONFIG=str(self.etc))
        self._spawn(["postfix", "-c", str(self.etc), "start-fg"], self.root / "postfix.stdout", env=env)
        if not wait_port(self.port, proc=self.proc, timeout=15):
            out = _tail(self.root / "postfix.stdout")
            self.stop()
            chk = subprocess.run(["script", "-qc", f"postfix -c {self.etc} check", "/dev/null"],
                                 capture_output=True, text=True)
            raise ServerError(f"postfix {self.hostname} did not start: {out} {chk.stdout.strip()} "
                              f"{_tail(self.maillog)}")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.postfix("stop", check=False)
        self._kill(signal.SIGTERM)

    def flush(self) -> None:
        """Ask the queue manager to retry every deferred message now."""
        self.postfix("flush")

    def queue_ids(self) -> list[str]:
        """Queue ids of the messages in the deferred and active queues."""
        ids = []
        for sub in ("active", "deferred", "incoming"):
            d = self.queue / sub
            if d.is_dir():
                ids += [p.name for p in d.rglob("*") if p.is_file()]
        return ids

    def wait_queue_empty(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.queue_ids():
                return True
            time.sleep(0.05)
        return False

    def log_text(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except OSError:
            return ""


# --------------------------------------------------------------------------------------------
# Dovecot
# --------------------------------------------------------------------------------------------


class Dovecot(_Daemon):
    """Dovecot IMAP with a passwd-file and Maildirs, plain login on loopback; with ``tls`` (a
    :class:`CertificateAuthority`) also STARTTLS on :attr:`port` and implicit TLS on :attr:`imaps_port`.

    Mail of user ``u`` lives in ``mail_root/u/Maildir`` owned by ``mail_user`` (default ``nobody``),
    the same layout the :class:`MailChain` "mx" Postfix delivers into.  ``settings`` are extra
    top-level ``dovecot.conf`` lines (e.g. ``imap_capability`` for a server without IDLE).
    """

    name = "dovecot"

    def __init__(self, root: Path, users: Mapping[str, str], mail_root: Path, mail_user: str = "nobody",
                 tls: CertificateAuthority | None = None, settings: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.tls = tls
        self.imaps_port = free_port() if tls else 0
        self.users = dict(users)
        self.mail_root = Path(mail_root)
        pw = pwd.getpwnam(mail_user)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        run = self.root / "run"
        run.mkdir(exist_ok=True)
        run.chmod(0o755)
        (self.root / "state").mkdir(exist_ok=True)
        passwd = self.root / "passwd"
        passwd.write_text("".join(f"{u}:{{PLAIN}}{p}:{self.uid}:{self.gid}::{self.mail_root / u}\n"
                                  for u, p in self.users.items()))
        passwd.chmod(0o644)
        self.log_path = self.root / "dovecot.log"
        self.conf_path = self.root / "dovecot.conf"
        ssl = (f"ssl = yes\nssl_cert = <{tls.server_cert}\nssl_key = <{tls.server_key}"
               if tls is not None else "ssl = no")
        self.conf_path.write_text(f"""\
base_dir = {run}
state_dir = {self.root / 'state'}
log_path = {self.log_path}
instance_name = mailpulse-{self.port}
protocols = imap
listen = 127.0.0.1
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
mail_location = maildir:~/Maildir
mail_fsync = never
mmap_disable = yes
default_login_user = dovenull
default_internal_user = dovecot
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {passwd}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.imaps_port}
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
""" + "".join(f"{k} = {v}\n" for k, v in (settings or {}).items()))
        for u in self.users:
            md = self.mail_root / u / "Maildir"
            for sub in ("cur", "new", "tmp"):
                (md / sub).mkdir(parents=True, exist_ok=True)
        self.mail_root.chmod(0o755)
        if os.geteuid() == 0:
            for dirpath, _dirs, _files in os.walk(self.mail_root):
                os.chown(dirpath, self.uid, self.gid)

    def start(self) -> None:
        if self.running:
            return
        self._spawn(["dovecot", "-F", "-c", str(self.conf_path)], self.root / "dovecot.stdout")
        if not wait_port(self.port, proc=self.proc) or (self.imaps_port and not wait_port(self.imaps_port)):
            self.stop()
            raise ServerError(f"dovecot did not start: {_tail(self.root / 'dovecot.stdout')} {_tail(self.log_path)}")


# --------------------------------------------------------------------------------------------
# The chain
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mailbox:
    """One IMAP mailbox of the chain: the address mail goes to and the login that reads it."""

    address: str
    user: str
    password: str


class MailChain:
    """``SMTP -> Postfix edge -> Postfix mx -> Maildir`` read by Dovecot IMAP, on loopback.

    Domains: mail to ``probe@probe.test`` goes edge -> mx directly; mail to ``lossy@lossy.test``
    goes edge -> ``extra_relay`` (host, port) -> mx, if ``extra_relay`` is set (else like probe).
    The mx accepts both domains on its own SMTP port (so an extra relay can forward to it).

    Use as a context manager, or call :meth:`start` / :meth:`stop`.
    """

    def __init__(self, root: Path | None = None, extra_relay: tuple[str, int] | None = None,
                 edge_main: Mapping[str, str] | None = None, mx_main: Mapping[str, str] | None = None) -> None:
        self.root = Path(root) if root else make_root("mailpulse-chain-")
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        self.mail_root = self.root / "mail"
        self.mail_root.mkdir(exist_ok=True)
        self.mailboxes = {
            "probe": Mailbox("probe@probe.test", "probe", "probe-secret"),
            "lossy": Mailbox("lossy@lossy.test", "lossy", "lossy-secret"),
        }
        pw = pwd.getpwnam("nobody")
        mx_port = free_port()
        lossy_next = f"[{extra_relay[0]}]:{extra_relay[1]}" if extra_relay else f"[127.0.0.1]:{mx_port}"
        edge = {
            "relay_domains": "probe.test lossy.test",
            "transport_maps": f"inline:{{ probe.test=smtp:[127.0.0.1]:{mx_port}, lossy.test=smtp:{lossy_next} }}",
        }
        edge.update(edge_main or {})
        mx = {
            "virtual_mailbox_domains": "probe.test lossy.test",
            "virtual_mailbox_base": str(self.mail_root),
            "virtual_mailbox_maps": "inline:{ "
            + ", ".join(f"{m.address}={m.user}/Maildir/" for m in self.mailboxes.values()) + " }",
            "virtual_uid_maps": f"static:{pw.pw_uid}",
            "virtual_gid_maps": f"static:{pw.pw_gid}",
            "virtual_minimum_uid": "1",
        }
        mx.update(mx_main or {})
        self.edge = Postfix(self.root / "edge", "edge.mailpulse.test", edge, syslog_name="postfix-edge")
        self.mx = Postfix(self.root / "mx", "mx.mailpulse.test", mx, port=mx_port, syslog_name="postfix-mx")
        self.imap = Dovecot(self.root / "dovecot", {m.user: m.password for m in self.mailboxes.values()},
                            self.mail_root)

    @property
    def smtp(self) -> tuple[str, int]:
        """Where clients submit mail: the edge relay."""
        return (self.edge.host, self.edge.port)

    def start(self) -> None:
        try:
            self.imap.start()
            self.mx.start()
            self.edge.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for d in (self.edge, self.mx, self.imap):
            with contextlib.suppress(Exception):
                d.stop()

    def cleanup(self) -> None:
        """Stop everything and delete the root directory."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> MailChain:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
