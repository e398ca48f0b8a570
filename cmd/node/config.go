package main

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/bits"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/switchboard-ipc/switchboard"
)

// defaultTOML is the built-in configuration: every setting, with comments.
//
//go:embed default.toml
var defaultTOML string

// Config is the node's configuration: the built-in default, overlaid by a
// TOML file, then by SWITCHBOARD_* environment variables, then by flags.
// The TOML keys are the field tags.
type Config struct {
	Socket           string        `toml:"socket"`
	SocketMode       string        `toml:"socket_mode"`
	SocketGroup      string        `toml:"socket_group"`
	Name             string        `toml:"name"`
	MaxMessage       int64         `toml:"max_message"`
	HandshakeTimeout time.Duration `toml:"handshake_timeout"`
	Procs            string        `toml:"procs"`
	Log              LogConfig     `toml:"log"`
	Rings            RingConfig    `toml:"rings"`
	Events           EventConfig   `toml:"events"`
	Limits           LimitsConfig  `toml:"limits"`
	Metrics          MetricsConfig `toml:"metrics"`
	Policy           PolicyConfig  `toml:"policy"`
	Cluster          ClusterConfig `toml:"cluster"`
}

// LogConfig is the [log] table.
type LogConfig struct {
	Level  string `toml:"level"`
	Format string `toml:"format"`
}

// RingConfig is the [rings] table: default ring sizes in bytes.
type RingConfig struct {
	Request  int64 `toml:"request"`
	Response int64 `toml:"response"`
	Event    int64 `toml:"event"`
	Max      int64 `toml:"max"`
}

// LimitsConfig is the [limits] table: per-uid bounds (0: none).
type LimitsConfig struct {
	ConnectionsPerUID     int64 `toml:"connections_per_uid"`
	HandshakesPerUID      int64 `toml:"handshakes_per_uid"`
	PrivilegedConnections int64 `toml:"privileged_connections"`
	PrivilegedHandshakes  int64 `toml:"privileged_handshakes"`
}

// EventConfig is the [events] table: the per-connection event queue.
type EventConfig struct {
	QueueLimit int64  `toml:"queue_limit"`
	QueueBytes int64  `toml:"queue_bytes"`
	Overflow   string `toml:"overflow"`
}

// MetricsConfig is the [metrics] table.
type MetricsConfig struct {
	Listen           string `toml:"listen"`
	Connections      string `toml:"connections"`
	ConnectionsLimit int64  `toml:"connections_limit"`
}

// PolicyConfig is the [policy] table; see policy.go for how it decides.
type PolicyConfig struct {
	Default  string        `toml:"default"`
	Connect  *Who          `toml:"connect,omitempty"`
	Bus      *BusRules     `toml:"bus,omitempty"`
	Services []ServiceRule `toml:"service,omitempty"`
	Groups   []GroupRule   `toml:"group,omitempty"`
	Names    []NameRule    `toml:"name,omitempty"`
}

// Who lists the processes a rule admits: by uid, by (primary) gid, or all
// (this node's processes); and the other nodes of the cluster whose
// connections it admits, by name ("*": any).
type Who struct {
	All   bool     `toml:"all,omitempty"`
	UIDs  []int64  `toml:"uids,omitempty"`
	GIDs  []int64  `toml:"gids,omitempty"`
	Nodes []string `toml:"nodes,omitempty"`
}

// BusRules covers the actions that have no target: listing connections,
// groups and names, and monitoring the bus.
type BusRules struct {
	List    *Who `toml:"list,omitempty"`
	Monitor *Who `toml:"monitor,omitempty"`
}

// ServiceRule says who may call one node service.
type ServiceRule struct {
	ID   *int64 `toml:"id"`
	Call *Who   `toml:"call,omitempty"`
}

// GroupRule says who may publish to, subscribe to, or list the members of
// a group, or of the groups matching a prefix ending in "*".
type GroupRule struct {
	Group     string `toml:"group"`
	Publish   *Who   `toml:"publish,omitempty"`
	Subscribe *Who   `toml:"subscribe,omitempty"`
	List      *Who   `toml:"list,omitempty"`
}

// NameRule says who may own a well-known name, or send to it, for a name
// (or an address such as :n1.mx2z3pcd1ldw.4) or a prefix ending in "*".
type NameRule struct {
	Name string `toml:"name"`
	Own  *Who   `toml:"own,omitempty"`
	Send *Who   `toml:"send,omitempty"`
}

