package etcdclient

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/cockroachdb/errors"
)

// diagnoseTLS finds out why etcd did not answer when the cause is TLS: it dials each
// TCP endpoint itself, does the handshake the etcd client would do (tc: nil for plain
// endpoints) and, for a completed handshake, sends one HTTP request, because a server
// that rejects the client's certificate says so only after the handshake (TLS 1.3). It
// returns an error wrapping ErrTLSVerify and ErrUnreachable that names the endpoint and
// what failed, or nil when TLS is not the problem (nothing listens, etcd has no leader).
func diagnoseTLS(tc *tls.Config, cfg Config, eps []string, timeout time.Duration) error {
	per := min(timeout, 3*time.Second)
	for _, ep := range eps {
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") {
			continue // unix sockets: the client dials them plain (no TLS to diagnose)
		}
		var msg string
		if u.Scheme == "https" && tc != nil {
			msg = checkTLSEndpoint(tc, cfg, u, per)
		} else if u.Scheme == "http" && tc == nil && speaksTLS(u, per) {
			msg = "it speaks TLS: use an https:// endpoint (with --etcd-cacert for its CA)"
		}
		if msg != "" {
			e := errors.Newf("TLS verification failed for etcd at %s: %s", ep, msg)
			return errors.Mark(errors.Mark(e, ErrTLSVerify), ErrUnreachable)
		}
	}
	return nil
}

// dialProbe connects to u's host for a probe, the whole exchange bounded by timeout.
func dialProbe(u *url.URL, timeout time.Duration) (net.Conn, error) {
	conn, err := net.DialTimeout("tcp", u.Host, timeout)
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(timeout))
	return conn, nil
}

// checkTLSEndpoint returns what is wrong with TLS to u ("" if nothing is).
func checkTLSEndpoint(tc *tls.Config, cfg Config, u *url.URL, timeout time.Duration) string {
	conn, err := dialProbe(u, timeout)
	if err != nil {
		return "" // not there at all: the caller reports it unreachable
	}
	defer conn.Close()
	c := tc.Clone()
	c.ServerName = u.Hostname()
	c.NextProtos = []string{"http/1.1"}
	tconn := tls.Client(conn, c)
	if err := tconn.Handshake(); err != nil {
		if msg := describeTLSError(err, cfg, u.Hostname()); msg != "" {
			return msg
		}
		if speaksPlainHTTP(u, timeout) {
			return "it does not speak TLS (it answers plain HTTP): use an http:// endpoint"
		}
		return ""
	}
	// The handshake passed on this side; with TLS 1.3 the server checks the client's
	// certificate after it and answers a rejection with an alert on the first read.
	if _, err := fmt.Fprintf(tconn, "GET /health HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", u.Host); err != nil {
		return describeTLSError(err, cfg, u.Hostname())
	}
	if _, err := bufio.NewReader(tconn).ReadString('\n'); err != nil {
		return describeTLSError(err, cfg, u.Hostname())
	}
	return ""
}

// speaksPlainHTTP reports whether a TLS endpoint answers plain HTTP instead (etcd serving
// http:// closes a TLS handshake without a word).
func speaksPlainHTTP(u *url.URL, timeout time.Duration) bool {
	conn, err := dialProbe(u, timeout)
	if err != nil {
		return false
	}
	defer conn.Close()
	if _, err := fmt.Fprintf(conn, "GET /health HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", u.Host); err != nil {
		return false
	}
	line, _ := bufio.NewReader(conn).ReadString('\n')
	return strings.HasPrefix(line, "HTTP/1.")
}

// speaksTLS reports whether a plain endpoint is in fact a TLS server.
func speaksTLS(u *url.URL, timeout time.Duration) bool {
	conn, err := dialProbe(u, timeout)
	if err != nil {
		return false
	}
	defer conn.Close()
	//nolint:gosec // only asks whether the server speaks TLS at all; nothing is sent over it
	return tls.Client(conn, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}).Handshake() == nil
}

// describeTLSError says which TLS check failed ("" for errors that are not about TLS:
// a reset or timeout says nothing about certificates).
func describeTLSError(err error, cfg Config, host string) string {
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		record   tls.RecordHeaderError
	)
	trust := "the system's CAs"
	if cfg.CACert != "" {
		trust = "--etcd-cacert " + cfg.CACert
	}
	switch {
	case errors.As(err, &unknown):
		c := unknown.Cert
		return fmt.Sprintf("its certificate (subject %q, issuer %q) is signed by an unknown authority, not one of %s: give the CA that signed it with --etcd-cacert",
			c.Subject.String(), c.Issuer.String(), trust)
	case errors.As(err, &hostname):
		c := hostname.Certificate
		var names []string
		names = append(names, c.DNSNames...)
		for _, ip := range c.IPAddresses {
			names = append(names, ip.String())
		}
		return fmt.Sprintf("its certificate is not valid for %q (hostname mismatch: it holds %s): dial a name or address the certificate holds, or reissue it with %q",
			host, strings.Join(names, ", "), host)
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		c := invalid.Cert
		now := time.Now().UTC().Format(time.RFC3339)
		if time.Now().Before(c.NotBefore) {
			return fmt.Sprintf("its certificate is not valid yet (valid from %s, now %s): check the clocks", c.NotBefore.UTC().Format(time.RFC3339), now)
		}
		return fmt.Sprintf("its certificate expired at %s (now %s): renew etcd's certificate", c.NotAfter.UTC().Format(time.RFC3339), now)
	case errors.As(err, &invalid):
		return fmt.Sprintf("its certificate is invalid: %v", invalid)
	case errors.As(err, &record):
		return "it does not speak TLS (it answered in plain text): use an http:// endpoint"
	}
	msg := err.Error()
	i := strings.Index(msg, "remote error: tls: ")
	if i < 0 {
		return ""
	}
	alert := msg[i+len("remote error: "):]
	if !certAlert(alert) {
		return fmt.Sprintf("etcd ended the TLS handshake (%s)", alert)
	}
	if cfg.Cert == "" {
		return fmt.Sprintf("etcd refused the connection (%s): it requires a client certificate; give --etcd-cert and --etcd-key", alert)
	}
	return fmt.Sprintf("etcd rejected this client's certificate --etcd-cert %s (%s): etcd does not trust the CA that signed it, or the certificate is expired or not for client authentication", cfg.Cert, alert)
}

// certAlert reports whether a TLS alert is about the client's certificate.
func certAlert(alert string) bool {
	for _, a := range []string{"bad certificate", "unsupported certificate", "revoked certificate", "expired certificate",
		"unknown certificate", "certificate required", "access denied"} {
		if strings.Contains(alert, a) {
			return true
		}
	}
	return false
}
