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

flags:
`

func cmdVersion(ctx context.Context, std stdio, args []string) int {
	fs := newFlagSet("version", versionHelp)
	if code, ok := parseFlags(fs, args, std); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(std.stderr, "%s version: unexpected argument %q\n", prog, fs.Arg(0))
		return exitUsage
	}
	bi, _ := debug.ReadBuildInfo()
	fmt.Fprint(std.stdout, versionText(bi))
	return exitOK
}

// versionText is what version prints, from the binary's build
// information (nil when there is none).
func versionText(bi *debug.BuildInfo) string {
	v := prog + " " + switchboard.Version
	commit, goVersion := "unknown", runtime.Version()
	if bi != nil {
		if m := bi.Main.Version; m != "" && m != "(devel)" {
			v += " (module " + m + ")" // go install …@version: the module's version
		}
		if bi.GoVersion != "" {
			goVersion = bi.GoVersion
		}
		var rev, at, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				at = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
		if rev != "" {
			commit = rev
			switch {
			case at != "" && modified == "true":
				commit += " (" + at + ", modified)"
			case at != "":
				commit += " (" + at + ")"
			case modified == "true":
				commit += " (modified)"
			}
		}
	}
	return fmt.Sprintf("%s\ncommit: %s\ngo: %s %s/%s\n", v, commit, goVersion, runtime.GOOS, runtime.GOARCH)
}