// setting is one scalar configuration key, settable from the
// environment and from a flag as well as from the file.
type setting struct {
	key   string // TOML key, dotted
	usage string
	live  bool // a SIGHUP reload applies it; the others need a restart
	field func(*Config) any
}

// env is the setting's environment variable: SWITCHBOARD_LOG_LEVEL.
func (s setting) env() string {
	return "SWITCHBOARD_" + strings.ToUpper(strings.NewReplacer(".", "_").Replace(s.key))
}

// flag is the setting's flag name: log-level.
func (s setting) flag() string {
	return strings.NewReplacer(".", "-", "_", "-").Replace(s.key)
}

var settings = []setting{
	{key: "socket", usage: "the node's Unix socket `path`", field: func(c *Config) any { return &c.Socket }},
	{key: "socket_mode", usage: "the socket's permission bits, in octal (`mode` like 0660; \"\": 0600, or 0660 with a socket group)", field: func(c *Config) any { return &c.SocketMode }},
	{key: "socket_group", usage: "the `group` (name or gid) given the socket and the directory the node creates for it (\"\": none)", field: func(c *Config) any { return &c.SocketGroup }},
	{key: "name", usage: "node `name` (addresses are :NAME.RUN.ID)", field: func(c *Config) any { return &c.Name }},
	{key: "max_message", usage: "largest message in `bytes`", field: func(c *Config) any { return &c.MaxMessage }},
	{key: "handshake_timeout", usage: "how long a client may take to say Hello (a `duration`: 2s, 500ms)", field: func(c *Config) any { return &c.HandshakeTimeout }},
	{key: "procs", usage: "the node's Go Ps: `auto` (adaptive with the cluster on and GOMAXPROCS unset, else fixed), adaptive (one while that is enough, all when busy), fixed (Go's GOMAXPROCS)", field: func(c *Config) any { return &c.Procs }},
	{key: "log.level", usage: "log `level`: debug, info, warn, error", live: true, field: func(c *Config) any { return &c.Log.Level }},
	{key: "log.format", usage: "log `format`: text or json", field: func(c *Config) any { return &c.Log.Format }},
	{key: "rings.request", usage: "request ring `bytes` (a power of two)", field: func(c *Config) any { return &c.Rings.Request }},
	{key: "rings.response", usage: "response ring `bytes` (a power of two)", field: func(c *Config) any { return &c.Rings.Response }},
	{key: "rings.event", usage: "event ring `bytes` (a power of two)", field: func(c *Config) any { return &c.Rings.Event }},
	{key: "limits.connections_per_uid", usage: "connections one uid may hold (`n`; 0: no limit)", field: func(c *Config) any { return &c.Limits.ConnectionsPerUID }},
	{key: "limits.handshakes_per_uid", usage: "handshakes one uid may have in progress (`n`; 0: no limit)", field: func(c *Config) any { return &c.Limits.HandshakesPerUID }},
	{key: "limits.privileged_connections", usage: "connections root or the node's uid may hold (`n`; 0: no limit)", field: func(c *Config) any { return &c.Limits.PrivilegedConnections }},
	{key: "limits.privileged_handshakes", usage: "handshakes root or the node's uid may have in progress (`n`; 0: no limit)", field: func(c *Config) any { return &c.Limits.PrivilegedHandshakes }},
	{key: "rings.max", usage: "largest ring a client may ask for, in `bytes` (a power of two; larger requests are clamped)", field: func(c *Config) any { return &c.Rings.Max }},
	{key: "events.queue_limit", usage: "`events` queued for a slow client, at most", field: func(c *Config) any { return &c.Events.QueueLimit }},
	{key: "events.queue_bytes", usage: "event `bytes` queued for a slow client, at most", field: func(c *Config) any { return &c.Events.QueueBytes }},
	{key: "events.overflow", usage: "past the queue: `drop-oldest` or disconnect", field: func(c *Config) any { return &c.Events.Overflow }},
	{key: "metrics.listen", usage: "serve Prometheus metrics on `address` HOST:PORT or unix:PATH (\"\" is off)", field: func(c *Config) any { return &c.Metrics.Listen }},
	{key: "metrics.connections", usage: "per-connection series: `off`, client (summed by client name) or top (the busiest connections)", field: func(c *Config) any { return &c.Metrics.Connections }},
	{key: "metrics.connections_limit", usage: "client names (client) or connections (top) given series, at most (`n`)", field: func(c *Config) any { return &c.Metrics.ConnectionsLimit }},
	{key: "policy.default", usage: "what an action no policy rule covers gets: `allow` or deny", live: true, field: func(c *Config) any { return &c.Policy.Default }},
	{key: "cluster.enabled", usage: "link this node to the other nodes of its cluster (`true` or false)", field: func(c *Config) any { return &c.Cluster.Enabled }},
	{key: "cluster.name", usage: "the cluster's `name`: nodes of another cluster are refused", field: func(c *Config) any { return &c.Cluster.Name }},
	{key: "cluster.listen", usage: "where the node's link server listens, `HOST:PORT` (not loopback: TLS required)", field: func(c *Config) any { return &c.Cluster.Listen }},
	{key: "cluster.advertise", usage: "the `HOST:PORT` the other nodes reach this one at (\"\": cluster.listen)", field: func(c *Config) any { return &c.Cluster.Advertise }},
	{key: "cluster.peers", usage: "the other nodes' addresses, `HOST:PORT,...` (not loopback: TLS required)", field: func(c *Config) any { return &c.Cluster.Peers }},
	{key: "cluster.heartbeat", usage: "how often each link says it is alive (a `duration`)", field: func(c *Config) any { return &c.Cluster.Heartbeat }},
	{key: "cluster.link_timeout", usage: "a link silent this long (a `duration`) is declared down", field: func(c *Config) any { return &c.Cluster.LinkTimeout }},
	{key: "cluster.stall_timeout", usage: "a link holding unacknowledged messages this long (a `duration`), none acknowledged, is declared down", field: func(c *Config) any { return &c.Cluster.StallTimeout }},
	{key: "cluster.link_budget", usage: "unacknowledged `bytes` one link may hold", field: func(c *Config) any { return &c.Cluster.LinkBudget }},
	{key: "cluster.overflow", usage: "past the link budget: `error` (the message is refused) or disconnect (the link is)", field: func(c *Config) any { return &c.Cluster.Overflow }},
	{key: "cluster.tls_cert", usage: "the node's certificate, a PEM `file`", field: func(c *Config) any { return &c.Cluster.TLSCert }},
	{key: "cluster.tls_key", usage: "the node's private key, a PEM `file`", field: func(c *Config) any { return &c.Cluster.TLSKey }},
	{key: "cluster.tls_ca", usage: "the CA every node's certificate chains to, a PEM `file`", field: func(c *Config) any { return &c.Cluster.TLSCA }},
	{key: "cluster.secret_file", usage: "the cluster's secret, a `file` only the node's user may read (required without TLS)", field: func(c *Config) any { return &c.Cluster.SecretFile }},
	{key: "cluster.discovery", usage: "where to find the other nodes beyond the peers: `\"\"` (nowhere), etcd or dns", field: func(c *Config) any { return &c.Cluster.Discovery }},
	{key: "cluster.etcd_endpoints", usage: "etcd's client `URLs`, http://HOST:PORT,... (discovery = etcd)", field: func(c *Config) any { return &c.Cluster.EtcdEndpoints }},
	{key: "cluster.etcd_prefix", usage: "the etcd `directory` the nodes register under (its subdirectory named after the cluster)", field: func(c *Config) any { return &c.Cluster.EtcdPrefix }},
	{key: "cluster.etcd_ttl", usage: "how long a dead node's registration outlives it (a `duration`, whole seconds)", field: func(c *Config) any { return &c.Cluster.EtcdTTL }},
	{key: "cluster.etcd_username", usage: "the etcd `user` to authenticate as (\"\": none)", field: func(c *Config) any { return &c.Cluster.EtcdUsername }},
	{key: "cluster.etcd_password_file", usage: "that user's password, a `file` only the node's user may read", field: func(c *Config) any { return &c.Cluster.EtcdPasswordFile }},
	{key: "cluster.etcd_tls_cert", usage: "the node's client certificate for etcd, a PEM `file`", field: func(c *Config) any { return &c.Cluster.EtcdTLSCert }},
	{key: "cluster.etcd_tls_key", usage: "its private key, a PEM `file`", field: func(c *Config) any { return &c.Cluster.EtcdTLSKey }},
	{key: "cluster.dns_name", usage: "the DNS `name` whose A records are the nodes, as a Kubernetes headless Service's (discovery = dns)", field: func(c *Config) any { return &c.Cluster.DNSName }},
	{key: "cluster.dns_port", usage: "the `port` the nodes found in DNS listen on (0: this node's advertised port)", field: func(c *Config) any { return &c.Cluster.DNSPort }},
	{key: "cluster.dns_interval", usage: "how often the DNS name is resolved (a `duration`)", field: func(c *Config) any { return &c.Cluster.DNSInterval }},
	{key: "cluster.etcd_tls_ca", usage: "the CA etcd's certificate chains to, a PEM `file` (\"\": the system's)", field: func(c *Config) any { return &c.Cluster.EtcdTLSCA }},
}

