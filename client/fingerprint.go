package client

import (
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/shirou/gopsutil/v4/disk"
	"github.com/shirou/gopsutil/v4/host"
	"github.com/shirou/gopsutil/v4/mem"

	"tether/structs"
)

const bytesPerMB = 1024 * 1024

// Fingerprint describes the node for registration: Nomad-named attributes
// and the node's total resources in both the legacy and the newer shape.
type Fingerprint struct {
	// Attributes are the node attributes, with Nomad's names (for example
	// "cpu.numcores", "memory.totalbytes", "unique.hostname").
	Attributes map[string]string
	// Resources is the legacy resource block: CPU is the total compute in
	// MHz, MemoryMB the total memory and DiskMB the free space of the alloc
	// dir's filesystem.
	Resources *structs.Resources
	// NodeResources is the same totals in the newer shape.
	NodeResources *structs.NodeResources
}

// FingerprintHost measures the host for node registration. allocDir selects
// the filesystem whose free space is the node's disk; if it does not exist
// yet its nearest existing parent is measured (an empty allocDir means the
// working directory). cpuTotalCompute, when positive, overrides the detected
// total CPU compute in MHz. version is reported as "nomad.version".
//
// FingerprintHost is best effort: the returned Fingerprint is never nil and
// its maps and resource blocks are always allocated. The error is non-nil
// when the host's memory or the alloc dir's filesystem could not be
// measured; the fields concerned are then zero and the others still valid.
// Lesser failures (hostname, OS version) only leave attributes out.
func FingerprintHost(allocDir string, cpuTotalCompute int, version string) (*Fingerprint, error) {
	var errs []error
	attrs := map[string]string{
		"nomad.version": version,
		"kernel.name":   runtime.GOOS,
		"arch":          runtime.GOARCH,
		"cpu.arch":      runtime.GOARCH,
	}
	setAttr := func(k, v string) {
		if v != "" {
			attrs[k] = v
		}
	}

	// Kernel, OS and hostname.
	if kv, err := host.KernelVersion(); err == nil {
		setAttr("kernel.version", kv)
	}
	if platform, _, pver, err := host.PlatformInformation(); err == nil {
		setAttr("os.name", platform)
		setAttr("os.version", pver)
	}
	if hn, err := os.Hostname(); err == nil {
		setAttr("unique.hostname", hn)
	}

	// CPU.
	cf := detectCPU()
	totalCompute := int(math.Round(cf.totalMHz()))
	if cpuTotalCompute > 0 {
		totalCompute = cpuTotalCompute
	}
	attrs["cpu.numcores"] = strconv.Itoa(cf.cores)
	attrs["cpu.frequency"] = strconv.Itoa(int(math.Round(cf.mhz)))
	attrs["cpu.totalcompute"] = strconv.Itoa(totalCompute)
	setAttr("cpu.modelname", cf.model)

	// Memory.
	var memBytes uint64
	if vm, err := mem.VirtualMemory(); err != nil {
		errs = append(errs, fmt.Errorf("memory: %w", err))
	} else {
		memBytes = vm.Total
		attrs["memory.totalbytes"] = strconv.FormatUint(vm.Total, 10)
	}

	// Storage of the alloc dir.
	var diskFree uint64
	dir, err := existingDir(allocDir)
	if err == nil {
		var u *disk.UsageStat
		if u, err = disk.Usage(dir); err == nil {
			diskFree = u.Free
			attrs["unique.storage.bytestotal"] = strconv.FormatUint(u.Total, 10)
			attrs["unique.storage.bytesfree"] = strconv.FormatUint(u.Free, 10)
			setAttr("unique.storage.volume", mountDevice(dir))
		}
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("alloc dir %q storage: %w", allocDir, err))
	}

	cores := cf.cores
	if cores > math.MaxUint16 {
		cores = math.MaxUint16
	}
	reservable := make([]uint16, cores)
	for i := range reservable {
		reservable[i] = uint16(i)
	}
	var networks []*structs.NetworkResource
	if n := hostNetwork(); n != nil {
		networks = []*structs.NetworkResource{n}
		attrs["unique.network.ip-address"] = n.IP
	}
	fp := &Fingerprint{
		Attributes: attrs,
		Resources: &structs.Resources{
			CPU:      totalCompute,
			MemoryMB: int(memBytes / bytesPerMB),
			DiskMB:   int(diskFree / bytesPerMB),
		},
		NodeResources: &structs.NodeResources{
			Cpu: structs.NodeCpuResources{
				CpuShares:          int64(totalCompute),
				TotalCpuCores:      uint16(cores),
				ReservableCpuCores: reservable,
			},
			Memory:         structs.NodeMemoryResources{MemoryMB: int64(memBytes / bytesPerMB)},
			Disk:           structs.NodeDiskResources{DiskMB: int64(diskFree / bytesPerMB)},
			Networks:       networks,
			MinDynamicPort: structs.DefaultMinDynamicPort,
			MaxDynamicPort: structs.DefaultMaxDynamicPort,
		},
	}
	return fp, errors.Join(errs...)
}

