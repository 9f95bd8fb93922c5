#!/usr/bin/env bash
# Installs what the e2e tests need from Debian: Chromium at /usr/bin/chromium (browser tests) and python3-django
# (the Django dev-server test), redis-server (the relay cluster tests). Installs only what is missing; safe to run again.
set -euo pipefail

CHROMIUM=/usr/bin/chromium
MISSING=()

if [ -x "$CHROMIUM" ]; then
  echo "chromium already installed: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
else
  MISSING+=(chromium)
fi

# Debian's python3 (/usr/bin/python3) is the one python3-django installs into; a pyenv or venv python3 may come first on PATH.
django_installed() {
  /usr/bin/python3 -c 'import django' >/dev/null 2>&1
}
if django_installed; then
  echo "python3-django already installed: Django $(/usr/bin/python3 -c 'import django; print(django.get_version())')"
else
  MISSING+=(python3-django)
fi

# The cluster tests (test/cluster/) start their own redis-server on a free loopback port; it is never run as a service.
if command -v redis-server >/dev/null 2>&1; then
  echo "redis-server already installed: $(redis-server --version)"
else
  MISSING+=(redis-server)
fi

if [ "${#MISSING[@]}" -eq 0 ]; then
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: missing ${MISSING[*]} and apt-get is not available; install them by hand." >&2
  exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "error: not root and sudo is not available; cannot install ${MISSING[*]}." >&2
    exit 1
  fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends "${MISSING[@]}"

if [ ! -x "$CHROMIUM" ]; then
  echo "error: installed the chromium package but $CHROMIUM is still missing." >&2
  exit 1
fi
if ! django_installed; then
  echo "error: installed python3-django but /usr/bin/python3 cannot import django." >&2
  exit 1
fi
if ! command -v redis-server >/dev/null 2>&1; then
  echo "error: installed the redis-server package but redis-server is not on PATH." >&2
  exit 1
fi
echo "chromium installed: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
echo "python3-django installed: Django $(/usr/bin/python3 -c 'import django; print(django.get_version())')"
echo "redis-server installed: $(redis-server --version)"
