package server

import (
	"strings"
	"testing"
)

func TestValidJoinAddr(t *testing.T) {
	cases := []struct {
		addr string
		ok   bool
	}{
		{"10.0.0.1:4648", true},
		{"10.0.0.1", true},
		{"srv1.example.com:4648", true},
		{"[::1]:4648", true},
		{"::1", false}, // ambiguous without brackets
		{"", false},
		{":4648", false},
		{"10.0.0.1:0", false},
		{"10.0.0.1:99999", false},
		{"10.0.0.1:http", false},
		{"[::1", false},
		{strings.Repeat("a", 300), false},
	}
	for _, tc := range cases {
		err := ValidJoinAddr(tc.addr)
		if (err == nil) != tc.ok {
			t.Errorf("ValidJoinAddr(%q) = %v; want ok %v", tc.addr, err, tc.ok)
		}
	}
}
