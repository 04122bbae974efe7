package client

import (
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"tether/rpc"
	"time"
)

func sptr(s string) *string { return &s }

func TestMetaStore_ApplySemantics(t *testing.T) {
	cases := []struct {
		name        string
		update      map[string]*string
		wantMeta    map[string]string // keys that must have these values
		wantAbsent  []string          // keys absent from Meta
		wantDynamic map[string]*string
		wantErr     string
	}{
		{"set new key", map[string]*string{"foo": sptr("bar")}, map[string]string{"foo": "bar", "rack": "r1"}, nil, map[string]*string{"foo": sptr("bar")}, ""},
		{"override static", map[string]*string{"rack": sptr("r2")}, map[string]string{"rack": "r2"}, nil, map[string]*string{"rack": sptr("r2")}, ""},
		{"unset static keeps tombstone", map[string]*string{"rack": nil}, nil, []string{"rack"}, map[string]*string{"rack": nil}, ""},
		{"unset unknown key vanishes", map[string]*string{"nope": nil}, map[string]string{"rack": "r1"}, []string{"nope"}, map[string]*string{}, ""},
		{"empty string is a value", map[string]*string{"e": sptr("")}, map[string]string{"e": ""}, nil, map[string]*string{"e": sptr("")}, ""},
		{"invalid key applies nothing", map[string]*string{"good": sptr("1"), "some/path": sptr("x")}, nil, []string{"good"}, map[string]*string{}, `"some/path" is invalid`},
		{"empty update", map[string]*string{}, nil, nil, map[string]*string{}, "missing required Meta object"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := newMetaStore(filepath.Join(t.TempDir(), "meta.json"), map[string]string{"rack": "r1"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := m.readJSON(); err != nil { // cached before the change
				t.Fatal(err)
			}
			_, err = m.apply(tc.update)
			checkMetaJSON(t, m)
			if tc.wantErr != "" {
				if err == nil || !contains(err.Error(), tc.wantErr) {
					t.Fatalf("apply error = %v; want %q", err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatalf("apply: %v", err)
			}
			got := m.read()
			for k, v := range tc.wantMeta {
				if got.Meta[k] != v {
					t.Errorf("Meta[%s] = %q; want %q", k, got.Meta[k], v)
				}
			}
			for _, k := range tc.wantAbsent {
				if _, ok := got.Meta[k]; ok {
					t.Errorf("Meta has %q; want it absent", k)
				}
			}
			if len(got.Dynamic) != len(tc.wantDynamic) {
				t.Fatalf("Dynamic = %v; want %v", got.Dynamic, tc.wantDynamic)
			}
			for k, v := range tc.wantDynamic {
				g, ok := got.Dynamic[k]
				if !ok || (g == nil) != (v == nil) || (g != nil && *g != *v) {
					t.Errorf("Dynamic[%s] = %v; want %v", k, g, v)
				}
			}
			if got.Static["rack"] != "r1" || got.Static["connect.log_level"] != "info" {
				t.Errorf("Static = %v; want config plus connect defaults", got.Static)
			}
		})
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// checkMetaJSON checks that the cached JSON is the JSON of what read
// returns now.
func checkMetaJSON(t *testing.T, m *metaStore) {
	t.Helper()
	got, err := m.readJSON()
	if err != nil {
		t.Fatal(err)
	}
	want, err := rpc.EncodeJSON(m.read())
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("readJSON = %s; want %s", got, want)
	}
}

// TestMetaStore_JSONAfterFailedApply: an apply that cannot be saved is
// undone, and the JSON cached by a read made while it was being saved
// goes back with it.
func TestMetaStore_JSONAfterFailedApply(t *testing.T) {
	dir := t.TempDir()
	m, err := newMetaStore(filepath.Join(dir, "gone", "meta.json"), map[string]string{"rack": "r1"})
	if err != nil {
		t.Fatal(err)
	}
	before, err := m.readJSON()
	if err != nil {
		t.Fatal(err)
	}
	before = append([]byte(nil), before...)

	m.saveMu.Lock() // hold the apply in its save
	done := make(chan error, 1)
	go func() {
		_, err := m.apply(map[string]*string{"foo": sptr("bar")})
		done <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		m.mu.Lock()
		applied := m.gen == 1
		m.mu.Unlock()
		if applied {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("apply never ran")
		}
		runtime.Gosched() // the apply runs up to its save, then waits on saveMu
	}
	if during, _ := m.readJSON(); !strings.Contains(string(during), `"foo":"bar"`) {
		t.Fatalf("readJSON during the save = %s; want foo in it", during)
	}
	m.saveMu.Unlock()
	if err := <-done; err == nil {
		t.Fatal("apply saved into a missing directory")
	}
	checkMetaJSON(t, m)
	if got, _ := m.readJSON(); string(got) != string(before) {
		t.Fatalf("readJSON after a failed apply = %s; want %s", got, before)
	}
}

// TestMetaStore_PersistsAndGroupCommits: concurrent applies all land, and
// a reopened store has them (tombstones of keys no longer static dropped).
func TestMetaStore_PersistsAndGroupCommits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meta.json")
	m, err := newMetaStore(path, map[string]string{"rack": "r1", "zone": "z"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if _, err := m.apply(map[string]*string{fmt.Sprintf("k%d", i): sptr("v")}); err != nil {
				t.Errorf("apply %d: %v", i, err)
			}
		}(i)
	}
	wg.Wait()
	if _, err := m.apply(map[string]*string{"rack": nil, "zone": nil}); err != nil {
		t.Fatal(err)
	}
	// Reopen with "zone" no longer static: its tombstone is dropped.
	m2, err := newMetaStore(path, map[string]string{"rack": "r1"})
	if err != nil {
		t.Fatal(err)
	}
	got := m2.read()
	for i := 0; i < 32; i++ {
		if got.Meta[fmt.Sprintf("k%d", i)] != "v" {
			t.Fatalf("k%d lost across reopen: %v", i, got.Meta)
		}
	}
	if v, ok := got.Dynamic["rack"]; !ok || v != nil {
		t.Fatalf("rack tombstone = %v, %v; want kept", v, ok)
	}
	if _, ok := got.Dynamic["zone"]; ok {
		t.Fatalf("zone tombstone kept though zone is no longer static")
	}
	if _, ok := got.Meta["rack"]; ok {
		t.Fatalf("rack unset but in Meta")
	}
}
