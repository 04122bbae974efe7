// Package acl is Nomad's ACL policy language and the capability checks
// built on it. Servers use it to authorise calls before forwarding them,
// node agents to authorise them again before answering. It parses rules
// (HCL or its JSON form), expands the coarse policies into capabilities as
// Nomad does, and merges a token's policies into one ACL object.
package acl

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl"
	"github.com/hashicorp/hcl/hcl/ast"
	hclparser "github.com/hashicorp/hcl/hcl/parser"
	"github.com/hashicorp/hcl/hcl/token"
)

// Coarse policies, the values of `policy = "..."`.
const (
	PolicyDeny  = "deny"
	PolicyRead  = "read"
	PolicyList  = "list"
	PolicyWrite = "write"
	PolicyScale = "scale"
)

// Namespace capabilities, Nomad's names.
const (
	NamespaceCapabilityDeny                 = "deny"
	NamespaceCapabilityListJobs             = "list-jobs"
	NamespaceCapabilityParseJob             = "parse-job"
	NamespaceCapabilityReadJob              = "read-job"
	NamespaceCapabilitySubmitJob            = "submit-job"
	NamespaceCapabilityDispatchJob          = "dispatch-job"
	NamespaceCapabilityReadLogs             = "read-logs"
	NamespaceCapabilityReadFS               = "read-fs"
	NamespaceCapabilityAllocExec            = "alloc-exec"
	NamespaceCapabilityAllocNodeExec        = "alloc-node-exec"
	NamespaceCapabilityAllocLifecycle       = "alloc-lifecycle"
	NamespaceCapabilityGCAllocation         = "gc-allocation"
	NamespaceCapabilitySentinelOverride     = "sentinel-override"
	NamespaceCapabilityCSIRegisterPlugin    = "csi-register-plugin"
	NamespaceCapabilityCSIWriteVolume       = "csi-write-volume"
	NamespaceCapabilityCSIReadVolume        = "csi-read-volume"
	NamespaceCapabilityCSIListVolume        = "csi-list-volume"
	NamespaceCapabilityCSIMountVolume       = "csi-mount-volume"
	NamespaceCapabilityHostVolumeCreate     = "host-volume-create"
	NamespaceCapabilityHostVolumeRegister   = "host-volume-register"
	NamespaceCapabilityHostVolumeRead       = "host-volume-read"
	NamespaceCapabilityHostVolumeWrite      = "host-volume-write"
	NamespaceCapabilityHostVolumeDelete     = "host-volume-delete"
	NamespaceCapabilityListScalingPolicies  = "list-scaling-policies"
	NamespaceCapabilityReadScalingPolicy    = "read-scaling-policy"
	NamespaceCapabilityReadJobScaling       = "read-job-scaling"
	NamespaceCapabilityScaleJob             = "scale-job"
	NamespaceCapabilitySubmitRecommendation = "submit-recommendation"
)

// validNamespaceCapabilities is every capability a rule may name.
var validNamespaceCapabilities = map[string]bool{
	NamespaceCapabilityDeny: true, NamespaceCapabilityListJobs: true, NamespaceCapabilityParseJob: true,
	NamespaceCapabilityReadJob: true, NamespaceCapabilitySubmitJob: true, NamespaceCapabilityDispatchJob: true,
	NamespaceCapabilityReadLogs: true, NamespaceCapabilityReadFS: true, NamespaceCapabilityAllocExec: true,
	NamespaceCapabilityAllocNodeExec: true, NamespaceCapabilityAllocLifecycle: true,
	NamespaceCapabilityGCAllocation: true, NamespaceCapabilitySentinelOverride: true,
	NamespaceCapabilityCSIRegisterPlugin: true, NamespaceCapabilityCSIWriteVolume: true,
	NamespaceCapabilityCSIReadVolume: true, NamespaceCapabilityCSIListVolume: true,
	NamespaceCapabilityCSIMountVolume: true, NamespaceCapabilityHostVolumeCreate: true,
	NamespaceCapabilityHostVolumeRegister: true, NamespaceCapabilityHostVolumeRead: true,
	NamespaceCapabilityHostVolumeWrite: true, NamespaceCapabilityHostVolumeDelete: true,
	NamespaceCapabilityListScalingPolicies: true, NamespaceCapabilityReadScalingPolicy: true,
	NamespaceCapabilityReadJobScaling: true, NamespaceCapabilityScaleJob: true,
	NamespaceCapabilitySubmitRecommendation: true,
}

