package dockerproxy

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/go-units"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/config"
	"github.com/berthci/berth/internal/strictjson"
)

// Ceilings are the admin's resource settings for a job ([config.Docker]'s
// memory, memory_swap, cpus, pids_limit, shm_size and ulimits, and the
// policy's memory and CPUs for the job), which also bound every container
// and build the job makes through the guard: a job may ask for less, never
// more. Zero fields set no ceiling.
type Ceilings struct {
	Memory     int64 // bytes
	MemorySwap int64 // bytes; -1 lets swap be unlimited
	NanoCPUs   int64
	PidsLimit  int64
	ShmSize    int64 // bytes
	Ulimits    []*units.Ulimit
}

// JobCeilings are the ceilings of job under the admin's limits, as the job
// container gets them.
func JobCeilings(l config.Limits, job *backends.Job) Ceilings {
	c := Ceilings{Memory: l.Memory, MemorySwap: l.MemorySwap, NanoCPUs: l.NanoCPUs, PidsLimit: l.PidsLimit, ShmSize: l.ShmSize, Ulimits: l.Ulimits}
	if job.Policy.Memory > 0 {
		c.Memory = job.Policy.Memory
	}
	if job.Policy.NanoCPUs > 0 {
		c.NanoCPUs = job.Policy.NanoCPUs
	}
	return c
}

// Args are the docker-proxy flags that carry c.
func (c Ceilings) Args() []string {
	var args []string
	add := func(flag string, v int64) {
		if v != 0 {
			args = append(args, flag, strconv.FormatInt(v, 10))
		}
	}
	add("--memory", c.Memory)
	add("--memory-swap", c.MemorySwap)
	add("--nano-cpus", c.NanoCPUs)
	add("--pids-limit", c.PidsLimit)
	add("--shm-size", c.ShmSize)
	for _, u := range c.Ulimits {
		args = append(args, "--ulimit", u.String())
	}
	return args
}

func tooMuch(what string, asked, ceiling int64) error {
	return refuse("%s of %d is over the runner's ceiling of %d; ask for less, or ask your runner admin", what, asked, ceiling)
}

// bound applies the ceilings to a container's resources. At create
// (update false) an unset value gets the ceiling; at update an unset value
// changes nothing and stays so.
func (c Ceilings) bound(res *container.Resources, update bool) error {
	switch {
	case res.OomKillDisable != nil && *res.OomKillDisable:
		return refuse("OomKillDisable is not allowed: the container could hold memory the host needs")
	case res.CPURealtimePeriod != 0 || res.CPURealtimeRuntime != 0:
		return refuse("realtime CPU scheduling is not allowed")
	case c.Memory > 0 && res.MemoryReservation > c.Memory:
		return tooMuch("memory reservation", res.MemoryReservation, c.Memory)
	}
	if c.Memory > 0 {
		if res.Memory > c.Memory {
			return tooMuch("memory", res.Memory, c.Memory)
		}
		if res.Memory <= 0 && !update {
			res.Memory = c.Memory
		}
		if res.MemorySwap == -1 && c.MemorySwap != -1 {
			return refuse("unlimited swap (memory-swap -1) is not allowed under the runner's memory ceiling")
		}
		if c.MemorySwap > 0 && res.MemorySwap > c.MemorySwap {
			return tooMuch("memory-swap", res.MemorySwap, c.MemorySwap)
		}
		if c.MemorySwap != 0 && res.MemorySwap == 0 && !update {
			res.MemorySwap = c.MemorySwap
		}
	}
	if c.NanoCPUs > 0 {
		if res.CPUQuota != 0 || res.CPUPeriod != 0 {
			return refuse("CPU quota and period are not allowed under the runner's CPU ceiling; use --cpus (at most %s)", strconv.FormatFloat(float64(c.NanoCPUs)/1e9, 'f', -1, 64))
		}
		if res.NanoCPUs > c.NanoCPUs {
			return tooMuch("nano-CPUs", res.NanoCPUs, c.NanoCPUs)
		}
		if res.NanoCPUs <= 0 && !update {
			res.NanoCPUs = c.NanoCPUs
		}
	}
	if c.PidsLimit > 0 {
		switch {
		case res.PidsLimit != nil && *res.PidsLimit > c.PidsLimit:
			return tooMuch("pids-limit", *res.PidsLimit, c.PidsLimit)
		case res.PidsLimit != nil && *res.PidsLimit < 0, update && res.PidsLimit != nil && *res.PidsLimit == 0:
			// On update the engine reads 0 as unlimited, too.
			return refuse("an unlimited pids-limit is not allowed under the runner's ceiling of %d", c.PidsLimit)
		case (res.PidsLimit == nil || *res.PidsLimit == 0) && !update:
			limit := c.PidsLimit
			res.PidsLimit = &limit
		}
	}
	ulimits, err := c.boundUlimits(res.Ulimits)
	if err != nil {
		return err
	}
	if !update || len(res.Ulimits) > 0 {
		res.Ulimits = ulimits
	}
	return nil
}

