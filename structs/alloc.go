package structs

import "time"

// Allocation desired statuses.
const (
	AllocDesiredStatusRun   = "run"
	AllocDesiredStatusStop  = "stop"
	AllocDesiredStatusEvict = "evict"
)

// Allocation client statuses.
const (
	AllocClientStatusPending  = "pending"
	AllocClientStatusRunning  = "running"
	AllocClientStatusComplete = "complete"
	AllocClientStatusFailed   = "failed"
	AllocClientStatusLost     = "lost"
)

// Task states.
const (
	TaskStatePending = "pending"
	TaskStateRunning = "running"
	TaskStateDead    = "dead"
)

// Task event types (Nomad's names).
const (
	TaskReceived         = "Received"
	TaskSetup            = "Task Setup"
	TaskStarted          = "Started"
	TaskTerminated       = "Terminated"
	TaskDriverFailure    = "Driver Failure"
	TaskRestarting       = "Restarting"
	TaskNotRestarting    = "Not Restarting"
	TaskKilling          = "Killing"
	TaskKilled           = "Killed"
	TaskSiblingFailed    = "Sibling Task Failed"
	TaskFailedValidation = "Failed Validation"
)

// Allocation is one placement of a task group on a node.
type Allocation struct {
	ID                 string
	Namespace          string
	EvalID             string
	Name               string
	NodeID             string
	NodeName           string
	JobID              string
	Job                *Job
	TaskGroup          string
	Resources          *Resources
	TaskResources      map[string]*Resources
	DesiredStatus      string
	DesiredDescription string
	ClientStatus       string
	ClientDescription  string
	TaskStates         map[string]*TaskState
	FollowupEvalID     string
	DesiredTransition  DesiredTransition
	CreateIndex        uint64
	ModifyIndex        uint64
	AllocModifyIndex   uint64
	CreateTime         int64
	ModifyTime         int64
}

// Index returns the i of the allocation's name "job.group[i]".
func (a *Allocation) Index() int {
	n := a.Name
	l := len(n)
	if l < 3 || n[l-1] != ']' {
		return 0
	}
	i := l - 2
	for i >= 0 && n[i] >= '0' && n[i] <= '9' {
		i--
	}
	if i < 0 || n[i] != '[' {
		return 0
	}
	v := 0
	for _, c := range n[i+1 : l-1] {
		v = v*10 + int(c-'0')
	}
	return v
}

// TerminalStatus reports whether the allocation is done on its node:
// desired stop/evict, or its client status complete, failed or lost.
func (a *Allocation) TerminalStatus() bool {
	switch a.DesiredStatus {
	case AllocDesiredStatusStop, AllocDesiredStatusEvict:
		return true
	}
	return a.ClientTerminal()
}

// ClientTerminal reports whether the node reported the allocation finished.
func (a *Allocation) ClientTerminal() bool {
	switch a.ClientStatus {
	case AllocClientStatusComplete, AllocClientStatusFailed, AllocClientStatusLost:
		return true
	}
	return false
}

// Allocated returns the resources the allocation holds in Nomad's
// AllocatedResources shape: per task its CPU and memory, shared its disk.
func (a *Allocation) Allocated() *AllocatedResources {
	out := &AllocatedResources{Tasks: make(map[string]*AllocatedTaskResources, len(a.TaskResources))}
	for name, r := range a.TaskResources {
		if r == nil {
			continue
		}
		out.Tasks[name] = &AllocatedTaskResources{
			Cpu:    AllocatedCpuResources{CpuShares: int64(r.CPU)},
			Memory: AllocatedMemoryResources{MemoryMB: int64(r.MemoryMB)},
		}
	}
	if a.Resources != nil {
		out.Shared.DiskMB = int64(a.Resources.DiskMB)
	}
	return out
}

// AllocatedResources is what an allocation holds on its node.
type AllocatedResources struct {
	Tasks  map[string]*AllocatedTaskResources
	Shared AllocatedSharedResources
}

// AllocatedTaskResources is what one task holds.
type AllocatedTaskResources struct {
	Cpu      AllocatedCpuResources
	Memory   AllocatedMemoryResources
	Networks []*NetworkResource
	Devices  []any
}

// AllocatedSharedResources is what the allocation's tasks share.
type AllocatedSharedResources struct {
	DiskMB   int64
	Networks []*NetworkResource
	Ports    []any
}

// AllocatedCpuResources is a task's CPU in MHz.
type AllocatedCpuResources struct {
	CpuShares     int64
	ReservedCores []uint16
}

// AllocatedMemoryResources is a task's memory in MB.
type AllocatedMemoryResources struct {
	MemoryMB    int64
	MemoryMaxMB int64
}

// Stub returns the allocation's list entry.
func (a *Allocation) Stub() *AllocListStub {
	s := &AllocListStub{
		ID: a.ID, EvalID: a.EvalID, Name: a.Name, Namespace: a.Namespace, NodeID: a.NodeID,
		NodeName: a.NodeName, JobID: a.JobID, TaskGroup: a.TaskGroup,
		DesiredStatus: a.DesiredStatus, DesiredDescription: a.DesiredDescription,
		ClientStatus: a.ClientStatus, ClientDescription: a.ClientDescription,
		TaskStates: a.TaskStates, FollowupEvalID: a.FollowupEvalID,
		CreateIndex: a.CreateIndex, ModifyIndex: a.ModifyIndex, CreateTime: a.CreateTime, ModifyTime: a.ModifyTime,
	}
	if a.Job != nil {
		s.JobType = a.Job.Type
		s.JobVersion = a.Job.Version
	}
	return s
}

// AllocListStub is an allocation's list entry.
type AllocListStub struct {
	ID                 string
	EvalID             string
	Name               string
	Namespace          string
	NodeID             string
	NodeName           string
	JobID              string
	JobType            string
	JobVersion         uint64
	TaskGroup          string
	DesiredStatus      string
	DesiredDescription string
	ClientStatus       string
	ClientDescription  string
	TaskStates         map[string]*TaskState
	FollowupEvalID     string
	AllocatedResources *AllocatedResources `json:",omitempty"`
	CreateIndex        uint64
	ModifyIndex        uint64
	CreateTime         int64
	ModifyTime         int64
}

// DesiredTransition is what the servers want done to an allocation
// besides its desired status, in Nomad's shape: a stopped allocation is
// marked Reschedule (its job places a replacement), and NoShutdownDelay
// when the caller asked to skip shutdown delays (Tether's tasks keep
// none: there are no service registrations to drain).
type DesiredTransition struct {
	Migrate         *bool `json:",omitempty"`
	Reschedule      *bool `json:",omitempty"`
	ForceReschedule *bool `json:",omitempty"`
	NoShutdownDelay *bool `json:",omitempty"`
}

// TaskState is a task's state on its node.
type TaskState struct {
	State       string
	Failed      bool
	Restarts    uint64
	LastRestart time.Time
	StartedAt   time.Time
	FinishedAt  time.Time
	Events      []*TaskEvent
}

// TaskEvent is one event in a task's life.
type TaskEvent struct {
	Type           string
	Time           int64
	Message        string
	DisplayMessage string
	Details        map[string]string
	ExitCode       int
	Signal         int
	DriverError    string
	KillTimeout    time.Duration
	KillError      string
	RestartReason  string
	SetupError     string
	FailsTask      bool
}

// NewTaskEvent returns an event of type typ stamped now, with its display
// message set.
func NewTaskEvent(typ, msg string) *TaskEvent {
	return &TaskEvent{Type: typ, Time: time.Now().UnixNano(), Message: msg, DisplayMessage: msg, Details: map[string]string{}}
}
