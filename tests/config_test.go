package tests

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ with what the tests got")

// golden compares got with testdata/name, or rewrites it under -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s ./tests -update to create it)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("%s differs from the golden file (go test -run '%s' ./tests -update rewrites it)\ngot:\n%s\nwant:\n%s", path, t.Name(), got, want)
	}
}

// TestConfigErrorsNameTheKey: a configuration the node cannot use is
// refused at start, with exit code 2 and an error naming the key.
func TestConfigErrorsNameTheKey(t *testing.T) {
	cases := []struct {
		name   string
		config string
		env    []string
		args   []string
		want   string
	}{
		{name: "unknown key", config: "[events]\nqueue_limt = 3\n", want: "config: events.queue_limt: unknown key"},
		{name: "unknown table", config: "[logging]\nlevel = \"info\"\n", want: "config: logging, logging.level: unknown key"},
		{name: "negative", config: "[events]\nqueue_limit = -1\n", want: "config: events.queue_limit: must be >= 0"},
		{name: "wrong type", config: "[events]\nqueue_limit = \"many\"\n", want: "config: events.queue_limit: "},
		{name: "bad duration", config: "handshake_timeout = \"soon\"\n", want: "config: handshake_timeout: "},
		{name: "duration without a unit", config: "handshake_timeout = 5\n", want: "config: handshake_timeout: "},
		{name: "bad procs", config: "procs = \"two\"\n", want: "config: procs: must be auto, adaptive or fixed, not \"two\""},
		{name: "bad enum", config: "[events]\noverflow = \"explode\"\n", want: "config: events.overflow: must be drop-oldest or disconnect"},
		{name: "ring not a power of two", config: "[rings]\nevent = 100000\n", want: "config: rings.event: must be a power of two"},
		{name: "bad log level", config: "[log]\nlevel = \"loud\"\n", want: "config: log.level: "},
		{name: "bad metrics address", config: "[metrics]\nlisten = \"unix:relative.sock\"\n", want: "config: metrics.listen: "},
		{name: "syntax", config: "name = \n", want: "config: name: "},
		{name: "policy pattern", config: "[[policy.group]]\ngroup = \"a*b\"\npublish = { uids = [0] }\n", want: "config: policy.group[0].group: "},
		{name: "policy service id", config: "[[policy.service]]\nid = 70000\ncall = { uids = [0] }\n", want: "config: policy.service[0].id: "},
		{name: "policy rule key", config: "[[policy.service]]\nid = 7\ncall = { uid = [0] }\n", want: "config: policy.service.call.uid: unknown key"},
		{name: "policy no action", config: "[[policy.name]]\nname = \"org.x\"\n", want: "config: policy.name[0]: names no action"},
		{name: "socket mode not octal", config: "socket_mode = \"0999\"\n", want: "config: socket_mode: must be permission bits in octal"},
		{name: "socket mode setuid", args: []string{"--socket-mode", "4755"}, want: "config: socket_mode: must be permission bits in octal"},
		{name: "socket group unknown", env: []string{"SWITCHBOARD_SOCKET_GROUP=no-such-group-sb"}, want: `config: socket_group: no group "no-such-group-sb"`},
		{name: "from the environment", env: []string{"SWITCHBOARD_EVENTS_QUEUE_LIMIT=lots"}, want: "config: events.queue_limit (from $SWITCHBOARD_EVENTS_QUEUE_LIMIT): not an integer"},
		{name: "from a flag", args: []string{"--events-queue-limit", "-5"}, want: "config: events.queue_limit: must be >= 0"},
		{name: "cluster listen without TLS", args: []string{"--cluster-enabled=true", "--cluster-listen", "10.1.2.3:7946"}, want: "config: cluster.listen: \"10.1.2.3:7946\" is not a loopback address: TLS is required"},
		{name: "cluster half TLS", env: []string{"SWITCHBOARD_CLUSTER_ENABLED=true", "SWITCHBOARD_CLUSTER_TLS_CERT=/x.pem"}, want: "config: cluster.tls_cert, cluster.tls_key, cluster.tls_ca: "},
		{name: "cluster peer off loopback without TLS", args: []string{"--cluster-enabled=true", "--cluster-peers", "127.0.0.1:7947,10.1.2.4:7946"}, want: `config: cluster.peers: "10.1.2.4:7946" is not a loopback address: TLS is required`},
		{name: "cluster link timeout past the stall timeout", args: []string{"--cluster-enabled=true", "--cluster-link-timeout", "15s"}, want: "config: cluster.stall_timeout: must be at least the link timeout (15s), not 10s"},
		{name: "cluster bad peer", config: "[cluster]\nenabled = true\npeers = [\"nohost\"]\n", want: "config: cluster.peers: "},
		{name: "cluster bad overflow", config: "[cluster]\nenabled = true\noverflow = \"drop\"\n", want: "config: cluster.overflow: must be error or disconnect"},
		{name: "cluster budget", args: []string{"--cluster-enabled", "true", "--cluster-link-budget", "1024"}, want: "config: cluster.link_budget: "},
		{name: "cluster without a secret", args: []string{"--cluster-enabled=true"}, want: "config: cluster.secret_file: required without TLS"},
		{name: "cluster secret readable by others", config: "[cluster]\nenabled = true\nsecret_file = \"/etc/passwd\"\n", want: "config: cluster.secret_file: /etc/passwd is accessible by group or others"},
		{name: "cluster discovery unknown", args: []string{"--cluster-enabled=true", "--cluster-discovery", "consul"}, want: `config: cluster.discovery: must be "" (the peers only), etcd or dns, not "consul"`},
		{name: "cluster dns interval", config: "[cluster]\nenabled = true\ndiscovery = \"dns\"\ndns_name = \"sb.example\"\ndns_interval = \"1ms\"\n", want: "config: cluster.dns_interval: must be at least 100ms"},
		{name: "cluster dns key with etcd", env: []string{"SWITCHBOARD_CLUSTER_ENABLED=true", "SWITCHBOARD_CLUSTER_DISCOVERY=etcd", "SWITCHBOARD_CLUSTER_DNS_PORT=7946"}, want: "config: cluster.dns_port: set, but cluster.discovery is not dns"},
		{name: "cluster discovery misspelt", config: "[cluster]\nenabled = true\ndiscovery = \"DNS\"\ndns_name = \"sb.example\"\n", want: `config: cluster.discovery: must be "" (the peers only), etcd or dns, not "DNS"`},
		{name: "cluster dns without a name", args: []string{"--cluster-enabled=true", "--cluster-discovery=dns"}, want: "config: cluster.dns_name: must be a DNS name"},
		{name: "cluster etcd without endpoints", config: "[cluster]\nenabled = true\ndiscovery = \"etcd\"\n", want: "config: cluster.etcd_endpoints: none given"},
		{name: "cluster etcd endpoints unused", env: []string{"SWITCHBOARD_CLUSTER_ENABLED=true", "SWITCHBOARD_CLUSTER_ETCD_ENDPOINTS=http://127.0.0.1:2379"}, want: "config: cluster.etcd_endpoints: set, but cluster.discovery is not etcd"},
		{name: "cluster etcd ttl", config: "[cluster]\nenabled = true\ndiscovery = \"etcd\"\netcd_endpoints = [\"http://127.0.0.1:2379\"]\netcd_ttl = \"1500ms\"\n", want: "config: cluster.etcd_ttl: must be whole seconds, at least 2s"},
		{name: "cluster etcd password readable by others", config: "[cluster]\nenabled = true\ndiscovery = \"etcd\"\netcd_endpoints = [\"http://127.0.0.1:2379\"]\netcd_username = \"sb\"\netcd_password_file = \"/etc/passwd\"\n", want: "config: cluster.etcd_password_file: /etc/passwd is accessible by group or others"},
		{name: "cluster enabled not a bool", env: []string{"SWITCHBOARD_CLUSTER_ENABLED=yes"}, want: "config: cluster.enabled (from $SWITCHBOARD_CLUSTER_ENABLED): not true or false"},
		{name: "missing file", args: []string{"--config", "/nonexistent/node.toml"}, want: "config: open /nonexistent/node.toml"},
	}
	dir := t.TempDir()
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"serve", "--socket", filepath.Join(dir, "never.sock")}
			if tc.config != "" {
				path := filepath.Join(dir, "c"+string(rune('a'+i))+".toml")
				if err := os.WriteFile(path, []byte(tc.config), 0o644); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--config", path)
			}
			r := runCLI(t, tc.env, append(args, tc.args...)...)
			if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q; want exit 2 and %q", r.code, r.stderr, tc.want)
			}
		})
	}
}

