// Package etcdtest starts a real single-member etcd inside the test process, with its data
// in the test's temporary directory, and hands out clients that are closed when the test
// ends. Use it instead of faking the etcd client interfaces.
package etcdtest
