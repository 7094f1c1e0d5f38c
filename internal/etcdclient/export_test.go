package etcdclient

// ClientConfig exposes clientConfig to the tests.
var ClientConfig = clientConfig
