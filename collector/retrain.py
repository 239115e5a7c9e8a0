"""Scheduled retraining from the archive, with the false-alarm guard, and model publishing.

:func:`retrain_from_archive` splits the archive's events in write order: the older
``1 - recent_fraction`` trains a candidate (:func:`mailpulse.collector.trainer.train`), the newest
``recent_fraction`` is held out as *recent normal data* (events labelled anomalous, when labels
exist, are dropped from it).  :func:`retrain_guard` then scores the held-out data with the
candidate and with the running model through the bit-exact reference (:func:`mailpulse.hdl.reference.score`)
and accepts the candidate only if its false-alarm rate is at most the running model's plus
``max_increase``.  Without a running model the candidate is accepted if its rate is at most
twice the training target.

Limits: unlabelled held-out data still contain the (rare) true anomalies; both models are
measured on the same data, so the comparison stays fair, but the absolute rates are upper bounds.

:func:`publish_model` validates a model file with :func:`mailpulse.modelfile.load_model` and
publishes its bytes retained (QoS 1) to the site's model topic (:func:`mailpulse.topics.model_topic`),
where nodes pick it up and hot-swap it.
"""

from __future__ import annotations

import collections
import os
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from mailpulse.hdl import reference as hm
from mailpulse.hdl.params import PARAMETER_SETS

from mailpulse import features as F
from mailpulse import topics as T
from mailpulse.datasets import Dataset
from mailpulse.errors import UserError
from mailpulse.modelfile import TrainedModel, load_model

from .archive import read_valid_events
from .trainer import train

__all__ = ["GuardResult", "false_alarm_rate", "publish_model", "retrain_from_archive", "retrain_guard"]


def false_alarm_rate(model: TrainedModel, x: npt.ArrayLike) -> float:
    """Fraction of samples ``model`` flags (exactly as the core flags them)."""
    xa = np.asarray(x, dtype=np.float64)
    if len(xa) == 0:
        return 0.0
    xq = model.scale(xa)
    r = hm.score(model.params, model.core_config(), xq)
    return float(np.mean(r.anomaly != 0))


@dataclass(frozen=True)
class GuardResult:
    accept: bool
    far_candidate: float
    far_current: float | None
    samples: int
    reason: str


