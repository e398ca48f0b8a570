package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/switchboard-ipc/switchboard/actors/cluster"
)

// Config configures a Discovery.
type Config struct {
	// Name is the DNS name whose A records are the cluster's nodes.
	Name string
	// Port is the port the nodes' links listen on (0: this node's own
	// advertised port, as when every node listens on the same).
	Port int
	// Interval is how often Name is resolved (default 5s, at least
	// 100ms).
	Interval time.Duration
	// Resolver resolves Name (nil: net.DefaultResolver).
	Resolver *net.Resolver
	// Logger receives what the lookups found and why they failed (nil:
	// none); failures are logged when they begin and when they end.
	Logger *slog.Logger
}

// maxNodes bounds the addresses one lookup may give; past it, the rest
// are ignored.
const maxNodes = 4096

// Discovery is a cluster.Discovery over DNS.
type Discovery struct {
	cfg Config
}

var _ cluster.Discovery = (*Discovery)(nil)

// New checks cfg; it resolves nothing (Run does).
func New(cfg Config) (*Discovery, error) {
	if cfg.Interval == 0 {
		cfg.Interval = 5 * time.Second
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	switch {
	case cfg.Name == "" || len(cfg.Name) > 253:
		return nil, fmt.Errorf("dns: dns_name: must be a DNS name of 1 to 253 bytes, not %q", cfg.Name)
	case cfg.Port < 0 || cfg.Port > 65535:
		return nil, fmt.Errorf("dns: dns_port: must be in [0, 65535], not %d", cfg.Port)
	case cfg.Interval < 100*time.Millisecond:
		return nil, fmt.Errorf("dns: dns_interval: must be at least 100ms, not %v", cfg.Interval)
	}
	return &Discovery{cfg: cfg}, nil
}

// Run resolves the name every Interval until ctx is done, reporting the
// set of addresses each time it changes. It returns nil when ctx is done,
// and an error only when self's address has no port to dial the others at.
func (d *Discovery) Run(ctx context.Context, self cluster.Member, found func([]string)) error {
	port := strconv.Itoa(d.cfg.Port)
	if d.cfg.Port == 0 {
		_, p, err := net.SplitHostPort(self.Address)
		if err != nil {
			return fmt.Errorf("dns: no port given, and this node's address %q has none: %w", self.Address, err)
		}
		port = p
	}
	var last []string
	reported, failing := false, false
	t := time.NewTicker(d.cfg.Interval)
	defer t.Stop()
	for {
		addrs, err := d.lookup(ctx, port)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			if !failing {
				d.logf("dns: resolving %s failed (what it found last is kept): %v", d.cfg.Name, err)
			}
			failing = true
		default:
			if failing {
				d.logf("dns: resolving %s works again", d.cfg.Name)
			}
			failing = false
			if !reported || !slices.Equal(addrs, last) {
				d.logf("dns: %s lists %d nodes", d.cfg.Name, len(addrs))
				found(addrs)
				last, reported = addrs, true
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// lookup returns the name's IPv4 addresses with port, sorted; none when
// the name does not exist.
func (d *Discovery) lookup(ctx context.Context, port string) ([]string, error) {
	lctx, cancel := context.WithTimeout(ctx, max(d.cfg.Interval, time.Second))
	defer cancel()
	ips, err := d.cfg.Resolver.LookupIP(lctx, "ip4", d.cfg.Name)
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		return []string{}, nil
	}
	if err != nil {
		return nil, err
	}
	if len(ips) > maxNodes {
		ips = ips[:maxNodes]
	}
	addrs := make([]string, 0, len(ips))
	for _, ip := range ips {
		addrs = append(addrs, net.JoinHostPort(ip.String(), port))
	}
	slices.Sort(addrs)
	return slices.Compact(addrs), nil
}

func (d *Discovery) logf(format string, args ...any) {
	if d.cfg.Logger != nil {
		d.cfg.Logger.Info(fmt.Sprintf(format, args...))
	}
}
