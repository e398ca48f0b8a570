// Package dnstest is a DNS server for tests: it answers A queries for one
// name over UDP from a set of addresses the test changes, NXDOMAIN when
// the set is empty, SERVFAIL when told to fail.
package dnstest
