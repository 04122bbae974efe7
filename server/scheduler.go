package server

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"time"

	"tether/structs"
)

// placementFailure explains why a task group's allocations could not all
// be placed.
type placementFailure struct {
	Group   string
	Missing int
	Reason  string
}

// reconcile brings a job's allocations in line with the job: it stops
// allocations of a stopped job or of removed groups and excess counts,
// replaces allocations whose group changed, and places missing ones on
// feasible nodes. It returns the groups it could not fully place. Callers
// hold s.schedMu.
func (s *Server) reconcile(ctx context.Context, job *structs.Job) ([]placementFailure, error) {
	existing, err := s.store.AllocsByJob(job.Namespace, job.ID)
	if err != nil {
		return nil, err
	}
	nodes, err := s.store.Nodes("")
	if err != nil {
		return nil, err
	}
	now := time.Now().UnixNano()
	var updates []*structs.Allocation
	stop := func(a *structs.Allocation, why string) {
		c := *a
		c.DesiredStatus = structs.AllocDesiredStatusStop
		c.DesiredDescription = why
		c.ModifyTime = now
		updates = append(updates, &c)
	}

	// Live allocations by group, and every node's load.
	live := map[string][]*structs.Allocation{}
	done := map[string]map[int]bool{} // batch groups: indexes that completed
	for _, a := range existing {
		if a.DesiredStatus != structs.AllocDesiredStatusRun {
			continue
		}
		if a.ClientTerminal() {
			if job.Type == structs.JobTypeBatch && a.ClientStatus == structs.AllocClientStatusComplete {
				if done[a.TaskGroup] == nil {
					done[a.TaskGroup] = map[int]bool{}
				}
				done[a.TaskGroup][a.Index()] = true
			}
			continue
		}
		live[a.TaskGroup] = append(live[a.TaskGroup], a)
	}

	var failures []placementFailure
	var placed []*structs.Allocation
	load := s.nodeLoads()
	for group, allocs := range live {
		tg := job.LookupTaskGroup(group)
		if job.Stop || tg == nil {
			for _, a := range allocs {
				stop(a, "alloc not needed due to job update")
			}
			delete(live, group)
		}
	}
	if job.Stop {
		if len(updates) == 0 {
			return nil, nil
		}
		_, err := s.raftApply(ctx, msgUpsertAllocs, &upsertAllocsCmd{Allocs: updates})
		return nil, err
	}
	for _, tg := range job.TaskGroups {
		keep := live[tg.Name][:0:0]
		used := map[int]bool{}
		sort.Slice(live[tg.Name], func(i, j int) bool { return live[tg.Name][i].Index() < live[tg.Name][j].Index() })
		for _, a := range live[tg.Name] {
			idx := a.Index()
			switch {
			case idx >= tg.Count || used[idx]:
				stop(a, "alloc not needed due to job update")
			case a.Job != nil && !reflect.DeepEqual(a.Job.LookupTaskGroup(tg.Name), tg):
				stop(a, "alloc is being updated due to job update")
			default:
				used[idx] = true
				keep = append(keep, a)
				if a.Job == nil || a.Job.Version != job.Version {
					c := *a
					c.Job = job
					updates = append(updates, &c)
				}
			}
		}
		var want []int
		for i := 0; i < tg.Count; i++ {
			if !used[i] && !done[tg.Name][i] {
				want = append(want, i)
			}
		}
		if len(want) == 0 {
			continue
		}
		groupAllocs := append([]*structs.Allocation(nil), keep...)
		for n, idx := range want {
			node, reason := s.selectNode(job, tg, nodes, load, groupAllocs, existingLive(live, placed))
			if node == nil {
				failures = append(failures, placementFailure{Group: tg.Name, Missing: len(want) - n, Reason: reason})
				break
			}
			a := newAlloc(job, tg, idx, node, now)
			if s.evalID != "" {
				a.EvalID = s.evalID
			}
			placed = append(placed, a)
			groupAllocs = append(groupAllocs, a)
			load[node.ID] += float64(a.Resources.CPU)
		}
	}
	updates = append(updates, placed...)
	if len(updates) > 0 {
		if _, err := s.raftApply(ctx, msgUpsertAllocs, &upsertAllocsCmd{Allocs: updates}); err != nil {
			return nil, err
		}
	}
	return failures, nil
}

