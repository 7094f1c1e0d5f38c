package daemon

// EtcdViaSocket makes coild reach its embedded etcd through the URL it serves, as before
// the direct in-process client: the baseline in BenchmarkAdd.
func EtcdViaSocket(c *Config) { c.etcdViaSocket = true }
