"""SMTP relays that misbehave on purpose, for tests and the demo (aiosmtpd).

:class:`MangleRelay` accepts mail on loopback and forwards it to the next hop, optionally after a
delay (a slow relay) and after recompressing every image part (JPEG at a low quality, optionally
resized), the way some gateways and webmail "optimisers" do.  It adds its own ``Received:`` field.
"""

from __future__ import annotations

import asyncio
import base64
import io
import random
import smtplib
import ssl
from email import policy
from email.message import Message
from email.parser import BytesParser
from email.utils import formatdate
from typing import Any

from .servers import free_port

__all__ = ["MangleRelay", "recompress_images"]


def recompress_images(data: bytes, quality: int = 40, scale: float | None = None) -> bytes:
    """Return the message with every image part re-encoded as JPEG (``quality``, ``scale``)."""
    from PIL import Image

    msg = BytesParser(policy=policy.compat32).parsebytes(data)
    for part in msg.walk():
        if part.get_content_maintype() != "image":
            continue
        raw = part.get_payload(decode=True)
        if not isinstance(raw, bytes):
            continue
        with Image.open(io.BytesIO(raw)) as im:
            rgb = im.convert("RGB")
            if scale:
                rgb = rgb.resize((max(1, int(rgb.width * scale)), max(1, int(rgb.height * scale))))
            buf = io.BytesIO()
            rgb.save(buf, "JPEG", quality=quality)
        b64 = base64.encodebytes(buf.getvalue()).decode()
        _replace_payload(part, b64)
    return msg.as_bytes(policy=policy.compat32.clone(linesep="\r\n"))


def _replace_payload(part: Message, b64: str) -> None:
    part.set_payload(b64)
    del part["Content-Transfer-Encoding"]
    part["Content-Transfer-Encoding"] = "base64"
    part.replace_header("Content-Type", "image/jpeg")


class _Handler:
    def __init__(self, relay: MangleRelay) -> None:
        self.relay = relay

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        r = self.relay
        data = bytes(envelope.original_content or envelope.content)
        stamped = formatdate(usegmt=True)      # on arrival, as an MTA stamps: the hold is this hop's delay
        if r.refuse:
            r.refused += 1
            return r.refuse                    # a deferral storm: the sender keeps retrying
        if r.serial:
            async with r.one_at_a_time:        # one message at a time: a queue builds up in front
                await asyncio.sleep(r.delay_s)
        elif r.delay_s:
            await asyncio.sleep(r.delay_s)     # each message held, the others go on (no one-at-a-time queue)
        if r.drop_rate and r.rng.random() < r.drop_rate:
            r.dropped += 1
            return "250 2.0.0 OK relayed"      # a lossy relay: accepted, never forwarded
        if r.quality is not None:
            data = recompress_images(data, r.quality, r.scale)
        peer = session.peer[0] if session.peer else "unknown"
        r.count += 1
        received = (f"Received: from {session.host_name or 'unknown'} ([{peer}])\r\n"
                    f"\tby {r.hostname} (mailpulse mangle relay) with ESMTP id MR{r.count:06d}\r\n"
                    f"\tfor <{envelope.rcpt_tos[0]}>; {stamped}\r\n").encode()
        try:
            with smtplib.SMTP(*r.next_hop, timeout=30) as s:
                s.sendmail(envelope.mail_from, envelope.rcpt_tos, received + data)
        except (OSError, smtplib.SMTPException) as e:
            return f"451 4.4.1 next hop failed: {e}"
        return "250 2.0.0 OK relayed"


class MangleRelay:
    """A relay on ``127.0.0.1:port`` that forwards to ``next_hop``, optionally slow and lossy.

    Parameters
    ----------
    next_hop : (host, port)
        Where mail goes next (set :attr:`next_hop` later if it is not known yet).
    quality : int or None
        Recompress images to JPEG at this quality (None: leave them alone).
    scale : float or None
        Also resize images by this factor.
    delay_s : float
        Wait this long before forwarding each message.
    tls : (cert file, key file), optional
        Offer and require STARTTLS with this certificate.
    users : dict, optional
        Require SMTP AUTH (PLAIN/LOGIN) with these user names and passwords (:attr:`logins`
        records who logged in).

    The faults of the fault-scenario bench are attributes that may change while it runs:
    :attr:`delay_s`, :attr:`quality`, :attr:`drop_rate` (accept, then silently drop this share),
    :attr:`refuse` (answer every DATA with this reply, e.g. ``451 4.3.0 ...``), :attr:`serial`
    (hold messages one at a time, :attr:`delay_s` each).
    """

    def __init__(self, next_hop: tuple[str, int] = ("127.0.0.1", 25), quality: int | None = 40,
                 scale: float | None = None, delay_s: float = 0.0, hostname: str = "mangle.mailpulse.test",
                 tls: tuple[str, str] | None = None, users: dict[str, str] | None = None) -> None:
        self.next_hop = next_hop
        self.quality, self.scale, self.delay_s = quality, scale, delay_s
        self.tls = tls
        self.users = users
        self.logins: list[str] = []
        self.hostname = hostname
        self.drop_rate = 0.0
        self.refuse = ""
        self.serial = False
        self.dropped = self.refused = 0
        self.rng = random.Random(hostname)
        self.one_at_a_time = asyncio.Lock()
        self.host = "127.0.0.1"
        self.port = free_port()
        self.count = 0
        self._controller: Any = None

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult

        user, pw = data.login.decode(), data.password.decode()
        ok = self.users is not None and self.users.get(user) == pw
        if ok:
            self.logins.append(user)
        return AuthResult(success=ok, handled=False)

    def start(self) -> None:
        """Listen; with ``tls`` (cert, key) STARTTLS is required, with ``users`` AUTH too."""
        from aiosmtpd.controller import Controller

        self.one_at_a_time = asyncio.Lock()    # bound to the loop of this start's controller on first use
        kwargs: dict[str, Any] = {}
        if self.tls is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(*self.tls)
            kwargs.update(tls_context=ctx, require_starttls=True)
        if self.users is not None:
            kwargs.update(authenticator=self._authenticate, auth_required=True,
                          auth_require_tls=self.tls is not None)
        self._controller = Controller(_Handler(self), hostname=self.host, port=self.port,
                                      data_size_limit=256 << 20, ready_timeout=10, **kwargs)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> MangleRelay:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
