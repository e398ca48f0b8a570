package main

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/switchboard-ipc/switchboard"
	"github.com/switchboard-ipc/switchboard/actors/cluster"
	"github.com/switchboard-ipc/switchboard/actors/cluster/dns"
	"github.com/switchboard-ipc/switchboard/actors/cluster/etcd"
)

// ClusterConfig is the [cluster] table: the links to the other nodes of
// the cluster (package actors/cluster). Off by default: then nothing of it
// runs, and the node is exactly a lone node.
type ClusterConfig struct {
	Enabled      bool          `toml:"enabled"`
	Name         string        `toml:"name"`
	Listen       string        `toml:"listen"`
	Advertise    string        `toml:"advertise"`
	Peers        []string      `toml:"peers"`
	Heartbeat    time.Duration `toml:"heartbeat"`
	LinkTimeout  time.Duration `toml:"link_timeout"`
	StallTimeout time.Duration `toml:"stall_timeout"`
	LinkBudget   int64         `toml:"link_budget"`
	Overflow     string        `toml:"overflow"`
	TLSCert      string        `toml:"tls_cert"`
	TLSKey       string        `toml:"tls_key"`
	TLSCA        string        `toml:"tls_ca"`
	SecretFile   string        `toml:"secret_file"`

	// Discovery: "" (the peers only), "etcd" (the nodes registered
	// under etcd_prefix at etcd_endpoints, as well as the peers) or "dns"
	// (the A records of dns_name, at dns_port).
	Discovery        string        `toml:"discovery"`
	EtcdEndpoints    []string      `toml:"etcd_endpoints"`
	EtcdPrefix       string        `toml:"etcd_prefix"`
	EtcdTTL          time.Duration `toml:"etcd_ttl"`
	EtcdUsername     string        `toml:"etcd_username"`
	EtcdPasswordFile string        `toml:"etcd_password_file"`
	EtcdTLSCert      string        `toml:"etcd_tls_cert"`
	EtcdTLSKey       string        `toml:"etcd_tls_key"`
	EtcdTLSCA        string        `toml:"etcd_tls_ca"`
	DNSName          string        `toml:"dns_name"`
	DNSPort          int64         `toml:"dns_port"`
	DNSInterval      time.Duration `toml:"dns_interval"`
}

// config translates the table into the link layer's configuration; a
// link carries the node's largest message (maxMessage) in its envelope.
func (c *ClusterConfig) config(maxMessage int64, log *slog.Logger) (cluster.Config, error) {
	overflow, err := cluster.ParseOverflow(c.Overflow)
	if err != nil {
		return cluster.Config{}, fmt.Errorf("config: cluster.overflow: %w", err)
	}
	discovery, err := c.discovery(log)
	if err != nil {
		return cluster.Config{}, err
	}
	return cluster.Config{
		Discovery:    discovery,
		Cluster:      c.Name,
		Listen:       c.Listen,
		Advertise:    c.Advertise,
		Peers:        c.Peers,
		Heartbeat:    c.Heartbeat,
		LinkTimeout:  c.LinkTimeout,
		StallTimeout: c.StallTimeout,
		Budget:       c.LinkBudget,
		Overflow:     overflow,
		MaxMessage:   maxMessage + switchboard.FederationOverhead,
		TLSCert:      c.TLSCert,
		TLSKey:       c.TLSKey,
		TLSCA:        c.TLSCA,
		SecretFile:   c.SecretFile,
		Logger:       log,
	}, nil
}

// discovery builds the Discovery the table names (nil: none).
func (c *ClusterConfig) discovery(log *slog.Logger) (cluster.Discovery, error) {
	if c.Discovery != "" && c.Discovery != "etcd" && c.Discovery != "dns" {
		return nil, fmt.Errorf("config: cluster.discovery: must be \"\" (the peers only), etcd or dns, not %q", c.Discovery)
	}
	// A key of the discovery not chosen is a mistake, not a no-op.
	for _, k := range []struct {
		key, of string
		set     bool
	}{
		{"etcd_endpoints", "etcd", len(c.EtcdEndpoints) != 0},
		{"etcd_username", "etcd", c.EtcdUsername != ""},
		{"etcd_password_file", "etcd", c.EtcdPasswordFile != ""},
		{"etcd_tls_cert", "etcd", c.EtcdTLSCert != ""},
		{"etcd_tls_key", "etcd", c.EtcdTLSKey != ""},
		{"etcd_tls_ca", "etcd", c.EtcdTLSCA != ""},
		{"dns_name", "dns", c.DNSName != ""},
		{"dns_port", "dns", c.DNSPort != 0},
	} {
		if k.set && c.Discovery != k.of {
			return nil, fmt.Errorf("config: cluster.%s: set, but cluster.discovery is not %s", k.key, k.of)
		}
	}
	switch c.Discovery {
	case "":
		return nil, nil
	case "dns":
		if c.DNSPort < 0 || c.DNSPort > 65535 {
			return nil, fmt.Errorf("config: cluster.dns_port: must be in [0, 65535], not %d", c.DNSPort)
		}
		d, err := dns.New(dns.Config{Name: c.DNSName, Port: int(c.DNSPort), Interval: c.DNSInterval, Logger: log})
		if err != nil {
			return nil, configError(err)
		}
		return d, nil
	}
	d, err := etcd.New(etcd.Config{Endpoints: c.EtcdEndpoints, Prefix: c.EtcdPrefix, TTL: c.EtcdTTL,
		Username: c.EtcdUsername, PasswordFile: c.EtcdPasswordFile,
		TLSCert: c.EtcdTLSCert, TLSKey: c.EtcdTLSKey, TLSCA: c.EtcdTLSCA, Logger: log})
	if err != nil {
		return nil, configError(err)
	}
	return d, nil
}

// check validates the table when the cluster is enabled: cluster.New
// checks every field and loads the TLS files, and starts nothing.
func (c *ClusterConfig) check(maxMessage int64) error {
	if !c.Enabled {
		return nil
	}
	_, err := c.federation(maxMessage, nil)
	return err
}

// federation builds the node's Federation; it starts when the node does.
func (c *ClusterConfig) federation(maxMessage int64, log *slog.Logger) (*cluster.Federation, error) {
	cfg, err := c.config(maxMessage, log)
	if err != nil {
		return nil, err
	}
	f, err := cluster.New(cfg)
	if err != nil {
		return nil, configError(err)
	}
	return f, nil
}

// configError names the key of this table a cluster.ConfigError (of the
// links or of a discovery) is about.
func configError(err error) error {
	var ce *cluster.ConfigError
	if !errors.As(err, &ce) {
		return fmt.Errorf("config: cluster: %w", err)
	}
	key, ok := clusterKeys[ce.Field]
	if !ok {
		key = "cluster." + ce.Field
	}
	return fmt.Errorf("config: %s: %w", key, ce.Err)
}

// clusterKeys maps cluster.ConfigError's fields to this table's keys
// where they differ.
var clusterKeys = map[string]string{
	"budget":   "cluster.link_budget",
	"tls":      "cluster.tls_cert, cluster.tls_key, cluster.tls_ca",
	"etcd_tls": "cluster.etcd_tls_cert, cluster.etcd_tls_key, cluster.etcd_tls_ca",
}
