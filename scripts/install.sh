#!/usr/bin/env bash
# Installs the hall daemon on a hall PC (Debian): a venv under /opt/hall-daemon, the config
# under /etc/hall-daemon, state under /var/lib/hall-daemon (systemd's StateDirectory), a
# dedicated user in the dialout and lp groups, and the systemd unit. Run as root from a
# checkout: sudo scripts/install.sh. Re-running upgrades the code and keeps config and state.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=/opt/hall-daemon
CONF=/etc/hall-daemon

[ "$(id -u)" -eq 0 ] || { echo "install.sh: run as root" >&2; exit 1; }
apt-get install -y -qq --no-install-recommends python3-venv espeak-ng sox fonts-noto-cjk >/dev/null

id hall-daemon >/dev/null 2>&1 || useradd --system --home-dir /var/lib/hall-daemon --shell /usr/sbin/nologin hall-daemon
usermod -a -G dialout,lp hall-daemon

install -d -m 0755 "$PREFIX"
[ -x "$PREFIX/venv/bin/python" ] || python3 -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install -q --upgrade pip
"$PREFIX/venv/bin/pip" install -q .
install -m 0644 README.md "$PREFIX/README.md"

install -d -m 0750 -g hall-daemon "$CONF"
if [ ! -f "$CONF/config.yaml" ]; then
  # The example hall, with state where systemd keeps it; edit it for the real hall.
  sed 's|^state_dir: ./state|state_dir: /var/lib/hall-daemon|' config.yaml > "$CONF/config.yaml"
  chgrp hall-daemon "$CONF/config.yaml"
  chmod 0640 "$CONF/config.yaml"
  echo "install.sh: wrote $CONF/config.yaml from the example; edit it, then: hall-daemon check-config"
fi
install -m 0644 systemd/hall-daemon.service /etc/systemd/system/hall-daemon.service
install -m 0644 systemd/99-hall-devices.rules.example "$CONF/99-hall-devices.rules.example"
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  echo "install.sh: start it with: systemctl enable --now hall-daemon"
fi
