package dockerengine

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berthci/berth/backends"
	"github.com/berthci/berth/config"
)

// createdContainer is one ContainerCreate call.
type createdContainer struct {
	name string
	cfg  *container.Config
	host *container.HostConfig
	net  *network.NetworkingConfig
}

// prepareAPI is a fakeAPI that also creates things.
type prepareAPI struct {
	existingVolumes map[string]map[string]string
	*fakeAPI
	networks   []string
	netOpts    []network.CreateOptions
	volumes    []volume.CreateOptions
	containers []createdContainer
	started    []string
}

func (f *prepareAPI) NetworkCreate(ctx context.Context, name string, opts network.CreateOptions) (network.CreateResponse, error) {
	f.record("create network %s", name)
	f.networks = append(f.networks, name)
	f.netOpts = append(f.netOpts, opts)
	return network.CreateResponse{ID: "net-" + name}, nil
}

func (f *prepareAPI) VolumeCreate(ctx context.Context, opts volume.CreateOptions) (volume.Volume, error) {
	f.record("create volume %s", opts.Name)
	f.volumes = append(f.volumes, opts)
	// Like dockerd: an existing name answers with the existing volume.
	if labels, ok := f.existingVolumes[opts.Name]; ok {
		return volume.Volume{Name: opts.Name, Labels: labels}, nil
	}
	return volume.Volume{Name: opts.Name, Labels: opts.Labels}, nil
}

func (f *prepareAPI) ContainerCreate(ctx context.Context, cfg *container.Config, host *container.HostConfig, net *network.NetworkingConfig, _ *ocispec.Platform, name string) (container.CreateResponse, error) {
	f.record("create container %s", name)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.containers = append(f.containers, createdContainer{name: name, cfg: cfg, host: host, net: net})
	return container.CreateResponse{ID: "id-" + name}, nil
}

func (f *prepareAPI) ContainerStart(ctx context.Context, id string, opts container.StartOptions) error {
	f.record("start %s", id)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.started = append(f.started, id)
	return nil
}

