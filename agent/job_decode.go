package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strings"
	"time"

	"tether/client"
	"tether/structs"
)

// Nomad's job JSON carries many fields Tether does not act on. They are
// accepted (what `nomad job run -output` and the Go client send must
// register unchanged) but any key outside these sets is refused with a 400
// naming it, so typos do not pass silently.
var (
	jobRegisterKeys = keySet("Job", "Submission", "EnforceIndex", "JobModifyIndex", "PolicyOverride",
		"PreserveCounts", "PreserveResources", "EvalPriority", "Region", "Namespace", "SecretID", "IdempotencyToken")
	jobKeys = keySet("Region", "Namespace", "ID", "Name", "Type", "Priority", "AllAtOnce", "Datacenters",
		"NodePool", "Constraints", "Affinities", "TaskGroups", "Update", "Multiregion", "Spreads", "Periodic",
		"ParameterizedJob", "Reschedule", "Migrate", "Meta", "UI", "Stop", "ParentID", "Dispatched",
		"DispatchIdempotencyToken", "Payload", "ConsulToken", "VaultToken", "ConsulNamespace", "VaultNamespace",
		"NomadTokenID", "Status", "StatusDescription", "Stable", "Version", "SubmitTime", "CreateIndex",
		"ModifyIndex", "JobModifyIndex", "VersionTag")
	groupKeys = keySet("Name", "Count", "Constraints", "Affinities", "Tasks", "Spreads", "Volumes",
		"RestartPolicy", "Disconnect", "ReschedulePolicy", "EphemeralDisk", "Update", "Migrate", "Networks",
		"Meta", "Services", "ShutdownDelay", "MaxRunDuration", "StopAfterClientDisconnect",
		"MaxClientDisconnect", "Scaling", "Consul", "PreventRescheduleOnLost")
	taskKeys = keySet("Name", "Driver", "User", "Lifecycle", "Config", "Constraints", "Affinities", "Env",
		"Services", "Resources", "RestartPolicy", "Meta", "KillTimeout", "LogConfig", "Artifacts", "Vault",
		"Consul", "Templates", "DispatchPayload", "VolumeMounts", "CSIPluginConfig", "Leader", "ShutdownDelay",
		"KillSignal", "Kind", "ScalingPolicies", "Secrets", "Identity", "Identities", "Actions", "Schedule")
	resourcesKeys  = keySet("CPU", "Cores", "MemoryMB", "MemoryMaxMB", "DiskMB", "Networks", "Devices", "NUMA", "SecretsMB", "IOPS")
	logConfigKeys  = keySet("MaxFiles", "MaxFileSizeMB", "Enabled", "Disabled")
	restartKeys    = keySet("Interval", "Attempts", "Delay", "Mode", "RenderTemplates")
	constraintKeys = keySet("LTarget", "RTarget", "Operand")
	diskKeys       = keySet("Sticky", "Migrate", "SizeMB")
	scalingKeys    = keySet("ID", "Namespace", "Type", "Target", "Policy", "Min", "Max", "Enabled", "CreateIndex", "ModifyIndex")
)

// idPattern bounds group and task names: they become file names (task
// dirs, log files) on nodes. A job ID names no file, so it takes what
// Nomad's does (no space, no NUL: "a/b" and "字" are fine), up to
// maxJobIDLength bytes.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$`)

const maxJobIDLength = 256

