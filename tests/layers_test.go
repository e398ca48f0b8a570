package tests

import (
	"bufio"
	"bytes"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The root package is cut by role: client files, node files, and a few
// shared value files. These tests keep the layers honest (see
// ARCHITECTURE.md).

// sharedFiles are the root package's files that both ends use.
var sharedFiles = []string{"doc.go", "errors.go", "listing.go", "notice.go", "options.go", "policy.go"}

// maxLines is the longest a hand-written file of the root package or of
// actors/ may be.
const maxLines = 600

// TestClientFilesImportNoActors checks that the client's files and the
// shared value files of the root package import no actors/* package: a
// client is built on proto and shm alone.
func TestClientFilesImportNoActors(t *testing.T) {
	reportProblems(t, checkClientImports, repoRoot)
}

// TestRootFilesHaveARole checks that every file of the root package is a
// client file (client*.go), a node file (node*.go) or a shared value file:
// a file with another name would escape the client's import check.
func TestRootFilesHaveARole(t *testing.T) {
	reportProblems(t, checkRootRoles, repoRoot)
}

// TestCmdNodeUsesPublicAPI checks that cmd/node imports nothing of this
// module but its root package, the public API, and actors/cluster, the
// links between nodes, with its discoveries (which the root package never
// imports).
func TestCmdNodeUsesPublicAPI(t *testing.T) {
	reportProblems(t, checkCmdImports, repoRoot)
}

// TestNodeDoesNotLinkGRPC checks that a program embedding a node or only
// dialling one links neither gRPC nor protoactor's remote: only
// actors/cluster does, and only programs that federate import it.
func TestNodeDoesNotLinkGRPC(t *testing.T) {
	mod, err := modulePath(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "list", "-deps", mod)
	cmd.Dir = repoRoot
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for dep := range strings.SplitSeq(string(out), "\n") {
		switch {
		case dep == mod+"/actors/cluster", strings.HasPrefix(dep, mod+"/actors/cluster/"),
			strings.HasPrefix(dep, "google.golang.org/grpc"), strings.HasPrefix(dep, "go.etcd.io/"),
			dep == "github.com/asynkron/protoactor-go/remote":
			t.Errorf("package switchboard depends on %s", dep)
		}
	}
}

// TestFilesStayShort checks that no hand-written file of the root package
// or of actors/ is longer than maxLines.
func TestFilesStayShort(t *testing.T) {
	reportProblems(t, checkFileLengths, repoRoot)
}

// modulePath reads the module path from root's go.mod.
func modulePath(root string) (string, error) {
	b, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		return "", err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "module "); ok {
			return strings.TrimSpace(rest), nil
		}
	}
	return "", os.ErrNotExist
}

