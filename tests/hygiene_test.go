package tests

import (
	"bytes"
	"errors"
	"fmt"
	"go/ast"
	"go/build/constraint"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// repoRoot is the module root as seen from this package's directory, which
// is the working directory of its tests.
const repoRoot = ".."

// maxFileSize is the size above which a file does not belong in the repo.
const maxFileSize = 1 << 20

// A problem is one hygiene violation: the slash-separated path, relative to
// the root that was checked, of the file or directory at fault, and why.
type problem struct {
	path, msg string
}

func (p problem) String() string { return p.path + ": " + p.msg }

// TestPackageDocs checks that every package has exactly one package doc
// comment: in doc.go, opening "Package <name> ", except that a main package
// may keep its one doc comment in any file and word it freely.
func TestPackageDocs(t *testing.T) {
	reportProblems(t, checkPackageDocs, repoRoot)
}

// TestUnsafeOnlyInShm checks that no non-test file outside shm/ imports
// "unsafe" (DESIGN.md: all unsafe code lives in shm/).
func TestUnsafeOnlyInShm(t *testing.T) {
	reportProblems(t, checkUnsafeImports, repoRoot)
}

// TestNoLargeOrBinaryFiles checks that no file is over 1 MiB and that no ELF
// binary sits in the tree.
func TestNoLargeOrBinaryFiles(t *testing.T) {
	reportProblems(t, checkFiles, repoRoot)
}

func reportProblems(t *testing.T, check func(root string) ([]problem, error), root string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not found at %s: %v", root, err)
	}
	probs, err := check(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range probs {
		t.Error(p)
	}
}

// goFile is one parsed .go file of a package directory.
type goFile struct {
	name string // base name
	pkg  string // package clause
	doc  string // package doc comment text, "" if none
	test bool   // a _test.go file
}

// walkPackages calls fn for each directory under root that holds .go files,
// with root-relative slash path. It skips testdata, directories whose name
// starts with "." or "_" (as the go command does), nested modules, and files
// marked "//go:build ignore".
func walkPackages(root string, fn func(dir string, files []goFile) []problem) ([]problem, error) {
	var probs []problem
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		if path != root {
			name := d.Name()
			if name == "testdata" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
				return filepath.SkipDir // another module
			}
		}
		files, err := parseDir(path)
		if err != nil {
			return err
		}
		if len(files) > 0 {
			probs = append(probs, fn(relSlash(root, path), files)...)
		}
		return nil
	})
	return probs, err
}

// parseDir parses the package clause, doc comment and imports of each .go
// file directly in dir.
func parseDir(dir string) ([]goFile, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var files []goFile
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || !strings.HasSuffix(name, ".go") || strings.HasPrefix(name, ".") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(dir, name), nil, parser.PackageClauseOnly|parser.ParseComments)
		if err != nil {
			return nil, err
		}
		if buildIgnored(f.Comments, f.Package) {
			continue
		}
		gf := goFile{name: name, pkg: f.Name.Name, test: strings.HasSuffix(name, "_test.go")}
		if f.Doc != nil {
			gf.doc = f.Doc.Text()
		}
		files = append(files, gf)
	}
	return files, nil
}

// checkPackageDocs returns the packages under root whose doc comment is
// missing, duplicated, misplaced or misworded. Only non-test files count, so
// a directory of test files alone needs a doc.go too.
func checkPackageDocs(root string) ([]problem, error) {
	return walkPackages(root, func(dir string, files []goFile) []problem {
		var docs []goFile
		isMain := false
		for _, f := range files {
			if f.test {
				continue
			}
			if f.pkg == "main" {
				isMain = true
			}
			if f.doc != "" {
				docs = append(docs, f)
			}
		}
		switch {
		case len(docs) == 0 && isMain:
			return []problem{{dir, "main package has no doc comment"}}
		case len(docs) == 0:
			return []problem{{dir, "package has no doc comment (want one in doc.go)"}}
		case len(docs) > 1:
			var names []string
			for _, f := range docs {
				names = append(names, f.name)
			}
			return []problem{{dir, fmt.Sprintf("package doc comment in %d files, want one: %s", len(docs), strings.Join(names, ", "))}}
		}
		f := docs[0]
		file := joinSlash(dir, f.name)
		if f.pkg == "main" {
			return nil
		}
		var probs []problem
		if f.name != "doc.go" {
			probs = append(probs, problem{file, "package doc comment belongs in doc.go"})
		}
		if want := "Package " + f.pkg + " "; !strings.HasPrefix(f.doc, want) {
			probs = append(probs, problem{file, fmt.Sprintf("package doc comment should start with %q", want)})
		}
		return probs
	})
}

