package client

import (
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
)

func TestFingerprintHost(t *testing.T) {
	dir := t.TempDir()
	fp, err := FingerprintHost(dir, 0, "1.6.9")
	if err != nil {
		t.Fatalf("FingerprintHost: %v", err)
	}
	if fp == nil || fp.Attributes == nil || fp.Resources == nil || fp.NodeResources == nil {
		t.Fatalf("incomplete fingerprint: %+v", fp)
	}

	a := fp.Attributes
	for _, k := range []string{
		"nomad.version", "kernel.name", "kernel.version", "os.name", "os.version",
		"arch", "cpu.arch", "cpu.numcores", "cpu.frequency", "cpu.totalcompute",
		"cpu.modelname", "memory.totalbytes", "unique.hostname",
		"unique.storage.volume", "unique.storage.bytestotal", "unique.storage.bytesfree",
	} {
		if a[k] == "" {
			if k == "cpu.modelname" || k == "os.version" {
				// Not every platform reports these.
				t.Logf("attribute %q is empty", k)
				continue
			}
			t.Errorf("attribute %q is empty", k)
		}
	}
	if _, ok := a["driver.raw_exec"]; ok {
		t.Error("driver attributes belong to the agent")
	}

	for _, tc := range []struct{ key, want string }{
		{"nomad.version", "1.6.9"},
		{"kernel.name", runtime.GOOS},
		{"arch", runtime.GOARCH},
		{"cpu.arch", runtime.GOARCH},
		{"cpu.totalcompute", strconv.Itoa(fp.Resources.CPU)},
		{"cpu.numcores", strconv.Itoa(int(fp.NodeResources.Cpu.TotalCpuCores))},
	} {
		if a[tc.key] != tc.want {
			t.Errorf("%s = %q, want %q", tc.key, a[tc.key], tc.want)
		}
	}
	for _, k := range []string{"cpu.numcores", "cpu.frequency", "cpu.totalcompute", "memory.totalbytes", "unique.storage.bytestotal", "unique.storage.bytesfree"} {
		if n, err := strconv.ParseUint(a[k], 10, 64); err != nil || n == 0 {
			t.Errorf("%s = %q, want a positive integer", k, a[k])
		}
	}

	r := fp.Resources
	if r.CPU <= 0 || r.MemoryMB <= 0 || r.DiskMB <= 0 {
		t.Errorf("Resources = %+v, want all positive", *r)
	}
	nr := fp.NodeResources
	if nr.Cpu.CpuShares != int64(r.CPU) || nr.Cpu.TotalCpuCores == 0 ||
		nr.Memory.MemoryMB != int64(r.MemoryMB) || nr.Disk.DiskMB != int64(r.DiskMB) {
		t.Errorf("NodeResources %+v disagrees with Resources %+v", *nr, *r)
	}
	// The rest of Nomad's block: every core reservable, the host network,
	// the dynamic port range.
	if len(nr.Cpu.ReservableCpuCores) != int(nr.Cpu.TotalCpuCores) {
		t.Errorf("ReservableCpuCores %v for %d cores", nr.Cpu.ReservableCpuCores, nr.Cpu.TotalCpuCores)
	}
	if nr.MinDynamicPort != 20000 || nr.MaxDynamicPort != 32000 {
		t.Errorf("dynamic ports %d-%d, want 20000-32000", nr.MinDynamicPort, nr.MaxDynamicPort)
	}
	if len(nr.Networks) != 1 || nr.Networks[0].Mode != "host" || nr.Networks[0].IP == "" ||
		nr.Networks[0].Device == "" || nr.Networks[0].MBits <= 0 || a["unique.network.ip-address"] != nr.Networks[0].IP {
		t.Errorf("Networks = %+v, want the host interface", nr.Networks)
	}
	memBytes, _ := strconv.ParseUint(a["memory.totalbytes"], 10, 64)
	if uint64(r.MemoryMB) != memBytes/bytesPerMB {
		t.Errorf("MemoryMB = %d, want %d", r.MemoryMB, memBytes/bytesPerMB)
	}
	freeBytes, _ := strconv.ParseUint(a["unique.storage.bytesfree"], 10, 64)
	if uint64(r.DiskMB) != freeBytes/bytesPerMB {
		t.Errorf("DiskMB = %d, want %d", r.DiskMB, freeBytes/bytesPerMB)
	}
}

func TestFingerprintCPUTotalCompute(t *testing.T) {
	dir := t.TempDir()
	detected, err := FingerprintHost(dir, 0, "v")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		override int
		want     int
	}{
		{"detected", 0, detected.Resources.CPU},
		{"negative means detect", -1, detected.Resources.CPU},
		{"override", 4321, 4321},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fp, err := FingerprintHost(dir, tc.override, "v")
			if err != nil {
				t.Fatal(err)
			}
			if fp.Resources.CPU != tc.want || fp.NodeResources.Cpu.CpuShares != int64(tc.want) ||
				fp.Attributes["cpu.totalcompute"] != strconv.Itoa(tc.want) {
				t.Fatalf("CPU = %d / %d / %q, want %d", fp.Resources.CPU,
					fp.NodeResources.Cpu.CpuShares, fp.Attributes["cpu.totalcompute"], tc.want)
			}
		})
	}
	// The collector agrees with the fingerprint on the detected compute.
	c := NewHostStatsCollector(nil, dir, 0)
	if got := int(c.CPUTotalTicks() + 0.5); got != detected.Resources.CPU {
		t.Errorf("collector CPUTotalTicks %d != fingerprint CPU %d", got, detected.Resources.CPU)
	}
}

func TestFingerprintMissingAllocDir(t *testing.T) {
	// An alloc dir that does not exist yet is measured on its nearest
	// existing parent.
	dir := filepath.Join(t.TempDir(), "not", "yet")
	fp, err := FingerprintHost(dir, 0, "v")
	if err != nil {
		t.Fatal(err)
	}
	if fp.Resources.DiskMB <= 0 || fp.Attributes["unique.storage.volume"] == "" {
		t.Fatalf("disk not fingerprinted: DiskMB=%d volume=%q", fp.Resources.DiskMB, fp.Attributes["unique.storage.volume"])
	}
}

func TestFingerprintPathWithin(t *testing.T) {
	tests := []struct {
		p, mp string
		want  bool
	}{
		{"/var/lib/nomad", "/", true},
		{"/var/lib/nomad", "/var", true},
		{"/var/lib/nomad", "/var/", true},
		{"/var/lib/nomad", "/var/lib/nomad", true},
		{"/var/lib/nomad", "/var/li", false},
		{"/var/lib/nomad", "/var/lib/nomad/alloc", false},
		{"/var", "", false},
	}
	for _, tc := range tests {
		if got := pathWithin(tc.p, tc.mp); got != tc.want {
			t.Errorf("pathWithin(%q, %q) = %v, want %v", tc.p, tc.mp, got, tc.want)
		}
	}
}