// boundUlimits gives every ulimit the admin set, within the admin's values.
func (c Ceilings) boundUlimits(asked []*container.Ulimit) ([]*container.Ulimit, error) {
	out := make([]*container.Ulimit, 0, len(asked)+len(c.Ulimits))
	seen := map[string]bool{}
	for _, u := range asked {
		if u == nil {
			continue
		}
		for _, ceil := range c.Ulimits {
			if ceil.Name == u.Name && (u.Soft > ceil.Soft || u.Hard > ceil.Hard || u.Soft < 0 || u.Hard < 0) {
				return nil, refuse("ulimit %s=%d:%d is over the runner's ceiling of %d:%d", u.Name, u.Soft, u.Hard, ceil.Soft, ceil.Hard)
			}
		}
		seen[u.Name] = true
		out = append(out, u)
	}
	for _, ceil := range c.Ulimits {
		if !seen[ceil.Name] {
			out = append(out, &container.Ulimit{Name: ceil.Name, Soft: ceil.Soft, Hard: ceil.Hard})
		}
	}
	return out, nil
}

// shmCeiling bounds /dev/shm and tmpfs sizes: shm_size, else the memory
// ceiling (their pages count against the container's memory anyway).
func (c Ceilings) shmCeiling() int64 {
	if c.ShmSize > 0 {
		return c.ShmSize
	}
	return c.Memory
}

// boundHost applies the ceilings to a container's host config.
func (c Ceilings) boundHost(h *container.HostConfig) error {
	if err := c.bound(&h.Resources, false); err != nil {
		return err
	}
	limit := c.shmCeiling()
	if limit <= 0 {
		return nil
	}
	if h.ShmSize > limit {
		return tooMuch("shm-size", h.ShmSize, limit)
	}
	if h.ShmSize <= 0 && c.ShmSize > 0 {
		h.ShmSize = c.ShmSize
	}
	for path, opts := range h.Tmpfs {
		bounded, err := boundTmpfsOptions(path, opts, limit)
		if err != nil {
			return err
		}
		h.Tmpfs[path] = bounded
	}
	for i := range h.Mounts {
		m := &h.Mounts[i]
		if m.Type != mount.TypeTmpfs {
			continue
		}
		if m.TmpfsOptions == nil {
			m.TmpfsOptions = &mount.TmpfsOptions{}
		}
		if m.TmpfsOptions.SizeBytes > limit {
			return tooMuch("tmpfs size of "+m.Target, m.TmpfsOptions.SizeBytes, limit)
		}
		if m.TmpfsOptions.SizeBytes <= 0 {
			m.TmpfsOptions.SizeBytes = limit
		}
	}
	return nil
}

// checkTmpfsOptions allows only tmpfs options that change nothing but the
// mount itself: an nr_blocks or nr_inodes would size it past the ceiling.
func checkTmpfsOptions(path, opts string) error {
	for _, opt := range strings.Split(opts, ",") {
		key, _, _ := strings.Cut(opt, "=")
		switch key {
		case "", "size", "mode", "uid", "gid", "rw", "ro", "exec", "noexec", "nosuid", "nodev":
		default:
			return refuse("tmpfs %s: option %q is not allowed (allowed: size, mode, uid, gid, rw, ro, exec, noexec, nosuid, nodev)", path, opt)
		}
	}
	return nil
}

