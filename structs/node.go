package structs

import "time"

// Node statuses.
const (
	NodeStatusInit  = "initializing"
	NodeStatusReady = "ready"
	NodeStatusDown  = "down"
)

// Scheduling eligibility values.
const (
	NodeSchedulingEligible   = "eligible"
	NodeSchedulingIneligible = "ineligible"
)

// Node is a node agent as the servers know it, in Nomad's JSON shape.
// SecretID authenticates the node to the servers; it is never sent to an
// HTTP caller (the HTTP layer blanks it).
type Node struct {
	ID                    string
	SecretID              string
	Datacenter            string
	Name                  string
	HTTPAddr              string
	TLSEnabled            bool
	Attributes            map[string]string
	Resources             *Resources
	Reserved              *Resources
	NodeResources         *NodeResources
	Links                 map[string]string
	Meta                  map[string]string
	NodeClass             string
	NodePool              string
	CgroupParent          string
	Drain                 bool
	SchedulingEligibility string
	Status                string
	StatusDescription     string
	StatusUpdatedAt       int64
	Events                []*NodeEvent
	Drivers               map[string]*DriverInfo
	HostVolumes           map[string]any
	HostNetworks          map[string]any
	CSIControllerPlugins  map[string]any
	CSINodePlugins        map[string]any
	CreateIndex           uint64
	ModifyIndex           uint64
}

// Resources is the legacy resource block the nomad CLI still dereferences.
// CPU in MHz, memory and disk in MB.
type Resources struct {
	CPU      int
	MemoryMB int
	DiskMB   int
}

// NodeResources is the node's total resources in the newer shape.
type NodeResources struct {
	Cpu    NodeCpuResources
	Memory NodeMemoryResources
	Disk   NodeDiskResources
}

// NodeCpuResources is the node's CPU.
type NodeCpuResources struct {
	CpuShares     int64
	TotalCpuCores uint16
}

// NodeMemoryResources is the node's memory in MB.
type NodeMemoryResources struct {
	MemoryMB int64
}

// NodeDiskResources is the node's disk in MB.
type NodeDiskResources struct {
	DiskMB int64
}

// NodeEvent is one entry of a node's event history.
type NodeEvent struct {
	Message     string
	Subsystem   string
	Details     map[string]string
	Timestamp   time.Time
	CreateIndex uint64
}

// DriverInfo is one task driver's state on a node.
type DriverInfo struct {
	Attributes        map[string]string
	Detected          bool
	Healthy           bool
	HealthDescription string
	UpdateTime        time.Time
}

// Copy returns a deep copy of the node's maps and pointers that callers
// mutate (Meta, Attributes, Resources); nil returns nil.
func (n *Node) Copy() *Node {
	if n == nil {
		return nil
	}
	c := *n
	c.Meta = copyStringMap(n.Meta)
	c.Attributes = copyStringMap(n.Attributes)
	c.Links = copyStringMap(n.Links)
	if n.Resources != nil {
		r := *n.Resources
		c.Resources = &r
	}
	if n.Reserved != nil {
		r := *n.Reserved
		c.Reserved = &r
	}
	if n.NodeResources != nil {
		r := *n.NodeResources
		c.NodeResources = &r
	}
	if n.Drivers != nil {
		c.Drivers = make(map[string]*DriverInfo, len(n.Drivers))
		for k, v := range n.Drivers {
			d := *v
			d.Attributes = copyStringMap(v.Attributes)
			c.Drivers[k] = &d
		}
	}
	c.Events = append([]*NodeEvent(nil), n.Events...)
	return &c
}

// Sanitize returns a copy of the node fit for an HTTP caller: no secret.
func (n *Node) Sanitize() *Node {
	c := n.Copy()
	if c != nil {
		c.SecretID = ""
	}
	return c
}

// Stub returns the node's list entry.
func (n *Node) Stub() *NodeListStub {
	return &NodeListStub{
		Address:               addrHost(n.HTTPAddr),
		ID:                    n.ID,
		Datacenter:            n.Datacenter,
		Name:                  n.Name,
		NodeClass:             n.NodeClass,
		NodePool:              n.NodePool,
		Version:               n.Attributes["nomad.version"],
		Drain:                 n.Drain,
		SchedulingEligibility: n.SchedulingEligibility,
		Status:                n.Status,
		StatusDescription:     n.StatusDescription,
		Drivers:               n.Drivers,
		CreateIndex:           n.CreateIndex,
		ModifyIndex:           n.ModifyIndex,
	}
}

// NodeListStub is a node's entry in /v1/nodes.
type NodeListStub struct {
	Address               string
	ID                    string
	Datacenter            string
	Name                  string
	NodeClass             string
	NodePool              string
	Version               string
	Drain                 bool
	SchedulingEligibility string
	Status                string
	StatusDescription     string
	Drivers               map[string]*DriverInfo
	CreateIndex           uint64
	ModifyIndex           uint64
}

func addrHost(hostport string) string {
	for i := len(hostport) - 1; i >= 0; i-- {
		if hostport[i] == ':' {
			h := hostport[:i]
			if len(h) > 1 && h[0] == '[' && h[len(h)-1] == ']' {
				h = h[1 : len(h)-1]
			}
			return h
		}
	}
	return hostport
}

func copyStringMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}