// value returns the setting's value in c as text.
func (s setting) value(c *Config) string {
	switch p := s.field(c).(type) {
	case *string:
		return *p
	case *int64:
		return strconv.FormatInt(*p, 10)
	case *time.Duration:
		return p.String()
	case *bool:
		return strconv.FormatBool(*p)
	case *[]string:
		return strings.Join(*p, ",")
	}
	panic("config: setting " + s.key + " has an unknown type")
}

// set parses v into the setting's field in c.
func (s setting) set(c *Config, v string) error {
	switch p := s.field(c).(type) {
	case *string:
		*p = v
	case *int64:
		n, err := strconv.ParseInt(strings.TrimSpace(v), 0, 64)
		if err != nil {
			return fmt.Errorf("not an integer: %q", v)
		}
		*p = n
	case *time.Duration:
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("not a duration (like 2s or 500ms): %q", v)
		}
		*p = d
	case *bool:
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("not true or false: %q", v)
		}
		*p = b
	case *[]string:
		*p = nil
		for f := range strings.SplitSeq(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				*p = append(*p, f)
			}
		}
	default:
		panic("config: setting " + s.key + " has an unknown type")
	}
	return nil
}

// override is a setting given on the command line.
type override struct {
	s     setting
	value string
}

// loader builds the effective configuration; it keeps what it was given
// so that SIGHUP can build it again from a changed file.
type loader struct {
	path      string                       // the --config file, "" for none
	lookupEnv func(string) (string, bool)  // os.LookupEnv
	flags     []override                   // in command-line order
	socket    func() string                // where "" puts the socket: switchboard.DefaultSocketPath
	fileData  func(string) ([]byte, error) // os.ReadFile
}

