package main

import (
	"fmt"
	"strings"
	"testing"
)

func TestBinaryAt(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want int
	}{
		{"hcl", "job \"x\" {\n}\n", -1},
		{"utf-8 text", "# café ✓\njob \"x\" {}", -1},
		{"nul", "job\x00", 3},
		{"invalid utf-8", "ab\xff\xfe", 2},
		{"truncated rune", "é\xc3", 2},
		{"empty", "", -1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := binaryAt([]byte(tc.in)); got != tc.want {
				t.Fatalf("binaryAt(%q) = %d, want %d", tc.in, got, tc.want)
			}
		})
	}
}

func TestLineCol(t *testing.T) {
	data := []byte("ab\ncd\n\nef")
	cases := []struct {
		off       int64
		line, col int
	}{{0, 1, 1}, {1, 1, 2}, {3, 2, 1}, {4, 2, 2}, {6, 3, 1}, {8, 4, 2}}
	for _, tc := range cases {
		if l, c := lineCol(data, tc.off); l != tc.line || c != tc.col {
			t.Errorf("lineCol(%d) = %d,%d, want %d,%d", tc.off, l, c, tc.line, tc.col)
		}
	}
}

func TestParseErrorsByPositionAndCapped(t *testing.T) {
	in := strings.Join([]string{
		"2 problems:", "f.hcl:10,3-9: ten", "f.hcl:2,5-6: two-five", "  more on two-five", "f.hcl:2,1-2: two-one", "f.hcl:1,1-2: one",
	}, "\n")
	want := "2 problems:\nf.hcl:1,1-2: one\nf.hcl:2,1-2: two-one\nf.hcl:2,5-6: two-five\n  more on two-five\nf.hcl:10,3-9: ten"
	if got := byPosition(in); got != want {
		t.Fatalf("byPosition:\n%s\nwant:\n%s", got, want)
	}
	var many []string
	for i := 1; i <= 14; i++ {
		many = append(many, fmt.Sprintf("e%d", i))
	}
	got := firstLines(strings.Join(many, "\n"), 10)
	if !strings.HasPrefix(got, "e1\n") || !strings.HasSuffix(got, "e10\n... and 4 more") {
		t.Fatalf("firstLines: %q", got)
	}
	if got := firstLines("a\nb", 10); got != "a\nb" {
		t.Fatalf("firstLines of few: %q", got)
	}
}

func TestPercent(t *testing.T) {
	for in, want := range map[float64]string{0: "0%", 1.5: "1.5%", 12: "12%", 33.333: "33.33%", 99.999: "100%", 0.05: "0.05%"} {
		if got := percent(in); got != want {
			t.Errorf("percent(%v) = %q, want %q", in, got, want)
		}
	}
}
