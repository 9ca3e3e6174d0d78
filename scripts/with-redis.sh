#!/usr/bin/env bash
# Runs a command with a throwaway redis-server on a free loopback port (REDIS_URL), then
# stops that server by its PID. Installs redis-server from Debian when it is missing.
set -euo pipefail

if ! command -v redis-server >/dev/null 2>&1; then
  echo "with-redis: installing redis-server" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
dir=$(mktemp -d)
redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --dir "$dir" \
  --daemonize no --loglevel warning >"$dir/redis.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT

for _ in $(seq 1 100); do
  if redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; then break; fi
  if ! kill -0 "$pid" 2>/dev/null; then cat "$dir/redis.log" >&2; exit 1; fi
  sleep 0.05
done

export REDIS_URL="redis://127.0.0.1:$port/0"
export REDIS_SERVER_BIN
REDIS_SERVER_BIN=$(command -v redis-server)
"$@"
