package agent

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	nomad "github.com/hashicorp/nomad/api"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	ctyjson "github.com/zclconf/go-cty/cty/json"

	"tether/structs"
)

// parseFilename names the jobspec in parse errors, as Nomad's endpoint
// does: the request carries the text, not a file.
const parseFilename = "input.hcl"

// jobsParse serves PUT/POST /v1/jobs/parse: an HCL2 jobspec of the subset
// Tether runs (job, group, task, config, constraint, resources, restart,
// logs, ephemeral_disk, meta, env) is returned as the API's job JSON. Any
// other block or attribute is a 400 naming it with its position.
func (a *Agent) jobsParse(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.Method != http.MethodPut && r.Method != http.MethodPost {
		return nil, structs.ErrInvalidMethod
	}
	body, err := readBody(r)
	if err != nil {
		return nil, err
	}
	var req nomad.JobsParseRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, structs.NewError(http.StatusBadRequest, "Unable to parse request: %v", err)
	}
	if strings.TrimSpace(req.JobHCL) == "" {
		return nil, structs.NewError(http.StatusBadRequest, "Job must be provided in JobHCL")
	}
	if strings.TrimSpace(req.Variables) != "" {
		return nil, structs.NewError(http.StatusBadRequest, "Variables are not supported by this server's job parser")
	}
	job, diags := parseJobHCL([]byte(req.JobHCL), parseFilename)
	if diags.HasErrors() {
		return nil, structs.NewError(http.StatusBadRequest, "%s", diagText(diags))
	}
	if req.Canonicalize {
		job.Canonicalize()
	}
	return job, nil
}

// maxDiagLines bounds how many errors a parse answers with: a file that is
// not HCL at all (a binary, say) gives one per bad byte.
const maxDiagLines = 10

// diagText is the errors of diags, one per line, each with its position
// ("input.hcl:3,5-9: Unsupported argument; ..."), in the order of their
// positions in the file and at most maxDiagLines of them.
func diagText(diags hcl.Diagnostics) string {
	var errs hcl.Diagnostics
	for _, d := range diags {
		if d.Severity == hcl.DiagError {
			errs = append(errs, d)
		}
	}
	sort.SliceStable(errs, func(i, j int) bool {
		a, b := errs[i].Subject, errs[j].Subject
		switch {
		case a == nil || b == nil:
			return a != nil // errors without a position go last
		case a.Start.Line != b.Start.Line:
			return a.Start.Line < b.Start.Line
		default:
			return a.Start.Column < b.Start.Column
		}
	})
	var lines []string
	for i, d := range errs {
		if i == maxDiagLines {
			lines = append(lines, fmt.Sprintf("... and %d more", len(errs)-maxDiagLines))
			break
		}
		lines = append(lines, d.Error())
	}
	return strings.Join(lines, "\n")
}

// parseJobHCL parses one job block.
func parseJobHCL(src []byte, filename string) (*nomad.Job, hcl.Diagnostics) {
	f, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, diags
	}
	content, diags := f.Body.Content(&hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: "job", LabelNames: []string{"name"}}}})
	if diags.HasErrors() {
		return nil, diags
	}
	if len(content.Blocks) != 1 {
		return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Exactly one job block is required",
			Detail: fmt.Sprintf("found %d", len(content.Blocks)), Subject: f.Body.MissingItemRange().Ptr()}}
	}
	p := &hclParser{}
	job := p.job(content.Blocks[0])
	return job, p.diags
}

// hclParser accumulates the diagnostics of a jobspec as it decodes it.
type hclParser struct{ diags hcl.Diagnostics }

func (p *hclParser) content(b hcl.Body, attrs []string, blocks []hcl.BlockHeaderSchema) *hcl.BodyContent {
	s := &hcl.BodySchema{Blocks: blocks}
	for _, a := range attrs {
		s.Attributes = append(s.Attributes, hcl.AttributeSchema{Name: a})
	}
	c, diags := b.Content(s)
	p.diags = append(p.diags, diags...)
	return c
}

func (p *hclParser) value(a *hcl.Attribute, want cty.Type) (cty.Value, bool) {
	v, diags := a.Expr.Value(runtimeContext(a.Expr.Variables()))
	p.diags = append(p.diags, diags...)
	if diags.HasErrors() {
		return cty.NilVal, false
	}
	if want == cty.DynamicPseudoType {
		return v, true
	}
	cv, err := convert.Convert(v, want)
	if err != nil || cv.IsNull() {
		p.diags = append(p.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Incorrect attribute value type",
			Detail: fmt.Sprintf("%s must be %s", a.Name, want.FriendlyName()), Subject: a.Expr.Range().Ptr()})
		return cty.NilVal, false
	}
	return cv, true
}

