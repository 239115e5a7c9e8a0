"""Register-level client of one scorer core, over any :class:`~mailpulse.host_bridge.bus.RegisterBus`.

This is the one place that knows the register protocol of the core: identify it, load a model
into the shadow bank and commit it, set the threshold, push one sample through the ``PUSH``
registers, read counters.  The PYNQ driver, the iCE40 backend, the simulated RTL and the model
backend all use it, so the protocol is written once.  Every address comes from
:class:`mailpulse.hdl.regmap.RegisterMap`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from mailpulse.hdl.params import PARAMETER_SETS, CoreParams
from mailpulse.hdl.reference import NO_ROUTE, CoreConfig, model_writes
from mailpulse.hdl.regmap import CORE_ID, CORE_VERSION, RegisterMap

from mailpulse.errors import UserError

from .bus import RegisterBus, group_bursts


class CoreMismatchError(UserError):
    """The core on the other side is not the one expected (ID, version or parameters)."""


class CoreTimeoutError(RuntimeError):
    """The core did not reach the expected state in time (a hung bus or an unconfigured FPGA)."""


@dataclass(frozen=True)
class CoreIdentity:
    """What the ID/VERSION/PARAMS/WIDTHS/LATENCY registers say about a core."""

    core_id: int
    version: tuple[int, int, int]
    params: CoreParams
    latency: int

    def describe(self) -> str:
        p = self.params
        v = ".".join(str(i) for i in self.version)
        return f"mailpulse scorer v{v}, set {p.name}: D={p.d} K={p.k} B={p.b}, latency {self.latency} cycles"


@dataclass(frozen=True)
class Counters:
    """The core's sample counters (both wrap at 2**32)."""

    samples: int
    anomalies: int


def named_params(d: int, k: int, b: int, r: int, source: str, **widths: int) -> CoreParams:
    """The :class:`CoreParams` of a core with D/K/B/R (and ``widths``) as a register or a
    description reports them, named after the matching parameter set (``zynq``, ``zynq-r16``),
    else ``custom``: the one place that turns reported numbers into parameters.

    Raises :class:`CoreMismatchError` (one sentence starting with ``source``) if they describe no
    legal core (for example an unconfigured FPGA that reads all ones)."""
    name = "custom"
    for pname, ps in PARAMETER_SETS.items():
        if (ps.d, ps.k, ps.b) == (d, k, b):
            name = pname if ps.r == r else f"{pname}-r{r}"
    try:
        return CoreParams(name, d=d, k=k, b=b, r=r, **widths)
    except ValueError as e:
        raise CoreMismatchError(f"{source} parameters that no mailpulse core has ({e})") from None


def params_from_registers(params_reg: int, widths_reg: int, regmap_cls: type[RegisterMap] = RegisterMap
                          ) -> CoreParams:
    """Rebuild :class:`CoreParams` from raw ``PARAMS`` and ``WIDTHS`` values.

    The name is the matching named parameter set, else ``custom``.  Raises
    :class:`CoreMismatchError` if the values describe no legal core (for example an unconfigured
    FPGA that reads all ones).
    """
    probe = regmap_cls(PARAMETER_SETS["small"])
    pr, wr = probe["PARAMS"], probe["WIDTHS"]
    d, k = pr.get("D", params_reg), pr.get("K", params_reg)
    b = 1 << pr.get("B_LOG2", params_reg)
    routes_log2 = pr.get("ROUTES_LOG2", params_reg)
    r = 1 << (routes_log2 - 1) if routes_log2 else 0
    params = named_params(d, k, b, r, "the core reports", in_bits=wr.get("IN_BITS", widths_reg),
                          table_bits=wr.get("TABLE_BITS", widths_reg), weight_bits=pr.get("WEIGHT_BITS", params_reg),
                          shift_bits=pr.get("SHIFT_BITS", params_reg))
    if (wr.get("PROJ_BITS", widths_reg), wr.get("SCORE_BITS", widths_reg)) != (
            params.proj_bits, params.score_bits):
        raise CoreMismatchError("the core's WIDTHS register disagrees with its PARAMS register")
    return params