// TestConfigPrintDefault: the embedded default configuration, as
// `serve --print-config` prints it, matches testdata/print-config.golden.
func TestConfigPrintDefault(t *testing.T) {
	r := runCLI(t, []string{"SWITCHBOARD_SOCKET=/run/switchboard/node.sock"}, "serve", "--print-config")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	golden(t, "print-config.golden", r.stdout)
}

// TestConfigPrecedence: flags override the environment, which overrides
// the file, which overrides the default; and what --print-config prints
// loads back to itself.
func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "node.toml")
	config := `name = "fromfile"
max_message = 1024
[log]
format = "json"
[policy]
default = "deny"
[policy.connect]
gids = [0, 100]
[[policy.service]]
id = 65535
call = { all = true }
[[policy.group]]
group = "sys.*"
publish = { uids = [0] }
subscribe = { gids = [10] }
`
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	get := func(r cliResult, key string) string {
		t.Helper()
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		for _, line := range strings.Split(r.stdout, "\n") {
			if k, v, ok := strings.Cut(line, " = "); ok && k == key {
				return v
			}
		}
		t.Fatalf("no %s in\n%s", key, r.stdout)
		return ""
	}
	sock := "--socket=" + filepath.Join(dir, "n.sock")
	file := runCLI(t, nil, "serve", sock, "--config", path, "--print-config")
	if v := get(file, "name"); v != `"fromfile"` {
		t.Errorf("file: name = %s", v)
	}
	if v := get(file, "max_message"); v != "1024" {
		t.Errorf("file: max_message = %s", v)
	}
	env := runCLI(t, []string{"SWITCHBOARD_NAME=fromenv", "SWITCHBOARD_LOG_FORMAT=text"}, "serve", sock, "--config", path, "--print-config")
	if v := get(env, "name"); v != `"fromenv"` {
		t.Errorf("env over file: name = %s", v)
	}
	if v := get(env, "format"); v != `"text"` {
		t.Errorf("env over file: log.format = %s", v)
	}
	flagged := runCLI(t, []string{"SWITCHBOARD_NAME=fromenv"}, "serve", sock, "--config", path, "--name", "fromflag", "--print-config")
	if v := get(flagged, "name"); v != `"fromflag"` {
		t.Errorf("flag over env: name = %s", v)
	}
	// Round trip: the printed configuration loads, and prints the same.
	again := filepath.Join(dir, "again.toml")
	if err := os.WriteFile(again, []byte(file.stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := runCLI(t, nil, "serve", "--config", again, "--print-config"); r.code != 0 || r.stdout != file.stdout {
		t.Errorf("printed configuration does not load back to itself: exit %d %s\nfirst:\n%s\nagain:\n%s", r.code, r.stderr, file.stdout, r.stdout)
	}
}

// TestConfigExampleLoads: the example configuration for systemd loads.
func TestConfigExampleLoads(t *testing.T) {
	r := runCLI(t, nil, "serve", "--config", "../examples/systemd/node.toml", "--print-config")
	if r.code != 0 {
		t.Fatalf("examples/systemd/node.toml: exit %d: %s", r.code, r.stderr)
	}
}
