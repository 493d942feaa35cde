package integration

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/berthci/berth/integration/runner"
)

// fuzzBurst is how long CI fuzzes each target: enough to run the seed
// corpora through the fuzzing engine and a few thousand mutations, so the
// targets stay alive. Real fuzzing runs are minutes long (see README).
const fuzzBurst = "5s"

// TestFuzzTargetsBriefly runs every fuzz target for a few seconds with the
// fuzzing engine, one at a time, since each uses every core.
func TestFuzzTargetsBriefly(t *testing.T) {
	_, thisFile, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(thisFile))
	targets := []struct{ pkg, name string }{
		{"./driver", "FuzzServicesEnv"},
		{"./driver", "FuzzJobResponse"},
		{"./config", "FuzzConfig"},
		{"./backends/dockerproxy", "FuzzFilter"},
	}
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			start := time.Now()
			cmd := exec.Command("go", "test", "-tags", runner.BuildTags, "-run", "^$", "-fuzz", "^"+tg.name+"$", "-fuzztime", fuzzBurst, tg.pkg)
			cmd.Dir = root
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s in %s: %v\n%s", tg.name, tg.pkg, err, out)
			}
			t.Logf("%s: %.1fs\n%s", tg.name, time.Since(start).Seconds(), out)
		})
	}
}
