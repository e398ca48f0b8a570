// Package etcdtest runs an etcd server for tests: the etcd on PATH
// (Debian's etcd-server), on loopback ports of its own, its data in the
// test's temporary directory. Without etcd on PATH the test is skipped,
// or fails when SWITCHBOARD_REQUIRE_ETCD is set (as .ci/run sets it, having
// installed etcd).
package etcdtest