// readCapabilities is what namespace policy "read" grants. Neither read-fs
// nor read-logs is among them.
var readCapabilities = []string{
	NamespaceCapabilityListJobs,
	NamespaceCapabilityParseJob,
	NamespaceCapabilityReadJob,
	NamespaceCapabilityCSIListVolume,
	NamespaceCapabilityCSIReadVolume,
	NamespaceCapabilityReadJobScaling,
	NamespaceCapabilityListScalingPolicies,
	NamespaceCapabilityReadScalingPolicy,
	NamespaceCapabilityHostVolumeRead,
}

// writeOnlyCapabilities is what namespace policy "write" adds to "read".
var writeOnlyCapabilities = []string{
	NamespaceCapabilityScaleJob,
	NamespaceCapabilitySubmitJob,
	NamespaceCapabilityDispatchJob,
	NamespaceCapabilityReadLogs,
	NamespaceCapabilityReadFS,
	NamespaceCapabilityAllocExec,
	NamespaceCapabilityAllocLifecycle,
	NamespaceCapabilityCSIMountVolume,
	NamespaceCapabilityCSIWriteVolume,
	NamespaceCapabilitySubmitRecommendation,
	NamespaceCapabilityHostVolumeRegister,
	NamespaceCapabilityHostVolumeWrite,
}

// scaleCapabilities is what namespace policy "scale" grants.
var scaleCapabilities = []string{
	NamespaceCapabilityListScalingPolicies,
	NamespaceCapabilityReadScalingPolicy,
	NamespaceCapabilityReadJobScaling,
	NamespaceCapabilityScaleJob,
}

// ExpandNamespacePolicy returns the capabilities a coarse namespace policy
// stands for, nil for an unknown one.
func ExpandNamespacePolicy(policy string) []string {
	switch policy {
	case PolicyDeny:
		return []string{NamespaceCapabilityDeny}
	case PolicyRead:
		return append([]string(nil), readCapabilities...)
	case PolicyWrite:
		return append(append([]string(nil), readCapabilities...), writeOnlyCapabilities...)
	case PolicyScale:
		return append([]string(nil), scaleCapabilities...)
	}
	return nil
}

// impliedCapabilities lists the capabilities a fine-grained one brings
// along, as Nomad's host volume capabilities do.
var impliedCapabilities = map[string][]string{
	NamespaceCapabilityHostVolumeWrite: {
		NamespaceCapabilityHostVolumeRegister, NamespaceCapabilityHostVolumeCreate,
		NamespaceCapabilityHostVolumeDelete, NamespaceCapabilityHostVolumeRead,
	},
	NamespaceCapabilityHostVolumeRegister: {NamespaceCapabilityHostVolumeCreate, NamespaceCapabilityHostVolumeRead},
	NamespaceCapabilityHostVolumeCreate:   {NamespaceCapabilityHostVolumeRead},
}

// NamespacePolicy is one `namespace "NAME" { ... }` block. Name may hold
// `*` globs.
type NamespacePolicy struct {
	Name         string
	Policy       string
	Capabilities []string

	// Line is where the block starts in the rules text.
	Line int
}

// Policy is a parsed set of rules. The coarse policies of the node, agent
// and operator blocks are "" when the block is absent.
type Policy struct {
	Namespaces []*NamespacePolicy
	Node       string
	Agent      string
	Operator   string
	Quota      string
	Plugin     string
}

// validNamespaceName allows what Nomad allows in a namespace rule's name:
// namespace names plus `*` globs.
var validNamespaceName = regexp.MustCompile(`^[a-zA-Z0-9-*]{1,128}$`)

// ParseError is a rules text that does not parse or names what does not
// exist. Its message names the line.
type ParseError struct {
	Line int
	Msg  string

	// needle is the quoted text the error is about, used to find the line
	// in the JSON form, whose parser keeps no key positions.
	needle string
}

