package cluster

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ChunkSize is the largest piece of a message one Data envelope carries.
const ChunkSize = 256 << 10

// frameCost is what each chunk costs against a link's budget on top of its
// bytes: so that empty messages are bounded too, and roughly what an
// envelope costs on the wire and in protoactor's queue.
const frameCost = 64

// Overflow says what Send does when a link's byte budget is spent.
type Overflow int

const (
	// OverflowError: Send returns ErrBudget (counted); the link stays up.
	OverflowError Overflow = iota
	// OverflowDisconnect: the link is declared down (the peer is too slow
	// to keep), and Send returns ErrBudget.
	OverflowDisconnect
)

// ParseOverflow reads "error" or "disconnect".
func ParseOverflow(s string) (Overflow, error) {
	switch s {
	case "error":
		return OverflowError, nil
	case "disconnect":
		return OverflowDisconnect, nil
	}
	return 0, fmt.Errorf("must be error or disconnect, not %q", s)
}

func (o Overflow) String() string {
	if o == OverflowDisconnect {
		return "disconnect"
	}
	return "error"
}

// Config configures a Federation. The zero values of the durations and
// sizes take the defaults below.
type Config struct {
	// Cluster names the cluster; a node of another cluster is refused.
	Cluster string
	// Listen is where this node's link server listens, HOST:PORT. A host
	// that is not loopback requires TLS (TLSCert, TLSKey, TLSCA).
	Listen string
	// Advertise is the HOST:PORT the other nodes reach this one at;
	// "" is Listen (which then must name a host, not 0.0.0.0). Without
	// TLS, a loopback address only.
	Advertise string
	// Peers are the other nodes' advertised addresses; each is dialled.
	// A node not listed here is linked when it dials this one. Without
	// TLS, loopback addresses only (the secret crosses in every Hello).
	Peers []string
	// Discovery, if set, finds the other nodes beyond Peers (a registry
	// such as etcd: package actors/cluster/etcd); nil: Peers only.
	Discovery Discovery
	// Heartbeat is how often each link says it is alive (default 250ms).
	Heartbeat time.Duration
	// LinkTimeout is how long a link may be silent before it is declared
	// down (default 1s; at least twice Heartbeat).
	LinkTimeout time.Duration
	// StallTimeout is how long a link may hold unacknowledged messages
	// without any being acknowledged before it is declared down (default
	// 10s, or LinkTimeout if longer; at least LinkTimeout).
	StallTimeout time.Duration
	// Budget bounds a link's unacknowledged bytes, each chunk counted
	// with frameCost more (default 64 MiB; at least MaxMessage). Every
	// node of a cluster should use the same: a Hello announcing a larger
	// budget than the receiver's is refused, since the receiver sizes its
	// gRPC receive limit from its own.
	Budget int64
	// Overflow is what Send does past the budget (default OverflowError).
	Overflow Overflow
	// MaxMessage is the largest message (default 16 MiB).
	MaxMessage int64
	// TLSCert and TLSKey are this node's certificate and key (PEM files),
	// presented to the nodes it dials and to those that dial it; TLSCA
	// is the CA (PEM) both ends' certificates must chain to. All three or
	// none; required when Listen, Advertise or a peer is not loopback.
	TLSCert, TLSKey, TLSCA string
	// SecretFile holds the cluster's secret, which every node's Hello
	// carries and every node checks: a node without it is refused. The
	// file must be readable by its owner only (as ssh wants of a key).
	// Required without TLS (on loopback, where any local user could
	// otherwise link as a node); with TLS, optional.
	SecretFile string
	// Logger receives the link's comings, goings and refusals (nil: none).
	// protoactor's own log is discarded.
	Logger *slog.Logger

	// v1Only makes the node speak the link as its first version did:
	// no features in its Hello, one Data envelope per chunk and an Ack
	// per pass of deliveries whatever the other node takes. For the
	// tests of links between nodes of different versions.
	v1Only bool
	// noPacked: the node neither announces nor sends packed batches, as
	// a node between the two versions (tests).
	noPacked bool
}

