package acl

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"tether/structs"
)

func mustParse(t *testing.T, rules string) *Policy {
	t.Helper()
	p, err := Parse(rules)
	if err != nil {
		t.Fatalf("Parse(%q): %v", rules, err)
	}
	return p
}

func TestParse_HCLAndJSONAgree(t *testing.T) {
	hclRules := `
namespace "default" {
  policy       = "read"
  capabilities = ["read-logs"]
}
namespace "prod-*" {
  policy = "write"
  variables {
    path "*" { capabilities = ["read"] }
  }
}
node     { policy = "read" }
agent    { policy = "write" }
operator { policy = "deny" }
plugin   { policy = "list" }
host_volume "data" { policy = "read" }
`
	jsonRules := `{
  "namespace": {
    "default": {"policy": "read", "capabilities": ["read-logs"]},
    "prod-*": {"policy": "write"}
  },
  "node": {"policy": "read"},
  "agent": {"policy": "write"},
  "operator": {"policy": "deny"},
  "plugin": {"policy": "list"}
}`
	for name, rules := range map[string]string{"hcl": hclRules, "json": jsonRules} {
		t.Run(name, func(t *testing.T) {
			p := mustParse(t, rules)
			if p.Node != PolicyRead || p.Agent != PolicyWrite || p.Operator != PolicyDeny || p.Plugin != PolicyList {
				t.Fatalf("node/agent/operator/plugin = %q/%q/%q/%q; want read/write/deny/list", p.Node, p.Agent, p.Operator, p.Plugin)
			}
			got := map[string]*NamespacePolicy{}
			for _, ns := range p.Namespaces {
				got[ns.Name] = ns
			}
			if d := got["default"]; d == nil || d.Policy != PolicyRead || !slices.Equal(d.Capabilities, []string{"read-logs"}) {
				t.Fatalf("namespace default = %+v; want read + [read-logs]", d)
			}
			if d := got["prod-*"]; d == nil || d.Policy != PolicyWrite {
				t.Fatalf("namespace prod-* = %+v; want write", d)
			}
		})
	}
}

func TestParse_Errors(t *testing.T) {
	for _, tc := range []struct {
		name, rules string
		line        int
		want        string
	}{
		{"syntax", "namespace \"default\" {\n  policy = \"read\"\n  capabilities = [\n}\n", 5, "column"},
		{"syntax mid-file", "node { policy = \"read\" }\nagent { policy = = \"read\" }\noperator { policy = \"read\" }", 2, "column"},
		{"bad namespace policy", "node { policy = \"read\" }\nnamespace \"default\" {\n  policy = \"wrtie\"\n}\n", 2, `invalid namespace policy "wrtie"`},
		{"bad capability", "namespace \"x\" {\n capabilities = [\"read-fs\", \"read-everything\"]\n}", 1, `invalid namespace capability "read-everything"`},
		{"bad node policy", "\n\nnode { policy = \"list\" }", 3, `invalid node policy "list"`},
		{"missing node policy", "agent {\n}", 1, `invalid agent policy ""`},
		{"unknown rule", "node { policy = \"read\" }\nnodes { policy = \"write\" }", 2, `unknown rule "nodes"`},
		{"unknown key", "namespace \"a\" {\n  policy = \"read\"\n  polcy = \"write\"\n}", 3, `unknown key "polcy" in namespace block`},
		{"namespace without name", "namespace {\n policy = \"read\"\n}", 1, "needs a name"},
		{"bad namespace name", `namespace "a b" { policy = "read" }`, 1, `invalid namespace name "a b"`},
		{"json syntax", "{\n  \"node\": {\"policy\": \"read\"},\n  \"agent\": \n}", 4, "invalid character"},
		{"json bad policy", "{\n\"namespace\": {\"default\": {\"policy\": \"nope\"}}}", 2, `invalid namespace policy "nope"`},
		{"policy not a string", "node { policy = [\"read\"] }", 1, "node.policy must be a string"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.rules)
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("Parse error = %v; want a *ParseError", err)
			}
			if pe.Line != tc.line || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse error = %q (line %d); want line %d and %q", err, pe.Line, tc.line, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "line ") {
				t.Fatalf("error %q does not name its line", err)
			}
		})
	}
}

func TestParse_EmptyGrantsNothing(t *testing.T) {
	a := NewACL([]*Policy{mustParse(t, "  \n")})
	if a.AllowNodeRead() || a.AllowNamespace("default") {
		t.Fatalf("empty policy grants something")
	}
}