func boundTmpfsOptions(path, opts string, limit int64) (string, error) {
	var out []string
	sized := false
	if err := checkTmpfsOptions(path, opts); err != nil {
		return "", err
	}
	for _, opt := range strings.Split(opts, ",") {
		if v, ok := strings.CutPrefix(opt, "size="); ok {
			n, err := units.RAMInBytes(v)
			if err != nil {
				return "", refuse("tmpfs %s: size %q is not a size such as 64m", path, v)
			}
			if n > limit || n <= 0 {
				return "", tooMuch("tmpfs size of "+path, n, limit)
			}
			sized = true
		}
		if opt != "" {
			out = append(out, opt)
		}
	}
	if !sized {
		out = append(out, "size="+strconv.FormatInt(limit, 10))
	}
	return strings.Join(out, ","), nil
}

// boundBuild applies the ceilings to a classic build's query: its RUN
// steps are containers too.
func (r *request) boundBuild() error {
	c := r.f.ceilings
	num := func(key string) (int64, error) {
		v := r.query.Get(key)
		if v == "" {
			return 0, nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, refuse("build parameter %s=%q is not a number", key, v)
		}
		return n, nil
	}
	res := container.Resources{}
	var err error
	if res.Memory, err = num("memory"); err != nil {
		return err
	}
	if res.MemorySwap, err = num("memswap"); err != nil {
		return err
	}
	if res.CPUQuota, err = num("cpuquota"); err != nil {
		return err
	}
	if res.CPUPeriod, err = num("cpuperiod"); err != nil {
		return err
	}
	if res.CPUShares, err = num("cpushares"); err != nil {
		return err
	}
	if err := checkResources(&res); err != nil {
		return err
	}
	if raw := r.query.Get("ulimits"); raw != "" {
		if err := r.decodeBuildUlimits(raw, &res); err != nil {
			return err
		}
	}
	if err := c.bound(&res, false); err != nil {
		return err
	}
	set := func(key string, v int64) {
		if v != 0 {
			r.query.Set(key, strconv.FormatInt(v, 10))
		}
	}
	set("memory", res.Memory)
	set("memswap", res.MemorySwap)
	if res.NanoCPUs > 0 {
		// The classic builder knows quota and period, not nano-CPUs.
		r.query.Set("cpuperiod", "100000")
		r.query.Set("cpuquota", strconv.FormatInt(res.NanoCPUs/10000, 10))
	}
	if len(res.Ulimits) > 0 {
		var data []byte
		var err error
		if r.f.podman {
			// Podman's Docker API takes "name=soft:hard" strings here.
			var list []string
			for _, u := range res.Ulimits {
				list = append(list, u.String())
			}
			data, err = json.Marshal(list)
		} else {
			data, err = json.Marshal(res.Ulimits)
		}
		if err != nil {
			return fmt.Errorf("encode the build's ulimits: %w", err)
		}
		r.query.Set("ulimits", string(data))
	}
	shm, err := num("shmsize")
	if err != nil {
		return err
	}
	if limit := c.shmCeiling(); limit > 0 {
		if shm > limit {
			return tooMuch("build shmsize", shm, limit)
		}
		if shm <= 0 && c.ShmSize > 0 {
			r.query.Set("shmsize", strconv.FormatInt(c.ShmSize, 10))
		}
	}
	return nil
}

// decodeBuildUlimits reads a build's ulimits parameter: Docker's
// [{"Name":..,"Soft":..,"Hard":..}], or on Podman also its
// ["name=soft:hard"].
func (r *request) decodeBuildUlimits(raw string, res *container.Resources) error {
	if r.f.podman {
		var list []string
		if json.Unmarshal([]byte(raw), &list) == nil {
			for _, s := range list {
				u, err := units.ParseUlimit(s)
				if err != nil {
					return refuse("bad ulimits parameter %q: %v", s, err)
				}
				res.Ulimits = append(res.Ulimits, u)
			}
			return nil
		}
	}
	if err := strictjson.Decode([]byte(raw), 3, &res.Ulimits); err != nil {
		return refuse("bad ulimits parameter: %v", err)
	}
	return nil
}
