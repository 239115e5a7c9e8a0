"""Per-node Raspberry Pi OS SD-card images that boot straight into the node firmware.

``flash_image`` copies a stock Raspberry Pi OS image (``.img`` or ``.img.xz``, checked against an
expected sha256), keeps the copy sparse, and writes into its FAT boot partition only - with mtools
at the partition offset read by ``sfdisk --json``, so nothing is mounted and no root is needed:

- the wheels (the project's own and its dependencies for the Pi), the node config, the systemd
  unit, a first-boot installer (``mailpulse/setup.sh``) and a manifest (``mailpulse/manifest.json``,
  no secrets) that ``inspect_image`` reads back;
- the first-boot hook: a cloud-init NoCloud seed (``user-data``, ``meta-data`` with a unique
  instance id, ``network-config`` when Wi-Fi is given, ``ds=nocloud;i=<id>`` in ``cmdline.txt``) on
  Trixie-based images, or ``firstrun.sh`` with the ``systemd.run=`` arguments on Bookworm-based ones;
- ``dtparam=spi=on`` in ``config.txt`` when the node's scorer backend is ``ice40``.

Every output is written under a temporary name and renamed when complete; any failure removes it.
Bad input (missing partitions, a full FAT partition, a bad config, a checksum mismatch, a risky
device) raises :class:`mailpulse.errors.UserError` with one sentence.

The parts:

- :mod:`.nodes`: the node config (the one type, :class:`mailpulse.config.node.NodeConfig`),
  secrets, host name, SSH keys, Wi-Fi, from a template and ``--set`` values or CSV rows;
- :mod:`.fat`: the partition table and the FAT boot partition (sfdisk, mtools);
- :mod:`.sparse`: checksums, ``.xz`` and sparse copies;
- :mod:`.wheels`: the wheels for the Pi's Python and CPU (``packaging``);
- :mod:`.boot`: the unit, the root file system, the first-boot files;
- :mod:`.flash`: writing one image or a batch;
- :mod:`.inspection`: what is on an image;
- :mod:`.devices`: the checks before writing a card, and writing it.
"""

from .boot import (
    DEFAULT_SERVICE_USER,
    DEFAULT_UNIT,
    DEFAULT_VENV,
    FIRSTBOOT_DIR,
    FIRSTRUN_ARGS,
    INIT_CHOICES,
    InitKind,
    RootInfo,
    UnitInfo,
    detect_init,
    edit_cmdline,
    enable_spi,
    instance_id,
    probe_root,
    read_unit,
    render_firstboot,
)
from .devices import (
    MAX_SD_BYTES,
    DeviceInfo,
    assess_device,
    check_device,
    describe_device,
    disk_info_from_sysfs,
    write_to_device,
)
from .fat import FAT_DIR, FatPartition, Partition, boot_and_root, device_bytes, read_partitions
from .flash import CONFIG_CHECK, PYTHON_BY_INIT, FlashResult, customise, flash_batch, flash_image
from .inspection import format_inspect, inspect_image
from .nodes import (
    CONFIG_ALIASES,
    DEFAULT_ADMIN_USER,
    IMAGE_FIELDS,
    PI_CONFIG,
    PI_SECRETS,
    NodeSpec,
    Wifi,
    bundle_files,
    dump_toml,
    make_node,
    read_nodes_csv,
    read_secrets_file,
    read_text,
    validate_node_config,
    wpa_psk,
)
from .sparse import (
    allocated_bytes,
    data_extents,
    decompress_xz,
    expected_sha256,
    materialise,
    sha256_file,
    sparse_copy,
    verify_checksum,
)
from .wheels import (
    NODE_EXTRA,
    PIP_PLATFORMS,
    Target,
    Wheels,
    build_project_wheel,
    check_wheels,
    download_deps,
    gather_wheels,
    project_requirements,
    python_allowed,
    wheel_fits,
)

__all__ = [
    "CONFIG_ALIASES", "CONFIG_CHECK", "DEFAULT_ADMIN_USER", "DEFAULT_SERVICE_USER", "DEFAULT_UNIT", "DEFAULT_VENV",
    "FAT_DIR", "FIRSTBOOT_DIR", "FIRSTRUN_ARGS", "IMAGE_FIELDS", "INIT_CHOICES", "MAX_SD_BYTES", "NODE_EXTRA",
    "PIP_PLATFORMS", "PI_CONFIG", "PI_SECRETS", "PYTHON_BY_INIT", "DeviceInfo", "FatPartition", "FlashResult",
    "InitKind", "NodeSpec", "Partition", "RootInfo", "Target", "UnitInfo", "Wheels", "Wifi", "allocated_bytes",
    "assess_device", "boot_and_root", "build_project_wheel", "bundle_files", "check_device", "check_wheels",
    "customise", "data_extents", "decompress_xz", "describe_device", "detect_init", "device_bytes",
    "disk_info_from_sysfs", "download_deps", "dump_toml", "edit_cmdline", "enable_spi", "expected_sha256",
    "flash_batch", "flash_image", "format_inspect", "gather_wheels", "inspect_image", "instance_id", "make_node",
    "materialise", "probe_root", "project_requirements", "python_allowed", "read_nodes_csv", "read_partitions",
    "read_secrets_file", "read_text", "read_unit", "render_firstboot", "sha256_file", "sparse_copy",
    "validate_node_config", "verify_checksum", "wheel_fits", "wpa_psk", "write_to_device",
]