// checkUnsafeImports returns the non-test files outside shm/ that import
// "unsafe".
func checkUnsafeImports(root string) ([]problem, error) {
	return walkPackages(root, func(dir string, files []goFile) []problem {
		if dir == "shm" || strings.HasPrefix(dir, "shm/") {
			return nil
		}
		var probs []problem
		for _, gf := range files {
			if gf.test {
				continue
			}
			path := filepath.Join(root, filepath.FromSlash(dir), gf.name)
			f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly|parser.ParseComments)
			if err != nil {
				probs = append(probs, problem{joinSlash(dir, gf.name), err.Error()})
				continue
			}
			if ast.IsGenerated(f) {
				continue // protoc-gen-go's unsafe is not ours
			}
			for _, imp := range f.Imports {
				if p, _ := strconv.Unquote(imp.Path.Value); p == "unsafe" {
					probs = append(probs, problem{joinSlash(dir, gf.name), `imports "unsafe", which only shm/ may do`})
				}
			}
		}
		return probs
	})
}

// checkFiles returns the files under root, .git excepted, that are larger
// than maxFileSize or are ELF binaries.
func checkFiles(root string) ([]problem, error) {
	var probs []problem
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == ".git" && path != root {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel := relSlash(root, path)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Size() > maxFileSize {
			probs = append(probs, problem{rel, fmt.Sprintf("%d bytes, over the %d-byte limit", info.Size(), maxFileSize)})
		}
		elf, err := isELF(path)
		if err != nil {
			return err
		}
		if elf {
			probs = append(probs, problem{rel, "ELF binary"})
		}
		return nil
	})
	return probs, err
}

func isELF(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	var magic [4]byte
	if _, err := io.ReadFull(f, magic[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return false, nil // shorter than the magic
		}
		return false, err
	}
	return bytes.Equal(magic[:], []byte("\x7fELF")), nil
}

// buildIgnored reports whether a file carries "//go:build ignore" before
// its package clause, the usual mark of a go:generate helper program.
func buildIgnored(comments []*ast.CommentGroup, pkgPos token.Pos) bool {
	for _, g := range comments {
		if g.Pos() >= pkgPos {
			break
		}
		for _, c := range g.List {
			if !constraint.IsGoBuild(c.Text) {
				continue
			}
			expr, err := constraint.Parse(c.Text)
			return err == nil && expr.String() == "ignore"
		}
	}
	return false
}

func relSlash(root, path string) string {
	rel, err := filepath.Rel(root, path)
	if err != nil {
		return filepath.ToSlash(path)
	}
	return filepath.ToSlash(rel)
}

func joinSlash(dir, name string) string {
	if dir == "." {
		return name
	}
	return dir + "/" + name
}

