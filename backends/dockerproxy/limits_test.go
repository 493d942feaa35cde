package dockerproxy

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/docker/go-units"
)

func ceilingFilter(t *testing.T) *Filter {
	t.Helper()
	nofile, err := units.ParseUlimit("nofile=1024:2048")
	if err != nil {
		t.Fatal(err)
	}
	f, err := NewFilter(Config{BuildsDir: testBuildsDir(t), Labels: jobLabels, Ceilings: Ceilings{
		Memory: 512 << 20, NanoCPUs: 1e9, PidsLimit: 100, ShmSize: 64 << 20, Ulimits: []*units.Ulimit{nofile},
	}}, fakeUpstream{})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestContainersGetTheCeilings(t *testing.T) {
	f := ceilingFilter(t)
	cr := checkedCreate(t, f, `{"Image":"busybox","HostConfig":{"Tmpfs":{"/t":"rw,noexec"}}}`)
	h := cr.HostConfig
	if h.Memory != 512<<20 || h.NanoCPUs != 1e9 || h.PidsLimit == nil || *h.PidsLimit != 100 || h.ShmSize != 64<<20 {
		t.Errorf("got memory %d, nano-CPUs %d, pids %v, shm %d; want the ceilings", h.Memory, h.NanoCPUs, h.PidsLimit, h.ShmSize)
	}
	if len(h.Ulimits) != 1 || h.Ulimits[0].Name != "nofile" || h.Ulimits[0].Hard != 2048 {
		t.Errorf("got ulimits %+v, want nofile=1024:2048", h.Ulimits)
	}
	if h.Tmpfs["/t"] != "rw,noexec,size=67108864" {
		t.Errorf("got tmpfs options %q, want a size within the ceiling", h.Tmpfs["/t"])
	}
	if cr := checkedCreate(t, f, `{"Image":"busybox"}`); cr.HostConfig == nil || cr.HostConfig.Memory != 512<<20 {
		t.Errorf("a create without a host config got %+v, want the ceilings", cr.HostConfig)
	}
	if cr := checkedCreate(t, f, `{"Image":"busybox","HostConfig":{"Memory":268435456,"PidsLimit":50}}`); cr.HostConfig.Memory != 256<<20 || *cr.HostConfig.PidsLimit != 50 {
		t.Errorf("asking for less got memory %d pids %d, want 256 MiB and 50", cr.HostConfig.Memory, *cr.HostConfig.PidsLimit)
	}
}

func TestAskingForMoreThanTheCeilingsIsRefused(t *testing.T) {
	f := ceilingFilter(t)
	for name, tc := range map[string]struct{ method, target, ctype, body, want string }{
		"memory":           {"POST", "/v1.41/containers/create", ct, create(`{"Memory":1073741824}`), "memory of 1073741824 is over the runner's ceiling of 536870912"},
		"oom kill disable": {"POST", "/v1.41/containers/create", ct, create(`{"OomKillDisable":true}`), "OomKillDisable"},
		"unlimited pids":   {"POST", "/v1.41/containers/create", ct, create(`{"PidsLimit":-1}`), "unlimited pids-limit"},
		"unlimited swap":   {"POST", "/v1.41/containers/create", ct, create(`{"MemorySwap":-1}`), "unlimited swap"},
		"shm":              {"POST", "/v1.41/containers/create", ct, create(`{"ShmSize":68719476736}`), "shm-size"},
		"tmpfs":            {"POST", "/v1.41/containers/create", ct, create(`{"Tmpfs":{"/t":"size=100g"}}`), "tmpfs size of /t"},
		"tmpfs mount":      {"POST", "/v1.41/containers/create", ct, create(`{"Mounts":[{"Type":"tmpfs","Target":"/t","TmpfsOptions":{"SizeBytes":107374182400}}]}`), "tmpfs size of /t"},
		"cpu quota":        {"POST", "/v1.41/containers/create", ct, create(`{"CpuQuota":400000,"CpuPeriod":100000}`), "use --cpus"},
		"cpus":             {"POST", "/v1.41/containers/create", ct, create(`{"NanoCpus":4000000000}`), "nano-CPUs"},
		"ulimit":           {"POST", "/v1.41/containers/create", ct, create(`{"Ulimits":[{"Name":"nofile","Soft":4096,"Hard":4096}]}`), "ulimit nofile=4096:4096"},
		"update memory":    {"POST", "/v1.41/containers/own/update", ct, `{"Memory":2147483648}`, "memory of 2147483648"},
		"update pids":      {"POST", "/v1.41/containers/own/update", ct, `{"PidsLimit":-1}`, "unlimited pids-limit"},
		"update pids zero": {"POST", "/v1.41/containers/own/update", ct, `{"PidsLimit":0}`, "unlimited pids-limit"},
		"build memory":     {"POST", "/v1.41/build?memory=2147483648", "application/x-tar", "tar", "memory of 2147483648"},
		"build shm":        {"POST", "/v1.41/build?shmsize=68719476736", "application/x-tar", "tar", "build shmsize"},
	} {
		t.Run(name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, tc.target, strings.NewReader(tc.body))
			req.Header.Set("Content-Type", tc.ctype)
			err := f.Check(context.Background(), req)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want a refusal containing %q", err, tc.want)
			}
		})
	}
}

func TestBuildsGetTheCeilings(t *testing.T) {
	f := ceilingFilter(t)
	req := httptest.NewRequest("POST", "/v1.41/build?t=x", strings.NewReader(plainBuildContext))
	req.Header.Set("Content-Type", "application/x-tar")
	if err := f.Check(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	q := req.URL.Query()
	for k, want := range map[string]string{"memory": "536870912", "cpuperiod": "100000", "cpuquota": "100000", "shmsize": "67108864", "ulimits": `[{"Name":"nofile","Hard":2048,"Soft":1024}]`} {
		if got := q.Get(k); got != want {
			t.Errorf("build %s: got %q, want %q", k, got, want)
		}
	}
	req = httptest.NewRequest("POST", "/v1.41/containers/own/update", strings.NewReader(`{"Memory":268435456}`))
	req.Header.Set("Content-Type", ct)
	if err := f.Check(context.Background(), req); err != nil {
		t.Errorf("an update within the ceiling: got %v, want it forwarded", err)
	}
}