// ConfigError is a Config that New refuses: Field names the setting at
// fault, as the TOML key of cmd/node's [cluster] table does (name,
// listen, advertise, peers, heartbeat, link_timeout, stall_timeout,
// budget, max_message, overflow, tls, secret_file; and, from package etcd
// and dns, the keys of the discovery: etcd_…, dns_…).
type ConfigError struct {
	Field string
	Err   error
}

func (e *ConfigError) Error() string { return "cluster: " + e.Field + ": " + e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

var clusterName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// withDefaults fills in the defaults and checks every field.
func (c Config) withDefaults() (Config, error) {
	bad := func(field, format string, args ...any) error {
		return &ConfigError{Field: field, Err: fmt.Errorf(format, args...)}
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = 250 * time.Millisecond
	}
	if c.LinkTimeout == 0 {
		c.LinkTimeout = time.Second
	}
	if c.StallTimeout == 0 {
		c.StallTimeout = max(10*time.Second, c.LinkTimeout)
	}
	if c.Budget == 0 {
		c.Budget = 64 << 20
	}
	if c.MaxMessage == 0 {
		c.MaxMessage = 16 << 20
	}
	if c.Advertise == "" {
		c.Advertise = c.Listen
	}
	switch {
	case !clusterName.MatchString(c.Cluster) || c.Cluster == "." || c.Cluster == "..":
		return c, bad("name", "must be 1 to 64 letters, digits, '_', '.' or '-' (not . or ..), not %q", c.Cluster)
	case c.Heartbeat < time.Millisecond:
		return c, bad("heartbeat", "must be at least 1ms, not %v", c.Heartbeat)
	case c.LinkTimeout < 2*c.Heartbeat:
		return c, bad("link_timeout", "must be at least twice the heartbeat (%v), not %v", c.Heartbeat, c.LinkTimeout)
	case c.StallTimeout < c.LinkTimeout:
		return c, bad("stall_timeout", "must be at least the link timeout (%v), not %v", c.LinkTimeout, c.StallTimeout)
	case c.MaxMessage < 1 || c.MaxMessage > 1<<30:
		return c, bad("max_message", "must be in [1, %d], not %d", 1<<30, c.MaxMessage)
	case c.Budget < c.MaxMessage+frameCost*chunks(c.MaxMessage) || c.Budget > 1<<30:
		return c, bad("budget", "must be in [max message + %d per %d-byte chunk, %d], not %d", frameCost, ChunkSize, 1<<30, c.Budget)
	case c.Overflow != OverflowError && c.Overflow != OverflowDisconnect:
		return c, bad("overflow", "unknown policy %d", c.Overflow)
	}
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil || port == "" {
		return c, bad("listen", "want HOST:PORT, not %q", c.Listen)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return c, bad("listen", "port must be a number in [0, 65535], not %q", port)
	}
	if strings.Contains(host, ":") {
		// remote joins host and port with a bare colon.
		return c, bad("listen", "an IPv6 address cannot be listened on by protoactor remote: %q", c.Listen)
	}
	if err := checkAddr(c.Advertise); err != nil {
		return c, bad("advertise", "%v", err)
	}
	for _, p := range c.Peers {
		if err := checkAddr(p); err != nil {
			return c, bad("peers", "%v", err)
		}
	}
	files := 0
	for _, f := range []string{c.TLSCert, c.TLSKey, c.TLSCA} {
		if f != "" {
			files++
		}
	}
	switch {
	case files != 0 && files != 3:
		return c, bad("tls", "give the certificate, the key and the CA, or none of them")
	case files == 0 && !isLoopback(host):
		return c, bad("listen", "%q is not a loopback address: TLS is required (set the certificate, key and CA)", c.Listen)
	}
	if files == 0 {
		// Without TLS the links are plaintext and every Hello carries
		// the secret: they stay on this host.
		if !loopbackAddr(c.Advertise) {
			return c, bad("advertise", "%q is not a loopback address: TLS is required to link beyond this host (the secret would cross in the clear)", c.Advertise)
		}
		for _, p := range c.Peers {
			if !loopbackAddr(p) {
				return c, bad("peers", "%q is not a loopback address: TLS is required to link beyond this host (the secret would cross in the clear)", p)
			}
		}
		if c.SecretFile == "" {
			return c, bad("secret_file", "required without TLS: any local user could otherwise link as a node")
		}
	}
	return c, nil
}

// minSecret is the shortest secret accepted.
const minSecret = 16

// readSecret reads the cluster's secret from path: a private file (see
// ReadPrivateFile) holding at least minSecret bytes (a trailing newline is
// not part of it).
func readSecret(path string) ([]byte, error) {
	b, err := ReadPrivateFile(path)
	if err == nil && (len(b) < minSecret || len(b) > 4096) {
		err = fmt.Errorf("%s holds %d bytes: a secret is %d to 4096", path, len(b), minSecret)
	}
	if err != nil {
		return nil, &ConfigError{Field: "secret_file", Err: err}
	}
	return b, nil
}

// ReadCA reads the certificates of a CA from path, a PEM file.
func ReadCA(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New(path + " holds no PEM certificate")
	}
	return pool, nil
}

