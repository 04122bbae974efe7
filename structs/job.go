package structs

import "time"

// Job types.
const (
	JobTypeService = "service"
	JobTypeBatch   = "batch"
)

// Job statuses.
const (
	JobStatusPending = "pending"
	JobStatusRunning = "running"
	JobStatusDead    = "dead"
)

// DefaultNamespace is the namespace of jobs that name none.
const DefaultNamespace = "default"

// Job is the subset of Nomad's job that Tether runs, in Nomad's JSON shape.
type Job struct {
	Region            string
	Namespace         string
	ID                string
	Name              string
	Type              string
	Priority          int
	AllAtOnce         bool
	Datacenters       []string
	NodePool          string
	Constraints       []*Constraint
	TaskGroups        []*TaskGroup
	Meta              map[string]string
	Stop              bool
	Status            string
	StatusDescription string
	Stable            bool
	Version           uint64
	SubmitTime        int64
	CreateIndex       uint64
	ModifyIndex       uint64
	JobModifyIndex    uint64
}

// LookupTaskGroup returns the named group, or nil.
func (j *Job) LookupTaskGroup(name string) *TaskGroup {
	for _, tg := range j.TaskGroups {
		if tg.Name == name {
			return tg
		}
	}
	return nil
}

// Stub returns the job's list entry.
func (j *Job) Stub() *JobListStub {
	return &JobListStub{
		ID: j.ID, ParentID: "", Name: j.Name, Namespace: j.Namespace, Datacenters: j.Datacenters,
		NodePool: j.NodePool, Type: j.Type, Priority: j.Priority, Stop: j.Stop, Status: j.Status,
		StatusDescription: j.StatusDescription, Version: j.Version, SubmitTime: j.SubmitTime,
		CreateIndex: j.CreateIndex, ModifyIndex: j.ModifyIndex, JobModifyIndex: j.JobModifyIndex,
	}
}

// JobListStub is a job's entry in /v1/jobs.
type JobListStub struct {
	ID                string
	ParentID          string
	Name              string
	Namespace         string
	Datacenters       []string
	NodePool          string
	Type              string
	Priority          int
	Periodic          bool
	ParameterizedJob  bool
	Stop              bool
	Status            string
	StatusDescription string
	Version           uint64
	SubmitTime        int64
	// JobSummary is the job's allocation counts (the nomad CLI reads it
	// from the stub); the list endpoint fills it.
	JobSummary     *JobSummary
	CreateIndex    uint64
	ModifyIndex    uint64
	JobModifyIndex uint64
}

// Constraint restricts placement: LTarget Operand RTarget.
type Constraint struct {
	LTarget string
	RTarget string
	Operand string
}

// Constraint operands Tether evaluates.
const (
	ConstraintEqual         = "="
	ConstraintEqualAlt      = "=="
	ConstraintIs            = "is"
	ConstraintNotEqual      = "!="
	ConstraintNot           = "not"
	ConstraintRegex         = "regexp"
	ConstraintDistinctHosts = "distinct_hosts"
)

// TaskGroup is a set of tasks placed together as one allocation.
type TaskGroup struct {
	Name          string
	Count         int
	Constraints   []*Constraint
	RestartPolicy *RestartPolicy
	EphemeralDisk *EphemeralDisk
	Tasks         []*Task
	Meta          map[string]string
	// Scaling is the group's scaling policy (scaling.go), nil for none.
	Scaling *ScalingPolicy `codec:",omitempty"`
}

// RestartPolicy says how often a failed task is restarted in place.
type RestartPolicy struct {
	Attempts int
	Interval time.Duration
	Delay    time.Duration
	Mode     string // "fail" or "delay"
}

// EphemeralDisk is the allocation dir's size.
type EphemeralDisk struct {
	Sticky  bool
	Migrate bool
	SizeMB  int
}

// Task is one process of a task group.
type Task struct {
	Name        string
	Driver      string
	User        string
	Config      map[string]any
	Env         map[string]string
	Constraints []*Constraint
	Resources   *Resources
	Meta        map[string]string
	KillTimeout time.Duration
	KillSignal  string
	LogConfig   *LogConfig
	Leader      bool
}

// LogConfig bounds a task's rotated logs.
type LogConfig struct {
	MaxFiles      int
	MaxFileSizeMB int
	Disabled      bool
}

// JobRegisterOptions are the parts of a registration beside the job
// (Nomad's JobRegisterRequest fields of the same names).
type JobRegisterOptions struct {
	// EvalPriority is the priority of the registration's evaluation; 0
	// takes the job's.
	EvalPriority int `codec:",omitempty"`
	// PreserveCounts keeps the count of every group the job had already.
	PreserveCounts bool `codec:",omitempty"`
	// PreserveResources keeps the resources of every task it had already.
	PreserveResources bool `codec:",omitempty"`
	// EnforceIndex registers only if the job's JobModifyIndex is
	// JobModifyIndex now (0: only if there is no such job).
	EnforceIndex   bool   `codec:",omitempty"`
	JobModifyIndex uint64 `codec:",omitempty"`
	// EvalTrigger is the TriggeredBy of the registration's evaluation;
	// "" is "job-register" (a scaling says "job-scaling"). Not read from
	// HTTP bodies.
	EvalTrigger string `codec:",omitempty"`
}

// RegisterEnforceIndexErrPrefix starts the error of a registration whose
// EnforceIndex does not hold (Nomad's text, which its CLI matches).
const RegisterEnforceIndexErrPrefix = "Enforcing job modify index"

// JobRegisterResponse is the answer to a job registration.
type JobRegisterResponse struct {
	EvalID          string
	EvalCreateIndex uint64
	JobModifyIndex  uint64
	Warnings        string
	Index           uint64
}

// JobDeregisterResponse is the answer to a job stop.
type JobDeregisterResponse struct {
	EvalID          string
	EvalCreateIndex uint64
	JobModifyIndex  uint64
	Index           uint64
}

// JobSummary counts a job's allocations by client status, per group.
type JobSummary struct {
	JobID       string
	Namespace   string
	Summary     map[string]TaskGroupSummary
	Children    *JobChildrenSummary
	CreateIndex uint64
	ModifyIndex uint64
}

// TaskGroupSummary counts one group's allocations.
type TaskGroupSummary struct {
	Queued   int
	Complete int
	Failed   int
	Running  int
	Starting int
	Lost     int
	Unknown  int
}

// JobChildrenSummary counts child jobs (Tether runs no periodic or
// parameterized jobs, so it is all zeros).
type JobChildrenSummary struct {
	Pending int64
	Running int64
	Dead    int64
}
