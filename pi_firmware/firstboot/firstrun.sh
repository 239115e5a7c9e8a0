#!/bin/bash
# mailpulse first boot for Bookworm-based Raspberry Pi OS images (the Raspberry Pi Imager mechanism):
# cmdline.txt carries `systemd.run=/boot/firstrun.sh systemd.run_success_action=reboot
# systemd.unit=kernel-command-line.target`; this script runs once, as root, then removes itself and
# those arguments, and the Pi reboots into the configured system.  Written by `mailpulse image flash`.
set +e

BOOT=/boot/firmware
[ -f "$BOOT/cmdline.txt" ] || BOOT=/boot
NEW_HOSTNAME=@@HOSTNAME@@
ADMIN_USER=@@ADMIN_USER@@
SSH_KEYS=@@SSH_KEYS@@
WIFI_SSID=@@WIFI_SSID@@
WIFI_PSK=@@WIFI_PSK@@  # the 64-hex pre-shared key, not the passphrase
WIFI_COUNTRY=@@WIFI_COUNTRY@@
IMAGER=/usr/lib/raspberrypi-sys-mods/imager_custom

# hostname
CURRENT_HOSTNAME=$(tr -d " \t\n\r" </etc/hostname)
if [ -x "$IMAGER" ]; then
    "$IMAGER" set_hostname "$NEW_HOSTNAME"
else
    echo "$NEW_HOSTNAME" >/etc/hostname
    sed -i "s/127.0.1.1.*$CURRENT_HOSTNAME/127.0.1.1\t$NEW_HOSTNAME/g" /etc/hosts
fi

# administrator: key-only SSH login, password locked
if [ -n "$SSH_KEYS" ]; then
    if [ -x /usr/lib/userconf-pi/userconf ]; then
        /usr/lib/userconf-pi/userconf "$ADMIN_USER" '!'
    elif ! id -u "$ADMIN_USER" >/dev/null 2>&1; then
        useradd --create-home --shell /bin/bash --groups sudo,adm "$ADMIN_USER"
        passwd --lock "$ADMIN_USER"
    fi
    ADMIN_HOME=$(getent passwd "$ADMIN_USER" | cut -d: -f6)
    install -d -m 0700 -o "$ADMIN_USER" -g "$ADMIN_USER" "$ADMIN_HOME/.ssh"
    printf '%s\n' "$SSH_KEYS" >"$ADMIN_HOME/.ssh/authorized_keys"
    chown "$ADMIN_USER:$ADMIN_USER" "$ADMIN_HOME/.ssh/authorized_keys"
    chmod 0600 "$ADMIN_HOME/.ssh/authorized_keys"
    echo "$ADMIN_USER ALL=(ALL) NOPASSWD: ALL" >/etc/sudoers.d/010_mailpulse-admin
    chmod 0440 /etc/sudoers.d/010_mailpulse-admin
    if [ -x "$IMAGER" ]; then "$IMAGER" enable_ssh; else systemctl enable ssh; fi
fi

# Wi-Fi
if [ -n "$WIFI_SSID" ]; then
    if [ -x "$IMAGER" ]; then
        "$IMAGER" set_wlan "$WIFI_SSID" "$WIFI_PSK" "$WIFI_COUNTRY"
    else
        CONN="/etc/NetworkManager/system-connections/mailpulse-wifi.nmconnection"
        install -d -m 0700 /etc/NetworkManager/system-connections
        cat >"$CONN" <<NMEOF
[connection]
id=mailpulse-wifi
type=wifi
autoconnect=true

[wifi]
mode=infrastructure
ssid=$WIFI_SSID

[wifi-security]
key-mgmt=wpa-psk
psk=$WIFI_PSK

[ipv4]
method=auto

[ipv6]
method=auto
NMEOF
        chmod 0600 "$CONN"
        if command -v raspi-config >/dev/null; then raspi-config nonint do_wifi_country "$WIFI_COUNTRY"; fi
        rfkill unblock wifi
        for f in /var/lib/systemd/rfkill/*:wlan; do [ -e "$f" ] && echo 0 >"$f"; done
    fi
fi

# the node firmware (its own log: /var/log/mailpulse-firstboot.log)
sh "$BOOT/mailpulse/setup.sh"

# this script holds the Wi-Fi passphrase: remove it, and the arguments that ran it
rm -f "$BOOT/firstrun.sh"
sed -i 's| systemd.run.*||g' "$BOOT/cmdline.txt"
exit 0