def retrain_guard(candidate: TrainedModel, current: TrainedModel | None, recent_normal: npt.ArrayLike, *,
                  max_increase: float = 0.0, target_rate: float = 0.01) -> GuardResult:
    """Accept ``candidate`` only if it does not raise the false-alarm rate on recent normal data."""
    x = np.asarray(recent_normal, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        return GuardResult(False, 0.0, None, 0, "no recent normal data to check the candidate on")
    far_new = false_alarm_rate(candidate, x)
    if current is None:
        ok = far_new <= 2 * target_rate
        return GuardResult(ok, far_new, None, len(x),
                           f"no running model; candidate false-alarm rate {far_new:.4f} vs limit {2 * target_rate:.4f}")
    far_old = false_alarm_rate(current, x)
    ok = far_new <= far_old + max_increase
    return GuardResult(ok, far_new, far_old, len(x),
                       f"false-alarm rate on {len(x)} recent normal events: candidate {far_new:.4f}, "
                       f"running {far_old:.4f} (allowed increase {max_increase:.4f})")


def _archive_arrays(folder: str | os.PathLike[str], skipped: collections.Counter[str]
                    ) -> tuple[npt.NDArray[np.float64], list[int | None]]:
    rows: list[list[float]] = []
    labels: list[int | None] = []
    for ev in read_valid_events(folder, skipped):
        x = ev["x"]
        # vectors of another feature schema mean other things (slots, units, outcome codes)
        if ev.get("schema") != F.SCHEMA_VERSION or len(x) != F.D:
            skipped["other_feature_schema"] += 1
        else:
            rows.append([float(v) for v in x])
            lab = ev.get("label")
            labels.append(None if lab is None else int(bool(lab)))
    return np.asarray(rows, dtype=np.float64).reshape(-1, F.D), labels


def retrain_from_archive(folder: str | os.PathLike[str], current: TrainedModel | None, *, params: str = "small",
                         recent_fraction: float = 0.2, false_alarm_rate_target: float = 0.01,
                         max_increase: float = 0.0, seed: int = 0,
                         skipped: collections.Counter[str] | None = None) -> tuple[TrainedModel, GuardResult]:
    """Train a candidate on the older archive and guard it on the newest events.

    Archive entries that fail the payload declaration, or carry another feature schema, are
    skipped and counted in ``skipped`` (by reason), never a reason to refuse the archive.
    """
    skipped = collections.Counter() if skipped is None else skipped
    x, labels = _archive_arrays(folder, skipped)
    if len(x) < 50:
        raise UserError(f"archive {folder} holds {len(x)} events with feature vectors; retraining needs at least 50")
    cut = int(len(x) * (1 - recent_fraction))
    ds = Dataset(x[:cut], None, Path(folder).name, "archive")
    res = train(ds, PARAMETER_SETS[params], seed=seed, false_alarm_rate=false_alarm_rate_target,
                feature_schema=str(F.SCHEMA_VERSION))
    recent = x[cut:]
    if all(v is not None for v in labels[cut:]):
        recent = recent[np.asarray([v == 0 for v in labels[cut:]], dtype=bool)]
    guard = retrain_guard(res.model, current, recent, max_increase=max_increase, target_rate=false_alarm_rate_target)
    return res.model, guard


def publish_model(model_file: str | os.PathLike[str], site: str, host: str, port: int = 8883, *,
                  username: str | None = None, password: str | None = None, tls: bool = True,
                  ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None,
                  timeout: float = 10.0) -> str:
    """Validate ``model_file`` and publish it retained to the site's model topic; returns the topic."""
    import paho.mqtt.client as mqtt

    path = Path(model_file)
    if not path.is_file():
        raise UserError(f"model file {path} does not exist")
    data = path.read_bytes()
    load_model(data).check_node_schema(f"model file {path}")  # raises UserError naming the problem
    try:
        topic = T.model_topic(site)
    except ValueError as e:
        raise UserError(str(e)) from None
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5)
    if username:
        client.username_pw_set(username, password)
    if tls:
        client.tls_set(ca_certs=ca_file, certfile=cert_file, keyfile=key_file)
    done = threading.Event()
    result: dict[str, Any] = {}

    def on_connect(c: mqtt.Client, u: Any, flags: Any, rc: Any, props: Any = None) -> None:
        result["connect"] = rc
        if rc.is_failure:
            done.set()

    def on_publish(c: mqtt.Client, u: Any, mid: int, rc: Any, props: Any = None) -> None:
        result["publish"] = rc
        done.set()

    client.on_connect = on_connect
    client.on_publish = on_publish
    try:
        client.connect(host, port, 30)
    except ssl.SSLError as e:
        raise UserError(f"TLS with the MQTT broker {host}:{port} failed ({e.reason or e}); check the CA and the "
                        "client certificate") from None
    except OSError as e:
        raise UserError(f"MQTT broker {host}:{port} is not reachable ({e})") from None
    client.loop_start()
    try:
        client.publish(topic, data, qos=1, retain=True)
        if not done.wait(timeout):
            raise UserError(f"MQTT broker {host}:{port} did not acknowledge the model within {timeout:.0f} s")
        rc = result.get("connect")
        if rc is not None and rc.is_failure:
            raise UserError(f"MQTT broker {host}:{port} refused the connection ({rc})")
        prc = result.get("publish")
        if prc is not None and getattr(prc, "is_failure", False):
            raise UserError(f"MQTT broker {host}:{port} refused the model on {topic} ({prc}); check the ACL")
    finally:
        client.disconnect()
        client.loop_stop()
    return topic
