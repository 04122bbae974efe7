package client

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"tether/structs"
)

// BenchmarkLogsRead reads a task log of 90 MB across 9 rotated files
// (follow=false), as `nomad alloc logs` on a chatty task does; MB/s is the
// node-side read rate, before any encoding.
func BenchmarkLogsRead(b *testing.B) {
	const files, fileSize = 9, 10_000_000
	dir, _ := afsTestDir(b)
	chunk := make([]byte, fileSize)
	for i := range chunk {
		chunk[i] = byte('a' + i%26)
	}
	for i := 0; i < files; i++ {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("alloc/logs/web.stdout.%d", i)), chunk, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	f := afsOpen(b, dir)
	opts := LogsOptions{Task: "web", Type: "stdout", Tasks: map[string]bool{"web": true}}
	var got int64
	send := func(fr *structs.StreamFrame) error {
		got += int64(len(fr.Data))
		return nil
	}
	b.SetBytes(files * fileSize)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		got = 0
		if err := f.Logs(context.Background(), opts, send); err != nil {
			b.Fatal(err)
		}
		if got != files*fileSize {
			b.Fatalf("read %d bytes; want %d", got, files*fileSize)
		}
	}
}

// BenchmarkReadAt1MiB is a readat (or cat) of a 1 MiB file.
func BenchmarkReadAt1MiB(b *testing.B) {
	dir, _ := afsTestDir(b)
	if err := os.WriteFile(filepath.Join(dir, "alloc/data/f"), make([]byte, 1<<20), 0o644); err != nil {
		b.Fatal(err)
	}
	f := afsOpen(b, dir)
	b.SetBytes(1 << 20)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		n, err := f.ReadAt(context.Background(), "alloc/data/f", 0, -1, io.Discard)
		if err != nil || n != 1<<20 {
			b.Fatal(n, err)
		}
	}
}

// BenchmarkStream1MiB streams a 1 MiB file as frames (follow=false).
func BenchmarkStream1MiB(b *testing.B) {
	dir, _ := afsTestDir(b)
	if err := os.WriteFile(filepath.Join(dir, "alloc/data/f"), make([]byte, 1<<20), 0o644); err != nil {
		b.Fatal(err)
	}
	f := afsOpen(b, dir)
	send := func(*structs.StreamFrame) error { return nil }
	b.SetBytes(1 << 20)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := f.Stream(context.Background(), StreamOptions{Path: "alloc/data/f"}, send); err != nil {
			b.Fatal(err)
		}
	}
}
