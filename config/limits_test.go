package config

import (
	"reflect"
	"strings"
	"testing"

	"github.com/docker/go-units"
)

func TestLimits(t *testing.T) {
	d := Docker{
		Memory:     "512m",
		MemorySwap: "1g",
		ShmSize:    "64m",
		CPUs:       "1.5",
		PidsLimit:  100,
		Ulimits:    []string{"nofile=1024:2048", "nproc=512"},
	}
	got, err := d.Limits()
	if err != nil {
		t.Fatalf("got %v, want no error", err)
	}
	want := Limits{
		Memory:     512 << 20,
		MemorySwap: 1 << 30,
		ShmSize:    64 << 20,
		NanoCPUs:   1_500_000_000,
		PidsLimit:  100,
		Ulimits: []*units.Ulimit{
			{Name: "nofile", Soft: 1024, Hard: 2048},
			{Name: "nproc", Soft: 512, Hard: 512},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestLimitsUnsetAndUnlimited(t *testing.T) {
	got, err := Docker{MemorySwap: "-1"}.Limits()
	if err != nil {
		t.Fatalf("got %v, want no error", err)
	}
	want := Limits{MemorySwap: -1}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestLimitsErrorsNameEveryKey(t *testing.T) {
	_, err := Docker{Memory: "x", MemorySwap: "y", ShmSize: "z", CPUs: "-1", PidsLimit: -5, Ulimits: []string{"nofile=a"}}.Limits()
	if err == nil {
		t.Fatal("got no error, want one per bad key")
	}
	for _, key := range []string{"docker.memory:", "docker.memory_swap:", "docker.shm_size:", "docker.cpus:", "docker.pids_limit:", "docker.ulimits:"} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("got %q, want it to name %q", err, key)
		}
	}
}

func TestMounts(t *testing.T) {
	got, err := Docker{Volumes: []string{"/srv/certs:/certs:ro", "/srv/data:/data:rw", "/srv/x:/x", "/scratch"}}.Mounts()
	if err != nil {
		t.Fatalf("got %v, want no error", err)
	}
	want := []Mount{
		{Source: "/srv/certs", Target: "/certs", ReadOnly: true},
		{Source: "/srv/data", Target: "/data"},
		{Source: "/srv/x", Target: "/x"},
		{Target: "/scratch"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestMountsRefusesBadVolumes(t *testing.T) {
	tests := map[string]string{
		"relative target":       "scratch",
		"relative source":       "data:/data",
		"empty source":          ":/data",
		"root target":           "/srv:/",
		"root anonymous volume": "/",
		"relabel mode":          "/srv:/srv:Z",
		"propagation mode":      "/srv:/srv:rshared",
		"too many parts":        "/a:/b:ro:extra",
	}
	for name, volume := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := Docker{Volumes: []string{volume}}.Mounts()
			if err == nil {
				t.Fatalf("got no error for %q, want one", volume)
			}
			if !strings.Contains(err.Error(), "docker.volumes") || !strings.Contains(err.Error(), volume) {
				t.Errorf("got %q, want it to name docker.volumes and %q", err, volume)
			}
		})
	}
}
