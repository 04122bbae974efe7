package structs

import (
	"maps"
	"slices"
	"time"
)

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
	ReservedResources     *NodeReservedResources
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

// The range the node hands dynamic ports out of, Nomad's defaults.
const (
	DefaultMinDynamicPort = 20000
	DefaultMaxDynamicPort = 32000
)

// NodeResources is the node's total resources in the newer shape.
type NodeResources struct {
	Cpu      NodeCpuResources
	Memory   NodeMemoryResources
	Disk     NodeDiskResources
	Networks []*NetworkResource
	// Devices is nil: Tether runs no device plugins (Nomad's null too).
	Devices        []*NodeDeviceResource
	MinDynamicPort int
	MaxDynamicPort int
}

// NodeCpuResources is the node's CPU. ReservableCpuCores are the IDs of
// the cores tasks may reserve.
type NodeCpuResources struct {
	CpuShares          int64
	TotalCpuCores      uint16
	ReservableCpuCores []uint16
}

// NetworkResource is a network the node offers: its host interface.
type NetworkResource struct {
	Mode          string
	Device        string
	CIDR          string
	IP            string
	Hostname      string
	MBits         int
	ReservedPorts []Port
	DynamicPorts  []Port
}

// Port is a port of a network resource.
type Port struct {
	Label       string
	Value       int
	To          int
	HostNetwork string
}

// NodeDeviceResource is a group of devices of one vendor, type and name.
type NodeDeviceResource struct {
	Vendor     string
	Type       string
	Name       string
	Attributes map[string]string
}

// NodeReservedResources is what the node keeps back from tasks.
type NodeReservedResources struct {
	Cpu      NodeReservedCpuResources
	Memory   NodeReservedMemoryResources
	Disk     NodeReservedDiskResources
	Networks NodeReservedNetworkResources
}

// NodeReservedCpuResources is the CPU kept back, in MHz.
type NodeReservedCpuResources struct {
	CpuShares uint64
}

// NodeReservedMemoryResources is the memory kept back, in MB.
type NodeReservedMemoryResources struct {
	MemoryMB uint64
}

// NodeReservedDiskResources is the disk kept back, in MB.
type NodeReservedDiskResources struct {
	DiskMB uint64
}

// NodeReservedNetworkResources names the host ports kept back ("22,80-90").
type NodeReservedNetworkResources struct {
	ReservedHostPorts string
}

// Copy returns a deep copy; nil returns nil.
func (r *NodeResources) Copy() *NodeResources {
	if r == nil {
		return nil
	}
	c := *r
	c.Cpu.ReservableCpuCores = slices.Clone(r.Cpu.ReservableCpuCores)
	c.Networks = make([]*NetworkResource, 0, len(r.Networks))
	for _, n := range r.Networks {
		nc := *n
		nc.ReservedPorts = slices.Clone(n.ReservedPorts)
		nc.DynamicPorts = slices.Clone(n.DynamicPorts)
		c.Networks = append(c.Networks, &nc)
	}
	if r.Networks == nil {
		c.Networks = nil
	}
	if r.Devices != nil {
		c.Devices = make([]*NodeDeviceResource, 0, len(r.Devices))
		for _, d := range r.Devices {
			dc := *d
			dc.Attributes = copyStringMap(d.Attributes)
			c.Devices = append(c.Devices, &dc)
		}
	}
	return &c
}

// Equal reports whether r and o describe the same resources, nil equal
// only to nil.
func (r *NodeResources) Equal(o *NodeResources) bool {
	if r == nil || o == nil {
		return r == o
	}
	return r.Cpu.CpuShares == o.Cpu.CpuShares && r.Cpu.TotalCpuCores == o.Cpu.TotalCpuCores &&
		slices.Equal(r.Cpu.ReservableCpuCores, o.Cpu.ReservableCpuCores) &&
		r.Memory == o.Memory && r.Disk == o.Disk &&
		r.MinDynamicPort == o.MinDynamicPort && r.MaxDynamicPort == o.MaxDynamicPort &&
		slices.EqualFunc(r.Networks, o.Networks, func(a, b *NetworkResource) bool {
			return a.Mode == b.Mode && a.Device == b.Device && a.CIDR == b.CIDR && a.IP == b.IP &&
				a.Hostname == b.Hostname && a.MBits == b.MBits &&
				slices.Equal(a.ReservedPorts, b.ReservedPorts) && slices.Equal(a.DynamicPorts, b.DynamicPorts)
		}) &&
		slices.EqualFunc(r.Devices, o.Devices, func(a, b *NodeDeviceResource) bool {
			return a.Vendor == b.Vendor && a.Type == b.Type && a.Name == b.Name && maps.Equal(a.Attributes, b.Attributes)
		})
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
	c.NodeResources = n.NodeResources.Copy()
	if n.ReservedResources != nil {
		r := *n.ReservedResources
		c.ReservedResources = &r
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

// Stub returns the node's list entry; with resources (?resources=true)
// it carries the node's NodeResources and ReservedResources too.
func (n *Node) Stub(resources bool) *NodeListStub {
	s := &NodeListStub{
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
	if resources {
		s.NodeResources = n.NodeResources.Copy()
		if n.ReservedResources != nil {
			r := *n.ReservedResources
			s.ReservedResources = &r
		}
	}
	return s
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
	NodeResources         *NodeResources         `json:",omitempty"`
	ReservedResources     *NodeReservedResources `json:",omitempty"`
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
