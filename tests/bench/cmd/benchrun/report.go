package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
)

// sample is one repetition of one cell.
type sample struct {
	Values map[string]float64 `json:"values"`
	Lost   int64              `json:"lost,omitempty"`
	Notes  []string           `json:"notes,omitempty"`
}

// stat is one metric over the repetitions of a cell.
type stat struct {
	Median float64   `json:"median"`
	Min    float64   `json:"min"`
	Max    float64   `json:"max"`
	Values []float64 `json:"values"`
	Noisy  bool      `json:"noisy,omitempty"` // (max − min) / median > noisyAt
}

const noisyAt = 0.20

// cell is one workload on one peer.
type cell struct {
	Workload string           `json:"workload"`
	Peer     string           `json:"peer"`
	Status   string           `json:"status,omitempty"` // empty when measured: n/a, unavailable or error otherwise
	Stats    map[string]*stat `json:"stats,omitempty"`
	Lost     int64            `json:"lost,omitempty"` // summed over repetitions
	Notes    []string         `json:"notes,omitempty"`
	Samples  []*sample        `json:"samples,omitempty"`
}

func (c *cell) summarize() {
	if len(c.Samples) == 0 {
		if c.Status == "" {
			c.Status = "error: no repetition finished"
		}
		return
	}
	c.Stats = map[string]*stat{}
	seen := map[string]bool{}
	for _, s := range c.Samples {
		c.Lost += s.Lost
		for _, n := range s.Notes {
			if !seen[n] {
				seen[n] = true
				c.Notes = append(c.Notes, n)
			}
		}
		for k, v := range s.Values {
			if c.Stats[k] == nil {
				c.Stats[k] = &stat{}
			}
			c.Stats[k].Values = append(c.Stats[k].Values, v)
		}
	}
	for _, st := range c.Stats {
		v := slices.Clone(st.Values)
		slices.Sort(v)
		st.Min, st.Max = v[0], v[len(v)-1]
		if n := len(v); n%2 == 1 {
			st.Median = v[n/2]
		} else {
			st.Median = (v[n/2-1] + v[n/2]) / 2
		}
		st.Noisy = len(v) > 1 && st.Median != 0 && (st.Max-st.Min)/math.Abs(st.Median) > noisyAt
	}
}

func (c *cell) summary() string {
	if c.Status != "" {
		return c.Status
	}
	w := workloadByKey(c.Workload)
	var parts []string
	for _, m := range w.metrics {
		if st := c.Stats[m.key]; st != nil {
			parts = append(parts, fmt.Sprintf("%s %s %s", m.label, num(st.Median*m.scale), m.unit))
		}
	}
	if c.Lost > 0 {
		parts = append(parts, fmt.Sprintf("LOST %d", c.Lost))
	}
	return strings.Join(parts, ", ")
}

type runConfig struct {
	Command   string `json:"command"`
	Duration  string `json:"duration_per_rep"`
	Reps      int    `json:"reps"`
	IdleConns int    `json:"idle_connections"`
	CPUs      string `json:"cpus,omitempty"`
	Smoke     bool   `json:"smoke"`
	Started   string `json:"started"`
	Finished  string `json:"finished"`
}

type peerInfo struct {
	Name  string `json:"name"`
	Label string `json:"label"`
}

type report struct {
	Machine  map[string]string `json:"machine"`
	Versions map[string]string `json:"versions"`
	Config   runConfig         `json:"config"`
	Peers    []peerInfo        `json:"peers"`
	Cells    []*cell           `json:"cells"`
}

func (r *report) cell(w, p string) *cell {
	for _, c := range r.Cells {
		if c.Workload == w && c.Peer == p {
			return c
		}
	}
	return nil
}

func (r *report) write(dir string) error {
	j, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(j, '\n'), 0o644); err != nil {
		return err
	}
	md := r.markdown()
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(md), 0o644); err != nil {
		return err
	}
	fmt.Print(md)
	if err := os.WriteFile(filepath.Join(dir, "rpc-latency.svg"), []byte(r.latencyChart()), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "throughput.svg"), []byte(r.throughputChart()), 0o644)
}

