// Package tests holds Switchboard's repository-wide tests: the
// multi-process suites (a node and its clients as child processes of the
// test binary, started and cleaned up by each test: calls, the bus, faults
// such as SIGKILL mid-call, the daemon, its CLI, configuration, metrics and
// systemd activation), the cross-process benchmarks, and the hygiene and
// layering checks of the source tree.
package tests