// defaultNetworkSpeed is the speed, in Mbit/s, of an interface whose
// speed the host does not say (Nomad's default too).
const defaultNetworkSpeed = 1000

// hostNetwork is the node's host network: the interface the default route
// leaves by (found by connecting a UDP socket, which sends nothing), else
// the loopback interface, as a Nomad dev agent has it; nil if neither has
// an IPv4 address.
func hostNetwork() *structs.NetworkResource {
	var want net.IP
	if c, err := net.Dial("udp4", "192.0.2.1:9"); err == nil {
		if ua, ok := c.LocalAddr().(*net.UDPAddr); ok {
			want = ua.IP
		}
		c.Close()
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil
	}
	var loopback *structs.NetworkResource
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok || ipn.IP.To4() == nil {
				continue
			}
			n := &structs.NetworkResource{Mode: "host", Device: ifc.Name, CIDR: ipn.IP.String() + "/32",
				IP: ipn.IP.String(), MBits: linkSpeed(ifc.Name)}
			if want != nil && ipn.IP.Equal(want) {
				return n
			}
			if ifc.Flags&net.FlagLoopback != 0 && loopback == nil {
				loopback = n
			}
		}
	}
	return loopback
}

// linkSpeed is the interface's speed in Mbit/s from sysfs on Linux, else
// defaultNetworkSpeed.
func linkSpeed(dev string) int {
	if runtime.GOOS == "linux" && !strings.ContainsAny(dev, "/.") {
		if b, err := os.ReadFile("/sys/class/net/" + dev + "/speed"); err == nil {
			if v, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && v > 0 {
				return v
			}
		}
	}
	return defaultNetworkSpeed
}

// existingDir returns the absolute, symlink-resolved path of dir, or of its
// nearest existing ancestor when dir does not exist yet.
func existingDir(dir string) (string, error) {
	if dir == "" {
		dir = "."
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for p := abs; ; {
		if _, err := os.Stat(p); err == nil {
			if r, err := filepath.EvalSymlinks(p); err == nil {
				return r, nil
			}
			return p, nil
		}
		parent := filepath.Dir(p)
		if parent == p {
			return "", fmt.Errorf("no existing directory on the path to %q", abs)
		}
		p = parent
	}
}

// mountDevice returns the device of the mount holding the absolute path p
// (the longest mountpoint that is a prefix of p), or "" if unknown.
func mountDevice(p string) string {
	parts, err := disk.Partitions(true)
	if err != nil {
		return ""
	}
	var best disk.PartitionStat
	for _, part := range parts {
		mp := part.Mountpoint
		if !pathWithin(p, mp) {
			continue
		}
		// Later entries shadow earlier ones at the same mountpoint.
		if len(mp) >= len(best.Mountpoint) {
			best = part
		}
	}
	return best.Device
}

// pathWithin reports whether p is mountpoint mp or lies below it.
func pathWithin(p, mp string) bool {
	if mp == "" {
		return false
	}
	if p == mp || mp == "/" || mp == string(filepath.Separator) {
		return true
	}
	return strings.HasPrefix(p, strings.TrimSuffix(mp, string(filepath.Separator))+string(filepath.Separator))
}
