package structs

import (
	"crypto/rand"
	"fmt"
)

// GenerateUUID returns a random RFC 4122 version 4 UUID in its 36-character
// text form.
func GenerateUUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("structs: reading random bytes: %v", err))
	}
	b[6] = (b[6] & 0x0f) | 0x40
	b[8] = (b[8] & 0x3f) | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// IsUUID reports whether s is a UUID in its full 36-character text form
// (hex digits in groups of 8-4-4-4-12). Short IDs are not UUIDs.
func IsUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// ValidateUUID returns a 400 naming what if id is not a full UUID.
func ValidateUUID(what, id string) error {
	if id == "" {
		return BadRequest("missing %s", what)
	}
	if !IsUUID(id) {
		if len(id) != 36 {
			return BadRequest("%s lookup failed: UUID must be 36 characters", what)
		}
		return BadRequest("%s lookup failed: invalid UUID", what)
	}
	return nil
}
