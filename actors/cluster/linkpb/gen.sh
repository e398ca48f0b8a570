#!/usr/bin/env bash
# Regenerate link.pb.go from link.proto with the pinned protoc-gen-go (the
# same as proto/gen.sh). With --check, fail if the checked-in file is stale.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
PROTOC_GEN_GO_VERSION=v1.36.12
gobin=$(go env GOBIN)
if [[ -z $gobin ]]; then
	gopath=$(go env GOPATH)
	gobin=${gopath%%:*}/bin
fi
plugin=$gobin/protoc-gen-go
if [[ ! -x $plugin ]] || [[ $("$plugin" --version 2>/dev/null) != "protoc-gen-go $PROTOC_GEN_GO_VERSION" ]]; then
	go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
fi
generate() { protoc --plugin=protoc-gen-go="$plugin" --go_out="$1" --go_opt=paths=source_relative link.proto; }
if [[ ${1:-} != --check ]]; then
	generate .
	exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
generate "$tmp"
diff -u link.pb.go "$tmp/link.pb.go" >&2 || { echo "actors/cluster/linkpb/link.pb.go is stale: run actors/cluster/linkpb/gen.sh" >&2; exit 1; }
