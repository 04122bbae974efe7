// Package integration holds Tether's end-to-end tests: in-process clusters
// of real agents on loopback ports, and real processes of the built binary
// where process boundaries matter. They drive the agents through the
// official Nomad Go API client and raw HTTP. Nothing imports this package.
package integration