// decodeJobRegister parses a job registration body ({"Job": {...}}).
func decodeJobRegister(body []byte) (*structs.Job, structs.JobRegisterOptions, error) {
	var opts structs.JobRegisterOptions
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return nil, opts, structs.BadRequest("failed to parse job: %v", err)
	}
	if err := checkKeys("request", top, jobRegisterKeys); err != nil {
		return nil, opts, err
	}
	raw, ok := top["Job"]
	if !ok || isNull(raw) {
		return nil, opts, structs.BadRequest("Job must be specified")
	}
	for _, f := range []struct {
		name string
		dst  any
	}{{"EvalPriority", &opts.EvalPriority}, {"PreserveCounts", &opts.PreserveCounts}, {"PreserveResources", &opts.PreserveResources},
		{"EnforceIndex", &opts.EnforceIndex}, {"JobModifyIndex", &opts.JobModifyIndex}} {
		if v, ok := top[f.name]; ok && !isNull(v) {
			if err := json.Unmarshal(v, f.dst); err != nil {
				return nil, opts, structs.BadRequest("%s: %v", f.name, err)
			}
		}
	}
	if err := checkEvalPriority(opts.EvalPriority); err != nil {
		return nil, opts, err
	}
	job, err := decodeJob(raw)
	return job, opts, err
}

// checkEvalPriority refuses an evaluation priority outside Nomad's range
// (0 stands for the job's).
func checkEvalPriority(p int) error {
	if p != 0 && (p < 1 || p > 100) {
		return structs.BadRequest("eval priority must be between 1 and 100 inclusively")
	}
	return nil
}

// decodeJob turns Nomad's job JSON into a validated structs.Job.
func decodeJob(raw json.RawMessage) (*structs.Job, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, structs.BadRequest("Job: %v", err)
	}
	if err := checkKeys("Job", obj, jobKeys); err != nil {
		return nil, err
	}
	j := &structs.Job{}
	var err error
	if j.ID, err = str(obj, "Job.ID"); err != nil {
		return nil, err
	}
	if j.Name, err = str(obj, "Job.Name"); err != nil {
		return nil, err
	}
	if j.Namespace, err = str(obj, "Job.Namespace"); err != nil {
		return nil, err
	}
	if j.Region, err = str(obj, "Job.Region"); err != nil {
		return nil, err
	}
	if j.Type, err = str(obj, "Job.Type"); err != nil {
		return nil, err
	}
	if j.NodePool, err = str(obj, "Job.NodePool"); err != nil {
		return nil, err
	}
	if j.Priority, err = integer(obj, "Job.Priority", 50); err != nil {
		return nil, err
	}
	if err := into(obj, "Job.Datacenters", &j.Datacenters); err != nil {
		return nil, err
	}
	if err := into(obj, "Job.Meta", &j.Meta); err != nil {
		return nil, err
	}
	if j.Constraints, err = constraints(obj, "Job.Constraints"); err != nil {
		return nil, err
	}
	var groups []json.RawMessage
	if err := into(obj, "Job.TaskGroups", &groups); err != nil {
		return nil, err
	}

	switch {
	case j.ID == "":
		return nil, structs.BadRequest("Job.ID: missing job ID")
	case strings.Contains(j.ID, " "):
		return nil, structs.BadRequest("Job.ID: job ID contains a space")
	case strings.ContainsRune(j.ID, 0):
		return nil, structs.BadRequest("Job.ID: job ID contains a null character")
	case len(j.ID) > maxJobIDLength:
		return nil, structs.BadRequest("Job.ID: longer than %d bytes", maxJobIDLength)
	}
	if j.Name == "" {
		j.Name = j.ID
	}
	if j.Namespace == "" {
		j.Namespace = structs.DefaultNamespace
	}
	if j.Type == "" {
		j.Type = structs.JobTypeService
	}
	if j.Type != structs.JobTypeService && j.Type != structs.JobTypeBatch {
		return nil, structs.BadRequest("Job.Type: %q is not supported (service or batch)", j.Type)
	}
	if j.Priority < 1 || j.Priority > 100 {
		return nil, structs.BadRequest("Job.Priority: must be between 1 and 100")
	}
	if len(j.Datacenters) == 0 {
		j.Datacenters = []string{"*"}
	}
	if j.NodePool == "" {
		j.NodePool = "default"
	}
	if len(groups) == 0 {
		return nil, structs.BadRequest("Job.TaskGroups: missing job task groups")
	}
	seen := map[string]bool{}
	for i, g := range groups {
		tg, err := decodeGroup(g, fmt.Sprintf("Job.TaskGroups[%d]", i))
		if err != nil {
			return nil, err
		}
		if seen[tg.Name] {
			return nil, structs.BadRequest("Job.TaskGroups[%d].Name: duplicate group %q", i, tg.Name)
		}
		seen[tg.Name] = true
		j.TaskGroups = append(j.TaskGroups, tg)
	}
	return j, nil
}