func (p *hclParser) str(attrs hcl.Attributes, name string) *string {
	a, ok := attrs[name]
	if !ok {
		return nil
	}
	v, ok := p.value(a, cty.String)
	if !ok {
		return nil
	}
	s := v.AsString()
	return &s
}

func (p *hclParser) int(attrs hcl.Attributes, name string) *int {
	a, ok := attrs[name]
	if !ok {
		return nil
	}
	v, ok := p.value(a, cty.Number)
	if !ok {
		return nil
	}
	bf := v.AsBigFloat()
	if !bf.IsInt() {
		p.diags = append(p.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Incorrect attribute value type",
			Detail: name + " must be a whole number", Subject: a.Expr.Range().Ptr()})
		return nil
	}
	i64, _ := bf.Int64()
	i := int(i64)
	return &i
}

func (p *hclParser) bool(attrs hcl.Attributes, name string) *bool {
	a, ok := attrs[name]
	if !ok {
		return nil
	}
	v, ok := p.value(a, cty.Bool)
	if !ok {
		return nil
	}
	b := v.True()
	return &b
}

func (p *hclParser) duration(attrs hcl.Attributes, name string) *time.Duration {
	s := p.str(attrs, name)
	if s == nil {
		return nil
	}
	d, err := time.ParseDuration(*s)
	if err != nil {
		p.diags = append(p.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid duration",
			Detail: fmt.Sprintf("%s: %v", name, err), Subject: attrs[name].Expr.Range().Ptr()})
		return nil
	}
	return &d
}

func (p *hclParser) strings(attrs hcl.Attributes, name string) []string {
	a, ok := attrs[name]
	if !ok {
		return nil
	}
	v, ok := p.value(a, cty.List(cty.String))
	if !ok {
		return nil
	}
	out := []string{}
	for it := v.ElementIterator(); it.Next(); {
		_, e := it.Element()
		out = append(out, e.AsString())
	}
	return out
}

// stringMap decodes a block of string attributes (meta, env).
func (p *hclParser) stringMap(b *hcl.Block) map[string]string {
	attrs, diags := b.Body.JustAttributes()
	p.diags = append(p.diags, diags...)
	out := make(map[string]string, len(attrs))
	for name, a := range attrs {
		if v, ok := p.value(a, cty.String); ok {
			out[name] = v.AsString()
		}
	}
	return out
}

// anyMap decodes a driver's config block: attributes of any type, and
// nested blocks as lists of maps, as Nomad's JSON carries them.
func (p *hclParser) anyMap(body hcl.Body) map[string]any {
	out := map[string]any{}
	sb, ok := body.(*hclsyntax.Body)
	if !ok {
		return out
	}
	names := make([]string, 0, len(sb.Attributes))
	for n := range sb.Attributes {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		a := sb.Attributes[n].AsHCLAttribute()
		v, ok := p.value(a, cty.DynamicPseudoType)
		if !ok {
			continue
		}
		goV, err := ctyToGo(v)
		if err != nil {
			p.diags = append(p.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Unsupported value",
				Detail: fmt.Sprintf("%s: %v", n, err), Subject: a.Expr.Range().Ptr()})
			continue
		}
		out[n] = goV
	}
	for _, blk := range sb.Blocks {
		list, _ := out[blk.Type].([]any)
		out[blk.Type] = append(list, p.anyMap(blk.Body))
	}
	return out
}