func TestExpandNamespacePolicy(t *testing.T) {
	read := ExpandNamespacePolicy(PolicyRead)
	write := ExpandNamespacePolicy(PolicyWrite)
	for _, c := range []string{"list-jobs", "parse-job", "read-job", "csi-list-volume", "csi-read-volume",
		"list-scaling-policies", "read-scaling-policy", "read-job-scaling", "host-volume-read"} {
		if !slices.Contains(read, c) {
			t.Errorf("read lacks %s", c)
		}
		if !slices.Contains(write, c) {
			t.Errorf("write lacks read's %s", c)
		}
	}
	for _, c := range []string{"read-fs", "read-logs", "submit-job", "alloc-exec", "alloc-lifecycle"} {
		if slices.Contains(read, c) {
			t.Errorf("read has %s; want it only in write", c)
		}
	}
	for _, c := range []string{"submit-job", "dispatch-job", "read-logs", "read-fs", "alloc-exec", "alloc-lifecycle",
		"csi-write-volume", "csi-mount-volume", "submit-recommendation", "scale-job", "host-volume-register", "host-volume-write"} {
		if !slices.Contains(write, c) {
			t.Errorf("write lacks %s", c)
		}
	}
	if got := ExpandNamespacePolicy(PolicyDeny); !slices.Equal(got, []string{"deny"}) {
		t.Errorf("deny = %v; want [deny]", got)
	}
	if got := ExpandNamespacePolicy("bogus"); got != nil {
		t.Errorf("bogus = %v; want nil", got)
	}
}

func TestACL_Namespaces(t *testing.T) {
	a := NewACL([]*Policy{mustParse(t, `
namespace "default" { policy = "read" }
namespace "*" { capabilities = ["list-jobs"] }
namespace "prod-*" { policy = "write" }
namespace "prod-secret" { policy = "deny" }
namespace "team-*-dev" { capabilities = ["read-logs"] }
namespace "team-a*" { capabilities = ["read-fs"] }
`)})
	for _, tc := range []struct {
		ns, op string
		want   bool
	}{
		{"default", "read-job", true},
		{"default", "read-fs", false},   // read has no read-fs
		{"default", "read-logs", false}, // nor read-logs
		{"default", "list-jobs", true},
		{"other", "list-jobs", true}, // "*"
		{"other", "read-job", false},
		{"prod-web", "read-fs", true},
		{"prod-web", "submit-job", true},
		{"prod-secret", "read-job", false}, // exact deny beats the glob
		{"team-a-dev", "read-logs", true},  // "team-*-dev" leaves fewer characters to its star than "team-a*"
		{"team-a-dev", "read-fs", false},
		{"team-a-prod", "read-fs", true}, // only "team-a*" matches
		{"team-b-dev", "read-logs", true},
	} {
		if got := a.AllowNamespaceOperation(tc.ns, tc.op); got != tc.want {
			t.Errorf("AllowNamespaceOperation(%q, %q) = %v; want %v", tc.ns, tc.op, got, tc.want)
		}
	}
}

func TestACL_Merge(t *testing.T) {
	a := NewACL([]*Policy{
		mustParse(t, `namespace "default" { policy = "read" }
node { policy = "read" }`),
		mustParse(t, `namespace "default" { capabilities = ["read-logs"] }
node { policy = "write" }
agent { policy = "read" }`),
		mustParse(t, `namespace "web" { policy = "write" }`),
		mustParse(t, `namespace "web" { capabilities = ["deny"] }
operator { policy = "write" }`),
	})
	for _, tc := range []struct {
		what string
		got  bool
		want bool
	}{
		{"default read-job", a.AllowNamespaceOperation("default", "read-job"), true},
		{"default read-logs (union)", a.AllowNamespaceOperation("default", "read-logs"), true},
		{"web submit-job (deny wins)", a.AllowNamespaceOperation("web", "submit-job"), false},
		{"node write (strongest)", a.AllowNodeWrite(), true},
		{"agent read", a.AllowAgentRead(), true},
		{"agent write", a.AllowAgentWrite(), false},
		{"operator write", a.AllowOperatorWrite(), true},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %v; want %v", tc.what, tc.got, tc.want)
		}
	}
	deny := NewACL([]*Policy{mustParse(t, `node { policy = "write" }`), mustParse(t, `node { policy = "deny" }`)})
	if deny.AllowNodeRead() {
		t.Errorf("node deny merged with write allows read; want deny to win")
	}
}

