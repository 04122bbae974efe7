package client

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// logFiles returns the indexes and contents of the files <dir>/<base>.N in
// index order, failing on any other file in dir but their capture-time
// indexes, which must be there exactly for the files that are.
func logFiles(t *testing.T, dir, base string) ([]int, [][]byte) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var idxs []int
	stamps := map[string]bool{}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") && strings.HasSuffix(e.Name(), ".times") {
			stamps[e.Name()] = true
			continue
		}
		suffix, ok := strings.CutPrefix(e.Name(), base+".")
		if !ok {
			t.Fatalf("unexpected file %q", e.Name())
		}
		idx, err := strconv.Atoi(suffix)
		if err != nil || strconv.Itoa(idx) != suffix {
			t.Fatalf("unexpected file %q", e.Name())
		}
		idxs = append(idxs, idx)
	}
	sort.Ints(idxs)
	for _, idx := range idxs {
		name := stampName(base + "." + strconv.Itoa(idx))
		if !stamps[name] {
			t.Errorf("no index %q beside its log file", name)
		}
		delete(stamps, name)
	}
	for name := range stamps {
		t.Errorf("index %q outlived its log file", name)
	}
	contents := make([][]byte, len(idxs))
	for i, idx := range idxs {
		b, err := os.ReadFile(filepath.Join(dir, base+"."+strconv.Itoa(idx)))
		if err != nil {
			t.Fatal(err)
		}
		contents[i] = b
	}
	return idxs, contents
}

// testPattern returns n bytes that do not repeat with a short period, so a
// misplaced or duplicated chunk shows.
func testPattern(n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "%d,", i)
	}
	return b.Bytes()[:n]
}

func TestRotatingWriterKeepsTail(t *testing.T) {
	cases := []struct {
		name        string
		maxFiles    int
		maxFileSize int64
		total       int
		chunks      []int // chunk sizes, cycled
	}{
		{"odd chunks", 3, 100, 1000, []int{7, 13, 1, 99, 250, 31}},
		{"one file", 1, 64, 500, []int{3, 17, 129}},
		{"byte files", 4, 1, 37, []int{5, 2}},
		{"chunk larger than all files", 2, 10, 300, []int{77}},
		{"exact multiples", 3, 50, 600, []int{50}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			w, err := NewRotatingWriter(dir, "web.stdout", tc.maxFiles, tc.maxFileSize)
			if err != nil {
				t.Fatal(err)
			}
			data := testPattern(tc.total)
			for off, i := 0, 0; off < len(data); i++ {
				n := min(tc.chunks[i%len(tc.chunks)], len(data)-off)
				got, err := w.Write(data[off : off+n])
				if err != nil || got != n {
					t.Fatalf("Write(%d bytes) = %d, %v; want %d, nil", n, got, err, n)
				}
				off += n
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}

			idxs, contents := logFiles(t, dir, "web.stdout")
			if len(idxs) > tc.maxFiles {
				t.Errorf("%d files on disk; want at most %d", len(idxs), tc.maxFiles)
			}
			lastIdx := (tc.total+int(tc.maxFileSize)-1)/int(tc.maxFileSize) - 1
			wantFirst := max(0, lastIdx-tc.maxFiles+1)
			for i, idx := range idxs {
				if want := wantFirst + i; idx != want {
					t.Fatalf("file indexes = %v; want %d..%d", idxs, wantFirst, lastIdx)
				}
			}
			if idxs[len(idxs)-1] != lastIdx {
				t.Fatalf("last index = %d; want %d", idxs[len(idxs)-1], lastIdx)
			}
			var all []byte
			for i, c := range contents {
				if int64(len(c)) > tc.maxFileSize {
					t.Errorf("file %d has %d bytes; want at most %d", idxs[i], len(c), tc.maxFileSize)
				}
				if i < len(contents)-1 && int64(len(c)) != tc.maxFileSize {
					t.Errorf("non-last file %d has %d bytes; want %d", idxs[i], len(c), tc.maxFileSize)
				}
				all = append(all, c...)
			}
			wantLen := tc.total - wantFirst*int(tc.maxFileSize)
			if len(all) != wantLen {
				t.Fatalf("kept %d bytes; want %d", len(all), wantLen)
			}
			if !bytes.Equal(all, data[len(data)-wantLen:]) {
				t.Errorf("kept bytes are not the tail of the written bytes")
			}
		})
	}
}