func (r *report) markdown() string {
	var b strings.Builder
	title := "Peer benchmarks"
	if r.Config.Smoke {
		title += " (SMOKE RUN: tiny durations, one repetition; the numbers mean nothing)"
	}
	fmt.Fprintf(&b, "# %s\n\n", title)
	fmt.Fprintf(&b, "Command: `%s`  \nStarted %s, finished %s; %s per repetition, %d repetition(s) per cell",
		r.Config.Command, r.Config.Started, r.Config.Finished, r.Config.Duration, r.Config.Reps)
	if r.Config.CPUs != "" {
		fmt.Fprintf(&b, "; every process pinned to CPUs %s", r.Config.CPUs)
	}
	b.WriteString(".\n\n")
	b.WriteString("Machine: ")
	b.WriteString(joinMap(r.Machine))
	b.WriteString(".  \nVersions: ")
	b.WriteString(joinMap(r.Versions))
	b.WriteString(".\n\n")
	b.WriteString("Each cell: median of the repetitions, (min–max), and ×ratio to Switchboard (peer ÷ Switchboard: " +
		"above 1 is slower for latency and memory, faster for rates). † marks a noisy cell (spread over 20 % of the median); " +
		"**lost N** marks messages that were asked for or sent and never received.\n\n")

	b.WriteString("| workload | metric |")
	for _, p := range r.Peers {
		fmt.Fprintf(&b, " %s |", p.Label)
	}
	b.WriteString("\n| --- | --- |")
	for range r.Peers {
		b.WriteString(" --- |")
	}
	b.WriteString("\n")
	var noisy, notes []string
	for _, w := range allWorkloads {
		if len(r.cellsOf(w.key)) == 0 {
			continue
		}
		for i, m := range w.metrics {
			name := ""
			if i == 0 {
				name = w.title
			}
			fmt.Fprintf(&b, "| %s | %s (%s) |", name, m.label, m.unit)
			base := r.cell(w.key, "switchboard")
			for _, p := range r.Peers {
				c := r.cell(w.key, p.Name)
				b.WriteString(" " + cellText(c, base, m, i == 0) + " |")
				if c != nil && c.Stats[m.key] != nil && c.Stats[m.key].Noisy {
					noisy = append(noisy, fmt.Sprintf("%s/%s/%s", w.key, p.Name, m.key))
				}
				if i == 0 && c != nil {
					for _, n := range c.Notes {
						notes = append(notes, fmt.Sprintf("%s, %s: %s", w.title, p.Label, n))
					}
				}
			}
			b.WriteString("\n")
		}
	}
	b.WriteString("\n")
	if len(noisy) > 0 {
		fmt.Fprintf(&b, "**Noisy run:** %d cell(s) spread over 20 %%: %s.\n\n", len(noisy), strings.Join(noisy, ", "))
	} else if r.Config.Reps > 1 {
		b.WriteString("No cell's repetitions spread over 20 %.\n\n")
	}
	b.WriteString("Notes: NATS and D-Bus have no server-side application, so their RPC rows go from the client through the broker " +
		"to a responder process (three processes), like their peer-to-peer row. NATS listens on loopback TCP (it has no Unix socket " +
		"listener). Events and fan-out use credit: the receiver asks for windows of 500 (64 B) or 16 (64 KiB) messages, two in flight. " +
		"godbus marshals a byte array one element at a time through reflection, so D-Bus's 64 KiB rows are bound by the clients' CPU " +
		"more than by dbus-daemon. libqb clients ask for a 1 MiB max_msg_size (libqb has no default), which sizes its shm rings. " +
		"shmipc-go runs with its defaults (shmipc.DefaultConfig on the server, DefaultSessionManagerConfig on the client: one session, " +
		"a 32 MiB buffer, an 8192-entry queue), one stream per client for the whole run, the Unix socket peer's frames written with the " +
		"stream's BufferWriter and read in place with its BufferReader; its clients map with MemMapTypeMemFd, as shmipc's examples do. " +
		"Switchboard's events receiver asks for each window with Send (no reply, as the Unix socket, shmipc-go and bare shm " +
		"receivers ask; libqb's requests have replies) and takes the events in batches of up to 256 (or 256 KiB) with RecvEvents " +
		"(it reads the event ring itself, into buffers reused from batch to batch), as a user after throughput would; the other " +
		"peers read one message at a time, as their APIs do. " +
		"Switchboard's peer-to-peer row uses direct channels (WithDirectPeers), which the node brokers after the first routed request. " +
		"The cross-node rows (x-) run two nodes linked on loopback TCP: Switchboard nodes with [cluster] links (protoactor-go remote), " +
		"NATS servers joined by a route; the client on node A requests a responder on node B, or publishes to a subject (group) whose " +
		"one subscriber is on node B, with the fan-out rows' credit (windows acknowledged by the subscriber, two in flight); the " +
		"subscriber checks every message's sequence number.\n")
	for _, n := range notes {
		b.WriteString("- " + n + "\n")
	}
	b.WriteString("\nCharts: ![RPC latency](rpc-latency.svg) ![throughput](throughput.svg)\n")
	return b.String()
}