// existingLive flattens the live allocations of every group plus those
// placed in this pass, for job-level distinct_hosts.
func existingLive(live map[string][]*structs.Allocation, placed []*structs.Allocation) []*structs.Allocation {
	var out []*structs.Allocation
	for _, as := range live {
		out = append(out, as...)
	}
	return append(out, placed...)
}

// nodeLoads returns each node's allocated CPU (MHz) over running allocs.
func (s *Server) nodeLoads() map[string]float64 {
	load := map[string]float64{}
	allocs, _ := s.store.Allocs("*", "")
	for _, a := range allocs {
		if a.TerminalStatus() || a.Resources == nil {
			continue
		}
		load[a.NodeID] += float64(a.Resources.CPU)
	}
	return load
}

// selectNode picks the feasible node with the lowest allocated share of its
// CPU, breaking ties at random. It returns the reason when none fits.
func (s *Server) selectNode(job *structs.Job, tg *structs.TaskGroup, nodes []*structs.Node, load map[string]float64,
	groupAllocs, jobAllocs []*structs.Allocation) (*structs.Node, string) {
	var best *structs.Node
	bestScore := 0.0
	filtered := map[string]int{}
	for _, n := range nodes {
		if reason := s.feasible(job, tg, n, groupAllocs, jobAllocs); reason != "" {
			filtered[reason]++
			continue
		}
		capacity := 1000.0
		if n.Resources != nil && n.Resources.CPU > 0 {
			capacity = float64(n.Resources.CPU)
		}
		score := load[n.ID]/capacity + rand.Float64()*1e-6
		if best == nil || score < bestScore {
			best, bestScore = n, score
		}
	}
	if best != nil {
		return best, ""
	}
	if len(nodes) == 0 {
		return nil, "no nodes are registered"
	}
	var parts []string
	for r, c := range filtered {
		parts = append(parts, fmt.Sprintf("%d node(s) excluded: %s", c, r))
	}
	sort.Strings(parts)
	return nil, strings.Join(parts, "; ")
}

// feasible returns "" when the group may run on n, else why not.
func (s *Server) feasible(job *structs.Job, tg *structs.TaskGroup, n *structs.Node, groupAllocs, jobAllocs []*structs.Allocation) string {
	if n.Status != structs.NodeStatusReady {
		return "node is " + n.Status
	}
	if n.SchedulingEligibility == structs.NodeSchedulingIneligible {
		return "node is ineligible"
	}
	if !datacenterMatch(job.Datacenters, n.Datacenter) {
		return fmt.Sprintf("datacenter %q not in %v", n.Datacenter, job.Datacenters)
	}
	for _, t := range tg.Tasks {
		if d, ok := n.Drivers[t.Driver]; !ok || !d.Detected || !d.Healthy {
			return fmt.Sprintf("missing driver %q", t.Driver)
		}
	}
	var constraints []*structs.Constraint
	constraints = append(constraints, job.Constraints...)
	constraints = append(constraints, tg.Constraints...)
	for _, t := range tg.Tasks {
		constraints = append(constraints, t.Constraints...)
	}
	for _, c := range constraints {
		if c.Operand == structs.ConstraintDistinctHosts {
			if c.RTarget == "false" {
				continue
			}
			pool := groupAllocs
			for _, jc := range job.Constraints {
				if jc == c {
					pool = jobAllocs
				}
			}
			for _, a := range pool {
				if a.NodeID == n.ID {
					return "distinct_hosts: node already runs an allocation of this job"
				}
			}
			continue
		}
		if !constraintMet(c, n) {
			return fmt.Sprintf("constraint %s %s %s not met", c.LTarget, c.Operand, c.RTarget)
		}
	}
	return ""
}

