package client

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// The node reads back what it wrote to disk: its dynamic metadata and
// the capture-time index of each log. A torn or foreign file must not
// crash it or be taken as something it is not.

// FuzzMetaStoreLoad: a metadata file of any content is loaded or refused
// with an error; a store that loads takes an update, and a store loaded
// again from the file it wrote shows the same metadata.
func FuzzMetaStoreLoad(f *testing.F) {
	for _, s := range []string{
		`{"rack":"r1","zone":null}`, `{}`, `null`, ``, `{"rack":`, `{"a":1}`, `[]`, `{"connect.log_level":null}`,
		`{"a":"` + string(rune(0xfffd)) + `"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "meta.json")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		static := map[string]string{"rack": "static"}
		m, err := newMetaStore(path, static)
		if err != nil {
			return
		}
		before := m.merged()
		v := "fuzz"
		if _, err := m.apply(map[string]*string{"fuzz.key": &v}); err != nil {
			t.Fatalf("apply after loading %q: %v", data, err)
		}
		again, err := newMetaStore(path, static)
		if err != nil {
			t.Fatalf("the file written after loading %q does not load: %v", data, err)
		}
		want := m.merged()
		if got := again.merged(); !reflect.DeepEqual(got, want) {
			t.Fatalf("loaded %q: after a write and a reload %v; want %v", data, got, want)
		}
		if want["fuzz.key"] != "fuzz" || len(want) != len(before)+boolInt(before["fuzz.key"] == "") {
			t.Fatalf("loaded %q: the update gave %v from %v", data, want, before)
		}
	})
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// FuzzLogStamps: an index file of any content (a torn tail, records going
// back, a task writing into alloc/logs) is opened for appending with its
// torn record dropped, and read with offsets never going back and at most
// maxStamps records, whatever the reader asks for.
func FuzzLogStamps(f *testing.F) {
	rec := func(off, t int64) []byte {
		var b [stampSize]byte
		binary.LittleEndian.PutUint64(b[:8], uint64(off))
		binary.LittleEndian.PutUint64(b[8:], uint64(t))
		return b[:]
	}
	good := append(append(rec(0, 100), rec(10, 200)...), rec(25, 300)...)
	f.Add(good, int64(12), int64(1))
	f.Add(good[:len(good)-3], int64(0), int64(250)) // a torn last record
	f.Add(append(rec(50, 1), rec(10, 2)...), int64(40), int64(0))
	f.Add([]byte{}, int64(0), int64(0))
	f.Fuzz(func(t *testing.T, data []byte, off, since int64) {
		dir := t.TempDir()
		logPath := filepath.Join(dir, "web.stdout.0")
		if err := os.WriteFile(stampName(logPath), data, 0o600); err != nil {
			t.Fatal(err)
		}

		// The writer side: reopened by a restarted agent.
		sw := openStamps(logPath, true)
		if sw.f != nil {
			fi, err := sw.f.Stat()
			if err != nil || fi.Size()%stampSize != 0 || fi.Size() > int64(len(data)) || fi.Size() < int64(len(data))-stampSize {
				t.Fatalf("reopened index of %d bytes: size %v, %v", len(data), fi.Size(), err)
			}
			sw.stamp(sw.atOff+1, time.Unix(0, sw.last+int64(time.Second)))
			sw.close()
		}

		// The reader side, as a stream through the alloc dir reads it.
		file, err := os.Open(stampName(logPath))
		if err != nil {
			t.Fatal(err)
		}
		ls := &logStamps{f: &openedFile{file: file}, last: -1}
		defer ls.close()
		ls.advance(max(off, 0), max(off, 0)+4096)
		prev := int64(0)
		for _, r := range ls.win {
			if r.off < prev {
				t.Fatalf("index %x: records go back (%d after %d)", data, r.off, prev)
			}
			prev = r.off
		}
		if ls.n > maxStamps {
			t.Fatalf("read %d records; at most %d", ls.n, maxStamps)
		}
		_ = ls.at(off)
		file2, err := os.Open(stampName(logPath))
		if err != nil {
			t.Fatal(err)
		}
		ls2 := &logStamps{f: &openedFile{file: file2}, last: -1}
		defer ls2.close()
		if first, at := ls2.since(since); at < 0 {
			t.Fatalf("since(%d) over %x = %d, %d: a read would start at a negative offset", since, data, first, at)
		}
	})
}

// FuzzLogFileNames: only <task>.<type>.N with N in canonical decimal is a
// log file, and only .<name>.N.times an index, whatever the directory
// holds.
func FuzzLogFileNames(f *testing.F) {
	for _, s := range []string{"web.stdout.0", "web.stdout.12", "web.stdout.007", "web.stdout.-1", "web.stdout.", "web.stdout.99999999999999999999",
		".web.stdout.3.times", ".web.stdout..times", "web.stdout.1.times", "web.stderr.1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		dir := t.TempDir()
		w := &RotatingWriter{dir: dir, base: "web.stdout"}
		if err := os.WriteFile(filepath.Join(dir, "web.stdout.5"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if filepath.Base(name) == name && name != "." && name != ".." {
			if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
				return // not a name this file system takes
			}
		}
		idxs, err := w.existing()
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range idxs {
			if n < 0 {
				t.Fatalf("%q: index %d", name, n)
			}
			if _, err := os.Stat(w.path(n)); err != nil {
				t.Fatalf("%q: index %d names no file: %v", name, n, err)
			}
		}
		if isStampFile(name) && (len(name) < len(".a.0.times") || name[0] != '.') {
			t.Fatalf("isStampFile(%q)", name)
		}
	})
}
