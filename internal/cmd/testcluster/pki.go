package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// ca is the cluster's one certificate authority: it signs every serving
// and client certificate (etcd, the API server, the kubelet, the users).
type ca struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	dir  string
}

// certSpec describes one leaf certificate.
type certSpec struct {
	name   string   // file stem under pki/
	cn     string   // subject common name (the user name for client certs)
	orgs   []string // subject organisations (the groups for client certs)
	ips    []net.IP // IP SANs (serving certs)
	dns    []string // DNS SANs (serving certs)
	server bool
	client bool
}

// newCA writes pki/ca.crt and pki/ca.key under dir.
func newCA(dir string) (*ca, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "boxlite-testcluster-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	c := &ca{cert: cert, key: key, dir: dir}
	if err := writePEM(c.path("ca.crt"), "CERTIFICATE", der); err != nil {
		return nil, err
	}
	return c, writeKey(c.path("ca.key"), key)
}

func (c *ca) path(name string) string { return filepath.Join(c.dir, name) }

// issue writes pki/<name>.crt and pki/<name>.key.
func (c *ca) issue(s certSpec) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: s.cn, Organization: s.orgs},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		IPAddresses:  s.ips,
		DNSNames:     s.dns,
	}
	if s.server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if s.client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		return fmt.Errorf("certificate %s: %w", s.name, err)
	}
	if err := writePEM(c.path(s.name+".crt"), "CERTIFICATE", der); err != nil {
		return err
	}
	return writeKey(c.path(s.name+".key"), key)
}

// serviceAccountKey writes pki/sa.key and pki/sa.pub: the API server
// requires a signing key even though no token controller runs here.
func (c *ca) serviceAccountKey() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	if err := writePEM(c.path("sa.pub"), "PUBLIC KEY", pub); err != nil {
		return err
	}
	return writeKey(c.path("sa.key"), key)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return n
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(path, "EC PRIVATE KEY", der)
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

// kubeconfig writes a kubeconfig for one client certificate of the CA.
func (c *ca) kubeconfig(path, server, name, namespace string) error {
	ns := ""
	if namespace != "" {
		ns = "\n    namespace: " + namespace
	}
	text := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: testcluster
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: %s
  user:
    client-certificate: %s
    client-key: %s
contexts:
- name: %s
  context:
    cluster: testcluster
    user: %s%s
current-context: %s
`, server, c.path("ca.crt"), name, c.path(name+".crt"), c.path(name+".key"), name, name, ns, name)
	return os.WriteFile(path, []byte(text), 0o600)
}
