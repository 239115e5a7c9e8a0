"""The replay's publishing side: in a process of its own when a core is free, else in the replay's.

``node replay`` is one long CPU-bound loop in Python, so its publishing half (writing each event's
JSON payload, committing it to the SQLite spool, the MQTT pump, paho and TLS) would share one
interpreter lock with the parsing half.  :class:`PublisherProcess` is a sink that hands each batch
of scored events to a child process as plain tuples (:func:`mailpulse.pi_firmware.events.delivery_row`:
cheap to pickle) through a pipe; the child writes the payloads
(:func:`~mailpulse.pi_firmware.events.delivery_payload`, the same bytes as in the daemon), spools and
publishes them with the daemon's own :class:`~mailpulse.pi_firmware.mqtt.MqttSink` and
:class:`~mailpulse.pi_firmware.spool.Spool` (QoS 1, persistent session, TLS as configured).  The
two halves run on two cores; the pipe's buffer is the back-pressure (a batch is sent only when the
child has taken the previous one).

Delivery is as in the daemon: an event is in the spool before it is sent, deleted only when the
broker acknowledged it; :meth:`PublisherProcess.flush` waits for that.  A child that fails reports
its error; the parent raises ``UserError`` with it.

Handing the events over costs CPU time (about a fifth of the publishing work: the tuples, pickling
and unpickling), which pays only when the second process gets a core of its own: on a loaded
machine one interpreter is faster (measured on the 2-core build machine at load 6: 8.2 s against
9.0 s for a 1M-line log).  :func:`publisher` therefore picks the second process only when a core is
free (the one-minute load average below the core count minus one), else
:class:`InProcessPublisher`: the daemon's arrangement, JSON and spool writes in the caller's thread.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import threading
from collections.abc import Sequence
from typing import Any

from mailpulse import __version__
from mailpulse.config.node import MqttSettings, NodeConfig, SpoolSettings
from mailpulse.errors import UserError

from .events import DeliveryEvent, Event, delivery_payload, delivery_row
from .mqtt import MqttSink
from .quarantine import describe
from .spool import Spool


def _child(conn: multiprocessing.connection.Connection, site: str, node: str, mqtt: MqttSettings,
           sp: SpoolSettings) -> None:
    """The publishing process: rows in, spool and MQTT out, answers to ``flush`` and ``close``."""
    spool = None
    try:
        spool = Spool(sp.path, max_rows=sp.max_rows, synchronous=sp.synchronous)
        sink = MqttSink(site, node, mqtt, spool, sw_version=__version__)
        sink.start()
        while True:
            kind, arg = conn.recv()
            if kind == "rows":
                sink.emit_encoded([r if len(r) == 3 else delivery_payload(r) for r in arg])
            elif kind == "flush":
                conn.send(("ok", sink.flush(arg), len(spool)))
            elif kind == "close":
                flushed = sink.close(arg)
                conn.send(("ok", flushed, len(spool)))
                return
    except EOFError:   # the parent is gone
        return
    except Exception as e:
        conn.send(("error", describe(e), 0))
    finally:
        if spool is not None:
            spool.close()
        conn.close()


class InProcessPublisher:
    """The same sink in this process (the daemon's :class:`MqttSink` and :class:`Spool`)."""

    def __init__(self, cfg: NodeConfig) -> None:
        sp = cfg.spool
        self.spool_path = sp.path
        self.spool = Spool(sp.path, max_rows=sp.max_rows, synchronous=sp.synchronous)
        self.sink = MqttSink(cfg.site, cfg.node_id, cfg.mqtt, self.spool, sw_version=__version__)
        self.sink.start()
        self.left = 0

    def emit_many(self, events: Sequence[Event]) -> None:
        self.sink.emit_many(events)

    def flush(self, timeout: float = 10.0) -> bool:
        ok = self.sink.flush(timeout)
        self.left = len(self.spool)
        return ok

    def close(self, timeout: float = 5.0) -> bool:
        try:
            return self.sink.close(timeout)
        finally:
            self.spool.close()


def publisher(cfg: NodeConfig, cores: int | None = None,
              load: float | None = None) -> InProcessPublisher | PublisherProcess:
    """:class:`PublisherProcess` when a core is free for it, else :class:`InProcessPublisher`."""
    cores = (os.cpu_count() or 1) if cores is None else cores
    load = os.getloadavg()[0] if load is None else load
    return PublisherProcess(cfg) if cores >= 2 and load < cores - 1 else InProcessPublisher(cfg)


class PublisherProcess:
    """A sink that publishes through a child process (see the module docstring)."""

    def __init__(self, cfg: NodeConfig) -> None:
        # fork: the child has every module it needs already (spawn would import the parent's main
        # module again: the whole command line); the replay has no other thread yet
        methods = multiprocessing.get_all_start_methods()
        method = "fork" if "fork" in methods and threading.active_count() == 1 else "spawn"
        ctx: Any = multiprocessing.get_context(method)
        self._conn, child = ctx.Pipe()
        self.spool_path = cfg.spool.path
        self._proc = ctx.Process(target=_child, name="mailpulse-publisher", daemon=True,
                                 args=(child, cfg.site, cfg.node_id, cfg.mqtt, cfg.spool))
        self._proc.start()
        child.close()
        self.events = 0
        self.anomalies = 0
        self.left = 0
        self._closed = False
        self.error: str | None = None

    def _send(self, msg: tuple[str, Any]) -> None:
        if self.error is not None:
            raise UserError(self.error)
        try:
            self._conn.send(msg)
        except (EOFError, OSError):
            self._fail()

    def _answer(self) -> tuple[bool, int]:
        try:
            kind, ok, left = self._conn.recv()
        except (EOFError, OSError):
            self._fail()
        if kind == "error":
            self.error = f"publishing failed: {ok}"
            raise UserError(self.error)
        self.left = int(left)
        return bool(ok), int(left)

    def _fail(self) -> Any:
        """Raise ``UserError`` with the child's own error if it sent one, else its exit status."""
        if self.error is None:
            try:
                if self._conn.poll(0):
                    kind, why, _ = self._conn.recv()
                    if kind == "error":
                        self.error = f"publishing failed: {why}"
            except (EOFError, OSError):
                pass
        if self.error is None:
            self._proc.join(5)
            self.error = f"the publishing process ended unexpectedly (exit status {self._proc.exitcode})"
        raise UserError(self.error)

    def emit_many(self, events: Sequence[Event]) -> None:
        """Hand a batch of scored events to the publisher (in order)."""
        rows: list[tuple[Any, ...]] = []
        for e in events:
            if type(e) is DeliveryEvent:
                rows.append(delivery_row(e))
            else:
                rows.append((e.id, e.payload_json(), bool(e.scored is not None and e.scored.anomaly)))
            if e.scored is not None and e.scored.anomaly:
                self.anomalies += 1
        self.events += len(rows)
        self._send(("rows", rows))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the broker acknowledged every event (False on timeout; ``left`` rows stay)."""
        self._send(("flush", timeout))
        return self._answer()[0]

    def close(self, timeout: float = 5.0) -> bool:
        """Flush (up to ``timeout``), disconnect, end the child; whether everything was acknowledged."""
        if self._closed:
            return self.left == 0
        self._closed = True
        ok = False
        try:
            if self.error is None:
                self._send(("close", timeout))
                ok = self._answer()[0]
        finally:
            self._conn.close()
            self._proc.join(timeout + 10)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join()
        return ok


__all__ = ["InProcessPublisher", "PublisherProcess", "publisher"]