func newLoader(path string, flags []override) *loader {
	if path != "" {
		if abs, err := filepath.Abs(path); err == nil {
			path = abs // a reload reads the same file whatever the working directory
		}
	}
	return &loader{path: path, lookupEnv: os.LookupEnv, flags: flags, socket: switchboard.DefaultSocketPath, fileData: os.ReadFile}
}

// defaultConfig returns the built-in configuration.
func defaultConfig() *Config {
	var c Config
	if _, err := toml.Decode(defaultTOML, &c); err != nil {
		panic("config: the built-in default.toml does not parse: " + err.Error())
	}
	return &c
}

// load builds and validates the configuration, and compiles its policy.
func (l *loader) load() (*Config, *policy, error) {
	c := defaultConfig()
	if l.path != "" {
		data, err := l.fileData(l.path)
		if err != nil {
			return nil, nil, fmt.Errorf("config: %w", err)
		}
		if err := decodeFile(l.path, data, c); err != nil {
			return nil, nil, err
		}
	}
	for _, s := range settings {
		if v, ok := l.lookupEnv(s.env()); ok {
			if err := s.set(c, v); err != nil {
				return nil, nil, fmt.Errorf("config: %s (from $%s): %w", s.key, s.env(), err)
			}
		}
	}
	for _, o := range l.flags {
		if err := o.s.set(c, o.value); err != nil {
			return nil, nil, fmt.Errorf("config: %s (from --%s): %w", o.s.key, o.s.flag(), err)
		}
	}
	if c.Socket == "" {
		c.Socket = l.socket()
	}
	p, err := c.validate()
	if err != nil {
		return nil, nil, err
	}
	return c, p, nil
}