// datacenterMatch matches a node's datacenter against a job's list, where
// "*" globs any run of characters.
func datacenterMatch(dcs []string, dc string) bool {
	for _, want := range dcs {
		if globMatch(want, dc) {
			return true
		}
	}
	return false
}

// globMatch reports whether s matches pattern, where '*' matches any run
// of characters and everything else only itself (Nomad's datacenter
// wildcards). It runs for every node on every placement, so it compiles
// nothing: a job placed on 10,000 nodes used to build a regexp per node.
func globMatch(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return len(s) >= len(last) && strings.HasSuffix(s, last)
}

// resolveTarget interpolates ${node.unique.id}, ${node.unique.name},
// ${node.datacenter}, ${node.class}, ${meta.KEY} and ${attr.KEY}.
func resolveTarget(target string, n *structs.Node) (string, bool) {
	if !strings.HasPrefix(target, "${") || !strings.HasSuffix(target, "}") {
		return target, true
	}
	key := target[2 : len(target)-1]
	switch {
	case key == "node.unique.id":
		return n.ID, true
	case key == "node.unique.name":
		return n.Name, true
	case key == "node.datacenter":
		return n.Datacenter, true
	case key == "node.class":
		return n.NodeClass, true
	case key == "node.pool":
		return n.NodePool, true
	case strings.HasPrefix(key, "meta."):
		v, ok := n.Meta[strings.TrimPrefix(key, "meta.")]
		return v, ok
	case strings.HasPrefix(key, "attr."):
		v, ok := n.Attributes[strings.TrimPrefix(key, "attr.")]
		return v, ok
	}
	return "", false
}

func constraintMet(c *structs.Constraint, n *structs.Node) bool {
	l, lok := resolveTarget(c.LTarget, n)
	r, rok := resolveTarget(c.RTarget, n)
	switch c.Operand {
	case "", structs.ConstraintEqual, structs.ConstraintEqualAlt, structs.ConstraintIs:
		return lok && rok && l == r
	case structs.ConstraintNotEqual, structs.ConstraintNot:
		return !(lok && rok) || l != r
	case structs.ConstraintRegex:
		if !lok || !rok {
			return false
		}
		re, err := regexp.Compile(r)
		return err == nil && re.MatchString(l)
	case "is_set":
		return lok
	case "is_not_set":
		return !lok
	}
	return false
}

// newAlloc builds a pending allocation of group tg at index idx on node.
func newAlloc(job *structs.Job, tg *structs.TaskGroup, idx int, node *structs.Node, now int64) *structs.Allocation {
	a := &structs.Allocation{
		ID:            structs.GenerateUUID(),
		Namespace:     job.Namespace,
		EvalID:        structs.GenerateUUID(),
		Name:          fmt.Sprintf("%s.%s[%d]", job.ID, tg.Name, idx),
		NodeID:        node.ID,
		NodeName:      node.Name,
		JobID:         job.ID,
		Job:           job,
		TaskGroup:     tg.Name,
		TaskResources: map[string]*structs.Resources{},
		DesiredStatus: structs.AllocDesiredStatusRun,
		ClientStatus:  structs.AllocClientStatusPending,
		TaskStates:    map[string]*structs.TaskState{},
		CreateTime:    now,
		ModifyTime:    now,
	}
	total := &structs.Resources{}
	if tg.EphemeralDisk != nil {
		total.DiskMB = tg.EphemeralDisk.SizeMB
	}
	for _, t := range tg.Tasks {
		r := &structs.Resources{}
		if t.Resources != nil {
			*r = *t.Resources
		}
		a.TaskResources[t.Name] = r
		total.CPU += r.CPU
		total.MemoryMB += r.MemoryMB
		a.TaskStates[t.Name] = &structs.TaskState{State: structs.TaskStatePending, Events: []*structs.TaskEvent{}}
	}
	a.Resources = total
	return a
}
