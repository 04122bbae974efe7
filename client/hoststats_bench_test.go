package client

import (
	"testing"
	"time"
)

// BenchmarkCollect measures taking one host sample (after the first, so the
// cached partition list and CPU facts are warm, as they are in Run).
func BenchmarkCollect(b *testing.B) {
	c := newTestCollector(b, time.Hour)
	if err := c.Collect(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Collect(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLatest measures serving the latest sample (a deep copy).
func BenchmarkLatest(b *testing.B) {
	c := newTestCollector(b, time.Hour)
	c.Latest()
	b.ReportAllocs()
	for b.Loop() {
		if c.Latest() == nil {
			b.Fatal("nil sample")
		}
	}
}