func (r *report) cellsOf(w string) []*cell {
	var cs []*cell
	for _, c := range r.Cells {
		if c.Workload == w {
			cs = append(cs, c)
		}
	}
	return cs
}

// cellText is one table cell: the median, the spread, the ratio.
func cellText(c, base *cell, m metric, first bool) string {
	if c == nil {
		return ""
	}
	if c.Status != "" {
		if first {
			return c.Status
		}
		return ""
	}
	st := c.Stats[m.key]
	if st == nil || math.IsNaN(st.Median) {
		return "–"
	}
	s := num(st.Median * m.scale)
	if len(st.Values) > 1 {
		s += fmt.Sprintf(" (%s–%s)", num(st.Min*m.scale), num(st.Max*m.scale))
	}
	if base != nil && base.Status == "" && base.Stats[m.key] != nil && base.Stats[m.key].Median != 0 && c != base {
		s += fmt.Sprintf(" ×%.2f", st.Median/base.Stats[m.key].Median)
	}
	if st.Noisy {
		s += " †"
	}
	if first && c.Lost > 0 {
		s += fmt.Sprintf(" **lost %d**", c.Lost)
	}
	return s
}

// num prints three significant digits.
func num(v float64) string {
	switch a := math.Abs(v); {
	case a == 0:
		return "0"
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

func joinMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + " " + m[k]
	}
	return strings.Join(parts, "; ")
}

// machine describes this machine.
func machine() map[string]string {
	m := map[string]string{"nproc": fmt.Sprint(runtime.NumCPU())}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m["kernel"] = "Linux " + strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m["cpu"] = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		m["memory"] = strings.Join(strings.Fields(strings.TrimPrefix(line, "MemTotal:")), " ")
	}
	return m
}

// versions names the version of each peer: Go modules from benchpeer's
// build information, the rest from the installed programs.
func versions(c *config) map[string]string {
	v := map[string]string{"go": runtime.Version()}
	if out, err := exec.Command("go", "version", "-m", c.binPath("benchpeer")).Output(); err == nil {
		want := map[string]string{
			"github.com/nats-io/nats-server/v2": "nats-server",
			"github.com/nats-io/nats.go":        "nats.go",
			"google.golang.org/grpc":            "grpc-go",
			"github.com/godbus/dbus/v5":         "godbus",
			"github.com/cloudwego/shmipc-go":    "shmipc-go",
		}
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) >= 3 && f[0] == "dep" {
				if name := want[f[1]]; name != "" {
					v[name] = f[2]
				}
			}
		}
	}
	if _, ok := c.unavail["libqb-shm"]; !ok {
		v["libqb"] = installedVersion("pkg-config", "--modversion", "libqb")
	}
	v["dbus-daemon"] = strings.TrimPrefix(installedVersion("dbus-daemon", "--version"), "D-Bus Message Bus Daemon ")
	rev := installedVersion("git", "-C", c.repo, "describe", "--always", "--dirty")
	v["switchboard"] = rev
	return v
}
