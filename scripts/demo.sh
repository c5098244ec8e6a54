#!/usr/bin/env bash
# A complete demo hall on this machine: a local Mosquitto, the hardware simulator playing the
# dispenser and the counters' keypads over sockets, and the daemon running config.yaml.
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
DEMO=.demo
mkdir -p "$DEMO" state
pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "demo stopped; state kept in ./state (rm -r state to start afresh)"
}
trap cleanup INT TERM EXIT

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if port_open 1883; then
  echo "demo: using the MQTT broker already listening on 127.0.0.1:1883"
else
  printf 'listener 1883 127.0.0.1\nallow_anonymous true\npersistence false\n' > "$DEMO/mosquitto.conf"
  mosquitto -c "$DEMO/mosquitto.conf" > "$DEMO/mosquitto.log" 2>&1 &
  pids+=($!)
  echo "demo: started a local Mosquitto on 127.0.0.1:1883"
fi

if $PY -c "import drivers.simulator" 2>/dev/null; then
  $PY -m drivers.simulator -c config.yaml --speed "${DEMO_SPEED:-30}" > "$DEMO/simulator.log" 2>&1 &
  pids+=($!)
  echo "demo: hardware simulator playing the dispenser and keypads (log: $DEMO/simulator.log)"
fi

# The product has no default password; the demo makes a fresh one each run and shows it.
ADMIN_PASSWORD=$(openssl rand -base64 12)
printf '%s\n' "$ADMIN_PASSWORD" | .venv/bin/hall-daemon set-password -c config.yaml --stdin > /dev/null

.venv/bin/hall-daemon run -c config.yaml > "$DEMO/daemon.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -fs http://127.0.0.1:8080/healthz > /dev/null 2>&1 && break
  sleep 0.1
done
cat <<MSG

Demo hall running (daemon log: $DEMO/daemon.log). Open:
  http://127.0.0.1:8080/screen/hall      the hall's big screen (landscape, 中文 + English)
  http://127.0.0.1:8080/screen/area-a    the portrait screen by the 企业开办 counters
  http://127.0.0.1:8080/kiosk            the touch kiosk: take a ticket, then follow it at /t/<token>
  http://127.0.0.1:8080/admin/           the admin status page and statistics
                                         (password for this demo: $ADMIN_PASSWORD)
  http://127.0.0.1:8080/api/queues       live queues and counters (JSON)
  http://127.0.0.1:8080/healthz          health
Announcements are written as WAV files to ./state/voice (play one: aplay state/voice/*.wav).
Watch the event log:   mosquitto_sub -h 127.0.0.1 -t 'hall/demo-hall/#' -v
Export the event log:  .venv/bin/hall-daemon events export -c config.yaml --since today
Ctrl-C stops the demo.
MSG
wait -n "${pids[@]}"
