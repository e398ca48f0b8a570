#!/usr/bin/env bash
# The project's one test command: formatting, vet, tests with and without the
# race detector, and every benchmark once. Run it from anywhere.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }

step "go mod download"
go mod download

step "gofmt"
# Tracked and untracked .go files (ignored ones excepted); every .go file
# below the root when this is not a git checkout.
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	mapfile -d '' listed < <(git ls-files -z --cached --others --exclude-standard -- '*.go')
else
	mapfile -d '' listed < <(find . -name .git -prune -o -name '*.go' -type f -print0)
fi
files=()
for f in "${listed[@]}"; do
	[[ -f $f ]] && files+=("$f") # skip tracked files deleted in the work tree
done
if ((${#files[@]} > 0)); then
	unformatted=$(gofmt -l "${files[@]}")
	if [[ -n $unformatted ]]; then
		echo "gofmt: these files need formatting (run gofmt -w):"
		echo "$unformatted"
		exit 1
	fi
fi

step "generated code is current"
bash proto/gen.sh --check
bash actors/cluster/linkpb/gen.sh --check

step "go vet"
go vet ./...

step "go test -race -short"
go test -race -short -count=1 -timeout 20m ./...

step "go test (everything at full length, without -race: TestNoRace* and the long variants)"
go test -count=1 -timeout 20m ./...

step "every benchmark once"
go test -count=1 -run '^$' -bench . -benchtime=1x -timeout 20m ./...

step "peer benchmarks, smoke pass (tests/bench, a module of its own)"
bash tests/bench/smoke.sh

step "all checks passed"
