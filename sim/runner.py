"""Build and run cocotb testbenches on the generated Verilog, through cocotb's runner.

One build directory per (simulator, top, parameter set, waves) under ``build/sim/cocotb/``.  A
build is reused while the Verilog and the build arguments are unchanged (a stamp file holds their
hash), and a file lock makes parallel pytest workers build each directory once.

:func:`run_cocotb` runs cocotb tests and returns their results; :func:`check_cocotb` runs them,
and when one fails re-runs just the failing ones with waveforms and raises
:class:`SimulationFailed` whose message names the waveform file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from .rtl import ROOT, TOP_MODULE, build_root, check_names, file_lock, verilog_path
from .tools import require_simulator, sim_environ

#: Verilator options for Amaranth's Verilog (its width-mismatched constants and incomplete cases
#: are harmless; other warnings must not stop the build).
VERILATOR_ARGS = ["-Wno-WIDTH", "-Wno-CASEINCOMPLETE", "-Wno-UNOPTFLAT", "-Wno-fatal", "-O3",
                  "--x-assign", "fast", "--x-initial", "fast"]
#: Extra Verilator options per top.  The SPI top is driven bit by bit from Python, so the speed of
#: its C++ model does not matter: -O0 builds it in 2/3 of the time of Verilator's default -Os.
VERILATOR_TOP_ARGS = {"axi": [], "axi_lut": [], "spi": ["-CFLAGS", "-O0"]}
TIMESCALE = ("1ns", "1ps")


class SimulationFailed(AssertionError):
    """A cocotb test failed; the message names the tests, their errors and the waveform file."""


@dataclass
class CocotbResult:
    """Outcome of one cocotb run: test names that passed and failed (with their messages)."""

    results_xml: Path
    passed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    waves: Path | None = None

    @property
    def ok(self) -> bool:
        return bool(self.passed) and not self.failed


def build_dir_for(sim: str, top: str, params_name: str, waves: bool = False) -> Path:
    return build_root() / "cocotb" / sim / f"{top}_{params_name}{'_waves' if waves else ''}"


def build(sim: str, top: str, params_name: str, *, waves: bool = False) -> Path:
    """Build ``top``/``params_name`` for ``sim`` (cached); returns the build directory."""
    check_names(top, params_name)
    require_simulator(sim)
    from cocotb_tools.runner import get_runner

    src = verilog_path(top, params_name)
    bdir = build_dir_for(sim, top, params_name, waves)
    args = VERILATOR_ARGS + VERILATOR_TOP_ARGS[top] if sim == "verilator" else []
    key = hashlib.sha256(src.read_bytes() + repr((sim, args, waves, TIMESCALE)).encode()).hexdigest()
    stamp = bdir / ".mailpulse-stamp"
    with file_lock(bdir.with_name(bdir.name + ".lock")):
        if stamp.exists() and stamp.read_text() == key:
            return bdir
        bdir.mkdir(parents=True, exist_ok=True)
        with sim_environ():
            runner = get_runner(sim)
            runner.build(sources=[src], hdl_toplevel=TOP_MODULE[top], build_dir=bdir, build_args=args,
                         timescale=TIMESCALE, waves=waves, always=True, log_file=bdir / "build.log")
        stamp.write_text(key)
    return bdir


def parse_results(path: Path) -> tuple[list[str], dict[str, str]]:
    """(passed, failed) test names from a cocotb results XML file."""
    passed: list[str] = []
    failed: dict[str, str] = {}
    if not path.exists():
        return passed, {"<simulator>": f"no results file {path}: the simulator crashed or did not start"}
    tree = ET.parse(path)
    for case in tree.iter("testcase"):
        name = case.get("name", "?")
        bad = [c for c in case if c.tag in ("failure", "error")]
        if bad:
            failed[name] = "; ".join((b.get("message") or b.text or b.tag) for b in bad)
        elif not [c for c in case if c.tag == "skipped"]:
            passed.append(name)
    return passed, failed


def run_cocotb(sim: str, top: str, params_name: str, test_module: str, *, testcase: list[str] | None = None,
               env: dict[str, str] | None = None, waves: bool = False, seed: int | None = None,
               tag: str = "run") -> CocotbResult:
    """Run the cocotb tests of ``test_module`` (a module name) on one build; never raises on failure."""
    bdir = build(sim, top, params_name, waves=waves)
    from cocotb_tools.runner import get_runner

    test_dir = bdir / "runs" / tag
    test_dir.mkdir(parents=True, exist_ok=True)
    results = test_dir / "results.xml"
    extra = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
             "MAILPULSE_SIM_SET": params_name, "MAILPULSE_SIM_TOP": top, "MAILPULSE_SIM_SIMULATOR": sim,
             "COCOTB_LOG_LEVEL": os.environ.get("COCOTB_LOG_LEVEL", "WARNING"),
             # cocotbext-axi 0.1.28 uses APIs cocotb 2.1 deprecates; the warnings drown the log
             "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    if seed is not None:
        extra["MAILPULSE_SIM_SEED"] = str(seed)
    extra.update(env or {})
    runner = get_runner(sim)
    # The runner calls sys.exit() on failing tests when it sees pytest; we read the results instead.
    saved = os.environ.pop("PYTEST_CURRENT_TEST", None)
    try:
        with sim_environ():
            runner.test(test_module=test_module, hdl_toplevel=TOP_MODULE[top], hdl_toplevel_lang="verilog",
                        build_dir=bdir, test_dir=test_dir, testcase=testcase, extra_env=extra, waves=waves,
                        seed=seed, results_xml=str(results), timescale=TIMESCALE, log_file=test_dir / "sim.log")
    except SystemExit:
        pass
    finally:
        if saved is not None:
            os.environ["PYTEST_CURRENT_TEST"] = saved
    passed, failed = parse_results(results)
    wave_file = None
    if waves:
        cands = sorted(list(test_dir.glob("*.fst")) + list(test_dir.glob("*.vcd")) + list(bdir.glob("*.fst")))
        wave_file = cands[0] if cands else None
    return CocotbResult(results, passed, failed, wave_file)


def check_cocotb(sim: str, top: str, params_name: str, test_module: str, *, testcase: list[str] | None = None,
                 env: dict[str, str] | None = None, seed: int | None = None, tag: str = "run") -> CocotbResult:
    """Run cocotb tests; on failure re-run the failing ones with waveforms and raise :class:`SimulationFailed`."""
    res = run_cocotb(sim, top, params_name, test_module, testcase=testcase, env=env, seed=seed,
                     tag=f"{tag}_{os.getpid()}")
    if res.ok:
        shutil.rmtree(res.results_xml.parent, ignore_errors=True)  # logs are kept for failures only
        return res
    names = [n for n in res.failed if not n.startswith("<")] or testcase
    again = run_cocotb(sim, top, params_name, test_module, testcase=names, env=env, waves=True, seed=seed,
                       tag=f"{tag}_{os.getpid()}_waves")
    lines = [f"{len(res.failed)} cocotb test(s) failed on {sim}, top {top}, set {params_name}"
             f" (log {res.results_xml.parent / 'sim.log'}):"]
    lines += [f"  {n}: {m}" for n, m in res.failed.items()]
    lines.append(f"waveform of the re-run: {again.waves or 'not written'} "
                 f"(re-run {'reproduced' if again.failed else 'did NOT reproduce'} the failure)")
    raise SimulationFailed("\n".join(lines))
