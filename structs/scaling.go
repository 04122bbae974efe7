package structs

import "maps"

// Scaling, as Nomad v1.6.5 has it: a group may carry a scaling policy
// (the bounds of its count), and every request to scale a group, one
// that changes the count or only reports something, is kept as a scaling
// event of the job.

// Scaling policy types and the keys of a scaling target.
const (
	ScalingPolicyTypeHorizontal = "horizontal"

	ScalingTargetNamespace = "Namespace"
	ScalingTargetJob       = "Job"
	ScalingTargetGroup     = "Group"
)

// MaxScalingEventsPerGroup is how many scaling events a job keeps per
// group, newest first (Nomad's JobTrackedScalingEvents).
const MaxScalingEventsPerGroup = 20

// Bounds on a scaling request's free-form parts.
const (
	MaxScalingMessageLength = 4096
	MaxScalingMetaKeys      = 64
)

// ScalingPolicy is a group's Scaling block: Min and Max bound its count
// (on registration and on scaling); Policy is kept for autoscalers.
type ScalingPolicy struct {
	ID          string
	Type        string
	Target      map[string]string
	Policy      map[string]any
	Min         int64
	Max         int64
	Enabled     bool
	CreateIndex uint64
	ModifyIndex uint64
}

// Copy returns a deep enough copy (the maps are copied one level deep).
func (p *ScalingPolicy) Copy() *ScalingPolicy {
	if p == nil {
		return nil
	}
	c := *p
	c.Target = maps.Clone(p.Target)
	c.Policy = maps.Clone(p.Policy)
	return &c
}

// JobScaleRequest is a request to scale one group of a job (the HTTP
// body is api.ScalingRequest; the job and namespace come from the path
// and the query).
type JobScaleRequest struct {
	Namespace string
	JobID     string
	Group     string
	// Count is the new count; nil records an event only.
	Count   *int64 `codec:",omitempty"`
	Message string `codec:",omitempty"`
	Error   bool   `codec:",omitempty"`
	Meta    map[string]any
	// PolicyOverride is accepted as Nomad's (Tether has no Sentinel
	// policies to override).
	PolicyOverride bool `codec:",omitempty"`
	// JobModifyIndex, when not 0, scales only if it is the job's now.
	JobModifyIndex uint64 `codec:",omitempty"`
}

// ScalingEvent records one scaling request in Nomad's shape
// (api.ScalingEvent). Count is nil for an event that changed nothing;
// EvalID is set when the request created an evaluation.
type ScalingEvent struct {
	Count         *int64
	PreviousCount int64
	Error         bool
	Message       string
	Meta          map[string]any
	EvalID        *string
	Time          int64
	CreateIndex   uint64
}

// JobScalingEvents are the scaling events of one job: per group, newest
// first, at most MaxScalingEventsPerGroup.
type JobScalingEvents struct {
	Namespace     string
	JobID         string
	ScalingEvents map[string][]*ScalingEvent
	ModifyIndex   uint64
}
