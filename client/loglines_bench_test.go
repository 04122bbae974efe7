package client

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"tether/structs"
)

// procReadBytes is this process's rchar from /proc/self/io: the bytes
// its read system calls returned (page cache or disk alike), or -1.
func procReadBytes() int64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return -1
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("rchar: ")); ok {
			n, _ := strconv.ParseInt(string(v), 10, 64)
			return n
		}
	}
	return -1
}

// BenchmarkLogsTail100 reads lines=100 of a 100 MB log rotated over ten
// 10 MB files (100-byte lines, each write stamped), as the node serves
// it: the backwards scan, the line framer and the stamps. readB/op is
// what the read system calls returned per call, index included.
func BenchmarkLogsTail100(b *testing.B) {
	dir, _ := afsTestDir(b)
	w, err := NewRotatingWriter(filepath.Join(dir, "alloc/logs"), "web.stdout", 10, 10<<20)
	if err != nil {
		b.Fatal(err)
	}
	line := append(bytes.Repeat([]byte("x"), 99), '\n')
	chunk := bytes.Repeat(line, 40) // 4000 bytes a write
	for written := 0; written < 100<<20; written += len(chunk) {
		if _, err := w.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	w.Close()
	f := afsOpen(b, dir)
	opts := LogsOptions{Task: "web", Type: "stdout", Tasks: afsWebStarted, Tail: true, Lines: 100, LineMode: true}
	var lines int
	send := func(fr *structs.StreamFrame) error { lines += len(fr.Stamps); return nil }
	before := procReadBytes()
	b.ResetTimer()
	for b.Loop() {
		lines = 0
		if err := f.Logs(context.Background(), opts, send); err != nil {
			b.Fatal(err)
		}
		if lines != 100 {
			b.Fatalf("%d lines; want 100", lines)
		}
	}
	if before >= 0 {
		b.ReportMetric(float64(procReadBytes()-before)/float64(b.N), "readB/op")
	}
}
