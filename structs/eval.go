package structs

// Evaluation statuses.
const (
	EvalStatusComplete = "complete"
	EvalStatusBlocked  = "blocked"
	EvalStatusCanceled = "canceled"
)

// EvalTriggerQueuedAllocs is the trigger of a blocked evaluation: the
// allocations a pass could not place, waiting for a node that fits.
const EvalTriggerQueuedAllocs = "queued-allocs"

// Evaluation records one scheduling pass over a job, in Nomad's shape, so
// `nomad job run` can monitor a registration.
type Evaluation struct {
	ID                string
	Namespace         string
	Priority          int
	Type              string
	TriggeredBy       string
	JobID             string
	JobModifyIndex    uint64
	NodeID            string
	DeploymentID      string
	Status            string
	StatusDescription string
	FailedTGAllocs    map[string]*AllocMetric
	QueuedAllocations map[string]int
	BlockedEval       string
	NextEval          string
	PreviousEval      string
	CreateIndex       uint64
	ModifyIndex       uint64
	CreateTime        int64
	ModifyTime        int64
}

// AllocMetric says why allocations of a group could not be placed.
type AllocMetric struct {
	NodesEvaluated     int
	NodesFiltered      int
	NodesInPool        int
	NodesAvailable     map[string]int
	ClassFiltered      map[string]int
	ConstraintFiltered map[string]int
	NodesExhausted     int
	ClassExhausted     map[string]int
	DimensionExhausted map[string]int
	QuotaExhausted     []string
	CoalescedFailures  int
}