// ReadPrivateFile reads a secret from path, a regular file of at most
// 4096 bytes that only its owner may read, owned by this process's user
// (as ssh wants of a key); a trailing newline is not part of the secret.
func ReadPrivateFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	switch st, ok := fi.Sys().(*syscall.Stat_t); {
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("%s is not a regular file", path)
	case fi.Mode().Perm()&0o077 != 0:
		return nil, fmt.Errorf("%s is accessible by group or others (mode %04o): it must be readable by its owner only (chmod 600)", path, fi.Mode().Perm())
	case ok && int(st.Uid) != os.Geteuid():
		return nil, fmt.Errorf("%s is owned by uid %d, not this process's uid %d", path, st.Uid, os.Geteuid())
	}
	b, err := io.ReadAll(io.LimitReader(f, 4097))
	if err != nil {
		return nil, err
	}
	b = bytes.TrimRight(b, "\r\n")
	if len(b) > 4096 {
		return nil, fmt.Errorf("%s holds more than 4096 bytes", path)
	}
	return b, nil
}

// checkAddr accepts HOST:PORT with a host and a non-zero port: an address
// another node can dial.
func checkAddr(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("want HOST:PORT (a host others can reach), not %q", s)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("%q is not an address others can reach", s)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("port must be in [1, 65535], not %q", port)
	}
	if len(s) > maxAddress {
		return fmt.Errorf("longer than %d bytes", maxAddress)
	}
	return nil
}

// isLoopback reports whether host can only be reached from this host:
// localhost (in any case, with or without a final dot) or a loopback IP
// address; another name is not, whatever it resolves to.
func isLoopback(host string) bool {
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// loopbackAddr reports whether addr is HOST:PORT with a loopback host
// (isLoopback: a name other than localhost does not count, whatever it
// resolves to).
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	return err == nil && isLoopback(host)
}

// chunks is how many chunks a message of n bytes crosses in.
func chunks(n int64) int64 {
	if n <= ChunkSize {
		return 1
	}
	return (n + ChunkSize - 1) / ChunkSize
}

// tlsConfigs loads the certificate, key and CA into the server's and the
// dialler's TLS configurations: each end presents its certificate and
// requires the other's, chained to the CA.
func (c Config) tlsConfigs() (server, client *tls.Config, err error) {
	if c.TLSCert == "" {
		return nil, nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
	if err != nil {
		return nil, nil, &ConfigError{Field: "tls", Err: fmt.Errorf("certificate and key: %w", err)}
	}
	pool, err := ReadCA(c.TLSCA)
	if err != nil {
		return nil, nil, &ConfigError{Field: "tls", Err: fmt.Errorf("CA: %w", err)}
	}
	server = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
	}
	client = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
	}
	return server, client, nil
}
