package structs

import "testing"

// TestNodeResources_CopyEqual: a copy is equal and shares nothing; every
// field takes part in Equal.
func TestNodeResources_CopyEqual(t *testing.T) {
	base := func() *NodeResources {
		return &NodeResources{
			Cpu:            NodeCpuResources{CpuShares: 4000, TotalCpuCores: 2, ReservableCpuCores: []uint16{0, 1}},
			Memory:         NodeMemoryResources{MemoryMB: 1024},
			Disk:           NodeDiskResources{DiskMB: 2048},
			Networks:       []*NetworkResource{{Mode: "host", Device: "eth0", CIDR: "10.0.0.1/32", IP: "10.0.0.1", MBits: 1000}},
			Devices:        []*NodeDeviceResource{{Vendor: "v", Type: "gpu", Name: "n", Attributes: map[string]string{"a": "1"}}},
			MinDynamicPort: DefaultMinDynamicPort, MaxDynamicPort: DefaultMaxDynamicPort,
		}
	}
	r := base()
	c := r.Copy()
	if !r.Equal(c) {
		t.Fatalf("copy %+v differs from %+v", c, r)
	}
	c.Cpu.ReservableCpuCores[0] = 9
	c.Networks[0].IP = "x"
	c.Devices[0].Attributes["a"] = "2"
	if !r.Equal(base()) {
		t.Fatalf("changing the copy changed the original: %+v", r)
	}
	cases := []struct {
		name   string
		change func(*NodeResources)
	}{
		{"cpu", func(r *NodeResources) { r.Cpu.CpuShares++ }},
		{"cores", func(r *NodeResources) { r.Cpu.ReservableCpuCores = r.Cpu.ReservableCpuCores[:1] }},
		{"memory", func(r *NodeResources) { r.Memory.MemoryMB++ }},
		{"disk", func(r *NodeResources) { r.Disk.DiskMB++ }},
		{"network", func(r *NodeResources) { r.Networks[0].MBits = 10 }},
		{"no network", func(r *NodeResources) { r.Networks = nil }},
		{"device", func(r *NodeResources) { r.Devices[0].Attributes["a"] = "2" }},
		{"ports", func(r *NodeResources) { r.MaxDynamicPort = 40000 }},
	}
	for _, tc := range cases {
		o := base()
		tc.change(o)
		if base().Equal(o) || o.Equal(base()) {
			t.Errorf("%s: a change not seen by Equal", tc.name)
		}
	}
	var none *NodeResources
	if !none.Equal(nil) || none.Equal(base()) || base().Equal(nil) || none.Copy() != nil {
		t.Error("nil handling")
	}
}