func decodeGroup(raw json.RawMessage, path string) (*structs.TaskGroup, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return nil, structs.BadRequest("%s: must be an object", path)
	}
	if err := checkKeys(path, obj, groupKeys); err != nil {
		return nil, err
	}
	tg := &structs.TaskGroup{}
	var err error
	if tg.Name, err = str(obj, path+".Name"); err != nil {
		return nil, err
	}
	if !idPattern.MatchString(tg.Name) {
		return nil, structs.BadRequest("%s.Name: missing or invalid group name %q", path, tg.Name)
	}
	if tg.Count, err = integer(obj, path+".Count", 1); err != nil {
		return nil, err
	}
	if tg.Count < 0 {
		return nil, structs.BadRequest("%s.Count: must not be negative", path)
	}
	if sc, ok := obj["Scaling"]; ok && !isNull(sc) {
		if tg.Scaling, err = decodeScaling(sc, path+".Scaling", tg, isNull(obj["Count"])); err != nil {
			return nil, err
		}
	}
	if tg.Constraints, err = constraints(obj, path+".Constraints"); err != nil {
		return nil, err
	}
	if err := into(obj, path+".Meta", &tg.Meta); err != nil {
		return nil, err
	}
	if r, ok := obj["RestartPolicy"]; ok && !isNull(r) {
		if tg.RestartPolicy, err = decodeRestart(r, path+".RestartPolicy"); err != nil {
			return nil, err
		}
	}
	if d, ok := obj["EphemeralDisk"]; ok && !isNull(d) {
		var dobj map[string]json.RawMessage
		if err := json.Unmarshal(d, &dobj); err != nil {
			return nil, structs.BadRequest("%s.EphemeralDisk: %v", path, err)
		}
		if err := checkKeys(path+".EphemeralDisk", dobj, diskKeys); err != nil {
			return nil, err
		}
		tg.EphemeralDisk = &structs.EphemeralDisk{}
		if tg.EphemeralDisk.SizeMB, err = integer(dobj, path+".EphemeralDisk.SizeMB", 300); err != nil {
			return nil, err
		}
	}
	var tasks []json.RawMessage
	if err := into(obj, path+".Tasks", &tasks); err != nil {
		return nil, err
	}
	if len(tasks) == 0 {
		return nil, structs.BadRequest("%s.Tasks: missing tasks for task group %q", path, tg.Name)
	}
	seen := map[string]bool{}
	for i, t := range tasks {
		task, err := decodeTask(t, fmt.Sprintf("%s.Tasks[%d]", path, i))
		if err != nil {
			return nil, err
		}
		if seen[task.Name] {
			return nil, structs.BadRequest("%s.Tasks[%d].Name: duplicate task %q", path, i, task.Name)
		}
		seen[task.Name] = true
		tg.Tasks = append(tg.Tasks, task)
	}
	return tg, nil
}

