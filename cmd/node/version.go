package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/switchboard-ipc/switchboard"
)

const versionHelp = `usage: ` + prog + ` version   (or ` + prog + ` --version)

Print this program's version, the commit it was built from and the Go
that built it:

  switchboard 0.1.0-dev
  commit: 8c8b559… (2026-01-18T09:40:27Z, modified)
  go: go1.26.0 linux/amd64

The commit is known when the binary was built with go build or go install
from a git checkout ("modified": with uncommitted changes); go run, and a
build outside a checkout or with -buildvcs=false, leave it "unknown".
--json prints {"program", "version", "module", "commit", "commit_time",
"modified", "go", "os", "arch"}.

flags:
`

func cmdVersion(ctx context.Context, std stdio, args []string) int {
	fs := newFlagSet("version", versionHelp)
	asJSON := fs.Bool("json", false, "print the version as JSON")
	if code, ok := parseFlags(fs, args, std); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(std.stderr, "%s version: unexpected argument %q\n", prog, fs.Arg(0))
		return exitUsage
	}
	bi, _ := debug.ReadBuildInfo()
	if *asJSON {
		return printJSON(std, versionOf(bi))
	}
	fmt.Fprint(std.stdout, versionText(bi))
	return exitOK
}

// buildVersion is what the binary knows of its build.
type buildVersion struct {
	Program    string `json:"program"`
	Version    string `json:"version"`
	Module     string `json:"module,omitempty"` // go install …@version
	Commit     string `json:"commit"`           // "unknown" without VCS information
	CommitTime string `json:"commit_time,omitempty"`
	Modified   bool   `json:"modified"`
	Go         string `json:"go"`
	OS         string `json:"os"`
	Arch       string `json:"arch"`
}

// versionOf reads the build information (nil when there is none).
func versionOf(bi *debug.BuildInfo) buildVersion {
	v := buildVersion{Program: prog, Version: switchboard.Version, Commit: "unknown", Go: runtime.Version(),
		OS: runtime.GOOS, Arch: runtime.GOARCH}
	if bi == nil {
		return v
	}
	if m := bi.Main.Version; m != "" && m != "(devel)" {
		v.Module = m
	}
	if bi.GoVersion != "" {
		v.Go = bi.GoVersion
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Commit = s.Value
		case "vcs.time":
			v.CommitTime = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

// versionText is what version prints, from the binary's build
// information (nil when there is none).
func versionText(bi *debug.BuildInfo) string {
	b := versionOf(bi)
	v := b.Program + " " + b.Version
	if b.Module != "" {
		v += " (module " + b.Module + ")" // go install …@version: the module's version
	}
	commit := b.Commit
	if commit != "unknown" {
		switch {
		case b.CommitTime != "" && b.Modified:
			commit += " (" + b.CommitTime + ", modified)"
		case b.CommitTime != "":
			commit += " (" + b.CommitTime + ")"
		case b.Modified:
			commit += " (modified)"
		}
	}
	return fmt.Sprintf("%s\ncommit: %s\ngo: %s %s/%s\n", v, commit, b.Go, b.OS, b.Arch)
}
