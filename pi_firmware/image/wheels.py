"""The wheels a card carries: the project's own and its dependencies, for the Pi's Python and CPU.

Wheel tags, ``Requires-Python`` and ``Requires-Dist`` are read with ``packaging`` (the ``image``
extra: ``pip install 'mailpulse[image]'``), the same library pip uses, so a wheel is accepted
exactly when pip on the Pi would install it.
"""

from __future__ import annotations

import dataclasses
import functools
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from email.parser import Parser
from pathlib import Path
from typing import TYPE_CHECKING

from mailpulse.errors import UserError

if TYPE_CHECKING:
    from packaging.requirements import Requirement
    from packaging.tags import Tag

__all__ = ["GLIBC", "NODE_EXTRA", "PIP_PLATFORMS", "Target", "Wheels", "build_project_wheel", "check_wheels",
           "download_deps", "gather_wheels", "need_image_extra", "project_requirements", "python_allowed", "wheel_fits"]

#: the extra of the project wheel that the node installs
NODE_EXTRA = "node"
#: the pip platform tags ``--download-deps`` asks for, per CPU architecture
PIP_PLATFORMS: dict[str, tuple[str, ...]] = {
    "aarch64": ("manylinux2014_aarch64", "manylinux_2_28_aarch64", "manylinux_2_34_aarch64", "linux_aarch64"),
    "armv7l": ("manylinux2014_armv7l", "manylinux_2_31_armv7l", "linux_armv7l"),
}
#: glibc of Raspberry Pi OS Bookworm (Trixie has 2.41): a ``manylinux_2_X`` wheel is accepted up to this
GLIBC = (2, 36)


def need_image_extra() -> None:
    """:class:`UserError` naming the ``image`` extra when its libraries are not installed."""
    missing = []
    for module, dist in (("packaging", "packaging"), ("tomli_w", "tomli-w")):
        try:
            __import__(module)
        except ImportError:
            missing.append(dist)
    if missing:
        raise UserError(f"mailpulse image flash needs {' and '.join(missing)}: pip install 'mailpulse[image]'")


@dataclasses.dataclass(frozen=True)
class Target:
    """What the Pi runs: Python ``major.minor`` and the CPU architecture (``aarch64`` or ``armv7l``)."""

    python: str
    arch: str

    @property
    def cp(self) -> str:
        return "cp" + "".join(self.python.split(".")[:2])

    @property
    def version(self) -> tuple[int, int]:
        major, minor = self.python.split(".")[:2]
        return int(major), int(minor)


@functools.lru_cache(maxsize=16)
def _tags(target: Target) -> frozenset[Tag]:
    """Every wheel tag pip on the target accepts (CPython, its ABI and abi3, manylinux up to :data:`GLIBC`)."""
    from packaging import tags

    plats = [f"manylinux_{GLIBC[0]}_{minor}_{target.arch}" for minor in range(GLIBC[1], 4, -1)]
    plats += [f"manylinux2014_{target.arch}", f"linux_{target.arch}"]
    return frozenset([*tags.cpython_tags(target.version, [target.cp], plats),
                      *tags.compatible_tags(target.version, target.cp, plats)])


def _parse(filename: str) -> tuple[str, str, frozenset[Tag]]:
    """(canonical name, version, tags) of a wheel file name."""
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    try:
        name, version, _, wheel_tags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        raise UserError(f"{filename} is not a wheel file name (name-version-python-abi-platform.whl)") from None
    return str(name), str(version), wheel_tags


def wheel_fits(filename: str, target: Target) -> bool:
    """Whether a wheel installs on the target (pure Python, or built for its CPython and CPU)."""
    return not _parse(filename)[2].isdisjoint(_tags(target))


