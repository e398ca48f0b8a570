// Package tests holds Switchboard's repository-wide tests: hygiene checks now; later the multi-process, fault and peer-benchmark suites.
package tests
