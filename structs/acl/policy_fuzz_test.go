package acl

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// FuzzParse: any rules text parses or fails with a *ParseError, never a
// panic; a policy that parses, written out again in the HCL form and in
// the JSON form, parses to the same policy from both (the two forms
// agree), and merges into an ACL.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		``,
		`namespace "default" { policy = "read" capabilities = ["read-logs", "read-fs"] }`,
		"namespace \"prod-*\" {\n  policy = \"write\"\n  variables { path \"*\" { capabilities = [\"read\"] } }\n}\nnode { policy = \"read\" }\nagent { policy = \"write\" }\noperator { policy = \"deny\" }\nplugin { policy = \"list\" }\nhost_volume \"data\" { policy = \"read\" }",
		`{"namespace": {"default": {"policy": "read", "capabilities": ["alloc-exec"]}}, "node": {"policy": "write"}}`,
		`namespace "a" {} namespace "a" { policy = "deny" }`,
		`node { policy = "read" } node { policy = "write" }`,
		`namespace { policy = "read" }`,
		`quota { policy = "bogus" }`,
		`{"node": [{"policy": "read"}]}`,
		`namespace "x" { policy = ["read"] }`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, rules string) {
		p, err := Parse(rules)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("Parse(%q): error %T %v, not a *ParseError", rules, err, err)
			}
			return
		}
		NewACL([]*Policy{p}).NamespaceCapabilities("default")
		want := normalized(p)
		for form, text := range map[string]string{"hcl": policyHCL(p), "json": policyJSON(t, p)} {
			back, err := Parse(text)
			if err != nil {
				t.Fatalf("Parse(%q) = %+v;\nits %s form %s does not parse: %v", rules, want, form, text, err)
			}
			if got := normalized(back); !reflect.DeepEqual(got, want) {
				t.Fatalf("Parse(%q) = %+v;\nits %s form %s parses to %+v", rules, want, form, text, got)
			}
		}
	})
}

// normalized is p without what the text form decides (lines, nil against
// empty lists).
func normalized(p *Policy) Policy {
	out := *p
	out.Namespaces = nil
	for _, ns := range p.Namespaces {
		n := *ns
		n.Line = 0
		if len(n.Capabilities) == 0 {
			n.Capabilities = nil
		}
		out.Namespaces = append(out.Namespaces, &n)
	}
	return out
}

// coarse lists the coarse blocks of p that are set.
func coarse(p *Policy) [][2]string {
	var out [][2]string
	for _, c := range [][2]string{{"node", p.Node}, {"agent", p.Agent}, {"operator", p.Operator}, {"quota", p.Quota}, {"plugin", p.Plugin}} {
		if c[1] != "" {
			out = append(out, c)
		}
	}
	return out
}

// policyHCL writes p in the HCL form. Every string in a parsed policy is
// a name the parser checked (no quotes or escapes), so %q is exact.
func policyHCL(p *Policy) string {
	var b strings.Builder
	for _, ns := range p.Namespaces {
		fmt.Fprintf(&b, "namespace %q {\n", ns.Name)
		if ns.Policy != "" {
			fmt.Fprintf(&b, "  policy = %q\n", ns.Policy)
		}
		if len(ns.Capabilities) > 0 {
			q := make([]string, len(ns.Capabilities))
			for i, c := range ns.Capabilities {
				q[i] = fmt.Sprintf("%q", c)
			}
			fmt.Fprintf(&b, "  capabilities = [%s]\n", strings.Join(q, ", "))
		}
		b.WriteString("}\n")
	}
	for _, c := range coarse(p) {
		fmt.Fprintf(&b, "%s { policy = %q }\n", c[0], c[1])
	}
	return b.String()
}

// policyJSON writes p in the JSON form: namespace blocks as a list, so
// repeated names stay apart and in order.
func policyJSON(t *testing.T, p *Policy) string {
	top := map[string]any{}
	var nss []any
	for _, ns := range p.Namespaces {
		body := map[string]any{}
		if ns.Policy != "" {
			body["policy"] = ns.Policy
		}
		if len(ns.Capabilities) > 0 {
			body["capabilities"] = ns.Capabilities
		}
		nss = append(nss, map[string]any{ns.Name: body})
	}
	if len(nss) > 0 {
		top["namespace"] = nss
	}
	for _, c := range coarse(p) {
		top[c[0]] = map[string]any{"policy": c[1]}
	}
	if len(top) == 0 {
		return "{}"
	}
	b, err := json.Marshal(top)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