// TestChecksReportViolations runs each check on a small synthetic tree and
// compares the paths it reports with the planted violations, so that each
// check is shown to fail when it should and only then.
func TestChecksReportViolations(t *testing.T) {
	runPlanted(t, []plantedCase{
		{
			name:  "package docs",
			check: checkPackageDocs,
			files: map[string]string{
				"go.mod": "module example.com/m\n",
				// Good.
				"doc.go":           "// Package m does things.\npackage m\n",
				"m.go":             "package m\n",
				"good/doc.go":      "// Package good is fine.\npackage good\n",
				"good/a.go":        "// Not a doc comment.\n\npackage good\n",
				"good/a_test.go":   "// Package good tests get no say.\npackage good\n",
				"cmd/tool/main.go": "// Tool does things.\npackage main\n",
				"gen/doc.go":       "// Package gen generates.\npackage gen\n",
				"gen/gen.go":       "//go:build ignore\n\n// Gen is a helper program.\npackage main\n",
				// Skipped.
				"good/testdata/x.go": "package x\n",
				".hidden/x.go":       "package x\n",
				"_old/x.go":          "package x\n",
				"sub/go.mod":         "module example.com/sub\n",
				"sub/x.go":           "package x\n",
				// Bad.
				"nodoc/a.go":         "package nodoc\n",
				"testonly/a_test.go": "package testonly\n",
				"cmd/nodoc/main.go":  "package main\n",
				"twice/doc.go":       "// Package twice is documented twice.\npackage twice\n",
				"twice/b.go":         "// Package twice is documented twice.\npackage twice\n",
				"elsewhere/a.go":     "// Package elsewhere has its doc in a.go.\npackage elsewhere\n",
				"misworded/doc.go":   "// This package misses the convention.\npackage misworded\n",
				"wrongname/doc.go":   "// Package wrong has the wrong name.\npackage wrongname\n",
				"noblank/doc.go":     "// Package noblankafter\npackage noblank\n",
			},
			want: []string{
				"cmd/nodoc", "elsewhere/a.go", "misworded/doc.go", "noblank/doc.go",
				"nodoc", "testonly", "twice", "wrongname/doc.go",
			},
		},
		{
			name:  "unsafe imports",
			check: checkUnsafeImports,
			files: map[string]string{
				"go.mod": "module example.com/m\n",
				// Good.
				"shm/doc.go":          "// Package shm maps memory.\npackage shm\n",
				"shm/layout.go":       "package shm\n\nimport \"unsafe\"\n\nvar _ unsafe.Pointer\n",
				"shm/inner/x.go":      "package inner\n\nimport _ \"unsafe\"\n",
				"conn/conn.go":        "package conn\n\nimport \"sync/atomic\"\n\nvar _ atomic.Int64\n",
				"conn/layout_test.go": "package conn\n\nimport \"unsafe\"\n\nvar _ = unsafe.Sizeof(0)\n",
				"conn/testdata/x.go":  "package x\n\nimport \"unsafe\"\n",
				// Bad.
				"conn/cast.go": "package conn\n\nimport (\n\t\"fmt\"\n\tu \"unsafe\"\n)\n\nvar _ u.Pointer\nvar _ = fmt.Sprint\n",
				"shmutil/x.go": "package shmutil\n\nimport \"unsafe\"\n\nvar _ unsafe.Pointer\n",
				"main.go":      "package main\n\nimport \"unsafe\"\n\nvar _ unsafe.Pointer\n\nfunc main() {}\n",
			},
			want: []string{"conn/cast.go", "main.go", "shmutil/x.go"},
		},
		{
			name:  "large and binary files",
			check: checkFiles,
			files: map[string]string{
				"go.mod":           "module example.com/m\n",
				"small.txt":        "hello\n",
				"tiny":             "\x7fE",
				"exactly1mib.dat":  strings.Repeat("x", maxFileSize),
				"ELF.txt":          "ELF is a format\n",
				".git/objects/big": strings.Repeat("x", maxFileSize+1),
				".git/elf":         "\x7fELF\x02\x01\x01",
				// Bad.
				"big.dat":       strings.Repeat("x", maxFileSize+1),
				"cmd/node/node": "\x7fELF\x02\x01\x01\x00",
				".ci/tool":      "\x7fELF\x02\x01\x01\x00",
			},
			want: []string{".ci/tool", "big.dat", "cmd/node/node"},
		},
	})
}

// plantedCase is a check run on a synthetic tree: the paths it must
// report, sorted.
type plantedCase struct {
	name  string
	check func(root string) ([]problem, error)
	files map[string]string // path → content
	want  []string          // reported paths, sorted
}

// runPlanted writes each case's tree in a temporary directory, runs its
// check there and compares the reported paths with the planted ones.
func runPlanted(t *testing.T, tests []plantedCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			for name, content := range tt.files {
				path := filepath.Join(root, filepath.FromSlash(name))
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			probs, err := tt.check(root)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range probs {
				t.Log(p)
				got = append(got, p.path)
			}
			slices.Sort(got)
			got = slices.Compact(got)
			if !slices.Equal(got, tt.want) {
				t.Errorf("reported paths:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}
