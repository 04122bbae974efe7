package structs

import (
	"unicode"
)

// NodeMetaApplyRequest is the body of POST /v1/client/metadata. A nil value
// unsets the key.
type NodeMetaApplyRequest struct {
	NodeID string
	Meta   map[string]*string
	QueryOptions
}

// NodeMetaResponse is the node's metadata: Meta is the merged view, Static
// comes from the agent config, Dynamic from the API (nil marks a static key
// that was unset).
type NodeMetaResponse struct {
	Meta    map[string]string
	Dynamic map[string]*string
	Static  map[string]string

	// Version identifies, on the node that made it, the state of the
	// metadata the response shows (it changes with every apply), so the
	// node can reuse its JSON; 0 means unknown. It is not sent.
	Version uint64 `json:"-" codec:"-"`
}

// ValidateMetaKey returns a 400 unless key is a dotted identifier: each
// dot-separated part starts with a letter or underscore and continues with
// letters, digits, underscores, combining marks or dashes.
func ValidateMetaKey(key string) error {
	if key == "" {
		return BadRequest("metadata keys must not be empty")
	}
	start := true
	for _, r := range key {
		switch {
		case r == '.':
			if start {
				return invalidMetaKey(key)
			}
			start = true
			continue
		case start:
			if !(r == '_' || unicode.IsLetter(r) || unicode.Is(unicode.Other_ID_Start, r) || unicode.Is(unicode.Nl, r)) {
				return invalidMetaKey(key)
			}
		default:
			if !(r == '_' || r == '-' || unicode.IsLetter(r) || unicode.IsDigit(r) ||
				unicode.Is(unicode.Mn, r) || unicode.Is(unicode.Mc, r) || unicode.Is(unicode.Nd, r) ||
				unicode.Is(unicode.Pc, r) || unicode.Is(unicode.Nl, r) || unicode.Is(unicode.Other_ID_Continue, r)) {
				return invalidMetaKey(key)
			}
		}
		start = false
	}
	if start {
		return invalidMetaKey(key)
	}
	return nil
}

func invalidMetaKey(key string) error {
	return BadRequest("%q is invalid; metadata keys must be valid dotted hcl identifiers", key)
}