func prepareEngine(t *testing.T, api API, hook func(context.Context, *backends.Job) error) *Engine {
	t.Helper()
	cfg := config.Default().Docker
	cfg.RunnerBinary = ""
	cfg.WaitForServicesTimeout = config.Duration{}
	cfg.Volumes = []string{"/srv/certs:/certs:ro", "/scratch"}
	cfg.Memory = "1g"
	cfg.PidsLimit = 256
	cfg.CapDrop = []string{"ALL"}
	cfg.SecurityOpt = []string{"no-new-privileges"}
	cfg.User = "1000:1000"
	cfg.DNS = []string{"10.0.0.2"}
	opts := Options{
		JobBinds:              func(*backends.Job) []string { return []string{"/var/run/docker.sock:/var/run/docker.sock"} },
		JobEnv:                func(job *backends.Job) []string { return []string{"BACKEND_JOB=" + job.Name()} },
		BeforeStageContainers: hook,
	}
	e, err := New(api, cfg, opts, newNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func prepareJob(t *testing.T) *backends.Job {
	t.Helper()
	dir := t.TempDir()
	job := testJob()
	job.BuildsDir = filepath.Join(dir, "builds", "ci-1", "101")
	job.CacheDir = filepath.Join(dir, "cache", "ci-1", "7")
	job.Image = backends.Image{Name: "alpine:3", Entrypoint: []string{""}, PullPolicies: []string{config.PullAlways}}
	job.Env = []string{"CI_JOB_ID=101", "SECRET=s"}
	job.Services = []backends.Service{{
		Image:   backends.Image{Name: "redis:7", Command: []string{"redis-server"}, PullPolicies: []string{config.PullIfNotPresent}},
		Aliases: []string{"cache", "redis"},
		Env:     []string{"PUBLIC=p"},
	}}
	return job
}

func TestPrepareCreatesTheJobEnvironment(t *testing.T) {
	helper := config.Default().Docker.HelperImage
	api := &prepareAPI{fakeAPI: &fakeAPI{
		images: map[string]image.InspectResponse{"redis:7": {ID: "sha256:redis"}, helper: {ID: "sha256:helper"}},
		pulls:  map[string]string{"alpine:3": okPull},
	}}
	var hookJob *backends.Job
	e := prepareEngine(t, api, func(ctx context.Context, job *backends.Job) error {
		api.record("before stage containers")
		hookJob = job
		return nil
	})
	job := prepareJob(t)
	if err := e.Prepare(context.Background(), job); err != nil {
		t.Fatalf("got %v, want no error", err)
	}

	if got := api.calls("pull "); !reflect.DeepEqual(got, []string{"pull alpine:3"}) {
		t.Errorf("got pulls %v, want only the job image (always); the helper and the service are present", got)
	}
	if !reflect.DeepEqual(api.networks, []string{"berth-ci-1-101"}) || api.netOpts[0].Labels[backends.LabelRole] != RoleNetwork {
		t.Errorf("got networks %v %+v, want one labelled job network", api.networks, api.netOpts)
	}
	if len(api.volumes) != 1 || api.volumes[0].Name != "berth-ci-1-101-vol-1" || api.volumes[0].Labels[backends.LabelJobID] != "101" {
		t.Errorf("got volumes %+v, want berth-ci-1-101-vol-1 labelled with the job", api.volumes)
	}

	byName := map[string]createdContainer{}
	for _, c := range api.containers {
		byName[c.name] = c
	}
	names := []string{"berth-ci-1-101-svc-0", "berth-ci-1-101-helper", "berth-ci-1-101-build"}
	for _, name := range names {
		c, ok := byName[name]
		if !ok {
			t.Fatalf("got containers %v, want %s", api.calls("create container"), name)
		}
		if c.host.NetworkMode != "berth-ci-1-101" || c.host.Privileged || c.host.PidMode != "" || c.host.IpcMode != "" {
			t.Errorf("%s: got host config %+v, want the job network and nothing privileged", name, c.host)
		}
		if !reflect.DeepEqual(c.host.DNS, []string{"10.0.0.2"}) {
			t.Errorf("%s: got DNS %v, want the admin's", name, c.host.DNS)
		}
		for k := range c.cfg.Labels {
			if !strings.HasPrefix(k, backends.LabelPrefix) {
				t.Errorf("%s: got label %q, want only berth labels", name, k)
			}
		}
		if c.cfg.Labels[backends.LabelJobID] != "101" || c.cfg.Labels[backends.LabelRunner] != "ci-1" {
			t.Errorf("%s: got labels %v, want the job's selector", name, c.cfg.Labels)
		}
	}

	svc := byName["berth-ci-1-101-svc-0"]
	if svc.cfg.Image != "redis:7" || !reflect.DeepEqual(svc.cfg.Env, []string{"PUBLIC=p"}) || !reflect.DeepEqual([]string(svc.cfg.Cmd), []string{"redis-server"}) {
		t.Errorf("service: got image %q env %q cmd %q, want redis:7, its own env and command", svc.cfg.Image, svc.cfg.Env, svc.cfg.Cmd)
	}
	if got := svc.net.EndpointsConfig["berth-ci-1-101"].Aliases; !reflect.DeepEqual(got, []string{"cache", "redis"}) {
		t.Errorf("service: got aliases %v, want [cache redis]", got)
	}
	if svc.cfg.Labels[backends.LabelAlias] != "cache,redis" {
		t.Errorf("service: got alias label %q, want cache,redis", svc.cfg.Labels[backends.LabelAlias])
	}
	if hookJob != job {
		t.Errorf("got hook job %p, want the prepared job %p", hookJob, job)
	}
	// The helper is made alongside the services and the hook; the job
	// container after both. Exec mode (the default) starts the stage
	// containers in prepare.
	var order, helperOrder []string
	for _, c := range api.log {
		if strings.HasPrefix(c, "start ") || strings.HasPrefix(c, "before ") || strings.HasPrefix(c, "create container") {
			if strings.HasSuffix(c, "-helper") {
				helperOrder = append(helperOrder, c)
			} else {
				order = append(order, c)
			}
		}
	}
	wantOrder := []string{
		"create container berth-ci-1-101-svc-0", "start id-berth-ci-1-101-svc-0", "before stage containers",
		"create container berth-ci-1-101-build", "start berth-ci-1-101-build",
	}
	if !reflect.DeepEqual(order, wantOrder) {
		t.Errorf("got %v, want %v", order, wantOrder)
	}
	if want := []string{"create container berth-ci-1-101-helper", "start berth-ci-1-101-helper"}; !reflect.DeepEqual(helperOrder, want) {
		t.Errorf("got helper calls %v, want %v", helperOrder, want)
	}
	for _, name := range []string{"berth-ci-1-101-helper", "berth-ci-1-101-build"} {
		c := byName[name]
		if c.cfg.Labels[backends.LabelStageMode] != backends.StageModeExec || !reflect.DeepEqual([]string(c.cfg.Cmd), []string{"sh", "-c", backends.StageKeepalive}) {
			t.Errorf("%s: got stage mode %q cmd %q, want exec mode's keepalive", name, c.cfg.Labels[backends.LabelStageMode], c.cfg.Cmd)
		}
	}

	wantBinds := []string{job.BuildsDir + ":" + job.BuildsDir, job.CacheDir + ":" + job.CacheDir, "/srv/certs:/certs:ro", "berth-ci-1-101-vol-1:/scratch"}
	help := byName["berth-ci-1-101-helper"]
	// berth's own helper runs by the id the prepare resolved, not by a
	// name, and without the image's HEALTHCHECK.
	if help.cfg.Image != "sha256:helper" || !reflect.DeepEqual(help.host.Binds, wantBinds) {
		t.Errorf("helper: got image %q binds %q, want the helper image's id and %q", help.cfg.Image, help.host.Binds, wantBinds)
	}
	if help.cfg.Healthcheck == nil || !reflect.DeepEqual(help.cfg.Healthcheck.Test, []string{"NONE"}) {
		t.Errorf("helper: got healthcheck %+v, want NONE", help.cfg.Healthcheck)
	}
	if !reflect.DeepEqual(help.cfg.Env, job.Env) || help.cfg.User != "" {
		t.Errorf("helper: got env %q user %q, want the job env and no user", help.cfg.Env, help.cfg.User)
	}

	build := byName["berth-ci-1-101-build"]
	wantBuildBinds := append(append([]string{}, wantBinds...), "/var/run/docker.sock:/var/run/docker.sock")
	if build.cfg.Image != "alpine:3" || !reflect.DeepEqual(build.host.Binds, wantBuildBinds) {
		t.Errorf("build: got image %q binds %q, want alpine:3 and %q", build.cfg.Image, build.host.Binds, wantBuildBinds)
	}
	if want := []string{"BACKEND_JOB=berth-ci-1-101", "CI_JOB_ID=101", "SECRET=s"}; !reflect.DeepEqual(build.cfg.Env, want) {
		t.Errorf("build: got env %q, want %q", build.cfg.Env, want)
	}
	if !reflect.DeepEqual([]string(build.cfg.Entrypoint), []string{""}) || build.cfg.User != "1000:1000" {
		t.Errorf("build: got entrypoint %q user %q, want [\"\"] and 1000:1000", build.cfg.Entrypoint, build.cfg.User)
	}
	if build.host.Memory != 1<<30 || build.host.PidsLimit == nil || *build.host.PidsLimit != 256 ||
		!reflect.DeepEqual([]string(build.host.CapDrop), []string{"ALL"}) || !reflect.DeepEqual(build.host.SecurityOpt, []string{"no-new-privileges"}) {
		t.Errorf("build: got memory %d pids %v cap_drop %q security_opt %q, want the admin's limits", build.host.Memory, *build.host.PidsLimit, build.host.CapDrop, build.host.SecurityOpt)
	}
}

func TestPrepareCreatesNothingWhenAPullFails(t *testing.T) {
	api := &prepareAPI{fakeAPI: &fakeAPI{pullErr: errors.New("manifest unknown")}}
	e := prepareEngine(t, api, nil)
	err := e.Prepare(context.Background(), prepareJob(t))
	if err == nil || !strings.Contains(err.Error(), "manifest unknown") {
		t.Fatalf("got %v, want the pull error", err)
	}
	if created := api.calls("create "); len(created) != 0 {
		t.Errorf("got %v, want nothing created", created)
	}
}

// A volume name a later job will use, made in advance by someone else, is
// not adopted: docker volume create answers with the existing volume.
func TestPrepareDoesNotAdoptASquattedVolume(t *testing.T) {
	helper := config.Default().Docker.HelperImage
	api := &prepareAPI{fakeAPI: &fakeAPI{
		images: map[string]image.InspectResponse{"redis:7": {ID: "sha256:redis"}, helper: {ID: "sha256:helper"}},
		pulls:  map[string]string{"alpine:3": okPull},
	}, existingVolumes: map[string]map[string]string{
		"berth-ci-1-101-vol-1": {backends.LabelRunner: "ci-1", backends.LabelJobID: "101", backends.LabelRole: RoleVolume, backends.LabelCreated: "2000-01-01T00:00:00Z"},
	}}
	e := prepareEngine(t, api, nil)
	err := e.Prepare(context.Background(), prepareJob(t))
	if err == nil || !strings.Contains(err.Error(), `volume "berth-ci-1-101-vol-1" already exists and was not made by berth for this job`) {
		t.Fatalf("got %v, want a refusal to adopt the volume", err)
	}
}
