package integration

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/berthci/berth/integration/runner"
)

// soakJobs is how many jobs TestSoak runs per backend. CI runs the default;
// the real soak is
//
//	go test -tags '...' -run TestSoak -timeout 4h ./integration -soak-jobs 200 -v
var (
	soakJobs    = flag.Int("soak-jobs", 7, "TestSoak: jobs per backend")
	soakWorkers = flag.Int("soak-workers", 3, "TestSoak: jobs at once")
	soakSeed    = flag.Uint64("soak-seed", 0, "TestSoak: random seed (0: the time)")
)

type soakKind string

const (
	soakSuccess soakKind = "success"
	soakFailure soakKind = "failure"
	soakTerm    soakKind = "sigterm"
	soakKill    soakKind = "sigkill+cleanup"
)

type soakResult struct {
	backend string
	kind    soakKind
	point   string
	ok      bool
	leaked  []string
	detail  string
}

// TestSoak runs a random mix of jobs on each backend, several at once:
// passing, failing with an exit code, SIGTERM at a random point, and
// SIGKILL at a random point followed by a fresh cleanup. It prints a table
// of outcomes and leaks, and fails on any wrong outcome or leak.
func TestSoak(t *testing.T) {
	e := newPodmanEnv(t, options{policyTOML: "default_backend = \"socket\"\nallowed_backends = [\"socket\", \"podman\", \"dind\"]\n",
		extraTOML: dindCapabilityCfg})
	conn := requirePodman(t)
	seed := *soakSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	t.Logf("soak seed %d (rerun with -soak-seed %d)", seed, seed)

	type plan struct {
		backend string
		kind    soakKind
		point   string
		delay   time.Duration
	}
	var plans []plan
	kinds := []soakKind{soakSuccess, soakFailure, soakTerm, soakKill}
	points := []string{"prepare", "get_sources", "build_script", "cleanup"}
	for _, backend := range []string{"socket", "podman", "dind"} {
		for i := range *soakJobs {
			p := plan{backend: backend, kind: kinds[i%len(kinds)]}
			if i >= len(kinds) {
				p.kind = kinds[rng.IntN(len(kinds))]
			}
			p.point = points[rng.IntN(len(points))]
			p.delay = time.Duration(rng.IntN(2000)) * time.Millisecond
			plans = append(plans, p)
		}
	}
	rng.Shuffle(len(plans), func(i, j int) { plans[i], plans[j] = plans[j], plans[i] })

	results := make([]soakResult, len(plans))
	work := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	done, wrong, leaks := 0, 0, 0
	start := time.Now()
	for range *soakWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				p := plans[i]
				r := soakOne(t, e, conn, p.backend, p.kind, p.point, p.delay)
				results[i] = r
				mu.Lock()
				done++
				if !r.ok {
					wrong++
				}
				leaks += len(r.leaked)
				if done%20 == 0 || done == len(plans) {
					fmt.Fprintf(os.Stderr, "soak: %d/%d jobs in %s, %d wrong, %d leaked\n", done, len(plans), time.Since(start).Round(time.Second), wrong, leaks)
				}
				mu.Unlock()
			}
		}()
	}
	for i := range plans {
		work <- i
	}
	close(work)
	wg.Wait()

	type key struct {
		backend string
		kind    soakKind
	}
	type row struct{ jobs, ok, leaks int }
	rows := map[key]*row{}
	for _, r := range results {
		k := key{r.backend, r.kind}
		if rows[k] == nil {
			rows[k] = &row{}
		}
		rows[k].jobs++
		if r.ok {
			rows[k].ok++
		} else {
			t.Errorf("%s %s at %s: %s", r.backend, r.kind, r.point, r.detail)
		}
		if len(r.leaked) > 0 {
			rows[k].leaks += len(r.leaked)
			t.Errorf("%s %s at %s leaked %v", r.backend, r.kind, r.point, r.leaked)
		}
	}
	keys := make([]key, 0, len(rows))
	for k := range rows {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].backend != keys[j].backend {
			return keys[i].backend < keys[j].backend
		}
		return keys[i].kind < keys[j].kind
	})
	var sb strings.Builder
	tw := tabwriter.NewWriter(&sb, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BACKEND\tKIND\tJOBS\tRIGHT OUTCOME\tLEAKED")
	total := row{}
	for _, k := range keys {
		r := rows[k]
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\n", k.backend, k.kind, r.jobs, r.ok, r.leaks)
		total.jobs, total.ok, total.leaks = total.jobs+r.jobs, total.ok+r.ok, total.leaks+r.leaks
	}
	fmt.Fprintf(tw, "all\t\t%d\t%d\t%d\n", total.jobs, total.ok, total.leaks)
	tw.Flush()
	t.Logf("soak results:\n%s", sb.String())
	fmt.Fprintf(os.Stderr, "soak results (seed %d):\n%s", seed, sb.String())
}

