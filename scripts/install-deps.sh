#!/usr/bin/env bash
# Installs what building and testing tibet needs on a fresh Debian 12 machine, and
# checks what cannot be installed from here. Safe to run again: it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: '$1' needs root; run this script as root (or with sudo)." >&2
    exit 1
  fi
}

if ! command -v dotnet >/dev/null 2>&1; then
  echo "install-deps: the .NET 10 SDK is missing (dotnet is not on PATH). Install it, then run this again." >&2
  exit 1
fi
if ! dotnet --list-sdks | grep -q '^10\.'; then
  echo "install-deps: a .NET 10 SDK is required; found: $(dotnet --list-sdks | tr '\n' ' ')" >&2
  exit 1
fi

apt_updated=0
apt_install() {
  need_root "apt-get install $*"
  if [ $apt_updated -eq 0 ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

command -v gcc >/dev/null 2>&1 || apt_install gcc libc6-dev
# Real programs the tests run under tibet-run.
command -v redis-server >/dev/null 2>&1 && command -v redis-check-rdb >/dev/null 2>&1 || apt_install redis-server redis-tools
command -v python3 >/dev/null 2>&1 || apt_install python3
command -v node >/dev/null 2>&1 || apt_install nodejs
command -v go >/dev/null 2>&1 || apt_install golang-go
command -v npm >/dev/null 2>&1 || apt_install npm
# The JVM: a runtime that reserves its heap and commits it with MAP_FIXED maps inside.
command -v java >/dev/null 2>&1 && command -v javac >/dev/null 2>&1 || apt_install openjdk-17-jdk-headless
# Forked workers and prefork servers the custodian serves.
command -v stress-ng >/dev/null 2>&1 || apt_install stress-ng
[ -x /usr/lib/postgresql/15/bin/postgres ] && command -v pgbench >/dev/null 2>&1 || apt_install postgresql postgresql-contrib
# Debian starts a redis-server service on install; the tests start their own.
# The same for PostgreSQL.
if command -v systemctl >/dev/null 2>&1; then
  systemctl stop redis-server >/dev/null 2>&1 || true
  systemctl stop postgresql >/dev/null 2>&1 || true
fi

# The tests check our userfaultfd declarations against the kernel's own header, and
# UFFDIO_MOVE/UFFDIO_POISON first appear in Linux 6.8's. Debian 12 ships 6.1 headers,
# so unpack linux-libc-dev from bookworm-backports into .tools/ (the system's own
# headers stay as they are).
headers=.tools/linux-headers
if [ ! -f "$headers/usr/include/linux/userfaultfd.h" ] || ! grep -q UFFDIO_MOVE "$headers/usr/include/linux/userfaultfd.h"; then
  need_root "apt-get download linux-libc-dev"
  list=/etc/apt/sources.list.d/tibet-bookworm-backports.list
  if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "deb http://deb.debian.org/debian bookworm-backports main" > "$list"
    apt_updated=0
  fi
  if [ $apt_updated -eq 0 ]; then apt-get update -qq; apt_updated=1; fi
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -qq -t bookworm-backports linux-libc-dev >/dev/null)
  rm -rf "$headers" && mkdir -p "$headers"
  dpkg-deb -x "$tmp"/linux-libc-dev_*.deb "$headers"
  rm -rf "$tmp"
  grep -q UFFDIO_MOVE "$headers/usr/include/linux/userfaultfd.h" || {
    echo "install-deps: the unpacked kernel headers do not declare UFFDIO_MOVE" >&2; exit 1; }
fi

scripts/install-llama.sh

dotnet restore TibetKernel.sln --verbosity quiet