func decodeTask(raw json.RawMessage, path string) (*structs.Task, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return nil, structs.BadRequest("%s: must be an object", path)
	}
	if err := checkKeys(path, obj, taskKeys); err != nil {
		return nil, err
	}
	t := &structs.Task{}
	var err error
	if t.Name, err = str(obj, path+".Name"); err != nil {
		return nil, err
	}
	if !idPattern.MatchString(t.Name) || t.Name == "alloc" {
		return nil, structs.BadRequest("%s.Name: missing or invalid task name %q", path, t.Name)
	}
	if t.Driver, err = str(obj, path+".Driver"); err != nil {
		return nil, err
	}
	if t.Driver == "" {
		// As Nomad, any driver name is taken: a task of a driver no node
		// runs is not placed (the evaluation says "missing driver").
		return nil, structs.BadRequest("%s.Driver: missing task driver", path)
	}
	if t.User, err = str(obj, path+".User"); err != nil {
		return nil, err
	}
	if t.KillSignal, err = str(obj, path+".KillSignal"); err != nil {
		return nil, err
	}
	if err := into(obj, path+".Config", &t.Config); err != nil {
		return nil, err
	}
	switch t.Driver {
	case client.DriverMock:
		// The node parses the config the same way when it starts the task.
		if _, err := client.ParseMockConfig(t.Config); err != nil {
			return nil, structs.BadRequest("%s.Config: %v", path, err)
		}
	case client.DriverRawExec:
		if err := checkRawExecConfig(t.Config, path); err != nil {
			return nil, err
		}
	}
	if err := into(obj, path+".Env", &t.Env); err != nil {
		return nil, err
	}
	if err := into(obj, path+".Meta", &t.Meta); err != nil {
		return nil, err
	}
	if t.Constraints, err = constraints(obj, path+".Constraints"); err != nil {
		return nil, err
	}
	var kt int64
	if err := into(obj, path+".KillTimeout", &kt); err != nil {
		return nil, err
	}
	if kt < 0 {
		return nil, structs.BadRequest("%s.KillTimeout: must not be negative", path)
	}
	t.KillTimeout = time.Duration(kt)
	if err := into(obj, path+".Leader", &t.Leader); err != nil {
		return nil, err
	}
	t.Resources = &structs.Resources{CPU: 100, MemoryMB: 300}
	if r, ok := obj["Resources"]; ok && !isNull(r) {
		var robj map[string]json.RawMessage
		if err := json.Unmarshal(r, &robj); err != nil {
			return nil, structs.BadRequest("%s.Resources: %v", path, err)
		}
		if err := checkKeys(path+".Resources", robj, resourcesKeys); err != nil {
			return nil, err
		}
		if t.Resources.CPU, err = integer(robj, path+".Resources.CPU", 100); err != nil {
			return nil, err
		}
		if t.Resources.MemoryMB, err = integer(robj, path+".Resources.MemoryMB", 300); err != nil {
			return nil, err
		}
		if t.Resources.CPU < 0 || t.Resources.MemoryMB < 0 {
			return nil, structs.BadRequest("%s.Resources: must not be negative", path)
		}
	}
	if l, ok := obj["LogConfig"]; ok && !isNull(l) {
		var lobj map[string]json.RawMessage
		if err := json.Unmarshal(l, &lobj); err != nil {
			return nil, structs.BadRequest("%s.LogConfig: %v", path, err)
		}
		if err := checkKeys(path+".LogConfig", lobj, logConfigKeys); err != nil {
			return nil, err
		}
		lc := &structs.LogConfig{}
		if lc.MaxFiles, err = integer(lobj, path+".LogConfig.MaxFiles", 10); err != nil {
			return nil, err
		}
		if lc.MaxFileSizeMB, err = integer(lobj, path+".LogConfig.MaxFileSizeMB", 10); err != nil {
			return nil, err
		}
		var disabled, enabled *bool
		if err := into(lobj, path+".LogConfig.Disabled", &disabled); err != nil {
			return nil, err
		}
		if err := into(lobj, path+".LogConfig.Enabled", &enabled); err != nil {
			return nil, err
		}
		lc.Disabled = (disabled != nil && *disabled) || (enabled != nil && !*enabled)
		if lc.MaxFiles < 1 || lc.MaxFileSizeMB < 1 {
			return nil, structs.BadRequest("%s.LogConfig: MaxFiles and MaxFileSizeMB must be at least 1", path)
		}
		t.LogConfig = lc
	}
	return t, nil
}