func TestRotatingWriterReopen(t *testing.T) {
	cases := []struct {
		name     string
		first    int // bytes written before reopening
		second   int // bytes written after
		maxFiles int
		size     int64
		// wantIdxs are the file indexes after the second write.
		wantIdxs []int
	}{
		{"append to partial file", 150, 30, 5, 100, []int{0, 1}},
		{"last file full", 200, 30, 5, 100, []int{0, 1, 2}},
		{"empty file", 0, 10, 5, 100, []int{0}},
		{"limit applied on reopen", 450, 0, 2, 100, []int{3, 4}},
		{"full file at limit", 400, 10, 2, 100, []int{3, 4}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			data := testPattern(tc.first + tc.second)
			w, err := NewRotatingWriter(dir, "web.stderr", 10, tc.size)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(data[:tc.first]); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}

			w, err = NewRotatingWriter(dir, "web.stderr", tc.maxFiles, tc.size)
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			if _, err := w.Write(data[tc.first:]); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}

			idxs, contents := logFiles(t, dir, "web.stderr")
			if fmt.Sprint(idxs) != fmt.Sprint(tc.wantIdxs) {
				t.Fatalf("indexes = %v; want %v", idxs, tc.wantIdxs)
			}
			all := bytes.Join(contents, nil)
			if want := data[len(data)-len(all):]; !bytes.Equal(all, want) {
				t.Errorf("files hold %q; want tail %q", all, want)
			}
			if want := len(data) - tc.wantIdxs[0]*int(tc.size); len(all) != want {
				t.Errorf("kept %d bytes; want %d", len(all), want)
			}
		})
	}
}

func TestRotatingWriterConcurrentWrites(t *testing.T) {
	const (
		writers = 8
		records = 500
	)
	dir := t.TempDir()
	// Enough files to keep everything, so every record must be found.
	w, err := NewRotatingWriter(dir, "web.stdout", 10000, 97)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range records {
				rec := fmt.Sprintf("w%02d-r%04d\n", g, i)
				if n, err := w.Write([]byte(rec)); err != nil || n != len(rec) {
					t.Errorf("Write = %d, %v; want %d, nil", n, err, len(rec))
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	idxs, contents := logFiles(t, dir, "web.stdout")
	for i, c := range contents {
		if len(c) > 97 {
			t.Errorf("file %d has %d bytes; want at most 97", idxs[i], len(c))
		}
	}
	lines := strings.Split(strings.TrimSuffix(string(bytes.Join(contents, nil)), "\n"), "\n")
	if got, want := len(lines), writers*records; got != want {
		t.Fatalf("got %d records; want %d", got, want)
	}
	next := make(map[int]int) // per writer, the next record expected
	for _, line := range lines {
		var g, i int
		if _, err := fmt.Sscanf(line, "w%02d-r%04d", &g, &i); err != nil {
			t.Fatalf("garbled record %q", line)
		}
		if i != next[g] {
			t.Fatalf("writer %d: got record %d; want %d", g, i, next[g])
		}
		next[g]++
	}
}

func TestRotatingWriterIgnoresOtherFiles(t *testing.T) {
	dir := t.TempDir()
	others := []string{"web.stdout.x", "web.stdout.01", "web.stdout.", "web.stderr.7", "web.stdout.0.bak"}
	for _, name := range others {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("other"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	w, err := NewRotatingWriter(dir, "web.stdout", 1, 4)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	for _, name := range others {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || string(b) != "other" {
			t.Errorf("%s: got %q, %v; want untouched", name, b, err)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "web.stdout.2"))
	if err != nil || string(b) != "89" {
		t.Errorf("web.stdout.2 = %q, %v; want \"89\"", b, err)
	}
}

func TestRotatingWriterInvalidArgs(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name     string
		dir      string
		base     string
		maxFiles int
		size     int64
	}{
		{"zero files", dir, "web.stdout", 0, 10},
		{"zero size", dir, "web.stdout", 1, 0},
		{"empty base", dir, "", 1, 10},
		{"slash in base", dir, "a/b", 1, 10},
		{"missing dir", filepath.Join(dir, "nope"), "web.stdout", 1, 10},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w, err := NewRotatingWriter(tc.dir, tc.base, tc.maxFiles, tc.size)
			if err == nil {
				w.Close()
				t.Fatalf("NewRotatingWriter succeeded; want error")
			}
		})
	}
}

func TestRotatingWriterClose(t *testing.T) {
	w, err := NewRotatingWriter(t.TempDir(), "web.stdout", 2, 10)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close: %v; want nil", err)
	}
	if n, err := w.Write([]byte("x")); n != 0 || !errors.Is(err, os.ErrClosed) {
		t.Errorf("Write after Close = %d, %v; want 0, ErrClosed", n, err)
	}
}
