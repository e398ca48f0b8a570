#!/usr/bin/env bash
# Regenerate proto/switchboard.pb.go and fed.pb.go from their .proto files with the
# pinned protoc-gen-go. With --check, generate into a temporary directory and
# fail if the checked-in file differs. Run it from anywhere.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

# Must match the google.golang.org/protobuf version in go.mod.
PROTOC_GEN_GO_VERSION=v1.36.12

check=false
case "${1:-}" in
"") ;;
--check) check=true ;;
*)
	echo "usage: proto/gen.sh [--check]" >&2
	exit 2
	;;
esac

if ! command -v protoc >/dev/null 2>&1; then
	echo "error: protoc not found; install it (Debian: apt-get install protobuf-compiler)." >&2
	exit 1
fi

# Use the pinned plugin from the Go bin directory, installing it if it is
# missing or a different version.
gobin=$(go env GOBIN)
if [[ -z $gobin ]]; then
	gopath=$(go env GOPATH)
	gobin=${gopath%%:*}/bin
fi
plugin=$gobin/protoc-gen-go
if [[ ! -x $plugin ]] || [[ $("$plugin" --version 2>/dev/null) != "protoc-gen-go $PROTOC_GEN_GO_VERSION" ]]; then
	echo "installing protoc-gen-go $PROTOC_GEN_GO_VERSION into $gobin" >&2
	go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
fi

generate() { # generate OUTDIR
	protoc --plugin=protoc-gen-go="$plugin" --go_out="$1" --go_opt=paths=source_relative switchboard.proto fed.proto
}

if ! $check; then
	generate .
	exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
generate "$tmp"
if ! { diff -u switchboard.pb.go "$tmp/switchboard.pb.go" && diff -u fed.pb.go "$tmp/fed.pb.go"; } >"$tmp/diff"; then
	head -n 40 "$tmp/diff" >&2
	# The header records the protoc version, so a different protoc alone
	# makes the file differ; say so rather than leave it to the diff.
	want=$(sed -n 's|^//[[:space:]]*protoc[[:space:]]\{1,\}\(v.*\)$|\1|p' switchboard.pb.go 2>/dev/null | head -n 1)
	have=$(sed -n 's|^//[[:space:]]*protoc[[:space:]]\{1,\}\(v.*\)$|\1|p' "$tmp/switchboard.pb.go" | head -n 1)
	if [[ -n $want && $want != "$have" ]]; then
		echo "note: switchboard.pb.go was generated with protoc $want; this machine has protoc $have" >&2
	fi
	echo "proto/switchboard.pb.go or fed.pb.go is stale: run proto/gen.sh" >&2
	exit 1
fi