func TestACL_SpecialObjects(t *testing.T) {
	var nilACL *ACL
	for name, tc := range map[string]struct {
		a    *ACL
		want bool
	}{
		"nil":        {nilACL, false},
		"deny-all":   {DenyAllACL, false},
		"management": {ManagementACL, true},
		"disabled":   {ACLsDisabledACL, true},
	} {
		got := []bool{tc.a.AllowNodeRead(), tc.a.AllowNodeWrite(), tc.a.AllowAgentRead(),
			tc.a.AllowNamespaceOperation("x", "read-fs"), tc.a.AllowClientMethod(structs.MethodFsLogs, "x"),
			tc.a.AllowClientMethod("Unknown.Method", "x")}
		for i, g := range got {
			if g != tc.want {
				t.Errorf("%s: check %d = %v; want %v", name, i, g, tc.want)
			}
		}
	}
}

func TestACL_ClientMethods(t *testing.T) {
	grants := map[string]*ACL{
		"node-read":  NewACL([]*Policy{mustParse(t, `node { policy = "read" }`)}),
		"node-write": NewACL([]*Policy{mustParse(t, `node { policy = "write" }`)}),
		"read-job":   NewACL([]*Policy{mustParse(t, `namespace "default" { capabilities = ["read-job"] }`)}),
		"read-fs":    NewACL([]*Policy{mustParse(t, `namespace "default" { capabilities = ["read-fs"] }`)}),
		"read-logs":  NewACL([]*Policy{mustParse(t, `namespace "default" { capabilities = ["read-logs"] }`)}),
		"submit-job": NewACL([]*Policy{mustParse(t, `namespace "default" { capabilities = ["submit-job"] }`)}),
		"gc-alloc":   NewACL([]*Policy{mustParse(t, `namespace "default" { capabilities = ["gc-allocation"] }`)}),
		"ns-read":    NewACL([]*Policy{mustParse(t, `namespace "default" { policy = "read" }`)}),
		"ns-write":   NewACL([]*Policy{mustParse(t, `namespace "default" { policy = "write" }`)}),
		"other-ns":   NewACL([]*Policy{mustParse(t, `namespace "other" { policy = "write" }`)}),
	}
	want := map[string][]string{
		structs.MethodClientStats:      {"node-read", "node-write"},
		structs.MethodNodeMetaRead:     {"node-read", "node-write"},
		structs.MethodNodeMetaApply:    {"node-write"},
		structs.MethodClientGCAll:      {"node-write"},
		structs.MethodClientAllocStats: {"read-job", "ns-read", "ns-write"},
		structs.MethodClientAllocGC:    {"submit-job", "gc-alloc", "ns-write"},
		structs.MethodFsList:           {"read-fs", "ns-write"},
		structs.MethodFsStat:           {"read-fs", "ns-write"},
		structs.MethodFsReadAt:         {"read-fs", "ns-write"},
		structs.MethodFsStream:         {"read-fs", "ns-write"},
		structs.MethodFsLogs:           {"read-fs", "read-logs", "ns-write"},
	}
	for method, allowed := range want {
		for name, a := range grants {
			if got, w := a.AllowClientMethod(method, "default"), slices.Contains(allowed, name); got != w {
				t.Errorf("%s with %s = %v; want %v", method, name, got, w)
			}
		}
	}
	if IsAllocMethod(structs.MethodClientStats) || !IsAllocMethod(structs.MethodFsLogs) {
		t.Errorf("IsAllocMethod misclassifies stats or logs")
	}
}

func TestGlobMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, name string
		want          bool
	}{
		{"*", "", true}, {"*", "abc", true}, {"a*", "a", true}, {"a*", "ba", false},
		{"*c", "abc", true}, {"a*c", "ac", true}, {"a*c", "abcb", false},
		{"a*b*c", "axxbyyc", true}, {"a*b*c", "axxc", false}, {"abc", "abc", true}, {"ab*ab", "ab", false},
	} {
		if got := globMatch(tc.pattern, tc.name); got != tc.want {
			t.Errorf("globMatch(%q, %q) = %v; want %v", tc.pattern, tc.name, got, tc.want)
		}
	}
}