// decodeFile overlays the TOML in data onto c, refusing unknown keys.
func decodeFile(path string, data []byte, c *Config) error {
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(c)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			where := fmt.Sprintf("%s:%d", path, pe.Position.Line)
			if pe.LastKey != "" {
				return fmt.Errorf("config: %s: %s: %s", pe.LastKey, where, pe.Message)
			}
			return fmt.Errorf("config: %s: %s", where, pe.Message)
		}
		// Type errors are plain: "toml: line 2 (last key "a.b"): incompatible types: …".
		if m := tomlKeyError.FindStringSubmatch(err.Error()); m != nil {
			where := path
			if m[1] != "" {
				where += ":" + m[1]
			}
			return fmt.Errorf("config: %s: %s: %s", m[2], where, m[3])
		}
		return fmt.Errorf("config: %s: %w", path, err)
	}
	if u := md.Undecoded(); len(u) > 0 {
		keys := make([]string, len(u))
		for i, k := range u {
			keys[i] = k.String()
		}
		return fmt.Errorf("config: %s: unknown key (in %s)", strings.Join(keys, ", "), path)
	}
	// TOML would take a bare number for a duration as nanoseconds
	// (handshake_timeout = 5 is 5ns, and every client fails): a duration
	// must be a string with its unit.
	var probe Config
	for _, s := range settings {
		key := strings.Split(s.key, ".")
		if _, isDuration := s.field(&probe).(*time.Duration); isDuration && md.IsDefined(key...) && md.Type(key...) != "String" {
			return fmt.Errorf("config: %s: %s: a duration is a string with its unit (like \"2s\" or \"500ms\"), not a bare %s",
				s.key, path, strings.ToLower(md.Type(key...)))
		}
	}
	return nil
}

var tomlKeyError = regexp.MustCompile(`^toml: (?:line (\d+) )?\(last key "([^"]*)"\): (.*)$`)

var nodeName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// validate checks every setting and compiles the policy. Its errors name
// the key at fault: "config: events.queue_limit: must be >= 0".
func (c *Config) validate() (*policy, error) {
	bad := func(key, format string, args ...any) error {
		return fmt.Errorf("config: %s: %s", key, fmt.Sprintf(format, args...))
	}
	switch {
	case c.Socket == "":
		return nil, bad("socket", "must not be empty")
	case !nodeName.MatchString(c.Name):
		return nil, bad("name", "must be 1 to 64 letters, digits, '_' or '-', not %q", c.Name)
	case c.MaxMessage <= 0 || c.MaxMessage > 1<<30:
		return nil, bad("max_message", "must be in [1, %d], not %d", 1<<30, c.MaxMessage)
	case c.HandshakeTimeout <= 0:
		return nil, bad("handshake_timeout", "must be > 0, not %v", c.HandshakeTimeout)
	case c.Procs != "auto" && c.Procs != "adaptive" && c.Procs != "fixed":
		return nil, bad("procs", "must be auto, adaptive or fixed, not %q", c.Procs)
	}
	if _, _, err := parseSocketMode(c.SocketMode); err != nil {
		return nil, bad("socket_mode", "%v", err)
	}
	if err := checkGroup(c.SocketGroup); err != nil {
		return nil, bad("socket_group", "%v", err)
	}
	if _, err := parseLevel(c.Log.Level); err != nil {
		return nil, bad("log.level", "%v", err)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		return nil, bad("log.format", "must be text or json, not %q", c.Log.Format)
	}
	for _, r := range []struct {
		key string
		n   int64
	}{{"rings.request", c.Rings.Request}, {"rings.response", c.Rings.Response}, {"rings.event", c.Rings.Event}, {"rings.max", c.Rings.Max}} {
		if r.n < switchboard.MinRingSize || r.n > switchboard.MaxRingSize || bits.OnesCount64(uint64(r.n)) != 1 {
			return nil, bad(r.key, "must be a power of two in [%d, %d], not %d", switchboard.MinRingSize, switchboard.MaxRingSize, r.n)
		}
	}
	switch {
	case c.Limits.ConnectionsPerUID < 0:
		return nil, bad("limits.connections_per_uid", "must be >= 0")
	case c.Limits.HandshakesPerUID < 0:
		return nil, bad("limits.handshakes_per_uid", "must be >= 0")
	case c.Limits.PrivilegedConnections < 0:
		return nil, bad("limits.privileged_connections", "must be >= 0")
	case c.Limits.PrivilegedHandshakes < 0:
		return nil, bad("limits.privileged_handshakes", "must be >= 0")
	case c.Events.QueueLimit < 0:
		return nil, bad("events.queue_limit", "must be >= 0")
	case c.Events.QueueLimit > 1<<30:
		return nil, bad("events.queue_limit", "must be <= %d", 1<<30)
	case c.Events.QueueBytes < 0:
		return nil, bad("events.queue_bytes", "must be >= 0")
	case c.Events.QueueBytes > 1<<40:
		return nil, bad("events.queue_bytes", "must be <= %d", int64(1)<<40)
	}
	if _, err := parseOverflow(c.Events.Overflow); err != nil {
		return nil, bad("events.overflow", "%v", err)
	}
	if err := checkListen(c.Metrics.Listen); err != nil {
		return nil, bad("metrics.listen", "%v", err)
	}
	switch c.Metrics.Connections {
	case connSeriesOff, connSeriesClient, connSeriesTop:
	default:
		return nil, bad("metrics.connections", "must be off, client or top, not %q", c.Metrics.Connections)
	}
	if c.Metrics.ConnectionsLimit < 1 || c.Metrics.ConnectionsLimit > 10000 {
		return nil, bad("metrics.connections_limit", "must be in [1, 10000], not %d", c.Metrics.ConnectionsLimit)
	}
	if err := c.Cluster.check(c.MaxMessage); err != nil {
		return nil, err
	}
	return compilePolicy(&c.Policy)
}