// checkRawExecConfig checks a raw_exec task's command and args.
func checkRawExecConfig(cfg map[string]any, path string) error {
	cmd, _ := cfg["command"].(string)
	if cmd == "" {
		return structs.BadRequest("%s.Config.command: missing command", path)
	}
	if a, ok := cfg["args"]; ok && a != nil {
		list, ok := a.([]any)
		if !ok {
			return structs.BadRequest("%s.Config.args: must be a list of strings", path)
		}
		for _, v := range list {
			if _, ok := v.(string); !ok {
				return structs.BadRequest("%s.Config.args: must be a list of strings", path)
			}
		}
	}
	return nil
}

func decodeRestart(raw json.RawMessage, path string) (*structs.RestartPolicy, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, structs.BadRequest("%s: %v", path, err)
	}
	if err := checkKeys(path, obj, restartKeys); err != nil {
		return nil, err
	}
	rp := &structs.RestartPolicy{Interval: 30 * time.Minute, Delay: 15 * time.Second, Mode: "fail"}
	var err error
	if rp.Attempts, err = integer(obj, path+".Attempts", 2); err != nil {
		return nil, err
	}
	var iv, dl *int64
	if err := into(obj, path+".Interval", &iv); err != nil {
		return nil, err
	}
	if err := into(obj, path+".Delay", &dl); err != nil {
		return nil, err
	}
	if iv != nil {
		rp.Interval = time.Duration(*iv)
	}
	if dl != nil {
		rp.Delay = time.Duration(*dl)
	}
	mode, err := str(obj, path+".Mode")
	if err != nil {
		return nil, err
	}
	if mode != "" {
		rp.Mode = mode
	}
	if rp.Mode != "fail" && rp.Mode != "delay" {
		return nil, structs.BadRequest("%s.Mode: must be \"fail\" or \"delay\"", path)
	}
	if rp.Attempts < 0 || rp.Interval < 0 || rp.Delay < 0 {
		return nil, structs.BadRequest("%s: values must not be negative", path)
	}
	return rp, nil
}

func constraints(obj map[string]json.RawMessage, path string) ([]*structs.Constraint, error) {
	var list []json.RawMessage
	if err := into(obj, path, &list); err != nil {
		return nil, err
	}
	var out []*structs.Constraint
	for i, raw := range list {
		p := fmt.Sprintf("%s[%d]", path, i)
		var cobj map[string]json.RawMessage
		if err := json.Unmarshal(raw, &cobj); err != nil || cobj == nil {
			return nil, structs.BadRequest("%s: must be an object", p)
		}
		if err := checkKeys(p, cobj, constraintKeys); err != nil {
			return nil, err
		}
		c := &structs.Constraint{}
		var err error
		if c.LTarget, err = str(cobj, p+".LTarget"); err != nil {
			return nil, err
		}
		if c.RTarget, err = str(cobj, p+".RTarget"); err != nil {
			return nil, err
		}
		if c.Operand, err = str(cobj, p+".Operand"); err != nil {
			return nil, err
		}
		switch c.Operand {
		case "", "=", "==", "is", "!=", "not", "is_set", "is_not_set", structs.ConstraintDistinctHosts:
		case structs.ConstraintRegex:
			if _, err := regexp.Compile(c.RTarget); err != nil {
				return nil, structs.BadRequest("%s.RTarget: invalid regexp: %v", p, err)
			}
		default:
			return nil, structs.BadRequest("%s.Operand: %q is not supported", p, c.Operand)
		}
		out = append(out, c)
	}
	return out, nil
}

