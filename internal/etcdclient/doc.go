// Package etcdclient builds an etcd client from command-line settings, shared by coilctl
// and coild: it parses the endpoint list (http://, https:// and unix:// URLs), sets up
// TLS when asked, and checks that etcd answers within the dial timeout, so a wrong or
// dead endpoint fails fast with an actionable message (ErrUnreachable) instead of hanging.
package etcdclient