// Error returns "line N: msg".
func (e *ParseError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("line %d: %s", e.Line, e.Msg)
	}
	return e.Msg
}

func errAt(pos token.Pos, format string, args ...any) error {
	pe := &ParseError{Line: pos.Line, Msg: fmt.Sprintf(format, args...)}
	if len(args) > 0 {
		if s, ok := args[0].(string); ok {
			pe.needle = strconv.Quote(s)
		}
	}
	return pe
}

// Parse parses rules in Nomad's policy language, HCL or its JSON form. An
// empty text is a policy that grants nothing. Errors are *ParseError.
func Parse(rules string) (*Policy, error) {
	p := &Policy{}
	if strings.TrimSpace(rules) == "" {
		return p, nil
	}
	if trimmed := strings.TrimSpace(rules); strings.HasPrefix(trimmed, "{") {
		// The JSON form: the HCL library's JSON errors carry no position,
		// encoding/json's carry an offset.
		var v any
		if err := json.Unmarshal([]byte(rules), &v); err != nil {
			return nil, jsonSyntaxError(rules, err)
		}
	}
	f, err := hcl.Parse(rules)
	if err != nil {
		return nil, syntaxError(err)
	}
	list, ok := f.Node.(*ast.ObjectList)
	if !ok {
		return nil, &ParseError{Msg: "rules must be an object"}
	}
	for _, item := range list.Items {
		if err := p.parseTop(item); err != nil {
			var pe *ParseError
			if errors.As(err, &pe) && pe.Line == 0 && pe.needle != "" {
				if i := strings.Index(rules, pe.needle); i >= 0 {
					pe.Line = 1 + strings.Count(rules[:i], "\n")
				}
			}
			return nil, err
		}
	}
	return p, nil
}

// syntaxError turns an HCL parser error into a *ParseError with its line.
func syntaxError(err error) error {
	var hpe *hclparser.PosError
	if errors.As(err, &hpe) {
		return &ParseError{Line: hpe.Pos.Line, Msg: fmt.Sprintf("column %d: %v", hpe.Pos.Column, hpe.Err)}
	}
	return &ParseError{Msg: err.Error()}
}

// jsonSyntaxError turns an encoding/json error on the JSON form into a
// *ParseError with the line of the offending byte.
func jsonSyntaxError(rules string, err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		off := min(int(se.Offset), len(rules))
		return &ParseError{Line: 1 + strings.Count(rules[:off], "\n"), Msg: se.Error()}
	}
	return &ParseError{Msg: err.Error()}
}

func keyName(k *ast.ObjectKey) string {
	if s, ok := k.Token.Value().(string); ok {
		return s
	}
	return k.Token.Text
}

// body returns the contents of a block whose first n keys are its type and
// labels. The JSON parser folds nested objects into extra keys; they are
// unfolded here so both forms read alike.
func body(item *ast.ObjectItem, n int) (*ast.ObjectList, error) {
	if len(item.Keys) > n {
		return &ast.ObjectList{Items: []*ast.ObjectItem{{Keys: item.Keys[n:], Val: item.Val}}}, nil
	}
	ot, ok := item.Val.(*ast.ObjectType)
	if !ok {
		return nil, errAt(item.Pos(), "%s must be a block", keyName(item.Keys[0]))
	}
	return ot.List, nil
}

