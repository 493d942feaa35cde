// Command bench measures berth against the engine floors it is compared
// with, side by side in one run, and prints a table of medians, minima and
// maxima with the ratios. It drives the built binary the way gitlab-runner
// does, through integration/runner, and needs the engines and images of
// integration/provision.sh. It needs no GitLab.
//
//	go run -tags '...' ./integration/bench -runs 5
//	go run -tags '...' ./integration/bench -runs 3 -only noop-socket,stage
//	go run -tags '...' ./integration/bench -quick   # one short run of every row
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/client"

	"github.com/berthci/berth/integration/runner"
)

// unguardedProject is the project whose jobs a policy rule gives the raw
// socket.
const unguardedProject = "bench/unguarded"

// podmanSocket is the rootless service that integration/provision.sh runs.
const podmanSocket = "/run/user/1001/podman/podman.sock"

// row is one line of the table: berth's samples next to the baseline's,
// taken alternately in the same run.
type row struct {
	name, baselineName string
	unit               string // "s", "ms", "MiB" or "MB/s"
	higherIsBetter     bool
	target             string // the target, for the reader
	berth, baseline    []float64
	note               string
}

// bench is what every measurement shares.
type bench struct {
	root     string
	emu      *runner.Emulator
	cli      *client.Client
	repo     string // a bare git repository for the dind build rows
	idMu     sync.Mutex
	jobID    int64
	quick    bool
	logBytes int64
	jobs     int // throughput: jobs in all
	workers  int // throughput: jobs at once
}

// nextID is a job id not used before in this run; the throughput row asks
// for them from several goroutines.
func (b *bench) nextID() int64 {
	b.idMu.Lock()
	defer b.idMu.Unlock()
	b.jobID++
	return b.jobID
}

// measurement is one row's producer: one sample of berth and one of the
// baseline per call.
type measurement struct {
	key  string
	row  *row
	once func(ctx context.Context, b *bench, r *row) error
}

