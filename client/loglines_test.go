package client

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tether/structs"
)

// writeStampedLog writes chunks through a RotatingWriter with files of
// fileSize bytes, each chunk one second after the last from base.
func writeStampedLog(t *testing.T, dir string, fileSize int64, base time.Time, chunks ...string) {
	t.Helper()
	w, err := NewRotatingWriter(filepath.Join(dir, "alloc/logs"), "web.stdout", 100, fileSize)
	if err != nil {
		t.Fatal(err)
	}
	clk := &fakeClock{t: base}
	w.now = clk.now
	for _, c := range chunks {
		if _, err := w.Write([]byte(c)); err != nil {
			t.Fatal(err)
		}
		clk.advance(time.Second)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// lineModeRead reads the log in line mode and returns the lines (with
// their newlines) and their stamps, checking the line-frame invariants.
func lineModeRead(t *testing.T, f *AllocFS, opts LogsOptions) ([]string, []int64) {
	t.Helper()
	opts.Task, opts.Type, opts.Tasks, opts.LineMode = "web", "stdout", afsWebStarted, true
	var lines []string
	var stamps []int64
	err := f.Logs(context.Background(), opts, func(fr *structs.StreamFrame) error {
		if len(fr.Data) == 0 {
			return nil
		}
		parts := strings.SplitAfter(string(fr.Data), "\n")
		if parts[len(parts)-1] == "" {
			parts = parts[:len(parts)-1]
		}
		if len(parts) != len(fr.Stamps) {
			t.Fatalf("frame has %d lines and %d stamps", len(parts), len(fr.Stamps))
		}
		lines = append(lines, parts...)
		stamps = append(stamps, fr.Stamps...)
		return nil
	})
	if err != nil {
		t.Fatalf("Logs: %v", err)
	}
	return lines, stamps
}

func TestLogLines_TailAcrossRotation(t *testing.T) {
	base := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	cases := []struct {
		name   string
		chunks []string
		n      int
		want   []string
	}{
		// Files of 8 bytes: "aaa\nbbb\n" | "ccc\nddd\n" | "eee\n".
		{"whole", []string{"aaa\nbbb\n", "ccc\nddd\n", "eee\n"}, 2, []string{"ddd\n", "eee\n"}},
		{"boundary", []string{"aaa\nbbb\n", "ccc\nddd\n", "eee\n"}, 3, []string{"ccc\n", "ddd\n", "eee\n"}},
		{"more than there are", []string{"aaa\nbbb\n", "ccc\n"}, 10, []string{"aaa\n", "bbb\n", "ccc\n"}},
		// A line split by the rotation: "aaa\nbb" | "bbbbb\ncc" | "c".
		{"line across files", []string{"aaa\nbbbbbbb\nccc"}, 2, []string{"bbbbbbb\n", "ccc"}},
		{"partial last line", []string{"aaa\nbbb\n", "cc"}, 1, []string{"cc"}},
		{"zero", []string{"aaa\nbbb\n"}, 0, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir, _ := afsTestDir(t)
			writeStampedLog(t, dir, 8, base, tc.chunks...)
			got, stamps := lineModeRead(t, afsOpen(t, dir), LogsOptions{Tail: true, Lines: tc.n})
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("lines = %q; want %q", got, tc.want)
			}
			for i, s := range stamps {
				if s == 0 {
					t.Errorf("line %d (%q) has no stamp", i, got[i])
				}
			}
		})
	}
}

