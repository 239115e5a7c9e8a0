#!/bin/sh
# mailpulse first-boot installer.  `mailpulse image flash` writes it to <boot>/mailpulse/setup.sh;
# cloud-init (runcmd) or firstrun.sh (systemd.run=) runs it once, as root, on the node's first boot.
#
# Order matters: the node config and its secrets leave the FAT partition first, so a failed install
# never leaves credentials on a card anyone can read; a failure leaves FAILED.log next to this
# script (readable from any PC) and exits non-zero.  `--start` also starts the service (cloud-init
# runs this in the live system; firstrun.sh reboots right after).
set -u
# MAILPULSE_FIRSTBOOT_ROOT: a directory that stands in for / (the tests run the script there); unset on the Pi
R=${MAILPULSE_FIRSTBOOT_ROOT:-}
SRC=$(cd "$(dirname "$0")" && pwd)          # <boot>/mailpulse
BOOT=$(dirname "$SRC")                      # /boot/firmware (Bookworm, Trixie) or /boot
SERVICE_USER=@@SERVICE_USER@@
SERVICE_HOME=@@SERVICE_HOME@@
VENV=@@VENV@@
UNIT=@@UNIT_NAME@@
BACKEND=@@BACKEND@@
REQUIREMENT=@@REQUIREMENT@@
LINKS=@@LINKS@@                             # the unit's mailpulse paths outside the venv
ETC_FILES=@@ETC_FILES@@                     # the node bundle's TLS files (CA, client certificate and key)
LOG=$R/var/log/mailpulse-firstboot.log

exec >>"$LOG" 2>&1
echo "mailpulse first boot: start $(date -u +%Y-%m-%dT%H:%M:%SZ)"

fail() {
    echo "mailpulse first boot: FAILED: $*"
    cp "$LOG" "$SRC/FAILED.log" 2>/dev/null
    sync
    exit 1
}

# 1. the unprivileged service user (the unit's User=)
if ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
    useradd --system --home-dir "$R$SERVICE_HOME" --create-home --shell /usr/sbin/nologin "$SERVICE_USER" \
        || fail "cannot create the service user $SERVICE_USER"
fi
if [ "$BACKEND" = ice40 ]; then
    # spidev and gpiochip nodes belong to these groups on Raspberry Pi OS
    for g in spi gpio; do
        if getent group "$g" >/dev/null; then usermod -a -G "$g" "$SERVICE_USER"; fi
    done
fi

# 2. the node config, its secrets and its TLS files: /etc/mailpulse/, 0600, owned by the service
#    user; then off the FAT
install -d -m 0750 -o root -g "$SERVICE_USER" "$R/etc/mailpulse" || fail "cannot create /etc/mailpulse"
for f in node.toml secrets.toml $ETC_FILES; do
    if [ -f "$SRC/$f" ]; then
        install -m 0600 -o "$SERVICE_USER" -g "$SERVICE_USER" "$SRC/$f" "$R/etc/mailpulse/$f" \
            || fail "cannot install /etc/mailpulse/$f"
        rm -f "$SRC/$f"
    fi
done
# cloud-init's network-config holds the Wi-Fi passphrase; cloud-init has rendered it by now
rm -f "$BOOT/network-config"
sync

# 3. the virtual environment and the wheels, offline, from the boot partition
if [ ! -x "$R$VENV/bin/python" ]; then
    python3 -m venv "$R$VENV" || fail "python3 -m venv $VENV failed (is python3-venv installed?)"
fi
"$R$VENV/bin/python" -m pip install --disable-pip-version-check --no-index --find-links "$SRC/wheels" "$REQUIREMENT" \
    || fail "pip could not install $REQUIREMENT from $SRC/wheels"

for link in $LINKS; do
    install -d "$R$(dirname "$link")"
    ln -sfn "$VENV/bin/mailpulse" "$R$link" || fail "cannot link $link to the venv"
done

# 4. the systemd unit
install -d "$R/etc/systemd/system"
install -m 0644 "$SRC/$UNIT" "$R/etc/systemd/system/$UNIT" || fail "cannot install the unit $UNIT"
systemctl daemon-reload
systemctl enable "$UNIT" || fail "systemctl enable $UNIT failed"
# cloud-init runs this in the running system (--start); firstrun.sh reboots right after instead
if [ "${1:-}" = "--start" ]; then systemctl start --no-block "$UNIT"; fi

# 5. done: free the FAT partition, leave a marker that `mailpulse image inspect` shows
rm -rf "$SRC/wheels" "$SRC/$UNIT" "$SRC/FAILED.log"
date -u +%Y-%m-%dT%H:%M:%SZ >"$SRC/INSTALLED"
sync
echo "mailpulse first boot: done $(date -u +%Y-%m-%dT%H:%M:%SZ)"
exit 0
