package kubelab

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

	"github.com/cockroachdb/errors"
)

// pki is the cluster's certificate authority: one CA signs etcd's and the API server's
// serving certificates and every client certificate (admin, components, kubelets, Coil's
// etcd client). Keys are ECDSA P-256 (fast to make); files are PEM in Dir.
type pki struct {
	Dir    string
	CAFile string
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
}

func newPKI(dir string) (*pki, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, errors.Wrap(err, "kubelab: pki dir")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, errors.Wrap(err, "kubelab: CA key")
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "coil-lab-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, errors.Wrap(err, "kubelab: CA certificate")
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, errors.Wrap(err, "kubelab: CA certificate")
	}
	p := &pki{Dir: dir, CAFile: filepath.Join(dir, "ca.crt"), ca: ca, caKey: key}
	if err := writePEM(p.CAFile, "CERTIFICATE", der); err != nil {
		return nil, err
	}
	return p, nil
}

// certReq describes a certificate to issue.
type certReq struct {
	name   string // file base name: NAME.crt, NAME.key
	cn     string
	orgs   []string
	dns    []string
	ips    []net.IP
	server bool
	client bool
}

// issue writes NAME.crt and NAME.key and returns their paths.
func (p *pki) issue(r certReq) (certFile, keyFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", errors.Wrap(err, "kubelab: key")
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return "", "", errors.Wrap(err, "kubelab: serial")
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: r.cn, Organization: r.orgs},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		DNSNames:     r.dns,
		IPAddresses:  r.ips,
	}
	if r.server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if r.client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		return "", "", errors.Wrapf(err, "kubelab: certificate %s", r.name)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", errors.Wrap(err, "kubelab: key")
	}
	certFile, keyFile = filepath.Join(p.Dir, r.name+".crt"), filepath.Join(p.Dir, r.name+".key")
	if err := writePEM(certFile, "CERTIFICATE", der); err != nil {
		return "", "", err
	}
	if err := writePEM(keyFile, "EC PRIVATE KEY", kb); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// serviceAccountKeys writes the service account signing key pair (sa.key, sa.pub).
func (p *pki) serviceAccountKeys() (priv, pub string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", errors.Wrap(err, "kubelab: sa key")
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", errors.Wrap(err, "kubelab: sa key")
	}
	pb, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return "", "", errors.Wrap(err, "kubelab: sa key")
	}
	priv, pub = filepath.Join(p.Dir, "sa.key"), filepath.Join(p.Dir, "sa.pub")
	if err := writePEM(priv, "EC PRIVATE KEY", kb); err != nil {
		return "", "", err
	}
	return priv, pub, writePEM(pub, "PUBLIC KEY", pb)
}

// kubeconfig writes a kubeconfig for server with a client certificate.
func (p *pki) kubeconfig(path, server, certFile, keyFile string) error {
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster: {server: %q, certificate-authority: %q}
users:
- name: user
  user: {client-certificate: %q, client-key: %q}
contexts:
- name: lab
  context: {cluster: lab, user: user, namespace: default}
current-context: lab
`, server, p.CAFile, certFile, keyFile)
	return errors.Wrap(os.WriteFile(path, []byte(kc), 0o600), "kubelab: write kubeconfig")
}

func writePEM(path, typ string, der []byte) error {
	return errors.Wrapf(os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600), "kubelab: write %s", path)
}
