#!/usr/bin/env bash
# Peer benchmarks: Switchboard against a Unix socket, a bare shared-memory
# ping-pong, libqb (shm and socket), NATS, gRPC and D-Bus, every workload
# on every peer, in one run on this machine.
#
#   tests/bench/run.sh [--smoke] [--cpus LIST] [--out DIR] [benchrun flags…]
#
#   --smoke      tiny durations, one repetition: checks the harness end to
#                end in about a minute (CI); results go to the build
#                directory unless --out is given, never into the repository
#   --cpus LIST  pin every process to these CPUs (taskset syntax: 0 is the
#                one-core case, 0,1 two cores)
#   --out DIR    results folder (default tests/bench/results)
#   other flags go to benchrun: --peers unix,nats  --workloads rpc-64-1
#                --dur 2s  --reps 3  --conns 1000  --many 10000
#
# Installs what is missing (Debian packages: gcc, pkg-config, libqb-dev,
# dbus-daemon, util-linux; Go modules), builds into a directory outside the
# repository, runs, and writes results.md, results.json and SVG charts. A
# peer that cannot be installed is reported as unavailable, with the
# reason; the others still run. Safe to run again.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$here"

smoke=false
out=""
pass=()
while (($#)); do
	case $1 in
	--smoke) smoke=true; pass+=(-smoke) ;;
	--cpus) pass+=(-cpus "$2"); shift ;;
	--cpus=*) pass+=(-cpus "${1#*=}") ;;
	--out) out=$2; shift ;;
	--out=*) out=${1#*=} ;;
	-h | --help) sed -n '2,21p' "$here/run.sh" | sed 's/^# \{0,1\}//'; exit 0 ;;
	--*) pass+=("-${1#--}") ;;
	*) pass+=("$1") ;;
	esac
	shift
done

say() { printf '==> %s\n' "$*" >&2; }

# Go: the installed toolchain, never a downloaded one.
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
	export PATH="/usr/local/go/bin:$PATH"
fi
if ! command -v go >/dev/null 2>&1; then
	echo "error: Go 1.26 or newer is required and 'go' is not on PATH" >&2
	exit 1
fi
export GOTOOLCHAIN=local

# apt_install PACKAGE...: install Debian packages (sudo unless root),
# refreshing the package lists once. Fails quietly: callers check.
apt_updated=false
apt_install() {
	local sudo=()
	if ((EUID != 0)); then
		command -v sudo >/dev/null 2>&1 || return 1
		sudo=(sudo -n)
	fi
	command -v apt-get >/dev/null 2>&1 || return 1
	export DEBIAN_FRONTEND=noninteractive
	if ! $apt_updated; then
		"${sudo[@]}" apt-get update -q >&2 || return 1
		apt_updated=true
	fi
	"${sudo[@]}" apt-get install -y -q --no-install-recommends "$@" >&2
}

unavailable=()
have_cc=true
if ! command -v gcc >/dev/null 2>&1 || ! command -v pkg-config >/dev/null 2>&1; then
	say "installing gcc and pkg-config"
	apt_install gcc libc6-dev pkg-config || true
	command -v gcc >/dev/null 2>&1 && command -v pkg-config >/dev/null 2>&1 || have_cc=false
fi
if ! $have_cc; then
	unavailable+=("libqb-shm=no C compiler (gcc, pkg-config could not be installed)" "libqb-socket=no C compiler")
elif ! pkg-config --exists libqb 2>/dev/null; then
	say "installing libqb-dev"
	if ! apt_install libqb-dev || ! pkg-config --exists libqb; then
		unavailable+=("libqb-shm=libqb-dev could not be installed" "libqb-socket=libqb-dev could not be installed")
	fi
fi
if ! command -v dbus-daemon >/dev/null 2>&1; then
	say "installing dbus-daemon"
	apt_install dbus-daemon || apt_install dbus || true
	command -v dbus-daemon >/dev/null 2>&1 || unavailable+=("dbus=dbus-daemon could not be installed")
fi
if [[ " ${pass[*]} " == *" -cpus "* ]] && ! command -v taskset >/dev/null 2>&1; then
	say "installing util-linux (taskset)"
	apt_install util-linux || true
	command -v taskset >/dev/null 2>&1 || { echo "error: --cpus needs taskset (util-linux)" >&2; exit 1; }
fi

build=${SWITCHBOARD_BENCH_BUILD:-${TMPDIR:-/tmp}/switchboard-bench-$(id -u)}
mkdir -p "$build"
say "building into $build"
go mod download
if $smoke; then
	# The main module's go vet and go test do not enter this module.
	say "go vet and go test (this module)"
	go vet ./...
	go test -count=1 ./...
fi
go build -buildvcs=false -o "$build/benchpeer" ./cmd/benchpeer
go build -buildvcs=false -o "$build/benchrun" ./cmd/benchrun
if [[ " ${unavailable[*]} " != *" libqb-shm="* ]]; then
	for prog in qbserver qbclient; do
		# shellcheck disable=SC2046 # pkg-config prints separate flags
		if ! gcc -O2 -Wall -Wextra -Wno-unused-parameter -o "$build/$prog" "c/$prog.c" \
			$(pkg-config --cflags --libs libqb) -lm; then
			unavailable+=("libqb-shm=$prog did not compile" "libqb-socket=$prog did not compile")
			break
		fi
	done
fi

if [[ -z $out ]]; then
	if $smoke; then out=$build/smoke-results; else out=$here/results; fi
fi
say "running; results in $out"
list=$(IFS=';'; echo "${unavailable[*]}")
exec "$build/benchrun" -bin "$build" -out "$out" -repo "$root" -unavailable "$list" "${pass[@]}"
