package structs

import (
	"regexp"
	"strings"
	"testing"
)

// uuidRef is the reference for the 36-character text form of a UUID.
var uuidRef = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// FuzzValidateUUID: IsUUID agrees with the reference pattern on any text,
// and ValidateUUID refuses exactly what IsUUID refuses, with a 400 that
// names what was looked up.
func FuzzValidateUUID(f *testing.F) {
	for _, s := range []string{"", GenerateUUID(), strings.ToUpper(GenerateUUID()), "5f1c7a3e", "5f1c7a3e-2f0b-4c1e-9d55-0d3c1b2a4e6g",
		"5f1c7a3e-2f0b-4c1e-9d55_0d3c1b2a4e6f", "{5f1c7a3e-2f0b-4c1e-9d55-0d3c1b2a4e6f}", "5f1c7a3e2f0b4c1e9d550d3c1b2a4e6f0000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ok := IsUUID(s)
		if want := uuidRef.MatchString(s); ok != want {
			t.Fatalf("IsUUID(%q) = %v; reference %v", s, ok, want)
		}
		err := ValidateUUID("alloc", s)
		if (err == nil) != ok {
			t.Fatalf("ValidateUUID(%q) = %v; IsUUID %v", s, err, ok)
		}
		if err != nil {
			if c := StatusCode(err); c != 400 {
				t.Fatalf("ValidateUUID(%q): status %d; want 400", s, c)
			}
			if !strings.Contains(err.Error(), "alloc") {
				t.Fatalf("ValidateUUID(%q) = %q; does not name the parameter", s, err)
			}
		}
	})
}

// FuzzParseLogPos: a position that parses prints back to text that parses
// to the same position, and never holds a negative part.
func FuzzParseLogPos(f *testing.F) {
	for _, s := range []string{"0.0", "3.1024", "12.", ".5", "-1.0", "1.-5", "1.2.3", "9223372036854775807.9223372036854775807", "+1.+2", "01.007"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, ok := ParseLogPos(s)
		if !ok {
			if p != (LogPos{}) {
				t.Fatalf("ParseLogPos(%q) refused but returned %+v", s, p)
			}
			return
		}
		if p.File < 0 || p.Offset < 0 {
			t.Fatalf("ParseLogPos(%q) = %+v", s, p)
		}
		back, ok := ParseLogPos(p.String())
		if !ok || back != p {
			t.Fatalf("ParseLogPos(%q) = %+v, whose text %q reads %+v, %v", s, p, p.String(), back, ok)
		}
		if n := LogFileIndex("alloc/logs/web.stdout." + s[:strings.IndexByte(s, '.')]); n != p.File {
			t.Fatalf("LogFileIndex of file %d = %d", p.File, n)
		}
	})
}

// FuzzValidateMetaKey: a key is refused with a 400 naming it, or taken;
// a taken key is a dotted identifier (no empty part) made of valid UTF-8.
func FuzzValidateMetaKey(f *testing.F) {
	for _, s := range []string{"rack", "a.b.c", "_x-1", "a..b", ".a", "a.", "1a", "é.ß", "a b", "a\x00", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		err := ValidateMetaKey(key)
		if err != nil {
			if StatusCode(err) != 400 {
				t.Fatalf("ValidateMetaKey(%q): status %d", key, StatusCode(err))
			}
			return
		}
		for _, part := range strings.Split(key, ".") {
			if part == "" {
				t.Fatalf("ValidateMetaKey took %q, which has an empty part", key)
			}
		}
		if strings.ContainsRune(key, '\uFFFD') || strings.ContainsAny(key, " \t\n\x00/\\\"") {
			t.Fatalf("ValidateMetaKey took %q", key)
		}
	})
}