// imports returns the import paths of a Go file.
func imports(path string) ([]string, error) {
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, im := range f.Imports {
		p, err := strconv.Unquote(im.Path.Value)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// goSources lists the non-test .go files directly in dir.
func goSources(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if n := e.Name(); e.Type().IsRegular() && strings.HasSuffix(n, ".go") && !strings.HasSuffix(n, "_test.go") {
			out = append(out, n)
		}
	}
	return out, nil
}

func checkClientImports(root string) ([]problem, error) {
	mod, err := modulePath(root)
	if err != nil {
		return nil, err
	}
	names, err := goSources(root)
	if err != nil {
		return nil, err
	}
	var probs []problem
	for _, name := range names {
		if !strings.HasPrefix(name, "client") && !slices.Contains(sharedFiles, name) {
			continue
		}
		ims, err := imports(filepath.Join(root, name))
		if err != nil {
			return nil, err
		}
		for _, p := range ims {
			if strings.HasPrefix(p, mod+"/actors/") || p == mod+"/actors" {
				probs = append(probs, problem{name, "a client or shared file imports " + p})
			}
		}
	}
	return probs, nil
}

func checkRootRoles(root string) ([]problem, error) {
	names, err := goSources(root)
	if err != nil {
		return nil, err
	}
	var probs []problem
	for _, name := range names {
		if !strings.HasPrefix(name, "client") && !strings.HasPrefix(name, "node") && !slices.Contains(sharedFiles, name) {
			probs = append(probs, problem{name, "neither a client file (client*.go), a node file (node*.go) nor a shared one"})
		}
	}
	return probs, nil
}

func checkCmdImports(root string) ([]problem, error) {
	mod, err := modulePath(root)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(root, "cmd", "node")
	names, err := goSources(dir)
	if err != nil {
		return nil, err
	}
	var probs []problem
	for _, name := range names {
		ims, err := imports(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		for _, p := range ims {
			if strings.HasPrefix(p, mod+"/") && p != mod+"/actors/cluster" && !strings.HasPrefix(p, mod+"/actors/cluster/") {
				probs = append(probs, problem{"cmd/node/" + name, "imports " + p + ", not only the public API and actors/cluster"})
			}
		}
	}
	return probs, nil
}

func checkFileLengths(root string) ([]problem, error) {
	var probs []problem
	check := func(dir, rel string) error {
		names, err := goSources(dir)
		if err != nil {
			return err
		}
		for _, name := range names {
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				return err
			}
			if generated(b) {
				continue
			}
			if n := bytes.Count(b, []byte("\n")); n > maxLines {
				probs = append(probs, problem{joinSlash(rel, name), strconv.Itoa(n) + " lines, more than " + strconv.Itoa(maxLines)})
			}
		}
		return nil
	}
	if err := check(root, "."); err != nil {
		return nil, err
	}
	err := filepath.WalkDir(filepath.Join(root, "actors"), func(path string, d os.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		return check(path, relSlash(root, path))
	})
	return probs, err
}

// generated reports whether a Go file says it is generated.
func generated(b []byte) bool {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "// Code generated ") && strings.HasSuffix(line, " DO NOT EDIT.") {
			return true
		}
		if strings.HasPrefix(line, "package ") {
			return false
		}
	}
	return false
}

// TestLayerChecksReportViolations runs each layer check on a small
// synthetic tree, so that each is shown to fail when it should.
func TestLayerChecksReportViolations(t *testing.T) {
	long := "package m\n" + strings.Repeat("\n", maxLines)
	runPlanted(t, []plantedCase{
		{
			name:  "client imports",
			check: checkClientImports,
			files: map[string]string{
				"go.mod":           "module example.com/m\n",
				"client.go":        "package m\n\nimport _ \"example.com/m/proto\"\n",
				"client_x_test.go": "package m\n\nimport _ \"example.com/m/actors/conn\"\n",
				"node.go":          "package m\n\nimport _ \"example.com/m/actors/conn\"\n",
				// Bad.
				"client_bus.go": "package m\n\nimport _ \"example.com/m/actors/group\"\n",
				"errors.go":     "package m\n\nimport _ \"example.com/m/actors/conn\"\n",
			},
			want: []string{"client_bus.go", "errors.go"},
		},
		{
			name:  "root roles",
			check: checkRootRoles,
			files: map[string]string{
				"go.mod":        "module example.com/m\n",
				"client_x.go":   "package m\n",
				"node_y.go":     "package m\n",
				"errors.go":     "package m\n",
				"bus_test.go":   "package m\n",
				"sub/helper.go": "package sub\n",
				// Bad.
				"bus.go": "package m\n",
			},
			want: []string{"bus.go"},
		},
		{
			name:  "cmd imports",
			check: checkCmdImports,
			files: map[string]string{
				"go.mod":               "module example.com/m\n",
				"cmd/node/main.go":     "package main\n\nimport _ \"example.com/m\"\n",
				"cmd/node/x_test.go":   "package main\n\nimport _ \"example.com/m/proto\"\n",
				"cmd/node/wire.go":     "package main\n\nimport _ \"example.com/m/proto\"\n",
				"cmd/node/internal.go": "package main\n\nimport _ \"example.com/mother\"\n",
			},
			want: []string{"cmd/node/wire.go"},
		},
		{
			name:  "file lengths",
			check: checkFileLengths,
			files: map[string]string{
				"go.mod":             "module example.com/m\n",
				"short.go":           "package m\n",
				"long_test.go":       long,
				"gen.pb.go":          "// Code generated by protoc-gen-go. DO NOT EDIT.\n" + long,
				"shm/long.go":        long,
				"long.go":            long,
				"actors/conn/big.go": long,
			},
			want: []string{"actors/conn/big.go", "long.go"},
		},
	})
}