func ctyToGo(v cty.Value) (any, error) {
	b, err := ctyjson.Marshal(v, v.Type())
	if err != nil {
		return nil, err
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	return out, nil
}

func blocksOf(c *hcl.BodyContent, typ string) []*hcl.Block {
	if c == nil {
		return nil
	}
	var out []*hcl.Block
	for _, b := range c.Blocks {
		if b.Type == typ {
			out = append(out, b)
		}
	}
	return out
}

var constraintBlock = hcl.BlockHeaderSchema{Type: "constraint"}

func (p *hclParser) constraints(c *hcl.BodyContent) []*nomad.Constraint {
	var out []*nomad.Constraint
	for _, b := range blocksOf(c, "constraint") {
		cc := p.content(b.Body, []string{"attribute", "operator", "value"}, nil)
		if cc == nil {
			continue
		}
		k := &nomad.Constraint{}
		if s := p.str(cc.Attributes, "attribute"); s != nil {
			k.LTarget = *s
		}
		if s := p.str(cc.Attributes, "operator"); s != nil {
			k.Operand = *s
		} else {
			k.Operand = "="
		}
		if s := p.str(cc.Attributes, "value"); s != nil {
			k.RTarget = *s
		}
		out = append(out, k)
	}
	return out
}

func (p *hclParser) job(b *hcl.Block) *nomad.Job {
	c := p.content(b.Body,
		[]string{"id", "name", "region", "namespace", "type", "priority", "datacenters", "node_pool", "all_at_once"},
		[]hcl.BlockHeaderSchema{{Type: "group", LabelNames: []string{"name"}}, constraintBlock, {Type: "meta"}})
	name := b.Labels[0]
	job := &nomad.Job{ID: &name, Name: &name}
	if c == nil {
		return job
	}
	if s := p.str(c.Attributes, "id"); s != nil {
		job.ID = s
	}
	if s := p.str(c.Attributes, "name"); s != nil {
		job.Name = s
	}
	job.Region = p.str(c.Attributes, "region")
	job.Namespace = p.str(c.Attributes, "namespace")
	job.Type = p.str(c.Attributes, "type")
	job.Priority = p.int(c.Attributes, "priority")
	job.Datacenters = p.strings(c.Attributes, "datacenters")
	job.NodePool = p.str(c.Attributes, "node_pool")
	job.AllAtOnce = p.bool(c.Attributes, "all_at_once")
	job.Constraints = p.constraints(c)
	for _, m := range blocksOf(c, "meta") {
		job.Meta = p.stringMap(m)
	}
	for _, g := range blocksOf(c, "group") {
		job.TaskGroups = append(job.TaskGroups, p.group(g))
	}
	return job
}

func (p *hclParser) group(b *hcl.Block) *nomad.TaskGroup {
	name := b.Labels[0]
	tg := &nomad.TaskGroup{Name: &name}
	c := p.content(b.Body, []string{"count", "shutdown_delay"},
		[]hcl.BlockHeaderSchema{{Type: "task", LabelNames: []string{"name"}}, constraintBlock, {Type: "meta"},
			{Type: "restart"}, {Type: "ephemeral_disk"}})
	if c == nil {
		return tg
	}
	tg.Count = p.int(c.Attributes, "count")
	tg.ShutdownDelay = p.duration(c.Attributes, "shutdown_delay")
	tg.Constraints = p.constraints(c)
	for _, m := range blocksOf(c, "meta") {
		tg.Meta = p.stringMap(m)
	}
	for _, r := range blocksOf(c, "restart") {
		tg.RestartPolicy = p.restart(r)
	}
	for _, d := range blocksOf(c, "ephemeral_disk") {
		dc := p.content(d.Body, []string{"size", "sticky", "migrate"}, nil)
		if dc != nil {
			tg.EphemeralDisk = &nomad.EphemeralDisk{SizeMB: p.int(dc.Attributes, "size"),
				Sticky: p.bool(dc.Attributes, "sticky"), Migrate: p.bool(dc.Attributes, "migrate")}
		}
	}
	for _, t := range blocksOf(c, "task") {
		tg.Tasks = append(tg.Tasks, p.task(t))
	}
	return tg
}

func (p *hclParser) restart(b *hcl.Block) *nomad.RestartPolicy {
	c := p.content(b.Body, []string{"attempts", "interval", "delay", "mode"}, nil)
	if c == nil {
		return nil
	}
	return &nomad.RestartPolicy{Attempts: p.int(c.Attributes, "attempts"), Interval: p.duration(c.Attributes, "interval"),
		Delay: p.duration(c.Attributes, "delay"), Mode: p.str(c.Attributes, "mode")}
}

func (p *hclParser) task(b *hcl.Block) *nomad.Task {
	t := &nomad.Task{Name: b.Labels[0]}
	c := p.content(b.Body, []string{"driver", "user", "kill_timeout", "kill_signal", "leader", "shutdown_delay"},
		[]hcl.BlockHeaderSchema{{Type: "config"}, {Type: "env"}, {Type: "meta"}, {Type: "resources"},
			constraintBlock, {Type: "restart"}, {Type: "logs"}})
	if c == nil {
		return t
	}
	if s := p.str(c.Attributes, "driver"); s != nil {
		t.Driver = *s
	}
	if s := p.str(c.Attributes, "user"); s != nil {
		t.User = *s
	}
	t.KillTimeout = p.duration(c.Attributes, "kill_timeout")
	if s := p.str(c.Attributes, "kill_signal"); s != nil {
		t.KillSignal = *s
	}
	if v := p.bool(c.Attributes, "leader"); v != nil {
		t.Leader = *v
	}
	if d := p.duration(c.Attributes, "shutdown_delay"); d != nil {
		t.ShutdownDelay = *d
	}
	t.Constraints = p.constraints(c)
	for _, x := range blocksOf(c, "config") {
		t.Config = p.anyMap(x.Body)
	}
	for _, x := range blocksOf(c, "env") {
		t.Env = p.stringMap(x)
	}
	for _, x := range blocksOf(c, "meta") {
		t.Meta = p.stringMap(x)
	}
	for _, x := range blocksOf(c, "restart") {
		t.RestartPolicy = p.restart(x)
	}
	for _, x := range blocksOf(c, "resources") {
		rc := p.content(x.Body, []string{"cpu", "cores", "memory", "memory_max", "disk"}, nil)
		if rc != nil {
			t.Resources = &nomad.Resources{CPU: p.int(rc.Attributes, "cpu"), Cores: p.int(rc.Attributes, "cores"),
				MemoryMB: p.int(rc.Attributes, "memory"), MemoryMaxMB: p.int(rc.Attributes, "memory_max"),
				DiskMB: p.int(rc.Attributes, "disk")}
		}
	}
	for _, x := range blocksOf(c, "logs") {
		lc := p.content(x.Body, []string{"max_files", "max_file_size", "disabled"}, nil)
		if lc != nil {
			t.LogConfig = &nomad.LogConfig{MaxFiles: p.int(lc.Attributes, "max_files"),
				MaxFileSizeMB: p.int(lc.Attributes, "max_file_size"), Disabled: p.bool(lc.Attributes, "disabled")}
		}
	}
	return t
}

// runtimeContext lets an expression name the node's and the task's
// runtime values (${attr.kernel.name}, ${node.unique.id}, ${meta.rack},
// ${env.HOME}, ${NOMAD_ALLOC_DIR}): each such reference evaluates to its
// own text, so the client interpolates it when it places the task, as
// Nomad's jobspec keeps them. Any other variable stays an error.
func runtimeContext(vars []hcl.Traversal) *hcl.EvalContext {
	if len(vars) == 0 {
		return nil
	}
	tree := map[string]any{}
	for _, tr := range vars {
		root := tr.RootName()
		switch {
		case root == "attr", root == "node", root == "meta", root == "env", root == "device",
			strings.HasPrefix(root, "NOMAD_"):
		default:
			continue
		}
		names := []string{root}
		ok := true
		for _, step := range tr[1:] {
			switch st := step.(type) {
			case hcl.TraverseAttr:
				names = append(names, st.Name)
			case hcl.TraverseIndex:
				if st.Key.Type() != cty.String {
					ok = false
				} else {
					names = append(names, st.Key.AsString())
				}
			default:
				ok = false
			}
		}
		if ok {
			insertRuntime(tree, names, "${"+strings.Join(names, ".")+"}")
		}
	}
	if len(tree) == 0 {
		return nil
	}
	vals := make(map[string]cty.Value, len(tree))
	for k, v := range tree {
		vals[k] = runtimeValue(v)
	}
	return &hcl.EvalContext{Variables: vals}
}

func insertRuntime(tree map[string]any, names []string, leaf string) {
	for i, n := range names {
		if i == len(names)-1 {
			if _, taken := tree[n]; !taken {
				tree[n] = leaf
			}
			return
		}
		sub, ok := tree[n].(map[string]any)
		if !ok {
			if _, taken := tree[n]; taken {
				return // a shorter reference already holds this name
			}
			sub = map[string]any{}
			tree[n] = sub
		}
		tree = sub
	}
}

func runtimeValue(v any) cty.Value {
	if s, ok := v.(string); ok {
		return cty.StringVal(s)
	}
	m := v.(map[string]any)
	obj := make(map[string]cty.Value, len(m))
	for k, x := range m {
		obj[k] = runtimeValue(x)
	}
	return cty.ObjectVal(obj)
}