def python_allowed(spec: str, version: str) -> bool:
    """Whether Python ``version`` satisfies a ``Requires-Python`` specifier (``>=3.11,<3.13``, ``~=3.11.0``)."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    from packaging.version import Version

    try:
        return SpecifierSet(spec).contains(Version(version), prereleases=True)
    except InvalidSpecifier:
        raise UserError(f"Requires-Python {spec!r} is not a version specifier") from None


def _metadata(wheel: Path) -> tuple[str, list[str]]:
    try:
        with zipfile.ZipFile(wheel) as z:
            meta_name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
            meta = Parser().parsestr(z.read(meta_name).decode())
    except (zipfile.BadZipFile, StopIteration, OSError, UnicodeDecodeError) as e:
        raise UserError(f"{wheel} is not a valid wheel: {e}") from None
    return meta.get("Requires-Python", ""), list(meta.get_all("Requires-Dist") or [])


def node_requirements(wheel: Path, target: Target | None = None) -> tuple[str, list[Requirement]]:
    """``Requires-Python`` and the requirements the node installs (the base and the ``node`` extra,
    with markers evaluated for the target when it is given)."""
    from packaging.requirements import InvalidRequirement, Requirement

    requires_python, lines = _metadata(wheel)
    env = {"extra": NODE_EXTRA}
    if target is not None:
        env |= {"python_version": ".".join(map(str, target.version)), "python_full_version": f"{target.python}.0",
                "platform_machine": target.arch, "sys_platform": "linux", "platform_system": "Linux",
                "os_name": "posix", "implementation_name": "cpython", "platform_python_implementation": "CPython"}
    out = []
    for line in lines:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            raise UserError(f"{wheel.name} has a bad Requires-Dist: {line!r}") from None
        if req.marker is None or req.marker.evaluate(env):
            out.append(req)
    return requires_python, out


def project_requirements(wheel: Path, target: Target | None = None) -> tuple[str, list[str]]:
    """``Requires-Python`` and the (canonical) names of the distributions the node needs."""
    from packaging.utils import canonicalize_name

    requires_python, reqs = node_requirements(wheel, target)
    return requires_python, [str(canonicalize_name(r.name)) for r in reqs]


def _unmet(reqs: Iterable[Requirement], wheels: Iterable[str], target: Target) -> list[Requirement]:
    """The requirements no wheel (by file name) satisfies on the target, by name and version."""
    from packaging.utils import canonicalize_name

    have: dict[str, list[str]] = {}
    for filename in wheels:
        name, version, _ = _parse(filename)
        if wheel_fits(filename, target):
            have.setdefault(name, []).append(version)
    return [r for r in reqs if not any(r.specifier.contains(v, prereleases=True)
                                       for v in have.get(str(canonicalize_name(r.name)), []))]


def _project(wheels: Sequence[Path]) -> list[Path]:
    return [w for w in wheels if _parse(w.name)[0] == "mailpulse"]


def check_wheels(wheels: Sequence[Path], target: Target) -> Path:
    """Check that the wheels install offline on the target; return the project wheel.

    Raises
    ------
    UserError
        No (or two) ``mailpulse`` wheels, a Python the project does not support, or a dependency
        with no wheel of a fitting version for the target's Python and CPU.
    """
    need_image_extra()
    project = _project(wheels)
    if len(project) != 1:
        raise UserError(f"expected exactly one mailpulse-*.whl among the wheels, found {len(project)}")
    requires_python, reqs = node_requirements(project[0], target)
    if requires_python and not python_allowed(requires_python, target.python):
        raise UserError(f"{project[0].name} requires Python {requires_python} but the image runs Python "
                        f"{target.python} (set --pi-python if the image was detected wrongly)")
    missing = _unmet(reqs, (w.name for w in wheels), target)
    if missing:
        raise UserError(
            f"no wheel of {', '.join(r.name.lower() for r in missing)} for the Pi (CPython {target.python}, "
            f"{target.arch}) among the wheels: add them with --wheels DIR or fetch them with --download-deps")
    return project[0]


def build_project_wheel(dest: Path, source: Path | None = None) -> Path:
    """Build the project's wheel (``pip wheel --no-deps``) from its source tree into ``dest``."""
    src = source or Path(__file__).resolve().parents[2]
    if not (src / "pyproject.toml").is_file():
        raise UserError(f"cannot build the project wheel: {src} is not the mailpulse source tree (give the wheels with "
                        "--wheels DIR)")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dest), str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    built = sorted(dest.glob("mailpulse-*.whl"))
    if proc.returncode != 0 or not built:
        raise UserError(f"building the project wheel failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    return built[-1]


def download_deps(dest: Path, requirements: Sequence[str], target: Target) -> list[Path]:
    """Fetch the dependency wheels for the Pi from PyPI (``pip download --only-binary=:all:``)."""
    plats = PIP_PLATFORMS.get(target.arch)
    if not plats:
        raise UserError(f"--download-deps knows no pip platform for {target.arch}")
    before = set(dest.glob("*.whl"))
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--implementation", "cp",
           "--python-version", target.python, "--abi", target.cp, "--abi", "abi3", "--abi", "none", "-d", str(dest)]
    for p in plats:
        cmd += ["--platform", p]
    proc = subprocess.run([*cmd, *requirements], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise UserError(f"pip could not download wheels of {', '.join(requirements)} for CPython {target.python} "
                        f"{target.arch}: {last[0]}")
    return sorted(set(dest.glob("*.whl")) - before)


@dataclasses.dataclass
class Wheels:
    """The wheels to put on the cards: given (``--wheels DIR``) and/or the project wheel built from
    source; with ``download``, the dependencies missing for a target are fetched from PyPI the first
    time that target (Python, CPU) is seen, so a batch downloads once."""

    paths: list[Path]
    download: bool = False
    workdir: tempfile.TemporaryDirectory[str] | None = None
    _fetched: dict[Target, list[Path]] = dataclasses.field(default_factory=dict)

    def resolve(self, target: Target) -> list[Path]:
        if not self.download:
            return list(self.paths)
        if target not in self._fetched:
            project = _project(self.paths)
            if len(project) != 1:
                return list(self.paths)  # check_wheels names the problem
            todo = _unmet(node_requirements(project[0], target)[1], (p.name for p in self.paths), target)
            got: list[Path] = []
            if todo:
                assert self.workdir is not None
                dest = Path(self.workdir.name) / f"{target.cp}-{target.arch}"
                dest.mkdir(exist_ok=True)
                got = download_deps(dest, [f"{r.name}{r.specifier}" for r in todo], target)
            self._fetched[target] = got
        return [*self.paths, *self._fetched[target]]

    def cleanup(self) -> None:
        if self.workdir is not None:
            self.workdir.cleanup()


def gather_wheels(wheels_dir: Path | None, *, download: bool = False, project_source: Path | None = None) -> Wheels:
    """The given wheels (``--wheels DIR``), plus the project wheel built from source when the
    directory has none; ``download`` fetches missing dependencies per target (see :class:`Wheels`)."""
    need_image_extra()
    paths: list[Path] = []
    if wheels_dir is not None:
        if not wheels_dir.is_dir():
            raise UserError(f"the wheels folder {wheels_dir} does not exist")
        paths = sorted(wheels_dir.glob("*.whl"))
    work = tempfile.TemporaryDirectory(prefix="mailpulse-wheels-")
    try:
        if not _project(paths):
            paths.append(build_project_wheel(Path(work.name), project_source))
    except BaseException:
        work.cleanup()
        raise
    return Wheels(paths, download, work)
