package integration

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthci/berth/integration/runner"
)

// TestConcurrentJobsMixedBackends runs 8 jobs at once over the three
// backends, of one project and of another, half of them failing with their
// own exit code: every job gets its own outcome and only its own output.
func TestConcurrentJobsMixedBackends(t *testing.T) {
	e := newPodmanEnv(t, options{policyTOML: "default_backend = \"socket\"\nallowed_backends = [\"socket\", \"podman\", \"dind\"]\n",
		extraTOML: dindCapabilityCfg})
	backendsCycle := []string{"socket", "podman", "dind"}
	type outcome struct {
		job *runner.Job
		res *runner.Result
		err error
	}
	results := make([]outcome, 8)
	var wg sync.WaitGroup
	for i := range results {
		job := e.job(250 + int64(i%2))
		job.ExtraCustomEnv = map[string]string{"BERTH_BACKEND": backendsCycle[i%3]}
		code := 0
		if i%2 == 1 {
			code = 10 + i
		}
		job.Script = []string{fmt.Sprintf("echo job-marker-%d on $BERTH_BACKEND", i), fmt.Sprintf("exit %d", code)}
		results[i].job = job
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			results[i].res, results[i].err = e.emu.RunJob(ctx, job)
		}()
	}
	wg.Wait()
	for i, o := range results {
		if o.err != nil {
			t.Errorf("job %d: %v", i, o.err)
			continue
		}
		wantFailure, wantCode := "", 0
		if i%2 == 1 {
			wantFailure, wantCode = "build", 10+i
		}
		if o.res.Failure != wantFailure || o.res.BuildExitCode != wantCode {
			t.Errorf("job %d on %s: got failure %q code %d, want %q code %d\n%s", i, backendsCycle[i%3], o.res.Failure, o.res.BuildExitCode, wantFailure, wantCode, o.res.Log)
		}
		for k := range results {
			has := strings.Contains(o.res.Log, fmt.Sprintf("job-marker-%d on", k))
			if has != (k == i) {
				t.Errorf("job %d's log holds job %d's marker: %v", i, k, has)
			}
		}
		if !strings.Contains(o.res.Log, "with backend "+backendsCycle[i%3]) {
			t.Errorf("job %d did not run on %s:\n%s", i, backendsCycle[i%3], o.res.Log)
		}
	}
}

// TestLargeOutputStreams sends 200 MB through one run stage, on the Docker
// engine code (socket, shared with dind) and on podman: berth streams it
// with a bounded peak RSS, and each stream's lines arrive complete and in
// order within its stream.
func TestLargeOutputStreams(t *testing.T) {
	const lines = 1_000_000 // per stream, 100 bytes each: 200 MB in all
	for _, backend := range []string{"socket", "podman"} {
		t.Run(backend, func(t *testing.T) {
			var e *env
			if backend == "podman" {
				e = newPodmanEnv(t, options{})
			} else {
				e = newEnv(t, options{})
			}
			job := e.job(260)
			job.Script = []string{fmt.Sprintf(`perl -e 'my $pad = " " x 84; for my $i (0 .. %d) { syswrite(STDOUT, sprintf("out %%09d%%s\n", $i, $pad)); syswrite(STDERR, sprintf("err %%09d%%s\n", $i, $pad)) }'`, lines-1)}
			ctx := context.Background()
			session, err := e.emu.Start(ctx, job)
			if err != nil {
				t.Fatal(err)
			}
			defer session.Cleanup(ctx)
			if p := session.Prepare(ctx); p.ExitCode != 0 {
				t.Fatalf("prepare: %d\n%s", p.ExitCode, p.Output)
			}
			if g := session.RunStage(ctx, "get_sources"); g.ExitCode != 0 {
				t.Fatalf("get_sources: %d\n%s", g.ExitCode, g.Output)
			}
			session.KeepStreams = true
			s := session.RunStage(ctx, "build_script")
			if s.ExitCode != 0 {
				t.Fatalf("build_script: exit %d", s.ExitCode)
			}
			t.Logf("%s: 200 MB through run in %s, berth run peak RSS %.1f MiB", backend, s.Duration.Round(time.Millisecond), float64(s.MaxRSS)/(1<<20))
			if s.MaxRSS > 64<<20 {
				t.Errorf("berth run peaked at %d MiB: it must stream the output, not hold it", s.MaxRSS>>20)
			}
			// The engines multiplex the two streams at their own chunk
			// borders (conmon re-chunks at 8 KiB), so lines are checked
			// per stream, as berth hands each stream on.
			next := map[string]int{"out": 0, "err": 0}
			for stream, text := range map[string]string{"out": s.Stdout, "err": s.Stderr} {
				for _, line := range strings.Split(text, "\n") {
					if !strings.HasPrefix(line, stream+" ") || len(line) < 13 {
						continue
					}
					n, err := strconv.Atoi(line[4:13])
					if err != nil {
						continue
					}
					if n != next[stream] {
						t.Fatalf("%s line %d came where line %d was due: lost or reordered", stream, n, next[stream])
					}
					next[stream]++
				}
			}
			if next["out"] != lines || next["err"] != lines {
				t.Errorf("got %d stdout and %d stderr lines, want %d each", next["out"], next["err"], lines)
			}
		})
	}
}
