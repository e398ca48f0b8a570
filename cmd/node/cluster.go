package main

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/switchboard-ipc/switchboard"
	"github.com/switchboard-ipc/switchboard/actors/cluster"
)

// ClusterConfig is the [cluster] table: the links to the other nodes of
// the cluster (package actors/cluster). Off by default: then nothing of it
// runs, and the node is exactly a lone node.
type ClusterConfig struct {
	Enabled     bool          `toml:"enabled"`
	Name        string        `toml:"name"`
	Listen      string        `toml:"listen"`
	Advertise   string        `toml:"advertise"`
	Peers       []string      `toml:"peers"`
	Heartbeat   time.Duration `toml:"heartbeat"`
	LinkTimeout time.Duration `toml:"link_timeout"`
	LinkBudget  int64         `toml:"link_budget"`
	Overflow    string        `toml:"overflow"`
	TLSCert     string        `toml:"tls_cert"`
	TLSKey      string        `toml:"tls_key"`
	TLSCA       string        `toml:"tls_ca"`
	SecretFile  string        `toml:"secret_file"`
}

// config translates the table into the link layer's configuration; a
// link carries the node's largest message (maxMessage) in its envelope.
func (c *ClusterConfig) config(maxMessage int64, log *slog.Logger) (cluster.Config, error) {
	overflow, err := cluster.ParseOverflow(c.Overflow)
	if err != nil {
		return cluster.Config{}, fmt.Errorf("config: cluster.overflow: %w", err)
	}
	return cluster.Config{
		Cluster:     c.Name,
		Listen:      c.Listen,
		Advertise:   c.Advertise,
		Peers:       c.Peers,
		Heartbeat:   c.Heartbeat,
		LinkTimeout: c.LinkTimeout,
		Budget:      c.LinkBudget,
		Overflow:    overflow,
		MaxMessage:  maxMessage + switchboard.FederationOverhead,
		TLSCert:     c.TLSCert,
		TLSKey:      c.TLSKey,
		TLSCA:       c.TLSCA,
		SecretFile:  c.SecretFile,
		Logger:      log,
	}, nil
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
	var ce *cluster.ConfigError
	if errors.As(err, &ce) {
		key, ok := clusterKeys[ce.Field]
		if !ok {
			key = "cluster." + ce.Field
		}
		return nil, fmt.Errorf("config: %s: %w", key, ce.Err)
	}
	if err != nil {
		return nil, fmt.Errorf("config: cluster: %w", err)
	}
	return f, nil
}

// clusterKeys maps cluster.ConfigError's fields to this table's keys
// where they differ.
var clusterKeys = map[string]string{
	"budget": "cluster.link_budget",
	"tls":    "cluster.tls_cert, cluster.tls_key, cluster.tls_ca",
}