func main() {
	runs := flag.Int("runs", 5, "samples per row")
	only := flag.String("only", "", "comma-separated rows to measure (default all): "+strings.Join(rowKeys(), ", "))
	quick := flag.Bool("quick", false, "one sample per row and small sizes, to check that the harness works (timings are meaningless)")
	logMB := flag.Int64("log-mb", 200, "logs row: megabytes of stdout")
	jobs := flag.Int("jobs", 20, "throughput row: no-op jobs in all")
	workers := flag.Int("workers", 4, "throughput row: jobs at once")
	flag.Parse()
	selected, err := selectRows(*only)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	b := &bench{quick: *quick, logBytes: *logMB << 20, jobs: *jobs, workers: *workers}
	if *quick {
		*runs, b.logBytes, b.jobs, b.workers = 1, 8<<20, 4, 2
	}
	if err := b.run(context.Background(), *runs, selected); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func rowKeys() []string {
	var keys []string
	for _, m := range measurements() {
		keys = append(keys, m.key)
	}
	return keys
}

func selectRows(only string) ([]measurement, error) {
	all := measurements()
	if only == "" {
		return all, nil
	}
	var out []measurement
	for _, key := range strings.Split(only, ",") {
		i := slices.IndexFunc(all, func(m measurement) bool { return m.key == strings.TrimSpace(key) })
		if i < 0 {
			return nil, fmt.Errorf("-only: no row %q; the rows are %s", key, strings.Join(rowKeys(), ", "))
		}
		out = append(out, all[i])
	}
	return out, nil
}

func (b *bench) run(ctx context.Context, runs int, ms []measurement) error {
	if err := b.setup(); err != nil {
		return err
	}
	defer os.RemoveAll(b.root)
	defer b.removeLeftovers(context.Background())
	for i := range runs {
		for _, m := range ms {
			if err := m.once(ctx, b, m.row); err != nil {
				return fmt.Errorf("%s: %w", m.key, err)
			}
		}
		fmt.Fprintf(os.Stderr, "run %d/%d done\n", i+1, runs)
	}
	if n, err := b.leftovers(ctx); err != nil {
		return err
	} else if n > 0 {
		return fmt.Errorf("%d labelled resources left after the bench", n)
	}
	printTable(ms, runs)
	return nil
}

func (b *bench) setup() error {
	root, err := os.MkdirTemp("", "berth-bench-")
	if err != nil {
		return err
	}
	b.root = root
	// The rootless podman user mounts the builds dir and berth's binary.
	if err := os.Chmod(root, 0o755); err != nil {
		return err
	}
	bin := filepath.Join(root, "berth")
	if err := runner.BuildBerth(".", bin); err != nil {
		return err
	}
	if b.cli, err = client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation()); err != nil {
		return err
	}
	gitDir := filepath.Join(root, "git")
	if b.repo, err = makeRepo(root, gitDir); err != nil {
		return err
	}
	cfgPath := filepath.Join(root, "config.toml")
	cfg := fmt.Sprintf(`builds_dir = %q
cache_dir = %q
runner_name = "bench"
[policy]
default_backend = "socket"
allowed_backends = ["socket", "dind", "podman"]
[[policy.rule]]
name = "unguarded"
projects = [%q]
socket_guard = false
[docker]
helper_image = "berth-test/helper:latest"
runner_binary = "/usr/local/lib/berth-test/gitlab-runner"
pull_policy = ["if-not-present"]
volumes = [%q]
[dind]
image = "berth-test/dind:latest"
privileged = false
cap_add = ["ALL"]
cap_drop = ["SYS_RESOURCE"]
security_opt = ["seccomp=unconfined", "apparmor=unconfined", "systempaths=unconfined"]
layer_cache = "project"
[podman]
socket = %q
`, filepath.Join(root, "builds"), filepath.Join(root, "cache"), unguardedProject, gitDir+":"+gitDir+":ro", "unix://"+podmanSocket)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	b.emu = &runner.Emulator{Binary: bin, ConfigPath: cfgPath, WorkDir: root, GracefulKillTimeout: 10 * time.Second}
	b.jobID = time.Now().Unix() * 1000
	return nil
}

func printTable(ms []measurement, runs int) {
	fmt.Printf("berth bench: %d run(s) per row, %s\n\n", runs, time.Now().Format(time.RFC3339))
	fmt.Printf("| %s | median | min | max | %s | median | min | max | ratio | target |\n", "berth", "baseline")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|")
	for _, m := range ms {
		r := m.row
		bm, bmin, bmax := stats(r.berth)
		lm, lmin, lmax := stats(r.baseline)
		ratio := "-"
		if lm != 0 {
			ratio = fmt.Sprintf("%.2fx", bm/lm)
		}
		f := func(v float64) string { return format(v, r.unit) }
		fmt.Printf("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			r.name, f(bm), f(bmin), f(bmax), r.baselineName, f(lm), f(lmin), f(lmax), ratio, r.target)
	}
	fmt.Println()
	for _, m := range ms {
		if m.row.note != "" {
			fmt.Printf("- %s: %s\n", m.key, m.row.note)
		}
	}
}

func format(v float64, unit string) string {
	switch unit {
	case "s":
		return fmt.Sprintf("%.2f s", v)
	case "ms":
		return fmt.Sprintf("%.1f ms", v)
	default:
		return fmt.Sprintf("%.1f %s", v, unit)
	}
}

func stats(vs []float64) (median, lo, hi float64) {
	if len(vs) == 0 {
		return 0, 0, 0
	}
	s := append([]float64(nil), vs...)
	sort.Float64s(s)
	return s[len(s)/2], s[0], s[len(s)-1]
}

func seconds(d time.Duration) float64 { return d.Seconds() }
func millis(d time.Duration) float64  { return float64(d) / float64(time.Millisecond) }
