#!/usr/bin/env bash
# Installs the hall daemon on a hall PC (Debian): a venv under /opt/hall-daemon, the config
# under /etc/hall-daemon, state under /var/lib/hall-daemon (systemd's StateDirectory), a
# dedicated user in the dialout and lp groups, the systemd unit and a udev rules example.
# Logs go to journald (journalctl -u hall-daemon).
#
#   sudo make install            (or: sudo scripts/install.sh)
#
# Re-running upgrades the code and keeps config and state. For packaging or a dry run,
# DESTDIR=/some/dir installs the same tree under that directory and skips what touches the
# live system (apt, user creation, systemctl). HALL_NO_PIP=1 creates the venv but skips
# `pip install .` (offline tests).
set -euo pipefail
cd "$(dirname "$0")/.."
DESTDIR=${DESTDIR:-}
PREFIX=/opt/hall-daemon
CONF=/etc/hall-daemon
STATE=/var/lib/hall-daemon
USER_NAME=hall-daemon
say() { echo "install.sh: $*"; }

if [ -z "$DESTDIR" ]; then
  [ "$(id -u)" -eq 0 ] || { echo "install.sh: run as root (sudo make install)" >&2; exit 1; }
  apt-get install -y -qq --no-install-recommends python3-venv espeak-ng sox fonts-noto-cjk >/dev/null
  id "$USER_NAME" >/dev/null 2>&1 ||
    useradd --system --home-dir "$STATE" --shell /usr/sbin/nologin "$USER_NAME"
  usermod -a -G dialout,lp "$USER_NAME"
  GROUP_OPT=(-g "$USER_NAME")
else
  GROUP_OPT=()  # a staging tree: ownership is set when the package is installed
fi

install -d -m 0755 "$DESTDIR$PREFIX"
[ -x "$DESTDIR$PREFIX/venv/bin/python" ] || python3 -m venv "$DESTDIR$PREFIX/venv"
if [ "${HALL_NO_PIP:-0}" != 1 ]; then
  "$DESTDIR$PREFIX/venv/bin/pip" install -q --upgrade pip
  "$DESTDIR$PREFIX/venv/bin/pip" install -q .
fi
install -m 0644 README.md "$DESTDIR$PREFIX/README.md"

install -d -m 0750 "${GROUP_OPT[@]}" "$DESTDIR$CONF"
if [ ! -f "$DESTDIR$CONF/config.yaml" ]; then
  # The example hall, with state where systemd keeps it; edit it for the real hall.
  sed "s|^state_dir: ./state|state_dir: $STATE|" config.yaml > "$DESTDIR$CONF/config.yaml"
  chmod 0640 "$DESTDIR$CONF/config.yaml"
  [ -z "$DESTDIR" ] && chgrp "$USER_NAME" "$CONF/config.yaml"
  say "wrote $CONF/config.yaml from the example; edit it, then: hall-daemon check-config $CONF/config.yaml"
else
  say "kept the existing $CONF/config.yaml"
fi
install -m 0644 systemd/99-hall-devices.rules.example "$DESTDIR$CONF/99-hall-devices.rules.example"
# systemd creates $STATE (StateDirectory=) owned by the service user on first start; made
# here too so `hall-daemon check-config` works before the first start.
install -d -m 0750 "${GROUP_OPT[@]}" "$DESTDIR$STATE"
[ -z "$DESTDIR" ] && chown "$USER_NAME:$USER_NAME" "$STATE"
install -d -m 0755 "$DESTDIR/etc/systemd/system"
install -m 0644 systemd/hall-daemon.service "$DESTDIR/etc/systemd/system/hall-daemon.service"

if [ -z "$DESTDIR" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  say "start it with: systemctl enable --now hall-daemon"
  say "stable device names: edit $CONF/99-hall-devices.rules.example, copy it to /etc/udev/rules.d/"
fi
say "done"