class CoreClient:
    """Typed register protocol of the scorer over a :class:`RegisterBus`.

    Parameters
    ----------
    bus : RegisterBus
        Register access to the core.
    params : CoreParams
        The parameters the host expects; :meth:`identify` checks them against the core.
    poll_timeout : float
        Seconds to wait for a commit or a pushed result before :class:`CoreTimeoutError`.
    routes_optional : bool
        A host that expects no route intervals (``params.r == 0``) also accepts a core that has
        them (the HX8K and ECP5 SPI bitstreams carry 16; a node configured for ``full`` or
        ``zynq`` runs on them).  Only for a host that talks to the core through registers alone:
        such a core's register map is that of the same core without intervals plus the route
        registers and fields, and its intervals stay off (``ADAPT.ROUTES`` resets to 0 and this
        host never sets it), so it scores the same; its stream beats are wider.
    """

    def __init__(self, bus: RegisterBus, params: CoreParams, *, poll_timeout: float = 2.0,
                 routes_optional: bool = False) -> None:
        self.bus = bus
        self.params = params
        self.routes_optional = routes_optional
        self.regmap = RegisterMap(params)
        self.poll_timeout = poll_timeout
        r = self.regmap
        self._feature = r["FEATURE"].address(0)
        self._tag, self._push = r["TAG"].address(), r["PUSH"].address()
        self._res = [r["RESULT_SCORE"].address(), r["RESULT_TAG"].address(), r["RESULT_INFO"].address()]
        self._res_contiguous = self._res == [self._res[0] + 4 * i for i in range(3)]
        self._status = r["STATUS"]
        self._info = r["RESULT_INFO"]
        self._anomaly_lsb = self._info.field("ANOMALY").lsb
        self._argmax_lsb = self._info.field("ARGMAX").lsb
        self._argmax_mask = (1 << self._info.field("ARGMAX").width) - 1
        self._route = r["ROUTE"] if params.r else None
        self._last_tag: int | None = None
        #: True when the transport guarantees that a read started after a PUSH returns its result
        #: (see :meth:`push_many`); False (poll STATUS every time) is always safe.
        self.results_settle = False

    # -- identification -------------------------------------------------------------------
    def identify(self, *, check: bool = True) -> CoreIdentity:
        """Read ID, VERSION, PARAMS, WIDTHS and LATENCY.

        With ``check`` (the default) raise :class:`CoreMismatchError` unless the ID is 'MPLS', the
        major version equals this host's, and the parameters equal the expected ones (with
        ``routes_optional``, a core with route intervals also passes for a host that expects none).
        """
        r = self.regmap
        core_id = self.bus.read(r["ID"].address())
        if check and core_id != CORE_ID:
            raise CoreMismatchError(f"the core's ID register reads 0x{core_id:08X}, not 0x{CORE_ID:08X} ('MPLS'): "
                                    "no mailpulse scorer answers (wrong bitstream, or the FPGA is not configured)")
        ver = self.bus.read(r["VERSION"].address())
        vr = r["VERSION"]
        version = (vr.get("MAJOR", ver), vr.get("MINOR", ver), vr.get("PATCH", ver))
        if check and version[0] != CORE_VERSION[0]:
            raise CoreMismatchError(f"the core is version {version}, this host speaks major version {CORE_VERSION[0]}")
        params = params_from_registers(self.bus.read(r["PARAMS"].address()), self.bus.read(r["WIDTHS"].address()))
        routes_fit = params.r == self.params.r or (self.routes_optional and not self.params.r)
        if check and ((params.d, params.k, params.b) != (self.params.d, self.params.k, self.params.b)
                      or not routes_fit):
            raise CoreMismatchError(
                f"the core has D={params.d} K={params.k} B={params.b} R={params.r}, the host expects set "
                f"{self.params.name} (D={self.params.d} K={self.params.k} B={self.params.b} R={self.params.r})")
        latency = r["LATENCY"].get("CYCLES", self.bus.read(r["LATENCY"].address()))
        return CoreIdentity(core_id, version, params, latency)

    # -- status and control ---------------------------------------------------------------
    def status(self) -> dict[str, int]:
        """The ``STATUS`` fields by name."""
        v = self.bus.read(self._status.address())
        return {f.name: self._status.get(f.name, v) for f in self._status.fields}

    def ctrl(self, **strobes: bool) -> None:
        """Write ``CTRL`` with the named strobe bits (``COMMIT=True`` ...)."""
        reg = self.regmap["CTRL"]
        value = 0
        for name, on in strobes.items():
            if on:
                value |= 1 << reg.field(name.upper()).lsb
        self.bus.write(reg.address(), value)

    def _wait_status(self, what: str, done: str, busy: str | None = None) -> None:
        deadline = time.monotonic() + self.poll_timeout
        while True:
            st = self.status()
            if st[done] == (0 if done == "COMMIT_PENDING" else 1) and (busy is None or st[busy] == 0):
                return
            if time.monotonic() > deadline:
                raise CoreTimeoutError(f"the core did not finish {what} within {self.poll_timeout} s (STATUS {st})")

    def clear_bus_error(self) -> None:
        self.ctrl(CLEAR_ERROR=True)

    # -- model ----------------------------------------------------------------------------
    def load_config(self, cfg: CoreConfig, *, commit: bool = True, max_burst: int = 1 << 16) -> None:
        """Write a whole model into the shadow bank (bursts of consecutive registers), then commit.

        Raises :class:`CoreMismatchError` if the model does not fit the core's parameters; the
        core is not touched in that case.
        """
        try:
            cfg.validate(self.params)
        except ValueError as e:
            raise CoreMismatchError(f"the model does not fit the core: {e}") from None
        for start, values in group_bursts(model_writes(self.regmap, cfg), max_words=max_burst):
            if len(values) == 1:
                self.bus.write(start, values[0])
            else:
                self.bus.write_burst(start, values)
        if commit:
            self.commit()

    def commit(self) -> None:
        """Swap the shadow and active banks (``CTRL.COMMIT``) and wait until the swap happened."""
        self.ctrl(COMMIT=True)
        self._wait_status("the model commit", "COMMIT_PENDING")

    def set_threshold(self, threshold: int, *, commit: bool = True) -> None:
        """Write the shadow threshold and (by default) make it active alone (``COMMIT_THRESHOLD``)."""
        if not 0 <= int(threshold) <= 0xFFFFFFFF:
            raise UserError(f"threshold {threshold} is outside 0..2**32-1")
        self.bus.write(self.regmap["THRESHOLD"].address(), int(threshold))
        if commit:
            self.ctrl(COMMIT_THRESHOLD=True)

    def thresholds(self) -> tuple[int, int]:
        """(shadow, active) thresholds."""
        return (self.bus.read(self.regmap["THRESHOLD"].address()),
                self.bus.read(self.regmap["THRESHOLD_ACTIVE"].address()))

    def threshold_accumulator(self) -> int:
        """The active threshold with its fraction, as the adaptive threshold keeps it:
        ``THRESHOLD_ACTIVE * 2**ADAPT_FRAC + THRESHOLD_FRAC`` (the accumulator of
        :func:`mailpulse.hdl.reference.adaptive_flags`; ``set_threshold`` seeds it).  Read between
        samples: the two reads are not one atomic access."""
        frac = self.regmap["THRESHOLD_FRAC"]
        return (self.bus.read(self.regmap["THRESHOLD_ACTIVE"].address()) << frac.field("FRAC").width) | (
            self.bus.read(frac.address()))

    # -- samples --------------------------------------------------------------------------
    def score_one(self, x: npt.ArrayLike, tag: int = 0) -> tuple[int, int, int, int]:
        """Score one sample through ``FEATURE``/``TAG``/``PUSH``; returns (score, anomaly, argmax, tag)."""
        s, a, k, t = self._push_one(self._check_sample(x, tag), int(tag))[:4]
        return s, a, k, t

    def _check_sample(self, x: npt.ArrayLike, tag: int) -> list[int]:
        """The FEATURE register values of one sample (``ValueError`` for a bad sample or tag)."""
        xs = np.asarray(x, dtype=np.int64).reshape(-1)
        p = self.params
        if xs.shape[0] != p.d:
            raise ValueError(f"a sample has {p.d} features, not {xs.shape[0]}")
        if xs.min() < p.in_min or xs.max() > p.in_max:
            raise ValueError(f"sample features must be signed {p.in_bits}-bit integers")
        if not 0 <= int(tag) <= 0xFFFFFFFF:
            raise ValueError("a tag is an unsigned 32-bit integer")
        return [int(v) & 0xFFFFFFFF for v in xs]

    def score_event(self, x: npt.ArrayLike, tag: int, route: int, latency: int) -> tuple[int, ...]:
        """Score one sample with its route event (a core with routes): ``ROUTE`` is written before
        the PUSH; returns (score, anomaly, argmax, tag, below, above).  ``ValueError`` (one
        sentence) for a route id or latency outside 0..65535 or a core without routes."""
        self._check_event(route, latency)
        words = self._check_sample(x, tag)
        return self._push_one(words, int(tag), self.regmap["ROUTE"].value(ID=int(route), LATENCY=int(latency)))

    def _check_event(self, route: int, latency: int) -> None:
        if not self.params.r:
            raise ValueError(f"the core ({self.params.name}) has no route intervals (R = 0)")
        for what, v in (("a route id", route), ("a latency", latency)):
            if not isinstance(v, int | np.integer) or not 0 <= int(v) <= 0xFFFF:
                raise ValueError(f"{what} is an integer in 0..65535, not {v!r}")

    def route_bounds(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """The (lower, upper) bound accumulators of every route, units of ``2**-ADAPT_FRAC`` of a
        Q8.8 latency (``ROUTE_BOUND``; read between events: not one atomic access)."""
        if not self.params.r:
            raise ValueError(f"the core ({self.params.name}) has no route intervals (R = 0)")
        reg = self.regmap["ROUTE_BOUND"]
        v = np.asarray(self.bus.read_burst(reg.address(), reg.count), dtype=np.int64)
        return v[0::2].copy(), v[1::2].copy()

    def seed_route(self, route: int, lower: int | None = None, upper: int | None = None) -> None:
        """Seed route ``route``'s lower and/or upper bound accumulator (``ROUTE_BOUND``; the core
        caps a seed at ``0xFFFF << ADAPT_FRAC``).  ``ValueError`` (one sentence) for a route
        outside 0..R-1 or a value outside the register's field."""
        if not self.params.r:
            raise ValueError(f"the core ({self.params.name}) has no route intervals (R = 0)")
        reg = self.regmap["ROUTE_BOUND"]
        if not isinstance(route, int | np.integer) or not 0 <= int(route) < self.params.r:
            raise ValueError(f"route {route!r} is outside 0..{self.params.r - 1}")
        top = (1 << reg.field("BOUND").width) - 1
        for side, v in ((0, lower), (1, upper)):
            if v is None:
                continue
            if not isinstance(v, int | np.integer) or not 0 <= int(v) <= top:
                raise ValueError(f"a route bound accumulator is an integer in 0..{top}, not {v!r}")
            self.bus.write(reg.address(2 * int(route) + side), int(v))

    def push_many(self, x: npt.NDArray[np.int64], tags: npt.NDArray[np.int64],
                  events: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]] | None = None) -> npt.NDArray[np.int64]:
        """Score validated samples one after the other through ``PUSH``; (N, 4) score/anomaly/argmax/tag,
        or with ``events`` (validated route ids and latencies; a core with routes) (N, 6) with
        below/above, the ``ROUTE`` register written before each PUSH.

        Four bus transactions per sample (features, tag + push, ``STATUS`` poll, results).  With
        :attr:`results_settle` (set by a transport whose next read cannot start before the
        pipeline has drained, like the SPI bridge) the poll is skipped while ``RESULT_TAG`` shows
        the new tag; if two consecutive tags are equal (a stale result could not be told apart)
        or the tag does not match, ``STATUS.RESULT_VALID`` is polled and the results read again.
        """
        out = np.empty((len(x), 4 if events is None else 6), dtype=np.int64)
        words = (np.asarray(x, dtype=np.int64) & 0xFFFFFFFF).tolist()
        tag_list = np.asarray(tags, dtype=np.int64).tolist()
        route_words: list[int | None] = [None] * len(words)
        if events is not None:
            if self._route is None:
                raise ValueError(f"the core ({self.params.name}) has no route intervals (R = 0)")
            ids, lat = (np.asarray(e, dtype=np.int64) for e in events)
            route_words = ((ids << self._route.field("ID").lsb) | (lat << self._route.field("LATENCY").lsb)).tolist()
        for i in range(len(words)):
            out[i] = self._push_one(words[i], tag_list[i], route_words[i])
        return out

    def _push_one(self, words: list[int], tag: int, route_word: int | None = None) -> tuple[int, ...]:
        self.bus.write_burst(self._feature, words)
        if self._route is not None:   # a core with routes: every PUSH sends ROUTE (no event: NO_ROUTE)
            self.bus.write(self._route.address(),
                           NO_ROUTE << self._route.field("ID").lsb if route_word is None else route_word)
        if self._push == self._tag + 4:
            self.bus.write_burst(self._tag, [tag, 1])
        else:  # pragma: no cover - the declared map keeps them adjacent
            self.bus.write(self._tag, tag)
            self.bus.write(self._push, 1)
        fresh = self.results_settle and tag != self._last_tag
        self._last_tag = tag
        for attempt in range(2):
            if attempt or not fresh:
                self._wait_status("a pushed sample", "RESULT_VALID", busy="PUSH_PENDING")
            if self._res_contiguous:
                score, rtag, info = self.bus.read_burst(self._res[0], 3)
            else:  # pragma: no cover
                score, rtag, info = (self.bus.read(a) for a in self._res)
            if rtag == tag:
                break
        out = (score, (info >> self._anomaly_lsb) & 1, (info >> self._argmax_lsb) & self._argmax_mask, rtag)
        if route_word is None:
            return out
        return (*out, self._info.get("BELOW", info), self._info.get("ABOVE", info))

    def counters(self) -> Counters:
        r = self.regmap
        return Counters(self.bus.read(r["SAMPLES"].address()), self.bus.read(r["ANOMALIES"].address()))

    def clear_counters(self) -> None:
        self.ctrl(CLEAR_COUNTERS=True)
