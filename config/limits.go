package config

import (
	"errors"
	"fmt"
	"net"
	"path"
	"strconv"
	"strings"

	"github.com/bmatcuk/doublestar/v4"
	"github.com/docker/go-units"
)

// Limits are the resource settings of [Docker], parsed.
type Limits struct {
	Memory     int64 // bytes; 0 means unlimited
	MemorySwap int64 // bytes; 0 means the engine default, -1 unlimited
	ShmSize    int64 // bytes; 0 means the engine default
	NanoCPUs   int64
	PidsLimit  int64
	Ulimits    []*units.Ulimit
}

// Mount is an admin-defined volume from [Docker.Volumes].
type Mount struct {
	// Source is an absolute host path, or "" for a per-job volume.
	Source   string
	Target   string
	ReadOnly bool
}

// Limits parses the resource settings. Validate has already checked them,
// so the error is only for callers that build a Docker by hand.
func (d Docker) Limits() (Limits, error) {
	var l Limits
	var errs []error
	size := func(key, v string, dst *int64) {
		if v == "" {
			return
		}
		if key == "docker.memory_swap" && v == "-1" {
			*dst = -1
			return
		}
		n, err := units.RAMInBytes(v)
		if err != nil || n <= 0 {
			errs = append(errs, fmt.Errorf("%s: %q is not a size such as \"512m\" or \"2g\"", key, v))
			return
		}
		*dst = n
	}
	size("docker.memory", d.Memory, &l.Memory)
	size("docker.memory_swap", d.MemorySwap, &l.MemorySwap)
	size("docker.shm_size", d.ShmSize, &l.ShmSize)
	if d.CPUs != "" {
		n, err := parseCPUs(d.CPUs)
		if err != nil {
			errs = append(errs, fmt.Errorf("docker.cpus: %q is not a positive number of CPUs such as \"1.5\"", d.CPUs))
		}
		l.NanoCPUs = n
	}
	if d.PidsLimit < 0 {
		errs = append(errs, fmt.Errorf("docker.pids_limit: must be 0 (unlimited) or more"))
	}
	l.PidsLimit = d.PidsLimit
	for _, u := range d.Ulimits {
		parsed, err := units.ParseUlimit(u)
		if err != nil {
			errs = append(errs, fmt.Errorf("docker.ulimits: %q: %v (use \"name=soft:hard\", e.g. \"nofile=1024:2048\")", u, err))
			continue
		}
		l.Ulimits = append(l.Ulimits, parsed)
	}
	return l, errors.Join(errs...)
}

// Mounts parses [Docker.Volumes].
func (d Docker) Mounts() ([]Mount, error) {
	var mounts []Mount
	var errs []error
	for _, v := range d.Volumes {
		m, err := parseVolume(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("docker.volumes: %q: %w", v, err))
			continue
		}
		mounts = append(mounts, m)
	}
	return mounts, errors.Join(errs...)
}

func parseVolume(v string) (Mount, error) {
	parts := strings.Split(v, ":")
	var m Mount
	switch len(parts) {
	case 1:
		m.Target = parts[0]
	case 2, 3:
		m.Source, m.Target = parts[0], parts[1]
		if len(parts) == 3 {
			switch parts[2] {
			case "ro":
				m.ReadOnly = true
			case "rw":
			default:
				return m, fmt.Errorf("mode %q is not ro or rw", parts[2])
			}
		}
		if !path.IsAbs(m.Source) {
			return m, fmt.Errorf("host path %q must be absolute", m.Source)
		}
	default:
		return m, errors.New(`use "/host/path:/container/path[:ro]" or "/container/path"`)
	}
	if !path.IsAbs(m.Target) || path.Clean(m.Target) == "/" {
		return m, fmt.Errorf("container path %q must be absolute and not /", m.Target)
	}
	return m, nil
}

func (d Docker) validateLimits() error {
	var errs []error
	if _, err := d.Limits(); err != nil {
		errs = append(errs, err)
	}
	if _, err := d.Mounts(); err != nil {
		errs = append(errs, err)
	}
	for _, h := range d.ExtraHosts {
		name, ip, ok := strings.Cut(h, ":")
		if !ok || name == "" || (net.ParseIP(ip) == nil && ip != "host-gateway") {
			errs = append(errs, fmt.Errorf("docker.extra_hosts: %q must be \"name:ip\"", h))
		}
	}
	for _, s := range d.DNS {
		if net.ParseIP(s) == nil {
			errs = append(errs, fmt.Errorf("docker.dns: %q is not an IP address", s))
		}
	}
	for _, s := range d.SecurityOpt {
		if !strings.ContainsAny(s, "=:") && s != "no-new-privileges" {
			errs = append(errs, fmt.Errorf("docker.security_opt: %q must be \"key=value\" or no-new-privileges", s))
		}
	}
	if d.NetworkMTU != 0 && (d.NetworkMTU < 576 || d.NetworkMTU > 65535) {
		errs = append(errs, fmt.Errorf("docker.network_mtu: %d must be 0 (engine default) or between 576 and 65535", d.NetworkMTU))
	}
	return errors.Join(errs...)
}

func validGlob(g string) bool { return g != "" && doublestar.ValidatePattern(g) }

// parseCPUs reads a number of CPUs, such as "1.5", in billionths of a CPU.
func parseCPUs(v string) (int64, error) {
	cpus, err := strconv.ParseFloat(v, 64)
	if err != nil || !(cpus >= 0.001 && cpus <= 1024) {
		return 0, fmt.Errorf("%q is not a number of CPUs from 0.001 to 1024", v)
	}
	return int64(cpus * 1e9), nil
}