// checkKeys refuses keys outside allowed, naming the first (sorted).
func checkKeys(path string, obj map[string]json.RawMessage, allowed map[string]bool) error {
	var bad []string
	for k := range obj {
		if !allowed[k] {
			bad = append(bad, k)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	sort.Strings(bad)
	return structs.BadRequest("%s: unknown field %q", path, bad[0])
}

func isNull(raw json.RawMessage) bool {
	return len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null"
}

// into decodes obj[key] (the last dotted element of path) into v; absent
// or null leaves v alone.
func into(obj map[string]json.RawMessage, path string, v any) error {
	key := path[strings.LastIndexByte(path, '.')+1:]
	raw, ok := obj[key]
	if !ok || isNull(raw) {
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return structs.BadRequest("%s: %v", path, strings.TrimPrefix(err.Error(), "json: "))
	}
	return nil
}

func str(obj map[string]json.RawMessage, path string) (string, error) {
	var s string
	return s, into(obj, path, &s)
}

func integer(obj map[string]json.RawMessage, path string, def int) (int, error) {
	var v *int
	if err := into(obj, path, &v); err != nil {
		return 0, err
	}
	if v == nil {
		return def, nil
	}
	return *v, nil
}

// decodeScaling reads a group's Scaling block (api.ScalingPolicy) with
// Nomad's defaults and checks: Min defaults to the group's count, and a
// group without a Count takes Min (noCount); Max is required; the count
// must lie in [Min, Max]. The server fills the ID and Target.
func decodeScaling(raw json.RawMessage, path string, tg *structs.TaskGroup, noCount bool) (*structs.ScalingPolicy, error) {
	if len(raw) > maxScalingPolicyBytes {
		return nil, structs.BadRequest("%s: longer than %d bytes", path, maxScalingPolicyBytes)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return nil, structs.BadRequest("%s: must be an object", path)
	}
	if err := checkKeys(path, obj, scalingKeys); err != nil {
		return nil, err
	}
	var in struct {
		Min, Max *int64
		Enabled  *bool
		Type     string
		Policy   map[string]any
	}
	for _, f := range []struct {
		key string
		dst any
	}{{"Min", &in.Min}, {"Max", &in.Max}, {"Enabled", &in.Enabled}, {"Type", &in.Type}, {"Policy", &in.Policy}} {
		if err := into(obj, path+"."+f.key, f.dst); err != nil {
			return nil, err
		}
	}
	p := &structs.ScalingPolicy{Type: in.Type, Policy: in.Policy, Enabled: in.Enabled == nil || *in.Enabled, Max: -1}
	if p.Type == "" {
		p.Type = structs.ScalingPolicyTypeHorizontal
	}
	if p.Type != structs.ScalingPolicyTypeHorizontal {
		return nil, structs.BadRequest("Scaling policy invalid: task group scaling policy had invalid type: %q", p.Type)
	}
	if in.Max != nil {
		p.Max = *in.Max
	}
	switch {
	case in.Min != nil:
		p.Min = *in.Min
		if noCount && p.Min >= 0 && p.Min <= math.MaxInt32 {
			tg.Count = int(p.Min)
		}
	default:
		p.Min = int64(tg.Count)
	}
	switch {
	case p.Max < 0:
		return nil, structs.BadRequest("Scaling policy invalid: maximum count must be specified and non-negative")
	case p.Min < 0:
		return nil, structs.BadRequest("Scaling policy invalid: minimum count must be specified and non-negative")
	case p.Max < p.Min:
		return nil, structs.BadRequest("Scaling policy invalid: maximum count must not be less than minimum count")
	case p.Max < int64(tg.Count):
		return nil, structs.BadRequest("Scaling policy invalid: task group count must not be greater than maximum count in scaling policy")
	case int64(tg.Count) < p.Min:
		return nil, structs.BadRequest("Scaling policy invalid: task group count must not be less than minimum count in scaling policy")
	}
	return p, nil
}

// maxScalingPolicyBytes bounds a Scaling block (its Policy is free-form
// and kept on the job).
const maxScalingPolicyBytes = 64 << 10