func parseLevel(s string) (lv slog.Level, err error) {
	switch s {
	case "debug", "info", "warn", "error":
		err = lv.UnmarshalText([]byte(s))
		return lv, err
	}
	return lv, fmt.Errorf("must be debug, info, warn or error, not %q", s)
}

// parseSocketMode parses an octal mode such as "0660" ("" is unset).
func parseSocketMode(s string) (mode os.FileMode, set bool, err error) {
	if s == "" {
		return 0, false, nil
	}
	n, err := strconv.ParseUint(strings.TrimPrefix(strings.TrimSpace(s), "0o"), 8, 32)
	if err != nil || n > 0o777 {
		return 0, false, fmt.Errorf("must be permission bits in octal, 0000 to 0777 (like \"0660\"), not %q", s)
	}
	return os.FileMode(n), true, nil
}

// checkGroup accepts "", a decimal gid, or the name of a group this host
// knows.
func checkGroup(s string) error {
	if s == "" {
		return nil
	}
	if _, err := strconv.ParseUint(s, 10, 32); err == nil {
		return nil
	}
	if _, err := user.LookupGroup(s); err != nil {
		return fmt.Errorf("no group %q on this host", s)
	}
	return nil
}

func parseOverflow(s string) (switchboard.OverflowPolicy, error) {
	switch s {
	case "drop-oldest":
		return switchboard.DropOldest, nil
	case "disconnect":
		return switchboard.DisconnectSlow, nil
	}
	return 0, fmt.Errorf("must be drop-oldest or disconnect, not %q", s)
}

// checkListen accepts "", HOST:PORT, or unix:/absolute/path.
func checkListen(s string) error {
	if s == "" {
		return nil
	}
	if path, ok := strings.CutPrefix(s, "unix:"); ok {
		if !strings.HasPrefix(path, "/") {
			return fmt.Errorf("a unix socket path must be absolute, not %q", path)
		}
		return nil
	}
	if _, port, err := net.SplitHostPort(s); err != nil || port == "" {
		return fmt.Errorf("want HOST:PORT or unix:/PATH, not %q", s)
	}
	return nil
}

// writeTOML writes c as TOML, after a comment saying what it is.
func writeTOML(w io.Writer, c *Config) error {
	fmt.Fprintln(w, "# The effective configuration of this Switchboard node (switchboard serve --print-config).")
	enc := toml.NewEncoder(w)
	enc.Indent = ""
	return enc.Encode(c)
}

// restartKeys lists the settings that differ between old and c and that
// a reload cannot apply.
func (c *Config) restartKeys(old *Config) []string {
	var keys []string
	for _, s := range settings {
		if !s.live && s.value(c) != s.value(old) {
			keys = append(keys, s.key)
		}
	}
	return keys
}