func TestLogLines_SinceAndStamps(t *testing.T) {
	dir, _ := afsTestDir(t)
	base := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	// One chunk a second; "l2" starts in chunk 1 and ends in chunk 2.
	writeStampedLog(t, dir, 16, base, "l0\nl1\n", "l", "2\nl3\n", "l4\nl5\nl6\nl7\n")
	f := afsOpen(t, dir)

	lines, stamps := lineModeRead(t, f, LogsOptions{})
	want := []string{"l0\n", "l1\n", "l2\n", "l3\n", "l4\n", "l5\n", "l6\n", "l7\n"}
	wantT := []int{0, 0, 1, 2, 3, 3, 3, 3} // seconds after base
	if fmt.Sprint(lines) != fmt.Sprint(want) {
		t.Fatalf("lines = %q; want %q", lines, want)
	}
	for i, s := range stamps {
		if got := time.Unix(0, s).Sub(base); got != time.Duration(wantT[i])*time.Second {
			t.Errorf("line %q stamped %v after base; want %ds", lines[i], got, wantT[i])
		}
	}

	lines, _ = lineModeRead(t, f, LogsOptions{Since: base.Add(2 * time.Second)})
	if got, want := strings.Join(lines, ""), "l3\nl4\nl5\nl6\nl7\n"; got != want {
		t.Errorf("since +2s = %q; want %q", got, want)
	}
	lines, _ = lineModeRead(t, f, LogsOptions{Since: base.Add(time.Second), Tail: true, Lines: 3})
	if got, want := strings.Join(lines, ""), "l5\nl6\nl7\n"; got != want {
		t.Errorf("since +1s, 3 lines = %q; want %q", got, want)
	}
	lines, _ = lineModeRead(t, f, LogsOptions{After: &structs.LogPos{File: 0, Offset: 6}})
	if got, want := strings.Join(lines, ""), "l2\nl3\nl4\nl5\nl6\nl7\n"; got != want {
		t.Errorf("after 0.6 = %q; want %q", got, want)
	}
}

func TestLogLines_NoIndexMarksUnknown(t *testing.T) {
	dir, _ := afsTestDir(t)
	afsWriteLogs(t, dir, "web", "stdout", "old\n")
	f := afsOpen(t, dir)
	lines, stamps := lineModeRead(t, f, LogsOptions{})
	if len(lines) != 1 || stamps[0] != 0 {
		t.Fatalf("lines %q stamps %v; want one line with no stamp", lines, stamps)
	}
	if lines, _ := lineModeRead(t, f, LogsOptions{Since: time.Unix(1, 0)}); len(lines) != 0 {
		t.Errorf("since kept unstamped lines %q", lines)
	}
}

func TestLogIndex_SurvivesReopenAndIsBounded(t *testing.T) {
	dir := t.TempDir()
	base := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	w, err := NewRotatingWriter(dir, "web.stdout", 2, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	clk := &fakeClock{t: base}
	w.now = clk.now
	for range 3 * stampsFine {
		clk.advance(time.Microsecond)
		w.Write([]byte("x\n"))
	}
	w.Close()
	// A restarted agent appends to the same file and index.
	w, err = NewRotatingWriter(dir, "web.stdout", 2, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	w.now = clk.now
	clk.advance(time.Hour)
	w.Write([]byte("after restart\n"))
	w.Close()

	af, err := OpenAllocFS(dir, afsAllocID)
	if err != nil {
		t.Fatal(err)
	}
	defer af.Close()
	ls := af.openLogStamps("web.stdout.0")
	defer ls.close()
	end := int64(3 * stampsFine * 2)
	ls.advance(end, end)
	// The first 4096 writes are each recorded, then 1 ms apart at least.
	if ls.n <= stampsFine || ls.n > stampsFine+10 {
		t.Errorf("%d records; want just over %d", ls.n, stampsFine)
	}
	if len(ls.win) > 2 {
		t.Errorf("the cursor keeps %d records; want those of its stretch only", len(ls.win))
	}
	if got := time.Unix(0, ls.at(end)); !got.Equal(clk.now()) {
		t.Errorf("line after restart stamped %v; want %v", got, clk.now())
	}
	if stampGap(maxStamps) <= stampGap(stampsFine) {
		t.Errorf("gap does not grow")
	}
}

// TestLogIndex_Tampered: a task can write into alloc/logs; an index whose
// offsets go back, or that ends mid-record, is read up to there only.
func TestLogIndex_Tampered(t *testing.T) {
	dir, _ := afsTestDir(t)
	afsWriteLogs(t, dir, "web", "stdout", "aaaa\nbbbb\ncccc\n")
	rec := func(off, t int64) []byte {
		b := make([]byte, stampSize)
		binary.LittleEndian.PutUint64(b, uint64(off))
		binary.LittleEndian.PutUint64(b[8:], uint64(t))
		return b
	}
	idx := append(append(append(rec(0, 100), rec(5, 200)...), rec(2, 300)...), 1, 2, 3)
	afsWriteFile(t, filepath.Join(dir, "alloc/logs", stampName("web.stdout.0")), string(idx))
	_, stamps := lineModeRead(t, afsOpen(t, dir), LogsOptions{})
	if fmt.Sprint(stamps) != "[100 200 200]" {
		t.Errorf("stamps = %v; want [100 200 200]: the record going back and what follows ignored", stamps)
	}
}
