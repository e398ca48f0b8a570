package cluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// writeCA makes a CA and a certificate it signs for 127.0.0.1, and
// writes them as PEM files in dir: ca.pem, cert.pem, key.pem (prefixed).
func writeCA(t *testing.T, dir, prefix string) (ca, cert, key string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: prefix + " test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: prefix + " node"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caTmpl, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(leafKey)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, prefix+name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("cert.pem", "CERTIFICATE", leafDER), write("key.pem", "EC PRIVATE KEY", keyDER)
}

// TestLinkTLS: nodes with certificates from the cluster's CA link over
// TLS; a node whose certificate another CA signed is not linked.
func TestLinkTLS(t *testing.T) {
	if !inNetns(t) {
		return
	}
	dir := t.TempDir()
	ca, cert, key := writeCA(t, dir, "good-")
	otherCA, otherCert, otherKey := writeCA(t, dir, "other-")
	tlsEnv := func(ca, cert, key string) memberOpts {
		// With TLS the secret is optional: these nodes have none.
		return memberOpts{secret: "-", env: []string{"SBM_CA=" + ca, "SBM_CERT=" + cert, "SBM_KEY=" + key}}
	}
	n1 := startMember(t, "n1", "an1", addrs["n1"], []string{addrs["n2"], addrs["n3"]}, tlsEnv(ca, cert, key))
	n2 := startMember(t, "n2", "an2", addrs["n2"], []string{addrs["n1"], addrs["n3"]}, tlsEnv(ca, cert, key))
	n1.wait("up n2 an2", 10*time.Second)
	n2.wait("up n1 an1", 10*time.Second)
	if got := n1.do("send", "n2", 100, 1000); got != "100 0 " {
		t.Fatalf("n1 → n2 over TLS: %q", got)
	}
	waitCount(t, n2, "n1", 100)

	n3 := startMember(t, "n3", "an3", addrs["n3"], []string{addrs["n1"], addrs["n2"]}, tlsEnv(otherCA, otherCert, otherKey))
	// Long enough for a link to come up even past protoactor's 2 s pause
	// between a failed dial and the next (n1 and n2 dialled n3's address
	// before it listened): each Hello fails its TLS handshake instead.
	time.Sleep(4 * time.Second)
	for _, m := range []*member{n1, n2, n3} {
		if m.has("up n3") || (m == n3 && m.has("up ")) {
			t.Fatalf("%s linked a node of another CA:\n%s", m.name, m.output())
		}
	}
}
