package tests

import (
	"context"
	"os"
	osexec "os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	nodeOnce sync.Once
	nodeBin  string
	nodeErr  error
	nodeDir  string
)

// buildNode builds cmd/node once per test binary run, as the README
// installs it: under the name switchboard ("node" is Node.js's).
func buildNode(t *testing.T) string {
	t.Helper()
	nodeOnce.Do(func() {
		nodeDir, nodeErr = os.MkdirTemp("", "switchboard-node-")
		if nodeErr != nil {
			return
		}
		nodeBin = filepath.Join(nodeDir, "switchboard")
		out, err := osexec.Command("go", "build", "-o", nodeBin, "../cmd/node").CombinedOutput()
		if err != nil {
			nodeErr = &buildError{err, string(out)}
		}
	})
	if nodeErr != nil {
		t.Fatal(nodeErr)
	}
	return nodeBin
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return "go build ./cmd/node: " + e.err.Error() + "\n" + e.out }

func command(ctx context.Context, name string, args ...string) *osexec.Cmd {
	return osexec.CommandContext(ctx, name, args...)
}
