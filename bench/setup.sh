#!/bin/sh
# What `make bench` needs beyond `make venv`: Debian's wrk (the HTTP load generator), postfix
# (Postfix itself, smtp-sink and smtp-source) and py-spy in the venv (for --profile).
# Installs only what is missing; non-interactive; the machine's own Postfix is never started.
set -eu
VENV_PY="${1:-.venv/bin/python}"
missing=""
command -v wrk >/dev/null 2>&1 || missing="$missing wrk"
if ! command -v smtp-sink >/dev/null 2>&1 || [ ! -x /usr/lib/postfix/sbin/master ]; then
    missing="$missing postfix"
fi
if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "bench/setup.sh: install$missing (apt-get install$missing) as root" >&2
        exit 1
    fi
    # postfix asks for a configuration type: "No configuration" keeps the system MTA off.
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing \
        || { apt-get update -q && DEBIAN_FRONTEND=noninteractive \
             apt-get install -y -q --no-install-recommends $missing; }
fi
if [ -x "$VENV_PY" ] && ! "$VENV_PY" -m pip show -q py-spy >/dev/null 2>&1; then
    "$VENV_PY" -m pip install -q py-spy
fi
