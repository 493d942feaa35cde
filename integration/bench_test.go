package integration

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/berthci/berth/integration/runner"
)

// TestBenchQuick runs the bench harness (integration/bench) once in its
// quick mode, every row with one sample and small sizes, so that it keeps
// working. It asserts no timings: these machines are shared and noisy, and
// the figures belong in the bench's own side-by-side table.
func TestBenchQuick(t *testing.T) {
	requireDocker(t)
	conn := requirePodman(t)
	_, thisFile, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(thisFile))
	start := time.Now()
	cmd := exec.Command("go", "run", "-tags", runner.BuildTags, "./integration/bench", "-quick")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bench -quick: %v\n%s", err, out)
	}
	t.Logf("bench -quick in %.1fs:\n%s", time.Since(start).Seconds(), out)
	// The bench's config names its runner "bench".
	(&env{t: t, runner: "bench"}).assertNoResources()
	if left := podmanResources(t, conn, "bench"); len(left) > 0 {
		t.Errorf("berth-labelled podman resources left behind: %v", left)
	}
}