// earliestSignal is how soon after a stage starts berth surely has its
// signal handler: before it, a SIGTERM ends the process unhandled.
const earliestSignal = 30 * time.Millisecond

// soakOne runs one job of the soak and checks its outcome and leftovers.
func soakOne(t *testing.T, e *env, conn context.Context, backend string, kind soakKind, point string, delay time.Duration) soakResult {
	res := soakResult{backend: backend, kind: kind, point: point}
	job := e.job(270)
	job.ExtraCustomEnv = map[string]string{"BERTH_BACKEND": backend}
	marker := fmt.Sprintf("%d", 60000+job.ID%10000)
	job.Script = []string{"echo soak-" + marker, "sleep 0." + marker[len(marker)-1:]}
	if kind == soakFailure {
		job.Script = append(job.Script, "exit 3")
	}
	if (kind == soakTerm || kind == soakKill) && point == "build_script" {
		job.Script = append(job.Script, "sleep 3"+marker)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	switch kind {
	case soakSuccess, soakFailure:
		r, err := e.emu.RunJob(ctx, job)
		switch {
		case err != nil:
			res.detail = err.Error()
		case kind == soakSuccess && r.Failure != "":
			res.detail = "failed:\n" + r.Log
		case kind == soakFailure && (r.Failure != "build" || r.BuildExitCode != 3):
			res.detail = fmt.Sprintf("got %q code %d, want build code 3", r.Failure, r.BuildExitCode)
		default:
			res.ok = true
		}
	default:
		s, err := e.emu.Start(ctx, job)
		if err != nil {
			res.detail = err.Error()
			return res
		}
		s.KillOnCancel = kind == soakKill
		interrupted := func(call func(context.Context) runner.StageResult) runner.StageResult {
			callCtx, stop := context.WithCancel(ctx)
			defer stop()
			go func() {
				time.Sleep(delay)
				stop()
			}()
			return call(callCtx)
		}
		// The stages up to the point run normally; the one at the point
		// gets the signal after the random delay (it may finish first).
		var r runner.StageResult
		for _, step := range []string{"prepare", "get_sources", "build_script", "cleanup"} {
			call := func(ctx context.Context) runner.StageResult { return s.RunStage(ctx, step) }
			switch step {
			case "prepare":
				call = s.Prepare
			case "cleanup":
				call = s.Cleanup
			}
			if step == point {
				r = interrupted(call)
				break
			}
			if r = call(ctx); r.ExitCode != 0 {
				break
			}
		}
		allowed := map[int]bool{0: true, runner.BuildFailureExitCode: true}
		if kind == soakKill {
			allowed = map[int]bool{0: true, -1: true}
		}
		if kind == soakTerm && delay < earliestSignal {
			// Before Go has run berth's first signal handler (about 9 ms
			// into the process, GODEBUG=inittrace=1), SIGTERM ends it
			// with nothing made yet; the cleanup below must still pass.
			allowed[-1] = true
		}
		s.KillOnCancel = false
		c := s.Cleanup(ctx)
		switch {
		case !allowed[r.ExitCode]:
			res.detail = fmt.Sprintf("%s exited %d\n%s", r.Name, r.ExitCode, r.Output)
		case c.ExitCode != 0:
			res.detail = fmt.Sprintf("the fresh cleanup exited %d\n%s", c.ExitCode, c.Output)
		default:
			res.ok = true
		}
	}
	for _, r := range append(e.resources(), podmanResources(t, conn, e.runner)...) {
		if strings.Contains(r, fmt.Sprintf("-%d", job.ID)) {
			res.leaked = append(res.leaked, r)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		procs := userProcesses("sleep 3" + marker)
		if len(procs) == 0 || time.Now().After(deadline) {
			res.leaked = append(res.leaked, procs...)
			break
		}
	}
	return res
}
