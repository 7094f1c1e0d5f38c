// Package etcdembed starts a real single-member etcd server inside the current process
// (go.etcd.io/etcd/server/v3/embed). coild's --embedded-etcd and the tests' etcdtest
// helper both start etcd through it, so they run the same configuration.
package etcdembed
