package acl

import (
	"sort"
	"strings"
)

// capabilitySet is a set of namespace capabilities.
type capabilitySet map[string]bool

// denied reports whether the set is an explicit deny.
func (c capabilitySet) denied() bool { return c[NamespaceCapabilityDeny] }

// ACL is what a token may do: the merge of its policies. A nil *ACL may do
// nothing, so a resolution bug fails closed. It is immutable and safe for
// concurrent use.
type ACL struct {
	management bool

	// namespaces holds the exact namespace rules, wildcards the globs.
	namespaces map[string]capabilitySet
	wildcards  map[string]capabilitySet

	node     string
	agent    string
	operator string
}

// ManagementACL may do anything; management tokens resolve to it.
var ManagementACL = &ACL{management: true}

// ACLsDisabledACL may do anything; it stands for every caller while ACLs
// are disabled, so that code never has to treat "no ACL object" as "allow".
var ACLsDisabledACL = &ACL{management: true}

// DenyAllACL may do nothing: the anonymous caller when no anonymous policy
// exists.
var DenyAllACL = &ACL{}

// NewACL merges policies into one ACL. Within a namespace, capabilities
// add up unless one policy denies it; for node, agent and operator the
// strongest policy wins, with deny above all.
func NewACL(policies []*Policy) *ACL {
	a := &ACL{namespaces: map[string]capabilitySet{}, wildcards: map[string]capabilitySet{}}
	for _, p := range policies {
		if p == nil {
			continue
		}
		for _, ns := range p.Namespaces {
			caps := capabilitySet{}
			for _, c := range ExpandNamespacePolicy(ns.Policy) {
				caps[c] = true
			}
			for _, c := range ns.Capabilities {
				caps[c] = true
				for _, implied := range impliedCapabilities[c] {
					caps[implied] = true
				}
			}
			target := a.namespaces
			if strings.Contains(ns.Name, "*") {
				target = a.wildcards
			}
			if old, ok := target[ns.Name]; ok {
				if old.denied() || caps.denied() {
					caps = capabilitySet{NamespaceCapabilityDeny: true}
				} else {
					for c := range old {
						caps[c] = true
					}
				}
			}
			if caps.denied() {
				caps = capabilitySet{NamespaceCapabilityDeny: true}
			}
			target[ns.Name] = caps
		}
		a.node = maxPrivilege(a.node, p.Node)
		a.agent = maxPrivilege(a.agent, p.Agent)
		a.operator = maxPrivilege(a.operator, p.Operator)
	}
	return a
}

// IsManagement reports whether the ACL may do anything.
func (a *ACL) IsManagement() bool { return a != nil && a.management }

// namespaceCapabilities returns the rule that governs ns: the exact rule
// if there is one, else the closest matching glob (the one that leaves the
// fewest characters to its stars, as Nomad picks), else none.
func (a *ACL) namespaceCapabilities(ns string) capabilitySet {
	if caps, ok := a.namespaces[ns]; ok {
		return caps
	}
	var best capabilitySet
	bestDiff, bestName := 0, ""
	for pattern, caps := range a.wildcards {
		if !globMatch(pattern, ns) {
			continue
		}
		diff := len(ns) - len(pattern) + strings.Count(pattern, "*")
		// Ties go to the lexically smaller pattern, so the choice does not
		// depend on map order.
		if best == nil || diff < bestDiff || diff == bestDiff && pattern < bestName {
			best, bestDiff, bestName = caps, diff, pattern
		}
	}
	return best
}

// AllowNamespaceOperation reports whether the ACL has capability op in
// namespace ns.
func (a *ACL) AllowNamespaceOperation(ns, op string) bool {
	if a == nil {
		return false
	}
	if a.management {
		return true
	}
	caps := a.namespaceCapabilities(ns)
	if caps == nil || caps.denied() {
		return false
	}
	return caps[op]
}

// AllowNamespaceAny reports whether the ACL has at least one of ops in ns.
func (a *ACL) AllowNamespaceAny(ns string, ops ...string) bool {
	for _, op := range ops {
		if a.AllowNamespaceOperation(ns, op) {
			return true
		}
	}
	return false
}

// AllowNamespace reports whether the ACL has any capability in ns.
func (a *ACL) AllowNamespace(ns string) bool {
	if a == nil {
		return false
	}
	if a.management {
		return true
	}
	caps := a.namespaceCapabilities(ns)
	return len(caps) > 0 && !caps.denied()
}

// allowCoarse reports whether a coarse policy grants read (or write).
func allowCoarse(policy string, write bool) bool {
	switch policy {
	case PolicyWrite:
		return true
	case PolicyRead:
		return !write
	}
	return false
}

// AllowNodeRead reports whether the ACL may read nodes.
func (a *ACL) AllowNodeRead() bool {
	return a.IsManagement() || a != nil && allowCoarse(a.node, false)
}

// AllowNodeWrite reports whether the ACL may change nodes.
func (a *ACL) AllowNodeWrite() bool {
	return a.IsManagement() || a != nil && allowCoarse(a.node, true)
}

// AllowAgentRead reports whether the ACL may read agent information.
func (a *ACL) AllowAgentRead() bool {
	return a.IsManagement() || a != nil && allowCoarse(a.agent, false)
}

// AllowAgentWrite reports whether the ACL may change agents.
func (a *ACL) AllowAgentWrite() bool {
	return a.IsManagement() || a != nil && allowCoarse(a.agent, true)
}

// AllowOperatorRead reports whether the ACL may read cluster operator
// information.
func (a *ACL) AllowOperatorRead() bool {
	return a.IsManagement() || a != nil && allowCoarse(a.operator, false)
}

// AllowOperatorWrite reports whether the ACL may change cluster operator
// settings.
func (a *ACL) AllowOperatorWrite() bool {
	return a.IsManagement() || a != nil && allowCoarse(a.operator, true)
}

// NamespaceCapabilities returns the sorted capabilities the ACL has in ns
// (nil for management, which has them all). It is for diagnostics.
func (a *ACL) NamespaceCapabilities(ns string) []string {
	if a == nil || a.management {
		return nil
	}
	caps := a.namespaceCapabilities(ns)
	out := make([]string, 0, len(caps))
	for c := range caps {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}

// globMatch reports whether name matches pattern, where `*` matches any
// run of characters (including none).
func globMatch(pattern, name string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == name
	}
	if !strings.HasPrefix(name, parts[0]) {
		return false
	}
	name = name[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(name, p)
		if i < 0 {
			return false
		}
		name = name[i+len(p):]
	}
	return len(name) >= len(last) && strings.HasSuffix(name, last)
}