func (p *Policy) parseTop(item *ast.ObjectItem) error {
	if len(item.Keys) == 0 {
		return errAt(item.Pos(), "rule without a name")
	}
	kind := keyName(item.Keys[0])
	switch kind {
	case "namespace":
		if len(item.Keys) < 2 {
			return errAt(item.Pos(), "namespace rule needs a name: namespace \"NAME\" { ... }")
		}
		name := keyName(item.Keys[1])
		if !validNamespaceName.MatchString(name) {
			return errAt(item.Pos(), "invalid namespace name %q", name)
		}
		b, err := body(item, 2)
		if err != nil {
			return err
		}
		ns := &NamespacePolicy{Name: name, Line: item.Pos().Line}
		if err := parseBlock(b, "namespace", map[string]*string{"policy": &ns.Policy}, &ns.Capabilities, "variables"); err != nil {
			return err
		}
		if ns.Policy != "" && ExpandNamespacePolicy(ns.Policy) == nil {
			return errAt(item.Pos(), "invalid namespace policy %q", ns.Policy)
		}
		for _, c := range ns.Capabilities {
			if !validNamespaceCapabilities[c] {
				return errAt(item.Pos(), "invalid namespace capability %q", c)
			}
		}
		p.Namespaces = append(p.Namespaces, ns)
		return nil
	case "node", "agent", "operator", "quota":
		return p.parseCoarse(item, kind, PolicyDeny, PolicyRead, PolicyWrite)
	case "plugin":
		return p.parseCoarse(item, kind, PolicyDeny, PolicyList, PolicyRead)
	case "host_volume", "node_pool":
		// Accepted for compatibility with Nomad policies; Tether has no
		// host volumes or node pool endpoints, so they grant nothing.
		if len(item.Keys) < 2 {
			return errAt(item.Pos(), "%s rule needs a name: %s \"NAME\" { ... }", kind, kind)
		}
		b, err := body(item, 2)
		if err != nil {
			return err
		}
		var pol string
		var caps []string
		if err := parseBlock(b, kind, map[string]*string{"policy": &pol}, &caps); err != nil {
			return err
		}
		switch pol {
		case "", PolicyDeny, PolicyRead, PolicyWrite:
		default:
			return errAt(item.Pos(), "invalid %s policy %q", kind, pol)
		}
		return nil
	default:
		return errAt(item.Pos(), "unknown rule %q", kind)
	}
}

// parseCoarse parses a `KIND { policy = "..." }` block.
func (p *Policy) parseCoarse(item *ast.ObjectItem, kind string, allowed ...string) error {
	b, err := body(item, 1)
	if err != nil {
		return err
	}
	var pol string
	if err := parseBlock(b, kind, map[string]*string{"policy": &pol}, nil); err != nil {
		return err
	}
	ok := false
	for _, a := range allowed {
		ok = ok || pol == a
	}
	if !ok {
		return errAt(item.Pos(), "invalid %s policy %q", kind, pol)
	}
	dst := map[string]*string{"node": &p.Node, "agent": &p.Agent, "operator": &p.Operator, "quota": &p.Quota, "plugin": &p.Plugin}[kind]
	*dst = maxPrivilege(*dst, pol)
	return nil
}

// parseBlock reads a block's attributes: the string ones named in strs,
// `capabilities` when caps is not nil, and ignores the nested blocks named
// in ignored. Anything else is an error naming its line.
func parseBlock(list *ast.ObjectList, kind string, strs map[string]*string, caps *[]string, ignored ...string) error {
	for _, it := range list.Items {
		if len(it.Keys) == 0 {
			return errAt(it.Pos(), "unexpected value in %s block", kind)
		}
		key := keyName(it.Keys[0])
		if dst, ok := strs[key]; ok && len(it.Keys) == 1 {
			var s string
			if err := hcl.DecodeObject(&s, it.Val); err != nil {
				return errAt(it.Pos(), "%s.%s must be a string", kind, key)
			}
			*dst = s
			continue
		}
		if key == "capabilities" && caps != nil && len(it.Keys) == 1 {
			var cs []string
			if err := hcl.DecodeObject(&cs, it.Val); err != nil {
				return errAt(it.Pos(), "%s.capabilities must be a list of strings", kind)
			}
			*caps = append(*caps, cs...)
			continue
		}
		skip := false
		for _, ig := range ignored {
			skip = skip || key == ig
		}
		if skip {
			continue
		}
		return errAt(it.Pos(), "unknown key %q in %s block", key, kind)
	}
	return nil
}

// maxPrivilege merges two coarse policies: deny beats everything, then
// write, then read, then list.
func maxPrivilege(a, b string) string {
	for _, p := range []string{PolicyDeny, PolicyWrite, PolicyRead, PolicyList} {
		if a == p || b == p {
			return p
		}
	}
	return ""
}
